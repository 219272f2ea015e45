"""Datagram endpoints in asyncio's idiom, over ``uringbuf.Datagram``.

A ``DatagramProtocol`` gets ``connection_made(transport)``,
``datagram_received(buf, addr)``, ``error_received(exc)``,
``connection_lost(exc)``, ``pause_writing()`` and ``resume_writing()``, as
in asyncio, with two differences:

* ``datagram_received`` gets a ``uringbuf.Buffer``, not bytes: a read-only
  view of the receive pool's memory (``memoryview(buf)``, ``bytes(buf)``),
  and ``addr`` in the binding's address form, ``"HOST:PORT"`` /
  ``"[V6]:PORT"`` / ``"unix:PATH"`` / ``"unix:@NAME"`` (or None for an
  unbound Unix sender).  ``transport.sendto(buf, addr)`` echoes it without
  a copy.  ``buf.truncated`` says whether it was cut to fit a buffer.
* ``sendto`` never drops a datagram silently.  Asyncio's transport buffers
  without limit; this one is bounded (see ``DatagramTransport``).

Make endpoints with ``EventLoop.create_datagram_endpoint()`` (or
``uringbuf.create_datagram_endpoint(..., loop=loop)``), or inside a running
asyncio loop with ``uringbuf.asyncio.create_datagram_endpoint()``.
"""
import os
import socket
from typing import Any, Optional, Tuple, Union

from .core import Buffer, ClosedError, Datagram
from .server import _write_limits

__all__ = ["DatagramProtocol", "DatagramTransport"]

BytesLike = Union[bytes, bytearray, memoryview]
Address = Union[str, Tuple[str, int]]


def _oserror(res: int) -> OSError:
    return OSError(-res, os.strerror(-res))


def _parse_addr(s: str) -> Any:
    from .server import _parse_addr as parse
    return parse(s)


class DatagramProtocol:
    """Base class for datagram protocols (asyncio.DatagramProtocol's
    methods; every one is optional)."""

    def connection_made(self, transport: "DatagramTransport") -> None:
        """The endpoint is ready."""

    def datagram_received(self, buf: Buffer, addr: Optional[str]) -> None:
        """One datagram: buf (a uringbuf.Buffer, yours; dropping it gives
        it back to its pool) from addr ("HOST:PORT" form, or None)."""

    def error_received(self, exc: OSError) -> None:
        """A send failed or the kernel reported an error for the socket (an
        ICMP port unreachable: ConnectionRefusedError); the endpoint stays
        open."""

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        """The endpoint is closed (exc None after close() or abort())."""

    def pause_writing(self) -> None:
        """The datagrams waiting to go out passed the high water mark."""

    def resume_writing(self) -> None:
        """They fell back to the low water mark."""


