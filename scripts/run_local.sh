#!/usr/bin/env bash
# `make run`: a real LiteLLM on 127.0.0.1:4000 and aiproxy (gunicorn, uvicorn workers) on 127.0.0.1:8000,
# on SQLite unless DATABASE_URL is set. Ctrl-C, SIGTERM or SIGHUP (to this script or to the `make` that
# runs it) stops both. Expects .venv with aiproxy's requirements and a migrated database: the Makefile's
# run target does both first. LITELLM_PORT and AIPROXY_PORT move the two; LITELLM_COMMAND replaces LiteLLM
# with another upstream on LITELLM_PORT (the test of this script uses the test suite's fake).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBUG="${DEBUG:-true}"
LITELLM_PORT="${LITELLM_PORT:-4000}"
AIPROXY_PORT="${AIPROXY_PORT:-8000}"
AIPROXY_URL="http://127.0.0.1:$AIPROXY_PORT"

# One master key per install, never a well-known value: LiteLLM requires it, aiproxy sends it.
mkdir -p var/litellm
if [ ! -s var/litellm/master_key ]; then
  (umask 077 && .venv/bin/python -c 'import secrets; print("sk-" + secrets.token_urlsafe(32))' >var/litellm/master_key)
fi
LITELLM_MASTER_KEY="$(cat var/litellm/master_key)"
export LITELLM_MASTER_KEY LITELLM_API_KEY="$LITELLM_MASTER_KEY" LITELLM_BASE_URL="http://127.0.0.1:$LITELLM_PORT"

LITELLM_COMMAND="${LITELLM_COMMAND:-scripts/litellm.sh}"
[ "$LITELLM_COMMAND" = scripts/litellm.sh ] && scripts/litellm.sh install

for port in "$LITELLM_PORT" "$AIPROXY_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "Port $port on 127.0.0.1 is in use: stop what listens there first." >&2
    exit 1
  fi
done

# Limits are shared through Redis when one answers on its default port (README, Limits and spend);
# otherwise each worker counts on its own, and aiproxy's log says so.
if [ -z "${REDIS_URL:-}" ] && (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  export REDIS_URL=redis://127.0.0.1:6379/0
fi

pids=()
stop() {
  trap - EXIT INT TERM HUP
  kill -TERM "${pids[@]}" "${watcher:-}" 2>/dev/null || true
  wait || true
}
trap stop EXIT
trap 'exit 130' INT TERM HUP

# make passes SIGTERM on to this script but not SIGHUP, and a closed terminal or a killed parent may
# send nothing at all: when the process that started this script is gone (this script then has another
# parent), stop the stack as on Ctrl-C.
parent=$PPID
( while [ "$(ps -o ppid= -p $$ | tr -d ' ')" = "$parent" ]; do sleep 1; done; kill -TERM $$ 2>/dev/null ) &
watcher=$!

$LITELLM_COMMAND >var/litellm/litellm.log 2>&1 &
pids+=($!)
# Workers: one per core (WEB_CONCURRENCY); /metrics adds theirs up (gunicorn.conf.py).
GUNICORN_BIND="127.0.0.1:$AIPROXY_PORT" .venv/bin/gunicorn -c gunicorn.conf.py &
pids+=($!)

# Either one dying during start-up stops the other (through the EXIT trap).
wait_for() {
  local url=$1 name=$2 pid=$3
  for _ in $(seq 240); do
    kill -0 "$pid" 2>/dev/null || { echo "$name exited during start-up." >&2; exit 1; }
    .venv/bin/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$url" \
      2>/dev/null && return 0
    sleep 0.5
  done
  echo "$name did not answer $url within 2 minutes." >&2
  exit 1
}
wait_for "$LITELLM_BASE_URL/health/liveliness" "LiteLLM (log: var/litellm/litellm.log)" "${pids[0]}"
wait_for "$AIPROXY_URL/health" aiproxy "${pids[1]}"

echo
grep '^LiteLLM model' var/litellm/litellm.log || true
[ -n "${OPENAI_API_KEY:-}" ] || echo "No OPENAI_API_KEY: LiteLLM answers with mock responses, offline."
.venv/bin/python manage.py ensure_demo_setup --base-url "$AIPROXY_URL"
echo "Serving. LiteLLM's log: var/litellm/litellm.log. Stop with Ctrl-C."
echo
wait -n "${pids[@]}"
