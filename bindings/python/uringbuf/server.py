"""Servers and clients in asyncio's idiom, over the uringbuf event API.

A ``Protocol`` gets ``connection_made(transport)``, ``data_received(buf)``,
``eof_received()``, ``connection_lost(exc)``, ``pause_writing()`` and
``resume_writing()``, as in asyncio.  Two differences:

* ``data_received`` gets a ``uringbuf.Buffer``, not bytes: a read-only view
  of the receive pool's memory.  Read it with ``memoryview(buf)`` (zero
  copy) or ``bytes(buf)``; forward it with ``other_transport.write(buf)``
  (zero copy); or just drop it (it goes back to its pool).  Buffers are
  finite: one held forever is one the kernel cannot receive into.
* Everything runs on one ``EventLoop`` (one io_uring) in one thread, driven
  by ``run_forever()`` / ``Server.serve_forever()``; there are no
  coroutines.  ``call_soon`` / ``call_later`` schedule plain callbacks.

``Transport.write()`` never drops bytes: what the core's send queue refuses
(above its high water mark) waits in the transport and is flushed on
EV_WRITABLE; ``pause_writing()`` / ``resume_writing()`` tell the protocol
when the total crosses the transport's high / low water marks.
``Transport.pipe(other)`` hands forwarding to the core (zero copy, with
backpressure, at C speed): no more ``data_received`` calls.

Isolation: every connection may hold at most ``recv_budget`` bytes of the
shared receive pool (default 256 KiB) and the pool is shared out as it
fills, so a peer that sends without reading stalls only itself.
Deadlines (``idle_timeout``, ``connect_timeout``, ``close_timeout``, in
seconds) end a connection with ``connection_lost(TimeoutError)``; a
listener's ``max_connections`` pauses accepting at the limit.  They are
keyword arguments of ``serve()``, ``EventLoop.create_server()`` and
``create_connection()`` (see docs/python.md, "Budgets, fairness and
deadlines").
"""
import heapq
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from typing import (Any, Callable, Deque, Dict, List, Optional, Tuple,
                    Union)

from . import core as _c
from .core import Buffer, ClosedError, Connection, Listener, Loop

__all__ = ["Protocol", "Transport", "EventLoop", "Server", "serve", "connect",
           "create_datagram_endpoint"]

_EV_ACCEPT = _c.UB_EV_ACCEPT
_EV_CONNECT = _c.UB_EV_CONNECT
_EV_DATA = _c.UB_EV_DATA
_EV_WRITABLE = _c.UB_EV_WRITABLE
_EV_EOF = _c.UB_EV_EOF
_EV_ERROR = _c.UB_EV_ERROR
_EV_CLOSED = _c.UB_EV_CLOSED

# Events per wait() batch: one crossing into C per batch.
_BATCH = 256
# Longest a blocked wait lasts: a signal that lands between the last check
# and the system call is noticed this late at worst (as in the C examples).
_MAX_WAIT_MS = 500

BytesLike = Union[bytes, bytearray, memoryview]


def _oserror(res: int) -> OSError:
    """OSError for a core -errno (the subclass matching the errno)."""
    return OSError(-res, os.strerror(-res))


def _write_limits(high: Optional[int],
                  low: Optional[int]) -> Tuple[int, int]:
    """set_write_buffer_limits()' arguments as (high, low), asyncio's
    defaults filled in (high 64 KiB, low high/4) and checked; shared by the
    stream and the datagram transports."""
    if high is None:
        high = 64 * 1024 if low is None else 4 * low
    if low is None:
        low = high // 4
    if not (isinstance(high, int) and isinstance(low, int)):
        raise TypeError("high and low must be ints")
    if not high >= low >= 0:
        raise ValueError("high (%r) must be >= low (%r) must be >= 0"
                         % (high, low))
    return high, low


def _parse_addr(s: str) -> Any:
    """The core's "HOST:PORT" / "[V6]:PORT" / "unix:PATH" / "unix:@NAME" as
    socket module addresses: (host, port), (host, port, 0, 0), a path, or
    an abstract name with its leading NUL."""
    if s.startswith("unix:@"):
        return "\0" + s[6:]
    if s.startswith("unix:"):
        return s[5:]
    if s.startswith("["):
        host, _, port = s[1:].rpartition("]:")
        return (host, int(port), 0, 0)
    host, _, port = s.rpartition(":")
    return (host, int(port))


def _address(host: Optional[str], port: Optional[int],
             listening: bool) -> Union[str, Tuple[str, int]]:
    """An address the core parses.  port None: host is a full address
    ("HOST:PORT", "[V6]:PORT", "unix:PATH").  Names are resolved here (the
    core never resolves: it must not block on DNS)."""
    if port is None:
        if not isinstance(host, str):
            raise TypeError("with port=None, host must be an address string")
        return host
    if host is None or host == "":
        host = "0.0.0.0" if listening else "127.0.0.1"
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError("port must be an int")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return (host, port)
        except OSError:
            pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError("cannot resolve %r" % host)
    return (infos[0][4][0], port)


