#!/usr/bin/env bash
# Quick spine benchmark: non-streaming chat straight to the fake upstream vs through aiproxy
# (1 gunicorn/uvicorn worker, PostgreSQL), interleaved rounds. Usage: bench/quick.sh [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECONDS_PER_RUN=${2:-8}; CONNECTIONS=${CONNECTIONS:-10}
export SERVER=${SERVER:-gunicorn}
. bench/servers.sh

run() { wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -s bench/chat.lua "$1" | \
  awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {err=$5} END {printf "%10s req/s  p50 %8s  p99 %8s  non-2xx %s\n", rps, p50, p99, err+0}'; }
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  printf "  upstream direct: "; run http://127.0.0.1:9100/v1/chat/completions
  printf "  through aiproxy: "; run http://127.0.0.1:8100/v1/chat/completions
done
