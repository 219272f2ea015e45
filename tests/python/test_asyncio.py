"""uringbuf.asyncio: uringbuf servers and clients inside a running asyncio
loop, talking to ordinary asyncio servers and clients in the SAME loop.
Exact bytes in every send mode, asyncio streams, plain asyncio protocols
(bytes), backpressure (drain, pause_writing), wait_for timeouts,
cancellation, servers' asyncio API, shutdown, and no leaked descriptors."""
import asyncio
import gc
import os
import random
import socket
import time
import unittest

import uringbuf

from ubtest import (DEADLINE, MODES, NO_ASYNCIO, mode_reason, pattern,
                    small_buffers, ua)


def fds():
    """This process's open descriptors."""
    return set(os.listdir("/proc/self/fd"))


def run(coro, timeout=DEADLINE):
    """Run coro under uringbuf.asyncio.run(), bounded in time."""
    return ua.run(asyncio.wait_for(coro, timeout))


class Echo(uringbuf.Protocol):
    """Zero-copy echo: every received Buffer goes back as it is."""

    def __init__(self):
        self.types = set()
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, buf):
        self.types.add(type(buf))
        self.transport.write(buf)

    def connection_lost(self, exc):
        self.lost = ("lost", exc)


async def send_chunks(writer, data, seed=1, max_chunk=65536):
    """Write data in random-sized chunks with drain(), then write_eof()."""
    rng = random.Random(seed)
    off = 0
    while off < len(data):
        n = rng.randint(1, max_chunk)
        writer.write(data[off:off + n])
        await writer.drain()
        off += n
    writer.write_eof()


async def stdlib_echo(reader, writer):
    """An ordinary asyncio stream echo handler."""
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


@unittest.skipIf(NO_ASYNCIO, NO_ASYNCIO)
class AsyncioTestCase(unittest.TestCase):
    """Every test must give back every descriptor it opened."""

    def setUp(self):
        gc.collect()
        self.fds_before = fds()

    def tearDown(self):
        gc.collect()
        leaked = fds() - self.fds_before
        self.assertEqual(leaked, set(), "leaked descriptors")


