--- uringbuf: provided-buffer send queues and multishot receive over
-- io_uring, for Lua 5.4.
--
-- A small layer over the SWIG module `uringbuf_core` (the C core with
-- checked handles, see bindings/lua/uringbuf_lua.i).  Two levels:
--
-- * the event API, here: `uringbuf.loop()`, pools, buffers, listeners,
--   connections and `loop:wait()`, which returns a batch of events per call;
-- * a server helper, `uringbuf.server{...}` / `uringbuf.serve{...}`, in
--   the module `uringbuf.server` (loaded with this one; its functions are
--   also this module's), that dispatches those events to callbacks
--   (`on_data(conn, buf)`) or to one coroutine per connection
--   (`conn:read()`, `conn:write()`), with backpressure, and runs it in
--   several processes (`workers = N`).
--
-- Errors follow Lua's habits: misuse (wrong types, closed handles, a
-- released buffer) raises; I/O failures return `nil, message, errno`.
--
-- Buffers are userdata over the pool's own memory: `#buf`, `buf:byte()`,
-- `buf:sub()`, `tostring(buf)` copy only what they return; forwarding a
-- buffer (`conn:write(buf)`) never makes a Lua string of it.
-- @module uringbuf
-- @license MIT

local core = require "uringbuf_core"

local M = {}

M._VERSION = string.format("%d.%d.%d", core.UB_VERSION_MAJOR,
	core.UB_VERSION_MINOR, core.UB_VERSION_PATCH)
--- The SWIG module underneath (C names: `core.ub_conn_close(conn)`, ...).
M.core = core
--- errno values the API returns as third result (`EAGAIN`, `EPIPE`, ...).
M.errno = core.errno

local errno = core.errno
local type, pairs, error = type, pairs, error
local tostring = tostring

local Loop = core._methods.loop
local Pool = core._methods.pool
local Buf = core._methods.buf
local Conn = core._methods.conn
local Listener = core._methods.listener
local Dgram = core._methods.dgram

local valid = core.valid

--- The message for an errno value (C's strerror).
-- @function strerror
M.strerror = core.strerror

--- Whether a handle (loop, pool, buffer, conn, listener, datagram
-- endpoint) can still be used.
-- Never raises for a handle; raises for anything else.
-- @function valid
M.valid = valid

--- Monotonic clock, in seconds (a float).
-- @function now
M.now = core.now

--- This process's id (each worker's own under `workers = N`).
-- @function getpid
M.getpid = core.getpid

--- Install SIGINT/SIGTERM handlers that set a flag and make a blocked wait
-- return `nil, "Interrupted system call", EINTR`; SIGPIPE is ignored.
-- @function catch_signals
M.catch_signals = core.catch_signals

--- The number of the last caught signal, or false.
-- @function signaled
-- @tparam[opt] boolean clear reset the flag
M.signaled = core.signaled

local function argerror(n, fname, msg, level)
	error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg),
		(level or 1) + 1)
end

local function checkint(v, n, fname, min, max)
	if math.type(v) ~= "integer" then
		if math.type(v) == "float" then
			argerror(n, fname, "number has no integer representation", 3)
		end
		argerror(n, fname, "number expected, got " .. type(v), 3)
	end
	if v < min or v > max then
		argerror(n, fname, string.format("value out of range (%d..%d)",
			min, max), 3)
	end
	return v
end

local mode_names = { [core.UB_MODE_AUTO] = "auto",
	[core.UB_MODE_BUNDLE] = "bundle", [core.UB_MODE_RING] = "ring",
	[core.UB_MODE_SERIAL] = "serial" }
local state_names = { [core.UB_BUF_FREE] = "free",
	[core.UB_BUF_KERNEL] = "kernel", [core.UB_BUF_APP] = "app",
	[core.UB_BUF_QUEUED] = "queued" }
local state_ids = {}
for k, v in pairs(state_names) do state_ids[v] = k end

--- Send modes: `{"bundle", "ring", "serial"}` (plus "auto").
M.modes = { "bundle", "ring", "serial" }

-- mode name or number -> number; raises on an unknown one.
local function mode_id(m, n, fname)
	if m == nil then return core.UB_MODE_AUTO end
	if math.type(m) == "integer" and mode_names[m] then return m end
	if type(m) == "string" then
		local id = core.ub_mode_from_name(m)
		if id then return id end
	end
	argerror(n, fname, "unknown mode '" .. tostring(m) ..
		"' (bundle, ring, serial or auto)", 2)
