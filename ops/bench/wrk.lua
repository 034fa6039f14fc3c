-- wrk script for `make bench-ingest` (ops/bench/ingest.py): replays webhooks that
-- Python signed just before the run, since wrk cannot compute HMAC-SHA256.
--
-- Usage: wrk -t N ... -s ops/bench/wrk.lua URL -- BODY_FILE SIGNED_FILE N
--   BODY_FILE    the webhook body, sent as is with every request
--   SIGNED_FILE  one "svix-id timestamp signature" line per request
-- Each wrk thread takes every N-th line so no svix-id is sent twice, unless a
-- run outlasts the file: then it starts over and done() reports how many were
-- sent again, so that the caller can refuse the figures.
-- done() prints one line, "BENCH_RESULT {json}", latencies in microseconds.

local threads = {}

function setup(thread)
  -- done() runs in the main Lua state, apart from the threads' own states:
  -- keep each thread to read its counters there.
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

local function read_file(path)
  local file = assert(io.open(path, "rb"))
  local content = file:read("*a")
  file:close()
  return content
end

function init(args)
  local body = read_file(args[1])
  local stride = tonumber(args[3])
  signed_requests = {}
  local line_number = 0
  for line in io.lines(args[2]) do
    if line_number % stride == thread_index then
      local id, timestamp, signature = line:match("^(%S+) (%S+) (%S+)$")
      -- Formatted once here, so that request() only hands over a string.
      signed_requests[#signed_requests + 1] = wrk.format("POST", "/", {
        ["Content-Type"] = "application/json",
        ["svix-id"] = id,
        ["svix-timestamp"] = timestamp,
        ["svix-signature"] = signature,
      }, body)
    end
    line_number = line_number + 1
  end
  assert(#signed_requests > 0, "no signed requests for thread " .. thread_index)
  loaded = #signed_requests
  sent = 0
  non_2xx = 0
end

function request()
  sent = sent + 1
  return signed_requests[(sent - 1) % loaded + 1]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non_2xx = non_2xx + 1
  end
end

function done(summary, latency, requests)
  local non_2xx_total, resent = 0, 0
  for _, thread in ipairs(threads) do
    non_2xx_total = non_2xx_total + thread:get("non_2xx")
    resent = resent + math.max(0, thread:get("sent") - thread:get("loaded"))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,'
      .. '"timeouts":%d,"resent":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, non_2xx_total,
    errors.connect + errors.read + errors.write, errors.timeout, resent,
    latency:percentile(50), latency:percentile(99)))
end
