"""Buffer life cycle and zero copy: views of pool memory, exports counted
like bytearray, release / context manager / garbage collection back to the
pool, forwarding back to the original pool, stale handles."""
import gc
import socket
import threading
import unittest

import uringbuf
from uringbuf import BUF_APP, BUF_FREE, BUF_KERNEL, BUF_QUEUED, EV_DATA

from ubtest import DEADLINE, tcp_pair, view_address, wait_events


def receive(loop, conn, peer, payload):
    """Send payload from the plain socket peer and collect the Buffers conn
    receives (total length == len(payload))."""
    peer.sendall(payload)
    bufs = []

    def handle(ev):
        if ev.type == EV_DATA and ev.conn is conn:
            bufs.append(ev.buf)

    wait_events(loop, lambda: sum(len(b) for b in bufs) >= len(payload),
                handle)
    return bufs


class ReceivedBuffers(unittest.TestCase):
    def setUp(self):
        self.loop = uringbuf.Loop()
        self.pool = self.loop.pool(8, 256, recv=True)
        self.conn, self.peer = tcp_pair(self.loop, recv_pool=self.pool)

    def tearDown(self):
        self.peer.close()
        gc.collect()
        self.loop.close()

    def test_view_is_pool_memory_and_read_only(self):
        (buf,) = receive(self.loop, self.conn, self.peer, b"hello, world")
        self.assertTrue(buf.readonly)
        self.assertIs(buf.pool, self.pool)
        with memoryview(buf) as m:
            self.assertTrue(m.readonly)
            self.assertEqual(m.tobytes(), b"hello, world")
            with self.assertRaises(TypeError):
                m[0] = 0x41
        addr, length, ro = view_address(buf)
        self.assertTrue(ro)
        self.assertEqual(length, 12)
        self.assertEqual(addr, buf.address)
        base = self.pool.base
        self.assertTrue(base <= addr and addr + length <= base +
                        self.pool.nbytes, "view outside the pool mapping")
        self.assertEqual((addr - base) % self.pool.buf_size, 0)
        self.assertEqual(bytes(buf), b"hello, world")
        self.assertEqual(buf.tobytes(), b"hello, world")
        with self.assertRaises(TypeError):
            buf.fill(b"x")
        with self.assertRaises(TypeError):
            buf.length = 1
        buf.release()

    def test_release_refused_while_exported(self):
        (buf,) = receive(self.loop, self.conn, self.peer, b"abc")
        m = memoryview(buf)
        self.assertEqual(buf.exports, 1)
        self.assertEqual(self.loop.exports, 1)
        with self.assertRaises(BufferError):
            buf.release()
        with self.assertRaises(BufferError):
            self.conn.send(buf)
        self.assertEqual(self.pool.count_state(BUF_APP), 1)
        m.release()
        self.assertEqual(buf.exports, 0)
        buf.release()
        self.assertEqual(self.pool.count_state(BUF_APP), 0)
        self.assertEqual(self.pool.count_state(BUF_KERNEL), 8)
        self.assertFalse(buf.valid)
        for f in (buf.release, lambda: memoryview(buf), lambda: len(buf),
                  lambda: bytes(buf), lambda: self.conn.send(buf)):
            with self.assertRaises(uringbuf.ClosedError):
                f()
        self.assertFalse(buf)  # stale: false, not an error

    def test_context_manager_releases(self):
        (buf,) = receive(self.loop, self.conn, self.peer, b"ctx")
        with buf as b:
            self.assertIs(b, buf)
            self.assertEqual(self.pool.count_state(BUF_APP), 1)
        self.assertFalse(buf.valid)
        self.assertEqual(self.pool.count_state(BUF_APP), 0)
        # Exiting with a live view: BufferError, and the buffer stays.
        (buf,) = receive(self.loop, self.conn, self.peer, b"ctx2")
        m = memoryview(buf)
        with self.assertRaises(BufferError):
            with buf:
                pass
        self.assertTrue(buf.valid)
        m.release()
        buf.release()

    def test_garbage_collected_buffers_return(self):
        bufs = receive(self.loop, self.conn, self.peer, b"x" * 1000)
        self.assertGreaterEqual(len(bufs), 4)  # 256-byte buffers
        self.assertEqual(self.pool.count_state(BUF_APP), len(bufs))
        views = [memoryview(b) for b in bufs]
        del bufs
        gc.collect()
        # A view keeps its buffer (and the memory) alive.
        self.assertEqual(self.pool.count_state(BUF_APP), len(views))
        self.assertEqual(b"".join(v.tobytes() for v in views), b"x" * 1000)
        del views
        gc.collect()
        self.assertEqual(self.pool.count_state(BUF_APP), 0)
        self.assertEqual(self.pool.count_state(BUF_KERNEL), 8)

    def test_pool_exhaustion_no_loss(self):
        # 8 buffers of 256 bytes: hold them all, the rest waits in the
        # socket; releasing lets receiving go on without losing a byte.
        data = bytes(range(256)) * 20
        self.peer.sendall(data)
        got = []

        def handle(ev):
            if ev.type == EV_DATA:
                got.append(bytes(ev.buf))
                held.append(ev.buf)
                if len(held) == 8:
                    self.assertEqual(self.pool.count_state(BUF_KERNEL), 0)
                    held.clear()

        held = []
        wait_events(self.loop, lambda: sum(map(len, got)) >= len(data),
                    handle)
        self.assertEqual(b"".join(got), data)

    def test_loop_close_refused_while_exported(self):
        (buf,) = receive(self.loop, self.conn, self.peer, b"keep")
        m = memoryview(buf)
        with self.assertRaises(BufferError):
            self.loop.close()
        self.assertFalse(self.loop.closed)
        self.assertEqual(m.tobytes(), b"keep")
        m.release()
        self.loop.close()
        self.assertTrue(self.loop.closed)
        with self.assertRaises(uringbuf.ClosedError):
            len(buf)
        with self.assertRaises(uringbuf.ClosedError):
            memoryview(buf)
        with self.assertRaises(uringbuf.ClosedError):
            buf.release()
        with self.assertRaises(uringbuf.ClosedError):
            self.pool.acquire()
        with self.assertRaises(uringbuf.ClosedError):
            self.conn.send(b"x")
        self.assertTrue(self.conn.closed)
        del buf  # dealloc of a handle of a closed loop: nothing to do
        gc.collect()


