--- uringbuf.server: the server helper over uringbuf's event API.
--
-- `require "uringbuf"` loads this module too and exports its functions
-- (`uringbuf.server`, `uringbuf.serve`); it also gives connections their
-- `write`, `read`, `pause`, `resume`, `shutdown`, `close` and `abort`
-- methods (which fall back to the core's own calls on a connection no
-- server manages).
--
-- A server dispatches a loop's events to callbacks (`on_data(conn, buf)`)
-- or to one coroutine per connection (`conn:read()`, `conn:write()`), with
-- backpressure, and can run in several processes (`workers = N`).
--
-- Writes are never held here: the core's queue takes every write (soft
-- water) and its high water mark tells `write()` to return false.
--
-- Where state lives.  A managed connection's state (its callbacks, the
-- sources its full queue paused, buffers waiting for `read()`, the
-- coroutine waiting on it) is a table kept in the connection handle's own
-- state slot (`core.state`, a user value of the handle): each event
-- brings it along (`e.state`), methods reach it from the handle, and the C
-- runtime drops it when the handle is cut from its connection (the wait
-- after "closed", or the loop's close).  A listener's slot holds its
-- server; a loop's holds what the servers on it share (connections that
-- kept buffers this batch).  No
-- table keyed by handle grows with the connections or needs sweeping.
-- @module uringbuf.server
-- @license MIT

local ub = package.loaded.uringbuf or require "uringbuf"
-- Required on its own, this module was just loaded by require "uringbuf"
-- above (which loads it eagerly): that copy is the one.
if package.loaded["uringbuf.server"] then
	return package.loaded["uringbuf.server"]
end

local core = ub.core
local I = ub._internal
local argerror, mode_id = I.argerror, I.mode_id
local check_max_conns = I.check_max_conns
local join_addr, split_addr = I.join_addr, I.split_addr

local S = {}

local errno = core.errno
local EPIPE = errno.EPIPE
local type, pairs, next, error = type, pairs, next, error
local setmetatable, getmetatable, tostring = setmetatable, getmetatable,
	tostring
local co_running, co_yield, co_resume, co_status, co_create =
	coroutine.running, coroutine.yield, coroutine.resume,
	coroutine.status, coroutine.create

local Conn = core._methods.conn

local send = core.conn_send
local valid = core.valid
local conn_state = core.conn_state
local state, set_state = core.state, core.set_state
local strerror = core.strerror

-- The state of the connection whose on_data callback is running (the
-- source that a write above the high water mark pauses).
local current
-- The state of the connection whose handler coroutine is running: set
-- around every resume of a handler, so that write() and read() know
-- whether they may yield.
local running

-- Buffered data at most this many received buffers deep per connection
-- waiting for conn:read(); receiving pauses beyond.
local INQ_MAX = 16

local Server = {}
Server.__index = Server
S.Server = Server

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

-- What the servers of one loop share, in the loop handle's state slot
-- (dropped with the loop):
--   kept      states of connections that kept a received buffer in the
--             current batch (see collect_kept()); emptied every batch.
local function loop_state(loop)
	local ls = state(loop)
	if not ls then
		ls = { kept = {} }
		set_state(loop, ls)
	end
	return ls
end

-- Whether the core should be receiving for st; tell it on a change.
local function update_recv(st)
	if st.closing or st.closed then return end
	local want = not st.user_paused and next(st.blocked_by) == nil
		and st.inq_n < INQ_MAX
	if want ~= st.recv_on then
		local ok
		if want then
			ok = core.ub_conn_resume_recv(st.conn)
		else
			ok = core.ub_conn_pause_recv(st.conn)
		end
		if ok then st.recv_on = want end
	end
end

