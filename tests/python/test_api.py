"""The event API: loops, features, events in batches, connection identity
and lifetime, errors as OSError subclasses, signals, threads."""
import gc
import os
import signal
import socket
import threading
import time
import unittest
import weakref

import uringbuf
from uringbuf import (EV_ACCEPT, EV_CLOSED, EV_CONNECT, EV_DATA, EV_EOF,
                      EV_ERROR)

from ubtest import DEADLINE, tcp_pair, wait_events


class Basics(unittest.TestCase):
    def test_features_and_modes(self):
        feats = uringbuf.features()
        self.assertEqual(set(feats), {
            "single_issuer", "recv_multishot", "accept_multishot",
            "send_ring", "send_bundle", "recv_bundle", "pbuf_inc",
            "recv_limit", "udp_gso"})
        for name, why in feats.items():
            self.assertTrue(why is None or (isinstance(why, str) and why))
        modes = uringbuf.modes()
        self.assertEqual(set(modes), {"bundle", "ring", "serial"})
        self.assertIsNone(modes["serial"])  # always possible
        self.assertIn(uringbuf.best_mode(), ("bundle", "serial"))
        # Disabled features say so.
        off = uringbuf.features(disable=uringbuf.FEAT_SEND_BUNDLE)
        self.assertIn("disabled", off["send_bundle"])
        self.assertIsNotNone(
            uringbuf.modes(disable=uringbuf.FEAT_SEND_RING)["ring"])
        with uringbuf.Loop(disable=uringbuf.FEAT_SEND_RING) as loop:
            with self.assertRaises(uringbuf.InvalidArgument) as cm:
                uringbuf.core.ub_loop_mode_check(loop, 99)
            self.assertEqual(cm.exception.errno, 22)
            self.assertEqual(loop.best_mode, uringbuf.MODE_SERIAL)
            with self.assertRaises(OSError) as cm:
                loop.connect("127.0.0.1:1", mode="ring")
            self.assertEqual(cm.exception.errno, 95)  # EOPNOTSUPP

    def test_constants_and_names(self):
        self.assertEqual(uringbuf.EventType.DATA, uringbuf.EV_DATA)
        self.assertEqual(uringbuf.event_name(uringbuf.EV_CLOSED), "closed")
        self.assertEqual(uringbuf.mode_name(uringbuf.MODE_RING), "ring")
        self.assertEqual(uringbuf.core.ub_mode_from_name("serial"),
                         uringbuf.MODE_SERIAL)
        self.assertEqual(uringbuf.parse_address("localhost:80"),
                         "127.0.0.1:80")
        self.assertEqual(uringbuf.parse_address("[::1]:8"), "[::1]:8")
        with self.assertRaises(ValueError):
            uringbuf.parse_address("example.com:80")
        self.assertRegex(uringbuf.__version__, r"^\d+\.\d+\.\d+$")
        for name in uringbuf.__all__:
            self.assertTrue(hasattr(uringbuf, name), name)

    def test_docstrings(self):
        for cls in (uringbuf.Loop, uringbuf.Pool, uringbuf.Connection,
                    uringbuf.Listener, uringbuf.Buffer, uringbuf.EventLoop,
                    uringbuf.Transport, uringbuf.Protocol, uringbuf.Server):
            self.assertTrue(cls.__doc__, cls)
            for name, attr in vars(cls).items():
                if name.startswith("_") or not callable(attr):
                    continue
                self.assertTrue(getattr(attr, "__doc__", None),
                                "%s.%s has no docstring" % (cls.__name__,
                                                            name))
        for f in (uringbuf.serve, uringbuf.connect, uringbuf.features):
            self.assertTrue(f.__doc__)

    def test_loop_lifecycle(self):
        loop = uringbuf.Loop(entries=64, pool_count=8, pool_size=512)
        self.assertFalse(loop.closed)
        self.assertGreaterEqual(loop.fd, 0)
        rp = loop.recv_pool()
        self.assertIs(rp, loop.recv_pool())  # one object per pool
        self.assertEqual((rp.count, rp.buf_size, rp.recv), (8, 512, True))
        self.assertIs(rp.loop, loop)
        self.assertIn(rp, loop.pools)
        self.assertEqual(loop.wait(min=0, timeout=0), [])
        self.assertEqual(loop.pending, 0)
        loop.close()
        loop.close()
        self.assertTrue(loop.closed)
        self.assertTrue(rp.closed)
        self.assertIn("closed", repr(loop))
        with self.assertRaises(uringbuf.ClosedError):
            loop.wait()
        with self.assertRaises(OSError):
            uringbuf.Loop(entries=100000)


