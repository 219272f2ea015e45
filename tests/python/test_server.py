"""The asyncio-style server API: protocol callbacks and their order,
transports (write/close/abort/eof/pause/extra info/pipe), clients, failures,
callbacks and timers, signals, and clean shutdown."""
import gc
import os
import signal
import socket
import threading
import time
import unittest

import uringbuf
from uringbuf import BUF_APP, BUF_KERNEL

from ubtest import DEADLINE, pattern


class Recorder(uringbuf.Protocol):
    """Logs every callback; optional behaviour through attributes."""

    keep_open = False
    echo = False
    hold = None  # a list to keep received buffers in

    def __init__(self, log=None):
        self.log = log if log is not None else []
        self.data = bytearray()

    def connection_made(self, transport):
        self.transport = transport
        self.log.append("made")

    def data_received(self, buf):
        self.log.append("data")
        self.data += buf.tobytes()
        if self.echo:
            self.transport.write(buf)
        elif self.hold is not None:
            self.hold.append(buf)

    def eof_received(self):
        self.log.append("eof")
        return self.keep_open

    def connection_lost(self, exc):
        self.log.append(("lost", exc))


def client_socket(server):
    s = socket.create_connection(server.sockname)
    s.settimeout(DEADLINE)
    return s


def recv_all(sock):
    out = bytearray()
    while True:
        b = sock.recv(65536)
        if not b:
            return bytes(out)
        out += b


