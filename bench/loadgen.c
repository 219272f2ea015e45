/*
 * loadgen.c - load client for echo servers and proxies.  Plain epoll and
 * nonblocking sockets: it shares nothing with the library under test.
 *
 *   loadgen --connect HOST:PORT [--conns N] [--size S] [--seconds T]
 *           [--pattern stream|pingpong] [--inflight K] [--batch B]
 *           [--half-close] [--json]
 *
 * Each connection sends one byte stream whose content is a function of the
 * stream offset and the connection (a 64-bit counter, mixed, per 8-byte
 * word), so every echoed byte can be checked wherever a read splits it.  The
 * stream is cut into messages of S bytes, written B messages per send()
 * (default 1).
 *   stream    write as fast as the peer takes it (at most K unverified
 *             messages per connection if --inflight is given).
 *   pingpong  K messages in flight per connection (default 1); the latency
 *             of each, from its send() to its last echoed byte, goes into a
 *             histogram (p50/p99).
 * After T seconds the counts are taken, writing stops and every byte sent is
 * awaited (up to 5 s) and verified: a wrong byte, a missing one, an early EOF
 * or a reset is an error.  With --half-close each connection then shuts its
 * sending side (like `socat` at the end of its input) and must still get
 * every byte back, followed by EOF.
 *
 * Reports echoed messages per second (fully verified within T), MB/s, p50/p99
 * for pingpong, errors, and (--json) its own CPU seconds over the T seconds,
 * so that a run can show loadgen was not the bottleneck.
 *
 *   loadgen --proto udp --connect HOST:PORT [--conns N] [--size S]
 *           [--seconds T] [--inflight K] [--json]
 *
 * UDP echo mode: N connected UDP sockets, each with a window of at most K
 * datagrams of S bytes in flight (default 32), sent with sendmmsg() as the
 * window opens and received with recvmmsg().  A datagram is its sequence
 * number (64-bit, little-endian), the socket's number (32-bit) and then the
 * socket's pattern at stream offset seq * S + 12, so its content is a
 * function of (socket, seq) and S >= 12.  Every echo is checked: its length
 * (S; a longer one is reported, never cut silently), that it belongs to the
 * socket it came back to, that its seq is in flight (not a duplicate), and
 * every byte; its round trip (from the sendmmsg() to its arrival) goes into
 * the p50/p99 histogram.  A slot of the window is freed only by its echo:
 * a lost datagram keeps its slot until the end, so losses show as a stalled
 * window, never as a hidden retransmission.  After T seconds the counts are
 * taken, sending stops and every datagram in flight is awaited for 2 s; the
 * ones that never came back are reported as lost (datagrams and bytes; on
 * loopback with a window that fits the server's receive buffer there are
 * none).  --pattern, --batch and --half-close are for TCP only.
 *
 * Exit 0, 1 (setup failed), 2 (any data error: a mismatch, a wrong length,
 * a datagram of another socket or not in flight, a socket error; UDP
 * losses alone are reported, not an error).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "netutil.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256u * 1024)  /* largest single send() / recv()          */
#define WRITE_BURST 64       /* sends per connection per wakeup         */
#define READ_BURST 16        /* recvs per connection per wakeup         */
#define CONNECT_SECS 5.0
#define DRAIN_SECS 5.0
#define MAX_CONNS 10000
/* UDP mode */
#define UDP_BATCH 32         /* datagrams per sendmmsg() / recvmmsg()   */
#define UDP_HDR 12           /* seq (8) + socket number (4)             */
#define UDP_MAX 65507        /* the largest UDP payload over IPv4       */
#define UDP_INFLIGHT 32      /* default window per socket               */
#define UDP_DRAIN_SECS 2.0   /* wait for the datagrams in flight        */
#define MAX_ERR_LINES 20     /* datagram errors printed (all counted)   */
#define NO_SEQ UINT64_MAX

/* Latency histogram: log-linear, 64 steps per power of two (1.6%). */
#define HSUB 64
#define HBUCKETS (60 * HSUB)

struct cfg {
	const char *connect;
	unsigned conns;
	size_t size;
	double seconds;
	int pingpong;
	unsigned inflight;  /* 0: unlimited (stream only) */
	unsigned batch;
	int half_close;
	int json;
	int udp;            /* --proto udp */
};

struct lconn {
	int fd;
	unsigned id;
	uint64_t key;
	uint64_t tx_off;     /* bytes sent                            */
	uint64_t rx_off;     /* bytes received and verified            */
	double *ts;          /* pingpong: send time of message m at [m % K] */
	int want_out;        /* EPOLLOUT in the interest set           */
	int dead;            /* closed: error, or EOF after everything */
	int eof;             /* the server's EOF arrived                */
	/* UDP: */
	uint64_t *pend;      /* seq in flight in slot [seq % K], or NO_SEQ */
	uint64_t tx_dg;      /* datagrams sent (next seq)              */
	uint64_t rx_dg;      /* datagrams echoed and verified          */
	unsigned outstanding; /* datagrams in flight                   */
};

