"""Datagram endpoints (issue 13): uringbuf.Datagram on the event API, the
DatagramProtocol / DatagramTransport layer on the native loop and inside
asyncio, and examples/udp_echo.py as a program.  Loopback only; every loop
is bounded in batches and time.

Random-size datagrams (1 B .. 65507 B) from many sockets come back
byte-exact to their sender (each one counted and compared, with a bounded
window); truncation is reported; a dry receive pool counts ENOBUFS and
receiving resumes; IPv6 and Unix datagram sockets; bad addresses and sizes
raise; close with sends in flight gives every buffer back."""
import errno
import gc
import os
import random
import signal
import socket
import struct
import time
import unittest

import uringbuf
from uringbuf import core

from ubtest import DEADLINE, EXAMPLES, NO_ASYNCIO, SANITIZED, ua, wait_events

BIG = 65536 + uringbuf.DGRAM_HDR  # room for any UDP datagram
UDP_MAX = 65507


def _rcvbuf(s, n):
    """A big receive buffer (SO_RCVBUFFORCE as root, else what the limit
    allows): loopback drops what does not fit."""
    try:
        s.setsockopt(socket.SOL_SOCKET, 33, n)  # SO_RCVBUFFORCE
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, n)


def _udp_sock(family=socket.AF_INET, host="127.0.0.1", rcvbuf=1 << 22):
    s = socket.socket(family, socket.SOCK_DGRAM)
    _rcvbuf(s, rcvbuf)
    s.bind((host, 0))
    s.setblocking(False)
    return s


def _port(addr):
    return int(addr.rpartition(":")[2])


def _echo_events(ep, fifo):
    """An event handler echoing every DATA buffer of ep to its source; a
    refused reply waits in fifo (in order) until EV_WRITABLE."""
    def flush():
        while fifo:
            buf = fifo[0]
            try:
                ep.send(buf, buf.source)
            except BlockingIOError:
                return
            fifo.pop(0)

    def handle(ev):
        if ev.dgram is not ep:
            return
        if ev.type == uringbuf.EV_DATA:
            fifo.append(ev.buf)
            flush()
        elif ev.type == uringbuf.EV_WRITABLE:
            flush()
    return handle


