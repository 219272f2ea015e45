/*
 * sendq_full.c - one send queue kept at capacity by many writers, in every
 * send mode.
 *
 * Twelve writers share one connection (the sink, a socketpair with minimum
 * socket buffers and a 16-entry send ring) whose high water mark is
 * 128 KiB: eight are other connections whose received buffers are queued
 * on the sink as they arrive (ub_conn_send_buf, zero copy, pausing their
 * receive while the sink refuses), two copy with ub_conn_send, two fill
 * buffers acquired from a send pool of 32 x 4 KiB (so the pool, too, runs
 * dry).  Each writer has 64 KiB of its own pattern; writers take turns in
 * random order.  The sink's reader reads only while the writers are held
 * back (refused, or waiting for send buffers), so the queue fills to
 * capacity again and again.
 *
 * The test logs every chunk the sink accepted, in order, and the reader
 * checks the bytes it gets against that log (four rounds per mode): exactly the accepted bytes,
 * in acceptance order, none lost or doubled.  Refusals are -EAGAIN only,
 * change nothing (a refused buffer stays APP), and come only when the
 * queue is at or above high water or the send pool is empty; the queue
 * never holds more than high water plus one buffer; WRITABLE follows
 * refusals, and none comes unless a refusal, a short ub_conn_send, a
 * ub_conn_want_writable() or a queue at high water came since the last.  Every writer's 64 KiB arrive;
 * then every pool is idle and the fd count is back to the start.
 */
#include "helpers.h"

#include <sys/socket.h>
#include <unistd.h>

#define NFWD 8
#define NCOPY 2
#define NACQ 2
#define NW (NFWD + NCOPY + NACQ)
#define WBYTES (64u * 1024)
#define HIGH (128u * 1024)
#define LOW (32u * 1024)
#define MAXSEG 65536
#define MAXHELD 128

struct seg {
	uint32_t writer, len;
	uint64_t off;
};

struct writer {
	uint64_t seed, done; /* bytes accepted by the sink */
	/* forwarding writers */
	ub_conn *src;
	struct th_peer peer; /* writes this writer's stream into src */
	ub_buf *held[MAXHELD];
	uint64_t held_off; /* stream offset of held[0] */
	int nheld, paused, eof, closed, close_called;
	uint64_t rx; /* received on src, checked */
};

struct sq {
	ub_loop *loop;
	ub_pool *spool, *rpool;
	ub_conn *sink;
	int sink_fd, sink_closed;
	struct th_peer reader; /* reads the sink; checked against the log */
	struct writer w[NW];
	struct seg *log;
	unsigned nseg, rseg;   /* segments logged; segment being read */
	uint64_t rseg_off;     /* bytes of it read */
	uint64_t accepted;
	long refusals, writable, wants, blocked;
	int armed; /* something since the last WRITABLE calls for one */
	size_t max_queued;
};

static void log_chunk(struct sq *s, int w, uint64_t off, size_t len)
{
	struct seg *g;

	if (s->nseg && s->log[s->nseg - 1].writer == (uint32_t)w &&
	    s->log[s->nseg - 1].off + s->log[s->nseg - 1].len == off) {
		s->log[s->nseg - 1].len += (uint32_t)len;
	} else {
		CHECK(s->nseg < MAXSEG);
		g = &s->log[s->nseg++];
		g->writer = (uint32_t)w;
		g->off = off;
		g->len = (uint32_t)len;
	}
	s->accepted += len;
	size_t q = ub_conn_queued_bytes(s->sink);
	if (q >= HIGH)
		s->armed = 1; /* above high water: WRITABLE once below low */
	if (q > s->max_queued)
		s->max_queued = q;
	CHECK_CMP(q, <, HIGH + 4096);
}

