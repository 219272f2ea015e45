-- test_udp.lua - datagram endpoints: the event API (loop:datagram) and
-- uringbuf.udp.  Loopback only; clients are uringbuf endpoints themselves.
-- Every datagram is counted and compared byte for byte with what its
-- sender sent (a bounded window per sender: loopback loses none); every
-- loop is bounded in rounds and time.
local T = require "tap"
local ub = require "uringbuf"
local errno = ub.errno

local HDR = 128
local BIG = 65536 + HDR -- any UDP datagram fits
local MAXDG = 65507     -- the largest UDP/IPv4 payload

-- Step a loop by hand until cond() or seconds pass; events to on(e).
local function pump(loop, on, cond, seconds)
	local deadline = ub.now() + (seconds or 10)
	while not cond() do
		if ub.now() > deadline then return false end
		local n, ev = loop:wait(1, 50)
		assert(n, ev)
		for i = 1, n do on(ev[i]) end
	end
	return true
end

-- A datagram that says who sent it and which it is, of exactly size bytes.
local function payload(tag, seq, size)
	local head = string.format("%s/%d/%d|", tag, seq, size)
	if size <= #head then return head:sub(1, size) end
	local fill = string.rep(string.char(65 + seq % 26), size - #head)
	return head .. fill
end

T.test("event API: open, send, receive with the source, reply zero copy", function()
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	local a = assert(loop:datagram("127.0.0.1:0"))
	local b = assert(loop:datagram("127.0.0.1:0"))
	T.ok(tostring(a):find("uringbuf.dgram", 1, true))
	T.ok(a:address():match("^127%.0%.0%.1:%d+$"), a:address())
	T.ok(math.type(a:fd()) == "integer")
	T.eq(b:send("hello", a:address()), 5)
	local got
	T.ok(pump(loop, function(e)
		if e.type == "data" and e.dgram == a then
			T.eq(e.conn, nil)
			T.eq(e.listener, nil)
			T.eq(e.res, 5)
			T.eq(e.buf:source(), b:address())
			T.eq(e.buf:truncated(), false)
			T.eq(tostring(e.buf), "hello")
			T.eq(a:reply(e.buf), 5) -- zero copy, to its source
			T.eq(ub.valid(e.buf), false)
		elseif e.type == "data" and e.dgram == b then
			got = tostring(e.buf)
			T.eq(e.buf:source(), a:address())
			e.buf:release()
		end
	end, function() return got end, 5))
	T.eq(got, "hello")
	T.eq(a:received(), 1)
	T.ok(pump(loop, function() end, function() return a:sent() == 1 end, 5))
	T.eq(b:sent(), 1)
	T.eq(a:nobufs(), 0)
	T.eq(a:queued_bytes(), 0)
	T.ok(a:recv_budget() > 0)
	T.eq(a:recv_held(), 0)
	T.eq(a:recv_throttled(), false)
	T.ok(a:set_recv_budget(1 << 20))
	T.eq(a:recv_budget(), 1 << 20)
	T.ok(a:set_water(1000, 10))
	T.ok(a:want_writable())
	T.ok(a:pause_recv())
	T.ok(a:resume_recv())
	T.eq(a:peer_address(), nil)
	-- connect: a default peer
	T.ok(b:connect(a:address()))
	T.eq(b:peer_address(), a:address())
	T.eq(b:send("to the peer"), 11)
	local n2
	T.ok(pump(loop, function(e)
		if e.type == "data" then
			n2 = tostring(e.buf)
			e.buf:release()
		end
	end, function() return n2 end, 5))
	T.eq(n2, "to the peer")
	-- close: EBADF fd while closing, "closed" event, then the handle is cut
	T.ok(a:close())
	local c1, c2 = a:close()
	T.eq(c1, nil)
	local closed = false
	T.ok(pump(loop, function(e)
		if e.type == "closed" and e.dgram == a then closed = true end
	end, function() return closed end, 5))
	loop:wait(0, 0)
	T.eq(ub.valid(a), false)
	T.raises("endpoint is closed", a.send, a, "x", b:address())
	T.raises("endpoint is closed", a.fd, a)
	T.ok(c2)
end)

T.test("uringbuf.udp: many senders, random sizes 1..65507, echoed byte-exact to each",
	function()
	local loop = assert(ub.loop{ pool_count = 64, pool_size = 4096 })
	T.defer(function() loop:close() end)
	local pool = assert(loop:pool(160, BIG, "recv"))
	local spool = assert(loop:pool(64, BIG, "send"))
	local echoed = 0
	local srv = assert(ub.udp{ loop = loop, recv_pool = pool,
		recv_budget = 160 * BIG, rcvbuf = 4 << 20,
		on_datagram = function(ep, buf, addr, size)
			T.eq(#buf, size)
			assert(ep:send(buf, addr))
			echoed = echoed + 1
		end })
	local NCLI, PER = 12, 12
	local sizes = { 1, MAXDG, 2, 1472, 65000 }
	math.randomseed(1313)
	local clients, bad, done = {}, {}, 0
	for c = 1, NCLI do
		local cl = { seq = 0, tag = "c" .. c }
		local function send_next(ep)
			cl.seq = cl.seq + 1
			local size = sizes[(c + cl.seq) % 7 + 1] or math.random(1, MAXDG)
			cl.want = payload(cl.tag, cl.seq, size)
			if cl.seq % 2 == 0 then
				-- half of them zero copy from an acquired buffer
				local b = assert(spool:acquire())
				b:write(1, cl.want)
				assert(ep:send(b))
			else
				assert(ep:send(cl.want))
			end
		end
		cl.ep = assert(ub.udp{ loop = loop, peer = srv:address(),
			recv_pool = pool, send_pool = spool, recv_budget = 160 * BIG,
			on_datagram = function(ep, buf, addr)
				if addr ~= srv:address() or tostring(buf) ~= cl.want then
					bad[#bad + 1] = cl.tag .. "/" .. cl.seq
				end
				buf:release()
				if cl.seq < PER then
					send_next(ep)
				else
					done = done + 1
				end
			end })
		clients[c] = cl
		send_next(cl.ep)
	end
	T.ok(T.drive(srv, function() return done == NCLI end, 30),
		"done " .. done .. " of " .. NCLI)
	T.eq(#bad, 0, table.concat(bad, " "))
	T.eq(echoed, NCLI * PER)
	T.eq(srv.errors, 0)
	for _, cl in ipairs(clients) do cl.ep:close() end
	srv:close()
end)

T.test("buf:source() names each of 200 senders (more than its cache holds), twice; replies to it reach each",
	function()
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	local ep = assert(loop:datagram("127.0.0.1:0", { recv_budget = 4 << 20 }))
	local senders, index = {}, {}
	for i = 1, 200 do
		senders[i] = assert(loop:datagram("127.0.0.1:0"))
		index[senders[i]] = i
	end
	for round = 1, 2 do
		for i, s in ipairs(senders) do
			assert(s:send(round .. "." .. i, ep:address()))
		end
		local got, back = 0, 0
		T.ok(pump(loop, function(e)
			if e.type == "data" and e.dgram == ep then
				local msg = tostring(e.buf)
				local i = tonumber(msg:match("%.(%d+)$"))
				local src = e.buf:source()
				T.eq(src, senders[i]:address(), "sender " .. i)
				T.eq(e.buf:source(), senders[i]:address(), "again")
				got = got + 1
				e.buf:release()
				-- to the cached string (sent without parsing it
				-- while it is in the cache)
				assert(ep:send("re " .. msg, src))
			elseif e.type == "data" and index[e.dgram] then
				local i = index[e.dgram]
				T.eq(tostring(e.buf), "re " .. round .. "." .. i,
					"reply to sender " .. i)
				back = back + 1
				e.buf:release()
			elseif e.buf then
				e.buf:release()
			end
		end, function() return got == 200 and back == 200 end, 10),
			got .. " " .. back)
	end
end)

T.test("truncation is reported: buf:truncated(), size > #buf", function()
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	local small = assert(loop:pool(8, 256 + HDR, "recv"))
	local got
	local ep = assert(ub.udp{ loop = loop, recv_pool = small,
		on_datagram = function(_, buf, _, size)
			got = { len = #buf, size = size, trunc = buf:truncated(),
				head = buf:sub(1, 4) }
			buf:release()
		end })
	local cl = assert(ub.udp{ loop = loop, peer = ep:address() })
	assert(cl:send(string.rep("abcd", 250)))
	T.ok(T.drive(ep, function() return got end, 5))
	T.eq(got.len, 256)
	T.eq(got.size, 1000)
	T.eq(got.trunc, true)
	T.eq(got.head, "abcd")
	got = nil
	assert(cl:send("short"))
	T.ok(T.drive(ep, function() return got end, 5))
	T.eq(got.trunc, false)
	T.eq(got.size, 5)
end)

T.test("pool exhaustion: nobufs counted, nothing crashes, receiving resumes", function()
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	-- 16: room for a multishot receive (with less it takes one datagram
	-- at a time and stops at the budget before the pool runs dry)
	local tiny = assert(loop:pool(16, 1024 + HDR, "recv"))
	local held, total = {}, 0
	local ep = assert(ub.udp{ loop = loop, recv_pool = tiny, rcvbuf = 1 << 20,
		on_datagram = function(_, buf)
			total = total + 1
			held[#held + 1] = buf -- keep every buffer: the pool runs dry
		end })
	local cl = assert(ub.udp{ loop = loop, peer = ep:address() })
	for i = 1, 40 do assert(cl:send(payload("x", i, 100))) end
	T.ok(T.drive(ep, function() return ep.dgram:nobufs() > 0 and total == 16 end, 5),
		"nobufs " .. ep.dgram:nobufs() .. " total " .. total)
	T.eq(tiny:count_state("kernel"), 0)
	-- give them back: the receive re-arms, the datagrams waiting in the
	-- socket come in
	for i, b in ipairs(held) do b:release(); held[i] = nil end
	local function drain()
		for i, b in ipairs(held) do b:release(); held[i] = nil end
		return total >= 40
	end
	local deadline = ub.now() + 10
	while not drain() and ub.now() < deadline do ep:step(20) end
	T.eq(total, 40)
	T.ok(ep:stats().nobufs > 0)
	T.eq(ep:stats().dropped, 0)
end)

T.test("a burst past the budget: held stops at it exactly, the rest is dropped and counted", function()
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	local pool = assert(loop:pool(64, 256 + HDR, "recv"))
	local held, total = {}, 0
	local ep
	ep = assert(ub.udp{ loop = loop, recv_pool = pool, rcvbuf = 1 << 20,
		recv_budget = 20 * (256 + HDR),
		on_datagram = function(_, buf)
			total = total + 1
			held[#held + 1] = buf
			assert(ep.dgram:recv_held() <= 20)
		end })
	local cl = assert(ub.udp{ loop = loop, peer = ep:address() })
	for i = 1, 200 do assert(cl:send(payload("b", i, 50))) end
	T.ok(T.drive(ep, function() return ep.dgram:dropped() > 0 and total == 20 end, 5),
		"dropped " .. ep.dgram:dropped() .. " total " .. total)
	T.eq(ep.dgram:recv_held(), 20)
	T.eq(ep.dgram:recv_throttled(), true)
	local deadline = ub.now() + 10
	while ub.now() < deadline do
		for i, b in ipairs(held) do b:release(); held[i] = nil end
		local st = ep:stats()
		if st.received + st.dropped >= 200 then break end
		ep:step(20)
	end
	local st = ep:stats()
	T.eq(st.received + st.dropped, 200)
end)

T.test("on_datagram raises: the rest of the batch is delivered first, then step raises it", function()
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	local seen, raised = {}, 0
	local ep = assert(ub.udp{ loop = loop, rcvbuf = 1 << 20,
		on_datagram = function(_, buf, addr, size)
			T.eq(type(addr), "string")
			T.eq(size, #buf)
			local s = tostring(buf)
			buf:release()
			seen[#seen + 1] = s
			if s == "boom" then error("on_datagram failed") end
		end })
	local cl = assert(ub.udp{ loop = loop, peer = ep:address() })
	-- one batch (the endpoint receives them in one pass): three before,
	-- the one that raises, three after
	for _, s in ipairs({ "a", "b", "c", "boom", "d", "e", "f" }) do
		assert(cl:send(s))
	end
	local deadline = ub.now() + 5
	while #seen < 7 and ub.now() < deadline do
		local ok, err = pcall(ep.step, ep, 50)
		if not ok then
			raised = raised + 1
			T.ok(tostring(err):find("on_datagram failed", 1, true), err)
			-- with the callback's traceback
			T.ok(tostring(err):find("traceback", 1, true), err)
		end
	end
	T.eq(table.concat(seen, ","), "a,b,c,boom,d,e,f")
	T.eq(raised, 1)
	-- and the endpoint goes on
	assert(cl:send("after"))
	T.ok(T.drive(ep, function() return seen[8] == "after" end, 5))
	T.eq(ep:stats().dropped, 0)
end)

T.test("on_datagram closes its own loop mid-batch: the rest goes with it, no crash", function()
	local got = 0
	local sender = assert(ub.loop())
	T.defer(function() sender:close() end)
	local ep
	ep = assert(ub.udp{ rcvbuf = 1 << 20, -- its own loop
		on_datagram = function(e, buf)
			got = got + 1
			buf:release()
			if got == 2 then e:close() end
		end })
	local cl = assert(ub.udp{ loop = sender, peer = ep:address() })
	for i = 1, 20 do assert(cl:send(payload("c", i, 30))) end
	T.ok(cl:pump() ~= nil)
	local deadline = ub.now() + 5
	while not ep.closed and ub.now() < deadline do ep:step(50) end
	T.eq(ep.closed, true)
	T.eq(got, 2)
	T.eq(ub.valid(ep.loop), false)
end)

local function echo_over(family_addr, client_bind)
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	local srv, msg = ub.udp{ loop = loop, listen = family_addr,
		on_datagram = function(ep, buf, addr) assert(ep:send(buf, addr)) end }
	if not srv then return nil, msg end
	-- A window of 4: a Unix datagram socket queues at most
	-- net.unix.max_dgram_qlen (10) datagrams.
	local got, sent = {}, 0
	local function more(ep)
		if sent < 20 then
			sent = sent + 1
			assert(ep:send(payload("f", sent, sent * 50), srv:address()))
		end
	end
	local cl = assert(ub.udp{ loop = loop, listen = client_bind,
		on_datagram = function(ep, buf, addr)
			got[#got + 1] = tostring(buf)
			T.eq(addr, srv:address())
			buf:release()
			more(ep)
		end })
	for _ = 1, 4 do more(cl) end
	T.ok(T.drive(srv, function() return #got == 20 end, 5), #got)
	for i = 1, 20 do T.eq(got[i], payload("f", i, i * 50)) end
	return srv, cl
end

T.test("IPv6 (::1): echo with [V6]:PORT addresses", function()
	local probe = assert(ub.loop())
	local ok = probe:datagram("[::1]:0")
	probe:close()
	if not ok then T.skip("cannot bind [::1]: no IPv6 loopback") end
	local srv, cl = echo_over("[::1]:0", "[::1]:0")
	T.ok(srv:address():match("^%[::1%]:%d+$"), srv:address())
	T.ok(cl:address():match("^%[::1%]:%d+$"))
end)

T.test("Unix datagram: a path, an abstract name, an autobound client", function()
	local path = os.tmpname()
	os.remove(path)
	T.defer(function() os.remove(path) end)
	local srv, cl = echo_over("unix:" .. path, "unix:")
	T.eq(srv:address(), "unix:" .. path)
	T.ok(cl:address():match("^unix:@"), cl:address())
	srv:close()
	local name = "unix:@ubtest-udp-" .. ub.getpid()
	local srv2 = echo_over(name, "unix:")
	T.eq(srv2:address(), name)
	-- an unbound sender has no source: nil, and no reply possible
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	local src
	local ep = assert(ub.udp{ loop = loop, listen = "unix:@ubtest-u2-" ..
		ub.getpid(), on_datagram = function(e, buf, addr)
			src = addr or false
			local ok, _, en = e:send(buf, buf)
			T.eq(ok, nil)
			T.eq(en, errno.EDESTADDRREQ)
			buf:release()
		end })
	local have_socat = os.execute("command -v socat >/dev/null 2>&1")
	if not have_socat then T.skip("socat is not installed") end
	-- socat's ABSTRACT-SENDTO socket is not bound: no source address
	os.execute("printf x | socat -u - ABSTRACT-SENDTO:" ..
		ep:address():sub(7) .. " 2>/dev/null")
	T.drive(ep, function() return src ~= nil end, 3)
	if src == nil then T.skip("socat could not send from an unbound socket") end
	T.eq(src, false)
end)

T.test("bad addresses and sizes: clear errors, never a crash", function()
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	T.raises("malformed address", loop.datagram, loop, "nonsense")
	T.raises("malformed address", loop.datagram, loop, "1.2.3.4:99999")
	T.raises("string expected", loop.datagram, loop, nil)
	T.raises("unknown option 'bogus'", loop.datagram, loop, "127.0.0.1:0",
		{ bogus = 1 })
	T.raises("queue_max", loop.datagram, loop, "127.0.0.1:0", { queue_max = 0 })
	-- the core's rules: nil, its reason, EINVAL
	local r, msg, en = loop:datagram("127.0.0.1:0",
		{ high_water = 100, low_water = 200 })
	T.eq(r, nil)
	T.eq(en, errno.EINVAL, msg)
	T.eq(msg, "low_water must not exceed high_water")
	local tiny = assert(loop:pool(4, 128, "recv"))
	r, msg, en = loop:datagram("127.0.0.1:0", { recv_pool = tiny })
	T.eq(r, nil)
	T.eq(en, errno.EINVAL, msg)
	T.ok(msg:find("more than 128 bytes", 1, true), msg)
	local ep = assert(loop:datagram("127.0.0.1:0"))
	T.raises("malformed address", ep.send, ep, "x", "nowhere")
	T.raises("string or uringbuf.buf", ep.send, ep, 42, "127.0.0.1:1")
	T.raises("address string, uringbuf.buf or nil", ep.send, ep, "x", 42)
	T.raises("malformed address", ep.connect, ep, "::1")
	r, msg, en = ep:send("x")
	T.eq(en, errno.EDESTADDRREQ, msg)
	r, msg, en = ep:send("x", "[::1]:9")
	T.eq(en, errno.EINVAL, msg)
	local spool = loop:send_pool()
	r, msg, en = ep:send(string.rep("z", spool:buf_size() + 1), "127.0.0.1:9")
	T.eq(r, nil)
	T.eq(en, errno.EMSGSIZE, msg)
	-- too big for UDP: the kernel's verdict comes as an "error" event
	local bigpool = assert(loop:pool(2, 70000, "send"))
	local b = assert(bigpool:acquire())
	b:write(1, string.rep("y", 70000))
	T.ok(ep:send(b, ep:address()))
	local err
	T.ok(pump(loop, function(e)
		if e.type == "error" and e.dgram == ep then err = -e.res end
		if e.buf then e.buf:release() end
	end, function() return err end, 5))
	T.eq(err, errno.EMSGSIZE)
	T.eq(bigpool:count_state("free"), 2)
	-- the layer: bad fields raise, runtime failures return nil, msg, errno
	T.raises("unknown field 'bogus'", ub.udp, { bogus = 1 })
	T.raises("on_datagram", ub.udp, { on_datagram = 1 })
	T.raises("malformed address", ub.udp, { listen = "x" })
	T.raises("field 'peer'", ub.udp, { peer = "y" })
	T.raises("field 'port'", ub.udp, { port = "80" })
	T.raises("field 'loop'", ub.udp, { loop = {} })
	local u = assert(ub.udp{ loop = loop })
	T.raises("string or uringbuf.buf", u.send, u, {}, "127.0.0.1:9")
	r, msg, en = u:send(string.rep("z", spool:buf_size() + 1), "127.0.0.1:9")
	T.eq(en, errno.EMSGSIZE, msg)
	local taken = assert(loop:datagram("127.0.0.1:0"))
	r, msg, en = ub.udp{ loop = loop, listen = taken:address() }
	T.eq(r, nil)
	T.eq(en, errno.EADDRINUSE, msg)
	u:close()
	r, msg, en = u:send("x", "127.0.0.1:9")
	T.eq(en, errno.EPIPE, msg)
end)

T.test("close with sends in flight returns every buffer", function()
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	local spool = assert(loop:pool(64, 2048, "send"))
	local rpool = loop:recv_pool()
	local sink = assert(loop:datagram("127.0.0.1:0"))
	local ep = assert(loop:datagram("127.0.0.1:0", { send_pool = spool,
		queue_max = 64 }))
	for i = 1, 32 do assert(ep:send(payload("s", i, 1500), sink:address())) end
	for i = 1, 16 do
		local b = assert(spool:acquire())
		b:write(1, payload("b", i, 1000))
		assert(ep:send(b, sink:address()))
	end
	T.eq(spool:count_state("free"), 16)
	assert(ep:close())
	local closed = false
	T.ok(pump(loop, function(e)
		if e.buf then e.buf:release() end
		if e.type == "closed" and e.dgram == ep then closed = true end
	end, function() return closed end, 5))
	T.eq(spool:count_state("free"), 64)
	T.eq(spool:count_state("queued"), 0)
	T.eq(rpool:count_state("queued"), 0)
	-- the layer too, with datagrams waiting for a slot
	local u = assert(ub.udp{ loop = loop, send_pool = spool, queue_max = 2 })
	for i = 1, 40 do assert(u:send(payload("u", i, 500), sink:address())) end
	local qb, qn = u:queued()
	T.eq(qn, 40, "all taken, 2 in slots")
	T.eq(qb, 40 * 500)
	u:close()
	T.ok(T.drive(u, function() return u.closed end, 5))
	T.eq(select(2, u:queued()), 0)
	T.eq(spool:count_state("free"), 64)
	T.ok(u:stats().sent <= 40)
end)

T.test("soft water: every datagram taken past queue_max and a dry pool, in order",
	function()
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	local spool = assert(loop:pool(3, 256, "send"))
	local sink = assert(loop:datagram("127.0.0.1:0"))
	local ep = assert(loop:datagram("127.0.0.1:0", { send_pool = spool,
		queue_max = 2 }))
	assert(ep:set_soft_water(true))
	local want, bytes = {}, 0
	for i = 1, 40 do
		local d = payload("w", i, 10 + i * 5 % 200)
		want[i], bytes = d, bytes + #d
		local b = (i % 4 == 1) and spool:acquire() -- nil: the pool is dry
		if b then
			b:write(1, d)
			T.eq(ep:send(b, sink:address()), #d)
			T.ok(not ub.valid(b)) -- spent, waiting or copied
		else
			T.eq(ep:send(d, sink:address()), #d)
		end
	end
	T.eq(ep:queued_bufs(), 40)
	T.eq(ep:queued_bytes(), bytes)
	-- switched off while some wait: refused, they go first
	assert(ep:set_soft_water(false))
	local ok, _, en = ep:send("late", sink:address())
	T.ok(not ok)
	T.eq(en, errno.EAGAIN)
	local got = {}
	T.ok(pump(loop, function(e)
		if e.type == "data" and e.dgram == sink then
			got[#got + 1] = tostring(e.buf)
			e.buf:release()
		end
	end, function() return #got == 40 end, 5))
	for i = 1, 40 do T.eq(got[i], want[i], "datagram " .. i) end
	T.eq(ep:queued_bufs(), 0)
	assert(ep:close())
	local closed = false
	T.ok(pump(loop, function(e)
		if e.type == "closed" and e.dgram == ep then closed = true end
	end, function() return closed end, 5))
	T.eq(spool:count_state("free"), 3)
end)

T.test("backpressure: waiting in order, never dropped; receiving stops at " ..
	"the high mark; twice the mark refuses; on_drain at the low mark",
	function()
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	local got = {}
	local rx = assert(ub.udp{ loop = loop, rcvbuf = 1 << 20,
		on_datagram = function(_, buf)
			got[#got + 1] = tostring(buf)
			buf:release()
		end })
	local drains = 0
	local tx = assert(ub.udp{ loop = loop, peer = rx:address(), queue_max = 4,
		high_water = 20000, low_water = 5000,
		on_drain = function() drains = drains + 1 end })
	-- 4 in slots, 196 waiting in the core: twice the mark, 200 x 200 bytes
	for i = 1, 200 do
		T.ok(tx:send(payload("p", i, 200)))
		-- receiving stops once the high mark is reached
		T.eq(tx.recv_off or false, i * 200 >= 20000, "receiving at " .. i)
	end
	T.eq(select(2, tx:queued()), 200)
	local r, msg, en = tx:send("one too many")
	T.eq(r, nil)
	T.eq(en, errno.EAGAIN, msg)
	T.ok(msg:find("full", 1, true), msg)
	T.eq(select(2, tx:queued()), 200, "the refused one is not queued")
	T.ok(T.drive(rx, function() return #got == 200 end, 10), #got)
	for i = 1, 200 do T.eq(got[i], payload("p", i, 200)) end
	T.ok(T.drive(rx, function() return drains >= 1 end, 5), "on_drain")
	T.eq(drains, 1)
	T.eq(tx.recv_off, false, "receiving again")
	T.eq(select(2, tx:queued()), 0)
	-- set_water moves the mark the layer uses
	T.ok(tx:set_water(400, 100))
	T.ok(tx:send(payload("q", 1, 300)))
	T.ok(tx:send(payload("q", 2, 300)))
	r, msg, en = tx:send(payload("q", 3, 300))
	T.eq(en, errno.EAGAIN, msg)
	local bad_ok, _, bad_en = tx:set_water(10, 20)
	T.eq(bad_ok, nil)
	T.eq(bad_en, errno.EINVAL)
	T.ok(T.drive(rx, function() return #got == 202 end, 10), #got)
end)

T.test("a server and endpoints on one loop: either's run dispatches both", function()
	local srv = assert(ub.server{ on_data = function(c, b) c:write(b) end })
	T.defer(function() srv:close() end)
	local got
	local ep = assert(ub.udp{ loop = srv.loop, on_datagram = function(_, buf)
		got = tostring(buf); buf:release() end })
	local cl = assert(srv.loop:datagram("127.0.0.1:0"))
	assert(cl:send("via the server", ep:address()))
	T.ok(T.drive(srv, function() return got end, 5))
	T.eq(got, "via the server")
	-- an endpoint nobody manages: its buffers go back to the pool
	assert(ep:send("unclaimed", cl:address()))
	local rp = srv.loop:recv_pool()
	T.ok(T.drive(srv, function() return cl:received() == 1 end, 5))
	T.eq(rp:count_state("app"), 0)
end)

T.test("own loop: run() until stop, close() frees the loop", function()
	local ep = assert(ub.udp{ on_datagram = function(e, buf, addr)
		e:send(buf, addr)
	end })
	local cl = assert(ub.udp{ peer = ep:address(), on_datagram = function(e, buf)
		buf:release(); e:stop()
	end })
	assert(cl:send("ping"))
	cl:step(10) -- the client's loop submits it
	-- the two own loops: step the server's, then run the client's
	T.ok(T.drive(ep, function() return ep.dgram:sent() == 1 end, 5))
	T.eq(select(2, cl:run(5)), "stopped")
	cl:close()
	ep:close()
	T.eq(ub.valid(ep.loop), false)
	T.eq(ub.valid(cl.loop), false)
	T.eq(ep:close(), true) -- idempotent
end)

-- ---- luv -----------------------------------------------------------------

local have_luv, uv = pcall(require, "luv")

T.test("luv: an echo endpoint and clients driven by uv.run", function()
	if not have_luv then T.skip("luv is not installed (Debian: lua-luv)") end
	local ubluv = require "uringbuf.luv"
	local srv = assert(ubluv.udp{ on_datagram = function(ep, buf, addr)
		assert(ep:send(buf, addr))
	end })
	local got, N = {}, 50
	local cl
	cl = assert(ubluv.udp{ peer = srv:address(),
		on_datagram = function(_, buf)
			got[#got + 1] = tostring(buf)
			buf:release()
			if #got == N then cl:close(); srv:close() end
		end })
	for i = 1, N do assert(cl:send(payload("l", i, 10 * i))) end
	local timer = uv.new_timer()
	timer:start(10000, 0, function() cl:close(); srv:close(); timer:close() end)
	timer:unref()
	uv.run()
	if not timer:is_closing() then timer:close() end
	T.eq(#got, N)
	for i = 1, N do T.eq(got[i], payload("l", i, 10 * i)) end
	T.eq(ub.valid(srv.loop), false)
end)

T.test("luv: a luv UDP socket talks to a uringbuf endpoint", function()
	if not have_luv then T.skip("luv is not installed (Debian: lua-luv)") end
	local ubluv = require "uringbuf.luv"
	local srv = assert(ubluv.udp{ on_datagram = function(ep, buf, addr)
		assert(ep:send(buf, addr))
	end })
	local port = srv.port
	local u = uv.new_udp()
	assert(u:bind("127.0.0.1", 0))
	local got = {}
	u:recv_start(function(err, data)
		assert(not err, err)
		if data then got[#got + 1] = data end
		if #got == 10 then u:recv_stop(); u:close(); srv:close() end
	end)
	for i = 1, 10 do u:send(payload("v", i, 100 * i), "127.0.0.1", port, function() end) end
	local timer = uv.new_timer()
	timer:start(10000, 0, function() if not u:is_closing() then u:close() end srv:close() end)
	timer:unref()
	uv.run()
	timer:close()
	uv.run("nowait")
	T.eq(#got, 10)
	for i = 1, 10 do T.eq(got[i], payload("v", i, 100 * i)) end
end)

-- ---- cqueues -------------------------------------------------------------

local have_cq, cqueues = pcall(require, "cqueues")

T.test("cqueues: an echo endpoint and a client driven by a controller", function()
	if not have_cq then T.skip("cqueues is not installed (Debian: lua-cqueues)") end
	local ubcq = require "uringbuf.cqueues"
	local cq = cqueues.new()
	local srv = assert(ubcq.udp(cq, { on_datagram = function(ep, buf, addr)
		assert(ep:send(buf, addr))
	end }))
	local got, N = {}, 30
	local cl
	cl = assert(ubcq.udp(cq, { peer = srv:address(),
		on_datagram = function(_, buf)
			got[#got + 1] = tostring(buf)
			buf:release()
			if #got == N then cl:close(); srv:close() end
		end }))
	for i = 1, N do assert(cl:send(payload("q", i, 7 * i))) end
	local deadline = ub.now() + 10
	while not cq:empty() and ub.now() < deadline do
		assert(cq:step(0.1))
	end
	T.eq(#got, N)
	for i = 1, N do T.eq(got[i], payload("q", i, 7 * i)) end
end)

-- ---- examples/udp_echo.lua as a process -------------------------------------

local LUA = os.getenv("UB_LUA") or "lua5.4"
local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function start(args)
	local cmd = string.format("exec 2>&1; echo $$; exec %s %s %s",
		shq(LUA), shq("examples/udp_echo.lua"), args)
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

local function stop(proc, sig)
	proc.stopped = true
	os.execute(string.format("kill -%s %d 2>/dev/null", sig, proc.pid))
	os.execute(string.format(
		"(sleep 10; kill -KILL %d 2>/dev/null) </dev/null >/dev/null 2>&1 &",
		proc.pid))
	local rest = proc.p:read("a")
	local _, how, code = proc.p:close()
	return how, code, rest
end

-- nc senders at once, each per datagrams of random sizes up to max, a
-- window of 1 each (what is in flight at once must fit in the server's
-- SO_RCVBUF, about 208 KiB by default, or the kernel may drop some).
local function udp_clients(addr, nc, per, max)
	local loop = assert(ub.loop())
	T.defer(function() loop:close() end)
	local pool = assert(loop:pool(64, BIG, "recv"))
	local spool = assert(loop:pool(2 * nc, BIG, "send"))
	local done, bad = 0, 0
	local eps = {}
	for c = 1, nc do
		local seq, want = 0, nil
		local function next_one(ep)
			seq = seq + 1
			want = payload("x" .. c, seq, seq == 1 and 1 or
				seq == 2 and max or math.random(1, max))
			assert(ep:send(want))
		end
		eps[c] = assert(ub.udp{ loop = loop, peer = addr, recv_pool = pool,
			send_pool = spool,
			on_datagram = function(ep, buf)
				if tostring(buf) ~= want then bad = bad + 1 end
				buf:release()
				if seq < per then next_one(ep) else done = done + 1 end
			end })
		next_one(eps[c])
	end
	local ok = T.drive(eps[1], function() return done == nc end, 20)
	return ok, done, bad
end

for _, sig in ipairs { "TERM", "INT" } do
	T.test("examples/udp_echo.lua: echoes random datagrams (1..65507 B) from 8 senders, exit 0 on SIG" ..
		sig, function()
		local proc, line = start("--listen 127.0.0.1:0")
		local port = tonumber((line or ""):match("^listening on 127%.0%.0%.1:(%d+)$"))
		T.ok(port, "first line: " .. tostring(line))
		local ok, done, bad = udp_clients("127.0.0.1:" .. port, 8, 10, 16000)
		T.ok(ok, "done " .. done)
		T.eq(bad, 0)
		-- the largest UDP datagrams, one sender
		ok, done, bad = udp_clients("127.0.0.1:" .. port, 1, 5, MAXDG)
		T.ok(ok, "done " .. done)
		T.eq(bad, 0)
		local how, code, rest = stop(proc, sig)
		T.eq(how, "exit", rest)
		T.eq(code, 0, rest)
	end)
end

T.test("examples/udp_echo.lua: unix, bad arguments exit 1", function()
	local path = os.tmpname()
	os.remove(path)
	T.defer(function() os.remove(path) end)
	local proc, line = start("--listen unix:" .. path)
	T.eq(line, "listening on unix:" .. path)
	local ok, done, bad = udp_clients("unix:" .. path, 2, 5, 16000)
	T.ok(ok, "done " .. done)
	T.eq(bad, 0)
	local how, code = stop(proc, "TERM")
	T.eq(how, "exit")
	T.eq(code, 0)
	for _, args in ipairs { "", "--listen nonsense", "--bogus",
		"--listen 127.0.0.1:0 --buf-size 12", "--listen 127.0.0.1:0 extra" } do
		local p = io.popen(string.format("%s examples/udp_echo.lua %s 2>&1",
			shq(LUA), args))
		local out = p:read("a")
		local _, h, c = p:close()
		T.eq(h, "exit", args)
		T.eq(c, 1, args .. ": " .. out)
	end
end)