class ServerApi(unittest.TestCase):
    def setUp(self):
        self.ev = uringbuf.EventLoop()

    def tearDown(self):
        gc.collect()
        self.ev.close()

    def serve(self, proto):
        return self.ev.create_server(proto, "127.0.0.1", 0)

    def test_callback_order_and_clean_close(self):
        protos = []

        def factory():
            p = Recorder()
            protos.append(p)
            return p

        srv = self.serve(factory)
        self.assertEqual(srv.sockname[0], "127.0.0.1")
        self.assertEqual(srv.address, "127.0.0.1:%d" % srv.sockname[1])
        s = client_socket(srv)
        s.sendall(b"hello")
        s.shutdown(socket.SHUT_WR)
        self.assertTrue(self.ev.run_until(
            lambda: protos and protos[0].log[-1:] == [("lost", None)],
            timeout=DEADLINE))
        p = protos[0]
        self.assertEqual(p.log[0], "made")
        self.assertEqual(p.log[-2:], ["eof", ("lost", None)])
        self.assertEqual(bytes(p.data), b"hello")
        self.assertEqual(recv_all(s), b"")  # closed after EOF
        s.close()
        tr = p.transport
        self.assertTrue(tr.is_closing())
        self.assertIsNone(tr.get_protocol())  # dropped after lost

    def test_half_close_keeps_writing(self):
        class Late(Recorder):
            keep_open = True

            def eof_received(self):
                super().eof_received()
                self.transport.write(b"after your eof")
                self.transport.write_eof()
                self.transport.close()
                return True

        srv = self.serve(Late)
        s = client_socket(srv)
        s.shutdown(socket.SHUT_WR)
        got = []
        t = threading.Thread(target=lambda: got.append(recv_all(s)))
        t.start()
        self.ev.run_until(lambda: not t.is_alive(), timeout=DEADLINE)
        t.join(DEADLINE)
        self.assertEqual(got, [b"after your eof"])
        s.close()
        self.ev.run_until(lambda: not self.ev.loop.connections,
                          timeout=DEADLINE)

    def test_write_after_write_eof_raises(self):
        srv = self.serve(Recorder)
        tr, _ = self.ev.create_connection(Recorder, srv.address)
        tr.write_eof()
        with self.assertRaises(RuntimeError):
            tr.write(b"x")
        self.assertTrue(tr.can_write_eof())
        tr.abort()

    def test_abort_resets(self):
        protos = []
        srv = self.serve(lambda: protos.append(Recorder()) or protos[-1])
        s = client_socket(srv)
        self.ev.run_until(lambda: protos, timeout=DEADLINE)
        protos[0].transport.write(b"x" * 100)
        protos[0].transport.abort()
        self.ev.run_until(lambda: ("lost", None) in protos[0].log,
                          timeout=DEADLINE)
        with self.assertRaises((ConnectionResetError, TimeoutError)):
            while s.recv(100):
                pass
            raise ConnectionResetError  # EOF is acceptable too
        s.close()

    def test_peer_reset_reaches_connection_lost(self):
        protos = []
        srv = self.serve(lambda: protos.append(Recorder()) or protos[-1])
        s = client_socket(srv)
        self.ev.run_until(lambda: protos, timeout=DEADLINE)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        self.ev.run_until(lambda: protos[0].log[-1][0] == "lost",
                          timeout=DEADLINE)
        self.assertIsInstance(protos[0].log[-1][1], ConnectionResetError)

    def test_client_connect_and_failure(self):
        srv = self.serve(type("E", (Recorder,), {"echo": True}))
        tr, proto = uringbuf.connect(Recorder, "127.0.0.1",
                                     srv.sockname[1], loop=self.ev)
        tr.write(b"before connected")  # goes out once connected
        self.ev.run_until(lambda: len(proto.data) == 16, timeout=DEADLINE)
        self.assertEqual(bytes(proto.data), b"before connected")
        self.assertEqual(proto.log[0], "made")
        self.assertEqual(tr.get_extra_info("peername"), srv.sockname)
        self.assertEqual(tr.get_extra_info("sockname")[0], "127.0.0.1")
        self.assertIn(tr.get_extra_info("mode"), uringbuf.MODES)
        self.assertIs(tr.get_extra_info("connection"), tr.connection)
        sock = tr.get_extra_info("socket")
        self.assertEqual(sock.getpeername(), srv.sockname)
        self.assertIsNone(tr.get_extra_info("nope"))
        tr.close()
        self.ev.run_until(lambda: proto.log[-1:] == [("lost", None)],
                          timeout=DEADLINE)
        self.assertEqual(sock.fileno(), -1)  # closed with the transport
        # A refused connect: connection_lost alone, with the error.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        tr, proto = self.ev.create_connection(Recorder, "localhost", port)
        self.ev.run_until(lambda: proto.log, timeout=DEADLINE)
        self.assertEqual(len(proto.log), 1)
        self.assertIsInstance(proto.log[0][1], ConnectionRefusedError)

    def test_pause_reading_holds_data_in_order(self):
        protos = []
        srv = self.serve(lambda: protos.append(Recorder()) or protos[-1])
        s = client_socket(srv)
        self.ev.run_until(lambda: protos, timeout=DEADLINE)
        p = protos[0]
        p.transport.pause_reading()
        self.assertFalse(p.transport.is_reading())
        data = pattern(9, 300_000)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        self.ev.run_until(lambda: False, timeout=0.3)
        self.assertNotIn("eof", p.log)  # nothing delivered while paused
        self.assertLess(len(p.data), len(data))
        p.transport.resume_reading()
        self.ev.run_until(lambda: p.log[-1:] == [("lost", None)],
                          timeout=DEADLINE)
        self.assertEqual(bytes(p.data), data)
        self.assertEqual(p.log[-2], "eof")  # after every byte
        s.close()

    def test_data_order_across_pause_and_resume(self):
        """Data that arrives in the same batch after resume_reading() waits
        behind what was held while paused (regression: it overtook it)."""
        a, b = socket.socketpair()
        tr, p = self.ev.connect_accepted_socket(Recorder, a)
        p.data_received = lambda buf: p.log.append(buf)
        tr.pause_reading()
        tr._on_data("1")   # what a batch delivers while paused
        tr._on_data("2")
        tr.resume_reading()
        tr._on_data("3")   # later in the same batch
        self.ev.run_once(0)
        tr._on_data("4")
        self.assertEqual(p.log[1:], ["1", "2", "3", "4"])
        tr.abort()
        b.close()

    def test_writelines_one_call_in_order(self):
        """writelines() of Buffers and bytes-likes (a list, a tuple, past
        the high water mark, with an empty Buffer and a bad item in the
        middle): every byte arrives once, in order; the bad item raises
        after the items before it were queued; pause_writing() comes."""
        a, b = socket.socketpair()
        b.settimeout(DEADLINE)
        tr, p = self.ev.connect_accepted_socket(Recorder, a)
        events = []
        p.pause_writing = lambda: events.append("pause")
        p.resume_writing = lambda: events.append("resume")
        pool = self.ev.loop.send_pool()
        expect = bytearray()

        def buf(data):
            x = pool.acquire()
            x.fill(data)
            expect.extend(data)
            return x

        def raw(data):
            expect.extend(data)
            return data
        tr.writelines([buf(b"a" * 10), raw(b"bc"), raw(bytearray(b"de")),
                       raw(memoryview(b"fghi")[1:3]), buf(b"j")])
        tr.writelines((raw(b"tuple"), buf(b"T")))
        tr.writelines([])
        empty = pool.acquire()  # valid and empty: nothing to send
        tr.writelines([raw(b"x"), empty, raw(b"y")])
        with self.assertRaises(TypeError):
            tr.writelines([raw(b"before"), "text", b"never"])
        tr.set_write_buffer_limits(high=64 * 1024)
        big = pattern(3, 1 << 20)  # 16 x 64 KiB: past the high mark
        tr.writelines([raw(big[i:i + 65536])
                       for i in range(0, len(big), 65536)])
        self.assertEqual(events[:1], ["pause"])
        got = bytearray()
        deadline = time.monotonic() + DEADLINE
        while len(got) < len(expect) and time.monotonic() < deadline:
            self.ev.run_once(0)
            try:
                got += b.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                time.sleep(0.001)
        self.assertEqual(bytes(got), bytes(expect))
        self.ev.run_until(lambda: "resume" in events, timeout=DEADLINE)
        self.assertEqual(events, ["pause", "resume"])
        tr.abort()
        b.close()

    def test_buffers_received_lists_in_order(self):
        """A protocol with buffers_received() gets lists of Buffers, in
        order, byte-exact (several per list under a burst); pausing inside
        it holds the rest back in order, and the stash comes back as a
        list too; writelines(bufs) echoes them zero copy."""
        class Many(uringbuf.Protocol):
            def __init__(self):
                self.lists = []
                self.data = bytearray()

            def connection_made(self, transport):
                self.transport = transport

            def buffers_received(self, bufs):
                self.lists.append(len(bufs))
                for b in bufs:
                    self.data += b.tobytes()
                self.transport.writelines(bufs)
                if len(self.lists) == 3:
                    self.transport.pause_reading()
                    self.transport.loop.call_later(
                        0.05, self.transport.resume_reading)

            def data_received(self, buf):  # never: buffers_received wins
                raise AssertionError("data_received called")
        a, b = socket.socketpair()
        b.settimeout(DEADLINE)
        tr, p = self.ev.connect_accepted_socket(Many, a)
        data = pattern(5, 2 << 20)
        got = bytearray()

        def pump():
            while len(got) < len(data):
                chunk = b.recv(1 << 20)
                if not chunk:
                    return
                got.extend(chunk)
        threads = [threading.Thread(target=pump, daemon=True),
                   threading.Thread(target=b.sendall, args=(data,),
                                    daemon=True)]
        for t in threads:
            t.start()
        self.ev.run_until(lambda: len(p.data) >= len(data) and
                          len(got) >= len(data), timeout=DEADLINE)
        for t in threads:
            t.join(DEADLINE)
        self.assertEqual(bytes(p.data), data)
        self.assertEqual(bytes(got), data)
        self.assertGreater(max(p.lists), 1, p.lists[:20])
        tr.abort()
        b.close()

    def test_forwarding_returns_buffers_to_the_receive_pool(self):
        """data_received(buf) -> other.write(buf): zero copy both ways, and
        every buffer back in its pool afterwards."""
        rpool = self.ev.loop.pool(16, 1024, recv=True)
        back = []

        class Fwd(Recorder):
            def data_received(self, buf):
                self.log.append("data")
                self.transport.write(buf)  # echo the very buffer

        srv = self.ev.create_server(Fwd, "127.0.0.1", 0, recv_pool=rpool)
        data = pattern(3, 200_000)
        s = client_socket(srv)
        t = threading.Thread(target=lambda: back.append(recv_all(s)))
        t.start()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        self.ev.run_until(lambda: not t.is_alive(), timeout=DEADLINE)
        t.join(DEADLINE)
        self.assertEqual(back, [data])
        self.ev.run_until(lambda: not self.ev.loop.connections,
                          timeout=DEADLINE)
        self.assertEqual(rpool.count_state(BUF_KERNEL), 16)
        self.assertEqual(rpool.count_state(BUF_APP), 0)
        s.close()

    def test_transport_pipe(self):
        """A proxy pair inside one loop with Transport.pipe both ways."""
        upstream = self.serve(type("E", (Recorder,), {"echo": True}))
        pairs = []

        class Front(Recorder):
            def connection_made(self, transport):
                super().connection_made(transport)
                transport.pause_reading()
                up, self.up = self_loop.create_connection(
                    Back, upstream.address)
                self.up.front = self
                pairs.append(self)

            def eof_received(self):
                self.log.append("eof")
                return True

        class Back(Recorder):
            def connection_made(self, transport):
                super().connection_made(transport)
                ft = self.front.transport
                ft.pipe(transport)
                transport.pipe(ft)
                ft.resume_reading()

            def eof_received(self):
                self.front.transport.close()
                self.transport.close()
                return True

        self_loop = self.ev
        front = self.serve(Front)
        s = client_socket(front)
        data = pattern(4, 500_000)
        got = []
        t = threading.Thread(target=lambda: got.append(recv_all(s)))
        t.start()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        self.ev.run_until(lambda: not t.is_alive(), timeout=DEADLINE)
        t.join(DEADLINE)
        self.assertEqual(got, [data])
        self.assertEqual(pairs[0].log.count("data"), 0)  # all in the core
        s.close()

    def test_exception_in_callback_aborts_transport(self):
        reports = []
        self.ev.set_exception_handler(lambda loop, ctx: reports.append(ctx))

        class Bad(Recorder):
            def data_received(self, buf):
                raise ZeroDivisionError("boom")

        protos = []
        srv = self.serve(lambda: protos.append(Bad()) or protos[-1])
        s = client_socket(srv)
        s.sendall(b"x")
        self.ev.run_until(lambda: protos and protos[0].log[-1:] and
                          protos[0].log[-1][0] == "lost", timeout=DEADLINE)
        self.assertIsInstance(reports[0]["exception"], ZeroDivisionError)
        self.assertIs(reports[0]["protocol"], protos[0])
        s.close()

    def test_call_soon_call_later_stop(self):
        order = []
        self.ev.call_later(0.05, order.append, "later")
        self.ev.call_soon(order.append, "soon")
        h = self.ev.call_later(0.01, order.append, "cancelled")
        h.cancel()
        self.ev.call_later(0.1, self.ev.stop)
        t0 = time.monotonic()
        self.ev.run_forever()
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(order, ["soon", "later"])
        self.assertFalse(self.ev.is_running())

    def test_signal_handler_stops_run_forever(self):
        if threading.current_thread() is not threading.main_thread():
            self.skipTest("signals need the main thread")
        self.ev.add_signal_handler(signal.SIGUSR2, self.ev.stop)
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR2)).start()
        t0 = time.monotonic()
        self.ev.run_forever()
        self.assertLess(time.monotonic() - t0, 5)
        self.assertTrue(self.ev.remove_signal_handler(signal.SIGUSR2))
        self.assertFalse(self.ev.remove_signal_handler(signal.SIGUSR2))

    def test_close_gives_connection_lost_to_everyone(self):
        protos = []
        srv = self.serve(lambda: protos.append(Recorder()) or protos[-1])
        socks = [client_socket(srv) for _ in range(5)]
        self.ev.run_until(lambda: len(protos) == 5, timeout=DEADLINE)
        held = []
        for p in protos:
            p.hold = held
        socks[0].sendall(b"held")
        self.ev.run_until(lambda: held, timeout=DEADLINE)
        view = memoryview(held[0])
        with self.assertRaises(BufferError):
            self.ev.close()  # a view of pool memory is still out
        self.assertFalse(self.ev.is_closed())
        view.release()
        self.ev.close()
        self.assertTrue(self.ev.is_closed())
        for p in protos:
            self.assertEqual(p.log[-1], ("lost", None))
        with self.assertRaises(uringbuf.ClosedError):
            len(held[0])
        with self.assertRaises(uringbuf.ClosedError):
            self.ev.create_server(Recorder, "127.0.0.1", 0)
        for s in socks:
            s.close()

    def test_serve_helper(self):
        srv = uringbuf.serve(Recorder, "127.0.0.1", 0)
        self.assertTrue(srv.is_serving())
        srv.loop.call_later(0.05, srv.loop.stop)
        srv.serve_forever()
        self.assertFalse(srv.is_serving())
        self.assertTrue(srv.loop.is_closed())  # serve() made it: closed


if __name__ == "__main__":
    unittest.main()
