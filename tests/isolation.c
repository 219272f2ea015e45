/*
 * isolation.c - no client can starve the others: per-connection receive
 * budgets on a shared receive pool, with DEFAULT options (issue 11).
 *
 * The server is an echo loop in this process, as examples/echo.c: every DATA
 * buffer goes back out on the same connection with ub_conn_send_buf(), a
 * refused one waits in a FIFO and receiving pauses until WRITABLE.  It uses
 * the loop's default receive pool (1024 x 4 KiB) and default connection
 * options (budget 256 KiB), in each send mode.  The clients run in a child
 * process, forked before the loop exists.
 *
 *  - slow readers: K = 1, 8 and 64 clients each write as much as they can
 *    of 8 MiB (non-blocking, until no socket has taken a byte for a while)
 *    and never read; then an ordinary client ping-pongs 1 KiB messages,
 *    each checked byte for byte against a pattern at its stream offset and
 *    each answered within a deadline, while the slow writers keep pushing.
 *    The server checks, after every event batch and every DATA event, that
 *    each connection holds at most its budget of buffers
 *    (ub_conn_recv_held() against ub_conn_recv_budget() / buffer size) plus
 *    the documented overshoot: 2 buffers with UB_FEAT_RECV_LIMIT, none
 *    without; that every slow reader was throttled at some point
 *    (ub_conn_recv_throttled()); and that the pool always had free buffers
 *    (KERNEL) left.  It prints the most held and the fewest free buffers.
 *  - resume: one client writes 4 MiB without reading (and on, up to 64 MiB,
 *    while loopback's socket buffers still take it); once the server sees
 *    its connection throttled it tells the client (a pipe), which then
 *    stops writing, reads, and must receive its whole echo, every byte in
 *    order, then EOF after its own shutdown.  Once with the loop's
 *    features, once with UB_FEAT_RECV_LIMIT disabled (one-shot receives
 *    with a length cap).
 *  - slow readers K = 8 again with UB_FEAT_RECV_LIMIT disabled: never over.
 * At the end of each case every connection is CLOSED, the pool is idle, and
 * no descriptor is left open.  Under valgrind the deadlines are longer.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2 */
#endif
#include "helpers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define SLOW_TOTAL (8ull << 20) /* each slow reader writes up to this */
#define PING_SIZE 1024
#define MAX_CONNS 80
#define CHUNK 65536

/* Scaled at start (valgrind). */
static int n_pings = 200;
static int ping_ms = 3000;           /* per ping */
static int stall_ms = 500;           /* no slow writer progress: stalled */
static int slow_max_ms = 15000;      /* longest the slow writers fill */
static uint64_t resume_total = 4ull << 20; /* at least this much */
static uint64_t resume_cap = 64ull << 20;  /* at most this much */
static int case_ms = 90000;          /* a whole case, server side */

/* ---- the server: an echo loop with checks ------------------------------ */

struct econn {
	struct srv *s;
	ub_conn *c;
	unsigned idx;          /* accept order: 0.. */
	ub_buf *fifo[1024];    /* refused buffers (never more than the pool) */
	unsigned head, len;
	int paused, eof, closing, closed, closed_res, errors, first_err;
	int send_epipe;        /* sends refused with -EPIPE */
	unsigned max_held;
	int throttled_seen, over;
	uint64_t rx, tx;       /* at CLOSED */
};

struct srv {
	ub_loop *loop;
	ub_pool *pool;
	ub_listener *l;
	int l_closed;
	unsigned bufsz, allowed_over;
	int expect;            /* connections the clients make */
	int accepted, closed;
	struct econn conns[MAX_CONNS];
	unsigned max_held, min_free, over_count;
	pid_t child;
	int child_done, child_status;
	int ctl;               /* resume: tell the client to read; else -1 */
	int ctl_sent;
};