end

--- Check an address: "HOST:PORT", "[V6]:PORT", "unix:PATH" or "/PATH"
-- (numeric, no name resolution).
-- @return the address in canonical form, or nil, message, errno
-- @function parse_address
M.parse_address = core.ub_addr_parse

-- "HOST:PORT" from host and port ("[v6]:port" for IPv6).
local function join_addr(host, port)
	host = host or "127.0.0.1"
	if host:find(":", 1, true) and host:sub(1, 1) ~= "[" then
		host = "[" .. host .. "]"
	end
	return host .. ":" .. tostring(port or 0)
end

-- "HOST:PORT" -> host, port
local function split_addr(a)
	local host, port = a:match("^%[(.*)%]:(%d+)$")
	if not host then host, port = a:match("^(.*):(%d+)$") end
	return host, tonumber(port)
end

---------------------------------------------------------------------------
-- Loops
-- @section loop

--- Create a loop (one io_uring; probes the kernel once).
-- @tparam[opt] table opts `entries`, `pool_count`, `pool_size` (default
--   receive/send pools), `pool_incremental` (boolean: the default receive
--   pool is incremental where the kernel has it, see `Loop:pool`),
--   `disable` (feature names or bits to treat as missing)
-- @return loop, or nil, message, errno
-- @function loop
M.loop = core.ub_loop_new

--- Wait for events and return them as one batch.
-- The events table (and the tables in it) is reused by the next wait: take
-- what you need out of it before waiting again.  Each event has `type`
-- ("accept", "connect", "data", "sent", "writable", "eof", "error",
-- "closed"), `res`, and `conn`, `listener`, `buf` where they apply.  A
-- "data" event's buffer is the application's: forward it or release it.
-- With `dispatch` true (what `Server:step` and `Server:pump` pass), a
-- "data" event of a `uringbuf.udp` endpoint with `on_datagram` is handed
-- to it right there (no event table; `events.fast` counts them); if one
-- raises, the rest of the batch fills the table as usual and the error is
-- in `events.err`, for the caller to raise once those are dispatched.
-- @function Loop:wait
-- @tparam[opt=1] integer min events to wait for (0: do not block)
-- @tparam[opt=-1] integer timeout_ms (-1: none)
-- @tparam[opt] table events table to fill (default: one per loop)
-- @tparam[opt] boolean dispatch hand datagrams to their endpoints here
-- @return n (events in the table), events or nil, message, errno (EINTR
--   after a caught signal)
Loop.wait = core.loop_wait

-- Shared with uringbuf.server (not API): helpers both layers use, and a
-- count of Loop:close calls, by which the server helper notices that a
-- callback closed the loop under the batch it is dispatching.
local internal = { loop_closes = 0 }
M._internal = internal

--- Free the loop: abort every connection and listener, free every pool.
-- Every handle of the loop refuses use afterwards, and what the server
-- helper kept with them (`core.state`) is dropped.  Idempotent; also the
-- loop's `__gc` and `__close`.
-- @function Loop:close
local loop_close = core.loop_close
function Loop:close()
	internal.loop_closes = internal.loop_closes + 1
	return loop_close(self)
end
Loop.pending = core.ub_loop_pending
--- The ring's file descriptor.  Not a readiness signal on a
-- `SINGLE_ISSUER|DEFER_TASKRUN` ring (the default where the kernel has it):
-- a poll sleeping on it is not woken for completions.  Use `eventfd()`.
-- @function Loop:fd
Loop.fd = core.ub_loop_fd
--- An eventfd that polls readable when the loop has completions to
-- process, for driving the loop from another event loop (what
-- `uringbuf.luv` and `uringbuf.cqueues` do): poll it for reading, and call
-- `loop:wait(0, 0)` when it is readable and after queueing work.  `wait`
-- clears it (and sets it again if it leaves work behind), so a wake-up may
-- find nothing.  The same fd on every call; the loop closes it.
-- @function Loop:eventfd
-- @return fd, or nil, message, errno
Loop.eventfd = core.ub_loop_eventfd

