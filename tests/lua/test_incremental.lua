-- test_incremental.lua - incremental receive pools: loop:pool(n, size,
-- "recv", {incremental = true}) and the loop option pool_incremental.
-- Received buffers are slices (capacity == length, several in one pool
-- buffer), pool:slices() counts the ones out, a released or stale slice
-- raises, data arrives byte-exact, a loop whose kernel lacks the feature
-- (here: disabled) falls back to an ordinary pool, and bad option types
-- raise.
local T = require "tap"
local ub = require "uringbuf"
local netpair = require "netpair"

local function inc_reason()
	local loop <close> = assert(ub.loop{ pool_count = 1, pool_size = 64 })
	local why = loop:features().pbuf_inc
	if why == true then return nil end
	return why
end

local function need_inc()
	local why = inc_reason()
	if why then T.skip("no incremental buffer rings: " .. why) end
end

-- A connected pair on loop (the accepted side receiving into lopts'
-- pool), the client side; the listener closed.
local function pair(loop, lopts)
	local s, c, l = netpair.pair(loop, lopts)
	l:close()
	return s, c
end

-- The next buffer conn receives (others are released).
local function recv_one(loop, conn)
	local deadline = ub.now() + 5
	while ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		local got
		for i = 1, n do
			local e = ev[i]
			if e.type == "data" and e.conn == conn and not got then
				got = e.buf
			elseif e.buf then
				e.buf:release()
			end
		end
		if got then return got end
	end
	error("timed out waiting for data", 2)
end

