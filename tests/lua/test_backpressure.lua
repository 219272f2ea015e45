-- test_backpressure.lua - what a script sees when a peer is slow: send
-- returns EAGAIN and a "writable" event follows (event API); write returns
-- false and on_drain follows (callbacks); write waits (coroutines); a
-- refused forward pauses the source; pause/resume hold data in the socket.
local T = require "tap"
local ub = require "uringbuf"

local HIGH, LOW = 8192, 2048

T.test("event API: EAGAIN above high water, then writable", function()
	local loop <close> = assert(ub.loop())
	local l = assert(loop:listen("127.0.0.1:0", { high_water = HIGH, low_water = LOW }))
	local c = assert(loop:connect(l:address(), { no_recv = true }))
	c:set_buffers(4096, 4096)
	local s
	while not s do
		local n, ev = assert(loop:wait(1, 100))
		for i = 1, n do if ev[i].type == "accept" then s = ev[i].conn end end
	end
	s:set_buffers(4096, 0)
	local chunk = string.rep("x", 1000)
	local sent, again = 0, nil
	for _ = 1, 1000 do
		local r, msg, en = s:send(chunk)
		if not r then again = { msg, en } break end
		sent = sent + r
	end
	T.ok(again, "refused at some point")
	T.eq(again[2], ub.errno.EAGAIN)
	T.ok(s:queued_bytes() >= HIGH, "queue above high water")
	-- let the client read: the queue drains and writable comes
	assert(c:resume())
	local writable, got = false, 0
	local deadline = ub.now() + 5
	while (not writable or got < sent) and ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		for i = 1, n do
			local e = ev[i]
			if e.type == "writable" and e.conn == s then writable = true end
			if e.type == "data" then got = got + #e.buf; e.buf:release() end
		end
	end
	T.ok(writable, "writable event")
	T.eq(got, sent, "everything accepted arrived")
	T.ok(s:queued_bytes() <= LOW)
end)

