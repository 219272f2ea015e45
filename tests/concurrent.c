/*
 * concurrent.c - 200 connections at once through one echoing listener.
 *
 * A ub_listener on 127.0.0.1:0 echoes every DATA buffer back with
 * ub_conn_send_buf (zero copy, the received buffer itself).  When the send
 * queue refuses (-EAGAIN: its high water mark is small on purpose) the server
 * holds the buffers in order, pauses receiving, and flushes them on
 * UB_EV_WRITABLE; on EOF it closes gracefully once everything held is sent.
 * The receive pool is much smaller than 200 connections' worth, so receives
 * also starve (-ENOBUFS) and must be re-armed as buffers come back.
 *
 * Clients, all connected before any finishes: half are ub_conn_connect
 * connections on the same loop, half plain nonblocking sockets.  Each sends
 * 64 KiB of its own seeded pattern, half-closes, and checks that exactly its
 * bytes come back, in order, followed by EOF.  Afterwards every pool is idle
 * and the fd count is what it was at the start.
 */
#include "helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define NCLIENTS 200
#define PER_CLIENT (64 * 1024)
#define SRV_POOL 256

struct srv {
	ub_conn *c;
	ub_buf *held[SRV_POOL]; /* FIFO of buffers refused by send_buf */
	unsigned head, n;
	int paused, eof, closing;
	uint64_t echoed;
};

struct cli {
	int ub;           /* 1: ub_conn_connect, 0: plain socket */
	ub_conn *c;
	struct th_peer p; /* plain */
	uint64_t seed, sent, got;
	int connected, blocked, shut, eof, closed;
};

struct test {
	int mode;
	ub_loop *loop;
	ub_listener *l;
	ub_pool *srv_rpool, *cli_rpool, *cli_spool;
	struct cli cli[NCLIENTS];
	int accepted, srv_closed, cli_done, l_closed;
	long eagain, writable, pauses;
	uint8_t scratch[16384];
};

static void srv_flush(struct test *t, struct srv *s)
{
	while (s->n) {
		ub_buf *b = s->held[s->head];
		size_t len = ub_buf_len(b);
		int r = ub_conn_send_buf(s->c, b);

		if (r == -EAGAIN) {
			t->eagain++;
			return;
		}
		CHECK_OK(r);
		s->echoed += len;
		s->head = (s->head + 1) % SRV_POOL;
		s->n--;
	}
	if (s->paused) {
		CHECK_OK(ub_conn_resume_recv(s->c));
		s->paused = 0;
	}
	if (s->eof && !s->closing) {
		CHECK_OK(ub_conn_close(s->c));
		s->closing = 1;
	}
}

static void srv_event(struct test *t, const ub_event *ev)
{
	struct srv *s = ub_conn_udata(ev->conn);

	switch (ev->type) {
	case UB_EV_ACCEPT:
		CHECK(ev->listener == t->l);
		CHECK(ev->conn != NULL);
		CHECK_EQ(ev->res, ub_conn_fd(ev->conn));
		CHECK_EQ(ub_conn_mode(ev->conn), t->mode);
		s = calloc(1, sizeof(*s));
		CHECK(s != NULL);
		s->c = ev->conn;
		ub_conn_set_udata(ev->conn, s);
		t->accepted++;
		CHECK_CMP(t->accepted, <=, NCLIENTS);
		return;
	case UB_EV_DATA:
		CHECK(s != NULL);
		CHECK(!s->eof && !s->closing);
		CHECK(ub_buf_pool(ev->buf) == t->srv_rpool);
		CHECK_EQ(ev->res, ub_buf_len(ev->buf));
		if (!s->n) {
			int r = ub_conn_send_buf(s->c, ev->buf);

			if (r != -EAGAIN) {
				CHECK_OK(r);
				s->echoed += ev->res;
				return;
			}
			t->eagain++;
		}
		CHECK_CMP(s->n, <, SRV_POOL);
		s->held[(s->head + s->n++) % SRV_POOL] = ev->buf;
		if (!s->paused) {
			CHECK_OK(ub_conn_pause_recv(s->c));
			s->paused = 1;
			t->pauses++;
		}
		return;
	case UB_EV_WRITABLE:
		CHECK(s != NULL);
		t->writable++;
		srv_flush(t, s);
		return;
	case UB_EV_EOF:
		CHECK(s != NULL);
		CHECK(!s->eof);
		s->eof = 1;
		if (!s->n && !s->closing) {
			CHECK_OK(ub_conn_close(s->c));
			s->closing = 1;
		}
		return;
	case UB_EV_CLOSED:
		CHECK(s != NULL);
		CHECK_EQ(ev->res, 0);
		CHECK(s->closing);
		CHECK_EQ(s->n, 0);
		CHECK_EQ(s->echoed, PER_CLIENT);
		free(s);
		ub_conn_set_udata(ev->conn, NULL);
		t->srv_closed++;
		return;
	}
	TH_FAILF("server: unexpected %s res %d", ub_event_name(ev->type),
		 ev->res);
}

