/*
 * fuzz_api.c - libFuzzer harness: the input is a program of uringbuf API
 * calls over two connected pairs of connections (both ends of each pair in
 * one loop), and a model of every byte stream and every buffer checks the
 * library as it runs.  Any violation calls abort(), which libFuzzer (with
 * ASan/UBSan) reports with the input that caused it.
 *
 * Pairs: P0 = (c0, c1), P1 = (c2, c3), each an AF_UNIX socketpair or a TCP
 * loopback pair (chosen by the input), with small socket buffers.  One send
 * pool (32 x 512 B) and one receive pool (32 x 256 B) for all but c3, which
 * has a receive pool of its own (see run()).  c1 is a
 * relay: what it receives goes to c2's send queue, either by the harness
 * (DATA -> ub_conn_send_buf, with a FIFO backlog when refused) or by the
 * core (ub_conn_pipe(c1, c2)), switchable at any time by the input.  c2
 * sends nothing else.  So:
 *   - c1 and c0 exchange app data; c3 sends app data to c2;
 *   - c3 receives exactly a prefix of what c0 sent (through the relay).
 * Each conn's outgoing stream (out[]) is the concatenation, in acceptance
 * order, of what ub_conn_send / ub_conn_send_buf accepted; every DATA is
 * compared with it at the receiver's offset.
 *
 * Checked after each step: every pool's states add up to its count; APP
 * buffers equal what the harness holds; QUEUED buffers equal the sum of
 * ub_conn_queued_bufs() over live connections.  Per event: nothing for a
 * conn after its CLOSED, at most one CLOSED and one EOF each, an EOF from a
 * peer that closed gracefully comes after every byte it queued.  At the end
 * every conn is closed, every pool idle, ub_loop_free() returns 0 and the
 * process has as many fds as before.
 *
 * Lifetime: the conns the input picks are held (ub_conn_hold) from the
 * start; after its CLOSED a held conn stays allocated: is_closed is 0 until
 * the next wait, then 1, and every operation on it fails (-EPIPE).  Half of
 * them are released before ub_loop_free(), the others after it (detached:
 * ub_conn_loop() NULL).  ASan finds a use after free or a leak.
 *
 * Datagrams: four endpoints on the same loop.  D0 and D1 are the two ends
 * of an AF_UNIX SOCK_DGRAM socketpair (ub_dgram_adopt, connected to each
 * other), each with a receive pool of its own (16 x 256 B: 128 B of
 * payload) and a shared send pool (16 x 512 B); D2 and D3 are UDP sockets
 * on 127.0.0.1 (ub_dgram_open, ub_dgram_connect to each other) sharing one
 * receive pool (8 x 384 B: 256 B of payload) and sending from the
 * connections' send pool.  Each endpoint's list of datagrams accepted by
 * ub_dgram_send / ub_dgram_send_buf is the model; every DATA on Dk is
 * matched against its peer's (Dk^1) list: length (res), payload byte-exact
 * up to the buffer's capacity, ub_buf_truncated() exactly when the datagram
 * was longer than that, the source address (none on the socketpair, the
 * peer's on UDP).
 *   - Unix pair: strictly the next datagram, nothing skipped, as long as the
 *     sender has not begun to close (FUZZ_DGRAM_ORDER=0: in any order, each
 *     exactly once).  A full receiver makes the *sender*
 *     wait (unix datagram sockets have flow control), and an empty receive
 *     pool makes the kernel's multishot recvmsg end with ENOBUFS *before*
 *     it dequeues anything, so a moved ub_dgram_nobufs() loses nothing here.
 *     After the sender's close, queued datagrams may be cancelled: the rest
 *     must be a subsequence, in order.  Unix ERRORs only once the peer is
 *     closing.
 *   - UDP: a subsequence, in order, each datagram at most once: the kernel
 *     drops what does not fit in the receive queue (while the pool is dry:
 *     nobufs, paused, throttled) and says nothing per datagram.
 * At the end (before the connections are closed) everything is resumed and
 * released and the endpoints drained: on the Unix pair every datagram must
 * have arrived; every endpoint refused with -EAGAIN (or that asked with
 * ub_dgram_want_writable) must have had its WRITABLE; ub_dgram_sent() and
 * ub_dgram_received() must equal the model's counts; then all are closed.
 *
 * Soft water (opcode 6 with bit 7 of its second argument byte): a conn
 * with UB_CONN_SOFT_WATER must take every send whole (send returns n,
 * send_buf 0 or 1, and 1 exactly at the high mark), spilling what its
 * queue cannot take yet; the byte model checks that the spill keeps order.
 *
 * Incremental receive pools: bits 6 and 7 of byte 0 make c0-c2's and
 * c3's receive pools UB_POOL_INC (where the kernel has it).  DATA then
 * carries slices, several per pool buffer; the buffer model counts them
 * (ub_pool_slices) in place of their pool buffers.
 *
 * Input: byte 0 send mode (bundle/ring/serial, mod 3), byte 1 pair kinds
 * and conn flags, then one opcode byte plus argument bytes per step (see
 * the switch in run()).  Opcodes 0xc0..0xdf (which no seed of the
 * connection-only harness used) are datagram operations (see dgram_op());
 * every other opcode is op % 12 as before.  Missing bytes read as 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "uringbuf.h"

#define NC 4
#define MAXOUT (256u * 1024) /* bytes per outgoing stream, at most */
#define MAXHELD 16
#define MAXBACK 256 /* 64 buffers; slices may be more (see DATA) */
#define ND 4            /* datagram endpoints: D0-D1 unix, D2-D3 UDP */
#define MAXDG 4096      /* datagrams accepted per endpoint, at most */
#define MAXDARENA (256u * 1024)
#define MAXDHELD 16
/* The WRITABLE owed to an endpoint refused with -EAGAIN for want of a
 * send-pool buffer (core/pool.c once woke only connections waiting on a
 * pool: found here).  0 leaves that check out. */
#ifndef FUZZ_DSEND_WAKE
#define FUZZ_DSEND_WAKE 1
#endif
/* The order of one endpoint's datagrams on the unix pair (core/dgram.c
 * once armed every send on its own, and sends the socket could not take
 * waited in io-wq workers that woke in no set order: found here; now they
 * are MSG_DONTWAIT, one batch at a time, and a refused one waits with
 * everything after it behind it).  0 takes each datagram exactly once, in
 * any order. */
#ifndef FUZZ_DGRAM_ORDER
#define FUZZ_DGRAM_ORDER 1
#endif

#define FAIL(...)                                                              \
	do {                                                                   \
		fprintf(stderr, "fuzz_api: %s:%d: ", __FILE__, __LINE__);      \
		fprintf(stderr, __VA_ARGS__);                                  \
		fprintf(stderr, "\n");                                         \
		abort();                                                       \
	} while (0)
