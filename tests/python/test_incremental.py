"""Incremental receive pools (UB_POOL_INC): Loop.pool(..., incremental=True)
and Loop(pool_incremental=True).  Received buffers are slices (capacity ==
length, several in one pool buffer), Pool.slices counts the ones out,
stale and double-released slices raise ClosedError, views of a slice are
zero copy with the usual BufferError rules, data arrives byte-exact, and
a loop whose kernel lacks the feature (here: disabled) falls back to an
ordinary pool."""
import gc
import random
import socket
import threading
import time
import unittest

import uringbuf
from uringbuf import BUF_APP, BUF_KERNEL, EV_DATA, FEAT_PBUF_INC

from ubtest import (DEADLINE, StreamClient, pattern, tcp_pair, view_address,
                    wait_events)


def inc_reason():
    """None if this kernel has incremental buffer rings, else why not."""
    with uringbuf.Loop() as loop:
        return loop.feature_reason(FEAT_PBUF_INC)


class NeedInc(unittest.TestCase):
    def setUp(self):
        why = inc_reason()
        if why:
            self.skipTest("no incremental buffer rings: %s" % why)


def collect(loop, conn, n, keep=None):
    """The next n DATA buffers of conn (other events are dropped)."""
    bufs = []

    def handle(ev):
        if ev.type == EV_DATA:
            if ev.conn is conn:
                bufs.append(ev.buf)
            else:
                ev.buf.release()

    wait_events(loop, lambda: len(bufs) >= n, handle)
    return bufs


def send_one(loop, conn, peer, data):
    """Send data from peer and return the one slice it arrives in (one
    small send, one receive)."""
    peer.sendall(data)
    (buf,) = collect(loop, conn, 1)
    return buf


