"""uringbuf: provided-buffer serialized send queues and multishot receive over
io_uring, for servers.

Two layers:

* The event API (the C library, wrapped by SWIG in ``uringbuf.core``):
  ``Loop`` (one io_uring; ``wait()`` returns a batch of ``Event``),
  ``Pool`` (buffers in one mapping), ``Connection`` (multishot receive and an
  ordered send queue), ``Listener``, ``Datagram`` (a UDP or Unix datagram
  endpoint) and ``Buffer`` (a zero-copy view of pool
  memory: ``memoryview(buf)``).  Constants: ``EV_*`` event types, ``MODE_*``
  send modes, ``FEAT_*`` kernel features, ``BUF_*`` buffer states,
  ``CONN_*`` connection flags.

* A server API in asyncio's idiom (``uringbuf.server``): ``Protocol``,
  ``Transport``, ``EventLoop``, ``Server``, ``serve()`` and ``connect()``.
  Per-connection receive budgets and deadlines keep one client from
  starving the others: ``recv_budget``, ``idle_timeout``,
  ``connect_timeout``, ``close_timeout`` and ``max_connections`` keyword
  arguments (docs/python.md, "Budgets, fairness and deadlines").

* Datagrams in asyncio's idiom (``uringbuf.datagram``):
  ``DatagramProtocol``, ``DatagramTransport`` and
  ``create_datagram_endpoint()``.

* The same protocols inside a running asyncio loop (``uringbuf.asyncio``,
  imported on first use): ``start_server()``, ``create_connection()``,
  ``open_connection()`` (asyncio streams), ``run()``.

Errors: the core's ``-errno`` raises ``OSError(errno, strerror)`` (so EAGAIN
is ``BlockingIOError``, ECONNRESET ``ConnectionResetError``; EINVAL is
``InvalidArgument``, also a ``ValueError``); use after close raises
``ClosedError`` (a ``ValueError``); bad arguments raise ``TypeError`` or
``ValueError``.  See docs/python.md.
"""
import enum as _enum
from typing import Dict, Optional

from . import core

core._hide_swig_api()  # keep SWIG's internal slots out of help()
from .core import (  # noqa: F401  (re-exported)
    Buffer,
    ClosedError,
    Connection,
    Datagram,
    Event,
    InvalidArgument,
    Listener,
    Loop,
    Pool,
)

__version__ = "%d.%d.%d" % (core.UB_VERSION_MAJOR, core.UB_VERSION_MINOR,
                            core.UB_VERSION_PATCH)


class EventType(_enum.IntEnum):
    """Event types (``Event.type``; C: enum ub_event_type)."""
    NONE = core.UB_EV_NONE
    ACCEPT = core.UB_EV_ACCEPT        #: new connection; res: its fd
    CONNECT = core.UB_EV_CONNECT      #: res 0, or -errno (CLOSED follows)
    DATA = core.UB_EV_DATA            #: buf received; res: its length
    SENT = core.UB_EV_SENT            #: res: bytes sent (CONN_SENT_EVENTS)
    WRITABLE = core.UB_EV_WRITABLE    #: the send queue drained to low water
    EOF = core.UB_EV_EOF              #: the peer shut its sending side
    ERROR = core.UB_EV_ERROR          #: res: -errno; CLOSED follows
    CLOSED = core.UB_EV_CLOSED        #: gone; res: 0 or the ending -errno


class Mode(_enum.IntEnum):
    """Send modes (C: enum ub_send_mode)."""
    AUTO = core.UB_MODE_AUTO      #: the best the kernel offers
    BUNDLE = core.UB_MODE_BUNDLE  #: provided-buffer ring, many per send
    RING = core.UB_MODE_RING      #: provided-buffer ring, one per send
    SERIAL = core.UB_MODE_SERIAL  #: plain sends, one in flight


class Feature(_enum.IntFlag):
    """Kernel features a loop may use (``Loop.features``)."""
    SINGLE_ISSUER = core.UB_FEAT_SINGLE_ISSUER
    RECV_MULTISHOT = core.UB_FEAT_RECV_MULTISHOT
    ACCEPT_MULTISHOT = core.UB_FEAT_ACCEPT_MULTISHOT
    SEND_RING = core.UB_FEAT_SEND_RING
    SEND_BUNDLE = core.UB_FEAT_SEND_BUNDLE
    RECV_BUNDLE = core.UB_FEAT_RECV_BUNDLE
    PBUF_INC = core.UB_FEAT_PBUF_INC
    RECV_LIMIT = core.UB_FEAT_RECV_LIMIT  #: byte limit on a multishot recv
    UDP_GSO = core.UB_FEAT_UDP_GSO  #: UDP_SEGMENT: replies to one peer in one send


class BufState(_enum.IntEnum):
    """Owner of a buffer (``Pool.count_state()``, ``Buffer.state``)."""
    FREE = core.UB_BUF_FREE      #: idle in a send pool
    KERNEL = core.UB_BUF_KERNEL  #: idle in a receive ring
    APP = core.UB_BUF_APP        #: yours
    QUEUED = core.UB_BUF_QUEUED  #: in a send queue


