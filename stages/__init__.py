"""The DVC stages: one thin entry point each (`python -m stages.<name> ...`), wired in dvc.yaml
and ablations/dvc.yaml. The work is done by the library, classic_cnns/."""

import classic_cnns  # noqa: F401 - imported for its effect: quiets TensorFlow before any stage imports it
