#!/usr/bin/env bash
# Profile one aiproxy worker under wrk load with py-spy: bench/profile.sh [seconds] [out.svg|out.txt]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8}; OUT=${2:-var/profile.txt}
. bench/servers.sh
wrk -t1 -c10 -d"$((DURATION + 2))s" -s bench/chat.lua http://127.0.0.1:8100/v1/chat/completions > var/profile-wrk.txt &
sleep 1
FORMAT=raw; [[ "$OUT" == *.svg ]] && FORMAT=flamegraph
$BIN/py-spy record -p $PROXY -d "$DURATION" -r 250 -f "$FORMAT" -o "$OUT" --nonblocking ${PYSPY_FLAGS:-} >/dev/null 2>&1
wait %3 2>/dev/null || true
grep "Requests/sec" var/profile-wrk.txt
