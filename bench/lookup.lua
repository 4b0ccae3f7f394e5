-- wrk script: GET /v1/lookup/<purpose>/<id> for random known IDs and some never-seen ones.
-- Settings come from the environment: BENCH_TOKEN, BENCH_ID_BASE, BENCH_SUBJECTS,
-- BENCH_UNKNOWN_SHARE, BENCH_PURPOSE. done() prints one JSON line for bench/run.py to read.

local token = os.getenv("BENCH_TOKEN") or ""
local id_base = tonumber(os.getenv("BENCH_ID_BASE") or "10000000")
local subjects = tonumber(os.getenv("BENCH_SUBJECTS") or "1000")
local unknown_share = tonumber(os.getenv("BENCH_UNKNOWN_SHARE") or "0.05")
local purpose = os.getenv("BENCH_PURPOSE") or "model_training"
local prefix = "/v1/lookup/" .. purpose .. "/"

local thread_count = 0
function setup(thread)
   thread_count = thread_count + 1
   thread:set("thread_number", thread_count)
end

function init(args)
   math.randomseed(os.time() * 1000 + (thread_number or 0))
   wrk.headers["Authorization"] = "Bearer " .. token
end

function request()
   local index
   if math.random() < unknown_share then
      index = subjects + math.random(0, 999999)
   else
      index = math.random(0, subjects - 1)
   end
   return wrk.format("GET", prefix .. string.format("%d", id_base + index))
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
         .. '"write_errors": %d, "timeouts": %d, "bad_status": %d, "p50_us": %d, "p99_us": %d, '
         .. '"mean_us": %.1f, "max_us": %d}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
      latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
