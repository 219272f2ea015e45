#!/usr/bin/env python3
"""httpd.py - HTTP/1.1 "hello world" server (no framework): every request
(any method, any path) is answered "200 OK", body "Hello, World!"
(Content-Type: text/plain; a HEAD request gets the headers only).

  httpd.py --listen HOST:PORT [--mode bundle|ring|serial|auto]
           [--buf-size BYTES] [--buf-count N] [--recv-budget BYTES]
           [--idle-timeout MS] [--max-conns N] [--workers N]

--workers N (N > 1; 0: one per CPU) serves from N processes, each with its
own loop and its own SO_REUSEPORT listener (uringbuf.serve(workers=N));
SIGINT/SIGTERM stop them all, and the parent exits 1 if one of them failed.
--max-conns then holds per worker.

The examples' command line (examples/echo.py): prints "listening on
HOST:PORT" (the real port when 0 was asked) and exits 0 on SIGINT/SIGTERM,
1 on a bad argument or a setup failure.

HTTP/1.1 connections stay open unless the request says "Connection: close";
HTTP/1.0 ones close after the reply unless it says "Connection: keep-alive".
Pipelined requests are answered in order, and a request may be split across
reads at any byte.  A request body (Content-Length) is read and discarded.
Limits, each answered and followed by closing: a header block over 8 KiB
(431), a malformed request (400), a body over 1 MiB (413),
"Transfer-Encoding" (501), an HTTP major version other than 1 (505).
Closing is lingering: the reply, then FIN, then whatever the client still
sends is discarded until it closes (at most LINGER seconds of silence), so a
client still sending a body reads the error reply instead of a reset.

Speed: each received Buffer is copied once into bytes (pool buffers are
small; bytes.find and re run on bytes) and then dropped, so it goes back to
the pool at once; all replies for one received buffer leave in one write().
Only a partial request is kept between reads.  A client that pipelines and
never reads the replies cannot grow the server: above the transport's high
water mark pause_writing() pauses reading until resume_writing().
"""
import argparse
import re
import signal
import sys
import time
from time import time as _now

import uringbuf
import uringbuf.workers

PROG = "httpd"

MAX_HEAD = 8192      # request line + header fields, bytes
MAX_BODY = 1 << 20   # Content-Length accepted (and discarded)
LINGER = 5.0         # seconds a closing connection may stay silent

# RFC 9112: request-line = method SP request-target SP HTTP-version CRLF;
# method is a token; the target is any visible characters.
_TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
REQUEST = re.compile(rb"(" + _TCHAR + rb"+) [\x21-\x7e\x80-\xff]+ "
                     rb"HTTP/([0-9])\.([0-9])\r\n")
# field-line = field-name ":" OWS field-value OWS CRLF (no whitespace
# before the colon, no obsolete line folding, no control characters).
_FIELD = _TCHAR + rb"+:[\t\x20-\x7e\x80-\xff]*\r\n"
# A whole request head up to its blank line, checked in one match: method,
# major and minor version, the field lines.
HEAD = re.compile(REQUEST.pattern + rb"((?:" + _FIELD + rb")*)\r\n")
# The fields this server acts on, in the lowered field lines.
INTERESTING = re.compile(rb"^(connection|content-length|transfer-encoding|"
                         rb"expect):[ \t]*([^\r]*?)[ \t]*\r", re.M)
# Whether the field lines (not lowered) name any of them.
ANY_INTERESTING = re.compile(INTERESTING.pattern, re.M | re.I).search

# The replies, rebuilt once a second for the Date header.  Index: 1 for
# HEAD, 2 "Connection: close", 4 "Connection: keep-alive" (HTTP/1.0).
_replies = []
_errors = {}
_expires = 0.0
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_STATUS = {400: "Bad Request", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 501: "Not Implemented",
           505: "HTTP Version Not Supported"}


def _refresh(now):
    global _expires, _replies, _errors
    sec = int(now)
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(sec))
    head = ("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n"
            "Content-Type: text/plain\r\nDate: %s\r\n" % date).encode()
    replies = []
    for i in range(8):
        r = head
        if i & 2:
            r += b"Connection: close\r\n"
        elif i & 4:
            r += b"Connection: keep-alive\r\n"
        r += b"\r\n"
        if not i & 1:
            r += b"Hello, World!"
        replies.append(r)
    _replies = replies
    _errors = {code: ("HTTP/1.1 %d %s\r\nContent-Length: 0\r\n"
                      "Connection: close\r\nDate: %s\r\n\r\n"
                      % (code, text, date)).encode()
               for code, text in _STATUS.items()}
    _expires = sec + 1


_refresh(_now())


