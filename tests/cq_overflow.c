/*
 * cq_overflow.c - a completion queue far smaller than the number of
 * operations in flight must not lose or duplicate events.
 *
 * ub_loop_opts.entries = 1 gives the smallest ring the core sets up: one SQ
 * entry and a CQ of 16 (probe.c asks for entries * 16 CQ entries).  On it,
 * in every send mode, 24 socketpair connections with small socket buffers
 * each receive 64 KiB from their peer into 1 KiB pool buffers (half of
 * them without recv bundles, so every 1 KiB is a CQE), forward every
 * received buffer back to the same connection's send queue (send_buf, zero
 * copy) with UB_EV_SENT on, and the peers read the echo back.  The kernel
 * then holds more completions than the CQ has room for: the test samples
 * the ring's overflow list (/proc/self/fdinfo) to show that it did.
 *
 * Checked per connection: the bytes received are exactly the peer's stream
 * in order (no DATA lost, repeated or reordered), the echo the peer reads
 * is the same stream, the SENT results add up to exactly the bytes sent
 * (ub_conn_bytes_sent), exactly one EOF and one CLOSED, and no event for a
 * connection after its CLOSED.  Then every pool is idle and the fd count is
 * back to the start.
 */
#include "helpers.h"

#include <sys/socket.h>
#include <unistd.h>

#define NCONN 24
#define BYTES (64u * 1024)

struct cn {
	ub_conn *c;
	struct th_peer peer;
	uint64_t rx, sent_ev;
	int eof, closed, close_called;
	int fd;
};

struct ov {
	ub_loop *loop;
	ub_pool *rpool, *spool;
	struct cn cn[NCONN];
	int ring_fd, max_overflow, closed;
	long events, waits;
};

static void on_event(const ub_event *ev, void *arg)
{
	struct ov *o = arg;
	struct cn *n = ev->udata;

	o->events++;
	CHECK(n != NULL);
	CHECK(ev->conn == n->c);
	if (n->closed)
		TH_FAILF("%s after CLOSED on conn %d", ub_event_name(ev->type),
			 (int)(n - o->cn));
	switch (ev->type) {
	case UB_EV_DATA: {
		size_t len = ub_buf_len(ev->buf);
		int r;

		CHECK(!n->eof);
		CHECK_EQ(ev->res, (int)len);
		th_pat_check(n->peer.wseed, n->rx, ub_buf_data(ev->buf), len,
			     "received stream");
		n->rx += len;
		CHECK_CMP(n->rx, <=, BYTES);
		r = ub_conn_send_buf(n->c, ev->buf); /* echo, zero copy */
		CHECK_OK(r);
		return;
	}
	case UB_EV_SENT:
		CHECK_CMP(ev->res, >, 0);
		n->sent_ev += (uint64_t)ev->res;
		CHECK_CMP(n->sent_ev, <=, n->rx);
		return;
	case UB_EV_EOF:
		CHECK(!n->eof);
		CHECK_EQ(n->rx, BYTES);
		n->eof = 1;
		return;
	case UB_EV_CLOSED:
		CHECK_EQ(ev->res, 0);
		CHECK(n->close_called);
		n->closed = 1;
		CHECK_EQ(n->sent_ev, ub_conn_bytes_sent(n->c));
		CHECK_EQ(n->sent_ev, BYTES);
		o->closed++;
		return;
	}
	TH_FAILF("unexpected %s res %d on conn %d", ub_event_name(ev->type),
		 ev->res, (int)(n - o->cn));
}

