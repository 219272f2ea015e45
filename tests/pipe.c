/*
 * pipe.c - ub_conn_pipe: A's receives forwarded into B's send queue.
 *
 * In every mode: A's peer writes 16 MiB of pattern and half-closes; A is
 * piped into B; B's peer reads slowly at first (4 KiB every 10 ms for
 * 400 ms), so B's queue must reach its high water mark and A must pause:
 * B's queue may overshoot the mark by at most what was already in flight
 * (well under A's 4 MiB pool, which would otherwise fill it).  Then B's peer
 * reads at full speed: every byte arrives in order, then EOF (A's EOF
 * becomes B's shutdown), no DATA event ever reaches the application for A,
 * and every buffer is back in A's pool.  Misuse: piping a connection into
 * itself or into another loop's connection is -EINVAL.
 */
#include "helpers.h"

#include <unistd.h>

#define TOTAL (16u << 20)
#define HIGH (256 * 1024)
#define LOW (64 * 1024)
#define SLACK (256 * 1024)

struct test {
	ub_conn *a, *b;
	ub_pool *apool;
	struct th_peer pa, pb;
	double slow_until, next_read;
	size_t max_queued;
	long a_eof, closed_a, closed_b;
};

static void on_event(const ub_event *ev, void *arg)
{
	struct test *t = arg;

	if (ev->conn == t->a) {
		switch (ev->type) {
		case UB_EV_EOF:
			CHECK_EQ(t->a_eof, 0);
			CHECK_EQ(ub_conn_bytes_received(t->a), TOTAL);
			t->a_eof++;
			return;
		case UB_EV_CLOSED:
			CHECK_EQ(ev->res, 0);
			t->closed_a++;
			return;
		}
	} else if (ev->conn == t->b) {
		switch (ev->type) {
		case UB_EV_WRITABLE:
			return;
		case UB_EV_CLOSED:
			CHECK_EQ(ev->res, 0);
			t->closed_b++;
			return;
		}
	}
	TH_FAILF("unexpected %s res %d on %s", ub_event_name(ev->type),
		 ev->res, ev->conn == t->a ? "A" : ev->conn == t->b ? "B" : "?");
}

