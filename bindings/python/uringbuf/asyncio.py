"""uringbuf inside a running asyncio event loop.

The same protocols and transports as ``uringbuf.server``, run by asyncio's
loop instead of ``EventLoop.run_forever()``: uringbuf connections, asyncio
sockets, tasks and timers share one thread and one loop.

    import asyncio, uringbuf, uringbuf.asyncio

    class Echo(uringbuf.Protocol):
        def connection_made(self, transport):
            self.transport = transport
        def data_received(self, buf):          # a uringbuf.Buffer
            self.transport.write(buf)          # zero copy

    async def main():
        server = await uringbuf.asyncio.start_server(Echo, "127.0.0.1", 8000)
        async with server:
            await server.serve_forever()

    uringbuf.asyncio.run(main())

Module functions (all for the running asyncio loop):

* ``start_server(protocol_factory, host, port, ...)`` -> ``Server`` and
  ``create_connection(protocol_factory, host, port, ...)`` ->
  ``(transport, protocol)``: asyncio's ``loop.create_server()`` /
  ``loop.create_connection()`` (``create_server`` is another name for
  ``start_server``).
* ``open_connection(host, port)`` -> ``(reader, writer)`` and
  ``start_stream_server(client_connected_cb, host, port)``: asyncio's
  streams (the standard ``asyncio.StreamReader`` / ``StreamWriter``) over a
  uringbuf connection.  asyncio's own ``asyncio.start_server`` takes a
  client_connected_cb; here that is ``start_stream_server``.
* ``get_loop()``: the ``AsyncioEventLoop`` bridging uringbuf into the
  running asyncio loop (made on first use, one per asyncio loop); it is a
  ``uringbuf.EventLoop``, so its synchronous API (``create_server``,
  ``create_connection``, ``call_soon``...) works too.
* ``shutdown()``: abort what is left and free the ring; ``run(main)``:
  ``asyncio.run(main)`` followed by ``shutdown()``.

What a protocol receives in ``data_received``:

* A ``uringbuf.Protocol`` (subclass) gets the zero-copy ``uringbuf.Buffer``,
  as on the native loop: read it with ``memoryview(buf)``, forward it with
  ``transport.write(buf)``, or drop it (it goes back to its pool).
* Any other protocol (``asyncio.Protocol``, ``asyncio.BufferedProtocol``,
  the stream protocol) gets what asyncio gives it: ``bytes`` (a copy; the
  buffer goes straight back to its pool), or, for a BufferedProtocol, the
  data copied into ``get_buffer()``.  Existing asyncio protocols run
  unchanged; subclass ``uringbuf.Protocol`` to skip the copy.

How it runs: the ring is set up SINGLE_ISSUER|DEFER_TASKRUN, whose
completions stay in the kernel as task work until the owning thread enters
it, and polling the ring's own fd is not woken for them (measured on Linux
6.18: a waiting epoll on ``Loop.fd`` missed every data completion).  So the
core registers an eventfd (``Loop.eventfd()``, io_uring_register_eventfd),
which the kernel signals when completions or task work arrive; asyncio
watches it with ``add_reader``.  Work queued by Python calls (writes,
closes, connects) reaches the kernel only in ``Loop.wait()``, so every
transport call also schedules one coalesced ``wait(min=0, timeout=0)``
through ``call_soon``; nothing ever blocks the asyncio loop.
"""
# This module is uringbuf.asyncio: "import asyncio" below is the standard
# library's (absolute imports), never this module.
import asyncio
import os
import socket
import time
from typing import (Any, Callable, Dict, List, Optional, Set, Tuple,
                    Union)

from . import core as _c
from . import server as _server
from .core import Buffer, ClosedError, Connection, Listener
from .server import (Protocol, Transport, _address, _BATCH,  # noqa: F401
                     _oserror)

__all__ = ["AsyncioEventLoop", "AsyncioTransport", "Server", "get_loop",
           "start_server", "create_server", "create_connection",
           "open_connection", "start_stream_server", "shutdown", "run",
           "create_datagram_endpoint"]

