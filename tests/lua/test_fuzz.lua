-- test_fuzz.lua - random call sequences over the whole public API (the
-- module, loops, pools, buffers, connections, listeners, uringbuf.core and
-- the server helper): thousands of calls, each picked at random with
-- arguments picked at random from live objects, dead ones (closed loops
-- and connections, freed pools, released and forwarded buffers, buffers of
-- another pool or loop) and garbage (nil, out-of-range, negative and huge
-- integers, floats, strings, tables, functions, coroutines, other
-- userdata).  The state moves while it runs: connections get data, EOF and
-- aborts, buffers are received, forwarded and dropped, pools freed and
-- loops closed.
--
-- Every call must return (values, or nil, message, errno) or raise a Lua
-- error whose value is a string; an error raised from inside the module's
-- own Lua code by a runtime fault ("attempt to index a nil value", ...) is a
-- bug, as is a crash.  Afterwards the interpreter must be healthy: every
-- handle collected, and a fresh loop moving exact bytes both ways.
--
-- The seed is printed; UB_FUZZ_SEED=N repeats a run, UB_FUZZ_CALLS
-- (default 20000) and UB_FUZZ_SECONDS (default 40) bound it.  scripts/test
-- runs it under the ASan build too (suite asan-lua).
local T = require "tap"
local ub = require "uringbuf"
local core = ub.core

local SEED = tonumber(os.getenv("UB_FUZZ_SEED") or "") or
	(os.time() ~ math.floor((ub.now() % 1) * 1e9))
local CALLS = tonumber(os.getenv("UB_FUZZ_CALLS") or "") or 20000
local SECONDS = tonumber(os.getenv("UB_FUZZ_SECONDS") or "") or 40

-- Method names per kind, from docs/lua.md.
local METHODS = {
	loop = { "wait", "close", "listen", "connect", "adopt", "adopt_listener",
		"datagram", "adopt_datagram",
		"pool", "recv_pool", "send_pool", "features", "best_mode",
		"mode_check", "pending", "fd", "valid" },
	pool = { "acquire", "free", "count", "buf_size", "bytes", "is_recv",
		"count_state", "counts", "loop", "valid" },
	buf = { "len", "capacity", "byte", "sub", "tostring", "find", "write",
		"append", "set_len", "writable", "release", "close", "pool",
		"source", "truncated",
		"index", "state", "valid" },
	conn = { "send", "send_buf", "write", "read", "pause", "resume", "pipe",
		"shutdown", "close", "abort", "mode", "fd", "loop", "queued_bytes",
		"queued_bufs", "high_water", "low_water", "set_water", "is_closing",
		"bytes_sent", "bytes_received", "local_address", "peer_address",
		"set_buffers", "valid" },
	listener = { "close", "fd", "address", "set_buffers", "valid" },
	dgram = { "connect", "send", "reply", "close", "pause_recv",
		"resume_recv", "want_writable", "set_water", "fd", "loop",
		"address", "peer_address", "queued_bytes", "queued_bufs",
		"received", "sent", "nobufs", "dropped", "recv_budget", "set_recv_budget",
		"recv_held", "recv_throttled", "set_buffers", "valid" },
}
-- Methods that end an object: called less often, so that objects live long
-- enough to be used.
local ENDS = { close = true, abort = true, free = true, release = true,
	shutdown = true }
