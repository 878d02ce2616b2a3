-- wrk script for `make bench` (devstack/bench/loadgen.py runs it):
--   wrk ... -s payments.lua <url> -- <requests file> <key prefix>
-- POST /v1/payments with the bearer token and JSON body of one line of the
-- requests file ("<token>\t<body>"), lines taken in turn so that the load
-- spreads over every payer, and a unique Idempotency-Key per request
-- ("<prefix>-<thread>-<n>": a repeated key would be answered from the
-- idempotency record instead of making a payment).
-- Every answer is counted by kind: "200 SUCCEEDED", "200 FAILED",
-- "429 RATE_LIMITED"... (status, then the payment's state or the error's
-- reason). done() prints one line "BENCH_JSON {...}" with wrk's own figures.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function init(args)
  lines = {}
  for line in io.lines(args[1]) do
    local token, body = line:match("^([^\t]+)\t(.+)$")
    table.insert(lines, { token = token, body = body })
  end
  prefix = args[2] .. "-" .. thread_id .. "-"
  sent = 0
  kinds = {}
end

function request()
  sent = sent + 1
  -- Threads start at different lines so that they do not move in step.
  local item = lines[(sent + thread_id * 7) % #lines + 1]
  return wrk.format("POST", "/v1/payments", {
    ["Authorization"] = "Bearer " .. item.token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. sent,
  }, item.body)
end

function response(status, headers, body)
  local detail
  if status == 200 then
    detail = body:match('"state"%s*:%s*"([%u_]+)"')
  else
    detail = body:match('"reason"%s*:%s*"([%u_]+)"')
  end
  local kind = tostring(status) .. " " .. (detail or "?")
  kinds[kind] = (kinds[kind] or 0) + 1
end

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', "") .. '"'
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for kind, count in pairs(thread:get("kinds")) do
      merged[kind] = (merged[kind] or 0) + count
    end
  end
  local parts = {}
  for kind, count in pairs(merged) do
    table.insert(parts, quote(kind) .. ":" .. count)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%d,"requests":%d,"kinds":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p95":%d,"p99":%d,"max":%d}}\n',
    summary.duration, summary.requests, table.concat(parts, ","),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
