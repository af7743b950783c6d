#!/usr/bin/env bash
# Quick spine benchmark: non-streaming chat straight to the fake upstream vs through aiproxy
# (1 gunicorn/uvicorn worker, PostgreSQL), interleaved rounds. Usage: bench/quick.sh [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECONDS_PER_RUN=${2:-8}; CONNECTIONS=${CONNECTIONS:-10}
BIN=.venv/bin
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/aiproxy_bench}
export SECRET_KEY=bench-secret LITELLM_BASE_URL=http://127.0.0.1:9100 LOG_LEVEL=WARNING
export AUDIT_SPOOL_DIR=${AUDIT_SPOOL_DIR:-$(mktemp -d)}
psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='aiproxy_bench'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE aiproxy_bench"
$BIN/python manage.py migrate -v0
export AIPROXY_KEY=$($BIN/python manage.py create_api_key bench 2>/dev/null | tail -n1)

$BIN/python tests/fake_upstream.py --port 9100 --no-record & UPSTREAM=$!
$BIN/gunicorn aiproxy.asgi:application -k uvicorn_worker.UvicornWorker -w ${WORKERS:-1} -b 127.0.0.1:8100 \
  --log-level warning & PROXY=$!
trap 'kill $UPSTREAM $PROXY 2>/dev/null; wait 2>/dev/null' EXIT
sleep 3

run() { wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -s bench/chat.lua "$1" | \
  awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {err=$5} END {printf "%10s req/s  p50 %8s  p99 %8s  non-2xx %s\n", rps, p50, p99, err+0}'; }
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  printf "  upstream direct: "; run http://127.0.0.1:9100/v1/chat/completions
  printf "  through aiproxy: "; run http://127.0.0.1:8100/v1/chat/completions
done
