-- wrk script used by bench/run.py: POST a JSON body, count what was sent, report as one JSON line.
--
--   AIPROXY_KEY=aip-... wrk -t1 -c10 -d8s --latency -s bench/post.lua URL -- '<json body>'
--
-- Without a body argument it sends the same small chat request as bench/chat.lua.
-- The last line of output is "BENCH_JSON {...}": machine-readable, so the harness never parses
-- wrk's human summary (whose units change with magnitude: us, ms, s).

local CHAT = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.body = args[1] or CHAT
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. (os.getenv("AIPROXY_KEY") or "none")
  sent = 0
end

-- A request() function makes wrk build each request here, so we can count the ones written:
-- those still in flight when the time is up are sent (and audited) but never completed.
function request()
  sent = sent + 1
  return wrk.format()
end

function done(summary, latency, requests)
  -- wrk calls request() once on the first thread to check the script before any connection: not sent.
  local total_sent = -1
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"sent":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"non_2xx":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, total_sent, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