class Protocol:
    """Base class for protocols: override what you need (asyncio names).

    Callbacks run on the event loop's thread; an exception escaping one is
    reported (EventLoop.set_exception_handler) and aborts its transport.

    Optional: a protocol that defines buffers_received(self, bufs) gets
    the Buffers of consecutive receives (one receive bundle, or every
    receive of one batch) as one list, in order, instead of one
    data_received() call per buffer; transport.writelines(bufs) sends
    them on in one call.  It is looked up when the protocol is set."""

    def connection_made(self, transport: "Transport") -> None:
        """The connection is up (accepted, or connected)."""

    def data_received(self, buf: Buffer) -> None:
        """Bytes arrived, in buf (a read-only Buffer, yours now)."""

    def eof_received(self) -> Optional[bool]:
        """The peer shut its sending side.  Return a true value to keep
        the transport open (half-closed); otherwise it closes itself."""
        return None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        """The connection is gone: exc is None after a clean close, else
        the error (an OSError).  For a client whose connect failed this is
        the only callback (connection_made never ran)."""

    def pause_writing(self) -> None:
        """The transport's write buffer went above its high water mark."""

    def resume_writing(self) -> None:
        """The transport's write buffer drained to its low water mark."""


class Transport:
    """One connection, as the protocol sees it (asyncio's transport API).

    Made by the event loop; ``connection`` is the underlying
    ``uringbuf.Connection``."""

    __slots__ = ("_loop", "_conn", "_protocol", "_server", "_wsend",
                 "_wsendv", "_stash", "_reading", "_paused", "_closing",
                 "_eof_written", "_eof_stashed", "_lost", "_connected",
                 "_high", "_low", "_exc", "_sock", "_piped", "__weakref__")

    def __init__(self, loop: "EventLoop", conn: Connection,
                 protocol: Protocol, server: Optional["Server"] = None,
                 connected: bool = True) -> None:
        self._loop = loop
        self._conn = conn
        self._protocol = protocol
        self._server = server
        self._wsend = conn._wsend
        self._wsendv = conn._wsendv
        # made on first use: an idle connection's transport stays small
        # (an empty deque is ~600 bytes)
        self._stash: Optional[Deque[Buffer]] = None
        self._reading = True
        self._paused = False
        self._closing = False
        self._eof_written = False
        self._eof_stashed = False
        self._lost = False
        self._connected = connected
        self._high = conn.high_water
        self._low = conn.low_water
        self._exc: Optional[BaseException] = None
        self._sock: Optional[socket.socket] = None
        self._piped: Optional["Transport"] = None
        # The core's soft backpressure: a write is never refused; the
        # queue (with what the send pool could not take yet, in the core)
        # keeps the order, and the close/shutdown after it drains.
        conn.set_soft_water(True)
        conn.udata = self
        self._set_fast()

    def __repr__(self) -> str:
        state = ("lost" if self._lost else "closing" if self._closing
                 else "open" if self._connected else "connecting")
        return "<uringbuf.Transport %s %r>" % (state, self._conn)

    # ---- the asyncio transport API ----

    @property
    def connection(self) -> Connection:
        """The underlying uringbuf.Connection."""
        return self._conn

    @property
    def loop(self) -> "EventLoop":
        """The EventLoop this transport runs on."""
        return self._loop

    def get_protocol(self) -> Protocol:
        """The protocol."""
        return self._protocol

    def set_protocol(self, protocol: Protocol) -> None:
        """Switch to another protocol."""
        self._protocol = protocol
        self._set_fast()

    def write(self, data: Union[Buffer, BytesLike]) -> None:
        """Send data.  A Buffer is forwarded without copying and belongs to
        the transport from now on (do not use it again); anything
        bytes-like is copied.  Never drops bytes and never refuses them:
        above the high water mark pause_writing() tells the protocol to
        stop, and what it writes meanwhile waits in the core's queue (see
        get_write_buffer_size()).  Ignored once closing."""
        if self._closing or self._eof_written:
            if self._eof_written:
                raise RuntimeError("cannot write() after write_eof()")
            return
        try:
            # 2 * bytes accepted (all of them), + 1 if now above the mark
            r = self._wsend(data)
        except (BrokenPipeError, ClosedError):
            return  # the connection is going away: CLOSED follows
        except ValueError:
            if type(data) is Buffer and data.valid and len(data) == 0:
                return  # an empty buffer: nothing to send
            raise
        # (a high mark of 0 is 1 in the core: any byte pauses)
        if r > 1 and (r & 1 or not self._high) and not self._paused:
            self._paused = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data: List[Union[Buffer, BytesLike]]) -> None:
        """write() each item in turn: a list or tuple in one call into C
        (Buffers without copying)."""
        if (type(list_of_data) is list or type(list_of_data) is tuple) and \
                not (self._closing or self._eof_written):
            done, partial, above = self._wsendv(list_of_data)
            if done and (above or not self._high) and not self._paused:
                self._paused = True
                self._protocol.pause_writing()
            if done == len(list_of_data):
                return
            # Item done failed: write() it again, which raises the error
            # or ignores it as write() does (partial: the copy had to stop
            # short for want of memory; the rest follows it).
            rest = list(list_of_data[done:])
            if partial:
                rest[0] = memoryview(rest[0]).cast("B")[partial:]
        else:
            rest = list_of_data
        for data in rest:
            self.write(data)

    def write_eof(self) -> None:
        """Shut the sending side once everything written has gone out."""
        if self._closing or self._eof_written:
            return
        self._shutdown()

    def can_write_eof(self) -> bool:
        """True: stream sockets can half-close."""
        return True

    def close(self) -> None:
        """Close gracefully: no more data is received; what was written
        still goes out; then the connection closes and
        connection_lost(None) follows.  A close that cannot finish within
        the connection's close_timeout (default 30 s: a peer that does not
        read what is queued, or keeps sending) becomes an abort:
        connection_lost(TimeoutError)."""
        if self._closing:
            return
        self._closing = True
        self._reading = False
        self._stash = None
        self._conn_close()

    def abort(self) -> None:
        """Close now: queued data is dropped and the connection is reset;
        connection_lost(None) follows."""
        self._closing = True
        self._reading = False
        self._stash = None
        try:
            self._conn.abort()
        except (BrokenPipeError, ClosedError):
            pass

    def is_closing(self) -> bool:
        """True once close() or abort() ran, or the connection was lost."""
        return self._closing or self._lost

    def pause_reading(self) -> None:
        """Stop calling data_received() (data waits in the socket)."""
        if self._closing or not self._reading:
            return
        self._reading = False
        self._set_fast()
        try:
            self._conn.pause_recv()
        except (BrokenPipeError, ClosedError):
            pass

    def resume_reading(self) -> None:
        """Resume data_received() calls."""
        if self._closing or self._reading:
            return
        self._reading = True
        try:
            self._conn.resume_recv()
        except (BrokenPipeError, ClosedError):
            pass
        if self._stash or self._eof_stashed:
            self._loop.call_soon(self._deliver_stash)
        else:
            self._set_fast()

    def is_reading(self) -> bool:
        """True unless reading is paused (or the transport is closing)."""
        return self._reading and not self._closing

    def get_write_buffer_size(self) -> int:
        """Bytes written and not yet sent (all in the core's queue)."""
        if self._lost:
            return 0
        return self._conn.queued_bytes

    def get_write_buffer_limits(self) -> Tuple[int, int]:
        """(low, high) water marks, bytes."""
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: Optional[int] = None,
                                low: Optional[int] = None) -> None:
        """Set the marks at which pause_writing() / resume_writing() are
        called (asyncio's defaults apply when omitted: high 64 KiB, low
        high/4).  They are also the core send queue's marks.  The default,
        before any call, is the connection's (1 MiB / 256 KiB unless
        high_water / low_water were given)."""
        self._high, self._low = high, low = _write_limits(high, low)
        if not self._lost:
            self._conn.set_water(max(high, 1), min(low, max(high, 1)))
        if self._paused:
            if self.get_write_buffer_size() <= self._low:
                self._resume()
            elif not self._lost:
                self._arm_writable()
        else:
            self._check_pause()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """'peername', 'sockname' (socket module form), 'socket' (a
        duplicate of the connection's socket: options set on it apply to
        the connection; do not read from or write to it), 'connection'
        (the uringbuf.Connection), 'mode' (send mode name)."""
        try:
            if name == "peername":
                return _parse_addr(self._conn.peername)
            if name == "sockname":
                return _parse_addr(self._conn.sockname)
            if name == "socket":
                if self._sock is None:
                    self._sock = socket.socket(fileno=os.dup(self._conn.fd))
                return self._sock
            if name == "connection":
                return self._conn
            if name == "mode":
                return _c.ub_mode_name(self._conn.mode)
        except (OSError, ClosedError, ValueError):
            return default
        return default

    def pipe(self, other: Optional["Transport"]) -> None:
        """Forward everything received here to other in the core: zero copy,
        no data_received() calls, receiving paused while other's queue is
        above its high water mark, and EOF here shuts other's sending side
        once drained.  pipe(None) stops.  For a proxy, pipe both ways."""
        if other is not None and not isinstance(other, Transport):
            raise TypeError("pipe() needs a Transport or None")
        if other is None:
            self._piped = None
            self._set_fast()
            try:
                self._conn.pipe(None)
            except (BrokenPipeError, ClosedError):
                pass  # closing anyway: nothing is forwarded any more
            return
        if self._stash:
            # Received before the pipe (while reading was paused): these go
            # first, before the core may shut other after an EOF here.
            stash, self._stash = self._stash, None
            for buf in stash:
                other.write(buf)
        self._conn.pipe(other._conn)
        self._piped = other
        self._set_fast()

    # ---- events, called by the EventLoop ----

    def _on_data(self, buf: Buffer) -> None:
        if self._reading and not self._stash and self._piped is None:
            many = self._buffers_received()
            if many is not None:
                many([buf])
            else:
                self._protocol.data_received(buf)
        elif self._piped is not None:
            # Received before pipe() took effect: forward it, in order
            # (what the core forwards itself is queued after it), unless
            # the other side's sending is shut: nowhere to go, dropped.
            piped = self._piped
            if not piped._eof_written:
                piped.write(buf)
        elif not self._closing:
            # Paused, or resumed with data received meanwhile still to be
            # delivered (_deliver_stash is scheduled): keep the order.
            if self._stash is None:
                self._stash = deque()
            self._stash.append(buf)

    def _deliver_stash(self) -> None:
        many = self._buffers_received()
        while self._stash and self._reading and not self._closing:
            if many is not None:
                bufs = list(self._stash)
                self._stash.clear()
                many(bufs)
            else:
                self._protocol.data_received(self._stash.popleft())
        self._set_fast()
        if self._eof_stashed and not self._stash and self._reading:
            self._eof_stashed = False
            self._on_eof()

    def _buffers_received(self) -> Optional[Callable[[List[Buffer]], Any]]:
        """The protocol's optional buffers_received, or None."""
        return getattr(self._protocol, "buffers_received", None)

    def _set_fast(self) -> None:
        """Have Loop.dispatch() hand received buffers straight to
        data_received() (conn.on_data) exactly when _on_data() would; else
        DATA takes the slow path through _on_data()."""
        fast = many = None
        if (self._reading and not self._stash and self._piped is None and
                not self._lost and self._protocol is not None):
            many = self._buffers_received()
            if many is None:
                fast = self._protocol.data_received
        conn = self._conn
        conn.on_data = fast
        conn.on_buffers = many

    def _on_writable(self) -> None:
        if self._paused:
            if self.get_write_buffer_size() <= self._low:
                self._resume()
            else:
                self._arm_writable()

    def _on_connect(self, res: int) -> None:
        if res < 0:
            self._exc = _oserror(res)
            return
        self._connected = True
        self._protocol.connection_made(self)

    def _on_eof(self) -> None:
        if self._lost or self._closing:
            return
        if self._stash:
            # Data received before the pause comes first (asyncio order).
            self._eof_stashed = True
            return
        if not self._protocol.eof_received() and not self._closing:
            self.close()

    def _on_error(self, res: int) -> None:
        if self._exc is None:
            self._exc = _oserror(res)

    def _on_closed(self, res: int) -> None:
        self._lost = True
        self._closing = True
        self._set_fast()
        self._reading = False
        self._stash = None
        exc = self._exc
        if exc is None and res < 0:
            exc = _oserror(res)
        protocol, self._protocol = self._protocol, None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._piped = None
        if protocol is not None:
            protocol.connection_lost(exc)

    # ---- internals ----

    def _check_pause(self) -> None:
        """New limits put the queue above the mark: pause, and have the
        core say when it drains (no write went above it, so no WRITABLE
        is owed yet)."""
        if self._conn.queued_bytes > self._high:
            self._paused = True
            self._protocol.pause_writing()
            if not self._lost:
                self._arm_writable()

    def _resume(self) -> None:
        self._paused = False
        if not self._lost:
            self._protocol.resume_writing()

    def _arm_writable(self) -> None:
        """Have the core send EV_WRITABLE when its queue drains to the low
        mark, while nothing is refused (ub_conn_want_writable)."""
        try:
            self._conn.want_writable()
        except (BrokenPipeError, ClosedError):
            pass  # no longer sending: CLOSED follows

    def _conn_close(self) -> None:
        try:
            self._conn.close()
        except (BrokenPipeError, ClosedError):
            pass

    def _shutdown(self) -> None:
        self._eof_written = True
        try:
            self._conn.shutdown()
        except (BrokenPipeError, ClosedError):
            pass