-- A connection's state starts with a few fields: the queues and counters
-- below read as their defaults (shared empty tables, fixed numbers) until
-- a connection first uses them, so an idle connection costs a small table
-- (10,000 idle connections: bench/RESULTS.md, memory).
--   blocked               states of the sources paused by our send queue
--                         (above its high water mark)
--   blocked_by            states of the queues that paused us
--   inq[iq..iq+inq_n-1]   buffers waiting for read()
-- Other fields: srv, h (callbacks), conn (the handle: the state is in its
-- slot, so this cycle is collected with it), co (the handler coroutine),
-- rwait / wwait (the state of the handler waiting in read() / write()),
-- err, errno, eof, closing, closed.
-- Written data never waits here: the core's queue takes every write (soft
-- backpressure, ub_conn_set_soft_water) and closes or shuts down after it.
local EMPTY = setmetatable({}, {
	__newindex = function(_, _, v)
		-- clearing an absent key is fine; anything else is a bug here
		if v ~= nil then error("uringbuf: write to a shared empty table", 2) end
	end,
})
local STATE_MT = { __index = {
	iq = 1, inq_n = 0, recv_on = false, user_paused = false,
	blocked = EMPTY, blocked_by = EMPTY, inq = EMPTY,
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

local function new_state(srv, conn, h, recv_on)
	-- Four fields, one of them set below: the table's hash part has four
	-- slots, not eight (memory per idle connection, bench/RESULTS.md).
	local st = setmetatable({ srv = srv, h = h, conn = conn }, STATE_MT)
	if recv_on then st.recv_on = true else st.user_paused = true end
	set_state(conn, st)
	core.ub_conn_set_soft_water(conn, 1)
	return st
end

-- Resume the handler coroutine of hst (with conn the first time).  When it
-- ends, its connection closes gracefully (unless it is going already, or
-- its loop is gone).
local function resume_handler(hst, conn)
	local co = hst.co
	local prev = running
	running = hst
	local ok, err = co_resume(co, conn)
	running = prev
	if not ok then error(debug.traceback(co, tostring(err)), 0) end
	if co_status(co) == "dead" then
		hst.co = nil
		if not hst.closing and not hst.closed and valid(hst.conn) then
			hst.conn:close()
		end
	end
end

-- Resume the handler waiting in st's read() or write() (which: "rwait" or
-- "wwait"), if any.
local function wake(st, which)
	local hst = st[which]
	if hst then
		st[which] = nil
		if hst.co then resume_handler(hst) end
	end
end

local function start_handler(conn, st)
	st.co = co_create(st.h.handler)
	resume_handler(st, conn)
end

local function release_all(st)
	for i = st.iq, st.iq + st.inq_n - 1 do
		local b = st.inq[i]
		if b and valid(b) then b:release() end
		st.inq[i] = nil
	end
	st.iq, st.inq_n = 1, 0
end

-- Sources that our queue paused may receive again (a source on a loop that
-- is gone has nothing left to resume).
local function unblock(st)
	for sst in pairs(st.blocked) do
		st.blocked[sst] = nil
		sst.blocked_by[st] = nil
		if valid(sst.conn) then update_recv(sst) end
	end
end

local function fail_state(st, msg, en)
	if not st.err then st.err, st.errno = msg, en end
end

-- Abort st's connection now: drop what it holds, let its sources go.
local function abort_state(st)
	st.closing = true
	release_all(st)
	unblock(st)
	return core.ub_conn_abort(st.conn)
end

local function managed(conn, fname)
	local st = conn_state(conn)
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
-- managed connection, in order with earlier writes.  The send queue takes
-- every write; its high water mark says when to stop producing.
--
-- In a handler coroutine: queues, then waits (yields) while the queue is
-- above its high water mark; returns true (or nil, message, errno if the
-- connection failed meanwhile).
--
-- Elsewhere (callbacks): never waits.  Returns true if the queue is below
-- its high water mark, or false if it is now above it: the data is queued
-- all the same, and the connection whose callback is running stops
-- receiving until the queue drains to its low mark (on_drain(conn) tells
-- when).
-- @return true/false, or nil, message, errno
function Conn:write(data)
	-- on_data writing to its own connection (an echo) needs no lookup
	local st = current
	if not st or st.conn ~= self then st = managed(self, "write") end
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
	if st.closed or st.closing then
		if not isstr then data:release() end
		return closed_result(st)
	end
	local n, above, en = send(self, data)
	if not n then
		if not isstr and valid(data) then data:release() end
		return nil, above, en
	end
	if not above then return true end
	st.above = true -- until "writable"
	local hst = running
	if hst and hst.co == co_running() then
		-- handler coroutine: wait until the queue drains
		repeat
			st.wwait = hst
			co_yield()
			if st.closed or st.err then return closed_result(st) end
		until not st.above
		return true
	end
	local sst = current
	if sst and not st.blocked[sst] then
		own(st, "blocked")[sst] = true
		own(sst, "blocked_by")[st] = true
		update_recv(sst)
	end
	return false
end

--- In a handler coroutine: the next received buffer, waiting (yielding) for
-- it.  Returns nil at end of stream (EOF), or nil, message, errno after an
-- error or close.  Received buffers wait in a small queue; receiving
-- pauses while it is full.
function Conn:read()
	local st = managed(self, "read")
	local hst = running
	if not hst or hst.co ~= co_running() then
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
			update_recv(st)
			return b
		end
		if st.err then return nil, st.err, st.errno end
		if st.eof then return nil end
		if st.closed then return nil, "connection closed", EPIPE end
		st.rwait = hst
		co_yield()
	end
end

--- Stop receiving (data waits in the socket).
function Conn:pause()
	local st = conn_state(self)
	if not st then return core.ub_conn_pause_recv(self) end
	st.user_paused = true
	update_recv(st)
	return true
end

--- Receive again after pause() (or start, for a `no_recv` connection).
function Conn:resume()
	local st = conn_state(self)
	if not st or st.closed then return core.ub_conn_resume_recv(self) end
	st.user_paused = false
	update_recv(st)
	return true
end

--- Half-close once everything written has gone out (the core shuts the
-- sending side when its queue has drained).
function Conn:shutdown()
	return core.ub_conn_shutdown(self)
end

--- Graceful close: what was written goes out, then shutdown, then close
-- (within the connection's close_timeout, else an abort); a "closed"
-- event (on_close) follows.
function Conn:close()
	local st = conn_state(self)
	if st then
		if st.closing or st.closed then
			return nil, "Broken pipe", EPIPE
		end
		st.closing = true
	end
	return core.ub_conn_close(self)
end

--- Abort: drop what is queued, reset the connection; "closed" follows.
function Conn:abort()
	local st = conn_state(self)
	if st then return abort_state(st) end
	return core.ub_conn_abort(self)
end

-- ---- dispatch ----------------------------------------------------------

-- on_data runs with its connection as the source that a refused write
-- pauses (forwarding what it received); other callbacks produce data of
-- their own and pause nothing.
local function call_data(f, st, conn, buf)
	local prev = current
	current = st
	f(conn, buf)
	current = prev
end

local function call(f, conn, ...)
	local prev = current
	current = nil
	f(conn, ...)
	current = prev
end

-- The state an event's connection had when the batch was fetched, or, for
-- one that a callback earlier in this batch took on (a connection accepted
-- or connected in this batch), its state now.
local function state_of(e)
	return e.state or conn_state(e.conn)
end

local dispatch = {}

dispatch.accept = function(srv, e)
	local conn = e.conn
	srv = state(e.listener) or srv
	local st = new_state(srv, conn, srv.handlers, not srv.copts.no_recv)
	if st.h.on_connect then call(st.h.on_connect, conn) end
	if st.h.handler and not st.closed then start_handler(conn, st) end
end

dispatch.connect = function(srv, e)
	local conn = e.conn
	local st = state_of(e)
	if not st then return end
	if e.res < 0 then
		fail_state(st, strerror(-e.res), -e.res)
		wake(st, "rwait")
		wake(st, "wwait")
		return
	end
	st.connected = true
	if st.h.on_connect then call(st.h.on_connect, conn) end
end

dispatch.data = function(srv, e)
	local buf = e.buf
	e.buf = nil -- the batch must not keep it from __gc
	local st = e.state or conn_state(e.conn)
	if not st then
		if srv.on_event then return srv.on_event(e) end
		return buf:release()
	end
	if st.closing or st.closed then return buf:release() end
	local on_data = st.h.on_data
	if on_data then
		call_data(on_data, st, e.conn, buf)
		-- Kept, or dropped for __gc: see collect_kept().
		if valid(buf) then srv.ls.kept[st] = true end
		return
	end
	srv.ls.kept[st] = true
	own(st, "inq")[st.iq + st.inq_n] = buf
	st.inq_n = st.inq_n + 1
	if st.inq_n >= INQ_MAX then update_recv(st) end
	wake(st, "rwait")
end

dispatch.writable = function(srv, e)
	local st = state_of(e)
	if not st then return end
	local conn = st.conn
	if st.above and valid(conn) and
		core.ub_conn_queued_bytes(conn) > core.ub_conn_low_water(conn) and
		core.ub_conn_want_writable(conn) then
		-- written above the mark again since the event was queued
		-- (earlier in this batch): the next "writable" tells
		return
	end
	st.above = nil
	unblock(st)
	if st.h.on_drain then call(st.h.on_drain, st.conn) end
	wake(st, "wwait")
end

dispatch.eof = function(srv, e)
	local st = state_of(e)
	if not st then return end
	st.eof = true
	if st.rwait then
		wake(st, "rwait")
	elseif st.h.on_eof then
		call(st.h.on_eof, st.conn)
	elseif not st.h.handler then
		-- Default: the peer is done, so are we once our data is out.
		st.conn:close()
	end
end

dispatch.error = function(srv, e)
	if not e.conn then
		srv = e.state or srv
		if srv.on_listener_error then
			return srv.on_listener_error(e.listener, strerror(-e.res), -e.res)
		end
		io.stderr:write("uringbuf: accept: ", strerror(-e.res), "\n")
		return
	end
	local st = state_of(e)
	if not st then return end
	fail_state(st, strerror(-e.res), -e.res)
	st.closing = true
	wake(st, "rwait")
	wake(st, "wwait")
end

dispatch.closed = function(srv, e)
	local conn = e.conn
	if not conn then
		local lsrv = e.state
		if lsrv then
			lsrv.listener_closed = true
			set_state(e.listener, nil)
		end
		return
	end
	local st = state_of(e)
	if not st then return end
	st.closed = true
	st.closing = true
	if e.res < 0 then fail_state(st, strerror(-e.res), -e.res) end
	release_all(st)
	unblock(st)
	for dst in pairs(st.blocked_by) do
		dst.blocked[st] = nil
	end
	wake(st, "rwait")
	wake(st, "wwait")
	if st.h.on_close then call(st.h.on_close, conn, st.err, st.errno) end
	-- The C runtime drops it too when the handle is cut (next wait); now,
	-- so that conn:write() in later callbacks sees an unmanaged connection.
	set_state(conn, nil)
end

dispatch.sent = function(srv, e)
	local st = state_of(e)
	if st and st.h.on_sent then call(st.h.on_sent, e.conn, e.res) end
end

-- A datagram endpoint's event: to the endpoint object of uringbuf.udp that
-- manages it (its state slot), else to on_event; an unclaimed buffer goes
-- back to its pool.
local function dispatch_dgram(srv, e)
	local ep = e.state
	if type(ep) == "table" and ep._event then return ep:_event(e) end
	if srv.on_event then return srv.on_event(e) end
	if e.buf then
		local buf = e.buf
		e.buf = nil
		buf:release()
	end
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
	pool_count = true, pool_size = true, pool_incremental = true,
	entries = true, backlog = true,
	reuseport = true, signals = true, on_event = true, timeout = true,
	on_listener_error = true, sndbuf = true, rcvbuf = true,
	max_connections = true, workers = true, on_worker_exit = true }

local workers -- workers(t): below

--- Create a server: a loop (or `loop=`), a listener, and the dispatcher.
--
-- Fields: `host` (default "127.0.0.1") and `port` (default 0), or
-- `listen = "HOST:PORT"`; `mode` ("bundle", "ring", "serial", "auto");
-- `pool_count`, `pool_size`, `pool_incremental`, `entries` for a new
-- loop; `backlog`,
-- `reuseport`; connection options (`high_water`, `low_water`, `no_recv`,
-- ...); `signals = true` to stop on SIGINT/SIGTERM; `sndbuf`, `rcvbuf`.
-- Isolation: `recv_budget` (bytes of the receive pool one connection may
-- hold, default 256 KiB), `idle_timeout`, `connect_timeout`,
-- `close_timeout` (seconds; default none, none, 30; 0 or math.huge: none,
-- close_timeout = math.huge: never), `max_connections` (accept at most
-- that many at once).
--
-- Events of datagram endpoints on the same loop go to their `uringbuf.udp`
-- endpoint objects (or `on_event`).
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
--
-- `workers = N` (or 0 / "auto": one per CPU) runs the server in N worker
-- processes instead, each with its own loop and its own listener on the
-- same TCP address (`SO_REUSEPORT`); the result is then a supervisor (see
-- `Workers`), and the callbacks run in the workers.
-- @return server, or nil, message, errno (e.g. mode unavailable, address
--   in use)
function S.server(t)
	if type(t) ~= "table" then
		argerror(1, "server", "table expected, got " .. type(t))
	end
	local h, copts = check_handlers(t, "server", server_keys)
	check_max_conns(t.max_connections, 1, "server")
	if t.workers ~= nil then
		-- not a tail call: argument errors must blame server's caller
		local w, msg, en = workers(t)
		return w, msg, en
	end
	if t.on_worker_exit ~= nil then
		argerror(1, "server", "field 'on_worker_exit': only with workers")
	end
	local own = false
	local loop = t.loop
	if loop == nil then
		local msg, en
		loop, msg, en = ub.loop{ pool_count = t.pool_count,
			pool_size = t.pool_size, entries = t.entries,
			pool_incremental = t.pool_incremental }
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
		on_listener_error = t.on_listener_error,
		ls = loop_state(loop) }, Server)
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
		set_state(l, srv)
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
	local st = new_state(self, conn, h, not copts.no_recv)
	if h.handler then start_handler(conn, st) end
	return conn
