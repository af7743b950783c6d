#!/usr/bin/env bash
# CPU time aiproxy spends per request (one uvicorn worker, wrk load): steadier than req/s on a shared machine.
# Split by thread, because the process's threads share one GIL: CPU a background thread spends holding it
# (the audit writer's) is time the event loop waits. PostgreSQL's backends are shown on their own.
# Usage: bench/cpu.sh [seconds]; env AUDIT_ENABLED=false etc. pass through to aiproxy.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8}
. bench/servers.sh
TMPDIR_BENCH=$(mktemp -d)
wrk -t1 -c10 -d2s -s bench/chat.lua http://127.0.0.1:8100/v1/chat/completions > /dev/null  # warm-up

ticks() { awk '{print $14 + $15}' "$1" 2>/dev/null || echo 0; }
threads() { for task in /proc/$PROXY/task/*; do echo "${task##*/} $(ticks "$task/stat")"; done; }
postgres() { for pid in $(pgrep -x postgres); do ticks "/proc/$pid/stat"; done | awk '{s += $1} END {print s + 0}'; }

threads > "$TMPDIR_BENCH/before"; pg_before=$(postgres)
requests=$(wrk -t1 -c10 -d"${DURATION}s" -s bench/chat.lua http://127.0.0.1:8100/v1/chat/completions | awk '/requests in/ {print $1}')
threads > "$TMPDIR_BENCH/after"; pg_after=$(postgres)

python3 - "$requests" "$DURATION" "$(getconf CLK_TCK)" "$PROXY" "$TMPDIR_BENCH" "$pg_before" "$pg_after" <<'EOF'
import sys
requests, duration, hz, main_tid, tmp, pg_before, pg_after = sys.argv[1:]
requests, hz = int(requests), int(hz)
read = lambda name: dict(line.split() for line in open(f"{tmp}/{name}"))
before, after = read("before"), read("after")
spent = {tid: (int(after[tid]) - int(before.get(tid, 0))) / hz for tid in after}
loop = spent.pop(main_tid, 0.0)
others = sum(spent.values())
us = lambda seconds: 1e6 * seconds / requests
print(f"{requests} requests, {requests / int(duration):.0f} req/s")
print(f"aiproxy CPU per request: {us(loop + others):.0f} us ({us(loop):.0f} event loop thread, {us(others):.0f} other threads)")
print(f"PostgreSQL CPU per request: {us((int(pg_after) - int(pg_before)) / hz):.0f} us")
EOF
echo "RSS after the run: $(awk '/VmRSS/ {print int($2/1024)}' /proc/$PROXY/status) MB (peak $(awk '/VmHWM/ {print int($2/1024)}' /proc/$PROXY/status) MB)"
