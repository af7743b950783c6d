#!/usr/bin/env bash
# Profile one aiproxy worker under wrk load with py-spy: bench/profile.sh [seconds] [out.svg|out.txt]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8}; OUT=${2:-var/profile.txt}
BIN=.venv/bin
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/aiproxy_bench}
export SECRET_KEY=bench-secret LITELLM_BASE_URL=http://127.0.0.1:9100 LOG_LEVEL=WARNING
export AUDIT_SPOOL_DIR=${AUDIT_SPOOL_DIR:-$(mktemp -d)}
$BIN/python manage.py migrate -v0
export AIPROXY_KEY=$($BIN/python manage.py create_api_key bench 2>/dev/null | tail -n1)
$BIN/python tests/fake_upstream.py --port 9100 --no-record & UPSTREAM=$!
$BIN/uvicorn aiproxy.asgi:application --port 8100 --log-level warning --no-access-log & PROXY=$!
trap 'kill $UPSTREAM $PROXY 2>/dev/null; wait 2>/dev/null' EXIT
sleep 3
wrk -t1 -c10 -d"$((DURATION + 2))s" -s bench/chat.lua http://127.0.0.1:8100/v1/chat/completions > var/profile-wrk.txt &
sleep 1
FORMAT=raw; [[ "$OUT" == *.svg ]] && FORMAT=flamegraph
$BIN/py-spy record -p $PROXY -d "$DURATION" -r 250 -f "$FORMAT" -o "$OUT" --nonblocking ${PYSPY_FLAGS:-} >/dev/null 2>&1
wait %3 2>/dev/null || true
grep "Requests/sec" var/profile-wrk.txt
