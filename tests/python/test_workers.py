"""serve(..., workers=N): N processes on one SO_REUSEPORT address.

The server runs in a child Python process (a script given with -c) that
prints "listening on HOST:PORT" and then the worker pids; every reply names
the worker that answered.  Checked: connections spread over both workers
and every one is answered; SIGTERM (and SIGINT) to the parent ends every
process with status 0 within a bound; a worker killed with SIGKILL ends the
group with an error naming it, and no worker is left behind; bad arguments
raise."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

import uringbuf
from ubtest import DEADLINE

SERVER = r"""
import os, sys, uringbuf, uringbuf.workers

class Pid(uringbuf.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, buf):
        n = self.transport.loop.loop.recv_pool().count
        self.transport.write(b"%d:%d:" % (os.getpid(), n) + bytes(buf))

# pool_count: an EventLoop() option every worker's loop gets
g = uringbuf.serve(Pid, "127.0.0.1", 0, workers=int(sys.argv[1]),
                   pool_count=128)
print("listening on", g.address, flush=True)
print("pids", " ".join(map(str, g.pids)), flush=True)
try:
    g.serve_forever(timeout=10)
except uringbuf.workers.WorkerError as e:
    print("group failed:", e, file=sys.stderr, flush=True)
    sys.exit(3)
"""


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of an exited worker (its parent not reaped yet) is gone
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Group:
    def __init__(self, n):
        self.p = subprocess.Popen([sys.executable, "-c", SERVER, str(n)],
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        lines = []
        t = threading.Thread(target=lambda: lines.extend(
            [self.p.stdout.readline(), self.p.stdout.readline()]),
            daemon=True)
        t.start()
        t.join(DEADLINE)
        if len(lines) < 2 or not lines[0].startswith("listening on "):
            self.p.kill()
            raise AssertionError("server printed %r; stderr: %s" % (
                lines, self.p.stderr.read()))
        host, _, port = lines[0].split()[-1].rpartition(":")
        self.address = (host, int(port))
        self.pids = [int(x) for x in lines[1].split()[1:]]

    def stop(self, sig=signal.SIGTERM):
        if sig is not None:
            self.p.send_signal(sig)
        try:
            _, err = self.p.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.p.kill()
            _, err = self.p.communicate()
            return None, err
        return self.p.returncode, err

    def kill_all(self):
        for pid in self.pids + [self.p.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def ask(address, msg):
    with socket.create_connection(address, timeout=DEADLINE) as c:
        c.sendall(msg)
        data = b""
        while b":" not in data or not data.endswith(msg):
            b = c.recv(4096)
            if not b:
                break
            data += b
    pid, _, rest = data.partition(b":")
    count, _, rest = rest.partition(b":")
    if count != b"128":
        raise AssertionError("a worker's pool has %r buffers, not 128"
                             % count)
    return int(pid), rest


def gone_within(pids, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


class Workers(unittest.TestCase):
    def test_two_workers_share_the_load_and_stop_on_sigterm(self):
        g = Group(2)
        try:
            self.assertEqual(len(g.pids), 2)
            seen = {}
            for i in range(64):
                pid, rest = ask(g.address, b"hello %d" % i)
                self.assertEqual(rest, b"hello %d" % i)
                self.assertIn(pid, g.pids)
                seen[pid] = seen.get(pid, 0) + 1
            # SO_REUSEPORT hashes each connection's 4-tuple: with 64
            # connections both workers serve some (all on one: 2**-63).
            self.assertEqual(set(seen), set(g.pids), seen)
            t0 = time.monotonic()
            status, err = g.stop(signal.SIGTERM)
            self.assertEqual(status, 0, err)
            self.assertEqual(err, "")
            self.assertTrue(gone_within(g.pids, 5), "workers left behind")
            self.assertLess(time.monotonic() - t0, 15)
        finally:
            g.kill_all()

    def test_sigint_to_the_parent_stops_all(self):
        g = Group(3)
        try:
            self.assertEqual(ask(g.address, b"x")[1], b"x")
            status, err = g.stop(signal.SIGINT)
            self.assertEqual(status, 0, err)
            self.assertTrue(gone_within(g.pids, 5), "workers left behind")
        finally:
            g.kill_all()

    def test_a_killed_worker_is_reported_and_the_other_serves_on(self):
        g = Group(2)
        try:
            victim, other = g.pids
            os.kill(victim, signal.SIGKILL)
            self.assertTrue(gone_within([victim], 5))
            time.sleep(0.2)  # the parent's next look (every 50 ms)
            for i in range(20):  # every connection reaches the survivor
                pid, rest = ask(g.address, b"after %d" % i)
                self.assertEqual((pid, rest), (other, b"after %d" % i))
            status, err = g.stop(signal.SIGTERM)
            self.assertEqual(status, 3, err)  # WorkerError after shutdown
            self.assertIn("uringbuf: worker %d died on its own: killed by "
                          "SIGKILL" % victim, err)
            self.assertIn("group failed", err)
            self.assertTrue(gone_within(g.pids, 5), "workers left behind")
        finally:
            g.kill_all()

    def test_no_worker_left_ends_the_group(self):
        g = Group(2)
        try:
            for pid in g.pids:
                os.kill(pid, signal.SIGKILL)
            status, err = g.stop(None)  # the parent ends by itself
            self.assertEqual(status, 3, err)
            for pid in g.pids:
                self.assertIn("%d died on its own" % pid, err)
        finally:
            g.kill_all()

    def test_orphaned_workers_stop(self):
        g = Group(2)
        try:
            g.p.kill()  # the parent dies without stopping anyone
            g.p.communicate(timeout=DEADLINE)
            self.assertTrue(gone_within(g.pids, 10),
                            "orphaned workers kept running")
        finally:
            g.kill_all()

    def test_bad_arguments(self):
        class P(uringbuf.Protocol):
            pass
        for kw in ({"workers": -1}, {"workers": 2.0}, {"workers": "2"}):
            with self.assertRaises((ValueError, TypeError)):
                uringbuf.serve(P, "127.0.0.1", 0, **kw)
        with uringbuf.EventLoop() as loop:
            with self.assertRaises(ValueError):
                uringbuf.serve(P, "127.0.0.1", 0, workers=2, loop=loop)
            with self.assertRaises(ValueError):  # a new loop's option
                uringbuf.serve(P, "127.0.0.1", 0, loop=loop, pool_count=8)
        with self.assertRaises(ValueError):
            uringbuf.serve(P, "unix:/tmp/x", None, workers=2)
        with self.assertRaises(ValueError):
            uringbuf.serve(P, "127.0.0.1", 0, on_worker_exit=print)


if __name__ == "__main__":
    unittest.main()
