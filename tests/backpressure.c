/*
 * backpressure.c - high/low water marks and UB_EV_WRITABLE, in every mode.
 *
 * High water: the peer does not read; sends go in until ub_conn_send says
 * -EAGAIN, at which point at least high water bytes are queued.  Refused
 * sends change nothing (a refused send_buf leaves the buffer APP).  While
 * the peer still does not read, no WRITABLE comes.  Then the peer reads:
 * exactly one WRITABLE arrives, when the queue is at or below low water, and
 * sending works again.  Then 4 MiB more go through at full speed, with one
 * WRITABLE per refusal.  Every byte arrives, in order, none lost or doubled.
 *
 * No free buffer: a send pool of 8 x 4 KiB under a 1 MiB high water mark;
 * refusals now come from the empty pool, and WRITABLE must still follow
 * each one as buffers come back.
 */
#include "helpers.h"

#include <unistd.h>

struct test {
	ub_loop *loop;
	ub_conn *c;
	ub_pool *spool;
	struct th_peer peer;
	uint64_t seed, sent, target;
	int blocked, peer_reads, closed;
	long writable, episodes;
	size_t queued_at_writable;
	uint8_t scratch[16384];
};

static void on_event(const ub_event *ev, void *arg)
{
	struct test *t = arg;

	CHECK(ev->conn == t->c);
	switch (ev->type) {
	case UB_EV_WRITABLE:
		t->writable++;
		if (t->writable > t->episodes + 1)
			TH_FAILF("WRITABLE #%ld after %ld refusals", t->writable,
				 t->episodes);
		t->queued_at_writable = ub_conn_queued_bytes(t->c);
		CHECK_CMP(t->queued_at_writable, <=, ub_conn_low_water(t->c));
		t->blocked = 0;
		return;
	case UB_EV_CLOSED:
		CHECK_EQ(ev->res, 0);
		t->closed = 1;
		return;
	}
	TH_FAILF("unexpected %s res %d", ub_event_name(ev->type), ev->res);
}

/* One send of a random size; returns bytes accepted or -EAGAIN. */
static ssize_t send_one(struct test *t, size_t maxlen)
{
	size_t n = th_rand_range(1, maxlen);
	ssize_t r;

	if (n > t->target - t->sent)
		n = t->target - t->sent;
	th_pat_fill(t->seed, t->sent, t->scratch, n);
	r = ub_conn_send(t->c, t->scratch, n);
	if (r == -EAGAIN)
		return r;
	CHECK_OK(r);
	CHECK_CMP(r, >, 0);
	CHECK_CMP(r, <=, n);
	t->sent += r;
	return r;
}

