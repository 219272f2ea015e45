-- test_badinput.lua - misuse raises ("bad argument #n to 'f' (...)"),
-- impossible requests return nil, message, errno, and nothing crashes:
-- every call below runs under pcall, several times over.
local T = require "tap"
local ub = require "uringbuf"
local core = ub.core

local function pair(loop)
	local l = assert(loop:listen("127.0.0.1:0"))
	local c = assert(loop:connect(l:address()))
	local s
	local deadline = ub.now() + 5
	while not s and ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		for i = 1, n do
			if ev[i].type == "accept" then s = ev[i].conn end
		end
	end
	assert(s)
	return s, c, l
end

-- kind "raise": must raise with text; "fail": must return nil, msg, errno.
local function check(kind, text, f, ...)
	local r = table.pack(pcall(f, ...))
	if kind == "raise" then
		T.eq(r[1], false, "expected a raise (" .. text .. ")")
		T.ok(tostring(r[2]):find(text, 1, true), "message",
			tostring(r[2]), "wanted", text)
	else
		T.eq(r[1], true, "unexpected raise: " .. tostring(r[2]))
		T.eq(r[2], nil, "expected nil, message, errno (" .. text .. ")")
		T.eq(type(r[3]), "string")
		T.eq(math.type(r[4]), "integer")
		if text ~= "" then T.eq(r[4], ub.errno[text], "errno") end
	end
end

T.test("loop and pool constructors", function()
	for _ = 1, 3 do
		check("raise", "bad argument #1", ub.loop, "x")
		check("raise", "out of range", ub.loop, { entries = -1 })
		check("raise", "integer expected", ub.loop, { entries = 1.5 })
		check("raise", "out of range", ub.loop, { entries = 1 << 40 })
		check("raise", "out of range", ub.loop, { pool_count = -5 })
		check("raise", "unknown option 'bogus'", ub.loop, { bogus = 1 })
		check("raise", "unknown feature 'nope'", ub.loop, { disable = { "nope" } })
		check("raise", "unknown option", ub.loop, { [1] = true })
		local loop <close> = assert(ub.loop{ pool_count = 4, pool_size = 64 })
		check("raise", "bad argument #1", loop.pool, loop, -1, 10)
		check("raise", "number has no integer representation", loop.pool, loop, 1.5, 10)
		check("raise", "out of range", loop.pool, loop, 1 << 33, 1)
		check("raise", "out of range", loop.pool, loop, 1, -(1 << 40))
		check("raise", "'send' or 'recv' expected", loop.pool, loop, 1, 1, "bogus")
		check("fail", "EINVAL", loop.pool, loop, 0, 10)
		check("fail", "EINVAL", loop.pool, loop, 1, 0)
		check("fail", "EINVAL", loop.pool, loop, 1, (1 << 30) + 1)
		check("fail", "EINVAL", loop.pool, loop, 32768, 1 << 30) -- 32 TiB
		check("fail", "EINVAL", loop.pool, loop, 32769, 1)
		check("fail", "EINVAL", assert(loop:recv_pool()).acquire, loop:recv_pool())
		check("raise", "bad argument #2", loop.wait, loop, -1)
		check("raise", "bad argument #2", loop.wait, loop, 100000)
		check("raise", "bad argument #3", loop.wait, loop, 1, 1.5)
		check("raise", "bad argument #3", loop.wait, loop, 1, -2)
		check("raise", "bad argument #4", loop.wait, loop, 0, 0, "x")
		check("raise", "uringbuf.loop expected", loop.wait, "loop")
		check("raise", "unknown mode", loop.mode_check, loop, "fast")
	end
end)