class HTTP(uringbuf.Protocol):
    """One client connection."""

    __slots__ = ("transport", "rest", "skip", "done")

    def connection_made(self, transport):
        self.transport = transport
        self.rest = b""    # a partial request kept from the last read
        self.skip = 0      # body bytes still to discard
        self.done = False  # the last reply is written: discard the rest

    def data_received(self, buf):
        if self.done:
            return  # lingering: the buffer goes back to the pool
        now = _now()
        if now >= _expires:
            _refresh(now)
        rest = self.rest
        if rest:
            data = rest + bytes(buf)
            scan = len(rest) - 3  # the blank line may end in the new bytes
            self.rest = b""
        else:
            data = bytes(buf)
            scan = 0
        n = len(data)
        pos = 0
        skip = self.skip
        out = []
        replies = _replies
        while pos < n:
            if skip:
                take = n - pos if n - pos < skip else skip
                pos += take
                skip -= take
                continue
            if data[pos] == 13:  # an empty line before a request: ignored
                if data.startswith(b"\r\n", pos):
                    pos += 2
                    continue
                if pos + 1 == n:
                    self.rest = data[pos:]
                    break
            m = HEAD.match(data, pos, pos + MAX_HEAD + 4)
            if m is None:  # incomplete, too long or malformed
                end = data.find(b"\r\n\r\n", scan if scan > pos else pos)
                if end >= 0:
                    out.append(_errors[431 if end - pos > MAX_HEAD else 400])
                    self.done = True
                elif n - pos > MAX_HEAD:
                    out.append(_errors[431])
                    self.done = True
                elif (data.find(b"\r\n", pos) >= 0
                      and REQUEST.match(data, pos) is None):
                    out.append(_errors[400])  # a bad line needs no more
                    self.done = True
                else:
                    self.rest = data[pos:] if pos else data
                break
            method, major, minor, fields = m.groups()
            if major != b"1":
                out.append(_errors[505])
                self.done = True
                break
            kind = 2 if minor == b"0" else 0  # HTTP/1.0 closes by default
            if method == b"HEAD":
                kind |= 1
            pos = m.end()
            clen = 0
            # Most requests name none of these: one search tells.  (Not
            # b"con" in low: bytes.__contains__ tries the operand as an
            # int first and swallows a TypeError, ~3% of the CPU here.)
            if fields and ANY_INTERESTING(fields) is not None:
                status, kind, clen, expect = _fields(fields.lower(), kind)
                if status:
                    out.append(_errors[status])
                    self.done = True
                    break
                if expect:
                    out.append(_CONTINUE)
            out.append(replies[kind])
            if kind & 2:
                self.done = True
                break
            skip = clen
        self.skip = skip
        if out:
            t = self.transport
            t.write(out[0] if len(out) == 1 else b"".join(out))
            if self.done:
                self.rest = b""
                t.write_eof()  # FIN after the reply; the client closes
                t.connection.idle_timeout = LINGER

    def eof_received(self):
        return False  # close once everything written has gone out

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


def _fields(low, kind):
    """Act on the header fields (low: the field lines, lowered).
    Returns (error status or 0, kind, Content-Length, whether to send
    100 Continue)."""
    clen = -1
    expect = False
    http10 = kind & 2  # no 100 Continue for HTTP/1.0 (RFC 9110 15.2)
    for m in INTERESTING.finditer(low):
        name, value = m.groups()
        if name == b"content-length":
            if clen >= 0 or not value.isdigit() or len(value) > 18:
                return 400, kind, 0, False  # duplicate or not a number
            clen = int(value)
            if clen > MAX_BODY:
                return 413, kind, 0, False
        elif name == b"connection":
            tokens = [t.strip(b" \t") for t in value.split(b",")]
            if b"close" in tokens:
                kind = (kind & ~4) | 2
            elif b"keep-alive" in tokens and kind & 2:
                kind = (kind & ~2) | 4  # an HTTP/1.0 client asked to stay
        elif name == b"transfer-encoding":
            return 501, kind, 0, False
        else:
            expect = value == b"100-continue"
    if clen < 0:
        clen = 0
    return 0, kind, clen, expect and clen > 0 and not http10


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
    p = _Parser(prog=PROG, description="uringbuf HTTP/1.1 hello-world server",
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
    p.add_argument("--workers", type=_uint(0, 1024), default=1, metavar="N",
                   help="worker processes (SO_REUSEPORT; 0: one per CPU; "
                        "default 1)")
    args = p.parse_args(argv)
    if not 0 <= args.buf_size <= 1 << 30 or not 0 <= args.buf_count <= 32768:
        p.error("--buf-size wants 1..1073741824, --buf-count 1..32768")
    return args


def serve_workers(args):
    """--workers N: uringbuf.serve(workers=N), the parent supervising."""
    with uringbuf.Loop() as probe:  # closed before the workers fork
        why = probe.mode_check(args.mode)
    if why:
        sys.exit("%s: mode %s unavailable: %s" % (PROG, args.mode, why))
    host, _, port = args.listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") else host
    try:
        group = uringbuf.serve(
            HTTP, host, int(port), workers=args.workers,
            pool_count=args.buf_count, pool_size=args.buf_size,
            mode=args.mode, max_connections=args.max_conns,
            recv_budget=args.recv_budget,
            idle_timeout=(None if args.idle_timeout is None
                          else args.idle_timeout / 1000))
    except (OSError, ValueError, uringbuf.workers.WorkerError) as e:
        sys.exit("%s: cannot listen on %s: %s" % (PROG, args.listen, e))
    print("listening on %s" % group.address, flush=True)
    try:
        group.serve_forever()
    except uringbuf.workers.WorkerError as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.workers != 1:
        return serve_workers(args)
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
        server = loop.create_server(
            HTTP, args.listen, None, mode=args.mode,
            recv_pool=loop.loop.recv_pool(), max_connections=args.max_conns,
            recv_budget=args.recv_budget,
            idle_timeout=(None if args.idle_timeout is None
                          else args.idle_timeout / 1000))
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
