#!/usr/bin/env lua5.4
--[[
kv.lua - a small in-memory key-value server speaking RESP2 (the redis
protocol): GET, SET, DEL, PING and CONFIG GET, inline or multibulk,
pipelined, so redis-benchmark and redis-cli can drive it.

  lua5.4 examples/kv.lua --listen HOST:PORT [--mode bundle|ring|serial|auto]
                         [--max-memory BYTES] [--max-bulk BYTES]
                         [--max-args N] [--max-inline BYTES]
                         [--buf-size BYTES] [--buf-count N]
                         [--recv-budget BYTES] [--idle-timeout MS]
                         [--max-conns N]

The same command line and output as examples/kv.c: prints
"listening on HOST:PORT" (the real port after port 0) and exits 0 on
SIGINT/SIGTERM, 1 on a bad argument.

Per received buffer: one copy out of the pool (tostring(buf)), the buffer
released at once, every request in it parsed with anchored string.find,
every reply of it joined into one conn:write().  Values are stored as their
encoded GET reply, so a GET hit formats nothing.

Bounds, as in kv.c: a request is at most --max-args arguments of at most
--max-bulk bytes and 2 * max-bulk + 64 KiB in all, an inline request at
most --max-inline bytes; beyond, or on garbage, the client gets
"-ERR Protocol error: ..." and the connection closes.  Replies: when
conn:write() holds data back (the send queue is above its high water
mark), parsing stops, what was received waits unparsed and the connection
pauses until on_drain; parsing also writes out every OUT_MAX bytes of
replies, so one buffer of GETs of big values is never one huge write.
Stored keys and values are bounded by --max-memory: a SET beyond gets -OOM.
]]

local uringbuf = require "uringbuf"

local PROG = "kv"
local OUT_MAX = 256 * 1024 -- reply bytes written at once while parsing
local HDR_MAX = 32         -- longest "*N" / "$N" line, CRLF included

local byte, find, sub, upper, lower, format, concat =
	string.byte, string.find, string.sub, string.upper, string.lower,
	string.format, table.concat