--- The fd another event loop should poll (readable) to drive this loop:
-- `eventfd()` where the core has it; else the ring fd, which is reliable
-- only on a ring without `DEFER_TASKRUN`.
-- @return fd, or nil, message, errno
function Loop:poll_fd()
	if core.ub_loop_eventfd then return core.ub_loop_eventfd(self) end
	if self:features().single_issuer == true then
		return nil, "this core has no ub_loop_eventfd, and the ring's own " ..
			"fd does not wake pollers on a DEFER_TASKRUN ring",
			errno.EOPNOTSUPP
	end
	return core.ub_loop_fd(self)
end
Loop.valid = valid

--- Features of this loop: name -> true, or the reason it is unavailable.
function Loop:features()
	local t = {}
	local bit = 1
	while bit <= core.UB_FEAT_ALL do
		local name = core.ub_feature_name(bit)
		t[name] = core.ub_loop_feature_reason(self, bit) or true
		bit = bit << 1
	end
	return t
end

--- The mode "auto" picks here ("bundle", "ring" or "serial").
function Loop:best_mode()
	return mode_names[core.ub_loop_best_mode(self)]
end

--- Whether a mode (name or number) works here: true, or nil, reason, errno.
function Loop:mode_check(mode)
	return core.ub_loop_mode_check(self, mode_id(mode, 1, "mode_check"))
end

--- The default receive pool (created on first use).
-- @function Loop:recv_pool
Loop.recv_pool = core.ub_loop_recv_pool
--- The default send pool (created on first use), for `conn:send(string)`.
-- @function Loop:send_pool
Loop.send_pool = core.ub_loop_send_pool

--- A pool of count buffers of size bytes.
--
-- `incremental = true` (receive pools only) makes an incremental receive
-- pool: the kernel fills each buffer piece by piece, so buffers can be
-- large without a small message taking a whole one.  Each "data" event's
-- buffer is then a slice: the bytes of one receive (`capacity()` is its
-- length), inside the pool buffer `index()` names, which other slices may
-- share; it goes back to the kernel once every slice of it is released
-- (`Pool:slices()` counts those out).  Where the kernel lacks it
-- (`loop:features().pbuf_inc` says why) the pool is made without it:
-- `Pool:incremental()` says which.  Datagram endpoints refuse such a pool.
-- @tparam integer count 1..32768
-- @tparam integer size bytes per buffer
-- @tparam[opt="send"] string kind "send" (acquire and fill) or "recv"
-- @tparam[opt] table opts `incremental` (boolean)
-- @return pool or nil, message, errno
function Loop:pool(count, size, kind, opts)
	checkint(count, 1, "pool", 0, 0xffffffff)
	checkint(size, 2, "pool", 0, 0xffffffff)
	local flags = 0
	if kind == "recv" then
		flags = core.UB_POOL_RECV
	elseif kind ~= nil and kind ~= "send" then
		argerror(3, "pool", "'send' or 'recv' expected")
	end
	if opts ~= nil then
		if type(opts) ~= "table" then
			argerror(4, "pool", "table expected, got " .. type(opts))
		end
		for k, v in pairs(opts) do
			if k ~= "incremental" then
				argerror(4, "pool", "unknown option '" .. tostring(k) .. "'")
			elseif type(v) ~= "boolean" then
				argerror(4, "pool", "field 'incremental': boolean expected, got "
					.. type(v))
			end
		end
		if opts.incremental then flags = flags | core.UB_POOL_INC end
	end
	return core.ub_pool_new(self, count, size, flags)
end

local listen_keys = { backlog = true, reuseport = true,
	max_connections = true }

-- The max_connections field of a listen options table: nil, or an integer
-- 0..UINT_MAX (0: no limit).
-- level: of the function to blame, from the caller's point of view.
local function check_max_conns(v, n, fname, level)
	if v == nil then return nil end
	if math.type(v) ~= "integer" then
		argerror(n, fname, "field 'max_connections': integer expected, got " ..
			(math.type(v) or type(v)), (level or 2) + 1)
	end
	if v < 0 or v > 0xffffffff then
		argerror(n, fname, "field 'max_connections': value out of range " ..
			"(0..4294967295)", (level or 2) + 1)
	end
	return v
end

