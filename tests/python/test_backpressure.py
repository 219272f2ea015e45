"""Backpressure: pause_writing() above the high water mark, resume_writing()
at the low one, and no byte lost or reordered whether the protocol obeys
them or not (the core's send queue takes every write: soft water, what
its send pool cannot take yet waiting in the core, in order)."""
import os
import socket
import threading
import time
import unittest

import uringbuf

from ubtest import (DEADLINE, MODES, ModeTestCase, pattern, small_buffers,
                    wait_events)

HIGH, LOW = 64 * 1024, 16 * 1024


class SlowReader(threading.Thread):
    """Connects, waits (so that the server's queue fills), then reads
    everything and compares it with the expected stream."""

    def __init__(self, addr, expect, delay=0.3):
        super().__init__(daemon=True)
        self.addr, self.expect, self.delay = addr, expect, delay
        self.got = 0
        self.error = None
        self.sock = None

    def run(self):
        try:
            s = self.sock = socket.socket()
            small_buffers(s, 8192)
            s.settimeout(DEADLINE)
            s.connect(self.addr)
            time.sleep(self.delay)
            view = memoryview(self.expect)
            while True:
                b = s.recv(32768)
                if not b:
                    break
                if view[self.got:self.got + len(b)] != b:
                    raise AssertionError("wrong bytes at %d" % self.got)
                self.got += len(b)
                if self.got < len(self.expect) // 2:
                    time.sleep(0.0005)  # slow for the first half
            s.close()
        except Exception as e:
            self.error = e


class Producer(uringbuf.Protocol):
    """Writes data in chunks while not paused (obey=True), or all at once
    ignoring pauses (obey=False); logs pause/resume with the buffer size."""

    def __init__(self, data, obey, log, chunk=8192, use_buffers=False):
        self.data, self.obey, self.log = data, obey, log
        self.chunk, self.use_buffers = chunk, use_buffers
        self.off = 0
        self.paused = False

    def connection_made(self, transport):
        self.t = transport
        transport.set_write_buffer_limits(HIGH, LOW)
        self.log.append(("limits", transport.get_write_buffer_limits()))
        self.produce()

    def produce(self):
        pool = self.t.loop.loop.send_pool()
        while self.off < len(self.data) and not (self.obey and self.paused):
            piece = self.data[self.off:self.off + self.chunk]
            if self.use_buffers and self.off % (3 * self.chunk) == 0:
                try:
                    buf = pool.acquire()
                except OSError:
                    buf = None
                if buf is not None:
                    piece = piece[:buf.capacity]
                    buf.fill(piece)
                    self.t.write(buf)
                    self.off += len(piece)
                    continue
            self.t.write(piece)
            self.off += len(piece)
        if self.off == len(self.data) and not self.t.is_closing():
            self.log.append(("done", self.t.get_write_buffer_size()))
            self.t.close()  # after everything written has gone out

    def pause_writing(self):
        self.paused = True
        self.log.append(("pause", self.t.get_write_buffer_size()))

    def resume_writing(self):
        self.paused = False
        self.log.append(("resume", self.t.get_write_buffer_size()))
        if self.obey:
            self.produce()

    def connection_lost(self, exc):
        self.log.append(("lost", exc))


