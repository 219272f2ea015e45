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
-- Backpressure: `ep:send()` never drops a datagram silently.  When the core
-- refuses one (its send queue is at `queue_max` datagrams or `high_water`
-- bytes, or the send pool has no free buffer), the endpoint holds it back
-- in order, in a backlog of at most `backlog` datagrams (default 1024),
-- stops receiving while anything is held back (new datagrams wait in the
-- socket), and sends the backlog once the core has room again; then
-- receiving resumes and `on_drain(ep)` runs.  A send that finds the
-- backlog full returns `nil, message, EAGAIN`: the datagram is still the
-- caller's.  `close()` tries the backlog once more; what the kernel still
-- cannot take is counted in `ep.dropped` (and each buffer returned).
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
local EAGAIN, EPIPE, EMSGSIZE = errno.EAGAIN, errno.EPIPE, errno.EMSGSIZE
local type, pairs, setmetatable, getmetatable, tostring =
	type, pairs, setmetatable, getmetatable, tostring
local valid, set_state = core.valid, core.set_state
local dgram_send, strerror = core.dgram_send, core.strerror

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
	backlog = true, signals = true, sndbuf = true, rcvbuf = true,
	timeout = true }

local DEF_BACKLOG = 1024

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
-- `low_water`, `recv_budget`, `reuseport`, `no_recv`; `backlog`
-- (datagrams held back at most, default 1024); `sndbuf`, `rcvbuf`;
-- `signals = true` to make `run()` return on SIGINT/SIGTERM.
--
-- Callbacks, all optional: `on_datagram(ep, buf, addr, size)` (default:
-- release), `on_error(ep, message, errno)` (a send the kernel refused, an
-- ICMP error such as ECONNREFUSED; the endpoint stays open; also counted in
-- `ep.errors`), `on_drain(ep)` (the backlog was sent), `on_close(ep,
-- message, errno)`.
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
	local bl_max = t.backlog or DEF_BACKLOG
	if math.type(bl_max) ~= "integer" or bl_max < 0 then
		argerror(1, "udp", "field 'backlog': non-negative integer expected")
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
		own_loop = own, h = h, send_pool = dopts.send_pool,
		bl = {}, bl_head = 1, bl_n = 0, bl_max = bl_max,
		errors = 0, dropped = 0, timeout = t.timeout }, Endpoint)
	set_state(d, self)
	self.address_ = d:address()
	if self.address_ then
		self.host, self.port = split_addr(self.address_)
	end
	return self
end

-- ---- receive and backpressure -------------------------------------------

-- Whether the core should receive: not while held back or paused by hand.
local function update_recv(self)
	if self.closing then return end
	local want = self.bl_n == 0 and not self.user_paused
	if want ~= not self.recv_off then
		if want then
			core.ub_dgram_resume_recv(self.dgram)
		else
			core.ub_dgram_pause_recv(self.dgram)
		end
		self.recv_off = not want
	end
end

local function report(self, msg, en)
	self.errors = self.errors + 1
	self.last_error, self.last_errno = msg, en
	if self.h.on_error then self.h.on_error(self, msg, en) end
end

-- Send what is held back, in order.  true once empty.
local function flush(self)
	local bl = self.bl
	while self.bl_n > 0 do
		local i = self.bl_head
		local item = bl[i]
		local n, msg, en
		if is_buf(item[1]) and not valid(item[1]) then
			-- released by its owner after send() took it
			n, msg, en = nil, "buffer released before it was sent",
				errno.EINVAL
		else
			n, msg, en = dgram_send(self.dgram, item[1], item[2])
		end
		if not n and en == EAGAIN then
			core.ub_dgram_want_writable(self.dgram)
			return false
		end
		bl[i] = nil
		self.bl_head = i + 1
		self.bl_n = self.bl_n - 1
		if not n then
			if is_buf(item[1]) and valid(item[1]) then item[1]:release() end
			self.dropped = self.dropped + 1
			report(self, msg, en)
		end
	end
	self.bl_head = 1
	return true
end

-- Release what is held back (close): counted in ep.dropped.
local function drop_backlog(self)
	for i = self.bl_head, self.bl_head + self.bl_n - 1 do
		local item = self.bl[i]
		self.bl[i] = nil
		if is_buf(item[1]) and valid(item[1]) then item[1]:release() end
		self.dropped = self.dropped + 1
	end
	self.bl_head, self.bl_n = 1, 0
end

local events = {}

events.data = function(self, e)
	local buf = e.buf
	e.buf = nil -- the batch must not keep it from __gc
	local f = self.h.on_datagram
	if self.closing or not f then return buf:release() end
	f(self, buf, buf:source(), e.res)
