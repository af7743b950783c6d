#!/usr/bin/env bash
# CPU time aiproxy spends per request (one uvicorn worker, wrk load): steadier than req/s on a shared machine.
# Usage: bench/cpu.sh [seconds]; env AUDIT_ENABLED=false etc. pass through to aiproxy.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8}
. bench/servers.sh
wrk -t1 -c10 -d2s -s bench/chat.lua http://127.0.0.1:8100/v1/chat/completions > /dev/null  # warm-up
ticks() { awk '{print $14 + $15}' /proc/$PROXY/stat; }
before=$(ticks)
requests=$(wrk -t1 -c10 -d"${DURATION}s" -s bench/chat.lua http://127.0.0.1:8100/v1/chat/completions | awk '/requests in/ {print $1}')
after=$(ticks)
hz=$(getconf CLK_TCK)
python3 -c "r=$requests; c=($after-$before)/$hz; print(f'{r} requests, {c:.2f} CPU s, {1e6*c/r:.0f} us CPU per request, {r/$DURATION:.0f} req/s')"
echo "RSS after the run: $(awk '/VmRSS/ {print int($2/1024)}' /proc/$PROXY/status) MB (peak $(awk '/VmHWM/ {print int($2/1024)}' /proc/$PROXY/status) MB)"
