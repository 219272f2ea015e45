#!/usr/bin/env lua5.4
--[[
echo.lua - echo server: every received buffer goes straight back out on the
same connection, zero copy (conn:write(buf) queues the pool's own buffer; no
Lua string is ever made of the data).

  lua5.4 examples/echo.lua --listen HOST:PORT [--mode bundle|ring|serial|auto]
                           [--buf-size BYTES] [--buf-count N]
                           [--recv-budget BYTES] [--idle-timeout MS]
                           [--max-conns N]

The same command line as examples/echo.c: prints "listening on HOST:PORT"
(the real port after port 0) and exits 0 on SIGINT/SIGTERM.

Backpressure: when a connection's send queue is above its high water mark,
conn:write() holds the buffer back (in order) and the server helper pauses
receiving on that connection until the queue drains.  On EOF the helper
closes the connection once everything written has gone out.
]]

local uringbuf = require "uringbuf"

local PROG = "echo"

local function usage(f)
	f:write("usage: ", PROG, " --listen HOST:PORT [--mode bundle|ring|serial|auto]\n",
		"       [--buf-size BYTES] [--buf-count N] [--recv-budget BYTES]\n",
		"       [--idle-timeout MS] [--max-conns N]\n",
		"  --listen HOST:PORT   address to accept on (port 0: any free port)\n",
		"  --mode M             send mode (default auto: the best available)\n",
		"  --buf-size BYTES     receive pool buffer size (default 4096)\n",
		"  --buf-count N        receive pool buffers (default 1024)\n",
		"  --recv-budget BYTES  receive pool bytes one connection may hold\n",
		"                       (default 262144)\n",
		"  --idle-timeout MS    close a connection that received and sent\n",
		"                       nothing for MS (default: never)\n",
		"  --max-conns N        accept at most N connections at once\n",
		"Prints \"listening on HOST:PORT\"; exits 0 on SIGINT/SIGTERM.\n")
end

local function die(...)
	io.stderr:write(PROG, ": ", ...)
	io.stderr:write("\n")
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
	local o = { mode = "auto" }
	local i = 1
	while i <= #argv do
		local a = argv[i]
		local name, val = a:match("^(%-%-[%w-]+)=(.*)$")
		if not name then name = a end
		local function value()
			if val then return val end
			i = i + 1
			if argv[i] == nil then
				io.stderr:write(PROG, ": bad option '", a, "'\n")
				usage(io.stderr)
				os.exit(1)
			end
			return argv[i]
		end
		if name == "--listen" then
			o.listen = value()
		elseif name == "--mode" then
			o.mode = value()
			if not (o.mode == "auto" or o.mode == "bundle" or
				o.mode == "ring" or o.mode == "serial") then
				die("unknown --mode '", o.mode,
					"' (bundle, ring, serial or auto)")
			end
		elseif name == "--buf-size" then
			o.buf_size = parse_uint("--buf-size", value(), 1, 1 << 30)
		elseif name == "--buf-count" then
			o.buf_count = parse_uint("--buf-count", value(), 1, 32768)
		elseif name == "--recv-budget" then
			o.recv_budget = parse_uint("--recv-budget", value(), 1, 1 << 30)
		elseif name == "--idle-timeout" then
			-- milliseconds on the command line (as the C examples);
			-- seconds in Lua
			o.idle_timeout = parse_uint("--idle-timeout", value(), 1,
				86400000) / 1000
		elseif name == "--max-conns" then
			o.max_conns = parse_uint("--max-conns", value(), 1, 1000000)
		elseif name == "--help" then
			usage(io.stdout)
			os.exit(0)
		elseif a:sub(1, 1) == "-" then
			io.stderr:write(PROG, ": bad option '", a, "'\n")
			usage(io.stderr)
			os.exit(1)
		else
			io.stderr:write(PROG, ": unexpected argument '", a, "'\n")
			usage(io.stderr)
			os.exit(1)
		end
		i = i + 1
	end
	if not o.listen then
		io.stderr:write(PROG, ": --listen HOST:PORT is required\n")
		usage(io.stderr)
		os.exit(1)
	end
	return o
end

local o = parse_args(arg)

local loop, err = uringbuf.loop{ pool_count = o.buf_count, pool_size = o.buf_size }
if not loop then die("cannot create the io_uring loop: ", err) end
local ok, reason = loop:mode_check(o.mode)
if not ok then die("mode ", o.mode, " unavailable: ", reason) end
if not loop:recv_pool() then
	die("cannot create a receive pool of ", o.buf_count or 1024, " x ",
		o.buf_size or 4096, " bytes")
end
if not uringbuf.parse_address(o.listen) then
	die("bad --listen address '", o.listen, "': Invalid argument")
end

local srv, msg = uringbuf.server{
	loop = loop,
	listen = o.listen,
	mode = o.mode,
	recv_budget = o.recv_budget,
	idle_timeout = o.idle_timeout,
	max_connections = o.max_conns,
	signals = true,
	on_data = function(conn, buf)
		-- Zero copy: the received buffer itself joins the send queue.
		conn:write(buf)
	end,
	on_listener_error = function(_, m)
		io.stderr:write(PROG, ": accept: ", m, "\n")
	end,
}
if not srv then
	loop:close()
	die("cannot listen on ", o.listen, ": ", msg)
end
io.stdout:write("listening on ", srv.address, "\n")
io.stdout:flush()

local status = 0
local done, why, en = srv:run()
if not done then
	io.stderr:write(PROG, ": ", why, "\n")
	status = 1
end
local closed, cerr = loop:close()
if not closed then
	io.stderr:write(PROG, ": ub_loop_free: ", cerr, "\n")
	status = 1
end
os.exit(status)
