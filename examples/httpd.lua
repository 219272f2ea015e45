#!/usr/bin/env lua5.4
--[[
httpd.lua - HTTP/1.1 "hello world" server (no framework): every request
(any method, any path) is answered "200 OK", body "Hello, World!"
(Content-Type: text/plain; a HEAD request gets the headers only).

  lua5.4 examples/httpd.lua --listen HOST:PORT [--mode bundle|ring|serial|auto]
                            [--buf-size BYTES] [--buf-count N]
                            [--recv-budget BYTES] [--idle-timeout MS]
                            [--max-conns N] [--workers N]

--workers N (N > 1; 0: one per CPU) serves from N processes, each with its
own loop and its own SO_REUSEPORT listener (uringbuf.server{workers = N});
SIGINT/SIGTERM stop them all, and the supervisor exits 1 if one of them
failed.  --max-conns then holds per worker.

The examples' command line (examples/echo.lua): prints "listening on
HOST:PORT" (the real port after port 0) and exits 0 on SIGINT/SIGTERM, 1 on
a bad argument or a setup failure.

HTTP/1.1 connections stay open unless the request says "Connection: close";
HTTP/1.0 ones close after the reply unless it says "Connection: keep-alive".
Pipelined requests are answered in order, and a request may be split across
reads at any byte.  A request body (Content-Length) is read and discarded.
Limits, each answered and followed by closing: a header block over 8 KiB
(431), a malformed request (400), a body over 1 MiB (413),
"Transfer-Encoding" (501), an HTTP major version other than 1 (505).
Closing is lingering: the reply, then FIN (conn:shutdown()), then whatever
the client still sends is discarded until it closes (at most LINGER seconds
of silence), so a client still sending a body reads the error reply
instead of a reset.

Speed: each received buffer becomes one Lua string (tostring(buf), one
copy; string.find then runs on it) and goes straight back to the pool; all
replies for one received buffer leave in one conn:write().  Only a partial
request is kept between reads.  A client that pipelines and never reads the
replies cannot grow the server: above the send queue's high water mark
conn:write() returns false and the server helper stops receiving on that
connection until the queue drains.
]]

local uringbuf = require "uringbuf"

local PROG = "httpd"

local MAX_HEAD = 8192    -- request line + header fields, bytes
local MAX_BODY = 1 << 20 -- Content-Length accepted (and discarded)
local LINGER = 5         -- seconds a closing connection may stay silent

