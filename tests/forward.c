/*
 * forward.c - a received buffer forwarded to another connection, zero copy.
 *
 * Connection A receives (its own pool); every DATA buffer is queued on
 * connection B with ub_conn_send_buf.  B's peer does not read at first, so
 * buffers stay QUEUED: then they cannot be released, set, or queued again
 * (-EINVAL, state unchanged), A's pool counts them as QUEUED and refuses to
 * be freed.  Once B's peer reads, every byte arrives in order and every
 * buffer is back in A's receive ring (KERNEL) and releasing it again is
 * -EINVAL.  Queueing a buffer moves its generation on.  Also refused with -EINVAL,
 * changing nothing: an empty acquired buffer, a buffer of another loop's
 * pool, FREE and KERNEL buffers.
 */
#include "helpers.h"

#include <unistd.h>

#define TOTAL (512 * 1024)

struct test {
	ub_loop *loop;
	ub_conn *a, *b;
	ub_pool *apool, *bspool, *brpool;
	struct th_peer pa, pb; /* A's peer writes, B's peer reads */
	ub_buf *last;          /* last buffer forwarded */
	uint32_t last_gen;
	uint64_t fwd;
	long data, stale_gen;
	int closed_a, closed_b, eof_a;
};

static void on_event(const ub_event *ev, void *arg)
{
	struct test *t = arg;

	if (ev->conn == t->a) {
		switch (ev->type) {
		case UB_EV_DATA: {
			size_t len = ub_buf_len(ev->buf);

			CHECK(ub_buf_pool(ev->buf) == t->apool);
			CHECK_EQ(ub_buf_state(ev->buf), UB_BUF_APP);
			th_pat_check(t->pa.wseed, t->fwd, ub_buf_data(ev->buf),
				     len, "A received");
			t->last_gen = ub_buf_gen(ev->buf);
			CHECK_OK(ub_conn_send_buf(t->b, ev->buf));
			CHECK_EQ(ub_buf_state(ev->buf), UB_BUF_QUEUED);
			/* generation changes when it leaves the application
			 * (checked at the end, so the rest runs first) */
			if (ub_buf_gen(ev->buf) == t->last_gen)
				t->stale_gen++;
			t->last_gen = ub_buf_gen(ev->buf);
			t->last = ev->buf;
			t->fwd += len;
			t->data++;
			return;
		}
		case UB_EV_EOF:
			t->eof_a = 1;
			return;
		case UB_EV_CLOSED:
			CHECK_EQ(ev->res, 0);
			t->closed_a = 1;
			return;
		}
	} else if (ev->conn == t->b) {
		switch (ev->type) {
		case UB_EV_CLOSED:
			CHECK_EQ(ev->res, 0);
			t->closed_b = 1;
			return;
		}
	}
	TH_FAILF("unexpected %s res %d", ub_event_name(ev->type), ev->res);
}

static int step_fill(void *arg)
{
	struct test *t = arg;

	/* A's peer writes it all; B's peer does not read yet */
	if (t->fwd == TOTAL)
		return TH_DONE;
	return th_peer_write(&t->pa) > 0 ? TH_BUSY : TH_IDLE;
}

