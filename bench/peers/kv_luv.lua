#!/usr/bin/env lua5.4
--[[
kv_luv.lua - the luv (libuv for Lua, Debian lua-luv) contender of
bench/run's kv group: the key-value server of examples/kv.lua (RESP2: GET,
SET, DEL, PING, CONFIG GET, inline and multibulk, pipelined; the same
bounds and error replies), written the way luv's documentation shows
streams being used: read_start() callbacks, write() of the joined replies
of each read, TCP_NODELAY on every socket.  The parser and the store are
examples/kv.lua's, line for line, so that the comparison is between event
loops, not between parsers.

  lua5.4 bench/peers/kv_luv.lua --listen HOST:PORT

Backpressure (libuv has none of its own): when a write would leave more
than HIGH bytes queued, parsing stops, reading stops, and that write's
callback (it runs once everything before it has gone out) runs what waits
and reads again.

Prints "listening on HOST:PORT"; exits 0 on SIGINT/SIGTERM.
]]
local uv = require "luv"

local HIGH = 64 * 1024 -- asyncio's default high water mark
local OUT_MAX = 256 * 1024 -- reply bytes written at once while parsing
local HDR_MAX = 32         -- longest "*N" / "$N" line, CRLF included
local MAX_BULK, MAX_ARGS, MAX_INLINE = 1 << 20, 1024, 64 << 10
local MAX_REQUEST = 2 * MAX_BULK + 64 * 1024
local MAX_MEMORY = 64 << 20

local byte, find, sub, upper, lower, format, concat =
	string.byte, string.find, string.sub, string.upper, string.lower,
	string.format, table.concat

local listen
do
	local i = 1
	while i <= #arg do
		if arg[i] == "--listen" then listen = arg[i + 1]; i = i + 2
		else io.stderr:write("kv_luv: bad argument ", arg[i], "\n"); os.exit(1) end
	end
end
if not listen then io.stderr:write("kv_luv: --listen HOST:PORT is required\n"); os.exit(1) end
local host, port = listen:match("^%[?(.-)%]?:(%d+)$")
if not host then io.stderr:write("kv_luv: want HOST:PORT, not ", listen, "\n"); os.exit(1) end

local function close(h)
	if not h:is_closing() then h:close() end
end

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

-- A connection's state: pending (received, not yet run: a partial
-- request, or all of it while writing is held back), paused, eof, done.

-- Replies of one run, joined into one write (runs never nest).
local out, on = {}, 0

local function protocol_error(conn, st, why)
	on = on + 1
	out[on] = "-ERR Protocol error: " .. why .. "\r\n"
	conn:write(concat(out, "", 1, on))
	on = 0
	st.done = true
	st.pending = ""
	conn:read_stop()
	conn:shutdown(function() close(conn) end) -- once the reply is out
end

local drained

-- Write the replies so far; false if that leaves more than HIGH bytes
-- queued (the write's callback, once all of it is out, resumes).
local function flush(conn, st)
	local s = concat(out, "", 1, on)
	on = 0
	if conn:get_write_queue_size() + #s > HIGH then
		conn:write(s, function(err) drained(conn, st, err) end)
		return false
	end
	conn:write(s)
	return true
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
				if not flush(conn, st) then
					st.paused = true
					conn:read_stop()
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
	if on > 0 and not flush(conn, st) then
		st.paused = true
		conn:read_stop()
	end
end

-- The write callback of a flush that went above HIGH: all is out.
drained = function(conn, st, err)
	if err or conn:is_closing() or st.done then return end
	st.paused = false
	if st.pending ~= "" then run(conn, st, st.pending) end
	if st.paused or st.done then return end
	if st.eof then
		conn:shutdown(function() close(conn) end)
	else
		conn:read_start(st.reader)
	end
end

local function on_client(conn)
	conn:nodelay(true)
	local st = { pending = "", paused = false }
	st.reader = function(err, data)
		if err then return close(conn) end
		if st.done then return end
		if not data then -- EOF
			if st.paused and st.pending ~= "" then
				st.eof = true -- finish what waits first (drained)
			else
				conn:read_stop()
				conn:shutdown(function() close(conn) end)
			end
			return
		end
		if st.pending ~= "" then data = st.pending .. data end
		if st.paused then
			st.pending = data
			return
		end
		run(conn, st, data)
	end
	conn:read_start(st.reader)
end

local server = uv.new_tcp()
assert(server:bind(host, tonumber(port)))
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