local function usage(f)
	f:write("usage: ", PROG, " --listen HOST:PORT [--mode bundle|ring|serial|auto]\n",
		"       [--max-memory BYTES] [--max-bulk BYTES] [--max-args N]\n",
		"       [--max-inline BYTES] [--buf-size BYTES] [--buf-count N]\n",
		"       [--recv-budget BYTES] [--idle-timeout MS] [--max-conns N]\n",
		"  --listen HOST:PORT   address to accept on (port 0: any free port)\n",
		"  --mode M             send mode (default auto: the best available)\n",
		"  --max-memory BYTES   key + value bytes stored; a SET beyond gets\n",
		"                       -OOM (default 64 MiB)\n",
		"  --max-bulk BYTES     longest argument (default 1 MiB)\n",
		"  --max-args N         most arguments of a request (default 1024)\n",
		"  --max-inline BYTES   longest inline request (default 64 KiB)\n",
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
	local o = { mode = "auto", max_memory = 64 << 20, max_bulk = 1 << 20,
		max_args = 1024, max_inline = 64 << 10 }
	local uints = {
		["--max-memory"] = { "max_memory", 0, 1 << 40 },
		["--max-bulk"] = { "max_bulk", 1, 512 << 20 },
		["--max-args"] = { "max_args", 1, 1 << 20 },
		["--max-inline"] = { "max_inline", 16, 1 << 30 },
		["--buf-size"] = { "buf_size", 1, 1 << 30 },
		["--buf-count"] = { "buf_count", 1, 32768 },
		["--recv-budget"] = { "recv_budget", 1, 1 << 30 },
		["--idle-timeout"] = { "idle_ms", 1, 86400000 },
		["--max-conns"] = { "max_conns", 1, 1000000 },
	}
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
		elseif uints[name] then
			local u = uints[name]
			o[u[1]] = parse_uint(name, value(), u[2], u[3])
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
local MAX_BULK, MAX_ARGS, MAX_INLINE = o.max_bulk, o.max_args, o.max_inline
local MAX_REQUEST = 2 * o.max_bulk + 64 * 1024
local MAX_MEMORY = o.max_memory

-- ---- the store --------------------------------------------------------

-- key -> the encoded bulk reply of its value; used: key + value bytes.
local db, used = {}, 0

local OK, NIL, PONG = "+OK\r\n", "$-1\r\n", "+PONG\r\n"
local OOM = "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
-- CONFIG GET: redis-benchmark asks for "save" and "appendonly" at start
-- and wants [name, value] pairs; other names match nothing.
local CONFIG = { save = "$4\r\nsave\r\n$0\r\n\r\n",
	appendonly = "$10\r\nappendonly\r\n$2\r\nno\r\n" }
local CONFIG_ORDER = { "save", "appendonly" }

-- The value's length from its stored reply ("$N\r\n...\r\n").
local function value_len(reply)
	return #reply - find(reply, "\r\n", 1, true) - 3
end

-- Client bytes inside an error line: CR/LF would end it early.
local function quote(s, limit)
	return (sub(s, 1, limit):gsub("[\r\n]", " "))
end

local function wrong(name)
	return "-ERR wrong number of arguments for '" .. name .. "' command\r\n"
end

local function set(args, na)
	if na ~= 3 then
		if na > 3 then
			return "-ERR syntax error (SET options are not supported)\r\n"
		end
		return wrong("set")
	end
	local k, v = args[2], args[3]
	local old = db[k]
	local u = used + #k + #v
	if old then u = u - #k - value_len(old) end
	if u > MAX_MEMORY then return OOM end
	db[k] = format("$%d\r\n%s\r\n", #v, v)
	used = u
	return OK
end

-- Everything but the GET and SET fast paths.
local function command(args, na)
	local cmd = upper(args[1])
	if cmd == "GET" then
		if na ~= 2 then return wrong("get") end
		return db[args[2]] or NIL
	elseif cmd == "SET" then
		return set(args, na)
	elseif cmd == "DEL" then
		if na < 2 then return wrong("del") end
		local gone = 0
		for i = 2, na do
			local k = args[i]
			local v = db[k]
			if v then
				db[k] = nil
				used = used - #k - value_len(v)
				gone = gone + 1
			end
		end
		return ":" .. gone .. "\r\n"
	elseif cmd == "PING" then
		if na == 1 then return PONG end
		if na == 2 then return format("$%d\r\n%s\r\n", #args[2], args[2]) end
		return wrong("ping")
	elseif cmd == "CONFIG" then
		if na < 2 then return wrong("config") end
		if upper(args[2]) ~= "GET" then
			return "-ERR unknown subcommand '" .. quote(args[2], 64) ..
				"'. Try CONFIG GET.\r\n"
		end
		if na < 3 then return wrong("config|get") end
		local hits, nh = {}, 0
		for _, name in ipairs(CONFIG_ORDER) do
			for i = 3, na do
				if lower(args[i]) == name then
					nh = nh + 1
					hits[nh] = CONFIG[name]
					break
				end
			end
		end
		return "*" .. 2 * nh .. "\r\n" .. concat(hits)
	end
	local t = { "-ERR unknown command '", quote(args[1], 64),
		"', with args beginning with: " }
	for i = 2, math.min(na, 4) do
		t[#t + 1] = "'" .. quote(args[i], 32) .. "' "
	end
	t[#t + 1] = "\r\n"
	return concat(t)
end

-- ---- connections ------------------------------------------------------

-- conn -> its state: pending (received, not yet run: a partial request,
-- or all of it while writing is held back), paused, eof, done.
local states = {}

-- Replies of one run, joined into one write (runs never nest).
local out, on = {}, 0

local function protocol_error(conn, st, why)
	on = on + 1
	out[on] = "-ERR Protocol error: " .. why .. "\r\n"
	conn:write(concat(out, "", 1, on))
	on = 0
	st.done = true
	st.pending = ""
	conn:close()
end

-- Write the replies so far; false if the write was held back.
local function flush(conn)
	local s = concat(out, "", 1, on)
	on = 0
	return conn:write(s) ~= false
end

-- Run the requests in data until one is incomplete (kept in st.pending)
-- or a write is held back (the rest kept, the connection paused).
local function run(conn, st, data)
	local pos, n, olen = 1, #data, 0
	local args, na
	while pos <= n do
		if byte(data, pos) == 42 then -- "*": multibulk, the common case
			local _, e, cnt = find(data, "^(%d+)\r\n", pos + 1)
			if not e then
				if find(data, "^%-1\r\n", pos + 1) then
					pos = pos + 5
					goto next
				end
				-- all digits (and maybe CR) to the end: partial
				local _, de = find(data, "^%-?%d*\r?", pos + 1)
				if de < n or n - pos + 1 >= HDR_MAX then
					return protocol_error(conn, st,
						de < n and "invalid multibulk length"
						or "too big mbulk count string")
				end
				break
			end
			if e - pos + 1 > HDR_MAX then
				return protocol_error(conn, st, "too big mbulk count string")
			end
			cnt = tonumber(cnt)
			if cnt > MAX_ARGS then
				return protocol_error(conn, st, "invalid multibulk length")
			end
			local p = e + 1
			args, na = {}, 0
			for i = 1, cnt do
				if p > n then na = nil; break end
				if byte(data, p) ~= 36 then -- "$"
					return protocol_error(conn, st, "expected '$'")
				end
				local _, he, len = find(data, "^(%d+)\r\n", p + 1)
				if not he then
					local _, de = find(data, "^%d*\r?", p + 1)
					if de < n or n - p + 1 >= HDR_MAX then
						return protocol_error(conn, st, "invalid bulk length")
					end
					na = nil
					break
				end
				len = tonumber(len)
				if he - p + 1 > HDR_MAX or len > MAX_BULK then
					return protocol_error(conn, st, "invalid bulk length")
				end
				local s = he + 1
				local last = s + len - 1
				if last + 2 > n then
					if last + 2 - pos + 1 > MAX_REQUEST then
						return protocol_error(conn, st, "request too big")
					end
					na = nil
					break
				end
				if byte(data, last + 1) ~= 13 or byte(data, last + 2) ~= 10 then
					return protocol_error(conn, st, "expected CRLF after bulk")
				end
				args[i] = sub(data, s, last)
				na = i
				p = last + 3
			end
			if not na then break end -- incomplete: wait for more
			pos = p
			if na == 0 then goto next end
		else
			local e = find(data, "\n", pos, true)
			if not e or e - pos >= MAX_INLINE then
				if (e or n + 1) - pos >= MAX_INLINE then
					return protocol_error(conn, st, "too big inline request")
				end
				break
			end
			args, na = {}, 0
			for w in string.gmatch(sub(data, pos, e - 1), "[^ \t\r]+") do
				na = na + 1
				if na > MAX_ARGS then
					return protocol_error(conn, st,
						"too many arguments in inline request")
				end
				args[na] = w
			end
			pos = e + 1
			if na == 0 then goto next end
		end
		do
			local cmd, r = args[1], nil
			if cmd == "GET" or cmd == "get" then
				if na == 2 then
					r = db[args[2]] or NIL
				else
					r = wrong("get")
				end
			elseif cmd == "SET" or cmd == "set" then
				r = set(args, na)
			else
				r = command(args, na)
			end
			on = on + 1
			out[on] = r
			olen = olen + #r
			if olen >= OUT_MAX then
				olen = 0
				if not flush(conn) then
					st.paused = true
					conn:pause()
					st.pending = sub(data, pos)
					return
				end
			end
		end
		::next::
	end
	local rest = sub(data, pos)
	if #rest > MAX_REQUEST then
		-- complete arguments can add up too: bound the request
		return protocol_error(conn, st, "request too big")
	end
	st.pending = rest
	if on > 0 and not flush(conn) then
		st.paused = true
		conn:pause()
	end
end

-- ---- the server -------------------------------------------------------

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
	idle_timeout = o.idle_ms and o.idle_ms / 1000,
	max_connections = o.max_conns,
	signals = true,
	on_connect = function(conn)
		states[conn] = { pending = "", paused = false }
	end,
	on_data = function(conn, buf)
		local data = tostring(buf)
		buf:release() -- back to the pool before any work
		local st = states[conn]
		if not st or st.done then return end
		if st.pending ~= "" then data = st.pending .. data end
		if st.paused then
			st.pending = data
			return
		end
		run(conn, st, data)
	end,
	on_drain = function(conn)
		local st = states[conn]
		if not st or not st.paused or st.done then return end
		st.paused = false
		if st.pending ~= "" then run(conn, st, st.pending) end
		if st.paused or st.done then return end
		if st.eof then
			conn:close()
		else
			conn:resume()
		end
	end,
	on_eof = function(conn)
		local st = states[conn]
		if st and st.paused and st.pending ~= "" then
			st.eof = true -- finish what waits first (on_drain)
		else
			conn:close()
		end
	end,
	on_close = function(conn)
		states[conn] = nil
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