static struct cfg cfg = {
	.conns = 1, .size = 64, .seconds = 3.0, .batch = 1,
};
static struct lconn *conns;
static int ep = -1;
static int running;          /* phase: 1 measuring, 0 draining          */
static unsigned errors;
static uint64_t hist[HBUCKETS];
static uint64_t hist_n;
static uint8_t *wbuf, *rbuf, *ebuf;
static volatile sig_atomic_t interrupted;
static unsigned err_lines;

/* CPU seconds (user + system) this process has used. */
static double cpu_s(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the pattern ------------------------------------------------------ */

static uint64_t pat_word(uint64_t key, uint64_t k)
{
	/* Multiplying by an odd constant is a bijection: no two words of one
	 * stream are equal, and the key separates streams. */
	return (k * 0x9E3779B97F4A7C15ull) ^ key;
}

static void pat_fill(uint8_t *dst, uint64_t key, uint64_t off, size_t len)
{
	uint64_t w;

	for (; len && (off & 7); len--, off++)
		*dst++ = (uint8_t)(pat_word(key, off >> 3) >> (8 * (off & 7)));
	for (; len >= 8; len -= 8, off += 8, dst += 8) {
		w = htole64(pat_word(key, off >> 3));
		memcpy(dst, &w, 8);
	}
	for (; len; len--, off++)
		*dst++ = (uint8_t)(pat_word(key, off >> 3) >> (8 * (off & 7)));
}

static uint64_t conn_key(unsigned id)
{
	uint64_t z = (uint64_t)id + 0x5bd1e995u;

	/* splitmix64 finaliser */
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ---- latency histogram ------------------------------------------------ */

static void hist_add(double secs)
{
	uint64_t v = secs <= 0 ? 0 : (uint64_t)(secs * 1e9);
	unsigned idx, e;

	if (v < HSUB) {
		idx = (unsigned)v;
	} else {
		e = 63u - (unsigned)__builtin_clzll(v); /* >= 6 */
		idx = (e - 5) * HSUB + (unsigned)((v >> (e - 6)) & (HSUB - 1));
	}
	if (idx >= HBUCKETS)
		idx = HBUCKETS - 1;
	hist[idx]++;
	hist_n++;
}

/* Value (ns) at quantile q: the middle of its bucket. */
static double hist_quantile(double q)
{
	uint64_t want, seen = 0;
	unsigned idx, e, sub;
	double lo, width;

	if (!hist_n)
		return 0;
	want = (uint64_t)(q * (double)hist_n);
	if ((double)want < q * (double)hist_n)
		want++;
	if (want < 1)
		want = 1;
	for (idx = 0; idx < HBUCKETS; idx++) {
		seen += hist[idx];
		if (seen >= want)
			break;
	}
	if (idx < HSUB)
		return idx;
	e = idx / HSUB + 5;
	sub = idx % HSUB;
	lo = (double)((uint64_t)(HSUB + sub) << (e - 6));
	width = (double)(1ull << (e - 6));
	return lo + width / 2;
}

/* ---- connections ------------------------------------------------------ */

static void conn_fail(struct lconn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void conn_fail(struct lconn *c, const char *fmt, ...)
{
	va_list ap;

	errors++;
	fprintf(stderr, "loadgen: conn %u: ", c->id);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->dead = 1;
}

static void set_want_out(struct lconn *c, int want)
{
	struct epoll_event ev;

	if (c->want_out == want || c->dead)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN | (want ? EPOLLOUT : 0);
	ev.data.ptr = c;
	if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->want_out = want;
}

/* How far this connection may send now. */
static uint64_t tx_limit(const struct lconn *c)
{
	if (!running)
		return c->tx_off;
	if (!cfg.inflight)
		return UINT64_MAX;
	return (c->rx_off / cfg.size + cfg.inflight) * cfg.size;
}

static void conn_write(struct lconn *c)
{
	uint64_t limit, end, m;
	size_t len;
	ssize_t w;
	double t;
	unsigned n;

	for (n = 0; n < WRITE_BURST && !c->dead; n++) {
		limit = tx_limit(c);
		if (c->tx_off >= limit) {
			set_want_out(c, 0);
			return;
		}
		/* Up to the end of --batch messages, within the limit. */
		end = (c->tx_off / cfg.size + cfg.batch) * cfg.size;
		if (end > limit)
			end = limit;
		len = end - c->tx_off > CHUNK ? CHUNK : (size_t)(end - c->tx_off);
		pat_fill(wbuf, c->key, c->tx_off, len);
		t = cfg.pingpong ? now_s() : 0;
		w = send(c->fd, wbuf, len, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				set_want_out(c, 1);
				return;
			}
			conn_fail(c, "send at offset %llu: %s",
				  (unsigned long long)c->tx_off, strerror(errno));
			return;
		}
		if (cfg.pingpong) {
			/* Stamp every message whose first byte just left. */
			m = (c->tx_off + cfg.size - 1) / cfg.size;
			for (; m * cfg.size < c->tx_off + (uint64_t)w; m++)
				c->ts[m % cfg.inflight] = t;
		}
		c->tx_off += (uint64_t)w;
		if ((size_t)w < len) {
			set_want_out(c, 1);
			return;
		}
	}
	set_want_out(c, 1); /* more to send: come back */
}

static void verify_fail(struct lconn *c, const uint8_t *got, size_t len)
{
	size_t i;

	for (i = 0; i < len && got[i] == ebuf[i]; i++)
		;
	conn_fail(c,
		  "data mismatch at stream offset %llu (message %llu, byte %llu): "
		  "expected 0x%02x, got 0x%02x",
		  (unsigned long long)(c->rx_off + i),
		  (unsigned long long)((c->rx_off + i) / cfg.size),
		  (unsigned long long)((c->rx_off + i) % cfg.size), ebuf[i],
		  got[i]);
}

static void conn_read(struct lconn *c)
{
	uint64_t m;
	ssize_t r;
	unsigned n;
	double t;

	for (n = 0; n < READ_BURST && !c->dead; n++) {
		r = recv(c->fd, rbuf, CHUNK, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_fail(c, "recv at offset %llu: %s",
				  (unsigned long long)c->rx_off, strerror(errno));
			return;
		}
		if (r == 0 && cfg.half_close && !running &&
		    c->rx_off == c->tx_off) {
			/* All echoed, then the server's EOF: done. */
			c->eof = 1;
			epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
			close(c->fd);
			c->fd = -1;
			c->dead = 1;
			return;
		}
		if (r == 0) {
			conn_fail(c, "EOF from the server after %llu of %llu bytes",
				  (unsigned long long)c->rx_off,
				  (unsigned long long)c->tx_off);
			return;
		}
		if (c->rx_off + (uint64_t)r > c->tx_off) {
			conn_fail(c, "received %llu bytes but sent only %llu",
				  (unsigned long long)(c->rx_off + (uint64_t)r),
				  (unsigned long long)c->tx_off);
			return;
		}
		pat_fill(ebuf, c->key, c->rx_off, (size_t)r);
		if (memcmp(rbuf, ebuf, (size_t)r)) {
			verify_fail(c, rbuf, (size_t)r);
			return;
		}
		if (cfg.pingpong && running) {
			t = now_s();
			/* Messages whose last byte just arrived. */
			m = c->rx_off / cfg.size;
			for (; (m + 1) * cfg.size <= c->rx_off + (uint64_t)r; m++)
				hist_add(t - c->ts[m % cfg.inflight]);
		}
		c->rx_off += (uint64_t)r;
	}
	/* A window may have opened. */
	if (!c->dead && cfg.inflight && running)
		conn_write(c);
}

/* ---- UDP mode --------------------------------------------------------- */

static uint8_t *urbuf;          /* UDP_BATCH receive slots of urslot bytes */
static size_t urslot;

/* The datagram seq of socket c: header, then the socket's pattern. */
static void dg_fill(uint8_t *dst, const struct lconn *c, uint64_t seq)
{
	uint64_t s = htole64(seq);
	uint32_t id = htole32(c->id);

	memcpy(dst, &s, 8);
	memcpy(dst + 8, &id, 4);
	pat_fill(dst + UDP_HDR, c->key, seq * cfg.size + UDP_HDR,
		 cfg.size - UDP_HDR);
}

/* A bad datagram: counted; the first MAX_ERR_LINES are printed. */
static void dg_error(const struct lconn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void dg_error(const struct lconn *c, const char *fmt, ...)
{
	va_list ap;

	errors++;
	if (++err_lines > MAX_ERR_LINES) {
		if (err_lines == MAX_ERR_LINES + 1)
			fprintf(stderr, "loadgen: more datagram errors (counted, "
					"not printed)\n");
		return;
	}
	fprintf(stderr, "loadgen: socket %u: ", c->id);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Send while the window has room (running only). */
static void udp_send(struct lconn *c)
{
	struct mmsghdr msgs[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	unsigned n, i, k = cfg.inflight;
	uint64_t seq;
	double t;
	int r;

	while (running && !c->dead) {
		/* n < k: the slots of one batch are distinct */
		for (n = 0; n < UDP_BATCH && n < k; n++) {
			seq = c->tx_dg + n;
			if (c->pend[seq % k] != NO_SEQ)
				break; /* the window is full (or stalled) */
			dg_fill(wbuf + (size_t)n * cfg.size, c, seq);
			iov[n].iov_base = wbuf + (size_t)n * cfg.size;
			iov[n].iov_len = cfg.size;
			memset(&msgs[n], 0, sizeof(msgs[n]));
			msgs[n].msg_hdr.msg_iov = &iov[n];
			msgs[n].msg_hdr.msg_iovlen = 1;
		}
		if (!n) {
			set_want_out(c, 0);
			return;
		}
		t = now_s();
		r = sendmmsg(c->fd, msgs, n, MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == ENOBUFS) {
				set_want_out(c, 1);
				return;
			}
			conn_fail(c, "sendmmsg of datagram %llu: %s",
				  (unsigned long long)c->tx_dg, strerror(errno));
			return;
		}
		for (i = 0; i < (unsigned)r; i++) {
			seq = c->tx_dg + i;
			c->pend[seq % k] = seq;
			c->ts[seq % k] = t;
		}
		c->tx_dg += (unsigned)r;
		c->outstanding += (unsigned)r;
		if ((unsigned)r < n) {
			set_want_out(c, 1);
			return;
		}
	}
	set_want_out(c, 0);
}

/* Check one echoed datagram of len bytes (its real length) at d. */
static void dg_check(struct lconn *c, const uint8_t *d, size_t len, double t)
{
	uint64_t seq;
	uint32_t id;
	unsigned slot;
	size_t i;

	if (len != cfg.size) {
		dg_error(c, "an echoed datagram of %zu bytes (sent: %zu)%s", len,
			 cfg.size, len > cfg.size ? ", truncated here" : "");
		return;
	}
	memcpy(&seq, d, 8);
	seq = le64toh(seq);
	memcpy(&id, d + 8, 4);
	id = le32toh(id);
	if (id != c->id) {
		dg_error(c, "received a datagram of socket %u (seq %llu): echoed "
			    "to the wrong sender", id, (unsigned long long)seq);
		return;
	}
	slot = (unsigned)(seq % cfg.inflight);
	if (c->pend[slot] != seq) {
		dg_error(c, "received datagram %llu, which is not in flight (a "
			    "duplicate, or never sent: %llu sent)",
			 (unsigned long long)seq,
			 (unsigned long long)c->tx_dg);
		return;
	}
	/* It answers its slot, right or wrong: free it. */
	c->pend[slot] = NO_SEQ;
	c->outstanding--;
	dg_fill(ebuf, c, seq);
	if (memcmp(d, ebuf, len)) {
		for (i = 0; i < len && d[i] == ebuf[i]; i++)
			;
		dg_error(c, "datagram %llu: mismatch at byte %zu: expected "
			    "0x%02x, got 0x%02x", (unsigned long long)seq, i,
			 ebuf[i], d[i]);
		return;
	}
	c->rx_dg++;
	if (running)
		hist_add(t - c->ts[slot]);
}

static void udp_read(struct lconn *c)
{
	struct mmsghdr msgs[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	unsigned n, i;
	double t;
	int r;

	for (n = 0; n < READ_BURST && !c->dead; n++) {
		for (i = 0; i < UDP_BATCH; i++) {
			iov[i].iov_base = urbuf + (size_t)i * urslot;
			iov[i].iov_len = urslot;
			memset(&msgs[i], 0, sizeof(msgs[i]));
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
		}
		/* MSG_TRUNC: msg_len is the datagram's real length. */
		r = recvmmsg(c->fd, msgs, UDP_BATCH, MSG_DONTWAIT | MSG_TRUNC,
			     NULL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_fail(c, "recvmmsg after %llu echoes: %s%s",
				  (unsigned long long)c->rx_dg, strerror(errno),
				  errno == ECONNREFUSED ? " (no server on "
							  "that port)" : "");
			return;
		}
		t = now_s();
		for (i = 0; i < (unsigned)r; i++)
			dg_check(c, urbuf + (size_t)i * urslot,
				 msgs[i].msg_len, t);
		if ((unsigned)r < UDP_BATCH)
			break;
	}
	/* The window may have opened. */
	if (!c->dead && running)
		udp_send(c);
}

/* Open and connect every socket (connect() of UDP does not block). */
static void udp_open_all(const struct addrinfo *ai)
{
	struct epoll_event ev;
	unsigned i, j;
	int rcv;

	/* Room for a whole window of echoes, whatever the default. */
	rcv = (int)((size_t)cfg.inflight * (cfg.size + 1024) > (1u << 30)
		    ? (1u << 30) : (size_t)cfg.inflight * (cfg.size + 1024));
	for (i = 0; i < cfg.conns; i++) {
		struct lconn *c = &conns[i];

		c->id = i;
		c->key = conn_key(i);
		c->pend = malloc(cfg.inflight * sizeof(*c->pend));
		c->ts = calloc(cfg.inflight, sizeof(double));
		if (!c->pend || !c->ts) {
			fprintf(stderr, "loadgen: out of memory\n");
			exit(1);
		}
		for (j = 0; j < cfg.inflight; j++)
			c->pend[j] = NO_SEQ;
		c->fd = socket(ai->ai_family,
			       SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
			       IPPROTO_UDP);
		if (c->fd < 0) {
			fprintf(stderr, "loadgen: socket: %s\n", strerror(errno));
			exit(1);
		}
		setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
		if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			fprintf(stderr, "loadgen: connect (udp) to %s: %s\n",
				cfg.connect, strerror(errno));
			exit(1);
		}
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
			fprintf(stderr, "loadgen: epoll_ctl: %s\n", strerror(errno));
			exit(1);
		}
	}
}

static int udp_main(void)
{
	struct epoll_event evs[256];
	struct addrinfo *ai;
	double t0, deadline, drain_deadline = 0, now, elapsed = 0, t_end;
	double p50, p99, mps, mbps, cpu0, cpu = 0;
	uint64_t msgs = 0, sent = 0, lost = 0;
	unsigned i, live, lost_socks = 0;
	int n, k, timeout;
	char human[512];

	conns = calloc(cfg.conns, sizeof(*conns));
	wbuf = malloc((size_t)UDP_BATCH * cfg.size);
	urslot = (cfg.size + 1 + 63) & ~(size_t)63; /* longer: reported */
	urbuf = malloc((size_t)UDP_BATCH * urslot);
	ebuf = malloc(cfg.size);
	if (!conns || !wbuf || !urbuf || !ebuf) {
		fprintf(stderr, "loadgen: out of memory\n");
		return 1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		fprintf(stderr, "loadgen: epoll_create1: %s\n", strerror(errno));
		return 1;
	}
	ai = bench_resolve("loadgen", cfg.connect);
	udp_open_all(ai);
	freeaddrinfo(ai);

	running = 1;
	cpu0 = cpu_s();
	t0 = now_s();
	deadline = t0 + cfg.seconds;
	for (i = 0; i < cfg.conns; i++)
		udp_send(&conns[i]);

	for (;;) {
		now = now_s();
		if (running && (now >= deadline || interrupted)) {
			/* Take the counts, then stop sending and drain. */
			elapsed = now - t0;
			cpu = cpu_s() - cpu0;
			for (i = 0; i < cfg.conns; i++)
				msgs += conns[i].rx_dg;
			running = 0;
			for (i = 0; i < cfg.conns; i++)
				set_want_out(&conns[i], 0);
			drain_deadline = now + UDP_DRAIN_SECS;
		}
		if (!running) {
			live = 0;
			for (i = 0; i < cfg.conns; i++)
				if (!conns[i].dead && conns[i].outstanding)
					live++;
			if (!live || now >= drain_deadline || interrupted > 1)
				break;
		}
		t_end = running ? deadline : drain_deadline;
		timeout = (int)((t_end - now) * 1000) + 1;
		if (timeout < 1)
			timeout = 1;
		n = epoll_wait(ep, evs, 256, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "loadgen: epoll_wait: %s\n", strerror(errno));
			return 1;
		}
		for (k = 0; k < n; k++) {
			struct lconn *c = evs[k].data.ptr;

			if (!c->dead &&
			    (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
				udp_read(c);
			if (!c->dead && (evs[k].events & EPOLLOUT))
				udp_send(c);
		}
	}
	/* Whatever is still in flight (on a failed socket too) is lost. */
	for (i = 0; i < cfg.conns; i++) {
		sent += conns[i].tx_dg;
		if (conns[i].outstanding) {
			lost += conns[i].outstanding;
			lost_socks++;
		}
	}
	if (lost)
		fprintf(stderr,
			"loadgen: %llu of %llu datagrams lost (on %u of %u sockets): "
			"not echoed within %.0f s of the end\n",
			(unsigned long long)lost, (unsigned long long)sent,
			lost_socks, cfg.conns, UDP_DRAIN_SECS);

	for (i = 0; i < cfg.conns; i++) {
		if (conns[i].fd >= 0)
			close(conns[i].fd);
		free(conns[i].ts);
		free(conns[i].pend);
	}
	close(ep);
	free(conns);
	free(wbuf);
	free(urbuf);
	free(ebuf);

	if (elapsed <= 0)
		elapsed = 1e-9;
	mps = (double)msgs / elapsed;
	mbps = (double)msgs * (double)cfg.size / elapsed / 1e6;
	p50 = hist_quantile(0.50) / 1e3;
	p99 = hist_quantile(0.99) / 1e3;
	snprintf(human, sizeof(human),
		 "udp: %u sockets x %zu B, %.2f s: %.0f datagrams/s, %.2f MB/s, "
		 "p50 %.1f us, p99 %.1f us (inflight %u), lost %llu, errors %u",
		 cfg.conns, cfg.size, elapsed, mps, mbps, p50, p99, cfg.inflight,
		 (unsigned long long)lost, errors);
	if (cfg.json) {
		fprintf(stderr, "%s\n", human);
		printf("{\"pattern\":\"udp\",\"proto\":\"udp\",\"conns\":%u,"
		       "\"size\":%zu,\"seconds\":%.3f,\"messages\":%llu,"
		       "\"bytes\":%llu,\"msgs_per_s\":%.1f,\"mb_per_s\":%.3f,"
		       "\"inflight\":%u,\"p50_us\":%.2f,\"p99_us\":%.2f,"
		       "\"cpu_s\":%.3f,\"sent\":%llu,\"lost\":%llu,"
		       "\"lost_bytes\":%llu,\"errors\":%u}\n",
		       cfg.conns, cfg.size, elapsed, (unsigned long long)msgs,
		       (unsigned long long)(msgs * cfg.size), mps, mbps,
		       cfg.inflight, p50, p99, cpu, (unsigned long long)sent,
		       (unsigned long long)lost,
		       (unsigned long long)(lost * cfg.size), errors);
	} else {
		printf("%s\n", human);
	}
	fflush(stdout);
	return errors ? 2 : 0;
}

/* ---- setup ------------------------------------------------------------ */

/* Connect every connection; all must succeed within CONNECT_SECS. */
static void connect_all(const struct addrinfo *ai)
{
	struct epoll_event ev, evs[64];
	double deadline = now_s() + CONNECT_SECS;
	unsigned pending = 0, i;
	socklen_t sl;
	int one = 1, n, k, soerr;

	for (i = 0; i < cfg.conns; i++) {
		struct lconn *c = &conns[i];

		c->id = i;
		c->key = conn_key(i);
		c->fd = socket(ai->ai_family,
			       ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			       ai->ai_protocol);
		if (c->fd < 0) {
			fprintf(stderr, "loadgen: socket: %s\n", strerror(errno));
			exit(1);
		}
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 &&
		    errno != EINPROGRESS) {
			fprintf(stderr, "loadgen: connect to %s: %s\n",
				cfg.connect, strerror(errno));
			exit(1);
		}
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLOUT;
		ev.data.ptr = c;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
			fprintf(stderr, "loadgen: epoll_ctl: %s\n", strerror(errno));
			exit(1);
		}
		c->want_out = -1; /* connecting */
		pending++;
	}
	while (pending) {
		double left = deadline - now_s();

		if (left <= 0) {
			fprintf(stderr,
				"loadgen: %u of %u connections to %s not established after %.0f s\n",
				pending, cfg.conns, cfg.connect, CONNECT_SECS);
			exit(1);
		}
		n = epoll_wait(ep, evs, 64, (int)(left * 1000) + 1);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "loadgen: epoll_wait: %s\n", strerror(errno));
			exit(1);
		}
		for (k = 0; k < n; k++) {
			struct lconn *c = evs[k].data.ptr;

			if (c->want_out != -1)
				continue;
			soerr = 0;
			sl = sizeof(soerr);
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
			if (soerr) {
				fprintf(stderr, "loadgen: connect to %s: %s\n",
					cfg.connect, strerror(soerr));
				exit(1);
			}
			memset(&ev, 0, sizeof(ev));
			ev.events = EPOLLIN;
			ev.data.ptr = c;
			epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
			c->want_out = 0;
			pending--;
		}
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: loadgen --connect HOST:PORT [--conns N] [--size BYTES]\n"
		"               [--seconds T] [--pattern stream|pingpong]\n"
		"               [--inflight K] [--batch B] [--half-close] [--json]\n"
		"       loadgen --proto udp --connect HOST:PORT [--conns N]\n"
		"               [--size BYTES] [--seconds T] [--inflight K] [--json]\n"
		"  --proto P       tcp (default) or udp: N UDP sockets, K datagrams\n"
		"                  of S bytes in flight each, every echo verified,\n"
		"                  round trip p50/p99, losses reported\n"
		"  --conns N       connections, or UDP sockets (default 1)\n"
		"  --size BYTES    message size (default 64); UDP: the datagram\n"
		"                  size, 12..65507\n"
		"  --seconds T     measuring time (default 3)\n"
		"  --pattern P     stream: send as fast as echoed (default);\n"
		"                  pingpong: K messages in flight, latency p50/p99\n"
		"  --inflight K    messages in flight per connection (pingpong\n"
		"                  default 1; stream default unlimited; udp\n"
		"                  default %u)\n"
		"  --batch B       messages per send() (default 1)\n"
		"  --half-close    after the run, shut down the sending side and\n"
		"                  expect every byte back, then EOF\n"
		"  --json          print one JSON object (the human line goes to stderr)\n"
		"Exit: 0 ok, 1 setup failed, 2 data errors (mismatch, loss, reset;\n"
		"UDP: mismatch, wrong length or sender, socket error; UDP losses\n"
		"alone are reported, not an error).\n", UDP_INFLIGHT);
}