# Batches one pump may dispatch before it yields to other asyncio work.
_ROUNDS = 8


# ---- protocols that want bytes -------------------------------------------

class _BytesProtocol:
    """Hands an asyncio.Protocol bytes instead of Buffers (one copy; the
    buffer returns to its pool at once)."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol

    def connection_made(self, transport: Any) -> None:
        self.protocol.connection_made(transport)

    def data_received(self, buf: Buffer) -> None:
        data = buf.tobytes()
        buf.release()
        self.protocol.data_received(data)

    def eof_received(self) -> Optional[bool]:
        return self.protocol.eof_received()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()


class _BufferedProtocol(_BytesProtocol):
    """Copies received data into an asyncio.BufferedProtocol's
    get_buffer() / buffer_updated()."""

    __slots__ = ()

    def data_received(self, buf: Buffer) -> None:
        p = self.protocol
        with memoryview(buf) as src:
            n = len(src)
            off = 0
            while off < n:
                dst = memoryview(p.get_buffer(n - off)).cast("B")
                k = min(len(dst), n - off)
                if not k:
                    raise RuntimeError("get_buffer() returned an empty "
                                       "buffer")
                dst[:k] = src[off:off + k]
                dst.release()
                off += k
                p.buffer_updated(k)
        buf.release()


def _wrap(protocol: Any) -> Any:
    """protocol as the transport calls it: uringbuf Protocols as they are,
    others behind an adapter that hands them bytes."""
    if isinstance(protocol, Protocol):
        return protocol
    if isinstance(protocol, asyncio.BufferedProtocol):
        return _BufferedProtocol(protocol)
    return _BytesProtocol(protocol)


def _unwrap(protocol: Any) -> Any:
    if isinstance(protocol, _BytesProtocol):
        return protocol.protocol
    return protocol


class _Connecting(Protocol):
    """Stands in for the protocol until create_connection() has connected
    (asyncio makes the protocol only once the connection is up)."""

    def __init__(self, waiter: "asyncio.Future[None]") -> None:
        self.waiter = waiter

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionAbortedError(
                "the connection closed while connecting"))


# ---- transports ----------------------------------------------------------

class AsyncioTransport(Transport):
    """A uringbuf Transport on an AsyncioEventLoop: the asyncio transport
    API (write, writelines, write_eof, close, abort, pause_reading,
    resume_reading, set_write_buffer_limits, get_write_buffer_size,
    get_extra_info...; see uringbuf.Transport).  Every call that queues work
    for the kernel also schedules the wait() that submits it."""

    __slots__ = ("_factory",)

    def __init__(self, loop: "AsyncioEventLoop", conn: Connection,
                 protocol: Any, server: Optional["Server"] = None,
                 connected: bool = True) -> None:
        super().__init__(loop, conn, protocol, server, connected)
        self._factory: Optional[Callable[[], Any]] = None

    def __repr__(self) -> str:
        return "<uringbuf.asyncio." + super().__repr__()[10:]

    def get_protocol(self) -> Any:
        """The protocol (as given, not the bytes adapter)."""
        return _unwrap(self._protocol)

    def set_protocol(self, protocol: Any) -> None:
        """Switch to another protocol (asyncio's or uringbuf's)."""
        self._protocol = _wrap(protocol)
        self._set_fast()

    def write(self, data: Union[Buffer, bytes, bytearray, memoryview]
              ) -> None:
        """Send data: a Buffer without copying (it belongs to the transport
        from now on), anything bytes-like copied.  Never drops bytes: see
        uringbuf.Transport.write()."""
        Transport.write(self, data)
        loop = self._loop
        if not loop._kicked:
            loop._kick()

    def writelines(self, list_of_data: List[Any]) -> None:
        """write() each item in turn (see uringbuf.Transport.writelines())."""
        Transport.writelines(self, list_of_data)
        self._loop._kick()

    def write_eof(self) -> None:
        """Shut the sending side once everything written has gone out."""
        Transport.write_eof(self)
        self._loop._kick()

    def close(self) -> None:
        """Close gracefully (what was written still goes out);
        connection_lost(None) follows."""
        Transport.close(self)
        self._loop._kick()

    def abort(self) -> None:
        """Close now, dropping what is queued; connection_lost() follows."""
        Transport.abort(self)
        self._loop._kick()

    def pause_reading(self) -> None:
        """Stop calling data_received() (data waits in the socket)."""
        Transport.pause_reading(self)
        self._loop._kick()

    def resume_reading(self) -> None:
        """Resume data_received() calls."""
        Transport.resume_reading(self)
        self._loop._kick()

    def set_write_buffer_limits(self, high: Optional[int] = None,
                                low: Optional[int] = None) -> None:
        """Set the pause_writing() / resume_writing() marks (asyncio's
        defaults when omitted: high 64 KiB, low high/4); they are also the
        core send queue's marks."""
        Transport.set_write_buffer_limits(self, high, low)
        self._loop._kick()

    def pipe(self, other: Optional[Transport]) -> None:
        """Forward everything received here to other in the core (see
        uringbuf.Transport.pipe())."""
        Transport.pipe(self, other)
        self._loop._kick()

    # ---- events ----

    def _on_connect(self, res: int) -> None:
        factory = self._factory
        if factory is None:  # EventLoop.create_connection(): as natively
            Transport._on_connect(self, res)
            return
        self._factory = None
        waiter = self._protocol.waiter
        if res < 0:
            self._exc = _oserror(res)
            if not waiter.done():
                waiter.set_exception(self._exc)
            return  # CLOSED follows
        if waiter.done():  # cancelled while connecting
            self.abort()
            return
        try:
            protocol = factory()
        except BaseException as exc:
            self.abort()
            waiter.set_exception(exc)
            return
        self._connected = True
        self._protocol = _wrap(protocol)
        self._set_fast()
        waiter.set_result(None)
        self._protocol.connection_made(self)

    def _on_closed(self, res: int) -> None:
        try:
            Transport._on_closed(self, res)
        finally:
            server = self._server
            if isinstance(server, Server):
                server._detach(self)


