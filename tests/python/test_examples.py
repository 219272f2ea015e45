"""examples/echo.py and examples/proxy.py as programs: started as
subprocesses, serving real (Python socket) clients in every mode, through
the per-buffer proxy and the --pipe proxy, and stopped by SIGINT/SIGTERM
with status 0."""
import os
import signal
import socket
import subprocess
import sys
import threading
import unittest

from ubtest import (DEADLINE, EXAMPLES, MODES, ModeTestCase, StreamClient,
                    pattern)

ECHO = os.path.join(EXAMPLES, "echo.py")
PROXY = os.path.join(EXAMPLES, "proxy.py")
# Pools for an echo server and a proxy in front of it, on one machine: with
# the default receive pool (1024 x 4 KiB) and 1 MiB high water marks, the
# echo server's buffers queued towards the proxy and the proxy's queued
# towards the echo server can take both pools under load, and then neither
# can receive what would free the other's (README: Guarantees).  Seen here:
# one client in 5-10 got nothing back with two CPU hogs running.
POOLS = ("--buf-count", "16384")


class Program:
    """A running example; address is the (host, port) it printed."""

    def __init__(self, path, *args):
        self.p = subprocess.Popen([sys.executable, path] + list(args),
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        line = self._readline()
        if not line.startswith("listening on "):
            self.p.kill()
            raise AssertionError("%s printed %r; stderr: %s" % (
                path, line, self.p.stderr.read()))
        host, _, port = line.split()[-1].rpartition(":")
        self.address = (host, int(port))
        self.text = line.split()[-1]

    def _readline(self):
        out = []
        t = threading.Thread(target=lambda: out.append(
            self.p.stdout.readline()), daemon=True)
        t.start()
        t.join(DEADLINE)
        return out[0] if out else ""

    def stop(self, sig=signal.SIGTERM):
        """Send sig; returns (status, stderr)."""
        self.p.send_signal(sig)
        try:
            _, err = self.p.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.p.kill()
            _, err = self.p.communicate()
            return None, err
        return self.p.returncode, err


def roundtrip(addr, size, seed):
    data = pattern(seed, size)
    c = StreamClient(addr, data, seed=seed, max_chunk=70_000)
    c.start()
    c.join(DEADLINE)
    if c.is_alive():
        c.abort()
    return c, data


class ProxyChecks:
    """The proxy checks that tests/python/test_examples_asyncio.py runs
    again with --asyncio (extra: the proxy's extra arguments)."""

    def check(self, client, data):
        self.assertIsNone(client.error)
        self.assertIsNone(client.mismatch)
        self.assertEqual(client.received, len(data))

    def proxy_every_mode(self, extra, seed):
        """A big roundtrip, then 8 clients at once, through the proxy in
        every mode, per-buffer and --pipe; exit 0 on SIGTERM."""
        for mode in MODES:
            for pipe in ([], ["--pipe"]):
                with self.subTest(mode=mode, pipe=bool(pipe)):
                    self.need_mode(mode)
                    echo = Program(ECHO, "--listen", "127.0.0.1:0", *POOLS)
                    proxy = Program(PROXY, *extra, "--listen", "127.0.0.1:0",
                                    "--to", echo.text, "--mode", mode,
                                    *POOLS, *pipe)
                    try:
                        self.check(*roundtrip(proxy.address, 3_000_000,
                                              seed))
                        # several clients at once
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

    def proxy_upstream_refused(self, extra, sig):
        """The upstream refuses: the client is closed (or reset), the proxy
        says so on stderr and exits 0 on sig."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        proxy = Program(PROXY, *extra, "--listen", "127.0.0.1:0", "--to",
                        "127.0.0.1:%d" % port)
        try:
            c = socket.create_connection(proxy.address)
            c.settimeout(DEADLINE)
            try:
                self.assertEqual(c.recv(10), b"")
            except ConnectionResetError:
                pass  # aborted: also fine
            c.close()
        finally:
            status, err = proxy.stop(sig)
        self.assertEqual(status, 0, err)
        self.assertIn("refused", err.lower())


class Examples(ProxyChecks, ModeTestCase):
    def test_echo_every_mode(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                self.need_mode(mode)
                echo = Program(ECHO, "--listen", "127.0.0.1:0", "--mode",
                               mode)
                self.assertNotEqual(echo.address[1], 0)
                try:
                    for i in range(2):
                        self.check(*roundtrip(echo.address, 2_000_000, i))
                finally:
                    status, err = echo.stop(signal.SIGINT)
                self.assertEqual(status, 0, err)
                self.assertEqual(err, "")

    def test_proxy_every_mode_both_ways(self):
        self.proxy_every_mode([], 5)

    def test_proxy_upstream_refused(self):
        self.proxy_upstream_refused([], signal.SIGTERM)

    def test_command_line_errors(self):
        for path, args, what in (
                (ECHO, [], "--listen"),
                (ECHO, ["--listen", "nonsense"], "nonsense"),
                (ECHO, ["--listen", "127.0.0.1:0", "--mode", "fast"],
                 "fast"),
                (ECHO, ["--listen", "127.0.0.1:0", "extra"], "extra"),
                (PROXY, ["--listen", "127.0.0.1:0"], "--to"),
                (PROXY, ["--listen", "127.0.0.1:0", "--to", "bad"], "bad"),
        ):
            with self.subTest(args=args):
                r = subprocess.run([sys.executable, path] + args,
                                   capture_output=True, text=True,
                                   timeout=DEADLINE)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(what, r.stderr)
                self.assertEqual(r.stdout, "")
        r = subprocess.run([sys.executable, ECHO, "--help"],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(r.returncode, 0)
        self.assertIn("--listen", r.stdout)


if __name__ == "__main__":
    unittest.main()