-- Split a listen options table into conn options and listen's own.
local function split_listen_opts(opts)
	if opts == nil then return nil, 0, 0 end
	if type(opts) ~= "table" then
		argerror(2, "listen", "table expected, got " .. type(opts), 2)
	end
	local copts = {}
	for k, v in pairs(opts) do
		if not listen_keys[k] then copts[k] = v end
	end
	local backlog = opts.backlog or 0
	if math.type(backlog) ~= "integer" then
		argerror(2, "listen", "field 'backlog': integer expected", 2)
	end
	local maxc = check_max_conns(opts.max_connections, 2, "listen", 3)
	return copts, backlog, opts.reuseport and 1 or 0, maxc
end

-- A new listener gets its max_connections (nil: none); a failure closes it.
local function set_max_conns(l, maxc)
	if not l or not maxc or maxc == 0 then return l end
	local ok, msg, en = core.ub_listener_set_max_conns(l, maxc)
	if not ok then
		core.ub_listener_close(l)
		return nil, msg, en
	end
	return l
end

--- Listen on "HOST:PORT" (port 0: any free port), "[V6]:PORT" or
-- "unix:PATH", and accept with multishot accept.
-- @tparam string addr
-- @tparam[opt] table opts connection options for accepted connections
--   (`mode`, `recv_pool`, `send_pool`, `ring_entries`, `high_water`,
--   `low_water`, `no_recv`, `singleshot`, `no_recv_bundle`,
--   `sent_events`, `recv_budget`, `idle_timeout`, `connect_timeout`,
--   `close_timeout`) plus `backlog`, `reuseport` and `max_connections`
--   (accept at most this many at once; 0 or nil: no limit)
-- @return listener or nil, message, errno
function Loop:listen(addr, opts)
	if type(addr) ~= "string" then
		argerror(1, "listen", "string expected, got " .. type(addr))
	elseif not core.ub_addr_parse(addr) then
		argerror(1, "listen", "malformed address '" .. addr ..
			"' (HOST:PORT, [V6]:PORT or unix:PATH)")
	end
	local copts, backlog, reuseport, maxc = split_listen_opts(opts)
	local l, msg, en = core.ub_listen(self, addr, backlog, reuseport, copts)
	if not l then return nil, msg, en end
	return set_max_conns(l, maxc)
end

--- Accept on an already listening socket (which the listener then owns).
-- @tparam integer fd
-- @tparam[opt] table opts connection options for accepted connections,
--   plus `max_connections`
-- @return listener or nil, message, errno
function Loop:adopt_listener(fd, opts)
	local maxc
	if type(opts) == "table" and opts.max_connections ~= nil then
		maxc = check_max_conns(opts.max_connections, 2, "adopt_listener")
		local copts = {}
		for k, v in pairs(opts) do
			if k ~= "max_connections" then copts[k] = v end
		end
		opts = copts
	end
	local l, msg, en = core.ub_listener_adopt(self, fd, opts)
	if not l then return nil, msg, en end
	return set_max_conns(l, maxc)
end

--- Connect to "HOST:PORT"; a "connect" event tells the outcome.  Data sent
-- before that goes out once connected.
-- @function Loop:connect
-- @tparam string addr
-- @tparam[opt] table opts connection options
-- @return conn or nil, message, errno
Loop.connect = core.ub_conn_connect

--- Take over a connected stream socket (fd).
-- @function Loop:adopt
Loop.adopt = core.ub_conn_adopt

--- Open a datagram endpoint (UDP or Unix datagram socket) bound to addr
-- and start receiving into its receive pool: each datagram becomes one
-- "data" event whose `dgram` is the endpoint and whose buffer carries the
-- source address (`buf:source()`).  See the Datagrams section.
-- @function Loop:datagram
-- @tparam string addr "HOST:PORT" (port 0: any free port), "[V6]:PORT",
--   "unix:PATH", "unix:@NAME" (abstract), or "unix:" alone (an autobound
--   abstract name: a Unix client that wants replies)
-- @tparam[opt] table opts `recv_pool` (buffers larger than 128 bytes, a
--   multiple of 8: each holds the 128-byte header with the source address,
--   then up to size - 128 bytes of datagram), `send_pool` (for sent
--   strings), `queue_max` (datagrams queued at most, default 256),
--   `high_water` / `low_water` (queued bytes; default 1 MiB and a
--   quarter), `recv_budget` (bytes of the receive pool it may hold),
--   `reuseport`, `no_recv` (do not start receiving)
-- @return endpoint, or nil, message, errno (EINVAL: a receive pool whose
--   buffers cannot hold the header; EADDRINUSE, ...)
Loop.datagram = core.dgram_open

