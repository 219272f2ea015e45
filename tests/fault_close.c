/*
 * fault_close.c - closing a connection while it connects, and a listener
 * (or what it just accepted) while connections arrive, in every send mode.
 *
 * Connect side: a plain listener whose accept queue is full makes
 * connects hang (the SYN is dropped and retried after about 1 s).
 *  1. Graceful close while connecting, bytes queued before it: once the
 *     accept queue frees up the connect completes (CONNECT 0), every queued
 *     byte reaches the accepted peer in order, then its FIN; CLOSED res 0.
 *  2. Graceful close while connecting, nothing queued, and the connect
 *     never completes: nothing is left to deliver, so CLOSED must come
 *     promptly (within 3 s), not when the kernel gives up on the SYN
 *     minutes later.
 *  3. Abort while connecting, bytes queued: CLOSED promptly, no CONNECT,
 *     queued buffers back in the pool.
 *  4. Graceful close while connecting to a port nobody listens on:
 *     CONNECT -ECONNREFUSED, then CLOSED with the same res.
 * Accept side (ub_listen on 127.0.0.1):
 *  5. 8 clients connect and are accepted (and closed), then 8 more connect
 *     and the listener is closed in the same round: exactly one listener
 *     CLOSED; no ACCEPT after the close call; every client sees its
 *     connection end (EOF or reset), none is left hanging.
 *  6. Connections closed (graceful) or aborted from inside their ACCEPT
 *     event, with 10 KB the client sent still unread: CLOSED res 0, no
 *     DATA; the client sees EOF (graceful) or EOF/reset (abort).
 * After each case every pool is idle (ub_pool_count_state) and the fd count
 * is back to where it started.
 */
#include "helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define NCLI 16

struct fc {
	ub_loop *loop;
	ub_pool *spool, *rpool;
	ub_conn *c;
	ub_listener *l;
	int connect_ev, connect_res, closed, closed_res, errors, data;
	int l_closed, l_close_called, accepts, accepts_after_close;
	int close_in_accept; /* 1: close, 2: abort */
	int conn_closed;     /* CLOSED of accepted conns */
	double closed_at;
};

static void on_event(const ub_event *ev, void *arg)
{
	struct fc *f = arg;

	switch (ev->type) {
	case UB_EV_CONNECT:
		CHECK(ev->conn == f->c);
		CHECK(!f->connect_ev);
		f->connect_ev = 1;
		f->connect_res = ev->res;
		return;
	case UB_EV_CLOSED:
		if (ev->listener) {
			CHECK(ev->listener == f->l);
			CHECK(!f->l_closed);
			f->l_closed = 1;
			return;
		}
		if (ev->conn == f->c) {
			CHECK(!f->closed);
			f->closed = 1;
			f->closed_res = ev->res;
			f->closed_at = th_now_ms();
			return;
		}
		CHECK_EQ(ev->res, 0);
		f->conn_closed++;
		return;
	case UB_EV_ACCEPT:
		CHECK(ev->listener == f->l);
		f->accepts++;
		if (f->l_close_called)
			f->accepts_after_close++;
		if (f->close_in_accept == 1)
			CHECK_OK(ub_conn_close(ev->conn));
		else if (f->close_in_accept == 2)
			CHECK_OK(ub_conn_abort(ev->conn));
		else
			CHECK_OK(ub_conn_close(ev->conn));
		return;
	case UB_EV_DATA:
		f->data++;
		CHECK_OK(ub_buf_release(ev->buf));
		return;
	case UB_EV_ERROR:
		f->errors++;
		return;
	}
	TH_FAILF("unexpected %s res %d", ub_event_name(ev->type), ev->res);
}

