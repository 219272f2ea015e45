/*
 * reset.c - the peer resets a connection with a large send queued.
 *
 * In every mode: 8 MiB queued (copies and zero-copy buffers) to a peer that
 * does not read, a receive buffer held by the application, then the peer
 * closes with SO_LINGER {1, 0} (RST).  Exactly one UB_EV_ERROR comes (res
 * -ECONNRESET or -EPIPE; at most one EOF may precede it), then exactly one
 * UB_EV_CLOSED with the same res, and nothing after.  From the ERROR on, the connection refuses sends with
 * -EPIPE and says it is closing.  Every buffer of the send pool comes back,
 * the held receive buffer can still be released, both pools end idle, and
 * the socket is closed.
 */
#include "helpers.h"

#include <unistd.h>

#define QUEUE (8u << 20)

struct test {
	ub_conn *c;
	ub_pool *spool, *rpool;
	ub_buf *held;
	uint64_t seed;
	int error, closed, error_res, closed_res, eof, fd;
	long data;
};

static void refused_now(struct test *t)
{
	int err = 0;
	ub_buf *b;

	CHECK_EQ(ub_conn_is_closing(t->c), 1);
	CHECK_ERR(ub_conn_send(t->c, "x", 1), EPIPE);
	b = ub_pool_acquire(t->spool, &err);
	CHECK_PTR(b, err);
	CHECK_OK(ub_buf_set_len(b, 1));
	CHECK_ERR(ub_conn_send_buf(t->c, b), EPIPE);
	CHECK_EQ(ub_buf_state(b), UB_BUF_APP);
	CHECK_OK(ub_buf_release(b));
}

static void on_event(const ub_event *ev, void *arg)
{
	struct test *t = arg;

	CHECK(ev->conn == t->c);
	CHECK(!t->closed);
	switch (ev->type) {
	case UB_EV_DATA:
		CHECK(!t->error && !t->eof);
		CHECK(t->held == NULL);
		th_pat_check(t->seed, 0, ub_buf_data(ev->buf),
			     ub_buf_len(ev->buf), "first data");
		CHECK_EQ(ub_buf_len(ev->buf), 1024);
		t->held = ev->buf;
		t->data++;
		return;
	case UB_EV_ERROR:
		CHECK(!t->error);
		t->error = 1;
		t->error_res = ev->res;
		if (ev->res != -ECONNRESET && ev->res != -EPIPE)
			TH_FAILF("ERROR res %d (%s), expected -ECONNRESET or "
				 "-EPIPE", ev->res, strerror(-ev->res));
		refused_now(t);
		return;
	case UB_EV_CLOSED:
		CHECK(t->error);
		t->closed = 1;
		t->closed_res = ev->res;
		refused_now(t);
		CHECK_ERR(ub_conn_close(t->c), EPIPE);
		return;
	case UB_EV_WRITABLE:
		/* the queue was emptied by the reset: allowed, not needed */
		CHECK(t->error);
		return;
	case UB_EV_EOF:
		/* allowed before the ERROR: once the send side has taken the
		 * socket's pending error, a receive sees 0 */
		CHECK(!t->error);
		CHECK(!t->eof);
		t->eof = 1;
		return;
	}
	TH_FAILF("unexpected %s res %d", ub_event_name(ev->type), ev->res);
}

static int step_data(void *arg)
{
	return ((struct test *)arg)->held ? TH_DONE : TH_IDLE;
}

static int step_closed(void *arg)
{
	return ((struct test *)arg)->closed ? TH_DONE : TH_IDLE;
}

static void run(int mode, void *arg)
{
	struct test t;
	ub_loop *loop = th_loop_new(NULL);
	ub_conn_opts o;
	int fds[2], err = 0;
	uint64_t queued = 0;
	static uint8_t chunk[65536];
	ub_event ev[8];

	(void)arg;
	memset(&t, 0, sizeof(t));
	t.seed = th_rand();
	/* copies take a buffer each: room for 8 MiB of random sizes */
	t.spool = ub_pool_new(loop, 320, 65536, 0, &err);
	CHECK_PTR(t.spool, err);
	t.rpool = ub_pool_new(loop, 8, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(t.rpool, err);
	th_tcp_pair(fds, 0);
	th_small_bufs(fds[0]);
	th_small_bufs(fds[1]);
	ub_conn_opts_init(&o);
	o.mode = mode;
	o.send_pool = t.spool;
	o.recv_pool = t.rpool;
	o.high_water = 2 * QUEUE;
	o.low_water = QUEUE / 2;
	t.c = ub_conn_adopt(loop, fds[0], &o, &err);
	CHECK_PTR(t.c, err);
	t.fd = fds[0];

	/* one receive buffer held by the application */
	th_pat_fill(t.seed, 0, chunk, 1024);
	CHECK_EQ(write(fds[1], chunk, 1024), 1024);
	th_run(loop, on_event, step_data, &t, 10, TH_TIMEOUT_MS, "DATA");

	/* 8 MiB queued: alternate copies and zero-copy buffers */
	for (int i = 0; queued < QUEUE; i++) {
		size_t n = th_rand_range(1, sizeof(chunk));

		if (n > QUEUE - queued)
			n = QUEUE - queued;
		if (i % 2) {
			ub_buf *b = ub_pool_acquire(t.spool, &err);

			CHECK_PTR(b, err);
			th_pat_fill(t.seed, queued, ub_buf_data(b), n);
			CHECK_OK(ub_buf_set_len(b, n));
			CHECK_OK(ub_conn_send_buf(t.c, b));
		} else {
			th_pat_fill(t.seed, queued, chunk, n);
			ssize_t r = ub_conn_send(t.c, chunk, n);

			CHECK_OK(r);
			n = (size_t)r;
		}
		queued += n;
	}
	th_run_for(loop, on_event, NULL, &t, 10, 50);
	printf("  %zu bytes in %u buffers queued, peer not reading\n",
	       ub_conn_queued_bytes(t.c), ub_conn_queued_bufs(t.c));
	CHECK_CMP(ub_conn_queued_bytes(t.c), >, QUEUE / 2);
	CHECK(!t.error);

	th_close_rst(fds[1]);
	th_run(loop, on_event, step_closed, &t, 10, TH_TIMEOUT_MS,
	       "ERROR and CLOSED after the reset");
	CHECK_EQ(t.error, 1);
	CHECK_EQ(t.closed, 1);
	CHECK_EQ(t.closed_res, t.error_res);
	printf("  %sERROR %s, CLOSED res %d\n", t.eof ? "EOF, " : "",
	       strerror(-t.error_res), t.closed_res);

	/* the held buffer outlives its connection */
	CHECK_EQ(ub_buf_state(t.held), UB_BUF_APP);
	CHECK_OK(ub_buf_release(t.held));
	CHECK_EQ(ub_buf_state(t.held), UB_BUF_KERNEL);
	/* the next wait frees the connection: no further events */
	CHECK_EQ(ub_loop_wait(loop, ev, 8, 0, 0), 0);
	th_run_for(loop, on_event, NULL, &t, 10, 50);
	th_check_pool_idle(t.spool, "send");
	th_check_pool_idle(t.rpool, "receive");
	CHECK(!th_fd_is_open(t.fd));
	CHECK_OK(ub_pool_free(t.spool));
	CHECK_OK(ub_pool_free(t.rpool));
	CHECK_OK(ub_loop_free(loop));
	th_check_fds("after the mode");
}

int main(void)
{
	th_init("reset");
	th_for_each_mode(run, NULL);
	return th_finish();
}
