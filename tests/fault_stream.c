/*
 * fault_stream.c - a peer that fails or half-closes in the middle of a
 * stream, in every send mode.
 *
 * 1. Reset mid-send: 4 MiB of random-size buffers (copies and zero-copy)
 *    queued to a TCP peer with small socket buffers that reads and checks
 *    the bytes; once it has read 256 KiB and at least one send has
 *    completed with more still queued (a send - a bundle in BUNDLE mode -
 *    is armed at that moment), it closes with a RST.  What it read is an
 *    exact prefix of the stream; exactly one ERROR (-ECONNRESET or -EPIPE;
 *    at most one EOF before it), then exactly one CLOSED with the same res;
 *    the core never reports more bytes sent than were queued nor fewer
 *    than the peer read.  The same over a socketpair whose peer close()s
 *    with data unread (AF_UNIX has no RST: -EPIPE or -ECONNRESET).
 * 2. Our side half-closed with data queued: 2 MiB queued, then
 *    ub_conn_shutdown() at once.  Sends are refused with -EPIPE from then
 *    on; the peer, a slow reader, still gets all 2 MiB then EOF; meanwhile
 *    the peer sends us 1 MiB, which arrives whole, then its EOF.
 * 3. The peer half-closed with data queued both ways: our receive is
 *    paused while the peer writes 64 KiB and shuts down its sending side,
 *    and 2 MiB are queued towards the peer.  After resuming, the 64 KiB
 *    arrive whole before EOF; after the EOF we still queue 256 KiB more,
 *    and the peer reads all of it, then our close's FIN.
 * Every case ends with both pools idle (ub_pool_count_state) and the fd
 * count back to where it started.
 */
#include "helpers.h"

#include <sys/socket.h>
#include <unistd.h>

struct fs {
	ub_loop *loop;
	ub_conn *c;
	ub_pool *spool, *rpool;
	struct th_peer peer;  /* peer reads seed, writes wseed */
	uint64_t queued, target, rx; /* rx: bytes we received, checked */
	uint64_t sent_at_close;
	int error, error_res, closed, closed_res, eof, refused;
	long sent_events;
	int rx_paused_hold;
};

static void on_event(const ub_event *ev, void *arg)
{
	struct fs *s = arg;

	CHECK(ev->conn == s->c);
	CHECK(!s->closed);
	switch (ev->type) {
	case UB_EV_DATA:
		CHECK(!s->eof);
		th_pat_check(s->peer.wseed, s->rx, ub_buf_data(ev->buf),
			     ub_buf_len(ev->buf), "bytes from the peer");
		s->rx += ub_buf_len(ev->buf);
		CHECK_OK(ub_buf_release(ev->buf));
		return;
	case UB_EV_SENT:
		CHECK_CMP(ev->res, >, 0);
		s->sent_events++;
		return;
	case UB_EV_WRITABLE:
		s->refused = 0;
		return;
	case UB_EV_EOF:
		CHECK(!s->eof);
		CHECK(!s->error);
		s->eof = 1;
		return;
	case UB_EV_ERROR:
		CHECK(!s->error);
		s->error = 1;
		s->error_res = ev->res;
		return;
	case UB_EV_CLOSED:
		s->closed = 1;
		s->closed_res = ev->res;
		s->sent_at_close = ub_conn_bytes_sent(s->c);
		return;
	}
	TH_FAILF("unexpected %s res %d", ub_event_name(ev->type), ev->res);
}

/* Queue random-size chunks of the stream until target or refused. */
static int fill(struct fs *s)
{
	static uint8_t chunk[32768];
	int busy = 0;

	while (!s->refused && s->queued < s->target) {
		size_t n = th_rand_range(1, sizeof(chunk));
		ssize_t r;

		if (n > s->target - s->queued)
			n = s->target - s->queued;
		if (th_rand() & 1) {
			ub_buf *b = ub_pool_acquire(s->spool, NULL);

			if (!b) {
				s->refused = 1;
				CHECK_OK(ub_conn_want_writable(s->c));
				break;
			}
			if (n > ub_buf_capacity(b))
				n = ub_buf_capacity(b);
			th_pat_fill(s->peer.seed, s->queued, ub_buf_data(b), n);
			CHECK_OK(ub_buf_set_len(b, n));
			r = ub_conn_send_buf(s->c, b);
			if (r == -EAGAIN) {
				CHECK_EQ(ub_buf_state(b), UB_BUF_APP);
				CHECK_OK(ub_buf_release(b));
				s->refused = 1;
				break;
			}
			CHECK_OK(r);
			r = (ssize_t)n;
		} else {
			th_pat_fill(s->peer.seed, s->queued, chunk, n);
			r = ub_conn_send(s->c, chunk, n);
			if (r == -EAGAIN) {
				s->refused = 1;
				break;
			}
			CHECK_OK(r);
		}
		s->queued += (uint64_t)r;
		busy = 1;
	}
	return busy;
}

