/*
 * proxy.c - TCP proxy: each accepted client gets its own connection to the
 * target, and the core forwards both directions zero copy (ub_conn_pipe).
 *
 *   proxy --listen HOST:PORT --to HOST:PORT [--mode bundle|ring|serial|auto]
 *         [--buf-size BYTES] [--buf-count N] [--inc]
 *         [--no-recv-bundle] [--singleshot]
 *
 * A client is accepted with UB_CONN_NO_RECV: nothing may be received from
 * it before there is somewhere to forward it.  The upstream connection is
 * created the same way.  On a successful CONNECT both pipes are set up and
 * only then do both sides start receiving.  The core does the rest:
 * backpressure (src pauses while dst is above high water) and EOF
 * propagation (EOF on src shuts dst's sending side once its queue drained).
 *
 * Each direction receives into its own pool (clients into one, upstreams
 * into another, both --buf-count x --buf-size).  With one shared pool the
 * two directions can deadlock once the sockets' buffers are full: every
 * buffer queued towards a target that cannot read because its replies wait
 * for a buffer here.  With two, replies always have buffers of their own.
 * --inc makes both incremental (UB_POOL_INC): a receive takes only the
 * bytes it needs from a --buf-size buffer and the pipes forward each slice
 * as it is.  Where the kernel lacks it, one line on stderr says why and the
 * pools are ordinary ones.
 *
 * Teardown: once both directions have seen EOF, both sides close gracefully.
 * An ERROR or CLOSED on one side stops forwarding into it and closes the
 * other side gracefully (what it already queued still goes out).  A failed
 * connect aborts the client.  The pair is freed when both sides are CLOSED.
 *
 * SIGUSR1 prints one line on stderr (for bench/soak, which watches for
 * leaks): the live pairs and each receive pool's buffers by state,
 *   proxy: stats pairs=N client.kernel=N client.app=N client.queued=N
 *          up.kernel=N up.app=N up.queued=N        (one line)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { CLIENT = 0, UPSTREAM = 1 };

struct pair;

struct side {
	struct pair *pair;
	ub_conn *conn;      /* NULL once CLOSED (or never created) */
	unsigned eof : 1;   /* EOF seen from this side's peer      */
};

struct pair {
	struct pair *prev, *next; /* all live pairs, for exit */
	struct side side[2];
	unsigned connected : 1;
};

static struct pair pairs = { .prev = &pairs, .next = &pairs };
static const struct ex_opts *opts;
static struct sockaddr_storage target;
static socklen_t target_len;
static ub_conn_opts up_opts;
static int listener_closed;
static volatile sig_atomic_t stats_wanted;

static int side_index(const struct side *s)
{
	return s == &s->pair->side[CLIENT] ? CLIENT : UPSTREAM;
}

static struct side *partner(struct side *s)
{
	return &s->pair->side[side_index(s) ^ 1];
}

static void pair_unlink_free(struct pair *p)
{
	p->prev->next = p->next;
	p->next->prev = p->prev;
	free(p);
}

/* Both are idempotent: -EPIPE means a close or abort is already under way.
 * (Not ub_conn_is_closing(): that is also true once the core has shut a
 * side's sending half after its partner's EOF, which is no close.) */
static void side_close(struct side *s)
{
	int r;

	if (!s->conn)
		return;
	r = ub_conn_close(s->conn);
	if (r < 0 && r != -EPIPE)
		ex_warn(opts, "close", r);
}

static void side_abort(struct side *s)
{
	if (s->conn)
		ub_conn_abort(s->conn);
}

static void on_accept(ub_conn *client)
{
	struct pair *p = calloc(1, sizeof(*p));
	ub_conn *up;
	int err = 0;

	if (!p) {
		ex_warn(opts, "accept", -ENOMEM);
		ub_conn_abort(client);
		return;
	}
	p->side[CLIENT].pair = p;
	p->side[UPSTREAM].pair = p;
	p->side[CLIENT].conn = client;
	p->next = &pairs;
	p->prev = pairs.prev;
	pairs.prev->next = p;
	pairs.prev = p;
	ub_conn_set_udata(client, &p->side[CLIENT]);

	up_opts.udata = &p->side[UPSTREAM];
	up = ub_conn_connect(ub_conn_loop(client),
			     (const struct sockaddr *)&target, target_len,
			     &up_opts, &err);
	if (!up) {
		ex_warn(opts, "connect", err);
		ub_conn_abort(client); /* CLOSED frees the pair */
		return;
	}
	p->side[UPSTREAM].conn = up;
	ub_conn_set_udata(up, &p->side[UPSTREAM]);
}

static void on_connect(struct side *s, int res)
{
	struct pair *p = s->pair;
	ub_conn *c = p->side[CLIENT].conn, *u = p->side[UPSTREAM].conn;
	char what[160];
	int r;

	if (res < 0) {
		/* The upstream's CLOSED follows; the client goes now. */
		snprintf(what, sizeof(what), "connect to %s", opts->to);
		ex_warn(opts, what, res);
		side_abort(&p->side[CLIENT]);
		return;
	}
	if (!c) {
		/* The client left while we were connecting. */
		side_abort(s);
		return;
	}
	p->connected = 1;
	r = ub_conn_pipe(c, u);
	if (r == 0)
		r = ub_conn_pipe(u, c);
	if (r == 0)
		r = ub_conn_resume_recv(c);
	if (r == 0)
		r = ub_conn_resume_recv(u);
	if (r < 0) {
		ex_warn(opts, "setting up the pipes", r);
		side_abort(&p->side[CLIENT]);
		side_abort(&p->side[UPSTREAM]);
	}
}