class Slices(NeedInc):
    SIZE = 16384

    def setUp(self):
        super().setUp()
        self.loop = uringbuf.Loop()
        # 16 buffers: a connection may hold at most its budget in slices,
        # and at most as many as the pool has buffers
        self.pool = self.loop.pool(16, self.SIZE, recv=True,
                                   incremental=True)
        self.conn, self.peer = tcp_pair(self.loop, recv_pool=self.pool)

    def tearDown(self):
        self.peer.close()
        gc.collect()
        self.loop.close()

    def test_pool_kind(self):
        self.assertTrue(self.pool.incremental)
        self.assertTrue(self.pool.recv)
        self.assertEqual(self.pool.slices, 0)
        self.assertEqual(self.pool.count_state(BUF_KERNEL), 16)
        self.assertIn("inc", repr(self.pool))
        self.assertTrue(uringbuf.core.ub_pool_flags(self.pool) &
                        uringbuf.POOL_INC)
        self.assertEqual(uringbuf.core.ub_pool_slices(self.pool), 0)
        # the default pools are not incremental unless asked for
        self.assertFalse(self.loop.recv_pool().incremental)
        self.assertFalse(self.loop.send_pool().incremental)
        self.assertEqual(self.loop.send_pool().slices, 0)

    def test_slices_share_a_buffer_and_are_counted(self):
        msgs = [b"first", b"second message", b"3", b"fourth: " + b"x" * 300]
        bufs = [send_one(self.loop, self.conn, self.peer, m) for m in msgs]
        self.assertEqual(self.pool.slices, len(msgs))
        self.assertEqual([bytes(b) for b in bufs], msgs)
        base, size = self.pool.base, self.pool.buf_size
        spans = []
        for b, m in zip(bufs, msgs):
            self.assertEqual(len(b), len(m))
            self.assertEqual(b.capacity, len(m))  # a slice cannot grow
            self.assertTrue(b.readonly)
            self.assertIs(b.pool, self.pool)
            start = base + b.index * size
            self.assertTrue(start <= b.address and
                            b.address + len(b) <= start + size,
                            "slice outside its pool buffer")
            spans.append((b.address, b.address + len(b)))
        # small receives go on in the same pool buffer, without overlap
        self.assertEqual(len({b.index for b in bufs}), 1)
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            self.assertLessEqual(end, start, "slices overlap")
        # the pool buffer is still the kernel's (partly filled)
        self.assertEqual(self.pool.count_state(BUF_KERNEL), 16)
        for i, b in enumerate(bufs):
            b.release()
            self.assertEqual(self.pool.slices, len(bufs) - i - 1)
        self.assertEqual(self.pool.slices, 0)
        self.assertEqual(self.pool.count_state(BUF_APP), 0)

    def test_release_twice_and_stale_slices_raise(self):
        a = send_one(self.loop, self.conn, self.peer, b"aaaa")
        b = send_one(self.loop, self.conn, self.peer, b"bbbb")
        a.release()
        self.assertFalse(a.valid)
        self.assertFalse(a)
        with self.assertRaises(uringbuf.ClosedError):
            a.release()
        for f in (lambda: len(a), lambda: bytes(a), lambda: memoryview(a),
                  lambda: a.capacity, lambda: self.conn.send(a)):
            with self.assertRaises(uringbuf.ClosedError):
                f()
        # its neighbour in the same pool buffer is untouched
        self.assertTrue(b.valid)
        self.assertEqual(bytes(b), b"bbbb")
        self.assertEqual(self.pool.slices, 1)
        # a later slice may reuse a's handle in the core: a stays stale
        c = send_one(self.loop, self.conn, self.peer, b"cccc")
        with self.assertRaises(uringbuf.ClosedError):
            a.release()
        self.assertEqual(bytes(c), b"cccc")
        self.assertEqual(self.pool.slices, 2)
        with c:
            pass  # the context manager releases it
        with self.assertRaises(uringbuf.ClosedError):
            c.release()
        self.assertEqual(self.pool.slices, 1)
        # the flat function says EINVAL, as in C
        with self.assertRaises(uringbuf.ClosedError):
            uringbuf.core.ub_buf_release(c)
        b.release()
        self.assertEqual(self.pool.slices, 0)

    def test_views_are_zero_copy_and_counted(self):
        a = send_one(self.loop, self.conn, self.peer, b"view me")
        b = send_one(self.loop, self.conn, self.peer, b"and me")
        addr, length, ro = view_address(a)
        self.assertEqual((addr, length, ro), (a.address, 7, True))
        m = memoryview(a)
        self.assertTrue(m.readonly)
        self.assertEqual(m.tobytes(), b"view me")
        with self.assertRaises(TypeError):
            m[0] = 0
        self.assertEqual(a.exports, 1)
        with self.assertRaises(BufferError):
            a.release()
        with self.assertRaises(BufferError):
            self.conn.send(a)
        with self.assertRaises(BufferError):
            self.loop.close()
        with self.assertRaises(BufferError):
            with a:
                pass
        self.assertTrue(a.valid)
        self.assertEqual(self.pool.slices, 2)
        # a view of one slice does not pin its neighbour
        b.release()
        self.assertEqual(self.pool.slices, 1)
        self.assertEqual(m.tobytes(), b"view me")
        m.release()
        a.release()
        self.assertEqual(self.pool.slices, 0)

    def test_garbage_collected_slices_return(self):
        bufs = [send_one(self.loop, self.conn, self.peer, b"gc%d" % i)
                for i in range(5)]
        self.assertEqual(self.pool.slices, 5)
        views = [memoryview(b) for b in bufs[:2]]
        del bufs
        gc.collect()
        self.assertEqual(self.pool.slices, 2)  # the views keep theirs
        self.assertEqual([v.tobytes() for v in views], [b"gc0", b"gc1"])
        del views
        gc.collect()
        self.assertEqual(self.pool.slices, 0)

    def test_budget_counts_slices(self):
        """A connection holds at most as many slices as its budget allows
        buffers (here: the pool's 4), though they share one pool buffer;
        releasing lets the rest in, nothing lost."""
        pool = self.loop.pool(4, self.SIZE, recv=True, incremental=True)
        conn, peer = tcp_pair(self.loop, recv_pool=pool)
        try:
            held = [send_one(self.loop, conn, peer, b"m%d" % i)
                    for i in range(4)]
            self.assertEqual(pool.slices, 4)
            self.assertEqual(len({b.index for b in held}), 1)
            self.assertEqual(conn.recv_held, 4)
            self.assertTrue(conn.recv_throttled)
            peer.sendall(b"m4m5")
            self.assertEqual(self.loop.wait(timeout=100), [])
            held[0].release()
            rest = collect(self.loop, conn, 1)
            self.assertEqual(b"".join(bytes(b) for b in held[1:] + rest),
                             b"m1m2m3m4m5")
        finally:
            peer.close()

    def test_slice_forwarded_back_to_the_peer(self):
        """A slice sent on a connection is queued as it is and leaves the
        pool's count once sent."""
        a = send_one(self.loop, self.conn, self.peer, b"echo ")
        b = send_one(self.loop, self.conn, self.peer, b"this")
        self.assertEqual(self.conn.send(a), 5)
        self.assertEqual(self.conn.send(b), 4)
        self.assertFalse(a.valid)
        self.assertEqual(self.pool.slices, 2)  # queued slices are out
        wait_events(self.loop, lambda: self.pool.slices == 0,
                    lambda ev: None)
        got = b""
        while len(got) < 9:
            chunk = self.peer.recv(64)
            if not chunk:
                break
            got += chunk
        self.assertEqual(got, b"echo this")

    def test_pool_free_refused_while_a_slice_is_out(self):
        pool = self.loop.pool(2, 4096, recv=True, incremental=True)
        conn, peer = tcp_pair(self.loop, recv_pool=pool)
        try:
            s = send_one(self.loop, conn, peer, b"held")
            conn.abort()
            wait_events(self.loop, lambda: conn.closed, lambda ev: None)
            with self.assertRaises(OSError):
                pool.free()  # EBUSY: a slice is out
            s.release()
            pool.free()
            self.assertTrue(pool.closed)
            with self.assertRaises(uringbuf.ClosedError):
                pool.slices
            with self.assertRaises(uringbuf.ClosedError):
                pool.incremental
        finally:
            peer.close()


