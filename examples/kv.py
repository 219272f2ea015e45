#!/usr/bin/env python3
"""kv.py - a small in-memory key-value server speaking RESP2 (the redis
protocol): GET, SET, DEL, PING and CONFIG GET, inline or multibulk,
pipelined, so redis-benchmark and redis-cli can drive it.

  kv.py --listen HOST:PORT [--mode bundle|ring|serial|auto]
        [--max-memory BYTES] [--max-bulk BYTES] [--max-args N]
        [--max-inline BYTES] [--buf-size BYTES] [--buf-count N]
        [--recv-budget BYTES] [--idle-timeout MS] [--max-conns N]

The same command line and output as the C example (examples/kv.c): prints
"listening on HOST:PORT" (the real port when 0 was asked) and exits 0 on
SIGINT/SIGTERM, 1 on a bad argument or a setup failure.

Per received buffer: one copy out of the pool (bytes(buf)), every request
in it parsed with bytes.find, every reply of it joined into one
transport.write().  Values are stored as their encoded GET reply, so a GET
hit appends a stored object and formats nothing.

Bounds, as in kv.c: a request is at most --max-args arguments of at most
--max-bulk bytes and 2 * max-bulk + 64 KiB in all, an inline request at
most --max-inline bytes; beyond, or on garbage, the client gets
"-ERR Protocol error: ..." and the connection closes.  Replies: when the
transport goes above its high water mark (pause_writing), parsing stops,
what was received waits unparsed and reading pauses until
resume_writing(); parsing also writes out every OUT_MAX bytes of replies,
so one buffer of GETs of big values is never one huge write.  Stored keys
and values are bounded by --max-memory: a SET beyond gets -OOM.
"""
import argparse
import signal
import sys

import uringbuf

PROG = "kv"

OUT_MAX = 256 << 10   # reply bytes written at once while parsing
HDR_MAX = 32          # longest "*N" / "$N" line, CRLF included

OK = b"+OK\r\n"
NIL = b"$-1\r\n"
PONG = b"+PONG\r\n"
OOM = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n"
# CONFIG GET: redis-benchmark asks for "save" and "appendonly" at start and
# wants [name, value] pairs; other names match nothing (an empty array).
CONFIG = {b"save": b"$4\r\nsave\r\n$0\r\n\r\n",
          b"appendonly": b"$10\r\nappendonly\r\n$2\r\nno\r\n"}


class ProtocolError(Exception):
    """Garbage or a request over a limit: reply, then close."""


class Store:
    """The key space: key -> the encoded bulk reply of its value, and the
    key + value bytes stored, against max_memory."""

    def __init__(self, args):
        self.db = {}
        self.used = 0
        self.max_memory = args.max_memory
        self.max_bulk = args.max_bulk
        self.max_args = args.max_args
        self.max_inline = args.max_inline
        self.max_request = 2 * args.max_bulk + (64 << 10)


def _quote(b, limit):
    """Client bytes inside an error line: CR/LF would end it early."""
    return bytes(b[:limit]).replace(b"\r", b" ").replace(b"\n", b" ")


def _wrong(name):
    return b"-ERR wrong number of arguments for '%s' command\r\n" % name