/* The core hands a buffer to the application only when it could not pipe
 * it: the partner is closing or gone, so nobody can take these bytes. */
static void on_data(ub_buf *buf)
{
	ub_buf_release(buf);
}

static void on_closed(struct side *s)
{
	struct side *o = partner(s);

	ub_conn_set_udata(s->conn, NULL);
	s->conn = NULL;
	if (o->conn) {
		/* Nothing more may be forwarded into the closed side. */
		ub_conn_pipe(o->conn, NULL);
		if (s->pair->connected)
			side_close(o);
		else
			side_abort(o);
	}
	if (!s->pair->side[CLIENT].conn && !s->pair->side[UPSTREAM].conn)
		pair_unlink_free(s->pair);
}

static void on_event(const ub_event *ev)
{
	struct side *s;

	if (ev->type == UB_EV_ACCEPT) {
		on_accept(ev->conn);
		return;
	}
	if (!ev->conn) {
		if (ev->type == UB_EV_ERROR)
			ex_warn(opts, "accept", ev->res);
		else if (ev->type == UB_EV_CLOSED)
			listener_closed = 1;
		return;
	}
	s = ub_conn_udata(ev->conn);
	if (!s) {
		if (ev->type == UB_EV_DATA)
			ub_buf_release(ev->buf);
		return;
	}
	switch (ev->type) {
	case UB_EV_CONNECT:
		on_connect(s, ev->res);
		break;
	case UB_EV_DATA:
		on_data(ev->buf);
		break;
	case UB_EV_EOF:
		/* The core already shuts the partner's sending side. */
		s->eof = 1;
		if (partner(s)->eof) {
			side_close(s);
			side_close(partner(s));
		}
		break;
	case UB_EV_ERROR:
		/* This side is closing (CLOSED follows); let the other finish. */
		side_close(partner(s));
		break;
	case UB_EV_CLOSED:
		on_closed(s);
		break;
	default:
		break; /* WRITABLE: the pipes handle backpressure */
	}
}

static void on_stats_signal(int sig)
{
	(void)sig;
	stats_wanted = 1;
}

static void print_stats(ub_pool *pool, ub_pool *up_pool)
{
	const struct pair *p;
	unsigned npairs = 0;

	for (p = pairs.next; p != &pairs; p = p->next)
		npairs++;
	fprintf(stderr,
		"proxy: stats pairs=%u client.kernel=%u client.app=%u "
		"client.queued=%u up.kernel=%u up.app=%u up.queued=%u\n",
		npairs, ub_pool_count_state(pool, UB_BUF_KERNEL),
		ub_pool_count_state(pool, UB_BUF_APP),
		ub_pool_count_state(pool, UB_BUF_QUEUED),
		ub_pool_count_state(up_pool, UB_BUF_KERNEL),
		ub_pool_count_state(up_pool, UB_BUF_APP),
		ub_pool_count_state(up_pool, UB_BUF_QUEUED));
}

int main(int argc, char **argv)
{
	static ub_event ev[EX_BATCH];
	struct ex_opts o;
	ub_conn_opts copts;
	ub_listener *l;
	ub_pool *pool, *up_pool;
	ub_loop *loop;
	char what[160];
	struct sigaction sa;
	int n, i, err = 0, status = 0;

	ex_parse_args(argc, argv, "proxy", EX_NEED_TO | EX_ALLOW_INC, &o);
	opts = &o;
	target_len = sizeof(target);
	n = ub_addr_parse(o.to, &target, &target_len);
	if (n < 0) {
		snprintf(what, sizeof(what), "bad --to address '%s'", o.to);
		ex_die(&o, NULL, what, n);
	}
	ex_signals_install(&o);
	/* Like SIGTERM, without SA_RESTART: a blocked wait returns -EINTR. */
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stats_signal;
	if (sigaction(SIGUSR1, &sa, NULL))
		ex_die(&o, NULL, "sigaction", -errno);
	loop = ex_loop_new(&o, &pool);
	/* The same kind as the clients' (incremental with --inc, if the
	 * kernel made that one incremental). */
	up_pool = ub_pool_new(loop, ub_pool_count(pool), ub_pool_buf_size(pool),
			      UB_POOL_RECV | (ub_pool_flags(pool) & UB_POOL_INC),
			      &err);
	if (!up_pool)
		ex_die(&o, loop, "cannot create the upstream receive pool", err);

	ex_conn_opts(&o, pool, &copts);
	copts.flags |= UB_CONN_NO_RECV;
	up_opts = copts;
	up_opts.recv_pool = up_pool;
	l = ex_listen(loop, &o, &copts);
	(void)l;

	while (!ex_stop && !listener_closed) {
		if (stats_wanted) {
			stats_wanted = 0;
			print_stats(pool, up_pool);
		}
		n = ub_loop_wait(loop, ev, EX_BATCH, 1, EX_WAIT_MS);
		if (n == -EINTR)
			continue;
		if (n < 0) {
			ex_warn(&o, "ub_loop_wait", n);
			status = 1;
			break;
		}
		for (i = 0; i < n; i++)
			on_event(&ev[i]);
	}
	if (listener_closed) {
		fprintf(stderr, "proxy: the listener closed\n");
		status = 1;
	}

	n = ub_loop_free(loop);
	if (n < 0) {
		ex_warn(&o, "ub_loop_free", n);
		status = 1;
	}
	while (pairs.next != &pairs)
		pair_unlink_free(pairs.next);
	return status;
}
