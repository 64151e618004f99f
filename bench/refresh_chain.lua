-- One refresh chain per wrk thread (run with -tN -cN and a file of N refresh tokens, one a
-- line, named by CHAIN_FILE): each thread posts its current token and keeps the child from the
-- answer, as a client does. Two connections sharing a chain would spend one token twice: reuse.
local tokens = {}
for line in io.lines(os.getenv("CHAIN_FILE")) do
  tokens[#tokens + 1] = line
end
local next_index = 1

function setup(thread)
  thread:set("token", tokens[next_index])
  next_index = next_index + 1
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  return wrk.format(nil, nil, nil, '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
  -- Any other status is counted by wrk as non-2xx, which the benchmark refuses.
  if status == 200 then
    token = string.match(body, '"refresh_token"%s*:%s*"([^"]+)"')
  end
end