-- Send s on c; return the one buffer conn receives it in (a small send,
-- one receive: one slice).
local function send_one(loop, c, conn, s)
	T.eq(c:send(s), #s)
	return recv_one(loop, conn)
end

T.test("an incremental pool: kind, slices share a buffer, counted", function()
	need_inc()
	local loop <close> = assert(ub.loop())
	local pool = assert(loop:pool(16, 16384, "recv", { incremental = true }))
	T.eq(pool:incremental(), true)
	T.eq(pool:is_recv(), true)
	T.eq(pool:slices(), 0)
	T.eq(loop:recv_pool():incremental(), false, "default pool unless asked")
	T.eq(loop:send_pool():slices(), 0)
	local s, c = pair(loop, { recv_pool = pool })
	local msgs = { "first", "second message", "3", "fourth: " .. ("x"):rep(300) }
	local bufs = {}
	for i, m in ipairs(msgs) do bufs[i] = send_one(loop, c, s, m) end
	T.eq(pool:slices(), #msgs)
	T.eq(pool:count_state("kernel"), 16, "the pool buffer is still the kernel's")
	for i, b in ipairs(bufs) do
		T.eq(tostring(b), msgs[i])
		T.eq(#b, #msgs[i])
		T.eq(b:capacity(), #msgs[i], "a slice's capacity is its length")
		T.eq(b:writable(), false)
		T.eq(b:pool(), pool)
		T.eq(b:state(), "app")
		T.eq(b:index(), bufs[1]:index(), "small receives share a pool buffer")
	end
	for i, b in ipairs(bufs) do
		T.eq(b:release(), true)
		T.eq(pool:slices(), #bufs - i)
	end
	T.eq(pool:slices(), 0)
	T.eq(pool:count_state("app"), 0)
end)

T.test("a released or stale slice raises; its neighbours are untouched", function()
	need_inc()
	local loop <close> = assert(ub.loop())
	local pool = assert(loop:pool(16, 16384, "recv", { incremental = true }))
	local s, c = pair(loop, { recv_pool = pool })
	local a = send_one(loop, c, s, "aaaa")
	local b = send_one(loop, c, s, "bbbb")
	T.eq(a:release(), true)
	T.eq(ub.valid(a), false)
	T.raises("buffer is released", a.release, a)
	T.raises("buffer is released", function() return #a end)
	T.raises("buffer is released", function() return a:capacity() end)
	T.raises("buffer is released", function() return s:send(a) end)
	T.eq(tostring(b), "bbbb")
	-- a later slice may reuse a's handle in the core: a stays stale
	local d = send_one(loop, c, s, "dddd")
	T.raises("buffer is released", a.release, a)
	a:close() -- idempotent, and must not release d
	T.eq(ub.valid(d), true)
	T.eq(pool:slices(), 2)
	do
		local e <close> = d
	end
	T.eq(pool:slices(), 1, "<close> released it")
	T.raises("buffer is released", d.release, d)
	-- __gc gives a forgotten slice back
	b = nil
	collectgarbage()
	collectgarbage()
	T.eq(pool:slices(), 0)
	-- forwarding a slice: queued as it is, out until sent
	local f = send_one(loop, c, s, "echo")
	T.eq(s:send(f), 4)
	T.eq(ub.valid(f), false)
	local got = recv_one(loop, c)
	T.eq(tostring(got), "echo")
	got:release()
	local deadline = ub.now() + 5
	while pool:slices() > 0 and ub.now() < deadline do loop:wait(0, 20) end
	T.eq(pool:slices(), 0)
end)

T.test("random-size writes on two connections: byte-exact", function()
	need_inc()
	local loop <close> = assert(ub.loop())
	local pool = assert(loop:pool(8, 16384, "recv", { incremental = true }))
	local total = 400000
	local conns = {}
	for i = 1, 2 do
		local s, c = pair(loop, { recv_pool = pool })
		conns[i] = { s = s, c = c, data = T.pattern("inc" .. i, total),
			sent = 0, got = {}, n = 0, eof = false }
	end
	local by_s, by_c = {}, {}
	for _, st in ipairs(conns) do
		by_s[st.s] = st
		by_c[st.c] = st
	end
	local sizes = { 1, 7, 100, 1500, 4096, 9000, 20000 }
	math.randomseed(11)
	local function push(st)
		while st.sent < total do
			local n = math.random(1, sizes[math.random(#sizes)])
			n = math.min(n, total - st.sent)
			local took, msg, en = st.c:send(st.data:sub(st.sent + 1, st.sent + n))
			if not took then
				if en == ub.errno.EAGAIN then return end -- "writable" follows
				error("send: " .. tostring(msg))
			end
			st.sent = st.sent + took
			if took < n then return end
		end
		if not st.shut then
			st.shut = true
			assert(st.c:shutdown())
		end
	end
	for _, st in ipairs(conns) do push(st) end
	local held, max_slices, bad = {}, 0, nil
	local deadline = ub.now() + 60
	while not (conns[1].eof and conns[2].eof) and ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		for i = 1, n do
			local e = ev[i]
			if e.type == "data" and by_s[e.conn] then
				local st, b = by_s[e.conn], e.buf
				if b:capacity() ~= #b then bad = "capacity ~= length" end
				st.got[#st.got + 1] = tostring(b)
				st.n = st.n + #b
				held[#held + 1] = b
			elseif e.type == "eof" and by_s[e.conn] then
				by_s[e.conn].eof = true
			elseif e.type == "writable" and by_c[e.conn] then
				push(by_c[e.conn])
			elseif e.buf then
				e.buf:release()
			end
		end
		for _, st in ipairs(conns) do
			if st.sent < total then push(st) end
		end
		if pool:slices() > max_slices then max_slices = pool:slices() end
		-- hold a random number of slices across waits; let them all go
		-- when nothing came (a budget or the pool's share may have
		-- stopped the receives)
		if n == 0 or #held > math.random(0, 12) then
			for _, b in ipairs(held) do b:release() end
			held = {}
		end
	end
	for _, b in ipairs(held) do b:release() end
	T.eq(bad, nil)
	for i, st in ipairs(conns) do
		T.ok(st.eof, "stream " .. i .. " ended", st.sent, st.n)
		T.eq(st.n, total, "stream " .. i .. " bytes")
		T.ok(table.concat(st.got) == st.data, "stream " .. i .. " same bytes")
	end
	T.ok(max_slices > 1, "several slices out at once", max_slices)
	T.eq(pool:slices(), 0)
	T.eq(pool:count_state("app"), 0)
end)

T.test("pool_incremental: the default receive pool; the server helper", function()
	need_inc()
	do
		local loop <close> = assert(ub.loop{ pool_incremental = true,
			pool_size = 32768, pool_count = 8 })
		local rp = loop:recv_pool()
		T.eq(rp:incremental(), true)
		T.eq(rp:buf_size(), 32768)
		T.eq(loop:send_pool():incremental(), false)
		local s, c = pair(loop)
		local a = send_one(loop, c, s, "one")
		local b = send_one(loop, c, s, "two")
		T.eq(a:index(), b:index())
		T.eq(rp:slices(), 2)
		a:release()
		b:release()
		T.eq(rp:slices(), 0)
	end
	do
		local loop <close> = assert(ub.loop{ pool_incremental = false })
		T.eq(loop:recv_pool():incremental(), false)
	end
	-- an echo server on an incremental default pool, clients on another
	-- loop: byte-exact
	local srv = assert(ub.server{ listen = "127.0.0.1:0",
		pool_incremental = true, pool_size = 65536, pool_count = 64,
		on_data = function(conn, buf) conn:write(buf) end })
	T.defer(function() srv:close() end)
	T.eq(srv.loop:recv_pool():incremental(), true)
	local cli = assert(ub.server{})
	T.defer(function() cli:close() end)
	local n = 6
	local st = netpair.echo_streams(cli, srv.address, n, 300000)
	local deadline = ub.now() + 60
	while st.done < n and ub.now() < deadline do
		assert(srv:step(5))
		assert(cli:step(5))
	end
	T.eq(st.done, n, "clients finished")
	T.eq(st.bad, 0, "clients with a wrong echo")
	deadline = ub.now() + 5
	while srv.loop:recv_pool():slices() > 0 and ub.now() < deadline do
		assert(srv:step(5))
	end
	T.eq(srv.loop:recv_pool():slices(), 0)
end)

T.test("fallback: the feature disabled, the pool is an ordinary one", function()
	local loop <close> = assert(ub.loop{ disable = { "pbuf_inc" } })
	local why = loop:features().pbuf_inc
	T.eq(type(why), "string", "the reason")
	T.eq(type(ub.core.ub_loop_feature_reason(loop, ub.core.UB_FEAT_PBUF_INC)),
		"string")
	local pool = assert(loop:pool(4, 256, "recv", { incremental = true }))
	T.eq(pool:incremental(), false)
	T.eq(pool:is_recv(), true)
	local s, c = pair(loop, { recv_pool = pool })
	local data = T.pattern("fb", 3000)
	T.eq(c:send(data), #data)
	local got = {}
	local len = 0
	local deadline = ub.now() + 5
	while len < #data and ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		for i = 1, n do
			local e = ev[i]
			if e.type == "data" and e.conn == s then
				T.eq(e.buf:capacity(), 256, "whole buffers")
				got[#got + 1] = tostring(e.buf)
				len = len + #e.buf
				T.eq(pool:slices(), 0)
				e.buf:release()
			end
		end
	end
	T.ok(table.concat(got) == data, "same bytes")
	local l2 <close> = assert(ub.loop{ disable = { "pbuf_inc" },
		pool_incremental = true })
	T.eq(l2:recv_pool():incremental(), false)
end)

T.test("bad option types raise; the core's rules give reasons", function()
	local loop <close> = assert(ub.loop{ pool_count = 4, pool_size = 64 })
	for _, bad in ipairs({ "yes", 1, 0, {}, 1.5 }) do
		T.raises("field 'pool_incremental': boolean expected",
			ub.loop, { pool_incremental = bad })
		T.raises("field 'incremental': boolean expected",
			loop.pool, loop, 4, 4096, "recv", { incremental = bad })
		T.raises("pool_incremental", ub.server, { pool_incremental = bad })
	end
	T.raises("bad argument #4 to 'pool' (table expected",
		loop.pool, loop, 4, 4096, "recv", "incremental")
	T.raises("unknown option 'incremantal'",
		loop.pool, loop, 4, 4096, "recv", { incremantal = true })
	-- an incremental send pool: the core's check says why
	local p, msg, en = loop:pool(4, 4096, "send", { incremental = true })
	T.eq(p, nil)
	T.eq(en, ub.errno.EINVAL)
	T.eq(msg, "UB_POOL_INC is for receive pools: it needs UB_POOL_RECV")
	if not inc_reason() then
		local ip = assert(loop:pool(4, 4096, "recv", { incremental = true }))
		local d, dmsg, den = loop:datagram("127.0.0.1:0", { recv_pool = ip })
		T.eq(d, nil, "a datagram endpoint refuses an incremental pool")
		T.eq(den, ub.errno.EINVAL, tostring(dmsg))
		T.ok(tostring(dmsg):find("incremental", 1, true), dmsg)
		local il <close> = assert(ub.loop{ pool_incremental = true })
		d, dmsg, den = il:datagram("127.0.0.1:0")
		T.eq(d, nil, "nor takes an incremental default pool")
		T.eq(den, ub.errno.EINVAL, tostring(dmsg))
		T.ok(tostring(dmsg):find("incremental", 1, true), dmsg)
	end
end)
