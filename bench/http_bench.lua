-- wrk script for bench/http_bench.py: GET the paths listed in a file, one per line, in turn.
--     wrk -c16 -d10s --latency -s bench/http_bench.lua http://127.0.0.1:PORT -- PATHS_FILE [START]
-- START (default 0) is where in the list the first request begins, so that a warm-up run and
-- the measured run do not ask for the same paths.

local paths = {}
local next_path = 0

function init(args)
   for line in io.lines(args[1]) do
      if #line > 0 then
         paths[#paths + 1] = line
      end
   end
   next_path = tonumber(args[2] or "0") % #paths
end

function request()
   next_path = next_path % #paths + 1
   return wrk.format("GET", paths[next_path])
end
