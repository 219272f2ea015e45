"""Bad input never crashes: wrong types, negative and huge sizes, None,
closed loops, closed connections, freed pools, released buffers, buffers of
another loop.  Each is a clear exception (TypeError, ValueError, OSError,
ClosedError, BufferError); a fuzz loop calls every wrapped function and
method with such arguments."""
import errno
import gc
import random
import socket
import time
import unittest

import uringbuf
from uringbuf import core

from ubtest import tcp_pair, wait_events

EXPECTED = (TypeError, ValueError, OSError, BufferError, RuntimeError,
            uringbuf.ClosedError)


class Zoo:
    """Live and dead objects of every kind, and plain garbage."""

    def __init__(self):
        self.loop = uringbuf.Loop()
        self.other = uringbuf.Loop()
        self.pool = self.loop.pool(4, 64)
        self.rpool = self.loop.pool(4, 64, recv=True)
        self.conn, self.peer = tcp_pair(self.loop)
        self.lst = self.loop.listen("127.0.0.1:0")
        self.dgram = self.loop.datagram("127.0.0.1:0")
        self.buf = self.pool.acquire()
        self.buf.fill(b"live")
        self.other_buf = self.other.send_pool().acquire()
        self.other_buf.fill(b"other")
        # dead things
        self.dead_loop = uringbuf.Loop()
        self.dead_pool = self.dead_loop.pool(2, 64)
        self.dead_loop_buf = self.dead_pool.acquire()
        dl_conn, self.dl_peer = tcp_pair(self.dead_loop)
        self.dead_loop_conn = dl_conn
        self.dead_loop_dgram = self.dead_loop.datagram("127.0.0.1:0")
        self.dead_loop.close()
        self.freed_pool = self.loop.pool(2, 32)
        self.freed_pool.free()
        self.released = self.pool.acquire()
        self.released.release()
        c2, p2 = tcp_pair(self.loop)
        c2.abort()
        wait_events(self.loop, lambda: c2.closed, lambda ev: None)
        self.loop.wait(min=0, timeout=0)  # the core frees it here
        self.closed_conn = c2
        p2.close()
        d2 = self.loop.datagram("127.0.0.1:0")
        d2.close()
        wait_events(self.loop, lambda: d2.closed, lambda ev: None)
        self.loop.wait(min=0, timeout=0)
        self.closed_dgram = d2

    def garbage(self):
        return [None, -1, 0, 1, 2 ** 31, -2 ** 31 - 1, 2 ** 64, 2 ** 70,
                -2 ** 70, 1.5, float("nan"), "x", "", "127.0.0.1:0",
                "1.2.3.4:99999", "[::1", "unix:", b"bytes", bytearray(3),
                memoryview(b"mv"), object(), (), ("127.0.0.1",),
                ("127.0.0.1", -1), ("127.0.0.1", 2 ** 40), (1, 2), {},
                {"mode": "nope"}, {"bogus": 1}, {"recv_pool": 3},
                {"high_water": -5}, {"ring_entries": 3}, [], True, socket,
                self.dead_loop, self.dead_pool, self.dead_loop_buf,
                self.dead_loop_conn, self.freed_pool, self.released,
                self.closed_conn, self.other_buf, self.dead_loop_dgram,
                self.closed_dgram, self.dgram, ("::1", 9), "unix:@x",
                "[::1]:9", "127.0.0.1:9", bytes(70000)]

    def close(self):
        self.peer.close()
        self.dl_peer.close()
        gc.collect()
        self.loop.close()
        self.other.close()


