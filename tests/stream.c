/*
 * stream.c - one connection's byte stream, in every send mode.
 *
 * Side A sends a patterned stream as messages of random sizes (1 B..64 KiB),
 * each either copied (ub_conn_send, accepting short counts) or zero copy (a
 * buffer acquired from the send pool, filled, ub_conn_send_buf).  -EAGAIN
 * stops sending until UB_EV_WRITABLE.  Side B, another connection on the same
 * loop, verifies every byte of every DATA buffer at its stream offset and
 * releases it.  Small socket buffers force short sends; a small receive pool
 * forces -ENOBUFS re-arms.  At the end: exactly the total arrived, SENT
 * events add up to it, EOF follows the last byte, both pools are idle and no
 * fd is left open.  TCP loopback 64 MiB, then a socketpair 8 MiB.
 */
#include "helpers.h"

#include <unistd.h>

struct st {
	ub_loop *loop;
	ub_conn *tx, *rx;
	ub_pool *spool, *rpool;
	uint64_t seed, total, sent, got, sent_ev;
	uint64_t msg_left; /* of the current copied message */
	ub_buf *held;      /* zero-copy buffer refused with -EAGAIN */
	int blocked, eof, tx_closed, rx_closed;
	long eagain, writable, data, zc, copies, nobufs;
	uint8_t scratch[65536];
};

static void on_event(const ub_event *ev, void *arg)
{
	struct st *s = arg;

	if (ev->conn == s->tx) {
		CHECK(ev->udata == s);
		switch (ev->type) {
		case UB_EV_WRITABLE:
			s->writable++;
			s->blocked = 0;
			return;
		case UB_EV_SENT:
			CHECK_CMP(ev->res, >, 0);
			s->sent_ev += ev->res;
			return;
		case UB_EV_CLOSED:
			CHECK_EQ(ev->res, 0);
			s->tx_closed++;
			return;
		}
	} else if (ev->conn == s->rx) {
		switch (ev->type) {
		case UB_EV_DATA:
			CHECK(!s->eof);
			CHECK(ev->buf != NULL);
			CHECK_EQ(ub_buf_state(ev->buf), UB_BUF_APP);
			CHECK(ub_buf_pool(ev->buf) == s->rpool);
			CHECK_EQ(ev->res, ub_buf_len(ev->buf));
			CHECK_CMP(ev->res, >, 0);
			CHECK_CMP(ub_buf_len(ev->buf), <=,
				  ub_pool_buf_size(s->rpool));
			th_pat_check(s->seed, s->got, ub_buf_data(ev->buf),
				     ub_buf_len(ev->buf), "receiver");
			s->got += ev->res;
			CHECK_CMP(s->got, <=, s->total);
			s->data++;
			CHECK_OK(ub_buf_release(ev->buf));
			return;
		case UB_EV_EOF:
			CHECK(!s->eof);
			CHECK_EQ(s->got, s->total);
			s->eof = 1;
			return;
		case UB_EV_CLOSED:
			CHECK_EQ(ev->res, 0);
			s->rx_closed++;
			return;
		}
	}
	TH_FAILF("unexpected event %s res %d on %s (sent %llu, received %llu, "
		 "queued %zu)", ub_event_name(ev->type), ev->res,
		 ev->conn == s->tx ? "tx" : ev->conn == s->rx ? "rx" : "?",
		 (unsigned long long)s->sent, (unsigned long long)s->got,
		 ev->conn ? ub_conn_queued_bytes(ev->conn) : 0);
}

/* Queue as much as the connection takes; returns busy/idle. */
static int send_step(struct st *s)
{
	int did = 0;

	for (int k = 0; k < 64 && !s->blocked && s->sent < s->total; k++) {
		uint64_t left = s->total - s->sent;

		if (s->held) {
			size_t n = ub_buf_len(s->held);
			int r = ub_conn_send_buf(s->tx, s->held);

			if (r == -EAGAIN) {
				s->eagain++;
				s->blocked = 1;
				break;
			}
			CHECK_OK(r);
			CHECK_EQ(ub_buf_state(s->held), UB_BUF_QUEUED);
			s->held = NULL;
			s->sent += n;
			did = 1;
			continue;
		}
		if (!s->msg_left) {
			uint64_t size = th_rand_range(1, 65536);

			if (size > left)
				size = left;
			if (th_rand() & 1) {
				/* zero copy: one acquired buffer */
				int err = 0;
				ub_buf *b = ub_pool_acquire(s->spool, &err);

				if (!b) {
					CHECK_ERR(err, ENOBUFS);
					s->nobufs++;
					s->msg_left = size; /* copy it */
				} else {
					CHECK_EQ(ub_buf_len(b), 0);
					th_pat_fill(s->seed, s->sent,
						    ub_buf_data(b), size);
					CHECK_OK(ub_buf_set_len(b, size));
					s->held = b;
					s->zc++;
					continue;
				}
			} else {
				s->msg_left = size;
			}
			s->copies++;
		}
		th_pat_fill(s->seed, s->sent, s->scratch, s->msg_left);
		ssize_t r = ub_conn_send(s->tx, s->scratch, s->msg_left);
		if (r == -EAGAIN) {
			s->eagain++;
			s->blocked = 1;
			break;
		}
		CHECK_OK(r);
		CHECK_CMP(r, >, 0);
		CHECK_CMP(r, <=, s->msg_left);
		s->sent += r;
		s->msg_left -= r;
		did = 1;
	}
	return did ? TH_BUSY : TH_IDLE;
}

