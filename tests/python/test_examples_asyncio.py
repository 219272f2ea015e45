"""examples/proxy.py --asyncio: the same proxy protocols inside an asyncio
loop (uringbuf.asyncio), per-buffer and --pipe, in every mode; exact bytes,
several clients at once, upstream refused, and exit 0 on SIGTERM/SIGINT."""
import signal
import socket
import unittest

import uringbuf

from test_examples import ECHO, POOLS, PROXY, Program, roundtrip
from ubtest import DEADLINE, MODES, ModeTestCase, StreamClient, pattern

NO_ASYNCIO = (None if hasattr(uringbuf.Loop, "eventfd") else
              "the core has no ub_loop_eventfd() (Loop.eventfd), which "
              "uringbuf.asyncio needs")


@unittest.skipIf(NO_ASYNCIO, NO_ASYNCIO)
class AsyncioProxy(ModeTestCase):
    def check(self, client, data):
        self.assertIsNone(client.error)
        self.assertIsNone(client.mismatch)
        self.assertEqual(client.received, len(data))

    def test_proxy_asyncio_every_mode_both_ways(self):
        for mode in MODES:
            for pipe in ([], ["--pipe"]):
                with self.subTest(mode=mode, pipe=bool(pipe)):
                    self.need_mode(mode)
                    echo = Program(ECHO, "--listen", "127.0.0.1:0", *POOLS)
                    proxy = Program(PROXY, "--asyncio", "--listen",
                                    "127.0.0.1:0", "--to", echo.text,
                                    "--mode", mode, *POOLS, *pipe)
                    try:
                        self.check(*roundtrip(proxy.address, 3_000_000, 6))
                        clients = [StreamClient(proxy.address,
                                                pattern(i, 200_000), seed=i)
                                   for i in range(8)]
                        for c in clients:
                            c.start()
                        for c in clients:
                            c.join(DEADLINE)
                            self.check(c, c.data)
                    finally:
                        pstatus, perr = proxy.stop(signal.SIGTERM)
                        estatus, eerr = echo.stop(signal.SIGTERM)
                    self.assertEqual(pstatus, 0, perr)
                    self.assertEqual(estatus, 0, eerr)
                    self.assertEqual(perr, "")

    def test_proxy_asyncio_upstream_refused_and_sigint(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        proxy = Program(PROXY, "--asyncio", "--listen", "127.0.0.1:0",
                        "--to", "127.0.0.1:%d" % port)
        try:
            c = socket.create_connection(proxy.address)
            c.settimeout(DEADLINE)
            try:
                self.assertEqual(c.recv(10), b"")
            except ConnectionResetError:
                pass  # aborted: also fine
            c.close()
        finally:
            status, err = proxy.stop(signal.SIGINT)
        self.assertEqual(status, 0, err)
        self.assertIn("refused", err.lower())


if __name__ == "__main__":
    unittest.main()