T.test("event API: soft water takes every send and says when to stop", function()
	local loop <close> = assert(ub.loop())
	local l = assert(loop:listen("127.0.0.1:0", { high_water = HIGH, low_water = LOW }))
	local c = assert(loop:connect(l:address(), { no_recv = true }))
	c:set_buffers(4096, 4096)
	local s
	while not s do
		local n, ev = assert(loop:wait(1, 100))
		for i = 1, n do if ev[i].type == "accept" then s = ev[i].conn end end
	end
	s:set_buffers(4096, 0)
	T.ok(s:set_soft_water(true))
	-- strings and buffers, numbered, far past the mark: all taken, in order
	local parts, above_seen = {}, false
	for i = 1, 400 do
		local piece = string.format("%05d", i) .. string.rep("s", 995)
		local n, above
		if i % 3 == 0 then
			local b = assert(loop:send_pool():acquire())
			b:write(1, piece)
			n, above = s:send(b)
			T.eq(b:valid(), false, "the buffer is the queue's")
		else
			n, above = s:send(piece)
		end
		T.eq(n, #piece, "taken whole")
		T.eq(above, s:queued_bytes() >= HIGH, "above says the mark")
		above_seen = above_seen or above
		parts[i] = piece
	end
	T.ok(above_seen, "went above the mark")
	T.ok(s:queued_bytes() > 300 * 1000, "all of it queued", s:queued_bytes())
	-- no writable while the client does not read
	for _ = 1, 3 do
		local n, ev = assert(loop:wait(0, 20))
		for i = 1, n do T.ok(ev[i].type ~= "writable", "no writable yet") end
	end
	assert(c:resume())
	local expect = table.concat(parts)
	local got, writable = {}, 0
	local deadline = ub.now() + 10
	while #table.concat(got) < #expect and ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		for i = 1, n do
			local e = ev[i]
			if e.type == "writable" and e.conn == s then
				writable = writable + 1
				T.ok(s:queued_bytes() <= LOW, "writable at the low mark")
			end
			if e.type == "data" then got[#got + 1] = tostring(e.buf); e.buf:release() end
		end
	end
	T.ok(table.concat(got) == expect, "every byte, in order")
	T.eq(writable, 1, "one writable")
	T.ok(s:set_soft_water(false))
	local bad = pcall(s.set_soft_water)
	T.eq(bad, false, "no connection: an error")
end)

-- A server and one client on it; the client does not read until told.
local function setup(server_t, client_t)
	server_t.port = 0
	server_t.high_water, server_t.low_water = HIGH, LOW
	server_t.sndbuf, server_t.rcvbuf = 4096, 4096
	local srv = assert(ub.server(server_t))
	client_t.no_recv = true
	client_t.sndbuf, client_t.rcvbuf = 4096, 4096
	client_t.high_water, client_t.low_water = HIGH, LOW
	local c = assert(srv:connect(srv.address, client_t))
	return srv, c
end

T.test("callbacks: write returns false, on_drain follows, order kept", function()
	local results, drained, got = {}, 0, {}
	local payload = {}
	for i = 1, 64 do payload[i] = string.format("%04d", i) .. string.rep(".", 996) end
	local expect = table.concat(payload)
	local srv, c = setup({
		on_connect = function(s)
			for i = 1, #payload do results[i] = s:write(payload[i]) end
			s:shutdown()
		end,
		on_drain = function() drained = drained + 1 end,
	}, {
		on_data = function(_, b) got[#got + 1] = tostring(b); b:release() end,
		on_eof = function(cc) cc:close() end,
	})
	T.drive(srv, function() return results[#payload] ~= nil end, 5)
	T.eq(results[1], true, "first write queued")
	T.eq(results[#payload], false, "a late write held back")
	T.drive(srv, function() return false end, 0.2)
	T.eq(#got, 0, "nothing read while paused")
	c:resume()
	T.ok(T.drive(srv, function() return #table.concat(got) >= #expect end, 10), "in time")
	T.eq(table.concat(got), expect)
	T.ok(drained >= 1, "on_drain called")
	srv:close()
end)

T.test("callbacks: a refused forward pauses its source", function()
	-- echo server; the client sends a lot but reads nothing for a while
	local held, sent_all = 0, false
	local total = 256 * 1024
	local payload = string.rep("0123456789abcdef", total // 16)
	local got = {}
	local srv, c = setup({
		on_data = function(s, b)
			if s:write(b) == false then held = held + 1 end
		end,
	}, {
		on_connect = function(cc)
			local r = cc:write(payload)
			sent_all = r
			cc:shutdown()
		end,
		on_data = function(_, b) got[#got + 1] = tostring(b); b:release() end,
		on_eof = function(cc) cc:close() end,
	})
	T.drive(srv, function() return false end, 0.5)
	T.ok(held >= 1, "server write held back", held)
	T.eq(sent_all, false, "client write held back too: the server stopped reading")
	local server_in = 0
	for _ = 1, 3 do
		T.drive(srv, function() return false end, 0.1)
		local n = c:bytes_sent()
		T.ok(server_in == 0 or n == server_in, "client stalled", n, server_in)
		server_in = n
	end
	c:resume()
	T.ok(T.drive(srv, function() return #table.concat(got) >= total end, 10), "in time")
	T.eq(table.concat(got), payload)
	srv:close()
end)

T.test("coroutines: write waits above high water, then goes on", function()
	local progress, finished = 0, false
	local total = 128 * 1024
	local got = 0
	local srv, c = setup({
		handler = function(s)
			local chunk = string.rep("z", 4096)
			for i = 1, total // 4096 do
				assert(s:write(chunk))
				progress = i
			end
			finished = true
		end,
	}, {
		on_data = function(_, b) got = got + #b; b:release() end,
		on_eof = function(cc) cc:close() end,
	})
	T.drive(srv, function() return false end, 0.3)
	T.ok(not finished, "the writer waits while nobody reads")
	T.ok(progress >= 1 and progress < total // 4096, "partial progress", progress)
	c:resume()
	T.ok(T.drive(srv, function() return finished and got == total end, 10), "in time")
	srv:close()
end)

T.test("pause and resume hold data in the socket", function()
	local sconn, got = nil, {}
	local srv, c = setup({
		on_connect = function(s) sconn = s end,
		on_data = function(_, b) got[#got + 1] = tostring(b); b:release() end,
	}, {})
	T.drive(srv, function() return sconn ~= nil end, 5)
	T.eq(sconn:pause(), true)
	T.drive(srv, function() return false end, 0.1)
	c:write("while paused")
	T.drive(srv, function() return false end, 0.2)
	T.eq(#got, 0, "held while paused")
	T.eq(sconn:resume(), true)
	T.ok(T.drive(srv, function() return #got > 0 end, 5))
	T.eq(table.concat(got), "while paused")
	srv:close()
end)
