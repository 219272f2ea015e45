/*
 * halfclose.c - a peer that has shut down its sending side still gets
 * every byte, in order, in every send mode.
 *
 * Why a test of its own: after the peer's FIN has arrived, a bundle send
 * that has to wait for socket space can complete short and take more ring
 * entries than it sent, sometimes ending exactly on a buffer boundary,
 * which leaves no sign in the completion (seen on Linux 6.18).  The core
 * checks the ring's head after each bundle (sendq.c); without that the
 * stream skips bytes.  Here the peer sends FIN first, then reads slowly
 * in 4 KiB bites while 4 MiB of random-size buffers are queued, so that the
 * sender keeps waiting for socket space; two rounds per mode (IPv4, IPv6).
 */
#include "helpers.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TOTAL (4u << 20)

struct hc {
	ub_loop *loop;
	ub_conn *c;
	ub_pool *spool;
	struct th_peer peer;
	uint64_t queued;
	int refused, closed, error;
};

static void on_event(const ub_event *ev, void *arg)
{
	struct hc *h = arg;

	switch (ev->type) {
	case UB_EV_WRITABLE:
		h->refused = 0;
		return;
	case UB_EV_EOF: /* the peer's FIN: expected */
		return;
	case UB_EV_DATA:
		CHECK_OK(ub_buf_release(ev->buf));
		TH_FAILF("unexpected data from a peer that only reads");
		return;
	case UB_EV_ERROR:
		h->error = ev->res;
		TH_FAILF("ERROR %d after %llu of %u bytes read by the peer",
			 ev->res, (unsigned long long)h->peer.rd, TOTAL);
		return;
	case UB_EV_CLOSED:
		h->closed = 1;
		return;
	}
}

static int step(void *arg)
{
	struct hc *h = arg;
	int busy = 0;

	/* Queue random-size buffers up to the high water mark. */
	while (!h->refused && h->queued < TOTAL) {
		ub_buf *b = ub_pool_acquire(h->spool, NULL);
		size_t n;
		int ret;

		if (!b)
			break;
		n = 1 + th_rand() % ub_buf_capacity(b);
		if (n > TOTAL - h->queued)
			n = TOTAL - h->queued;
		th_pat_fill(h->peer.seed, h->queued, ub_buf_data(b), n);
		CHECK_OK(ub_buf_set_len(b, n));
		ret = ub_conn_send_buf(h->c, b);
		if (ret == -EAGAIN) {
			CHECK_OK(ub_buf_release(b));
			h->refused = 1;
			break;
		}
		CHECK_OK(ret);
		h->queued += n;
		busy = 1;
	}
	/* Read in small bites now and then: the sender keeps waiting for
	 * socket space, which is when the kernel completes bundles short. */
	if (th_peer_read(&h->peer) > 0) {
		busy = 1;
		usleep(100); /* a slow reader: 4 KiB at a time */
	}
	if (h->peer.rd == TOTAL)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static int closed(void *arg)
{
	return ((struct hc *)arg)->closed ? TH_DONE : TH_IDLE;
}

static void run(int mode, void *arg)
{
	int round;

	(void)arg;
	for (round = 0; round < 2; round++) {
		struct hc h;
		ub_conn_opts co;
		int fds[2], err = 0;

		memset(&h, 0, sizeof(h));
		h.loop = th_loop_new(NULL);
		h.spool = ub_pool_new(h.loop, 256, 16384, 0, &err);
		CHECK_PTR(h.spool, err);
		th_tcp_pair_bufs(fds, round == 1, 4096);
		ub_conn_opts_init(&co);
		co.mode = mode;
		co.high_water = 1u << 20;
		h.c = ub_conn_adopt(h.loop, fds[0], &co, &err);
		CHECK_PTR(h.c, err);
		th_peer_init(&h.peer, fds[1], "half-closed peer");
		h.peer.seed = th_seed + (uint64_t)round;
		h.peer.rlimit = 4096;
		CHECK_OK(shutdown(fds[1], SHUT_WR)); /* FIN first */
		th_run_progress(h.loop, on_event, step, &h, 1, &h.peer.rd,
				10000, 120000, "4 MiB to the half-closed peer");
		CHECK_EQ(h.peer.rd, TOTAL);
		CHECK_OK(ub_conn_close(h.c));
		th_run(h.loop, on_event, closed, &h, 5, TH_TIMEOUT_MS, "CLOSED");
		th_check_pool_idle(h.spool, "send");
		CHECK_OK(ub_loop_free(h.loop));
		close(fds[1]);
		printf("  round %d: %u bytes in order%s\n", round, TOTAL,
		       round == 1 ? " (IPv6)" : "");
	}
}

int main(void)
{
	th_init("halfclose");
	th_for_each_mode(run, NULL);
	th_check_fds("at the end");
	return th_finish();
}
