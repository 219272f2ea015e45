-- test_examples.lua - examples/echo.lua and examples/proxy.lua as
-- processes: the C examples' command line, "listening on HOST:PORT" with the
-- real port, a real client (this binding, and socat where installed) in
-- every mode, exit 0 on SIGTERM/SIGINT.
local T = require "tap"
local ub = require "uringbuf"
local netpair = require "netpair"

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
	local st = netpair.echo_streams(srv, addr, n, bytes)
	local ok = T.drive(srv, function() return st.done == n end, 30)
	srv:close()
	T.ok(ok, "clients finished in time", st.done, n)
	T.eq(st.bad, 0, "clients with a wrong echo")
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
			-- Default options on both sides: receive budgets keep the
			-- two servers' buffers queued towards each other from
			-- taking either pool (issue 11).
			local echo, eline = start("echo.lua", "--listen 127.0.0.1:0")
			local eport = port_of(eline)
			T.ok(eport, "echo listening", eline)
			local proxy, pline = start("proxy.lua", string.format(
				"--listen 127.0.0.1:0 --to 127.0.0.1:%d --mode %s%s",
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

-- n concurrent streams of `bytes` each through addr (an echo behind it),
-- every one checked byte for byte as it comes back, on one client loop
-- with default options.  Each stream repeats a block of its own whose
-- length (65521, prime) no buffer size divides, so a lost, repeated or
-- misplaced buffer shows; memory stays at one block per stream.
local BLOCK = 65521
local function streams(addr, n, bytes, seconds)
	local srv = assert(ub.server{})
	local done, bad, errs = 0, 0, {}
	local t0 = ub.now()
	for i = 1, n do
		local block = T.pattern("s" .. i, BLOCK)
		local sent, got = 0, 0
		local function push(c)
			while sent < bytes do
				local len = math.min(BLOCK, bytes - sent)
				local ok = c:write(len == BLOCK and block or block:sub(1, len))
				if ok == nil then return end
				sent = sent + len
				if ok == false then return end -- on_drain goes on
			end
			c:shutdown()
		end
		assert(srv:connect(addr, {
			on_connect = push,
			on_drain = push,
			on_data = function(c, b)
				local s = tostring(b)
				b:release()
				local off = 1
				while off <= #s do
					local at = got % BLOCK
					local take = math.min(#s - off + 1, BLOCK - at)
					if s:sub(off, off + take - 1) ~= block:sub(at + 1, at + take) then
						if bad == 0 or #errs < 3 then
							errs[#errs + 1] = string.format("stream %d differs at byte %d", i, got)
						end
						bad = bad + 1
						return c:abort()
					end
					got = got + take
					off = off + take
				end
			end,
			on_eof = function(c) c:close() end,
			on_close = function(_, err)
				if err or got ~= bytes then
					if #errs < 3 then
						errs[#errs + 1] = string.format("stream %d: %d of %d bytes back, %s",
							i, got, bytes, tostring(err))
					end
					bad = bad + 1
				end
				done = done + 1
			end,
		}))
	end
	local ok = T.drive(srv, function() return done == n end, seconds)
	local dt = ub.now() - t0
	srv:close()
	T.ok(ok, string.format("%d streams finished within %d s", n, seconds), done)
	T.eq(bad, 0, "streams with a wrong echo: " .. table.concat(errs, "; "))
	return dt
end

-- The streams of issue 11.  Under the sanitizers (the asan-lua suite and
-- lua.mk's check-asan preload the ASan runtime into every interpreter,
-- the examples' included) they are the same size: measured here, each
-- set takes 1-3.5 s either way; only the deadline is longer there.
local SANITIZED = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) ~= nil
local STREAMS = {
	{ n = 64, bytes = 4 * 1024 * 1024 },
	{ n = 200, bytes = 256 * 1024 },
}

for _, pipe in ipairs({ false, true }) do
	T.test(string.format("proxy.lua%s in front of echo.lua, default options: " ..
		"%d x %d KiB and %d x %d KiB concurrent streams, byte-exact",
		pipe and " --pipe" or "", STREAMS[1].n, STREAMS[1].bytes // 1024,
		STREAMS[2].n, STREAMS[2].bytes // 1024), function()
		local echo, eline = start("echo.lua", "--listen 127.0.0.1:0")
		local eport = port_of(eline)
		T.ok(eport, "echo listening", eline)
		local proxy, pline = start("proxy.lua", string.format(
			"--listen 127.0.0.1:0 --to 127.0.0.1:%d%s", eport,
			pipe and " --pipe" or ""))
		local pport = port_of(pline)
		T.ok(pport, "proxy listening", pline)
		for _, s in ipairs(STREAMS) do
			local dt = streams("127.0.0.1:" .. pport, s.n, s.bytes,
				SANITIZED and 240 or 120)
			if os.getenv("UB_VERBOSE") then
				print(string.format("# %d x %d bytes: %.2f s", s.n, s.bytes, dt))
			end
		end
		local how, code, rest = stop(proxy, "TERM")
		T.eq(how .. " " .. tostring(code), "exit 0", "proxy exit; output: " .. tostring(rest))
		how, code, rest = stop(echo, "TERM")
		T.eq(how .. " " .. tostring(code), "exit 0", "echo exit; output: " .. tostring(rest))
	end)
end

-- proxy.lua --inc: an incremental receive pool (or, where the kernel lacks
-- it, one line saying why: merged into the output before the listening
-- line), forwarding byte-exact per buffer and with --pipe.
local inc_why
do
	local loop <close> = assert(ub.loop{ pool_count = 1, pool_size = 64 })
	inc_why = loop:features().pbuf_inc
	if inc_why == true then inc_why = nil end
end
for _, pipe in ipairs({ false, true }) do
	T.test(string.format("proxy.lua --inc%s: forwards byte-exact, exits 0",
		pipe and " --pipe" or ""), function()
		local echo, eline = start("echo.lua", "--listen 127.0.0.1:0")
		local eport = port_of(eline)
		T.ok(eport, "echo listening", eline)
		local proxy, pline = start("proxy.lua", string.format(
			"--listen 127.0.0.1:0 --to 127.0.0.1:%d --inc --buf-size 65536 " ..
			"--buf-count 256%s", eport, pipe and " --pipe" or ""))
		if inc_why then
			T.ok(pline:find("--inc", 1, true) and
				pline:find(inc_why, 1, true), "says why not", pline)
			pline = proxy.p:read("l")
		end
		local pport = port_of(pline)
		T.ok(pport, "proxy listening", pline)
		clients("127.0.0.1:" .. pport, 20, 64 * 1024)
		streams("127.0.0.1:" .. pport, 64, 1024 * 1024, SANITIZED and 240 or 120)
		local how, code, rest = stop(proxy, "TERM")
		T.eq(how .. " " .. tostring(code), "exit 0", "proxy exit; output: " .. tostring(rest))
		T.eq(rest, "", "nothing more on its output")
		how, code, rest = stop(echo, "TERM")
		T.eq(how .. " " .. tostring(code), "exit 0", "echo exit; output: " .. tostring(rest))
	end)
end

T.test("echo.lua --idle-timeout, --max-conns, --recv-budget (as echo.c)", function()
	local proc, line = start("echo.lua",
		"--listen 127.0.0.1:0 --idle-timeout 300 --max-conns 1 --recv-budget 8192")
	local port = port_of(line)
	T.ok(port, "listening line", line)
	local srv = assert(ub.server{})
	local t0 = ub.now()
	local ends, got = {}, {}
	for i = 1, 2 do
		assert(srv:connect("127.0.0.1", port, {
			on_connect = function(c) c:write("hello " .. i) end,
			on_data = function(_, b) got[i] = (got[i] or "") .. tostring(b); b:release() end,
			on_eof = function(c) c:close() end,
			on_close = function() ends[i] = ub.now() - t0 end,
		}))
	end
	T.ok(T.drive(srv, function() return ends[1] and ends[2] end, 20),
		"both closed by the server", tostring(ends[1]), tostring(ends[2]))
	srv:close()
	T.eq(got[1], "hello 1", "first echoed")
	T.eq(got[2], "hello 2", "second echoed (once the first was gone)")
	local first, second = math.min(ends[1], ends[2]), math.max(ends[1], ends[2])
	T.ok(first >= 0.29, "idle for 300 ms first", first)
	T.ok(second >= first + 0.29, "the second accepted only after the first closed",
		first, second)
	local how, code = stop(proc, "TERM")
	T.eq(how .. " " .. tostring(code), "exit 0", "exit status")
end)

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