/* A refusal must be -EAGAIN for a reason the test can see. */
static void refused(struct sq *s, int pool_may_be_empty)
{
	size_t q = ub_conn_queued_bytes(s->sink);

	if (q < HIGH && !(pool_may_be_empty &&
			  ub_pool_count_state(s->spool, UB_BUF_FREE) == 0))
		TH_FAILF("refused with %zu queued (high %u), %u free buffers",
			 q, HIGH, ub_pool_count_state(s->spool, UB_BUF_FREE));
	s->refusals++;
	s->blocked = 1;
	s->armed = 1;
}

/* Queue what writer i has, until refused or out of data. */
static int push(struct sq *s, int i)
{
	struct writer *w = &s->w[i];
	int busy = 0;

	if (i < NFWD) {
		int turn = (int)th_rand_range(1, 3);

		while (w->nheld && !s->blocked && turn--) {
			ub_buf *b = w->held[0];
			size_t len = ub_buf_len(b);
			int r = ub_conn_send_buf(s->sink, b);

			if (r == -EAGAIN) {
				CHECK_EQ(ub_buf_state(b), UB_BUF_APP);
				refused(s, 0);
				break;
			}
			CHECK_OK(r);
			log_chunk(s, i, w->held_off, len);
			w->held_off += len;
			w->done += len;
			memmove(w->held, w->held + 1,
				--w->nheld * sizeof(w->held[0]));
			busy = 1;
		}
		if (!w->nheld && w->paused) {
			CHECK_OK(ub_conn_resume_recv(w->src));
			w->paused = 0;
		}
		return busy;
	}
	while (w->done < WBYTES && !s->blocked) {
		uint8_t chunk[8192];
		size_t n = th_rand_range(1, sizeof(chunk));
		ssize_t r;

		if (n > WBYTES - w->done)
			n = WBYTES - w->done;
		if (i < NFWD + NCOPY) {
			th_pat_fill(w->seed, w->done, chunk, n);
			r = ub_conn_send(s->sink, chunk, n);
			if (r == -EAGAIN) {
				refused(s, 1);
				break;
			}
			CHECK_OK(r);
			CHECK_CMP(r, <=, n);
			if ((size_t)r < n)
				s->armed = 1; /* short: the rest was refused */
		} else {
			ub_buf *b = ub_pool_acquire(s->spool, NULL);

			if (!b) {
				/* the pool is dry: wait for WRITABLE */
				CHECK_OK(ub_conn_want_writable(s->sink));
				s->wants++;
				s->blocked = 1;
				s->armed = 1;
				break;
			}
			if (n > ub_buf_capacity(b))
				n = ub_buf_capacity(b);
			th_pat_fill(w->seed, w->done, ub_buf_data(b), n);
			CHECK_OK(ub_buf_set_len(b, n));
			r = ub_conn_send_buf(s->sink, b);
			if (r == -EAGAIN) {
				CHECK_EQ(ub_buf_state(b), UB_BUF_APP);
				CHECK_OK(ub_buf_release(b));
				refused(s, 0);
				break;
			}
			CHECK_OK(r);
			r = (ssize_t)n;
		}
		log_chunk(s, i, w->done, (size_t)r);
		w->done += (uint64_t)r;
		busy = 1;
		if (th_rand() % 4 == 0)
			break; /* let another writer in */
	}
	return busy;
}

static void on_event(const ub_event *ev, void *arg)
{
	struct sq *s = arg;
	struct writer *w = ev->udata;

	if (ev->conn == s->sink) {
		switch (ev->type) {
		case UB_EV_WRITABLE:
			CHECK_CMP(ub_conn_queued_bytes(s->sink), <=, LOW);
			if (!s->armed)
				TH_FAILF("WRITABLE with no refusal, short send, "
					 "want_writable or high water before it");
			s->armed = 0;
			s->writable++;
			s->blocked = 0;
			return;
		case UB_EV_CLOSED:
			CHECK_EQ(ev->res, 0);
			s->sink_closed = 1;
			return;
		}
		TH_FAILF("sink: unexpected %s res %d", ub_event_name(ev->type),
			 ev->res);
	}
	CHECK(w != NULL && ev->conn == w->src);
	switch (ev->type) {
	case UB_EV_DATA:
		CHECK(!w->eof);
		th_pat_check(w->seed, w->rx, ub_buf_data(ev->buf),
			     ub_buf_len(ev->buf), "writer's source");
		w->rx += ub_buf_len(ev->buf);
		CHECK(w->nheld < MAXHELD);
		w->held[w->nheld++] = ev->buf;
		if (!w->paused && w->nheld > 4) {
			CHECK_OK(ub_conn_pause_recv(w->src));
			w->paused = 1;
		}
		return;
	case UB_EV_EOF:
		CHECK_EQ(w->rx, WBYTES);
		w->eof = 1;
		return;
	case UB_EV_CLOSED:
		CHECK_EQ(ev->res, 0);
		w->closed = 1;
		return;
	}
	TH_FAILF("source: unexpected %s res %d", ub_event_name(ev->type),
		 ev->res);
}

