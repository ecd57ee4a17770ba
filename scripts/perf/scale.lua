-- wrk script for scripts/perf/scale.py: one GET per call, the key chosen per request.
--
--   wrk ... -s scripts/perf/scale.lua URL -- MODE N START PREFIX SEED
--
-- MODE    one:     always key START (the hit-1k reference, same Lua cost as the others)
--         seq:     START, START+1, ... (miss-store: every request a new key)
--         wrap:    START + (i mod N), in order, round and round (warming the store)
--         uniform: START + a uniform random key in [0, N)
--         zipf:    START + a Zipf(0.99) key in [0, N): rank r (1 = hottest) has weight
--                  1/r^0.99; ranks are scattered over the key space (r * 1000003 mod N)
-- N       number of keys (default 1)
-- START   first key (default 0)
-- PREFIX  path before the key (default /obj/); keys are written as 8 digits: /obj/00000042
-- SEED    random seed (default 1)
--
-- done() prints one line "WRKJSON {...}" like ../shared/bench/lib/wrk.lua.

local mode, n, start, prefix = "one", 1, 0, "/obj/"
local counter = 0
local cdf = nil
local host = "127.0.0.1"
local fmt, random, floor = string.format, math.random, math.floor

local function build_cdf(count, s)
   local t, sum = {}, 0.0
   for r = 1, count do
      sum = sum + 1.0 / (r ^ s)
      t[r] = sum
   end
   for r = 1, count do
      t[r] = t[r] / sum
   end
   return t
end

local function zipf_key()
   local u = random()
   local lo, hi = 1, n
   while lo < hi do
      local mid = floor((lo + hi) / 2)
      if cdf[mid] < u then lo = mid + 1 else hi = mid end
   end
   return ((lo - 1) * 1000003) % n
end

function init(args)
   mode = args[1] or "one"
   n = tonumber(args[2] or "1") or 1
   start = tonumber(args[3] or "0") or 0
   prefix = args[4] or "/obj/"
   math.randomseed(tonumber(args[5] or "1") or 1)
   host = wrk.headers["Host"] or host
   if mode == "zipf" then
      cdf = build_cdf(n, 0.99)
   end
end

function request()
   local k
   if mode == "one" then
      k = start
   elseif mode == "seq" then
      k = start + counter
      counter = counter + 1
   elseif mode == "wrap" then
      k = start + counter % n
      counter = counter + 1
   elseif mode == "uniform" then
      k = start + random(0, n - 1)
   elseif mode == "zipf" then
      k = start + zipf_key()
   else
      error("unknown mode " .. tostring(mode))
   end
   return fmt("GET %s%08d HTTP/1.1\r\nHost: %s\r\n\r\n", prefix, k, host)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
      '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
