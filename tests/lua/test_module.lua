-- test_module.lua - the module loads, and the loop-level API answers as in C.
local T = require "tap"
local ub = require "uringbuf"
local core = require "uringbuf_core"

T.test("require gives the module and its core", function()
	T.eq(type(ub), "table")
	T.eq(ub.core, core)
	T.eq(ub._VERSION, "0.1.0")
	T.eq(type(core.UB_EV_DATA), "number")
	T.eq(ub.errno.EAGAIN, 11)
	T.eq(ub.strerror(ub.errno.EPIPE), "Broken pipe")
end)

T.test("features() names every feature, true or a reason", function()
	local f = assert(ub.features())
	local names = { "single_issuer", "recv_multishot", "accept_multishot",
		"send_ring", "send_bundle", "recv_bundle", "pbuf_inc", "recv_limit",
		"udp_gso" }
	for _, n in ipairs(names) do
		T.ok(f[n] == true or type(f[n]) == "string", "feature " .. n)
	end
	T.eq(f.best_mode, nil, "features only")
end)

T.test("loop: create, inspect, close, idempotent close", function()
	local loop = assert(ub.loop{ entries = 64, pool_count = 8, pool_size = 256 })
	T.ok(tostring(loop):find("uringbuf.loop", 1, true))
	T.ok(loop:fd() >= 0, "ring fd")
	T.eq(loop:pending(), 0)
	T.eq(loop:mode_check("serial"), true)
	T.ok(loop:best_mode())
	local n, ev = loop:wait(0, 0)
	T.eq(n, 0)
	T.eq(ev.n, 0)
	local p = assert(loop:recv_pool())
	T.eq(p:count(), 8)
	T.eq(p:buf_size(), 256)
	T.eq(p:is_recv(), true)
	T.eq(p:count_state("kernel"), 8)
	T.eq(loop:recv_pool(), p, "one handle per pool")
	T.eq(p:loop(), loop, "pool:loop() is the same handle")
	T.eq(loop:close(), true)
	T.eq(loop:close(), true, "second close")
	T.eq(ub.valid(loop), false)
	T.eq(ub.valid(p), false)
	T.ok(tostring(loop):find("closed", 1, true))
end)

T.test("disable: a disabled feature falls back, with a reason", function()
	local loop = assert(ub.loop{ disable = { "send_bundle", "send_ring" } })
	local f = loop:features()
	T.eq(type(f.send_bundle), "string")
	T.eq(loop:best_mode(), "serial")
	local ok, reason, en = loop:mode_check("bundle")
	T.eq(ok, nil)
	T.eq(type(reason), "string")
	T.eq(en, core.errno.EOPNOTSUPP)
	loop:close()
end)

T.test("<close> loop variable frees the loop", function()
	local keep
	do
		local loop <close> = assert(ub.loop())
		keep = loop
		T.eq(ub.valid(keep), true)
	end
	T.eq(ub.valid(keep), false)
end)

T.test("listen on port 0 reports the real port; address errors", function()
	local loop <close> = assert(ub.loop())
	local l = assert(loop:listen("127.0.0.1:0"))
	local addr = l:address()
	local port = tonumber(addr:match(":(%d+)$"))
	T.ok(port and port > 0, "real port", addr)
	-- the same port again: a runtime failure, not a raise
	local l2, msg, en = loop:listen(addr)
	T.eq(l2, nil)
	T.eq(en, core.errno.EADDRINUSE)
	T.ok(type(msg) == "string")
	T.eq(ub.parse_address("127.0.0.1:80"), "127.0.0.1:80")
	T.eq(ub.parse_address("[::1]:80"), "[::1]:80")
	T.eq(ub.parse_address("nonsense"), nil)
	T.raises("malformed address", loop.listen, loop, "no-port")
end)

T.test("connect refused: a connect event with the error, then closed", function()
	local loop <close> = assert(ub.loop())
	-- find a port nobody listens on: bind, read it, close
	local l = assert(loop:listen("127.0.0.1:0"))
	local addr = l:address()
	T.eq(l:close(), true)
	local lclosed = false
	for _ = 1, 50 do
		local n, ev = assert(loop:wait(1, 100))
		for i = 1, n do
			if ev[i].listener == l and ev[i].type == "closed" then
				lclosed = true
			end
		end
		if lclosed then break end
	end
	T.ok(lclosed, "listener closed event")
	loop:wait(0, 0)
	T.eq(ub.valid(l), false)
	local c = assert(loop:connect(addr))
	local seen = {}
	local deadline = ub.now() + 5
	while not seen.closed and ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 100))
		for i = 1, n do
			local e = ev[i]
			if e.conn == c then seen[e.type] = e.res end
		end
	end
	T.ok(seen.connect and seen.connect < 0, "connect event with -errno")
	T.ok(seen.closed, "closed follows")
	-- after the next wait the handle is cut
	loop:wait(0, 0)
	T.eq(ub.valid(c), false)
	T.raises("connection is closed", c.fd, c)
end)