/* Check what the sink's reader got against the log. */
static void check_read(struct sq *s, const uint8_t *p, size_t n)
{
	while (n) {
		struct seg *g;
		size_t k;

		CHECK(s->rseg < s->nseg);
		g = &s->log[s->rseg];
		k = g->len - s->rseg_off;
		if (k > n)
			k = n;
		th_pat_check(s->w[g->writer].seed, g->off + s->rseg_off, p, k,
			     "sink stream");
		p += k;
		n -= k;
		s->rseg_off += k;
		if (s->rseg_off == g->len) {
			s->rseg++;
			s->rseg_off = 0;
		}
	}
}

static int read_sink(struct sq *s)
{
	uint8_t buf[65536];
	int busy = 0;

	for (;;) {
		ssize_t r = read(s->reader.fd, buf, sizeof(buf));

		if (r < 0) {
			CHECK(errno == EAGAIN);
			break;
		}
		if (r == 0) {
			s->reader.eof = 1;
			break;
		}
		check_read(s, buf, (size_t)r);
		s->reader.rd += (uint64_t)r;
		busy = 1;
	}
	return busy;
}

static int step(void *arg)
{
	struct sq *s = arg;
	int busy = 0, order[NW], done = 0;

	for (int i = 0; i < NW; i++)
		order[i] = i;
	for (int i = NW - 1; i > 0; i--) {
		int j = (int)(th_rand() % (uint64_t)(i + 1)), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	for (int k = 0; k < NW; k++) {
		int i = order[k];
		struct writer *w = &s->w[i];

		if (i < NFWD)
			busy |= th_peer_write(&w->peer) > 0;
		busy |= push(s, i);
		if (i < NFWD && w->eof && !w->nheld && !w->close_called &&
		    w->done == WBYTES) {
			CHECK_OK(ub_conn_close(w->src));
			w->close_called = 1;
		}
		done += w->done == WBYTES;
	}
	/* The reader reads only while the writers are held back: the queue
	 * fills to capacity again and again. */
	if (s->blocked || done == NW)
		busy |= read_sink(s);
	if (done == NW && s->reader.rd == (uint64_t)NW * WBYTES)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static int all_closed(void *arg)
{
	struct sq *s = arg;
	int n = 0;

	read_sink(s);
	for (int i = 0; i < NFWD; i++)
		n += s->w[i].closed;
	return n == NFWD && s->sink_closed && s->reader.eof ? TH_DONE
							     : TH_IDLE;
}

static void one_round(int mode)
{
	struct sq *s = calloc(1, sizeof(*s));
	ub_conn_opts co;
	int fds[2], err = 0, srcfd[NFWD];

	CHECK(s != NULL);
	s->log = calloc(MAXSEG, sizeof(*s->log));
	CHECK(s->log != NULL);
	s->loop = th_loop_new(NULL);
	s->spool = ub_pool_new(s->loop, 32, 4096, 0, &err);
	CHECK_PTR(s->spool, err);
	s->rpool = ub_pool_new(s->loop, 128, 2048, UB_POOL_RECV, &err);
	CHECK_PTR(s->rpool, err);
	ub_conn_opts_init(&co);
	co.mode = mode;
	co.send_pool = s->spool;
	co.recv_pool = s->rpool;
	co.ring_entries = 16;
	co.high_water = HIGH;
	co.low_water = LOW;
	th_socketpair(fds);
	th_small_bufs(fds[0]);
	th_small_bufs(fds[1]);
	s->sink = ub_conn_adopt(s->loop, fds[0], &co, &err);
	CHECK_PTR(s->sink, err);
	s->sink_fd = fds[0];
	th_peer_init(&s->reader, fds[1], "sink reader");
	for (int i = 0; i < NW; i++) {
		struct writer *w = &s->w[i];

		w->seed = th_rand();
		if (i >= NFWD)
			continue;
		th_socketpair(fds);
		co.udata = w;
		w->src = ub_conn_adopt(s->loop, fds[0], &co, &err);
		CHECK_PTR(w->src, err);
		srcfd[i] = fds[0];
		th_peer_init(&w->peer, fds[1], "source writer");
		w->peer.wseed = w->seed;
		w->peer.wtotal = WBYTES;
		w->peer.wshut = 1;
	}
	if (!th_run_try(s->loop, on_event, step, s, 1, 15000)) {
		for (int i = 0; i < NW; i++)
			fprintf(stderr, "writer %d: done %llu rx %llu held %d "
				"paused %d eof %d\n", i,
				(unsigned long long)s->w[i].done,
				(unsigned long long)s->w[i].rx, s->w[i].nheld,
				s->w[i].paused, s->w[i].eof);
		TH_FAILF("stalled: blocked %ld, %ld refusals, %ld WRITABLE, "
			 "%zu queued, reader at %llu of %llu, %u free send "
			 "buffers, %u receive buffers in the kernel",
			 s->blocked, s->refusals, s->writable,
			 ub_conn_queued_bytes(s->sink),
			 (unsigned long long)s->reader.rd,
			 (unsigned long long)s->accepted,
			 ub_pool_count_state(s->spool, UB_BUF_FREE),
			 ub_pool_count_state(s->rpool, UB_BUF_KERNEL));
	}
	CHECK_EQ(s->accepted, (uint64_t)NW * WBYTES);
	CHECK_EQ(s->rseg, s->nseg);
	/* How often the queue refills depends on how much the kernel moves
	 * per reader turn (3 of 768 KiB under load, 5-7 when quiet): at
	 * least twice, and once right up to high water. */
	CHECK_CMP(s->refusals, >=, 2);
	CHECK_CMP(s->writable, >=, 1);
	CHECK_CMP(s->max_queued, >=, HIGH);
	CHECK_OK(ub_conn_close(s->sink));
	th_run(s->loop, on_event, all_closed, s, 1, 5000, "every CLOSED");
	printf("  %d writers, %llu bytes in %u runs, %ld refusals, %ld "
	       "WRITABLE, queue up to %zu bytes\n",
	       NW, (unsigned long long)s->accepted, s->nseg, s->refusals,
	       s->writable, s->max_queued);
	for (int i = 0; i < NFWD; i++) {
		CHECK(!th_fd_is_open(srcfd[i]));
		close(s->w[i].peer.fd);
	}
	CHECK(!th_fd_is_open(s->sink_fd));
	close(s->reader.fd);
	th_run_for(s->loop, on_event, NULL, s, 1, 10);
	th_check_pool_idle(s->spool, "send");
	th_check_pool_idle(s->rpool, "receive");
	CHECK_OK(ub_pool_free(s->spool));
	CHECK_OK(ub_pool_free(s->rpool));
	CHECK_OK(ub_loop_free(s->loop));
	free(s->log);
	free(s);
}

static void run(int mode, void *arg)
{
	(void)arg;
	th_watchdog(19);
	for (int round = 0; round < 4; round++)
		one_round(mode);
}

int main(void)
{
	th_init("sendq_full");
	th_watchdog(19);
	th_for_each_mode(run, NULL);
	return th_finish();
}