end

events.writable = function(self)
	if self.bl_n > 0 and flush(self) then
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
	drop_backlog(self)
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

local function send_pool_size(self)
	local sz = self.spool_size
	if not sz then
		local p = self.send_pool or self.loop:send_pool()
		sz = p and p:buf_size() or math.maxinteger
		self.spool_size = sz
	end
	return sz
end

--- Send one datagram to addr (nil: the peer).  A string is copied, a
-- buffer (received here or anywhere on the loop, or acquired and filled)
-- is sent itself, zero copy.  Held back in order if the core has no room
-- (see Backpressure above).
-- @tparam string|buf data
-- @tparam[opt] string|buf addr "HOST:PORT", a received buffer (its
--   source), or nil (the peer given as `peer`)
-- @return true (queued, or held back), or nil, message, errno: EAGAIN (the
--   backlog is full too: the datagram is still yours), EMSGSIZE (a string
--   larger than a send pool buffer), EDESTADDRREQ (no address and no
--   peer), EINVAL (an address of another family), EPIPE (closed).
--   Raises on a malformed address or a wrong type.
function Endpoint:send(data, addr)
	local isbuf = is_buf(data)
	if type(data) ~= "string" and not isbuf then
		argerror(1, "send", "string or uringbuf.buf expected, got " ..
			type(data))
	end
	if addr ~= nil and type(addr) ~= "string" and not is_buf(addr) then
		argerror(2, "send", "address string, uringbuf.buf or nil expected, got " ..
			type(addr))
	end
	if self.closing then return nil, strerror(EPIPE), EPIPE end
	if self.bl_n == 0 then
		local n, msg, en = dgram_send(self.dgram, data, addr)
		if n then return true end
		if en ~= EAGAIN then return nil, msg, en end
	else
		-- Checked now what the core would refuse later.
		if isbuf then
			if not valid(data) then
				argerror(1, "send", "buffer is released")
			end
		elseif #data > send_pool_size(self) then
			return nil, strerror(EMSGSIZE), EMSGSIZE
		end
		if type(addr) == "string" and not core.ub_addr_parse(addr) then
			argerror(2, "send", "malformed address '" .. addr ..
				"' (HOST:PORT, [V6]:PORT or unix:PATH)")
		end
	end
	if self.bl_n >= self.bl_max then
		return nil, "send backlog full", EAGAIN
	end
	if is_buf(addr) and addr ~= data then
		-- another buffer's source: it may be released before we send
		local src = addr:source()
		if not src then
			return nil, strerror(errno.EDESTADDRREQ), errno.EDESTADDRREQ
		end
		addr = src
	end
	if self.bl_n == 0 then
		core.ub_dgram_want_writable(self.dgram)
	end
	self.bl[self.bl_head + self.bl_n] = { data, addr }
	self.bl_n = self.bl_n + 1
	update_recv(self)
	return true
end

--- Send a received buffer back to its source, zero copy.
function Endpoint:reply(buf)
	return self:send(buf, buf)
end

--- Datagrams held back (waiting for room in the core's queue).
function Endpoint:backlog()
	return self.bl_n
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

--- Receive again (unless held back sends keep it off).
function Endpoint:resume_recv()
	self.user_paused = false
	update_recv(self)
end

--- Whether the endpoint is open (not closing or closed).
function Endpoint:is_open()
	return not self.closing
end

--- The endpoint handle's counters: `received`, `sent`, `nobufs`,
-- `queued` (bytes), plus `backlog`, `errors`, `dropped`.
function Endpoint:stats()
	local d = self.dgram
	local live = valid(d)
	return { received = live and d:received() or self.final_received or 0,
		sent = live and d:sent() or self.final_sent or 0,
		nobufs = live and d:nobufs() or self.final_nobufs or 0,
		queued = live and d:queued_bytes() or 0,
		backlog = self.bl_n, errors = self.errors, dropped = self.dropped }
end

--- Close: send what is held back if the core takes it (the rest is
-- dropped, counted in `ep.dropped`), close the socket once the queue is
-- handed to the kernel ("closed" and `on_close` follow), and free the
-- loop if the endpoint made it: then close() waits (at most 2 s) for the
-- endpoint's last events first, on an events table of its own, so it may
-- be called from a callback too.  Idempotent.
-- @return true
function Endpoint:close()
	local d = self.dgram
	if not self.closing then
		if self.bl_n > 0 and valid(d) then flush(self) end
		self.closing = true
		drop_backlog(self)
		if valid(d) then
			self.final_received, self.final_sent, self.final_nobufs =
				d:received(), d:sent(), d:nobufs()
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