class Backpressure(ModeTestCase):
    SIZE = 3 * 1024 * 1024

    def run_case(self, mode, obey, use_buffers=False):
        self.need_mode(mode)
        loop = uringbuf.EventLoop()
        log = []
        data = pattern(42, self.SIZE)
        server = loop.create_server(
            lambda: Producer(data, obey, log, use_buffers=use_buffers),
            "127.0.0.1", 0, mode=mode)
        reader = SlowReader(server.sockname, data)
        try:
            reader.start()
            loop.run_until(lambda: log and log[-1][0] == "lost",
                           timeout=DEADLINE)
            reader.join(DEADLINE)
            self.assertIsNone(reader.error)
            self.assertEqual(reader.got, len(data))
            self.assertEqual(log[0], ("limits", (LOW, HIGH)))
            self.assertEqual(log[-1], ("lost", None))
            calls = [e for e in log if e[0] in ("pause", "resume")]
            (held,) = [size for what, size in log if what == "done"]
            pauses = [size for what, size in calls if what == "pause"]
            resumes = [size for what, size in calls if what == "resume"]
            self.assertGreaterEqual(len(pauses), 1, log)
            # Strictly alternating, starting with a pause.
            self.assertEqual([w for w, _ in calls],
                             ["pause", "resume"] * len(resumes) +
                             (["pause"] if len(pauses) > len(resumes)
                              else []))
            for size in pauses:
                self.assertGreater(size, HIGH)
            for size in resumes:
                self.assertLessEqual(size, LOW)
            if obey:
                # Obeying keeps the buffer near the mark: at most one chunk
                # over it, and many cycles.
                self.assertGreaterEqual(len(pauses), 5)
                for size in pauses:
                    self.assertLessEqual(size, HIGH + 2 * 8192 + 4096)
            else:
                # Everything was written at once: the core's queue took
                # it all (soft water), far above the mark.
                self.assertEqual(len(pauses), 1)
                self.assertGreater(held, self.SIZE // 2)
        finally:
            if reader.sock is not None:
                reader.sock.close()
            reader.join(DEADLINE)
            loop.close()

    def test_obeying_producer(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                self.run_case(mode, obey=True)

    def test_ignoring_producer_loses_nothing(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                self.run_case(mode, obey=False)

    def test_buffers_and_bytes_interleaved(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                self.run_case(mode, obey=True, use_buffers=True)

    def test_lowered_limits_pause_then_resume(self):
        """set_write_buffer_limits() below what is queued pauses at once,
        and resume_writing() follows once the queue drains (no write went
        above the mark, so the core owed no WRITABLE: the transport asks)."""
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        loop = uringbuf.EventLoop()
        calls, made = [], []

        class P(uringbuf.Protocol):
            def connection_made(self, t):
                made.append(t)

            def pause_writing(self):
                calls.append("pause")

            def resume_writing(self):
                calls.append("resume")

        try:
            loop.create_connection(P, "127.0.0.1", ls.getsockname()[1])
            loop.run_until(lambda: made, timeout=DEADLINE)
            t = made[0]
            with socket.socket(fileno=os.dup(t.connection.fd)) as dup:
                dup.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            ls.settimeout(DEADLINE)
            peer, _ = ls.accept()
            data = pattern(9, 256 * 1024)
            t.write(data)  # far below the 1 MiB default mark
            loop.run_once(0)
            self.assertEqual(calls, [])
            self.assertGreater(t.get_write_buffer_size(), 64 * 1024)
            t.set_write_buffer_limits(high=16 * 1024)
            self.assertEqual(calls, ["pause"])
            got = bytearray()
            peer.setblocking(False)
            deadline = time.monotonic() + DEADLINE
            while len(got) < len(data) and time.monotonic() < deadline:
                loop.run_once(0.005)
                try:
                    got += peer.recv(65536)
                except BlockingIOError:
                    pass
            loop.run_until(lambda: len(calls) > 1, timeout=DEADLINE)
            self.assertEqual(calls, ["pause", "resume"])
            self.assertTrue(got == data)
            peer.close()
            t.abort()
        finally:
            ls.close()
            loop.close()

    def test_limits_validation(self):
        loop = uringbuf.EventLoop()
        try:
            srv = loop.create_server(uringbuf.Protocol, "127.0.0.1", 0)
            tr, _ = loop.create_connection(uringbuf.Protocol, srv.address)
            with self.assertRaises(ValueError):
                tr.set_write_buffer_limits(high=10, low=20)
            with self.assertRaises(ValueError):
                tr.set_write_buffer_limits(high=-1)
            with self.assertRaises(TypeError):
                tr.set_write_buffer_limits(high="x")
            tr.set_write_buffer_limits(low=1000)
            self.assertEqual(tr.get_write_buffer_limits(), (1000, 4000))
            conn = tr.connection
            self.assertEqual((conn.low_water, conn.high_water), (1000, 4000))
            tr.set_write_buffer_limits()
            self.assertEqual(tr.get_write_buffer_limits(),
                             (16 * 1024, 64 * 1024))
            tr.abort()
        finally:
            loop.close()


class SoftWater(ModeTestCase):
    """Connection.set_soft_water(True) on the event API: send() and
    send_buf() take everything, far past the mark; one EV_WRITABLE at the
    low mark once the peer reads; every byte in order."""

    def run_mode(self, mode):
        self.need_mode(mode)
        loop = uringbuf.Loop()
        ls = socket.socket()
        try:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            ls.bind(("127.0.0.1", 0))
            ls.listen(1)
            conn = loop.connect(ls.getsockname(), mode=mode,
                                high_water=HIGH, low_water=LOW)
            with socket.socket(fileno=os.dup(conn.fd)) as dup:
                dup.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            ev = []
            wait_events(loop, lambda: ev, lambda e: ev.append(e.type))
            self.assertEqual(ev, [uringbuf.EV_CONNECT])
            ls.settimeout(DEADLINE)
            peer, _ = ls.accept()
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with self.assertRaises(BlockingIOError):
                for _ in range(1000):  # the hard mark refuses
                    conn.send(bytes(4096))
            sent = conn.queued_bytes  # zeros, read first below
            conn.set_soft_water(True)
            data = pattern(7, 1 << 20)
            pool = loop.send_pool()
            pos = 0
            while pos < len(data):
                chunk = data[pos:pos + 5000]
                if (pos // 5000) % 3 == 2:
                    buf = pool.acquire()
                    n = min(len(chunk), buf.capacity)
                    buf.length = n
                    with memoryview(buf) as m:
                        m[:] = chunk[:n]
                    self.assertEqual(conn.send(buf), n)
                else:
                    n = len(chunk)
                    self.assertEqual(conn.send(chunk), n)
                pos += n
                loop.wait(min=0, timeout=0)
            self.assertGreater(conn.queued_bytes, 512 * 1024)
            peer.setblocking(False)
            got = bytearray()
            writable = 0
            deadline = time.monotonic() + DEADLINE
            while len(got) < sent + len(data) and \
                    time.monotonic() < deadline:
                for e in loop.wait(min=0, timeout=5):
                    if e.type == uringbuf.EV_WRITABLE:
                        writable += 1
                        self.assertLessEqual(conn.queued_bytes, LOW)
                try:
                    got += peer.recv(65536)
                except BlockingIOError:
                    pass
            self.assertEqual(bytes(got[sent:]), data)
            self.assertEqual(bytes(got[:sent]), bytes(sent))
            self.assertGreaterEqual(writable, 1)
            with self.assertRaises(TypeError):
                conn.set_soft_water("yes")
            peer.close()
            conn.abort()
        finally:
            ls.close()
            loop.close()

    def test_every_mode(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                self.run_mode(mode)


if __name__ == "__main__":
    unittest.main()
