"""examples/proxy.py --asyncio: the same proxy protocols inside an asyncio
loop (uringbuf.asyncio), per-buffer and --pipe, in every mode; exact bytes,
several clients at once, upstream refused, and exit 0 on SIGTERM/SIGINT."""
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

    def test_proxy_asyncio_upstream_refused_and_sigint(self):
        self.proxy_upstream_refused(["--asyncio"], signal.SIGINT)


if __name__ == "__main__":
    unittest.main()
