"""Ordered, byte-exact streams in every send mode: a large stream in
random-sized writes through tiny socket buffers, small pools and low water
marks; 200 concurrent connections; and the event API on both ends."""
import random
import selectors
import socket
import threading
import time
import unittest

import uringbuf
from uringbuf import (EV_ACCEPT, EV_CLOSED, EV_CONNECT, EV_DATA, EV_EOF,
                      EV_ERROR, EV_WRITABLE)

from ubtest import (DEADLINE, MODES, ModeTestCase, StreamClient, pattern,
                    small_buffers, wait_events)


class Echo(uringbuf.Protocol):
    """Echo with backpressure (pause reading while writes are paused)."""

    limits = None
    lost = None

    def connection_made(self, transport):
        self.transport = transport
        if self.limits:
            transport.set_write_buffer_limits(*self.limits)

    def data_received(self, buf):
        self.transport.write(buf)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def connection_lost(self, exc):
        if self.lost is not None:
            self.lost.append(exc)


def echo_server(mode, pool_count=0, pool_size=0, sockbuf=None, limits=None):
    """An echo server on 127.0.0.1.  sockbuf: tiny socket buffers for the
    accepted sockets, set on the listening socket so that they hold from
    the handshake on (shrinking SO_RCVBUF on an established loopback
    connection can stall TCP itself, io_uring or not)."""
    loop = uringbuf.EventLoop(pool_count=pool_count, pool_size=pool_size)
    lost = []
    proto = type("E", (Echo,), {"limits": limits, "lost": lost})
    if sockbuf:
        ls = socket.socket()
        small_buffers(ls, sockbuf)
        ls.bind(("127.0.0.1", 0))
        ls.listen(128)
        server = loop.create_server(proto, sock=ls, mode=mode)
    else:
        server = loop.create_server(proto, "127.0.0.1", 0, mode=mode)
    return loop, server, lost