# ---- servers -------------------------------------------------------------

class Server(_server.Server):
    """A listening socket, asyncio's Server API: close(), wait_closed(),
    sockets, is_serving(), serve_forever(), get_loop(), close_clients(),
    abort_clients(), ``async with``; plus address / sockname / listener
    (uringbuf's).  From start_server()."""

    def __init__(self, loop: "AsyncioEventLoop", listener: Listener,
                 protocol_factory: Callable[[], Any],
                 owns_loop: bool = False) -> None:
        super().__init__(loop, listener, protocol_factory, owns_loop)
        self._transports: Set[AsyncioTransport] = set()
        self._listener_gone = False
        self._waiters: List["asyncio.Future[None]"] = []
        self._sockets: Optional[Tuple[socket.socket, ...]] = None
        self._serving_forever: Optional["asyncio.Future[None]"] = None

    def __repr__(self) -> str:
        return "<uringbuf.asyncio.Server %s %s>" % (
            self._address, "serving" if self.is_serving() else "closed")

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio event loop."""
        return self._loop._aloop

    @property
    def sockets(self) -> Tuple[socket.socket, ...]:
        """The listening socket (a duplicate: read options from it, do not
        accept on it), or () once closed."""
        if self._closed:
            return ()
        if self._sockets is None:
            self._sockets = (socket.socket(fileno=os.dup(self._listener.fd)),)
        return self._sockets

    def close(self) -> None:
        """Stop accepting; open connections stay (see close_clients())."""
        if self._sockets is not None:
            for s in self._sockets:
                s.close()
            self._sockets = None
        if not self._closed:
            super().close()
            self._loop._kick()
        fut = self._serving_forever
        if fut is not None and not fut.done():
            fut.cancel()

    def close_clients(self) -> None:
        """Close every connection this server accepted (gracefully)."""
        for t in list(self._transports):
            t.close()

    def abort_clients(self) -> None:
        """Abort every connection this server accepted."""
        for t in list(self._transports):
            t.abort()

    async def start_serving(self) -> None:
        """Nothing to do: a uringbuf server accepts from the start."""

    async def wait_closed(self) -> None:
        """Wait until close() has completed (the listener is gone) and
        every connection it accepted is lost (as asyncio since 3.12)."""
        while not (self._listener_gone and not self._transports):
            fut = self._loop._aloop.create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)

    async def serve_forever(self) -> None:
        """Accept until cancelled (or close()); then close the server and
        wait for the listener to go (not for its connections)."""
        if self._serving_forever is not None:
            raise RuntimeError("serve_forever() is already running")
        if self._closed:
            raise RuntimeError("the server is closed")
        fut = self._serving_forever = self._loop._aloop.create_future()
        try:
            await fut
        finally:
            self._serving_forever = None
            self.close()
            while not self._listener_gone:
                w = self._loop._aloop.create_future()
                self._waiters.append(w)
                try:
                    await w
                finally:
                    if w in self._waiters:
                        self._waiters.remove(w)

    async def __aenter__(self) -> "Server":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()

    # ---- events ----

    def _on_closed(self, res: int) -> None:
        super()._on_closed(res)
        self._listener_gone = True
        self._wake()

    def _detach(self, transport: AsyncioTransport) -> None:
        self._transports.discard(transport)
        if not self._transports:
            self._wake()

    def _wake(self) -> None:
        for w in self._waiters:
            if not w.done():
                w.set_result(None)


# ---- the bridge ----------------------------------------------------------

class AsyncioEventLoop(_server.EventLoop):
    """A uringbuf EventLoop driven by a running asyncio loop (one ring per
    asyncio loop, in its thread): get one with get_loop().

    Its completions wake asyncio through the ring's eventfd
    (Loop.eventfd(), watched with add_reader); callbacks (call_soon,
    call_later, signal handlers) are asyncio's; exceptions escaping
    protocol callbacks go to asyncio's exception handler unless
    set_exception_handler() gave another.  run_forever() and friends are
    not available: asyncio runs it.  Keyword arguments as for
    uringbuf.EventLoop: entries, pool_count, pool_size, pool_incremental,
    disable."""

    _server_class = Server

    def __init__(self, aloop: Optional[asyncio.AbstractEventLoop] = None,
                 **loop_opts: Any) -> None:
        if aloop is None:
            aloop = asyncio.get_running_loop()
        if not hasattr(_c.Loop, "eventfd"):
            raise RuntimeError("this uringbuf core has no Loop.eventfd() "
                               "(ub_loop_eventfd), which uringbuf.asyncio "
                               "needs")
        super().__init__(**loop_opts)
        self._aloop = aloop
        self._kicked = False
        self._pumping = False
        self._efd = -1
        self._opts = loop_opts
        try:
            self._efd = self._loop.eventfd()
            aloop.add_reader(self._efd, self._pump)
        except BaseException:
            self._efd = -1
            self._loop.close()
            self._closed = True
            raise

    def __repr__(self) -> str:
        return "<uringbuf.asyncio.AsyncioEventLoop %s>" % (
            "closed" if self._closed else "open")

    @property
    def asyncio_loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop that drives this one."""
        return self._aloop

    # ---- making connections (the synchronous API, then a submit) ----

    def create_server(self, protocol_factory: Callable[[], Any],
                      host: Optional[str] = None, port: Optional[int] = 0,
                      **kwargs: Any) -> Server:
        """As EventLoop.create_server() (names are resolved blocking: the
        module's start_server() resolves them without blocking)."""
        server = super().create_server(protocol_factory, host, port,
                                       **kwargs)
        self._kick()
        return server  # type: ignore[return-value]

    def create_connection(self, protocol_factory: Callable[[], Any],
                          host: Optional[str], port: Optional[int] = None,
                          **conn_opts: Any) -> Tuple[Transport, Any]:
        """As EventLoop.create_connection(): returns at once,
        connection_made() follows (or connection_lost(exc) alone).  For
        asyncio's await-until-connected behaviour use the module's
        create_connection()."""
        transport, protocol = super().create_connection(
            protocol_factory, host, port, **conn_opts)
        self._kick()
        return transport, protocol

    def connect_accepted_socket(self, protocol_factory: Callable[[], Any],
                                sock: socket.socket, **conn_opts: Any
                                ) -> Tuple[Transport, Any]:
        """Run a protocol over a connected socket (which the connection
        takes over)."""
        r = super().connect_accepted_socket(protocol_factory, sock,
                                            **conn_opts)
        self._kick()
        return r

    async def connect(self, protocol_factory: Callable[[], Any],
                      host: Optional[str], port: Optional[int] = None,
                      **conn_opts: Any) -> Tuple[AsyncioTransport, Any]:
        """Connect and wait until connected: (transport, protocol), the
        protocol made (and its connection_made() run) only then.  Raises
        the connect error (ConnectionRefusedError...); cancelling aborts
        the attempt."""
        self._check_open()
        conn = self._loop.connect(_address(host, port, False), **conn_opts)
        waiter = self._aloop.create_future()
        transport = AsyncioTransport(self, conn, _Connecting(waiter),
                                     connected=False)
        transport._factory = protocol_factory
        self._kick()
        try:
            await waiter
        except BaseException:
            if not transport._lost:
                transport.abort()
            raise
        return transport, transport.get_protocol()

    # ---- callbacks: asyncio's ----

    def time(self) -> float:
        """The asyncio loop's clock."""
        return self._aloop.time()

    def call_soon(self, callback: Callable[..., Any], *args: Any
                  ) -> asyncio.Handle:
        """asyncio's call_soon()."""
        return self._aloop.call_soon(callback, *args)

    def call_later(self, delay: float, callback: Callable[..., Any],
                   *args: Any) -> asyncio.TimerHandle:
        """asyncio's call_later()."""
        return self._aloop.call_later(delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., Any],
                *args: Any) -> asyncio.TimerHandle:
        """asyncio's call_at() (when: on the asyncio loop's clock)."""
        return self._aloop.call_at(when, callback, *args)

    def add_signal_handler(self, sig: int, callback: Callable[..., Any],
                           *args: Any) -> None:
        """asyncio's add_signal_handler()."""
        self._aloop.add_signal_handler(sig, callback, *args)

    def remove_signal_handler(self, sig: int) -> bool:
        """asyncio's remove_signal_handler()."""
        return self._aloop.remove_signal_handler(sig)

    def call_exception_handler(self, context: Dict[str, Any]) -> None:
        """Report an error: to the handler given to set_exception_handler(),
        else to the asyncio loop's."""
        if self._exception_handler is not None:
            try:
                self._exception_handler(self, context)
                return
            except Exception:
                pass
        self._aloop.call_exception_handler(context)

    # ---- running: asyncio's job ----

    def run_forever(self) -> None:
        """Not available: the asyncio loop runs this one."""
        raise RuntimeError("an AsyncioEventLoop is run by its asyncio loop")

    def run_until(self, predicate: Callable[[], Any],
                  timeout: Optional[float] = None) -> bool:
        """Not available: the asyncio loop runs this one."""
        raise RuntimeError("an AsyncioEventLoop is run by its asyncio loop")

    def run_once(self, timeout: Optional[float] = 0) -> None:
        """Process what is ready now, without blocking."""
        self._check_open()
        self._pump()

    def stop(self) -> None:
        """Not available: stop the asyncio loop instead."""
        raise RuntimeError("an AsyncioEventLoop is run by its asyncio loop")

    def is_running(self) -> bool:
        """True while its asyncio loop runs."""
        return not self._closed and self._aloop.is_running()

    async def aclose(self, timeout: float = 2.0) -> None:
        """Abort every connection (connection_lost() runs for each, within
        timeout seconds), close every server and free the ring.
        BufferError (nothing closed) while a buffer view is exported."""
        if self._closed:
            return
        if self._loop.exports:
            raise BufferError("cannot close the loop: %d buffer view(s) are "
                              "still exported" % self._loop.exports)
        self._abort_all()
        deadline = time.monotonic() + timeout
        while ((self._loop.connections or self._loop.datagrams or
                self._loop.leftover) and time.monotonic() < deadline):
            await asyncio.sleep(0.001)
        self._finish()

    def close(self, timeout: float = 2.0) -> None:
        """Synchronous aclose(): blocks the thread (up to timeout seconds)
        while the kernel gives the connections back.  Prefer
        ``await aclose()`` (or the module's shutdown()) inside asyncio."""
        if self._closed:
            return
        if self._loop.exports:
            raise BufferError("cannot close the loop: %d buffer view(s) are "
                              "still exported" % self._loop.exports)
        self._abort_all()
        deadline = time.monotonic() + timeout
        while ((self._loop.connections or self._loop.datagrams or
                self._loop.leftover) and time.monotonic() < deadline):
            self._dispatch_c(_BATCH, 1, 20, self._event, self._report)
        self._finish()

    # ---- internals ----

    def _new_transport(self, conn: Connection, protocol: Any,
                       server: Optional[_server.Server] = None,
                       connected: bool = True) -> AsyncioTransport:
        t = AsyncioTransport(self, conn, _wrap(protocol), server, connected)
        if isinstance(server, Server):
            server._transports.add(t)
        return t

    def _kick(self) -> None:
        """Have the next asyncio iteration submit what was queued (one
        coalesced call_soon; inside _pump() its own next round does)."""
        if not self._kicked:
            self._kicked = True
            if not self._pumping and not self._closed:
                self._aloop.call_soon(self._pump)

    def _pump(self) -> None:
        """Submit queued work and dispatch what completed (the eventfd's
        reader, and the coalesced call_soon after transport calls)."""
        if self._closed or self._pumping:
            return
        self._pumping = True
        done = False
        try:
            for _ in range(_ROUNDS):
                self._kicked = False
                # Clears the eventfd first; sets it again if work is left.
                # (Events an interrupted round left come first, unwaited.)
                if not self._dispatch_c(_BATCH, 0, 0, self._event,
                                        self._report):
                    done = True  # everything queued is submitted
                    break
        finally:
            self._pumping = False
            if not done and not self._closed:
                # Still busy (or a callback raised through): let other
                # asyncio work run, then submit and go on.
                self._kicked = True
                self._aloop.call_soon(self._pump)

    def _abort_all(self) -> None:
        for conn in self._loop.connections:
            transport = conn.udata
            try:
                if isinstance(transport, Transport):
                    Transport.abort(transport)
                else:
                    conn.abort()
            except (BrokenPipeError, ClosedError):
                pass
        _server._abort_datagrams(self._loop)
        if not self._aloop.is_closed():
            self._kick()

    def _finish(self) -> None:
        self._closed = True
        if self._efd >= 0:
            if not self._aloop.is_closed():
                self._aloop.remove_reader(self._efd)
            self._efd = -1
        _bridges.pop(id(self._aloop), None)
        self._loop.close()  # frees the ring, closes the eventfd


