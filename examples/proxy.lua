#!/usr/bin/env lua5.4
--[[
proxy.lua - TCP proxy: each accepted client gets its own connection to the
target, and everything is forwarded both ways without copies.

  lua5.4 examples/proxy.lua --listen HOST:PORT --to HOST:PORT
                            [--mode bundle|ring|serial|auto] [--pipe]
                            [--buf-size BYTES] [--buf-count N] [--inc]
                            [--recv-budget BYTES] [--idle-timeout MS]
                            [--max-conns N] [--luv | --cqueues]

The same command line as examples/proxy.c, plus --pipe: prints
"listening on HOST:PORT" (the real port after port 0) and exits 0 on
SIGINT/SIGTERM.

Which event loop runs it:
  default    uringbuf's own: srv:run() blocks in the ring.
  --luv      a luv (libuv) loop: require "uringbuf.luv"; the ring fd is a
             uv_poll_t in uv.run(), signals come from uv.new_signal.
  --cqueues  a cqueues controller: require "uringbuf.cqueues"; cq:loop(),
             signals from cqueues.signal.
The proxy code is the same in all three; comparing them measures what the
integration costs (see bench/).

Two ways to forward:
  default  per-buffer: each received buffer reaches on_data(conn, buf) and is
           written to the other side with conn:write(buf) - zero copy, but a
           trip through Lua per buffer (where a proxy that inspects data
           would look at it).  A refused write holds the buffer back and
           pauses the side that produced it until the other drains.
  --pipe   core-side: conn:pipe(other) both ways; the core forwards every
           buffer itself with backpressure and no "data" events.

Clients receive into the loop's receive pool (--buf-size x --buf-count),
upstream connections into a second pool of the same kind, as in proxy.c:
with one pool for both directions every buffer could sit queued towards
the target while its replies wait for a buffer here (seen with 8 buffers
for 8 clients).

--inc makes the receive pools incremental (the loop option
pool_incremental): a receive takes only the bytes it needs from a
--buf-size buffer, and each slice is forwarded as it is.  Where the kernel
lacks it, one line on stderr says why and the pools are ordinary ones.

A client is accepted with no_recv: nothing is received before there is
somewhere to forward it.  Once the upstream connects, both sides start
receiving.  EOF on one side half-closes the other once its queue drained;
once both directions have seen EOF both close.  An error or close on one
side closes the other gracefully (what it queued still goes out); a failed
connect aborts the client.
]]

local uringbuf = require "uringbuf"

local PROG = "proxy"

local function usage(f)
	f:write("usage: ", PROG, " --listen HOST:PORT --to HOST:PORT [--mode bundle|ring|serial|auto]\n",
		"       [--pipe] [--buf-size BYTES] [--buf-count N] [--inc] [--recv-budget BYTES]\n",
		"       [--idle-timeout MS] [--max-conns N] [--luv | --cqueues]\n",
		"  --listen HOST:PORT   address to accept on (port 0: any free port)\n",
		"  --to HOST:PORT       where to forward each connection\n",
		"  --mode M             send mode (default auto: the best available)\n",
		"  --pipe               forward in the core (conn:pipe) instead of per buffer in Lua\n",
		"  --buf-size BYTES     receive pool buffer size (default 4096)\n",
		"  --buf-count N        receive pool buffers (default 1024)\n",
		"  --inc                incremental receive pool of --buf-size buffers: a\n",
		"                       receive takes only the bytes it needs (Linux 6.12+;\n",
		"                       elsewhere one line on stderr says why not, and the\n",
		"                       pool is not)\n",
		"  --recv-budget BYTES  receive pool bytes one connection may hold\n",
		"                       (default 262144)\n",
		"  --idle-timeout MS    close a connection that received and sent\n",
		"                       nothing for MS (default: never)\n",
		"  --max-conns N        accept at most N connections at once\n",
		"  --luv                run in a luv (libuv) loop via uringbuf.luv\n",
		"  --cqueues            run in a cqueues controller via uringbuf.cqueues\n",
		"Prints \"listening on HOST:PORT\"; exits 0 on SIGINT/SIGTERM.\n")