local function usage(f)
	f:write("usage: ", PROG, " --listen HOST:PORT [--mode bundle|ring|serial|auto]\n",
		"       [--buf-size BYTES] [--buf-count N] [--recv-budget BYTES]\n",
		"       [--idle-timeout MS] [--max-conns N] [--workers N]\n",
		"  --listen HOST:PORT   address to accept on (port 0: any free port)\n",
		"  --mode M             send mode (default auto: the best available)\n",
		"  --buf-size BYTES     receive pool buffer size (default 4096)\n",
		"  --buf-count N        receive pool buffers (default 1024)\n",
		"  --recv-budget BYTES  receive pool bytes one connection may hold\n",
		"                       (default 262144)\n",
		"  --idle-timeout MS    close a connection that received and sent\n",
		"                       nothing for MS (default: never)\n",
		"  --max-conns N        accept at most N connections at once\n",
		"  --workers N          worker processes (SO_REUSEPORT; 0: one per\n",
		"                       CPU; default 1)\n",
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
		elseif name == "--workers" then
			o.workers = parse_uint("--workers", value(), 0, 1024)
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


local find, match, gmatch = string.find, string.match, string.gmatch
local sub, byte, lower, concat = string.sub, string.byte, string.lower, table.concat
local os_time, os_date = os.time, os.date

-- RFC 9112: request-line = method SP request-target SP HTTP-version CRLF;
-- method is a token, the target any visible characters.
local REQUEST = "^([!#$%%&'*+.^_`|~%w%-]+) [\33-\126\128-\255]+ HTTP/(%d)%.%d\r\n"
-- field-line = field-name ":" OWS field-value OWS CRLF (no whitespace before
-- the colon, no obsolete line folding, no control characters).
local FIELD = "^([!#$%%&'*+.^_`|~%w%-]+):[\t\32-\126\128-\255]*\r\n"
local VALUE = "^[ \t]*(.-)[ \t]*\r\n"

local STATUS = { [400] = "Bad Request", [413] = "Content Too Large",
	[431] = "Request Header Fields Too Large", [501] = "Not Implemented",
	[505] = "HTTP Version Not Supported" }
local CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n"

-- The replies, rebuilt once a second for the Date header.  Index: 1 for
-- HEAD, 2 "Connection: close", 4 "Connection: keep-alive" (HTTP/1.0).
local replies, errors, expires

local function refresh(now)
	local date = os_date("!%a, %d %b %Y %H:%M:%S GMT", now)
	local head = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n" ..
		"Content-Type: text/plain\r\nDate: " .. date .. "\r\n"
	local r = {}
	for i = 0, 7 do
		local s = head
		if i & 2 ~= 0 then
			s = s .. "Connection: close\r\n"
		elseif i & 4 ~= 0 then
			s = s .. "Connection: keep-alive\r\n"
		end
		s = s .. "\r\n"
		if i & 1 == 0 then s = s .. "Hello, World!" end
		r[i] = s
	end
	local e = {}
	for code, text in pairs(STATUS) do
		e[code] = string.format("HTTP/1.1 %d %s\r\nContent-Length: 0\r\n" ..
			"Connection: close\r\nDate: %s\r\n\r\n", code, text, date)
	end
	replies, errors, expires = r, e, now + 1
end
refresh(os_time())

-- Act on the field lines from p to stop (the last one's LF).  Returns the
-- error status or 0, kind, Content-Length, whether to send 100 Continue.
local function fields(data, p, stop, kind)
	local clen, expect, http10 = -1, false, kind & 2 ~= 0
	while p <= stop do
		local _, e, name = find(data, FIELD, p)
		if not e then return 400 end
		local nl = #name
		-- only names of the lengths we look for are lowered and compared
		if nl == 14 or nl == 10 or nl == 17 or nl == 6 then
			local lname = lower(name)
			if lname == "content-length" then
				local v = match(data, VALUE, p + nl + 1)
				if clen >= 0 or not find(v, "^%d+$") or #v > 18 then
					return 400 -- duplicate, or not a number
				end
				clen = math.tointeger(tonumber(v))
				if clen > MAX_BODY then return 413 end
			elseif lname == "connection" then
				for tok in gmatch(lower(match(data, VALUE, p + nl + 1)), "[^,]+") do
					tok = match(tok, "^[ \t]*(.-)[ \t]*$")
					if tok == "close" then
						kind = (kind & ~4) | 2
						break
					elseif tok == "keep-alive" and kind & 2 ~= 0 then
						kind = (kind & ~2) | 4 -- an HTTP/1.0 client asked to stay
					end
				end
			elseif lname == "transfer-encoding" then
				return 501
			elseif lname == "expect" then
				expect = lower(match(data, VALUE, p + nl + 1)) == "100-continue"
			end
		end
		p = e + 1
	end
	if clen < 0 then clen = 0 end
	-- no 100 Continue for HTTP/1.0 (RFC 9110 15.2)
	return 0, kind, clen, expect and clen > 0 and not http10
end

local state = {} -- conn -> { rest = partial request, skip = body bytes left, done = }
local out = {}   -- the replies of one received buffer (reused: one on_data at a time)

local function on_data(conn, buf)
	local st = state[conn]
	if st.done then return buf:release() end -- lingering: discard
	local now = os_time()
	if now >= expires then refresh(now) end
	local data = tostring(buf)
	buf:release()
	local scan = 1
	local rest = st.rest
	if rest then
		data = rest .. data
		scan = #rest - 2 -- the blank line may end in the new bytes
		st.rest = nil
	end
	local n, pos, skip, nout, done = #data, 1, st.skip, 0, false
	while pos <= n do
		if skip > 0 then
			local left = n - pos + 1
			if left < skip then
				skip = skip - left
				break
			end
			pos = pos + skip
			skip = 0
			goto continue
		end
		if byte(data, pos) == 13 then -- an empty line before a request: ignored
			if byte(data, pos + 1) == 10 then
				pos = pos + 2
				goto continue
			elseif pos == n then
				st.rest = "\r"
				break
			end
		end
		do
			local s = find(data, "\r\n\r\n", scan > pos and scan or pos, true)
			if not s then
				if n - pos >= MAX_HEAD then
					nout = nout + 1; out[nout] = errors[431]; done = true
				elseif find(data, "\r\n", pos, true) and not find(data, REQUEST, pos) then
					nout = nout + 1; out[nout] = errors[400]; done = true
				else
					st.rest = pos == 1 and data or sub(data, pos)
				end
				break
			end
			if s - pos > MAX_HEAD then
				nout = nout + 1; out[nout] = errors[431]; done = true
				break
			end
			local _, le, method, major = find(data, REQUEST, pos)
			if not le then
				nout = nout + 1; out[nout] = errors[400]; done = true
				break
			end
			if major ~= "1" then
				nout = nout + 1; out[nout] = errors[505]; done = true
				break
			end
			local kind = byte(data, le - 2) == 48 and 2 or 0 -- HTTP/1.0 closes
			if method == "HEAD" then kind = kind | 1 end
			local clen = 0
			if le < s then -- field lines, le + 1 .. s + 1
				local status, expect
				status, kind, clen, expect = fields(data, le + 1, s + 1, kind)
				if status ~= 0 then
					nout = nout + 1; out[nout] = errors[status]; done = true
					break
				end
				if expect then nout = nout + 1; out[nout] = CONTINUE end
			end
			nout = nout + 1
			out[nout] = replies[kind]
			pos = s + 4
			if kind & 2 ~= 0 then
				done = true
				break
			end
			skip = clen
		end
		::continue::
	end
	st.skip = skip
	if nout > 0 then
		conn:write(nout == 1 and out[1] or concat(out, "", 1, nout))
		if done then
			st.done, st.rest = true, nil
			conn:shutdown() -- FIN after the reply; the client closes
			conn:set_idle_timeout(LINGER)
		end
	end
end

local o = parse_args(arg)

local function callbacks(t)
	t.on_connect = function(conn) state[conn] = { skip = 0 } end
	t.on_data = on_data
	t.on_close = function(conn) state[conn] = nil end
	t.on_listener_error = function(_, m)
		io.stderr:write(PROG, ": accept: ", m, "\n")
	end
	return t
end

if o.workers and o.workers ~= 1 then
	-- The mode check on a loop closed before the workers fork (a ring
	-- does not survive fork); each worker makes its own loop.
	local probe, perr = uringbuf.loop{}
	if not probe then die("cannot create the io_uring loop: ", perr) end
	local ok, reason = probe:mode_check(o.mode)
	probe:close()
	if not ok then die("mode ", o.mode, " unavailable: ", reason) end
	if not uringbuf.parse_address(o.listen) then
		die("bad --listen address '", o.listen, "': Invalid argument")
	end
	local group, msg = uringbuf.server(callbacks{
		workers = o.workers,
		listen = o.listen,
		pool_count = o.buf_count, pool_size = o.buf_size,
		mode = o.mode,
		recv_budget = o.recv_budget,
		idle_timeout = o.idle_timeout,
		max_connections = o.max_conns,
	})
	if not group then die("cannot listen on ", o.listen, ": ", msg) end
	io.stdout:write("listening on ", group.address, "\n")
	io.stdout:flush()
	local done, why = group:run()
	group:close()
	if not done then
		io.stderr:write(PROG, ": ", why, "\n")
		os.exit(1)
	end
	os.exit(0)
end

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

local srv, msg = uringbuf.server(callbacks{
	loop = loop,
	listen = o.listen,
	mode = o.mode,
	recv_budget = o.recv_budget,
	idle_timeout = o.idle_timeout,
	max_connections = o.max_conns,
	signals = true,
})
if not srv then
	loop:close()
	die("cannot listen on ", o.listen, ": ", msg)
end
io.stdout:write("listening on ", srv.address, "\n")
io.stdout:flush()

local status = 0
local done, why = srv:run()
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