end

--- Dispatch one event (for loops driven by hand: `for each e of
-- loop:wait() do srv:dispatch(e) end`).
function Server:dispatch(e)
	if e.dgram then return dispatch_dgram(self, e) end
	local f = dispatch[e.type]
	if f then f(self, e) end
end

local collect_at = 0
local collect_every = 0.05 -- seconds; doubles while collections free nothing
local gc_wanted = false

-- Whether a connection that kept buffers in the last batch has been
-- stopped by its receive budget: the buffers it holds may be garbage.
local function collect_kept(kept)
	for st in pairs(kept) do
		kept[st] = nil
		if not gc_wanted and valid(st.conn) and
			core.ub_conn_recv_throttled(st.conn) then
			gc_wanted = true
		end
	end
end

-- What the application holds of pool p: its buffers, and the slices of an
-- incremental pool (a collected slice may leave its pool buffer held by
-- others, so the buffers alone would not show it back).
local function held_of(p)
	return core.ub_pool_count_state(p, core.UB_BUF_APP) + core.ub_pool_slices(p)
end

-- Give back the buffers callbacks dropped (they return on __gc) now
-- rather than when allocation gets round to it: when the receive pool is
-- dry, or a connection that kept buffers is at its budget.  At most every
-- 50 ms (gc_wanted waits for the next call meanwhile); while collections
-- give no buffer back (the buffers are held on purpose: backpressure),
-- the interval doubles, up to 2 s.
local function maybe_collect(srv)
	local kept = srv.ls.kept
	if next(kept) then collect_kept(kept) end
	local p = srv.rpool
	if p and not valid(p) then p = nil end
	if gc_wanted or (p and
		core.ub_pool_count_state(p, core.UB_BUF_KERNEL) == 0) then
		local now = core.now()
		if now >= collect_at then
			gc_wanted = false
			local before = p and held_of(p)
			collectgarbage()
			if p and held_of(p) >= before then
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