def _try_unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class DatagramEvents(unittest.TestCase):
    """The event API: Loop.datagram(), Event.dgram, Buffer.source."""

    def setUp(self):
        self.loop = uringbuf.Loop()
        self.socks = []

    def tearDown(self):
        for s in self.socks:
            s.close()
        gc.collect()
        self.loop.close()

    def sock(self, *args, **kw):
        s = _udp_sock(*args, **kw)
        self.socks.append(s)
        return s

    def open_server(self, addr="127.0.0.1:0", family=socket.AF_INET,
                    **opts):
        """An endpoint adopted from a socket with a big receive buffer."""
        s = socket.socket(family, socket.SOCK_DGRAM)
        _rcvbuf(s, 1 << 23)
        host, _, port = addr.rpartition(":")
        s.bind((host.strip("[]"), int(port)))
        return self.loop.adopt_datagram(s, **opts)

    def recv_one(self, ep, timeout=DEADLINE):
        got = []
        wait_events(self.loop, lambda: got, lambda ev: got.append(ev)
                    if ev.dgram is ep and ev.type == uringbuf.EV_DATA
                    else None, timeout)
        return got[0]

    def test_echo_random_sizes_many_senders(self):
        """1 B .. 65507 B from many sockets, each echoed byte-exact to its
        sender: every datagram counted and compared (window 2 each)."""
        pool = self.loop.pool(64, BIG, recv=True)
        ep = self.open_server(recv_pool=pool, queue_max=64,
                              high_water=64 * BIG, recv_budget=64 * BIG)
        server = ("127.0.0.1", _port(ep.sockname))
        nclients, each, window = (4, 20, 2) if SANITIZED else (8, 40, 2)
        rng = random.Random(13)
        clients = [self.sock() for _ in range(nclients)]
        sent = [0] * nclients
        outstanding = [dict() for _ in range(nclients)]
        received = [0] * nclients
        fifo = []
        handle = _echo_events(ep, fifo)

        def payload(c, seq):
            size = rng.choice((1, rng.randint(1, 1500),
                               rng.randint(1, UDP_MAX), UDP_MAX))
            head = struct.pack("!HI", c, seq)[:size]
            body = random.Random(c * 100000 + seq).randbytes(
                max(0, size - len(head)))
            return head + body

        deadline = time.monotonic() + DEADLINE
        total = nclients * each
        while sum(received) < total and time.monotonic() < deadline:
            for c, s in enumerate(clients):
                while sent[c] < each and len(outstanding[c]) < window:
                    data = payload(c, sent[c])
                    outstanding[c][sent[c]] = data
                    s.sendto(data, server)
                    sent[c] += 1
            for ev in self.loop.wait(min=0, timeout=5):
                handle(ev)
            for c, s in enumerate(clients):
                while True:
                    try:
                        data, addr = s.recvfrom(1 << 17)
                    except BlockingIOError:
                        break
                    self.assertEqual(addr, server)
                    if len(data) >= 6:
                        cid, seq = struct.unpack("!HI", data[:6])
                        self.assertEqual(cid, c)
                    else:  # too short for a header: the oldest of that size
                        seq = min(k for k, v in outstanding[c].items()
                                  if v == data)
                    self.assertEqual(data, outstanding[c].pop(seq))
                    received[c] += 1
        self.assertEqual(received, [each] * nclients)
        self.assertEqual(ep.received, total)
        wait_events(self.loop, lambda: ep.sent == total, handle)
        self.assertEqual(ep.nobufs, 0)
        self.assertEqual(pool.count_state(uringbuf.BUF_APP), 0)

    def test_event_fields_and_source(self):
        ep = self.loop.datagram("127.0.0.1:0")
        c = self.sock()
        c.sendto(b"hello", ("127.0.0.1", _port(ep.sockname)))
        ev = self.recv_one(ep)
        self.assertIs(ev.dgram, ep)
        self.assertIsNone(ev.conn)
        self.assertIsNone(ev.listener)
        self.assertEqual(len(ev), 6)  # the tuple is unchanged
        t, res, conn, lst, buf, ud = ev
        self.assertEqual((t, res, bytes(buf)), (uringbuf.EV_DATA, 5,
                                                 b"hello"))
        self.assertEqual(buf.source, "127.0.0.1:%d" % c.getsockname()[1])
        self.assertFalse(buf.truncated)
        self.assertTrue(buf.readonly)
        self.assertEqual(ep.send(buf, buf.source), 5)
        self.assertFalse(buf.valid)  # sent: stale
        c.settimeout(DEADLINE)
        wait_events(self.loop, lambda: ep.sent == 1, lambda ev: None)
        self.assertEqual(c.recvfrom(100)[0], b"hello")
        # a send buffer has no source
        b = self.loop.send_pool().acquire()
        self.assertIsNone(b.source)
        self.assertFalse(b.truncated)
        b.release()
        self.assertIn(ep, self.loop.datagrams)
        self.assertNotIn(ep, self.loop.connections)

    def test_source_strings_cached_and_used(self):
        """Buffer.source of one sender is one str object, and a send to that
        object goes to the address it names; 200 senders (more than the
        cache holds, so entries are replaced) each get their own name and
        reply; a str that names another address is never mistaken."""
        # (a budget for the 200 buffers held at once)
        ep = self.loop.datagram("127.0.0.1:0", queue_max=512,
                                recv_budget=4 << 20)
        port = _port(ep.sockname)
        socks = [self.sock() for _ in range(200)]
        for rnd in range(2):
            for i, c in enumerate(socks):
                c.sendto(b"%d.%d" % (rnd, i), ("127.0.0.1", port))
            got = []
            wait_events(self.loop, lambda: len(got) == len(socks),
                        lambda ev: got.append(ev.buf)
                        if ev.type == uringbuf.EV_DATA else None)
            names = {}
            for buf in got:
                i = int(bytes(buf).split(b".")[1])
                src = buf.source
                self.assertEqual(src, "127.0.0.1:%d"
                                 % socks[i].getsockname()[1])
                self.assertIs(buf.source, src)  # the cached object
                names[i] = src
                # to the str (cached, not parsed): back to its sender
                n = len(buf)
                self.assertEqual(ep.send(buf, src), n)
            wait_events(self.loop, lambda: ep.queued_bufs == 0,
                        lambda ev: None)
            for i, c in enumerate(socks):
                c.settimeout(DEADLINE)
                self.assertEqual(c.recvfrom(100)[0], b"%d.%d" % (rnd, i))
        # an equal str that is another object, and one parsed first
        c = socks[0]
        other = "127.0.0.1:%d" % socks[1].getsockname()[1]
        self.assertEqual(ep.send(b"x", other), 1)
        self.assertEqual(ep.send(b"y", "".join(other)), 1)
        socks[1].settimeout(DEADLINE)
        wait_events(self.loop, lambda: ep.queued_bufs == 0, lambda ev: None)
        self.assertEqual(socks[1].recvfrom(10)[0], b"x")
        self.assertEqual(socks[1].recvfrom(10)[0], b"y")

    def test_on_data_fast_path(self):
        """Loop.dispatch() hands buffers to on_data without an Event."""
        ep = self.loop.datagram("127.0.0.1:0")
        c = self.sock()
        got, slow = [], []
        ep.on_data = lambda buf: got.append((bytes(buf), buf.source))
        for i in range(5):
            c.sendto(b"%d" % i, ("127.0.0.1", _port(ep.sockname)))
        deadline = time.monotonic() + DEADLINE
        while len(got) < 5 and time.monotonic() < deadline:
            self.loop.dispatch(64, 1, 50, slow.append,
                               lambda exc, ud: slow.append(exc))
        src = "127.0.0.1:%d" % c.getsockname()[1]
        self.assertEqual(got, [(b"%d" % i, src) for i in range(5)])
        self.assertEqual(slow, [])
        with self.assertRaises(TypeError):
            ep.on_data = 3

    def test_on_datagram_fast_path(self):
        """on_datagram(buf, source): the sender too, no Event; it and
        on_data replace each other; an exception goes to report."""
        ep = self.loop.datagram("127.0.0.1:0")
        c = self.sock()
        got, slow, errs = [], [], []

        def recv(buf, src):
            if bytes(buf) == b"boom":
                raise ValueError("boom")
            got.append((bytes(buf), src))

        ep.on_datagram = recv
        self.assertIs(ep.on_datagram, recv)
        self.assertIs(ep.on_data, recv)
        for i in range(5):
            c.sendto(b"boom" if i == 2 else b"%d" % i,
                     ("127.0.0.1", _port(ep.sockname)))
        deadline = time.monotonic() + DEADLINE
        while len(got) + len(errs) < 5 and time.monotonic() < deadline:
            self.loop.dispatch(64, 1, 50, slow.append,
                               lambda exc, ud: errs.append(exc))
        src = "127.0.0.1:%d" % c.getsockname()[1]
        self.assertEqual(got, [(b"%d" % i, src) for i in (0, 1, 3, 4)])
        self.assertEqual([str(e) for e in errs], ["boom"])
        self.assertEqual(slow, [])
        ep.on_data = lambda buf: None  # replaces it
        self.assertIsNone(ep.on_datagram)
        ep.on_datagram = None
        self.assertIsNone(ep.on_data)
        with self.assertRaises(TypeError):
            ep.on_datagram = 3

    def test_truncation_reported(self):
        """The default 4 KiB pool holds 3968 bytes a datagram: a bigger one
        is cut and said so (res > len(buf), truncated)."""
        ep = self.loop.datagram("127.0.0.1:0")
        cap = self.loop.recv_pool().buf_size - uringbuf.DGRAM_HDR
        c = self.sock()
        data = random.Random(5).randbytes(5000)
        for d in (data, data[:cap]):
            c.sendto(d, ("127.0.0.1", _port(ep.sockname)))
            ev = self.recv_one(ep)
            self.assertEqual(ev.res, len(d))
            self.assertEqual(len(ev.buf), cap)
            self.assertEqual(bytes(ev.buf), d[:cap])
            self.assertEqual(ev.buf.truncated, len(d) > cap)
            self.assertEqual(core.ub_buf_truncated(ev.buf), len(d) > cap)
            ev.buf.release()

    def test_pool_exhaustion(self):
        """A tiny pool and a burst: ENOBUFS counted, nothing crashes, and
        receiving resumes once buffers come back."""
        # 16: room for a multishot receive (with less it takes one
        # datagram at a time and stops at the budget before the pool
        # runs dry)
        pool = self.loop.pool(16, 256, recv=True)
        ep = self.open_server(recv_pool=pool)
        c = self.sock()
        dst = ("127.0.0.1", _port(ep.sockname))
        held = []

        def keep(ev):
            if ev.type == uringbuf.EV_DATA:
                held.append(ev.buf)
        for i in range(64):
            c.sendto(b"burst %d" % i, dst)
        wait_events(self.loop, lambda: ep.nobufs > 0, keep)
        self.assertLessEqual(len(held), 16)
        self.assertEqual(pool.count_state(uringbuf.BUF_KERNEL), 0)
        first = len(held)
        for b in held:
            b.release()
        held.clear()
        # the backlog in the socket comes in, then fresh datagrams
        got = []

        def take(ev):
            if ev.type == uringbuf.EV_DATA:
                got.append(bytes(ev.buf))
                ev.buf.release()
        wait_events(self.loop, lambda: len(got) >= 64 - first, take)
        self.assertEqual(ep.dropped, 0)
        c.sendto(b"after", dst)
        wait_events(self.loop, lambda: b"after" in got, take)
        self.assertGreater(ep.nobufs, 0)
        self.assertEqual(pool.count_state(uringbuf.BUF_APP), 0)

    def test_budget_exact(self):
        """A burst past the budget: held stops at it exactly, the rest the
        kernel delivered in that pass is dropped and counted, and every
        datagram is either received or counted."""
        pool = self.loop.pool(64, 256, recv=True)
        ep = self.open_server(recv_pool=pool, recv_budget=20 * 256)
        c = self.sock()
        dst = ("127.0.0.1", _port(ep.sockname))
        held = []

        def keep(ev):
            if ev.type == uringbuf.EV_DATA:
                held.append(ev.buf)
                self.assertLessEqual(ep.recv_held, 20)
        for i in range(200):
            c.sendto(b"burst %d" % i, dst)
        wait_events(self.loop, lambda: ep.dropped > 0 and len(held) == 20,
                    keep)
        self.assertTrue(ep.recv_throttled)
        self.assertEqual(ep.recv_held, 20)
        for b in held:
            b.release()
        held.clear()

        def take(ev):
            if ev.type == uringbuf.EV_DATA:
                ev.buf.release()
        wait_events(self.loop, lambda: ep.received + ep.dropped >= 200, take)
        self.assertEqual(ep.received + ep.dropped, 200)

    def test_ipv6(self):
        try:
            c = self.sock(socket.AF_INET6, "::1")
        except OSError as e:
            self.skipTest("no IPv6 loopback: %s" % e)
        ep = self.loop.datagram("[::1]:0")
        self.assertEqual(ep.family, socket.AF_INET6)
        self.assertTrue(ep.sockname.startswith("[::1]:"))
        c.sendto(b"six", ("::1", _port(ep.sockname)))
        ev = self.recv_one(ep)
        self.assertEqual(ev.buf.source, "[::1]:%d" % c.getsockname()[1])
        ep.send(ev.buf, ev.buf.source)
        ep.send(b"tuple", ("::1", c.getsockname()[1]))
        c.settimeout(DEADLINE)
        wait_events(self.loop, lambda: ep.sent == 2, lambda ev: None)
        c.setblocking(True)
        self.assertEqual(c.recv(100), b"six")
        self.assertEqual(c.recv(100), b"tuple")
        with self.assertRaises(OSError) as cm:
            ep.send(b"x" * 65528, "[::1]:9")
        self.assertEqual(cm.exception.errno, errno.EMSGSIZE)

    def test_unix_datagram(self):
        name = "unix:@uringbuf-test-udp-%d" % os.getpid()
        ep = self.loop.datagram(name)
        self.assertEqual(ep.family, socket.AF_UNIX)
        self.assertEqual(ep.sockname, name)
        path = "/tmp/uringbuf-test-udp-%d.sock" % os.getpid()
        _try_unlink(path)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socks.append(c)
        c.bind(path)
        c.settimeout(DEADLINE)
        try:
            c.sendto(b"from a path", "\0" + name[6:])
            ev = self.recv_one(ep)
            self.assertEqual(ev.buf.source, "unix:" + path)
            ep.send(ev.buf, ev.buf.source)
            wait_events(self.loop, lambda: ep.sent == 1, lambda ev: None)
            self.assertEqual(c.recv(100), b"from a path")
        finally:
            _try_unlink(path)
        # an unbound sender has no address
        u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socks.append(u)
        u.sendto(b"anonymous", "\0" + name[6:])
        ev = self.recv_one(ep)
        self.assertIsNone(ev.buf.source)
        self.assertEqual(bytes(ev.buf), b"anonymous")
        # a path endpoint: close() unlinks it
        spath = "/tmp/uringbuf-test-udp-srv-%d.sock" % os.getpid()
        _try_unlink(spath)
        ep2 = self.loop.datagram("unix:" + spath)
        self.assertTrue(os.path.exists(spath))
        ep2.close()
        wait_events(self.loop, lambda: ep2.closed, lambda ev: None)
        self.assertFalse(os.path.exists(spath))

    def test_connect(self):
        ep = self.loop.datagram("127.0.0.1:0")
        c = self.sock()
        ep.connect(("127.0.0.1", c.getsockname()[1]))
        self.assertEqual(ep.peername, "127.0.0.1:%d" % c.getsockname()[1])
        self.assertEqual(ep.send(b"default peer"), 12)
        c.settimeout(DEADLINE)
        wait_events(self.loop, lambda: ep.sent == 1, lambda ev: None)
        c.setblocking(True)
        self.assertEqual(c.recv(100), b"default peer")

    def test_bad_addresses_and_sizes(self):
        loop = self.loop
        for addr in ("nonsense", "1.2.3.4:99999", "[::1", "unix:", "",
                     ("127.0.0.1", -1), ("127.0.0.1", 1 << 20)):
            with self.assertRaises(ValueError):
                loop.datagram(addr)
        for addr in (None, 80, b"127.0.0.1:0", ("127.0.0.1",), (1, 2)):
            with self.assertRaises((TypeError, ValueError)):
                loop.datagram(addr)
        with self.assertRaises(ValueError):  # buffers too small for header
            loop.datagram("127.0.0.1:0", recv_pool=loop.pool(4, 128,
                                                             recv=True))
        with self.assertRaises(ValueError):  # not a multiple of 8
            loop.datagram("127.0.0.1:0", recv_pool=loop.pool(4, 1001,
                                                             recv=True))
        with self.assertRaises(ValueError):  # a send pool
            loop.datagram("127.0.0.1:0", recv_pool=loop.send_pool())
        with uringbuf.Loop() as other:
            with self.assertRaises(ValueError):
                loop.datagram("127.0.0.1:0", recv_pool=other.recv_pool())
            ob = other.send_pool().acquire()
            ob.fill(b"x")
            ep = loop.datagram("127.0.0.1:0")
            with self.assertRaises(ValueError):
                ep.send(ob, "127.0.0.1:9")
            ob.release()
        for kw in ({"queue_max": 0}, {"queue_max": 40000},
                   {"high_water": 0}, {"high_water": -1},
                   {"low_water": 10, "high_water": 5},
                   {"recv_budget": 0}, {"queue_max": 1.5}):
            with self.assertRaises((TypeError, ValueError)):
                loop.datagram("127.0.0.1:0", **kw)
        for addr in ("nonsense", "1.2.3.4:99999", 42):
            with self.assertRaises((TypeError, ValueError)):
                ep.send(b"x", addr)
        with self.assertRaises(ValueError):
            ep.send(b"x", "[::1]:9")  # another family
        with self.assertRaises(ValueError):
            ep.connect("unix:@x")
        with self.assertRaises(OSError) as cm:
            ep.send(b"x")  # not connected
        self.assertEqual(cm.exception.errno, errno.EDESTADDRREQ)
        with self.assertRaises(OSError) as cm:
            ep.send(b"x" * (UDP_MAX + 1), "127.0.0.1:9")
        self.assertEqual(cm.exception.errno, errno.EMSGSIZE)
        with self.assertRaises(OSError) as cm:  # over a 4 KiB send buffer
            ep.send(b"x" * 5000, "127.0.0.1:9")
        self.assertEqual(cm.exception.errno, errno.EMSGSIZE)
        self.assertIn("send_pool", str(cm.exception))
        for data in ("text", None, 12):
            with self.assertRaises(TypeError):
                ep.send(data, "127.0.0.1:9")
        for hi, lo in ((0, 0), (10, 20)):
            with self.assertRaises(ValueError):
                ep.set_water(hi, lo)
        with self.assertRaises(ValueError):
            ep.recv_budget = 0
        with self.assertRaises(TypeError):
            ep.recv_budget = None
        ep.recv_budget = 8192
        self.assertEqual(ep.recv_budget, 8192)
        b = self.loop.send_pool().acquire()
        b.fill(b"kept")
        m = memoryview(b)
        with self.assertRaises(BufferError):
            ep.send(b, "127.0.0.1:9")
        m.release()
        ep.close()
        with self.assertRaises(BrokenPipeError):
            ep.send(b"x", "127.0.0.1:9")
        with self.assertRaises(BrokenPipeError):
            ep.send(b, "127.0.0.1:9")
        self.assertTrue(b.valid)  # refused: still yours
        with self.assertRaises(BrokenPipeError):
            ep.close()
        self.assertTrue(ep.closing)
        wait_events(self.loop, lambda: ep.closed, lambda ev: None)
        self.loop.wait(min=0, timeout=0)  # the core frees it here
        for f in (lambda: ep.send(b"x", "127.0.0.1:9"), ep.close,
                  lambda: ep.fd, lambda: ep.sockname, ep.pause_recv,
                  lambda: ep.connect("127.0.0.1:9")):
            with self.assertRaises(uringbuf.ClosedError):
                f()
        self.assertTrue(ep.closed)

    def test_backpressure(self):
        """queue_max datagrams queued: BlockingIOError, then EV_WRITABLE."""
        ep = self.loop.datagram("127.0.0.1:0", queue_max=4)
        c = self.sock()
        dst = c.getsockname()
        for i in range(4):
            ep.send(b"%d" % i, dst)
        self.assertEqual(ep.queued_bufs, 4)
        with self.assertRaises(BlockingIOError):
            ep.send(b"4", dst)
        types = []
        wait_events(self.loop, lambda: uringbuf.EV_WRITABLE in types,
                    lambda ev: types.append(ev.type))
        ep.send(b"4", dst)
        wait_events(self.loop, lambda: ep.sent == 5, lambda ev: None)
        c.setblocking(True)
        c.settimeout(DEADLINE)
        self.assertEqual([c.recv(10) for _ in range(5)],
                         [b"%d" % i for i in range(5)])

    def test_soft_water_takes_every_datagram_in_order(self):
        """set_soft_water(True): past queue_max and with the send pool
        dry, every datagram is taken (copies and the pool's own buffers,
        which wait as heap copies), counted, and sent in order; switched
        off while some wait, send() is refused until they are out."""
        spool = self.loop.pool(3, 256)
        ep = self.loop.datagram("127.0.0.1:0", queue_max=2,
                                send_pool=spool)
        ep.set_soft_water(True)
        c = self.sock()
        dst = c.getsockname()
        want = []
        for i in range(40):
            data = b"%03d" % i + bytes([i]) * (i * 5 % 200)
            want.append(data)
            b = None
            if i % 4 == 1:
                try:
                    b = spool.acquire()
                except OSError:
                    pass  # dry: held by copies waiting for their turn
            if b is None:
                self.assertEqual(ep.send(data, dst), len(data))
            else:
                b.fill(data)
                self.assertEqual(ep.send(b, dst), len(data))
                self.assertFalse(b.valid)  # the handle is spent
        self.assertEqual(ep.queued_bufs, 40)
        self.assertEqual(ep.queued_bytes, sum(map(len, want)))
        ep.set_soft_water(False)
        with self.assertRaises(BlockingIOError):
            ep.send(b"late", dst)  # it would pass the waiting ones
        wait_events(self.loop, lambda: ep.sent == 40, lambda ev: None)
        c.setblocking(True)
        c.settimeout(DEADLINE)
        self.assertEqual([c.recv(300) for _ in range(40)], want)
        self.assertEqual(ep.queued_bufs, 0)
        ep.close()
        wait_events(self.loop, lambda: ep.closed, lambda ev: None)
        self.assertEqual(spool.count_state(uringbuf.BUF_FREE), 3)
        spool.free()

    def test_close_with_sends_in_flight_returns_every_buffer(self):
        rpool = self.loop.pool(32, 2048, recv=True)
        spool = self.loop.pool(64, 1024)
        ep = self.open_server(recv_pool=rpool, send_pool=spool,
                              queue_max=256)
        c = self.sock(rcvbuf=4096)  # it drops most: sends still complete
        dst = c.getsockname()
        held = []
        for i in range(16):
            c.sendto(b"r%d" % i, ("127.0.0.1", _port(ep.sockname)))
        wait_events(self.loop, lambda: len(held) >= 16,
                    lambda ev: held.append(ev.buf)
                    if ev.type == uringbuf.EV_DATA else None)
        for b in held:
            ep.send(b, b.source)  # zero copy, back to the sender
        for i in range(64):
            ep.send(b"s" * 1000, dst)
        with self.assertRaises(BlockingIOError):  # the send pool is dry
            ep.send(b"more", dst)
        ep.close()
        wait_events(self.loop, lambda: ep.closed, lambda ev: None)
        self.loop.wait(min=0, timeout=0)
        self.assertEqual(spool.count_state(uringbuf.BUF_FREE), 64)
        self.assertEqual(rpool.count_state(uringbuf.BUF_APP), 0)
        self.assertEqual(rpool.count_state(uringbuf.BUF_QUEUED), 0)
        spool.free()  # nothing uses it any more