#define ASSERT(c)                                                              \
	do {                                                                   \
		if (!(c))                                                      \
			FAIL("assertion %s failed", #c);                       \
	} while (0)

struct cstate {
	ub_conn *c;       /* NULL once CLOSED */
	int fd, peer_fd_idx;
	uint8_t *out;     /* bytes accepted for sending, in order */
	size_t outlen;
	uint64_t rx;      /* bytes received and checked */
	int closed, eof, error, closing, aborted, shut, closed_seen;
	int soft;         /* UB_CONN_SOFT_WATER: sends are never refused */
	int was_soft;     /* soft water was on: a spill may outlive it */
	ub_conn *kept;    /* held: its CLOSED came, not yet released */
	int held, kept_gone; /* kept_gone: a wait since its CLOSED */
};

struct dstate {
	ub_dgram *ep;     /* NULL once CLOSED (or never opened) */
	int udp;
	ub_pool *rp, *sp; /* its receive and send pools */
	unsigned qmax;
	size_t high, low;
	struct sockaddr_in sin; /* UDP: where it is bound */
	unsigned ndg;     /* datagrams accepted for sending */
	size_t arenalen;  /* their bytes */
	unsigned rxnext;  /* receiving: next datagram of the peer's list
			     (unordered: its first one not yet received) */
	uint64_t ndata, skipped;
	int closing, closed_seen, errors, want_w, hold;
	int spool_wait;   /* refused for want of a send-pool buffer, no
			     WRITABLE since (see FUZZ_DSEND_WAKE) */
};

struct fz {
	const uint8_t *in;
	size_t len, pos;
	ub_loop *loop;
	ub_pool *spool, *rpool, *rpool3; /* rpool3: c3's own receive pool */
	struct cstate cs[NC];
	ub_buf *held[MAXHELD];   /* APP buffers the harness holds */
	uint32_t held_gen[MAXHELD];
	int nheld;
	ub_buf *back[MAXBACK];   /* relay backlog (DATA from c1, in order) */
	int nback;
	int piped;               /* ub_conn_pipe(c1, c2) in force */
	uint64_t relay_in;       /* bytes c1 passed on through the harness */
	unsigned hold_mask;      /* conns whose DATA the harness keeps */
	int winding;             /* at the end: keep nothing */
	/* datagrams */
	int nd;                  /* endpoints opened: 0 (no kernel support)
				    or ND */
	struct dstate ds[ND];
	ub_pool *dr0, *dr1, *dru, *dsp;
	ub_buf *dheld[MAXDHELD]; /* APP buffers of the datagram ops */
	uint32_t dheld_gen[MAXDHELD];
	int dheld_by[MAXDHELD];  /* endpoint that received it, -1: acquired */
	int ndheld;
	int dwinding;
};

static uint8_t out_mem[NC][MAXOUT];
static uint8_t dg_arena[ND][MAXDARENA];
static uint32_t dg_off[ND][MAXDG], dg_len[ND][MAXDG];
static uint8_t dg_seen[ND][MAXDG]; /* by the sender's index: received */

static uint8_t get(struct fz *f)
{
	return f->pos < f->len ? f->in[f->pos++] : 0;
}

static int peer_of(int i)
{
	return i ^ 1;
}

static uint8_t pat(int conn, uint64_t off)
{
	uint64_t x = (off + (uint64_t)(conn + 1) * 0x9e3779b97f4a7c15ull) *
		     2654435761ull;
	return (uint8_t)((x >> 13) ^ (x >> 29));
}

static int fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- the model ---- */

static void out_append(struct fz *f, int i, const void *p, size_t n)
{
	struct cstate *s = &f->cs[i];

	ASSERT(s->outlen + n <= MAXOUT);
	memcpy(s->out + s->outlen, p, n);
	s->outlen += n;
}

/* Bytes arrived on conn i (DATA): check against the sender's stream. */
static void check_rx(struct fz *f, int i, const uint8_t *p, size_t n)
{
	struct cstate *s = &f->cs[i];
	const struct cstate *src;

	if (i == 1)
		return; /* the relay: checked end to end at c3 */
	src = i == 3 ? &f->cs[0] : &f->cs[peer_of(i)];
	/* c3 gets c2's stream, which is c0's stream through the relay */
	if (s->rx + n > src->outlen)
		FAIL("conn %d got %zu bytes at %llu, only %zu were sent", i, n,
		     (unsigned long long)s->rx, src->outlen);
	if (memcmp(src->out + s->rx, p, n)) {
		size_t k = 0;

		while (src->out[s->rx + k] == p[k])
			k++;
		FAIL("conn %d: wrong byte at stream offset %llu",
		     i, (unsigned long long)(s->rx + k));
	}
	s->rx += n;
}

/* Every pool, receive pools flagged; returns how many. */
static int all_pools(const struct fz *f, const ub_pool **pl, int *recv)
{
	int n = 0;

	pl[n] = f->spool, recv[n++] = 0;
	pl[n] = f->rpool, recv[n++] = 1;
	pl[n] = f->rpool3, recv[n++] = 1;
	if (f->dsp)
		pl[n] = f->dsp, recv[n++] = 0;
	if (f->dr0)
		pl[n] = f->dr0, recv[n++] = 1;
	if (f->dr1)
		pl[n] = f->dr1, recv[n++] = 1;
	if (f->dru)
		pl[n] = f->dru, recv[n++] = 1;
	return n;
}

static int is_inc(const ub_pool *p)
{
	return (ub_pool_flags(p) & UB_POOL_INC) != 0;
}

static void check_pools(struct fz *f)
{
	const ub_pool *pools[8];
	int isrecv[8], np = all_pools(f, pools, isrecv);
	unsigned app = 0, queued = 0, slices = 0, want_app, want_queued = 0;
	unsigned qslices;

	for (int p = 0; p < np; p++) {
		unsigned sum = 0;

		for (int st = 0; st < UB_BUF_NSTATES; st++)
			sum += ub_pool_count_state(pools[p], st);
		if (sum != ub_pool_count(pools[p]))
			FAIL("pool %d: states add up to %u of %u", p, sum,
			     ub_pool_count(pools[p]));
		/* An incremental pool's handles are its slices; its APP
		 * buffers are only pinned by them. */
		if (is_inc(pools[p])) {
			slices += ub_pool_slices(pools[p]);
			if (ub_pool_count_state(pools[p], UB_BUF_QUEUED))
				FAIL("pool %d: incremental, with QUEUED "
				     "buffers", p);
			if (ub_pool_count_state(pools[p], UB_BUF_APP) >
			    ub_pool_slices(pools[p]))
				FAIL("pool %d: %u buffers pinned by %u "
				     "slices", p,
				     ub_pool_count_state(pools[p], UB_BUF_APP),
				     ub_pool_slices(pools[p]));
			continue;
		}
		app += ub_pool_count_state(pools[p], UB_BUF_APP);
		queued += ub_pool_count_state(pools[p], UB_BUF_QUEUED);
	}
	for (int i = 0; i < NC; i++)
		if (f->cs[i].c)
			want_queued += ub_conn_queued_bufs(f->cs[i].c);
	for (int i = 0; i < f->nd; i++)
		if (f->ds[i].ep)
			want_queued += ub_dgram_queued_bufs(f->ds[i].ep);
	/* What the queues hold beyond whole buffers must be slices. */
	if (want_queued < queued || want_queued - queued > slices)
		FAIL("%u QUEUED buffers and %u slices out, connections and "
		     "endpoints hold %u", queued, slices, want_queued);
	qslices = want_queued - queued;
	if (ub_loop_pending(f->loop) == 0) {
		want_app = (unsigned)(f->nheld + f->nback + f->ndheld);
		if (app + slices - qslices != want_app)
			FAIL("%u APP buffers and %u slices, the harness "
			     "holds %u", app, slices - qslices, want_app);
	}
	{
		/* Receive buffers are charged to their receivers until they
		 * come back: never more than are out of the rings. */
		unsigned held = 0, out = 0;

		for (int p = 0; p < np; p++)
			if (is_inc(pools[p]))
				out += ub_pool_slices(pools[p]);
			else if (isrecv[p])
				out += ub_pool_count_state(pools[p],
							   UB_BUF_APP) +
				       ub_pool_count_state(pools[p],
							   UB_BUF_QUEUED);
		for (int i = 0; i < NC; i++)
			if (f->cs[i].c)
				held += ub_conn_recv_held(f->cs[i].c);
		for (int i = 0; i < f->nd; i++)
			if (f->ds[i].ep)
				held += ub_dgram_recv_held(f->ds[i].ep);
		if (held > out)
			FAIL("connections hold %u receive buffers, %u are out",
			     held, out);
	}
	for (int i = 0; i < f->nd; i++) {
		const struct dstate *d = &f->ds[i];

		if (!d->ep)
			continue;
		if (ub_dgram_queued_bufs(d->ep) > d->qmax)
			FAIL("dgram %d: %u datagrams queued, queue_max %u", i,
			     ub_dgram_queued_bufs(d->ep), d->qmax);
		ASSERT(ub_dgram_recv_throttled(d->ep) == 0 ||
		       ub_dgram_recv_throttled(d->ep) == 1);
	}
}

/* ---- relay ---- */

static void relay_flush(struct fz *f)
{
	struct cstate *dst = &f->cs[2];

	while (f->nback) {
		ub_buf *b = f->back[0];
		size_t n = ub_buf_len(b);
		int r;

		if (!dst->c || dst->closing) {
			r = -EPIPE;
		} else {
			r = ub_conn_send_buf(dst->c, b);
		}
		if (r == -EAGAIN) {
			ASSERT(!dst->soft);
			return;
		}
		if (r >= 0) {
			ASSERT(r == 0 || dst->soft);
			out_append(f, 2, ub_buf_data(b), n);
		} else {
			ASSERT(r == -EPIPE);
			ASSERT(ub_buf_state(b) == UB_BUF_APP);
			ASSERT(ub_buf_release(b) == 0);
		}
		memmove(f->back, f->back + 1, --f->nback * sizeof(f->back[0]));
	}
}

/* ---- events ---- */

static int conn_index(struct fz *f, const ub_conn *c)
{
	for (int i = 0; i < NC; i++)
		if (f->cs[i].c == c && c)
			return i;
	return -1;
}

static void hold(struct fz *f, ub_buf *b)
{
	if (f->nheld == MAXHELD) {
		ASSERT(ub_buf_release(b) == 0);
		return;
	}
	f->held_gen[f->nheld] = ub_buf_gen(b);
	f->held[f->nheld++] = b;
}

static void on_devent(struct fz *f, const ub_event *ev);

static void on_event(struct fz *f, const ub_event *ev)
{
	int i;
	struct cstate *s;

	if (ev->dgram) {
		on_devent(f, ev);
		return;
	}
	i = conn_index(f, ev->conn);
	if (i < 0)
		FAIL("%s event for an unknown or closed conn",
		     ub_event_name(ev->type));
	s = &f->cs[i];
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "  ev %s conn %d res %d (APP r%u, back %d)\n",
			ub_event_name(ev->type), i, ev->res,
			ub_pool_count_state(f->rpool, UB_BUF_APP), f->nback);
	switch (ev->type) {
	case UB_EV_DATA:
		ASSERT(ev->buf && ub_buf_state(ev->buf) == UB_BUF_APP);
		ASSERT((size_t)ev->res == ub_buf_len(ev->buf));
		ASSERT(!s->eof);
		check_rx(f, i, ub_buf_data(ev->buf), ub_buf_len(ev->buf));
		if (i == 1) {
			/* c1's receive pool has 32 buffers: more in the
			 * backlog than that means a buffer handed out twice.
			 * Slices of an incremental one are bounded by c1's
			 * budget, counted in slices, and the completions
			 * already on their way when it stops: MAXBACK. */
			int maxback = is_inc(f->rpool) ? MAXBACK : 64;

			if (f->nback == maxback)
				FAIL("relay backlog over %d", maxback);
			f->back[f->nback++] = ev->buf;
			f->relay_in += ub_buf_len(ev->buf);
			relay_flush(f);
		} else if ((f->hold_mask & (1u << i)) && !f->winding) {
			hold(f, ev->buf);
		} else {
			ASSERT(ub_buf_release(ev->buf) == 0);
		}
		return;
	case UB_EV_SENT:
		ASSERT(ev->res > 0);
		return;
	case UB_EV_WRITABLE:
		if (i == 2)
			relay_flush(f);
		return;
	case UB_EV_EOF: {
		const struct cstate *src = &f->cs[peer_of(i)];

		ASSERT(!s->eof);
		s->eof = 1;
		/* FIN comes after every byte the peer queued, unless the
		 * peer failed or was aborted (then bytes may be lost). */
		if (i != 1 && i != 3 && (src->closing || src->shut) &&
		    !src->aborted &&
		    !src->error && !s->closing && s->rx != src->outlen)
			FAIL("conn %d: EOF after %llu of %zu bytes", i,
			     (unsigned long long)s->rx, src->outlen);
		return;
	}
	case UB_EV_ERROR:
		ASSERT(ev->res < 0);
		s->error = 1;
		s->closing = 1;
		return;
	case UB_EV_CLOSED:
		ASSERT(!s->closed_seen);
		s->closed_seen = 1;
		ASSERT(ub_conn_is_closing(s->c) == 1);
		ASSERT(ub_conn_is_closed(s->c) == 0); /* until the next wait */
		if (s->held)
			s->kept = s->c;
		s->c = NULL;
		s->closing = 1;
		if (i == 2) /* nothing can be relayed any more */
			relay_flush(f);
		if (i == 1 || i == 2)
			f->piped = 0;
		return;
	}
	FAIL("unexpected event %s", ub_event_name(ev->type));
}

