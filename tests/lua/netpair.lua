-- netpair.lua - loopback connections the Lua tests share (not a test: the
-- runner takes test_*.lua only).
local ub = require "uringbuf"
local T = require "tap"

local M = {}

-- A connected pair on loop: the accepted side (its options lopts, given
-- to listen), the client side, and the listener (still open).
function M.pair(loop, lopts)
	local l = assert(loop:listen("127.0.0.1:0", lopts))
	local c = assert(loop:connect(l:address()))
	local s
	local connected = false
	local deadline = ub.now() + 5
	while (not s or not connected) and ub.now() < deadline do
		local n, ev = assert(loop:wait(1, 50))
		for i = 1, n do
			local e = ev[i]
			if e.type == "accept" then s = e.conn end
			if e.type == "connect" and e.conn == c then
				assert(e.res == 0)
				connected = true
			end
		end
	end
	assert(s and connected, "pair")
	return s, c, l
end

-- n connections from the server helper srv to an echo at addr, each
-- sending its own stream of bytes and checking the echo byte for byte:
-- a table whose done and bad count the connections closed and those with
-- a wrong echo or an error (drive srv until done == n).
function M.echo_streams(srv, addr, n, bytes)
	local st = { done = 0, bad = 0 }
	for i = 1, n do
		local payload = T.pattern("e" .. i, bytes)
		local got = {}
		assert(srv:connect(addr, {
			on_connect = function(c) c:write(payload); c:shutdown() end,
			on_data = function(_, b) got[#got + 1] = tostring(b); b:release() end,
			on_eof = function(c) c:close() end,
			on_close = function(_, err)
				if err or table.concat(got) ~= payload then st.bad = st.bad + 1 end
				st.done = st.done + 1
			end,
		}))
	end
	return st
end

return M
