#!/usr/bin/env python3
"""proxy.py - TCP proxy: each accepted client gets its own connection to the
target, and buffers are forwarded both ways without copying.

  proxy.py --listen HOST:PORT --to HOST:PORT [--mode bundle|ring|serial|auto]
           [--buf-size BYTES] [--buf-count N] [--inc] [--recv-budget BYTES]
           [--idle-timeout MS] [--max-conns N] [--pipe] [--asyncio]

Same command line and output as the C example (examples/proxy.c), plus
--pipe and --asyncio: prints "listening on HOST:PORT" and exits 0 on
SIGINT/SIGTERM.

--asyncio runs the very same protocols inside an asyncio event loop
(uringbuf.asyncio: the ring's eventfd watched by asyncio), instead of
uringbuf's own EventLoop: what the integration costs shows up in the
benchmark as this against the default.

Two ways to forward:
  default  per-buffer handler: data_received(buf) -> peer.write(buf), each
           received buffer queued on the other connection as it is (zero
           copy); backpressure through pause_writing() -> peer's
           pause_reading().
  --pipe   core-side forwarding (Transport.pipe, ub_conn_pipe): no Python
           per buffer at all, backpressure and EOF propagation in C.

Clients receive into the loop's receive pool (--buf-size x --buf-count),
upstream connections into a second pool of the same kind, as in proxy.c:
with one pool for both directions every buffer could sit queued towards
the target while its replies wait for a buffer here (seen with 8 buffers
for 8 clients).

--inc makes the receive pools incremental (Loop(pool_incremental=True)): a
receive takes only the bytes it needs from a --buf-size buffer, and each
slice is forwarded as it is.  Where the kernel lacks it, one line on
stderr says why and the pools are ordinary ones.

Neither side receives before the upstream connection is up (CONN_NO_RECV,
then resume_reading()), so nothing arrives before it has somewhere to go.
Both sides of a pair have the receive budget (--recv-budget) and idle
timeout (--idle-timeout, milliseconds) given; --max-conns bounds the
clients accepted at once.  With the default budgets a proxy in front of an
echo server (both uringbuf, default options) carries any number of
streams without the two pools deadlocking.
EOF from one side half-closes the other; once both sides have seen EOF both
close.  When one side is lost the other closes (gracefully if connected);
a failed connect aborts the client.
"""
import argparse
import signal
import sys

import uringbuf

PROG = "proxy"


class Side(uringbuf.Protocol):
    """One side of a proxied pair (the client, or the upstream)."""

    def __init__(self, ctx, peer=None):
        self.ctx = ctx
        self.peer = peer          # the other Side
        self.transport = None
        self.eof = False
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport
        transport.pause_reading()  # until both sides are up

    def data_received(self, buf):
        # Per-buffer forwarding (without --pipe): the received pool buffer
        # goes into the other connection's send queue as it is.
        self.peer.transport.write(buf)

    def pause_writing(self):
        # Our queue is full: stop reading what would be written into it.
        if self.peer and self.peer.transport:
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer and self.peer.transport:
            self.peer.transport.resume_reading()

    def eof_received(self):
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None:
            if not self.ctx.pipe:
                peer.transport.write_eof()  # --pipe: the core does this
            if peer.eof:
                self.transport.close()
                peer.transport.close()
        return True  # keep the other direction going

    def connection_lost(self, exc):
        self.lost = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            if self.ctx.pipe:
                peer.transport.pipe(None)  # nothing more may go into us
            if self.transport is not None:
                peer.transport.close()     # what it queued still goes out
            else:
                peer.transport.abort()     # our connect failed
        if self.transport is None and exc is not None:
            print("%s: connect to %s: %s" % (PROG, self.ctx.to, exc),
                  file=sys.stderr)


class Client(Side):
    """An accepted client: connects upstream on arrival."""

    def connection_made(self, transport):
        super().connection_made(transport)
        ctx = self.ctx
        try:
            ctx.loop.create_connection(lambda: Upstream(ctx, self), ctx.to,
                                       None, mode=ctx.mode,
                                       flags=uringbuf.CONN_NO_RECV,
                                       recv_pool=ctx.up_pool,
                                       **ctx.conn_opts)
        except (OSError, ValueError) as e:
            print("%s: connect: %s" % (PROG, e), file=sys.stderr)
            transport.abort()


class Upstream(Side):
    """The connection to --to for one client."""

    def __init__(self, ctx, client):
        super().__init__(ctx, client)
        client.peer = self

    def connection_made(self, transport):
        super().connection_made(transport)
        client = self.peer
        if client.lost:
            transport.abort()  # the client left while we were connecting
            return
        if self.ctx.pipe:
            client.transport.pipe(transport)
            transport.pipe(client.transport)
        client.transport.resume_reading()
        transport.resume_reading()


class Context:
    def __init__(self, loop, to, mode, pipe, conn_opts, up_pool):
        self.loop, self.to, self.mode, self.pipe = loop, to, mode, pipe
        self.conn_opts = conn_opts
        self.up_pool = up_pool


def _uint(lo, hi):
    """argparse type: a decimal integer in lo..hi (as the C examples)."""
    def parse(s):
        try:
            v = int(s, 10)
        except ValueError:
            v = None
        if v is None or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(
                "wants an integer in %d..%d, not '%s'" % (lo, hi, s))
        return v
    return parse


def conn_options(args):
    """Connection options from the command line (seconds for Python's
    idle_timeout; milliseconds on the command line)."""
    return {"recv_budget": args.recv_budget,
            "idle_timeout": (None if args.idle_timeout is None
                             else args.idle_timeout / 1000)}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("%s: %s\n" % (PROG, message))
        sys.exit(1)


