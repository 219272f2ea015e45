/*
 * pool_exhaust.c - a receive pool running dry, and the stream resuming.
 *
 * A connection receives from a pool of 4 buffers of 1 KiB while its peer
 * sends 64 KiB and then half-closes.  The test holds every DATA buffer, so
 * the pool drains: then no DATA may arrive for 200 ms, and the core must
 * not spin re-arming a receive that can only fail with -ENOBUFS (CPU time
 * over the quiet window stays under half of it).  Buffers are then released
 * one at a time, oldest first, and each release must let the stream move
 * again; every byte is verified at its offset and EOF comes only after the
 * last one.  Run with recv bundles (if the kernel has them), without
 * (UB_CONN_NO_RECV_BUNDLE), and with single-shot receives.
 */
#include "helpers.h"

#include <unistd.h>

#define TOTAL (64 * 1024)
#define NBUF 4
#define BUFSZ 1024

struct test {
	ub_conn *c;
	ub_pool *pool;
	struct th_peer peer;
	ub_buf *held[TOTAL]; /* FIFO: every buffer ever held, oldest first */
	unsigned head, n;
	uint64_t got;
	long data;
	int eof, closed;
};

static void on_event(const ub_event *ev, void *arg)
{
	struct test *t = arg;

	CHECK(ev->conn == t->c);
	switch (ev->type) {
	case UB_EV_DATA:
		CHECK(!t->eof);
		CHECK_EQ(ub_buf_state(ev->buf), UB_BUF_APP);
		CHECK(ub_buf_pool(ev->buf) == t->pool);
		CHECK_EQ(ev->res, ub_buf_len(ev->buf));
		CHECK_CMP(ev->res, >, 0);
		CHECK_CMP(ev->res, <=, BUFSZ);
		th_pat_check(t->peer.wseed, t->got, ub_buf_data(ev->buf),
			     ub_buf_len(ev->buf), "received");
		t->got += ev->res;
		t->data++;
		/* the application now holds it: never more than the pool */
		CHECK_CMP(t->n, <, NBUF);
		t->held[(t->head + t->n++) % TOTAL] = ev->buf;
		return;
	case UB_EV_EOF:
		CHECK(!t->eof);
		CHECK_EQ(t->got, TOTAL);
		t->eof = 1;
		return;
	case UB_EV_CLOSED:
		CHECK_EQ(ev->res, 0);
		t->closed = 1;
		return;
	}
	TH_FAILF("unexpected %s res %d (received %llu)",
		 ub_event_name(ev->type), ev->res,
		 (unsigned long long)t->got);
}

static void release_oldest(struct test *t)
{
	ub_buf *b = t->held[t->head];

	CHECK_CMP(t->n, >, 0);
	CHECK_OK(ub_buf_release(b));
	CHECK_EQ(ub_buf_state(b), UB_BUF_KERNEL);
	CHECK_ERR(ub_buf_release(b), EINVAL);
	t->head = (t->head + 1) % TOTAL;
	t->n--;
}