static void cli_event(struct test *t, struct cli *c, const ub_event *ev)
{
	switch (ev->type) {
	case UB_EV_CONNECT:
		CHECK_EQ(ev->res, 0);
		CHECK(!c->connected);
		c->connected = 1;
		return;
	case UB_EV_DATA:
		CHECK(c->connected);
		CHECK(!c->eof);
		CHECK(ub_buf_pool(ev->buf) == t->cli_rpool);
		th_pat_check(c->seed, c->got, ub_buf_data(ev->buf),
			     ub_buf_len(ev->buf), "ub client echo");
		c->got += ub_buf_len(ev->buf);
		CHECK_CMP(c->got, <=, PER_CLIENT);
		CHECK_OK(ub_buf_release(ev->buf));
		return;
	case UB_EV_WRITABLE:
		c->blocked = 0;
		return;
	case UB_EV_EOF:
		CHECK(!c->eof);
		CHECK_EQ(c->got, PER_CLIENT);
		c->eof = 1;
		CHECK_OK(ub_conn_close(c->c));
		return;
	case UB_EV_CLOSED:
		CHECK_EQ(ev->res, 0);
		CHECK(c->eof);
		c->closed = 1;
		c->c = NULL;
		t->cli_done++;
		return;
	}
	TH_FAILF("client: unexpected %s res %d", ub_event_name(ev->type),
		 ev->res);
}

static void on_event(const ub_event *ev, void *arg)
{
	struct test *t = arg;

	if (ev->listener && !ev->conn) {
		CHECK(ev->listener == t->l);
		if (ev->type == UB_EV_CLOSED) {
			t->l_closed++;
			return;
		}
		TH_FAILF("listener: unexpected %s res %d",
			 ub_event_name(ev->type), ev->res);
	}
	CHECK(ev->conn != NULL);
	if (ev->type != UB_EV_ACCEPT && ev->udata >= (void *)t->cli &&
	    ev->udata < (void *)(t->cli + NCLIENTS)) {
		CHECK(ub_conn_udata(ev->conn) == ev->udata);
		cli_event(t, ev->udata, ev);
	} else {
		srv_event(t, ev);
	}
}