-- Never called with random arguments: adopt takes over whatever descriptor
-- an integer names (this process's stdout included), so it only gets
-- descriptors that cannot exist or arguments that are not integers.
local SAFE_FD = { -1, 1 << 40, 99999, 2 ^ 53, "3", nil, {} }

local function shortrepr(v)
	local s
	if type(v) == "string" then
		s = string.format("%q", #v > 40 and v:sub(1, 40) .. "..." or v)
	else
		s = tostring(v)
	end
	return s
end

local function new_world(rng)
	local W = { loops = {}, pools = {}, bufs = {}, conns = {}, listeners = {},
		dgrams = {},
		calls = 0, raised = 0, failed = 0, ops = {}, rng = rng }

	function W.pick(list)
		if #list == 0 then return nil end
		return list[rng(#list)]
	end

	local co = coroutine.create(function() end)
	local GARBAGE = { false, true, 0, 1, -1, 2, 3, 7, 64, 4096, 65536,
		(1 << 31) - 1, 1 << 31, -(1 << 31) - 1, 1 << 32, math.maxinteger,
		math.mininteger, 1 << 40, -(1 << 40), 0.0, 1.5, -0.5, 0 / 0, 1 / 0,
		-1 / 0, 2 ^ 63, "", "x", "127.0.0.1:0", "[::1]:0", "127.0.0.1:99999",
		"unix:", "/", "localhost:0", "bundle", "serial", "ring", "auto",
		"nope", "send", "recv", "free", "kernel", "app", "queued", "\0",
		string.rep("a", 5000), {}, { 1, 2 }, { mode = "x" },
		{ high_water = -1 }, { recv_pool = 3 }, { bogus = 1 },
		{ pool_count = 1.5 }, print, co, io.stdout, math, string }
	local NGARBAGE = #GARBAGE + 1 -- one more slot: nil

	function W.garbage()
		local i = rng(NGARBAGE)
		return GARBAGE[i] -- nil for the last
	end

	local KINDS = { "loops", "pools", "bufs", "conns", "listeners", "dgrams" }
	function W.anything()
		if rng() < 0.5 then
			local l = W[KINDS[rng(#KINDS)]]
			if #l > 0 then return l[rng(#l)] end
		end
		return W.garbage()
	end

	function W.small_int()
		if rng() < 0.7 then
			local t = { 0, 1, 2, 3, 4, 8, 16, 64, 100, 4096, -1 }
			return t[rng(#t)]
		end
		return W.garbage()
	end

	function W.data()
		local c = rng()
		if c < 0.6 then
			local n = ({ 0, 1, 7, 64, 1000, 5000 })[rng(6)]
			local t = {}
			for i = 1, n // 8 + 1 do t[i] = string.pack("<i8", rng(0, 1 << 40)) end
			return table.concat(t):sub(1, n)
		elseif c < 0.8 then
			return W.pick(W.bufs) or W.garbage()
		end
		return W.anything()
	end

	-- One call: it may return anything, or raise a string error.  A
	-- runtime fault inside uringbuf's own Lua code is a bug.
	function W.call(name, f, ...)
		W.calls = W.calls + 1
		W.ops[name] = (W.ops[name] or 0) + 1
		local args = table.pack(...)
		local r = table.pack(pcall(f, ...))
		if r[1] then return table.unpack(r, 2, r.n) end
		W.raised = W.raised + 1
		local e = r[2]
		local bad
		if type(e) ~= "string" then
			bad = "error value of type " .. type(e)
		elseif e:find("uringbuf[%w/]*%.lua:%d+: attempt to") or
			e:find("stack overflow") or e:find("C stack") then
			bad = "runtime fault in the module"
		end
		if bad then
			local a = {}
			for i = 1, args.n do a[i] = shortrepr(args[i]) end
			error(string.format("call %d, %s(%s): %s: %s (seed %d)",
				W.calls, name, table.concat(a, ", "), bad, tostring(e), SEED), 0)
		end
		return nil
	end

	function W.conn_opts()
		local o = {}
		if rng() < 0.2 then o.mode = ({ "bundle", "ring", "serial", "auto" })[rng(4)] end
		if rng() < 0.1 then o.recv_pool = W.pick(W.pools) end
		if rng() < 0.1 then o.send_pool = W.pick(W.pools) end
		if rng() < 0.1 then o.high_water = ({ 4096, 1 << 20 })[rng(2)] end
		if rng() < 0.1 then o.ring_entries = ({ 1, 8, 64, 3 })[rng(4)] end
		if rng() < 0.1 then o.no_recv = true end
		if rng() < 0.1 then o.sent_events = true end
		if rng() < 0.1 then
			local keys = { "mode", "recv_pool", "send_pool", "high_water",
				"low_water", "ring_entries", "flags", "no_recv", "bogus" }
			o[keys[rng(#keys)]] = W.anything()
		end
		if rng() < 0.05 then return W.garbage() end
		return o
	end

	-- Keep x if it is a handle (uringbuf.valid raises for anything else).
	local function add(list, x)
		if x ~= nil and pcall(ub.valid, x) then
			list[#list + 1] = x
		end
	end

	-- ---- operations ------------------------------------------------------
	local O = {}

	function O.new_loop()
		local live = 0
		for _, l in ipairs(W.loops) do if l:valid() then live = live + 1 end end
		if live >= 4 then return end
		local opts
		if rng() < 0.5 then
			opts = { pool_count = ({ 1, 2, 4, 16 })[rng(4)],
				pool_size = ({ 1, 16, 64, 4096 })[rng(4)] }
		end
		if rng() < 0.2 then opts = W.garbage() end
		if rng() < 0.1 then opts = { disable = { "send_bundle" } } end
		local l = W.call("loop", ub.loop, opts)
		if l then W.loops[#W.loops + 1] = l end
	end

	function O.pair()
		local loop = W.pick(W.loops)
		if not loop or not loop:valid() or #W.conns > 40 then return end
		local l = W.call("listen", loop.listen, loop, "127.0.0.1:0", W.conn_opts())
		if not l then return end
		W.listeners[#W.listeners + 1] = l
		local c = W.call("connect", loop.connect, loop, l:address(), W.conn_opts())
		if c then W.conns[#W.conns + 1] = c end
	end

	function O.method()
		local kinds = { "loop", "pool", "buf", "conn", "listener", "dgram" }
		local kind = kinds[rng(#kinds)]
		local obj = W.pick(W[kind == "buf" and "bufs" or kind .. "s"])
		if not obj then return end
		local names = METHODS[kind]
		local name = names[rng(#names)]
		if ENDS[name] and rng() < 0.7 then return end
		if name == "adopt" or name == "adopt_listener" or
			name == "adopt_datagram" then
			W.call("loop:" .. name, function(...) return obj[name](obj, ...) end,
				SAFE_FD[rng(#SAFE_FD)], W.conn_opts())
			return
		end
		if name == "wait" then
			local min, timeout = rng(0, 1), ({ 0, 1, 5 })[rng(3)]
			if rng() < 0.2 then min, timeout = 0, W.garbage() end
			if rng() < 0.1 then min = W.garbage(); timeout = 0 end
			local n, ev = W.call("loop:wait", obj.wait, obj, min, timeout)
			if math.type(n) == "integer" and type(ev) == "table" then
				for i = 1, n do
					local e = ev[i]
					W.call("event fields", function()
						return e.type, e.res, e.conn, e.listener, e.buf,
							e.dgram
					end)
					if e.buf then
						add(W.bufs, e.buf)
						W.call("buf:source", e.buf.source, e.buf)
					end
					if e.dgram and #W.dgrams < 40 then add(W.dgrams, e.dgram) end
					if e.conn and #W.conns < 60 then add(W.conns, e.conn) end
				end
			end
			return
		end
		if name == "read" then return end -- handler coroutines only
		local nargs = rng(0, 3)
		local args = {}
		for i = 1, nargs do
			if kind == "dgram" and (name == "send" or name == "connect") then
				args[i] = ({ W.data(), W.dgram_addr() })[i] or W.anything()
			elseif kind == "loop" and name == "datagram" then
				args[i] = i == 1 and W.dgram_addr() or W.anything()
			elseif name == "send" or name == "write" or name == "append" then
				args[i] = W.data()
			elseif name == "pipe" or name == "send_buf" then
				args[i] = rng() < 0.6 and (W.pick(W.conns) or W.pick(W.bufs)) or W.anything()
			elseif name == "listen" or name == "connect" then
				args[i] = i == 1 and ({ "127.0.0.1:0", "127.0.0.1:1", W.garbage() })[rng(3)]
					or W.conn_opts()
			else
				args[i] = rng() < 0.5 and W.small_int() or W.anything()
			end
		end
		-- method lookup itself is part of the API (__index of a userdata)
		local r = table.pack(W.call(kind .. ":" .. name, function(...)
			return obj[name](obj, ...)
		end, table.unpack(args, 1, nargs)))
		local x = r[1]
		if kind == "pool" and name == "acquire" then add(W.bufs, x)
		elseif kind == "loop" and (name == "pool" or name == "recv_pool" or name == "send_pool") then add(W.pools, x)
		elseif kind == "loop" and name == "connect" and #W.conns < 60 then add(W.conns, x)
		elseif kind == "loop" and name == "listen" then add(W.listeners, x)
		elseif kind == "loop" and name == "datagram" and #W.dgrams < 40 then add(W.dgrams, x)
		end
	end

	-- A datagram destination: mostly live endpoints' addresses, else junk.
	function W.dgram_addr()
		local c = rng()
		if c < 0.5 then
			local d = W.pick(W.dgrams)
			if d and d:valid() then return d:address() end
		elseif c < 0.7 then
			return W.pick(W.bufs) or W.garbage()
		end
		return ({ "127.0.0.1:0", "127.0.0.1:9", "[::1]:9", "unix:",
			"unix:@ubfuzz", W.garbage() })[rng(6)]
	end

	function O.dgram()
		local loop = W.pick(W.loops)
		if not loop or not loop:valid() or #W.dgrams > 30 then return end
		local opts
		if rng() < 0.3 then
			opts = { queue_max = W.small_int(), high_water = W.small_int(),
				recv_pool = W.pick(W.pools), no_recv = rng() < 0.2 }
			if rng() < 0.2 then opts = W.garbage() end
		end
		local d = W.call("loop:datagram", loop.datagram, loop,
			({ "127.0.0.1:0", "[::1]:0", "unix:", W.garbage() })[rng(4)], opts)
		add(W.dgrams, d)
		local peer = W.pick(W.dgrams)
		if d and peer and peer:valid() then
			W.call("dgram:send", d.send, d, W.data(), peer:address())
		end
	end

	function O.acquire()
		local p = W.pick(W.pools)
		if not p then return end
		local b = W.call("pool:acquire", p.acquire, p)
		if b then
			add(W.bufs, b)
			W.call("buf:write", b.write, b, 1, W.data())
		end
	end

	function O.pool()
		local loop = W.pick(W.loops)
		if not loop then return end
		local kind = ({ "send", "recv", nil, W.garbage() })[rng(4)]
		add(W.pools, W.call("loop:pool", loop.pool, loop, W.small_int(),
			W.small_int(), kind))
	end

	function O.send()
		local c = W.pick(W.conns)
		if not c then return end
		local name = ({ "send", "send", "write", "send_buf" })[rng(4)]
		local what = rng() < 0.4 and (W.pick(W.bufs) or W.data()) or W.data()
		if name == "send" and rng() < 0.2 then
			W.call("conn:send", c.send, c, what, W.small_int(), W.small_int())
		else
			W.call("conn:" .. name, function(...) return c[name](c, ...) end, what)
		end
	end

	function O.flat()
		local names = {}
		for k, v in pairs(core) do
			if type(v) == "function" and k:match("^ub_") and
				not k:match("adopt") and k ~= "ub_sock_name" then
				names[#names + 1] = k
			end
		end
		table.sort(names)
		local name = names[rng(#names)]
		local args = {}
		local n = rng(0, 4)
		for i = 1, n do args[i] = W.anything() end
		if n > 0 and rng() < 0.6 then
			args[1] = W.pick(W[({ "loops", "pools", "bufs", "conns",
				"dgrams" })[rng(5)]]) or args[1]
		end
		W.call("core." .. name, core[name], table.unpack(args, 1, n))
	end

	function O.module()
		local fs = { "parse_address", "valid", "strerror", "pipe", "features" }
		local name = fs[rng(#fs)]
		if name == "features" and rng() > 0.05 then return end
		W.call("uringbuf." .. name, ub[name], W.anything(), W.anything())
	end

	function O.drop()
		for _, k in ipairs({ "bufs", "conns", "pools", "listeners", "dgrams" }) do
			local l = W[k]
			if #l > 0 and rng() < 0.3 then table.remove(l, rng(#l)) end
		end
		if rng() < 0.3 then W.call("collectgarbage", collectgarbage) end
	end

	function O.close_loop()
		if rng() < 0.3 then
			local l = W.pick(W.loops)
			if l then W.call("loop:close", l.close, l) end
		end
	end

	function O.server()
		if rng() > 0.05 then return end
		local got = {}
		local srv = W.call("uringbuf.server", ub.server, {
			host = "127.0.0.1", port = 0,
			mode = ({ "bundle", "ring", "serial", "auto" })[rng(4)],
			on_data = function(conn, buf)
				if rng() < 0.5 then conn:write(buf) else buf:release() end
			end,
			on_close = function(conn) got[#got + 1] = conn end,
		})
		if not srv then return end
		local c = W.call("srv:connect", srv.connect, srv, srv.address, {
			on_data = function(conn, buf) buf:release() end,
		})
		for _ = 1, 30 do
			W.call("srv:step", srv.step, srv, 0)
			if c and c.valid then
				local m = ({ "write", "pause", "resume", "shutdown", "close",
					"abort", "set_water", "queued_bytes" })[rng(8)]
				if not ENDS[m] or rng() < 0.2 then
					W.call("conn:" .. m, function(...) return c[m](c, ...) end,
						m == "write" and W.data() or W.small_int(), W.small_int())
				end
			end
		end
		W.call("srv:stop", srv.stop, srv)
		W.call("srv:close", srv.close, srv)
	end

	-- uringbuf.udp on a fuzzed loop: random fields, sends, steps, close.
	function O.udp()
		if rng() > 0.2 then return end
		local loop = W.pick(W.loops)
		if not loop or not loop:valid() then return end
		local t = { loop = loop, on_datagram = function(ep, buf, addr)
			W.call("udp:send", ep.send, ep, buf, addr)
		end }
		local keys = { "low_water", "queue_max", "high_water", "peer", "listen",
			"port", "recv_pool", "bogus" }
		for _ = 1, rng(0, 2) do t[keys[rng(#keys)]] = W.anything() end
		local ep = W.call("uringbuf.udp", ub.udp, t)
		if type(ep) ~= "table" then return end
		for _ = 1, 10 do
			W.call("udp:send", ep.send, ep, W.data(), W.dgram_addr())
			W.call("udp:step", ep.step, ep, 0)
		end
		W.call("udp:close", ep.close, ep)
	end

	W.O = O
	W.OPS = { -- { op, weight }
		{ "new_loop", 1 }, { "pair", 3 }, { "method", 30 }, { "acquire", 5 },
		{ "pool", 2 }, { "send", 8 }, { "flat", 6 }, { "module", 1 },
		{ "drop", 3 }, { "close_loop", 1 }, { "server", 2 }, { "dgram", 3 },
		{ "udp", 1 },
	}
	W.total = 0
	for _, o in ipairs(W.OPS) do W.total = W.total + o[2] end

	function W.step()
		local x = rng(W.total)
		for _, o in ipairs(W.OPS) do
			x = x - o[2]
			if x <= 0 then return O[o[1]]() end
		end
	end

	function W.teardown()
		for _, l in ipairs(W.loops) do l:close() end
		for _, k in ipairs({ "loops", "pools", "bufs", "conns", "listeners",
			"dgrams" }) do
			W[k] = {}
		end
		collectgarbage()
		collectgarbage()
	end

	return W
end

-- A seeded generator: rng() in [0, 1), rng(n) in 1..n, rng(a, b) in a..b.
local function make_rng(seed)
	math.randomseed(seed)
	return math.random
end

local function run(calls, seconds, seed)
	local W = new_world(make_rng(seed))
	W.O.new_loop()
	W.O.new_loop()
	local t0 = ub.now()
	while W.calls < calls and ub.now() - t0 < seconds do
		W.step()
	end
	local elapsed = ub.now() - t0
	local n = W.calls
	W.teardown()
	return n, elapsed, W
end

-- Exact bytes both ways over a fresh loop.
local function echo_check()
	local loop <close> = assert(ub.loop())
	local l = assert(loop:listen("127.0.0.1:0"))
	local c = assert(loop:connect(l:address()))
	local s
	local parts = {}
	for i = 1, 4000 do parts[i] = string.pack("<I4", i * 2654435761 & 0xffffffff) end
	local data = table.concat(parts) .. table.concat(parts, "", 1, 1000)
	local got = { [c] = {}, }
	local off = 1
	local deadline = ub.now() + 20
	local have_s, have_c = 0, 0
	while (have_s < #data or have_c < #data) and ub.now() < deadline do
		if off <= #data then
			local n = c:send(data, off, math.min(#data, off + 8191))
			if n then off = off + n end
		end
		local n, ev = assert(loop:wait(0, 10))
		for i = 1, n do
			local e = ev[i]
			if e.type == "accept" then
				s = e.conn
				got[s] = {}
			elseif e.type == "data" then
				local t = got[e.conn]
				t[#t + 1] = tostring(e.buf)
				if e.conn == s then
					assert(s:send(e.buf)) -- echo, zero copy
					have_s = have_s + e.res
				else
					e.buf:release()
					have_c = have_c + e.res
				end
			end
		end
	end
	T.eq(s ~= nil, true, "accepted")
	T.eq(table.concat(got[s]), data, "server got")
	T.eq(table.concat(got[c]), data, "echo came back")
end

T.test("random call sequences (seed printed)", function()
	print(string.format("# fuzz seed %d (UB_FUZZ_SEED=%d repeats it); up to %d calls or %g s",
		SEED, SEED, CALLS, SECONDS))
	local n, elapsed, W = run(CALLS, SECONDS, SEED)
	local ran = 0
	for _ in pairs(W.ops) do ran = ran + 1 end
	print(string.format("# fuzz: %d calls in %.1f s, %d raised, %d distinct calls",
		n, elapsed, W.raised, ran))
	T.ok(n >= math.min(CALLS, 1000), "too few calls", n)
	T.ok(ran >= 40, "too few distinct calls", ran)
end)

T.test("healthy afterwards: a fresh loop moves exact bytes", function()
	run(CALLS // 4, SECONDS / 4, SEED + 1)
	collectgarbage()
	echo_check()
	-- and the collector is still fine with everything left behind
	collectgarbage()
	T.eq(type(collectgarbage("count")), "number")
end)
