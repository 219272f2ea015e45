#!/usr/bin/env lua5.4
--[[
udp_echo.lua - UDP (or Unix datagram) echo server: every received datagram
goes straight back to its sender, zero copy: ep:send(buf, addr) queues the
receive pool's own buffer, addressed to the source the kernel wrote into it
(no Lua string is ever made of the data).

  lua5.4 examples/udp_echo.lua --listen HOST:PORT [--buf-size BYTES]
                               [--buf-count N] [--recv-budget BYTES]

The same command line as examples/udp_echo.c: HOST:PORT as
uringbuf.parse_address reads it ("127.0.0.1:0", "[::1]:9000", "unix:/path",
"unix:@name"); port 0 picks a free port and the line "listening on
HOST:PORT" gives the real one.  Exits 0 on SIGINT/SIGTERM, 1 on a bad
argument.  Buffers default to 64 KiB + 128 bytes (the datagram header), so
that no UDP datagram is truncated (one that still is goes back as received,
cut).

Backpressure: replies that find no free slot wait in the core, in order,
and at the high water mark the endpoint stops receiving until the queue
drains (uringbuf.udp).  The replies are the receive pool's own buffers, so
the queue never holds more than the pool: the mark is the pool's size, and
no reply is ever refused.
]]

local uringbuf = require "uringbuf"

local PROG = "udp_echo"
local HDR = 128

local function usage(f)
	f:write("usage: ", PROG, " --listen HOST:PORT [--buf-size BYTES] [--buf-count N]\n",
		"       [--recv-budget BYTES]\n",
		"  --listen HOST:PORT   address to receive on (port 0: any free port;\n",
		"                       [V6]:PORT, unix:PATH, unix:@NAME)\n",
		"  --buf-size BYTES     receive pool buffer size, header included\n",
		"                       (default 65664: any UDP datagram fits)\n",
		"  --buf-count N        receive pool buffers (default 256)\n",
		"  --recv-budget BYTES  receive pool bytes the endpoint may hold\n",
		"                       (default: the whole pool)\n",
		"Prints \"listening on HOST:PORT\"; exits 0 on SIGINT/SIGTERM.\n")
end

local function die(...)
	io.stderr:write(PROG, ": ", ...)
	io.stderr:write("\n")
	os.exit(1)
end

local function bad(msg)
	io.stderr:write(PROG, ": ", msg, "\n")
	usage(io.stderr)
	os.exit(1)
end

local function parse_uint(name, s, min, max)
	local v = s and s:match("^%d+$") and math.tointeger(tonumber(s))
	if not v or v < min or v > max then
		die(name, " wants an integer in ", min, "..", max, ", not '",
			tostring(s), "'")
	end
	return v
end

local function parse_args(argv)
	local o = {}
	local i = 1
	while i <= #argv do
		local a = argv[i]
		local name, val = a:match("^(%-%-[%w-]+)=(.*)$")
		if not name then name = a end
		local function value()
			if val then return val end
			i = i + 1
			if argv[i] == nil then bad("bad option '" .. a .. "'") end
			return argv[i]
		end
		if name == "--listen" then
			o.listen = value()
		elseif name == "--buf-size" then
			o.buf_size = parse_uint("--buf-size", value(), HDR + 1, 1 << 30)
		elseif name == "--buf-count" then
			o.buf_count = parse_uint("--buf-count", value(), 1, 32768)
		elseif name == "--recv-budget" then
			o.recv_budget = parse_uint("--recv-budget", value(), 1, 1 << 40)
		elseif name == "--help" then
			usage(io.stdout)
			os.exit(0)
		elseif a:sub(1, 1) == "-" then
			bad("bad option '" .. a .. "'")
		else
			bad("unexpected argument '" .. a .. "'")
		end
		i = i + 1
	end
	if not o.listen then bad("--listen HOST:PORT is required") end
	return o
end

local o = parse_args(arg)
if not uringbuf.parse_address(o.listen) then
	die("bad --listen address '", o.listen, "': Invalid argument")
end
-- endpoints take buffers of a multiple of 8 bytes
local size = ((o.buf_size or (65536 + HDR)) + 7) & ~7
local count = o.buf_count or 256

local loop, err = uringbuf.loop{ pool_count = count, pool_size = size }
if not loop then die("cannot create the io_uring loop: ", err) end
local pool, perr = loop:pool(count, size, "recv")
if not pool then
	die("cannot create a receive pool of ", count, " x ", size, " bytes: ", perr)
end

local ep, msg = uringbuf.udp{
	loop = loop,
	listen = o.listen,
	recv_pool = pool,
	-- one endpoint, nobody to share the pool with: all of it
	recv_budget = o.recv_budget or count * size,
	queue_max = math.min(count, 32768), -- a reply per buffer never waits for a slot
	high_water = count * size, -- replies are pool buffers: never more
	signals = true,
	on_datagram = function(e, buf, addr)
		if not addr then
			-- an unbound Unix sender: nowhere to reply
			return buf:release()
		end
		-- Zero copy: the received buffer itself goes back to its source.
		local ok, m = e:send(buf, buf)
		if not ok then
			io.stderr:write(PROG, ": send: ", m, "\n")
			if uringbuf.valid(buf) then buf:release() end
		end
	end,
	on_error = function(_, m)
		-- a reply failed, or an ICMP error came back: not fatal
		io.stderr:write(PROG, ": ", m, "\n")
	end,
}
if not ep then
	loop:close()
	die("cannot open the endpoint on ", o.listen, ": ", msg)
end
io.stdout:write("listening on ", ep:address(), "\n")
io.stdout:flush()

local status = 0
local done, why = ep:run()
if not done then
	io.stderr:write(PROG, ": ", why, "\n")
	status = 1
end
ep:close()
local closed, cerr = loop:close()
if not closed then
	io.stderr:write(PROG, ": ub_loop_free: ", cerr, "\n")
	status = 1
end
os.exit(status)