static int step(void *arg)
{
	struct test *t = arg;
	int busy = 0;

	for (int i = 0; i < NCLIENTS; i++) {
		struct cli *c = &t->cli[i];

		if (!c->ub) {
			if (c->closed)
				continue;
			busy |= th_peer_write(&c->p) > 0;
			busy |= th_peer_read(&c->p) > 0;
			CHECK_EQ(c->p.err, 0);
			if (c->p.eof) {
				CHECK_EQ(c->p.rd, PER_CLIENT);
				CHECK(close(c->p.fd) == 0);
				c->closed = 1;
				t->cli_done++;
			}
			continue;
		}
		while (!c->blocked && c->sent < PER_CLIENT) {
			size_t n = PER_CLIENT - c->sent;
			ssize_t r;

			if (n > sizeof(t->scratch))
				n = sizeof(t->scratch);
			th_pat_fill(c->seed, c->sent, t->scratch, n);
			r = ub_conn_send(c->c, t->scratch, n);
			if (r == -EAGAIN) {
				c->blocked = 1;
				break;
			}
			CHECK_OK(r);
			c->sent += r;
			busy = 1;
		}
		if (c->sent == PER_CLIENT && !c->shut) {
			CHECK_OK(ub_conn_shutdown(c->c));
			c->shut = 1;
			/* a shut sending side takes no more */
			CHECK_EQ(ub_conn_is_closing(c->c), 1);
			CHECK_ERR(ub_conn_send(c->c, "x", 1), EPIPE);
			CHECK_ERR(ub_conn_shutdown(c->c), EPIPE);
		}
	}
	if (t->cli_done == NCLIENTS && t->srv_closed == NCLIENTS)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static int step_lclosed(void *arg)
{
	return ((struct test *)arg)->l_closed ? TH_DONE : TH_IDLE;
}

static void run(int mode, void *arg)
{
	struct test *t = calloc(1, sizeof(*t));
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	ub_conn_opts so, co;
	int err = 0, lfd, sz = 16384;

	(void)arg;
	CHECK(t != NULL);
	t->mode = mode;
	t->loop = th_loop_new(NULL);
	t->srv_rpool = ub_pool_new(t->loop, SRV_POOL, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(t->srv_rpool, err);
	t->cli_rpool = ub_pool_new(t->loop, 256, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(t->cli_rpool, err);
	t->cli_spool = ub_pool_new(t->loop, 512, 16384, 0, &err);
	CHECK_PTR(t->cli_spool, err);

	ub_conn_opts_init(&so);
	so.mode = mode;
	so.recv_pool = t->srv_rpool;
	so.high_water = 16384;
	so.low_water = 4096;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	t->l = ub_listen(t->loop, (struct sockaddr *)&sin, sizeof(sin), 512, 0,
			 &so, &err);
	CHECK_PTR(t->l, err);
	ub_listener_set_udata(t->l, t);
	CHECK(ub_listener_udata(t->l) == t);
	lfd = ub_listener_fd(t->l);
	CHECK_CMP(lfd, >=, 0);
	/* accepted sockets inherit small buffers from the listener */
	CHECK(setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)) == 0);
	CHECK(setsockopt(lfd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)) == 0);
	CHECK(getsockname(lfd, (struct sockaddr *)&ss, &sl) == 0);

	ub_conn_opts_init(&co);
	co.mode = mode;
	co.recv_pool = t->cli_rpool;
	co.send_pool = t->cli_spool;
	for (int i = 0; i < NCLIENTS; i++) {
		struct cli *c = &t->cli[i];

		c->seed = th_rand();
		c->ub = i % 2 == 0;
		if (c->ub) {
			co.udata = c;
			c->c = ub_conn_connect(t->loop, (struct sockaddr *)&ss,
					       sl, &co, &err);
			CHECK_PTR(c->c, err);
		} else {
			int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

			CHECK(fd >= 0);
			th_small_bufs(fd);
			CHECK(connect(fd, (struct sockaddr *)&ss, sl) == 0);
			th_peer_init(&c->p, fd, "plain client echo");
			c->p.seed = c->p.wseed = c->seed;
			c->p.wtotal = PER_CLIENT;
			c->p.wshut = 1;
		}
	}
	th_run(t->loop, on_event, step, t, 10, TH_TIMEOUT_MS,
	       "every client's echo and close");
	CHECK_EQ(t->accepted, NCLIENTS);
	CHECK_EQ(t->srv_closed, NCLIENTS);
	for (int i = 0; i < NCLIENTS; i++) {
		struct cli *c = &t->cli[i];

		CHECK(c->closed);
		CHECK_EQ(c->ub ? c->got : c->p.rd, PER_CLIENT);
		if (c->ub)
			CHECK(c->connected);
	}
	CHECK_OK(ub_listener_close(t->l));
	th_run(t->loop, on_event, step_lclosed, t, 10, TH_TIMEOUT_MS,
	       "listener CLOSED");
	th_run_for(t->loop, on_event, NULL, t, 1, 20);
	CHECK_EQ(t->l_closed, 1);
	th_check_pool_idle(t->srv_rpool, "server receive");
	th_check_pool_idle(t->cli_rpool, "client receive");
	th_check_pool_idle(t->cli_spool, "client send");
	CHECK_OK(ub_pool_free(t->srv_rpool));
	CHECK_OK(ub_pool_free(t->cli_rpool));
	CHECK_OK(ub_pool_free(t->cli_spool));
	CHECK_OK(ub_loop_free(t->loop));
	th_check_fds("after all connections closed");
	printf("  %d clients x %d bytes echoed; server -EAGAIN %ld, "
	       "WRITABLE %ld, pauses %ld\n", NCLIENTS, PER_CLIENT, t->eagain,
	       t->writable, t->pauses);
	free(t);
}

int main(void)
{
	th_init("concurrent");
	th_for_each_mode(run, NULL);
	return th_finish();
}
