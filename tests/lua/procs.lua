-- procs.lua - processes for the Lua tests that run a uringbuf server inside
-- another event loop (test_luv.lua, test_cqueues.lua): the examples as
-- processes, and a uringbuf peer in another process.
local T = require "tap"

local M = {}

-- A peer in another process (a plain uringbuf client on its own loop):
-- ROUNDS ping-pongs with the server at port, then prints
-- "rounds N bad B".  Its completions reach us from outside, so every
-- round needs the poll fd to wake the host loop (a same-process peer can
-- hide a missing wake-up: the host loop wakes for the peer's own socket).
local PEER = [[
local ub = require "uringbuf"
local port, rounds = tonumber(arg[1]), tonumber(arg[2])
local srv = assert(ub.server{})
local done, n, bad = false, 0, "none"
assert(srv:connect("127.0.0.1", port, { handler = function(c)
	for i = 1, rounds do
		local msg = string.format("ping %d %s", i, string.rep("y", i % 40))
		assert(c:write(msg))
		local got = ""
		while #got < #msg do
			local b = c:read()
			if not b then bad = "eof at " .. i; done = true; return end
			got = got .. tostring(b)
			b:release()
		end
		if got ~= msg then bad = i; break end
		n = i
	end
	done = true
end }))
local deadline = ub.now() + 20
while not done and ub.now() < deadline do srv:step(50) end
srv:close()
print("rounds " .. n .. " bad " .. tostring(bad))
]]

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- examples/*.lua as processes (as tests/lua/test_examples.lua does):
-- returns { pid =, p = } and the first line it printed.
local function start_example(script, args)
	local lua = os.getenv("UB_LUA") or "lua5.4"
	local cmd = string.format("exec 2>&1; echo $$; exec %s %s %s",
		shq(lua), shq("examples/" .. script), args)
	local p = assert(io.popen("sh -c " .. shq(cmd) .. " </dev/null", "r"))
	local proc = { p = p, pid = tonumber(p:read("l")) }
	local line = p:read("l")
	T.defer(function()
		if not proc.stopped then
			os.execute(string.format("kill -KILL %d 2>/dev/null", proc.pid))
			p:close()
		end
	end)
	return proc, line
end

-- SIGTERM, then its exit status and the rest of its output (SIGKILL
-- after 10 s).
local function stop_example(proc)
	proc.stopped = true
	os.execute(string.format("kill -TERM %d 2>/dev/null", proc.pid))
	os.execute(string.format(
		"(sleep 10; kill -KILL %d 2>/dev/null) </dev/null >/dev/null 2>&1 &",
		proc.pid))
	local rest = proc.p:read("a")
	local _, how, code = proc.p:close()
	return how, code, rest
end

local function port_of(line)
	return tonumber((line or ""):match("^listening on 127%.0%.0%.1:(%d+)$"))
end

-- Start the peer process; returns a function that waits for its report.
local function start_peer(port, rounds)
	local lua = os.getenv("UB_LUA") or "lua5.4"
	local p = assert(io.popen(string.format("%s -e %s /dev/null %d %d 2>&1",
		lua, shq(PEER), port, rounds)))
	return function()
		local out = p:read("a")
		p:close()
		return out
	end
end

-- examples/proxy.lua with flag ("--luv", "--cqueues") and pipe ("" or
-- " --pipe") in front of examples/echo.lua: send(port, payload) runs a
-- client of the host loop through the proxy and returns what came back and
-- an error; the echo must be exact and the proxy must exit 0 on SIGTERM.
local function proxy_roundtrip(flag, pipe, send)
	local echo, eline = start_example("echo.lua", "--listen 127.0.0.1:0")
	local eport = port_of(eline)
	T.ok(eport, "echo.lua: " .. tostring(eline))
	local proxy, pline = start_example("proxy.lua", flag ..
		" --listen 127.0.0.1:0 --to 127.0.0.1:" .. eport .. pipe)
	local pport = port_of(pline)
	T.ok(pport, "proxy.lua " .. flag .. ": " .. tostring(pline))
	local payload = T.pattern("px", 512 * 1024)
	local got, gerr = send(pport, payload)
	T.eq(gerr, nil, "client error")
	T.ok(got == payload, "exact echo through proxy.lua " .. flag,
		tostring(got and #got))
	local how, code, rest = stop_example(proxy)
	T.eq(how .. " " .. code, "exit 0", "proxy exit: " .. rest)
	stop_example(echo)
end

-- A Lua program (source text src, arguments args, a string) in the
-- background, its output going to a temporary file; for a test that keeps
-- its own loop running meanwhile.  opts.nofile raises the child's
-- RLIMIT_NOFILE soft limit (as far as the hard limit allows).  Returns
-- a process with methods output() (what it printed so far), finished()
-- (its output once it printed a last line "END", else nil) and kill();
-- the test's cleanup kills it.
local Bg = {}
Bg.__index = Bg

function Bg:output()
	local f = io.open(self.out, "rb")
	if not f then return "" end
	local s = f:read("a") or ""
	f:close()
	return s
end

function Bg:finished()
	local s = self:output()
	if s:find("\nEND\n$") or s:find("^END\n$") then return s end
	return nil
end

function Bg:kill()
	if not self.killed then
		self.killed = true
		os.execute(string.format("kill -KILL %d 2>/dev/null", self.pid))
	end
	if self.out then
		os.remove(self.out)
	end
end

local function spawn(src, args, opts)
	local lua = os.getenv("UB_LUA") or "lua5.4"
	local out = os.tmpname()
	local pre = ""
	if opts and opts.nofile then
		pre = string.format("ulimit -n %d 2>/dev/null || ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; ",
			opts.nofile)
	end
	-- the braces run in one background subshell, which exec turns into
	-- the interpreter: $! is its pid
	local cmd = string.format("{ %sexec %s -e %s /dev/null %s; } >%s 2>&1 </dev/null & echo $!",
		pre, shq(lua), shq(src), args or "", shq(out))
	local p = assert(io.popen("sh -c " .. shq(cmd), "r"))
	local pid = tonumber(p:read("l"))
	p:close()
	local proc = setmetatable({ pid = pid, out = out }, Bg)
	T.defer(function()
		proc:kill()
	end)
	return proc
end

M.start_example, M.stop_example = start_example, stop_example
M.spawn = spawn
M.port_of, M.start_peer = port_of, start_peer
M.proxy_roundtrip = proxy_roundtrip
return M