# One bridge per asyncio loop, by id(loop) (checked against the loop itself:
# ids are reused once a loop is gone).
_bridges: Dict[int, AsyncioEventLoop] = {}


def get_loop(**loop_opts: Any) -> AsyncioEventLoop:
    """The AsyncioEventLoop of the running asyncio loop, made on first use
    with loop_opts (entries, pool_count, pool_size, pool_incremental,
    disable; see uringbuf.Loop).  RuntimeError outside a running asyncio loop, or if
    loop_opts differ from those it was made with."""
    aloop = asyncio.get_running_loop()
    for key, b in list(_bridges.items()):
        if b._aloop.is_closed():  # its asyncio loop ended without shutdown()
            del _bridges[key]
            b.close()
    bridge = _bridges.get(id(aloop))
    if bridge is not None and bridge._aloop is aloop and not bridge._closed:
        if loop_opts and loop_opts != bridge._opts:
            raise RuntimeError("this asyncio loop's uringbuf loop exists "
                               "already, with options %r" % (bridge._opts,))
        return bridge
    bridge = AsyncioEventLoop(aloop, **loop_opts)
    _bridges[id(aloop)] = bridge
    return bridge


async def _resolve(host: Optional[str], port: Optional[int]
                   ) -> Optional[str]:
    """host as a numeric address, resolved without blocking the loop."""
    if port is None or not host or host.startswith("unix:"):
        return host
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return host
        except OSError:
            pass
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError("cannot resolve %r" % host)
    return infos[0][4][0]


