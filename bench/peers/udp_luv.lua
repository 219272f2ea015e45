#!/usr/bin/env lua5.4
--[[
udp_luv.lua - the luv (libuv for Lua, Debian lua-luv) UDP contender of
bench/run: a UDP echo server written the way luv's documentation shows UDP
being used: new_udp(), bind(), recv_start() with a callback that send()s
every datagram straight back to the address it came from.

  lua5.4 bench/peers/udp_luv.lua --listen HOST:PORT [--mmsgs N]

--mmsgs N (default 1, libuv's default) asks libuv to receive with
recvmmsg(), N datagrams per call (new_udp{mmsgs = N}).  The socket buffers
are the system's defaults, as for the uringbuf examples.  Port 0 picks a
free port; prints "listening on HOST:PORT"; exits 0 on SIGINT/SIGTERM.
]]
local uv = require "luv"

local listen, mmsgs = nil, 1
do
	local i = 1
	while i <= #arg do
		if arg[i] == "--listen" then listen = arg[i + 1]; i = i + 2
		elseif arg[i] == "--mmsgs" then mmsgs = tonumber(arg[i + 1]); i = i + 2
		else io.stderr:write("udp_luv: bad argument ", arg[i], "\n"); os.exit(1) end
	end
end
local function hostport(s)
	local h, p = (s or ""):match("^%[?(.-)%]?:(%d+)$")
	if not h then io.stderr:write("udp_luv: --listen wants HOST:PORT, not ", tostring(s), "\n"); os.exit(1) end
	return h, tonumber(p)
end
local lh, lp = hostport(listen)
if not mmsgs or mmsgs < 1 then io.stderr:write("udp_luv: --mmsgs wants a positive number\n"); os.exit(1) end

local udp = uv.new_udp(mmsgs > 1 and { family = lh:find(":") and "inet6" or "inet", mmsgs = mmsgs } or nil)
assert(udp:bind(lh, lp))

udp:recv_start(function(err, data, addr)
	if err then return end -- an ICMP error for one sender: go on
	if data then -- (data nil, addr nil: nothing more in this read)
		udp:send(data, addr.ip, addr.port)
	end
end)

local name = udp:getsockname()
io.stdout:write((name.ip:find(":") and "listening on [%s]:%d\n" or "listening on %s:%d\n"):format(name.ip, name.port))
io.stdout:flush()

local function on_signal() uv.stop() end
for _, sig in ipairs{ "sigint", "sigterm" } do
	local s = uv.new_signal()
	s:start(sig, on_signal)
	s:unref()
end
uv.run("default")
os.exit(0)