class ByteExact(NeedInc):
    def test_random_sizes_two_connections_one_pool(self):
        """Two peers send random-size writes (1 B .. 20 KiB, 600 KB each)
        into one incremental pool of 8 x 16 KiB buffers; the loop holds a
        random number of slices for a while before releasing them.  Every
        byte arrives in order; every slice is one receive's bytes."""
        total = 600_000
        with uringbuf.Loop() as loop:
            pool = loop.pool(8, 16384, recv=True, incremental=True)
            ends = [tcp_pair(loop, recv_pool=pool) for _ in range(2)]
            datas = [pattern(100 + i, total) for i in range(2)]
            errors = []

            def writer(sock, data, seed):
                rng = random.Random(seed)
                try:
                    off = 0
                    while off < len(data):
                        n = rng.choice((1, 7, 100, 1500, 4096, 9000, 20000))
                        n = min(rng.randint(1, n), len(data) - off)
                        sock.sendall(data[off:off + n])
                        off += n
                    sock.shutdown(socket.SHUT_WR)
                except OSError as e:
                    errors.append(e)

            threads = [threading.Thread(target=writer, args=(peer, d, i),
                                        daemon=True)
                       for i, ((_, peer), d) in enumerate(zip(ends, datas))]
            for t in threads:
                t.start()
            got = {conn: bytearray() for conn, _ in ends}
            eof = set()
            held = []
            rng = random.Random(7)
            max_slices = 0
            end = time.monotonic() + DEADLINE
            while len(eof) < 2 and time.monotonic() < end:
                evs = loop.wait(timeout=50)
                for ev in evs:
                    if ev.type == EV_DATA:
                        b = ev.buf
                        if b.capacity != len(b):
                            errors.append("capacity %d != length %d" %
                                          (b.capacity, len(b)))
                        with memoryview(b) as m:
                            got[ev.conn] += m
                        held.append(b)
                    elif ev.type == uringbuf.EV_EOF:
                        eof.add(ev.conn)
                max_slices = max(max_slices, pool.slices)
                # Hold a random number of slices across waits; let go of
                # them all when nothing came (a budget or the pool's fair
                # share may be what stopped the receives).
                if not evs or len(held) > rng.randint(0, 12):
                    for x in held:
                        x.release()
                    held.clear()
                del evs
            for x in held:
                x.release()
            self.assertEqual(len(eof), 2, "both streams ended in time")
            for t in threads:
                t.join(DEADLINE)
            self.assertEqual(errors, [])
            for (conn, peer), d in zip(ends, datas):
                self.assertEqual(len(got[conn]), len(d))
                self.assertTrue(got[conn] == d, "bytes differ")
                peer.close()
            self.assertGreater(max_slices, 1)
            self.assertEqual(pool.slices, 0)
            self.assertEqual(pool.count_state(BUF_APP), 0)

    def test_echo_server_on_an_incremental_default_pool(self):
        """serve(pool_incremental=True): the default receive pool is
        incremental and the echo (transport.write of each slice) is
        byte-exact for clients writing random-size chunks."""
        class Echo(uringbuf.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, buf):
                self.transport.write(buf)

        srv = uringbuf.serve(Echo, "127.0.0.1", 0, pool_incremental=True,
                             pool_size=65536, pool_count=64)
        try:
            pool = srv.loop.loop.recv_pool()
            self.assertTrue(pool.incremental)
            self.assertEqual(pool.buf_size, 65536)
            clients = [StreamClient(srv.sockname, pattern(i, 1_000_000),
                                    seed=i, max_chunk=30_000)
                       for i in range(6)]
            for c in clients:
                c.start()
            self.assertTrue(srv.loop.run_until(
                lambda: not any(c.is_alive() for c in clients),
                timeout=DEADLINE))
            for c in clients:
                self.assertIsNone(c.error)
                self.assertIsNone(c.mismatch)
                self.assertEqual(c.received, len(c.data))
            self.assertTrue(srv.loop.run_until(lambda: pool.slices == 0,
                                               timeout=DEADLINE))
        finally:
            srv.close()
            srv.loop.close()


