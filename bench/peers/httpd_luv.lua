#!/usr/bin/env lua5.4
--[[
httpd_luv.lua - the luv (libuv for Lua, Debian lua-luv) contender of
bench/run's http group: the HTTP/1.1 "hello world" server of
examples/httpd.lua on luv tcp handles, written the way luv's documentation
shows streams being used: read_start() callbacks, one write() per read,
TCP_NODELAY on every socket.

  lua5.4 bench/peers/httpd_luv.lua --listen HOST:PORT

The same parser and replies as examples/httpd.lua (so the benchmark compares
the runtimes, not two parsers): any request is answered "200 OK", body
"Hello, World!"; keep-alive by default for HTTP/1.1, "Connection: close"
honoured, HTTP/1.0 closes unless "Connection: keep-alive"; pipelined
requests answered in order, all replies to one read in one write(); bodies
(Content-Length) discarded; 400/413/431/501/505 then close.  Closing is
shutdown() after the reply, then close at the client's EOF or LINGER
seconds later.

Backpressure (libuv has none of its own): when a write leaves more than
HIGH bytes queued, reading stops, and that write's callback (which runs once
it and everything before it has gone out) starts it again.

Prints "listening on HOST:PORT"; exits 0 on SIGINT/SIGTERM, 1 on a bad
argument.
]]
local uv = require "luv"

local HIGH = 64 * 1024   -- asyncio's default high water mark
local MAX_HEAD = 8192    -- request line + header fields, bytes
local MAX_BODY = 1 << 20 -- Content-Length accepted (and discarded)
local LINGER = 5         -- seconds a closing connection may stay open

local function usage_exit(...)
	io.stderr:write("httpd_luv: ", ...)
	io.stderr:write("\nusage: httpd_luv.lua --listen HOST:PORT\n")
	os.exit(1)
end

local listen
do
	local i = 1
	while i <= #arg do
		if arg[i] == "--listen" and arg[i + 1] then listen = arg[i + 1]; i = i + 2
		else usage_exit("bad argument '", arg[i], "'") end
	end
end
if not listen then usage_exit("--listen HOST:PORT is required") end
local lh, lp = listen:match("^%[?(.-)%]?:(%d+)$")
lp = tonumber(lp)
if not lh or lp > 65535 then usage_exit("want HOST:PORT, not '", listen, "'") end
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

local out = {}   -- the replies of one read (reused: one callback at a time)

local function close(client, st)
	if st.timer and not st.timer:is_closing() then st.timer:close() end
	if not client:is_closing() then client:close() end
end

-- Parse one read; returns the string to write (or nil) and whether this
-- is the last reply.
local function parse(st, data)
	local now = os_time()
	if now >= expires then refresh(now) end
	local scan = 1
	local rest = st.rest
	if rest then
		data = rest .. data
		scan = #rest - 2
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
		if byte(data, pos) == 13 then
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
			local kind = byte(data, le - 2) == 48 and 2 or 0
			if method == "HEAD" then kind = kind | 1 end
			local clen = 0
			if le < s then
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
	if nout == 0 then return nil, false end
	return nout == 1 and out[1] or concat(out, "", 1, nout), done
end

local function on_client(client)
	client:nodelay(true)
	local st = { skip = 0 }
	local reader
	reader = function(err, data)
		if err then return close(client, st) end
		if not data then -- EOF: close once what was written has gone out
			st.eof = true
			if st.done then
				if st.shut then close(client, st) end
			elseif not client:is_closing() then
				client:shutdown(function() close(client, st) end)
			end
			return
		end
		if st.done then return end -- lingering: discard
		local reply, done = parse(st, data)
		if not reply then return end
		if client:get_write_queue_size() + #reply > HIGH then
			client:read_stop()
			client:write(reply, function(werr)
				if not werr and not client:is_closing() then
					client:read_start(reader)
				end
			end)
		else
			client:write(reply)
		end
		if done then
			st.done, st.rest = true, nil
			client:shutdown(function()
				st.shut = true
				if st.eof then close(client, st) end
			end)
			st.timer = uv.new_timer()
			st.timer:start(LINGER * 1000, 0, function() close(client, st) end)
		end
	end
	client:read_start(reader)
end

local server = uv.new_tcp()
local ok, berr = server:bind(lh, lp)
if not ok then
	io.stderr:write("httpd_luv: cannot listen on ", listen, ": ", tostring(berr), "\n")
	os.exit(1)
end
ok, berr = server:listen(4096, function(err)
	if err then io.stderr:write("httpd_luv: accept: ", err, "\n"); return end
	local client = uv.new_tcp()
	if server:accept(client) then on_client(client) else client:close() end
end)
if not ok then
	io.stderr:write("httpd_luv: cannot listen on ", listen, ": ", tostring(berr), "\n")
	os.exit(1)
end
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