static int step_pump(void *arg)
{
	struct test *t = arg;
	int busy = 0;

	if (t->peer_reads)
		busy |= th_peer_read(&t->peer) > 0;
	while (!t->blocked && t->sent < t->target) {
		if (send_one(t, sizeof(t->scratch)) == -EAGAIN) {
			t->blocked = 1;
			t->episodes++;
			break;
		}
		busy = 1;
	}
	if (t->sent == t->target && t->peer.rd == t->target &&
	    !ub_conn_queued_bytes(t->c))
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static int step_read_until_writable(void *arg)
{
	struct test *t = arg;
	int busy = th_peer_read(&t->peer) > 0;

	if (t->writable)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static int step_closed(void *arg)
{
	struct test *t = arg;

	th_peer_read(&t->peer);
	return t->closed && t->peer.eof ? TH_DONE : TH_IDLE;
}

static struct test *setup(int mode, unsigned nbuf, unsigned bufsz,
			  size_t high, size_t low)
{
	struct test *t = calloc(1, sizeof(*t));
	ub_conn_opts o;
	int fds[2], err = 0;

	CHECK(t != NULL);
	t->loop = th_loop_new(NULL);
	t->spool = ub_pool_new(t->loop, nbuf, bufsz, 0, &err);
	CHECK_PTR(t->spool, err);
	th_tcp_pair(fds, 0);
	th_small_bufs(fds[0]);
	th_small_bufs(fds[1]);
	th_peer_init(&t->peer, fds[1], "peer");
	t->seed = t->peer.seed = th_rand();
	ub_conn_opts_init(&o);
	o.mode = mode;
	o.send_pool = t->spool;
	o.high_water = high;
	o.low_water = low;
	o.flags = UB_CONN_NO_RECV;
	t->c = ub_conn_adopt(t->loop, fds[0], &o, &err);
	CHECK_PTR(t->c, err);
	CHECK_EQ(ub_conn_high_water(t->c), high);
	CHECK_EQ(ub_conn_low_water(t->c), low);
	return t;
}

static void teardown(struct test *t)
{
	CHECK_EQ(t->peer.rd, t->sent);
	CHECK_EQ(ub_conn_bytes_sent(t->c), t->sent);
	CHECK_OK(ub_conn_close(t->c));
	th_run(t->loop, on_event, step_closed, t, 10, TH_TIMEOUT_MS,
	       "CLOSED and the peer's EOF");
	CHECK_EQ(t->peer.rd, t->sent);
	th_run_for(t->loop, on_event, NULL, t, 1, 20);
	th_check_pool_idle(t->spool, "send");
	CHECK_OK(ub_pool_free(t->spool));
	CHECK_OK(ub_loop_free(t->loop));
	close(t->peer.fd);
	free(t);
}

static void water_marks(int mode)
{
	const size_t high = 256 * 1024, low = 64 * 1024;
	struct test *t = setup(mode, 128, 16384, high, low);
	ub_buf *b;
	size_t q;
	int err = 0;

	/* set_water validates and a failure changes nothing */
	CHECK_ERR(ub_conn_set_water(t->c, 0, 0), EINVAL);
	CHECK_ERR(ub_conn_set_water(t->c, 100, 200), EINVAL);
	CHECK_EQ(ub_conn_high_water(t->c), high);
	CHECK_EQ(ub_conn_low_water(t->c), low);
	CHECK_OK(ub_conn_set_water(t->c, 1000, 1000));
	CHECK_EQ(ub_conn_high_water(t->c), 1000);
	CHECK_EQ(ub_conn_low_water(t->c), 1000);
	CHECK_OK(ub_conn_set_water(t->c, high, low));

	/* fill while the peer does not read */
	t->target = UINT64_MAX;
	for (long i = 0;; i++) {
		CHECK_CMP(i, <, 100000);
		if (send_one(t, sizeof(t->scratch)) == -EAGAIN)
			break;
	}
	t->episodes = 1;
	q = ub_conn_queued_bytes(t->c);
	printf("  refused after %llu bytes, %zu queued (high %zu)\n",
	       (unsigned long long)t->sent, q, high);
	CHECK_CMP(q, >=, high);
	CHECK_CMP(t->sent, >=, high);
	CHECK_CMP(ub_conn_queued_bufs(t->c), >, 0);
	/* refused again, changing nothing */
	CHECK_ERR(ub_conn_send(t->c, t->scratch, 1), EAGAIN);
	b = ub_pool_acquire(t->spool, &err);
	CHECK_PTR(b, err);
	memset(ub_buf_data(b), 0, 10);
	CHECK_OK(ub_buf_set_len(b, 10));
	CHECK_ERR(ub_conn_send_buf(t->c, b), EAGAIN);
	CHECK_EQ(ub_buf_state(b), UB_BUF_APP);
	CHECK_OK(ub_buf_release(b));
	CHECK_EQ(ub_conn_queued_bytes(t->c), q);

	/* the peer still does not read: no WRITABLE */
	th_run_for(t->loop, on_event, NULL, t, 10, 150);
	CHECK_EQ(t->writable, 0);
	CHECK_CMP(ub_conn_queued_bytes(t->c), >, low);

	/* now it reads: exactly one WRITABLE, at or below low water */
	th_run(t->loop, on_event, step_read_until_writable, t, 5,
	       TH_TIMEOUT_MS, "WRITABLE");
	CHECK_EQ(t->writable, 1);
	CHECK_CMP(t->queued_at_writable, <=, low);
	printf("  WRITABLE with %zu queued (low %zu)\n", t->queued_at_writable,
	       low);
	/* sending works again at once */
	CHECK_CMP(send_one(t, 100), >, 0);

	/* 4 MiB more through at full speed */
	t->target = t->sent + (4u << 20);
	t->peer_reads = 1;
	th_run(t->loop, on_event, step_pump, t, 5, TH_TIMEOUT_MS,
	       "4 MiB more");
	th_run_for(t->loop, on_event, NULL, t, 5, 50);
	CHECK_CMP(t->writable, >=, t->episodes);
	CHECK_CMP(t->writable, <=, t->episodes + 1);
	printf("  %llu bytes delivered, %ld refusals, %ld WRITABLE\n",
	       (unsigned long long)t->peer.rd, t->episodes, t->writable);
	teardown(t);
}

static void no_free_buffer(int mode)
{
	struct test *t = setup(mode, 8, 4096, 1 << 20, 1 << 18);
	long i;

	/* the pool runs out long before the high water mark */
	t->target = UINT64_MAX;
	for (i = 0;; i++) {
		CHECK_CMP(i, <, 100000);
		if (send_one(t, 4096) == -EAGAIN)
			break;
	}
	t->episodes = 1;
	t->blocked = 1;
	printf("  pool of 8 x 4 KiB empty after %llu bytes\n",
	       (unsigned long long)t->sent);
	CHECK_CMP(ub_conn_queued_bytes(t->c), <, 1 << 20);
	CHECK_CMP(ub_pool_count_state(t->spool, UB_BUF_FREE), <, 8);
	/* the peer reads: buffers come back, WRITABLE follows */
	t->target = t->sent + (1u << 20);
	t->peer_reads = 1;
	th_run(t->loop, on_event, step_pump, t, 5, TH_TIMEOUT_MS,
	       "1 MiB through a tiny pool");
	th_run_for(t->loop, on_event, NULL, t, 5, 50);
	CHECK_CMP(t->writable, >=, t->episodes);
	CHECK_CMP(t->writable, <=, t->episodes + 1);
	printf("  %llu bytes delivered, %ld refusals, %ld WRITABLE\n",
	       (unsigned long long)t->peer.rd, t->episodes, t->writable);
	teardown(t);
}

static void one_mode(int mode, void *arg)
{
	(void)arg;
	water_marks(mode);
	no_free_buffer(mode);
	th_check_fds("after the mode");
}

int main(void)
{
	th_init("backpressure");
	/* defaults: 1 MiB high, low a quarter of high */
	{
		ub_loop *loop = th_loop_new(NULL);
		ub_conn_opts o;
		ub_conn *c;
		int fds[2], err = 0;

		th_socketpair(fds);
		ub_conn_opts_init(&o);
		o.flags = UB_CONN_NO_RECV;
		c = ub_conn_adopt(loop, fds[0], &o, &err);
		CHECK_PTR(c, err);
		printf("defaults: high %zu, low %zu\n", ub_conn_high_water(c),
		       ub_conn_low_water(c));
		CHECK_EQ(ub_conn_high_water(c), 1 << 20);
		CHECK_EQ(ub_conn_low_water(c), 1 << 18);
		ub_conn_opts_init(&o);
		o.flags = UB_CONN_NO_RECV;
		o.high_water = 4096;
		o.low_water = 8192; /* above high */
		CHECK(ub_conn_adopt(loop, fds[1], &o, &err) == NULL);
		CHECK_ERR(err, EINVAL);
		CHECK_OK(ub_loop_free(loop));
		close(fds[1]);
	}
	th_for_each_mode(one_mode, NULL);
	return th_finish();
}
