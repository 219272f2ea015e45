"""examples/kv.c, examples/kv.py and examples/kv.lua as programs: the
examples' command line (--listen, --mode, "listening on HOST:PORT", exit 0
on SIGTERM/SIGINT with nothing on stderr, 1 on a bad argument), and RESP2
from a small client here, every reply checked byte for byte: GET, SET,
DEL, PING, CONFIG GET inline and multibulk, a pipeline of 10,000 mixed
commands written in random-size chunks, a request split at every byte,
binary values with CR LF inside, a 1 MiB value, garbage and over-limit
requests answered with a protocol error and a close, --max-memory, a
client that pipelines and never reads (the server's VmRSS stays bounded
and another client keeps being answered), and redis-benchmark where
installed.

The C program is found in the build tree next to the Python extension
under test (UB_KV_BIN overrides), the Lua module likewise (LUA_CPATH /
LUA_PATH in the environment override); a missing one skips its class with
the reason."""
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

import uringbuf
from ubtest import DEADLINE, EXAMPLES, ROOT, SANITIZED

# How far a server's VmRSS may grow while a client pipelines GETs of a
# 256 KiB value and never reads (unbounded, it would grow by gigabytes):
# the send queue's high water mark (1 MiB), one batch of replies
# (256 KiB + one value), socket buffers, allocator slack.
RSS_GROWTH_MAX = 48 << 20


def _build_dir():
    """The build tree of the extension under test (.../bindings/python/lib
    /uringbuf -> ...), or None when it is installed elsewhere."""
    d = os.path.dirname(os.path.abspath(uringbuf.__file__))
    for _ in range(4):
        d = os.path.dirname(d)
    return d if os.path.isdir(os.path.join(d, "bindings")) else None


def c_command():
    """(argv prefix, env) for kv.c, or (None, reason)."""
    path = os.environ.get("UB_KV_BIN")
    if not path:
        b = _build_dir()
        if not b:
            return None, "no build tree next to the uringbuf module (set UB_KV_BIN)"
        path = os.path.join(b, "examples", "kv")
    if not os.access(path, os.X_OK):
        return None, "%s is not built" % path
    env = dict(os.environ)
    # A sanitized program carries its own runtime: the preloaded one
    # (asan-python) must not be loaded twice.
    env.pop("LD_PRELOAD", None)
    return [path], env


def py_command():
    return [sys.executable, os.path.join(EXAMPLES, "kv.py")], dict(os.environ)


def lua_command():
    lua = os.environ.get("UB_LUA") or shutil.which("lua5.4")
    if not lua:
        return None, "lua5.4 is not installed"
    env = dict(os.environ)
    if not env.get("LUA_CPATH"):
        b = _build_dir()
        so = b and os.path.join(b, "bindings", "lua", "uringbuf_core.so")
        if not so or not os.path.exists(so):
            return None, ("no Lua module built next to the Python one "
                          "(configure --enable-lua, or set LUA_CPATH)")
        env["LUA_CPATH"] = os.path.join(b, "bindings", "lua", "?.so") + ";;"
        env["LUA_PATH"] = "%s;%s;;" % (
            os.path.join(b, "bindings", "lua", "?.lua"),
            os.path.join(ROOT, "bindings", "lua", "?.lua"))
    return [lua, os.path.join(EXAMPLES, "kv.lua")], env


class Server:
    """A running kv program; address is the (host, port) it printed."""

    def __init__(self, argv, env, *args):
        self.p = subprocess.Popen(argv + ["--listen", "127.0.0.1:0"] +
                                  list(args), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env)
        out = []
        t = threading.Thread(target=lambda: out.append(
            self.p.stdout.readline()), daemon=True)
        t.start()
        t.join(DEADLINE)
        line = out[0].decode() if out else ""
        if not re.fullmatch(r"listening on 127\.0\.0\.1:\d+\n", line):
            self.p.kill()
            raise AssertionError("%s printed %r; stderr: %r" % (
                argv, line, self.p.communicate()[1]))
        self.address = ("127.0.0.1", int(line.rsplit(":", 1)[1]))

    def rss(self):
        """VmRSS in bytes, from /proc/PID/status."""
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS for %d" % self.p.pid)

    def stop(self, sig=signal.SIGTERM):
        """Send sig; (status, stderr)."""
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            _, err = self.p.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.p.kill()
            _, err = self.p.communicate()
            return None, err
        return self.p.returncode, err


