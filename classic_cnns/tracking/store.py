"""Where MLflow runs go: the store (MLFLOW_TRACKING_URI, else the project's mlflow.db), checked
before any work, and its failures turned into one line.

Faults cost seconds: a tracking server is asked for /health before any work; MLflow's HTTP client
gives up on a request after 2 retries and 10 s (its defaults, 7 retries with growing backoff and
120 s, stall a stage for minutes; set the MLFLOW_HTTP_REQUEST_* variables to change them). A new
SQLite store is created under a file lock, so concurrent experiments do not run MLflow's schema
migrations at the same time (MLflow itself gives every later SQLite session a 20 s busy timeout).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException

from classic_cnns import errors
from classic_cnns.errors import UserError
from classic_cnns.paths import project_root

# MLflow's own INFO lines (creating tables, "Registered model ...") repeat what the stages print.
logging.getLogger("mlflow").setLevel(logging.WARNING)
for _key, _value in {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # e.g. while it checks a logged model's input example
}.items():
    os.environ.setdefault(_key, _value)


class TrackingUnavailable(UserError):
    pass


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite file at the project root (absolute URI)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def check_server(uri: str, timeout_s: float = 5.0) -> None:
    """An http(s) tracking URI must answer within seconds (any HTTP answer below 500 will do)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s)  # http(s): checked above
    except urllib.error.HTTPError as exc:
        if exc.code < 500:
            return
        reason = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    else:
        return check_signed_in(uri, timeout_s)
    raise TrackingUnavailable(
        f"the MLflow tracking server {uri} (MLFLOW_TRACKING_URI) does not answer ({reason}): "
        "start it, or unset MLFLOW_TRACKING_URI to log to the project's mlflow.db"
    )


def check_signed_in(uri: str, timeout_s: float) -> None:
    """A server with sign-in (team/server.sh beyond 127.0.0.1) must take this user's name and password,
    checked before any work: MLflow's client sends MLFLOW_TRACKING_USERNAME and _PASSWORD."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    request = urllib.request.Request(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
    if user and password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        urllib.request.urlopen(request, timeout=timeout_s)  # http(s): checked by the caller
    except urllib.error.HTTPError as exc:
        if exc.code != 401:
            return
        fix = (
            f"the name {user} or its password (MLFLOW_TRACKING_PASSWORD) is wrong: ask the team's admin"
            if user and password
            else "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the admin adds members: "
            "team/server.sh add-user NAME)"
        )
        raise TrackingUnavailable(f"the MLflow tracking server {uri} lets only signed-in members in: {fix}") from None
    except OSError:
        return  # answered /health a moment ago: a store failure is named where it happens


def database_file(uri: str) -> Path:
    """The file of a sqlite:/// store, also when named as an SQLite URI (sqlite:///file:/x.db?mode=ro&uri=true)."""
    database = uri.removeprefix("sqlite:///")
    if database.startswith("file:"):
        database = database.removeprefix("file:").split("?", 1)[0]
    return Path(database)


