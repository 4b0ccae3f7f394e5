-- wrk script: choice writes (PUT /v1/users/<id>/consents/<purpose>), optionally mixed with lookups.
-- Settings come from the environment:
--   BENCH_TOKEN          the app key (writes) -- BENCH_LOOKUP_TOKEN the pipeline key (lookups)
--   BENCH_PURPOSE        the purpose written and looked up
--   BENCH_PLAN           a file prefix: <prefix>.<thread> holds that thread's users, one
--                        "<user_id> <g|d>" a line: g if the user's current effective state is
--                        granted. Threads own disjoint users; pass p writes user p % n of the
--                        list, the opposite of its current state on even rounds, back on odd ones,
--                        so every write changes the effective state.
--   BENCH_LOG            a file prefix: <prefix>.<thread> gets "<seq> <user_id>" per 200 write,
--                        and "! <status>" per other write answer, for bench/ to check
--   BENCH_LOOKUP_SHARE   the share of requests that are lookups of random known IDs (0: writes only)
--   BENCH_ID_BASE, BENCH_SUBJECTS   the known IDs, for lookups
-- done() prints one JSON line for bench/ to read (per kind counts come from the threads).

local token = os.getenv("BENCH_TOKEN") or ""
local lookup_token = os.getenv("BENCH_LOOKUP_TOKEN") or token
local purpose = os.getenv("BENCH_PURPOSE") or "model_training"
local plan_prefix = os.getenv("BENCH_PLAN") or ""
local log_prefix = os.getenv("BENCH_LOG") or ""
local lookup_share = tonumber(os.getenv("BENCH_LOOKUP_SHARE") or "0")
local id_base = tonumber(os.getenv("BENCH_ID_BASE") or "10000000")
local subjects = tonumber(os.getenv("BENCH_SUBJECTS") or "1000")

local threads = {}
local thread_count = 0
function setup(thread)
   thread_count = thread_count + 1
   thread:set("thread_number", thread_count)
   table.insert(threads, thread)
end

local users = {}
local granted = {}
local position = 0
local log = nil
local write_headers = nil
local lookup_headers = nil
writes_ok = 0
writes_bad = 0
lookups_ok = 0
lookups_bad = 0

function init(args)
   math.randomseed(os.time() * 1000 + (thread_number or 0))
   if lookup_share < 1 then
      for line in io.lines(plan_prefix .. "." .. thread_number) do
         local uid, state = line:match("^(%S+) (%a)$")
         table.insert(users, uid)
         table.insert(granted, state == "g")
      end
      log = io.open(log_prefix .. "." .. thread_number, "w")
      -- wrk never closes a thread's Lua state: unbuffered lines are what reaches the file.
      log:setvbuf("line")
   end
   write_headers = {
      ["Authorization"] = "Bearer " .. token,
      ["Content-Type"] = "application/json",
   }
   lookup_headers = { ["Authorization"] = "Bearer " .. lookup_token }
end

function request()
   if lookup_share > 0 and math.random() < lookup_share then
      local index = math.random(0, subjects - 1)
      return wrk.format(
         "GET", "/v1/lookup/" .. purpose .. "/" .. string.format("%d", id_base + index),
         lookup_headers
      )
   end
   local n = #users
   local i = position % n + 1
   local round = math.floor(position / n)
   position = position + 1
   -- Even rounds flip the user's state, odd rounds flip it back.
   local grant = granted[i]
   if round % 2 == 0 then
      grant = not grant
   end
   local body = '{"state": "' .. (grant and "granted" or "denied") .. '", "source": "settings"}'
   return wrk.format(
      "PUT", "/v1/users/" .. users[i] .. "/consents/" .. purpose, write_headers, body
   )
end

function response(status, headers, body)
   -- A write answers with an ETag (its version); a lookup does not.
   if headers["ETag"] ~= nil or headers["Etag"] ~= nil or headers["etag"] ~= nil
      or body:find('"version"', 1, true) then
      if status == 200 then
         local seq = body:match('"as_of":%s*(%d+)')
         local uid = body:match('"user_id":%s*"([^"]+)"')
         log:write(seq, " ", uid, "\n")
         writes_ok = writes_ok + 1
      else
         if log ~= nil then
            log:write("! ", status, "\n")
         end
         writes_bad = writes_bad + 1
      end
   elseif status == 200 then
      lookups_ok = lookups_ok + 1
   else
      lookups_bad = lookups_bad + 1
   end
end

function done(summary, latency, requests)
   local w_ok, w_bad, l_ok, l_bad = 0, 0, 0, 0
   for _, thread in ipairs(threads) do
      w_ok = w_ok + thread:get("writes_ok")
      w_bad = w_bad + thread:get("writes_bad")
      l_ok = l_ok + thread:get("lookups_ok")
      l_bad = l_bad + thread:get("lookups_bad")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
         .. '"write_errors": %d, "timeouts": %d, "bad_status": %d, "p50_us": %d, "p99_us": %d, '
         .. '"mean_us": %.1f, "max_us": %d, "writes_ok": %d, "writes_bad": %d, '
         .. '"lookups_ok": %d, "lookups_bad": %d}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
      latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
      w_ok, w_bad, l_ok, l_bad))
end
