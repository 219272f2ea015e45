-- test_buf.lua - buffers: string rules, write, release, __gc, <close>,
-- stale handles, read-only received buffers, forwarding back to the
-- original pool, and every handle after the loop is gone.
local T = require "tap"
local ub = require "uringbuf"
local netpair = require "netpair"

-- Wait on loop until cond(ev) is true for some event; returns that event's
-- fields copied (the batch is reused by the next wait).
local function wait_for(loop, cond, seconds)
	local deadline = ub.now() + (seconds or 5)
	local got = {}
	while ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		for i = 1, n do
			local e = ev[i]
			if cond(e) then
				got[#got + 1] = { type = e.type, conn = e.conn, buf = e.buf,
					res = e.res, listener = e.listener }
			elseif e.buf then
				e.buf:release()
			end
		end
		if #got > 0 then return got end
	end
	error("timed out waiting for an event", 2)
end

local pair = netpair.pair

T.test("sub, byte, find, # and tostring follow string rules", function()
	local loop <close> = assert(ub.loop())
	local pool = assert(loop:pool(4, 64))
	local s = "hello, world\0binary\255 end"
	local b = assert(pool:acquire())
	T.eq(#b, 0)
	T.eq(b:writable(), true)
	T.eq(b:write(1, s), #s)
	T.eq(#b, #s)
	T.eq(tostring(b), s)
	T.eq(b:tostring(), s)
	local idx = { -40, -27, -26, -25, -3, -1, 0, 1, 2, 5, 25, 26, 27, 40,
		math.maxinteger, math.mininteger }
	for _, i in ipairs(idx) do
		T.eq(b:sub(i), s:sub(i), "sub(" .. i .. ")")
		for _, j in ipairs(idx) do
			T.eq(b:sub(i, j), s:sub(i, j), "sub(" .. i .. "," .. j .. ")")
			if math.abs(i) < 100 and math.abs(j) < 100 then
				T.eq(table.concat({ b:byte(i, j) }, ","),
					table.concat({ s:byte(i, j) }, ","),
					"byte(" .. i .. "," .. j .. ")")
			end
		end
		if math.abs(i) < 100 then
			T.eq(b:byte(i), s:byte(i), "byte(" .. i .. ")")
		end
	end
	T.eq(b:byte(), s:byte())
	for _, p in ipairs({ "o", "world", "\0", "\255", "", "zzz", "d\0b" }) do
		for _, init in ipairs({ nil, 1, 5, -3, 0, 26, 27, 28, -100 }) do
			local a1, a2 = b:find(p, init, true)
			local e1, e2 = s:find(p, init, true)
			T.eq(a1, e1, "find(" .. p .. "," .. tostring(init) .. ")")
			T.eq(a2, e2)
			a1, a2 = b:find(p, init)
			e1, e2 = s:find(p, init)
			T.eq(a1, e1)
			T.eq(a2, e2)
		end
	end
	-- patterns (magic characters): string.find on a copy, captures too
	local a1, a2, cap = b:find("(w%a+)")
	local e1, e2, ecap = s:find("(w%a+)")
	T.eq(a1, e1)
	T.eq(a2, e2)
	T.eq(cap, ecap)
	T.eq(b:find("l+", 1, true), nil, "plain: 'l+' literally")
	b:release()
end)

T.test("write: positions, growth, capacity, append", function()
	local loop <close> = assert(ub.loop())
	local pool = assert(loop:pool(2, 8))
	local b = assert(pool:acquire())
	T.eq(b:capacity(), 8)
	T.eq(b:write(1, "abc"), 3)
	T.eq(b:write(4, "d"), 4)
	T.eq(b:write(2, "XY"), 4)
	T.eq(tostring(b), "aXYd")
	T.eq(b:write(-1, "Z"), 4)
	T.eq(tostring(b), "aXYZ")
	T.eq(b:append("1234"), 8)
	T.raises("does not fit", b.append, b, "!")
	T.raises("position out of range", b.write, b, 10, "x")
	T.raises("position out of range", b.write, b, 0, "x")
	T.raises("position out of range", b.write, b, -9, "x")
	T.raises("number has no integer representation", b.write, b, 1.5, "x")
	T.eq(b:set_len(2), true)
	T.eq(tostring(b), "aX")
	local ok, _, en = b:set_len(9)
	T.eq(ok, nil)
	T.eq(en, ub.errno.EINVAL)
	b:release()
end)

T.test("use after release raises, for every method", function()
	local loop <close> = assert(ub.loop())
	local pool = assert(loop:pool(2, 16))
	local b = assert(pool:acquire())
	b:write(1, "x")
	T.eq(b:release(), true)
	T.eq(ub.valid(b), false)
	local calls = {
		function() return #b end,
		function() return tostring(b) end,
		function() return b:sub(1) end,
		function() return b:byte(1) end,
		function() return b:find("x") end,
		function() return b:write(1, "y") end,
		function() return b:release() end,
		function() return b:len() end,
		function() return b:capacity() end,
		function() return b:set_len(0) end,
		function() return b:pool() end,
		function() return b:index() end,
		function() return b:state() end,
	}
	for i, f in ipairs(calls) do
		local ok, err = pcall(f)
		T.eq(ok, false, "call " .. i .. " after release")
		T.ok(tostring(err):find("buffer is released", 1, true), tostring(err))
	end
	-- close after release: a no-op (idempotent __close/__gc)
	b:close()
	b:close()
end)

T.test("__gc returns forgotten buffers; <close> returns them now", function()
	local loop <close> = assert(ub.loop())
	local pool = assert(loop:pool(16, 32))
	for _ = 1, 16 do assert(pool:acquire()) end
	T.eq(pool:count_state("free"), 0)
	T.eq(select(3, pool:acquire()), ub.errno.ENOBUFS)
	collectgarbage()
	collectgarbage()
	T.eq(pool:count_state("free"), 16, "after collect")
	do
		local b <close> = assert(pool:acquire())
		b:write(1, "scoped")
		T.eq(pool:count_state("app"), 1)
	end
	T.eq(pool:count_state("app"), 0, "after <close>")
	T.eq(pool:count_state("free"), 16)
end)

T.test("a stale handle refuses, and its __gc spares the new owner", function()
	local loop <close> = assert(ub.loop())
	local pool = assert(loop:pool(1, 32))
	local b1 = assert(pool:acquire())
	local idx = b1:index()
	b1:release()
	local b2 = assert(pool:acquire())
	T.eq(b2:index(), idx, "the same buffer again")
	T.raises("buffer is released", function() return #b1 end)
	b1:close() -- must not release b2's buffer
	b1 = nil
	collectgarbage()
	T.eq(ub.valid(b2), true)
	T.eq(pool:count_state("app"), 1)
	b2:write(1, "still mine")
	T.eq(tostring(b2), "still mine")
	b2:release()
end)

T.test("received buffers: read-only views; __gc gives them back", function()
	local loop <close> = assert(ub.loop{ pool_count = 8, pool_size = 64 })
	local s, c = pair(loop)
	T.eq(c:send("ping"), 4)
	local got = wait_for(loop, function(e) return e.type == "data" and e.conn == s end)
	local b = got[1].buf
	T.eq(tostring(b), "ping")
	T.eq(b:writable(), false)
	T.eq(b:state(), "app")
	T.raises("read-only", b.write, b, 1, "x")
	T.raises("read-only", b.append, b, "x")
	local rp = loop:recv_pool()
	T.eq(b:pool(), rp)
	T.eq(rp:count_state("app"), 1)
	got, b = nil, nil
	loop:wait(0, 0) -- the loop's event table drops the last batch
	collectgarbage()
	collectgarbage()
	T.eq(rp:count_state("app"), 0)
	T.eq(rp:count_state("kernel"), 8)
end)

T.test("forwarded buffers return to their own pools", function()
	local loop <close> = assert(ub.loop())
	local rpool = assert(loop:pool(8, 128, "recv"))
	local spool = assert(loop:pool(4, 128))
	local s, c = pair(loop, { recv_pool = rpool })
	T.eq(c:send("forward me"), 10)
	local got = wait_for(loop, function(e) return e.type == "data" and e.conn == s end)
	local b = got[1].buf
	T.eq(b:pool(), rpool)
	-- echo it back, zero copy, and an acquired buffer after it
	T.eq(s:send(b), 10)
	T.eq(ub.valid(b), false, "the handle is spent once queued")
	T.raises("buffer is released", b.release, b)
	local a = assert(spool:acquire())
	a:write(1, "+acquired")
	T.eq(s:send(a), 9)
	T.eq(spool:count_state("queued") + spool:count_state("free"), 4)
	local text = ""
	local deadline = ub.now() + 5
	while #text < 19 and ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		for i = 1, n do
			if ev[i].type == "data" and ev[i].conn == c then
				text = text .. tostring(ev[i].buf)
				ev[i].buf:release()
			end
		end
	end
	T.eq(text, "forward me+acquired")
	-- wait until the sends completed and the buffers went home
	deadline = ub.now() + 5
	while (rpool:count_state("kernel") ~= 8 or spool:count_state("free") ~= 4)
		and ub.now() < deadline do
		loop:wait(0, 0)
		loop:wait(1, 20)
	end
	T.eq(rpool:count_state("kernel"), 8, "recv pool whole")
	T.eq(spool:count_state("free"), 4, "send pool whole")
	T.eq(loop:recv_pool():count_state("app"), 0)
end)

T.test("pool:free: EBUSY while a buffer is out, then every handle refuses", function()
	local loop <close> = assert(ub.loop())
	local pool = assert(loop:pool(2, 16))
	local b = assert(pool:acquire())
	local ok, msg, en = pool:free()
	T.eq(ok, nil)
	T.eq(en, ub.errno.EBUSY)
	T.eq(type(msg), "string")
	b:release()
	T.eq(pool:free(), true)
	T.eq(ub.valid(pool), false)
	T.raises("pool is freed", pool.acquire, pool)
	T.raises("pool is freed", pool.free, pool)
	T.raises("buffer is released", function() return #b end)
	local rp = assert(loop:recv_pool())
	local ok2, _, en2 = assert(loop:send_pool()):acquire() and true, nil, nil
	T.ok(ok2 and rp and not en2)
	local a = select(1, loop:recv_pool():acquire())
	T.eq(a, nil, "acquire from a receive pool")
end)

T.test("after the loop is freed every handle refuses, and gc is safe", function()
	local loop = assert(ub.loop{ pool_count = 8, pool_size = 64 })
	local s, c, l = pair(loop)
	c:send("data")
	local got = wait_for(loop, function(e) return e.type == "data" end)
	local rb = got[1].buf
	local pool = assert(loop:pool(2, 16))
	local ab = assert(pool:acquire())
	local rp = loop:recv_pool()
	T.eq(loop:close(), true)
	local checks = {
		{ "buffer is released", function() return #rb end },
		{ "buffer is released", function() return ab:write(1, "x") end },
		{ "buffer is released", function() return ab:release() end },
		{ "pool is freed", function() return pool:acquire() end },
		{ "pool is freed", function() return rp:counts() end },
		{ "loop is closed", function() return s:send("x") end },
		{ "loop is closed", function() return c:close() end },
		{ "loop is closed", function() return s:pipe(c) end },
		{ "loop is closed", function() return l:close() end },
		{ "loop is closed", function() return loop:wait(0, 0) end },
		{ "loop is closed", function() return loop:pool(1, 1) end },
		{ "loop is closed", function() return loop:connect("127.0.0.1:1") end },
	}
	for i, ch in ipairs(checks) do
		local ok, err = pcall(ch[2])
		T.eq(ok, false, "check " .. i)
		T.ok(tostring(err):find(ch[1], 1, true), "check " .. i, tostring(err))
	end
	for _, h in ipairs({ rb, ab, pool, rp, s, c, l, loop }) do
		T.eq(ub.valid(h), false)
	end
	rb:close()
	ab:close()
	got, rb, ab, pool, rp, s, c, l, loop = nil
	collectgarbage()
	collectgarbage()
end)

T.test("a loop dropped without close is freed by __gc", function()
	local pool, b
	do
		local loop = assert(ub.loop())
		pool = assert(loop:pool(2, 16))
		b = assert(pool:acquire())
	end
	-- pool handles keep their loop alive: still usable
	T.eq(ub.valid(pool), true)
	b:release()
	local weak = setmetatable({ pool:loop() }, { __mode = "v" })
	pool, b = nil, nil
	collectgarbage()
	collectgarbage()
	T.eq(weak[1], nil, "collected")
end)