# Plain-int constants, for the hot path (Event.type is a plain int).
EV_NONE = core.UB_EV_NONE
EV_ACCEPT = core.UB_EV_ACCEPT
EV_CONNECT = core.UB_EV_CONNECT
EV_DATA = core.UB_EV_DATA
EV_SENT = core.UB_EV_SENT
EV_WRITABLE = core.UB_EV_WRITABLE
EV_EOF = core.UB_EV_EOF
EV_ERROR = core.UB_EV_ERROR
EV_CLOSED = core.UB_EV_CLOSED
MODE_AUTO = core.UB_MODE_AUTO
MODE_BUNDLE = core.UB_MODE_BUNDLE
MODE_RING = core.UB_MODE_RING
MODE_SERIAL = core.UB_MODE_SERIAL
FEAT_SINGLE_ISSUER = core.UB_FEAT_SINGLE_ISSUER
FEAT_RECV_MULTISHOT = core.UB_FEAT_RECV_MULTISHOT
FEAT_ACCEPT_MULTISHOT = core.UB_FEAT_ACCEPT_MULTISHOT
FEAT_SEND_RING = core.UB_FEAT_SEND_RING
FEAT_SEND_BUNDLE = core.UB_FEAT_SEND_BUNDLE
FEAT_RECV_BUNDLE = core.UB_FEAT_RECV_BUNDLE
FEAT_PBUF_INC = core.UB_FEAT_PBUF_INC
FEAT_RECV_LIMIT = core.UB_FEAT_RECV_LIMIT
FEAT_UDP_GSO = core.UB_FEAT_UDP_GSO
FEAT_ALL = core.UB_FEAT_ALL
BUF_FREE = core.UB_BUF_FREE
BUF_KERNEL = core.UB_BUF_KERNEL
BUF_APP = core.UB_BUF_APP
BUF_QUEUED = core.UB_BUF_QUEUED
CONN_NO_RECV = core.UB_CONN_NO_RECV
CONN_SINGLESHOT = core.UB_CONN_SINGLESHOT
CONN_NO_RECV_BUNDLE = core.UB_CONN_NO_RECV_BUNDLE
CONN_SENT_EVENTS = core.UB_CONN_SENT_EVENTS
POOL_RECV = core.UB_POOL_RECV
POOL_INC = core.UB_POOL_INC
DGRAM_HDR = core.UB_DGRAM_HDR
"""Bytes of every receive buffer a Datagram uses for its header (the
source address): a pool for datagrams of up to N bytes needs buffers of
N + DGRAM_HDR bytes (a multiple of 8)."""

MODES = ("bundle", "ring", "serial")
"""The forceable send modes, by name."""


def event_name(type: int) -> str:
    """Name of an event type ("data", "closed", ...)."""
    return core.ub_event_name(type)


def mode_name(mode: int) -> str:
    """Name of a send mode ("bundle", "ring", "serial", "auto")."""
    return core.ub_mode_name(mode)


def parse_address(address: str) -> str:
    """Check and normalize an address as the core reads it: "HOST:PORT"
    (numeric host, or localhost), "[V6]:PORT", "unix:PATH" or "/PATH".
    InvalidArgument (a ValueError) if malformed; no name resolution."""
    if not isinstance(address, str):
        raise TypeError("address must be a str")
    return core.ub_addr_parse(address)


def features(disable: int = 0) -> Dict[str, Optional[str]]:
    """What this kernel offers: ``{feature name: None if available, else the
    reason it is not}`` for every FEAT_* bit ("send_bundle", ...).  Creates
    (and closes) a Loop to probe; ``disable`` as for Loop()."""
    with Loop(disable=disable) as loop:
        out = {}
        for f in Feature:
            out[core.ub_feature_name(int(f))] = loop.feature_reason(int(f))
        return out


def modes(disable: int = 0) -> Dict[str, Optional[str]]:
    """``{mode name: None if usable here, else the reason}`` for "bundle",
    "ring" and "serial" (see features())."""
    with Loop(disable=disable) as loop:
        return {m: loop.mode_check(m) for m in MODES}


def best_mode(disable: int = 0) -> str:
    """The name of the mode MODE_AUTO picks on this kernel."""
    with Loop(disable=disable) as loop:
        return core.ub_mode_name(loop.best_mode)


from .server import (  # noqa: E402,F401  (re-exported)
    EventLoop,
    Protocol,
    Server,
    Transport,
    connect,
    create_datagram_endpoint,
    serve,
)
from .datagram import (  # noqa: E402,F401  (re-exported)
    DatagramProtocol,
    DatagramTransport,
)



def __getattr__(name: str):  # PEP 562: uringbuf.asyncio on first use
    if name in ("asyncio", "workers"):
        import importlib
        return importlib.import_module("." + name, __name__)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


__all__ = [
    # event API
    "Loop", "Pool", "Connection", "Listener", "Datagram", "Buffer", "Event",
    "ClosedError", "InvalidArgument",
    "EventType", "Mode", "Feature", "BufState",
    "EV_NONE", "EV_ACCEPT", "EV_CONNECT", "EV_DATA", "EV_SENT",
    "EV_WRITABLE", "EV_EOF", "EV_ERROR", "EV_CLOSED",
    "MODE_AUTO", "MODE_BUNDLE", "MODE_RING", "MODE_SERIAL", "MODES",
    "FEAT_SINGLE_ISSUER", "FEAT_RECV_MULTISHOT", "FEAT_ACCEPT_MULTISHOT",
    "FEAT_SEND_RING", "FEAT_SEND_BUNDLE", "FEAT_RECV_BUNDLE",
    "FEAT_PBUF_INC", "FEAT_RECV_LIMIT", "FEAT_UDP_GSO", "FEAT_ALL",
    "BUF_FREE", "BUF_KERNEL", "BUF_APP", "BUF_QUEUED",
    "CONN_NO_RECV", "CONN_SINGLESHOT", "CONN_NO_RECV_BUNDLE",
    "CONN_SENT_EVENTS", "POOL_RECV", "POOL_INC", "DGRAM_HDR",
    "event_name", "mode_name", "parse_address", "features", "modes", "best_mode",
    # server API
    "EventLoop", "Server", "Transport", "Protocol", "serve", "connect",
    "DatagramProtocol", "DatagramTransport", "create_datagram_endpoint",
    "core", "__version__",
]