static void check_kept(struct fz *f, int waiting);

static void pump(struct fz *f, int timeout_ms)
{
	ub_event ev[16];
	int n, rounds = 0;

	do {
		check_kept(f, 1);
		n = ub_loop_wait(f->loop, ev, 16, 0, rounds ? 0 : timeout_ms);
		if (n == -EINTR)
			continue;
		if (n < 0)
			FAIL("ub_loop_wait: %d", n);
		for (int k = 0; k < n; k++)
			on_event(f, &ev[k]);
		check_pools(f);
		check_kept(f, 0);
	} while ((n > 0 || ub_loop_pending(f->loop)) && ++rounds < 64);
}

/* ---- setup ---- */

static void small_bufs(int fd, int tcp)
{
	int v = tcp ? 16384 : 1;

	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
}

/* connect() that a signal may interrupt (libFuzzer's timer): the
 * handshake goes on in the kernel; wait for it and take its result. */
static int connect_eintr(int fd, const struct sockaddr *a, socklen_t len)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int err = 0;
	socklen_t elen = sizeof(err);

	if (connect(fd, a, len) == 0)
		return 0;
	if (errno != EINTR)
		return -1;
	while (poll(&p, 1, 5000) < 0)
		if (errno != EINTR)
			return -1;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
		return -1;
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

static int make_pair(int fds[2], int tcp)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int l, v = 16384;

	if (!tcp)
		return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0)
		return -1;
	setsockopt(l, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
	if (bind(l, (struct sockaddr *)&a, len) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &len)) {
		int e = errno;

		close(l);
		errno = e;
		return -1;
	}
	fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	small_bufs(fds[0], 1);
	if (fds[0] < 0 || connect_eintr(fds[0], (struct sockaddr *)&a, len)) {
		int e = errno;

		if (fds[0] >= 0)
			close(fds[0]);
		close(l);
		errno = e;
		return -1;
	}
	do /* libFuzzer's timer signal may interrupt us */
		fds[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	while (fds[1] < 0 && errno == EINTR);
	close(l);
	if (fds[1] < 0) {
		close(fds[0]);
		return -1;
	}
	return 0;
}

/* ---- operations ---- */

static void op_send(struct fz *f, int i, size_t n)
{
	static uint8_t tmp[8192];
	struct cstate *s = &f->cs[i];
	ssize_t r;

	if (!s->c || i == 2) /* c2 only relays */
		return;
	if (n > sizeof(tmp))
		n = sizeof(tmp);
	if (s->outlen + n > MAXOUT)
		return;
	for (size_t k = 0; k < n; k++)
		tmp[k] = pat(i, s->outlen + k);
	r = ub_conn_send(s->c, tmp, n);
	if (r >= 0) {
		ASSERT((size_t)r <= n);
		ASSERT(n == 0 || r > 0);
		ASSERT(!s->soft || (size_t)r == n); /* soft: all of it */
		ASSERT(!s->closing && !s->shut);
		out_append(f, i, tmp, (size_t)r);
	} else if (r == -EPIPE) {
		ASSERT(s->closing || s->shut || ub_conn_is_closing(s->c));
	} else if (r != -EAGAIN || s->soft) {
		FAIL("ub_conn_send: %zd", r);
	}
}

static void op_send_buf(struct fz *f, int i, size_t n, int from_held)
{
	struct cstate *s = &f->cs[i];
	ub_buf *b;
	int r, err = 0, h = -1;

	if (!s->c || i == 2)
		return;
	if (from_held) {
		if (!f->nheld)
			return;
		h = (int)(n % (size_t)f->nheld);
		b = f->held[h];
		ASSERT(ub_buf_gen(b) == f->held_gen[h]);
		ASSERT(ub_buf_state(b) == UB_BUF_APP);
		/* A received buffer may go towards a connection that
		 * receives into the same pool: the receive budgets and the
		 * pool's reserve (core/conn.c, recv_allowance) keep that
		 * from starving the receiver, so no guard here. */
		n = ub_buf_len(b);
		if (n == 0) { /* an acquired buffer never filled */
			n = ub_buf_capacity(b) < 7 ? ub_buf_capacity(b) : 7;
			ASSERT(ub_buf_set_len(b, n) == 0);
		}
	} else {
		b = ub_pool_acquire(f->spool, &err);
		if (!b) {
			ASSERT(err == -ENOBUFS);
			return;
		}
		ASSERT(ub_buf_state(b) == UB_BUF_APP && ub_buf_len(b) == 0);
		if (n == 0)
			n = 1;
		if (n > ub_buf_capacity(b))
			n = ub_buf_capacity(b);
		ASSERT(ub_buf_set_len(b, ub_buf_capacity(b) + 1) == -EINVAL);
	}
	if (s->outlen + n > MAXOUT) {
		if (!from_held)
			ASSERT(ub_buf_release(b) == 0);
		return;
	}
	if (!from_held) {
		uint8_t *p = ub_buf_data(b);

		for (size_t k = 0; k < n; k++)
			p[k] = pat(i, s->outlen + k);
		ASSERT(ub_buf_set_len(b, n) == 0);
	}
	r = ub_conn_send_buf(s->c, b);
	if (r == 1) {
		/* soft water: queued, and the queue is at its high mark */
		ASSERT(s->soft);
		ASSERT(ub_conn_queued_bytes(s->c) >= ub_conn_high_water(s->c));
		r = 0;
	} else if (r == 0 && s->soft) {
		ASSERT(ub_conn_queued_bytes(s->c) < ub_conn_high_water(s->c));
	}
	if (r == 0) {
		/* a send-pool buffer that would wait behind a spill is
		 * copied into it and freed at once (core/sendq.c); what soft
		 * water spilled drains after it is switched off, so the
		 * model is "was ever on" (found by the fuzzer) */
		ASSERT(ub_buf_state(b) == UB_BUF_QUEUED ||
		       (s->was_soft && ub_buf_state(b) == UB_BUF_FREE &&
			ub_buf_pool(b) == f->spool));
		ASSERT(!s->closing);
		out_append(f, i, ub_buf_data(b), n);
		if (from_held) {
			memmove(f->held + h, f->held + h + 1,
				(size_t)(f->nheld - h - 1) * sizeof(f->held[0]));
			memmove(f->held_gen + h, f->held_gen + h + 1,
				(size_t)(f->nheld - h - 1) *
					sizeof(f->held_gen[0]));
			f->nheld--;
		}
		/* the old handle is spent: queuing it again must fail */
		ASSERT(ub_conn_send_buf(s->c, b) == -EINVAL);
		ASSERT(ub_buf_release(b) == -EINVAL);
		return;
	}
	if ((r != -EAGAIN || s->soft) && r != -EPIPE)
		FAIL("ub_conn_send_buf: %d", r);
	ASSERT(ub_buf_state(b) == UB_BUF_APP); /* a refusal changes nothing */
	if (!from_held)
		ASSERT(ub_buf_release(b) == 0);
}

