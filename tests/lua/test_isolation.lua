-- test_isolation.lua - no client can starve the others (issue 11), as a Lua
-- server sees it: per-connection receive budgets, deadlines and
-- max_connections, through the server helper with default options.
--
-- The server under test runs in this process (so that its connections'
-- buffer counts can be read after every batch); the clients run in other
-- processes (procs.spawn), each on a uringbuf loop of its own, and write
-- what they saw to a file.  Everything is on loopback; every wait is
-- bounded.
local T = require "tap"
local ub = require "uringbuf"
local P = require "procs"

local E = ub.errno
local modes = T.modes()
-- Under the sanitizers (the asan-lua suite preloads the ASan runtime)
-- everything is several times slower: deadlines that measure the server's
-- latency are stretched, sizes are not.
local SANITIZED = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) ~= nil
local SLOW = SANITIZED and 4 or 1

-- The pattern of tap.lua, in the children too.
local PATTERN = [[
local function pattern(tag, count)
	local parts, n = {}, 0
	while n < count do
		local rec = tag .. ":" .. n .. ";"
		parts[#parts + 1] = rec
		n = n + #rec
	end
	return table.concat(parts):sub(1, count)
end
]]

-- K connections that write `bytes` each and never read (no_recv: the
-- bytes echoed back pile up in their sockets and in the server).  Their
-- own loop has big pools so that the writers never wait for each other.
local SLOW_WRITERS = [[
local ub = require "uringbuf"
local port, k, bytes = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
local srv = assert(ub.server{ pool_count = 8192 })
local chunk = string.rep("s", 65536)
local sent, connected = {}, 0
local function push(c)
	while sent[c] < bytes do
		local n = math.min(#chunk, bytes - sent[c])
		local ok = c:write(n == #chunk and chunk or chunk:sub(1, n))
		if ok == nil then return end
		sent[c] = sent[c] + n
		if ok == false then return end -- held back: on_drain goes on
	end
end
for _ = 1, k do
	assert(srv:connect("127.0.0.1", port, { no_recv = true,
		on_connect = function(c)
			connected = connected + 1
			sent[c] = 0
			push(c)
		end,
		on_drain = push }))
end
srv:run(120)
]]

-- An ordinary client: n pings of 1 KiB, each answered byte-exact before the
-- next; reports how many came back and the slowest round trip.
local PINGER = PATTERN .. [[
local ub = require "uringbuf"
local port, n, limit = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
local srv = assert(ub.server{})
local ok, worst, err, done = 0, 0, nil, false
assert(srv:connect("127.0.0.1", port, { handler = function(c)
	for i = 1, n do
		local msg = pattern("ping" .. i, 1024)
		local t0 = ub.now()
		assert(c:write(msg))
		local got, len = {}, 0
		while len < #msg do
			local b, e = c:read()
			if not b then err = "read " .. i .. ": " .. tostring(e); done = true; return end
			got[#got + 1] = tostring(b)
			len = len + #b
			b:release()
		end
		worst = math.max(worst, ub.now() - t0)
		if table.concat(got) ~= msg then err = "ping " .. i .. " differs"; break end
		ok = i
	end
	done = true
end }))
local deadline = ub.now() + limit
while not done and ub.now() < deadline do srv:step(20) end
print(string.format("pings %d worst %.6f err %s", ok, worst, tostring(err)))
print("END")
]]

-- One connection that writes `bytes` of a pattern without reading until
-- the file `go` exists, then reads everything back and compares.
local RESUMER = PATTERN .. [[
local ub = require "uringbuf"
local port, bytes, go = tonumber(arg[1]), tonumber(arg[2]), arg[3]
local srv = assert(ub.server{ pool_count = 4096 })
local data = pattern("resume", bytes)
local sent, got, glen, conn, resumed = 0, {}, 0, nil, false
local function push(c)
	while sent < bytes do
		local n = math.min(65536, bytes - sent)
		local ok = c:write(data:sub(sent + 1, sent + n))
		if ok == nil then return end
		sent = sent + n
		if ok == false then return end
	end
end
conn = assert(srv:connect("127.0.0.1", port, { no_recv = true,
	on_connect = push, on_drain = push,
	on_data = function(_, b)
		got[#got + 1] = tostring(b)
		glen = glen + #b
		b:release()
	end }))
local deadline = ub.now() + 120
while glen < bytes and ub.now() < deadline do
	srv:step(20)
	if not resumed then
		local f = io.open(go, "r")
		if f then
			f:close()
			resumed = true
			print("resumed with " .. sent .. " written")
			io.stdout:flush()
			conn:resume()
		end
	end
end
local s = table.concat(got)
local first = 0
if s ~= data then
	for i = 1, math.min(#s, #data) do
		if s:byte(i) ~= data:byte(i) then first = i; break end
	end
end
print(string.format("received %d of %d, exact %s, first difference %d",
	#s, bytes, tostring(s == data), first))
print("END")
]]

-- n connections that connect, never write, and count how they end.
-- rcvbuf > 0: they never read either, with that SO_RCVBUF (so that the
-- server cannot push much to them).
local IDLERS = [[
local ub = require "uringbuf"
local port, n, rcvbuf = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
local srv = assert(ub.server{})
local connected, closed, failed = 0, 0, 0
for _ = 1, n do
	local c, msg = srv:connect("127.0.0.1", port, { no_recv = rcvbuf > 0,
		rcvbuf = rcvbuf > 0 and rcvbuf or nil,
		on_connect = function() connected = connected + 1 end,
		on_data = function(_, b) b:release() end,
		on_close = function() closed = closed + 1 end })
	if not c then
		print("connect: " .. tostring(msg))
		failed = failed + 1
		closed = closed + 1
	end
end
local deadline = ub.now() + 60
local said = false
while closed < n and ub.now() < deadline do
	srv:step(50)
	if not said and connected == n then
		said = true
		print("connected " .. n)
		io.stdout:flush()
	end
end
print(string.format("connected %d closed %d failed %d", connected, closed, failed))
print("END")
]]

-- An echo server as examples/echo.lua makes it: default options, plus what
-- t adds.  Tracks its connections in accept order: conns[i] is the i-th,
-- conns[conn] = { at =, closed_at =, err =, errno = }; closed lists them
-- in closing order.  t.on_connect runs after the tracking.
local function echo_server(t)
	local conns, closed = {}, {}
	t = t or {}
	local hook = t.on_connect
	local srv_t = {
		port = 0,
		on_connect = function(c)
			conns[#conns + 1] = c
			conns[c] = { at = ub.now() }
			if hook then hook(c) end
		end,
		on_data = function(c, b) c:write(b) end,
		on_close = function(c, err, en)
			local st = conns[c] or {}
			st.closed_at, st.err, st.errno = ub.now(), err, en
			closed[#closed + 1] = c
		end,
	}
	for k, v in pairs(t) do
		if k ~= "on_connect" then srv_t[k] = v end
	end
	local srv = assert(ub.server(srv_t))
	T.defer(function() srv:close() end)
	return srv, conns, closed
end

-- Step srv until cond() or seconds pass; every() runs after each batch.
local function drive(srv, cond, seconds, every)
	local deadline = ub.now() + seconds
	while not cond() do
		if ub.now() > deadline then return false end
		assert(srv:step(20))
		if every then every() end
	end
	return true
end

---------------------------------------------------------------------------
-- Options and accessors

T.test("options and accessors: recv_budget, deadlines, max_connections, reserve", function()
	local loop <close> = assert(ub.loop())
	local rp = assert(loop:recv_pool())
	T.eq(rp:reserve(), rp:count() // 4, "reserve of the default pool")
	T.eq(assert(loop:send_pool()):reserve(), 0, "a send pool has none")
	local l = assert(loop:listen("127.0.0.1:0", { recv_budget = 64 * 1024,
		idle_timeout = 30, connect_timeout = 0.001, close_timeout = math.huge,
		max_connections = 7 }))
	T.eq(l:connections(), 0)
	local c = assert(loop:connect(l:address(), { recv_budget = 8192,
		connect_timeout = 5, idle_timeout = 0.0001, close_timeout = 2.5 }))
	T.eq(c:recv_budget(), 8192, "budget from the options")
	local s
	local deadline = ub.now() + 5
	while not s and ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		for i = 1, n do
			if ev[i].type == "accept" then s = ev[i].conn end
		end
	end
	T.ok(s, "accepted")
	T.eq(s:recv_budget(), 64 * 1024, "listener's options")
	T.eq(l:connections(), 1)
	T.eq(s:recv_held(), 0)
	T.eq(s:recv_throttled(), false)
	T.eq(s:set_recv_budget(3 * 4096), true)
	T.eq(s:recv_budget(), 3 * 4096)
	local ok, msg, en = s:set_recv_budget(0)
	T.eq(ok, nil, "budget 0 refused")
	T.eq(en, E.EINVAL)
	T.eq(type(msg), "string")
	T.eq(l:set_max_connections(0), true)
	T.eq(l:set_max_connections(3), true)
	-- the default budget
	local c2 = assert(loop:connect(l:address()))
	T.eq(c2:recv_budget(), ub.core.UB_DEF_RECV_BUDGET, "default budget")
	-- the server helper passes them on
	local srv = assert(ub.server{ loop = loop, port = 0, recv_budget = 12345,
		idle_timeout = 1, close_timeout = 1, connect_timeout = 1,
		max_connections = 1 })
	local c3 = assert(srv:connect(srv.address, { recv_budget = 4096,
		idle_timeout = 2 }))
	T.eq(c3:recv_budget(), 4096)
	local accepted
	srv.handlers.on_connect = function(x)
		-- (c2's accept on l comes through this loop's dispatcher too)
		if x:local_address() == srv.address then accepted = x end
	end
	T.ok(T.drive(srv, function() return accepted end, 5), "accepted")
	T.eq(accepted:recv_budget(), 12345)
	T.eq(srv.listener:connections(), 1)
end)

---------------------------------------------------------------------------
-- Budgets: slow readers beside an ordinary client

local MiB = 1024 * 1024
local PINGS = 20
local PING_LIMIT = 1.0 * SLOW -- seconds for one ping, at worst
-- Buffers over the budget: uringbuf.h allows one per completion that ends a
-- buffer early before the loop sees the budget reached (as test_isolation.py)
local OVERSHOOT = 4

-- K writers that never read, then the pinger; check pings and budgets.
-- disable: features the server's loop must do without.
local function slow_readers(mode, k, disable)
	local loop
	if disable then
		loop = assert(ub.loop{ disable = disable })
		T.defer(function() loop:close() end)
	end
	local srv, conns = echo_server{ mode = mode, loop = loop }
	local size = srv.rpool:buf_size()
	local maxheld, throttled = {}, {}
	-- the fewest buffers left in the receive pool's ring
	local minring = math.huge
	local function sample()
		minring = math.min(minring, srv.rpool:count_state("kernel"))
		for i = 1, math.min(k, #conns) do
			local c = conns[i]
			if ub.valid(c) then
				local h = c:recv_held()
				if h > (maxheld[i] or 0) then maxheld[i] = h end
				if c:recv_throttled() then throttled[i] = true end
			end
		end
	end
	P.spawn(SLOW_WRITERS, string.format("%d %d %d", srv.port, k, 8 * MiB))
	T.ok(drive(srv, function() return #conns >= k end, 20, sample),
		"slow writers connected", #conns, k)
	-- until the writers are stopped: every one throttled, or no byte
	-- received for half a second
	local last, since = -1, ub.now()
	drive(srv, function()
		local total, all = 0, true
		for i = 1, k do
			total = total + conns[i]:bytes_received()
			if not throttled[i] then all = false end
		end
		if total ~= last then last, since = total, ub.now() end
		return all or ub.now() - since > 0.5
	end, 30 * SLOW, sample)
	local pinger = P.spawn(PINGER, string.format("%d %d %d", srv.port, PINGS,
		math.ceil(PINGS * PING_LIMIT + 5)))
	local out
	T.ok(drive(srv, function()
		out = pinger:finished()
		return out
	end, PINGS * PING_LIMIT + 20, sample), "the pinger finished", pinger:output())
	local n, worst, err = out:match("pings (%d+) worst ([%d.]+) err (%S+)")
	T.eq(err, "nil", "pinger error: " .. out)
	T.eq(tonumber(n), PINGS, "pings answered: " .. out)
	T.ok(tonumber(worst) <= PING_LIMIT, "every ping within " .. PING_LIMIT ..
		" s", "worst " .. worst)
	local nthrottled = 0
	for i = 1, k do
		local c = conns[i]
		local budget = c:recv_budget()
		T.ok((maxheld[i] or 0) * size <= budget + OVERSHOOT * size,
			string.format("slow connection %d held at most its budget + %d buffers", i, OVERSHOOT),
			string.format("held %d x %d bytes, budget %d", maxheld[i] or 0, size, budget))
		if throttled[i] then nthrottled = nthrottled + 1 end
	end
	T.ok(nthrottled > 0, "a slow connection was throttled", nthrottled)
	-- The reserve is for connections that hold nothing: each may take
	-- one from it (the pinger too), and a multishot receive may end a
	-- few more buffers early before its cancel lands.  Before receives
	-- promised those partial buffers, 64 writers left as few as 16 of
	-- the 256 (and once none: the pinger starved).
	local reserve = srv.rpool:reserve()
	T.ok(minring >= reserve - 2 * (k + 1), "the ring kept most of its reserve",
		string.format("%d left, reserve %d", minring, reserve))
	if os.getenv("UB_VERBOSE") then
		local held, recvd = {}, 0
		for i = 1, k do
			held[#held + 1] = maxheld[i] or 0
			recvd = recvd + conns[i]:bytes_received()
		end
		print(string.format("# K=%d: worst ping %s s, %d throttled, max held %s, "
			.. "%d bytes received from the writers, ring at least %d", k,
			worst, nthrottled, table.concat(held, ",", 1, math.min(#held, 8)),
			recvd, minring))
	end
	return worst
end

for _, m in ipairs(modes) do
	for _, k in ipairs({ 1, 8, 64 }) do
		T.test(string.format("%s: %d writers that never read, an ordinary client's " ..
			"pings all answered, budgets kept", m.name, k), function()
			if not m.ok then T.skip(m.name .. " unavailable: " .. m.reason) end
			slow_readers(m.name, k)
		end)
	end
end

T.test("without the kernel's multishot byte limit (recv_limit disabled): " ..
	"64 writers that never read, pings answered, budgets kept", function()
	slow_readers(nil, 64, { "recv_limit" })
end)

for _, m in ipairs(modes) do
	T.test(m.name .. ": a throttled client that resumes reading gets every byte, in order",
		function()
		if not m.ok then T.skip(m.name .. " unavailable: " .. m.reason) end
		local srv, conns = echo_server{ mode = m.name }
		local size = srv.rpool:buf_size()
		local go = os.tmpname()
		os.remove(go)
		T.defer(function() os.remove(go) end)
		local bytes = 8 * MiB
		local child = P.spawn(RESUMER, string.format("%d %d %s", srv.port,
			bytes, go))
		local maxheld, throttled = 0, false
		local function sample()
			local c = conns[1]
			if c and ub.valid(c) then
				maxheld = math.max(maxheld, c:recv_held())
				throttled = throttled or c:recv_throttled()
			end
		end
		T.ok(drive(srv, function() return throttled end, 30 * SLOW, sample),
			"the connection was throttled", child:output())
		assert(io.open(go, "w")):close()
		local out
		T.ok(drive(srv, function()
			out = child:finished()
			return out
		end, 60 * SLOW, sample), "the client finished", child:output())
		T.ok(out:find("received " .. bytes .. " of " .. bytes ..
			", exact true", 1, true), "every byte back, in order", out)
		local budget = conns[1]:recv_budget()
		T.ok(maxheld * size <= budget + OVERSHOOT * size,
			"held at most budget + " .. OVERSHOOT .. " buffers",
			maxheld, size, budget)
	end)
end

---------------------------------------------------------------------------
-- Deadlines

-- Run this test again in a child whose RLIMIT_NOFILE is raised, when ours
-- is too low for n descriptors; returns true if it did (the child's result
-- is then this test's), false if ours is enough.
local function with_nofile(n, name)
	local p = io.popen("ulimit -n; ulimit -Hn")
	local soft, hard = p:read("l"), p:read("l")
	p:close()
	local function num(v) return v == "unlimited" and math.huge or tonumber(v) end
	if num(soft) >= n then return false end
	if os.getenv("UB_NOFILE_RAISED") or num(hard) < n then
		T.skip(string.format("RLIMIT_NOFILE is %s (hard %s); %d descriptors needed",
			soft, hard, n))
	end
	local lua = os.getenv("UB_LUA") or "lua5.4"
	local cmd = string.format("ulimit -n %d && UB_NOFILE_RAISED=1 UB_TEST=%s exec %s %s --one test_isolation.lua 2>&1",
		n, "'" .. name:gsub("'", "'\\''") .. "'", lua, arg[0])
	local q = io.popen("sh -c '" .. cmd:gsub("'", "'\\''") .. "'")
	local out = q:read("a")
	q:close()
	local okline = out:match("\nok [^\n]*") or out:match("^ok [^\n]*")
	if out:find("not ok", 1, true) or not okline then
		error("in a child with RLIMIT_NOFILE " .. n .. ":\n" .. out, 0)
	end
	local reason = okline:match("# SKIP (.*)$")
	if reason then T.skip(reason) end
	return true
end

local IDLE_N = 1000
local IDLE_NAME = "idle_timeout: 1000 idle connections all closed with ETIMEDOUT"
T.test(IDLE_NAME, function()
	if with_nofile(IDLE_N + 200, IDLE_NAME) then return end
	local IDLE = 1.0
	local srv, conns, closed = echo_server{ idle_timeout = IDLE, backlog = 4096 }
	local child = P.spawn(IDLERS, string.format("%d %d 0", srv.port, IDLE_N),
		{ nofile = IDLE_N + 200 })
	T.ok(drive(srv, function() return #closed >= IDLE_N end, 60 * SLOW),
		"all closed by the server", #conns, #closed, child:output())
	T.eq(#conns, IDLE_N, "accepted")
	local early, late, wrong = 0, 0, 0
	for i = 1, #conns do
		local st = conns[conns[i]]
		if st.errno ~= E.ETIMEDOUT then wrong = wrong + 1 end
		local dt = st.closed_at - st.at
		if dt < IDLE - 0.02 then early = early + 1 end
		if dt > IDLE + 10 * SLOW then late = late + 1 end
	end
	T.eq(wrong, 0, "connections closed without ETIMEDOUT")
	T.eq(early, 0, "closed before their idle timeout")
	T.eq(late, 0, "closed long after it")
	T.eq(conns[conns[1]].err, ub.strerror(E.ETIMEDOUT), "on_close's message")
	local out
	T.ok(drive(srv, function()
		out = child:finished()
		return out
	end, 30 * SLOW), "the clients saw it", child:output())
	T.ok(out:find("closed " .. IDLE_N, 1, true), "every client closed", out)
end)

for _, m in ipairs(modes) do
	T.test(m.name .. ": close_timeout: 100 graceful closes that cannot drain " ..
		"become aborts with ETIMEDOUT", function()
		if not m.ok then T.skip(m.name .. " unavailable: " .. m.reason) end
		local N, CLOSE, W = 100, 0.5, 64 * 1024
		local payload = string.rep("c", W)
		local closing = {}
		local srv, conns, closed = echo_server{ mode = m.name,
			close_timeout = CLOSE, pool_count = 4096, sndbuf = 4096,
			on_connect = function(c)
				T.eq(c:write(payload), true, "queued")
				closing[c] = ub.now()
				c:close()
			end }
		local child = P.spawn(IDLERS, string.format("%d %d 4096", srv.port, N))
		T.ok(drive(srv, function() return #closed >= N end, 30 * SLOW),
			"all closed", #conns, #closed, child:output())
		local wrong, early, late = 0, 0, 0
		for i = 1, N do
			local c = conns[i]
			local st = conns[c]
			if st.errno ~= E.ETIMEDOUT then wrong = wrong + 1 end
			local dt = st.closed_at - closing[c]
			if dt < CLOSE - 0.02 then early = early + 1 end
			if dt > CLOSE + 5 * SLOW then late = late + 1 end
		end
		T.eq(wrong, 0, "closes that ended without ETIMEDOUT")
		T.eq(early, 0, "aborted before the deadline")
		T.eq(late, 0, "aborted long after it")
		child:kill()
	end)
end

-- One server, client connections on the same loop that do not read (tiny
-- receive buffers) until told to.
local function blocked_pair(server_t, bytes)
	local got, cclosed = {}, false
	local srv, conns, closed = echo_server(server_t)
	local c = assert(srv:connect(srv.address, { no_recv = true, rcvbuf = 4096,
		on_data = function(_, b) got[#got + 1] = tostring(b); b:release() end,
		on_eof = function(cc) cc:close() end,
		on_close = function() cclosed = true end }))
	T.ok(drive(srv, function() return #conns == 1 end, 10), "accepted")
	return srv, conns, closed, c, got, function() return cclosed end
end

T.test("close_timeout = math.huge: a graceful close waits for a slow reader, " ..
	"then drains", function()
	local bytes = 512 * 1024
	local payload = T.pattern("drain", bytes)
	local srv, conns, closed, c, got, cclosed = blocked_pair({
		close_timeout = math.huge, sndbuf = 4096, pool_count = 4096,
		high_water = 4 * MiB,
		on_connect = function(s)
			T.eq(s:write(payload), true)
			s:close()
		end })
	drive(srv, function() return false end, 1.2)
	T.eq(#closed, 0, "still closing after 1.2 s")
	T.ok(conns[1]:queued_bytes() > 0, "data still queued")
	c:resume()
	T.ok(drive(srv, function() return #closed == 1 and cclosed() end, 20 * SLOW),
		"drained and closed")
	T.eq(conns[conns[1]].errno, nil, "a clean close")
	T.ok(table.concat(got) == payload, "every byte, in order", #table.concat(got))
end)

-- The server helper's own part: close() while write() holds data back
-- (the send queue is above high water) waits for that data to reach the
-- send queue; close_timeout bounds that wait too.
T.test("close_timeout: a close waiting for held-back writes becomes an abort " ..
	"with ETIMEDOUT", function()
	local wrote
	local srv, conns, closed = blocked_pair({
		close_timeout = 0.5, sndbuf = 4096, high_water = 16384,
		low_water = 4096,
		on_connect = function(s)
			wrote = s:write(string.rep("h", MiB))
			s:close()
		end })
	local t0 = conns[conns[1]].at
	T.eq(wrote, false, "the write was held back")
	T.ok(drive(srv, function() return #closed == 1 end, 10 * SLOW), "closed")
	local st = conns[conns[1]]
	T.eq(st.errno, E.ETIMEDOUT, "on_close's errno")
	local dt = st.closed_at - t0
	T.ok(dt >= 0.49 and dt < 0.5 + 3 * SLOW, "after about 0.5 s", dt)
end)

T.test("connect_timeout: a connect the listener never answers ends with ETIMEDOUT",
	function()
	-- A listener that accepts one connection (max_connections) with a
	-- backlog of 1: once its queue is full the kernel drops further SYNs,
	-- so those connects never complete by themselves.
	local srv, conns = echo_server{ max_connections = 1, backlog = 1 }
	local results, n = {}, 6
	for i = 1, n do
		assert(srv:connect(srv.address, { connect_timeout = 0.7,
			on_connect = function() results[i] = "connected" end,
			on_close = function(_, err, en)
				if en then results[i] = en end
			end }))
	end
	drive(srv, function()
		local c = 0
		for i = 1, n do if results[i] then c = c + 1 end end
		return c == n
	end, 10 * SLOW)
	local connected, timedout = 0, 0
	for i = 1, n do
		if results[i] == "connected" then connected = connected + 1 end
		if results[i] == E.ETIMEDOUT then timedout = timedout + 1 end
	end
	T.eq(#conns, 1, "accepted (max_connections)")
	T.ok(timedout >= 1, "connects timed out", timedout)
	T.eq(connected + timedout, n, "each connected or timed out")
end)

T.test("max_connections: accepting pauses at the limit and resumes on a close",
	function()
	local srv, conns, closed = echo_server{ max_connections = 2 }
	local clients, up = {}, 0
	for i = 1, 4 do
		clients[i] = assert(srv:connect(srv.address, {
			on_connect = function() up = up + 1 end }))
	end
	T.ok(drive(srv, function() return up == 4 end, 10), "all four connected")
	drive(srv, function() return false end, 0.3)
	T.eq(#conns, 2, "accepted at the limit")
	T.eq(srv.listener:connections(), 2)
	conns[1]:close()
	T.ok(drive(srv, function() return #conns == 3 end, 10), "a third accepted")
	drive(srv, function() return false end, 0.2)
	T.eq(#conns, 3, "not a fourth")
	T.eq(#closed, 1)
	T.eq(srv.listener:connections(), 2)
	T.eq(srv.listener:set_max_connections(0), true)
	T.ok(drive(srv, function() return #conns == 4 end, 10), "no limit: the fourth")
end)

---------------------------------------------------------------------------
-- Inside luv

local have_luv, uv = pcall(require, "luv")

T.test("luv: idle_timeout closes a luv client's idle connection, and a close " ..
	"waiting for held-back writes times out", function()
	if not have_luv then
		T.skip("luv is not installed (Debian: lua-luv): " ..
			tostring(uv):match("^[^\n]*"))
	end
	local ubluv = require "uringbuf.luv"
	-- libuv's clock is the one of its last run (or of its start): timers
	-- started now would count from then
	uv.update_time()
	local closes = {}
	local srv = assert(ubluv.server{ port = 0, idle_timeout = 0.3,
		on_data = function(c, b) c:write(b) end,
		on_close = function(_, err, en) closes[#closes + 1] = { err, en, ub.now() } end })
	T.defer(function() srv:close() end)
	-- 1: an idle luv client
	local t0 = ub.now()
	local tcp = uv.new_tcp()
	local client_end
	tcp:connect("127.0.0.1", srv.port, function(err)
		assert(not err, err)
		tcp:read_start(function(rerr, data)
			if rerr or not data then
				client_end = rerr or "eof"
				tcp:close()
			end
		end)
	end)
	local timer = uv.new_timer()
	timer:start(10000 * SLOW, 0, function() uv.stop() end)
	local check = uv.new_timer()
	check:start(20, 20, function()
		if client_end and #closes >= 1 then uv.stop() end
	end)
	uv.run()
	T.eq(#closes, 1, string.format("server side closed (after %.2f s; client: %s)",
		ub.now() - t0, tostring(client_end)))
	T.eq(closes[1][2], E.ETIMEDOUT, "with ETIMEDOUT")
	T.ok(closes[1][3] - t0 >= 0.29, "not before the timeout", closes[1][3] - t0)
	T.ok(client_end, "the luv client saw the end")
	-- 2: a close held by write() (the peer reads nothing): the
	-- integration's timer fires the server helper's deadline.
	local held
	local s2 = assert(ubluv.server{ port = 0, close_timeout = 0.4,
		high_water = 16384, low_water = 4096, sndbuf = 4096,
		on_connect = function(c)
			held = c:write(string.rep("x", MiB))
			c:close()
		end,
		on_close = function(_, err, en) closes[#closes + 1] = { err, en, ub.now() } end })
	T.defer(function() s2:close() end)
	local t1 = ub.now()
	local tcp2 = uv.new_tcp()
	tcp2:connect("127.0.0.1", s2.port, function(err) assert(not err, err) end)
	tcp2:recv_buffer_size(4096)
	check:stop()
	check:start(20, 20, function()
		if #closes >= 2 then uv.stop() end
	end)
	uv.run()
	T.eq(held, false, "the write was held back")
	T.eq(#closes, 2, "closed")
	T.eq(closes[2][2], E.ETIMEDOUT, "with ETIMEDOUT")
	T.ok(closes[2][3] - t1 >= 0.39, "not before the deadline", closes[2][3] - t1)
	for _, h in ipairs({ timer, check, tcp2 }) do
		if not h:is_closing() then h:close() end
	end
	srv:close()
	s2:close()
	uv.run("nowait")
end)

---------------------------------------------------------------------------
-- Inside cqueues

local have_cq, cqueues = pcall(require, "cqueues")

T.test("cqueues: idle_timeout closes an idle cqueues.socket client, and a close " ..
	"waiting for held-back writes times out", function()
	if not have_cq then
		T.skip("cqueues is not installed (Debian: lua-cqueues): " ..
			tostring(cqueues):match("^[^\n]*"))
	end
	local socket = require "cqueues.socket"
	local ubcq = require "uringbuf.cqueues"
	local cq = cqueues.new()
	local closes, held = {}, nil
	local function on_close(_, err, en) closes[#closes + 1] = { err, en, ub.now() } end
	local s1 = assert(ubcq.server(cq, { port = 0, idle_timeout = 0.3,
		on_data = function(c, b) c:write(b) end, on_close = on_close }))
	local s2 = assert(ubcq.server(cq, { port = 0, close_timeout = 0.4,
		high_water = 16384, low_water = 4096, sndbuf = 4096,
		on_connect = function(c)
			held = c:write(string.rep("x", MiB))
			c:close()
		end, on_close = on_close }))
	T.defer(function() s1:close(); s2:close() end)
	local t0 = ub.now()
	local ended, socks = nil, {}
	cq:wrap(function()
		-- 1: an idle client; the server ends it
		local s = assert(socket.connect("127.0.0.1", s1.port))
		socks[#socks + 1] = s
		assert(s:connect(10))
		-- (pcall: the last coroutine closes the socket if this takes
		-- too long)
		local _, got, err = pcall(s.read, s, "*a")
		ended = { got, err, ub.now() - t0 }
	end)
	cq:wrap(function()
		-- 2: a client that reads nothing (small receive buffer)
		local s = assert(socket.connect{ host = "127.0.0.1", port = s2.port,
			recvbuf = 4096 })
		socks[#socks + 1] = s
		assert(s:connect(10))
	end)
	cq:wrap(function()
		local deadline = ub.now() + 10 * SLOW
		while not (ended and #closes >= 2) and ub.now() < deadline do
			cqueues.sleep(0.02)
		end
		s1:close()
		s2:close()
		for _, s in ipairs(socks) do s:close() end
	end)
	local ok, err = cq:loop(20 * SLOW)
	T.ok(ok, "cq:loop", tostring(err))
	T.eq(#closes, 2, "both server connections closed")
	table.sort(closes, function(a, b) return a[3] < b[3] end)
	for _, c in ipairs(closes) do
		T.eq(c[2], E.ETIMEDOUT, "with ETIMEDOUT")
	end
	T.ok(closes[1][3] - t0 >= 0.29, "not before the timeouts", closes[1][3] - t0)
	T.eq(held, false, "the write was held back")
	T.ok(ended, "the idle client saw the end")
end)