class KV(uringbuf.Protocol):
    """One client connection."""

    __slots__ = ("store", "transport", "write", "pending", "paused", "eof",
                 "done")

    def __init__(self, store):
        self.store = store
        self.pending = b""     # received, not yet run (a partial request,
                               # or all of it while writing is paused)
        self.paused = False    # pause_writing() came: stop parsing
        self.eof = False       # the peer finished sending
        self.done = False      # a protocol error closed us

    def connection_made(self, transport):
        self.transport = transport
        self.write = transport.write

    def data_received(self, buf):
        if self.done:
            return
        data = self.pending + bytes(buf) if self.pending else bytes(buf)
        if self.paused:
            self.pending = data
            return
        self.run(data)

    def eof_received(self):
        if self.paused and self.pending:
            self.eof = True
            return True  # finish what waits first (resume_writing)
        return False     # close once every reply has gone out

    def pause_writing(self):
        self.paused = True
        self.transport.pause_reading()

    def resume_writing(self):
        self.paused = False
        if self.pending and not self.done:
            self.run(self.pending)
        if self.paused or self.done:
            return
        if self.eof:
            self.transport.close()
        else:
            self.transport.resume_reading()

    def run(self, data):
        """Run the requests in data until one is incomplete (kept in
        self.pending) or writing pauses (the rest kept)."""
        st = self.store
        db = st.db
        out = []
        olen = 0
        pos = 0
        n = len(data)
        try:
            while pos < n:
                if data[pos] == 42:  # "*": multibulk, the common case
                    e = data.find(b"\r\n", pos, pos + HDR_MAX)
                    if e < 0:
                        if n - pos >= HDR_MAX:
                            raise ProtocolError(b"too big mbulk count string")
                        break
                    s = data[pos + 1:e]
                    if not s.isdigit():
                        if s == b"-1" or s == b"-0":
                            pos = e + 2
                            continue
                        raise ProtocolError(b"invalid multibulk length")
                    cnt = int(s)
                    if cnt > st.max_args:
                        raise ProtocolError(b"invalid multibulk length")
                    p = e + 2
                    args = []
                    for _ in range(cnt):
                        if p >= n:
                            args = None
                            break
                        if data[p] != 36:  # "$"
                            raise ProtocolError(b"expected '$'")
                        e = data.find(b"\r\n", p, p + HDR_MAX)
                        if e < 0:
                            if n - p >= HDR_MAX:
                                raise ProtocolError(b"invalid bulk length")
                            args = None
                            break
                        s = data[p + 1:e]
                        if not s.isdigit():
                            raise ProtocolError(b"invalid bulk length")
                        ln = int(s)
                        if ln > st.max_bulk:
                            raise ProtocolError(b"invalid bulk length")
                        p = e + 2
                        end = p + ln
                        if end + 2 > n:
                            if end + 2 - pos > st.max_request:
                                raise ProtocolError(b"request too big")
                            args = None
                            break
                        if data[end:end + 2] != b"\r\n":
                            raise ProtocolError(b"expected CRLF after bulk")
                        args.append(data[p:end])
                        p = end + 2
                    if args is None:
                        break  # incomplete: wait for more
                    pos = p
                    if not args:
                        continue
                else:
                    e = data.find(b"\n", pos, pos + st.max_inline)
                    if e < 0:
                        if n - pos >= st.max_inline:
                            raise ProtocolError(b"too big inline request")
                        break
                    args = data[pos:e].split()
                    pos = e + 1
                    if not args:
                        continue
                    if len(args) > st.max_args:
                        raise ProtocolError(
                            b"too many arguments in inline request")
                cmd = args[0]
                na = len(args)
                if cmd == b"GET" or cmd == b"get":
                    if na != 2:
                        out.append(_wrong(b"get"))
                        continue
                    v = db.get(args[1])
                    if v is None:
                        out.append(NIL)
                        continue
                    out.append(v)
                    olen += len(v)
                elif cmd == b"SET" or cmd == b"set":
                    out.append(self.set(args, na))
                else:
                    r = self.command(cmd.upper(), args, na)
                    out.append(r)
                    olen += len(r)
                if olen >= OUT_MAX:
                    self.write(b"".join(out))
                    out = []
                    olen = 0
                    if self.paused:
                        break
        except ProtocolError as e:
            out.append(b"-ERR Protocol error: %s\r\n" % e.args[0])
            self.write(b"".join(out))
            self.done = True
            self.pending = b""
            self.transport.close()
            return
        if out:
            self.write(b"".join(out))
        rest = n - pos
        if rest > st.max_request and not self.paused:
            # complete arguments can add up too: bound the request
            self.write(b"-ERR Protocol error: request too big\r\n")
            self.done = True
            self.pending = b""
            self.transport.close()
            return
        self.pending = data[pos:] if rest else b""

    def set(self, args, na):
        if na != 3:
            if na > 3:
                return b"-ERR syntax error (SET options are not supported)\r\n"
            return _wrong(b"set")
        st = self.store
        k, v = args[1], args[2]
        old = st.db.get(k)
        used = st.used + len(k) + len(v)
        if old is not None:
            used -= len(k) + _value_len(old)
        if used > st.max_memory:
            return OOM
        st.db[k] = b"$%d\r\n%s\r\n" % (len(v), v)
        st.used = used
        return OK

    def command(self, cmd, args, na):
        """Everything but GET and SET."""
        if cmd == b"GET":
            if na != 2:
                return _wrong(b"get")
            return self.store.db.get(args[1], NIL)
        if cmd == b"SET":
            return self.set(args, na)
        if cmd == b"DEL":
            if na < 2:
                return _wrong(b"del")
            st = self.store
            db = st.db
            gone = 0
            for k in args[1:]:
                v = db.pop(k, None)
                if v is not None:
                    gone += 1
                    st.used -= len(k) + _value_len(v)
            return b":%d\r\n" % gone
        if cmd == b"PING":
            if na == 1:
                return PONG
            if na == 2:
                return b"$%d\r\n%s\r\n" % (len(args[1]), args[1])
            return _wrong(b"ping")
        if cmd == b"CONFIG":
            if na < 2:
                return _wrong(b"config")
            if args[1].upper() != b"GET":
                return (b"-ERR unknown subcommand '%s'. Try CONFIG GET.\r\n"
                        % _quote(args[1], 64))
            if na < 3:
                return _wrong(b"config|get")
            hits = [v for k, v in CONFIG.items()
                    if any(a.lower() == k for a in args[2:])]
            return b"*%d\r\n%s" % (2 * len(hits), b"".join(hits))
        return (b"-ERR unknown command '%s', with args beginning with: %s\r\n"
                % (_quote(args[0], 64),
                   b"".join(b"'%s' " % _quote(a, 32) for a in args[1:4])))


