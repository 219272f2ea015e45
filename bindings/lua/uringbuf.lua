--- uringbuf: provided-buffer send queues and multishot receive over
-- io_uring, for Lua 5.4.
--
-- A small layer over the SWIG module `uringbuf_core` (the C core with
-- checked handles, see bindings/lua/uringbuf_lua.i).  Two levels:
--
-- * the event API: `uringbuf.loop()`, pools, buffers, listeners,
--   connections and `loop:wait()`, which returns a batch of events per call;
-- * a server helper, `uringbuf.server{...}` / `uringbuf.serve{...}`, that
--   dispatches those events to callbacks (`on_data(conn, buf)`) or to one
--   coroutine per connection (`conn:read()`, `conn:write()`), with
--   backpressure.
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
local EAGAIN, EPIPE = errno.EAGAIN, errno.EPIPE
local type, pairs, error, select = type, pairs, error, select
local setmetatable, tostring = setmetatable, tostring
local co_running, co_yield, co_resume, co_status, co_create =
	coroutine.running, coroutine.yield, coroutine.resume,
	coroutine.status, coroutine.create

local Loop = core._methods.loop
local Pool = core._methods.pool
local Buf = core._methods.buf
local Conn = core._methods.conn
local Listener = core._methods.listener

local send = core.conn_send
local valid = core.valid

--- The message for an errno value (C's strerror).
-- @function strerror
M.strerror = core.strerror

--- Whether a handle (loop, pool, buffer, conn, listener) can still be used.
-- Never raises for a handle; raises for anything else.
-- @function valid
M.valid = valid

--- Monotonic clock, in seconds (a float).
-- @function now
M.now = core.now

--- Install SIGINT/SIGTERM handlers that set a flag and make a blocked wait
-- return `nil, "Interrupted system call", EINTR`; SIGPIPE is ignored.
-- @function catch_signals
M.catch_signals = core.catch_signals

--- The number of the last caught signal, or false.
-- @function signaled
-- @tparam[opt] boolean clear reset the flag
M.signaled = core.signaled

-- Managed connections: conn -> state.  A state lives from accept/connect
-- to the CLOSED event (the core keeps the conn handle reachable as long).
local states = {}
-- Handler coroutines: coroutine -> its conn.
local cos = {}
-- Listener -> the server it accepts for (until its CLOSED event).
local listener_srv = {}
-- Graceful closes waiting for held-back writes (close_pending): conn ->
-- the monotonic time at which the close becomes an abort.  The core's
-- close deadline starts only when core.ub_conn_close() is called, which
-- waits here for the held data to reach the send queue; a peer that never
-- reads would keep it waiting for ever without this.
local close_at = {}

-- Forget the state of connections whose loop is gone (freeing a loop
-- sends no CLOSED events).
local function forget_dead()
	for conn in pairs(states) do
		if not valid(conn) then states[conn] = nil end
	end
	for co, conn in pairs(cos) do
		if not valid(conn) then cos[co] = nil end
	end
	for l in pairs(listener_srv) do
		if not valid(l) then listener_srv[l] = nil end
	end
	for conn in pairs(close_at) do
		if not valid(conn) then close_at[conn] = nil end
	end
end

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
--   receive/send pools), `disable` (feature names or bits to treat as
--   missing)
-- @return loop, or nil, message, errno
-- @function loop
M.loop = core.ub_loop_new

--- Wait for events and return them as one batch.
-- The events table (and the tables in it) is reused by the next wait: take
-- what you need out of it before waiting again.  Each event has `type`
-- ("accept", "connect", "data", "sent", "writable", "eof", "error",
-- "closed"), `res`, and `conn`, `listener`, `buf` where they apply.  A
-- "data" event's buffer is the application's: forward it or release it.
-- @function Loop:wait
-- @tparam[opt=1] integer min events to wait for (0: do not block)
-- @tparam[opt=-1] integer timeout_ms (-1: none)
-- @tparam[opt] table events table to fill (default: one per loop)
-- @return n, events or nil, message, errno (EINTR after a caught signal)
Loop.wait = core.loop_wait

local loop_closes = 0 -- counts Loop:close calls (see process())

