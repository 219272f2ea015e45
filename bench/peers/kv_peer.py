#!/usr/bin/python3
"""kv_peer.py - the asyncio (or uvloop) contender of bench/run's kv group:
the key-value server of examples/kv.py (RESP2: GET, SET, DEL, PING, CONFIG
GET, inline and multibulk, pipelined; the same bounds and error replies),
written the way the asyncio documentation recommends for speed:
Protocol/Transport callbacks, not streams
(https://docs.python.org/3/library/asyncio-protocol.html).  The parser and
the store are examples/kv.py's, line for line, so that the comparison is
between event loops, not between parsers.

  kv_peer.py --listen HOST:PORT [--loop asyncio|uvloop]

data_received() gets bytes (asyncio reads up to 256 KiB at once; uvloop
64 KiB), runs every request in it and writes the joined replies once.
Flow control is the documented one: pause_writing() stops parsing and
pauses reading, resume_writing() runs what waits and resumes.

Prints "listening on HOST:PORT"; exits 0 on SIGINT/SIGTERM.  Runs on
Debian's /usr/bin/python3 (python3-uvloop belongs to it).
"""
import argparse
import asyncio
import signal
import sys

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

    def __init__(self):
        self.db = {}
        self.used = 0
        self.max_memory = 64 << 20
        self.max_bulk = 1 << 20
        self.max_args = 1024
        self.max_inline = 64 << 10
        self.max_request = 2 * self.max_bulk + (64 << 10)


def _quote(b, limit):
    """Client bytes inside an error line: CR/LF would end it early."""
    return bytes(b[:limit]).replace(b"\r", b" ").replace(b"\n", b" ")


def _wrong(name):
    return b"-ERR wrong number of arguments for '%s' command\r\n" % name


class KV(asyncio.Protocol):
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

    def data_received(self, data):
        if self.done:
            return
        if self.pending:
            data = self.pending + data
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


def hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


async def main(args):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    host, port = hostport(args.listen)
    store = Store()
    server = await loop.create_server(lambda: KV(store), host, port,
                                      backlog=4096, reuse_address=True)
    addr = server.sockets[0].getsockname()
    print("listening on %s:%d" % (addr[0], addr[1]), flush=True)
    await stop
    server.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="kv_peer")
    p.add_argument("--listen", required=True)
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    a = p.parse_args()
    if a.loop == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(main(a))
    sys.exit(0)