class SendBuffers(unittest.TestCase):
    def setUp(self):
        self.loop = uringbuf.Loop()

    def tearDown(self):
        gc.collect()
        self.loop.close()

    def test_acquired_buffer_is_writable(self):
        pool = self.loop.pool(4, 128)
        buf = pool.acquire()
        self.assertFalse(buf.readonly)
        self.assertEqual(len(buf), 0)
        self.assertEqual(buf.capacity, 128)
        buf.length = 5
        with memoryview(buf) as m:
            self.assertFalse(m.readonly)
            m[:] = b"hello"
            with self.assertRaises(BufferError):
                buf.length = 3  # resize while exported, like bytearray
            with self.assertRaises(BufferError):
                buf.fill(b"x")
        self.assertEqual(bytes(buf), b"hello")
        self.assertEqual(buf.fill(b"abc", 2), 5)
        self.assertEqual(bytes(buf), b"heabc")
        with self.assertRaises(ValueError):
            buf.length = 129
        with self.assertRaises(ValueError):
            buf.length = -1
        with self.assertRaises(TypeError):
            buf.length = 1.5
        with self.assertRaises(ValueError):
            buf.fill(b"x" * 129)
        with self.assertRaises(ValueError):
            buf.fill(b"x", 128)
        addr, length, ro = view_address(buf)
        self.assertFalse(ro)
        self.assertTrue(pool.base <= addr < pool.base + pool.nbytes)
        self.assertEqual(pool.count_state(BUF_FREE), 3)
        buf.release()
        self.assertEqual(pool.count_state(BUF_FREE), 4)

    def test_exhaustion_and_gc(self):
        pool = self.loop.pool(3, 64)
        bufs = [pool.acquire() for _ in range(3)]
        with self.assertRaises(OSError) as cm:
            pool.acquire()
        self.assertEqual(cm.exception.errno, 105)  # ENOBUFS
        self.assertEqual(pool.count_state(BUF_APP), 3)
        with self.assertRaises(OSError):
            pool.free()  # EBUSY while held
        del bufs
        gc.collect()
        self.assertEqual(pool.count_state(BUF_FREE), 3)
        pool.free()
        self.assertTrue(pool.closed)
        with self.assertRaises(uringbuf.ClosedError):
            pool.acquire()

    def test_receive_pool_refuses_acquire(self):
        with self.assertRaises(uringbuf.InvalidArgument):
            self.loop.pool(2, 64, recv=True).acquire()

    def test_forwarded_buffer_returns_to_its_pool(self):
        """A buffer received on A and sent on B goes back to A's receive
        pool once sent; an acquired one back to its send pool."""
        rpool = self.loop.pool(4, 512, recv=True)
        spool = self.loop.pool(4, 512)
        a, pa = tcp_pair(self.loop, recv_pool=rpool)
        b, pb = tcp_pair(self.loop)
        try:
            (buf,) = receive(self.loop, a, pa, b"forward me")
            self.assertEqual(rpool.count_state(BUF_APP), 1)
            self.assertEqual(b.send(buf), 10)
            self.assertFalse(buf.valid)  # the handle let go
            self.assertEqual(rpool.count_state(BUF_APP) +
                             rpool.count_state(BUF_QUEUED) +
                             rpool.count_state(BUF_KERNEL), 4)
            s = spool.acquire()
            s.fill(b"+acquired")
            b.send_buf(s)
            wait_events(self.loop,
                        lambda: rpool.count_state(BUF_KERNEL) == 4 and
                        spool.count_state(BUF_FREE) == 4, lambda ev: None)
            self.assertEqual(self._recv_exact(pb, 19),
                             b"forward me+acquired")
        finally:
            pa.close()
            pb.close()

    @staticmethod
    def _recv_exact(sock, n):
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                break
            out += chunk
        return out

    def test_buffer_of_another_loop(self):
        other = uringbuf.Loop()
        try:
            conn, peer = tcp_pair(self.loop)
            buf = other.send_pool().acquire()
            buf.fill(b"x")
            with self.assertRaises(ValueError):
                conn.send(buf)
            with self.assertRaises(ValueError):
                conn.send_buf(buf)
            self.assertTrue(buf.valid)
            buf.release()
            peer.close()
        finally:
            gc.collect()
            other.close()

    def test_empty_buffer_refused(self):
        conn, peer = tcp_pair(self.loop)
        buf = self.loop.send_pool().acquire()
        with self.assertRaises(ValueError):
            conn.send(buf)
        self.assertTrue(buf.valid)
        buf.release()
        peer.close()