def _value_len(reply):
    """The value's length from its stored bulk reply ("$N\\r\\n...\\r\\n")."""
    return len(reply) - reply.index(b"\r\n") - 4


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
    p = _Parser(prog=PROG, description="uringbuf key-value server (RESP2)",
                epilog='Prints "listening on HOST:PORT"; exits 0 on '
                       'SIGINT/SIGTERM.')
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="address to accept on (port 0: any free port)")
    p.add_argument("--mode", default="auto",
                   choices=["bundle", "ring", "serial", "auto"],
                   help="send mode (default auto: the best available)")
    p.add_argument("--max-memory", type=_uint(0, 1 << 40), default=64 << 20,
                   metavar="BYTES",
                   help="key + value bytes stored; a SET beyond gets -OOM "
                        "(default 64 MiB)")
    p.add_argument("--max-bulk", type=_uint(1, 512 << 20), default=1 << 20,
                   metavar="BYTES", help="longest argument (default 1 MiB)")
    p.add_argument("--max-args", type=_uint(1, 1 << 20), default=1024,
                   metavar="N", help="most arguments of a request "
                                     "(default 1024)")
    p.add_argument("--max-inline", type=_uint(16, 1 << 30), default=64 << 10,
                   metavar="BYTES",
                   help="longest inline request (default 64 KiB)")
    p.add_argument("--buf-size", type=_uint(1, 1 << 30), default=0,
                   metavar="BYTES",
                   help="receive pool buffer size (default 4096)")
    p.add_argument("--buf-count", type=_uint(1, 32768), default=0,
                   metavar="N", help="receive pool buffers (default 1024)")
    p.add_argument("--recv-budget", type=_uint(1, 1 << 30), metavar="BYTES",
                   help="receive pool bytes one connection may hold "
                        "(default 262144)")
    p.add_argument("--idle-timeout", type=_uint(1, 86400000), metavar="MS",
                   help="close a connection that received and sent nothing "
                        "for MS milliseconds (default: never)")
    p.add_argument("--max-conns", type=_uint(1, 1000000), metavar="N",
                   help="accept at most N connections at once")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    store = Store(args)
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
            lambda: KV(store), args.listen, None, mode=args.mode,
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
