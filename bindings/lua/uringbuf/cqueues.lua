--- uringbuf.cqueues: run uringbuf servers and connections inside a
-- cqueues controller, beside the application's own coroutines and
-- cqueues.socket objects.
--
--     local cqueues = require "cqueues"
--     local ubcq = require "uringbuf.cqueues"
--     local cq = cqueues.new()
--     local srv = ubcq.server(cq, { port = 8000,
--         on_data = function(conn, buf) conn:write(buf) end })
--     cq:wrap(function() ... cqueues.socket ... end)
--     assert(cq:loop())
--
-- How it works: an attachment is a cqueues pollable (`:pollfd()` is the
-- loop's eventfd, `loop:eventfd()`, registered with the ring, which polls
-- readable when completions are ready; `:events()` is "r"; `:timeout()` is
-- 0 while more events are ready, else nil).  The ring's own fd would not
-- do: with `IORING_SETUP_DEFER_TASKRUN`, which the core uses where the
-- kernel has it, completions wait as task work and do not wake pollers.  One coroutine in the controller polls
-- it and dispatches the server's events.  Work that Lua code queues
-- (writes, closes, connects, released buffers a starved receive waits for)
-- reaches the kernel only inside `loop:wait()`, and coroutines anywhere in
-- the controller may queue it, so the module also interposes the
-- controllers' `step` (`cqueues.interpose`): before a controller with an
-- attachment polls, the server is pumped once without blocking.  Nothing
-- here blocks the controller: every wait is `wait(0, 0)`.
--
-- The server's callbacks and handler coroutines run inside cqueues:
-- callbacks must not block (no cqueues.poll / socket calls in them: start a
-- coroutine with `cq:wrap` for that), and handler coroutines may only yield
-- through uringbuf (`conn:read()`, `conn:write()`).
-- @module uringbuf.cqueues
-- @license MIT

local ub = require "uringbuf"
local cqueues = require "cqueues"
local condition = require "cqueues.condition"

local M = {}

local Attach = {}
Attach.__index = Attach

-- controller -> { attachment = true, ... }; weak both ways so an abandoned
-- controller or attachment is not kept alive by this table.
local attached = setmetatable({}, { __mode = "k" })

local function argerror(n, fname, msg)
	error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg), 3)
end

local function is_server(x)
	return type(x) == "table" and type(x.pump) == "function" and
		x.loop ~= nil
end

local function detach(self)
	if not self.on then return end
	self.on = false
	local set = attached[self.cq]
	if set then
		set[self] = nil
		if next(set) == nil then attached[self.cq] = nil end
	end
	-- Wake the pump coroutine so it ends, and forget the fd before the
	-- server closes it.
	if self.fd then cqueues.cancel(self.fd) end
	self.cond:signal()
end

-- Pump the server once (bounded); remember whether more is ready.
local function run(self, woken)
	if not self.on then return end
	local srv = self.server
	if not ub.valid(srv.loop) then
		detach(self)
		return
	end
	local n, more, en = srv:pump(self.rounds, woken)
	if not n then
		self.error, self.errno = more, en
		detach(self)
		error(string.format("uringbuf: wait failed: %s", tostring(more)), 0)
	end
	self.more = more
end

-- Before any controller with an attachment polls the kernel: submit what
-- its coroutines queued, dispatch what is ready, and do not sleep if more
-- is ready.
local step
step = cqueues.interpose("step", function(cq, timeout)
	local set = attached[cq]
	if set then
		for a in pairs(set) do
			run(a, false)
			-- wake in time for more events or the next deadline
			local t = a:timeout()
			if t and (not timeout or t < timeout) then timeout = t end
		end
	end
	return step(cq, timeout)
end)

--- The loop's eventfd (cqueues pollable protocol).
function Attach:pollfd()
	return self.fd
end

--- "r" (cqueues pollable protocol).
function Attach:events()
	return "r"
end

--- 0 while more events are ready, else nil: the core keeps every
-- deadline and wakes the poll fd (cqueues pollable protocol).
function Attach:timeout()
	if self.more then return 0 end
	return nil
end

