/*
 * soft_water.c - UB_CONN_SOFT_WATER: the high water mark as a signal, not a
 * refusal (ub_conn_set_soft_water), in every mode.
 *
 * The peer does not read.  Copies of random sizes and zero-copy buffers,
 * interleaved, go far past the high mark through a send pool of 64 x 4 KiB:
 * every call takes everything (send returns len, send_buf 0 or 1 and 1
 * exactly when the queue is at or above the mark), queued_bytes counts it
 * all, and copies take no more pool buffers than the mark needs (the rest
 * waits in the heap, which ASan and valgrind watch).  No WRITABLE
 * while the peer does not read; once it reads, exactly one, at or below
 * the low mark; every byte arrives in order.  Then the same fill ended
 * three ways: close (the peer gets every byte, then EOF), shutdown (the
 * same, the connection stays), abort (CLOSED, every buffer back in its
 * pool, nothing leaked).  Without the flag the mark refuses as before.
 * And a copy that waits for the send pool while the application queues
 * that pool's buffers behind it (the buffers are copied into the spill
 * and go back: held there, they would be what the copy waits for).
 */
#include "helpers.h"

#include <unistd.h>

enum end { END_READ, END_CLOSE, END_SHUTDOWN, END_ABORT };

struct test {
	ub_loop *loop;
	ub_conn *c;
	ub_pool *spool;
	struct th_peer peer;
	uint64_t seed, sent;
	long writable;
	int closed, close_res;
	size_t queued_at_writable;
	uint8_t scratch[20000];
};

static void on_event(const ub_event *ev, void *arg)
{
	struct test *t = arg;

	CHECK(ev->conn == t->c);
	switch (ev->type) {
	case UB_EV_WRITABLE:
		t->writable++;
		t->queued_at_writable = ub_conn_queued_bytes(t->c);
		return;
	case UB_EV_CLOSED:
		t->closed = 1;
		t->close_res = ev->res;
		return;
	}
	TH_FAILF("unexpected %s res %d", ub_event_name(ev->type), ev->res);
}

/* One write of up to maxlen bytes, a copy or a pool buffer; returns 1 if
 * the call said "above the mark". */
static int write_one(struct test *t, size_t maxlen, int copy_only)
{
	/* copy_only: whole pool buffers, so that the count of them queued
	 * measures the bytes the copies put in the pool */
	size_t n = copy_only ? 4096 : th_rand_range(1, maxlen);
	int err = 0, above;

	if (!copy_only && th_rand() % 3 == 0) {
		ub_buf *b = ub_pool_acquire(t->spool, &err);

		if (b) {
			if (n > ub_buf_capacity(b))
				n = ub_buf_capacity(b);
			th_pat_fill(t->seed, t->sent, ub_buf_data(b), n);
			CHECK_OK(ub_buf_set_len(b, n));
			above = ub_conn_send_buf(t->c, b);
			CHECK_OK(above);
			CHECK(above == 0 || above == 1);
			/* QUEUED, or copied into the spill and FREE again */
			CHECK(ub_buf_state(b) != UB_BUF_APP);
			t->sent += n;
			CHECK_EQ(above, ub_conn_queued_bytes(t->c) >=
					ub_conn_high_water(t->c));
			return above;
		}
		CHECK_ERR(err, ENOBUFS);
	}
	th_pat_fill(t->seed, t->sent, t->scratch, n);
	CHECK_EQ(ub_conn_send(t->c, t->scratch, n), (ssize_t)n);
	t->sent += n;
	return ub_conn_queued_bytes(t->c) >= ub_conn_high_water(t->c);
}