static void op_acquire(struct fz *f)
{
	int err = 0;
	ub_buf *b;

	if (f->nheld == MAXHELD)
		return;
	b = ub_pool_acquire(f->spool, &err);
	if (!b) {
		ASSERT(err == -ENOBUFS);
		ASSERT(ub_pool_count_state(f->spool, UB_BUF_FREE) == 0);
		return;
	}
	hold(f, b);
}

static void op_release(struct fz *f, uint8_t k)
{
	ub_buf *b;
	int h;

	if (!f->nheld)
		return;
	h = k % f->nheld;
	b = f->held[h];
	ASSERT(ub_buf_gen(b) == f->held_gen[h]);
	ASSERT(ub_buf_release(b) == 0);
	ASSERT(ub_buf_release(b) == -EINVAL); /* double release refused */
	f->held[h] = f->held[f->nheld - 1];
	f->held_gen[h] = f->held_gen[f->nheld - 1];
	f->nheld--;
}

static void op_pipe(struct fz *f, int on)
{
	struct cstate *a = &f->cs[1], *b = &f->cs[2];
	int r;

	if (!a->c)
		return;
	if (on) {
		/* Only with nothing in between: DATA events not yet handed
		 * out or a backlog would be overtaken by the pipe. */
		if (f->piped || f->nback || ub_loop_pending(f->loop) || !b->c)
			return;
		r = ub_conn_pipe(a->c, b->c);
		if (r == 0)
			f->piped = 1;
		else
			ASSERT(r == -EPIPE);
	} else {
		if (!f->piped)
			return;
		r = ub_conn_pipe(a->c, NULL);
		ASSERT(r == 0 || r == -EPIPE);
		f->piped = 0;
	}
}

static void op_close(struct fz *f, int i, int how)
{
	struct cstate *s = &f->cs[i];
	int r;

	if (!s->c)
		return;
	switch (how) {
	case 0:
		r = ub_conn_close(s->c);
		if (r == 0)
			ASSERT(!s->closing);
		else
			ASSERT(r == -EPIPE);
		s->closing = 1;
		break;
	case 1:
		r = ub_conn_abort(s->c);
		if (r == 0) {
			s->aborted = 1;
			s->closing = 1;
		} else {
			ASSERT(r == -EPIPE);
		}
		break;
	default:
		r = ub_conn_shutdown(s->c);
		if (r == 0)
			s->shut = 1;
		else
			ASSERT(r == -EPIPE);
		break;
	}
	ASSERT(ub_conn_is_closing(s->c) == 1);
	if (s->closing) {
		ASSERT(ub_conn_send(s->c, "x", 1) == -EPIPE);
	}
}

/* Held conns whose CLOSED came: gone from the wait after it on, and every
 * operation fails.  waiting: a wait is about to start. */
static void check_kept(struct fz *f, int waiting)
{
	for (int i = 0; i < NC; i++) {
		ub_conn *c = f->cs[i].kept;

		if (!c)
			continue;
		if (waiting) {
			f->cs[i].kept_gone = 1;
			continue;
		}
		ASSERT(ub_conn_is_closed(c) == f->cs[i].kept_gone);
		ASSERT(ub_conn_send(c, "x", 1) == -EPIPE);
		ASSERT(ub_conn_close(c) == -EPIPE);
		ASSERT(ub_conn_abort(c) == -EPIPE);
		ASSERT(ub_conn_pause_recv(c) == -EPIPE);
		ASSERT(ub_conn_is_closing(c) == 1);
		ASSERT(ub_conn_queued_bufs(c) == 0);
		if (f->cs[i].kept_gone)
			ASSERT(ub_conn_fd(c) == -1);
	}
}

static int all_closed(const struct fz *f)
{
	for (int i = 0; i < NC; i++)
		if (f->cs[i].c)
			return 0;
	return 1;
}

/* ---- datagrams ---- */

static int dgram_index(const struct fz *f, const ub_dgram *d)
{
	for (int i = 0; i < f->nd; i++)
		if (f->ds[i].ep == d && d)
			return i;
	return -1;
}

/* -EPIPE is right only for an endpoint that is closing: closed by us, or
 * failed.  A failed receive closes it (ERROR, then CLOSED), a failed send
 * does not, and the event does not say which: after any ERROR, -EPIPE may
 * come. */
static void dg_check_pipe(const struct dstate *s, int r, const char *what)
{
	if (r == 0)
		ASSERT(!s->closing);
	else if (r != -EPIPE || (!s->closing && !s->errors))
		FAIL("%s: %d (closing %d, errors %d)", what, r, s->closing,
		     s->errors);
}

static int dg_room(const struct dstate *s, size_t n)
{
	return s->ndg < MAXDG && s->arenalen + n <= MAXDARENA;
}

/* Datagram accepted for sending on endpoint i. */
static void dg_accept(struct fz *f, int i, const uint8_t *p, size_t n)
{
	struct dstate *s = &f->ds[i];

	ASSERT(dg_room(s, n));
	if (n)
		memcpy(dg_arena[i] + s->arenalen, p, n);
	dg_off[i][s->ndg] = (uint32_t)s->arenalen;
	dg_len[i][s->ndg] = (uint32_t)n;
	s->arenalen += n;
	s->ndg++;
}

/* Whether datagram k of endpoint src is the one received: res (its full
 * length), the first len bytes in p (len = min(res, cap)). */
static int dg_match(int src, unsigned k, int res, const uint8_t *p,
		    size_t len)
{
	if (dg_len[src][k] != (uint32_t)res)
		return 0;
	return len == 0 || !memcmp(dg_arena[src] + dg_off[src][k], p, len);
}

static void dheld_remove(struct fz *f, int h)
{
	memmove(f->dheld + h, f->dheld + h + 1,
		(size_t)(f->ndheld - h - 1) * sizeof(f->dheld[0]));
	memmove(f->dheld_gen + h, f->dheld_gen + h + 1,
		(size_t)(f->ndheld - h - 1) * sizeof(f->dheld_gen[0]));
	memmove(f->dheld_by + h, f->dheld_by + h + 1,
		(size_t)(f->ndheld - h - 1) * sizeof(f->dheld_by[0]));
	f->ndheld--;
}

static void dheld_push(struct fz *f, ub_buf *b, int by)
{
	if (f->ndheld == MAXDHELD) {
		ASSERT(ub_buf_release(b) == 0);
		return;
	}
	f->dheld[f->ndheld] = b;
	f->dheld_gen[f->ndheld] = ub_buf_gen(b);
	f->dheld_by[f->ndheld++] = by;
}