--- Take over a datagram socket (bound or not, connected or not), which
-- the endpoint then owns (on failure the caller keeps it).
-- @function Loop:adopt_datagram
-- @tparam integer fd
-- @tparam[opt] table opts as `datagram`'s
-- @return endpoint, or nil, message, errno
Loop.adopt_datagram = core.ub_dgram_adopt

--- Features of the running kernel, as in C: name -> true or reason.
-- (Creates a small loop to probe, then frees it.)
-- @return table, or nil, message, errno
function M.features()
	local loop, msg, en = core.ub_loop_new({ pool_count = 1, pool_size = 64 })
	if not loop then return nil, msg, en end
	local t = loop:features()
	loop:close()
	return t
end

---------------------------------------------------------------------------
-- Pools and buffers
-- @section pool

--- Take a free buffer of a send pool (length 0, writable).
-- @return buf, or nil, message, errno (ENOBUFS when none is free)
-- @function Pool:acquire
Pool.acquire = core.ub_pool_acquire
--- Free the pool: nil, message, EBUSY while a buffer is out or a
-- connection uses it.
-- @function Pool:free
Pool.free = core.pool_free
Pool.count = core.ub_pool_count
Pool.buf_size = core.ub_pool_buf_size
Pool.bytes = core.ub_pool_bytes
--- A receive pool's reserve: when its free buffers fall to this many, only
-- connections under their fair share keep receiving (0 for a send pool).
-- @function Pool:reserve
Pool.reserve = core.ub_pool_reserve
Pool.loop = core.ub_pool_loop
Pool.valid = valid

--- Whether the kernel receives into this pool.
function Pool:is_recv()
	return core.ub_pool_flags(self) & core.UB_POOL_RECV ~= 0
end

--- Whether this is an incremental receive pool (asked for with
-- `incremental = true` or the loop option `pool_incremental`, and the
-- kernel has it): its received buffers are slices.
function Pool:incremental()
	return core.ub_pool_flags(self) & core.UB_POOL_INC ~= 0
end

--- Slices of an incremental pool out of it now (held, or queued for
-- sending); 0 for any other pool.
-- @function Pool:slices
Pool.slices = core.ub_pool_slices

--- Buffers in a state: "free", "kernel", "app" or "queued".
function Pool:count_state(state)
	local id = state_ids[state]
	if not id then
		argerror(1, "count_state", "'free', 'kernel', 'app' or 'queued' expected")
	end
	return core.ub_pool_count_state(self, id)
end

--- All four counts: `{free=, kernel=, app=, queued=}`.
function Pool:counts()
	local t = {}
	for id, name in pairs(state_names) do
		t[name] = core.ub_pool_count_state(self, id)
	end
	return t
end

--- Buffer methods implemented in C: `#buf`, `buf:len()`,
-- `buf:capacity()`, `buf:byte([i [, j]])`, `buf:sub(i [, j])`,
-- `tostring(buf)` / `buf:tostring()` (copies, string.sub index rules),
-- `buf:find(s [, init [, plain]])` (plain search in place; a pattern with
-- magic characters runs string.find on a copy), `buf:write(i, s)` (acquired
-- buffers only; returns the new length), `buf:writable()`, `buf:close()`
-- (= `__close` = `__gc`: release if still held, idempotent).
-- @section buf

--- Give the buffer back to its pool.  Raises if already released (or
-- forwarded).
-- @function Buf:release
Buf.release = core.ub_buf_release
Buf.set_len = core.ub_buf_set_len
Buf.index = core.ub_buf_index
Buf.pool = core.ub_buf_pool
Buf.valid = valid

