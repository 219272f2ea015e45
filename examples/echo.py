#!/usr/bin/env python3
"""echo.py - echo server: every received buffer goes straight back out on the
same connection, zero copy (transport.write of the received Buffer queues the
receive pool's own buffer for sending).

  echo.py --listen HOST:PORT [--mode bundle|ring|serial|auto]
          [--buf-size BYTES] [--buf-count N] [--recv-budget BYTES]
          [--idle-timeout MS] [--max-conns N]

Same command line and output as the C example (examples/echo.c): prints
"listening on HOST:PORT" (the real port when 0 was asked) and exits 0 on
SIGINT/SIGTERM, 1 on a bad argument or a setup failure.

Backpressure: when the transport's write buffer goes above its high water
mark, pause_writing() pauses reading and resume_writing() resumes it.
Nothing is dropped: what the send queue refuses waits in the transport (in
order).  Isolation needs nothing from the protocol: a client that sends and
never reads holds at most its receive budget of the pool (--recv-budget,
default 256 KiB), so every other client keeps being answered;
--idle-timeout (milliseconds, as in the C example) closes connections that
received and sent nothing for that long, --max-conns pauses accepting at
that many connections.
"""
import argparse
import signal
import sys

import uringbuf

PROG = "echo"


class Echo(uringbuf.Protocol):
    """Writes every received buffer back."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, buf):
        self.transport.write(buf)  # the same pool buffer goes out: no copy

    def eof_received(self):
        return False  # close once everything written has gone out

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


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
    p = _Parser(prog=PROG, description="uringbuf echo server",
                epilog='Prints "listening on HOST:PORT"; exits 0 on '
                       'SIGINT/SIGTERM.')
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="address to accept on (port 0: any free port)")
    p.add_argument("--mode", default="auto",
                   choices=["bundle", "ring", "serial", "auto"],
                   help="send mode (default auto: the best available)")
    p.add_argument("--buf-size", type=int, default=0, metavar="BYTES",
                   help="receive pool buffer size (default 4096)")
    p.add_argument("--buf-count", type=int, default=0, metavar="N",
                   help="receive pool buffers (default 1024)")
    p.add_argument("--recv-budget", type=_uint(1, 1 << 30), metavar="BYTES",
                   help="receive pool bytes one connection may hold "
                        "(default 262144)")
    p.add_argument("--idle-timeout", type=_uint(1, 86400000), metavar="MS",
                   help="close a connection that received and sent nothing "
                        "for MS milliseconds (default: never)")
    p.add_argument("--max-conns", type=_uint(1, 1000000), metavar="N",
                   help="accept at most N connections at once")
    args = p.parse_args(argv)
    if not 0 <= args.buf_size <= 1 << 30 or not 0 <= args.buf_count <= 32768:
        p.error("--buf-size wants 1..1073741824, --buf-count 1..32768")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        loop = uringbuf.EventLoop(pool_count=args.buf_count,
                                  pool_size=args.buf_size)
    except OSError as e:
        sys.exit("%s: cannot create the io_uring loop: %s" % (PROG, e))
    why = loop.loop.mode_check(args.mode)
    if why:
        loop.close()
        sys.exit("%s: mode %s unavailable: %s" % (PROG, args.mode, why))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, loop.stop)
    try:
        server = loop.create_server(Echo, args.listen, None, mode=args.mode,
                                    recv_pool=loop.loop.recv_pool(),
                                    max_connections=args.max_conns,
                                    **conn_options(args))
    except (OSError, ValueError) as e:
        loop.close()
        sys.exit("%s: cannot listen on %s: %s" % (PROG, args.listen, e))
    print("listening on %s" % server.address, flush=True)
    loop.run_forever()
    status = 0
    if not server.is_serving():
        print("%s: the listener closed" % PROG, file=sys.stderr)
        status = 1
    server.close()
    loop.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