class DatagramTransport:
    """One datagram endpoint, as the protocol sees it (asyncio's
    DatagramTransport API: sendto, close, abort, is_closing,
    get_extra_info, get_write_buffer_size, get_write_buffer_limits,
    set_write_buffer_limits, get_protocol, set_protocol).  Made by the
    event loop; ``datagram`` is the underlying ``uringbuf.Datagram``.

    Backpressure (bounded, never silent): the endpoint has the core's soft
    water (Datagram.set_soft_water): every datagram is taken, and what has
    no send slot or send buffer yet waits in the core, in order (no
    backlog here).  pause_writing() is called once the bytes waiting exceed
    the transport's high water mark, resume_writing() once they are back at
    the low one.  Up to twice the high water mark waits (always one
    datagram past the mark): a sendto() beyond that raises BlockingIOError,
    and nothing is queued.  A protocol that stops sending on
    pause_writing() never sees it."""

    __slots__ = ("_loop", "_ep", "_protocol", "_address", "_paused",
                 "_closing", "_lost", "_high", "_low", "_sock", "_kick",
                 "__weakref__")

    _is_datagram = True

    def __init__(self, loop: Any, ep: Datagram, protocol: Any,
                 address: Optional[Address] = None) -> None:
        self._loop = loop
        self._ep = ep
        self._protocol = protocol
        self._address = address
        self._paused = False
        self._closing = False
        self._lost = False
        self._high = ep.high_water
        self._low = ep.low_water
        self._sock: Optional[socket.socket] = None
        # uringbuf.asyncio's loop submits queued work on the next round
        self._kick = getattr(loop, "_kick", None)
        ep.udata = self
        ep.set_soft_water(True)  # the core keeps what waits, in order
        self._set_fast()

    def __repr__(self) -> str:
        state = ("lost" if self._lost else "closing" if self._closing
                 else "open")
        return "<uringbuf.DatagramTransport %s %r>" % (state, self._ep)

    @property
    def datagram(self) -> Datagram:
        """The underlying uringbuf.Datagram."""
        return self._ep

    @property
    def loop(self) -> Any:
        """The event loop running this transport."""
        return self._loop

    def get_protocol(self) -> Any:
        """The protocol."""
        return self._protocol

    def set_protocol(self, protocol: Any) -> None:
        """Switch to another protocol."""
        self._protocol = protocol
        self._set_fast()

    # ---- the asyncio datagram transport API ----

    def sendto(self, data: Union[Buffer, BytesLike],
               addr: Optional[Address] = None) -> None:
        """Send one datagram to addr ("HOST:PORT", (host, port),
        "unix:PATH"; None: the remote_addr the endpoint was made with).
        A Buffer goes without copying and belongs to the transport from
        now on; anything bytes-like is copied.  Raises at once, nothing
        queued: BrokenPipeError once closing, BlockingIOError when twice
        the high water mark waits already (see the class), OSError
        EMSGSIZE for a datagram too big for UDP or for a send buffer,
        OSError EDESTADDRREQ without an address on an unconnected
        endpoint, TypeError / ValueError for bad arguments."""
        if self._closing:
            raise BrokenPipeError(32, "the datagram transport is closing")
        ep = self._ep
        # Not paused, the queue is at most the mark (it only shrank since
        # the last send said so): the bound needs checking only paused.
        if self._paused:
            size = ep.queued_bytes
            if size > self._high:
                n = (len(data) if isinstance(data, Buffer)
                     else memoryview(data).nbytes)
                if size + n > 2 * self._high:
                    raise BlockingIOError(
                        11, "the datagram transport is full (%d bytes "
                        "waiting): wait for resume_writing()" % size)
        ep.send(data, addr)
        if not self._paused and ep.queued_bytes > self._high:
            self._pause()
        kick = self._kick
        if kick is not None:
            kick()

    def close(self) -> None:
        """Close: what waits is handed to the kernel first, once (the
        core's close); connection_lost(None) follows."""
        if self._closing:
            return
        self._closing = True
        self._ep_close()

    def abort(self) -> None:
        """Close now: as close(), for a datagram endpoint (the core hands
        what waits to the kernel once and drops what it refuses; Buffers go
        back to their pools); connection_lost(None) follows."""
        self._closing = True
        self._ep_close()

    def is_closing(self) -> bool:
        """True once close() or abort() ran, or the endpoint is lost."""
        return self._closing

    def get_write_buffer_size(self) -> int:
        """Bytes sent and not yet handed to the kernel (the core's send
        queue, with what waits for a slot)."""
        if self._lost:
            return 0
        return self._ep.queued_bytes

    def get_write_buffer_limits(self) -> Tuple[int, int]:
        """(low, high) water marks, bytes."""
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: Optional[int] = None,
                                low: Optional[int] = None) -> None:
        """Set the pause_writing() / resume_writing() marks (asyncio's
        defaults when omitted: high 64 KiB, low high/4); they are also the
        core send queue's marks.  The default, before any call, is the
        endpoint's (1 MiB / 256 KiB unless high_water / low_water were
        given)."""
        self._high, self._low = high, low = _write_limits(high, low)
        if not self._lost:
            self._ep.set_water(max(high, 1), min(low, max(high, 1)))
        size = self.get_write_buffer_size()
        if self._paused and size <= low:
            self._resume()
        elif not self._paused and size > high:
            self._pause()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """'sockname', 'peername' (socket module form: (host, port), a
        path...), 'socket' (a duplicate of the endpoint's socket: options
        set on it apply; do not read from or write to it), 'datagram' (the
        uringbuf.Datagram)."""
        try:
            if name == "sockname":
                return _parse_addr(self._ep.sockname)
            if name == "peername":
                return _parse_addr(self._ep.peername)
            if name == "socket":
                if self._sock is None:
                    self._sock = socket.socket(fileno=os.dup(self._ep.fd))
                return self._sock
            if name == "datagram":
                return self._ep
        except (OSError, ClosedError, ValueError):
            return default
        return default

    # ---- events, called by the event loop ----

    def _on_data(self, buf: Buffer) -> None:
        if self._closing:
            return  # dropped: the buffer goes back to its pool
        self._protocol.datagram_received(buf, buf.source)

    def _on_writable(self) -> None:
        if self._paused:
            if self.get_write_buffer_size() <= self._low:
                self._resume()
            else:
                self._arm_writable()

    def _on_error(self, res: int) -> None:
        if not self._lost and self._protocol is not None:
            self._protocol.error_received(_oserror(res))

    def _on_closed(self, res: int) -> None:
        self._lost = True
        self._closing = True
        protocol, self._protocol = self._protocol, None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if protocol is not None:
            protocol.connection_lost(_oserror(res) if res < 0 else None)

    # ---- internals ----

    def _set_fast(self) -> None:
        """Have Loop.dispatch() hand each datagram straight to
        datagram_received (no Event object)."""
        ep = self._ep
        if self._closing or self._lost or self._protocol is None:
            fast = None
        else:
            fast = self._protocol.datagram_received
        try:
            ep.on_datagram = fast  # called (buf, buf.source), from C
        except ClosedError:
            pass

    def _pause(self) -> None:
        self._paused = True
        self._arm_writable()
        if self._protocol is not None:
            self._protocol.pause_writing()

    def _resume(self) -> None:
        self._paused = False
        if not self._lost and self._protocol is not None:
            self._protocol.resume_writing()

    def _arm_writable(self) -> None:
        try:
            self._ep.want_writable()
        except (BrokenPipeError, ClosedError):
            pass

    def _ep_close(self) -> None:
        try:
            self._ep.on_data = None
            self._ep.close()
        except (BrokenPipeError, ClosedError):
            pass
        kick = self._kick
        if kick is not None:
            kick()
