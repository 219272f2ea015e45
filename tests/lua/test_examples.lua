-- test_examples.lua - examples/echo.lua and examples/proxy.lua as
-- processes: the C examples' command line, "listening on HOST:PORT" with the
-- real port, a real client (this binding, and socat where installed) in
-- every mode, exit 0 on SIGTERM/SIGINT.
local T = require "tap"
local ub = require "uringbuf"

local LUA = os.getenv("UB_LUA") or "lua5.4"
local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local have_socat = os.execute("command -v socat >/dev/null 2>&1")
local modes = T.modes()

-- Start an example; returns the process (pid, pipe) and its first line.
local function start(script, args)
	local cmd = string.format("exec 2>&1; echo $$; exec %s %s %s",
		shq(LUA), shq("examples/" .. script), args)
	local p = assert(io.popen("sh -c " .. shq(cmd) .. " </dev/null", "r"))
	local pid = tonumber(p:read("l"))
	local line = p:read("l")
	local proc = { p = p, pid = pid }
	-- whatever happens to the test, the process goes
	T.defer(function()
		if not proc.stopped then
			os.execute(string.format("kill -KILL %d 2>/dev/null", pid))
			p:close()
		end
	end)
	return proc, line
end

-- Signal it and collect its exit status (bounded: SIGKILL after 10 s).
local function stop(proc, sig)
	proc.stopped = true
	os.execute(string.format("kill -%s %d 2>/dev/null", sig or "TERM", proc.pid))
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

-- n clients over this binding, each sending its own stream to addr and
-- checking the echo byte for byte.
local function clients(addr, n, bytes)
	local srv = assert(ub.server{})
	local done, bad = 0, 0
	for i = 1, n do
		local payload = T.pattern("e" .. i, bytes)
		local got = {}
		assert(srv:connect(addr, {
			on_connect = function(c) c:write(payload); c:shutdown() end,
			on_data = function(_, b) got[#got + 1] = tostring(b); b:release() end,
			on_eof = function(c) c:close() end,
			on_close = function(_, err)
				if err or table.concat(got) ~= payload then bad = bad + 1 end
				done = done + 1
			end,
		}))
	end
	local ok = T.drive(srv, function() return done == n end, 30)
	srv:close()
	T.ok(ok, "clients finished in time", done, n)
	T.eq(bad, 0, "clients with a wrong echo")
end

local function socat_roundtrip(port)
	if not have_socat then return end
	local inf, outf = os.tmpname(), os.tmpname()
	local f = assert(io.open(inf, "wb"))
	f:write(T.pattern("socat", 512 * 1024))
	f:close()
	local ok = os.execute(string.format(
		"timeout 20 socat -t 10 - TCP:127.0.0.1:%d <%s >%s", port, inf, outf))
	local a = assert(io.open(inf, "rb")):read("a")
	local b = assert(io.open(outf, "rb")):read("a")
	os.remove(inf)
	os.remove(outf)
	T.ok(ok, "socat ran")
	T.eq(#b, #a, "socat: bytes back")
	T.ok(a == b, "socat: same bytes")
end

T.test("command line: --help, bad mode, missing --listen", function()
	for _, script in ipairs({ "echo.lua", "proxy.lua" }) do
		local cmd = string.format("%s examples/%s", shq(LUA), script)
		T.eq(os.execute(cmd .. " --help >/dev/null"), true, script .. " --help")
		local ok, _, code = os.execute(cmd .. " --listen 127.0.0.1:0 --mode fast --to 127.0.0.1:1 2>/dev/null")
		T.ok(not ok and code == 1, script .. " --mode fast exits 1")
		ok, _, code = os.execute(cmd .. " --to 127.0.0.1:1 2>/dev/null")
		T.ok(not ok and code == 1, script .. " without --listen exits 1")
		ok, _, code = os.execute(cmd .. " --listen nowhere --to 127.0.0.1:1 2>/dev/null")
		T.ok(not ok and code == 1, script .. " bad address exits 1")
	end
	local ok, _, code = os.execute(shq(LUA) .. " examples/proxy.lua --listen 127.0.0.1:0 2>/dev/null")
	T.ok(not ok and code == 1, "proxy without --to exits 1")
end)

for _, m in ipairs(modes) do
	T.test("echo.lua --mode " .. m.name .. ": serves, exits 0 on SIGTERM", function()
		if not m.ok then T.skip(m.name .. " unavailable: " .. m.reason) end
		local proc, line = start("echo.lua", "--listen 127.0.0.1:0 --mode " .. m.name)
		local port = port_of(line)
		T.ok(port and port > 0, "listening line", line)
		clients("127.0.0.1:" .. port, 20, 64 * 1024)
		socat_roundtrip(port)
		local how, code, rest = stop(proc, "TERM")
		T.eq(how, "exit", "exited (not killed): " .. tostring(rest))
		T.eq(code, 0, "exit status; output: " .. tostring(rest))
	end)

	for _, pipe in ipairs({ false, true }) do
		T.test(string.format("proxy.lua --mode %s%s: forwards, exits 0 on SIGINT",
			m.name, pipe and " --pipe" or ""), function()
			if not m.ok then T.skip(m.name .. " unavailable: " .. m.reason) end
			-- Big pools: with the default ones (1024 x 4 KiB) and
			-- 1 MiB high water marks, the two servers' buffers queued
			-- towards each other can take both pools under load, and
			-- neither can then receive (README: Guarantees).
			local echo, eline = start("echo.lua", "--listen 127.0.0.1:0 --buf-count 16384")
			local eport = port_of(eline)
			T.ok(eport, "echo listening", eline)
			local proxy, pline = start("proxy.lua", string.format(
				"--listen 127.0.0.1:0 --to 127.0.0.1:%d --buf-count 16384 --mode %s%s",
				eport, m.name, pipe and " --pipe" or ""))
			local pport = port_of(pline)
			T.ok(pport, "proxy listening", pline)
			clients("127.0.0.1:" .. pport, 20, 64 * 1024)
			socat_roundtrip(pport)
			local how, code, rest = stop(proxy, "INT")
			T.eq(how, "exit", "proxy exited: " .. tostring(rest))
			T.eq(code, 0, "proxy exit status; output: " .. tostring(rest))
			how, code = stop(echo, "TERM")
			T.eq(code, 0, "echo exit status")
		end)
	end
end

T.test("proxy.lua: an unreachable target closes the client", function()
	-- a port nobody listens on
	local loop = assert(ub.loop())
	local l = assert(loop:listen("127.0.0.1:0"))
	local dead = l:address()
	loop:close()
	local proxy, pline = start("proxy.lua", "--listen 127.0.0.1:0 --to " .. dead)
	local pport = port_of(pline)
	T.ok(pport, "proxy listening", pline)
	local srv = assert(ub.server{})
	local closed = false
	assert(srv:connect("127.0.0.1:" .. pport, {
		on_connect = function(c) c:write("hello?") end,
		on_data = function(_, b) b:release() end,
		on_close = function() closed = true end,
	}))
	T.ok(T.drive(srv, function() return closed end, 10), "client closed")
	srv:close()
	local how, code, rest = stop(proxy, "TERM")
	T.eq(code, 0, "exit status")
	T.ok(rest:find("connect to", 1, true), "says why", rest)
end)