static unsigned long parse_ulong(const char *name, const char *s,
				 unsigned long min, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "loadgen: %s wants an integer in %lu..%lu, not '%s'\n",
			name, min, max, s);
		exit(1);
	}
	return v;
}

static void parse_args(int argc, char **argv)
{
	enum { O_CONNECT = 1, O_CONNS, O_SIZE, O_SECONDS, O_PATTERN,
	       O_INFLIGHT, O_BATCH, O_HALF_CLOSE, O_JSON, O_HELP, O_PROTO };
	static const struct option longopts[] = {
		{ "connect", required_argument, NULL, O_CONNECT },
		{ "conns", required_argument, NULL, O_CONNS },
		{ "size", required_argument, NULL, O_SIZE },
		{ "seconds", required_argument, NULL, O_SECONDS },
		{ "pattern", required_argument, NULL, O_PATTERN },
		{ "inflight", required_argument, NULL, O_INFLIGHT },
		{ "batch", required_argument, NULL, O_BATCH },
		{ "half-close", no_argument, NULL, O_HALF_CLOSE },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, O_HELP },
		{ "proto", required_argument, NULL, O_PROTO },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int c, inflight_set = 0, tcp_only = 0;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case O_CONNECT:
			cfg.connect = optarg;
			break;
		case O_CONNS:
			cfg.conns = (unsigned)parse_ulong("--conns", optarg, 1,
							  MAX_CONNS);
			break;
		case O_SIZE:
			cfg.size = parse_ulong("--size", optarg, 1, 64ul << 20);
			break;
		case O_SECONDS:
			errno = 0;
			cfg.seconds = strtod(optarg, &end);
			if (errno || end == optarg || *end ||
			    !(cfg.seconds > 0 && cfg.seconds <= 86400)) {
				fprintf(stderr,
					"loadgen: --seconds wants a number in (0, 86400], not '%s'\n",
					optarg);
				exit(1);
			}
			break;
		case O_PROTO:
			if (!strcmp(optarg, "tcp")) {
				cfg.udp = 0;
			} else if (!strcmp(optarg, "udp")) {
				cfg.udp = 1;
			} else {
				fprintf(stderr,
					"loadgen: --proto is tcp or udp, not '%s'\n",
					optarg);
				exit(1);
			}
			break;
		case O_PATTERN:
			tcp_only = 1;
			if (!strcmp(optarg, "stream")) {
				cfg.pingpong = 0;
			} else if (!strcmp(optarg, "pingpong")) {
				cfg.pingpong = 1;
			} else {
				fprintf(stderr,
					"loadgen: --pattern is stream or pingpong, not '%s'\n",
					optarg);
				exit(1);
			}
			break;
		case O_INFLIGHT:
			cfg.inflight = (unsigned)parse_ulong("--inflight", optarg,
							     1, 1u << 20);
			inflight_set = 1;
			break;
		case O_BATCH:
			tcp_only = 1;
			cfg.batch = (unsigned)parse_ulong("--batch", optarg, 1,
							  1u << 20);
			break;
		case O_HALF_CLOSE:
			tcp_only = 1;
			cfg.half_close = 1;
			break;
		case O_JSON:
			cfg.json = 1;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			fprintf(stderr, "loadgen: bad option '%s'\n",
				argv[optind - 1]);
			usage(stderr);
			exit(1);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "loadgen: unexpected argument '%s'\n",
			argv[optind]);
		exit(1);
	}
	if (!cfg.connect) {
		fprintf(stderr, "loadgen: --connect HOST:PORT is required\n");
		usage(stderr);
		exit(1);
	}
	if (cfg.pingpong && !inflight_set)
		cfg.inflight = 1;
	if (cfg.udp) {
		if (tcp_only) {
			fprintf(stderr, "loadgen: --pattern, --batch and "
					"--half-close are for --proto tcp\n");
			exit(1);
		}
		if (cfg.size < UDP_HDR || cfg.size > UDP_MAX) {
			fprintf(stderr, "loadgen: --size wants %u..%u bytes for "
					"--proto udp, not %zu\n", UDP_HDR, UDP_MAX,
				cfg.size);
			exit(1);
		}
		if (!inflight_set)
			cfg.inflight = UDP_INFLIGHT;
	}
}