class LoopOption(NeedInc):
    def test_pool_incremental_makes_the_default_receive_pool(self):
        with uringbuf.Loop(pool_incremental=True, pool_size=32768,
                           pool_count=8) as loop:
            pool = loop.recv_pool()
            self.assertTrue(pool.incremental)
            self.assertEqual(pool.buf_size, 32768)
            self.assertFalse(loop.send_pool().incremental)
            conn, peer = tcp_pair(loop)
            a = send_one(loop, conn, peer, b"one")
            b = send_one(loop, conn, peer, b"two")
            self.assertEqual((a.index, a.capacity, b.capacity),
                             (b.index, 3, 3))
            self.assertEqual(pool.slices, 2)
            del a, b
            gc.collect()
            self.assertEqual(pool.slices, 0)
            peer.close()
        with uringbuf.Loop(pool_incremental=False) as loop:
            self.assertFalse(loop.recv_pool().incremental)
        ev = uringbuf.EventLoop(pool_incremental=True)
        try:
            self.assertTrue(ev.loop.recv_pool().incremental)
        finally:
            ev.close()


class Fallback(unittest.TestCase):
    """FEAT_PBUF_INC disabled (Loop(disable=)): the pool is made without it
    and behaves as an ordinary receive pool."""

    def test_pool_falls_back(self):
        with uringbuf.Loop(disable=FEAT_PBUF_INC) as loop:
            why = loop.feature_reason(FEAT_PBUF_INC)
            self.assertIsInstance(why, str)
            self.assertFalse(loop.features & FEAT_PBUF_INC)
            pool = loop.pool(4, 256, recv=True, incremental=True)
            self.assertFalse(pool.incremental)
            self.assertTrue(pool.recv)
            self.assertNotIn("inc", repr(pool))
            conn, peer = tcp_pair(loop, recv_pool=pool)
            data = pattern(3, 3000)
            peer.sendall(data)
            got = bytearray()

            def handle(ev):
                if ev.type == EV_DATA:
                    self.assertEqual(ev.buf.capacity, 256)  # whole buffers
                    got.extend(bytes(ev.buf))
                    self.assertEqual(pool.slices, 0)
                    ev.buf.release()

            wait_events(loop, lambda: len(got) >= len(data), handle)
            self.assertEqual(bytes(got), data)
            self.assertEqual(pool.slices, 0)
            peer.close()

    def test_loop_option_falls_back(self):
        with uringbuf.Loop(disable=FEAT_PBUF_INC,
                           pool_incremental=True) as loop:
            self.assertFalse(loop.recv_pool().incremental)
            conn, peer = tcp_pair(loop)
            peer.sendall(b"plain")
            (buf,) = collect(loop, conn, 1)
            self.assertEqual(bytes(buf), b"plain")
            self.assertEqual(buf.capacity, 4096)
            buf.release()
            peer.close()


class BadInput(unittest.TestCase):
    def test_flag_types(self):
        with uringbuf.Loop() as loop:
            for bad in ("yes", 1, 0, None, 1.0, [True]):
                with self.subTest(value=bad):
                    with self.assertRaises(TypeError):
                        loop.pool(4, 4096, recv=True, incremental=bad)
                    with self.assertRaises(TypeError):
                        uringbuf.Loop(pool_incremental=bad)
                    with self.assertRaises(TypeError):
                        uringbuf.EventLoop(pool_incremental=bad)
            self.assertEqual(loop.pools, [])  # nothing was made
            with self.assertRaises(TypeError):
                loop.pool(4, 4096, True, "inc")

    def test_core_rules(self):
        """What the core refuses, with its reason: an incremental send
        pool, and an incremental pool for a datagram endpoint."""
        with uringbuf.Loop() as loop:
            with self.assertRaises(uringbuf.InvalidArgument) as cm:
                loop.pool(4, 4096, incremental=True)
            self.assertEqual(cm.exception.strerror, "UB_POOL_INC is for "
                             "receive pools: it needs UB_POOL_RECV")
            self.assertIsNotNone(uringbuf.core.ub_pool_check(
                4, 4096, uringbuf.POOL_INC))
            if inc_reason() is None:
                pool = loop.pool(4, 4096, recv=True, incremental=True)
                with self.assertRaises(uringbuf.InvalidArgument) as cm:
                    loop.datagram("127.0.0.1:0", recv_pool=pool)
                self.assertIn("incremental", cm.exception.strerror)
        if inc_reason() is None:
            with uringbuf.Loop(pool_incremental=True) as loop:
                with self.assertRaises(uringbuf.InvalidArgument) as cm:
                    loop.datagram("127.0.0.1:0")
                self.assertIn("incremental", cm.exception.strerror)


if __name__ == "__main__":
    unittest.main()
