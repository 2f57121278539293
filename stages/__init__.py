"""The DVC stages: one thin entry point each (`python -m stages.<name> ...`), wired in dvc.yaml
and ablations/dvc.yaml. The work is done by the library, classic_cnns/."""

import signal
import sys

_early: list[int] = []  # signals that come while the lines below import: kept for run_stage
if sys.argv[:1] == ["-m"]:  # `python -m stages.<name>`
    for _signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_signum, lambda signum, frame: _early.append(signum))

from classic_cnns import backend, errors, warm  # noqa: E402

if sys.argv[:1] == ["-m"]:  # still importing: a signal now stops the stage in run_stage, before any work
    warm.run_warm_if_served(_early)  # a server with the frameworks loaded runs it, if there is one
    errors.hold_signals_while_starting(_early)
    if problem := backend.requested_problem():  # before `import keras`, which fails in a long traceback
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)

import classic_cnns  # noqa: E402, F401 - imported for its effect: quiets TensorFlow before any stage imports it
