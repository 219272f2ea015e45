#!/usr/bin/python3
"""udp_peer.py - the asyncio (or uvloop) UDP contender of bench/run: a UDP
echo server written the fastest idiomatic way, a DatagramProtocol whose
datagram_received() sends every datagram straight back to its sender with
transport.sendto(data, addr)
(https://docs.python.org/3/library/asyncio-protocol.html#datagram-protocols).

  udp_peer.py --listen HOST:PORT [--loop asyncio|uvloop]

The endpoint comes from loop.create_datagram_endpoint(local_addr=...); the
socket buffers are the system's defaults, as for the uringbuf examples.
Port 0 picks a free port; prints "listening on HOST:PORT"; exits 0 on
SIGINT/SIGTERM.  Runs on Debian's /usr/bin/python3 (python3-uvloop belongs
to it).
"""
import argparse
import asyncio
import signal
import sys


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)

    def error_received(self, exc):
        pass  # an ICMP error for one sender: the endpoint goes on


def hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


async def main(args):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=hostport(args.listen))
    addr = transport.get_extra_info("sockname")
    host = "[%s]" % addr[0] if ":" in addr[0] else addr[0]
    print("listening on %s:%d" % (host, addr[1]), flush=True)
    await stop
    transport.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="udp_peer")
    p.add_argument("--listen", required=True)
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    a = p.parse_args()
    if a.loop == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(main(a))
    sys.exit(0)
