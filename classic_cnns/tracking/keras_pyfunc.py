"""The pyfunc of every logged model (MLflow "models from code": this file is copied into the logged
model, so it imports nothing of this project). It is MLflow's keras flavor without its one flaw for
serving: `predict` is silent (the flavor calls `model.predict(data)`, which prints a progress bar).
The Keras model itself is the logged model's `keras_model` artifact (a .keras file)."""

import mlflow
import numpy as np


class KerasClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import keras

        self.model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        return np.asarray(self.model.predict(np.asarray(model_input, dtype="float32"), verbose=0))


mlflow.models.set_model(KerasClassifier())
