#!/usr/bin/env bash
# The team's MLflow tracking server: PostgreSQL (Debian's `postgresql` package) as the backend
# store, run artifacts on the team's S3-compatible object store (the DVC remote's), both served by
# one `mlflow server`. Clients change nothing but MLFLOW_TRACKING_URI=http://HOST:PORT: artifacts
# go through the server, so they need no object-store credentials.
#
#   team/server.sh start     # first time: creates the database cluster in $TEAM_DIR
#   team/server.sh stop
#   team/server.sh status
#   TEAM_USER_PASSWORD=... team/server.sh add-user NAME   # with sign-in: a member (the admin's password in the environment)
#
# Sign-in: a server that listens beyond 127.0.0.1 (MLFLOW_HOST) runs MLflow's basic-auth app, so only
# signed-in members read or change runs and models: each member sets MLFLOW_TRACKING_USERNAME and
# MLFLOW_TRACKING_PASSWORD. Members may create and change runs, experiments and models
# (default permission EDIT); deleting another's needs the admin. TEAM_AUTH=1 turns it on for 127.0.0.1 too.
#
# Settings, from the environment (nothing secret is committed):
#   TEAM_DB_PASSWORD   the database user's password (required for start)
#   TEAM_DIR           PostgreSQL's cluster, logs and pid files (default: .team/ in the project, git-ignored)
#   TEAM_DB_PORT       PostgreSQL's port (default 5433); it listens on 127.0.0.1 only
#   MLFLOW_HOST, MLFLOW_PORT, MLFLOW_WORKERS   the tracking server (default 127.0.0.1, 5000, 2)
#   MLFLOW_ARTIFACTS_DESTINATION   default s3://classic-cnns/mlflow; with MLFLOW_S3_ENDPOINT_URL,
#                      AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for a non-AWS store
#   PG_BIN             PostgreSQL's programs (default: the newest /usr/lib/postgresql/*/bin)
#   TEAM_ADMIN_PASSWORD  the MLflow admin's password (required with sign-in; set at the first start);
#                      TEAM_ADMIN_USER its name (default admin)
#   MLFLOW_ALLOWED_HOSTS  the names members reach the server by, e.g. team-box.lab:5000 (MLflow refuses
#                      other Host headers; default: localhost and private IP addresses)
set -euo pipefail
cd "$(dirname "$0")/.."

TEAM_DIR=$(mkdir -p "${TEAM_DIR:-.team}" && cd "${TEAM_DIR:-.team}" && pwd)
DB_PORT=${TEAM_DB_PORT:-5433}
HOST=${MLFLOW_HOST:-127.0.0.1}
PORT=${MLFLOW_PORT:-5000}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
CLUSTER=$TEAM_DIR/postgres
URL="http://$HOST:$PORT"
ADMIN=${TEAM_ADMIN_USER:-admin}
AUTH=${TEAM_AUTH:-0}
case "$HOST" in 127.0.0.1|localhost) ;; *) AUTH=1 ;; esac