class TestEcho(AsyncioTestCase):

    def test_uringbuf_server_asyncio_client_every_mode(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                why = mode_reason(mode)
                if why:
                    self.skipTest("mode %s unavailable: %s" % (mode, why))
                data = pattern(hash(mode) & 0xffff, 2_000_000)
                protocols = []

                def factory():
                    p = Echo()
                    protocols.append(p)
                    return p

                async def main():
                    server = await ua.start_server(factory, "127.0.0.1", 0,
                                                   mode=mode)
                    host, port = server.sockets[0].getsockname()
                    self.assertEqual(server.address, "%s:%d" % (host, port))
                    reader, writer = await asyncio.open_connection(host,
                                                                   port)
                    sender = asyncio.ensure_future(
                        send_chunks(writer, data, seed=len(mode)))
                    got = await reader.read(-1)  # until the echo's EOF
                    await sender
                    writer.close()
                    await writer.wait_closed()
                    server.close()
                    await server.wait_closed()
                    return got

                got = run(main())
                self.assertEqual(len(got), len(data))
                self.assertTrue(got == data, "echoed bytes differ")
                self.assertEqual(len(protocols), 1)
                self.assertEqual(protocols[0].types, {uringbuf.Buffer})
                self.assertEqual(protocols[0].lost, ("lost", None))

    def test_uringbuf_client_asyncio_server_streams(self):
        lines = [b"line %d %s\n" % (i, b"x" * (i % 97)) for i in range(2000)]
        block = pattern(7, 300_000)

        async def main():
            server = await asyncio.start_server(stdlib_echo, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await ua.open_connection("127.0.0.1", port)
            self.assertIsInstance(writer.transport, ua.AsyncioTransport)
            self.assertEqual(writer.get_extra_info("peername"),
                             ("127.0.0.1", port))
            writer.writelines(lines)
            await writer.drain()
            got_lines = [await reader.readline() for _ in lines]
            writer.write(block)
            await writer.drain()
            got_block = await reader.readexactly(len(block))
            writer.write(b"tail")
            writer.write_eof()
            tail = await reader.read()
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()
            return got_lines, got_block, tail

        got_lines, got_block, tail = run(main())
        self.assertEqual(got_lines, lines)
        self.assertTrue(got_block == block)
        self.assertEqual(tail, b"tail")

    def test_uringbuf_both_ends_stream_server(self):
        data = pattern(11, 1_000_000)

        async def main():
            server = await ua.start_stream_server(stdlib_echo, "127.0.0.1",
                                                  0)
            reader, writer = await ua.open_connection(server.address, None)
            sender = asyncio.ensure_future(send_chunks(writer, data, 3))
            got = await reader.read(-1)
            await sender
            writer.close()
            await writer.wait_closed()
            async with server:
                pass
            self.assertFalse(server.is_serving())
            return got

        self.assertTrue(run(main()) == data)

    def test_many_connections_at_once(self):
        # More completions at once than one kernel entry processes (task
        # work runs in batches) and than the submission queue holds: every
        # wakeup must still come through the eventfd.
        n = 300

        async def one(port, i):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            msg = b"%05d" % i * 200
            writer.write(msg)
            got = await reader.readexactly(len(msg))
            writer.close()
            await writer.wait_closed()
            return got == msg

        async def main():
            server = await ua.start_server(Echo, "127.0.0.1", 0, backlog=n)
            port = server.sockets[0].getsockname()[1]
            ok = await asyncio.gather(*(one(port, i) for i in range(n)))
            server.close()
            await server.wait_closed()
            return ok

        self.assertEqual(run(main()), [True] * n)


class TestProtocols(AsyncioTestCase):

    def test_plain_asyncio_protocol_gets_bytes(self):
        log = []

        class Plain(asyncio.Protocol):
            def connection_made(self, transport):
                log.append("made")
                self.transport = transport
                self.data = bytearray()

            def data_received(self, data):
                if "data" not in log:
                    log.append("data")
                self.types = getattr(self, "types", set()) | {type(data)}
                self.data += data

            def eof_received(self):
                log.append("eof")
                self.transport.write(bytes(self.data[::-1]))
                return None  # close after the reply

            def connection_lost(self, exc):
                log.append(("lost", exc))

        protocols = []
        data = pattern(5, 200_000)

        async def main():
            server = await ua.start_server(
                lambda: protocols.append(Plain()) or protocols[-1],
                "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            writer.write_eof()
            got = await reader.read()
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()
            self.assertEqual(server._transports, set())  # all detached
            return got

        got = run(main())
        self.assertTrue(got == data[::-1])
        self.assertEqual(log, ["made", "data", "eof", ("lost", None)])
        self.assertEqual(protocols[0].types, {bytes})

    def test_buffered_protocol(self):
        class Buffered(asyncio.BufferedProtocol):
            def __init__(self):
                self.buf = bytearray(1000)  # smaller than a pool buffer
                self.data = bytearray()
                self.done = asyncio.get_running_loop().create_future()

            def connection_made(self, transport):
                self.transport = transport

            def get_buffer(self, sizehint):
                return self.buf

            def buffer_updated(self, nbytes):
                self.data += self.buf[:nbytes]

            def eof_received(self):
                self.done.set_result(bytes(self.data))

            def connection_lost(self, exc):
                pass

        data = pattern(9, 500_000)

        async def main():
            server = await asyncio.start_server(stdlib_echo, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            transport, protocol = await ua.create_connection(
                Buffered, "127.0.0.1", port)
            self.assertIsInstance(protocol, Buffered)
            self.assertIs(transport.get_protocol(), protocol)
            transport.write(data)
            transport.write_eof()
            got = await protocol.done
            transport.close()
            server.close()
            await server.wait_closed()
            return got

        self.assertTrue(run(main()) == data)

    def test_create_connection_refused_and_cancelled(self):
        made = []

        async def main():
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()  # nobody listens there now
            with self.assertRaises(ConnectionRefusedError):
                await ua.create_connection(lambda: made.append(1),
                                           "127.0.0.1", port)
            # Cancelled while connecting: the attempt is aborted, no
            # protocol is made.
            task = asyncio.ensure_future(ua.create_connection(
                lambda: made.append(2), "127.0.0.1", port))
            await asyncio.sleep(0)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            loop = ua.get_loop()
            deadline = time.monotonic() + DEADLINE
            while loop.loop.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return len(loop.loop.connections)

        self.assertEqual(run(main()), 0)
        self.assertEqual(made, [])


class TestFlowControl(AsyncioTestCase):

    def test_drain_waits_for_a_slow_reader(self):
        data = pattern(21, 8 * 1024 * 1024)

        async def main():
            go = asyncio.Event()
            received = bytearray()

            async def slow(reader, writer):
                await go.wait()
                while True:
                    b = await reader.read(1 << 20)
                    if not b:
                        break
                    received.extend(b)
                writer.close()

            server = await asyncio.start_server(slow, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await ua.open_connection("127.0.0.1", port)
            writer.transport.set_write_buffer_limits(high=64 * 1024)
            self.assertEqual(writer.transport.get_write_buffer_limits(),
                             (16 * 1024, 64 * 1024))
            writer.write(data)
            self.assertGreater(writer.transport.get_write_buffer_size(),
                               64 * 1024)
            drain = asyncio.ensure_future(writer.drain())
            await asyncio.sleep(0.3)
            # The peer reads nothing: far more than the socket buffers
            # hold is still queued, and drain() must still wait.
            self.assertFalse(drain.done(), "drain() did not wait")
            self.assertGreater(writer.transport.get_write_buffer_size(),
                               64 * 1024)
            go.set()
            await drain
            self.assertLessEqual(writer.transport.get_write_buffer_size(),
                                 16 * 1024)
            writer.write_eof()
            await reader.read()  # the peer's close
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()
            return bytes(received)

        self.assertTrue(run(main()) == data)

    def test_pause_and_resume_writing(self):
        data = pattern(22, 4 * 1024 * 1024)
        calls = []

        class Sender(uringbuf.Protocol):
            def connection_made(self, transport):
                small_buffers(transport.get_extra_info("socket"))
                transport.set_write_buffer_limits(high=128 * 1024)
                transport.write(data)
                transport.write_eof()

            def pause_writing(self):
                calls.append("pause")

            def resume_writing(self):
                calls.append("resume")

        async def main():
            server = await ua.start_server(Sender, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            sock = socket.socket()
            small_buffers(sock)
            sock.connect(("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
            await asyncio.sleep(0.2)  # read nothing yet
            paused = list(calls)
            got = await reader.read()
            writer.close()
            await writer.wait_closed()
            server.close_clients()
            server.close()
            await server.wait_closed()
            return paused, got

        paused, got = run(main())
        self.assertEqual(paused, ["pause"])
        self.assertEqual(calls, ["pause", "resume"])
        self.assertTrue(got == data)

    def test_pause_reading_keeps_order(self):
        data = pattern(23, 600_000)

        class Stutter(uringbuf.Protocol):
            def __init__(self):
                self.data = bytearray()
                self.done = asyncio.get_running_loop().create_future()

            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, buf):
                self.data += memoryview(buf)
                buf.release()
                self.transport.pause_reading()
                asyncio.get_running_loop().call_later(
                    0.001, self.transport.resume_reading)

            def eof_received(self):
                self.done.set_result(bytes(self.data))
                return True

        async def main():
            server = await asyncio.start_server(
                lambda r, w: send_chunks(w, data, 4), "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            transport, protocol = await ua.create_connection(
                Stutter, "127.0.0.1", port)
            got = await protocol.done
            transport.close()
            server.close()
            await server.wait_closed()
            return got

        self.assertTrue(run(main()) == data)


class TestTimeoutsAndCancellation(AsyncioTestCase):

    def test_wait_for_timeout_then_more_data(self):
        async def main():
            go = asyncio.Event()

            async def quiet(reader, writer):
                await go.wait()
                writer.write(b"hello")
                await writer.drain()
                await reader.read()
                writer.close()

            server = await asyncio.start_server(quiet, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await ua.open_connection("127.0.0.1", port)
            t0 = time.monotonic()
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(100), 0.2)
            self.assertGreaterEqual(time.monotonic() - t0, 0.19)
            # A cancelled readexactly() leaves the stream usable.
            task = asyncio.ensure_future(reader.readexactly(5))
            await asyncio.sleep(0.05)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            go.set()
            got = await asyncio.wait_for(reader.readexactly(5), DEADLINE)
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()
            return got

        self.assertEqual(run(main()), b"hello")

    def test_loop_stays_responsive(self):
        data = pattern(31, 16 * 1024 * 1024)

        async def main():
            gaps = []
            stop = False

            async def ticker():
                last = time.monotonic()
                while not stop:
                    await asyncio.sleep(0.005)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            tick = asyncio.ensure_future(ticker())
            server = await ua.start_server(Echo, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            t0 = time.monotonic()
            sender = asyncio.ensure_future(send_chunks(writer, data, 8))
            n = 0
            while True:
                b = await reader.read(1 << 20)
                if not b:
                    break
                n += len(b)
            await sender
            took = time.monotonic() - t0
            stop = True
            await tick
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()
            return n, gaps, took

        n, gaps, took = run(main())
        self.assertEqual(n, len(data))
        # The ticker ran throughout: at least a tenth of the ticks a 5 ms
        # ticker makes in that time (a fast transfer makes few: a count
        # alone failed once at 5 when 16 MiB echoed in about 30 ms).
        self.assertGreaterEqual(len(gaps), max(1, int(took / 0.005 / 10)),
                                "%d ticks in %.3f s" % (len(gaps), took))
        # Never blocked: no tick waits for the transfer (generous bound
        # for a loaded 2-core machine; a blocking wait would be seconds).
        self.assertLess(max(gaps), 1.0)

    def test_serve_forever_cancelled_closes(self):
        async def main():
            server = await ua.start_server(Echo, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            task = asyncio.ensure_future(server.serve_forever())
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ping")
            self.assertEqual(await reader.readexactly(4), b"ping")
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertFalse(server.is_serving())
            self.assertEqual(server.sockets, ())
            # The accepted connection stays until closed: wait_closed()
            # waits for it (asyncio 3.12 semantics).
            waiting = asyncio.ensure_future(server.wait_closed())
            await asyncio.sleep(0.05)
            self.assertFalse(waiting.done())
            writer.close()
            await writer.wait_closed()
            await asyncio.wait_for(waiting, DEADLINE)
            with self.assertRaises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)
            return True

        self.assertTrue(run(main()))


class TestShutdown(AsyncioTestCase):

    def test_shutdown_aborts_connections(self):
        lost = []

        class Holder(uringbuf.Protocol):
            def connection_lost(self, exc):
                lost.append(exc)

        async def main():
            server = await ua.start_server(Holder, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            peers = [await asyncio.open_connection("127.0.0.1", port)
                     for _ in range(5)]
            loop = ua.get_loop()
            deadline = time.monotonic() + DEADLINE
            while (len(loop.loop.connections) < 5 and
                   time.monotonic() < deadline):
                await asyncio.sleep(0.01)
            self.assertEqual(len(loop.loop.connections), 5)
            await ua.shutdown()
            self.assertTrue(loop.is_closed())
            self.assertEqual(len(lost), 5)
            for reader, writer in peers:
                try:
                    self.assertEqual(await reader.read(), b"")
                except ConnectionResetError:
                    pass  # an abort may reset
                writer.close()
            # A new bridge can be made after shutdown.
            self.assertIsNot(ua.get_loop(), loop)
            return True

        self.assertTrue(run(main()))

    def test_get_loop_is_per_asyncio_loop(self):
        async def main():
            a = ua.get_loop()
            self.assertIs(ua.get_loop(), a)
            self.assertIsInstance(a, uringbuf.EventLoop)
            self.assertIs(a.asyncio_loop, asyncio.get_running_loop())
            with self.assertRaises(RuntimeError):
                a.run_forever()
            # Timers are asyncio's.
            fired = asyncio.get_running_loop().create_future()
            a.call_later(0.01, fired.set_result, "t")
            return await fired

        self.assertEqual(run(main()), "t")
        with self.assertRaises(RuntimeError):
            ua.get_loop()  # no running asyncio loop


if __name__ == "__main__":
    unittest.main()
