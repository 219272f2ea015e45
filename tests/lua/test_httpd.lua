-- test_httpd.lua - examples/httpd.lua as a process, against HTTP/1.1
-- clients on this binding over loopback, every reply checked byte for byte
-- (the Date header's value aside, whose length is fixed): keep-alive,
-- pipelining in one write and in random pieces, Connection: close,
-- HTTP/1.0, HEAD, bodies, 50 concurrent clients, the 400/413/431/501
-- limits, a client that pipelines and never reads (the server's VmRSS stays
-- bounded while another client is answered), every send mode, wrk when
-- installed, and exit 0 with no output on SIGTERM after each test.
local T = require "tap"
local ub = require "uringbuf"

local LUA = os.getenv("UB_LUA") or "lua5.4"
local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local DATE = "Date: %u%l%l, %d%d %u%l%l %d%d%d%d %d%d:%d%d:%d%d GMT\r\n"
local DATE_STUB = "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n" -- same length
local HEAD200 = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n" ..
	"Content-Type: text/plain\r\n" .. DATE_STUB
local OK = HEAD200 .. "\r\nHello, World!"
local OK_HEAD = HEAD200 .. "\r\n"
local OK_CLOSE = HEAD200 .. "Connection: close\r\n\r\nHello, World!"
local OK_KEEP = HEAD200 .. "Connection: keep-alive\r\n\r\nHello, World!"
local function error_reply(status)
	return "HTTP/1.1 " .. status .. "\r\nContent-Length: 0\r\n" ..
		"Connection: close\r\n" .. DATE_STUB .. "\r\n"
end

-- The never-reading client: at most FLOOD_BYTES of requests for at most
-- FLOOD_SECONDS; the VmRSS growth allowed.  Without pausing, the server
-- would queue some hundred megabytes of replies in that time.
local FLOOD_BYTES = 64 << 20
local FLOOD_SECONDS = 3
local RSS_BOUND = 24 << 20
local WAIT = 20 -- seconds any one exchange may take

-- Start examples/httpd.lua; returns the process and its port.  Under a
-- sanitizer ASan's quarantine would keep freed memory resident (256 MiB by
-- default), so it is capped for the VmRSS check.
local function start(args)
	local env = ""
	if os.getenv("ASAN_OPTIONS") then
		env = "ASAN_OPTIONS=\"$ASAN_OPTIONS:quarantine_size_mb=8\" "
	end
	local cmd = string.format("exec 2>&1; echo $$; %sexec %s %s %s", env,
		shq(LUA), shq("examples/httpd.lua"), args or "--listen 127.0.0.1:0")
	local p = assert(io.popen("sh -c " .. shq(cmd) .. " </dev/null", "r"))
	local proc = { p = p, pid = tonumber(p:read("l")) }
	local line = p:read("l")
	T.defer(function()
		if not proc.stopped then
			os.execute(string.format("kill -KILL %d 2>/dev/null", proc.pid))
			p:close()
		end
	end)
	local port = tonumber((line or ""):match("^listening on 127%.0%.0%.1:(%d+)$"))
	T.ok(port and port > 0, "listening line", tostring(line))
	proc.addr = "127.0.0.1:" .. port
	return proc
end

-- SIGTERM: it must exit 0 and have printed nothing more (stderr included).
local function stop(proc, sig)
	proc.stopped = true
	os.execute(string.format("kill -%s %d 2>/dev/null", sig or "TERM", proc.pid))
	os.execute(string.format(
		"(sleep 10; kill -KILL %d 2>/dev/null) </dev/null >/dev/null 2>&1 &",
		proc.pid))
	local rest = proc.p:read("a")
	local _, how, code = proc.p:close()
	T.eq(how, "exit", "exited, not killed; output: " .. rest)
	T.eq(code, 0, "exit status; output: " .. rest)
	T.eq(rest, "", "output after the listening line")
end

local function rss(pid)
	local f = assert(io.open("/proc/" .. pid .. "/status"))
	local s = f:read("a")
	f:close()
	return tonumber(s:match("VmRSS:%s*(%d+) kB")) * 1024
end

