/*
 * idle_holders.c - idle clients do not freeze the others' receives.
 *
 * The server assembles lines: it holds every DATA buffer of a connection
 * until one ends a line, then sends them all back (ub_conn_send_buf), as a
 * protocol parser holds a partial request.  Its receive pool is small (128
 * buffers, reserve 32) and shared by every connection, with default
 * options.  Beside the crowd below, one client sends 20 lines, each in two
 * writes (the first part arrives, and is held, before the rest is sent),
 * and each line must come back whole within a deadline:
 *
 *  - idle: 100 connections that never send.  Their armed receives' promises
 *    once left nothing unpromised, and a connection holding part of a line
 *    waited for a buffer nobody was promised, for ever (with the default
 *    1,024-buffer pool: from about 300 idle clients).
 *  - partial: 70 connections that each send half a line and wait; the
 *    server holds one buffer for each, and 58 stay free.  Their receives
 *    (multishot ones still armed, or one-buffer ones) held the rest back the
 *    same way (default pool: from about 300 such clients).
 *
 * In each send mode.  Afterwards every connection closes (half the crowd
 * with a reset), the server gives back what it held, and the pool is idle
 * with no descriptor left.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define POOL_BUFS 128
#define N_IDLE 100
#define N_PARTIAL 70
#define LINES 20
#define MAX_CONNS (N_IDLE + N_PARTIAL + 4)
#define MAX_HELD 16

struct lconn {
	ub_conn *c;
	ub_buf *held[MAX_HELD];
	unsigned n;
	int closed;
};

struct srv {
	ub_loop *loop;
	ub_pool *pool;
	ub_listener *l;
	struct lconn conns[MAX_CONNS];
	unsigned naccepted, nclosed, nheld_conns, nreset;
};

struct client {
	struct srv *s;
	int fd;
	char want[64];
	size_t want_len, got;
	char buf[64];
	unsigned crowd;    /* the crowd's accepted connections to wait for */
	unsigned held;     /* connections holding a partial line, wanted */
};

static void release_held(struct lconn *lc)
{
	while (lc->n)
		CHECK_OK(ub_buf_release(lc->held[--lc->n]));
}

static void on_event(const ub_event *ev, void *arg)
{
	struct srv *s = ((struct client *)arg)->s;
	struct lconn *lc = ev->conn ? ub_conn_udata(ev->conn) : NULL;
	unsigned k;

	switch (ev->type) {
	case UB_EV_ACCEPT:
		CHECK(s->naccepted < MAX_CONNS);
		lc = &s->conns[s->naccepted++];
		lc->c = ev->conn;
		ub_conn_set_udata(ev->conn, lc);
		break;
	case UB_EV_DATA:
		CHECK(lc->n < MAX_HELD);
		if (lc->n == 0)
			s->nheld_conns++;
		lc->held[lc->n++] = ev->buf;
		if (!memchr(ub_buf_data(ev->buf), '\n', ub_buf_len(ev->buf)))
			break;
		for (k = 0; k < lc->n; k++)
			CHECK_OK(ub_conn_send_buf(lc->c, lc->held[k]));
		lc->n = 0;
		s->nheld_conns--;
		break;
	case UB_EV_EOF:
		if (lc->n)
			s->nheld_conns--;
		release_held(lc);
		CHECK_OK(ub_conn_close(lc->c));
		break;
	case UB_EV_ERROR:
		/* the crowd's resets (run_case) */
		if (ev->res != -ECONNRESET)
			TH_FAILF("connection error %d (%s)", ev->res,
				 strerror(-ev->res));
		s->nreset++;
		break;
	case UB_EV_CLOSED:
		if (!lc)
			break;
		if (lc->n)
			s->nheld_conns--;
		release_held(lc);
		lc->closed = 1;
		s->nclosed++;
		break;
	default:
		break;
	}
}

static int step_crowd(void *arg)
{
	struct client *cl = arg;

	return cl->s->naccepted >= cl->crowd &&
	       cl->s->nheld_conns >= cl->held ? TH_DONE : TH_IDLE;
}

/* The line's first part is held by the server: its holder count rose. */
static int step_first_part(void *arg)
{
	struct client *cl = arg;

	return cl->s->nheld_conns > cl->held ? TH_DONE : TH_IDLE;
}

static int step_echo(void *arg)
{
	struct client *cl = arg;
	ssize_t r = read(cl->fd, cl->buf + cl->got, sizeof(cl->buf) - cl->got);

	if (r < 0)
		return TH_IDLE;
	CHECK(r > 0);
	cl->got += (size_t)r;
	CHECK_CMP(cl->got, <=, cl->want_len);
	return cl->got == cl->want_len ? TH_DONE : TH_BUSY;
}

