"""examples/httpd.py as a program, and the benchmark's peers
(bench/peers/httpd_peer.py on asyncio and uvloop, bench/peers/httpd_luv.lua
on luv) as programs too: real HTTP/1.1 traffic from Python sockets over
loopback, every reply checked byte for byte (the Date header's value aside,
whose length is fixed).  Keep-alive, pipelining in one write and in random
chunks, Connection: close, HTTP/1.0, HEAD, bodies, 50 concurrent clients,
the 400/413/431/501 limits, a client that pipelines and never reads (the
server's VmRSS stays bounded while another client is answered), wrk when
installed, and exit 0 with empty stderr on SIGTERM after every test."""
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

from ubtest import DEADLINE, EXAMPLES, MODES, ROOT, SANITIZED, ModeTestCase

HTTPD = os.path.join(EXAMPLES, "httpd.py")
PEER = os.path.join(ROOT, "bench", "peers", "httpd_peer.py")
LUV_PEER = os.path.join(ROOT, "bench", "peers", "httpd_luv.lua")
SYSTEM_PYTHON = "/usr/bin/python3"  # the peers' interpreter (python3-uvloop)

DATE = re.compile(rb"Date: (?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
                  rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                  rb"\d{4} \d\d:\d\d:\d\d GMT\r\n")
DATE_STUB = b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"  # same length

HEAD200 = (b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n"
           b"Content-Type: text/plain\r\n" + DATE_STUB)
OK = HEAD200 + b"\r\nHello, World!"
OK_HEAD = HEAD200 + b"\r\n"
OK_CLOSE = HEAD200 + b"Connection: close\r\n\r\nHello, World!"
OK_KEEP = HEAD200 + b"Connection: keep-alive\r\n\r\nHello, World!"