def parse_args(argv):
    p = _Parser(prog=PROG, description="uringbuf TCP proxy",
                epilog='Prints "listening on HOST:PORT"; exits 0 on '
                       'SIGINT/SIGTERM.')
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="address to accept on (port 0: any free port)")
    p.add_argument("--to", required=True, metavar="HOST:PORT",
                   help="where to forward each connection")
    p.add_argument("--mode", default="auto",
                   choices=["bundle", "ring", "serial", "auto"],
                   help="send mode (default auto: the best available)")
    p.add_argument("--buf-size", type=int, default=0, metavar="BYTES",
                   help="receive pool buffer size (default 4096)")
    p.add_argument("--buf-count", type=int, default=0, metavar="N",
                   help="receive pool buffers (default 1024)")
    p.add_argument("--inc", action="store_true",
                   help="incremental receive pool of --buf-size buffers: a "
                        "receive takes only the bytes it needs (Linux "
                        "6.12+; elsewhere one line on stderr says why not, "
                        "and the pool is not)")
    p.add_argument("--recv-budget", type=_uint(1, 1 << 30), metavar="BYTES",
                   help="receive pool bytes one connection may hold "
                        "(default 262144)")
    p.add_argument("--idle-timeout", type=_uint(1, 86400000), metavar="MS",
                   help="close a connection that received and sent nothing "
                        "for MS milliseconds (default: never)")
    p.add_argument("--max-conns", type=_uint(1, 1000000), metavar="N",
                   help="accept at most N connections at once")
    p.add_argument("--pipe", action="store_true",
                   help="forward in the core (ub_conn_pipe) instead of a "
                        "per-buffer handler")
    p.add_argument("--asyncio", action="store_true",
                   help="run inside an asyncio event loop "
                        "(uringbuf.asyncio) instead of uringbuf's own")
    args = p.parse_args(argv)
    if not 0 <= args.buf_size <= 1 << 30 or not 0 <= args.buf_count <= 32768:
        p.error("--buf-size wants 1..1073741824, --buf-count 1..32768")
    return args


def setup(args, loop):
    """Check the arguments against loop and listen: the Server (exits with
    a message on failure, after closing loop)."""
    why = loop.loop.mode_check(args.mode)
    if why:
        loop.close()
        sys.exit("%s: mode %s unavailable: %s" % (PROG, args.mode, why))
    try:
        pool = loop.loop.recv_pool()
    except OSError as e:
        loop.close()
        sys.exit("%s: cannot create a receive pool of %d x %d bytes: %s" % (
            PROG, args.buf_count or 1024, args.buf_size or 4096, e))
    if args.inc and not pool.incremental:
        print("%s: --inc: the receive pool fell back to whole buffers: %s"
              % (PROG, loop.loop.feature_reason(uringbuf.FEAT_PBUF_INC)
                 or "(no reason given)"), file=sys.stderr, flush=True)
    try:
        # The upstream side receives into a pool of its own (as proxy.c):
        # with one pool for both directions, every buffer could sit queued
        # towards the target while its replies wait for a buffer here.
        up_pool = loop.loop.pool(pool.count, pool.buf_size, recv=True,
                                 incremental=pool.incremental)
    except OSError as e:
        loop.close()
        sys.exit("%s: cannot create the upstream receive pool: %s"
                 % (PROG, e))
    try:
        to = uringbuf.parse_address(args.to)
    except ValueError:
        loop.close()
        sys.exit("%s: bad --to address '%s'" % (PROG, args.to))
    ctx = Context(loop, to, args.mode, args.pipe, conn_options(args),
                  up_pool)
    try:
        server = loop.create_server(lambda: Client(ctx), args.listen, None,
                                    mode=args.mode,
                                    flags=uringbuf.CONN_NO_RECV,
                                    recv_pool=pool,
                                    max_connections=args.max_conns,
                                    **ctx.conn_opts)
    except (OSError, ValueError) as e:
        loop.close()
        sys.exit("%s: cannot listen on %s: %s" % (PROG, args.listen, e))
    print("listening on %s" % server.address, flush=True)
    return server


def finish(server):
    """Exit status: 1 if the listener closed by itself."""
    if not server.is_serving():
        print("%s: the listener closed" % PROG, file=sys.stderr)
        return 1
    return 0


async def run_asyncio(args):
    """The proxy inside asyncio: the same protocols on the asyncio bridge
    (uringbuf.asyncio.get_loop() is a uringbuf.EventLoop)."""
    import asyncio
    import uringbuf.asyncio

    try:
        loop = uringbuf.asyncio.get_loop(pool_count=args.buf_count,
                                         pool_size=args.buf_size,
                                         pool_incremental=args.inc)
    except OSError as e:
        sys.exit("%s: cannot create the io_uring loop: %s" % (PROG, e))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = setup(args, loop)
    await stop.wait()
    status = finish(server)
    server.close()
    await loop.aclose()
    return status


def main(argv=None):
    args = parse_args(argv)
    if args.asyncio:
        import asyncio
        return asyncio.run(run_asyncio(args))
    try:
        loop = uringbuf.EventLoop(pool_count=args.buf_count,
                                  pool_size=args.buf_size,
                                  pool_incremental=args.inc)
    except OSError as e:
        sys.exit("%s: cannot create the io_uring loop: %s" % (PROG, e))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, loop.stop)
    server = setup(args, loop)
    loop.run_forever()
    status = finish(server)
    server.close()
    loop.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