--- Free the loop: abort every connection and listener, free every pool.
-- Every handle of the loop refuses use afterwards.  Idempotent; also the
-- loop's `__gc` and `__close`.
-- @function Loop:close
function Loop:close()
	loop_closes = loop_closes + 1
	local ok, msg, en = core.loop_close(self)
	forget_dead()
	return ok, msg, en
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
-- @tparam integer count 1..32768
-- @tparam integer size bytes per buffer
-- @tparam[opt="send"] string kind "send" (acquire and fill) or "recv"
-- @return pool or nil, message, errno
function Loop:pool(count, size, kind)
	checkint(count, 1, "pool", 0, 0xffffffff)
	checkint(size, 2, "pool", 0, 0xffffffff)
	local flags = 0
	if kind == "recv" then
		flags = core.UB_POOL_RECV
	elseif kind ~= nil and kind ~= "send" then
		argerror(3, "pool", "'send' or 'recv' expected")
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
-- @return bytes queued, or nil, message, errno (EAGAIN: above the high
--   water mark, a "writable" event follows; EPIPE: closing)
Conn.send = send
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

--- `uringbuf.pipe(a, b)`: `a:pipe(b)`.
M.pipe = core.ub_conn_pipe

---------------------------------------------------------------------------
-- The server helper
-- @section server

-- Connection whose on_data/on_connect callback is running (the source that
-- a refused write pauses).
local current

-- Buffered data at most this many received buffers deep per connection
-- waiting for conn:read(); receiving pauses beyond.
local INQ_MAX = 16

local Server = {}
Server.__index = Server

local handler_keys = { on_connect = true, on_data = true, on_eof = true,
	on_close = true, on_drain = true, on_sent = true, handler = true }
local conn_keys = { mode = true, recv_pool = true, send_pool = true,
	ring_entries = true, high_water = true, low_water = true,
	no_recv = true, singleshot = true, no_recv_bundle = true,
	sent_events = true, recv_budget = true, idle_timeout = true,
	connect_timeout = true, close_timeout = true }

local buf_mt = debug.getregistry()["uringbuf.buf"]
local function is_buf(x)
	return getmetatable(x) == buf_mt
end

-- Whether the core should be receiving for st; tell it on a change.
local function update_recv(conn, st)
	if st.closing or st.closed then return end
	local want = not st.user_paused and next(st.blocked_by) == nil
		and st.inq_n < INQ_MAX
	if want ~= st.recv_on then
		local ok
		if want then
			ok = core.ub_conn_resume_recv(conn)
		else
			ok = core.ub_conn_pause_recv(conn)
		end
		if ok then st.recv_on = want end
	end
end

-- A connection's state starts with four fields: the queues and counters
-- below read as their defaults (shared empty tables, fixed numbers) until a
-- connection first uses them, so an idle connection costs a small table
-- (10,000 idle connections: bench/RESULTS.md, memory).
--   fifo[ff..fl]          refused writes, in order
--   blocked               sources paused by our fifo
--   blocked_by            fifos that paused us
--   inq[iq..iq+inq_n-1]   buffers waiting for read()
local EMPTY = setmetatable({}, {
	__newindex = function(_, _, v)
		-- clearing an absent key is fine; anything else is a bug here
		if v ~= nil then error("uringbuf: write to a shared empty table", 2) end
	end,
})
local STATE_MT = { __index = {
	ff = 1, fl = 0, iq = 1, inq_n = 0,
	fifo = EMPTY, blocked = EMPTY, blocked_by = EMPTY, inq = EMPTY,
} }

-- st[k] as a table of st's own, made on first write.
local function own(st, k)
	local t = rawget(st, k)
	if not t then
		t = {}
		st[k] = t
	end
	return t
end

