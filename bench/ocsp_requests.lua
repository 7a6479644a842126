-- wrk script for the OCSP benchmark (bench/ocsp.py): cycles through the requests listed in the
-- file $OCSP_REQUESTS, one per line: "GET <path>" or "POST <hex of the DER body>".
-- wrk.resolve is replaced so that wrk makes no probe connection before the run: a single
-- `openssl ocsp` process would block on that idle connection and answer nothing.

function wrk.resolve(host, service)
  wrk.addrs = wrk.lookup(host, service)
end

local requests = {}

local function unhex(text)
  return (text:gsub("..", function(pair) return string.char(tonumber(pair, 16)) end))
end

function init(args)
  local headers = { ["Content-Type"] = "application/ocsp-request" }
  for line in io.lines(os.getenv("OCSP_REQUESTS")) do
    local method, value = line:match("^(%u+) (.+)$")
    if method == "GET" then
      requests[#requests + 1] = wrk.format("GET", value)
    else
      requests[#requests + 1] = wrk.format("POST", wrk.path, headers, unhex(value))
    end
  end
  counter = math.random(#requests)
end

function request()
  counter = counter % #requests + 1
  return requests[counter]
end