/* A DATA on endpoint i: check it against its peer's datagrams. */
static void check_drx(struct fz *f, int i, const ub_event *ev)
{
	struct dstate *r = &f->ds[i];
	int src = i ^ 1;
	const struct dstate *s = &f->ds[src];
	ub_buf *b = ev->buf;
	size_t len, cap;
	const uint8_t *p;
	const struct sockaddr *sa;
	socklen_t alen = 123;
	unsigned k;
	int lossy;

	ASSERT(b && ub_buf_state(b) == UB_BUF_APP);
	len = ub_buf_len(b);
	cap = ub_buf_capacity(b);
	p = ub_buf_data(b);
	/* An empty datagram a one-shot receive took comes in a buffer of
	 * the endpoint's send pool (ub_dgram_recv_budget(3)). */
	if (ub_buf_pool(b) != r->rp) {
		ASSERT(ev->res == 0 && len == 0);
		ASSERT(ub_buf_pool(b) == ub_dgram_send_pool(r->ep));
	}
	ASSERT(cap == ub_pool_buf_size(ub_buf_pool(b)) - UB_DGRAM_HDR);
	ASSERT(ev->res >= 0);
	if (ub_buf_truncated(b)) {
		if (len != cap || (size_t)ev->res <= cap)
			FAIL("dgram %d: truncated, len %zu cap %zu res %d", i,
			     len, cap, ev->res);
	} else if ((size_t)ev->res != len || len > cap) {
		FAIL("dgram %d: not truncated, len %zu cap %zu res %d", i, len,
		     cap, ev->res);
	}
	sa = ub_buf_addr(b, &alen);
	if (r->udp) {
		const struct sockaddr_in *sin = (const void *)sa;

		if (!sa || alen != sizeof(*sin) || sin->sin_family != AF_INET ||
		    sin->sin_port != s->sin.sin_port ||
		    sin->sin_addr.s_addr != s->sin.sin_addr.s_addr)
			FAIL("dgram %d: wrong source address (len %u)", i,
			     (unsigned)alen);
	} else if (sa || alen != 0) {
		FAIL("dgram %d: a source address (len %u) from an unbound "
		     "unix socket", i, (unsigned)alen);
	}
	/* Unix: the next one, strictly, unless the sender is closing (its
	 * queued datagrams may be cancelled).  UDP: the kernel may drop. */
	lossy = r->udp || s->closing || s->errors ||
		ub_dgram_dropped(r->ep) > 0;
	for (k = r->rxnext; k < s->ndg; k++) {
		if (!dg_seen[src][k] && dg_match(src, k, ev->res, p, len))
			break;
		if (!lossy && FUZZ_DGRAM_ORDER)
			break;
	}
	if (k >= s->ndg ||
	    (k != r->rxnext && !lossy && FUZZ_DGRAM_ORDER)) {
		unsigned e = r->rxnext;

		if (e < s->ndg) {
			size_t m = dg_len[src][e] < len ? dg_len[src][e] : len,
			       d = 0;

			while (d < m && dg_arena[src][dg_off[src][e] + d] == p[d])
				d++;
			FAIL("dgram %d: datagram %llu (res %d, len %zu) is not "
			     "datagram %u of %u from %d (%u bytes; first "
			     "difference at %zu)%s", i,
			     (unsigned long long)r->ndata, ev->res, len, e,
			     s->ndg, src, dg_len[src][e], d,
			     lossy ? " nor any later one" : "");
		}
		FAIL("dgram %d: datagram %llu (res %d) but only %u were sent "
		     "by %d and %u already received", i,
		     (unsigned long long)r->ndata, ev->res, s->ndg, src,
		     r->rxnext);
	}
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "  dgram %d: datagram %u of %u from %d (first "
			"unseen %u)\n", i, k, s->ndg, src, r->rxnext);
	dg_seen[src][k] = 1;
	if (FUZZ_DGRAM_ORDER) {
		r->skipped += k - r->rxnext;
		r->rxnext = k + 1;
	} else {
		while (r->rxnext < s->ndg && dg_seen[src][r->rxnext])
			r->rxnext++;
	}
	r->ndata++;
}

static void on_devent(struct fz *f, const ub_event *ev)
{
	int i = dgram_index(f, ev->dgram);
	struct dstate *s;

	if (ev->conn || ev->listener)
		FAIL("%s event for a dgram with a conn or listener",
		     ub_event_name(ev->type));
	if (i < 0)
		FAIL("%s event for an unknown or closed dgram",
		     ub_event_name(ev->type));
	s = &f->ds[i];
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "  ev %s dgram %d res %d len %zu\n",
			ub_event_name(ev->type), i, ev->res,
			ev->buf ? ub_buf_len(ev->buf) : 0);
	switch (ev->type) {
	case UB_EV_DATA:
		check_drx(f, i, ev);
		if (s->hold && !f->dwinding)
			dheld_push(f, ev->buf, i);
		else
			ASSERT(ub_buf_release(ev->buf) == 0);
		return;
	case UB_EV_WRITABLE:
		ASSERT(ev->res == 0 && !ev->buf);
		s->want_w = 0;
		s->spool_wait = 0;
		return;
	case UB_EV_ERROR: {
		const struct dstate *peer = &f->ds[i ^ 1];

		ASSERT(ev->res < 0 && !ev->buf);
		s->errors++;
		/* Nothing can fail between two live ends of a socketpair or
		 * on loopback UDP; once the peer closes, sends to it do (and
		 * UDP learns it from ICMP: ECONNREFUSED). */
		if (!peer->closing && !s->closing)
			FAIL("dgram %d: ERROR %d with its peer open", i,
			     ev->res);
		if (s->udp && ev->res != -ECONNREFUSED)
			FAIL("dgram %d: UDP ERROR %d", i, ev->res);
		return;
	}
	case UB_EV_CLOSED:
		ASSERT(!s->closed_seen);
		ASSERT(!ev->buf);
		s->closed_seen = 1;
		ASSERT(ub_dgram_queued_bufs(s->ep) == 0);
		ASSERT(ub_dgram_queued_bytes(s->ep) == 0);
		ASSERT(ub_dgram_fd(s->ep) == -1);
		if (!s->closing && !s->errors)
			FAIL("dgram %d: CLOSED (%d) unasked", i, ev->res);
		s->closing = 1;
		s->ep = NULL;
		return;
	}
	FAIL("unexpected dgram event %s", ub_event_name(ev->type));
}

/* A copying send of n bytes (0 allowed; over the send pool's buffer size:
 * -EMSGSIZE).  to_addr: with the peer's address (UDP only). */
static void op_dsend(struct fz *f, int i, size_t n, int to_addr)
{
	static uint8_t tmp[1024];
	struct dstate *s = &f->ds[i];
	const struct sockaddr *to = NULL;
	socklen_t tolen = 0;
	unsigned q0;
	size_t b0, bsz;
	ssize_t r;

	if (!s->ep)
		return;
	if (n > sizeof(tmp))
		n = sizeof(tmp);
	if (!dg_room(s, n))
		return;
	if (to_addr && s->udp) {
		to = (const struct sockaddr *)&f->ds[i ^ 1].sin;
		tolen = sizeof(f->ds[i ^ 1].sin);
	}
	for (size_t k = 0; k < n; k++)
		tmp[k] = pat(8 + i, s->arenalen + k);
	q0 = ub_dgram_queued_bufs(s->ep);
	b0 = ub_dgram_queued_bytes(s->ep);
	bsz = ub_pool_buf_size(s->sp);
	r = ub_dgram_send(s->ep, tmp, n, to, tolen);
	if (r >= 0) {
		ASSERT((size_t)r == n && n <= bsz);
		ASSERT(!s->closing);
		ASSERT(ub_dgram_queued_bufs(s->ep) == q0 + 1);
		ASSERT(ub_dgram_queued_bytes(s->ep) == b0 + n);
		dg_accept(f, i, tmp, n);
	} else if (r == -EMSGSIZE) {
		ASSERT(n > bsz && !s->closing);
	} else if (r == -EAGAIN) {
		if (q0 < s->qmax && b0 < s->high &&
		    ub_pool_count_state(s->sp, UB_BUF_FREE) > 0)
			FAIL("dgram %d: send refused (EAGAIN) with %u of %u "
			     "queued, %zu of %zu bytes, a free buffer", i, q0,
			     s->qmax, b0, s->high);
		ASSERT(n <= bsz);
		ASSERT(ub_dgram_queued_bufs(s->ep) == q0);
		s->want_w = 1;
		if (q0 < s->qmax && b0 < s->high)
			s->spool_wait = 1; /* the pool was empty */
	} else {
		dg_check_pipe(s, (int)r, "ub_dgram_send");
		ASSERT(ub_dgram_queued_bufs(s->ep) == q0);
	}
}

/* Queue a buffer as one datagram: src 0 a fresh one of the endpoint's send
 * pool filled with n bytes, 1 one of dheld[] (a datagram this endpoint
 * received: an echo, with its own source address when to_addr on UDP; or
 * one acquired), 2 one the connections' side holds (held[]). */