static int step(void *arg)
{
	struct test *t = arg;
	double now = th_now_ms();
	size_t q = ub_conn_queued_bytes(t->b);
	int busy = th_peer_write(&t->pa) > 0;

	if (q > t->max_queued)
		t->max_queued = q;
	/* Slow until B's queue has reached its high water mark (or the
	 * window ends): how fast A fills it depends on the machine (under
	 * valgrind 400 ms fell short), the backpressure does not. */
	if (now < t->slow_until && t->max_queued < HIGH) {
		/* slow reader: 4 KiB every 10 ms */
		if (now >= t->next_read) {
			th_peer_read(&t->pb);
			t->next_read = now + 10;
		}
		return busy ? TH_BUSY : TH_IDLE;
	}
	t->pb.rlimit = 0;
	busy |= th_peer_read(&t->pb) > 0;
	if (t->pb.eof)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

/* Peers read to EOF and then close, as real peers do. */
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

static void misuse(ub_loop *loop, ub_conn *a)
{
	ub_loop *other = th_loop_new(NULL);
	ub_conn_opts o;
	ub_conn *x;
	int fds[2], err = 0;

	CHECK_ERR(ub_conn_pipe(a, a), EINVAL);
	th_socketpair(fds);
	ub_conn_opts_init(&o);
	o.flags = UB_CONN_NO_RECV;
	x = ub_conn_adopt(other, fds[0], &o, &err);
	CHECK_PTR(x, err);
	CHECK_ERR(ub_conn_pipe(a, x), EINVAL);
	CHECK_ERR(ub_conn_pipe(x, a), EINVAL);
	CHECK_OK(ub_loop_free(other));
	close(fds[1]);
	(void)loop;
}

static void run(int mode, void *arg)
{
	struct test *t = calloc(1, sizeof(*t));
	ub_loop *loop = th_loop_new(NULL);
	ub_pool *brpool;
	ub_conn_opts o;
	int pa[2], pb[2], err = 0;

	(void)arg;
	CHECK(t != NULL);
	t->apool = ub_pool_new(loop, 1024, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(t->apool, err);
	brpool = ub_pool_new(loop, 8, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(brpool, err);
	th_tcp_pair(pa, 0);
	th_tcp_pair(pb, 0);
	for (int i = 0; i < 2; i++) {
		th_small_bufs(pa[i]);
		th_small_bufs(pb[i]);
	}
	th_peer_init(&t->pa, pa[1], "A's peer");
	t->pa.wseed = th_rand();
	t->pa.wtotal = TOTAL;
	t->pa.wshut = 1;
	th_peer_init(&t->pb, pb[1], "B's peer");
	t->pb.seed = t->pa.wseed;
	t->pb.rlimit = 4096;

	ub_conn_opts_init(&o);
	o.mode = mode;
	o.recv_pool = t->apool;
	/* A's budget (256 KiB by default) would pause it before B's high
	 * water: this test is about the pipe's own backpressure. */
	o.recv_budget = 4 * HIGH;
	t->a = ub_conn_adopt(loop, pa[0], &o, &err);
	CHECK_PTR(t->a, err);
	o.recv_pool = brpool;
	o.high_water = HIGH;
	o.low_water = LOW;
	t->b = ub_conn_adopt(loop, pb[0], &o, &err);
	CHECK_PTR(t->b, err);
	misuse(loop, t->a);
	CHECK_OK(ub_conn_pipe(t->a, t->b));

	t->slow_until = th_now_ms() + 5000;
	th_run_progress(loop, on_event, step, t, 2, &t->pb.rd, 10000, 300000,
			"16 MiB and EOF at B's peer");
	printf("  B's queue peaked at %zu bytes (high %d); %llu bytes, EOF\n",
	       t->max_queued, HIGH, (unsigned long long)t->pb.rd);
	CHECK_EQ(t->pb.rd, TOTAL);
	CHECK_EQ(t->pa.written, TOTAL);
	CHECK_CMP(t->max_queued, >=, HIGH);
	CHECK_CMP(t->max_queued, <=, HIGH + SLACK);
	CHECK_EQ(t->a_eof, 1);
	/* A's EOF shut B's sending side: B takes no more */
	CHECK_EQ(ub_conn_is_closing(t->b), 1);
	CHECK_ERR(ub_conn_send(t->b, "x", 1), EPIPE);
	CHECK_EQ(ub_conn_bytes_received(t->a), TOTAL);
	CHECK_EQ(ub_conn_bytes_sent(t->b), TOTAL);
	CHECK_EQ(ub_conn_queued_bytes(t->b), 0);
	th_run_for(loop, on_event, NULL, t, 5, 20);
	th_check_pool_idle(t->apool, "A receive");

	CHECK_OK(ub_conn_pipe(t->a, NULL));
	CHECK_OK(ub_conn_close(t->a));
	CHECK_OK(ub_conn_close(t->b));
	t->pb.eof = 0; /* read on to EOF once more: nothing else may come */
	th_run(loop, on_event, step_closed, t, 10, TH_TIMEOUT_MS,
	       "both CLOSED");
	CHECK_EQ(t->pb.rd, TOTAL);
	CHECK_EQ(t->pa.rd, 0);
	th_run_for(loop, on_event, NULL, t, 1, 20);
	th_check_pool_idle(t->apool, "A receive");
	th_check_pool_idle(brpool, "B receive");
	CHECK_OK(ub_pool_free(t->apool));
	CHECK_OK(ub_pool_free(brpool));
	CHECK_OK(ub_loop_free(loop));
	th_check_fds("after the mode");
	free(t);
}

int main(void)
{
	th_init("pipe");
	th_for_each_mode(run, NULL);
	return th_finish();
}