-- A client connection on srv (a uringbuf server with no listener):
-- received bytes collect in c.got; c.eof at the server's FIN.
local function client(srv, addr, opts)
	local c = { got = {}, n = 0 }
	local t = {
		on_connect = function() c.up = true end,
		on_data = function(_, b)
			c.got[#c.got + 1] = tostring(b)
			c.n = c.n + #b
			b:release()
		end,
		on_eof = function(conn) c.eof = true; conn:close() end,
		on_close = function(_, err) c.closed = true; c.err = err end,
	}
	for k, v in pairs(opts or {}) do t[k] = v end
	c.conn = assert(srv:connect(addr, t))
	T.ok(T.drive(srv, function() return c.up or c.closed end, WAIT),
		"connected in time")
	T.ok(c.up, "connected", tostring(c.err))
	return c
end

local function stub(s) return (s:gsub(DATE, DATE_STUB)) end

-- Exactly n bytes from c (dates stubbed); fails on EOF or timeout first.
local function read(srv, c, n)
	T.ok(T.drive(srv, function() return c.n >= n or c.closed end, WAIT),
		"reply in time", c.n, n)
	local s = table.concat(c.got)
	T.ok(#s >= n, "bytes before EOF", #s, n, stub(s):sub(-120))
	c.got, c.n = { s:sub(n + 1) }, #s - n
	return stub(s:sub(1, n))
end

local function read_to_eof(srv, c)
	T.ok(T.drive(srv, function() return c.closed end, WAIT), "EOF in time")
	local s = table.concat(c.got)
	c.got, c.n = {}, 0
	return stub(s)
end

-- A readable difference: where got and want part.
local function same(got, want, msg)
	if got == want then return end
	local i = 1
	while got:byte(i) == want:byte(i) do i = i + 1 end
	error(string.format("%s: differs at byte %d: %q, want %q", msg, i,
		got:sub(i - 30, i + 30), want:sub(i - 30, i + 30)), 2)
end

-- count pipelined requests (GET, HEAD, POST with a body, several fields,
-- empty lines between requests) and the replies they must get.
local function workload(count, seed)
	local rnd = 0x9e3779b9 ~ seed
	local function rand(n) -- xorshift: the same pieces every run
		rnd = rnd ~ ((rnd << 13) & 0xffffffff)
		rnd = rnd ~ (rnd >> 17)
		rnd = rnd ~ ((rnd << 5) & 0xffffffff)
		return rnd % n
	end
	local reqs, replies = {}, {}
	for i = 0, count - 1 do
		local k = i % 5
		if k == 3 then
			reqs[#reqs + 1] = "HEAD /h/" .. i .. " HTTP/1.1\r\nHost: a\r\n\r\n"
			replies[#replies + 1] = OK_HEAD
		else
			if k == 4 then
				local body = T.pattern("b" .. i, 1 + rand(600))
				reqs[#reqs + 1] = string.format("POST /p/%d HTTP/1.1\r\nhost: a\r\n" ..
					"content-length: %d\r\nContent-Type: text/plain\r\n\r\n%s%s",
					i, #body, body, i % 2 == 1 and "\r\n" or "")
			else
				reqs[#reqs + 1] = string.format("GET /g/%d?q=%s HTTP/1.1\r\n" ..
					"Host: localhost\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n",
					i, ("x"):rep(rand(200)))
			end
			replies[#replies + 1] = OK
		end
	end
	return table.concat(reqs), table.concat(replies), rand
end

local function keepalive(srv, addr, n)
	local c = client(srv, addr)
	for i = 1, n do
		c.conn:write("GET /" .. i .. " HTTP/1.1\r\nHost: x\r\n\r\n")
		same(read(srv, c, #OK), OK, "reply " .. i)
	end
	c.conn:close()
end

-- The requests in one write, or in random pieces each sent on its own
-- (srv:pump() between pieces submits each as its own send).
local function pipelined(srv, addr, count, seed, pieces)
	local reqs, want, rand = workload(count, seed)
	local c = client(srv, addr)
	if not pieces then
		c.conn:write(reqs)
	else
		local pos = 1
		while pos <= #reqs do
			local sizes = { 1, 2, 3, 1 + rand(100), 1 + rand(2000) }
			local n = sizes[1 + rand(#sizes)]
			c.conn:write(reqs:sub(pos, pos + n - 1))
			pos = pos + n
			srv:pump(1)
		end
	end
	same(read(srv, c, #want), want, "pipelined replies")
	c.conn:close()
end

local function closes_after(srv, addr, request, reply)
	local c = client(srv, addr)
	c.conn:write(request)
	same(read_to_eof(srv, c), reply, "reply, then EOF, to " .. request:sub(1, 40))
end

-- One test: a fresh httpd.lua and a client side, stopped and checked after.
local function with_httpd(name, fn, args)
	T.test(name, function()
		local proc = start(args)
		local srv = assert(ub.server{})
		T.defer(function() srv:close() end)
		fn(srv, proc.addr, proc)
		stop(proc)
	end)
end

T.test("command line: --help, bad mode, missing --listen, bad address", function()
	local cmd = shq(LUA) .. " examples/httpd.lua"
	T.eq(os.execute(cmd .. " --help >/dev/null"), true, "--help")
	for _, args in ipairs{ "--listen 127.0.0.1:0 --mode fast", "",
		"--listen nowhere", "--listen 127.0.0.1:0 --max-conns 0" } do
		local ok, _, code = os.execute(cmd .. " " .. args .. " 2>/dev/null")
		T.ok(not ok and code == 1, "exit 1 for: " .. args)
	end
end)

with_httpd("keep-alive: 1,000 requests on one connection", function(srv, addr)
	keepalive(srv, addr, 1000)
end)

with_httpd("--workers 2: keep-alive on 40 connections, pipelining; SIGTERM ends all with 0",
	function(srv, addr)
		for _ = 1, 40 do keepalive(srv, addr, 3) end
		pipelined(srv, addr, 200, 4, false)
	end, "--listen 127.0.0.1:0 --workers 2")

with_httpd("200 pipelined requests in one write", function(srv, addr)
	pipelined(srv, addr, 200, 1, false)
end)

with_httpd("200 pipelined requests in random pieces", function(srv, addr)
	pipelined(srv, addr, 200, 2, true)
	pipelined(srv, addr, 200, 3, true)
end)

with_httpd("Connection: close, HTTP/1.0, HEAD", function(srv, addr)
	closes_after(srv, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n" ..
		"GET / HTTP/1.1\r\nConnection: Close\r\n\r\nGET /never HTTP/1.1\r\n\r\n",
		OK .. OK_CLOSE)
	closes_after(srv, addr, "GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n",
		OK_CLOSE)
	-- only the field named Connection counts
	closes_after(srv, addr, "GET / HTTP/1.1\r\nX-Connection: close\r\n" ..
		"Content-Type: close\r\n\r\nGET / HTTP/1.1\r\nconnection:close\r\n\r\n",
		OK .. OK_CLOSE)
	closes_after(srv, addr, "GET / HTTP/1.0\r\n\r\n", OK_CLOSE)
	local c = client(srv, addr) -- HTTP/1.0 asking to keep the connection
	for _ = 1, 3 do
		c.conn:write("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		same(read(srv, c, #OK_KEEP), OK_KEEP, "HTTP/1.0 keep-alive")
	end
	-- HEAD: headers only, so the next reply follows right after them
	c.conn:write("HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
	same(read(srv, c, #OK_HEAD + #OK), OK_HEAD .. OK, "HEAD then GET")
	c.conn:close()
end)

with_httpd("a body with Content-Length is discarded", function(srv, addr)
	local body = T.pattern("body", 100000)
	local c = client(srv, addr)
	c.conn:write("POST /upload HTTP/1.1\r\nContent-Length: " .. #body .. "\r\n\r\n")
	for i = 1, #body, 7000 do
		c.conn:write(body:sub(i, i + 6999))
		srv:pump(1)
	end
	c.conn:write("GET / HTTP/1.1\r\n\r\n")
	same(read(srv, c, 2 * #OK), OK .. OK, "replies around the body")
	local cont = "HTTP/1.1 100 Continue\r\n\r\n"
	c.conn:write("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	same(read(srv, c, #cont), cont, "100 Continue")
	c.conn:write("hello")
	same(read(srv, c, #OK), OK, "reply after the body")
	c.conn:close()
end)

with_httpd("50 concurrent connections", function(srv, addr)
	local N, ROUNDS = 50, 20
	local done, bad = 0, {}
	for i = 1, N do
		local acc, round = "", 0
		local function ask(conn)
			round = round + 1
			conn:write(string.format("GET /%d/%d HTTP/1.1\r\n\r\n", i, round))
		end
		assert(srv:connect(addr, {
			on_connect = ask,
			on_data = function(conn, b)
				acc = acc .. tostring(b)
				b:release()
				if #acc >= #OK then
					if stub(acc:sub(1, #OK)) ~= OK or #acc > #OK then
						bad[#bad + 1] = i .. "/" .. round
					end
					acc = ""
					if round < ROUNDS then ask(conn) else conn:close() end
				end
			end,
			on_close = function(_, err)
				if err or round < ROUNDS then bad[#bad + 1] = i .. ": " .. tostring(err) end
				done = done + 1
			end,
		}))
	end
	T.ok(T.drive(srv, function() return done == N end, WAIT), "all done", done, N)
	T.eq(table.concat(bad, " "), "", "clients with a wrong reply")
end)

with_httpd("limits: 431, 400, 413, 501, then close", function(srv, addr)
	local big = "GET / HTTP/1.1\r\nX-Big: " .. ("a"):rep(9000)
	closes_after(srv, addr, big, error_reply("431 Request Header Fields Too Large"))
	closes_after(srv, addr, big .. "\r\n\r\n",
		error_reply("431 Request Header Fields Too Large"))
	for _, req in ipairs{ "garbage\r\n\r\n", "GET /\r\n\r\n",
		"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
		"GET / HTTP/1.1\r\nSpace : before colon\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"\22\3\1 TLS hello\r\n" } do
		closes_after(srv, addr, req, error_reply("400 Bad Request"))
	end
	closes_after(srv, addr, "POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
		error_reply("413 Content Too Large"))
	closes_after(srv, addr, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" ..
		"5\r\nhello\r\n0\r\n\r\n", error_reply("501 Not Implemented"))
	closes_after(srv, addr, "GET / HTTP/1.1\r\n\r\nBAD\r\n\r\n",
		OK .. error_reply("400 Bad Request"))
end)

with_httpd("a client that pipelines and never reads: VmRSS bounded", function(srv, addr, proc)
	local warm = client(srv, addr)
	for _ = 1, 200 do
		warm.conn:write("GET / HTTP/1.1\r\n\r\n")
		same(read(srv, warm, #OK), OK, "warm-up reply")
	end
	local before = rss(proc.pid)
	-- no_recv: this client never reads, and a small receive buffer makes
	-- the replies back up into the server at once
	local flood = client(srv, addr, { no_recv = true })
	flood.conn:set_buffers(0, 4096)
	local chunk = ("GET / HTTP/1.1\r\nHost: flood\r\n\r\n"):rep(2048)
	local sent, stalled = 0, nil
	local deadline = ub.now() + FLOOD_SECONDS
	while sent < FLOOD_BYTES and ub.now() < deadline do
		if flood.conn:queued_bytes() < (1 << 20) then
			flood.conn:write(chunk) -- whole requests: writes never split one
			sent = sent + #chunk
			stalled = nil
		else
			-- the server stopped reading: for 0.5 s is enough
			local now = ub.now()
			stalled = stalled or now
			if now - stalled > 0.5 then break end
		end
		srv:step(5)
	end
	-- another client is still answered meanwhile
	for i = 1, 50 do
		warm.conn:write("GET /" .. i .. " HTTP/1.1\r\n\r\n")
		same(read(srv, warm, #OK), OK, "reply beside the flood")
	end
	local after = rss(proc.pid)
	T.ok(after - before < RSS_BOUND, string.format(
		"VmRSS grew from %d to %d KiB while a client pipelined %d bytes " ..
		"and never read", before >> 10, after >> 10, sent))
	T.ok(sent < FLOOD_BYTES, "the server stopped reading", sent)
	flood.conn:abort()
	warm.conn:close()
end)

for _, m in ipairs(T.modes()) do
	with_httpd("--mode " .. m.name .. ": keep-alive and pipelining", function(srv, addr)
		if not m.ok then T.skip(m.name .. " unavailable: " .. m.reason) end
		keepalive(srv, addr, 100)
		pipelined(srv, addr, 200, 7, false)
		pipelined(srv, addr, 200, 8, true)
	end, "--listen 127.0.0.1:0 --mode " .. (m.ok and m.name or "auto"))
end

with_httpd("wrk: 1 s, requests and no errors", function(_, addr)
	if not os.execute("command -v wrk >/dev/null 2>&1") then
		T.skip("wrk is not installed (Debian package wrk; scripts/test installs it)")
	end
	local p = assert(io.popen("timeout 20 wrk -t1 -c10 -d1s http://" .. addr .. "/ 2>&1"))
	local out = p:read("a")
	local ok = p:close()
	T.ok(ok, "wrk ran", out)
	local n = tonumber(out:match("(%d+) requests in"))
	T.ok(n and n > 0, "requests", out)
	T.ok(not out:find("Socket errors", 1, true), "socket errors", out)
	T.ok(not out:find("Non-2xx", 1, true), "non-2xx replies", out)
end)
