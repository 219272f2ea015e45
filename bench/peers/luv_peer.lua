#!/usr/bin/env lua5.4
--[[
luv_peer.lua - the luv (libuv for Lua, Debian lua-luv) contender of
bench/run: a TCP proxy (with --to) or an echo server (without), written the
way luv's documentation shows streams being used: read_start() callbacks,
write() of each chunk to the other side, TCP_NODELAY on every socket.

  lua5.4 bench/peers/luv_peer.lua --listen HOST:PORT [--to HOST:PORT]

Backpressure (libuv has no built-in flow control between two streams): when
a write would leave more than HIGH bytes queued on the destination, reading
from the source stops, and that write's callback (which runs once it and
everything before it has gone out) starts it again.  EOF on one side
shuts the other side's sending half; both close once both directions ended.
Proxy: the client is read only once its upstream is connected.

Prints "listening on HOST:PORT"; exits 0 on SIGINT/SIGTERM.
]]
local uv = require "luv"

local HIGH = 64 * 1024 -- asyncio's default high water mark

local listen, to
do
	local i = 1
	while i <= #arg do
		if arg[i] == "--listen" then listen = arg[i + 1]; i = i + 2
		elseif arg[i] == "--to" then to = arg[i + 1]; i = i + 2
		else io.stderr:write("luv_peer: bad argument ", arg[i], "\n"); os.exit(1) end
	end
end
local function hostport(s)
	local h, p = s:match("^%[?(.-)%]?:(%d+)$")
	if not h then io.stderr:write("luv_peer: want HOST:PORT, not ", s, "\n"); os.exit(1) end
	return h, tonumber(p)
end
if not listen then io.stderr:write("luv_peer: --listen HOST:PORT is required\n"); os.exit(1) end

local function close(h)
	if h and not h:is_closing() then h:close() end
end

-- Forward everything read from src into dst; on_end(err) when src ends.
local function forward(src, dst, on_end)
	local reader
	reader = function(err, data)
		if err then
			on_end(err)
		elseif data then
			if dst:is_closing() then return end
			if dst:get_write_queue_size() + #data > HIGH then
				src:read_stop()
				dst:write(data, function(werr)
					if not werr and not src:is_closing() then
						src:read_start(reader)
					end
				end)
			else
				dst:write(data)
			end
		else
			on_end(nil)
		end
	end
	src:read_start(reader)
end

local server = uv.new_tcp()
local lh, lp = hostport(listen)
assert(server:bind(lh, lp))
local th, tp
if to then th, tp = hostport(to) end

local function on_client(client)
	client:nodelay(true)
	if not to then -- echo
		forward(client, client, function(err)
			if err then close(client) else
				client:shutdown(function() close(client) end)
			end
		end)
		return
	end
	local up = uv.new_tcp()
	up:nodelay(true)
	local eof = 0
	local function done(err)
		if err then close(client); close(up); return end
		eof = eof + 1
		if eof == 2 then close(client); close(up) end
	end
	up:connect(th, tp, function(err)
		if err then
			io.stderr:write("proxy: connect to ", to, ": ", err, "\n")
			close(client); close(up)
			return
		end
		if client:is_closing() then close(up); return end
		forward(client, up, function(e)
			if not e and not up:is_closing() then up:shutdown() end
			done(e)
		end)
		forward(up, client, function(e)
			if not e and not client:is_closing() then client:shutdown() end
			done(e)
		end)
	end)
end

assert(server:listen(4096, function(err)
	if err then io.stderr:write("accept: ", err, "\n"); return end
	local client = uv.new_tcp()
	if server:accept(client) then on_client(client) else close(client) end
end))
local name = server:getsockname()
io.stdout:write(("listening on %s:%d\n"):format(name.ip, name.port))
io.stdout:flush()

-- A peer that resets must cost a write error, not the process (libuv leaves
-- SIGPIPE alone): watching it with a no-op handler keeps it from killing us.
local pipe_sig = uv.new_signal()
pipe_sig:start("sigpipe", function() end)
pipe_sig:unref()

local function on_signal() uv.stop() end
for _, sig in ipairs{ "sigint", "sigterm" } do
	local s = uv.new_signal()
	s:start(sig, on_signal)
	s:unref()
end
uv.run("default")
os.exit(0)