T.test("listen, connect and their options", function()
	local loop <close> = assert(ub.loop())
	local spool = assert(loop:pool(2, 64))
	for _ = 1, 3 do
		check("raise", "bad argument #1 to 'listen'", function() return loop:listen(123) end)
		check("raise", "bad argument #1 to 'connect'", function() return loop:connect({}) end)
		check("raise", "bad argument #2 to 'connect' (unknown option", function() return loop:connect("127.0.0.1:1", { x = 1 }) end)
		check("raise", "malformed address", loop.listen, loop, "example.com:80")
		check("raise", "malformed address", loop.connect, loop, "127.0.0.1:99999")
		check("raise", "bad argument #2", loop.connect, loop, nil)
		check("raise", "unknown mode 'nope'", loop.listen, loop, "127.0.0.1:0", { mode = "nope" })
		check("raise", "field 'high_water'", loop.listen, loop, "127.0.0.1:0", { high_water = -1 })
		check("raise", "field 'recv_pool'", loop.listen, loop, "127.0.0.1:0", { recv_pool = "x" })
		check("raise", "unknown option 'hihg_water'", loop.connect, loop, "127.0.0.1:1", { hihg_water = 1 })
		check("raise", "field 'backlog'", loop.listen, loop, "127.0.0.1:0", { backlog = 1.5 })
		check("fail", "EINVAL", loop.listen, loop, "127.0.0.1:0", { recv_pool = spool })
		check("fail", "EINVAL", loop.listen, loop, "127.0.0.1:0", { high_water = 10, low_water = 20 })
		check("fail", "EINVAL", loop.connect, loop, "127.0.0.1:1", { ring_entries = 3 })
		check("fail", "", loop.adopt, loop, 0) -- stdin is not a socket
		check("fail", "", loop.adopt, loop, 99999)
		check("raise", "out of range", loop.adopt, loop, 1 << 40)
	end
end)

-- The core's option checks give the reason: nil, reason, errno.
local function reason(text, en, f, ...)
	local r = table.pack(pcall(f, ...))
	T.eq(r[1], true, "unexpected raise: " .. tostring(r[2]))
	T.eq(r[2], nil, "expected nil, reason, errno (" .. text .. ")")
	T.eq(r[3], text)
	T.eq(r[4], ub.errno[en], "errno")
end