static int step_read_until_writable(void *arg)
{
	struct test *t = arg;
	int busy = th_peer_read(&t->peer) > 0;

	if (t->writable)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static int step_all_read(void *arg)
{
	struct test *t = arg;
	int busy = th_peer_read(&t->peer) > 0;

	if (t->peer.rd == t->sent && !ub_conn_queued_bytes(t->c))
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static int step_eof(void *arg)
{
	struct test *t = arg;
	int busy = th_peer_read(&t->peer) > 0;

	if (t->peer.eof)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static int step_closed(void *arg)
{
	struct test *t = arg;

	th_peer_read(&t->peer);
	return t->closed && t->peer.eof ? TH_DONE : TH_IDLE;
}

static int step_closed_only(void *arg)
{
	return ((struct test *)arg)->closed ? TH_DONE : TH_IDLE;
}

static void fill_and_end(int mode, enum end how)
{
	const size_t high = 64 * 1024, low = 16 * 1024, target = 3u << 20;
	struct test *t = calloc(1, sizeof(*t));
	ub_conn_opts o;
	int fds[2], err = 0, saw_above = 0;
	long i;

	CHECK(t != NULL);
	t->loop = th_loop_new(NULL);
	t->spool = ub_pool_new(t->loop, 64, 4096, 0, &err);
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
	if (how != END_READ)
		o.flags |= UB_CONN_SOFT_WATER; /* the option, or the setter */
	t->c = ub_conn_adopt(t->loop, fds[0], &o, &err);
	CHECK_PTR(t->c, err);
	if (how == END_READ) {
		/* without the flag the mark refuses */
		for (i = 0; i < 1000; i++)
			if (ub_conn_send(t->c, t->scratch, 4096) == -EAGAIN)
				break;
		CHECK_CMP(i, <, 1000);
		CHECK_OK(ub_conn_abort(t->c));
		th_run(t->loop, on_event, step_closed_only, t, 10,
		       TH_TIMEOUT_MS, "CLOSED");
		th_run_for(t->loop, on_event, NULL, t, 1, 20);
		close(fds[1]);
		th_tcp_pair(fds, 0);
		th_small_bufs(fds[0]);
		th_small_bufs(fds[1]);
		th_peer_init(&t->peer, fds[1], "peer");
		t->seed = t->peer.seed = th_rand();
		t->closed = 0;
		t->c = ub_conn_adopt(t->loop, fds[0], &o, &err);
		CHECK_PTR(t->c, err);
		CHECK_ERR(ub_conn_set_soft_water(NULL, 1), EINVAL);
		CHECK_OK(ub_conn_set_soft_water(t->c, 1));
	}

	/* Fill far past the mark while the peer does not read: copies
	 * first, which take pool buffers only up to the mark (the rest is
	 * spilled to the heap), then copies and pool buffers mixed. */
	for (i = 0; t->sent < target; i++) {
		int copy_only = t->sent < target / 3;

		CHECK_CMP(i, <, 1000000);
		saw_above |= write_one(t, sizeof(t->scratch), copy_only);
		if ((i & 63) == 0)
			th_run_for(t->loop, on_event, NULL, t, 0, 1);
		if (copy_only)
			CHECK_CMP((size_t)ub_pool_count_state(t->spool,
							      UB_BUF_QUEUED),
				  <=, high / 4096 + 1); /* + one partly sent */
	}
	CHECK(saw_above);
	th_run_for(t->loop, on_event, NULL, t, 5, 100);
	CHECK_EQ(t->writable, 0);
	CHECK_CMP(ub_conn_queued_bytes(t->c), >, 2u << 20);
	printf("  %s: %llu bytes accepted, %zu queued, %u pool buffers "
	       "queued\n", how == END_READ ? "read" : how == END_CLOSE ?
	       "close" : how == END_SHUTDOWN ? "shutdown" : "abort",
	       (unsigned long long)t->sent, ub_conn_queued_bytes(t->c),
	       ub_conn_queued_bufs(t->c));

	switch (how) {
	case END_READ:
		th_run(t->loop, on_event, step_read_until_writable, t, 5,
		       TH_TIMEOUT_MS, "WRITABLE");
		CHECK_EQ(t->writable, 1);
		CHECK_CMP(t->queued_at_writable, <=, low);
		th_run(t->loop, on_event, step_all_read, t, 5, TH_TIMEOUT_MS,
		       "every byte");
		CHECK_EQ(t->writable, 1);
		CHECK_OK(ub_conn_close(t->c));
		th_run(t->loop, on_event, step_closed, t, 10, TH_TIMEOUT_MS,
		       "CLOSED and EOF");
		break;
	case END_CLOSE:
		CHECK_OK(ub_conn_close(t->c));
		CHECK_ERR(ub_conn_send(t->c, t->scratch, 1), EPIPE);
		th_run(t->loop, on_event, step_closed, t, 10, TH_TIMEOUT_MS,
		       "close: every byte, EOF, CLOSED");
		break;
	case END_SHUTDOWN:
		CHECK_OK(ub_conn_shutdown(t->c));
		th_run(t->loop, on_event, step_eof, t, 10, TH_TIMEOUT_MS,
		       "shutdown: every byte, then EOF");
		CHECK(!t->closed);
		CHECK_OK(ub_conn_close(t->c));
		th_run(t->loop, on_event, step_closed_only, t, 10,
		       TH_TIMEOUT_MS, "CLOSED");
		break;
	case END_ABORT:
		CHECK_OK(ub_conn_abort(t->c));
		th_run(t->loop, on_event, step_closed_only, t, 10,
		       TH_TIMEOUT_MS, "abort: CLOSED");
		CHECK_CMP(t->peer.rd, <, t->sent);
		break;
	}
	if (how != END_ABORT) {
		CHECK_EQ(t->peer.rd, t->sent);
		CHECK(t->peer.eof);
		CHECK_EQ(t->close_res, 0);
	}
	th_run_for(t->loop, on_event, NULL, t, 1, 20);
	th_check_pool_idle(t->spool, "send");
	CHECK_OK(ub_pool_free(t->spool));
	CHECK_OK(ub_loop_free(t->loop));
	close(t->peer.fd);
	free(t);
}

/*
 * The send pool's buffers held by the application, then a copy (it finds
 * the pool empty and spills) and those buffers queued behind it: the copy
 * waits for a pool buffer, so the buffers must not wait in the spill too
 * (they would be the only ones that could come back).  Every byte
 * arrives, in order, and the pool is idle after.  soft_off: soft water is
 * switched off after the copy; what it spilled still drains first, so the
 * buffers queued after are copied behind it all the same (the fuzzer's
 * model once assumed a spill ends with soft water).
 */
static void pool_held_behind_copy(int mode, int soft_off)
{
	struct test *t = calloc(1, sizeof(*t));
	ub_buf *b[4];
	ub_conn_opts o;
	int fds[2], err = 0, i;

	CHECK(t != NULL);
	t->loop = th_loop_new(NULL);
	t->spool = ub_pool_new(t->loop, 4, 4096, 0, &err);
	CHECK_PTR(t->spool, err);
	th_socketpair(fds);
	th_peer_init(&t->peer, fds[1], "peer");
	t->seed = t->peer.seed = th_rand();
	ub_conn_opts_init(&o);
	o.mode = mode;
	o.send_pool = t->spool;
	o.flags = UB_CONN_NO_RECV | UB_CONN_SOFT_WATER;
	t->c = ub_conn_adopt(t->loop, fds[0], &o, &err);
	CHECK_PTR(t->c, err);
	for (i = 0; i < 4; i++) {
		b[i] = ub_pool_acquire(t->spool, &err);
		CHECK_PTR(b[i], err);
	}
	th_pat_fill(t->seed, 0, t->scratch, 3);
	CHECK_EQ(ub_conn_send(t->c, t->scratch, 3), 3);
	t->sent = 3;
	if (soft_off)
		CHECK_OK(ub_conn_set_soft_water(t->c, 0));
	for (i = 0; i < 4; i++) {
		th_pat_fill(t->seed, t->sent, ub_buf_data(b[i]), 1000);
		CHECK_OK(ub_buf_set_len(b[i], 1000));
		CHECK_EQ(ub_conn_send_buf(t->c, b[i]), 0);
		/* copied into the spill: the handle is spent, the buffer
		 * back in the pool */
		CHECK_EQ(ub_buf_state(b[i]), UB_BUF_FREE);
		CHECK_EQ(ub_buf_release(b[i]), -EINVAL);
		t->sent += 1000;
	}
	CHECK_EQ(ub_conn_queued_bytes(t->c), t->sent);
	th_run(t->loop, on_event, step_all_read, t, 5, TH_TIMEOUT_MS,
	       "a copy, then the pool's buffers behind it");
	CHECK_EQ(t->peer.rd, t->sent);
	/* never above the mark: none owed (with soft water off, the wait
	 * for the send pool ends with one, as for any refused send) */
	CHECK(t->writable <= soft_off);
	CHECK_OK(ub_conn_close(t->c));
	th_run(t->loop, on_event, step_closed, t, 10, TH_TIMEOUT_MS,
	       "CLOSED and EOF");
	th_run_for(t->loop, on_event, NULL, t, 1, 20);
	th_check_pool_idle(t->spool, "send");
	CHECK_OK(ub_pool_free(t->spool));
	CHECK_OK(ub_loop_free(t->loop));
	close(t->peer.fd);
	free(t);
}

static void one_mode(int mode, void *arg)
{
	(void)arg;
	pool_held_behind_copy(mode, 0);
	pool_held_behind_copy(mode, 1);
	fill_and_end(mode, END_READ);
	fill_and_end(mode, END_CLOSE);
	fill_and_end(mode, END_SHUTDOWN);
	fill_and_end(mode, END_ABORT);
	th_check_fds("after the mode");
}

int main(void)
{
	th_init("soft_water");
	th_for_each_mode(one_mode, NULL);
	return th_finish();
}