class Echo(uringbuf.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, buf, addr):
        self.transport.sendto(buf, addr)


class Client(uringbuf.DatagramProtocol):
    def __init__(self):
        self.got = []
        self.errors = []
        self.lost = []
        self.made = 0
        self.pauses = []

    def connection_made(self, transport):
        self.transport = transport
        self.made += 1

    def datagram_received(self, buf, addr):
        self.got.append((bytes(buf), addr))

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.lost.append(exc)

    def pause_writing(self):
        self.pauses.append("pause")

    def resume_writing(self):
        self.pauses.append("resume")


class DatagramProtocols(unittest.TestCase):
    """DatagramProtocol / DatagramTransport on uringbuf.EventLoop."""

    def setUp(self):
        self.loop = uringbuf.EventLoop()

    def tearDown(self):
        gc.collect()
        self.loop.close()

    def test_echo_and_client(self):
        st, sp = self.loop.create_datagram_endpoint(
            Echo, "127.0.0.1:0", recv_pool=self.loop.loop.pool(
                64, BIG, recv=True))
        # (the client's own pools: big datagrams both ways)
        addr = st.get_extra_info("sockname")
        self.assertEqual(addr[0], "127.0.0.1")
        ct, cp = uringbuf.create_datagram_endpoint(
            Client, remote_addr=addr, loop=self.loop,
            send_pool=self.loop.loop.pool(8, 65536),
            recv_pool=self.loop.loop.pool(16, BIG, recv=True))
        self.assertEqual(cp.made, 1)
        self.assertEqual(ct.get_extra_info("peername"), addr)
        self.assertIsInstance(ct.get_extra_info("socket"), socket.socket)
        self.assertIs(ct.get_extra_info("datagram"), ct.datagram)
        self.assertIsNone(st.get_extra_info("peername"))
        sizes = [1, 100, 1500, 30000, UDP_MAX]
        msgs = [random.Random(n).randbytes(n) for n in sizes]
        for m in msgs:
            ct.sendto(m)
        self.assertTrue(self.loop.run_until(lambda: len(cp.got) == 5,
                                            DEADLINE))
        self.assertEqual([g[0] for g in cp.got], msgs)
        self.assertEqual({g[1] for g in cp.got}, {"%s:%d" % addr})
        ct.close()
        self.assertTrue(ct.is_closing())
        with self.assertRaises(BrokenPipeError):
            ct.sendto(b"late")
        self.assertTrue(self.loop.run_until(lambda: cp.lost, DEADLINE))
        self.assertEqual(cp.lost, [None])

    def test_error_received(self):
        """An ICMP port unreachable on a connected endpoint reaches
        error_received(); the endpoint stays open."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()
        s.close()  # nobody listens there now
        ct, cp = self.loop.create_datagram_endpoint(Client,
                                                    remote_addr=dead)
        ct.sendto(b"anyone?")
        self.loop.run_until(lambda: cp.errors, 5)
        ct.sendto(b"again")
        self.loop.run_until(lambda: cp.errors, 5)
        for e in cp.errors:
            self.assertIsInstance(e, OSError)
        self.assertFalse(cp.lost)
        ct.abort()
        self.assertTrue(self.loop.run_until(lambda: cp.lost, DEADLINE))

    def test_bounded_backlog_policy(self):
        """Above the high water mark pause_writing(); up to twice the mark
        waits (in the core, soft water), beyond which sendto() raises
        BlockingIOError (nothing queued, never a silent drop); everything
        accepted goes out in order and resume_writing() follows."""
        r = _udp_sock()
        r.setblocking(True)
        r.settimeout(DEADLINE)
        ct, cp = self.loop.create_datagram_endpoint(
            Client, remote_addr=r.getsockname(), queue_max=2)
        ct.set_write_buffer_limits(high=3000, low=0)
        accepted, refused = [], 0
        for i in range(12):
            data = b"%04d" % i * 250  # 1000 bytes
            try:
                ct.sendto(data)
                accepted.append(data)
            except BlockingIOError:
                refused += 1
        self.assertEqual(cp.pauses, ["pause"])
        self.assertGreater(refused, 0)
        # 2 in the send slots, the rest waiting behind them: 6000 bytes,
        # twice the mark
        self.assertEqual(len(accepted), 6)
        self.assertEqual(ct.get_write_buffer_size(), 6000)
        self.assertEqual(ct.datagram.queued_bufs, 6)
        self.assertTrue(self.loop.run_until(
            lambda: cp.pauses == ["pause", "resume"], DEADLINE))
        self.assertEqual(ct.get_write_buffer_size(), 0)
        self.assertEqual([r.recv(2000) for _ in accepted], accepted)
        r.close()

    def test_close_releases_backlog_buffers(self):
        pool = self.loop.loop.pool(8, 1024)
        ct, cp = self.loop.create_datagram_endpoint(
            Client, remote_addr="127.0.0.1:9", queue_max=1)
        ct.set_write_buffer_limits(high=1 << 20)
        for i in range(4):
            b = pool.acquire()
            b.fill(b"x" * 100)
            ct.sendto(b)
            self.assertFalse(b.valid)  # the transport's now
        # one in the send slot; the three waiting behind it were copied
        # (a send pool's buffers never wait: the copies could need them)
        self.assertEqual(pool.count_state(uringbuf.BUF_QUEUED), 1)
        self.assertEqual(pool.count_state(uringbuf.BUF_FREE), 7)
        self.assertEqual(ct.get_write_buffer_size(), 400)
        ct.abort()
        self.assertEqual(pool.count_state(uringbuf.BUF_APP), 0)
        self.assertTrue(self.loop.run_until(lambda: cp.lost, DEADLINE))
        self.assertEqual(pool.count_state(uringbuf.BUF_FREE), 8)

    def test_unix_remote_only(self):
        name = "unix:@uringbuf-test-udp-proto-%d" % os.getpid()
        st, sp = self.loop.create_datagram_endpoint(Echo, name)
        ct, cp = self.loop.create_datagram_endpoint(Client,
                                                    remote_addr=name)
        ct.sendto(b"over unix")
        self.assertTrue(self.loop.run_until(lambda: cp.got, DEADLINE))
        self.assertEqual(cp.got[0][0], b"over unix")

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            self.loop.create_datagram_endpoint(Client)
        with self.assertRaises(ValueError):
            self.loop.create_datagram_endpoint(Client, "nonsense")
        with self.assertRaises(TypeError):
            self.loop.create_datagram_endpoint(Client, 80)
        ct, cp = self.loop.create_datagram_endpoint(Client, "127.0.0.1:0")
        for args in ((b"x",), (b"x", "bad"), ("text", "127.0.0.1:9"),
                     (b"x" * 70000, "127.0.0.1:9")):
            with self.assertRaises((OSError, ValueError, TypeError)):
                ct.sendto(*args)
        with self.assertRaises(ValueError):
            ct.set_write_buffer_limits(high=1, low=2)


@unittest.skipIf(NO_ASYNCIO, NO_ASYNCIO or "")
class AsyncioDatagrams(unittest.TestCase):
    """uringbuf.asyncio.create_datagram_endpoint() in a running asyncio
    loop: events flow through the bridge's pump."""

    def test_echo_with_asyncio_client(self):
        import asyncio

        class AClient(asyncio.DatagramProtocol):
            def __init__(self):
                self.got = []
                self.queue = asyncio.Queue()

            def datagram_received(self, data, addr):
                self.got.append((data, addr))
                self.queue.put_nowait(data)

        async def ping_pong(transport, protocol, msgs):
            # one at a time: a burst could overflow asyncio's socket
            for m in msgs:
                transport.sendto(m)
                got = await asyncio.wait_for(protocol.queue.get(), DEADLINE)
                self.assertEqual(got, m)

        async def main():
            loop = ua.get_loop()
            st, sp = await ua.create_datagram_endpoint(
                Echo, local_addr=("127.0.0.1", 0),
                recv_pool=loop.loop.pool(16, BIG, recv=True))
            addr = st.get_extra_info("sockname")
            aloop = asyncio.get_running_loop()
            # the peer: asyncio's own UDP endpoint
            at, ap = await aloop.create_datagram_endpoint(
                AClient, remote_addr=addr)
            msgs = [random.Random(i).randbytes(1 + i * 3001)
                    for i in range(20)] + [b"x" * UDP_MAX]
            await ping_pong(at, ap, msgs)
            at.close()
            # a uringbuf endpoint with an asyncio protocol: bytes, tuples
            ut, up = await ua.create_datagram_endpoint(
                AClient, remote_addr=addr,
                recv_pool=loop.loop.pool(16, BIG, recv=True),
                send_pool=loop.loop.pool(16, 65536))
            await ping_pong(ut, up, msgs)
            self.assertEqual(up.got[0][1], addr)
            self.assertIsInstance(up.got[0][0], bytes)
            ut.close()
            st.close()
            await asyncio.sleep(0.05)

        ua.run(main())


