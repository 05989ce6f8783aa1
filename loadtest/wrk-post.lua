-- wrk script: POST one AdmissionReview (REVIEW_FILE) over keep-alive
-- connections, and print the figures run.sh needs as one JSON line.
-- No response() hook: parsing every answer in Lua would slow wrk itself,
-- and wrk already counts non-2xx/3xx answers in errors.status.

local path = os.getenv("REVIEW_FILE")
local file = assert(io.open(path, "rb"), "cannot open REVIEW_FILE " .. tostring(path))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
