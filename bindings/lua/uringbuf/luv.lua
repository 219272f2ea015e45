--- uringbuf.luv: run uringbuf servers and connections inside a luv (libuv)
-- event loop, beside the application's own libuv handles.
--
--     local uv = require "luv"
--     local ubluv = require "uringbuf.luv"
--     local srv = ubluv.server{ port = 8000,
--         on_data = function(conn, buf) conn:write(buf) end }
--     -- ... uv.new_tcp(), uv.new_timer(), ... as usual
--     uv.run()
--
-- How it works: the loop's eventfd (`loop:eventfd()`, registered with the
-- ring) polls readable when completions are ready, so a `uv_poll_t` on it
-- (`uv.new_poll(fd)`) wakes libuv.  (The ring's own fd would not: with
-- `IORING_SETUP_DEFER_TASKRUN`, which the core uses where the kernel has it,
-- completions wait as task work and do not wake pollers.)  Work that Lua code queues (writes, closes, connects,
-- released buffers that a starved receive waits for) is submitted to the
-- kernel only inside `loop:wait()`, so a `uv_prepare_t` flushes it each
-- time libuv is about to block, whichever callback queued it.  Nothing here
-- blocks libuv: every wait is `wait(0, 0)`, and a burst of events is cut
-- into rounds, with a `uv_idle_t` keeping libuv from sleeping while more
-- are ready.
--
-- The server's callbacks and handler coroutines run from libuv callbacks.
-- Handler coroutines may only yield through uringbuf (`conn:read()`,
-- `conn:write()`), not through other coroutine libraries.
-- @module uringbuf.luv
-- @license MIT

local ub = require "uringbuf"
local uv = require "luv"

local M = {}

local Attach = {}
Attach.__index = Attach

local function argerror(n, fname, msg)
	error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg), 3)
end

local function is_server(x)
	return type(x) == "table" and type(x.pump) == "function" and
		x.loop ~= nil
end

-- Close the libuv handles (idempotent).
local function close_handles(self)
	for _, k in ipairs { "poll", "prepare", "idle" } do
		local h = self[k]
		if h then
			self[k] = nil
			if not h:is_closing() then h:close() end
		end
	end
end

-- Pump the server; keep libuv from sleeping while more is ready.
local function run(self, woken)
	local srv = self.server
	if not ub.valid(srv.loop) then
		-- the uringbuf loop was closed under us: its fd is gone
		close_handles(self)
		return
	end
	local n, more, en = srv:pump(self.rounds, woken)
	if not n then
		self.error, self.errno = more, en
		close_handles(self)
		if self.on_error then self.on_error(more, en) end
		return
	end
	local idle = self.idle
	if idle then
		if more and not self.idling then
			idle:start(self.idle_cb)
			self.idling = true
		elseif not more and self.idling then
			idle:stop()
			self.idling = false
		end
	end
end

--- Drive a server (from `uringbuf.server{...}`, or an endpoint from
-- `uringbuf.udp{...}`) from the running luv loop.  The poll handle on the loop's eventfd keeps `uv.run()` going
-- (like a listening uv_tcp_t) until `close()`.  From then on the server's
-- `close()` detaches first (libuv must stop polling an fd before it is
-- closed).
-- @tparam table srv a uringbuf server
-- @tparam[opt] table opts `rounds` (event batches per libuv callback,
--   default 16), `on_error(message, errno)` (a wait failed: the
--   integration has detached itself)
-- @return an attachment (methods `close`, `pump`, `active`; field
--   `server`), or nil, message, errno
function M.attach(srv, opts)
	if not is_server(srv) then
		argerror(1, "attach", "uringbuf server expected, got " .. type(srv))
	end
	opts = opts or {}
	local self = setmetatable({ server = srv, rounds = opts.rounds or 16,
		on_error = opts.on_error, idling = false }, Attach)
	local function cb() run(self, false) end
	self.idle_cb = function() run(self, true) end
	local fd, msg, en = srv.loop:poll_fd()
	if not fd then return nil, msg, en end
	local poll
	poll, msg = uv.new_poll(fd)
	if not poll then return nil, msg end
	self.poll = poll
	self.prepare = uv.new_prepare()
	self.idle = uv.new_idle()
	poll:start("r", function(err)
		if err then
			self.error = err
			close_handles(self)
			if self.on_error then self.on_error(err) end
			return
		end
		run(self, true)
	end)
	-- The prepare handle alone does not keep uv.run() alive: the poll
	-- handle does, as long as we are attached.
	self.prepare:start(cb)
	self.prepare:unref()
	self.idle:unref()
	-- Submit what was queued before attaching (listen, connect).
	run(self, true)
	local close = srv.close
	function srv.close(s, ...)
		self:close()
		return close(s, ...)
	end
	return self
end

--- Process whatever is ready now, without blocking (normally libuv calls
-- this; see `uringbuf.Server:pump`).
function Attach:pump()
	run(self, true)
end

--- Stop driving the server: close the libuv handles (the server itself
-- stays open; close it afterwards).  Idempotent.
function Attach:close()
	close_handles(self)
	return true
end

--- Whether still attached.
function Attach:active()
	return self.poll ~= nil
end

--- `uringbuf.server(t)` driven by luv: the server (its attachment is
-- `srv.attachment`; `srv:close()` detaches, then closes).  `t` takes
-- the fields of `uringbuf.server` (no `signals`:
-- signals are the host loop's, see `uv.new_signal`) and `attach`'s
-- options `rounds` and `on_error`.
-- @return server, or nil, message, errno
function M.server(t)
	if type(t) ~= "table" then
		argerror(1, "server", "table expected, got " .. type(t))
	end
	if t.signals then
		argerror(1, "server", "field 'signals': use uv.new_signal with luv")
	end
	if t.workers ~= nil then
		-- worker processes each run their own loop: only the
		-- module's own server can fork them
		argerror(1, "server", "field 'workers': not with luv (use uringbuf.server)")
	end
	local st = {}
	for k, v in pairs(t) do
		if k ~= "rounds" and k ~= "on_error" then st[k] = v end
	end
	local srv, msg, en = ub.server(st)
	if not srv then return nil, msg, en end
	local a, amsg, aen = M.attach(srv, { rounds = t.rounds,
		on_error = t.on_error })
	if not a then
		srv:close()
		return nil, amsg, aen
	end
	srv.attachment = a
	return srv
end

--- `uringbuf.udp(t)` driven by luv: the endpoint (its attachment is
-- `ep.attachment`; `ep:close()` detaches, then closes).  `t` takes the
-- fields of `uringbuf.udp` (no `signals`) and `rounds`; `on_attach_error`
-- is `attach`'s `on_error` (`on_error` is the endpoint's).
-- @return endpoint, or nil, message, errno
function M.udp(t)
	if type(t) ~= "table" then
		argerror(1, "udp", "table expected, got " .. type(t))
	end
	if t.signals then
		argerror(1, "udp", "field 'signals': use uv.new_signal with luv")
	end
	local ut = {}
	for k, v in pairs(t) do
		if k ~= "rounds" and k ~= "on_attach_error" then ut[k] = v end
	end
	local ep, msg, en = ub.udp(ut)
	if not ep then return nil, msg, en end
	local a, amsg, aen = M.attach(ep, { rounds = t.rounds,
		on_error = t.on_attach_error })
	if not a then
		ep:close()
		return nil, amsg, aen
	end
	ep.attachment = a
	return ep
end

return M