def mb(*args):
    """A multibulk request."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def bulk(v):
    return b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v)


class Client:
    """A blocking loopback client that checks replies byte for byte."""

    def __init__(self, addr):
        self.s = socket.create_connection(addr, timeout=DEADLINE)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        self.s.close()

    def read_exact(self, n):
        chunks, got = [], 0
        while got < n:
            b = self.s.recv(min(n - got, 1 << 20))
            if not b:
                break
            chunks.append(b)
            got += len(b)
        return b"".join(chunks)

    def expect(self, test, request, reply):
        self.s.sendall(request)
        test.assertEqual(self.read_exact(len(reply)), reply,
                         "reply to %r" % request[:80])

    def read_to_eof(self, limit=1 << 16):
        """(what arrives until EOF or a reset, True), or (what arrived
        when DEADLINE passed or limit bytes came, False)."""
        chunks = []
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and sum(map(len, chunks)) < limit:
            try:
                b = self.s.recv(4096)
            except ConnectionResetError:
                # closed with our bytes unread: a reset, still a close
                return b"".join(chunks), True
            if not b:
                return b"".join(chunks), True
            chunks.append(b)
        return b"".join(chunks), False


class KVCases:
    """The tests; a subclass names the program (command())."""

    command = None

    @classmethod
    def setUpClass(cls):
        argv, env = cls.command()
        if argv is None:
            raise unittest.SkipTest(env)
        cls.argv, cls.env = argv, env
        cls.srv = Server(argv, env)

    @classmethod
    def tearDownClass(cls):
        status, err = cls.srv.stop()
        if status != 0 or err:
            raise AssertionError("server exit %r, stderr %r" % (status, err))

    def client(self, srv=None):
        c = Client((srv or self.srv).address)
        self.addCleanup(c.close)
        return c

    def test_commands(self):
        c = self.client()
        k = "cmd-%s" % self.__class__.__name__
        c.expect(self, b"PING\r\n", b"+PONG\r\n")
        c.expect(self, mb("PING"), b"+PONG\r\n")
        c.expect(self, mb("ping", "hello"), bulk(b"hello"))
        c.expect(self, mb("GET", k), b"$-1\r\n")
        c.expect(self, mb("SET", k, "v1"), b"+OK\r\n")
        c.expect(self, mb("GET", k), bulk(b"v1"))
        c.expect(self, ("set %s value2\r\n" % k).encode(), b"+OK\r\n")
        c.expect(self, ("get %s\n" % k).encode(), bulk(b"value2"))
        c.expect(self, mb("SET", k + "b", ""), b"+OK\r\n")
        c.expect(self, mb("GET", k + "b"), bulk(b""))
        c.expect(self, mb("DEL", k, k + "b", k + "none"), b":2\r\n")
        c.expect(self, ("DEL %s\r\n" % k).encode(), b":0\r\n")
        c.expect(self, mb("GET", k), b"$-1\r\n")
        # what redis-benchmark asks at start, and an unknown parameter
        c.expect(self, mb("CONFIG", "GET", "save"),
                 b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n")
        c.expect(self, b"CONFIG GET appendonly\r\n",
                 b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n")
        c.expect(self, mb("config", "get", "maxmemory-policy"), b"*0\r\n")
        # empty requests are skipped, as by redis
        c.expect(self, b"\r\n*0\r\n  \r\nPING\r\n", b"+PONG\r\n")
        for req, prefix in (
                (mb("GET"), b"-ERR wrong number of arguments for 'get'"),
                (mb("SET", k), b"-ERR wrong number of arguments for 'set'"),
                (mb("DEL"), b"-ERR wrong number of arguments for 'del'"),
                (mb("PING", "a", "b"),
                 b"-ERR wrong number of arguments for 'ping'"),
                (mb("SET", k, "v", "EX", "10"), b"-ERR syntax error"),
                (mb("FLUSHALL"), b"-ERR unknown command 'FLUSHALL'"),
                (b"nosuch\r\nx\r\n", b"-ERR unknown command 'nosuch'"),
                (mb("CONFIG", "SET", "a", "b"),
                 b"-ERR unknown subcommand 'SET'")):
            c.s.sendall(req + b"PING\r\n")
            line = self.read_line(c)
            self.assertTrue(line.startswith(prefix), (req, line))
            if req.startswith(b"nosuch"):
                self.assertTrue(self.read_line(c).startswith(
                    b"-ERR unknown command 'x'"))
            self.assertEqual(c.read_exact(7), b"+PONG\r\n")
        # SET with options changed nothing
        c.expect(self, mb("GET", k), b"$-1\r\n")

    def read_line(self, c):
        b = b""
        end = time.monotonic() + DEADLINE
        while not b.endswith(b"\r\n") and time.monotonic() < end:
            ch = c.s.recv(1)
            if not ch:
                break
            b += ch
        return b

    def test_split_at_every_byte(self):
        c = self.client()
        k = b"split-" + self.__class__.__name__.encode()
        value = b"a\r\nb\r\n$3\r\n*1\r\n"
        for req, reply in ((mb(b"SET", k, value), b"+OK\r\n"),
                           (mb(b"GET", k), bulk(value)),
                           (b"PING\r\n", b"+PONG\r\n")):
            for i in range(1, len(req)):
                c.s.sendall(req[:i])
                time.sleep(0.002)  # a read of its own on the server
                c.expect(self, req[i:], reply)

    def test_pipeline(self):
        """10,000 mixed commands against a model, written in random-size
        chunks by one thread while this one reads and compares."""
        rng = random.Random(12)
        tag = self.__class__.__name__.encode()
        keys = [b"pipe-%s-%d" % (tag, i) for i in range(50)]
        model = {}
        reqs, want = [], []
        for i in range(10_000):
            op = rng.randrange(8)
            k = rng.choice(keys)
            if op < 3:
                v = rng.randbytes(rng.randrange(0, 300))
                reqs.append(mb(b"SET", k, v))
                want.append(b"+OK\r\n")
                model[k] = v
            elif op < 6:
                reqs.append(mb(b"GET", k) if op < 5 else b"GET " + k + b"\r\n")
                want.append(bulk(model.get(k)))
            elif op == 6:
                ks = rng.sample(keys, rng.randrange(1, 4))
                reqs.append(mb(b"DEL", *ks))
                want.append(b":%d\r\n" % sum(
                    model.pop(x, None) is not None for x in ks))
            else:
                reqs.append(b"PING\r\n" if i % 2 else mb(b"PING", b"%d" % i))
                want.append(b"+PONG\r\n" if i % 2 else bulk(b"%d" % i))
        data = b"".join(reqs)
        expected = b"".join(want)
        c = self.client()
        err = []

        def send():
            try:
                off = 0
                while off < len(data):
                    n = rng.randint(1, 8192)
                    c.s.sendall(data[off:off + n])
                    off += n
            except OSError as e:
                err.append(e)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        got = c.read_exact(len(expected))
        t.join(DEADLINE)
        self.assertEqual(err, [])
        if got != expected:
            bad = next((i for i in range(min(len(got), len(expected)))
                        if got[i] != expected[i]), min(len(got), len(expected)))
            self.fail("pipeline replies differ at byte %d of %d (got %d): "
                      "%r vs %r" % (bad, len(expected), len(got),
                                    got[bad - 40:bad + 40],
                                    expected[bad - 40:bad + 40]))

    def test_binary_and_large_values(self):
        c = self.client()
        tag = self.__class__.__name__.encode()
        binary = bytes(range(256)) * 3 + b"\r\n\r\n*2\r\n$3\r\n"
        c.expect(self, mb(b"SET", b"bin\r\n" + tag, binary), b"+OK\r\n")
        c.expect(self, mb(b"GET", b"bin\r\n" + tag), bulk(binary))
        big = random.Random(5).randbytes(1 << 20)
        c.expect(self, mb(b"SET", b"big" + tag, big), b"+OK\r\n")
        c.expect(self, mb(b"GET", b"big" + tag) * 3, bulk(big) * 3)
        c.expect(self, mb(b"DEL", b"big" + tag, b"bin\r\n" + tag), b":2\r\n")

    def assert_error_close(self, request, why):
        c = self.client()
        c.s.sendall(request)
        got, eof = c.read_to_eof()
        self.assertTrue(got.startswith(b"-ERR Protocol error: "),
                        (request[:60], got[:200]))
        self.assertIn(why, got)
        self.assertTrue(got.endswith(b"\r\n"), got[-60:])
        self.assertTrue(eof, "no close after %r" % got)

    def test_garbage(self):
        self.assert_error_close(b"*abc\r\n", b"invalid multibulk length")
        self.assert_error_close(b"*1\r\nGET\r\n", b"expected '$'")
        self.assert_error_close(b"*2\r\n$3\r\nGET\r\n$x\r\n",
                                b"invalid bulk length")
        self.assert_error_close(b"*1\r\n$4\r\nPINGxx\r\n", b"CRLF")
        # replies before the garbage still come, in order
        c = self.client()
        c.s.sendall(b"PING\r\n*x\r\nPING\r\n")
        got, eof = c.read_to_eof()
        self.assertTrue(got.startswith(b"+PONG\r\n-ERR Protocol error: "), got)
        self.assertTrue(eof)

    def test_limits(self):
        self.assert_error_close(
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % ((1 << 20) + 1),
            b"invalid bulk length")
        self.assert_error_close(b"*1025\r\n", b"invalid multibulk length")
        self.assert_error_close(b"*1\r\n$" + b"9" * 40, b"invalid bulk length")
        self.assert_error_close(b"x" * (65 << 10), b"too big inline request")
        # complete arguments adding up beyond 2 * max-bulk + 64 KiB
        arg = b"$%d\r\n%s\r\n" % (1 << 20, b"z" * (1 << 20))
        self.assert_error_close(b"*10\r\n$3\r\nDEL\r\n" + arg * 3,
                                b"request too big")

    def test_max_memory(self):
        srv = Server(self.argv, self.env, "--max-memory", "1000")
        try:
            c = self.client(srv)
            c.expect(self, mb("SET", "a", "x" * 600), b"+OK\r\n")
            c.s.sendall(mb("SET", "b", "y" * 600))
            self.assertTrue(self.read_line(c).startswith(b"-OOM"))
            # replacing a value frees the old one
            c.expect(self, mb("SET", "a", "z" * 990), b"+OK\r\n")
            c.expect(self, mb("DEL", "a"), b":1\r\n")
            c.expect(self, mb("SET", "b", "y" * 600), b"+OK\r\n")
            c.expect(self, mb("GET", "b"), bulk(b"y" * 600))
        finally:
            status, err = srv.stop()
        self.assertEqual((status, err), (0, b""))

    def test_reader_that_never_reads(self):
        """Pipelined GETs of a 256 KiB value, never read: the server stops
        reading them (its RSS stays within RSS_GROWTH_MAX) and answers
        another client meanwhile; it serves on once the hog is gone."""
        srv = Server(self.argv, self.env)
        try:
            c = self.client(srv)
            c.expect(self, mb("SET", "big", "v" * (256 << 10)), b"+OK\r\n")
            c.expect(self, b"PING\r\n", b"+PONG\r\n")
            base = srv.rss()
            hog = socket.create_connection(srv.address, timeout=DEADLINE)
            hog.setblocking(False)
            # (a PING first: every batch of replies is a new object; Python
            # joins a lone GET reply into the stored value itself)
            req = b"PING\r\nGET big\r\n" * 600
            sent = 0
            end = time.monotonic() + (3.0 if SANITIZED else 1.5)
            peak = base
            while time.monotonic() < end and sent < (64 << 20):
                try:
                    sent += hog.send(req)
                except BlockingIOError:
                    time.sleep(0.01)
                peak = max(peak, srv.rss())
            # asked for far more than the bound: it did not all run
            self.assertGreater(sent // 15 * (256 << 10), 10 * RSS_GROWTH_MAX)
            for i in range(20):
                c.expect(self, mb("PING", str(i)), bulk(str(i).encode()))
                peak = max(peak, srv.rss())
            self.assertLess(peak - base, RSS_GROWTH_MAX,
                            "VmRSS %d -> %d" % (base, peak))
            hog.close()
            c.expect(self, mb("GET", "nothing"), b"$-1\r\n")
        finally:
            status, err = srv.stop()
        self.assertEqual((status, err), (0, b""))

    def test_signals_and_args(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            srv = Server(self.argv, self.env)
            c = Client(srv.address)
            c.expect(self, b"PING\r\n", b"+PONG\r\n")
            status, err = srv.stop(sig)
            c.close()
            self.assertEqual((status, err), (0, b""), sig)
        for bad in ([], ["--listen", "127.0.0.1:0", "--max-memory", "x"],
                    ["--listen", "127.0.0.1:0", "--mode", "fast"],
                    ["--listen", "127.0.0.1:0", "--nonsense"]):
            p = subprocess.run(self.argv + bad, env=self.env,
                               capture_output=True, timeout=DEADLINE)
            self.assertEqual(p.returncode, 1, (bad, p.stderr))
            self.assertTrue(p.stderr, bad)

    def test_modes(self):
        for mode in ("bundle", "ring", "serial"):
            with uringbuf.Loop() as loop:
                if loop.mode_check(mode):
                    continue
            srv = Server(self.argv, self.env, "--mode", mode)
            try:
                c = self.client(srv)
                c.expect(self, mb("SET", "m", mode) + mb("GET", "m") * 200,
                         b"+OK\r\n" + bulk(mode.encode()) * 200)
            finally:
                status, err = srv.stop()
            self.assertEqual((status, err), (0, b""), mode)

    def test_redis_benchmark(self):
        rb = shutil.which("redis-benchmark")
        if not rb:
            self.skipTest("redis-benchmark is not installed (Debian "
                          "redis-tools)")
        h, p = self.srv.address
        r = subprocess.run([rb, "-h", h, "-p", str(p), "-n", "2000", "-P",
                            "16", "-c", "10", "-t", "set,get", "-q"],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.replace("\r", "\n")
        self.assertNotIn("WARNING", out + r.stderr)
        self.assertNotIn("ERROR", out + r.stderr)
        for test in ("SET", "GET"):
            m = re.search(r"^ *%s: ([0-9.]+) requests per second" % test,
                          out, re.M)
            self.assertTrue(m, out)
            self.assertGreater(float(m.group(1)), 0)


class TestKVC(KVCases, unittest.TestCase):
    command = staticmethod(c_command)


class TestKVPython(KVCases, unittest.TestCase):
    command = staticmethod(py_command)


class TestKVLua(KVCases, unittest.TestCase):
    command = staticmethod(lua_command)


if __name__ == "__main__":
    unittest.main()
