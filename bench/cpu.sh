#!/usr/bin/env bash
# CPU time aiproxy spends per request (one uvicorn worker, wrk load): steadier than req/s on a shared machine.
# Split by thread, because the process's threads share one GIL: CPU a background thread spends holding it
# (the audit writer's) is time the event loop waits. PostgreSQL's backends are shown on their own.
# Usage: bench/cpu.sh [seconds]; env AUDIT_ENABLED=false etc. pass through to aiproxy.
#   LIMITS=1 bench/cpu.sh 8: the key of bench/run.py's aiproxy-limits target (every limit set, far above the
#   load) and aiproxy counting in Redis (REDIS_URL, default redis://127.0.0.1:6379/0, under a key prefix of
#   this run's; RATE_LIMIT_REDIS_FAILURE=closed): the limits' cost per request; Redis's CPU is shown too when
#   redis-server runs on this machine. Compare with a run without LIMITS.
# Any non-2xx answer (a 429 from a limit set too low, a 503 from Redis) makes the figures meaningless: exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8}
if [ "${LIMITS:-0}" = 1 ]; then
  export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0} RATE_LIMIT_REDIS_FAILURE=closed
  export REDIS_KEY_PREFIX="aiproxy-bench-cpu-$(date -u +%Y%m%d-%H%M%S)-$$:" BENCH_KEY_TARGET=aiproxy-limits
fi
. bench/servers.sh
TMPDIR_BENCH=$(mktemp -d)
wrk -t1 -c10 -d2s -s bench/chat.lua http://127.0.0.1:8100/v1/chat/completions > /dev/null  # warm-up

ticks() { awk '{print $14 + $15}' "$1" 2>/dev/null || echo 0; }
threads() { for task in /proc/$PROXY/task/*; do echo "${task##*/} $(ticks "$task/stat")"; done; }
postgres() { for pid in $(pgrep -x postgres); do ticks "/proc/$pid/stat"; done | awk '{s += $1} END {print s + 0}'; }
redis() { for pid in $(pgrep -x redis-server); do ticks "/proc/$pid/stat"; done | awk '{s += $1} END {print s + 0}'; }

threads > "$TMPDIR_BENCH/before"; pg_before=$(postgres); redis_before=$(redis)
wrk -t1 -c10 -d"${DURATION}s" -s bench/chat.lua http://127.0.0.1:8100/v1/chat/completions > "$TMPDIR_BENCH/wrk"
threads > "$TMPDIR_BENCH/after"; pg_after=$(postgres); redis_after=$(redis)
requests=$(awk '/requests in/ {print $1}' "$TMPDIR_BENCH/wrk")
non_2xx=$(awk '/Non-2xx/ {print $NF}' "$TMPDIR_BENCH/wrk"); non_2xx=${non_2xx:-0}

python3 - "$requests" "$DURATION" "$(getconf CLK_TCK)" "$PROXY" "$TMPDIR_BENCH" "$pg_before" "$pg_after" \
  "${LIMITS:-0}" "$redis_before" "$redis_after" <<'PY'
import sys
requests, duration, hz, main_tid, tmp, pg_before, pg_after, limits, redis_before, redis_after = sys.argv[1:]
requests, hz = int(requests), int(hz)
read = lambda name: dict(line.split() for line in open(f"{tmp}/{name}"))
before, after = read("before"), read("after")
spent = {tid: (int(after[tid]) - int(before.get(tid, 0))) / hz for tid in after}
loop = spent.pop(main_tid, 0.0)
others = sum(spent.values())
us = lambda seconds: 1e6 * seconds / requests
print(f"{requests} requests, {requests / int(duration):.0f} req/s" + (" (limits on, through Redis)" if limits == "1" else ""))
print(f"aiproxy CPU per request: {us(loop + others):.0f} us ({us(loop):.0f} event loop thread, {us(others):.0f} other threads)")
print(f"PostgreSQL CPU per request: {us((int(pg_after) - int(pg_before)) / hz):.0f} us")
if limits == "1" and redis_after != "0":  # 0: no redis-server process on this machine
    print(f"Redis CPU per request: {us((int(redis_after) - int(redis_before)) / hz):.0f} us")
PY
echo "RSS after the run: $(awk '/VmRSS/ {print int($2/1024)}' /proc/$PROXY/status) MB (peak $(awk '/VmHWM/ {print int($2/1024)}' /proc/$PROXY/status) MB)"
if [ "${LIMITS:-0}" = 1 ] && command -v redis-cli > /dev/null; then
  echo "Redis keys under $REDIS_KEY_PREFIX: $(redis-cli -u "$REDIS_URL" --scan --pattern "$REDIS_KEY_PREFIX*" | wc -l)"
fi
if [ "$non_2xx" != 0 ]; then
  echo "FAILED: $non_2xx non-2xx answers (counted as requests above: the figures are not aiproxy's request path)" >&2
  exit 1
fi
