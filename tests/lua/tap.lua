--- tap.lua - the few assertions and helpers the Lua binding's tests share.
-- A test file registers tests with T.test(name, fn); tests/lua/run.lua runs
-- them.  T.skip(reason) ends a test as skipped, with the reason printed.
local T = { tests = {} }

--- Register a test.
function T.test(name, fn)
	T.tests[#T.tests + 1] = { name = name, fn = fn }
end

--- Run fn after the current test, whether it passed or not (last
-- registered runs first): stop processes, close servers.
T.cleanups = {}
function T.defer(fn)
	T.cleanups[#T.cleanups + 1] = fn
end

local SKIP = {}

--- End the running test as skipped.
function T.skip(reason)
	error(setmetatable({ reason = reason }, SKIP), 0)
end

function T.is_skip(e)
	return getmetatable(e) == SKIP
end

local function fmt(v)
	if type(v) == "string" then
		if #v > 60 then v = v:sub(1, 60) .. "..." end
		return string.format("%q", v)
	end
	return tostring(v)
end

function T.ok(cond, msg, ...)
	if not cond then
		error((msg or "assertion failed") .. (select("#", ...) > 0
			and (": " .. table.concat({ ... }, " ")) or ""), 2)
	end
	return cond
end

function T.eq(got, want, msg)
	if got ~= want then
		error(string.format("%s: got %s, want %s", msg or "values differ",
			fmt(got), fmt(want)), 2)
	end
end

--- fn(...) must raise an error matching pattern (plain text search).
function T.raises(pattern, fn, ...)
	local ok, err = pcall(fn, ...)
	if ok then error("expected an error matching '" .. pattern .. "'", 2) end
	err = tostring(err)
	if pattern and not err:find(pattern, 1, true) then
		error("error '" .. err .. "' does not contain '" .. pattern .. "'", 2)
	end
	return err
end

--- Step srv (a uringbuf server) until cond() holds or seconds pass.
function T.drive(srv, cond, seconds)
	local ub = require "uringbuf"
	local deadline = ub.now() + (seconds or 10)
	while not cond() do
		if ub.now() > deadline then return false end
		local n, msg = srv:step(50)
		if not n then error("step: " .. tostring(msg), 2) end
	end
	return true
end

--- Send modes with availability here: { {name=, ok=, reason=}, ... }.
function T.modes()
	local ub = require "uringbuf"
	local loop = assert(ub.loop{ pool_count = 1, pool_size = 64 })
	local t = {}
	for _, m in ipairs(ub.modes) do
		local ok, reason = loop:mode_check(m)
		t[#t + 1] = { name = m, ok = ok, reason = reason }
	end
	loop:close()
	return t
end

--- count bytes of a stream that identifies itself: "<tag>:<offset>;" records,
-- cut at count bytes.  Any reordering, loss or duplication shows.
function T.pattern(tag, count)
	local parts, n = {}, 0
	while n < count do
		local rec = tag .. ":" .. n .. ";"
		parts[#parts + 1] = rec
		n = n + #rec
	end
	return table.concat(parts):sub(1, count)
end

return T