@contextlib.contextmanager
def store_lock(uri: str):
    """For a SQLite store, an exclusive lock on <db>.lock: MLflow creates and migrates the schema of
    a new database on first use, and two processes doing so at once break it."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(f"{database_file(uri)}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock):
        yield


def use_store(experiment: str) -> None:
    """Point MLflow at the store and experiment, checked first. A new experiment in a SQLite store
    keeps its artifacts in `mlruns/` beside the database (for the default store, <root>/mlruns), not
    in MLflow's default `./mlruns` of the current folder, which for a temporary or queued DVC
    experiment is deleted afterwards."""
    uri = tracking_uri()
    check_server(uri)
    if not uri.startswith(("http://", "https://")):
        hold_signals_in_transactions()
    mlflow.set_tracking_uri(uri)  # MLflow also exports it as MLFLOW_TRACKING_URI to this process
    with store_lock(uri), failures_named(uri, "opening it"):
        check_writable(uri)  # under the lock: not while another process creates the schema
        if mlflow.get_experiment_by_name(experiment) is None and artifact_root(uri):
            try:
                mlflow.create_experiment(experiment, artifact_location=artifact_root(uri))
            except MlflowException as err:  # another process created it first: it is set below
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        found = mlflow.set_experiment(experiment)
        # When two processes create the experiment at once (`dvc queue start -j 2` on a new server),
        # the one that loses gets it back from set_experiment without it being made the active one, and
        # its runs would land in "Default". Setting it by id always makes it active.
        mlflow.set_experiment(experiment_id=found.experiment_id)
    check_artifact_location(found)
    from classic_cnns.tracking.runs import end_orphans  # runs builds on this module

    with failures_named(uri, "ending runs whose process is gone"):
        end_orphans(found.experiment_id)


def hold_signals_in_transactions() -> None:
    """A signal never lands inside a database transaction of MLflow's: SQLAlchemy, cut between its
    commit and its close, keeps the connection (and SQLite's write lock) in a broken state, and the
    run could then not be ended KILLED. The signal is recorded and stops the stage at its next
    check_interrupted() (classic_cnns/errors.py). Idempotent."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    if event.contains(Session, "after_begin", _hold_in_transaction):
        return
    event.listen(Session, "after_begin", _hold_in_transaction)
    event.listen(Session, "after_transaction_end", _release_after_transaction)


def _hold_in_transaction(session, transaction, connection) -> None:
    if not session.info.get("signals_held"):
        session.info["signals_held"] = True
        errors.hold()


def _release_after_transaction(session, transaction) -> None:
    if transaction.parent is None and session.info.pop("signals_held", False):
        errors.release()


def artifact_root(uri: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: mlruns/ beside the database
    (a file URI). None for a server, which decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (database_file(uri).resolve().parent / "mlruns").as_uri()


def check_artifact_location(experiment) -> None:
    """An experiment whose artifacts go to a DVC experiment's temporary folder (made before the fix
    above) loses every artifact logged to it: refuse, naming the way out."""
    location = experiment.artifact_location or ""
    if "/.dvc/tmp/exps/" in location:
        raise UserError(
            f"the MLflow experiment {experiment.name!r} keeps its artifacts in {location}, a temporary folder "
            "DVC deletes after an experiment: rename it (mlflow experiments rename --experiment-id "
            f"{experiment.experiment_id} --new-name {experiment.name}-lost-artifacts), or set mlflow.experiment, "
            "and rerun; a new experiment keeps them in mlruns/ beside the store"
        )


def check_writable(uri: str) -> None:
    """A SQLite store must take a write (a transaction begun for writing, then rolled back), so that
    a read-only database fails in one line before any work, not at the end of a training."""
    if not uri.startswith("sqlite:///"):
        return
    database = uri.removeprefix("sqlite:///")
    try:
        connection = sqlite3.connect(database, uri=database.startswith("file:"), timeout=20)
        try:
            connection.execute("BEGIN IMMEDIATE")
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            connection.execute(f"PRAGMA user_version = {int(version)}")  # a write, undone below
            connection.rollback()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise TrackingUnavailable(
            f"the MLflow store {database} cannot be written ({exc}): give this user write access to the file and "
            "its folder, or point MLFLOW_TRACKING_URI at a store it can write"
        ) from None


@contextlib.contextmanager
def failures_named(uri: str, doing: str, after: str = ""):
    """Turn a tracking store's failure inside the block into one TrackingUnavailable line."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except TrackingUnavailable as exc:  # from a block inside this one
        if after:
            raise TrackingUnavailable(f"{exc}{after}") from exc
        raise
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # it answered, without what it held before
            raise TrackingUnavailable(
                f"the MLflow tracking store {uri} answers but no longer holds what it needs while {doing} "
                f"({short_reason(exc)}): a new or reset database?{after}"
            ) from exc
        raise TrackingUnavailable(
            f"the MLflow tracking store {uri} failed while {doing} ({short_reason(exc)}){after}"
        ) from exc
    except (requests.exceptions.RequestException, OSError) as exc:
        raise TrackingUnavailable(
            f"the MLflow tracking store {uri} failed while {doing} ({short_reason(exc)}){after}"
        ) from exc


def short_reason(exc: BaseException) -> str:
    """What MLflow's long HTTP and database errors come down to."""
    text = str(exc)
    database = re.search(r"\(sqlite3\.\w+\) ([^\n]+)", text)  # SQLAlchemy's own line names the cause
    if database:
        return database.group(1)
    for marker, reason in (
        ("Failed to establish a new connection", "connection refused"),
        ("Read timed out", "no answer in time"),
        ("Max retries exceeded", "no answer"),
    ):
        if marker in text:
            return reason
    return text.splitlines()[0][:200] if text else type(exc).__name__
