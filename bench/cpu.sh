#!/usr/bin/env bash
# CPU time aiproxy spends per request (one uvicorn worker, wrk load): steadier than req/s on a shared machine.
# Usage: bench/cpu.sh [seconds]; env AUDIT_ENABLED=false etc. pass through to aiproxy.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8}
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
wrk -t1 -c10 -d2s -s bench/chat.lua http://127.0.0.1:8100/v1/chat/completions > /dev/null  # warm-up
ticks() { awk '{print $14 + $15}' /proc/$PROXY/stat; }
before=$(ticks)
requests=$(wrk -t1 -c10 -d"${DURATION}s" -s bench/chat.lua http://127.0.0.1:8100/v1/chat/completions | awk '/requests in/ {print $1}')
after=$(ticks)
hz=$(getconf CLK_TCK)
python3 -c "r=$requests; c=($after-$before)/$hz; print(f'{r} requests, {c:.2f} CPU s, {1e6*c/r:.0f} us CPU per request, {r/$DURATION:.0f} req/s')"
echo "RSS after the run: $(awk '/VmRSS/ {print int($2/1024)}' /proc/$PROXY/status) MB (peak $(awk '/VmHWM/ {print int($2/1024)}' /proc/$PROXY/status) MB)"
