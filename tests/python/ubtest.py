"""Shared by the uringbuf Python tests: bounded loops, byte patterns, mode
skips, loopback clients, and a ctypes view of Py_buffer."""
import ctypes
import os
import random
import socket
import sys
import threading
import time
import unittest

import uringbuf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
EXAMPLES = os.environ.get("UB_EXAMPLES_DIR", os.path.join(ROOT, "examples"))

# Every wait in a test is bounded by this many seconds.
DEADLINE = float(os.environ.get("UB_PY_DEADLINE", "60"))

# Under a sanitizer (scripts/test's asan-python suite sets ASAN_OPTIONS and
# preloads the ASan runtime) everything is slower: tests that move many
# megabytes scale down, and latency deadlines scale up, when this is true.
SANITIZED = bool(os.environ.get("ASAN_OPTIONS") or
                 "asan" in os.environ.get("LD_PRELOAD", ""))

MODES = ("bundle", "ring", "serial")


# uringbuf.asyncio, or None with the reason its tests skip.
try:
    import uringbuf.asyncio as ua
    NO_ASYNCIO = (None if hasattr(uringbuf.Loop, "eventfd") else
                  "the core has no ub_loop_eventfd() (Loop.eventfd), which "
                  "uringbuf.asyncio needs")
except ImportError as e:  # pragma: no cover - reported as the skip reason
    ua = None
    NO_ASYNCIO = "uringbuf.asyncio does not import: %s" % e


def mode_reason(mode):
    """None if the kernel can do mode, else why not."""
    with uringbuf.Loop() as loop:
        return loop.mode_check(mode)


class ModeTestCase(unittest.TestCase):
    """subTest-free helper: skip when a mode is unavailable."""

    def need_mode(self, mode):
        why = mode_reason(mode)
        if why:
            self.skipTest("mode %s unavailable: %s" % (mode, why))


def pattern(seed, size):
    """size reproducible pseudo-random bytes for stream seed."""
    return random.Random(seed).randbytes(size)


def wait_events(loop, pred, handle, timeout=DEADLINE, batches=1_000_000):
    """Drive a low-level Loop, calling handle(ev) for every event, until
    pred() is true: bounded in time and in batches."""
    deadline = time.monotonic() + timeout
    for _ in range(batches):
        if pred():
            return
        if time.monotonic() > deadline:
            break
        for ev in loop.wait(timeout=50):
            handle(ev)
    if not pred():
        raise AssertionError("timed out waiting for %s" % (
            getattr(pred, "__doc__", None) or pred,))


def tcp_pair(loop, **opts):
    """(Connection, socket): a Connection adopted from one end of a
    loopback TCP connection, the plain socket of the other end."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    c = socket.create_connection(ls.getsockname())
    s, _ = ls.accept()
    ls.close()
    conn = loop.adopt(s, **opts)
    c.settimeout(DEADLINE)
    return conn, c


def small_buffers(sock, size=4096):
    """Tiny socket buffers: forces short sends and many completions."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class StreamClient(threading.Thread):
    """Sends data in random-sized chunks over a blocking loopback socket and
    reads the echo back, checking every byte at its offset."""

    def __init__(self, addr, data, seed=1, max_chunk=65536, sockbuf=None,
                 shutdown=True):
        super().__init__(daemon=True)
        self.addr, self.data, self.max_chunk = addr, data, max_chunk
        self.rng = random.Random(seed)
        self.sockbuf, self.shutdown = sockbuf, shutdown
        self.received = 0
        self.error = None
        self.mismatch = None
        self.sock = None

    def abort(self):
        """Unblock the threads (after a failure) and wait for them."""
        s = self.sock
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.join(DEADLINE)

    def run(self):
        try:
            s = self.sock = socket.socket()
            if self.sockbuf:
                small_buffers(s, self.sockbuf)
            s.settimeout(DEADLINE)
            s.connect(self.addr)
            reader = threading.Thread(target=self._read, args=(s,),
                                      daemon=True)
            reader.start()
            off = 0
            while off < len(self.data):
                n = self.rng.randint(1, self.max_chunk)
                s.sendall(self.data[off:off + n])
                off += n
            if self.shutdown:
                s.shutdown(socket.SHUT_WR)
            reader.join(DEADLINE)
            s.close()
        except Exception as e:  # reported by the test
            self.error = e

    def _read(self, s):
        try:
            view = memoryview(self.data)
            while True:
                b = s.recv(65536)
                if not b:
                    return
                end = self.received + len(b)
                if view[self.received:end] != b:
                    bad = next(i for i in range(len(b))
                               if self.data[self.received + i] != b[i])
                    self.mismatch = self.received + bad
                    return
                self.received = end
        except Exception as e:
            self.error = e


class Py_buffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p),
                ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p),
                ("shape", ctypes.POINTER(ctypes.c_ssize_t)),
                ("strides", ctypes.POINTER(ctypes.c_ssize_t)),
                ("suboffsets", ctypes.POINTER(ctypes.c_ssize_t)),
                ("internal", ctypes.c_void_p)]


def view_address(obj):
    """(address, length, readonly) of obj's buffer, read through the C
    buffer protocol itself (independent of Buffer.address)."""
    get = ctypes.pythonapi.PyObject_GetBuffer
    get.argtypes = [ctypes.py_object, ctypes.POINTER(Py_buffer), ctypes.c_int]
    rel = ctypes.pythonapi.PyBuffer_Release
    rel.argtypes = [ctypes.POINTER(Py_buffer)]
    pb = Py_buffer()
    if get(obj, ctypes.byref(pb), 0) != 0:
        raise BufferError("PyObject_GetBuffer failed")
    try:
        return pb.buf, pb.len, bool(pb.readonly)
    finally:
        rel(ctypes.byref(pb))


def need_fds(test, n):
    """Raise the soft RLIMIT_NOFILE to the hard limit if below n
    descriptors; skip the test (with the reason) if even that is too low."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        want = n if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        test.skipTest("RLIMIT_NOFILE is %d (hard %d): %d descriptors needed"
                      % (soft, hard, n))


def log(*args):
    if os.environ.get("UB_PY_VERBOSE"):
        print(*args, file=sys.stderr)