--- Append s at the end (acquired buffers only); returns the new length.
function Buf:append(s)
	return self:write(#self + 1, s)
end

--- The buffer's owner state ("app" while you hold it).
function Buf:state()
	return state_names[core.ub_buf_state(self)]
end

--- A received datagram's source address: "HOST:PORT", "[V6]:PORT",
-- "unix:PATH" or "unix:@NAME"; nil for a buffer that is not a received
-- datagram, or whose sender had no address (an unbound Unix socket).
-- (Implemented in C.)
-- @function Buf:source

--- Whether a received datagram was longer than the buffer and was cut:
-- `#buf` bytes arrived, the "data" event's `res` is the length sent.
-- (Implemented in C.)
-- @function Buf:truncated

---------------------------------------------------------------------------
-- Listeners
-- @section listener

Listener.close = core.ub_listener_close
Listener.fd = core.ub_listener_fd
Listener.valid = valid
Listener.set_buffers = core.set_buffers
--- Accept at most n connections of this listener at once (0: no limit):
-- at the limit accepting pauses (new connections wait in the kernel's
-- backlog) until one of them closes.
-- @function Listener:set_max_connections
-- @tparam integer n
-- @return true, or nil, message, errno (EPIPE: closing)
Listener.set_max_connections = core.ub_listener_set_max_conns
--- Connections accepted by this listener that are not yet closed.
-- @function Listener:connections
Listener.connections = core.ub_listener_conns
--- The connection limit (0: none).
-- @function Listener:max_connections
Listener.max_connections = core.ub_listener_max_conns

--- The bound address, "HOST:PORT" (the real port after port 0).
function Listener:address()
	return core.ub_sock_name(core.ub_listener_fd(self), 0)
end

---------------------------------------------------------------------------
-- Connections (event API)
-- @section conn

--- Queue data: a string is copied into send-pool buffers (maybe in part,
-- like write(2): returns the bytes taken); a buffer is queued itself, zero
-- copy, and returns to its own pool once sent.
-- @function Conn:send
-- @tparam string|buf data
-- @tparam[opt] integer i for a string: first byte (string.sub rules)
-- @tparam[opt] integer j for a string: last byte
-- @return bytes queued and whether the queue is now at or above its high
--   water mark; or nil, message, errno (EAGAIN: above the high water
--   mark without soft water, a "writable" event follows; EPIPE: closing)
Conn.send = core.conn_send
Conn.send_buf = core.ub_conn_send_buf
--- Forward everything received here into dst's send queue, in the core,
-- zero copy, with backpressure (nil dst stops).  No "data" events while
-- piped.  EOF here shuts dst's sending side once drained.
-- @function Conn:pipe
Conn.pipe = core.ub_conn_pipe
Conn.fd = core.ub_conn_fd
Conn.loop = core.ub_conn_loop
Conn.queued_bytes = core.ub_conn_queued_bytes
Conn.queued_bufs = core.ub_conn_queued_bufs
Conn.high_water = core.ub_conn_high_water
Conn.low_water = core.ub_conn_low_water
Conn.set_water = core.ub_conn_set_water
--- Soft water (on: true) makes the high water mark a signal instead of a
-- refusal: `send` takes every byte and every buffer and says whether the
-- queue is now at or above the mark; a "writable" event follows at the
-- low mark.  What the send pool cannot take yet waits in the core, in
-- order.  The server helper sets it on every connection it manages.
-- @tparam boolean on
-- @return true, or nil, message, errno
function Conn:set_soft_water(on)
	return core.ub_conn_set_soft_water(self, on and 1 or 0)
end
Conn.is_closing = core.ub_conn_is_closing
Conn.bytes_sent = core.ub_conn_bytes_sent
Conn.bytes_received = core.ub_conn_bytes_received
--- The receive budget, in bytes: at most this much of its receive pool's
-- buffers (counted in whole buffers) is held by what the connection
-- received and has not given back - buffers you hold, buffers queued on
-- any send queue, buffers in a core pipe.  At the budget its receive stops
-- (the data waits in its socket) until a buffer comes back.
-- @function Conn:recv_budget
Conn.recv_budget = core.ub_conn_recv_budget
--- Set the receive budget (bytes > 0; whole buffers, at least one).
-- @function Conn:set_recv_budget
-- @tparam integer bytes
-- @return true, or nil, message, EINVAL (0)
Conn.set_recv_budget = core.ub_conn_set_recv_budget
--- Set the idle timeout: nothing received or sent for that many seconds
-- ends the connection (an "error" event with ETIMEDOUT, then "closed";
-- the server helper's `on_close(conn, msg, ETIMEDOUT)`).  Counts from now.
-- 0 or math.huge: none.
-- @function Conn:set_idle_timeout
-- @tparam number seconds
-- @return true, or nil, message, errno (EPIPE: aborting or closed)
Conn.set_idle_timeout = core.conn_set_idle_timeout
--- The idle timeout in seconds (0: none).
function Conn:idle_timeout()
	return core.ub_conn_idle_timeout(self) / 1000
end
--- Buffers of its receive pool the connection holds now.
-- @function Conn:recv_held
Conn.recv_held = core.ub_conn_recv_held
--- Whether its receive is stopped by its budget or by its fair share of
-- a pool running low (not by `pause()` or backpressure).
-- @function Conn:recv_throttled
Conn.recv_throttled = core.ub_conn_recv_throttled
Conn.valid = valid
--- Set `SO_SNDBUF` / `SO_RCVBUF` (0 leaves one as it is).
-- @function Conn:set_buffers
Conn.set_buffers = core.set_buffers

--- The send mode in use: "bundle", "ring" or "serial".
function Conn:mode()
	return mode_names[core.ub_conn_mode(self)]
end

--- Local address, "HOST:PORT".
function Conn:local_address()
	return core.ub_sock_name(core.ub_conn_fd(self), 0)
end

--- Peer address, "HOST:PORT".
function Conn:peer_address()
	return core.ub_sock_name(core.ub_conn_fd(self), 1)
end

---------------------------------------------------------------------------
-- Datagram endpoints (event API).  Its events (`dgram` set, `conn` and
-- `listener` nil): "data" (`buf`, `res` the datagram's full length),
-- "writable", "error" (`res` -errno: a failed send, or an ICMP error such
-- as ECONNREFUSED; the endpoint stays open) and "closed" (after which the
-- handle refuses use).  `uringbuf.udp{...}` is the layer above.
-- @section dgram

--- Set the default peer (connect(2)): sends without an address go there
-- and only its datagrams are received.
-- @function Dgram:connect
-- @tparam string addr
-- @return true, or nil, message, errno (EINVAL: another family)
Dgram.connect = core.ub_dgram_connect
--- Queue one datagram (never split, never coalesced).  A string is
-- copied into one buffer of the send pool; a buffer (received on any
-- endpoint or connection of the loop, or acquired and filled) is queued
-- itself, zero copy, and returns to its pool once sent.
-- @function Dgram:send
-- @tparam string|buf data
-- @tparam[opt] string|buf addr "HOST:PORT", a received buffer (reply to
--   its source), or nil (the connected peer)
-- @return the datagram's length and the bytes then queued, or nil,
--   message, errno: EAGAIN (queue full or no free send buffer: `want_writable()`, then a "writable"
--   event), EMSGSIZE (a string larger than a send pool buffer),
--   EDESTADDRREQ (no address and not connected, or a buffer without a
--   source), EINVAL (an address of another family), EPIPE (closing).
--   Failures the kernel reports later (EMSGSIZE over 65507 bytes of UDP,
--   ENETUNREACH) come as "error" events.
Dgram.send = core.dgram_send
--- Send a received buffer back to its source, zero copy
-- (`ep:send(buf, buf)`).
-- @tparam buf buf
-- @return as `send`
function Dgram:reply(buf)
	return core.dgram_send(self, buf, buf)
end
--- Close: stop receiving, hand what is queued to the kernel (what it
-- cannot take at once is cancelled), every queued buffer returns to its
-- pool, and "closed" follows.  Buffers you hold stay yours.
-- @function Dgram:close
-- @return true, or nil, message, EPIPE (already closing)
Dgram.close = core.ub_dgram_close
--- Stop receiving (datagrams wait in the socket, then the kernel drops
-- what does not fit).
-- @function Dgram:pause_recv
Dgram.pause_recv = core.ub_dgram_pause_recv
--- Start receiving again.
-- @function Dgram:resume_recv
Dgram.resume_recv = core.ub_dgram_resume_recv
--- Ask for one "writable" event once the queue is at its low water mark.
-- @function Dgram:want_writable
Dgram.want_writable = core.ub_dgram_want_writable
--- Set the byte marks (0 < high, low <= high).
-- @function Dgram:set_water
-- @tparam integer high
-- @tparam integer low
Dgram.set_water = core.ub_dgram_set_water
--- Soft water (on: true) makes a full queue a signal instead of a refusal:
-- `send` takes every datagram (those without a slot or a send buffer wait
-- in the core, in order, and `queued_bytes` / `queued_bufs` count them)
-- and a "writable" event follows at the low mark.  Switched off while
-- datagrams wait, `send` is refused (EAGAIN) until they are out.
-- @tparam boolean on
-- @return true, or nil, message, errno
function Dgram:set_soft_water(on)
	return core.ub_dgram_set_soft_water(self, on and 1 or 0)
end
--- The socket's fd, or nil, message, EBADF once closing.
-- @function Dgram:fd
Dgram.fd = core.ub_dgram_fd
Dgram.loop = core.ub_dgram_loop
--- Bytes queued for sending.
-- @function Dgram:queued_bytes
Dgram.queued_bytes = core.ub_dgram_queued_bytes
Dgram.high_water = core.ub_dgram_high_water
Dgram.low_water = core.ub_dgram_low_water
Dgram.is_closing = core.ub_dgram_is_closing
--- Datagrams queued for sending.
-- @function Dgram:queued_bufs
Dgram.queued_bufs = core.ub_dgram_queued_bufs
--- Datagrams received since the endpoint began.
-- @function Dgram:received
Dgram.received = core.ub_dgram_received
--- Datagrams sent (completed) since the endpoint began.
-- @function Dgram:sent
Dgram.sent = core.ub_dgram_sent
--- Times the kernel ended the receive for want of a free buffer in the
-- receive pool (not the datagrams lost meanwhile, which the kernel does not
-- count per socket); receiving resumes as soon as a buffer comes back.
-- @function Dgram:nobufs
Dgram.nobufs = core.ub_dgram_nobufs
--- Send operations completed: fewer than `sent()` where UDP GSO (feature
-- `udp_gso`) sent several datagrams to one peer in one (each still one
-- datagram on the wire, in order).
-- @function Dgram:send_ops
Dgram.send_ops = core.ub_dgram_send_ops
--- Datagrams the kernel delivered past the receive budget or the
-- endpoint's share of a shared pool (in the pass before its receive
-- stopped), dropped at once as a full socket drops them: the budget is
-- exact.
-- @function Dgram:dropped
Dgram.dropped = core.ub_dgram_dropped
--- The receive budget in bytes (as `Conn:recv_budget`).
-- @function Dgram:recv_budget
Dgram.recv_budget = core.ub_dgram_recv_budget
--- Set the receive budget (bytes > 0).
-- @function Dgram:set_recv_budget
Dgram.set_recv_budget = core.ub_dgram_set_recv_budget
--- Buffers of its receive pool the endpoint holds now.
-- @function Dgram:recv_held
Dgram.recv_held = core.ub_dgram_recv_held
--- Whether its receive is stopped by its budget.
-- @function Dgram:recv_throttled
Dgram.recv_throttled = core.ub_dgram_recv_throttled
--- Set `SO_SNDBUF` / `SO_RCVBUF` (0 leaves one as it is).
-- @function Dgram:set_buffers
Dgram.set_buffers = core.set_buffers
Dgram.valid = valid

--- The bound address: "HOST:PORT" (the real port after port 0),
-- "[V6]:PORT", "unix:PATH" or "unix:@NAME".
-- @return address, or nil, message, errno
function Dgram:address()
	local fd, msg, en = core.ub_dgram_fd(self)
	if not fd then return nil, msg, en end
	return core.ub_sock_name(fd, 0)
end

--- The connected peer's address, or nil, message, ENOTCONN.
function Dgram:peer_address()
	local fd, msg, en = core.ub_dgram_fd(self)
	if not fd then return nil, msg, en end
	return core.ub_sock_name(fd, 1)
end

--- `uringbuf.pipe(a, b)`: `a:pipe(b)`.
M.pipe = core.ub_conn_pipe

internal.argerror = argerror
internal.mode_id = mode_id
internal.check_max_conns = check_max_conns
internal.join_addr = join_addr
internal.split_addr = split_addr

-- The server helper: uringbuf.server requires this module, so it must be
-- known as loaded first (require has no cycle detection).  Loaded eagerly:
-- it also provides conn:close(), write(), ... for the event API.
package.loaded.uringbuf = M
local server = require "uringbuf.server"
M.server = server.server
M.serve = server.serve
--- `uringbuf.udp{...}`: a datagram endpoint with callbacks (module
-- `uringbuf.udp`).
-- @function udp
M.udp = require("uringbuf.udp").udp

return M
