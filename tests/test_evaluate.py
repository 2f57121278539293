import numpy as np
import pytest

from classic_cnns.evaluation.scores import confusion_matrix, per_class_scores


def test_confusion_matrix_rows_are_actual_columns_predicted():
    matrix = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_per_class_scores():
    matrix = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    scores = per_class_scores(matrix, ["a", "b", "c"]).set_index("class")
    assert scores.loc["a", "precision"] == pytest.approx(0.5)
    assert scores.loc["a", "recall"] == pytest.approx(0.5)
    assert scores.loc["b", "precision"] == pytest.approx(0.5)
    assert scores.loc["b", "recall"] == pytest.approx(1.0)
    assert scores.loc["c", "f1"] == pytest.approx(2 * 1.0 * (2 / 3) / (1.0 + 2 / 3))
    assert scores["support"].tolist() == [2, 1, 3]


def test_a_class_never_predicted_scores_zero_not_nan():
    scores = per_class_scores(np.array([[2, 0], [1, 0]]), ["a", "b"]).set_index("class")
    assert scores.loc["b", ["precision", "recall", "f1"]].tolist() == [0.0, 0.0, 0.0]
