-- test_stream.lua - ordered, byte-exact streams in every send mode: 200
-- concurrent connections through an echo server (callbacks, coroutines) and
-- through a core-side pipe proxy, with tiny socket buffers (short sends) and
-- small pools (receive rings run dry).  Each client sends a
-- self-describing stream in odd-sized chunks and checks every byte of the
-- echo in order.  Modes the kernel lacks are skipped with its reason.
local T = require "tap"
local ub = require "uringbuf"

local NCONN = 200
local BYTES = 24 * 1024
local SOCKBUF = 4096
local TIMEOUT = 60

local modes = T.modes()

-- Callback clients on srv's loop, through addr; returns a results table
-- that fills in as they finish.
local function start_clients(srv, addr, mode, n, bytes, cpool)
	local r = { done = 0, clients = {} }
	for i = 1, n do
		local payload = T.pattern("c" .. i, bytes)
		local st = { got = 0, bad = false, payload = payload }
		r.clients[i] = st
		local conn, err = srv:connect(addr, {
			mode = mode, recv_pool = cpool,
			sndbuf = SOCKBUF, rcvbuf = SOCKBUF,
			high_water = 8192, low_water = 2048,
			on_connect = function(c)
				-- odd chunk sizes: 1..1500 bytes, in order
				local off, k = 1, i
				while off <= #payload do
					local len = (k * 7919) % 1500 + 1
					k = k + 1
					local ok, msg = c:write(payload:sub(off, off + len - 1))
					if ok == nil then st.err = msg break end
					off = off + len
				end
				c:shutdown()
			end,
			on_data = function(c, b)
				local s = tostring(b)
				b:release()
				if not st.bad and
					payload:sub(st.got + 1, st.got + #s) ~= s then
					st.bad = st.got
				end
				st.got = st.got + #s
			end,
			on_eof = function(c) st.eof = true; c:close() end,
			on_close = function(c, msg)
				st.closed = true
				st.err = st.err or msg
				r.done = r.done + 1
			end,
		})
		assert(conn, err)
	end
	return r
end

local function check_results(r, n, bytes)
	local bad = 0
	for i, st in ipairs(r.clients) do
		if st.bad or st.got ~= bytes or st.err or not st.eof then
			bad = bad + 1
			if bad <= 3 then
				print(string.format("#   client %d: got %d of %d, bad at %s, err %s, eof %s",
					i, st.got, bytes, tostring(st.bad), tostring(st.err),
					tostring(st.eof)))
			end
		end
	end
	T.eq(bad, 0, "clients with a wrong stream")
	T.eq(r.done, n, "clients closed")
end

-- Every buffer of every pool back where it lives.
local function check_pools(loop, pools)
	local deadline = ub.now() + 5
	local function whole()
		for _, p in ipairs(pools) do
			local c = p:counts()
			if c.app + c.queued ~= 0 then return false end
		end
		return true
	end
	while not whole() and ub.now() < deadline do loop:wait(1, 20) end
	for _, p in ipairs(pools) do
		local c = p:counts()
		T.eq(c.app, 0, tostring(p) .. " app")
		T.eq(c.queued, 0, tostring(p) .. " queued")
		T.eq(c.free + c.kernel, p:count(), tostring(p) .. " whole")
	end
end

local function echo_server(mode, style)
	local server_closed = 0
	local t = {
		port = 0, mode = mode,
		pool_count = 32, pool_size = 512,    -- small: the ring runs dry
		sndbuf = SOCKBUF, rcvbuf = SOCKBUF,
		high_water = 8192, low_water = 2048,
		on_close = function() server_closed = server_closed + 1 end,
	}
	local stats = { held = 0 }
	if style == "callback" then
		t.on_data = function(c, b)
			if c:write(b) == false then stats.held = stats.held + 1 end
		end
	else
		t.handler = function(c)
			while true do
				local b, msg = c:read()
				if not b then
					assert(msg == nil, msg)
					break
				end
				assert(c:write(b))
			end
		end
	end
	local srv = assert(ub.server(t))
	return srv, function() return server_closed end, stats
end

for _, m in ipairs(modes) do
	for _, style in ipairs({ "callback", "coroutine" }) do
		T.test(string.format("%s: %d connections, echo server (%s)",
			m.name, NCONN, style), function()
			if not m.ok then T.skip(m.name .. " unavailable: " .. m.reason) end
			local srv, closed, stats = echo_server(m.name, style)
			local cpool = assert(srv.loop:pool(1024, 512, "recv"))
			local r = start_clients(srv, srv.address, m.name, NCONN, BYTES, cpool)
			local t0 = ub.now()
			local rp, dry = srv.loop:recv_pool(), 0
			local ok = T.drive(srv, function()
				if rp:count_state("kernel") == 0 then dry = dry + 1 end
				return r.done == NCONN and closed() == NCONN
			end, TIMEOUT)
			print(string.format("#   %.2f s, %d writes held back, receive ring dry %d times",
				ub.now() - t0, stats.held, dry))
			check_results(r, NCONN, BYTES)
			T.ok(ok, "finished in time")
			T.eq(closed(), NCONN, "server connections closed")
			check_pools(srv.loop, { srv.loop:recv_pool(), srv.loop:send_pool(), cpool })
			srv:close()
		end)
	end

	T.test(string.format("%s: %d connections through a pipe proxy",
		m.name, NCONN // 2), function()
		if not m.ok then T.skip(m.name .. " unavailable: " .. m.reason) end
		local srv = echo_server(m.name, "callback")
		local n = NCONN // 2
		local ppool = assert(srv.loop:pool(256, 512, "recv"))
		-- the proxy: each client piped to its own upstream, both ways
		local proxy = assert(ub.server{
			loop = srv.loop, port = 0, mode = m.name, recv_pool = ppool,
			no_recv = true, sndbuf = SOCKBUF, rcvbuf = SOCKBUF,
			on_connect = function(client)
				local up = assert(srv:connect(srv.address, {
					mode = m.name, recv_pool = ppool, no_recv = true,
					on_connect = function(up)
						assert(client:pipe(up))
						assert(up:pipe(client))
						assert(client:resume())
						assert(up:resume())
					end,
					on_eof = function() end,
					on_close = function()
						if ub.valid(client) then client:close() end
					end,
				}))
				-- the core shuts the other side after EOF; close when
				-- both ends are done
				local _ = up
			end,
			on_eof = function() end,
		})
		local cpool = assert(srv.loop:pool(1024, 512, "recv"))
		local r = start_clients(srv, proxy.address, m.name, n, BYTES, cpool)
		local ok = T.drive(srv, function() return r.done == n end, TIMEOUT)
		check_results(r, n, BYTES)
		T.ok(ok, "finished in time")
		srv:close()
	end)
end

T.test("coroutine client: request / response in order", function()
	local srv = assert(ub.server{ port = 0, on_data = function(c, b) c:write(b) end })
	local replies, finished = {}, false
	srv:connect(srv.address, { handler = function(c)
		for i = 1, 50 do
			local line = "request " .. i .. "\n"
			assert(c:write(line))
			local got = ""
			while #got < #line do
				local b = assert(c:read())
				got = got .. tostring(b)
				b:release()
			end
			replies[#replies + 1] = got
		end
		finished = true
	end })
	T.ok(T.drive(srv, function() return finished end, 10), "in time")
	for i = 1, 50 do T.eq(replies[i], "request " .. i .. "\n") end
	srv:close()
end)

T.test("on_data raises: the rest of the batch is delivered first, then step raises it", function()
	local seen, raised, accepted = {}, 0, 0
	local srv = assert(ub.server{ port = 0,
		on_connect = function() accepted = accepted + 1 end,
		on_data = function(_, b)
			local s = tostring(b)
			b:release()
			seen[#seen + 1] = s
			if s == "boom" then error("on_data failed") end
		end })
	-- the clients on a loop of their own, so that what they send waits
	-- for the server's next step and arrives there in one batch
	local cl = assert(ub.server{ port = 0 })
	local words = { "a", "b", "c", "boom", "d", "e", "f" }
	local conns = {}
	for i = 1, #words do conns[i] = assert(cl:connect(srv.address)) end
	T.ok(T.drive(srv, function()
		cl:step(0)
		return accepted == #words
	end, 5), "all accepted")
	for i, w in ipairs(words) do assert(conns[i]:write(w)) end
	-- the client loop sends them (the server does not step meanwhile)
	T.drive(cl, function() return false end, 0.1)
	local deadline = ub.now() + 5
	while #seen < #words and ub.now() < deadline do
		local ok, err = pcall(srv.step, srv, 50)
		if not ok then
			raised = raised + 1
			T.ok(tostring(err):find("on_data failed", 1, true), err)
			T.ok(tostring(err):find("traceback", 1, true), err)
		end
	end
	table.sort(seen)
	T.eq(table.concat(seen, ","), "a,b,boom,c,d,e,f")
	T.eq(raised, 1)
	cl:close()
	srv:close()
end)