T.test("option rules: the core's reason reaches Lua", function()
	local loop <close> = assert(ub.loop())
	local other <close> = assert(ub.loop())
	local spool = assert(loop:pool(2, 64))
	local c = select(2, pair(loop))
	for _ = 1, 3 do
		reason("entries must be at most 32768", "EINVAL", ub.loop, { entries = 40000 })
		reason("pool_size must be at most 1 GiB", "EINVAL", ub.loop, { pool_size = (1 << 30) + 1 })
		reason("disable has a bit that is no UB_FEAT_* feature", "EINVAL", ub.loop, { disable = 1 << 20 })
		reason("count must be 1..32768 buffers", "EINVAL", loop.pool, loop, 0, 10)
		reason("size must be 1 byte..1 GiB", "EINVAL", loop.pool, loop, 1, 0)
		reason("count * size must be at most 64 GiB", "EINVAL", loop.pool, loop, 32768, 1 << 30)
		reason("ring_entries must be a power of 2 up to 32768", "EINVAL",
			loop.connect, loop, "127.0.0.1:1", { ring_entries = 3 })
		reason("ring_entries must be a power of 2 up to 32768", "EINVAL",
			loop.listen, loop, "127.0.0.1:0", { ring_entries = 65536 })
		reason("low_water must not exceed high_water", "EINVAL",
			loop.listen, loop, "127.0.0.1:0", { high_water = 10, low_water = 20 })
		reason("mode must be a send mode (UB_MODE_AUTO, BUNDLE, RING or SERIAL)", "EINVAL",
			loop.connect, loop, "127.0.0.1:1", { mode = 7 })
		reason("flags has a bit that is no UB_CONN_* flag", "EINVAL",
			loop.connect, loop, "127.0.0.1:1", { flags = 1 << 9 })
		reason("recv_pool must be a receive pool", "EINVAL",
			loop.connect, loop, "127.0.0.1:1", { recv_pool = spool })
		reason("recv_pool belongs to another loop", "EINVAL",
			loop.adopt, loop, 0, { recv_pool = other:recv_pool() })
		reason("send_pool belongs to another loop", "EINVAL",
			loop.adopt_listener, loop, 0, { send_pool = other:send_pool() })
		reason("queue_max must be at most 32768 datagrams", "EINVAL",
			loop.datagram, loop, "127.0.0.1:0", { queue_max = 40000 })
		reason("low_water must not exceed high_water", "EINVAL",
			loop.adopt_datagram, loop, 0, { high_water = 8, low_water = 9 })
		reason("high_water must be > 0", "EINVAL", c.set_water, c, 0, 0)
		reason("low_water must not exceed high_water", "EINVAL", c.set_water, c, 10, 20)
		-- the checks themselves: true, or nil, reason, errno
		T.eq(core.ub_conn_opts_check(loop, { ring_entries = 8 }), true)
		T.eq(core.ub_conn_opts_check(loop), true)
		reason("ring_entries must be a power of 2 up to 32768", "EINVAL",
			core.ub_conn_opts_check, loop, { ring_entries = 6 })
		T.eq(core.ub_pool_check(1, 1, 0), true)
		reason("flags has a bit that is no UB_POOL_* flag", "EINVAL", core.ub_pool_check, 1, 1, 4)
		reason("UB_POOL_INC is for receive pools: it needs UB_POOL_RECV", "EINVAL",
			core.ub_pool_check, 1, 1, core.UB_POOL_INC)
		reason("UB_POOL_INC is for receive pools: it needs UB_POOL_RECV", "EINVAL",
			loop.pool, loop, 1, 64, "send", { incremental = true })
		T.eq(core.ub_water_check(1, 1), true)
		T.eq(core.ub_loop_opts_check({ entries = 64 }), true)
		T.eq(core.ub_dgram_opts_check(loop), true)
	end
	-- a forced mode the loop lacks: EOPNOTSUPP, the mode and the probe's reason
	local nob <close> = assert(ub.loop{ disable = { "send_bundle" } })
	reason("mode bundle unavailable: disabled by ub_loop_opts.disable", "EOPNOTSUPP",
		nob.connect, nob, "127.0.0.1:1", { mode = "bundle" })
	-- a default pool too small for datagrams
	local small <close> = assert(ub.loop{ pool_size = 64 })
	local r, msg, en = small:datagram("127.0.0.1:0")
	T.eq(r, nil)
	T.eq(en, ub.errno.EINVAL)
	T.ok(msg:find("default receive pool", 1, true), msg)
end)

T.test("connections, buffers and the C-level names", function()
	local loop <close> = assert(ub.loop{ pool_count = 8, pool_size = 64 })
	local other <close> = assert(ub.loop())
	local s, c = pair(loop)
	local os_, oc = pair(other)
	local pool = assert(loop:pool(2, 16))
	local ob = assert(assert(other:pool(1, 16)):acquire())
	ob:write(1, "x")
	local b = assert(pool:acquire())
	b:write(1, "hello")
	for _ = 1, 3 do
		check("raise", "string or uringbuf.buf expected", c.send, c, nil)
		check("raise", "string or uringbuf.buf expected", c.send, c, 42)
		check("raise", "number has no integer representation", c.send, c, "x", 1.5)
		check("raise", "uringbuf.conn expected", c.send, pool, "x")
		check("fail", "EINVAL", c.send, c, ob) -- a buffer of another loop
		check("fail", "EINVAL", c.pipe, c, c)
		check("fail", "EINVAL", c.pipe, c, oc)
		check("raise", "uringbuf.conn expected", c.pipe, c, "x")
		check("fail", "EINVAL", c.set_water, c, 0, 0)
		check("fail", "EINVAL", c.set_water, c, 10, 20)
		check("raise", "out of range", c.set_water, c, -1, 0)
		check("raise", "number has no integer representation", c.set_water, c, 1.5, 0)
		check("raise", "bad argument #2", b.sub, b, "x")
		check("raise", "bad argument #2", b.byte, b, {})
		check("raise", "bad argument #2", b.find, b, nil)
		check("raise", "bad argument #2", b.write, b, "a", "b")
		check("raise", "bad argument #1 to 'sub'", function() return b:sub("x") end)
		check("raise", "bad argument #2 to 'write'", function() return b:write(1, {}) end)
		check("raise", "uringbuf.buf expected", b.sub, pool, 1)
		check("raise", "uringbuf.conn expected", core.ub_conn_fd, loop)
		check("raise", "uringbuf.pool expected", core.ub_pool_count, nil)
		check("raise", "out of range", core.ub_mode_name, 1 << 40)
		check("raise", "Error in ub_conn_fd", core.ub_conn_fd)
		check("raise", "not managed by a uringbuf.server", c.write, c, "x")
		check("raise", "not managed by a uringbuf.server", c.read, c)
		check("raise", "uringbuf handle", ub.valid, {})
	end
	T.eq(core.ub_event_name(-5), "unknown")
	T.eq(core.ub_mode_name(99), "unknown")
	T.eq(core.ub_mode_from_name("nope"), nil)
	T.eq(c:send(b), 5) -- still sends fine after all that
	T.eq(c:send(""), 0)
	ob:release()
	os_:abort()
end)

