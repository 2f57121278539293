"""The DVC stages: one thin entry point each (`python -m stages.<name> ...`), wired in dvc.yaml
and ablations/dvc.yaml. The work is done by the library, classic_cnns/."""

import sys

from classic_cnns import backend, errors

if sys.argv[:1] == ["-m"]:  # `python -m stages.<name>`, still importing: a signal now stops it in run_stage
    errors.hold_signals_while_starting()
    if problem := backend.requested_problem():  # before `import keras`, which fails in a long traceback
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)

import classic_cnns  # noqa: E402, F401 - imported for its effect: quiets TensorFlow before any stage imports it
