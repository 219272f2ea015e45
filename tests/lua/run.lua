--[[
run.lua - the Lua binding's test runner (TAP output).

  lua5.4 tests/lua/run.lua [FILE...]      all files below, or the ones named

Each test file runs in its own interpreter, so a crash (or a hang, cut by
timeout(1) when present) fails that file and not the run.  Every test prints
"ok N - file: name", "not ok N - ..." with the error, or
"ok N - ... # SKIP reason".  The last line is
"N passed, N failed, N skipped"; the exit status is 1 if anything failed.
The module under test comes from LUA_CPATH / LUA_PATH (see
bindings/lua/Makefile, target check).
]]

local FILE_TIMEOUT = 300 -- seconds

local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
package.path = here .. "/?.lua;" .. package.path

-- The interpreter running us, to run each file the same way.
local function interpreter()
	local i = -1
	while arg[i - 1] do i = i - 1 end
	return os.getenv("UB_LUA") or arg[i] or "lua5.4"
end

local function shq(s)
	return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Child mode: run one file's tests.
if arg[1] == "--one" then
	local file = arg[2]
	local T = require "tap"
	local chunk, err = loadfile(here .. "/" .. file)
	if not chunk then
		print("not ok 1 - " .. file .. ": load: " .. err)
		print("0 passed, 1 failed, 0 skipped")
		os.exit(1)
	end
	local ok, lerr = xpcall(chunk, debug.traceback)
	if not ok then
		print("not ok 1 - " .. file .. ": " .. tostring(lerr))
		print("0 passed, 1 failed, 0 skipped")
		os.exit(1)
	end
	local pass, fail, skip = 0, 0, 0
	local only = os.getenv("UB_TEST")
	for i, t in ipairs(T.tests) do
		if only and not t.name:find(only, 1, true) then goto continue end
		io.stdout:flush()
		local tok, terr = xpcall(t.fn, function(e)
			if T.is_skip(e) then return e end
			return debug.traceback(tostring(e), 2)
		end)
		for k = #T.cleanups, 1, -1 do
			local cok, cerr = pcall(T.cleanups[k])
			if not cok then print("# cleanup: " .. tostring(cerr)) end
			T.cleanups[k] = nil
		end
		collectgarbage()
		local label = string.format("%d - %s: %s", i, file, t.name)
		if tok then
			pass = pass + 1
			print("ok " .. label)
		elseif T.is_skip(terr) then
			skip = skip + 1
			print("ok " .. label .. " # SKIP " .. terr.reason)
		else
			fail = fail + 1
			print("not ok " .. label)
			for line in (tostring(terr) .. "\n"):gmatch("(.-)\n") do
				print("#   " .. line)
			end
		end
		::continue::
	end
	print(string.format("%d passed, %d failed, %d skipped", pass, fail, skip))
	io.stdout:flush()
	os.exit(fail == 0 and 0 or 1)
end

-- Every test_*.lua beside us, in name order (so a new file needs no list).
local function test_files()
	local t = {}
	local p = io.popen("ls -1 " .. shq(here), "r")
	for name in p:lines() do
		if name:match("^test_[%w_]+%.lua$") then t[#t + 1] = name end
	end
	p:close()
	table.sort(t)
	return t
end

local files = #arg > 0 and { table.unpack(arg) } or test_files()
local lua = interpreter()
local have_timeout = os.execute("command -v timeout >/dev/null 2>&1")
local P, F, S = 0, 0, 0
for _, file in ipairs(files) do
	file = file:match("([^/]*)$")
	print("# " .. file)
	io.stdout:flush()
	local cmd = string.format("%s%s %s --one %s 2>&1",
		have_timeout and ("timeout -k 10 " .. FILE_TIMEOUT .. " ") or "",
		shq(lua), shq(here .. "/run.lua"), shq(file))
	local p = io.popen(cmd, "r")
	local p1, f1, s1
	for line in p:lines() do
		local a, b, c = line:match("^(%d+) passed, (%d+) failed, (%d+) skipped$")
		if a then
			p1, f1, s1 = tonumber(a), tonumber(b), tonumber(c)
			print("# " .. file .. ": " .. line)
		else
			print(line)
		end
		io.stdout:flush()
	end
	local _, how, code = p:close()
	if not p1 then
		print(string.format("not ok - %s: died (%s %s) before its summary",
			file, how, tostring(code)))
		p1, f1, s1 = 0, 1, 0
	elseif code ~= 0 and f1 == 0 then
		print(string.format("not ok - %s: exit status %s", file, tostring(code)))
		f1 = 1
	end
	P, F, S = P + p1, F + f1, S + s1
end
print(string.format("%d passed, %d failed, %d skipped", P, F, S))
os.exit(F == 0 and 0 or 1)