T.test("closing and closed connections", function()
	local loop <close> = assert(ub.loop())
	local s, c = pair(loop)
	T.eq(c:abort(), true)
	check("fail", "EPIPE", c.abort, c)
	check("fail", "EPIPE", c.send, c, "late")
	check("fail", "EPIPE", c.close, c)
	local closed = false
	local deadline = ub.now() + 5
	while not closed and ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		for i = 1, n do
			if ev[i].conn == c and ev[i].type == "closed" then closed = true end
		end
	end
	T.ok(closed)
	loop:wait(0, 0)
	for _ = 1, 3 do
		check("raise", "connection is closed", c.send, c, "x")
		check("raise", "connection is closed", c.close, c)
		check("raise", "connection is closed", c.pipe, s, c)
		check("raise", "connection is closed", c.fd, c)
		check("raise", "connection is closed", c.peer_address, c)
	end
	T.ok(tostring(c):find("closed", 1, true))
	s:abort()
end)

T.test("handles outlive their objects and their loop", function()
	local loop = assert(ub.loop())
	local s, c = pair(loop)
	local l = assert(loop:listen("127.0.0.1:0"))
	local s2, c2 = pair(loop)
	core.set_state(c2, { "mine" })
	T.eq(core.state(c2)[1], "mine")
	T.ok(core.ub_conn_abort(c2)) -- raw: c2 has a state, but no server
	local closed, deadline = false, ub.now() + 5
	while not closed and ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		for i = 1, n do
			if ev[i].conn == c2 and ev[i].type == "closed" then
				T.eq(ev[i].state[1], "mine") -- still there with CLOSED
				closed = true
			end
		end
	end
	T.ok(closed)
	T.eq(core.state(c2)[1], "mine") -- until the next wait
	loop:wait(0, 0)
	T.eq(core.state(c2), nil) -- gone with its connection
	check("raise", "connection is closed", c2.fd, c2)
	T.eq(ub.valid(c2), false)
	core.set_state(c, { "live" })
	T.eq(loop:close(), true)
	for _, h in ipairs({ c, c2, s, s2 }) do
		check("raise", "its loop is closed", h.fd, h)
		T.eq(ub.valid(h), false)
		T.ok(tostring(h):find("closed", 1, true))
	end
	check("raise", "its loop is closed", l.close, l)
	T.eq(core.state(c), nil)
	c, c2, s, s2, l = nil, nil, nil, nil, nil
	collectgarbage()
	collectgarbage()
end)

T.test("server helper argument checks", function()
	for _ = 1, 3 do
		check("raise", "bad argument #1 to 'server'", ub.server, nil)
		check("raise", "field 'on_data': function expected", ub.server, { on_data = 5 })
		check("raise", "unknown mode 'x'", ub.server, { mode = "x" })
		check("raise", "unknown field 'bogus'", ub.server, { bogus = 1 })
	end
	local srv = assert(ub.server{ port = 0 })
	check("raise", "unknown field", srv.connect, srv, srv.address, { nope = 1 })
	srv:close()
end)