async def start_server(protocol_factory: Callable[[], Any],
                       host: Optional[str] = None, port: Optional[int] = 0,
                       *, backlog: int = 0, reuse_port: bool = False,
                       sock: Optional[socket.socket] = None,
                       max_connections: Optional[int] = None,
                       **conn_opts: Any) -> Server:
    """Listen on host:port and give every accepted connection a protocol
    from protocol_factory (asyncio's loop.create_server()).

    host None: all IPv4 interfaces; port 0: any free port (see
    Server.sockets / Server.address); port None: host is a full address
    ("127.0.0.1:8000", "[::1]:8000", "unix:/path").  sock: a listening
    socket to accept on instead (the server takes it over).
    max_connections: accept at most this many at once (None: no limit;
    accepting pauses at the limit).  conn_opts as for
    uringbuf.Loop.connect(): mode, high_water, low_water, recv_pool,
    send_pool, ring_entries, flags, recv_budget (bytes), idle_timeout and
    close_timeout (seconds; math.inf: never); a deadline that passes ends
    the connection with connection_lost(TimeoutError).  The protocol is a
    uringbuf.Protocol (data_received gets Buffers) or any asyncio protocol
    (bytes)."""
    loop = get_loop()
    host = await _resolve(host, port)
    return loop.create_server(protocol_factory, host, port, backlog=backlog,
                              reuse_port=reuse_port, sock=sock,
                              max_connections=max_connections, **conn_opts)