static unsigned budget_bufs(const struct srv *s, const ub_conn *c)
{
	size_t b = ub_conn_recv_budget(c);
	unsigned n = (unsigned)((b + s->bufsz - 1) / s->bufsz);

	return n ? n : 1;
}

static void sample_conn(struct srv *s, struct econn *e)
{
	unsigned held, limit;
	int thr;

	if (!e->c || e->closed)
		return;
	held = ub_conn_recv_held(e->c);
	limit = budget_bufs(s, e->c) + s->allowed_over;
	if (held > e->max_held)
		e->max_held = held;
	if (held > s->max_held)
		s->max_held = held;
	if (held > limit) {
		if (!e->over)
			fprintf(stderr, "conn %u holds %u buffers, budget %u "
				"+ %u allowed (queued %u, received %llu)\n",
				e->idx, held, budget_bufs(s, e->c),
				s->allowed_over, ub_conn_queued_bufs(e->c),
				(unsigned long long)
					ub_conn_bytes_received(e->c));
		e->over++;
		s->over_count++;
	}
	thr = ub_conn_recv_throttled(e->c);
	CHECK(thr == 0 || thr == 1);
	if (thr)
		e->throttled_seen = 1;
}

static void sample_all(struct srv *s)
{
	unsigned fr = ub_pool_count_state(s->pool, UB_BUF_KERNEL);

	if (fr < s->min_free)
		s->min_free = fr;
	for (int i = 0; i < s->accepted; i++)
		sample_conn(s, &s->conns[i]);
}

static void fifo_release_all(struct econn *e)
{
	while (e->len) {
		CHECK_OK(ub_buf_release(e->fifo[e->head]));
		e->head = (e->head + 1) % 1024;
		e->len--;
	}
}

static void echo_close(struct econn *e)
{
	if (e->closing)
		return;
	e->closing = 1;
	CHECK_OK(ub_conn_close(e->c));
}

/* A send refused with -EPIPE: the connection failed (its client reset it)
 * and its ERROR has not come yet.  Anything else is a bug. */
static void echo_gone(struct econn *e, int r)
{
	int a;

	if (r != -EPIPE)
		TH_FAILF("conn %u: send_buf: %d (%s)", e->idx, r,
			 strerror(-r));
	e->send_epipe++;
	fifo_release_all(e);
	if (!e->closing) {
		e->closing = 1;
		a = ub_conn_abort(e->c);
		if (a != -EPIPE)
			CHECK_OK(a);
	}
}

static void echo_data(struct econn *e, ub_buf *b)
{
	int r;

	if (e->closing) {
		CHECK_OK(ub_buf_release(b));
		return;
	}
	if (!e->len) {
		r = ub_conn_send_buf(e->c, b);
		if (r == 0)
			return;
		if (r != -EAGAIN) {
			CHECK_OK(ub_buf_release(b));
			echo_gone(e, r);
			return;
		}
	}
	CHECK_CMP(e->len, <, 1024);
	e->fifo[(e->head + e->len) % 1024] = b;
	e->len++;
	if (!e->paused) {
		CHECK_OK(ub_conn_pause_recv(e->c));
		e->paused = 1;
	}
}

static void echo_writable(struct econn *e)
{
	if (e->closing)
		return;
	while (e->len) {
		int r = ub_conn_send_buf(e->c, e->fifo[e->head]);

		if (r == -EAGAIN)
			return;
		if (r < 0) {
			echo_gone(e, r);
			return;
		}
		e->head = (e->head + 1) % 1024;
		e->len--;
	}
	if (e->eof) {
		echo_close(e);
	} else if (e->paused) {
		CHECK_OK(ub_conn_resume_recv(e->c));
		e->paused = 0;
	}
}