static int step(void *arg)
{
	struct ov *o = arg;
	int busy = 0, done = 0, ovf;

	if (o->waits++ % 8 == 0) { /* reading fdinfo costs: sample */
		ovf = th_cq_overflow(o->ring_fd);
		if (ovf > o->max_overflow)
			o->max_overflow = ovf;
	}
	for (int i = 0; i < NCONN; i++) {
		struct cn *n = &o->cn[i];

		busy |= th_peer_write(&n->peer) > 0;
		busy |= th_peer_read(&n->peer) > 0;
		CHECK_EQ(n->peer.err, 0);
		if (n->eof && n->peer.rd == BYTES && !n->close_called) {
			CHECK_OK(ub_conn_close(n->c));
			n->close_called = 1;
		}
		done += n->closed && n->peer.eof;
	}
	if (done == NCONN)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static void run(int mode, void *arg)
{
	struct ov *o = calloc(1, sizeof(*o));
	ub_loop_opts lo;
	uint64_t progress;
	int err = 0;

	(void)arg;
	th_watchdog(19);
	CHECK(o != NULL);
	memset(&lo, 0, sizeof(lo));
	lo.entries = 1;
	o->loop = th_loop_new(&lo);
	o->ring_fd = ub_loop_fd(o->loop);
	printf("  SQ entries %ld, CQ entries %ld\n",
	       th_fdinfo_field(o->ring_fd, "SqMask") + 1,
	       th_fdinfo_field(o->ring_fd, "CqMask") + 1);
	o->rpool = ub_pool_new(o->loop, 256, 1024, UB_POOL_RECV, &err);
	CHECK_PTR(o->rpool, err);
	o->spool = ub_pool_new(o->loop, 16, 1024, 0, &err);
	CHECK_PTR(o->spool, err);
	for (int i = 0; i < NCONN; i++) {
		struct cn *n = &o->cn[i];
		ub_conn_opts co;
		int fds[2];

		th_socketpair(fds);
		th_small_bufs(fds[0]);
		th_small_bufs(fds[1]);
		ub_conn_opts_init(&co);
		co.mode = mode;
		co.recv_pool = o->rpool;
		co.send_pool = o->spool;
		co.ring_entries = 16;
		co.flags = UB_CONN_SENT_EVENTS |
			   (i % 2 ? UB_CONN_NO_RECV_BUNDLE : 0);
		co.udata = n;
		n->c = ub_conn_adopt(o->loop, fds[0], &co, &err);
		CHECK_PTR(n->c, err);
		n->fd = fds[0];
		th_peer_init(&n->peer, fds[1], "echo reader");
		n->peer.wseed = n->peer.seed = th_rand();
		n->peer.wtotal = BYTES;
		n->peer.wshut = 1;
	}
	/* progress: the sum of what every peer has read back */
	for (;;) {
		uint64_t before = 0, after = 0;

		for (int i = 0; i < NCONN; i++)
			before += o->cn[i].peer.rd + o->cn[i].rx;
		if (th_run_try(o->loop, on_event, step, o, 1, 3000))
			break;
		for (int i = 0; i < NCONN; i++)
			after += o->cn[i].peer.rd + o->cn[i].rx;
		if (after == before)
			TH_FAILF("no progress for 3 s at %llu bytes",
				 (unsigned long long)after);
	}
	progress = 0;
	for (int i = 0; i < NCONN; i++) {
		struct cn *n = &o->cn[i];

		CHECK_EQ(n->rx, BYTES);
		CHECK_EQ(n->peer.rd, BYTES);
		CHECK_EQ(n->sent_ev, BYTES);
		CHECK(n->eof && n->closed);
		CHECK(!th_fd_is_open(n->fd));
		progress += n->rx;
		close(n->peer.fd);
	}
	CHECK_EQ(o->closed, NCONN);
	th_run_for(o->loop, on_event, NULL, o, 1, 20); /* nothing more */
	printf("  %d connections, %llu bytes each way, %ld events, "
	       "overflow list up to %d CQEs\n",
	       NCONN, (unsigned long long)progress, o->events,
	       o->max_overflow);
	if (o->max_overflow == 0)
		EXPECT_FAILF("the CQ never overflowed: the test did not test "
			     "what it is for");
	th_check_pool_idle(o->rpool, "receive");
	th_check_pool_idle(o->spool, "send");
	CHECK_OK(ub_pool_free(o->rpool));
	CHECK_OK(ub_pool_free(o->spool));
	CHECK_OK(ub_loop_free(o->loop));
	free(o);
}

int main(void)
{
	th_init("cq_overflow");
	th_watchdog(19);
	th_for_each_mode(run, NULL);
	return th_finish();
}
