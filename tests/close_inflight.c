/*
 * close_inflight.c - closing things while the kernel still holds operations.
 *
 * A scene on one loop: a listener (multishot accept armed) with clients
 * connected through it (sends queued before the connect finished, servers
 * holding every DATA buffer so their receive pool runs dry), connections
 * stuck mid-connect (to a plain listener whose accept queue is full),
 * TCP pairs and socketpairs with large queued sends to peers that do not
 * read, and receive buffers held by the application.
 *
 * 1. ub_loop_free with all of that in flight, after aborting some objects
 *    and gracefully closing others: must not leak or touch freed memory
 *    (ASan, valgrind), and every fd must be closed.  Three rounds per mode.
 * 2. The same scene closed in order: every object gets exactly one CLOSED
 *    and no event after it; gracefully closed connections deliver every
 *    queued byte then EOF; aborted ones deliver a correct prefix; buffers
 *    held past their connection's end can still be released; then every
 *    pool is idle and the fd count is back to the start.
 *    A refused connect gives CONNECT (-ECONNREFUSED) then CLOSED with the
 *    same res, and returns the bytes queued before it to their pool.
 * 3. A graceful close must end (CLOSED) once the queue has drained and the
 *    sending side is shut, even if the peer never closes its side; data
 *    left unread is discarded (no DATA) and the peer sees a FIN.
 * 4. A Unix listener's socket path is unlinked when it closes.
 */
#include "helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define NCLI 8      /* clients through the listener */
#define NPEND 3     /* connections stuck mid-connect */
#define NQ 6        /* TCP pairs with queued sends */
#define NU 2        /* socketpairs with queued sends */
#define MAXOBJ 64
#define QBYTES (1u << 20)
#define MAXHELD 16

enum kind { K_LISTENER, K_CLIENT, K_SERVER, K_PENDING, K_QUEUED };

struct obj {
	enum kind kind;
	ub_conn *c;
	ub_listener *l;
	int closed, close_res, connected, errors, eof, graceful, aborted;
	uint64_t seed, queued;
	struct th_peer peer;
	int has_peer;
	ub_buf *held[MAXHELD];
	int nheld;
};

struct scene {
	int mode;
	ub_loop *loop;
	ub_pool *rpool, *spool, *srv_rpool;
	ub_listener *l;
	int full_fd, fill_fd[2];
	struct obj *obj[MAXOBJ];
	int nobj, accepted, connects;
	uint8_t chunk[65536];
};

static struct obj *new_obj(struct scene *s, enum kind k)
{
	struct obj *o = calloc(1, sizeof(*o));

	CHECK(o != NULL);
	CHECK_CMP(s->nobj, <, MAXOBJ);
	o->kind = k;
	o->seed = th_rand();
	s->obj[s->nobj++] = o;
	return o;
}

static void hold(struct obj *o, ub_buf *b)
{
	if (o->nheld < MAXHELD)
		o->held[o->nheld++] = b;
	else
		CHECK_OK(ub_buf_release(b));
}

static void on_event(const ub_event *ev, void *arg)
{
	struct scene *s = arg;
	struct obj *o;

	if (!ev->conn) {
		CHECK(ev->listener == s->l);
		o = ub_listener_udata(ev->listener);
		CHECK(o && o->kind == K_LISTENER);
		CHECK(!o->closed);
		if (ev->type == UB_EV_CLOSED) {
			o->closed++;
			return;
		}
		TH_FAILF("listener: unexpected %s res %d",
			 ub_event_name(ev->type), ev->res);
	}
	if (ev->type == UB_EV_ACCEPT) {
		CHECK(ev->listener == s->l);
		o = new_obj(s, K_SERVER);
		o->c = ev->conn;
		ub_conn_set_udata(ev->conn, o);
		s->accepted++;
		return;
	}
	o = ub_conn_udata(ev->conn);
	CHECK(o != NULL);
	CHECK(o->c == ev->conn);
	if (o->closed)
		TH_FAILF("%s after CLOSED (kind %d)", ub_event_name(ev->type),
			 o->kind);
	switch (ev->type) {
	case UB_EV_CONNECT:
		CHECK(o->kind == K_CLIENT || o->kind == K_PENDING);
		CHECK(!o->connected);
		if (ev->res == 0) {
			o->connected = 1;
			s->connects++;
		} else {
			o->errors++; /* CLOSED follows */
		}
		return;
	case UB_EV_DATA:
		/* a graceful close stops delivering data */
		CHECK(!o->graceful);
		CHECK(ub_buf_state(ev->buf) == UB_BUF_APP);
		CHECK_EQ(ev->res, ub_buf_len(ev->buf));
		hold(o, ev->buf);
		return;
	case UB_EV_EOF:
		o->eof++;
		return;
	case UB_EV_ERROR:
		CHECK_CMP(ev->res, <, 0);
		o->errors++;
		return;
	case UB_EV_WRITABLE:
	case UB_EV_SENT:
		return;
	case UB_EV_CLOSED:
		o->closed++;
		o->close_res = ev->res;
		return;
	}
	TH_FAILF("unexpected %s res %d", ub_event_name(ev->type), ev->res);
}

