-- test_cqueues.lua - uringbuf.cqueues: uringbuf servers and connections in
-- a cqueues controller, talking to cqueues.socket objects in the same
-- controller.  Exact bytes both ways in every send mode, round trips that
-- each need the ring fd to wake the controller (with and without
-- IORING_SETUP_DEFER_TASKRUN), writes queued from other cqueues coroutines
-- (the interposed step's flush), timeouts by the controller, clean close:
-- cq:loop() ends by itself (the controller is empty) and no fd is leaked.
local T = require "tap"
local ub = require "uringbuf"

local have, cqueues = pcall(require, "cqueues")
local socket, ubcq
if have then
	socket = require "cqueues.socket"
	ubcq = require "uringbuf.cqueues"
end
local TIMEOUT = 30 -- seconds

local modes = T.modes()

local P = require "procs"
local start_peer = P.start_peer

local function need_cqueues()
	if not have then
		T.skip("cqueues is not installed (Debian: lua-cqueues): " ..
			tostring(cqueues):match("^[^\n]*"))
	end
end

-- Open fds of this process, not counting the pipe to the shell that
-- counts them (popen closes its other end in the parent while the shell
-- may already be looking: either way it is not counted).
local function nfds()
	local f = assert(io.open("/proc/self/stat"))
	local pid = f:read("n")
	f:close()
	local p = assert(io.popen(string.format(
		'me=$(readlink /proc/$$/fd/1); n=0; for f in /proc/%d/fd/*; do ' ..
		'l=$(readlink "$f") || continue; [ "$l" = "$me" ] || n=$((n + 1)); ' ..
		'done; echo $n', pid)))
	local n = tonumber(p:read("l"))
	p:close()
	return n
end

-- Run cq until it is empty (cq:loop returns by itself) or TIMEOUT passes.
local function run_bounded(cq, what, cleanup)
	local t0 = cqueues.monotime()
	local ok, err = cq:loop(TIMEOUT)
	local empty = cq:empty()
	if not empty then cleanup() end
	T.ok(ok, what .. ": cq:loop failed", tostring(err))
	T.ok(empty, what .. ": controller empty before the timeout",
		string.format("%.1f s", cqueues.monotime() - t0))
end

-- A cqueues.socket client: write payload in odd-sized chunks from one
-- coroutine, read everything until EOF in another; done(got, err).
local function cq_client(cq, port, payload, done)
	cq:wrap(function()
		local s = assert(socket.connect("127.0.0.1", port))
		s:setmode("bn", "bn")
		local ok, err = s:connect(TIMEOUT)
		if not ok then return done(nil, err) end
		cq:wrap(function()
			local off, k = 1, 1
			while off <= #payload do
				local len = (k * 7919) % 3000 + 1
				k = k + 1
				assert(s:write(payload:sub(off, off + len - 1)))
				off = off + len
			end
			assert(s:flush())
			s:shutdown("w")
		end)
		local got, rerr = s:read("*a")
		s:close()
		done(got, rerr)
	end)
end

for _, m in ipairs(modes) do
	T.test(m.name .. ": uringbuf echo server, cqueues.socket clients, " ..
		"one controller", function()
		need_cqueues()
		if not m.ok then T.skip(m.name .. " unavailable: " .. m.reason) end
		local cq = cqueues.new()
		local fds0 = nfds()
		local closed = 0
		local N, BYTES = 8, 192 * 1024
		local results, done = {}, 0
		local srv
		srv = assert(ubcq.server(cq, { port = 0, mode = m.name,
			pool_count = 64, pool_size = 1024,
			high_water = 16384, low_water = 4096,
			on_data = function(c, b) c:write(b) end,
			on_close = function()
				closed = closed + 1
				if closed == N and done == N then srv:close() end
			end }))
		for i = 1, N do
			local payload = T.pattern("cq" .. i, BYTES)
			cq_client(cq, srv.port, payload, function(got, err)
				results[i] = { ok = got == payload, got = got and #got,
					err = err }
				done = done + 1
				if closed == N and done == N then srv:close() end
			end)
		end
		run_bounded(cq, "echo", function() srv:close() end)
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

T.test("poll fd wakes the controller: 3000 round trips with a " ..
	"cqueues.socket client", function()
	need_cqueues()
	local cq = cqueues.new()
	local srv = assert(ubcq.server(cq, { port = 0, pool_count = 64,
		pool_size = 256, on_data = function(c, b) c:write(b) end }))
	print("#   single_issuer|defer_taskrun: " ..
		tostring(srv.loop:features().single_issuer))
	local ROUNDS = 3000
	local i, bad = 0, nil
	cq:wrap(function()
		local s = assert(socket.connect("127.0.0.1", srv.port))
		s:setmode("bn", "bn")
		assert(s:connect(TIMEOUT))
		for k = 1, ROUNDS do
			local msg = string.format("ping %d %s", k,
				string.rep("x", k % 50))
			assert(s:write(msg))
			assert(s:flush())
			local got = s:read(#msg)
			if got ~= msg then bad = bad or { k, got } break end
			i = k
		end
		s:close()
		srv:close()
	end)
	local t0 = cqueues.monotime()
	run_bounded(cq, "ping-pong", function() srv:close() end)
	print(string.format("#   %d round trips in %.0f ms", i,
		(cqueues.monotime() - t0) * 1000))
	T.eq(bad, nil, "every echo exact")
	T.eq(i, ROUNDS, "round trips")
end)

T.test("poll fd wakes the controller: 500 round trips with a peer " ..
	"process", function()
	need_cqueues()
	local cq = cqueues.new()
	local fds0 = nfds()
	local srv
	srv = assert(ubcq.server(cq, { port = 0,
		on_data = function(c, b) c:write(b) end,
		on_close = function() srv:close() end }))
	local ROUNDS = 500
	local report = start_peer(srv.port, ROUNDS)
	local t0 = cqueues.monotime()
	-- Nothing else in this controller: only the poll fd can wake it.
	run_bounded(cq, "peer process", function() srv:close() end)
	local out = report()
	print(string.format("#   peer: %s in %.0f ms", out:gsub("\n", " "),
		(cqueues.monotime() - t0) * 1000))
	T.eq(out, "rounds " .. ROUNDS .. " bad none\n", "peer's report")
	T.ok(not ub.valid(srv.loop), "server closed after the peer left")
	T.eq(nfds(), fds0, "open fds after close")
end)

T.test("uringbuf client (handler coroutine) to a cqueues.socket server; " ..
	"writes from other coroutines", function()
	need_cqueues()
	local cq = cqueues.new()
	local fds0 = nfds()
	local lsrv = assert(socket.listen("127.0.0.1", 0))
	local _, _, port = lsrv:localname()
	local peers = 0
	cq:wrap(function()
		local s = assert(lsrv:accept(TIMEOUT))
		peers = peers + 1
		lsrv:close()
		s:setmode("bn", "bn")
		-- echo until EOF
		while true do
			local data = s:read(-65536)
			if not data then break end
			assert(s:write(data))
			assert(s:flush())
		end
		s:shutdown("w")
		s:close()
	end)
	local srv = assert(ubcq.server(cq, {}))   -- no listener: client only
	local part1 = T.pattern("coro", 100 * 1024)
	local part2 = T.pattern("other", 50 * 1024)
	local got, finished, cerr = {}, false, nil
	local conn = assert(srv:connect("127.0.0.1", port, {
		handler = function(c)
			assert(c:write(part1))
			while true do
				local b, msg = c:read()
				if not b then cerr = msg break end
				got[#got + 1] = tostring(b)
				b:release()
			end
			finished = true
			srv:close()
		end,
	}))
	-- Writes from a plain cqueues coroutine, outside every uringbuf
	-- callback: only the interposed step submits them.
	cq:wrap(function()
		local off = 1
		while off <= #part2 do
			cqueues.sleep(0.005)
			local ok, msg = conn:write(part2:sub(off, off + 4095))
			assert(ok ~= nil, msg)
			off = off + 4096
		end
		conn:shutdown()
	end)
	run_bounded(cq, "client", function() srv:close(); lsrv:close() end)
	T.eq(cerr, nil, "no read error")
	T.ok(finished, "handler finished at EOF")
	T.eq(peers, 1, "one connection accepted by cqueues")
	T.eq(table.concat(got), part1 .. part2, "echo through the cqueues server")
	T.eq(nfds(), fds0, "open fds after close")
end)

for _, pipe in ipairs({ "", " --pipe" }) do
	T.test("examples/proxy.lua --cqueues" .. pipe .. ": exact bytes, " ..
		"exit 0 on SIGTERM", function()
		need_cqueues()
		P.proxy_roundtrip("--cqueues", pipe, function(pport, payload)
			local got, gerr
			local cq = cqueues.new()
			cq_client(cq, pport, payload, function(g, e) got, gerr = g, e end)
			run_bounded(cq, "client through the proxy", function() end)
			return got, gerr
		end)
	end)
end

T.test("attach and close: argument checks, pollable, detach", function()
	need_cqueues()
	local cq = cqueues.new()
	T.raises("cqueues controller expected", ubcq.attach, {}, {})
	T.raises("uringbuf server expected", ubcq.attach, cq, {})
	T.raises("use cqueues.signal", ubcq.server, cq, { signals = true })
	local srv = assert(ub.server{ port = 0 })
	local a = ubcq.attach(cq, srv)
	T.eq(a:pollfd(), srv.loop:poll_fd(), "pollfd is the loop's poll fd")
	T.ok(a:pollfd() ~= srv.loop:fd(), "not the ring fd (DEFER_TASKRUN)")
	T.eq(a:events(), "r", "events")
	T.ok(a:active(), "active")
	T.ok(not cq:empty(), "the attachment's coroutine is in cq")
	T.ok(a:close(), "close")
	T.ok(a:close(), "close again")
	T.ok(not a:active(), "inactive")
	run_bounded(cq, "detached", function() end)
	T.ok(ub.valid(srv.loop), "server still open")
	srv:close()
end)
