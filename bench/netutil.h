/*
 * netutil.h - what the benchmark's client programs (loadgen, fairprobe)
 * share.  Like them, it exits 1 with one line on stderr when it fails: these
 * are programs, not libraries.
 */
#ifndef UB_BENCH_NETUTIL_H
#define UB_BENCH_NETUTIL_H

#include <netdb.h>

/* "HOST:PORT" or "[IPV6]:PORT" (numeric port) -> addrinfo list, or exit 1
 * naming prog.  An empty host means the local machine. */
struct addrinfo *bench_resolve(const char *prog, const char *hostport);

#endif