static void on_signal(int sig)
{
	(void)sig;
	/* The first stops measuring; a second one stops the drain too. */
	interrupted = interrupted + 1;
}

/* ---- main ------------------------------------------------------------- */

int main(int argc, char **argv)
{
	struct epoll_event evs[256];
	struct sigaction sa;
	struct addrinfo *ai;
	double t0, t_end, deadline, drain_deadline = 0, now, elapsed = 0;
	double p50 = 0, p99 = 0, mps, mbps, cpu0, cpu = 0;
	uint64_t msgs = 0, bytes = 0, lost = 0;
	unsigned i, live;
	int n, k, timeout;
	char human[512];

	parse_args(argc, argv);

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	if (cfg.udp)
		return udp_main();

	conns = calloc(cfg.conns, sizeof(*conns));
	wbuf = malloc(CHUNK);
	rbuf = malloc(CHUNK);
	ebuf = malloc(CHUNK);
	if (!conns || !wbuf || !rbuf || !ebuf) {
		fprintf(stderr, "loadgen: out of memory\n");
		return 1;
	}
	if (cfg.pingpong) {
		for (i = 0; i < cfg.conns; i++) {
			conns[i].ts = calloc(cfg.inflight, sizeof(double));
			if (!conns[i].ts) {
				fprintf(stderr, "loadgen: out of memory\n");
				return 1;
			}
		}
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		fprintf(stderr, "loadgen: epoll_create1: %s\n", strerror(errno));
		return 1;
	}
	ai = bench_resolve("loadgen", cfg.connect);
	connect_all(ai);
	freeaddrinfo(ai);

	running = 1;
	cpu0 = cpu_s();
	t0 = now_s();
	deadline = t0 + cfg.seconds;
	for (i = 0; i < cfg.conns; i++)
		conn_write(&conns[i]);

	for (;;) {
		now = now_s();
		if (running && (now >= deadline || interrupted)) {
			/* Take the counts, then stop sending and drain. */
			elapsed = now - t0;
			cpu = cpu_s() - cpu0;
			for (i = 0; i < cfg.conns; i++) {
				msgs += conns[i].rx_off / cfg.size;
				bytes += conns[i].rx_off;
			}
			running = 0;
			for (i = 0; i < cfg.conns; i++) {
				set_want_out(&conns[i], 0);
				if (cfg.half_close && !conns[i].dead &&
				    shutdown(conns[i].fd, SHUT_WR) < 0)
					conn_fail(&conns[i], "shutdown: %s",
						  strerror(errno));
			}
			drain_deadline = now + DRAIN_SECS;
		}
		if (!running) {
			live = 0;
			for (i = 0; i < cfg.conns; i++)
				if (!conns[i].dead &&
				    (conns[i].rx_off < conns[i].tx_off ||
				     cfg.half_close))
					live++;
			if (!live)
				break;
			if (now >= drain_deadline || interrupted > 1) {
				for (i = 0; i < cfg.conns; i++) {
					struct lconn *c = &conns[i];

					if (c->dead ||
					    (!cfg.half_close &&
					     c->rx_off == c->tx_off))
						continue;
					if (c->rx_off == c->tx_off) {
						conn_fail(c,
							  "no EOF within %.0f s of the half-close",
							  DRAIN_SECS);
						continue;
					}
					lost += c->tx_off - c->rx_off;
					conn_fail(c,
						  "%llu of %llu bytes never came back (waited %.0f s)",
						  (unsigned long long)(c->tx_off - c->rx_off),
						  (unsigned long long)c->tx_off,
						  DRAIN_SECS);
				}
				break;
			}
		}
		t_end = running ? deadline : drain_deadline;
		timeout = (int)((t_end - now) * 1000) + 1;
		if (timeout < 1)
			timeout = 1;
		n = epoll_wait(ep, evs, 256, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "loadgen: epoll_wait: %s\n", strerror(errno));
			return 1;
		}
		for (k = 0; k < n; k++) {
			struct lconn *c = evs[k].data.ptr;

			if (!c->dead &&
			    (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
				conn_read(c);
			if (!c->dead && (evs[k].events & EPOLLOUT))
				conn_write(c);
		}
	}

	for (i = 0; i < cfg.conns; i++) {
		if (conns[i].fd >= 0)
			close(conns[i].fd);
		free(conns[i].ts);
	}
	close(ep);
	free(conns);
	free(wbuf);
	free(rbuf);
	free(ebuf);

	if (elapsed <= 0)
		elapsed = 1e-9;
	mps = (double)msgs / elapsed;
	mbps = (double)bytes / elapsed / 1e6;
	if (cfg.pingpong) {
		p50 = hist_quantile(0.50) / 1e3;
		p99 = hist_quantile(0.99) / 1e3;
	}
	n = snprintf(human, sizeof(human),
		     "%s: %u conns x %zu B, %.2f s: %.0f msgs/s, %.2f MB/s",
		     cfg.pingpong ? "pingpong" : "stream", cfg.conns, cfg.size,
		     elapsed, mps, mbps);
	if (cfg.pingpong && n > 0 && (size_t)n < sizeof(human))
		n += snprintf(human + n, sizeof(human) - (size_t)n,
			      ", p50 %.1f us, p99 %.1f us (inflight %u)", p50,
			      p99, cfg.inflight);
	if (n > 0 && (size_t)n < sizeof(human))
		snprintf(human + n, sizeof(human) - (size_t)n, ", errors %u",
			 errors);
	if (cfg.json) {
		fprintf(stderr, "%s\n", human);
		printf("{\"pattern\":\"%s\",\"conns\":%u,\"size\":%zu,"
		       "\"seconds\":%.3f,\"messages\":%llu,\"bytes\":%llu,"
		       "\"msgs_per_s\":%.1f,\"mb_per_s\":%.3f,",
		       cfg.pingpong ? "pingpong" : "stream", cfg.conns,
		       cfg.size, elapsed, (unsigned long long)msgs,
		       (unsigned long long)bytes, mps, mbps);
		if (cfg.pingpong)
			printf("\"inflight\":%u,\"p50_us\":%.2f,\"p99_us\":%.2f,",
			       cfg.inflight, p50, p99);
		else
			printf("\"p50_us\":null,\"p99_us\":null,");
		printf("\"cpu_s\":%.3f,\"lost_bytes\":%llu,\"errors\":%u}\n",
		       cpu, (unsigned long long)lost, errors);
	} else {
		printf("%s\n", human);
	}
	fflush(stdout);
	return errors ? 2 : 0;
}