static void op_dsend_buf(struct fz *f, int i, size_t n, int src, int to_addr)
{
	static uint8_t tmp[1024];
	struct dstate *s = &f->ds[i];
	const struct sockaddr *to = NULL;
	socklen_t tolen = 0;
	ub_buf *b;
	int r, err = 0, h = -1;
	unsigned q0;
	size_t b0, len;

	if (!s->ep)
		return;
	if (src == 0) {
		size_t cap;

		b = ub_pool_acquire(s->sp, &err);
		if (!b) {
			ASSERT(err == -ENOBUFS);
			ASSERT(ub_pool_count_state(s->sp, UB_BUF_FREE) == 0);
			return;
		}
		ASSERT(ub_buf_state(b) == UB_BUF_APP && ub_buf_len(b) == 0);
		cap = ub_buf_capacity(b);
		ASSERT(cap == ub_pool_buf_size(s->sp));
		if (n > cap) {
			ASSERT(ub_buf_set_len(b, n) == -EINVAL);
			n = cap;
		}
		for (size_t k = 0; k < n; k++)
			((uint8_t *)ub_buf_data(b))[k] =
				pat(8 + i, s->arenalen + k);
		ASSERT(ub_buf_set_len(b, n) == 0);
	} else if (src == 1) {
		int by;

		if (!f->ndheld)
			return;
		h = (int)(n % (size_t)f->ndheld);
		b = f->dheld[h];
		by = f->dheld_by[h];
		ASSERT(ub_buf_gen(b) == f->dheld_gen[h]);
		ASSERT(ub_buf_state(b) == UB_BUF_APP);
		if (by >= 0 && by != i)
			return; /* echoes go back where they came from */
		/* An echo holds a buffer of the receiver's own pool until the
		 * peer takes it: with every buffer of both unix pools queued
		 * towards a peer that cannot receive (no buffer), neither
		 * side moves again.  Keep half of each pool out of queues. */
		if (by >= 0 && !s->udp &&
		    ub_pool_count_state(s->rp, UB_BUF_QUEUED) * 2 >=
			    ub_pool_count(s->rp))
			return;
		if (by >= 0 && to_addr && s->udp) {
			to = ub_buf_addr(b, &tolen); /* inside b itself */
			ASSERT(to && tolen == sizeof(struct sockaddr_in));
		}
		if (by < 0 && ub_buf_len(b) == 0 && (n & 1)) {
			size_t m = n < ub_buf_capacity(b) ? n
							  : ub_buf_capacity(b);

			for (size_t k = 0; k < m; k++)
				((uint8_t *)ub_buf_data(b))[k] =
					pat(8 + i, s->arenalen + k);
			ASSERT(ub_buf_set_len(b, m) == 0);
		}
	} else {
		if (!f->nheld)
			return;
		h = (int)(n % (size_t)f->nheld);
		b = f->held[h];
		ASSERT(ub_buf_gen(b) == f->held_gen[h]);
		ASSERT(ub_buf_state(b) == UB_BUF_APP);
	}
	len = ub_buf_len(b);
	ASSERT(len <= sizeof(tmp));
	if (!dg_room(s, len)) {
		if (src == 0)
			ASSERT(ub_buf_release(b) == 0);
		return;
	}
	if (len)
		memcpy(tmp, ub_buf_data(b), len);
	q0 = ub_dgram_queued_bufs(s->ep);
	b0 = ub_dgram_queued_bytes(s->ep);
	r = ub_dgram_send_buf(s->ep, b, to, tolen);
	if (r == 0) {
		ASSERT(ub_buf_state(b) == UB_BUF_QUEUED);
		ASSERT(!s->closing);
		ASSERT(ub_dgram_queued_bufs(s->ep) == q0 + 1);
		ASSERT(ub_dgram_queued_bytes(s->ep) == b0 + len);
		dg_accept(f, i, tmp, len);
		if (src == 1) {
			dheld_remove(f, h);
		} else if (src == 2) {
			memmove(f->held + h, f->held + h + 1,
				(size_t)(f->nheld - h - 1) * sizeof(f->held[0]));
			memmove(f->held_gen + h, f->held_gen + h + 1,
				(size_t)(f->nheld - h - 1) *
					sizeof(f->held_gen[0]));
			f->nheld--;
		}
		/* the old handle is spent */
		ASSERT(ub_dgram_send_buf(s->ep, b, NULL, 0) == -EINVAL);
		ASSERT(ub_buf_release(b) == -EINVAL);
		return;
	}
	if (r == -EAGAIN) {
		if (q0 < s->qmax && b0 < s->high)
			FAIL("dgram %d: send_buf refused (EAGAIN) with %u of "
			     "%u queued, %zu of %zu bytes", i, q0, s->qmax, b0,
			     s->high);
		s->want_w = 1;
	} else {
		dg_check_pipe(s, r, "ub_dgram_send_buf");
	}
	ASSERT(ub_buf_state(b) == UB_BUF_APP); /* a refusal changes nothing */
	ASSERT(ub_dgram_queued_bufs(s->ep) == q0);
	if (src == 0)
		ASSERT(ub_buf_release(b) == 0);
}

static void op_dacquire(struct fz *f, int i)
{
	struct dstate *s = &f->ds[i];
	int err = 0;
	ub_buf *b;

	if (f->ndheld == MAXDHELD || !s->sp)
		return;
	b = ub_pool_acquire(s->sp, &err);
	if (!b) {
		ASSERT(err == -ENOBUFS);
		ASSERT(ub_pool_count_state(s->sp, UB_BUF_FREE) == 0);
		return;
	}
	dheld_push(f, b, -1);
}

static void op_drelease(struct fz *f, size_t k)
{
	ub_buf *b;
	int h;

	if (!f->ndheld)
		return;
	h = (int)(k % (size_t)f->ndheld);
	b = f->dheld[h];
	ASSERT(ub_buf_gen(b) == f->dheld_gen[h]);
	ASSERT(ub_buf_release(b) == 0);
	ASSERT(ub_buf_release(b) == -EINVAL);
	dheld_remove(f, h);
}

static void op_dclose(struct fz *f, int i)
{
	struct dstate *s = &f->ds[i];

	if (!s->ep)
		return;
	dg_check_pipe(s, ub_dgram_close(s->ep), "ub_dgram_close");
	s->closing = 1;
	s->want_w = 0;
	ASSERT(ub_dgram_close(s->ep) == -EPIPE);
	ASSERT(ub_dgram_send(s->ep, "x", 1, NULL, 0) == -EPIPE);
	ASSERT(ub_dgram_pause_recv(s->ep) == -EPIPE);
	ASSERT(ub_dgram_want_writable(s->ep) == -EPIPE);
}

/* One datagram operation (opcodes 0xc0..0xdf): sub = op & 0x1f. */
static void dgram_op(struct fz *f, unsigned sub, uint8_t a, uint8_t b)
{
	int i = a % ND;
	struct dstate *s = &f->ds[i];
	/* 0 .. 767: around both capacities (128, 256 B of payload) and
	 * over a send buffer (512 B) */
	size_t n = (size_t)b * 3 + (size_t)((a >> 2) % 3);
	int r;

	if (!f->nd)
		return;
	switch (sub) {
	case 0: case 1: case 2: case 3: case 4:
		op_dsend(f, i, n, 0);
		break;
	case 5:
		op_dsend(f, i, n, 1);
		break;
	case 6: case 7:
		op_dsend_buf(f, i, n, 0, 0);
		break;
	case 8: case 9: case 10:
		op_dsend_buf(f, i, b, 1, (a >> 2) & 1);
		break;
	case 11:
		op_dsend_buf(f, i, b, 2, 0);
		break;
	case 12:
		op_dacquire(f, i);
		break;
	case 13:
		op_drelease(f, b);
		break;
	case 14:
		if (s->ep) {
			r = b & 1 ? ub_dgram_pause_recv(s->ep)
				  : ub_dgram_resume_recv(s->ep);
			dg_check_pipe(s, r, "pause/resume");
		}
		break;
	case 15:
		if (s->ep) {
			if (b == 0)
				ASSERT(ub_dgram_set_recv_budget(s->ep, 0) ==
				       -EINVAL);
			else
				ASSERT(ub_dgram_set_recv_budget(
					       s->ep, 1 + (size_t)(b - 1) * 61) ==
				       0);
		}
		break;
	case 16:
		if (s->ep) {
			size_t high = (size_t)b * 64,
			       low = high * ((a >> 2) & 0x3f) / 48;

			r = ub_dgram_set_water(s->ep, high, low);
			if (high == 0 || low > high) {
				ASSERT(r == -EINVAL);
			} else {
				ASSERT(r == 0);
				s->high = high;
				s->low = low;
			}
		}
		break;
	case 17:
		if (s->ep) {
			r = ub_dgram_want_writable(s->ep);
			dg_check_pipe(s, r, "ub_dgram_want_writable");
			if (r == 0)
				s->want_w = 1;
		}
		break;
	case 18:
		s->hold = b & 1;
		break;
	case 19:
		if ((b & 3) == 0)
			op_dclose(f, i);
		else
			pump(f, b % 3);
		break;
	case 20: case 21: case 22: case 23:
		/* a burst: up to 16 datagrams on one endpoint */
		for (int k = 0; k <= (b & 15); k++)
			op_dsend(f, i, (size_t)((b >> 4) * 37 + k * 11) % 600,
				 0);
		break;
	default:
		pump(f, b % 3);
		break;
	}
}