class LoopLifetime(unittest.TestCase):
    def test_loop_collected_while_a_view_exists(self):
        """A Loop dropped while a view is exported is freed when the view
        is released; the memory stays valid until then."""
        loop = uringbuf.Loop()
        buf = loop.send_pool().acquire()
        buf.fill(b"survive")
        view = memoryview(buf)
        pool = buf.pool
        del loop
        gc.collect()
        self.assertEqual(view.tobytes(), b"survive")
        self.assertIsNone(pool.loop)
        view.release()
        with self.assertRaises(uringbuf.ClosedError):
            len(buf)
        del buf, pool
        gc.collect()

    def test_buffer_dropped_by_another_thread_while_waiting(self):
        loop = uringbuf.Loop()
        pool = loop.pool(2, 64)
        buf = pool.acquire()
        holder = [buf]
        del buf
        errors = []

        def other():
            try:
                pool.acquire()
            except RuntimeError as e:  # the loop is waiting in main
                errors.append(e)
            holder.clear()  # dealloc while the loop waits: deferred

        t = threading.Timer(0.1, other)
        t.start()
        loop.wait(min=1, timeout=400)
        t.join(DEADLINE)
        self.assertEqual(len(errors), 1)
        loop.wait(min=0, timeout=0)
        self.assertEqual(pool.count_state(BUF_FREE), 2)
        loop.close()


if __name__ == "__main__":
    unittest.main()
