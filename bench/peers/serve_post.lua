-- wrk script for bench/bench_serve.py: POST one JSON body (file in $BENCH_BODY) with the headers in $BENCH_HEADERS
-- (a flat JSON object of strings), count non-2xx answers, and print one summary line `BENCH_JSON {...}` at the end.
wrk.method = "POST"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
for k, v in string.gmatch(os.getenv("BENCH_HEADERS") or "{}", '"([^"]+)"%s*:%s*"([^"]*)"') do
  wrk.headers[k] = v
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f, "non_2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, "status_ge_400": %d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, bad, e.connect, e.read, e.write, e.timeout, e.status))
end