static int step_drain(void *arg)
{
	struct test *t = arg;
	int busy = th_peer_read(&t->pb) > 0;

	if (t->pb.rd == TOTAL && th_pool_idle(t->apool) &&
	    !ub_conn_queued_bytes(t->b))
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

/* Both peers read to EOF and then close, as real peers do. */
static int step_closed(void *arg)
{
	struct test *t = arg;
	struct th_peer *p[2] = { &t->pa, &t->pb };

	for (int i = 0; i < 2; i++) {
		if (p[i]->fd < 0)
			continue;
		th_peer_read(p[i]);
		if (p[i]->eof) {
			CHECK(close(p[i]->fd) == 0);
			p[i]->fd = -1;
		}
	}
	return t->closed_a && t->closed_b && t->pa.fd < 0 && t->pb.fd < 0
		       ? TH_DONE
		       : TH_IDLE;
}

static void run(int mode, void *arg)
{
	struct test *t = calloc(1, sizeof(*t));
	ub_conn_opts o;
	int pa[2], pb[2], err = 0;
	ub_buf *x;

	(void)arg;
	CHECK(t != NULL);
	t->loop = th_loop_new(NULL);
	/* A's pool holds the whole transfer so A never starves */
	t->apool = ub_pool_new(t->loop, 256, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(t->apool, err);
	t->bspool = ub_pool_new(t->loop, 8, 4096, 0, &err);
	CHECK_PTR(t->bspool, err);
	t->brpool = ub_pool_new(t->loop, 8, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(t->brpool, err);

	th_tcp_pair(pa, 0);
	th_tcp_pair(pb, 0);
	for (int i = 0; i < 2; i++) {
		th_small_bufs(pa[i]);
		th_small_bufs(pb[i]);
	}
	th_peer_init(&t->pa, pa[1], "A's peer");
	t->pa.wseed = th_rand();
	t->pa.wtotal = TOTAL;
	th_peer_init(&t->pb, pb[1], "B's peer");
	t->pb.seed = t->pa.wseed;

	ub_conn_opts_init(&o);
	o.mode = mode;
	o.recv_pool = t->apool;
	/* A may hold the whole transfer queued on B (the default budget,
	 * 256 KiB, would stop it halfway: tests/isolation.c covers that). */
	o.recv_budget = 2 * TOTAL;
	t->a = ub_conn_adopt(t->loop, pa[0], &o, &err);
	CHECK_PTR(t->a, err);
	o.recv_pool = t->brpool;
	o.send_pool = t->bspool;
	o.high_water = 4 * TOTAL;
	o.low_water = TOTAL;
	t->b = ub_conn_adopt(t->loop, pb[0], &o, &err);
	CHECK_PTR(t->b, err);

	th_run(t->loop, on_event, step_fill, t, 10, TH_TIMEOUT_MS,
	       "everything forwarded to B");
	th_run_for(t->loop, on_event, NULL, t, 10, 50);
	CHECK_EQ(t->fwd, TOTAL);
	CHECK_CMP(ub_conn_queued_bytes(t->b), >, 0);
	CHECK_CMP(ub_conn_queued_bufs(t->b), >, 0);
	CHECK_CMP(ub_pool_count_state(t->apool, UB_BUF_QUEUED), >=,
		  ub_conn_queued_bufs(t->b));
	CHECK_EQ(ub_pool_count_state(t->apool, UB_BUF_APP), 0);
	printf("  %llu bytes forwarded in %ld buffers; %zu bytes in %u "
	       "buffers still queued on B\n", (unsigned long long)t->fwd,
	       t->data, ub_conn_queued_bytes(t->b), ub_conn_queued_bufs(t->b));

	/* a QUEUED buffer: every misuse is -EINVAL and changes nothing */
	x = t->last;
	CHECK_EQ(ub_buf_state(x), UB_BUF_QUEUED);
	size_t qb = ub_conn_queued_bytes(t->b);
	CHECK_ERR(ub_buf_release(x), EINVAL);
	CHECK_ERR(ub_buf_set_len(x, 1), EINVAL);
	CHECK_ERR(ub_conn_send_buf(t->b, x), EINVAL);
	CHECK_ERR(ub_conn_send_buf(t->a, x), EINVAL);
	CHECK_EQ(ub_buf_state(x), UB_BUF_QUEUED);
	CHECK_EQ(ub_buf_gen(x), t->last_gen);
	CHECK_EQ(ub_conn_queued_bytes(t->b), qb);
	CHECK_ERR(ub_pool_free(t->apool), EBUSY);

	/* other refusals */
	{
		ub_loop *other = th_loop_new(NULL);
		ub_pool *op = ub_pool_new(other, 2, 4096, 0, &err);
		ub_buf *ob, *eb;

		CHECK_PTR(op, err);
		ob = ub_pool_acquire(op, &err);
		CHECK_PTR(ob, err);
		CHECK_OK(ub_buf_set_len(ob, 10));
		CHECK_ERR(ub_conn_send_buf(t->b, ob), EINVAL);
		CHECK_EQ(ub_buf_state(ob), UB_BUF_APP);
		CHECK_OK(ub_buf_release(ob));
		CHECK_OK(ub_pool_free(op));
		CHECK_OK(ub_loop_free(other));

		eb = ub_pool_acquire(t->bspool, &err);
		CHECK_PTR(eb, err);
		CHECK_EQ(ub_buf_len(eb), 0);
		CHECK_ERR(ub_conn_send_buf(t->b, eb), EINVAL);
		CHECK_EQ(ub_buf_state(eb), UB_BUF_APP);
		CHECK_OK(ub_buf_release(eb));
		/* FREE (send pool) and KERNEL (receive ring) buffers */
		eb = ub_pool_buf(t->bspool, 0);
		CHECK_EQ(ub_buf_state(eb), UB_BUF_FREE);
		CHECK_ERR(ub_conn_send_buf(t->b, eb), EINVAL);
		CHECK_EQ(ub_buf_state(eb), UB_BUF_FREE);
		eb = ub_pool_buf(t->brpool, 0);
		CHECK_EQ(ub_buf_state(eb), UB_BUF_KERNEL);
		CHECK_ERR(ub_conn_send_buf(t->b, eb), EINVAL);
		CHECK_EQ(ub_buf_state(eb), UB_BUF_KERNEL);
		CHECK_EQ(ub_conn_queued_bytes(t->b), qb);
		th_check_pool_idle(t->bspool, "B send");
	}

	/* B's peer reads: all bytes, in order; every buffer back in A's ring */
	th_run(t->loop, on_event, step_drain, t, 5, TH_TIMEOUT_MS,
	       "B's peer to read everything and A's pool to refill");
	CHECK_EQ(t->pb.rd, TOTAL);
	CHECK_EQ(ub_conn_bytes_sent(t->b), TOTAL);
	CHECK_EQ(ub_conn_bytes_received(t->a), TOTAL);
	th_check_pool_idle(t->apool, "A receive");
	CHECK_EQ(ub_buf_state(x), UB_BUF_KERNEL);
	CHECK_ERR(ub_buf_release(x), EINVAL);
	CHECK_ERR(ub_conn_send_buf(t->b, x), EINVAL);
	th_check_pool_idle(t->apool, "A receive");
	th_check_pool_idle(t->bspool, "B send");

	CHECK_OK(ub_conn_close(t->a));
	CHECK_OK(ub_conn_close(t->b));
	th_run(t->loop, on_event, step_closed, t, 10, TH_TIMEOUT_MS,
	       "both CLOSED");
	CHECK_EQ(t->pb.rd, TOTAL);
	th_run_for(t->loop, on_event, NULL, t, 1, 20);
	th_check_pool_idle(t->apool, "A receive");
	th_check_pool_idle(t->brpool, "B receive");
	CHECK_OK(ub_pool_free(t->apool));
	CHECK_OK(ub_pool_free(t->bspool));
	CHECK_OK(ub_pool_free(t->brpool));
	CHECK_OK(ub_loop_free(t->loop));
	th_check_fds("after the mode");
	if (t->stale_gen)
		EXPECT_FAILF("%ld of %ld buffers kept their generation when queued "
			 "with ub_conn_send_buf (the header: it changes every "
			 "time the buffer leaves the application)",
			 t->stale_gen, t->data);
	free(t);
}

int main(void)
{
	th_init("forward");
	th_for_each_mode(run, NULL);
	return th_finish();
}