static void dgram_setup(struct fz *f)
{
	int fds[2], err = 0;
	ub_dgram_opts o;
	static const unsigned qmax[ND] = { 8, 32, 16, 4 };

	memset(dg_seen, 0, sizeof(dg_seen));
	f->dsp = ub_pool_new(f->loop, 16, 512, 0, &err);
	ASSERT(f->dsp);
	f->dr0 = ub_pool_new(f->loop, 16, 256, UB_POOL_RECV, &err);
	ASSERT(f->dr0);
	f->dr1 = ub_pool_new(f->loop, 16, 256, UB_POOL_RECV, &err);
	ASSERT(f->dr1);
	f->dru = ub_pool_new(f->loop, 8, 384, UB_POOL_RECV, &err);
	ASSERT(f->dru);
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds) < 0)
		FAIL("socketpair(SOCK_DGRAM): %s", strerror(errno));
	for (int i = 0; i < ND; i++) {
		struct dstate *s = &f->ds[i];

		s->udp = i >= 2;
		s->rp = i == 0 ? f->dr0 : i == 1 ? f->dr1 : f->dru;
		s->sp = s->udp ? f->spool : f->dsp;
		s->qmax = qmax[i];
		s->high = 4096;
		s->low = 1024;
		ub_dgram_opts_init(&o);
		o.recv_pool = s->rp;
		o.send_pool = s->sp;
		o.queue_max = s->qmax;
		o.high_water = s->high;
		o.low_water = s->low;
		if (!s->udp) {
			small_bufs(fds[i], 0);
			s->ep = ub_dgram_adopt(f->loop, fds[i], &o, &err);
			if (!s->ep && err == -EOPNOTSUPP && i == 0) {
				/* no multishot recvmsg: no datagrams */
				close(fds[0]);
				close(fds[1]);
				return;
			}
			if (!s->ep)
				FAIL("ub_dgram_adopt: %d", err);
		} else {
			socklen_t len = sizeof(s->sin);

			memset(&s->sin, 0, sizeof(s->sin));
			s->sin.sin_family = AF_INET;
			s->sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			s->ep = ub_dgram_open(f->loop,
					      (struct sockaddr *)&s->sin,
					      sizeof(s->sin), &o, &err);
			if (!s->ep)
				FAIL("ub_dgram_open: %d", err);
			if (getsockname(ub_dgram_fd(s->ep),
					(struct sockaddr *)&s->sin, &len))
				FAIL("getsockname: %s", strerror(errno));
			if (i == 2) /* drops when it falls behind */
				small_bufs(ub_dgram_fd(s->ep), 0);
		}
		f->nd = i + 1;
	}
	for (int i = 2; i < ND; i++)
		ASSERT(ub_dgram_connect(f->ds[i].ep,
					(struct sockaddr *)&f->ds[i ^ 1].sin,
					sizeof(f->ds[i ^ 1].sin)) == 0);
}

/* Whether every live, healthy endpoint has sent everything, had the
 * WRITABLE it is owed, and (unix) its peer has received it all. */
static int dg_drained(struct fz *f)
{
	for (int i = 0; i < f->nd; i++) {
		const struct dstate *s = &f->ds[i], *p = &f->ds[i ^ 1];

		if (!s->ep || s->closing || s->errors)
			continue;
		if (ub_dgram_queued_bufs(s->ep))
			return 0;
		/* A WRITABLE is owed once the endpoint could send again: for
		 * a send-pool refusal, once its pool has a free buffer (the
		 * connections' queues may hold them all until they close). */
		if (s->want_w &&
		    (!s->spool_wait ||
		     (FUZZ_DSEND_WAKE &&
		      ub_pool_count_state(s->sp, UB_BUF_FREE) > 0)))
			return 0;
		if (!s->udp && p->ep && !p->closing && !p->errors &&
		    p->rxnext != s->ndg)
			return 0;
	}
	return ub_loop_pending(f->loop) == 0;
}

static void dg_dump(struct fz *f)
{
	for (int i = 0; i < f->nd; i++) {
		const struct dstate *s = &f->ds[i];

		fprintf(stderr,
			"dgram %d: %s, queued %u (%zu B), want_w %d%s, sent %u "
			"(done %llu), peer received %u of them, skipped %llu, "
			"errors %d, closing %d, throttled %d, held %u, "
			"nobufs %llu\n",
			i, s->ep ? "open" : "closed",
			ub_dgram_queued_bufs(s->ep),
			ub_dgram_queued_bytes(s->ep), s->want_w,
			s->spool_wait ? " (refused for want of a send-pool "
					"buffer)" : "", s->ndg,
			(unsigned long long)ub_dgram_sent(s->ep),
			f->ds[i ^ 1].rxnext,
			(unsigned long long)f->ds[i ^ 1].skipped, s->errors,
			s->closing, ub_dgram_recv_throttled(s->ep),
			ub_dgram_recv_held(s->ep),
			(unsigned long long)ub_dgram_nobufs(s->ep));
	}
}

/* Before the connections close: resume, release, drain, check, close. */
static void dgram_wind_down(struct fz *f)
{
	double deadline;

	if (!f->nd)
		return;
	f->dwinding = 1;
	for (int k = 0; k < f->ndheld; k++)
		ASSERT(ub_buf_release(f->dheld[k]) == 0);
	f->ndheld = 0;
	for (int i = 0; i < f->nd; i++) {
		struct dstate *s = &f->ds[i];

		if (!s->ep)
			continue;
		ASSERT(ub_dgram_set_recv_budget(s->ep, UB_DEF_RECV_BUDGET) ==
		       0);
		dg_check_pipe(s, ub_dgram_resume_recv(s->ep), "resume");
	}
	deadline = now_ms() + 3000;
	pump(f, 0);
	while (!dg_drained(f)) {
		if (now_ms() > deadline) {
			dg_dump(f);
			FAIL("datagram endpoints did not drain in 3 s");
		}
		pump(f, 2);
	}
	for (int i = 0; i < f->nd; i++) {
		const struct dstate *s = &f->ds[i];

		if (!s->ep || s->closing || s->errors)
			continue;
		if (ub_dgram_sent(s->ep) != s->ndg) {
			dg_dump(f);
			FAIL("dgram %d: %llu datagrams sent, %u accepted", i,
			     (unsigned long long)ub_dgram_sent(s->ep), s->ndg);
		}
		if (ub_dgram_received(s->ep) != s->ndata) {
			dg_dump(f);
			FAIL("dgram %d: %llu datagrams received, %llu DATA", i,
			     (unsigned long long)ub_dgram_received(s->ep),
			     (unsigned long long)s->ndata);
		}
		if (!s->udp && s->skipped && f->ds[i ^ 1].ep &&
		    !f->ds[i ^ 1].closing && !f->ds[i ^ 1].errors)
			FAIL("dgram %d: %llu datagrams skipped", i,
			     (unsigned long long)s->skipped);
	}
	for (int i = 0; i < f->nd; i++)
		if (f->ds[i].ep && !f->ds[i].closing)
			op_dclose(f, i);
	deadline = now_ms() + 3000;
	for (;;) {
		int open = 0;

		for (int i = 0; i < f->nd; i++)
			open += f->ds[i].ep != NULL;
		if (!open)
			break;
		if (now_ms() > deadline) {
			dg_dump(f);
			FAIL("datagram endpoints did not close in 3 s");
		}
		pump(f, 2);
	}
}