static void on_event(const ub_event *ev, void *arg)
{
	struct srv *s = arg;
	struct econn *e;

	if (!ev->conn) {
		CHECK(ev->listener == s->l);
		if (ev->type == UB_EV_CLOSED) {
			s->l_closed = 1;
			return;
		}
		TH_FAILF("listener event %s res %d (%s)",
			 ub_event_name(ev->type), ev->res, strerror(-ev->res));
	}
	if (ev->type == UB_EV_ACCEPT) {
		if (s->accepted >= s->expect)
			TH_FAILF("more connections than the %d expected",
				 s->expect);
		e = &s->conns[s->accepted];
		memset(e, 0, sizeof(*e));
		e->s = s;
		e->c = ev->conn;
		e->idx = (unsigned)s->accepted++;
		/* default options: the default pool and budget */
		CHECK_EQ(ub_conn_recv_budget(e->c), UB_DEF_RECV_BUDGET);
		ub_conn_set_udata(e->c, e);
		return;
	}
	/* not ev->udata: events queued before ACCEPT was handled carry the
	 * udata of then */
	e = ub_conn_udata(ev->conn);
	CHECK(e != NULL && e->c == ev->conn && !e->closed);
	switch (ev->type) {
	case UB_EV_DATA:
		CHECK(ub_buf_pool(ev->buf) == s->pool);
		CHECK_CMP(ev->res, >, 0);
		sample_conn(s, e);
		echo_data(e, ev->buf);
		return;
	case UB_EV_WRITABLE:
		echo_writable(e);
		return;
	case UB_EV_EOF:
		e->eof = 1;
		if (!e->len)
			echo_close(e);
		return;
	case UB_EV_ERROR:
		/* a slow reader's client goes away with data unread: a
		 * reset; CLOSED follows */
		if (!e->errors++)
			e->first_err = ev->res;
		e->closing = 1;
		fifo_release_all(e);
		return;
	case UB_EV_CLOSED:
		fifo_release_all(e);
		e->closed = 1;
		e->closed_res = ev->res;
		e->rx = ub_conn_bytes_received(e->c);
		e->tx = ub_conn_bytes_sent(e->c);
		CHECK_EQ(ub_conn_recv_held(e->c), 0);
		s->closed++;
		return;
	default:
		TH_FAILF("conn %u: unexpected event %s res %d", e->idx,
			 ub_event_name(ev->type), ev->res);
	}
}

static int srv_step(void *arg)
{
	struct srv *s = arg;

	sample_all(s);
	if (s->ctl >= 0 && !s->ctl_sent && s->accepted == 1 &&
	    s->conns[0].throttled_seen) {
		char c = 'r';

		CHECK_EQ(write(s->ctl, &c, 1), 1);
		s->ctl_sent = 1;
	}
	if (!s->child_done &&
	    waitpid(s->child, &s->child_status, WNOHANG) == s->child)
		s->child_done = 1;
	if (s->child_done && s->accepted == s->expect &&
	    s->closed == s->accepted)
		return TH_DONE;
	return TH_IDLE;
}

static int step_l_closed(void *arg)
{
	return ((struct srv *)arg)->l_closed ? TH_DONE : TH_IDLE;
}

/* ---- the clients, in the child process --------------------------------- */

static int connect_to(const struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	CHECK(connect(fd, (const struct sockaddr *)a, sizeof(*a)) == 0);
	return fd;
}

struct slow {
	int fd;
	uint64_t written;
};

/* One non-blocking pass over the slow writers; returns bytes written. */
static uint64_t slow_pump(struct slow *sl, int k)
{
	static uint8_t block[CHUNK];
	static int filled;
	uint64_t did = 0;

	if (!filled) {
		th_pat_fill(7, 0, block, sizeof(block));
		filled = 1;
	}
	for (int i = 0; i < k; i++) {
		while (sl[i].written < SLOW_TOTAL) {
			uint64_t n = SLOW_TOTAL - sl[i].written;
			ssize_t w;

			if (n > CHUNK)
				n = CHUNK;
			w = write(sl[i].fd, block, n);
			if (w < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				TH_FAILF("slow writer %d: write after %llu "
					 "bytes: %s", i,
					 (unsigned long long)sl[i].written,
					 strerror(errno));
			}
			sl[i].written += (uint64_t)w;
			did += (uint64_t)w;
		}
	}
	return did;
}