def error_reply(status):
    return (b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n" + DATE_STUB + b"\r\n")


# The never-reading client: requests it pushes at most (the server must
# stop reading long before), for at most FLOOD_SECONDS, and the VmRSS
# growth allowed.  Without pausing, 3 s of pipelined requests queue some
# hundred megabytes of replies.
FLOOD_BYTES = 64 << 20
FLOOD_SECONDS = 3.0
RSS_BOUND = 24 << 20


def peer_env():
    """The environment for a peer: not the sanitizer runtime (asan-python
    preloads it for the extension under test; the peers do not load it)."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("ASAN_OPTIONS", None)
    env.pop("UBSAN_OPTIONS", None)
    return env


class Server:
    """A running server program; address is the (host, port) it printed."""

    def __init__(self, cmd, env=None):
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        out = []
        t = threading.Thread(target=lambda: out.append(
            self.p.stdout.readline()), daemon=True)
        t.start()
        t.join(DEADLINE)
        line = out[0] if out else ""
        m = re.fullmatch(r"listening on (127\.0\.0\.1):(\d+)\n", line)
        if not m or m.group(2) == "0":
            self.p.kill()
            raise AssertionError("%s printed %r; stderr: %s" % (
                cmd, line, self.p.communicate()[1]))
        self.address = (m.group(1), int(m.group(2)))
        self.url = "http://%s:%d/" % self.address

    def rss(self):
        """VmRSS in bytes, from /proc/PID/status."""
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS for %d" % self.p.pid)

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


class Client:
    """A blocking loopback client; every read bounded by DEADLINE."""

    def __init__(self, addr):
        self.s = socket.create_connection(addr, timeout=DEADLINE)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def read(self, n):
        """Exactly n bytes (the Date values replaced by DATE_STUB)."""
        end = time.monotonic() + DEADLINE
        while len(self.buf) < n:
            if time.monotonic() > end:
                raise AssertionError("%d of %d bytes after %.0f s"
                                     % (len(self.buf), n, DEADLINE))
            b = self.s.recv(max(65536, n - len(self.buf)))
            if not b:
                raise AssertionError("EOF after %d of %d bytes: %r" % (
                    len(self.buf), n, self.buf[-200:]))
            self.buf += b
        got, self.buf = self.buf[:n], self.buf[n:]
        return DATE.sub(DATE_STUB, got)

    def read_to_eof(self):
        """Everything up to EOF (dates stubbed)."""
        end = time.monotonic() + DEADLINE
        while True:
            if time.monotonic() > end:
                raise AssertionError("no EOF after %.0f s" % DEADLINE)
            b = self.s.recv(65536)
            if not b:
                break
            self.buf += b
        got, self.buf = self.buf, b""
        return DATE.sub(DATE_STUB, got)

    def close(self):
        self.s.close()


def workload(count, seed):
    """count pipelined requests (GET, HEAD, POST with a body, extra headers,
    empty lines between requests) and the replies they must get."""
    rnd = random.Random(seed)
    reqs, replies = [], []
    for i in range(count):
        k = i % 5
        if k == 3:
            reqs.append(b"HEAD /h/%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            replies.append(OK_HEAD)
            continue
        if k == 4:
            body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 600)))
            reqs.append(b"POST /p/%d HTTP/1.1\r\nhost: a\r\ncontent-length: "
                        b"%d\r\nContent-Type: application/octet-stream\r\n\r\n"
                        % (i, len(body)) + body + (b"\r\n" if i % 2 else b""))
        else:
            reqs.append(b"GET /g/%d?q=%s HTTP/1.1\r\nHost: localhost\r\n"
                        b"User-Agent: test\r\nAccept: */*\r\n\r\n"
                        % (i, b"x" * rnd.randrange(200)))
        replies.append(OK)
    return b"".join(reqs), b"".join(replies)


class HttpBase:
    """Helpers against a server; subclasses start it in setUp (self.srv)
    and stop it in tearDown, checking status 0 and empty stderr."""

    def stop_server(self):
        status, err = self.srv.stop(signal.SIGTERM)
        self.assertEqual(status, 0, "exit status on SIGTERM; stderr: %s" % err)
        self.assertEqual(err, "", "stderr")

    def keepalive(self, n):
        c = Client(self.srv.address)
        try:
            for i in range(n):
                c.send(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                self.assertEqual(c.read(len(OK)), OK, "reply %d" % i)
        finally:
            c.close()

    def pipelined(self, count, seed, chunked):
        reqs, want = workload(count, seed)
        c = Client(self.srv.address)
        try:
            if not chunked:
                c.send(reqs)
            else:
                # random-size pieces, each its own segment (TCP_NODELAY, and
                # a pause now and then so they also arrive apart)
                rnd = random.Random(seed)
                pos = 0
                while pos < len(reqs):
                    n = rnd.choice((1, 2, 3, rnd.randrange(1, 100),
                                    rnd.randrange(1, 2000)))
                    c.send(reqs[pos:pos + n])
                    pos += n
                    if rnd.randrange(10) == 0:
                        time.sleep(0.0005)
            got = c.read(len(want))
            if got != want:
                bad = next(i for i in range(len(want)) if got[i] != want[i])
                self.fail("reply bytes differ at %d: %r, want %r" % (
                    bad, got[bad - 40:bad + 40], want[bad - 40:bad + 40]))
        finally:
            c.close()

    def closes_after(self, request, reply):
        """request gets exactly reply, then EOF."""
        c = Client(self.srv.address)
        try:
            c.send(request)
            self.assertEqual(c.read_to_eof(), reply)
        finally:
            c.close()



class HttpChecks(HttpBase):
    """The full checks (examples/httpd.py)."""

    def test_keepalive_1000_requests(self):
        self.keepalive(1000)

    def test_pipelined_one_write(self):
        self.pipelined(200, 1, chunked=False)

    def test_pipelined_random_chunks(self):
        for seed in (2, 3):
            self.pipelined(200, seed, chunked=True)

    def test_connection_close(self):
        self.closes_after(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"
                          b"GET /never HTTP/1.1\r\n\r\n", OK + OK_CLOSE)
        self.closes_after(b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n",
                          OK_CLOSE)
        # only the field named Connection counts
        self.closes_after(b"GET / HTTP/1.1\r\nX-Connection: close\r\n"
                          b"Content-Type: close\r\n\r\n"
                          b"GET / HTTP/1.1\r\nconnection:close\r\n\r\n",
                          OK + OK_CLOSE)

    def test_http10(self):
        self.closes_after(b"GET / HTTP/1.0\r\n\r\n", OK_CLOSE)
        c = Client(self.srv.address)
        try:  # keep-alive asked for: the connection stays
            for _ in range(3):
                c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                self.assertEqual(c.read(len(OK_KEEP)), OK_KEEP)
        finally:
            c.close()

    def test_head(self):
        c = Client(self.srv.address)
        try:  # headers only: the next reply follows right after them
            c.send(b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
            self.assertEqual(c.read(len(OK_HEAD) + len(OK)), OK_HEAD + OK)
        finally:
            c.close()

    def test_body(self):
        body = bytes(range(256)) * 400  # 100 KiB, discarded
        c = Client(self.srv.address)
        try:
            c.send(b"POST /upload HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
                   % len(body))
            for i in range(0, len(body), 7000):
                c.send(body[i:i + 7000])
            c.send(b"GET / HTTP/1.1\r\n\r\n")
            self.assertEqual(c.read(2 * len(OK)), OK + OK)
            # Expect: 100-continue gets the interim reply first
            c.send(b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\n"
                   b"Content-Length: 5\r\n\r\n")
            cont = b"HTTP/1.1 100 Continue\r\n\r\n"
            self.assertEqual(c.read(len(cont)), cont)
            c.send(b"hello")
            self.assertEqual(c.read(len(OK)), OK)
        finally:
            c.close()

    def test_concurrent_50(self):
        errors = []

        def run(i):
            try:
                c = Client(self.srv.address)
                try:
                    for j in range(20):
                        c.send(b"GET /%d/%d HTTP/1.1\r\n\r\n" % (i, j))
                        if c.read(len(OK)) != OK:
                            errors.append((i, j))
                finally:
                    c.close()
            except Exception as e:  # reported by the test thread
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=run, args=(i,), daemon=True)
                   for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE)
        self.assertFalse(any(t.is_alive() for t in threads), "clients hung")
        self.assertEqual(errors, [])

    def test_limits(self):
        # a header block over 8 KiB without the blank line
        self.closes_after(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000,
                          error_reply(b"431 Request Header Fields Too Large"))
        # ... and one over 8 KiB with it
        self.closes_after(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000
                          + b"\r\n\r\n",
                          error_reply(b"431 Request Header Fields Too Large"))
        for bad in (b"garbage\r\n\r\n", b"GET /\r\n\r\n",
                    b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
                    b"GET / HTTP/1.1\r\nSpace : before colon\r\n\r\n",
                    b"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
                    b"GET / HTTP/1.1\r\nContent-Length: 1\r\n"
                    b"Content-Length: 2\r\n\r\n"):
            with self.subTest(request=bad):
                self.closes_after(bad, error_reply(b"400 Bad Request"))
        # a bad request line is answered at once, before any blank line
        self.closes_after(b"\x16\x03\x01 TLS hello\r\n",
                          error_reply(b"400 Bad Request"))
        self.closes_after(b"POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
                          error_reply(b"413 Content Too Large"))
        self.closes_after(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked"
                          b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                          error_reply(b"501 Not Implemented"))
        # what came before the bad request is still answered, in order
        self.closes_after(b"GET / HTTP/1.1\r\n\r\nBAD\r\n\r\n",
                          OK + error_reply(b"400 Bad Request"))


class NeverReading:
    """The memory bound; needs self.srv."""

    def test_never_reading_client(self):
        addr = self.srv.address
        warm = Client(addr)
        try:  # the baseline after a little ordinary work
            for _ in range(200):
                warm.send(b"GET / HTTP/1.1\r\n\r\n")
                self.assertEqual(warm.read(len(OK)), OK)
            before = self.srv.rss()
            flood = socket.socket()
            flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            flood.connect(addr)
            flood.setblocking(False)
            try:
                chunk = b"GET / HTTP/1.1\r\nHost: flood\r\n\r\n" * 2048
                sent, stalled, off = 0, None, 0
                end = time.monotonic() + FLOOD_SECONDS
                while sent < FLOOD_BYTES and time.monotonic() < end:
                    try:
                        n = flood.send(chunk[off:])  # resumes mid-request
                        off = (off + n) % len(chunk)
                        sent += n
                        stalled = None
                    except BlockingIOError:
                        # the server stopped reading: once for 0.5 s is enough
                        now = time.monotonic()
                        if stalled is None:
                            stalled = now
                        elif now - stalled > 0.5:
                            break
                        time.sleep(0.01)
                # another client is still answered meanwhile
                for i in range(50):
                    warm.send(b"GET /%d HTTP/1.1\r\n\r\n" % i)
                    self.assertEqual(warm.read(len(OK)), OK)
                after = self.srv.rss()
                self.assertLess(
                    after - before, RSS_BOUND,
                    "VmRSS grew from %d to %d KiB while a client pipelined "
                    "%d bytes of requests and never read" % (
                        before >> 10, after >> 10, sent))
                self.assertLess(sent, FLOOD_BYTES,
                                "the server never stopped reading")
            finally:
                flood.close()
        finally:
            warm.close()


def wrk_check(test, url):
    """A 1-second wrk run: > 0 requests, no socket errors, all 2xx."""
    wrk = shutil.which("wrk")
    if not wrk:
        test.skipTest("wrk is not installed (Debian package wrk; "
                      "scripts/test installs it)")
    r = subprocess.run([wrk, "-t1", "-c10", "-d1s", url], capture_output=True,
                       text=True, timeout=DEADLINE)
    test.assertEqual(r.returncode, 0, r.stderr)
    m = re.search(r"(\d+) requests in", r.stdout)
    test.assertTrue(m and int(m.group(1)) > 0, r.stdout)
    test.assertNotIn("Socket errors", r.stdout)
    test.assertNotIn("Non-2xx", r.stdout)


class HttpdTest(HttpChecks, NeverReading, unittest.TestCase):
    """examples/httpd.py, default mode."""

    def setUp(self):
        env = None
        if SANITIZED:
            # ASan's quarantine keeps freed memory resident (256 MiB by
            # default): cap it, or VmRSS measures the quarantine.
            env = dict(os.environ)
            env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "")
                                   + ":quarantine_size_mb=8")
        self.srv = Server([sys.executable, HTTPD, "--listen", "127.0.0.1:0"],
                          env)

    def tearDown(self):
        self.stop_server()

    def test_wrk(self):
        wrk_check(self, self.srv.url)


class HttpdWorkersTest(HttpChecks, unittest.TestCase):
    """examples/httpd.py --workers 2 (uringbuf.serve(workers=2)): every
    check again against two SO_REUSEPORT worker processes; SIGTERM to the
    parent ends all with status 0 and an empty stderr."""

    def setUp(self):
        self.srv = Server([sys.executable, HTTPD, "--listen", "127.0.0.1:0",
                           "--workers", "2"])

    def tearDown(self):
        self.stop_server()


class HttpdModesTest(HttpBase, ModeTestCase):
    """examples/httpd.py in every send mode: pipelining and keep-alive."""

    def test_modes(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                self.need_mode(mode)
                self.srv = srv = Server([sys.executable, HTTPD, "--listen",
                                         "127.0.0.1:0", "--mode", mode])
                try:
                    self.keepalive(100)
                    self.pipelined(200, 7, chunked=False)
                    self.pipelined(200, 8, chunked=True)
                finally:
                    status, err = srv.stop(signal.SIGINT)
                self.assertEqual((status, err), (0, ""))

    def test_command_line(self):
        for args in (["--listen", "127.0.0.1:0", "--mode", "fast"],
                     [], ["--listen", "nowhere"],
                     ["--listen", "127.0.0.1:0", "--max-conns", "0"]):
            with self.subTest(args=args):
                r = subprocess.run([sys.executable, HTTPD] + args,
                                   capture_output=True, text=True,
                                   timeout=DEADLINE)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertNotEqual(r.stderr, "")


class PeerSmoke:
    """The benchmark's peers: the same replies, keep-alive, pipelining,
    Connection: close, a limit, and exit 0 on SIGTERM."""

    def tearDown(self):
        self.stop_server()

    def test_smoke(self):
        self.keepalive(100)
        self.pipelined(200, 11, chunked=False)
        self.pipelined(200, 12, chunked=True)
        self.closes_after(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
                          OK_CLOSE)
        self.closes_after(b"GET / HTTP/1.0\r\n\r\n", OK_CLOSE)
        self.closes_after(b"garbage\r\n\r\n", error_reply(b"400 Bad Request"))


def _system_python(module):
    """None if /usr/bin/python3 can import module, else why not."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return "%s not found" % SYSTEM_PYTHON
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import " + module],
                       capture_output=True, env=peer_env(), timeout=DEADLINE)
    return None if r.returncode == 0 else (
        "%s cannot import %s (Debian python3-%s)" % (SYSTEM_PYTHON, module,
                                                     module))


class AsyncioPeerTest(PeerSmoke, HttpBase, unittest.TestCase):
    loop = "asyncio"

    def setUp(self):
        why = _system_python(self.loop)
        if why:
            self.skipTest(why)
        self.srv = Server([SYSTEM_PYTHON, PEER, "--listen", "127.0.0.1:0",
                           "--loop", self.loop], peer_env())


class UvloopPeerTest(AsyncioPeerTest):
    loop = "uvloop"


class LuvPeerTest(PeerSmoke, HttpBase, unittest.TestCase):
    def setUp(self):
        lua = shutil.which("lua5.4")
        if not lua:
            self.skipTest("lua5.4 is not installed")
        r = subprocess.run([lua, "-e", "require 'luv'"], capture_output=True,
                           env=peer_env(), timeout=DEADLINE)
        if r.returncode != 0:
            self.skipTest("lua5.4 cannot require luv (Debian lua-luv)")
        self.srv = Server([lua, LUV_PEER, "--listen", "127.0.0.1:0"],
                          peer_env())


if __name__ == "__main__":
    unittest.main()