static void run(struct fz *f)
{
	uint8_t m = get(f), cfg = get(f);
	int modes[3] = { UB_MODE_BUNDLE, UB_MODE_RING, UB_MODE_SERIAL };
	int mode = modes[m % 3], err = 0, steps = 0;
	ub_conn_opts o;
	ub_loop_opts lo;
	double deadline, t_start = now_ms();
	const ub_pool *pools[8];
	int isrecv[8], np;

	memset(&lo, 0, sizeof(lo));
	lo.entries = (cfg & 0x80) ? 1 : 0; /* a CQ of 16 */
	f->loop = ub_loop_new(&lo, &err);
	if (!f->loop)
		FAIL("ub_loop_new: %d", err);
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "loop at %.1f ms\n", now_ms() - t_start);
	if (ub_loop_mode_check(f->loop, mode, NULL) < 0)
		mode = UB_MODE_SERIAL;
	f->spool = ub_pool_new(f->loop, 32, 512, 0, &err);
	ASSERT(f->spool);
	f->rpool = ub_pool_new(f->loop, 32, 256,
			       UB_POOL_RECV | ((m & 0x40) ? UB_POOL_INC : 0),
			       &err);
	ASSERT(f->rpool);
	/* The relay queues c1's receive buffers on c2 until c3 reads them:
	 * were c3 to receive into the same pool, all of it could sit in c2's
	 * queue with c3 starved for a buffer, and nothing would move. */
	f->rpool3 = ub_pool_new(f->loop, 32, 256,
				UB_POOL_RECV | ((m & 0x80) ? UB_POOL_INC : 0),
				&err);
	ASSERT(f->rpool3);
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "pools at %.1f ms\n", now_ms() - t_start);
	f->hold_mask = (m >> 2) & 0x0d; /* c0, c2, c3 may keep DATA */
	for (int p = 0; p < 2; p++) {
		int fds[2], tcp = (cfg >> p) & 1, r = make_pair(fds, tcp);

		if (r < 0 && tcp &&
		    (errno == EADDRINUSE || errno == EADDRNOTAVAIL)) {
			/* Hundreds of runs a second leave loopback ports in
			 * TIME_WAIT until none is free (seen after ~370,000
			 * runs in 20 minutes): a limit of the machine, not a
			 * finding.  Go on with a socketpair. */
			tcp = 0;
			r = make_pair(fds, 0);
		}
		if (r < 0)
			FAIL("could not make a %s pair: %s", tcp ? "TCP" : "unix",
			     strerror(errno));
		for (int k = 0; k < 2; k++) {
			int i = p * 2 + k;

			small_bufs(fds[k], tcp);
			ub_conn_opts_init(&o);
			o.mode = mode;
			o.send_pool = f->spool;
			o.recv_pool = i == 3 ? f->rpool3 : f->rpool;
			o.ring_entries = 8u << ((cfg >> (2 + k)) & 1);
			o.high_water = 2048u << ((cfg >> 4) & 3);
			o.low_water = o.high_water / 4;
			if (cfg & 0x40)
				o.flags |= UB_CONN_SENT_EVENTS;
			if ((m >> 6) & 1)
				o.flags |= UB_CONN_NO_RECV_BUNDLE;
			if (((m >> 7) & 1) && (i & 1))
				o.flags |= UB_CONN_SINGLESHOT;
			f->cs[i].c = ub_conn_adopt(f->loop, fds[k], &o, &err);
			if (!f->cs[i].c)
				FAIL("ub_conn_adopt: %d", err);
			/* which conns are held: the input's length picks */
			f->cs[i].held = (int)((f->len >> i) & 1);
			if (f->cs[i].held)
				ASSERT(ub_conn_hold(f->cs[i].c) == 0);
			f->cs[i].fd = fds[k];
			f->cs[i].out = out_mem[i];
		}
	}

	dgram_setup(f);
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "setup done at %.1f ms\n", now_ms() - t_start);
	while (f->pos < f->len && steps++ < 4096) {
		uint8_t op = get(f), a = get(f), b = get(f);
		int i = a % NC;
		size_t n = (size_t)b * 32 + (a >> 2);

		if (op >= 0xc0 && op <= 0xdf) {
			dgram_op(f, op & 0x1f, a, b);
			check_pools(f);
			if (getenv("FUZZ_TRACE"))
				fprintf(stderr, "dgram op %d ep %d a %d b %d: "
					"dheld %d pending %d\n", op & 0x1f,
					a % ND, a, b, f->ndheld,
					ub_loop_pending(f->loop));
			continue;
		}
		switch (op % 12) {
		case 0:
		case 1:
			op_send(f, i, n);
			break;
		case 2:
			op_send_buf(f, i, n, 0);
			break;
		case 3:
			op_send_buf(f, i, b, 1);
			break;
		case 4:
			op_acquire(f);
			break;
		case 5:
			op_release(f, b);
			break;
		case 6:
			if ((b & 0x80) && f->cs[i].c) {
				/* soft water on or off (sends accepted while it
				 * was on may still be spilled: they drain all
				 * the same) */
				f->cs[i].soft = (b >> 6) & 1;
				f->cs[i].was_soft |= f->cs[i].soft;
				ASSERT(ub_conn_set_soft_water(
					       f->cs[i].c, f->cs[i].soft) == 0);
			} else {
				op_pipe(f, b & 1);
			}
			break;
		case 7:
			if (f->cs[i].c && (b & 2)) {
				/* a receive budget of 1 byte (one buffer) and up */
				ASSERT(ub_conn_set_recv_budget(
					       f->cs[i].c,
					       1 + (size_t)(b >> 2) * 97) == 0);
			} else if (f->cs[i].c) {
				int r = b & 1 ? ub_conn_pause_recv(f->cs[i].c)
					      : ub_conn_resume_recv(f->cs[i].c);

				ASSERT(r == 0 || r == -EPIPE);
			}
			break;
		case 8:
			op_close(f, i, b % 3);
			break;
		case 9:
			relay_flush(f);
			pump(f, b % 3);
			break;
		default:
			pump(f, 0);
			break;
		}
		check_pools(f);
		if (getenv("FUZZ_TRACE"))
			fprintf(stderr, "op %d conn %d n %zu: APP s%u r%u held %d "
				"back %d pending %d piped %d\n", op % 12, i, n,
				ub_pool_count_state(f->spool, UB_BUF_APP),
				ub_pool_count_state(f->rpool, UB_BUF_APP),
				f->nheld, f->nback, ub_loop_pending(f->loop),
				f->piped);
	}

	/* Wind down: resume, flush the relay, close everything gracefully
	 * (the relay's target last), then every conn must be CLOSED. */
	for (int i = 0; i < NC; i++)
		if (f->cs[i].c)
			ub_conn_resume_recv(f->cs[i].c);
	for (int k = 0; k < f->nheld; k++)
		ASSERT(ub_buf_release(f->held[k]) == 0);
	f->nheld = 0;
	f->winding = 1;
	dgram_wind_down(f);
	deadline = now_ms() + 3000;
	for (int i = 0; i < NC; i++)
		if (f->cs[i].c && !f->cs[i].closing && i != 2)
			op_close(f, i, 0);
	while (!all_closed(f)) {
		relay_flush(f);
		if (f->cs[2].c && !f->cs[2].closing && !f->nback &&
		    (!f->cs[1].c || f->cs[1].eof))
			op_close(f, 2, 0);
		if (now_ms() > deadline) {
			for (int i = 0; i < NC; i++)
				if (f->cs[i].c)
					fprintf(stderr,
						"conn %d: queued %zu, closing %d "
						"eof %d error %d\n",
						i, ub_conn_queued_bytes(f->cs[i].c),
						f->cs[i].closing, f->cs[i].eof,
						f->cs[i].error);
			FAIL("graceful close of everything did not finish "
			     "in 3 s");
		}
		if (now_ms() > deadline - 1500) /* a relay may wait on EOF */
			for (int i = 0; i < NC; i++)
				if (f->cs[i].c && !f->cs[i].closing)
					op_close(f, i, 0);
		pump(f, 2);
	}
	pump(f, 0);
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "all closed at %.1f ms\n", now_ms() - t_start);
	ASSERT(f->nback == 0);
	ASSERT(f->ndheld == 0);
	for (int i = 0; i < f->nd; i++)
		ASSERT(!f->ds[i].ep && f->ds[i].closed_seen);
	np = all_pools(f, pools, isrecv);
	for (int p = 0; p < np; p++) {
		const ub_pool *pl = pools[p];
		int idle = isrecv[p] ? UB_BUF_KERNEL : UB_BUF_FREE;

		if (ub_pool_count_state(pl, idle) != ub_pool_count(pl))
			FAIL("pool %d not idle at the end: %u of %u (FREE %u "
			     "KERNEL %u APP %u QUEUED %u)", p,
			     ub_pool_count_state(pl, idle), ub_pool_count(pl),
			     ub_pool_count_state(pl, UB_BUF_FREE),
			     ub_pool_count_state(pl, UB_BUF_KERNEL),
			     ub_pool_count_state(pl, UB_BUF_APP),
			     ub_pool_count_state(pl, UB_BUF_QUEUED));
	}
	for (int p = 0; p < np; p++)
		ASSERT(ub_pool_free((ub_pool *)pools[p]) == 0);
	/* held conns: half let go now (freed at once: gone), half after the
	 * loop is freed (detached) */
	for (int i = 0; i < NC; i++) {
		ASSERT(!f->cs[i].held == !f->cs[i].kept);
		if (f->cs[i].kept && (i & 1)) {
			ASSERT(ub_conn_is_closed(f->cs[i].kept) == 1);
			ub_conn_release(f->cs[i].kept);
			f->cs[i].kept = NULL;
		}
	}
	ASSERT(ub_loop_free(f->loop) == 0);
	for (int i = 0; i < NC; i++) {
		ub_conn *c = f->cs[i].kept;

		if (!c)
			continue;
		ASSERT(ub_conn_loop(c) == NULL);
		ASSERT(ub_conn_is_closed(c) == 1);
		ASSERT(ub_conn_send(c, "x", 1) == -EPIPE);
		ASSERT(ub_conn_fd(c) == -1);
		ub_conn_release(c);
		f->cs[i].kept = NULL;
	}
	if (getenv("FUZZ_TRACE"))
		fprintf(stderr, "freed at %.1f ms\n", now_ms() - t_start);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f;
	int n, base_fds;

	memset(&f, 0, sizeof(f));
	f.in = data;
	f.len = size;
	base_fds = fd_count(); /* libFuzzer's own files come and go */
	run(&f);
	n = fd_count();
	if (n != base_fds)
		FAIL("%d fds open after the input, %d before", n, base_fds);
	return 0;
}