class Events(unittest.TestCase):
    def setUp(self):
        self.loop = uringbuf.Loop()

    def tearDown(self):
        gc.collect()
        self.loop.close()

    def test_accept_data_eof_closed(self):
        lst = self.loop.listen("127.0.0.1:0")
        host, port = lst.sockname.rsplit(":", 1)
        c = socket.create_connection((host, int(port)))
        seen = []
        state = {}

        def handle(ev):
            seen.append(ev.type)
            if ev.type == EV_ACCEPT:
                self.assertIs(ev.listener, lst)
                self.assertEqual(ev.res, ev.conn.fd)
                ev.conn.udata = "mine"
                state["conn"] = ev.conn
                c.sendall(b"data")
                c.shutdown(socket.SHUT_WR)
            elif ev.type == EV_DATA:
                self.assertIs(ev.conn, state["conn"])
                self.assertEqual(ev.udata, "mine")
                self.assertEqual(ev.res, len(ev.buf))
                state["data"] = bytes(ev.buf)
            elif ev.type == EV_EOF:
                ev.conn.close()
            elif ev.type == EV_CLOSED and ev.conn is not None:
                self.assertEqual(ev.res, 0)
                self.assertTrue(ev.conn.closed)
                self.assertEqual(ev.conn.bytes_received, 4)  # still usable
                state["closed"] = ev.conn

        wait_events(self.loop, lambda: "closed" in state, handle)
        self.assertEqual(state["data"], b"data")
        self.assertEqual(seen, [EV_ACCEPT, EV_DATA, EV_EOF, EV_CLOSED])
        conn = state["closed"]
        self.loop.wait(min=0, timeout=0)  # the core frees it now
        with self.assertRaises(uringbuf.ClosedError):
            conn.fd
        self.assertIsNone(conn.udata)  # dropped with the connection
        self.assertEqual(self.loop.connections, [])
        c.close()
        lst.close()
        wait_events(self.loop, lambda: lst.closed, lambda ev: None)

    def test_connection_object_lives_until_closed(self):
        """Dropping every reference does not lose the Connection: events
        keep reaching the same object until CLOSED."""
        lst = self.loop.listen("127.0.0.1:0")
        conn = self.loop.connect(lst.sockname)
        conn.udata = marker = object()
        ident = id(conn)
        del conn
        gc.collect()
        got = {}

        def handle(ev):
            if ev.type == EV_CONNECT:
                self.assertEqual(id(ev.conn), ident)
                self.assertIs(ev.udata, marker)
                ev.conn.abort()
            elif ev.type == EV_ACCEPT:
                got["server"] = ev.conn
            elif ev.type == EV_CLOSED and ev.udata is marker:
                self.assertEqual(id(ev.conn), ident)
                got["closed"] = True

        wait_events(self.loop, lambda: "closed" in got, handle)
        got["server"].abort()

    def test_udata_cycle_is_broken_once_closed(self):
        """conn.udata referencing conn (a Transport does) is a cycle the
        garbage collector cannot see: it is broken once CLOSED has been
        handled, at the next wait() (or right after dispatch()'s call)."""
        class Owner:
            pass

        for use_dispatch in (False, True):
            conn, peer = tcp_pair(self.loop)
            owner = Owner()
            owner.conn = conn
            conn.udata = owner
            ref = weakref.ref(owner)
            del owner
            conn.abort()
            seen = []
            if use_dispatch:
                def slow(ev):
                    if ev.type == EV_CLOSED:
                        self.assertIs(ev.conn.udata, ref())  # still there
                        seen.append(ev.type)

                deadline = time.monotonic() + DEADLINE
                while not seen and time.monotonic() < deadline:
                    self.loop.dispatch(64, 0, 50, slow, lambda e, u: None)
                self.assertEqual(seen, [EV_CLOSED])
                self.assertIsNone(conn.udata)  # dropped after slow()
            else:
                def handle(ev):
                    if ev.type == EV_CLOSED:
                        self.assertIs(ev.conn.udata, ref())  # still there
                        seen.append(ev)
                wait_events(self.loop, lambda: seen, handle)
                self.assertIsNotNone(ref())
                seen.clear()
                self.loop.wait(min=0, timeout=0)
            del conn, seen
            self.assertIsNone(ref())
            peer.close()

    def test_handle_dropped_by_another_thread_while_waiting(self):
        """The last reference to a Connection dropped by another thread
        while the loop waits: its hold goes at the owner's next wait."""
        conn, peer = tcp_pair(self.loop)
        conn.abort()
        wait_events(self.loop, lambda: conn.closed, lambda ev: None)
        holder = [conn]
        del conn

        def other():
            holder.clear()

        t = threading.Timer(0.1, other)
        t.start()
        self.loop.wait(min=1, timeout=400)
        t.join(DEADLINE)
        self.assertEqual(holder, [])
        self.loop.wait(min=0, timeout=0)
        peer.close()

    def test_handles_outlive_their_loop(self):
        """Handles kept past Loop.close() raise ClosedError, and dropping
        them later is harmless."""
        loop = uringbuf.Loop()
        conn, peer = tcp_pair(loop)
        lst = loop.listen("127.0.0.1:0")
        gone, peer2 = tcp_pair(loop)
        gone.abort()
        wait_events(loop, lambda: gone.closed, lambda ev: None)
        loop.wait(min=0, timeout=0)
        loop.close()
        for h in (conn, lst, gone):
            self.assertTrue(h.closed)
            self.assertIn("closed", repr(h))
            with self.assertRaises(uringbuf.ClosedError):
                h.fd
        self.assertEqual(peer.recv(1), b"")  # its socket was closed
        del conn, lst, gone
        gc.collect()
        peer.close()
        peer2.close()

    def test_errors_are_oserror_subclasses(self):
        # Refused connect: CONNECT res -ECONNREFUSED, then CLOSED.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        conn = self.loop.connect(("127.0.0.1", port))
        st = {}

        def handle(ev):
            if ev.type == EV_CONNECT:
                st["connect"] = ev.res
            elif ev.type == EV_CLOSED:
                st["closed"] = ev.res

        wait_events(self.loop, lambda: "closed" in st, handle)
        self.assertEqual(st["connect"], -111)
        exc = OSError(-st["connect"], os.strerror(-st["connect"]))
        self.assertIsInstance(exc, ConnectionRefusedError)
        with self.assertRaises(OSError) as cm:
            conn.send(b"x")  # CLOSED returned, not yet freed
        self.assertIn(cm.exception.errno, (32, 107))  # EPIPE, ENOTCONN
        # Reset by peer: ERROR -ECONNRESET then CLOSED.
        conn, peer = tcp_pair(self.loop)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.sendall(b"x")
        peer.close()
        st.clear()

        def handle2(ev):
            if ev.type == EV_ERROR:
                st["error"] = ev.res
            elif ev.type == EV_CLOSED:
                st["closed"] = ev.res

        wait_events(self.loop, lambda: "closed" in st, handle2)
        self.assertEqual(st.get("error"), -104)
        # Full send queue: BlockingIOError.
        conn, peer = tcp_pair(self.loop, high_water=4096, low_water=1024)
        with self.assertRaises(BlockingIOError):
            for _ in range(100):
                conn.send(b"x" * 4096)
        peer.close()
        conn.abort()

    def test_batches_and_identity(self):
        lst = self.loop.listen("127.0.0.1:0")
        host, port = lst.sockname.rsplit(":", 1)
        socks = [socket.create_connection((host, int(port)))
                 for _ in range(20)]
        accepted = []
        batches = []

        def pred():
            return len(accepted) == 20

        deadline = time.monotonic() + DEADLINE
        while not pred() and time.monotonic() < deadline:
            evs = self.loop.wait(max=64, timeout=100)
            batches.append(len(evs))
            for ev in evs:
                self.assertIsInstance(ev, uringbuf.Event)
                t, res, conn, listener, buf, udata = ev  # a sequence too
                if t == EV_ACCEPT:
                    accepted.append(conn)
        self.assertTrue(pred())
        self.assertLess(len(batches), 20)  # events come in batches
        self.assertEqual(set(self.loop.connections), set(accepted))
        self.assertEqual(len({id(c) for c in accepted}), 20)
        for s in socks:
            s.close()
        for c in accepted:
            c.abort()

    def test_wait_releases_gil_and_refuses_other_threads(self):
        conn, peer = tcp_pair(self.loop)
        ticks = []
        errors = []

        def other():
            t0 = time.monotonic()
            while time.monotonic() - t0 < 0.2:
                ticks.append(1)  # runs while the main thread waits
                time.sleep(0.001)
            try:
                conn.send(b"x")
            except RuntimeError as e:
                errors.append(e)
            peer.sendall(b"wake")

        t = threading.Thread(target=other)
        t.start()
        evs = self.loop.wait(min=1, timeout=int(DEADLINE * 1000))
        t.join()
        self.assertGreater(len(ticks), 50)
        self.assertEqual(len(errors), 1)
        self.assertEqual([e.type for e in evs], [EV_DATA])
        conn.abort()
        peer.close()

    def test_loop_belongs_to_its_thread(self):
        conn, peer = tcp_pair(self.loop)
        buf = self.loop.send_pool().acquire()
        errors, done = [], []

        def other():
            for f in (lambda: conn.send(b"x"), self.loop.close,
                      lambda: self.loop.wait(timeout=0), buf.release,
                      lambda: self.loop.pool(1, 1)):
                try:
                    f()
                except RuntimeError as e:
                    errors.append(e)
            # A loop of this thread, dropped here: fine.
            with uringbuf.Loop() as mine:
                mine.wait(min=0, timeout=0)
            done.append(True)

        t = threading.Thread(target=other)
        t.start()
        t.join(DEADLINE)
        self.assertEqual(len(errors), 5)
        self.assertEqual(done, [True])
        self.assertIn("thread", str(errors[0]))
        self.assertTrue(buf.valid)
        conn.abort()
        peer.close()

    def test_signal_interrupts_wait(self):
        if threading.current_thread() is not threading.main_thread():
            self.skipTest("signals need the main thread")
        hits = []
        old = signal.signal(signal.SIGUSR1, lambda s, f: hits.append(s))
        try:
            threading.Timer(0.1, os.kill,
                            (os.getpid(), signal.SIGUSR1)).start()
            t0 = time.monotonic()
            self.assertEqual(self.loop.wait(min=1, timeout=5000), [])
            self.assertLess(time.monotonic() - t0, 4)
            self.assertEqual(hits, [signal.SIGUSR1])

            def boom(s, f):
                raise KeyboardInterrupt

            signal.signal(signal.SIGUSR1, boom)
            threading.Timer(0.1, os.kill,
                            (os.getpid(), signal.SIGUSR1)).start()
            with self.assertRaises(KeyboardInterrupt):
                self.loop.wait(min=1, timeout=5000)
        finally:
            signal.signal(signal.SIGUSR1, old)
        self.assertEqual(self.loop.wait(min=0, timeout=0), [])

    def test_pipe_in_the_core(self):
        a, pa = tcp_pair(self.loop)
        b, pb = tcp_pair(self.loop)
        a.pipe(b)
        pa.sendall(b"through the core")
        pa.shutdown(socket.SHUT_WR)
        st = {"data": 0}

        def handle(ev):
            if ev.type == EV_DATA:
                st["data"] += 1  # piped: none expected
            elif ev.type == EV_EOF and ev.conn is a:
                st["eof"] = True

        wait_events(self.loop, lambda: "eof" in st and
                    b.bytes_sent == 16, handle)
        self.assertEqual(st["data"], 0)
        pb.settimeout(DEADLINE)
        self.assertEqual(pb.recv(100), b"through the core")
        # EOF on a shut b's sending side once drained.
        wait_events(self.loop, lambda: b.closing, lambda ev: None)
        self.assertEqual(pb.recv(100), b"")
        a.pipe(None)
        for s in (pa, pb):
            s.close()
        a.abort()
        b.abort()


if __name__ == "__main__":
    unittest.main()