static int step_all_received(void *arg)
{
	struct st *s = arg;
	int st = send_step(s);

	if (s->got == s->total && !ub_conn_queued_bytes(s->tx) &&
	    th_pool_idle(s->spool))
		return TH_DONE;
	return st;
}

static int step_eof(void *arg)
{
	return ((struct st *)arg)->eof ? TH_DONE : TH_IDLE;
}

static int step_closed(void *arg)
{
	struct st *s = arg;

	return s->tx_closed && s->rx_closed ? TH_DONE : TH_IDLE;
}

static void run_stream(int mode, int tcp, uint64_t total)
{
	struct st *s = calloc(1, sizeof(*s));
	ub_conn_opts o;
	int fds[2], err = 0;
	double t0 = th_now_ms();

	CHECK(s != NULL);
	s->total = total;
	s->seed = th_rand();
	s->loop = th_loop_new(NULL);
	s->spool = ub_pool_new(s->loop, 64, 65536, 0, &err);
	CHECK_PTR(s->spool, err);
	s->rpool = ub_pool_new(s->loop, 64, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(s->rpool, err);
	if (tcp)
		th_tcp_pair(fds, 0);
	else
		th_socketpair(fds);
	th_small_bufs(fds[0]);
	th_small_bufs(fds[1]);

	ub_conn_opts_init(&o);
	o.mode = mode;
	o.send_pool = s->spool;
	o.recv_pool = s->rpool;
	o.flags = UB_CONN_NO_RECV | UB_CONN_SENT_EVENTS;
	o.udata = s;
	s->tx = ub_conn_adopt(s->loop, fds[0], &o, &err);
	CHECK_PTR(s->tx, err);
	CHECK_EQ(ub_conn_mode(s->tx), mode);
	CHECK(ub_conn_udata(s->tx) == s);
	o.flags = 0;
	o.udata = NULL;
	s->rx = ub_conn_adopt(s->loop, fds[1], &o, &err);
	CHECK_PTR(s->rx, err);

	th_run_progress(s->loop, on_event, step_all_received, s, 10, &s->got,
			10000, 300000, "the whole stream to arrive");
	CHECK_EQ(s->sent, total);
	CHECK_EQ(s->got, total);
	CHECK_EQ(ub_conn_bytes_sent(s->tx), total);
	CHECK_EQ(ub_conn_bytes_received(s->rx), total);
	CHECK_EQ(s->sent_ev, total);
	CHECK_EQ(ub_conn_queued_bytes(s->tx), 0);
	CHECK_EQ(ub_conn_queued_bufs(s->tx), 0);
	if (s->eagain)
		CHECK_CMP(s->writable, >=, 1);
	th_check_pool_idle(s->spool, "send");

	/* graceful close of the sender: EOF right after the last byte */
	CHECK_OK(ub_conn_close(s->tx));
	CHECK_EQ(ub_conn_is_closing(s->tx), 1);
	CHECK_ERR(ub_conn_send(s->tx, "x", 1), EPIPE);
	th_run(s->loop, on_event, step_eof, s, 10, TH_TIMEOUT_MS, "EOF");
	CHECK_OK(ub_conn_close(s->rx));
	th_run(s->loop, on_event, step_closed, s, 10, TH_TIMEOUT_MS,
	       "both CLOSED");
	/* one more wait frees the closed connections */
	th_run_for(s->loop, on_event, NULL, s, 1, 20);
	CHECK_EQ(s->tx_closed, 1);
	CHECK_EQ(s->rx_closed, 1);
	CHECK_EQ(s->got, total);
	th_check_pool_idle(s->spool, "send");
	th_check_pool_idle(s->rpool, "receive");
	CHECK_OK(ub_pool_free(s->spool));
	CHECK_OK(ub_pool_free(s->rpool));
	CHECK_OK(ub_loop_free(s->loop));
	th_check_fds("after the stream");
	printf("  %s %llu MiB: %.0f ms, %ld copies, %ld zero-copy, "
	       "%ld DATA, %ld -EAGAIN, %ld WRITABLE, %ld ENOBUFS\n",
	       tcp ? "tcp" : "socketpair", (unsigned long long)(total >> 20),
	       th_now_ms() - t0, s->copies, s->zc, s->data, s->eagain,
	       s->writable, s->nobufs);
	free(s);
}

static void one_mode(int mode, void *arg)
{
	(void)arg;
	run_stream(mode, 1, 64ull << 20);
	run_stream(mode, 0, 8ull << 20);
}

int main(void)
{
	th_init("stream");
	th_for_each_mode(one_mode, NULL);
	return th_finish();
}