static void setup(struct fs *s, int mode, int fd, int peer_fd, unsigned flags)
{
	ub_conn_opts o;
	int err = 0;

	s->loop = th_loop_new(NULL);
	s->spool = ub_pool_new(s->loop, 256, 16384, 0, &err);
	CHECK_PTR(s->spool, err);
	s->rpool = ub_pool_new(s->loop, 16, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(s->rpool, err);
	ub_conn_opts_init(&o);
	o.mode = mode;
	o.send_pool = s->spool;
	o.recv_pool = s->rpool;
	o.high_water = 512 * 1024;
	o.low_water = 128 * 1024;
	o.flags = flags;
	s->c = ub_conn_adopt(s->loop, fd, &o, &err);
	CHECK_PTR(s->c, err);
	th_peer_init(&s->peer, peer_fd, "peer");
	s->peer.seed = th_rand();
	s->peer.wseed = th_rand();
}

static void teardown(struct fs *s, int fd)
{
	ub_event ev[8];

	CHECK_EQ(ub_loop_wait(s->loop, ev, 8, 0, 0), 0); /* frees the conn */
	th_check_pool_idle(s->spool, "send");
	th_check_pool_idle(s->rpool, "receive");
	CHECK(!th_fd_is_open(fd));
	CHECK_OK(ub_pool_free(s->spool));
	CHECK_OK(ub_pool_free(s->rpool));
	CHECK_OK(ub_loop_free(s->loop));
}

/* ---- 1. reset mid-send ---- */

static int rst_ready(void *arg)
{
	struct fs *s = arg;

	CHECK(!s->error);
	fill(s);
	th_peer_read(&s->peer);
	CHECK(!s->peer.eof);
	if (s->peer.rd >= 256 * 1024 && s->sent_events > 0 &&
	    ub_conn_queued_bytes(s->c) > 0)
		return TH_DONE;
	return TH_IDLE;
}

static int closed(void *arg)
{
	return ((struct fs *)arg)->closed ? TH_DONE : TH_IDLE;
}

static void reset_mid_send(int mode, int unix_pair)
{
	struct fs s;
	int fds[2];

	memset(&s, 0, sizeof(s));
	if (unix_pair)
		th_socketpair(fds);
	else
		th_tcp_pair_bufs(fds, 0, 16384);
	setup(&s, mode, fds[0], fds[1], UB_CONN_SENT_EVENTS);
	s.target = 4u << 20;
	s.peer.rlimit = 8192;
	th_run(s.loop, on_event, rst_ready, &s, 1, TH_TIMEOUT_MS,
	       "256 KiB read by the peer");
	if (unix_pair)
		CHECK_EQ(close(fds[1]), 0);
	else
		th_close_rst(fds[1]);
	th_run(s.loop, on_event, closed, &s, 5, TH_TIMEOUT_MS,
	       "CLOSED after the peer went away");
	CHECK_EQ(s.error, 1);
	if (s.error_res != -ECONNRESET && s.error_res != -EPIPE)
		TH_FAILF("ERROR res %d (%s), expected -ECONNRESET or -EPIPE",
			 s.error_res, strerror(-s.error_res));
	CHECK_EQ(s.closed_res, s.error_res);
	CHECK_CMP(s.sent_at_close, >=, s.peer.rd);
	CHECK_CMP(s.sent_at_close, <=, s.queued);
	printf("  %s: peer read %llu of %llu queued (sent %llu), %s%s\n",
	       unix_pair ? "socketpair close" : "TCP reset",
	       (unsigned long long)s.peer.rd, (unsigned long long)s.queued,
	       (unsigned long long)s.sent_at_close, s.eof ? "EOF, " : "",
	       strerror(-s.error_res));
	teardown(&s, fds[0]);
}

/* ---- 2. our side half-closed with data queued ---- */

static int our_shut_step(void *arg)
{
	struct fs *s = arg;
	int busy = 0;

	busy |= th_peer_write(&s->peer) > 0;
	if (th_peer_read(&s->peer) > 0) {
		busy = 1;
		usleep(50); /* a slow reader */
	}
	if (s->peer.eof && s->eof)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static void our_half_close(int mode)
{
	struct fs s;
	int fds[2];

	memset(&s, 0, sizeof(s));
	th_tcp_pair_bufs(fds, 0, 16384);
	setup(&s, mode, fds[0], fds[1], 0);
	CHECK_OK(ub_conn_set_water(s.c, 4u << 20, 1u << 20));
	s.target = 2u << 20;
	s.peer.rlimit = 4096;
	s.peer.wtotal = 1u << 20;
	s.peer.wshut = 1;
	fill(&s);
	CHECK_EQ(s.queued, s.target);
	CHECK_OK(ub_conn_shutdown(s.c));
	CHECK_EQ(ub_conn_is_closing(s.c), 1);
	CHECK_ERR(ub_conn_send(s.c, "x", 1), EPIPE);
	CHECK_ERR(ub_conn_shutdown(s.c), EPIPE);
	th_run_progress(s.loop, on_event, our_shut_step, &s, 1, &s.peer.rd,
			10000, 15000, "2 MiB then EOF at the peer");
	CHECK_EQ(s.peer.rd, s.target);
	CHECK_EQ(s.rx, s.peer.wtotal);
	CHECK(!s.error);
	CHECK_EQ(ub_conn_queued_bytes(s.c), 0);
	CHECK_EQ(ub_conn_bytes_sent(s.c), s.target);
	CHECK_OK(ub_conn_close(s.c));
	th_run(s.loop, on_event, closed, &s, 5, TH_TIMEOUT_MS, "CLOSED");
	CHECK_EQ(s.closed_res, 0);
	CHECK_EQ(close(fds[1]), 0);
	printf("  our shutdown: %llu bytes out then EOF, %llu in then EOF\n",
	       (unsigned long long)s.peer.rd, (unsigned long long)s.rx);
	teardown(&s, fds[0]);
}

/* ---- 3. the peer half-closed with data queued both ways ---- */

static int peer_shut_step(void *arg)
{
	struct fs *s = arg;
	int busy = fill(s);

	if (th_peer_read(&s->peer) > 0)
		busy = 1;
	if (s->eof && s->peer.rd == s->target)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static int peer_eof_step(void *arg)
{
	struct fs *s = arg;

	th_peer_read(&s->peer);
	return s->peer.eof && s->closed ? TH_DONE : TH_IDLE;
}

static void peer_half_close(int mode)
{
	struct fs s;
	int fds[2];

	memset(&s, 0, sizeof(s));
	th_tcp_pair(fds, 0); /* default buffers: 64 KiB fit in the socket */
	setup(&s, mode, fds[0], fds[1], 0);
	CHECK_OK(ub_conn_pause_recv(s.c));
	s.peer.wtotal = 64 * 1024;
	s.peer.wshut = 1;
	th_peer_write(&s.peer);
	CHECK_EQ(s.peer.written, s.peer.wtotal);
	CHECK(s.peer.wshut_done);
	s.target = 2u << 20;
	fill(&s);
	th_run_for(s.loop, on_event, NULL, &s, 5, 30);
	CHECK_EQ(s.rx, 0); /* paused: nothing delivered */
	CHECK(!s.eof);
	CHECK_OK(ub_conn_resume_recv(s.c));
	th_run_progress(s.loop, on_event, peer_shut_step, &s, 1, &s.peer.rd,
			10000, 15000, "64 KiB then EOF, 2 MiB to the peer");
	CHECK_EQ(s.rx, s.peer.wtotal);
	/* After the peer's EOF our sending side still works. */
	s.target += 256 * 1024;
	CHECK_EQ(ub_conn_is_closing(s.c), 0);
	th_run_progress(s.loop, on_event, peer_shut_step, &s, 1, &s.peer.rd,
			10000, 15000, "256 KiB more after the EOF");
	CHECK_OK(ub_conn_close(s.c));
	th_run(s.loop, on_event, peer_eof_step, &s, 1, TH_TIMEOUT_MS,
	       "CLOSED and the peer's EOF");
	CHECK_EQ(s.peer.rd, s.target);
	CHECK_EQ(s.closed_res, 0);
	CHECK(!s.error);
	CHECK_EQ(close(fds[1]), 0);
	printf("  peer shutdown: %llu in then EOF, %llu out\n",
	       (unsigned long long)s.rx, (unsigned long long)s.peer.rd);
	teardown(&s, fds[0]);
}

static void run(int mode, void *arg)
{
	(void)arg;
	th_watchdog(19);
	reset_mid_send(mode, 0);
	reset_mid_send(mode, 1);
	our_half_close(mode);
	peer_half_close(mode);
}

int main(void)
{
	th_init("fault_stream");
	th_watchdog(19);
	th_for_each_mode(run, NULL);
	return th_finish();
}