create_server = start_server


async def create_connection(protocol_factory: Callable[[], Any],
                            host: Optional[str], port: Optional[int] = None,
                            **conn_opts: Any) -> Tuple[AsyncioTransport, Any]:
    """Connect to host:port (port None: host is a full address) and return
    (transport, protocol) once connected, as asyncio's
    loop.create_connection(): the protocol is made then and its
    connection_made() has run.  Raises what connecting raised
    (ConnectionRefusedError..., TimeoutError once connect_timeout seconds
    have passed).  conn_opts as for start_server(), plus connect_timeout
    (seconds; asyncio.wait_for() works too: cancelling aborts the
    attempt)."""
    loop = get_loop()
    host = await _resolve(host, port)
    return await loop.connect(protocol_factory, host, port, **conn_opts)


async def open_connection(host: Optional[str], port: Optional[int] = None,
                          *, limit: int = 2 ** 16, **conn_opts: Any
                          ) -> Tuple[asyncio.StreamReader,
                                     asyncio.StreamWriter]:
    """asyncio.open_connection() over a uringbuf connection: (reader,
    writer), the standard asyncio.StreamReader / StreamWriter (read,
    readexactly, readline, write, drain, close, wait_closed...).
    conn_opts as for create_connection() (recv_budget, idle_timeout,
    connect_timeout, close_timeout, mode, ...)."""
    aloop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=aloop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=aloop)
    transport, _ = await create_connection(lambda: protocol, host, port,
                                           **conn_opts)
    writer = asyncio.StreamWriter(transport, protocol, reader, aloop)
    return reader, writer


