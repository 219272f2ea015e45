-- test_workers.lua - uringbuf.server{workers = N}: N worker processes, each
-- listening on the same port with SO_REUSEPORT, under a supervisor that
-- forwards SIGTERM, reports a worker that dies, and takes its workers with
-- it if it is killed itself.  The supervisor runs as a separate process
-- (procs.spawn); its workers answer every line with their pid, so the
-- test sees which worker served each connection.  Loopback only; every
-- wait is bounded.
local T = require "tap"
local ub = require "uringbuf"
local procs = require "procs"

local NCONN = 40      -- connections per round
local EXIT_LIMIT = 10 -- seconds for every process to be gone

-- The supervisor: workers = arg[1] (a number or "auto").  Prints
-- "listening on ADDR", "workers PID...", and once run() returns, a line
-- per worker ("worker PID HOW CODE"), "run OK WHY", "exit N", "END".
local SUPERVISOR = [[
local ub = require "uringbuf"
local n = tonumber(arg[1]) or arg[1]
local srv, msg = ub.server{ port = 0, workers = n,
	on_data = function(c, b)
		local s = tostring(b)
		b:release()
		for _ in s:gmatch("\n") do c:write("pid " .. ub.getpid() .. "\n") end
	end }
if not srv then
	print("error " .. tostring(msg))
	print("END")
	os.exit(2)
end
print("listening on " .. srv.address)
print("workers " .. table.concat(srv.pids, " "))
io.stdout:flush()
local ok, why = srv:run()
for _, pid in ipairs(srv.pids) do
	local e = srv.exits[pid] or {}
	print(string.format("worker %d %s %s", pid, tostring(e.how), tostring(e.code)))
end
print("run " .. tostring(ok) .. " " .. tostring(why))
local code = ok and 0 or 3
print("exit " .. code)
print("END")
io.stdout:flush()
os.exit(code)
]]

-- Whether process pid still runs (a zombie has ended).
local function alive(pid)
	local f = io.open("/proc/" .. pid .. "/stat", "r")
	if not f then return false end
	local s = f:read("a") or ""
	f:close()
	local state = s:match("^%d+ %b() (%a)")
	return state ~= nil and state ~= "Z" and state ~= "X"
end

local function sleep(s)
	ub.core.sleep(s)
end

-- Poll cond() until it holds or seconds pass.
local function wait_for(cond, seconds)
	local deadline = ub.now() + seconds
	while not cond() do
		if ub.now() > deadline then return false end
		sleep(0.02)
	end
	return true
end