T.test("budgets, deadlines and max_connections: bad values raise", function()
	local loop <close> = assert(ub.loop())
	local l = assert(loop:listen("127.0.0.1:0"))
	local s, c = pair(loop)
	local listen = function(o) return loop:listen("127.0.0.1:0", o) end
	local connect = function(o) return loop:connect(l:address(), o) end
	local nan, big = 0 / 0, 2 ^ 63
	for _ = 1, 3 do
		for _, f in ipairs({ listen, connect }) do
			check("raise", "field 'recv_budget': value out of range", f, { recv_budget = -1 })
			check("raise", "field 'recv_budget': integer expected", f, { recv_budget = 1.5 })
			check("raise", "field 'recv_budget': integer expected", f, { recv_budget = nan })
			check("raise", "field 'recv_budget': integer expected", f, { recv_budget = big })
			check("raise", "field 'recv_budget': integer expected", f, { recv_budget = "x" })
			for _, k in ipairs({ "idle_timeout", "connect_timeout", "close_timeout" }) do
				check("raise", "field '" .. k .. "': seconds out of range", f, { [k] = -1 })
				check("raise", "field '" .. k .. "': seconds out of range", f, { [k] = -math.huge })
				check("raise", "field '" .. k .. "': seconds expected, got NaN", f, { [k] = nan })
				check("raise", "field '" .. k .. "': seconds out of range", f, { [k] = 5e6 })
				check("raise", "field '" .. k .. "': number of seconds expected, got table", f, { [k] = {} })
			end
			check("raise", "field 'close_timeout': seconds out of range (0 < s", f, { close_timeout = 0 })
		end
		check("raise", "unknown option 'max_connections'", connect, { max_connections = 1 })
		check("raise", "field 'max_connections': value out of range", listen, { max_connections = -1 })
		check("raise", "field 'max_connections': value out of range", listen, { max_connections = 1 << 32 })
		check("raise", "field 'max_connections': integer expected", listen, { max_connections = 1.5 })
		check("raise", "field 'max_connections': integer expected", listen, { max_connections = nan })
		check("raise", "field 'max_connections': integer expected", ub.server, { max_connections = "2" })
		check("raise", "field 'idle_timeout'", ub.server, { port = 0, idle_timeout = -1 })
		check("raise", "field 'recv_budget'", ub.server, { port = 0, recv_budget = 0.5 })
		check("raise", "out of range", c.set_recv_budget, c, -1)
		check("raise", "number has no integer representation", c.set_recv_budget, c, 1.5)
		check("raise", "number has no integer representation", c.set_recv_budget, c, nan)
		check("raise", "number has no integer representation", c.set_recv_budget, c, big)
		check("fail", "EINVAL", c.set_recv_budget, c, 0)
		check("raise", "seconds out of range", c.set_idle_timeout, c, -0.5)
		check("raise", "seconds expected, got NaN", c.set_idle_timeout, c, nan)
		check("raise", "number of seconds expected, got nil", c.set_idle_timeout, c)
		check("raise", "out of range", l.set_max_connections, l, -1)
		check("raise", "number has no integer representation", l.set_max_connections, l, 2.5)
		check("raise", "uringbuf.conn expected", c.recv_held, l)
	end
	-- what is allowed: fractions round up to whole milliseconds, 0 and
	-- math.huge mean none (close: never)
	T.ok(listen{ idle_timeout = 0, connect_timeout = math.huge,
		close_timeout = math.huge, recv_budget = 0, max_connections = 0 })
	T.ok(connect{ idle_timeout = 1e-9, close_timeout = 0.0001, recv_budget = 1 })
	T.eq(c:set_idle_timeout(0.0001), true)
	T.eq(c:idle_timeout(), 0.001, "rounded up to 1 ms")
	T.eq(c:set_idle_timeout(0.035), true)
	T.eq(c:idle_timeout(), 0.035, "no spurious rounding")
	T.eq(c:set_idle_timeout(math.huge), true)
	T.eq(c:idle_timeout(), 0, "none")
	T.eq(c:set_recv_budget(1), true)
	T.eq(c:recv_budget(), 1, "as set (the core counts whole buffers)")
	s:abort()
end)