-- The index of the event dispatch_from is delivering (where a callback
-- that raised left it).
local cur = 0

-- Deliver events i..n of a batch.  A callback may close the loop
-- (srv:close()): the rest of the batch is gone with it.
local function dispatch_from(srv, n, ev, i, closes)
	for j = i, n do
		if closes ~= I.loop_closes and not valid(srv.loop) then return end
		cur = j
		local e = ev[j]
		if e.dgram then
			dispatch_dgram(srv, e)
		else
			local f = dispatch[e.type]
			if f then f(srv, e) end
		end
	end
end

-- A callback's error, with its traceback (it is raised again later).
local function msgh(err)
	if type(err) == "string" then return debug.traceback(err, 2) end
	return err
end

-- Dispatch a batch of n events; then collect dropped buffers where needed
-- (see maybe_collect()).  A callback that raises does not take the rest of
-- the batch with it (other connections' data): the rest is delivered, and
-- then the first error is raised, as for on_datagram (wait()).
local function process(srv, n, ev)
	local closes = I.loop_closes
	local i, first = 1, nil
	local outer = cur -- a callback's own step(): the outer batch's place
	while i <= n do
		local ok, err = xpcall(dispatch_from, msgh, srv, n, ev, i, closes)
		if ok then break end
		if first == nil then first = err end
		i = cur + 1
	end
	-- A callback wait() called for a datagram raised: raised here, once
	-- the rest of its batch was delivered.
	local err = ev.err
	if err ~= nil then
		ev.err = nil
		if first == nil then first = err end
	end
	cur = outer
	if not (closes ~= I.loop_closes and not valid(srv.loop)) then
		maybe_collect(srv)
	end
	if first ~= nil then error(first, 0) end
end

--- Wait once (at most timeout_ms, default 500) and dispatch the batch.
-- @tparam[opt=500] integer timeout_ms
-- @return the number of events, or nil, message, errno
function Server:step(timeout_ms)
	timeout_ms = timeout_ms or 500
	local n, ev, en = self.loop:wait(1, timeout_ms, nil, true)
	if not n then
		if en == errno.EINTR then return 0 end
		return nil, ev, en
	end
	process(self, n, ev)
	return n + ev.fast
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
	if gc_wanted then maybe_collect(self) end
	for _ = 1, max_rounds or 16 do
		if not woken and needs_wait and not needs_wait(loop) then
			return total, false
		end
		woken = false
		local n, ev, en = loop:wait(0, 0, nil, true)
		if not n then
			if en == errno.EINTR then return total, true end
			return nil, ev, en
		end
		local fast = ev.fast
		if n + fast == 0 then return total, false end
		process(self, n, ev)
		total = total + n + fast
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

--- `uringbuf.server(t):run()`, then close: serve until stopped.  With
-- `workers = N`: until SIGINT/SIGTERM (or timeout) in every worker.
-- @return as Server:run (or Workers:run)
function S.serve(t)
	local srv, msg, en = S.server(t)
	if not srv then return nil, msg, en end
	local ok, why, en2 = srv:run(t.timeout)
	srv:close()
	return ok, why, en2
end

-- ---- workers ------------------------------------------------------------
--
-- One supervisor (the calling process) and N workers (forked from it), each
-- with its own loop and its own listening socket on the same TCP address
-- with SO_REUSEPORT.  Why not one listening socket shared by all: with
-- multishot accepts from N rings on one socket, every new connection wakes
-- every worker and the first to run takes it, which under load piles the
-- connections on whichever worker is least busy at that instant, and a
-- stalled worker's armed accepts keep taking its share; with SO_REUSEPORT
-- the kernel gives each worker its own accept queue and spreads the
-- connections over them by a hash of the 4-tuple, and no two workers
-- contend for one socket.  (What it costs: the connections waiting in a
-- worker's accept queue when that worker dies are reset.)
--
-- Port 0: the first worker listens first and reports the port the kernel
-- gave it; the others then listen on that port.
-- Start-up: each worker reports on a pipe, "ok" or its error; the
-- supervisor returns once all have (or fails, stopping those that did).
-- Shutdown: the supervisor catches SIGINT/SIGTERM (as signals = true) and
-- sends SIGTERM to every worker, waits for them (at most STOP_GRACE
-- seconds, then SIGKILL), and returns.  A supervisor that dies, even by
-- SIGKILL, takes its workers with it: each asks the kernel for SIGTERM
-- when its parent exits (PR_SET_PDEATHSIG) and checks that the parent is
-- still the one that forked it.

local STOP_GRACE = 10   -- seconds from SIGTERM to SIGKILL
local START_LIMIT = 30  -- seconds for the workers to report
local TICK = 0.05       -- seconds between the supervisor's checks

local Workers = {}
Workers.__index = Workers
S.Workers = Workers

local function worker_count(n)
	if n == "auto" or n == 0 then return core.ncpus() end
	if math.type(n) ~= "integer" then
		argerror(1, "server", "field 'workers': integer or \"auto\" " ..
			"expected, got " .. (math.type(n) or type(n)), 4)
	end
	if n < 0 or n > 1024 then
		argerror(1, "server", "field 'workers': value out of range " ..
			"(0..1024)", 4)
	end
	return n
end

-- In a worker: serve, then leave the process without returning to the
-- caller's code (which belongs to the supervisor).  Reports "ok ADDR" or
-- "err ERRNO MESSAGE" on the pipe's write end wfd.
local function worker_main(t, addr, ppid, rfd, wfd)
	local code = 1
	local ok, err = pcall(function()
		core.fd_close(rfd)
		-- The parent's own exit, however it comes, ends us too; a parent
		-- gone before that call is seen as a changed parent.
		core.set_pdeathsig(core.signals.SIGTERM)
		if core.getppid() ~= ppid then
			core.fd_write(wfd, "err 0 supervisor gone\n")
			return
		end
		local st = {}
		for k, v in pairs(t) do st[k] = v end
		st.workers, st.on_worker_exit, st.timeout = nil, nil, nil
		st.host, st.port, st.listen = nil, nil, addr
		st.reuseport, st.signals = true, true
		local srv, msg, en = S.server(st)
		if not srv then
			core.fd_write(wfd, string.format("err %d %s\n", en or 0,
				tostring(msg)))
			return
		end
		core.fd_write(wfd, "ok " .. srv.address .. "\n")
		core.fd_close(wfd)
		wfd = nil
		-- no timeout of its own: the supervisor stops it (SIGTERM)
		local rok, why = srv:run()
		srv:close()
		if rok then
			code = 0
		else
			io.stderr:write(string.format("uringbuf: worker %d: %s\n",
				core.getpid(), tostring(why)))
		end
	end)
	if not ok then
		io.stderr:write(string.format("uringbuf: worker %d: %s\n",
			core.getpid(), tostring(err)))
		if wfd then core.fd_write(wfd, "err 0 " ..
			tostring(err):gsub("\n", " ") .. "\n") end
		code = 1
	end
	io.stdout:flush()
	io.stderr:flush()
	-- No closing of the Lua state: what the supervisor had open before
	-- the fork (its loops among them) is not ours to free.
	os.exit(code, false)
end

-- "exited with status 0" / "killed by signal 9"
local function describe(how, code)
	if how == "signaled" then return "killed by signal " .. code end
	if how == "unknown" then return "ended (status unknown)" end
	return "exited with status " .. code
end

-- Wait for worker pid (block: until it ends; else only if it has).  Once it
-- has ended: record it, and report it if it ended on its own.
local function reap_one(self, pid, block)
	local r, how, code = core.waitpid(pid, not block)
	if r == 0 then return end
	if r == nil then
		-- ECHILD: reaped by someone else (SIGCHLD set to SIG_IGN)
		if code ~= errno.ECHILD then return end
		how, code = "unknown", nil
	end
	self.live[pid] = nil
	self.nlive = self.nlive - 1
	self.exits[pid] = { how = how, code = code }
	if how ~= "exited" or code ~= 0 then
		if how ~= "unknown" then
			self.failures[#self.failures + 1] = string.format(
				"worker %d %s", pid, describe(how, code))
		end
		if not self.stopping then
			if self.on_worker_exit then
				self.on_worker_exit(pid, how, code)
			else
				io.stderr:write(string.format("uringbuf: worker %d %s\n",
					pid, describe(how, code)))
			end
		end
	end
end

-- Reap every worker that has ended, without waiting.
local function reap(self)
	for pid in pairs(self.live) do reap_one(self, pid, false) end
end

local function signal_all(self, sig)
	for pid in pairs(self.live) do core.kill(pid, sig) end
end

-- Stop every worker: SIGTERM, wait (at most STOP_GRACE s), SIGKILL.
local function stop_all(self)
	if not self.stopping then
		self.stopping = true
		signal_all(self, core.signals.SIGTERM)
	end
	local deadline = core.now() + STOP_GRACE
	while self.nlive > 0 and core.now() < deadline do
		reap(self)
		if self.nlive == 0 then break end
		core.sleep(TICK)
	end
	if self.nlive > 0 then
		signal_all(self, core.signals.SIGKILL)
		-- SIGKILL cannot be caught: each ends now
		for pid in pairs(self.live) do reap_one(self, pid, true) end
	end
end

-- Read the start-up reports (lines) of the workers batch from rfd until
-- each has reported or the limit passed; a worker that died before
-- reporting fails the start.  Returns the reports in arrival order, or nil,
-- message, errno.
local function read_reports(self, rfd, batch)
	local n = #batch
	local reports, buf = {}, ""
	local deadline = core.now() + START_LIMIT
	while #reports < n do
		local s, msg, en = core.fd_read(rfd, 4096)
		if s and #s > 0 then
			buf = buf .. s
			for line in buf:gmatch("([^\n]*)\n") do
				reports[#reports + 1] = line
			end
			buf = buf:match("[^\n]*$")
		elseif s == nil and en ~= errno.EAGAIN then
			return nil, msg, en
		else
			reap(self)
			local live = 0
			for _, pid in ipairs(batch) do
				if self.live[pid] then live = live + 1 end
			end
			if live < n - #reports then
				return nil, "a worker ended before it was listening", errno.EIO
			end
			if core.signaled() then
				return nil, "interrupted while starting the workers",
					errno.EINTR
			end
			if core.now() >= deadline then
				return nil, "the workers did not start in " ..
					START_LIMIT .. " s", errno.ETIMEDOUT
			end
			core.sleep(TICK)
		end
	end
	for i, line in ipairs(reports) do
		local en, msg = line:match("^err (%d+) (.*)$")
		if en then
			en = tonumber(en)
			return nil, msg, en ~= 0 and en or errno.EIO
		end
		local a = line:match("^ok (.+)$")
		if not a then
			return nil, "worker report " .. i .. " unreadable", errno.EIO
		end
		reports[i] = a
	end
	return reports
end

-- Fork n workers listening on addr; reports go to a fresh pipe.
-- Returns the address they listen on, or nil, message, errno.
local function spawn(self, t, addr, n)
	local rfd, wfd, en = core.pipe()
	if not rfd then return nil, wfd, en end
	local ppid = core.getpid()
	local batch = {}
	for _ = 1, n do
		local pid, msg, fen = core.fork()
		if not pid then
			core.fd_close(rfd)
			core.fd_close(wfd)
			return nil, msg, fen
		end
		if pid == 0 then worker_main(t, addr, ppid, rfd, wfd) end
		self.live[pid] = true
		self.nlive = self.nlive + 1
		self.pids[#self.pids + 1] = pid
		batch[#batch + 1] = pid
	end
	core.fd_close(wfd)
	local reports, msg, ren = read_reports(self, rfd, batch)
	core.fd_close(rfd)
	if not reports then return nil, msg, ren end
	return reports[1]
end

-- server{workers = N, ...} in the supervisor.
workers = function(t)
	local n = worker_count(t.workers)
	if t.loop ~= nil then
		argerror(1, "server", "field 'loop': a loop cannot be shared " ..
			"with workers (a ring does not survive fork)", 3)
	end
	if t.on_worker_exit ~= nil and type(t.on_worker_exit) ~= "function" then
		argerror(1, "server", "field 'on_worker_exit': function expected, " ..
			"got " .. type(t.on_worker_exit), 3)
	end
	if not (t.listen or t.host or t.port) then
		argerror(1, "server", "field 'workers': needs an address to " ..
			"listen on (host, port or listen)", 3)
	end
	local addr = t.listen or join_addr(t.host, t.port)
	if type(addr) ~= "string" or not core.ub_addr_parse(addr) then
		argerror(1, "server", "malformed address '" .. tostring(addr) ..
			"' (HOST:PORT or [V6]:PORT)", 3)
	end
	local canon = core.ub_addr_parse(addr)
	local host, port = split_addr(canon)
	if not host or canon:find("^unix:") or canon:find("^/") then
		argerror(1, "server", "field 'workers': needs a TCP address " ..
			"(each worker listens on it with SO_REUSEPORT), got '" ..
			addr .. "'", 3)
	end
	if n == 0 then n = 1 end
	-- Caught from here on: a signal while starting stops what started;
	-- the workers inherit the handlers (their own run() watches them).
	core.catch_signals()
	local self = setmetatable({ workers = n, pids = {}, live = {},
		nlive = 0, exits = {}, failures = {},
		on_worker_exit = t.on_worker_exit }, Workers)
	local a, msg, en
	if port == 0 and n > 1 then
		-- the first worker picks the port, the others join it
		a, msg, en = spawn(self, t, addr, 1)
		if a then
			local _, p = split_addr(a)
			local b
			b, msg, en = spawn(self, t, join_addr(host, p), n - 1)
			if not b then a = nil end
		end
	else
		a, msg, en = spawn(self, t, addr, n)
	end
	if not a then
		stop_all(self)
		return nil, msg, en
	end
	self.address = a
	self.host, self.port = split_addr(a)
	return self
end

--- The supervisor of `server{workers = N, ...}` (in the calling process;
-- the callbacks run in the workers).  Fields: `address`, `host`, `port`
-- (as a server's), `workers` (N), `pids` (the workers' process ids, in
-- start order), `exits` (pid -> `{how = "exited"|"signaled", code =}`
-- once a worker has ended).
-- @type Workers

--- Supervise until SIGINT/SIGTERM (forwarded to every worker as SIGTERM),
-- timeout seconds (the workers are then stopped the same way), or until
-- every worker has ended.  A worker that ends on its own is reported
-- (`on_worker_exit(pid, how, code)`, default: a line on stderr); the
-- others keep serving (the kernel spreads new connections over the
-- listeners left).  Returns once every worker has been waited for.
-- @return true, "signal" | "timeout" if every worker exited with status
--   0; else nil, message (which workers failed, and how), EIO
function Workers:run(timeout)
	local deadline = timeout and core.now() + timeout
	local why
	while true do
		reap(self)
		if self.nlive == 0 then
			why = why or "workers"
			break
		end
		if core.signaled() then
			why = "signal"
			break
		end
		if deadline and core.now() >= deadline then
			why = "timeout"
			break
		end
		local left = TICK
		if deadline then left = math.max(0, math.min(left, deadline - core.now())) end
		core.sleep(left) -- a caught signal cuts it short
	end
	stop_all(self)
	if #self.failures > 0 then
		return nil, table.concat(self.failures, "; "), errno.EIO
	end
	if why == "workers" then
		return nil, "every worker ended", errno.EIO
	end
	return true, why
end

--- Stop every worker (SIGTERM; SIGKILL after 10 s) and wait for them.
-- Idempotent.
-- @return true
function Workers:close()
	stop_all(self)
	return true
end
Workers.__close = Workers.close

return S