static int connect_to(const struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	CHECK(connect(fd, (const struct sockaddr *)a, sizeof(*a)) == 0);
	th_set_nonblock(fd, 1);
	return fd;
}

static int step_closed(void *arg)
{
	struct srv *s = ((struct client *)arg)->s;

	return s->nclosed == s->naccepted ? TH_DONE : TH_IDLE;
}

static void run_case(int mode, int partial)
{
	const char *name = partial ? "partial" : "idle";
	unsigned ncrowd = partial ? N_PARTIAL : N_IDLE;
	struct srv s = { 0 };
	struct client cl = { 0 };
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	ub_conn_opts o;
	int crowd[N_IDLE > N_PARTIAL ? N_IDLE : N_PARTIAL];
	int err = 0, line;
	unsigned i;

	s.loop = th_loop_new(NULL);
	s.pool = ub_pool_new(s.loop, POOL_BUFS, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(s.pool, err);
	ub_conn_opts_init(&o);
	o.recv_pool = s.pool;
	o.mode = mode;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s.l = ub_listen(s.loop, (struct sockaddr *)&a, sizeof(a), 512, 0, &o,
			&err);
	CHECK_PTR(s.l, err);
	CHECK(getsockname(ub_listener_fd(s.l), (struct sockaddr *)&a,
			  &alen) == 0);

	for (i = 0; i < ncrowd; i++) {
		crowd[i] = connect_to(&a);
		if (partial)
			CHECK(write(crowd[i], "half a li", 9) == 9);
	}
	cl.s = &s;
	cl.crowd = ncrowd;
	cl.held = partial ? ncrowd : 0;
	th_run(s.loop, on_event, step_crowd, &cl, 10, TH_TIMEOUT_MS,
	       "the crowd's connections (and partial lines) to arrive");
	/* Let every receive of the crowd be armed and settle. */
	th_run_for(s.loop, on_event, NULL, &cl, 10, 100);

	cl.fd = connect_to(&a);
	for (line = 0; line < LINES; line++) {
		size_t half;
		char what[96];

		cl.want_len = (size_t)snprintf(cl.want, sizeof(cl.want),
					       "line %d of the client\n", line);
		half = cl.want_len / 2;
		cl.got = 0;
		CHECK(write(cl.fd, cl.want, half) == (ssize_t)half);
		snprintf(what, sizeof(what), "%s: line %d's first part held",
			 name, line);
		th_run(s.loop, on_event, step_first_part, &cl, 10, 5000, what);
		CHECK(write(cl.fd, cl.want + half, cl.want_len - half) ==
		      (ssize_t)(cl.want_len - half));
		snprintf(what, sizeof(what), "%s: line %d echoed", name, line);
		th_run(s.loop, on_event, step_echo, &cl, 10, 5000, what);
		CHECK(memcmp(cl.buf, cl.want, cl.want_len) == 0);
	}
	printf("  %s: %u crowd connections (%u holding part of a line), "
	       "%d lines echoed, %u of %u buffers in the ring\n",
	       name, ncrowd, partial ? ncrowd : 0, LINES,
	       ub_pool_count_state(s.pool, UB_BUF_KERNEL), POOL_BUFS);

	/* Half the crowd resets, half closes: their peeks (or receives) end
	 * either way, and what the server held comes back. */
	for (i = 0; i < ncrowd; i++) {
		if (i % 2)
			th_close_rst(crowd[i]);
		else
			close(crowd[i]);
	}
	close(cl.fd);
	th_run(s.loop, on_event, step_closed, &cl, 10, TH_TIMEOUT_MS,
	       "every connection closed");
	printf("  %s: all %u closed, %u of them with a reset seen\n", name,
	       s.nclosed, s.nreset);
	CHECK_OK(ub_listener_close(s.l));
	th_run_for(s.loop, on_event, NULL, &cl, 10, 50);
	th_check_pool_idle(s.pool, name);
	CHECK_OK(ub_pool_free(s.pool));
	CHECK_OK(ub_loop_free(s.loop));
}

static void one_mode(int mode, void *arg)
{
	(void)arg;
	run_case(mode, 0);
	run_case(mode, 1);
	th_check_fds("after both cases");
}

int main(void)
{
	th_init("idle_holders");
	th_watchdog(120);
	th_for_each_mode(one_mode, NULL);
	return th_finish();
}
