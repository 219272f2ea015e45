#!/usr/bin/python3
"""httpd_peer.py - the asyncio (or uvloop) contender of bench/run's http
group: the HTTP/1.1 "hello world" server of examples/httpd.py, written the
way the asyncio documentation recommends for speed: Protocol/Transport
callbacks, not streams (https://docs.python.org/3/library/asyncio-protocol.html).

  httpd_peer.py --listen HOST:PORT [--loop asyncio|uvloop]

The same parser and replies as examples/httpd.py (so the benchmark compares
the runtimes, not two parsers): any request is answered "200 OK", body
"Hello, World!"; keep-alive by default for HTTP/1.1, "Connection: close"
honoured, HTTP/1.0 closes unless "Connection: keep-alive"; pipelined
requests answered in order with one write() per data_received(); bodies
(Content-Length) discarded; 400/413/431/501/505 then close.  Closing is
write_eof() after the reply, then close at the client's EOF or LINGER
seconds later (asyncio has no idle timeout to bound it otherwise).  Flow
control is the documented one: pause_writing() pauses reading until
resume_writing().

Prints "listening on HOST:PORT"; exits 0 on SIGINT/SIGTERM, 1 on a bad
argument.  Runs on Debian's /usr/bin/python3 (python3-uvloop belongs to it).
"""
import argparse
import asyncio
import re
import signal
import sys
import time
from time import time as _now

MAX_HEAD = 8192      # request line + header fields, bytes
MAX_BODY = 1 << 20   # Content-Length accepted (and discarded)
LINGER = 5.0         # seconds a closing connection may stay open

_TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
REQUEST = re.compile(rb"(" + _TCHAR + rb"+) [\x21-\x7e\x80-\xff]+ "
                     rb"HTTP/([0-9])\.([0-9])\r\n")
_FIELD = _TCHAR + rb"+:[\t\x20-\x7e\x80-\xff]*\r\n"
HEAD = re.compile(REQUEST.pattern + rb"((?:" + _FIELD + rb")*)\r\n")
INTERESTING = re.compile(rb"^(connection|content-length|transfer-encoding|"
                         rb"expect):[ \t]*([^\r]*?)[ \t]*\r", re.M)
# Whether the field lines (not lowered) name any of them.
ANY_INTERESTING = re.compile(INTERESTING.pattern, re.M | re.I).search

# Index: 1 for HEAD, 2 "Connection: close", 4 "Connection: keep-alive".
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


def _fields(low, kind):
    """As in examples/httpd.py."""
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


class HTTP(asyncio.Protocol):
    __slots__ = ("transport", "rest", "skip", "done")

    def connection_made(self, transport):
        self.transport = transport
        self.rest = b""
        self.skip = 0
        self.done = False

    def data_received(self, data):
        if self.done:
            return
        now = _now()
        if now >= _expires:
            _refresh(now)
        rest = self.rest
        if rest:
            scan = len(rest) - 3
            data = rest + data
            self.rest = b""
        else:
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
            if data[pos] == 13:
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
                t.write_eof()
                asyncio.get_running_loop().call_later(LINGER, t.abort)

    def eof_received(self):
        return False  # close once written data is flushed

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


def hostport(s):
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError("want HOST:PORT, not %r" % s)
    return host.strip("[]"), int(port)


async def main(host, port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    server = await loop.create_server(HTTP, host, port, backlog=4096,
                                      reuse_address=True)
    addr = server.sockets[0].getsockname()
    print("listening on %s:%d" % (addr[0], addr[1]), flush=True)
    await stop
    server.close()


if __name__ == "__main__":
    class _Parser(argparse.ArgumentParser):
        def error(self, message):
            self.print_usage(sys.stderr)
            sys.stderr.write("httpd_peer: %s\n" % message)
            sys.exit(1)

    p = _Parser(prog="httpd_peer")
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    a = p.parse_args()
    try:
        h, pt = hostport(a.listen)
    except ValueError as e:
        p.error(str(e))
    if a.loop == "uvloop":
        import uvloop
        uvloop.install()
    try:
        asyncio.run(main(h, pt))
    except OSError as e:
        sys.exit("httpd_peer: cannot listen on %s: %s" % (a.listen, e))
    sys.exit(0)