-- close_timeout of the options a connection was made with, in seconds
-- (nil: the core's default; math.huge: never).
local function new_state(srv, conn, h, recv_on, close_timeout)
	local st = setmetatable({
		srv = srv, h = h,
		recv_on = recv_on, user_paused = not recv_on,
		close_timeout = close_timeout,
	}, STATE_MT)
	states[conn] = st
	return st
end

local DEF_CLOSE_TIMEOUT = (core.UB_DEF_CLOSE_TIMEOUT_MS or 30000) / 1000

local function wake(st, which)
	local co = st[which]
	if co then
		st[which] = nil
		local ok, err = co_resume(co)
		if not ok then
			error(debug.traceback(co, tostring(err)), 0)
		end
		if co_status(co) == "dead" then
			local c = cos[co]
			cos[co] = nil
			local cst = states[c]
			if cst and not cst.closing and not cst.closed then
				c:close()
			end
		end
	end
end

local function start_handler(conn, st)
	local co = co_create(st.h.handler)
	cos[co] = conn
	local ok, err = co_resume(co, conn)
	if not ok then error(debug.traceback(co, tostring(err)), 0) end
	if co_status(co) == "dead" then
		cos[co] = nil
		if not st.closing and not st.closed then conn:close() end
	end
end

local function release_all(st)
	for i = st.ff, st.fl do
		local x = st.fifo[i]
		if is_buf(x) and valid(x) then x:release() end
		st.fifo[i] = nil
	end
	st.ff, st.fl = 1, 0
	for i = st.iq, st.iq + st.inq_n - 1 do
		local b = st.inq[i]
		if b and valid(b) then b:release() end
		st.inq[i] = nil
	end
	st.iq, st.inq_n = 1, 0
end

-- Sources that our fifo paused may receive again.
local function unblock(conn, st)
	for src in pairs(st.blocked) do
		st.blocked[src] = nil
		local sst = states[src]
		if sst then
			sst.blocked_by[conn] = nil
			update_recv(src, sst)
		end
	end
end

-- Send as much of string s (from byte off + 1) as the queue takes.
-- Returns the new offset, or nil, msg, errno on a hard failure.
local function send_string(conn, s, off)
	local n = #s
	while off < n do
		local r, msg, en = send(conn, s, off + 1)
		if not r then
			if en == EAGAIN then return off end
			return nil, msg, en
		end
		off = off + r
	end
	return off
end

-- Push the fifo into the send queue.  true once it is empty.
local function flush(conn, st)
	while st.ff <= st.fl do
		local x = st.fifo[st.ff]
		if type(x) == "string" then
			local off, msg, en = send_string(conn, x, 0)
			if not off then return nil, msg, en end
			if off < #x then
				st.fifo[st.ff] = x:sub(off + 1)
				return false
			end
		else
			local r, msg, en = send(conn, x)
			if not r then
				if en == EAGAIN then return false end
				return nil, msg, en
			end
		end
		st.fifo[st.ff] = nil
		st.ff = st.ff + 1
	end
	st.ff, st.fl = 1, 0
	return true
end

local function fail_state(st, msg, en)
	if not st.err then st.err, st.errno = msg, en end
end

-- The fifo drained (or the connection is going): finish what waited on it.
local function drained(conn, st)
	unblock(conn, st)
	if st.close_pending then
		st.close_pending = nil
		close_at[conn] = nil
		core.ub_conn_close(conn)
	elseif st.shut_pending then
		st.shut_pending = nil
		core.ub_conn_shutdown(conn)
	end
end

local function managed(conn, fname)
	local st = states[conn]
	if not st then
		if not valid(conn) then core.ub_conn_fd(conn) end -- raises
		error("bad argument #1 to '" .. fname ..
			"' (connection not managed by a uringbuf.server; " ..
			"use send)", 3)
	end
	return st
end

local function closed_result(st)
	if st.err then return nil, st.err, st.errno end
	return nil, "connection closing", EPIPE
end

--- Write a string (copied) or a buffer (zero copy; the buffer is the
-- connection's from then on, and is released if the write fails) to a
-- managed connection, in order with earlier writes.
--
-- In a handler coroutine: waits (yields) while the send queue is above its
-- high water mark; returns true once queued.
--
-- Elsewhere (callbacks): never waits.  Returns true if queued, or false if
-- held back because the queue is above its high water mark: the data goes
-- out later, in order, and the connection whose callback is running stops
-- receiving until it has (on_drain(conn) tells when).
-- @return true/false, or nil, message, errno
function Conn:write(data)
	local st = managed(self, "write")
	local isstr = type(data) == "string"
	if not isstr and not is_buf(data) then
		argerror(1, "write", "string or uringbuf.buf expected, got " ..
			type(data))
	end
	if not isstr then
		core.ub_buf_len(data) -- raises if released
		if #data == 0 then
			data:release()
			return true
		end
	elseif #data == 0 then
		return true
	end
	if st.closed or st.closing or st.shut_pending then
		if not isstr then data:release() end
		return closed_result(st)
	end
	local co = co_running()
	if cos[co] then
		-- handler coroutine: wait for room, keep order
		local off = 0
		while true do
			if st.closed or st.err then
				if not isstr and valid(data) then data:release() end
				return closed_result(st)
			end
			if st.ff > st.fl then
				if isstr then
					local msg, en
					off, msg, en = send_string(self, data, off)
					if not off then return nil, msg, en end
					if off == #data then return true end
				else
					local r, msg, en = send(self, data)
					if r then return true end
					if en ~= EAGAIN then
						data:release()
						return nil, msg, en
					end
				end
			end
			st.wwait = co
			co_yield()
		end
	end
	if st.ff > st.fl then
		if isstr then
			local off, msg, en = send_string(self, data, 0)
			if not off then return nil, msg, en end
			if off == #data then return true end
			data = data:sub(off + 1)
		else
			local r, msg, en = send(self, data)
			if r then return true end
			if en ~= EAGAIN then
				data:release()
				return nil, msg, en
			end
		end
	end
	st.fl = st.fl + 1
	own(st, "fifo")[st.fl] = data
	local src = current
	if src and not st.blocked[src] then
		local sst = states[src]
		if sst then
			own(st, "blocked")[src] = true
			own(sst, "blocked_by")[self] = true
			update_recv(src, sst)
		end
	end
	return false
end

--- In a handler coroutine: the next received buffer, waiting (yielding) for
-- it.  Returns nil at end of stream (EOF), or nil, message, errno after an
-- error or close.  Received buffers wait in a small queue; receiving
-- pauses while it is full.
function Conn:read()
	local st = managed(self, "read")
	local co = co_running()
	if not cos[co] then
		error("bad argument #1 to 'read' (not called from a handler " ..
			"coroutine)", 2)
	end
	while true do
		if st.inq_n > 0 then
			local b = st.inq[st.iq]
			st.inq[st.iq] = nil
			st.iq = st.iq + 1
			st.inq_n = st.inq_n - 1
			if st.inq_n == 0 then st.iq = 1 end
			update_recv(self, st)
			return b
		end
		if st.err then return nil, st.err, st.errno end
		if st.eof then return nil end
		if st.closed then return nil, "connection closed", EPIPE end
		st.rwait = co
		co_yield()
	end
end

--- Stop receiving (data waits in the socket).
function Conn:pause()
	local st = states[self]
	if not st then return core.ub_conn_pause_recv(self) end
	st.user_paused = true
	update_recv(self, st)
	return true
end

--- Receive again after pause() (or start, for a `no_recv` connection).
function Conn:resume()
	local st = states[self]
	if not st then return core.ub_conn_resume_recv(self) end
	if st.closed then return core.ub_conn_resume_recv(self) end
	st.user_paused = false
	update_recv(self, st)
	return true
end

--- Half-close once everything written has gone out.
function Conn:shutdown()
	local st = states[self]
	if st and st.ff <= st.fl then
		if st.closing or st.shut_pending then return nil, "Broken pipe", EPIPE end
		st.shut_pending = true
		return true
	end
	return core.ub_conn_shutdown(self)
end

--- Graceful close: what was written goes out, then shutdown, then close;
-- a "closed" event (on_close) follows.
function Conn:close()
	local st = states[self]
	if st then
		if st.closing or st.closed then
			return nil, "Broken pipe", EPIPE
		end
		st.closing = true
		if st.ff <= st.fl then
			st.close_pending = true
			local t = st.close_timeout or DEF_CLOSE_TIMEOUT
			if t ~= math.huge then close_at[self] = core.now() + t end
			return true
		end
	end
	return core.ub_conn_close(self)
end

--- Abort: drop what is queued, reset the connection; "closed" follows.
function Conn:abort()
	local st = states[self]
	if st then
		st.closing = true
		st.close_pending = nil
		close_at[self] = nil
		release_all(st)
		unblock(self, st)
	end
	return core.ub_conn_abort(self)
end

-- ---- dispatch ----------------------------------------------------------

-- on_data runs with its connection as the source that a refused write
-- pauses (forwarding what it received); other callbacks produce data of
-- their own and pause nothing.
local function call_data(f, conn, buf)
	local prev = current
	current = conn
	f(conn, buf)
	current = prev
end

local function call(f, conn, ...)
	local prev = current
	current = nil
	f(conn, ...)
	current = prev
end

local dispatch = {}

-- Connections that kept a received buffer in this batch (on_data neither
-- released nor forwarded it, or it waits for read()).  A buffer dropped
-- without release() counts against its connection's receive budget until
-- __gc returns it: see collect_kept().
local kept = {}

dispatch.accept = function(srv, e)
	local conn = e.conn
	srv = listener_srv[e.listener] or srv
	local st = new_state(srv, conn, srv.handlers, not srv.copts.no_recv,
		srv.copts.close_timeout)
	if st.h.on_connect then call(st.h.on_connect, conn) end
	if st.h.handler and not st.closed then start_handler(conn, st) end
end

dispatch.connect = function(srv, e)
	local conn = e.conn
	local st = states[conn]
	if not st then return end
	if e.res < 0 then
		fail_state(st, M.strerror(-e.res), -e.res)
		wake(st, "rwait")
		wake(st, "wwait")
		return
	end
	st.connected = true
	if st.h.on_connect then call(st.h.on_connect, conn) end
end

dispatch.data = function(srv, e)
	local conn, buf = e.conn, e.buf
	e.buf = nil -- the batch must not keep it from __gc
	local st = states[conn]
	if not st then
		if srv.on_event then return srv.on_event(e) end
		return buf:release()
	end
	if st.closing or st.closed then return buf:release() end
	local on_data = st.h.on_data
	if on_data then
		call_data(on_data, conn, buf)
		-- Kept, or dropped for __gc: see collect_kept().
		if valid(buf) then kept[conn] = true end
		return
	end
	kept[conn] = true
	own(st, "inq")[st.iq + st.inq_n] = buf
	st.inq_n = st.inq_n + 1
	if st.inq_n >= INQ_MAX then update_recv(conn, st) end
	wake(st, "rwait")
end

dispatch.writable = function(srv, e)
	local conn = e.conn
	local st = states[conn]
	if not st then return end
	local ok, msg, en = flush(conn, st)
	if ok == nil then
		fail_state(st, msg, en)
		release_all(st)
		unblock(conn, st)
		core.ub_conn_abort(conn)
	elseif ok then
		drained(conn, st)
		if st.h.on_drain then call(st.h.on_drain, conn) end
	end
	wake(st, "wwait")
end

dispatch.eof = function(srv, e)
	local conn = e.conn
	local st = states[conn]
	if not st then return end
	st.eof = true
	if st.rwait then
		wake(st, "rwait")
	elseif st.h.on_eof then
		call(st.h.on_eof, conn)
	elseif not st.h.handler then
		-- Default: the peer is done, so are we once our data is out.
		conn:close()
	end
end

dispatch.error = function(srv, e)
	local conn = e.conn
	if not conn then
		srv = listener_srv[e.listener] or srv
		if srv.on_listener_error then
			return srv.on_listener_error(e.listener, M.strerror(-e.res), -e.res)
		end
		io.stderr:write("uringbuf: accept: ", M.strerror(-e.res), "\n")
		return
	end
	local st = states[conn]
	if not st then return end
	fail_state(st, M.strerror(-e.res), -e.res)
	st.closing = true
	wake(st, "rwait")
	wake(st, "wwait")
end

dispatch.closed = function(srv, e)
	local conn = e.conn
	if not conn then
		local lsrv = listener_srv[e.listener]
		if lsrv then
			lsrv.listener_closed = true
			listener_srv[e.listener] = nil
		end
		return
	end
	local st = states[conn]
	close_at[conn] = nil
	if not st then return end
	st.closed = true
	st.closing = true
	if e.res < 0 then fail_state(st, M.strerror(-e.res), -e.res) end
	release_all(st)
	unblock(conn, st)
	for dst in pairs(st.blocked_by) do
		local dst_st = states[dst]
		if dst_st then dst_st.blocked[conn] = nil end
	end
	wake(st, "rwait")
	wake(st, "wwait")
	if st.h.on_close then call(st.h.on_close, conn, st.err, st.errno) end
	states[conn] = nil
end

dispatch.sent = function(srv, e)
	local st = states[e.conn]
	if st and st.h.on_sent then call(st.h.on_sent, e.conn, e.res) end
end

local function check_handlers(t, fname, allow_conn)
	local h, copts = {}, {}
	for k, v in pairs(t) do
		if handler_keys[k] then
			if type(v) ~= "function" then
				argerror(1, fname, "field '" .. k ..
					"': function expected, got " .. type(v), 2)
			end
			h[k] = v
		elseif conn_keys[k] then
			copts[k] = v
		elseif not allow_conn or not allow_conn[k] then
			argerror(1, fname, "unknown field '" .. tostring(k) .. "'", 2)
		end
	end
	if copts.mode ~= nil then copts.mode = mode_id(copts.mode, 1, fname) end
	return h, copts
end

local server_keys = { host = true, port = true, listen = true, loop = true,
	pool_count = true, pool_size = true, entries = true, backlog = true,
	reuseport = true, signals = true, on_event = true, timeout = true,
	on_listener_error = true, sndbuf = true, rcvbuf = true,
	max_connections = true }

--- Create a server: a loop (or `loop=`), a listener, and the dispatcher.
--
-- Fields: `host` (default "127.0.0.1") and `port` (default 0), or
-- `listen = "HOST:PORT"`; `mode` ("bundle", "ring", "serial", "auto");
-- `pool_count`, `pool_size`, `entries` for a new loop; `backlog`,
-- `reuseport`; connection options (`high_water`, `low_water`, `no_recv`,
-- ...); `signals = true` to stop on SIGINT/SIGTERM; `sndbuf`, `rcvbuf`.
-- Isolation: `recv_budget` (bytes of the receive pool one connection may
-- hold, default 256 KiB), `idle_timeout`, `connect_timeout`,
-- `close_timeout` (seconds; default none, none, 30; 0 or math.huge: none,
-- close_timeout = math.huge: never), `max_connections` (accept at most
-- that many at once).
--
-- Callbacks, all optional: `on_connect(conn)`, `on_data(conn, buf)` (the
-- buffer is yours: `conn:write(buf)` forwards it, else release it),
-- `on_eof(conn)` (default: close once written data is out),
-- `on_drain(conn)`, `on_close(conn, errmsg, errno)` (errno ETIMEDOUT after
-- a deadline), `on_sent(conn, n)`;
-- or `handler(conn)`, run as one coroutine per connection using
-- `conn:read()` and `conn:write()`; the connection closes when it returns.
-- Without a listen address (no host, port or listen) there is no listener:
-- use `srv:connect()`.
-- @return server, or nil, message, errno (e.g. mode unavailable, address
--   in use)
function M.server(t)
	if type(t) ~= "table" then
		argerror(1, "server", "table expected, got " .. type(t))
	end
	local h, copts = check_handlers(t, "server", server_keys)
	check_max_conns(t.max_connections, 1, "server")
	local own = false
	local loop = t.loop
	if loop == nil then
		local msg, en
		loop, msg, en = M.loop{ pool_count = t.pool_count,
			pool_size = t.pool_size, entries = t.entries }
		if not loop then return nil, msg, en end
		own = true
	end
	local function fail(msg, en)
		if own then loop:close() end
		return nil, msg, en
	end
	if copts.mode then
		local ok, msg, en = core.ub_loop_mode_check(loop, copts.mode)
		if not ok then return fail(msg, en) end
	end
	local srv = setmetatable({ loop = loop, handlers = h, copts = copts,
		own_loop = own, on_event = t.on_event,
		on_listener_error = t.on_listener_error }, Server)
	if t.listen or t.host or t.port then
		local addr = t.listen or join_addr(t.host, t.port)
		local lopts = { backlog = t.backlog, reuseport = t.reuseport,
			max_connections = t.max_connections }
		for k, v in pairs(copts) do lopts[k] = v end
		local l, msg, en = loop:listen(addr, lopts)
		if not l then return fail(msg, en) end
		if t.sndbuf or t.rcvbuf then
			l:set_buffers(t.sndbuf or 0, t.rcvbuf or 0)
		end
		srv.listener = l
		listener_srv[l] = srv
		srv.address = l:address()
		srv.host, srv.port = split_addr(srv.address)
	end
	if t.signals then core.catch_signals() end
	srv.signals = t.signals
	srv.rpool = loop:recv_pool()
	return srv
end

--- Connect to "HOST:PORT" (or host, port) with its own handlers (the
-- same fields as server's callbacks, plus connection options).  In
-- coroutine style the handler starts at once: writes queue until connected,
-- read() waits.  A failed connect reaches on_close(conn, errmsg, errno).
-- @return conn, or nil, message, errno
function Server:connect(addr, t, port_t)
	if math.type(t) == "integer" then
		addr, t = join_addr(addr, t), port_t
	end
	t = t or {}
	if type(t) ~= "table" then
		argerror(2, "connect", "table expected, got " .. type(t))
	end
	local h, copts = check_handlers(t, "connect", { sndbuf = true, rcvbuf = true })
	local conn, msg, en = self.loop:connect(addr, copts)
	if not conn then return nil, msg, en end
	if t.sndbuf or t.rcvbuf then
		conn:set_buffers(t.sndbuf or 0, t.rcvbuf or 0)
	end
	local st = new_state(self, conn, h, not copts.no_recv, copts.close_timeout)
	if h.handler then start_handler(conn, st) end
	return conn
end

--- Dispatch one event (for loops driven by hand: `for each e of
-- loop:wait() do srv:dispatch(e) end`).
function Server:dispatch(e)
	local f = dispatch[e.type]
	if f then f(self, e) end
end

local collect_at = 0
local collect_every = 0.05 -- seconds; doubles while collections free nothing
local gc_wanted = false

-- Whether a connection that kept buffers in the last batch has been
-- stopped by its receive budget: the buffers it holds may be garbage.
local function collect_kept()
	for conn in pairs(kept) do
		kept[conn] = nil
		if not gc_wanted and valid(conn) and
			core.ub_conn_recv_throttled(conn) then
			gc_wanted = true
		end
	end
end

-- Give back the buffers callbacks dropped (they return on __gc) now
-- rather than when allocation gets round to it: when the receive pool is
-- dry, or a connection that kept buffers is at its budget.  At most every
-- 50 ms (gc_wanted waits for the next call meanwhile); while collections
-- give no buffer back (the buffers are held on purpose: backpressure),
-- the interval doubles, up to 2 s.
local function maybe_collect(srv)
	if next(kept) then collect_kept() end
	local p = srv.rpool
	if p and not valid(p) then p = nil end
	if gc_wanted or (p and
		core.ub_pool_count_state(p, core.UB_BUF_KERNEL) == 0) then
		local now = core.now()
		if now >= collect_at then
			gc_wanted = false
			local before = p and core.ub_pool_count_state(p, core.UB_BUF_APP)
			collectgarbage()
			if p and core.ub_pool_count_state(p, core.UB_BUF_APP) >= before then
				collect_every = math.min(collect_every * 2, 2)
			else
				collect_every = 0.05
			end
			collect_at = now + collect_every
		else
			gc_wanted = true
		end
	end
end

-- Graceful closes still waiting for held-back writes past their deadline
-- become aborts: "closed" follows, with ETIMEDOUT (as the core's own close
-- deadline reports it).
local function expire_closes()
	local now
	for conn, t in pairs(close_at) do
		now = now or core.now()
		if now >= t then
			close_at[conn] = nil
			local st = states[conn]
			if st and not st.closed and valid(conn) then
				fail_state(st, M.strerror(errno.ETIMEDOUT), errno.ETIMEDOUT)
				st.close_pending = nil
				release_all(st)
				unblock(conn, st)
				core.ub_conn_abort(conn)
			end
		end
	end
end

-- Seconds until the next close deadline of the Lua layer (0 if one has
-- passed), or nil if none.
local function next_deadline()
	local first
	for _, t in pairs(close_at) do
		if not first or t < first then first = t end
	end
	if not first then return nil end
	local left = first - core.now()
	return left > 0 and left or 0
end

-- Dispatch a batch of n events; then expire close deadlines and collect
-- dropped buffers where needed (see maybe_collect()).
local function process(srv, n, ev)
	local closes = loop_closes
	for i = 1, n do
		-- A callback may close the loop (srv:close()): the rest of the
		-- batch is gone with it.
		if closes ~= loop_closes and not valid(srv.loop) then return end
		local e = ev[i]
		local f = dispatch[e.type]
		if f then f(srv, e) end
	end
	if closes ~= loop_closes and not valid(srv.loop) then return end
	if next(close_at) then expire_closes() end
	maybe_collect(srv)
end

--- Seconds until the server helper must run again although no event may
-- come: a graceful `close()` still waiting for data that `write()` held
-- back becomes an abort at its connection's `close_timeout` (the core's
-- own close deadline starts once that data is in the send queue).  `run()`
-- and `step()` honour it; an event loop driving `pump()` must call it
-- again by then (`uringbuf.luv` and `uringbuf.cqueues` do).
-- @return seconds (0: now), or nil if nothing is due
function Server:next_deadline()
	return next_deadline()
end

--- Wait once (at most timeout_ms, default 500) and dispatch the batch.
-- @tparam[opt=500] integer timeout_ms
-- @return the number of events, or nil, message, errno
function Server:step(timeout_ms)
	timeout_ms = timeout_ms or 500
	if next(close_at) then
		local d = next_deadline()
		if d then
			d = math.ceil(d * 1000)
			if timeout_ms < 0 or d < timeout_ms then timeout_ms = d end
		end
	end
	local n, ev, en = self.loop:wait(1, timeout_ms)
	if not n then
		if en == errno.EINTR then return 0 end
		return nil, ev, en
	end
	process(self, n, ev)
	return n
end

-- core.ub_loop_needs_wait(loop), where the core has it: whether queued
-- work or undelivered events wait for a loop:wait() call.  Without it,
-- assume they do (one more non-blocking wait: correct, a little slower).
local needs_wait = core.ub_loop_needs_wait

--- Do everything that is ready without blocking: submit what API calls
-- queued, dispatch the events that are ready, submit what the handlers
-- queued, and so on until nothing is left or `max_rounds` batches ran.
-- This is how another event loop drives a server (`uringbuf.luv`,
-- `uringbuf.cqueues`): call it with `woken` true when the loop's
-- `poll_fd()` polls readable, and with `woken` false before the host loop
-- blocks (it then waits only if API calls queued work or events are
-- undelivered, where the core can tell: `ub_loop_needs_wait`).
-- @tparam[opt=16] integer max_rounds batches at most (keeps the host loop
--   responsive under load)
-- @tparam[opt] boolean woken the poll fd was readable: wait at least once
-- @return events dispatched and whether more are ready (call again soon
--   without blocking); or nil, message, errno
function Server:pump(max_rounds, woken)
	local loop = self.loop
	local total = 0
	if next(close_at) then expire_closes() end
	if gc_wanted then maybe_collect(self) end
	for _ = 1, max_rounds or 16 do
		if not woken and needs_wait and not needs_wait(loop) then
			return total, false
		end
		woken = false
		local n, ev, en = loop:wait(0, 0)
		if not n then
			if en == errno.EINTR then return total, true end
			return nil, ev, en
		end
		if n == 0 then return total, false end
		process(self, n, ev)
		total = total + n
		if not valid(loop) then return total, false end
	end
	if needs_wait then return total, needs_wait(loop) end
	return total, true
end

--- Run until `stop()`, a caught signal (`signals = true`), or timeout
-- seconds.
-- @return true, "stopped" | "signal" | "timeout"; or nil, message, errno
--   (a wait failed, or the listener closed)
function Server:run(timeout)
	local deadline = timeout and core.now() + timeout
	self.stopped = false
	while not self.stopped do
		if self.signals and core.signaled() then return true, "signal" end
		if self.listener_closed then
			return nil, "the listener closed", EPIPE
		end
		local ms = 500
		if deadline then
			local left = deadline - core.now()
			if left <= 0 then return true, "timeout" end
			ms = math.min(ms, math.ceil(left * 1000))
		end
		local n, msg, en = self:step(ms)
		if not n then return nil, msg, en end
	end
	return true, "stopped"
end

--- Make run() return after the current batch.
function Server:stop()
	self.stopped = true
end

--- Free the loop (if the server made it) or close the listener.
-- @return true, or nil, message, errno
function Server:close()
	if self.own_loop then return self.loop:close() end
	if self.listener and valid(self.listener) then
		return self.listener:close()
	end
	return true
end
Server.__close = Server.close

--- `uringbuf.server(t):run()`, then close: serve until stopped.
-- @return as Server:run
function M.serve(t)
	local srv, msg, en = M.server(t)
	if not srv then return nil, msg, en end
	local ok, why, en2 = srv:run(t.timeout)
	srv:close()
	return ok, why, en2
end

return M