--- Process whatever is ready now, without blocking (normally the
-- attachment's coroutine does this; see `uringbuf.Server:pump`).
function Attach:pump()
	run(self, true)
end

--- Stop driving the server: end the attachment's coroutine (the server
-- itself stays open; close it afterwards).  Idempotent.
function Attach:close()
	detach(self)
	return true
end

--- Whether still attached.
function Attach:active()
	return self.on
end

--- Drive a server (from `uringbuf.server{...}`) from controller cq: adds
-- one coroutine to cq that lives until `close()` (so `cq:loop()` keeps
-- running, as it would for a listening socket).  From then on the
-- server's `close()` detaches first.
-- @param cq a cqueues controller (`cqueues.new()`)
-- @tparam table srv a uringbuf server
-- @tparam[opt] table opts `rounds` (event batches per wake-up, default 16)
-- @return the attachment (a pollable; methods `close`, `pump`, `active`),
--   or nil, message, errno
function M.attach(cq, srv, opts)
	if type(cq) ~= "userdata" or cqueues.type(cq) ~= "controller" then
		argerror(1, "attach", "cqueues controller expected, got " ..
			type(cq))
	end
	if not is_server(srv) then
		argerror(2, "attach", "uringbuf server expected, got " .. type(srv))
	end
	opts = opts or {}
	local fd, msg, en = srv.loop:poll_fd()
	if not fd then return nil, msg, en end
	local self = setmetatable({ server = srv, cq = cq,
		fd = fd, rounds = opts.rounds or 16,
		cond = condition.new(), on = true, more = false }, Attach)
	local set = attached[cq]
	if not set then
		set = setmetatable({}, { __mode = "k" })
		attached[cq] = set
	end
	set[self] = true
	-- Submit what was queued before attaching (listen, connect), as
	-- uringbuf.luv does.
	run(self, true)
	cq:wrap(function()
		while self.on do
			cqueues.poll(self, self.cond)
			run(self, true)
		end
	end)
	-- Closing the server detaches first (cqueues must forget the fd
	-- before it is closed).
	local close = srv.close
	function srv.close(s, ...)
		detach(self)
		return close(s, ...)
	end
	return self
end

--- `uringbuf.server(t)` driven by controller cq: the server (its
-- attachment is `srv.attachment`; `srv:close()` detaches, then
-- closes).  `t` takes the fields of `uringbuf.server`
-- (no `signals`: use cqueues.signal) and `rounds`.
-- @return server, or nil, message, errno
function M.server(cq, t)
	if type(t) ~= "table" then
		argerror(2, "server", "table expected, got " .. type(t))
	end
	if t.signals then
		argerror(2, "server", "field 'signals': use cqueues.signal")
	end
	if t.workers ~= nil then
		-- worker processes each run their own loop: only the
		-- module's own server can fork them
		argerror(2, "server", "field 'workers': not with cqueues (use uringbuf.server)")
	end
	local st = {}
	for k, v in pairs(t) do
		if k ~= "rounds" then st[k] = v end
	end
	local srv, msg, en = ub.server(st)
	if not srv then return nil, msg, en end
	local a, amsg, aen = M.attach(cq, srv, { rounds = t.rounds })
	if not a then
		srv:close()
		return nil, amsg, aen
	end
	srv.attachment = a
	return srv
end

--- `uringbuf.udp(t)` driven by controller cq: the endpoint (its
-- attachment is `ep.attachment`; `ep:close()` detaches, then closes).
-- `t` takes the fields of `uringbuf.udp` (no `signals`) and `rounds`.
-- @return endpoint, or nil, message, errno
function M.udp(cq, t)
	if type(t) ~= "table" then
		argerror(2, "udp", "table expected, got " .. type(t))
	end
	if t.signals then
		argerror(2, "udp", "field 'signals': use cqueues.signal")
	end
	local ut = {}
	for k, v in pairs(t) do
		if k ~= "rounds" then ut[k] = v end
	end
	local ep, msg, en = ub.udp(ut)
	if not ep then return nil, msg, en end
	local a, amsg, aen = M.attach(cq, ep, { rounds = t.rounds })
	if not a then
		ep:close()
		return nil, amsg, aen
	end
	ep.attachment = a
	return ep
end

return M