end

local function warn(...)
	io.stderr:write(PROG, ": ", ...)
	io.stderr:write("\n")
end

local function die(...)
	warn(...)
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
	local function bad(a)
		io.stderr:write(PROG, ": bad option '", a, "'\n")
		usage(io.stderr)
		os.exit(1)
	end
	while i <= #argv do
		local a = argv[i]
		local name, val = a:match("^(%-%-[%w-]+)=(.*)$")
		if not name then name = a end
		local function value()
			if val then return val end
			i = i + 1
			if argv[i] == nil then bad(a) end
			return argv[i]
		end
		if name == "--listen" then
			o.listen = value()
		elseif name == "--to" then
			o.to = value()
		elseif name == "--mode" then
			o.mode = value()
			if not (o.mode == "auto" or o.mode == "bundle" or
				o.mode == "ring" or o.mode == "serial") then
				die("unknown --mode '", o.mode,
					"' (bundle, ring, serial or auto)")
			end
		elseif name == "--pipe" and not val then
			o.pipe = true
		elseif name == "--inc" and not val then
			o.inc = true
		elseif (name == "--luv" or name == "--cqueues") and not val then
			if o.host and o.host ~= name:sub(3) then
				die("--luv and --cqueues exclude each other")
			end
			o.host = name:sub(3)
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
			bad(a)
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
	if not o.to then
		io.stderr:write(PROG, ": --to HOST:PORT is required\n")
		usage(io.stderr)
		os.exit(1)
	end
	return o
end

local o = parse_args(arg)
if not uringbuf.parse_address(o.to) then
	die("bad --to address '", o.to, "': Invalid argument")
end
if not uringbuf.parse_address(o.listen) then
	die("bad --listen address '", o.listen, "': Invalid argument")
end

local loop, err = uringbuf.loop{ pool_count = o.buf_count, pool_size = o.buf_size,
	pool_incremental = o.inc }
if not loop then die("cannot create the io_uring loop: ", err) end
local ok, reason = loop:mode_check(o.mode)
if not ok then die("mode ", o.mode, " unavailable: ", reason) end
local rpool, perr = loop:recv_pool()
if not rpool then
	die("cannot create a receive pool of ", o.buf_count or 1024, " x ",
		o.buf_size or 4096, " bytes: ", tostring(perr))
end
if o.inc and not rpool:incremental() then
	local why = loop:features().pbuf_inc
	warn("--inc: the receive pool fell back to whole buffers: ",
		why == true and "(no reason given)" or tostring(why))
end
-- The upstream side receives into a pool of its own (as proxy.c): with one
-- pool for both directions, every buffer could sit queued towards the
-- target while its replies wait for a buffer here.
local up_pool, uperr = loop:pool(rpool:count(), rpool:buf_size(), "recv",
	{ incremental = rpool:incremental() })
if not up_pool then
	die("cannot create the upstream receive pool: ", tostring(uperr))
end

-- conn -> its pair { client =, upstream =, connected =, eof = {} }
local pair_of = {}

local function partner(conn)
	local p = pair_of[conn]
	if not p then return nil end
	if p.client == conn then return p.upstream end
	return p.client
end

local srv -- the server (below); upstreams are its outbound connections

-- Per-buffer forwarding: the buffer goes to the other side's send queue.
local function on_data(conn, buf)
	local other = partner(conn)
	if other then
		other:write(buf) -- zero copy; releases buf itself on failure
	else
		buf:release()
	end
end

local function on_eof(conn)
	local p = pair_of[conn]
	if not p then return end
	p.eof[conn] = true
	local other = partner(conn)
	-- With pipes the core shuts the other side's sending half itself.
	if other and not o.pipe then other:shutdown() end
	if p.eof[p.client] and p.eof[p.upstream] then
		p.client:close()
		p.upstream:close()
	end
end