T.test("datagram endpoints: wrong types, bad addresses, closed handles", function()
	local loop <close> = assert(ub.loop())
	local ep = assert(loop:datagram("127.0.0.1:0"))
	local other <close> = assert(ub.loop())
	local foreign = assert(other:datagram("127.0.0.1:0"))
	local c = select(2, pair(loop))
	for _ = 1, 3 do
		check("raise", "malformed address", loop.datagram, loop, "bogus")
		check("raise", "string expected", loop.datagram, loop, {})
		check("raise", "unknown option", loop.datagram, loop, "127.0.0.1:0", { x = 1 })
		check("raise", "field 'recv_pool'", loop.datagram, loop, "127.0.0.1:0",
			{ recv_pool = "p" })
		check("raise", "field 'queue_max': integer expected",
			loop.datagram, loop, "127.0.0.1:0", { queue_max = 1.5 })
		check("raise", "uringbuf.loop expected", core.dgram_open, ep, "127.0.0.1:0")
		check("raise", "uringbuf.dgram expected", core.dgram_send, c, "x")
		check("raise", "uringbuf.dgram expected", core.ub_dgram_close, c)
		check("raise", "uringbuf.dgram expected", core.ub_dgram_fd, loop)
		check("raise", "string or uringbuf.buf", ep.send, ep, nil, "127.0.0.1:9")
		check("raise", "string or uringbuf.buf", ep.send, ep, ep, "127.0.0.1:9")
		check("raise", "malformed address", ep.send, ep, "x", "[::1")
		check("raise", "address string, uringbuf.buf or nil", ep.send, ep, "x", ep)
		check("raise", "malformed address", ep.connect, ep, "x:y")
		check("raise", "value out of range", ep.set_water, ep, -1, 0)
		check("fail", "EINVAL", ep.set_water, ep, 10, 20)
		check("fail", "EINVAL", ep.set_recv_budget, ep, 0)
		check("fail", "EDESTADDRREQ", ep.send, ep, "x")
		check("fail", "EINVAL", ep.send, ep, "x", "[::1]:9")
		check("fail", "EINVAL", ep.connect, ep, "unix:/nonexistent-ub")
		check("fail", "EMSGSIZE", ep.send, ep, string.rep("m", 70000), "127.0.0.1:9")
		check("fail", "EADDRINUSE", loop.datagram, loop, ep:address())
		check("fail", "EBADF", loop.adopt_datagram, loop, 99999)
		check("fail", "", loop.adopt_datagram, loop, -1)
		-- a buffer of another loop
		local b = assert(other:send_pool():acquire())
		check("fail", "EINVAL", ep.send, ep, b, "127.0.0.1:9")
		b:release()
		check("raise", "buffer is released", ep.send, ep, b, "127.0.0.1:9")
		-- an acquired buffer has no source address
		local b2 = assert(loop:send_pool():acquire())
		check("fail", "EDESTADDRREQ", ep.reply, ep, b2)
		T.eq(b2:source(), nil)
		T.eq(b2:truncated(), false)
		b2:release()
	end
	T.eq(foreign:close(), true)
	T.eq(ep:close(), true)
	check("fail", "EPIPE", ep.close, ep)
	check("fail", "EPIPE", ep.send, ep, "late", "127.0.0.1:9")
	local closed = false
	local deadline = ub.now() + 5
	while not closed and ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		for i = 1, n do
			if ev[i].dgram == ep and ev[i].type == "closed" then closed = true end
		end
	end
	T.ok(closed)
	loop:wait(0, 0)
	for _ = 1, 3 do
		check("raise", "endpoint is closed", ep.send, ep, "x", "127.0.0.1:9")
		check("raise", "endpoint is closed", ep.close, ep)
		check("raise", "endpoint is closed", ep.nobufs, ep)
		check("raise", "endpoint is closed", core.set_state, ep, {})
	end
	T.eq(ub.valid(ep), false)
	T.eq(core.state(ep), nil)
	T.ok(tostring(ep):find("closed", 1, true))
	-- its loop closed under it
	other:close()
	check("raise", "its loop is closed", foreign.send, foreign, "x", "127.0.0.1:9")
end)
