-- wrk script for POST /api/bookings, used by bench-traces.sh (herd mode) and for ad-hoc runs.
--   MODE=herd      every request asks for one of SEATS seats (almost all 409)
--   MODE=distinct  every request asks for a seat nobody asked for (all 201)
-- TOKENS: file with one bearer token per line; requests rotate through them.
-- FIRST_SEAT: lowest seat id to use. Prints a JSON line with status counts
-- and latency percentiles (microseconds) when done.
local mode = os.getenv("MODE") or "herd"
local seats = tonumber(os.getenv("SEATS") or "4")
local first_seat = tonumber(os.getenv("FIRST_SEAT") or "1")
local event = os.getenv("EVENT_ID") or "1"
local tokens_file = os.getenv("TOKENS") or "tokens.txt"
-- Thread states do not share globals with setup(): the count comes from outside.
local thread_count = tonumber(os.getenv("THREADS") or "2")

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  tokens = {}
  for line in io.lines(tokens_file) do
    tokens[#tokens + 1] = line
  end
  n = 0
  c201, c409, c429, c503, other = 0, 0, 0, 0, 0
end

function request()
  n = n + 1
  local seat
  if mode == "distinct" then
    seat = first_seat + (n - 1) * thread_count + id
  else
    seat = first_seat + (n % seats)
  end
  local token = tokens[((n * thread_count + id) % #tokens) + 1]
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
  local body = '{"eventId":' .. event .. ',"seatId":' .. seat .. '}'
  return wrk.format("POST", "/api/bookings", headers, body)
end

function response(status, headers, body)
  if status == 201 then c201 = c201 + 1
  elseif status == 409 then c409 = c409 + 1
  elseif status == 429 then c429 = c429 + 1
  elseif status == 503 then c503 = c503 + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local t = {c201 = 0, c409 = 0, c429 = 0, c503 = 0, other = 0}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do
      t[k] = t[k] + (thread:get(k) or 0)
    end
  end
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'RESULT {"requests":%d,"seconds":%.3f,"rps":%.1f,"s201":%d,"s409":%d,"s429":%d,"s503":%d,"other":%d,' ..
    '"socketErrors":%d,"p50":%d,"p99":%d,"p999":%d,"max":%d}\n',
    summary.requests, seconds, summary.requests / seconds, t.c201, t.c409, t.c429, t.c503, t.other,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
