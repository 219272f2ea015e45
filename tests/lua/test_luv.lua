-- test_luv.lua - uringbuf.luv: uringbuf servers and connections in a luv
-- (libuv) loop, talking to luv's own TCP handles in the same loop.  Exact
-- bytes both ways in every send mode, round trips that each need the ring
-- fd to wake libuv (with and without IORING_SETUP_DEFER_TASKRUN), writes
-- queued from libuv timers (the prepare-handle flush), timeouts by libuv
-- timers, clean close: uv.run() returns by itself (no handle left) and no
-- fd is leaked.
local T = require "tap"
local ub = require "uringbuf"

local have, uv = pcall(require, "luv")
local ubluv
if have then ubluv = require "uringbuf.luv" end
local TIMEOUT_MS = 30000

local modes = T.modes()

local P = require "procs"
local start_peer = P.start_peer

local function need_luv()
	if not have then
		T.skip("luv is not installed (Debian: lua-luv): " ..
			tostring(uv):match("^[^\n]*"))
	end
end

local function fdlist()
	local t = {}
	local req = assert(uv.fs_scandir("/proc/self/fd"))
	while true do
		local name = uv.fs_scandir_next(req)
		if not name then break end
		t[#t + 1] = name .. "->" .. tostring(uv.fs_readlink("/proc/self/fd/" .. name))
	end
	return t
end
-- Open fds, after libuv has made the ones it keeps for good (the first
-- listening socket reserves a /dev/null fd for EMFILE handling).
local warmed = false
local function nfds()
	if not warmed then
		warmed = true
		local s = uv.new_tcp()
		assert(s:bind("127.0.0.1", 0))
		assert(s:listen(1, function() end))
		s:close()
		uv.run("nowait")
	end
	return #fdlist()
end

-- Run libuv until every handle is closed (uv.run returns by itself), or
-- TIMEOUT_MS pass: then fail, after closing everything still open.
local function run_bounded(what, cleanup)
	local timer = uv.new_timer()
	local timed_out = false
	timer:start(TIMEOUT_MS, 0, function()
		timed_out = true
		timer:close()
		cleanup()
		uv.walk(function(h) if not h:is_closing() then h:close() end end)
	end)
	timer:unref() -- the timeout alone must not keep the loop alive
	uv.run()
	if not timer:is_closing() then timer:close() end
	uv.run("nowait")
	T.ok(not timed_out, what .. ": finished before the libuv timeout")
end

-- A luv TCP client: connect, write payload in odd-sized chunks, shutdown,
-- read everything until EOF, close.  done(got, err) at the end.
local function uv_client(port, payload, done)
	local c = uv.new_tcp()
	local parts = {}
	c:connect("127.0.0.1", port, function(err)
		if err then c:close(); return done(nil, err) end
		c:read_start(function(rerr, data)
			if rerr then c:close(); return done(nil, rerr) end
			if data then
				parts[#parts + 1] = data
			else
				c:close()
				done(table.concat(parts))
			end
		end)
		local off, k = 1, 1
		while off <= #payload do
			local len = (k * 7919) % 3000 + 1
			k = k + 1
			c:write(payload:sub(off, off + len - 1))
			off = off + len
		end
		c:shutdown()
	end)
	return c
end

for _, m in ipairs(modes) do
	T.test(m.name .. ": uringbuf echo server, luv TCP clients, one uv loop",
		function()
		need_luv()
		if not m.ok then T.skip(m.name .. " unavailable: " .. m.reason) end
		local fds0 = nfds()
		local closed = 0
		local srv = assert(ubluv.server{ port = 0, mode = m.name,
			pool_count = 64, pool_size = 1024,
			high_water = 16384, low_water = 4096,
			on_data = function(c, b) c:write(b) end,
			on_close = function() closed = closed + 1 end })
		T.ok(srv.attachment:active(), "attached")
		local N, BYTES = 8, 192 * 1024
		local results, done = {}, 0
		for i = 1, N do
			local payload = T.pattern("uv" .. i, BYTES)
			uv_client(srv.port, payload, function(got, err)
				results[i] = { ok = got == payload, got = got and #got,
					err = err }
				done = done + 1
			end)
		end
		-- Close the server once every client has its echo and the server
		-- has seen every close: that ends uv.run().
		local check = uv.new_check()
		check:start(function()
			if done == N and closed == N then
				check:close()
				srv:close()
			end
		end)
		run_bounded("echo", function() srv:close() end)
		for i = 1, N do
			local r = results[i] or {}
			T.ok(r.ok, "client " .. i .. " got its exact echo",
				tostring(r.got), tostring(r.err))
		end
		T.eq(closed, N, "server connections closed")
		T.ok(not srv.attachment:active(), "detached")
		T.ok(not ub.valid(srv.loop), "loop closed")
		T.eq(nfds(), fds0, "open fds after close")
	end)
end

T.test("poll fd wakes libuv: 3000 round trips with a luv client", function()
	need_luv()
	local srv = assert(ubluv.server{ port = 0, pool_count = 64,
		pool_size = 256, on_data = function(c, b) c:write(b) end })
	print("#   single_issuer|defer_taskrun: " ..
		tostring(srv.loop:features().single_issuer))
	local ROUNDS = 3000
	local c = uv.new_tcp()
	local i, pending, bad = 0, "", nil
	local function ping()
		i = i + 1
		pending = string.format("ping %d %s", i, string.rep("x", i % 50))
		c:write(pending)
	end
	local buf = ""
	c:connect("127.0.0.1", srv.port, function(err)
		assert(not err, err)
		c:read_start(function(rerr, data)
			assert(not rerr, rerr)
			if not data then c:close() return end
			buf = buf .. data
			if #buf >= #pending then
				if buf ~= pending then bad = bad or { i, buf } end
				buf = ""
				if i < ROUNDS then ping() else c:shutdown() end
			end
		end)
		ping()
	end)
	local t0 = uv.hrtime()
	local check = uv.new_check()
	check:start(function()
		if c:is_closing() then check:close(); srv:close() end
	end)
	run_bounded("ping-pong", function() srv:close() end)
	print(string.format("#   %d round trips in %.0f ms", i,
		(uv.hrtime() - t0) / 1e6))
	T.eq(bad, nil, "every echo exact")
	T.eq(i, ROUNDS, "round trips")
end)

T.test("poll fd wakes libuv: 500 round trips with a peer process", function()
	need_luv()
	local fds0 = nfds()
	local closed = false
	local srv = assert(ubluv.server{ port = 0,
		on_data = function(c, b) c:write(b) end,
		on_close = function() closed = true end })
	local ROUNDS = 500
	local report = start_peer(srv.port, ROUNDS)
	local t0 = uv.hrtime()
	-- Nothing else in this loop: only the poll fd can wake it.
	local check = uv.new_check()
	check:start(function()
		if closed then check:close(); srv:close() end
	end)
	run_bounded("peer process", function() srv:close() end)
	local out = report()
	print(string.format("#   peer: %s in %.0f ms", out:gsub("\n", " "),
		(uv.hrtime() - t0) / 1e6))
	T.eq(out, "rounds " .. ROUNDS .. " bad none\n", "peer's report")
	T.ok(closed, "server saw the peer close")
	T.eq(nfds(), fds0, "open fds after close")
end)

T.test("uringbuf client (handler coroutine) to a luv TCP server; writes " ..
	"from libuv timers", function()
	need_luv()
	local fds0 = nfds()
	-- luv echo server
	local lsrv = uv.new_tcp()
	assert(lsrv:bind("127.0.0.1", 0))
	local port = lsrv:getsockname().port
	local peers = 0
	assert(lsrv:listen(16, function(err)
		assert(not err, err)
		local s = uv.new_tcp()
		lsrv:accept(s)
		peers = peers + 1
		s:read_start(function(rerr, data)
			assert(not rerr, rerr)
			if data then s:write(data) else s:shutdown(function() s:close() end) end
		end)
	end))
	local srv = assert(ubluv.server{})     -- no listener: client only
	local part1 = T.pattern("coro", 100 * 1024)
	local part2 = T.pattern("timer", 50 * 1024)
	local want = part1 .. part2
	local got, finished, cerr = {}, false, nil
	local conn
	conn = assert(srv:connect("127.0.0.1", port, {
		handler = function(c)
			assert(c:write(part1))
			local n = 0
			while true do
				local b, msg = c:read()
				if not b then cerr = msg break end
				got[#got + 1] = tostring(b)
				n = n + #b
				b:release()
			end
			finished = true
		end,
	}))
	-- Writes from outside any uringbuf callback: only the prepare
	-- handle's flush submits them.
	local timer = uv.new_timer()
	local off = 1
	timer:start(5, 5, function()
		if off > #part2 then
			timer:close()
			conn:shutdown()
			return
		end
		local ok, msg = conn:write(part2:sub(off, off + 4095))
		assert(ok ~= nil, msg)
		off = off + 4096
	end)
	local check = uv.new_check()
	check:start(function()
		if finished then
			check:close()
			lsrv:close()
			srv:close()
		end
	end)
	run_bounded("client", function() srv:close(); lsrv:close() end)
	T.eq(cerr, nil, "no read error")
	T.ok(finished, "handler finished at EOF")
	T.eq(peers, 1, "one connection accepted by luv")
	T.eq(table.concat(got), want, "echo through the luv server")
	T.eq(nfds(), fds0, "open fds after close")
end)

for _, pipe in ipairs({ "", " --pipe" }) do
	T.test("examples/proxy.lua --luv" .. pipe .. ": exact bytes, exit 0 " ..
		"on SIGTERM", function()
		need_luv()
		P.proxy_roundtrip("--luv", pipe, function(pport, payload)
			local got, gerr
			uv_client(pport, payload, function(g, e) got, gerr = g, e end)
			run_bounded("client through the proxy", function() end)
			return got, gerr
		end)
	end)
end

T.test("attach and close: argument checks, detach without closing", function()
	need_luv()
	T.raises("uringbuf server expected", ubluv.attach, {})
	T.raises("use uv.new_signal", ubluv.server, { signals = true })
	local srv = assert(ub.server{ port = 0 })
	local a = assert(ubluv.attach(srv))
	T.ok(a:active(), "active")
	T.ok(a:close(), "close")
	T.ok(a:close(), "close again")
	T.ok(not a:active(), "inactive")
	-- nothing of ours keeps the loop alive any more
	run_bounded("detached", function() end)
	T.ok(ub.valid(srv.loop), "server still open")
	srv:close()
end)