class BadInput(unittest.TestCase):
    def setUp(self):
        self.z = Zoo()

    def tearDown(self):
        self.z.close()

    def test_closed_loop(self):
        z = self.z
        for f in (lambda: z.dead_loop.wait(), z.dead_loop.recv_pool,
                  lambda: z.dead_loop.pool(1, 1),
                  lambda: z.dead_loop.listen("127.0.0.1:0"),
                  lambda: z.dead_loop.connect("127.0.0.1:1"),
                  lambda: z.dead_loop.features,
                  lambda: core.ub_loop_features(z.dead_loop),
                  lambda: z.dead_pool.acquire(),
                  lambda: len(z.dead_loop_buf),
                  lambda: memoryview(z.dead_loop_buf),
                  lambda: z.dead_loop_buf.release(),
                  lambda: z.dead_loop_conn.send(b"x"),
                  lambda: z.dead_loop_conn.fd,
                  lambda: core.ub_conn_close(z.dead_loop_conn)):
            with self.assertRaises(uringbuf.ClosedError) as cm:
                f()
            self.assertIn("loop is closed", str(cm.exception))
        z.dead_loop.close()  # idempotent
        self.assertTrue(z.dead_loop.closed)

    def test_closed_connection(self):
        z = self.z
        for f in (lambda: z.closed_conn.send(b"x"),
                  lambda: z.closed_conn.send(z.buf),
                  z.closed_conn.close, z.closed_conn.abort,
                  lambda: z.closed_conn.pipe(z.conn),
                  lambda: z.conn.pipe(z.closed_conn),
                  lambda: z.closed_conn.queued_bytes,
                  lambda: core.ub_conn_send(z.closed_conn, b"x")):
            with self.assertRaises(uringbuf.ClosedError):
                f()
        self.assertTrue(z.closed_conn.closed)
        self.assertTrue(z.buf.valid)

    def test_datagram_closed_and_closing(self):
        z = self.z
        for f in (lambda: z.closed_dgram.send(b"x", "127.0.0.1:9"),
                  z.closed_dgram.close, lambda: z.closed_dgram.fd,
                  lambda: z.closed_dgram.resume_recv(),
                  lambda: z.dead_loop_dgram.send(b"x", "127.0.0.1:9"),
                  lambda: z.dead_loop_dgram.sockname):
            with self.assertRaises(uringbuf.ClosedError):
                f()
        with self.assertRaises(ValueError):
            z.dgram.send(z.other_buf, "127.0.0.1:9")
        with self.assertRaises(uringbuf.ClosedError):
            z.dgram.send(z.released, "127.0.0.1:9")
        with self.assertRaises(TypeError):
            z.loop.datagram("127.0.0.1:0", recv_pool="p")
        with self.assertRaises(ValueError):
            z.loop.datagram("127.0.0.1:0", recv_pool=z.rpool)  # 64 bytes
        self.assertTrue(z.other_buf.valid)

    def test_closing_connection(self):
        z = self.z
        z.conn.close()
        with self.assertRaises(BrokenPipeError):
            z.conn.send(b"x")
        with self.assertRaises(BrokenPipeError):
            z.conn.close()
        with self.assertRaises(BrokenPipeError):
            z.conn.send(z.buf)
        self.assertTrue(z.buf.valid)  # refused: still yours

    def test_sizes(self):
        z = self.z
        for count, size in ((0, 64), (1, 0), (-1, 64), (64, -1),
                            (2 ** 32, 64), (40000, 64), (1, 2 ** 31),
                            (2 ** 70, 1)):
            with self.assertRaises((ValueError, OSError)):
                z.loop.pool(count, size)
        for n in (-1, 65, 2 ** 64, 2 ** 70):
            with self.assertRaises(ValueError):
                z.buf.length = n
        for hi, lo in ((0, 0), (10, 20), (-1, 0), (2 ** 70, 1)):
            with self.assertRaises(ValueError):
                z.conn.set_water(hi, lo)
        for kw in ({"max": 0}, {"max": -1}, {"max": 2 ** 20},
                   {"min": -1}, {"min": 300}, {"timeout": -2},
                   {"timeout": 2 ** 40}):
            with self.assertRaises(ValueError):
                z.loop.wait(**kw)
        with self.assertRaises(ValueError):
            z.loop.connect("127.0.0.1:1", high_water=0)
        with self.assertRaises(ValueError):
            z.loop.connect("127.0.0.1:1", ring_entries=3)
        with self.assertRaises(ValueError):
            z.loop.connect("127.0.0.1:1", mode="fast")
        with self.assertRaises(ValueError):
            z.loop.connect("127.0.0.1:1", low_water=10, high_water=5)

    def test_wrong_types(self):
        z = self.z
        for f in (lambda: z.conn.send("text"), lambda: z.conn.send(None),
                  lambda: z.conn.send(12), lambda: z.conn.send_buf(b"x"),
                  lambda: z.conn.pipe("x"), lambda: z.loop.pool("1", 2),
                  lambda: z.loop.pool(1.0, 2), lambda: z.loop.listen(None),
                  # flags are bools: "send" is not a receive pool
                  lambda: z.loop.pool(1, 64, "send"),
                  lambda: z.loop.pool(1, 64, recv=1),
                  lambda: z.loop.listen(80), lambda: z.loop.adopt("fd"),
                  lambda: z.loop.connect("x", recv_pool=z.pool),
                  lambda: z.loop.connect("127.0.0.1:1", recv_pool="p"),
                  lambda: core.ub_conn_send(z.pool, b"x"),
                  lambda: core.ub_buf_release(z.conn),
                  lambda: core.ub_pool_acquire(None),
                  lambda: core.ub_loop_features(object()),
                  lambda: core.Connection(), lambda: core.Buffer(),
                  lambda: uringbuf.Loop(entries="x")):
            with self.assertRaises((TypeError, ValueError)):
                f()

    def assertReason(self, reason, f, *args, **kw):
        """f(*args, **kw) raises InvalidArgument (an OSError EINVAL and a
        ValueError) whose text is the core's reason, word for word."""
        with self.assertRaises(uringbuf.InvalidArgument) as cm:
            f(*args, **kw)
        self.assertIsInstance(cm.exception, ValueError)
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        self.assertEqual(cm.exception.strerror, reason)

    def test_core_reasons(self):
        """The core's option checks name the field and the rule; the
        binding raises their words instead of restating the rules."""
        z = self.z
        a = "127.0.0.1:1"
        r = self.assertReason
        r("entries must be at most 32768", uringbuf.Loop, entries=40000)
        r("pool_size must be at most 1 GiB", uringbuf.Loop,
          pool_size=2 ** 30 + 1)
        r("disable has a bit that is no UB_FEAT_* feature", uringbuf.Loop,
          disable=1 << 20)
        r("count must be 1..32768 buffers", z.loop.pool, 0, 64)
        r("count must be 1..32768 buffers", z.loop.pool, 40000, 64)
        r("size must be 1 byte..1 GiB", z.loop.pool, 1, 2 ** 31)
        r("count * size must be at most 64 GiB", z.loop.pool, 32768, 2 ** 30)
        for f in (z.loop.connect, z.loop.listen):
            r("ring_entries must be a power of 2 up to 32768", f, a,
              ring_entries=3)
            r("ring_entries must be a power of 2 up to 32768", f, a,
              ring_entries=65536)
            r("high_water must be > 0", f, a, high_water=0)
            r("low_water must not exceed high_water", f, a, high_water=5,
              low_water=10)
            r("low_water must not exceed high_water", f, a,
              low_water=2 ** 21)
            r("flags has a bit that is no UB_CONN_* flag", f, a,
              flags=1 << 9)
            r("recv_pool must be a receive pool", f, a, recv_pool=z.pool)
            r("send_pool must be a send pool", f, a, send_pool=z.rpool)
            r("recv_pool belongs to another loop", f, a,
              recv_pool=z.other.recv_pool())
            r("send_pool belongs to another loop", f, a,
              send_pool=z.other.send_pool())
        r("high_water must be > 0", z.conn.set_water, 0, 0)
        r("low_water must not exceed high_water", z.conn.set_water, 10, 20)
        r("low_water must not exceed high_water", z.dgram.set_water, 10, 20)
        d = "127.0.0.1:0"
        r("queue_max must be at most 32768 datagrams", z.loop.datagram, d,
          queue_max=40000)
        r("low_water must not exceed high_water", z.loop.datagram, d,
          high_water=5, low_water=10)
        r("recv_pool: a datagram endpoint needs buffers of more than 128 "
          "bytes (its header) and a multiple of 8", z.loop.datagram, d,
          recv_pool=z.rpool)
        r("recv_pool belongs to another loop", z.loop.datagram, d,
          recv_pool=z.other.recv_pool())
        with uringbuf.Loop(pool_size=64) as small:
            with self.assertRaises(uringbuf.InvalidArgument) as cm:
                small.datagram(d)
            self.assertIn("default receive pool", str(cm.exception))
        # the flat functions: the same reasons, and the checks themselves
        r("ring_entries must be a power of 2 up to 32768",
          core.ub_conn_connect, z.loop, a, {"ring_entries": 3})
        r("recv_pool must be a receive pool", core.ub_listen, z.loop, d, 0,
          0, {"recv_pool": z.pool})
        r("count must be 1..32768 buffers", core.ub_pool_new, z.loop, 0, 1,
          0)
        r("high_water must be > 0", core.ub_conn_set_water, z.conn, 0, 0)
        self.assertEqual(core.ub_conn_opts_check(z.loop, {"flags": 1 << 9}),
                         "flags has a bit that is no UB_CONN_* flag")
        self.assertIsNone(core.ub_conn_opts_check(z.loop, {"flags": 1}))
        self.assertIsNone(core.ub_conn_opts_check(z.loop, None))
        self.assertEqual(core.ub_pool_check(1, 0, 0),
                         "size must be 1 byte..1 GiB")
        self.assertIsNone(core.ub_pool_check(1, 1, core.UB_POOL_RECV))
        self.assertEqual(core.ub_water_check(1, 2),
                         "low_water must not exceed high_water")
        self.assertIsNone(core.ub_water_check(2, 1))

    def test_unavailable_mode_reason(self):
        """A forced mode the loop lacks: OSError EOPNOTSUPP (not a
        ValueError) naming the mode and the probe's reason."""
        with uringbuf.Loop(disable=uringbuf.FEAT_SEND_BUNDLE) as loop:
            why = loop.feature_reason(uringbuf.FEAT_SEND_BUNDLE)
            for f in (loop.connect, loop.listen):
                with self.assertRaises(OSError) as cm:
                    f("127.0.0.1:1", mode="bundle")
                self.assertNotIsInstance(cm.exception, ValueError)
                self.assertEqual(cm.exception.errno, errno.EOPNOTSUPP)
                self.assertEqual(cm.exception.strerror,
                                 "mode bundle unavailable: " + why)
            self.assertEqual(core.ub_conn_opts_check(loop, {"mode": "bundle"}),
                             "mode bundle unavailable: " + why)

    def test_pools_and_buffers_of_the_wrong_kind(self):
        z = self.z
        with self.assertRaises(ValueError):  # a send pool as recv_pool
            z.loop.connect("127.0.0.1:1", recv_pool=z.pool)
        with self.assertRaises(ValueError):  # another loop's pool
            z.loop.connect("127.0.0.1:1",
                           recv_pool=z.other.recv_pool())
        with self.assertRaises(ValueError):
            z.conn.send(z.other_buf)
        with self.assertRaises(uringbuf.ClosedError):
            z.conn.send(z.released)
        with self.assertRaises(uringbuf.InvalidArgument):
            core.ub_conn_send_buf(z.conn, z.other_buf)
        with self.assertRaises(uringbuf.InvalidArgument):
            core.ub_mode_from_name("nope")
        with self.assertRaises(ValueError):
            z.pool.count_state(9)
        with self.assertRaises(ValueError):
            z.conn.pipe(z.conn)
        self.assertTrue(z.other_buf.valid)

    def test_fuzz_every_function_and_method(self):
        """Call every flat function and every method with garbage (2000+
        calls, random argument counts): only expected exceptions, never a
        crash, and the live objects still work afterwards."""
        z = self.z
        rng = random.Random(1234)
        garbage = z.garbage()
        funcs = [getattr(core, n) for n in dir(core) if n.startswith("ub_")]
        dead = [z.dead_loop, z.dead_pool, z.dead_loop_buf,
                z.dead_loop_conn, z.freed_pool, z.released, z.closed_conn,
                z.dead_loop_dgram, z.closed_dgram]
        methods = []
        for obj in dead + [z.loop, z.pool, z.conn, z.lst, z.buf, z.dgram]:
            for name in dir(obj):
                if name.startswith("_") and name not in ("__enter__",
                                                         "__exit__"):
                    continue
                attr = getattr(type(obj), name, None)
                if callable(attr) and obj not in dead:
                    # Live objects: only calls that take arguments, and
                    # never ones that would close or consume them.
                    # (adopt: a small int could name a real descriptor
                    # of this process, stdin included.)
                    if name in ("close", "abort", "shutdown", "free",
                                "release", "__exit__", "pause_recv",
                                "adopt", "adopt_listener",
                                "adopt_datagram"):
                        continue
                methods.append((obj, name))
        calls = 0
        # Garbage that is bytes-like is a valid send() on the live
        # connection: what it sends must reach the peer, in order.
        sent = b""
        for _ in range(3):
            for f in funcs:
                for nargs in range(4):
                    args = [rng.choice(garbage) for _ in range(nargs)]
                    try:
                        f(*args)
                    except EXPECTED:
                        pass
                    calls += 1
            for obj, name in methods:
                live = obj not in dead
                for nargs in range(1 if live else 0, 4):
                    args = [rng.choice(garbage) for _ in range(nargs)]
                    try:
                        attr = getattr(obj, name)
                        if live and name == "wait":
                            # Never block: wait(1, 1) with no timeout
                            # would wait for an event that never comes.
                            attr(*args[:2], timeout=0)
                        elif callable(attr):
                            r = attr(*args)
                            if obj is z.conn and name == "send":
                                sent += bytes(memoryview(args[0]))[:r]
                    except EXPECTED:
                        pass
                    calls += 1
        # attribute reads of dead objects
        for obj in dead:
            for name in dir(obj):
                if not name.startswith("_"):
                    try:
                        getattr(obj, name)
                    except EXPECTED:
                        pass
        self.assertGreater(calls, 2000)
        # Still alive and well.
        z.conn.send(b"ping")
        z.buf.fill(b"pong")
        z.conn.send(z.buf)
        got = b""
        z.peer.settimeout(5)
        deadline = time.monotonic() + 10
        while len(got) < len(sent) + 8 and time.monotonic() < deadline:
            z.loop.wait(min=0, timeout=10)
            try:
                got += z.peer.recv(100, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
        self.assertEqual(got, sent + b"pingpong")
        # the endpoint too (even if a garbage connect() gave it a peer)
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind(("127.0.0.1", 0))
        r.settimeout(10)
        z.dgram.send(b"dgram ok", r.getsockname())
        deadline = time.monotonic() + 10
        while z.dgram.queued_bufs and time.monotonic() < deadline:
            z.loop.wait(min=0, timeout=10)
        self.assertEqual(r.recv(100), b"dgram ok")
        r.close()

    def test_repeated_misuse_does_not_leak(self):
        """The same mistakes many times over: counts stay put."""
        z = self.z
        for _ in range(500):
            for f in (lambda: z.conn.send(z.other_buf),
                      lambda: z.released.release(),
                      lambda: z.pool.count_state(-1),
                      lambda: z.loop.pool(0, 0),
                      lambda: z.loop.listen("nonsense")):
                with self.assertRaises(EXPECTED):
                    f()
        self.assertEqual(z.pool.count_state(uringbuf.BUF_APP), 1)
        self.assertEqual(z.loop.exports, 0)


if __name__ == "__main__":
    unittest.main()
