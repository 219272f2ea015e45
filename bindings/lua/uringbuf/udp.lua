--- uringbuf.udp: datagram endpoints with callbacks, over the event API's
-- `loop:datagram()`.
--
--     local uringbuf = require "uringbuf"
--     local ep = assert(uringbuf.udp{ host = "127.0.0.1", port = 9000,
--         on_datagram = function(ep, buf, addr)
--             ep:send(buf, addr)     -- echo, zero copy
--         end })
--     ep:run()
--
-- `require "uringbuf"` loads this module and exports `uringbuf.udp`.
--
-- Receiving: each datagram is one buffer of the receive pool, handed to
-- `on_datagram(ep, buf, addr, size)`: the buffer is yours (send it,
-- keep it, or release it), `addr` its source ("HOST:PORT", "[V6]:PORT",
-- "unix:PATH"; nil for an unbound Unix sender), `size` the length it was
-- sent with (more than `#buf` when it was truncated: `buf:truncated()`).
--
-- Backpressure: `ep:send()` never drops a datagram silently.  The endpoint
-- has the core's soft water (`Dgram:set_soft_water`): what finds the send
-- queue at `queue_max` datagrams or the send pool dry waits in the core,
-- in order, counted in its queued bytes.  At `high_water` queued bytes the
-- endpoint stops receiving (new datagrams wait in the socket, so an echo
-- takes in no more than it sends out); at `low_water` it receives again
-- and `on_drain(ep)` runs.  A send that would take the queue past twice
-- `high_water` returns `nil, message, EAGAIN`: the datagram is still the
-- caller's.  `close()` is the core's: what waits is handed to the kernel
-- once, and every buffer returns to its pool.
--
-- Driving it: `ep:run()` / `ep:step()` (its own loop), or the loop of a
-- `uringbuf.server` (`loop = srv.loop`: either's run dispatches both), or
-- `uringbuf.luv` / `uringbuf.cqueues` (`udp`, or `attach(ep)`).
-- @module uringbuf.udp
-- @license MIT

local ub = package.loaded.uringbuf or require "uringbuf"
if package.loaded["uringbuf.udp"] then
	return package.loaded["uringbuf.udp"]
end
local srvmod = require "uringbuf.server"

local core = ub.core
local I = ub._internal
local argerror, join_addr, split_addr = I.argerror, I.join_addr,
	I.split_addr

local errno = core.errno
local EAGAIN, EPIPE = errno.EAGAIN, errno.EPIPE
local type, pairs, setmetatable, getmetatable, tostring =
	type, pairs, setmetatable, getmetatable, tostring
local valid, set_state = core.valid, core.set_state
local dgram_send, strerror = core.dgram_send, core.strerror
local queued_bytes = core.ub_dgram_queued_bytes

local U = {}

local Endpoint = {}
Endpoint.__index = Endpoint
U.Endpoint = Endpoint

local buf_mt = debug.getregistry()["uringbuf.buf"]
local function is_buf(x)
	return getmetatable(x) == buf_mt
end

local handler_keys = { on_datagram = true, on_error = true, on_close = true,
	on_drain = true }
local dgram_keys = { recv_pool = true, send_pool = true, queue_max = true,
	high_water = true, low_water = true, recv_budget = true,
	reuseport = true, no_recv = true }
local own_keys = { host = true, port = true, listen = true, peer = true,
	loop = true, pool_count = true, pool_size = true, entries = true,
	signals = true, sndbuf = true, rcvbuf = true, timeout = true }

-- The address to bind when only a peer is given: any, of its family.
local function bind_for(peer)
	if peer:sub(1, 5) == "unix:" or peer:sub(1, 1) == "/" then
		return "unix:"
	elseif peer:sub(1, 1) == "[" then
		return "[::]:0"
	end
	return "0.0.0.0:0"
end

--- Open a datagram endpoint with callbacks.
--
-- Fields: `host` (default "127.0.0.1") and `port` (default 0), or
-- `listen = "HOST:PORT"` ("[V6]:PORT", "unix:PATH", "unix:@NAME", or
-- "unix:" for an autobound name); `peer = "HOST:PORT"`: a default peer
-- (connect(2): `send` without an address goes there, only its datagrams
-- are received; without host/port/listen, binds any address of its
-- family); `loop` (else a new loop with `pool_count`, `pool_size`,
-- `entries`: datagrams longer than `pool_size` - 128 are truncated, so
-- pass `pool_size = 65536 + 128` to take any UDP datagram whole);
-- endpoint options `recv_pool`, `send_pool`, `queue_max`, `high_water`,
-- `low_water`, `recv_budget`, `reuseport`, `no_recv`; `sndbuf`, `rcvbuf`;
-- `signals = true` to make `run()` return on SIGINT/SIGTERM.
--
-- Callbacks, all optional: `on_datagram(ep, buf, addr, size)` (default:
-- release), `on_error(ep, message, errno)` (a send the kernel refused, an
-- ICMP error such as ECONNREFUSED; the endpoint stays open; also counted in
-- `ep.errors`), `on_drain(ep)` (the queue went down to `low_water` after
-- reaching `high_water`), `on_close(ep,
-- message, errno)`.  `on_datagram` is called straight from the loop's
-- wait (`Loop:wait` with `dispatch`), one call per datagram with no event
-- table; if it raises, the rest of that batch is still delivered, then
-- `run()`/`step()`/`pump()` raise the error (with its traceback).
-- @return endpoint, or nil, message, errno
function U.udp(t)
	if type(t) ~= "table" then
		argerror(1, "udp", "table expected, got " .. type(t))
	end
	local h, dopts = {}, {}
	for k, v in pairs(t) do
		if handler_keys[k] then
			if type(v) ~= "function" then
				argerror(1, "udp", "field '" .. k ..
					"': function expected, got " .. type(v))
			end
			h[k] = v
		elseif dgram_keys[k] then
			dopts[k] = v
		elseif not own_keys[k] then
			argerror(1, "udp", "unknown field '" .. tostring(k) .. "'")
		end
	end
	for _, k in pairs { "listen", "peer", "host" } do
		if t[k] ~= nil and type(t[k]) ~= "string" then
			argerror(1, "udp", "field '" .. k .. "': string expected, got " ..
				type(t[k]))
		end
	end
	if t.port ~= nil and math.type(t.port) ~= "integer" then
		argerror(1, "udp", "field 'port': integer expected, got " ..
			(math.type(t.port) or type(t.port)))
	end
	local addr
	if t.listen or t.host or t.port or not t.peer then
		addr = t.listen or join_addr(t.host, t.port)
	else
		addr = bind_for(t.peer)
	end
	if addr ~= "unix:" and not core.ub_addr_parse(addr) then
		argerror(1, "udp", "malformed address '" .. addr ..
			"' (HOST:PORT, [V6]:PORT or unix:PATH)")
	end
	if t.peer and not core.ub_addr_parse(t.peer) then
		argerror(1, "udp", "field 'peer': malformed address '" .. t.peer ..
			"' (HOST:PORT, [V6]:PORT or unix:PATH)")
	end
	local loop, own = t.loop, false
	if loop == nil then
		local msg, en
		loop, msg, en = ub.loop{ pool_count = t.pool_count,
			pool_size = t.pool_size, entries = t.entries }
		if not loop then return nil, msg, en end
		own = true
	elseif getmetatable(loop) ~= debug.getregistry()["uringbuf.loop"] or
		not valid(loop) then
		argerror(1, "udp", "field 'loop': live uringbuf.loop expected")
	end
	local function fail(msg, en)
		if own then loop:close() end
		return nil, msg, en
	end
	local d, msg, en = loop:datagram(addr, dopts)
	if not d then return fail(msg, en) end
	d:set_soft_water(true)
	if t.peer then
		local ok, cmsg, cen = d:connect(t.peer)
		if not ok then
			d:close()
			return fail(cmsg, cen)
		end
	end
	if t.sndbuf or t.rcvbuf then
		d:set_buffers(t.sndbuf or 0, t.rcvbuf or 0)
	end
	-- A server without a listener runs the loop (run, step, pump) and
	-- dispatches the endpoint's events to it (through its state slot).
	local srv = srvmod.server{ loop = loop }
	srv.rpool = dopts.recv_pool or loop:recv_pool()
	if t.signals then
		core.catch_signals()
		srv.signals = true
	end
	local self = setmetatable({ loop = loop, dgram = d, server = srv,
		own_loop = own, h = h, high = d:high_water(),
		errors = 0, timeout = t.timeout,
		-- loop:wait(..., true) calls it for each datagram, as
		-- events.data below would (no event table, no dispatch)
		_fast = h.on_datagram }, Endpoint)
	set_state(d, self)
	self.address_ = d:address()
	if self.address_ then
		self.host, self.port = split_addr(self.address_)
	end
	return self
end

-- ---- receive and backpressure -------------------------------------------

-- Whether the core should receive: not above the high mark (until the
-- writable event at the low mark) or paused by hand.
local function update_recv(self)
	if self.closing then return end
	local want = not self.full and not self.user_paused
	if want ~= not self.recv_off then
		if want then
			core.ub_dgram_resume_recv(self.dgram)
		else
			core.ub_dgram_pause_recv(self.dgram)
		end
		self.recv_off = not want
	end
end

-- The queue reached the high mark: stop receiving until the writable
-- event at the low one (soft water owes it; asked for anyway, as after a
-- change of the marks), and check send's bound from now on.
local function set_full(self)
	self.full = true
	core.ub_dgram_want_writable(self.dgram)
	update_recv(self)
end

local function report(self, msg, en)
	self.errors = self.errors + 1
	self.last_error, self.last_errno = msg, en
	if self.h.on_error then self.h.on_error(self, msg, en) end
end

local events = {}

events.data = function(self, e)
	local buf = e.buf
	e.buf = nil -- the batch must not keep it from __gc
	local f = self.h.on_datagram
	if self.closing or not f then return buf:release() end
	f(self, buf, buf:source(), e.res)
end

-- Soft water: the core owes one at the low mark once the queue reached
-- the high mark.
events.writable = function(self)
	if self.full then
		self.full = false
		update_recv(self)
		if self.h.on_drain then self.h.on_drain(self) end
	end
end

events.error = function(self, e)
	report(self, strerror(-e.res), -e.res)
end

events.closed = function(self, e)
	self.closed = true
	self.closing = true
	set_state(e.dgram, nil)
	if self.own_loop then self.server:stop() end
	if self.h.on_close then
		if e.res < 0 then
			self.h.on_close(self, strerror(-e.res), -e.res)
		else
			self.h.on_close(self)
		end
	end
end

-- The dispatcher's entry (uringbuf.server routes the endpoint's events
-- here through its state slot).
function Endpoint:_event(e)
	local f = events[e.type]
	if f then f(self, e) end