async def start_stream_server(client_connected_cb: Callable[..., Any],
                              host: Optional[str] = None,
                              port: Optional[int] = 0, *,
                              limit: int = 2 ** 16, **kwargs: Any) -> Server:
    """asyncio.start_server() over uringbuf: client_connected_cb(reader,
    writer) for every accepted connection (a coroutine function becomes a
    task).  Other arguments as for start_server()."""
    aloop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=aloop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb,
                                            loop=aloop)

    return await start_server(factory, host, port, **kwargs)


class _BytesDatagramProtocol:
    """Hands an asyncio.DatagramProtocol bytes and (host, port) addresses
    instead of Buffers and "HOST:PORT" (one copy; the buffer returns to
    its pool at once)."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol

    def connection_made(self, transport: Any) -> None:
        self.protocol.connection_made(transport)

    def datagram_received(self, buf: Buffer, addr: Optional[str]) -> None:
        data = buf.tobytes()
        buf.release()
        self.protocol.datagram_received(
            data, None if addr is None else _server._parse_addr(addr))

    def error_received(self, exc: OSError) -> None:
        self.protocol.error_received(exc)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        f = getattr(self.protocol, "pause_writing", None)
        if f is not None:
            f()

    def resume_writing(self) -> None:
        f = getattr(self.protocol, "resume_writing", None)
        if f is not None:
            f()


async def _resolve_dgram(addr: Any) -> Any:
    """A (host, port) datagram address with host resolved without
    blocking; strings as they are."""
    if isinstance(addr, tuple) and len(addr) >= 2 and \
            isinstance(addr[0], str):
        return (await _resolve(addr[0], addr[1]), addr[1])
    return addr


async def create_datagram_endpoint(protocol_factory: Callable[[], Any],
                                   local_addr: Optional[Any] = None,
                                   remote_addr: Optional[Any] = None,
                                   **kwargs: Any) -> Tuple[Any, Any]:
    """asyncio's loop.create_datagram_endpoint() over a uringbuf Datagram:
    (transport, protocol), connection_made() already run.  local_addr,
    remote_addr: "HOST:PORT", "[V6]:PORT", (host, port) (names resolved
    without blocking), "unix:PATH", "unix:@NAME"; sock=, reuse_port= and
    the options of uringbuf.Loop.datagram() (recv_pool, send_pool,
    queue_max, high_water, low_water, recv_budget).  A
    uringbuf.DatagramProtocol gets zero-copy Buffers and "HOST:PORT"
    addresses; any other (asyncio.DatagramProtocol) gets bytes and
    (host, port) tuples.  sendto() is bounded: see
    uringbuf.DatagramTransport."""
    from .datagram import DatagramProtocol
    loop = get_loop()
    local_addr = await _resolve_dgram(local_addr)
    remote_addr = await _resolve_dgram(remote_addr)
    made: List[Any] = []

    def factory() -> Any:
        p = protocol_factory()
        made.append(p)
        return p if isinstance(p, DatagramProtocol) else \
            _BytesDatagramProtocol(p)

    transport, _ = loop.create_datagram_endpoint(factory, local_addr,
                                                 remote_addr, **kwargs)
    loop._kick()
    return transport, made[0]


async def shutdown(timeout: float = 2.0) -> None:
    """Abort the running asyncio loop's uringbuf connections and free its
    ring (AsyncioEventLoop.aclose()); a no-op if it has none.  Call it
    before the asyncio loop ends (run() does)."""
    aloop = asyncio.get_running_loop()
    bridge = _bridges.get(id(aloop))
    if bridge is not None and bridge._aloop is aloop:
        await bridge.aclose(timeout)


def run(main: Any, *, debug: Optional[bool] = None,
        **loop_opts: Any) -> Any:
    """asyncio.run(main), with a uringbuf loop (loop_opts as for
    get_loop()) that is shut down when main returns or raises."""
    async def runner() -> Any:
        get_loop(**loop_opts)
        try:
            return await main
        finally:
            await shutdown()

    return asyncio.run(runner(), debug=debug)