/* Wait up to ms for fd to be ready for ev; 1 if ready. */
static int wait_fd(int fd, short ev, int ms)
{
	struct pollfd p = { .fd = fd, .events = ev };
	int r;

	if (ms < 0)
		ms = 0;
	r = poll(&p, 1, ms);
	if (r < 0 && errno == EINTR)
		return 0;
	CHECK(r >= 0);
	return r > 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* K slow writers, then the pinger.  Exit status: 0 every ping answered. */
static void slow_clients(const struct sockaddr_in *addr, int k)
{
	struct slow *sl = calloc((size_t)k + 1, sizeof(*sl));
	double t0 = th_now_ms(), last = t0, *lat;
	uint64_t sum = 0, mn = UINT64_MAX, mx = 0, seed = th_seed ^ 0x5150;
	uint8_t out[PING_SIZE], in[PING_SIZE];
	int pfd, full = 0, one = 1;

	CHECK(sl != NULL);
	lat = calloc((size_t)n_pings, sizeof(*lat));
	CHECK(lat != NULL);
	for (int i = 0; i < k; i++) {
		sl[i].fd = connect_to(addr);
		th_set_nonblock(sl[i].fd, 1);
	}
	/* fill: until every socket is full (or all 8 MiB went) */
	for (;;) {
		struct pollfd p[MAX_CONNS];
		int n = 0;
		double now;

		if (slow_pump(sl, k))
			last = th_now_ms();
		now = th_now_ms();
		for (int i = 0; i < k; i++)
			if (sl[i].written < SLOW_TOTAL) {
				p[n].fd = sl[i].fd;
				p[n].events = POLLOUT;
				n++;
			}
		if (!n || now - last > stall_ms || now - t0 > slow_max_ms)
			break;
		CHECK(poll(p, (nfds_t)n, 20) >= 0 || errno == EINTR);
	}
	for (int i = 0; i < k; i++) {
		sum += sl[i].written;
		if (sl[i].written < mn)
			mn = sl[i].written;
		if (sl[i].written > mx)
			mx = sl[i].written;
		full += sl[i].written == SLOW_TOTAL;
	}
	printf("  K=%d: slow writers took %.0f ms to fill: %llu KiB in all, "
	       "%llu..%llu KiB each, %d wrote all 8 MiB\n", k,
	       th_now_ms() - t0, (unsigned long long)(sum >> 10),
	       (unsigned long long)(mn >> 10), (unsigned long long)(mx >> 10),
	       full);

	/* the ordinary client */
	pfd = connect_to(addr);
	CHECK(setsockopt(pfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ==
	      0);
	th_set_nonblock(pfd, 1);
	for (int i = 0; i < n_pings; i++) {
		uint64_t off = (uint64_t)i * PING_SIZE;
		double start = th_now_ms(), deadline = start + ping_ms;
		size_t w = 0, r = 0;

		th_pat_fill(seed, off, out, PING_SIZE);
		while (r < PING_SIZE) {
			ssize_t n;

			if (th_now_ms() > deadline) {
				fprintf(stderr, "FAIL: K=%d: ping %d not "
					"answered within %d ms (sent %zu, got "
					"%zu of %d bytes)\n", k, i, ping_ms,
					w, r, PING_SIZE);
				_exit(TH_FAIL);
			}
			if (w < PING_SIZE) {
				n = write(pfd, out + w, PING_SIZE - w);
				if (n < 0 && errno != EAGAIN && errno != EINTR)
					TH_FAILF("pinger: write: %s",
						 strerror(errno));
				if (n > 0)
					w += (size_t)n;
			}
			n = read(pfd, in + r, PING_SIZE - r);
			if (n == 0)
				TH_FAILF("pinger: EOF at ping %d", i);
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				TH_FAILF("pinger: read: %s", strerror(errno));
			if (n > 0) {
				th_pat_check(seed, off + r, in + r, (size_t)n,
					     "pinger echo");
				r += (size_t)n;
				continue;
			}
			wait_fd(pfd, w < PING_SIZE ? POLLIN | POLLOUT : POLLIN,
				(int)(deadline - th_now_ms()) + 1);
		}
		lat[i] = th_now_ms() - start;
		/* keep the pressure on between pings */
		slow_pump(sl, k);
	}
	qsort(lat, (size_t)n_pings, sizeof(*lat), cmp_double);
	printf("  K=%d: %d pings answered: p50 %.3f ms, p99 %.3f ms, max "
	       "%.3f ms\n", k, n_pings, lat[n_pings / 2],
	       lat[(n_pings * 99) / 100], lat[n_pings - 1]);
	/* the pinger read everything: a FIN; the slow readers: a reset */
	CHECK(close(pfd) == 0);
	for (int i = 0; i < k; i++)
		CHECK(close(sl[i].fd) == 0);
	free(sl);
	free(lat);
	fflush(stdout);
	_exit(TH_PASS);
}

/* One client: writes its stream without reading until the server says it
 * throttled us (at least resume_total; on, up to resume_cap, while the
 * socket buffers still take it: loopback's autotuned ones can hold all of
 * 4 MiB), then stops at max(resume_total, what it wrote), reads the whole
 * echo, in order, and EOF after its own shutdown. */
static void resume_client(const struct sockaddr_in *addr, int ctl)
{
	static uint8_t buf[CHUNK];
	uint64_t seed = th_seed ^ 0x7e5e, written = 0, rd = 0, at_signal = 0;
	uint64_t target = resume_cap;
	double t0 = th_now_ms(), deadline = t0 + case_ms - 5000;
	int fd = connect_to(addr), reading = 0, shut = 0, eof = 0;

	th_set_nonblock(fd, 1);
	th_set_nonblock(ctl, 1);
	while (!eof) {
		struct pollfd p[2];
		ssize_t n;
		int np = 0;

		if (th_now_ms() > deadline) {
			fprintf(stderr, "FAIL: resume client: %s after %.0f "
				"ms: wrote %llu, read %llu of %llu\n",
				reading ? "echo incomplete"
					: "server never reported throttled",
				th_now_ms() - t0, (unsigned long long)written,
				(unsigned long long)rd,
				(unsigned long long)target);
			_exit(TH_FAIL);
		}
		while (written < target) {
			uint64_t len = target - written;

			if (len > CHUNK)
				len = CHUNK;
			th_pat_fill(seed, written, buf, len);
			n = write(fd, buf, len);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			if (n < 0)
				TH_FAILF("resume client: write: %s",
					 strerror(errno));
			written += (uint64_t)n;
		}
		if (written == target && reading && !shut) {
			CHECK(shutdown(fd, SHUT_WR) == 0);
			shut = 1;
		}
		if (!reading) {
			char c;

			n = read(ctl, &c, 1);
			if (n == 1) {
				reading = 1;
				at_signal = written;
				target = written > resume_total ? written
								: resume_total;
				continue;
			}
			CHECK(n < 0 && errno == EAGAIN);
		} else {
			for (;;) {
				n = read(fd, buf, sizeof(buf));
				if (n < 0 &&
				    (errno == EAGAIN || errno == EINTR))
					break;
				if (n < 0)
					TH_FAILF("resume client: read: %s",
						 strerror(errno));
				if (n == 0) {
					eof = 1;
					break;
				}
				th_pat_check(seed, rd, buf, (size_t)n,
					     "resumed echo");
				rd += (uint64_t)n;
				if (rd > written)
					TH_FAILF("resume client: read %llu, "
						 "more than written %llu",
						 (unsigned long long)rd,
						 (unsigned long long)written);
			}
			if (eof)
				break;
		}
		p[np].fd = fd;
		p[np].events = (short)((written < target ? POLLOUT : 0) |
				       (reading ? POLLIN : 0));
		np++;
		if (!reading) {
			p[np].fd = ctl;
			p[np].events = POLLIN;
			np++;
		}
		CHECK(poll(p, (nfds_t)np, 50) >= 0 || errno == EINTR);
	}
	if (rd != target)
		TH_FAILF("resume client: EOF after %llu of %llu bytes",
			 (unsigned long long)rd, (unsigned long long)target);
	printf("  resume: throttled once the client had written %llu KiB; "
	       "then all %llu KiB echoed in order (%.0f ms)\n",
	       (unsigned long long)(at_signal >> 10),
	       (unsigned long long)(target >> 10), th_now_ms() - t0);
	CHECK(close(fd) == 0);
	CHECK(close(ctl) == 0);
	fflush(stdout);
	_exit(TH_PASS);
}

/* ---- one case ---------------------------------------------------------- */

/* k slow readers and a pinger (k > 0), or the resume client (k == 0). */
static void run_case(int mode, unsigned disable, int k)
{
	struct srv *s;
	struct sockaddr_in addr;
	ub_loop_opts lo;
	ub_conn_opts o;
	int lfd, ctl[2] = { -1, -1 }, err = 0, throttled = 0;
	unsigned feats;
	double t0 = th_now_ms();
	pid_t child;

	lfd = th_listen_socket(&addr, SOMAXCONN, 0);
	if (!k)
		CHECK(pipe2(ctl, O_CLOEXEC) == 0);
	fflush(stdout);
	fflush(stderr);
	/* the clients first, so that they hold no copy of the loop */
	child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		th_watchdog((unsigned)case_ms / 1000 + 30);
		close(lfd);
		if (k) {
			slow_clients(&addr, k);
		} else {
			close(ctl[1]);
			resume_client(&addr, ctl[0]);
		}
		_exit(TH_FAIL); /* not reached */
	}
	if (!k)
		close(ctl[0]);
	/* after the fork: the child holds no pointer to it (valgrind) */
	s = calloc(1, sizeof(*s));
	CHECK(s != NULL);
	s->child = child;
	s->ctl = ctl[1];
	s->expect = k ? k + 1 : 1;
	s->min_free = UINT32_MAX;

	memset(&lo, 0, sizeof(lo));
	lo.disable = disable;
	s->loop = th_loop_new(&lo);
	feats = ub_loop_features(s->loop);
	s->pool = ub_loop_recv_pool(s->loop, &err);
	CHECK_PTR(s->pool, err);
	s->bufsz = ub_pool_buf_size(s->pool);
	s->allowed_over = (feats & UB_FEAT_RECV_LIMIT) ? 2 : 0;
	ub_conn_opts_init(&o);
	o.mode = mode;
	s->l = ub_listener_adopt(s->loop, lfd, &o, &err);
	CHECK_PTR(s->l, err);

	th_run(s->loop, on_event, srv_step, s, 2, case_ms,
	       k ? "the slow readers and the pinger to finish"
		 : "the resumed echo to finish");

	CHECK_OK(ub_listener_close(s->l));
	th_run(s->loop, on_event, step_l_closed, s, 5, TH_TIMEOUT_MS,
	       "listener CLOSED");
	th_run_for(s->loop, on_event, NULL, s, 1, 20); /* frees them */
	th_check_pool_idle(s->pool, "receive");

	if (!WIFEXITED(s->child_status) ||
	    WEXITSTATUS(s->child_status) != TH_PASS)
		EXPECT_FAILF("%s: the client process failed (status 0x%x)",
			     k ? "slow readers" : "resume", s->child_status);
	if (s->over_count)
		EXPECT_FAILF("%u samples over budget + %u buffers (most held "
			     "%u, budget %u buffers)", s->over_count,
			     s->allowed_over, s->max_held,
			     (unsigned)(UB_DEF_RECV_BUDGET / s->bufsz));
	if (!s->min_free)
		EXPECT_FAILF("the receive pool ran dry (0 free buffers seen)");
	for (int i = 0; i < s->accepted; i++)
		throttled += s->conns[i].throttled_seen;
	if (k) {
		struct econn *p = &s->conns[k];

		/* every slow reader was stopped; the pinger closed cleanly */
		if (throttled < k)
			EXPECT_FAILF("only %d of %d slow readers were ever "
				     "throttled", throttled, k);
		CHECK_EQ(p->closed_res, 0);
		CHECK_EQ(p->errors, 0);
		CHECK_EQ(p->send_epipe, 0);
		CHECK_EQ(p->rx, (uint64_t)n_pings * PING_SIZE);
		CHECK_EQ(p->tx, p->rx);
		for (int i = 0; i < k; i++) {
			struct econn *e = &s->conns[i];

			if (e->errors && e->first_err != -ECONNRESET &&
			    e->first_err != -EPIPE)
				EXPECT_FAILF("slow reader %d: ERROR %d (%s)",
					     i, e->first_err,
					     strerror(-e->first_err));
			if (e->rx >= SLOW_TOTAL)
				printf("  note: slow reader %d: the server "
				       "received all its 8 MiB\n", i);
		}
	} else {
		struct econn *e = &s->conns[0];

		if (!s->ctl_sent)
			EXPECT_FAILF("resume: never throttled");
		CHECK_EQ(e->closed_res, 0);
		CHECK_EQ(e->errors, 0);
		CHECK_EQ(e->send_epipe, 0);
		CHECK_CMP(e->rx, >=, resume_total); /* the client knows */
		CHECK_EQ(e->tx, e->rx);
	}
	printf("  %s%s: %s: most held %u buffers (budget %u, allowed +%u), "
	       "fewest free %u of %u (reserve %u), %d of %d connections "
	       "throttled at some point, %.0f ms\n",
	       ub_mode_name(mode),
	       disable ? " recv_limit off" : "",
	       k ? "slow readers" : "resume", s->max_held,
	       (unsigned)(UB_DEF_RECV_BUDGET / s->bufsz), s->allowed_over,
	       s->min_free, ub_pool_count(s->pool), ub_pool_reserve(s->pool),
	       throttled, s->accepted, th_now_ms() - t0);
	CHECK_OK(ub_loop_free(s->loop));
	if (s->ctl >= 0)
		close(s->ctl);
	free(s);
}

static void one_mode(int mode, void *arg)
{
	static const int ks[] = { 1, 8, 64 };
	unsigned feats;
	ub_loop *probe;

	(void)arg;
	th_watchdog(600);
	probe = th_loop_new(NULL);
	feats = ub_loop_features(probe);
	if (!(feats & UB_FEAT_RECV_LIMIT))
		printf("  recv_limit unavailable: %s\n",
		       ub_loop_feature_reason(probe, UB_FEAT_RECV_LIMIT));
	CHECK_OK(ub_loop_free(probe));
	for (int i = 0; i < 3; i++)
		run_case(mode, 0, ks[i]);
	run_case(mode, 0, 0);
	run_case(mode, UB_FEAT_RECV_LIMIT, 0);
	run_case(mode, UB_FEAT_RECV_LIMIT, 8);
}

int main(void)
{
	th_init("isolation");
	if (th_under_valgrind()) {
		ping_ms = 30000;
		stall_ms = 3000;
		slow_max_ms = 60000;
		case_ms = 600000;
	}
	th_for_each_mode(one_mode, NULL);
	return th_finish();
}
