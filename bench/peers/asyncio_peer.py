#!/usr/bin/python3
"""asyncio_peer.py - the asyncio (or uvloop) contender of bench/run: a TCP
proxy (with --to) or an echo server (without), written the way the asyncio
documentation recommends for speed: Protocol/Transport callbacks, not
streams (https://docs.python.org/3/library/asyncio-protocol.html).

  asyncio_peer.py --listen HOST:PORT [--to HOST:PORT] [--loop asyncio|uvloop]

Proxy: each accepted client pauses reading until its upstream connection
(loop.create_connection) is up; data_received() writes to the other side;
flow control is the documented one: pause_writing()/resume_writing() on one
side pause/resume reading on the other.  EOF half-closes the other side
(write_eof), and both close once both directions ended.  asyncio sets
TCP_NODELAY on TCP transports itself (uvloop too).

Echo: data_received() writes the data back, with the same flow control.

Prints "listening on HOST:PORT"; exits 0 on SIGINT/SIGTERM.  Runs on
Debian's /usr/bin/python3 (python3-uvloop belongs to it).
"""
import argparse
import asyncio
import signal
import sys


class Side(asyncio.Protocol):
    """One side of a proxied pair."""

    def __init__(self, peer=None):
        self.peer = peer
        self.transport = None
        self.eof = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.peer.transport.write(data)

    def pause_writing(self):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def eof_received(self):
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None:
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
            if peer.eof:
                self.transport.close()
                peer.transport.close()
        return True  # keep our sending side open for the other direction

    def connection_lost(self, exc):
        peer = self.peer
        self.peer = None
        if peer is not None and peer.transport is not None:
            peer.peer = None
            peer.transport.close()  # what it queued still goes out


class Client(Side):
    def __init__(self, to):
        super().__init__()
        self.to = to
        self.early = []  # data that came before the upstream was up

    def data_received(self, data):
        # pause_reading() in connection_made() does not stop a read that is
        # already scheduled (asyncio and uvloop alike): keep such data.
        if self.peer is None:
            self.early.append(data)
        else:
            self.peer.transport.write(data)

    def eof_received(self):
        if self.peer is None:
            self.early.append(None)
            return True
        return super().eof_received()

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.pause_reading()  # until the upstream is up
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self):
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(lambda: Side(self), *self.to)
        except OSError as e:
            print("proxy: connect to %s:%s: %s" % (self.to + (e,)),
                  file=sys.stderr)
            self.transport.abort()
            return
        if self.transport.is_closing():
            up.transport.abort()
            return
        self.peer = up
        for data in self.early:
            if data is None:
                super().eof_received()
            else:
                up.transport.write(data)
        self.early = None
        self.transport.resume_reading()


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def eof_received(self):
        return False  # close once written data is flushed


def hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


async def main(args):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    host, port = hostport(args.listen)
    if args.to:
        to = hostport(args.to)
        factory = lambda: Client(to)  # noqa: E731
    else:
        factory = Echo
    server = await loop.create_server(factory, host, port, backlog=4096,
                                      reuse_address=True)
    addr = server.sockets[0].getsockname()
    print("listening on %s:%d" % (addr[0], addr[1]), flush=True)
    await stop
    server.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="asyncio_peer")
    p.add_argument("--listen", required=True)
    p.add_argument("--to")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    a = p.parse_args()
    if a.loop == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(main(a))
    sys.exit(0)