local function on_close(conn, errmsg)
	local p = pair_of[conn]
	if not p then return end
	local other = partner(conn)
	pair_of[conn] = nil
	if conn == p.upstream then
		p.upstream = nil
		if not p.connected and errmsg then
			warn("connect to ", o.to, ": ", errmsg)
		end
	else
		p.client = nil
	end
	if other and uringbuf.valid(other) then
		if o.pipe then other:pipe(nil) end
		if p.connected then other:close() else other:abort() end
	end
end

local function on_upstream_connect(up)
	local p = pair_of[up]
	if not p then return end
	local client = p.client
	if not client then
		up:abort() -- the client left while we were connecting
		return
	end
	p.connected = true
	local okp, perr = true, nil
	if o.pipe then
		okp, perr = client:pipe(up)
		if okp then okp, perr = up:pipe(client) end
	end
	if okp then okp, perr = client:resume() end
	if okp then okp, perr = up:resume() end
	if not okp then
		warn("setting up the forwarding: ", perr)
		client:abort()
		up:abort()
	end
end

local function on_accept(client)
	local p = { client = client, eof = {} }
	pair_of[client] = p
	local up, cerr = srv:connect(o.to, {
		mode = o.mode,
		recv_pool = up_pool,
		no_recv = true,
		recv_budget = o.recv_budget,
		idle_timeout = o.idle_timeout,
		on_connect = on_upstream_connect,
		on_data = on_data,
		on_eof = on_eof,
		on_close = on_close,
	})
	if not up then
		warn("connect: ", cerr)
		client:abort() -- its CLOSED drops the pair
		return
	end
	p.upstream = up
	pair_of[up] = p
end

-- The host event loop, if any: load it before anything is created, so a
-- missing library is reported before the proxy listens.
local host
if o.host then
	local okh, mod = pcall(require, "uringbuf." .. o.host)
	if not okh then
		loop:close()
		die("--", o.host, ": ", tostring(mod):match("^[^\n]*"))
	end
	host = mod
end

local msg
srv, msg = uringbuf.server{
	loop = loop,
	listen = o.listen,
	mode = o.mode,
	no_recv = true,
	recv_budget = o.recv_budget,
	idle_timeout = o.idle_timeout,
	max_connections = o.max_conns,
	signals = not host,
	on_connect = on_accept,
	on_data = on_data,
	on_eof = on_eof,
	on_close = on_close,
	on_listener_error = function(_, m) warn("accept: ", m) end,
}
if not srv then
	loop:close()
	die("cannot listen on ", o.listen, ": ", msg)
end
io.stdout:write("listening on ", srv.address, "\n")
io.stdout:flush()

local status = 0

-- Run until SIGINT/SIGTERM under the host loop.  The connections still
-- open then are aborted by loop:close(), as in srv:run() mode.
local function run_luv()
	local uv = require "luv"
	local att, aerr = host.attach(srv, { on_error = function(m)
		warn(m)
		status = 1
		uv.stop()
	end })
	if not att then die("uv.new_poll: ", aerr) end
	local sigs = {}
	local function stop()
		att:close()
		for _, s in ipairs(sigs) do s:close() end
	end
	for _, name in ipairs({ "sigint", "sigterm" }) do
		local s = uv.new_signal()
		s:start(name, stop)
		sigs[#sigs + 1] = s
	end
	uv.run()
end

local function run_cqueues()
	local cqueues = require "cqueues"
	local signal = require "cqueues.signal"
	local cq = cqueues.new()
	local att = host.attach(cq, srv)
	signal.block(signal.SIGINT, signal.SIGTERM)
	local sl = signal.listen(signal.SIGINT, signal.SIGTERM)
	cq:wrap(function()
		sl:wait()
		att:close()
	end)
	local okl, lerr = cq:loop()
	if not okl then
		warn(tostring(lerr))
		status = 1
	end
end

if host then
	-- SIGPIPE ignored; SIGINT/SIGTERM are the host loop's from here on.
	uringbuf.catch_signals()
	if o.host == "luv" then run_luv() else run_cqueues() end
else
	local done, why = srv:run()
	if not done then
		warn(why)
		status = 1
	end
end
local closed, cerr = loop:close()
if not closed then
	warn("ub_loop_free: ", cerr)
	status = 1
end
os.exit(status)