fail() { echo "team/server.sh: $*" >&2; exit 1; }
as_postgres() {  # PostgreSQL refuses to run as root: run its programs as the `postgres` user then
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
answers() { python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/health', timeout=2)" "$URL" 2>/dev/null; }

start() {
    [ "$AUTH" = 0 ] || [ -n "${TEAM_ADMIN_PASSWORD:-}" ] \
        || fail "set TEAM_ADMIN_PASSWORD: a server on $HOST lets only signed-in members in, and its admin ($ADMIN) adds them"
    [ -n "${TEAM_DB_PASSWORD:-}" ] || fail "set TEAM_DB_PASSWORD (the database user's password; keep it out of git)"
    [ -x "$PG_BIN/pg_ctl" ] || fail "PostgreSQL not found: apt-get install postgresql (Debian), or set PG_BIN to its bin folder"
    command -v mlflow >/dev/null || fail "mlflow not found: activate the project's .venv (README, Quick start)"
    export PGPASSWORD=$TEAM_DB_PASSWORD
    if [ ! -f "$CLUSTER/PG_VERSION" ]; then
        mkdir -p "$CLUSTER" && chmod 700 "$CLUSTER"
        [ "$(id -u)" = 0 ] && chown postgres: "$CLUSTER"
        local pwfile; pwfile=$(mktemp) && printf '%s\n' "$TEAM_DB_PASSWORD" > "$pwfile"
        [ "$(id -u)" = 0 ] && chown postgres: "$pwfile"
        as_postgres "$PG_BIN/initdb" -D "$CLUSTER" -U mlflow --pwfile="$pwfile" --auth=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >"$TEAM_DIR/initdb.log" 2>&1 || { rm -f "$pwfile"; fail "initdb failed: $TEAM_DIR/initdb.log"; }
        rm -f "$pwfile"
    fi
    if ! as_postgres "$PG_BIN/pg_ctl" -D "$CLUSTER" status >/dev/null 2>&1; then
        touch "$TEAM_DIR/postgres.log" && { [ "$(id -u)" != 0 ] || chown postgres: "$TEAM_DIR/postgres.log"; }
        as_postgres "$PG_BIN/pg_ctl" -D "$CLUSTER" -l "$TEAM_DIR/postgres.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $DB_PORT -k $CLUSTER" start >/dev/null \
            || fail "PostgreSQL did not start (port $DB_PORT taken?): $TEAM_DIR/postgres.log"
    fi
    local psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$DB_PORT" -U mlflow -d postgres -tAq)
    [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'mlflow'")" = 1 ] \
        || "${psql[@]}" -c "CREATE DATABASE mlflow" || fail "could not create the database (wrong TEAM_DB_PASSWORD?)"
    echo "PostgreSQL on 127.0.0.1:$DB_PORT (cluster $CLUSTER)"

    if answers; then echo "MLflow already answers on $URL"; return; fi
    local extra=()
    [ -z "${MLFLOW_ALLOWED_HOSTS:-}" ] || extra+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")
    if [ "$AUTH" = 1 ]; then
        sign_in "${psql[@]}"
        extra+=(--app-name basic-auth)
    fi
    # MLflow's job runner (GenAI scorers, trace roll-ups) starts several worker processes that load
    # MLflow; nothing here uses it: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true to have it anyway
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
        setsid mlflow server --host "$HOST" --port "$PORT" --workers "${MLFLOW_WORKERS:-2}" \
        --backend-store-uri "postgresql+psycopg2://mlflow@127.0.0.1:$DB_PORT/mlflow" \
        --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-s3://classic-cnns/mlflow}" "${extra[@]}" \
        >"$TEAM_DIR/mlflow.log" 2>&1 < /dev/null &
    echo $! > "$TEAM_DIR/mlflow.pid"
    for _ in $(seq 240); do
        if answers; then
            echo "MLflow tracking server on $URL: export MLFLOW_TRACKING_URI=$URL"
            [ "$AUTH" = 0 ] || echo "sign-in on: each member exports MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (team/server.sh add-user NAME)"
            return
        fi
        kill -0 "$(cat "$TEAM_DIR/mlflow.pid")" 2>/dev/null || break
        sleep 0.5
    done
    tail -n 5 "$TEAM_DIR/mlflow.log" >&2
    fail "the MLflow server did not answer on $URL: $TEAM_DIR/mlflow.log"
}

sign_in() {  # MLflow's basic-auth app: its users in their own database, its config and secret in $TEAM_DIR
    [ "$("$@" -c "SELECT 1 FROM pg_database WHERE datname = 'mlflow_auth'")" = 1 ] \
        || "$@" -c "CREATE DATABASE mlflow_auth" || fail "could not create the sign-in database"
    (umask 077
     [ -s "$TEAM_DIR/flask-secret" ] || python3 -c "import secrets; print(secrets.token_hex(32))" > "$TEAM_DIR/flask-secret"
     printf '[mlflow]\ndefault_permission = EDIT\ndatabase_uri = %s\nadmin_username = %s\nadmin_password = %s\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' \
        "postgresql+psycopg2://mlflow@127.0.0.1:$DB_PORT/mlflow_auth" "$ADMIN" "$TEAM_ADMIN_PASSWORD" > "$TEAM_DIR/auth.ini")
    export MLFLOW_AUTH_CONFIG_PATH=$TEAM_DIR/auth.ini
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$TEAM_DIR/flask-secret") && export MLFLOW_FLASK_SERVER_SECRET_KEY
}

add_user() {
    local name=${1:-}
    [ -n "$name" ] || fail "usage: TEAM_USER_PASSWORD=... team/server.sh add-user NAME"
    [ -n "${TEAM_USER_PASSWORD:-}" ] || fail "set TEAM_USER_PASSWORD: the new member's password (they keep it; it is not stored here)"
    [ -n "${TEAM_ADMIN_PASSWORD:-}" ] || fail "set TEAM_ADMIN_PASSWORD: only the admin ($ADMIN) adds members"
    python3 - "$URL" "$ADMIN" "$TEAM_ADMIN_PASSWORD" "$name" "$TEAM_USER_PASSWORD" <<'PY' || exit 1
import base64, json, sys, urllib.error, urllib.request
url, admin, admin_password, name, password = sys.argv[1:]
request = urllib.request.Request(
    url + "/api/2.0/mlflow/users/create",
    data=json.dumps({"username": name, "password": password}).encode(),
    headers={"Content-Type": "application/json",
             "Authorization": "Basic " + base64.b64encode(f"{admin}:{admin_password}".encode()).decode()},
)
try:
    urllib.request.urlopen(request, timeout=30)
except urllib.error.HTTPError as exc:
    why = {401: f"the admin's name or password is wrong (TEAM_ADMIN_USER, TEAM_ADMIN_PASSWORD)",
           404: "the server runs without sign-in (start it with TEAM_AUTH=1 or an MLFLOW_HOST beyond 127.0.0.1)"}
    sys.exit(f"team/server.sh: could not add {name}: " + why.get(exc.code, f"HTTP {exc.code}: {exc.read().decode()[:200]}"))
except OSError as exc:
    sys.exit(f"team/server.sh: could not add {name}: {url} does not answer ({exc}): team/server.sh start")
print(f"added {name}: they export MLFLOW_TRACKING_USERNAME={name} and MLFLOW_TRACKING_PASSWORD")
PY
}

stop() {
    if [ -f "$TEAM_DIR/mlflow.pid" ]; then
        kill -TERM -- "-$(cat "$TEAM_DIR/mlflow.pid")" 2>/dev/null || true  # the server and its workers
        rm -f "$TEAM_DIR/mlflow.pid"
    fi
    if [ -x "$PG_BIN/pg_ctl" ] && [ -f "$CLUSTER/postmaster.pid" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$CLUSTER" -m fast -w stop >/dev/null
    fi
    echo "stopped"
}

status() {
    if answers; then echo "MLflow: answers on $URL"; else echo "MLflow: not answering on $URL"; fi
    if [ -x "$PG_BIN/pg_ctl" ] && as_postgres "$PG_BIN/pg_ctl" -D "$CLUSTER" status >/dev/null 2>&1; then
        echo "PostgreSQL: running on 127.0.0.1:$DB_PORT"
    else
        echo "PostgreSQL: not running"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    add-user) add_user "${2:-}" ;;
    *) fail "usage: team/server.sh start|stop|status|add-user NAME" ;;
esac