-- Start the supervisor; returns the process, the port and the worker pids.
local function start(workers)
	local proc = procs.spawn(SUPERVISOR, tostring(workers))
	local out
	T.ok(wait_for(function()
		out = proc:output()
		return out:find("workers[^\n]*\n") or out:find("END\n")
	end, 20), "supervisor started", proc:output())
	local port = tonumber(out:match("listening on 127%.0%.0%.1:(%d+)\n"))
	T.ok(port, "listening line", out)
	local pids = {}
	for pid in out:match("workers ([^\n]*)\n"):gmatch("%d+") do
		pids[#pids + 1] = tonumber(pid)
	end
	-- whatever happens, no worker outlives the test
	T.defer(function()
		for _, pid in ipairs(pids) do
			os.execute(string.format("kill -KILL %d 2>/dev/null", pid))
		end
	end)
	return proc, port, pids
end

-- n connections, each sending one line; returns pid -> connections served,
-- and the number answered.
local function round(port, n)
	local srv = assert(ub.server{})
	local by_pid, answered, closed = {}, 0, 0
	for i = 1, n do
		local got = ""
		assert(srv:connect("127.0.0.1", port, {
			on_connect = function(c) c:write("hello " .. i .. "\n") end,
			on_data = function(c, b)
				got = got .. tostring(b)
				b:release()
				local pid = tonumber(got:match("^pid (%d+)\n"))
				if pid then
					by_pid[pid] = (by_pid[pid] or 0) + 1
					answered = answered + 1
					c:close()
				end
			end,
			on_close = function() closed = closed + 1 end,
		}))
	end
	T.drive(srv, function() return closed == n end, 10)
	srv:close()
	return by_pid, answered
end

-- SIGTERM (or sig) to the supervisor; its output once it has ended.
local function stop(proc, sig)
	os.execute(string.format("kill -%s %d", sig or "TERM", proc.pid))
	local t0 = ub.now()
	T.ok(wait_for(function() return not alive(proc.pid) end, EXIT_LIMIT),
		"supervisor gone within " .. EXIT_LIMIT .. " s", proc:output())
	return proc:output(), ub.now() - t0
end

T.test("2 workers: connections spread over both, every one answered; " ..
	"SIGTERM stops all, exit 0", function()
	local proc, port, pids = start(2)
	T.eq(#pids, 2, "two workers")
	for _, pid in ipairs(pids) do T.ok(alive(pid), "worker " .. pid .. " runs") end
	local by_pid, answered = round(port, NCONN)
	T.eq(answered, NCONN, "connections answered")
	local served = 0
	for _, pid in ipairs(pids) do
		T.ok((by_pid[pid] or 0) > 0, "worker " .. pid .. " served some",
			tostring(by_pid[pid]))
		served = served + (by_pid[pid] or 0)
	end
	T.eq(served, NCONN, "every answer from one of the workers")
	local out, took = stop(proc)
	print(string.format("#   stopped in %.2f s", took))
	T.ok(out:find("\nEND\n"), "supervisor finished", out)
	for _, pid in ipairs(pids) do
		T.ok(out:find("worker " .. pid .. " exited 0", 1, true),
			"worker " .. pid .. " exited 0", out)
		T.ok(not alive(pid), "worker " .. pid .. " gone")
	end
	T.ok(out:find("run true signal", 1, true), "run() result", out)
	T.ok(out:find("exit 0", 1, true), "supervisor exit 0", out)
end)

T.test("a worker killed with SIGKILL is reported, the other serves on, " ..
	"the supervisor still shuts down cleanly", function()
	local proc, port, pids = start(2)
	T.eq(#pids, 2, "two workers")
	os.execute(string.format("kill -KILL %d", pids[1]))
	local report = "uringbuf: worker " .. pids[1] .. " killed by signal 9"
	T.ok(wait_for(function()
		return proc:output():find(report, 1, true)
	end, 5), "reported", proc:output())
	T.ok(alive(proc.pid), "supervisor still runs")
	-- the kernel spreads new connections over the listener left
	local by_pid, answered = round(port, NCONN)
	T.eq(answered, NCONN, "connections answered by the survivor")
	T.eq(by_pid[pids[2]], NCONN, "all by worker " .. pids[2])
	local out = stop(proc)
	T.ok(out:find("\nEND\n"), "supervisor finished", out)
	T.ok(out:find("worker " .. pids[1] .. " signaled 9", 1, true),
		"killed worker's status", out)
	T.ok(out:find("worker " .. pids[2] .. " exited 0", 1, true),
		"survivor exited 0", out)
	T.ok(not alive(pids[2]), "survivor gone")
	-- run() says a worker failed: the script exits 3
	T.ok(out:find("run nil worker " .. pids[1] .. " killed by signal 9", 1,
		true), "run() names the failure", out)
	T.ok(out:find("exit 3", 1, true), "supervisor exit status", out)
end)

T.test("the supervisor killed with SIGKILL: no worker outlives it", function()
	local proc, _, pids = start(2)
	T.eq(#pids, 2, "two workers")
	local _, took = stop(proc, "KILL")
	local t0 = ub.now()
	T.ok(wait_for(function()
		for _, pid in ipairs(pids) do
			if alive(pid) then return false end
		end
		return true
	end, EXIT_LIMIT), "every worker gone within " .. EXIT_LIMIT .. " s")
	print(string.format("#   supervisor gone in %.2f s, its workers %.2f s later",
		took, ub.now() - t0))
end)

T.test("workers = \"auto\": one per CPU", function()
	local proc, port, pids = start("auto")
	T.eq(#pids, ub.core.ncpus(), "workers")
	local _, answered = round(port, 4)
	T.eq(answered, 4, "answered")
	local out = stop(proc)
	T.ok(out:find("exit 0", 1, true), "supervisor exit 0", out)
	for _, pid in ipairs(pids) do T.ok(not alive(pid), "worker gone") end
end)

T.test("workers: bad arguments raise before anything is forked", function()
	local function on_data(c, b) c:write(b) end
	T.raises("field 'workers': integer or \"auto\" expected", ub.server,
		{ port = 0, workers = 1.5, on_data = on_data })
	T.raises("field 'workers': integer or \"auto\" expected", ub.server,
		{ port = 0, workers = "many" })
	T.raises("field 'workers': value out of range", ub.server,
		{ port = 0, workers = -1 })
	T.raises("needs a TCP address", ub.server,
		{ listen = "unix:/tmp/uringbuf-workers-test.sock", workers = 2 })
	T.raises("needs an address to listen on", ub.server, { workers = 2 })
	T.raises("malformed address", ub.server, { listen = "nowhere", workers = 2 })
	T.raises("field 'on_worker_exit': function expected", ub.server,
		{ port = 0, workers = 2, on_worker_exit = 5 })
	T.raises("field 'on_worker_exit': only with workers", ub.server,
		{ port = 0, on_worker_exit = function() end })
	local loop <close> = assert(ub.loop())
	T.raises("field 'loop': a loop cannot be shared", ub.server,
		{ port = 0, workers = 2, loop = loop })
	-- no process groups, no "every process", no waiting for others' children
	T.raises("bad argument #1", ub.core.kill, 0, 15)
	T.raises("bad argument #1", ub.core.kill, -1, 15)
	T.raises("bad argument #1", ub.core.waitpid, -1)
	T.raises("bad argument #2", ub.core.kill, 1, 1000)
	T.raises("number has no integer representation", ub.core.kill, 1.5, 0)
	T.raises("seconds out of range", ub.core.sleep, -1)
	T.raises("seconds out of range", ub.core.sleep, 0 / 0)
	-- failures return nil, message, errno
	local r, msg, en = ub.core.waitpid(ub.getpid(), true)
	T.eq(r, nil)
	T.eq(type(msg), "string")
	T.eq(en, ub.errno.ECHILD)
end)