class UdpEchoExample(unittest.TestCase):
    """examples/udp_echo.py as a program."""

    def test_echo_program(self):
        from test_examples import Program
        prog = Program(os.path.join(EXAMPLES, "udp_echo.py"),
                       "--listen", "127.0.0.1:0")
        try:
            socks = [_udp_sock() for _ in range(4)]
            expected = {}
            for i, s in enumerate(socks):
                s.setblocking(True)
                s.settimeout(DEADLINE)
                for j in range(5):
                    size = random.Random(i * 10 + j).choice(
                        (1, 512, 9000, UDP_MAX))
                    data = random.Random(i * 100 + j).randbytes(size)
                    expected.setdefault(i, []).append(data)
                    s.sendto(data, prog.address)
                    got, addr = s.recvfrom(1 << 17)
                    self.assertEqual(got, data)
                    self.assertEqual(addr, prog.address)
            for s in socks:
                s.close()
        finally:
            status, err = prog.stop(signal.SIGINT)
        self.assertEqual(status, 0, err)

    def test_bad_argument(self):
        import subprocess
        import sys
        for args in (["--listen", "nonsense"], ["--listen"],
                     ["--listen", "127.0.0.1:0", "--buf-size", "12"]):
            p = subprocess.run([sys.executable,
                                os.path.join(EXAMPLES, "udp_echo.py")] +
                               args, capture_output=True, text=True,
                               timeout=DEADLINE)
            self.assertEqual(p.returncode, 1, (args, p.stderr))


if __name__ == "__main__":
    unittest.main()
