"""examples/proxy.py --asyncio: the same proxy protocols inside an asyncio
loop (uringbuf.asyncio), per-buffer and --pipe, in every mode; exact bytes,
several clients at once, many concurrent streams in front of echo.py,
upstream refused, and exit 0 on SIGTERM/SIGINT."""
import signal
import unittest

import uringbuf

from test_examples import ProxyChecks
from ubtest import ModeTestCase

NO_ASYNCIO = (None if hasattr(uringbuf.Loop, "eventfd") else
              "the core has no ub_loop_eventfd() (Loop.eventfd), which "
              "uringbuf.asyncio needs")


@unittest.skipIf(NO_ASYNCIO, NO_ASYNCIO)
class AsyncioProxy(ProxyChecks, ModeTestCase):
    def test_proxy_asyncio_every_mode_both_ways(self):
        self.proxy_every_mode(["--asyncio"], 6)

    def test_proxy_asyncio_in_front_of_echo_streams(self):
        """test_examples' streams (64 x 4 MiB, 200 x 256 KiB at once)
        through proxy.py --asyncio, per-buffer and --pipe."""
        self.proxy_streams(["--asyncio"])

    def test_proxy_asyncio_upstream_refused_and_sigint(self):
        self.proxy_upstream_refused(["--asyncio"], signal.SIGINT)


if __name__ == "__main__":
    unittest.main()