class _Handle:
    """A scheduled callback (call_soon / call_later); cancel() drops it."""

    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., Any],
                 args: Tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback."""
        self.cancelled = True

    def __lt__(self, other: "_Handle") -> bool:
        return self.when < other.when


class Server:
    """A listening socket whose accepted connections get a protocol from
    protocol_factory.  From EventLoop.create_server() or serve()."""

    def __init__(self, loop: "EventLoop", listener: Listener,
                 protocol_factory: Callable[[], Protocol],
                 owns_loop: bool = False) -> None:
        self._loop = loop
        self._listener = listener
        self._factory = protocol_factory
        self._owns_loop = owns_loop
        self._closed = False
        listener.udata = self
        self._address = listener.sockname

    @property
    def loop(self) -> "EventLoop":
        """The EventLoop."""
        return self._loop

    @property
    def listener(self) -> Listener:
        """The underlying uringbuf.Listener."""
        return self._listener

    @property
    def address(self) -> str:
        """Where it listens, "HOST:PORT" (the real port if 0 was asked)."""
        return self._address

    @property
    def sockname(self) -> Any:
        """Where it listens, in socket module form ((host, port) for IPv4)."""
        return _parse_addr(self._address)

    @property
    def max_connections(self) -> Optional[int]:
        """Most connections accepted at once, or None (no limit): at the
        limit accepting pauses (clients wait in the kernel's backlog) until
        one of them is lost.  Settable (Listener.max_connections)."""
        return self._listener.max_connections

    @max_connections.setter
    def max_connections(self, n: Optional[int]) -> None:
        self._listener.max_connections = n

    @property
    def connection_count(self) -> int:
        """Connections accepted here and not yet lost (as the core counts
        them; 0 once the server is closed)."""
        try:
            return self._listener.connection_count
        except ClosedError:
            return 0

    def is_serving(self) -> bool:
        """True until close()."""
        return not self._closed

    def close(self) -> None:
        """Stop accepting (open connections stay)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._listener.close()
        except (BrokenPipeError, ClosedError):
            pass

    def serve_forever(self) -> None:
        """Run the event loop until EventLoop.stop() or SIGINT/SIGTERM
        (installed here unless handlers were added with
        add_signal_handler), then stop accepting.  A server made by serve()
        without a loop also closes its loop (aborting what is left)."""
        loop = self._loop
        installed = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if sig not in loop._signals:
                    loop.add_signal_handler(sig, loop.stop)
                    installed.append(sig)
        try:
            loop.run_forever()
        finally:
            self.close()
            for sig in installed:
                loop.remove_signal_handler(sig)
            if self._owns_loop:
                loop.close()

    def _on_accept(self, conn: Connection) -> None:
        if self._closed:
            conn.abort()
            return
        try:
            protocol = self._factory()
        except Exception:
            conn.abort()
            raise
        transport = self._loop._new_transport(conn, protocol, server=self)
        protocol.connection_made(transport)

    def _on_error(self, res: int) -> None:
        self._loop.call_exception_handler({
            "message": "accept failed on %s" % self._address,
            "exception": _oserror(res), "server": self})

    def _on_closed(self, res: int) -> None:
        self._closed = True


class EventLoop:
    """Runs protocols over one uringbuf Loop (one io_uring), in one thread.

    Keyword arguments go to Loop(): entries, pool_count, pool_size (the
    default receive and send pools), pool_incremental (an incremental
    default receive pool, where the kernel has it), disable."""

    def __init__(self, *, entries: int = 0, pool_count: int = 0,
                 pool_size: int = 0, disable: int = 0,
                 pool_incremental: bool = False) -> None:
        self._loop = Loop(entries=entries, disable=disable,
                          pool_count=pool_count, pool_size=pool_size,
                          pool_incremental=pool_incremental)
        self._wait = self._loop.wait
        self._dispatch_c = self._loop.dispatch
        self._ready: Deque[_Handle] = deque()
        self._timers: List[_Handle] = []
        self._stopping = False
        self._running = False
        self._closed = False
        self._signals: Dict[int, Any] = {}
        self._exception_handler: Optional[Callable[..., Any]] = None

    def __repr__(self) -> str:
        return "<uringbuf.EventLoop %s>" % (
            "closed" if self._closed else
            "running" if self._running else "idle")

    @property
    def loop(self) -> Loop:
        """The underlying uringbuf.Loop (pools, features, ...)."""
        return self._loop

    # ---- making connections ----

    def create_server(self, protocol_factory: Callable[[], Protocol],
                      host: Optional[str] = None, port: Optional[int] = 0,
                      *, backlog: int = 0, reuse_port: bool = False,
                      sock: Optional[socket.socket] = None,
                      max_connections: Optional[int] = None,
                      **conn_opts: Any) -> Server:
        """Listen on host:port (port 0: any free port; port None: host is a
        full address such as "127.0.0.1:8000" or "unix:/path"; host None:
        all IPv4 interfaces), or accept on sock (a listening socket, which
        the server takes over), and give every accepted connection a
        protocol from protocol_factory.

        max_connections: accept at most this many at once (None: no
        limit); at the limit accepting pauses until one is lost.
        conn_opts, for every accepted connection, as for Loop.connect():
        mode, high_water, low_water, recv_pool, send_pool, ring_entries,
        flags, recv_budget (bytes; default 256 KiB), and the deadlines in
        seconds (math.inf: never): idle_timeout (default none),
        close_timeout (default 30 s).  A deadline that passes ends the
        connection with connection_lost(TimeoutError)."""
        self._check_open()
        if sock is not None:
            if host is not None or port not in (0, None):
                raise ValueError("host/port and sock are exclusive")
            listener = self._loop.adopt_listener(
                sock, max_connections=max_connections, **conn_opts)
        else:
            listener = self._loop.listen(_address(host, port, True),
                                         backlog=backlog,
                                         reuseport=reuse_port,
                                         max_connections=max_connections,
                                         **conn_opts)
        return self._server_class(self, listener, protocol_factory)

    def create_connection(self, protocol_factory: Callable[[], Protocol],
                          host: Optional[str], port: Optional[int] = None,
                          **conn_opts: Any) -> Tuple[Transport, Protocol]:
        """Connect to host:port (port None: host is a full address).
        Returns (transport, protocol) at once; connection_made() runs once
        connected, or connection_lost(exc) alone if connecting fails
        (TimeoutError once connect_timeout seconds have passed).  Writes
        before then go out once connected.  conn_opts as for
        Loop.connect() (mode, high_water, low_water, recv_pool, send_pool,
        ring_entries, flags, recv_budget, idle_timeout, connect_timeout,
        close_timeout)."""
        self._check_open()
        conn = self._loop.connect(_address(host, port, False), **conn_opts)
        protocol = protocol_factory()
        transport = self._new_transport(conn, protocol, connected=False)
        return transport, protocol

    def create_datagram_endpoint(self, protocol_factory: Callable[[], Any],
                                 local_addr: Optional[Any] = None,
                                 remote_addr: Optional[Any] = None, *,
                                 reuse_port: bool = False,
                                 sock: Optional[socket.socket] = None,
                                 **opts: Any) -> Tuple[Any, Any]:
        """A datagram endpoint (asyncio's loop.create_datagram_endpoint()):
        bound to local_addr, connected to remote_addr, or both; or over
        sock (a datagram socket the endpoint takes over).  Addresses:
        "HOST:PORT", "[V6]:PORT", (host, port) (a name is resolved here,
        blocking), "unix:PATH" or "unix:@NAME".  With remote_addr alone the
        socket is bound to any address of remote_addr's family (Unix: an
        autobound abstract name).  Returns (transport, protocol) with
        connection_made() already run.  opts as for Loop.datagram():
        recv_pool, send_pool, queue_max, high_water, low_water,
        recv_budget, no_recv.  See uringbuf.datagram."""
        from .datagram import DatagramTransport
        self._check_open()
        local = _dgram_addr(local_addr)
        remote = _dgram_addr(remote_addr)
        if sock is not None:
            if local is not None or reuse_port:
                raise ValueError("local_addr/reuse_port and sock are "
                                 "exclusive")
            ep = self._loop.adopt_datagram(sock, **opts)
        elif local is not None:
            ep = self._loop.datagram(local, reuseport=reuse_port, **opts)
        elif remote is not None:
            if isinstance(remote, str) and remote.startswith(("unix:", "/")):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                try:
                    s.bind("")  # autobind: an abstract name to reply to
                    ep = self._loop.adopt_datagram(s, **opts)
                except BaseException:
                    s.close()
                    raise
            else:
                v6 = (remote[0] if isinstance(remote, tuple)
                      else remote).startswith("[") or (
                    isinstance(remote, tuple) and ":" in remote[0])
                ep = self._loop.datagram("[::]:0" if v6 else "0.0.0.0:0",
                                         **opts)
        else:
            raise ValueError("create_datagram_endpoint() needs local_addr, "
                             "remote_addr or sock")
        try:
            if remote is not None:
                ep.connect(remote)
            protocol = protocol_factory()
            transport = DatagramTransport(self, ep, protocol, remote)
        except BaseException:
            ep.close()
            raise
        protocol.connection_made(transport)
        return transport, protocol

    def connect_accepted_socket(self, protocol_factory: Callable[[], Protocol],
                                sock: socket.socket, **conn_opts: Any
                                ) -> Tuple[Transport, Protocol]:
        """Run a protocol over an already connected socket (detached from
        sock: the connection owns it).  conn_opts as for
        create_connection()."""
        self._check_open()
        conn = self._loop.adopt(sock, **conn_opts)
        protocol = protocol_factory()
        transport = self._new_transport(conn, protocol)
        protocol.connection_made(transport)
        return transport, protocol

    # ---- callbacks ----

    def time(self) -> float:
        """The loop's clock (time.monotonic())."""
        return time.monotonic()

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> _Handle:
        """Run callback(*args) after the current batch of events."""
        h = _Handle(0.0, callback, args)
        self._ready.append(h)
        return h

    def call_later(self, delay: float, callback: Callable[..., Any],
                   *args: Any) -> _Handle:
        """Run callback(*args) in delay seconds."""
        h = _Handle(time.monotonic() + delay, callback, args)
        heapq.heappush(self._timers, h)
        return h

    def call_at(self, when: float, callback: Callable[..., Any],
                *args: Any) -> _Handle:
        """Run callback(*args) at loop time when."""
        h = _Handle(when, callback, args)
        heapq.heappush(self._timers, h)
        return h

    def add_signal_handler(self, sig: int, callback: Callable[..., Any],
                           *args: Any) -> None:
        """Run callback(*args) from the loop when signal sig arrives (main
        thread only).  A blocked wait is interrupted."""
        def handler(signum: int, frame: Any) -> None:
            self.call_soon(callback, *args)
        old = signal.signal(sig, handler)
        if sig not in self._signals:
            self._signals[sig] = old

    def remove_signal_handler(self, sig: int) -> bool:
        """Restore the handler sig had before add_signal_handler()."""
        if sig not in self._signals:
            return False
        signal.signal(sig, self._signals.pop(sig))
        return True

    def set_exception_handler(self, handler: Optional[Callable[..., Any]]
                              ) -> None:
        """handler(loop, context) gets exceptions escaping callbacks
        (context: message, exception, and transport/protocol if any).  The
        default prints the traceback on stderr."""
        self._exception_handler = handler

    def call_exception_handler(self, context: Dict[str, Any]) -> None:
        """Report an error (see set_exception_handler())."""
        if self._exception_handler is not None:
            try:
                self._exception_handler(self, context)
                return
            except Exception:
                pass
        exc = context.get("exception")
        print("uringbuf: %s" % context.get("message", "error"),
              file=sys.stderr)
        if exc is not None:
            traceback.print_exception(type(exc), exc, exc.__traceback__,
                                      file=sys.stderr)

    # ---- running ----

    def run_forever(self) -> None:
        """Process events and callbacks until stop()."""
        self._check_open()
        if self._running:
            raise RuntimeError("the loop is already running")
        self._running = True
        self._stopping = False
        try:
            while not self._stopping:
                self._run_once(None)
        finally:
            self._running = False
            self._stopping = False

    def run_until(self, predicate: Callable[[], Any],
                  timeout: Optional[float] = None) -> bool:
        """Process events until predicate() is true (checked after every
        batch), stop() or timeout seconds pass.  Returns predicate()."""
        self._check_open()
        if self._running:
            raise RuntimeError("the loop is already running")
        deadline = None if timeout is None else time.monotonic() + timeout
        self._running = True
        self._stopping = False
        try:
            while not predicate() and not self._stopping:
                left = None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                self._run_once(left)
        finally:
            self._running = False
            self._stopping = False
        return bool(predicate())

    def run_once(self, timeout: Optional[float] = 0) -> None:
        """One batch: wait up to timeout seconds (None: until something
        happens) for events, dispatch them, run due callbacks."""
        self._check_open()
        self._run_once(timeout)

    def stop(self) -> None:
        """Make run_forever() / run_until() return after this batch."""
        self._stopping = True

    def is_running(self) -> bool:
        """True inside run_forever() / run_until()."""
        return self._running

    def is_closed(self) -> bool:
        """True once close() ran."""
        return self._closed

    def close(self, timeout: float = 2.0) -> None:
        """Abort every connection (connection_lost() runs for each, within
        timeout seconds), stop every server and free the Loop.  BufferError
        (nothing closed) while a memoryview of a buffer is still exported."""
        if self._closed:
            return
        if self._running:
            raise RuntimeError("cannot close a running loop")
        if self._loop.exports:
            raise BufferError("cannot close the loop: %d buffer view(s) are "
                              "still exported" % self._loop.exports)
        for conn in self._loop.connections:
            transport = conn.udata
            try:
                if isinstance(transport, Transport):
                    transport.abort()
                else:
                    conn.abort()
            except (BrokenPipeError, ClosedError):
                pass
        _abort_datagrams(self._loop)
        try:
            self.run_until(lambda: not self._loop.connections and
                           not self._loop.datagrams and
                           not self._loop.leftover, timeout)
        finally:
            for sig in list(self._signals):
                self.remove_signal_handler(sig)
            self._ready.clear()
            self._timers.clear()
            self._closed = True
            self._loop.close()

    def __enter__(self) -> "EventLoop":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- internals ----

    # What create_server() makes (uringbuf.asyncio uses its own).
    _server_class = Server

    def _new_transport(self, conn: Connection, protocol: Protocol,
                       server: Optional[Server] = None,
                       connected: bool = True) -> Transport:
        """The transport of a new connection (a hook for subclasses)."""
        return Transport(self, conn, protocol, server, connected)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the event loop is closed")

    def _run_once(self, timeout: Optional[float]) -> None:
        if self._ready or self._stopping or self._loop.leftover:
            ms = 0
        else:
            ms = _MAX_WAIT_MS
            if timeout is not None:
                ms = min(ms, max(0, int(timeout * 1000 + 0.999)))
            if self._timers:
                t = self._timers[0].when - time.monotonic()
                ms = min(ms, max(0, int(t * 1000 + 0.999)))
        # DATA goes straight from C to protocol.data_received (see
        # Transport._set_fast); everything else through _event().
        self._dispatch_c(_BATCH, 1 if ms else 0, ms, self._event,
                         self._report)
        if self._timers:
            now = time.monotonic()
            timers = self._timers
            while timers and timers[0].when <= now:
                self._ready.append(heapq.heappop(timers))
        n = len(self._ready)
        ready = self._ready
        while n > 0 and ready:
            n -= 1
            h = ready.popleft()
            if h.cancelled:
                continue
            try:
                h.callback(*h.args)
            except Exception as exc:
                self.call_exception_handler({
                    "message": "exception in callback %r" % (h.callback,),
                    "exception": exc})

    def _event(self, ev: Any) -> None:
        """One event of a batch (Loop.dispatch's slow path): everything but
        the DATA that goes to data_received() directly."""
        t, res, conn, listener, buf, ud = ev
        if ud is None:
            if t == _EV_ACCEPT:
                server = listener.udata
                if isinstance(server, Server):
                    try:
                        server._on_accept(conn)
                    except Exception as exc:
                        self._report(exc, conn.udata)
                else:
                    conn.abort()  # nobody to hand it to
            return
        try:
            if t == _EV_DATA:
                ud._on_data(buf)
            elif t == _EV_WRITABLE:
                ud._on_writable()
            elif t == _EV_EOF:
                ud._on_eof()
            elif t == _EV_CLOSED:
                ud._on_closed(res)
            elif t == _EV_CONNECT:
                ud._on_connect(res)
            elif t == _EV_ERROR:
                ud._on_error(res)
        except Exception as exc:
            self._report(exc, ud)

    def _report(self, exc: Exception, ud: Any) -> None:
        context: Dict[str, Any] = {"message": "exception in a protocol "
                                   "callback", "exception": exc}
        if isinstance(ud, Transport):
            context["transport"] = ud
            context["protocol"] = ud._protocol
            if not ud._lost:
                ud.abort()
        elif getattr(ud, "_is_datagram", False):
            # One bad datagram does not end the endpoint (as in asyncio).
            context["transport"] = ud
            context["protocol"] = ud._protocol
        self.call_exception_handler(context)


def _abort_datagrams(loop: Loop) -> None:
    """Abort every datagram endpoint of loop (their transports')."""
    for ep in loop.datagrams:
        transport = ep.udata
        try:
            if getattr(transport, "_is_datagram", False):
                transport.abort()
            elif not ep.closing:
                ep.close()
        except (BrokenPipeError, ClosedError):
            pass


def _dgram_addr(addr: Any) -> Any:
    """A datagram address as the core parses it: strings as they are,
    (host, port) with host resolved if it is a name."""
    if addr is None or isinstance(addr, str):
        return addr
    if isinstance(addr, tuple) and len(addr) >= 2:
        return _address(addr[0], addr[1], True)
    raise TypeError("an address is a str \"HOST:PORT\" or a (host, port) "
                    "tuple, not %s" % type(addr).__name__)


_LOOP_OPTS = ("entries", "pool_count", "pool_size", "disable",
              "pool_incremental")


def serve(protocol_factory: Callable[[], Protocol], host: Optional[str] = None,
          port: Optional[int] = 0, *, loop: Optional[EventLoop] = None,
          workers: int = 1, **kwargs: Any) -> Any:
    """Listen on host:port (see EventLoop.create_server()) on loop, or on a
    new EventLoop that Server.serve_forever() closes when it returns.
    kwargs as for EventLoop.create_server(): backlog, reuse_port, sock,
    max_connections, and the connection options (mode, recv_budget,
    idle_timeout, close_timeout, ...); without loop=, also EventLoop()'s
    entries, pool_count, pool_size, pool_incremental and disable.

        srv = uringbuf.serve(Echo, "127.0.0.1", 0, mode="bundle",
                             idle_timeout=300, max_connections=10000)
        print("listening on", srv.address, flush=True)
        srv.serve_forever()      # until SIGINT/SIGTERM

    workers=N (N > 1; 0: one per CPU this process may run on) forks N
    worker processes, each with its own loop and its own SO_REUSEPORT
    listener on host:port, and returns a uringbuf.workers.WorkerGroup
    (address, pids, serve_forever(), close()) instead of a Server; see
    uringbuf.workers.  on_worker_exit(pid, description): called in this
    process when a worker ends on its own (default: a line on stderr).  Not with loop= or sock=; call it before making other
    loops in this process.
    """
    loop_opts = {k: kwargs.pop(k) for k in _LOOP_OPTS if k in kwargs}
    on_worker_exit = kwargs.pop("on_worker_exit", None)
    if loop_opts and loop is not None:
        raise ValueError("%s: options of a new EventLoop, not with loop="
                         % ", ".join(sorted(loop_opts)))
    if workers != 1:
        if workers == 0:
            workers = len(os.sched_getaffinity(0))
        if workers != 1:
            from .workers import start_workers
            if loop is not None:
                raise ValueError("workers > 1 and loop= are exclusive")
            return start_workers(workers, protocol_factory, host, port,
                                 kwargs, loop_opts, on_worker_exit)
    if on_worker_exit is not None:
        raise ValueError("on_worker_exit needs workers > 1")
    owns = loop is None
    if loop is None:
        loop = EventLoop(**loop_opts)
    try:
        server = loop.create_server(protocol_factory, host, port, **kwargs)
    except BaseException:
        if owns:
            loop.close()
        raise
    server._owns_loop = owns
    return server


def create_datagram_endpoint(protocol_factory: Callable[[], Any],
                             local_addr: Optional[Any] = None,
                             remote_addr: Optional[Any] = None, *,
                             loop: EventLoop, **kwargs: Any
                             ) -> Tuple[Any, Any]:
    """A datagram endpoint on loop (see
    EventLoop.create_datagram_endpoint())."""
    return loop.create_datagram_endpoint(protocol_factory, local_addr,
                                         remote_addr, **kwargs)


def connect(protocol_factory: Callable[[], Protocol], host: Optional[str],
            port: Optional[int] = None, *, loop: EventLoop,
            **conn_opts: Any) -> Tuple[Transport, Protocol]:
    """Connect to host:port on loop (see EventLoop.create_connection())."""
    return loop.create_connection(protocol_factory, host, port, **conn_opts)