static void setup(struct fc *f)
{
	int err = 0;

	memset(f, 0, sizeof(*f));
	f->loop = th_loop_new(NULL);
	f->spool = ub_pool_new(f->loop, 64, 4096, 0, &err);
	CHECK_PTR(f->spool, err);
	f->rpool = ub_pool_new(f->loop, 16, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(f->rpool, err);
}

static void teardown(struct fc *f)
{
	th_run_for(f->loop, on_event, NULL, f, 5, 20);
	th_check_pool_idle(f->spool, "send");
	th_check_pool_idle(f->rpool, "receive");
	CHECK_OK(ub_pool_free(f->spool));
	CHECK_OK(ub_pool_free(f->rpool));
	CHECK_OK(ub_loop_free(f->loop));
}

static void opts(struct fc *f, ub_conn_opts *o, int mode)
{
	ub_conn_opts_init(o);
	o->mode = mode;
	o->send_pool = f->spool;
	o->recv_pool = f->rpool;
}

/* A listening socket with a full accept queue; fill[] hold the queue. */
static int full_listener(struct sockaddr_in *sin, int fill[2])
{
	socklen_t len = sizeof(*sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(bind(fd, (struct sockaddr *)sin, len) == 0);
	CHECK(listen(fd, 0) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)sin, &len) == 0);
	for (int i = 0; i < 2; i++) {
		fill[i] = socket(AF_INET,
				 SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		CHECK(fill[i] >= 0);
		int r = connect(fill[i], (struct sockaddr *)sin, len);
		CHECK(r == 0 || errno == EINPROGRESS);
	}
	return fd;
}

static uint64_t queue(struct fc *f, uint64_t seed, uint64_t n)
{
	static uint8_t chunk[4096];
	uint64_t off = 0;

	while (off < n) {
		size_t k = th_rand_range(1, sizeof(chunk));
		ssize_t r;

		if (k > n - off)
			k = n - off;
		th_pat_fill(seed, off, chunk, k);
		r = ub_conn_send(f->c, chunk, k);
		CHECK_OK(r);
		off += (uint64_t)r;
	}
	return off;
}

static int is_closed(void *arg)
{
	return ((struct fc *)arg)->closed ? TH_DONE : TH_IDLE;
}

/* 1. */
struct drain {
	struct fc *f;
	int lfd, fill[2];
	uint64_t seed;
	struct th_peer peer;
	int accepted;
	int cport; /* our connection's local port, taken at CONNECT: it may
		      drain into the socket and close before we accept */
};

static int port_of(int fd, int peer)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	if (peer)
		CHECK(getpeername(fd, (struct sockaddr *)&sin, &len) == 0);
	else
		CHECK(getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
	return ntohs(sin.sin_port);
}

static int drain_step(void *arg)
{
	struct drain *d = arg;
	int fd;

	/* Accept what comes: the fillers are closed, ours is the peer. */
	while (!d->accepted && d->cport &&
	       (fd = accept(d->lfd, NULL, NULL)) >= 0) {
		if (port_of(fd, 1) != d->cport) {
			close(fd);
			continue;
		}
		th_peer_init(&d->peer, fd, "accepted peer");
		d->peer.seed = d->seed;
		d->accepted = 1;
	}
	if (!d->accepted)
		return TH_IDLE;
	th_peer_read(&d->peer);
	return d->peer.eof && d->f->closed ? TH_DONE : TH_IDLE;
}

static void drain_event(const ub_event *ev, void *arg)
{
	struct drain *d = arg;

	if (ev->type == UB_EV_CONNECT && ev->res == 0)
		d->cport = port_of(ub_conn_fd(ev->conn), 0);
	on_event(ev, d->f);
}

static void close_connecting_drain(int mode)
{
	struct fc f;
	struct drain d;
	struct sockaddr_in sin;
	ub_conn_opts o;
	uint64_t seed = th_rand(), n;
	int err = 0;

	setup(&f);
	memset(&d, 0, sizeof(d));
	d.f = &f;
	d.lfd = full_listener(&sin, d.fill);
	th_set_nonblock(d.lfd, 1);
	opts(&f, &o, mode);
	f.c = ub_conn_connect(f.loop, (struct sockaddr *)&sin, sizeof(sin), &o,
			      &err);
	CHECK_PTR(f.c, err);
	n = queue(&f, seed, 100000);
	th_run_for(f.loop, on_event, NULL, &f, 5, 50);
	CHECK(!f.connect_ev); /* still connecting */
	CHECK_OK(ub_conn_close(f.c));
	CHECK_ERR(ub_conn_send(f.c, "x", 1), EPIPE);
	d.seed = seed;
	/* room in the accept queue: the retried SYNs get in */
	CHECK(listen(d.lfd, 16) == 0);
	th_run(f.loop, drain_event, drain_step, &d, 5, 10000,
	       "the connect, the bytes and CLOSED");
	CHECK_EQ(f.connect_ev, 1);
	CHECK_EQ(f.connect_res, 0);
	CHECK_EQ(f.closed_res, 0);
	CHECK_EQ(f.errors, 0);
	CHECK_EQ(d.peer.rd, n);
	CHECK_EQ(d.peer.err, 0);
	printf("  close while connecting: %llu bytes then FIN\n",
	       (unsigned long long)d.peer.rd);
	close(d.peer.fd);
	close(d.fill[0]);
	close(d.fill[1]);
	close(d.lfd);
	teardown(&f);
}

/* 2. and 3. */
static void close_connecting_hung(int mode, int abort_it)
{
	struct fc f;
	struct sockaddr_in sin;
	ub_conn_opts o;
	int fill[2], lfd, err = 0;
	double t0;

	setup(&f);
	lfd = full_listener(&sin, fill);
	opts(&f, &o, mode);
	f.c = ub_conn_connect(f.loop, (struct sockaddr *)&sin, sizeof(sin), &o,
			      &err);
	CHECK_PTR(f.c, err);
	if (abort_it)
		queue(&f, th_rand(), 50000);
	th_run_for(f.loop, on_event, NULL, &f, 5, 50);
	CHECK(!f.connect_ev);
	t0 = th_now_ms();
	if (abort_it)
		CHECK_OK(ub_conn_abort(f.c));
	else
		CHECK_OK(ub_conn_close(f.c));
	th_run(f.loop, on_event, is_closed, &f, 5, 3000,
	       abort_it ? "CLOSED after aborting a connect"
			: "CLOSED after closing a connect with nothing queued");
	if (abort_it) {
		CHECK(!f.connect_ev);
		CHECK_EQ(f.closed_res, 0);
	} else if (f.connect_ev) {
		CHECK_EQ(f.closed_res, f.connect_res);
	}
	CHECK_EQ(f.errors, 0);
	printf("  %s while connecting: CLOSED res %d after %.0f ms\n",
	       abort_it ? "abort" : "close (nothing queued)", f.closed_res,
	       f.closed_at - t0);
	close(fill[0]);
	close(fill[1]);
	close(lfd);
	teardown(&f);
}

/* 4. */
static void close_connect_refused(int mode)
{
	struct fc f;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	ub_conn_opts o;
	int fd, err = 0;

	setup(&f);
	/* a bound port that does not listen refuses */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(bind(fd, (struct sockaddr *)&sin, len) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
	opts(&f, &o, mode);
	f.c = ub_conn_connect(f.loop, (struct sockaddr *)&sin, sizeof(sin), &o,
			      &err);
	CHECK_PTR(f.c, err);
	queue(&f, th_rand(), 20000);
	CHECK_OK(ub_conn_close(f.c));
	th_run(f.loop, on_event, is_closed, &f, 5, 5000, "CLOSED");
	CHECK_EQ(f.connect_ev, 1);
	CHECK_EQ(f.connect_res, -ECONNREFUSED);
	CHECK_EQ(f.closed_res, -ECONNREFUSED);
	close(fd);
	teardown(&f);
}

/* 5. and 6. */
struct acc {
	struct fc *f;
	int cli[NCLI];
	int ended[NCLI];
	int nended;
};

static void acc_event(const ub_event *ev, void *arg)
{
	on_event(ev, ((struct acc *)arg)->f);
}

static int clients_ended(void *arg)
{
	struct acc *a = arg;
	char buf[4096];

	for (int i = 0; i < NCLI; i++) {
		ssize_t r;

		if (a->ended[i])
			continue;
		r = read(a->cli[i], buf, sizeof(buf));
		if (r > 0)
			TH_FAILF("client %d got %zd bytes nobody sent", i, r);
		if (r == 0 || (r < 0 && errno == ECONNRESET)) {
			a->ended[i] = r == 0 ? 1 : 2;
			a->nended++;
		} else {
			CHECK(errno == EAGAIN);
		}
	}
	if (a->nended == NCLI && a->f->l_closed == a->f->l_close_called &&
	    a->f->conn_closed == a->f->accepts)
		return TH_DONE;
	return TH_IDLE;
}

static int some_accepted(void *arg)
{
	return ((struct acc *)arg)->f->accepts >= NCLI / 2 ? TH_DONE : TH_IDLE;
}

static void clients(struct acc *a, const struct sockaddr_in *sin, int send,
		    int from, int to)
{
	static uint8_t chunk[10000];

	for (int i = from; i < to; i++) {
		a->cli[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK(a->cli[i] >= 0);
		CHECK(connect(a->cli[i], (const struct sockaddr *)sin,
			      sizeof(*sin)) == 0);
		if (send) {
			th_pat_fill((uint64_t)i, 0, chunk, sizeof(chunk));
			CHECK_EQ(write(a->cli[i], chunk, sizeof(chunk)),
				 sizeof(chunk));
		}
		th_set_nonblock(a->cli[i], 1);
	}
}

static void listener_scene(int mode, int how)
{
	struct fc f;
	struct acc a;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	ub_conn_opts o;
	int err = 0, n1, n2;

	setup(&f);
	memset(&a, 0, sizeof(a));
	a.f = &f;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	opts(&f, &o, mode);
	f.l = ub_listen(f.loop, (struct sockaddr *)&sin, sizeof(sin), 64, 0, &o,
			&err);
	CHECK_PTR(f.l, err);
	CHECK(getsockname(ub_listener_fd(f.l), (struct sockaddr *)&sin,
			  &len) == 0);
	th_run_for(f.loop, on_event, NULL, &f, 1, 5); /* accept armed */
	if (how == 0) {
		/* close the listener as the clients arrive: half of them
		 * accepted, the rest in the backlog or on their way */
		clients(&a, &sin, 0, 0, NCLI / 2);
		th_run(f.loop, acc_event, some_accepted, &a, 5, 5000,
		       "the first half accepted");
		clients(&a, &sin, 0, NCLI / 2, NCLI);
		CHECK_OK(ub_listener_close(f.l));
		f.l_close_called = 1;
		CHECK_ERR(ub_listener_close(f.l), EPIPE);
	} else {
		f.close_in_accept = how;
		clients(&a, &sin, 1, 0, NCLI);
	}
	if (!th_run_try(f.loop, acc_event, clients_ended, &a, 5, 5000))
		TH_FAILF("clients' connections did not all end: %d of %d ended, "
			 "%d accepted, %d CLOSED, listener %s", a.nended, NCLI,
			 f.accepts, f.conn_closed,
			 f.l_closed ? "closed" : "open");
	if (how) {
		CHECK_EQ(f.accepts, NCLI);
		CHECK_EQ(f.data, 0);
		CHECK_OK(ub_listener_close(f.l));
		f.l_close_called = 1;
		th_run(f.loop, acc_event, clients_ended, &a, 5, 5000,
		       "the listener's CLOSED");
	}
	CHECK_EQ(f.accepts_after_close, 0);
	CHECK_EQ(f.conn_closed, f.accepts);
	CHECK_EQ(f.errors, 0);
	n1 = n2 = 0;
	for (int i = 0; i < NCLI; i++) {
		n1 += a.ended[i] == 1;
		n2 += a.ended[i] == 2;
		close(a.cli[i]);
	}
	if (how == 1)
		CHECK_EQ(n1, NCLI); /* graceful: a FIN each */
	printf("  %s: %d accepted, clients saw %d EOF, %d reset\n",
	       how == 0   ? "listener closed as clients arrive"
	       : how == 1 ? "close in ACCEPT"
			  : "abort in ACCEPT",
	       f.accepts, n1, n2);
	teardown(&f);
}

static void run(int mode, void *arg)
{
	(void)arg;
	th_watchdog(19);
	close_connecting_hung(mode, 1);
	close_connect_refused(mode);
	listener_scene(mode, 0);
	listener_scene(mode, 1);
	listener_scene(mode, 2);
	close_connecting_hung(mode, 0);
	close_connecting_drain(mode);
}

int main(void)
{
	th_init("fault_close");
	th_watchdog(19);
	th_for_each_mode(run, NULL);
	return th_finish();
}