class LargeStream(ModeTestCase):
    SIZE = 6 * 1024 * 1024

    def run_stream(self, mode, **server_kw):
        self.need_mode(mode)
        loop, server, lost = echo_server(mode, **server_kw)
        data = pattern(hash(mode) & 0xffff, self.SIZE)
        client = StreamClient(server.sockname, data, seed=7,
                              max_chunk=100_000, sockbuf=4096)
        try:
            client.start()
            ok = loop.run_until(lambda: not client.is_alive() and lost,
                                timeout=DEADLINE)
            self.assertIsNone(client.error)
            self.assertIsNone(client.mismatch,
                              "wrong byte at offset %s" % client.mismatch)
            self.assertEqual(client.received, len(data))
            self.assertTrue(ok, "the connection did not close")
            self.assertEqual(lost, [None])
        finally:
            client.abort()
            loop.close()

    def test_tiny_socket_buffers_small_pool(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                self.run_stream(mode, pool_count=32, pool_size=1024,
                                sockbuf=4096, limits=(16384, 4096))

    def test_default_settings(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                self.run_stream(mode)


class ManyConnections(ModeTestCase):
    N = 200
    SIZE = 48 * 1024

    def client(self, addr, result):
        """200 non-blocking sockets: each sends its own stream in random
        chunks and checks its echo, byte for byte."""
        sel = selectors.DefaultSelector()
        rng = random.Random(3)
        state = {}
        try:
            for i in range(self.N):
                s = socket.socket()
                s.connect(addr)
                s.setblocking(False)
                data = pattern(1000 + i, self.SIZE)
                state[s] = [data, 0, 0]  # data, sent, received
                sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
            deadline = time.monotonic() + DEADLINE
            done = 0
            while done < self.N and time.monotonic() < deadline:
                for key, events in sel.select(0.1):
                    s = key.fileobj
                    st = state[s]
                    data = st[0]
                    if events & selectors.EVENT_WRITE:
                        n = rng.randint(1, 8192)
                        try:
                            st[1] += s.send(data[st[1]:st[1] + n])
                        except BlockingIOError:
                            pass
                        if st[1] == len(data):
                            s.shutdown(socket.SHUT_WR)
                            sel.modify(s, selectors.EVENT_READ)
                    if events & selectors.EVENT_READ:
                        try:
                            b = s.recv(65536)
                        except BlockingIOError:
                            continue
                        if not b:
                            if st[2] != len(data):
                                result.append("conn %d: EOF at %d of %d" %
                                              (id(s), st[2], len(data)))
                            sel.unregister(s)
                            s.close()
                            done += 1
                            continue
                        if data[st[2]:st[2] + len(b)] != b:
                            result.append("conn %d: bad bytes at %d" %
                                          (id(s), st[2]))
                        st[2] += len(b)
            if done < self.N:
                result.append("only %d of %d finished" % (done, self.N))
        except Exception as e:
            result.append(repr(e))
        finally:
            for s in list(state):
                if s.fileno() >= 0:
                    s.close()
            result.append("done")

    def test_200_concurrent_connections(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                self.need_mode(mode)
                loop, server, lost = echo_server(mode)
                result = []
                t = threading.Thread(target=self.client,
                                     args=(server.sockname, result),
                                     daemon=True)
                try:
                    t.start()
                    loop.run_until(lambda: "done" in result and
                                   len(lost) == self.N, timeout=DEADLINE)
                    self.assertEqual(result, ["done"])
                    self.assertEqual(len(lost), self.N)
                    self.assertEqual(set(map(type, lost)), {type(None)})
                    self.assertEqual(loop.loop.connections, [])
                finally:
                    t.join(DEADLINE)
                    loop.close()


class EventApiStream(ModeTestCase):
    """uringbuf on both ends, event API only: copies (send) and acquired
    buffers (send_buf) interleaved in random sizes, checked on arrival."""

    SIZE = 3 * 1024 * 1024

    def test_event_api_both_ends(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                self.need_mode(mode)
                self.run_mode(mode)

    def run_mode(self, mode):
        loop = uringbuf.Loop(pool_count=64, pool_size=2048)
        try:
            lst = loop.listen("127.0.0.1:0", mode=mode)
            cli = loop.connect(lst.sockname, mode=mode, high_water=65536)
            spool = loop.pool(16, 1500)
            data = pattern(5, self.SIZE)
            rng = random.Random(11)
            st = {"sent": 0, "recv": 0, "server": None, "eof": False,
                  "connected": False, "closed": 0, "errors": []}

            def pump():
                # Send until refused; WRITABLE resumes.
                while st["sent"] < len(data):
                    n = rng.randint(1, 6000)
                    chunk = data[st["sent"]:st["sent"] + n]
                    try:
                        if rng.random() < 0.5:
                            buf = spool.acquire()
                            k = buf.fill(chunk[:buf.capacity])
                            cli.send_buf(buf)
                        else:
                            k = cli.send(chunk)
                    except BlockingIOError:
                        return
                    except OSError as e:
                        if e.errno == 105:  # spool empty: buffers in flight
                            return
                        raise
                    st["sent"] += k
                if st["sent"] == len(data) and not st.get("shut"):
                    st["shut"] = True
                    cli.shutdown()

            def handle(ev):
                t = ev.type
                if t == EV_ACCEPT:
                    st["server"] = ev.conn
                elif t == EV_CONNECT:
                    self.assertEqual(ev.res, 0)
                    st["connected"] = True
                    pump()
                elif t == EV_WRITABLE:
                    pump()
                elif t == EV_DATA:
                    with memoryview(ev.buf) as m:
                        end = st["recv"] + len(m)
                        if m != data[st["recv"]:end]:
                            raise AssertionError("wrong bytes at %d" %
                                                 st["recv"])
                    st["recv"] = end
                    ev.buf.release()
                elif t == EV_EOF:
                    st["eof"] = True
                    ev.conn.close()
                    cli.close()
                elif t == EV_ERROR:
                    st["errors"].append(ev.res)
                elif t == EV_CLOSED and ev.conn is not None:
                    st["closed"] += 1
                # the send pool refills as sends complete
                if st["connected"] and spool.count_state(uringbuf.BUF_FREE):
                    pump()

            wait_events(loop, lambda: st["closed"] == 2, handle)
            self.assertEqual(st["errors"], [])
            self.assertEqual(st["recv"], len(data))
            self.assertTrue(st["eof"])
        finally:
            loop.close()


if __name__ == "__main__":
    unittest.main()
