#!/usr/bin/env lua5.4
--[[
cqueues_peer.lua - the cqueues (Debian lua-cqueues) contender of bench/run:
a TCP proxy (with --to) or an echo server (without), written in cqueues'
own style: one coroutine per direction doing blocking-looking
socket:xread(-N) / socket:write() calls that yield to the controller,
binary mode with no output buffering (every chunk goes out as it came in),
TCP_NODELAY.  Flow control is implicit: a coroutine blocked in write()
does not read.

  lua5.4 bench/peers/cqueues_peer.lua --listen HOST:PORT [--to HOST:PORT]

Prints "listening on HOST:PORT"; exits 0 on SIGINT/SIGTERM.
]]
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local signal = require "cqueues.signal"

local CHUNK = 65536

local listen, to
do
	local i = 1
	while i <= #arg do
		if arg[i] == "--listen" then listen = arg[i + 1]; i = i + 2
		elseif arg[i] == "--to" then to = arg[i + 1]; i = i + 2
		else io.stderr:write("cqueues_peer: bad argument ", arg[i], "\n"); os.exit(1) end
	end
end
local function hostport(s)
	local h, p = s:match("^%[?(.-)%]?:(%d+)$")
	if not h then io.stderr:write("cqueues_peer: want HOST:PORT, not ", s, "\n"); os.exit(1) end
	return h, tonumber(p)
end
if not listen then io.stderr:write("cqueues_peer: --listen HOST:PORT is required\n"); os.exit(1) end

local cq = cqueues.new()

-- Copy src -> dst until EOF or an error; then half-close dst.
local function pump(src, dst)
	while true do
		local data = src:xread(-CHUNK, "b", nil)
		if not data then break end
		if not dst:write(data) then break end
	end
	dst:shutdown("w")
end

local function prepare(s)
	s:setmode("b", "bn")
	s:settimeout(nil)
	s:onerror(function(_, _, code) return code end) -- return errors, never raise
end

local th, tp
if to then th, tp = hostport(to) end

local function handle(client)
	prepare(client)
	if not to then
		pump(client, client)
		client:close()
		return
	end
	local up = socket.connect{ host = th, port = tp, nodelay = true }
	prepare(up)
	local ok, err = up:connect()
	if not ok then
		io.stderr:write("proxy: connect to ", to, ": ", tostring(err), "\n")
		client:close(); up:close()
		return
	end
	local left = 2
	local function finish()
		left = left - 1
		if left == 0 then client:close(); up:close() end
	end
	cq:wrap(function() pump(up, client); finish() end)
	pump(client, up)
	finish()
end

local lh, lp = hostport(listen)
local srv = socket.listen{ host = lh, port = lp, reuseaddr = true, nodelay = true, backlog = 4096 }
local ok, err = srv:listen()
if not ok then io.stderr:write("cqueues_peer: listen: ", tostring(err), "\n"); os.exit(1) end
local _, host, port = srv:localname()
io.stdout:write(("listening on %s:%d\n"):format(host, port))
io.stdout:flush()

signal.ignore(signal.SIGPIPE) -- a reset peer is a write error, not an exit
signal.block(signal.SIGINT, signal.SIGTERM)
local sigs = signal.listen(signal.SIGINT, signal.SIGTERM)
cq:wrap(function()
	sigs:wait()
	os.exit(0)
end)
cq:wrap(function()
	for con in srv:clients() do
		cq:wrap(handle, con)
	end
end)
while true do
	local okl, e = cq:loop()
	if okl then break end
	io.stderr:write("cqueues_peer: ", tostring(e), "\n")
end
os.exit(0)