static int step_drained(void *arg)
{
	struct test *t = arg;
	int busy = th_peer_write(&t->peer) > 0;

	if (ub_pool_count_state(t->pool, UB_BUF_APP) == NBUF)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static int step_write(void *arg)
{
	struct test *t = arg;

	return th_peer_write(&t->peer) > 0 ? TH_BUSY : TH_IDLE;
}

struct more {
	struct test *t;
	long want;
};

static int step_more(void *arg)
{
	struct more *m = arg;
	int busy = th_peer_write(&m->t->peer) > 0;

	if (m->t->data >= m->want)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static void more_ev(const ub_event *ev, void *arg)
{
	on_event(ev, ((struct more *)arg)->t);
}

static int step_eof(void *arg)
{
	return ((struct test *)arg)->eof ? TH_DONE : TH_IDLE;
}

static int step_closed(void *arg)
{
	return ((struct test *)arg)->closed ? TH_DONE : TH_IDLE;
}

static void run(unsigned flags, const char *name)
{
	struct test *t = calloc(1, sizeof(*t));
	ub_loop *loop = th_loop_new(NULL);
	ub_conn_opts o;
	int fds[2], err = 0;
	long quiet_data, steps = 0;
	double cpu0, wall0, cpu, wall;

	CHECK(t != NULL);
	printf("%s:\n", name);
	t->pool = ub_pool_new(loop, NBUF, BUFSZ, UB_POOL_RECV, &err);
	CHECK_PTR(t->pool, err);
	th_tcp_pair(fds, 0);
	th_small_bufs(fds[0]);
	th_small_bufs(fds[1]);
	th_peer_init(&t->peer, fds[1], "peer");
	t->peer.wseed = th_rand();
	t->peer.wtotal = TOTAL;
	t->peer.wshut = 1;
	ub_conn_opts_init(&o);
	o.recv_pool = t->pool;
	o.flags = flags;
	t->c = ub_conn_adopt(loop, fds[0], &o, &err);
	CHECK_PTR(t->c, err);

	th_run(loop, on_event, step_drained, t, 10, TH_TIMEOUT_MS,
	       "the pool to drain");
	CHECK_EQ(ub_pool_count_state(t->pool, UB_BUF_KERNEL), 0);
	CHECK_EQ(t->n, NBUF);
	CHECK_CMP(t->got, <=, NBUF * BUFSZ);
	CHECK_CMP(t->got, <, TOTAL);
	printf("  drained after %llu bytes in %ld DATA\n",
	       (unsigned long long)t->got, t->data);

	/* quiet: nothing arrives, and nothing spins */
	quiet_data = t->data;
	cpu0 = th_cpu_ms();
	wall0 = th_now_ms();
	th_run_for(loop, on_event, step_write, t, 10, 200);
	cpu = th_cpu_ms() - cpu0;
	wall = th_now_ms() - wall0;
	CHECK_EQ(t->data, quiet_data);
	CHECK_EQ(ub_pool_count_state(t->pool, UB_BUF_APP), NBUF);
	printf("  quiet 200 ms: no DATA, %.0f ms CPU in %.0f ms\n", cpu, wall);
	if (cpu > wall / 2)
		TH_FAILF("%.0f ms CPU in %.0f ms with the pool dry: the "
			 "receive is being re-armed in a loop", cpu, wall);

	/* release one at a time: each release lets more through */
	while (t->got < TOTAL) {
		struct more m = { t, t->data + 1 };

		CHECK_CMP(++steps, <=, TOTAL);
		release_oldest(t);
		th_run(loop, more_ev, step_more, &m, 10, 5000,
		       "DATA after releasing one buffer");
	}
	printf("  resumed: %llu bytes in %ld DATA over %ld releases\n",
	       (unsigned long long)t->got, t->data, steps);
	CHECK_EQ(t->got, TOTAL);
	CHECK_EQ(ub_conn_bytes_received(t->c), TOTAL);
	while (t->n)
		release_oldest(t);
	th_run(loop, on_event, step_eof, t, 10, TH_TIMEOUT_MS, "EOF");
	CHECK_EQ(t->got, TOTAL);
	th_check_pool_idle(t->pool, "receive");
	CHECK_OK(ub_conn_close(t->c));
	th_run(loop, on_event, step_closed, t, 10, TH_TIMEOUT_MS, "CLOSED");
	th_run_for(loop, on_event, NULL, t, 1, 20);
	th_check_pool_idle(t->pool, "receive");
	CHECK_OK(ub_pool_free(t->pool));
	CHECK_OK(ub_loop_free(loop));
	close(fds[1]);
	th_check_fds(name);
	free(t);
}

int main(void)
{
	ub_loop *probe;
	unsigned feat;

	th_init("pool_exhaust");
	probe = th_loop_new(NULL);
	feat = ub_loop_features(probe);
	CHECK_OK(ub_loop_free(probe));
	if (feat & UB_FEAT_RECV_BUNDLE)
		run(0, "multishot with recv bundles");
	else
		run(0, "multishot (kernel has no recv bundles)");
	run(UB_CONN_NO_RECV_BUNDLE, "multishot, no recv bundles");
	run(UB_CONN_SINGLESHOT, "single-shot");
	run(UB_CONN_SINGLESHOT | UB_CONN_NO_RECV_BUNDLE,
	    "single-shot, no recv bundles");
	return th_finish();
}