static void queue_bytes(struct scene *s, struct obj *o, uint64_t n)
{
	while (o->queued < n) {
		size_t len = n - o->queued;
		ssize_t r;

		if (len > sizeof(s->chunk))
			len = sizeof(s->chunk);
		th_pat_fill(o->seed, o->queued, s->chunk, len);
		r = ub_conn_send(o->c, s->chunk, len);
		CHECK_OK(r);
		o->queued += r;
	}
}

static int step_setup(void *arg)
{
	struct scene *s = arg;

	for (int i = 0; i < s->nobj; i++) {
		struct obj *o = s->obj[i];

		if (o->kind == K_QUEUED && !o->nheld)
			return TH_IDLE;
	}
	return s->accepted == NCLI && s->connects == NCLI ? TH_DONE : TH_IDLE;
}

static void build(struct scene *s, int mode)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct sockaddr_storage ss, fs;
	socklen_t sl = sizeof(ss), fl = sizeof(fs);
	ub_conn_opts co;
	struct obj *o;
	int err = 0;

	memset(s, 0, sizeof(*s));
	s->mode = mode;
	s->loop = th_loop_new(NULL);
	s->rpool = ub_pool_new(s->loop, 64, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(s->rpool, err);
	s->srv_rpool = ub_pool_new(s->loop, 8, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(s->srv_rpool, err);
	s->spool = ub_pool_new(s->loop, 256, 65536, 0, &err);
	CHECK_PTR(s->spool, err);

	/* the listener; its connections hold whatever they receive */
	ub_conn_opts_init(&co);
	co.mode = mode;
	co.recv_pool = s->srv_rpool;
	co.send_pool = s->spool;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->l = ub_listen(s->loop, (struct sockaddr *)&sin, sizeof(sin), 64, 0,
			 &co, &err);
	CHECK_PTR(s->l, err);
	o = new_obj(s, K_LISTENER);
	o->l = s->l;
	ub_listener_set_udata(s->l, o);
	CHECK(getsockname(ub_listener_fd(s->l), (struct sockaddr *)&ss,
			  &sl) == 0);

	/* a plain listener whose accept queue is full: connects hang */
	s->full_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(s->full_fd >= 0);
	CHECK(bind(s->full_fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
	CHECK(listen(s->full_fd, 0) == 0);
	CHECK(getsockname(s->full_fd, (struct sockaddr *)&fs, &fl) == 0);
	for (int i = 0; i < 2; i++) {
		s->fill_fd[i] = socket(AF_INET,
				       SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
				       0);
		CHECK(s->fill_fd[i] >= 0);
		int r = connect(s->fill_fd[i], (struct sockaddr *)&fs, fl);
		CHECK(r == 0 || errno == EINPROGRESS);
	}

	ub_conn_opts_init(&co);
	co.mode = mode;
	co.recv_pool = s->rpool;
	co.send_pool = s->spool;
	co.high_water = 4 * QBYTES;
	for (int i = 0; i < NCLI; i++) {
		o = new_obj(s, K_CLIENT);
		co.udata = o;
		o->c = ub_conn_connect(s->loop, (struct sockaddr *)&ss, sl, &co,
				       &err);
		CHECK_PTR(o->c, err);
		queue_bytes(s, o, 64 * 1024); /* before the connect is done */
	}
	for (int i = 0; i < NPEND; i++) {
		o = new_obj(s, K_PENDING);
		co.udata = o;
		o->c = ub_conn_connect(s->loop, (struct sockaddr *)&fs, fl, &co,
				       &err);
		CHECK_PTR(o->c, err);
		queue_bytes(s, o, 10000);
	}
	for (int i = 0; i < NQ + NU; i++) {
		int fds[2];

		if (i < NQ)
			th_tcp_pair(fds, 0);
		else
			th_socketpair(fds);
		th_small_bufs(fds[0]);
		th_small_bufs(fds[1]);
		o = new_obj(s, K_QUEUED);
		co.udata = o;
		o->c = ub_conn_adopt(s->loop, fds[0], &co, &err);
		CHECK_PTR(o->c, err);
		th_peer_init(&o->peer, fds[1], "queued peer");
		o->peer.seed = o->seed;
		o->has_peer = 1;
		queue_bytes(s, o, i < NQ ? QBYTES : QBYTES / 4);
		th_pat_fill(1, 0, s->chunk, 2048);
		CHECK_EQ(write(fds[1], s->chunk, 2048), 2048);
	}
	th_run(s->loop, on_event, step_setup, s, 10, TH_TIMEOUT_MS,
	       "the scene to be set up");
	th_run_for(s->loop, on_event, NULL, s, 5, 30);
	for (int i = 0; i < s->nobj; i++)
		if (s->obj[i]->kind == K_PENDING)
			CHECK(!s->obj[i]->connected);
}

static void free_objs(struct scene *s)
{
	for (int i = 0; i < s->nobj; i++) {
		if (s->obj[i]->has_peer && s->obj[i]->peer.fd >= 0)
			close(s->obj[i]->peer.fd);
		free(s->obj[i]);
	}
	s->nobj = 0;
	close(s->full_fd);
	close(s->fill_fd[0]);
	close(s->fill_fd[1]);
}

/* 1: free the loop with everything in flight */
static void free_inflight(int mode, int round)
{
	struct scene *s = calloc(1, sizeof(*s));
	int aborted = 0, closed = 0;

	CHECK(s != NULL);
	build(s, mode);
	for (int i = 0; i < s->nobj; i++) {
		struct obj *o = s->obj[i];

		if (o->kind == K_LISTENER) {
			if (round == 1)
				CHECK_OK(ub_listener_close(o->l));
			continue;
		}
		switch (th_rand() % 3) {
		case 0:
			CHECK_OK(ub_conn_abort(o->c));
			CHECK_ERR(ub_conn_abort(o->c), EPIPE);
			aborted++;
			break;
		case 1:
			CHECK_OK(ub_conn_close(o->c));
			CHECK_ERR(ub_conn_close(o->c), EPIPE);
			closed++;
			break;
		}
	}
	if (round == 2) /* let some of it happen first */
		th_run_for(s->loop, on_event, NULL, s, 1, 5);
	printf("  round %d: free with %d aborted, %d closing, %d untouched\n",
	       round, aborted, closed, s->nobj - 1 - aborted - closed);
	CHECK_OK(ub_loop_free(s->loop));
	free_objs(s);
	free(s);
	th_check_fds("after ub_loop_free with operations in flight");
}

static int step_all_closed(void *arg)
{
	struct scene *s = arg;
	int busy = 0, open = 0;

	for (int i = 0; i < s->nobj; i++) {
		struct obj *o = s->obj[i];

		if (o->has_peer && o->peer.fd >= 0) {
			busy |= th_peer_read(&o->peer) > 0;
			if (o->peer.eof || o->peer.err) {
				CHECK(close(o->peer.fd) == 0);
				o->peer.fd = -1;
			}
		}
		if (!o->closed || (o->has_peer && o->peer.fd >= 0))
			open++;
	}
	if (!open)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

/* 2: close everything in order and account for it */
static void orderly(int mode)
{
	struct scene *s = calloc(1, sizeof(*s));
	int n = 0;

	CHECK(s != NULL);
	build(s, mode);
	for (int i = 0; i < s->nobj; i++) {
		struct obj *o = s->obj[i];

		switch (o->kind) {
		case K_LISTENER:
			CHECK_OK(ub_listener_close(o->l));
			break;
		case K_PENDING:
		case K_SERVER:
			CHECK_OK(ub_conn_abort(o->c));
			o->aborted = 1;
			break;
		case K_CLIENT:
		case K_QUEUED:
			if (n++ % 2) {
				CHECK_OK(ub_conn_abort(o->c));
				o->aborted = 1;
			} else {
				CHECK_OK(ub_conn_close(o->c));
				o->graceful = 1;
			}
			CHECK_EQ(ub_conn_is_closing(o->c), 1);
			CHECK_ERR(ub_conn_send(o->c, "x", 1), EPIPE);
			break;
		}
	}
	th_run(s->loop, on_event, step_all_closed, s, 5, TH_TIMEOUT_MS,
	       "every object CLOSED and every peer done");
	th_run_for(s->loop, on_event, NULL, s, 5, 30);
	for (int i = 0; i < s->nobj; i++) {
		struct obj *o = s->obj[i];

		CHECK_EQ(o->closed, 1);
		if (o->kind == K_QUEUED) {
			CHECK_CMP(o->peer.rd, <=, o->queued);
			if (o->graceful) {
				CHECK_EQ(o->peer.rd, o->queued);
				CHECK_EQ(o->peer.err, 0);
				CHECK_EQ(o->close_res, 0);
				CHECK_EQ(o->errors, 0);
			}
		}
		/* buffers held past the end of their connection */
		for (int k = 0; k < o->nheld; k++) {
			CHECK_EQ(ub_buf_state(o->held[k]), UB_BUF_APP);
			CHECK_OK(ub_buf_release(o->held[k]));
		}
		o->nheld = 0;
	}
	th_check_pool_idle(s->rpool, "receive");
	th_check_pool_idle(s->srv_rpool, "server receive");
	th_check_pool_idle(s->spool, "send");
	CHECK_OK(ub_loop_free(s->loop));
	free_objs(s);
	free(s);
	th_check_fds("after closing everything in order");
}

struct open_peer {
	ub_conn *c;
	struct th_peer peer;
	int closed, close_res;
};

static void op_event(const ub_event *ev, void *arg)
{
	struct open_peer *p = arg;

	CHECK(ev->conn == p->c);
	if (ev->type == UB_EV_CLOSED) {
		p->closed = 1;
		p->close_res = ev->res;
	} else if (ev->type != UB_EV_WRITABLE) {
		TH_FAILF("unexpected %s res %d", ub_event_name(ev->type),
			 ev->res);
	}
}

static int op_step(void *arg)
{
	struct open_peer *p = arg;

	/* read everything, see EOF, but never close */
	th_peer_read(&p->peer);
	return p->closed && (p->peer.eof || p->peer.err) ? TH_DONE : TH_IDLE;
}

/* 3: graceful close ends without the peer's cooperation */
static void close_peer_open(int mode)
{
	ub_loop *loop = th_loop_new(NULL);
	struct open_peer p;
	ub_conn_opts co;
	int fds[2], err = 0;
	uint8_t buf[4096];

	memset(&p, 0, sizeof(p));
	th_tcp_pair(fds, 0);
	ub_conn_opts_init(&co);
	co.mode = mode;
	p.c = ub_conn_adopt(loop, fds[0], &co, &err); /* receiving */
	CHECK_PTR(p.c, err);
	th_peer_init(&p.peer, fds[1], "open peer");
	p.peer.seed = 99;
	th_pat_fill(99, 0, buf, sizeof(buf));
	CHECK_EQ(ub_conn_send(p.c, buf, sizeof(buf)), sizeof(buf));
	CHECK_OK(ub_conn_close(p.c));
	if (!th_run_try(loop, op_event, op_step, &p, 10, 5000)) {
		EXPECT_FAILF("no CLOSED 5 s after ub_conn_close (queue drained: "
			     "%zu queued, peer read %llu of %zu bytes and %s "
			     "EOF) while the peer keeps its side open",
			     ub_conn_queued_bytes(p.c),
			     (unsigned long long)p.peer.rd, sizeof(buf),
			     p.peer.eof ? "saw" : "did not see");
		/* clean up so the rest can still be checked */
		CHECK_OK(ub_conn_abort(p.c));
		th_run(loop, op_event, op_step, &p, 10, TH_TIMEOUT_MS,
		       "CLOSED after abort");
	} else {
		CHECK_EQ(p.close_res, 0);
	}
	CHECK_EQ(p.peer.rd, sizeof(buf));
	CHECK_OK(ub_loop_free(loop));
	close(fds[1]);
	th_check_fds("after the graceful close");
}

struct refused {
	ub_conn *c;
	ub_pool *spool;
	int connect, closed, connect_res, close_res;
};

static void rf_event(const ub_event *ev, void *arg)
{
	struct refused *r = arg;
	int err = 0;
	ub_buf *b;

	CHECK(ev->conn == r->c);
	CHECK(!r->closed);
	switch (ev->type) {
	case UB_EV_CONNECT:
		CHECK(!r->connect);
		r->connect = 1;
		r->connect_res = ev->res;
		/* a failed connect refuses sends */
		b = ub_pool_acquire(r->spool, &err);
		CHECK_PTR(b, err);
		CHECK_OK(ub_buf_set_len(b, 1));
		EXPECT_ERR(ub_conn_send_buf(r->c, b), ENOTCONN);
		CHECK_EQ(ub_buf_state(b), UB_BUF_APP);
		CHECK_OK(ub_buf_release(b));
		return;
	case UB_EV_CLOSED:
		CHECK(r->connect);
		r->closed = 1;
		r->close_res = ev->res;
		return;
	}
	TH_FAILF("unexpected %s res %d", ub_event_name(ev->type), ev->res);
}

static int rf_step(void *arg)
{
	return ((struct refused *)arg)->closed ? TH_DONE : TH_IDLE;
}

/* 2b: a connect that fails reports it once and closes cleanly */
static void connect_refused(int mode)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	ub_loop *loop = th_loop_new(NULL);
	struct refused r;
	ub_conn_opts co;
	int fd, err = 0;

	memset(&r, 0, sizeof(r));
	/* a port nobody listens on */
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0);
	CHECK(bind(fd, (struct sockaddr *)&sin, sl) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&sin, &sl) == 0);
	r.spool = ub_pool_new(loop, 4, 4096, 0, &err);
	CHECK_PTR(r.spool, err);
	ub_conn_opts_init(&co);
	co.mode = mode;
	co.send_pool = r.spool;
	r.c = ub_conn_connect(loop, (struct sockaddr *)&sin, sl, &co, &err);
	CHECK_PTR(r.c, err);
	CHECK_EQ(ub_conn_send(r.c, "hello", 5), 5); /* queued meanwhile */
	th_run(loop, rf_event, rf_step, &r, 10, TH_TIMEOUT_MS,
	       "CONNECT failure and CLOSED");
	CHECK_ERR(r.connect_res, ECONNREFUSED);
	CHECK_ERR(r.close_res, ECONNREFUSED);
	th_run_for(loop, rf_event, NULL, &r, 1, 20);
	th_check_pool_idle(r.spool, "send");
	CHECK_OK(ub_pool_free(r.spool));
	CHECK_OK(ub_loop_free(loop));
	close(fd);
	th_check_fds("after a refused connect");
}

struct discard {
	ub_conn *c;
	struct th_peer peer;
	int closed, close_res;
	long data;
};

static void dc_event(const ub_event *ev, void *arg)
{
	struct discard *d = arg;

	CHECK(ev->conn == d->c);
	CHECK(!d->closed);
	switch (ev->type) {
	case UB_EV_CLOSED:
		d->closed = 1;
		d->close_res = ev->res;
		return;
	case UB_EV_DATA:
		d->data++; /* after ub_conn_close: must not happen */
		CHECK_OK(ub_buf_release(ev->buf));
		return;
	case UB_EV_EOF:
	case UB_EV_WRITABLE:
		return;
	}
	TH_FAILF("unexpected %s res %d", ub_event_name(ev->type), ev->res);
}

static int dc_step(void *arg)
{
	struct discard *d = arg;
	int busy = th_peer_write(&d->peer) > 0;

	busy |= th_peer_read(&d->peer) > 0;
	if (d->closed && d->peer.written == d->peer.wtotal &&
	    (d->peer.eof || d->peer.err))
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

/* 3b: data unread when a graceful close comes is discarded, and the close
 * still ends with a FIN (the peer reads EOF, not a reset) */
static void close_discards(int mode)
{
	ub_loop *loop = th_loop_new(NULL);
	struct discard d;
	ub_conn_opts co;
	int fds[2], err = 0;

	memset(&d, 0, sizeof(d));
	th_tcp_pair(fds, 0);
	th_small_bufs(fds[0]);
	th_small_bufs(fds[1]);
	ub_conn_opts_init(&co);
	co.mode = mode;
	d.c = ub_conn_adopt(loop, fds[0], &co, &err);
	CHECK_PTR(d.c, err);
	th_peer_init(&d.peer, fds[1], "discarding peer");
	/* unread data waiting in the socket when the close comes */
	CHECK_OK(ub_conn_pause_recv(d.c));
	th_run_for(loop, dc_event, NULL, &d, 5, 20);
	d.peer.wseed = 5;
	d.peer.wtotal = 16 * 1024;
	d.peer.wshut = 1;
	CHECK_EQ(th_peer_write(&d.peer), d.peer.wtotal);
	th_run_for(loop, dc_event, NULL, &d, 5, 50);
	CHECK_EQ(d.data, 0);
	CHECK_OK(ub_conn_close(d.c));
	th_run(loop, dc_event, dc_step, &d, 5, TH_TIMEOUT_MS,
	       "CLOSED with 16 KiB unread in the socket");
	CHECK_EQ(d.data, 0);
	CHECK_EQ(d.close_res, 0);
	CHECK_EQ(d.peer.err, 0);
	CHECK(d.peer.eof);
	CHECK_EQ(d.peer.rd, 0);
	CHECK_OK(ub_loop_free(loop));
	close(fds[1]);
	th_check_fds("after the discarding close");
}

struct ulisten {
	ub_listener *l;
	int accepted, closed;
};

static void ul_event(const ub_event *ev, void *arg)
{
	struct ulisten *u = arg;

	if (ev->type == UB_EV_ACCEPT) {
		CHECK(ev->listener == u->l);
		u->accepted++;
		CHECK_OK(ub_conn_abort(ev->conn));
	} else if (ev->type == UB_EV_CLOSED && !ev->conn) {
		CHECK(ev->listener == u->l);
		u->closed++;
	} else if (ev->type != UB_EV_CLOSED) {
		TH_FAILF("unexpected %s res %d", ub_event_name(ev->type),
			 ev->res);
	}
}

static int ul_accepted(void *arg)
{
	return ((struct ulisten *)arg)->accepted ? TH_DONE : TH_IDLE;
}

static int ul_closed(void *arg)
{
	return ((struct ulisten *)arg)->closed ? TH_DONE : TH_IDLE;
}

/* 4: a Unix listener accepts, and its path goes with it */
static void unix_listener(void)
{
	ub_loop *loop = th_loop_new(NULL);
	struct sockaddr_storage ss;
	struct ulisten u;
	char path[64], spec[80];
	socklen_t sl;
	int fd, err = 0;

	memset(&u, 0, sizeof(u));
	snprintf(path, sizeof(path), "/tmp/ub-test-%d.sock", (int)getpid());
	unlink(path);
	snprintf(spec, sizeof(spec), "unix:%s", path);
	CHECK_OK(ub_addr_parse(spec, &ss, &sl));
	u.l = ub_listen(loop, (struct sockaddr *)&ss, sl, 8, 0, NULL, &err);
	CHECK_PTR(u.l, err);
	CHECK(access(path, F_OK) == 0);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0);
	CHECK(connect(fd, (struct sockaddr *)&ss, sl) == 0);
	th_run(loop, ul_event, ul_accepted, &u, 10, TH_TIMEOUT_MS, "ACCEPT");
	CHECK_OK(ub_listener_close(u.l));
	th_run(loop, ul_event, ul_closed, &u, 10, TH_TIMEOUT_MS,
	       "listener CLOSED");
	th_run_for(loop, ul_event, NULL, &u, 1, 20);
	CHECK_EQ(u.accepted, 1);
	CHECK_EQ(u.closed, 1);
	if (access(path, F_OK) == 0) {
		unlink(path);
		EXPECT_FAILF("%s still exists after ub_listener_close", path);
	}
	CHECK_OK(ub_loop_free(loop));
	close(fd);
	th_check_fds("after the unix listener");
}

static void one_mode(int mode, void *arg)
{
	(void)arg;
	for (int round = 0; round < 3; round++)
		free_inflight(mode, round);
	printf("  closing in order\n");
	orderly(mode);
	printf("  connect refused\n");
	connect_refused(mode);
	printf("  graceful close with the peer's side left open\n");
	close_peer_open(mode);
	printf("  graceful close discards unread data\n");
	close_discards(mode);
}

int main(void)
{
	th_init("close_inflight");
	th_for_each_mode(one_mode, NULL);
	printf("unix listener: path unlinked on close\n");
	unix_listener();
	return th_finish();
}
