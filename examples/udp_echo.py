#!/usr/bin/env python3
"""udp_echo.py - UDP (or Unix datagram) echo server: every received datagram
goes straight back to its sender, zero copy (transport.sendto of the received
Buffer to its source address queues the receive pool's own buffer).

  udp_echo.py --listen HOST:PORT [--buf-size BYTES] [--buf-count N]
              [--recv-budget BYTES]

Same command line and output as the C example (examples/udp_echo.c):
HOST:PORT as the core reads it ("127.0.0.1:0", "[::1]:9000", "unix:/path",
"unix:@name"); prints "listening on HOST:PORT" (the real port when 0 was
asked) and exits 0 on SIGINT/SIGTERM, 1 on a bad argument or a setup
failure.  Buffers default to 64 KiB + uringbuf.DGRAM_HDR bytes, so that no
UDP datagram is truncated (one that still is goes back as received, cut).

Backpressure: the send queue takes one datagram per receive buffer and as
many bytes as the pool holds, so a reply never waits for a slot; should the
transport's write buffer still pass its high water mark, pause_writing()
pauses receiving (datagrams wait in the socket) and resume_writing()
resumes it.  What finds the send queue full waits in the core, in order.
"""
import argparse
import signal
import sys

import uringbuf

PROG = "udp_echo"
DEF_BUF_SIZE = 65536 + uringbuf.DGRAM_HDR
DEF_BUF_COUNT = 256


class Echo(uringbuf.DatagramProtocol):
    """Sends every datagram back where it came from."""

    def __init__(self):
        self.transport = None
        self.dropped = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, buf, addr):
        if addr is None:  # an unbound Unix sender: nowhere to reply
            self.dropped += 1
            return
        try:
            self.transport.sendto(buf, addr)  # the same buffer: no copy
        except BlockingIOError:
            self.dropped += 1  # cannot happen with the marks set in main()

    def error_received(self, exc):
        pass  # a send failed or an ICMP error came back: go on

    def pause_writing(self):
        self.transport.datagram.pause_recv()

    def resume_writing(self):
        self.transport.datagram.resume_recv()


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


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("%s: %s\n" % (PROG, message))
        sys.exit(1)


def parse_args(argv):
    p = _Parser(prog=PROG, description="uringbuf UDP echo server",
                epilog='Prints "listening on HOST:PORT"; exits 0 on '
                       'SIGINT/SIGTERM.')
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="address to receive on (port 0: any free port)")
    p.add_argument("--buf-size", type=_uint(uringbuf.DGRAM_HDR + 1, 1 << 30),
                   default=DEF_BUF_SIZE, metavar="BYTES",
                   help="receive buffer size, header included (default "
                        "%d)" % DEF_BUF_SIZE)
    p.add_argument("--buf-count", type=_uint(1, 32768), default=DEF_BUF_COUNT,
                   metavar="N",
                   help="receive buffers (default %d)" % DEF_BUF_COUNT)
    p.add_argument("--recv-budget", type=_uint(1, 1 << 40), metavar="BYTES",
                   help="receive pool bytes the endpoint may hold (default: "
                        "the whole pool)")
    args = p.parse_args(argv)
    args.buf_size = (args.buf_size + 7) & ~7  # endpoints take multiples of 8
    try:
        uringbuf.parse_address(args.listen)
    except ValueError:
        p.error("bad --listen address '%s'" % args.listen)
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        loop = uringbuf.EventLoop()
    except OSError as e:
        sys.exit("%s: cannot create the io_uring loop: %s" % (PROG, e))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, loop.stop)
    pool_bytes = args.buf_count * args.buf_size
    try:
        pool = loop.loop.pool(args.buf_count, args.buf_size, recv=True)
        transport, proto = loop.create_datagram_endpoint(
            Echo, args.listen, recv_pool=pool,
            recv_budget=args.recv_budget or pool_bytes,
            queue_max=args.buf_count, high_water=pool_bytes)
    except (OSError, ValueError) as e:
        loop.close()
        sys.exit("%s: cannot open %s: %s" % (PROG, args.listen, e))
    print("listening on %s" % transport.datagram.sockname, flush=True)
    loop.run_forever()
    status = 0
    if transport.datagram.closed:
        print("%s: the endpoint closed" % PROG, file=sys.stderr)
        status = 1
    transport.abort()
    loop.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