end

-- ---- methods -------------------------------------------------------------

--- Send one datagram to addr (nil: the peer).  A string is copied, a
-- buffer (received here or anywhere on the loop, or acquired and filled)
-- is sent itself, zero copy.  Waits in the core, in order, if the queue
-- has no slot or the send pool no buffer (see Backpressure above).
-- @tparam string|buf data
-- @tparam[opt] string|buf addr "HOST:PORT", a received buffer (its
--   source), or nil (the peer given as `peer`)
-- @return true, or nil, message, errno: EAGAIN (twice `high_water` would
--   be queued: the datagram is still yours; `on_drain` follows), EMSGSIZE
--   (a string larger than a send pool buffer), EDESTADDRREQ (no address
--   and no peer), EINVAL (an address of another family), EPIPE (closed).
--   Raises on a malformed address or a wrong type.
function Endpoint:send(data, addr)
	if self.closing then return nil, strerror(EPIPE), EPIPE end
	local d = self.dgram
	-- Below the mark (not full) the queue can only have shrunk since
	-- the last send said so: the bound needs checking only when full.
	-- (#data: a string's or a buffer's length; a wrong type raises below)
	if self.full and (type(data) == "string" or is_buf(data)) then
		local q = queued_bytes(d)
		if q >= self.high and q + #data > 2 * self.high then
			return nil, string.format("the send queue is full (%d " ..
				"bytes waiting): wait for on_drain", q), EAGAIN
		end
	end
	local n, q, en = dgram_send(d, data, addr)
	if not n then return nil, q, en end
	if not self.full and q >= self.high then set_full(self) end
	return true
end

--- Send a received buffer back to its source, zero copy.
function Endpoint:reply(buf)
	return self:send(buf, buf)
end

--- Bytes and datagrams queued (in the kernel's hands or waiting for a
-- slot or a send buffer).
-- @return bytes, datagrams
function Endpoint:queued()
	local d = self.dgram
	if not valid(d) then return 0, 0 end
	return queued_bytes(d), d:queued_bufs()
end

--- Set the byte marks (0 < high, low <= high; as the `high_water` and
-- `low_water` fields).
-- @return true, or nil, message, errno
function Endpoint:set_water(high, low)
	local ok, msg, en = self.dgram:set_water(high, low)
	if ok then
		self.high = high
		if not self.full and queued_bytes(self.dgram) >= high then
			set_full(self)
		end
	end
	return ok, msg, en
end

--- The bound address ("HOST:PORT", the real port after port 0).
function Endpoint:address()
	return self.address_
end

--- Stop receiving until `resume_recv()`.
function Endpoint:pause_recv()
	self.user_paused = true
	update_recv(self)
end

--- Receive again (unless the send queue is at its high mark: then at its
-- low mark).
function Endpoint:resume_recv()
	self.user_paused = false
	update_recv(self)
end

--- Whether the endpoint is open (not closing or closed).
function Endpoint:is_open()
	return not self.closing
end

--- The endpoint handle's counters: `received`, `sent`, `nobufs`,
-- `dropped`, `queued` (bytes), plus `errors`.
function Endpoint:stats()
	local d = self.dgram
	local live = valid(d)
	return { received = live and d:received() or self.final_received or 0,
		sent = live and d:sent() or self.final_sent or 0,
		nobufs = live and d:nobufs() or self.final_nobufs or 0,
		dropped = live and d:dropped() or self.final_dropped or 0,
		queued = live and d:queued_bytes() or 0, errors = self.errors }
end

--- Close: what waits is handed to the kernel once (the core's close:
-- what it refuses is dropped, every buffer returns to its pool), the
-- socket closes ("closed" and `on_close` follow), and free the
-- loop if the endpoint made it: then close() waits (at most 2 s) for the
-- endpoint's last events first, on an events table of its own, so it may
-- be called from a callback too.  Idempotent.
-- @return true
function Endpoint:close()
	local d = self.dgram
	if not self.closing then
		self.closing = true
		if valid(d) then
			self.final_received, self.final_sent, self.final_nobufs,
				self.final_dropped =
				d:received(), d:sent(), d:nobufs(), d:dropped()
			core.ub_dgram_close(d)
		end
	end
	local loop = self.loop
	if self.own_loop and valid(loop) then
		local evs = {}
		local deadline = core.now() + 2
		while not self.closed and core.now() < deadline do
			local n = loop:wait(1, 50, evs)
			if not n then break end
			for i = 1, n do
				local e = evs[i]
				if e.dgram == d then
					self:_event(e)
				elseif e.buf then
					e.buf:release()
				end
				e.buf = nil
			end
		end
		self.server:stop()
		loop:close()
	end
	return true
end
Endpoint.__close = Endpoint.close

--- Run the loop (dispatching every event on it) until `stop()`, the
-- endpoint closes, a caught signal (`signals = true`) or timeout seconds.
-- @return as `Server:run`
function Endpoint:run(timeout)
	if self.closed then return true, "closed" end
	return self.server:run(timeout or self.timeout)
end

--- Make `run()` return after the current batch.
function Endpoint:stop()
	self.server:stop()
end

--- Wait once (at most timeout_ms, default 500) and dispatch the batch.
function Endpoint:step(timeout_ms)
	return self.server:step(timeout_ms)
end

--- Process what is ready without blocking (for another event loop; see
-- `Server:pump`).
function Endpoint:pump(max_rounds, woken)
	return self.server:pump(max_rounds, woken)
end

function Endpoint:__tostring()
	return "uringbuf.udp endpoint " .. tostring(self.address_) ..
		(self.closing and " (closed)" or "")
end

return U
