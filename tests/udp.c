/*
 * udp.c - datagram endpoints (ub_dgram): echo, truncation, pool
 * exhaustion, IPv6 and Unix datagrams, bad input, close with sends in
 * flight, the receive budget.
 *
 * echo: NCLIENT plain sockets each send datagrams of random size (1 B ..
 * 65507 B) with a window of WINDOW outstanding; the endpoint echoes each
 * received buffer to its source with ub_dgram_send_buf (zero copy).  Every
 * echo must match one of its client's outstanding datagrams byte for byte
 * (the content is a pattern seeded by client and sequence number); every
 * datagram must come back (loopback with large socket buffers and a bounded
 * window loses none).  Over 127.0.0.1, ::1 and an abstract Unix name.
 * Every loop is bounded in count and time (th_run).
 */
#include "helpers.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define NCLIENT 16
#define WINDOW 3
#define MAXDG 65507
#define BIGBUF (65536 + UB_DGRAM_HDR)

static uint64_t seed_of(unsigned client, unsigned seq)
{
	return th_seed ^ ((uint64_t)client << 32) ^ seq;
}

/* Big socket buffers (FORCE where we may) so loopback drops nothing. */
static void big_bufs(int fd)
{
	int n = 8 << 20;

	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &n, sizeof(n)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &n, sizeof(n));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &n, sizeof(n)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &n, sizeof(n));
}

static socklen_t make_addr(int family, struct sockaddr_storage *ss,
			   const char *unix_name)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *in = (void *)ss;

		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		return sizeof(*in);
	}
	if (family == AF_INET6) {
		struct sockaddr_in6 *in6 = (void *)ss;

		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_loopback;
		return sizeof(*in6);
	}
	{
		struct sockaddr_un *un = (void *)ss;
		size_t n = strlen(unix_name);

		un->sun_family = AF_UNIX;
		/* abstract: a NUL, then the name */
		memcpy(un->sun_path + 1, unix_name, n);
		return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
				   n);
	}
}

/* A plain client socket bound to an address of family (Unix: autobound). */
static int client_socket(int family)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	CHECK(fd >= 0);
	if (family == AF_UNIX) {
		memset(&ss, 0, sizeof(ss));
		ss.ss_family = AF_UNIX;
		len = sizeof(sa_family_t); /* autobind: an abstract name */
	} else {
		len = make_addr(family, &ss, NULL);
	}
	CHECK(bind(fd, (struct sockaddr *)&ss, len) == 0);
	big_bufs(fd);
	return fd;
}

static void local_addr(int fd, struct sockaddr_storage *ss, socklen_t *len)
{
	*len = sizeof(*ss);
	CHECK(getsockname(fd, (struct sockaddr *)ss, len) == 0);
}

/* ---- echo ---- */

struct client {
	int fd;
	unsigned sent, got;
	unsigned seq[WINDOW];
	size_t size[WINDOW];
	unsigned nout;
};

struct echo {
	ub_loop *loop;
	ub_dgram *ep;
	ub_pool *pool;
	struct sockaddr_storage srv;
	socklen_t srvlen;
	struct client cl[NCLIENT];
	unsigned per_client;
	unsigned echoed, done;
	unsigned char *scratch;
	int hold;            /* exhaustion test: hold buffers instead */
	ub_buf *held[64];
	unsigned nheld;
};

static void echo_buf(struct echo *t, ub_buf *b)
{
	socklen_t alen;
	const struct sockaddr *a = ub_buf_addr(b, &alen);

	CHECK(a != NULL);
	CHECK_OK(ub_dgram_send_buf(t->ep, b, a, alen));
	t->echoed++;
}

static void echo_event(const ub_event *ev, void *arg)
{
	struct echo *t = arg;

	CHECK(ev->dgram == t->ep);
	CHECK(ev->conn == NULL && ev->listener == NULL);
	switch (ev->type) {
	case UB_EV_DATA:
		CHECK_EQ(ub_buf_state(ev->buf), UB_BUF_APP);
		CHECK_EQ(ub_buf_truncated(ev->buf), 0);
		CHECK_EQ(ev->res, ub_buf_len(ev->buf));
		if (t->hold && t->nheld < 64) {
			t->held[t->nheld++] = ev->buf;
			return;
		}
		echo_buf(t, ev->buf);
		return;
	case UB_EV_WRITABLE:
		return;
	default:
		TH_FAILF("unexpected event %s res %d", ub_event_name(ev->type),
			 ev->res);
	}
}

static int echo_step(void *arg)
{
	struct echo *t = arg;
	int busy = 0;
	unsigned i, k;

	for (i = 0; i < NCLIENT; i++) {
		struct client *c = &t->cl[i];

		/* read what came back: it must be one outstanding datagram */
		for (;;) {
			ssize_t n = recv(c->fd, t->scratch, MAXDG + 1, 0);

			if (n < 0) {
				CHECK(errno == EAGAIN);
				break;
			}
			busy = 1;
			for (k = 0; k < c->nout; k++)
				if (c->size[k] == (size_t)n &&
				    th_pat_diff(seed_of(i, c->seq[k]), 0,
						t->scratch, (size_t)n) < 0)
					break;
			if (k == c->nout)
				TH_FAILF("client %u: an echo of %zd bytes "
					 "matches none of its %u outstanding",
					 i, n, c->nout);
			c->seq[k] = c->seq[c->nout - 1];
			c->size[k] = c->size[c->nout - 1];
			c->nout--;
			c->got++;
			if (c->got == t->per_client)
				t->done++;
		}
		/* send while the window has room */
		while (c->nout < WINDOW && c->sent < t->per_client) {
			size_t len = c->sent % 7 == 0
					     ? (c->sent % 2 ? MAXDG : 1)
					     : th_rand_range(1, MAXDG);

			ssize_t r;

			th_pat_fill(seed_of(i, c->sent), 0, t->scratch, len);
			r = sendto(c->fd, t->scratch, len, 0,
				   (struct sockaddr *)&t->srv, t->srvlen);
			/* A Unix datagram socket queues at most
			 * net.unix.max_dgram_qlen (10): try again later,
			 * the same datagram (the size is redrawn, fine). */
			if (r < 0 && errno == EAGAIN)
				break;
			CHECK_EQ(r, len);
			c->seq[c->nout] = c->sent;
			c->size[c->nout] = len;
			c->nout++;
			c->sent++;
			busy = 1;
		}
	}
	if (t->done == NCLIENT)
		return TH_DONE;
	return busy ? TH_BUSY : TH_IDLE;
}

static ub_dgram *open_ep(ub_loop *loop, int family, const char *uname,
			 ub_pool *pool, ub_dgram_opts *o,
			 struct sockaddr_storage *bound, socklen_t *blen)
{
	struct sockaddr_storage ss;
	socklen_t len = make_addr(family, &ss, uname);
	ub_dgram_opts def;
	ub_dgram *ep;
	int err;

	if (!o) {
		ub_dgram_opts_init(&def);
		o = &def;
	}
	o->recv_pool = pool;
	ep = ub_dgram_open(loop, (struct sockaddr *)&ss, len, o, &err);
	CHECK_PTR(ep, err);
	big_bufs(ub_dgram_fd(ep));
	local_addr(ub_dgram_fd(ep), bound, blen);
	return ep;
}

static void close_ep(ub_loop *loop, ub_dgram *ep)
{
	ub_event ev[16];
	int64_t deadline = (int64_t)th_now_ms() + TH_TIMEOUT_MS;
	int closed = 0, n, i;

	CHECK_OK(ub_dgram_close(ep));
	CHECK_ERR(ub_dgram_close(ep), EPIPE);
	while (!closed) {
		CHECK((int64_t)th_now_ms() < deadline);
		n = ub_loop_wait(loop, ev, 16, 1, 100);
		CHECK_OK(n);
		for (i = 0; i < n; i++) {
			if (ev[i].type == UB_EV_DATA)
				ub_buf_release(ev[i].buf);
			if (ev[i].type == UB_EV_CLOSED && ev[i].dgram == ep) {
				CHECK_EQ(ev[i].res, 0);
				closed = 1;
			}
		}
	}
}

static void test_echo(int family, const char *what)
{
	struct echo t;
	ub_dgram_opts o;
	unsigned i;
	int err;

	memset(&t, 0, sizeof(t));
	t.loop = th_loop_new(NULL);
	t.pool = ub_pool_new(t.loop, 64, BIGBUF, UB_POOL_RECV, &err);
	CHECK_PTR(t.pool, err);
	ub_dgram_opts_init(&o);
	o.recv_budget = (size_t)64 * BIGBUF;
	o.high_water = 64u << 20;
	o.low_water = 1u << 20;
	if (family == AF_UNIX) {
		char name[64];

		snprintf(name, sizeof(name), "ub-udp-test-%d", (int)getpid());
		t.ep = open_ep(t.loop, family, name, t.pool, &o, &t.srv,
			       &t.srvlen);
	} else {
		t.ep = open_ep(t.loop, family, NULL, t.pool, &o, &t.srv,
			       &t.srvlen);
	}
	t.scratch = malloc(MAXDG + 1);
	CHECK(t.scratch);
	t.per_client = th_under_valgrind() ? 6 : 40;
	for (i = 0; i < NCLIENT; i++)
		t.cl[i].fd = client_socket(family);
	th_run(t.loop, echo_event, echo_step, &t, 2, TH_TIMEOUT_MS, what);
	CHECK_EQ(t.echoed, NCLIENT * t.per_client);
	CHECK_EQ(ub_dgram_received(t.ep), NCLIENT * t.per_client);
	/* the last sends complete before their echoes could arrive; the
	 * counters settle by the next wait at the latest */
	close_ep(t.loop, t.ep);
	th_check_pool_idle(t.pool, "recv pool after echo");
	for (i = 0; i < NCLIENT; i++)
		close(t.cl[i].fd);
	free(t.scratch);
	CHECK_OK(ub_loop_free(t.loop));
	printf("  %s: %u datagrams echoed byte-exact\n", what,
	       NCLIENT * t.per_client);
}

/* ---- truncation ---- */

struct one {
	ub_dgram *ep;
	ub_buf *buf;
	int res, errors, err;
};

static void one_event(const ub_event *ev, void *arg)
{
	struct one *o = arg;

	CHECK(ev->dgram == o->ep);
	if (ev->type == UB_EV_DATA) {
		CHECK(o->buf == NULL);
		o->buf = ev->buf;
		o->res = ev->res;
	} else if (ev->type == UB_EV_ERROR) {
		o->errors++;
		o->err = ev->res;
	} else if (ev->type != UB_EV_WRITABLE) {
		TH_FAILF("unexpected event %s", ub_event_name(ev->type));
	}
}

static int one_step(void *arg)
{
	struct one *o = arg;

	return o->buf ? TH_DONE : TH_IDLE;
}

static void test_truncation(void)
{
	ub_loop *loop = th_loop_new(NULL);
	struct sockaddr_storage srv;
	socklen_t slen;
	struct one o;
	unsigned char msg[1000], name[64];
	int err, fd;
	ub_pool *pool = ub_pool_new(loop, 4, 256 + UB_DGRAM_HDR, UB_POOL_RECV,
				    &err);
	ub_dgram *ep;

	CHECK_PTR(pool, err);
	ep = open_ep(loop, AF_INET, NULL, pool, NULL, &srv, &slen);
	fd = client_socket(AF_INET);
	th_pat_fill(1, 0, msg, sizeof(msg));
	/* too large: cut to the buffer, and said so */
	memset(&o, 0, sizeof(o));
	o.ep = ep;
	CHECK(sendto(fd, msg, sizeof(msg), 0, (void *)&srv, slen) == 1000);
	th_run(loop, one_event, one_step, &o, 5, TH_TIMEOUT_MS, "truncated");
	CHECK_EQ(o.res, 1000);
	CHECK_EQ(ub_buf_len(o.buf), 256);
	CHECK_EQ(ub_buf_capacity(o.buf), 256);
	CHECK_EQ(ub_buf_truncated(o.buf), 1);
	th_pat_check(1, 0, ub_buf_data(o.buf), 256, "truncated payload");
	/* the source address, formatted */
	CHECK_CMP(ub_buf_addr_format(o.buf, (char *)name, sizeof(name)), >, 0);
	CHECK(strncmp((char *)name, "127.0.0.1:", 10) == 0);
	CHECK_OK(ub_buf_release(o.buf));
	CHECK_EQ(ub_buf_truncated(o.buf), 0); /* back in the pool */
	CHECK(ub_buf_addr(o.buf, NULL) == NULL);
	/* exactly the capacity: not truncated */
	memset(&o, 0, sizeof(o));
	o.ep = ep;
	CHECK(sendto(fd, msg, 256, 0, (void *)&srv, slen) == 256);
	th_run(loop, one_event, one_step, &o, 5, TH_TIMEOUT_MS, "fits");
	CHECK_EQ(o.res, 256);
	CHECK_EQ(ub_buf_truncated(o.buf), 0);
	th_pat_check(1, 0, ub_buf_data(o.buf), 256, "payload");
	CHECK_OK(ub_buf_release(o.buf));
	/* an empty datagram is a datagram */
	memset(&o, 0, sizeof(o));
	o.ep = ep;
	CHECK(sendto(fd, msg, 0, 0, (void *)&srv, slen) == 0);
	th_run(loop, one_event, one_step, &o, 5, TH_TIMEOUT_MS, "empty");
	CHECK_EQ(o.res, 0);
	CHECK_EQ(ub_buf_len(o.buf), 0);
	CHECK_OK(ub_buf_release(o.buf));
	close_ep(loop, ep);
	close(fd);
	th_check_pool_idle(pool, "recv pool after truncation");
	CHECK_OK(ub_loop_free(loop));
	printf("  truncation: reported, payload kept up to the buffer\n");
}

/* ---- pool exhaustion ---- */

/* Enough for a multishot receive (a smaller room is received one
 * datagram at a time, which stops at the budget before the pool runs dry) */
#define EX_BUFS 16u

static int hold_step(void *arg)
{
	struct echo *t = arg;

	return t->nheld >= EX_BUFS && ub_dgram_nobufs(t->ep) >= 1 ? TH_DONE
							     : TH_IDLE;
}

static int all_back_step(void *arg)
{
	struct echo *t = arg;
	struct client *c = &t->cl[0];
	ssize_t n;

	while ((n = recv(c->fd, t->scratch, MAXDG + 1, 0)) >= 0) {
		CHECK_EQ(n, 100);
		CHECK_CMP(th_pat_diff(7, 0, t->scratch, 100), <, 0);
		c->got++;
	}
	return c->got == 32 ? TH_DONE : TH_BUSY;
}

static void test_exhaustion(void)
{
	struct echo t;
	ub_dgram_opts o;
	unsigned char msg[100];
	unsigned i;
	int err;

	memset(&t, 0, sizeof(t));
	t.loop = th_loop_new(NULL);
	t.pool = ub_pool_new(t.loop, EX_BUFS, 1024, UB_POOL_RECV, &err);
	CHECK_PTR(t.pool, err);
	ub_dgram_opts_init(&o);
	o.recv_budget = EX_BUFS * 1024;
	t.ep = open_ep(t.loop, AF_INET, NULL, t.pool, &o, &t.srv, &t.srvlen);
	t.scratch = malloc(MAXDG + 1);
	t.cl[0].fd = client_socket(AF_INET);
	/* a burst waiting in the socket before the receive is armed: the
	 * multishot receive takes all the buffers and ends with -ENOBUFS */
	th_pat_fill(7, 0, msg, sizeof(msg));
	for (i = 0; i < 32; i++)
		CHECK(sendto(t.cl[0].fd, msg, sizeof(msg), 0,
			     (void *)&t.srv, t.srvlen) == 100);
	t.hold = 1;
	th_run(t.loop, echo_event, hold_step, &t, 5, TH_TIMEOUT_MS,
	       "pool drained");
	CHECK_EQ(t.nheld, EX_BUFS);
	CHECK_CMP(ub_dgram_nobufs(t.ep), >=, 1);
	CHECK_EQ(ub_pool_count_state(t.pool, UB_BUF_KERNEL), 0);
	/* nothing more arrives while the pool is empty, and no spin */
	th_run_for(t.loop, echo_event, NULL, &t, 5, 100);
	CHECK_EQ(t.nheld, EX_BUFS);
	/* give them back by echoing: receiving resumes, all 32 come back */
	t.hold = 0;
	for (i = 0; i < EX_BUFS; i++)
		echo_buf(&t, t.held[i]);
	th_run(t.loop, echo_event, all_back_step, &t, 2, TH_TIMEOUT_MS,
	       "every datagram of the burst echoed");
	CHECK_EQ(t.echoed, 32);
	printf("  exhaustion: %llu ENOBUFS endings counted, all 32 echoed\n",
	       (unsigned long long)ub_dgram_nobufs(t.ep));
	close_ep(t.loop, t.ep);
	th_check_pool_idle(t.pool, "recv pool after exhaustion");
	close(t.cl[0].fd);
	free(t.scratch);
	CHECK_OK(ub_loop_free(t.loop));
}

/* ---- the receive budget ---- */

struct holder {
	ub_dgram *ep;
	ub_buf *held[32];
	unsigned n, want;
};

static void holder_event(const ub_event *ev, void *arg)
{
	struct holder *h = arg;

	CHECK(ev->dgram == h->ep);
	CHECK_EQ(ev->type, UB_EV_DATA);
	CHECK_CMP(h->n, <, 32);
	h->held[h->n++] = ev->buf;
}

static int holder_step(void *arg)
{
	struct holder *h = arg;

	return h->n >= h->want ? TH_DONE : TH_IDLE;
}

static void test_budget(void)
{
	ub_loop *loop = th_loop_new(NULL);
	struct sockaddr_storage srv;
	socklen_t slen;
	ub_dgram_opts opt;
	struct holder h;
	unsigned i;
	int err, fd;
	ub_pool *pool = ub_pool_new(loop, 64, 512, UB_POOL_RECV, &err);

	CHECK_PTR(pool, err);
	memset(&h, 0, sizeof(h));
	ub_dgram_opts_init(&opt);
	opt.recv_budget = 4 * 512;
	h.ep = open_ep(loop, AF_INET, NULL, pool, &opt, &srv, &slen);
	CHECK_EQ(ub_dgram_recv_budget(h.ep), 4 * 512);
	fd = client_socket(AF_INET);
	/* one at a time, each received (or not) before the next is sent:
	 * the application holds them all, and receiving stops at 4 */
	for (i = 0; i < 12; i++) {
		CHECK(sendto(fd, "abc", 3, 0, (void *)&srv, slen) == 3);
		h.want = h.n + 1;
		th_run_try(loop, holder_event, holder_step, &h, 5, 200);
	}
	CHECK_EQ(h.n, 4);
	CHECK_EQ(ub_dgram_recv_held(h.ep), 4);
	CHECK_EQ(ub_dgram_recv_throttled(h.ep), 1);
	/* one back: receiving resumes, and stops again.  The re-armed
	 * multishot receive takes what waits in the socket in one pass (see
	 * ub_dgram_recv_budget in uringbuf.h), so "at least one more". */
	CHECK_OK(ub_buf_release(h.held[--h.n]));
	h.want = 4;
	th_run(loop, holder_event, holder_step, &h, 5, TH_TIMEOUT_MS,
	       "one more after a release");
	h.want = 12;
	CHECK(!th_run_try(loop, holder_event, holder_step, &h, 5, 200));
	CHECK_CMP(h.n, >=, 4);
	CHECK_CMP(h.n, <, 12);
	CHECK_EQ(ub_dgram_recv_held(h.ep), h.n);
	CHECK_EQ(ub_dgram_recv_throttled(h.ep), 1);
	/* a larger budget lets the others in */
	CHECK_OK(ub_dgram_set_recv_budget(h.ep, 64 * 512));
	h.want = 11;
	th_run(loop, holder_event, holder_step, &h, 5, TH_TIMEOUT_MS,
	       "the rest after the budget grew");
	th_run_for(loop, holder_event, NULL, &h, 5, 20); /* one update */
	CHECK_EQ(ub_dgram_recv_held(h.ep), 11);
	CHECK_EQ(ub_dgram_recv_throttled(h.ep), 0);
	for (i = 0; i < h.n; i++)
		CHECK_OK(ub_buf_release(h.held[i]));
	CHECK_EQ(ub_dgram_recv_held(h.ep), 0);
	close_ep(loop, h.ep);
	close(fd);
	th_check_pool_idle(pool, "recv pool after budget");
	CHECK_OK(ub_loop_free(loop));
	printf("  budget: receiving stopped at 4 held buffers\n");
}

/* ---- exact limits: a burst past the budget, a flood beside a neighbour ---- */

#define SH_BURST 300u

struct share {
	ub_dgram *a, *b;     /* a: its application holds all; b: releases */
	ub_buf *held[SH_BURST];
	unsigned nheld, nb, want, limit, max_held;
};

static void share_event(const ub_event *ev, void *arg)
{
	struct share *s = arg;
	unsigned held;

	CHECK_EQ(ev->type, UB_EV_DATA);
	if (ev->dgram == s->b) {
		s->nb++;
		CHECK_OK(ub_buf_release(ev->buf));
		return;
	}
	CHECK(ev->dgram == s->a);
	CHECK_CMP(s->nheld, <, SH_BURST);
	s->held[s->nheld++] = ev->buf;
	/* at every datagram, never past the limit */
	held = ub_dgram_recv_held(s->a);
	CHECK_CMP(held, <=, s->limit);
	if (held > s->max_held)
		s->max_held = held;
}

static int share_all_step(void *arg)
{
	struct share *s = arg;
	unsigned i;

	/* a slow application: gives back one of what it holds at a time */
	for (i = 0; i < 1 && s->nheld; i++)
		CHECK_OK(ub_buf_release(s->held[--s->nheld]));
	return ub_dgram_received(s->a) + ub_dgram_dropped(s->a) >= SH_BURST
		       ? TH_DONE
		       : TH_IDLE;
}

static void burst(int fd, const struct sockaddr_storage *to, socklen_t len,
		  unsigned n)
{
	unsigned char msg[64];
	unsigned i;

	memset(msg, 'x', sizeof(msg));
	for (i = 0; i < n; i++)
		CHECK(sendto(fd, msg, sizeof(msg), 0, (const void *)to, len) ==
		      (ssize_t)sizeof(msg));
}

/* Every datagram of the burst is received or counted as dropped, and
 * what the application holds never passed the limit; near it, receiving
 * is one datagram at a time and drops nothing that waits in the socket.
 * Drains a. */
static void share_drain(ub_loop *loop, struct share *s)
{
	uint64_t dropped = ub_dgram_dropped(s->a);
	unsigned i;

	th_run(loop, share_event, share_all_step, s, 5, TH_TIMEOUT_MS,
	       "every datagram received or counted as dropped");
	CHECK_EQ(ub_dgram_received(s->a) + ub_dgram_dropped(s->a), SH_BURST);
	CHECK_EQ(ub_dgram_dropped(s->a), dropped);
	for (i = 0; i < s->nheld; i++)
		CHECK_OK(ub_buf_release(s->held[i]));
	s->nheld = 0;
}

static void test_exact_budget(void)
{
	ub_loop *loop = th_loop_new(NULL);
	struct sockaddr_storage srv;
	socklen_t slen;
	ub_dgram_opts opt;
	struct share s;
	int err, fd;
	ub_pool *pool = ub_pool_new(loop, 128, 512, UB_POOL_RECV, &err);

	CHECK_PTR(pool, err);
	memset(&s, 0, sizeof(s));
	ub_dgram_opts_init(&opt);
	opt.recv_budget = 20 * 512;
	s.limit = 20;
	s.a = open_ep(loop, AF_INET, NULL, pool, &opt, &srv, &slen);
	fd = client_socket(AF_INET);
	/* the multishot receive takes what the socket holds in one pass:
	 * past the budget, dropped at once, not held */
	burst(fd, &srv, slen, SH_BURST);
	th_run_for(loop, share_event, NULL, &s, 5, 200);
	CHECK_EQ(s.nheld, 20);
	CHECK_EQ(ub_dgram_recv_held(s.a), 20);
	CHECK_EQ(ub_dgram_recv_throttled(s.a), 1);
	CHECK_CMP(ub_dgram_dropped(s.a), >, 0);
	CHECK_CMP(ub_dgram_received(s.a) + ub_dgram_dropped(s.a), <,
		  SH_BURST); /* the rest waits in the socket */
	/* nothing of the pool is lost: 20 held, the rest in the ring */
	CHECK_EQ(ub_pool_count_state(pool, UB_BUF_KERNEL), 128 - 20);
	share_drain(loop, &s);
	printf("  exact budget: at most 20 of 20 held; %llu received, %llu "
	       "dropped past it\n",
	       (unsigned long long)ub_dgram_received(s.a),
	       (unsigned long long)ub_dgram_dropped(s.a));
	close_ep(loop, s.a);
	close(fd);
	th_check_pool_idle(pool, "recv pool after exact budget");
	CHECK_OK(ub_loop_free(loop));
}

static int b_step(void *arg)
{
	struct share *s = arg;

	return s->nb >= s->want ? TH_DONE : TH_IDLE;
}

static void test_shared_pool(void)
{
	ub_loop *loop = th_loop_new(NULL);
	struct sockaddr_storage sa, sb;
	socklen_t la, lb;
	ub_dgram_opts opt;
	struct share s;
	unsigned i, reserve;
	int err, fd;
	ub_pool *pool = ub_pool_new(loop, 64, 512, UB_POOL_RECV, &err);

	CHECK_PTR(pool, err);
	memset(&s, 0, sizeof(s));
	ub_dgram_opts_init(&opt);
	opt.recv_budget = 64 * 512; /* the whole pool: only the share limits */
	s.a = open_ep(loop, AF_INET, NULL, pool, &opt, &sa, &la);
	s.b = open_ep(loop, AF_INET6, NULL, pool, NULL, &sb, &lb);
	reserve = ub_pool_reserve(pool);
	CHECK_EQ(reserve, 16);
	/* the share rule: at most half of what is free above the reserve */
	s.limit = (64 - reserve) / 2;
	fd = client_socket(AF_INET);
	burst(fd, &sa, la, SH_BURST);
	th_run_for(loop, share_event, NULL, &s, 5, 200);
	CHECK_CMP(s.nheld, >, 0);
	CHECK_EQ(ub_dgram_recv_throttled(s.a), 1);
	CHECK_CMP(ub_pool_count_state(pool, UB_BUF_KERNEL), >=, reserve);
	/* the neighbour still receives, one datagram at a time, while the
	 * flooded endpoint's application holds everything it got */
	close(fd);
	fd = client_socket(AF_INET6);
	for (i = 0; i < 5; i++) {
		burst(fd, &sb, lb, 1);
		s.want = i + 1;
		th_run(loop, share_event, b_step, &s, 5, TH_TIMEOUT_MS,
		       "the neighbour's datagram");
	}
	CHECK_EQ(ub_dgram_dropped(s.b), 0);
	share_drain(loop, &s);
	printf("  shared pool: the flooded endpoint held at most %u of 64 "
	       "(limit %u), its neighbour received all 5\n",
	       s.max_held, s.limit);
	close_ep(loop, s.a);
	close_ep(loop, s.b);
	close(fd);
	th_check_pool_idle(pool, "recv pool after shared pool");
	CHECK_OK(ub_loop_free(loop));
}

/* ---- close with sends in flight (Unix: a peer that does not read) ---- */

static void test_close_inflight(void)
{
	ub_loop *loop = th_loop_new(NULL);
	struct sockaddr_storage srv, peer;
	socklen_t slen, plen;
	ub_dgram_opts opt;
	char name[64], data[512];
	int err, fd, i, queued = 0;
	ub_pool *rpool = ub_pool_new(loop, 8, 1024, UB_POOL_RECV, &err);
	ub_pool *spool = ub_pool_new(loop, 64, 1024, 0, &err);
	ub_dgram *ep;

	CHECK_PTR(rpool, err);
	CHECK_PTR(spool, err);
	ub_dgram_opts_init(&opt);
	opt.send_pool = spool;
	snprintf(name, sizeof(name), "ub-udp-close-%d", (int)getpid());
	ep = open_ep(loop, AF_UNIX, name, rpool, &opt, &srv, &slen);
	fd = client_socket(AF_UNIX);
	local_addr(fd, &peer, &plen);
	CHECK_OK(ub_dgram_connect(ep, (struct sockaddr *)&peer, plen));
	memset(data, 'x', sizeof(data));
	/* the peer's queue (max_dgram_qlen, 10 by default) fills; the rest
	 * wait in the kernel, armed */
	for (i = 0; i < 60; i++) {
		ssize_t r = ub_dgram_send(ep, data, sizeof(data), NULL, 0);

		CHECK_EQ(r, sizeof(data));
		queued++;
	}
	th_run_for(loop, NULL, NULL, NULL, 5, 100);
	CHECK_CMP(ub_dgram_queued_bufs(ep), >, 0);
	CHECK_CMP(ub_pool_count_state(spool, UB_BUF_QUEUED), >, 0);
	printf("  close: %u of %d datagrams still in flight at close\n",
	       ub_dgram_queued_bufs(ep), queued);
	close_ep(loop, ep);
	th_check_pool_idle(spool, "send pool after close");
	th_check_pool_idle(rpool, "recv pool after close");
	close(fd);
	CHECK_OK(ub_loop_free(loop));
}

/* ---- a full Unix peer: sends wait, and go out whole and in order ----
 *
 * A Unix datagram socket's peer queue holds max_dgram_qlen (10) datagrams;
 * a send beyond that gets EAGAIN from the kernel after it copied the data
 * out of the iovec.  The kernel's own retry of such a sendmsg sends what
 * is left of that iovec: nothing (0-byte datagrams, seen from the Lua
 * tests).  Every datagram must arrive whole, once, in order. */

static void test_unix_full_peer(void)
{
	enum { N = 40 };
	ub_loop *loop = th_loop_new(NULL);
	struct sockaddr_storage srv, peer;
	socklen_t slen, plen;
	ub_dgram_opts opt;
	char name[64], data[600], got[700];
	int err, fd, i, n = 0, errors = 0;
	ub_pool *rpool = ub_pool_new(loop, 8, 1024, UB_POOL_RECV, &err);
	ub_pool *spool = ub_pool_new(loop, 64, 1024, 0, &err);
	ub_dgram *ep;
	ub_event ev[16];
	double deadline;

	CHECK_PTR(rpool, err);
	CHECK_PTR(spool, err);
	ub_dgram_opts_init(&opt);
	opt.send_pool = spool;
	opt.flags = UB_DGRAM_NO_RECV;
	snprintf(name, sizeof(name), "ub-udp-full-%d", (int)getpid());
	ep = open_ep(loop, AF_UNIX, name, rpool, &opt, &srv, &slen);
	/* the peer is not connected back: its queue limit applies */
	fd = client_socket(AF_UNIX);
	local_addr(fd, &peer, &plen);
	CHECK_OK(ub_dgram_connect(ep, (struct sockaddr *)&peer, plen));
	for (i = 0; i < N; i++) {
		size_t len = 100 + (size_t)i * 11;

		memset(data, 'a' + i % 26, len);
		memcpy(data, &i, sizeof(i));
		CHECK_EQ(ub_dgram_send(ep, data, len, NULL, 0), (ssize_t)len);
	}
	/* submitted: the peer's queue fills, the rest wait */
	th_run_for(loop, NULL, NULL, NULL, 5, 100);
	CHECK_CMP(ub_dgram_queued_bufs(ep), >, 0);
	deadline = th_now_ms() + 10000;
	while (n < N && th_now_ms() < deadline) {
		ssize_t r = recv(fd, got, sizeof(got), 0);
		int k, m;

		if (r < 0) {
			CHECK(errno == EAGAIN);
			m = ub_loop_wait(loop, ev, 16, 0, 10);
			CHECK_CMP(m, >=, 0);
			for (k = 0; k < m; k++)
				if (ev[k].type == UB_EV_ERROR)
					errors++;
			continue;
		}
		CHECK_EQ(r, 100 + n * 11);
		memset(data, 'a' + n % 26, (size_t)r);
		memcpy(data, &n, sizeof(n));
		if (memcmp(got, data, (size_t)r) != 0)
			TH_FAILF("datagram %d: wrong bytes", n);
		n++;
	}
	CHECK_EQ(n, N);
	CHECK_EQ(errors, 0);
	th_run_for(loop, NULL, NULL, NULL, 5, 50);
	CHECK_EQ(ub_dgram_queued_bufs(ep), 0);
	CHECK_EQ(ub_dgram_sent(ep), N);
	printf("  full Unix peer: %d datagrams whole and in order\n", N);
	/* Unconnected, sending to the same full peer: nothing can wait for
	 * it, so each datagram arrives whole or is reported (ERROR -EAGAIN),
	 * never sent empty. */
	close_ep(loop, ep);
	ub_dgram_opts_init(&opt);
	opt.send_pool = spool;
	opt.flags = UB_DGRAM_NO_RECV;
	snprintf(name, sizeof(name), "ub-udp-full2-%d", (int)getpid());
	ep = open_ep(loop, AF_UNIX, name, rpool, &opt, &srv, &slen);
	for (i = 0; i < N; i++) {
		size_t len = 100 + (size_t)i * 11;

		memset(data, 'a' + i % 26, len);
		memcpy(data, &i, sizeof(i));
		CHECK_EQ(ub_dgram_send(ep, data, len, (struct sockaddr *)&peer,
				       plen), (ssize_t)len);
	}
	n = errors = 0;
	deadline = th_now_ms() + 10000;
	/* until nothing is queued and every event of it was returned */
	for (;;) {
		int k, m = ub_loop_wait(loop, ev, 16, 0, 10);

		CHECK_CMP(m, >=, 0);
		if (m == 0 && ub_dgram_queued_bufs(ep) == 0)
			break;
		CHECK(th_now_ms() < deadline);
		for (k = 0; k < m; k++) {
			if (ev[k].type == UB_EV_ERROR) {
				CHECK_EQ(ev[k].res, -EAGAIN);
				errors++;
			}
		}
	}
	for (i = 0; i < N; i++) {
		ssize_t r = recv(fd, got, sizeof(got), 0);
		int idx;

		if (r < 0)
			break;
		CHECK_CMP(r, >=, (ssize_t)sizeof(idx));
		memcpy(&idx, got, sizeof(idx));
		CHECK(idx >= 0 && idx < N);
		CHECK_EQ(r, 100 + idx * 11); /* whole, never empty */
		n++;
	}
	CHECK_EQ(n + errors, N);
	CHECK_CMP(errors, >, 0);
	printf("  full Unix peer, unconnected: %d whole, %d reported "
	       "not sent\n", n, errors);
	close_ep(loop, ep);
	th_check_pool_idle(spool, "send pool after close");
	th_check_pool_idle(rpool, "recv pool after close");
	close(fd);
	CHECK_OK(ub_loop_free(loop));
}

/* ---- soft water (UB_DGRAM_SOFT_WATER): nothing refused, order kept ----
 *
 * A connected Unix endpoint with 4 send slots, a 2000-byte high mark and a
 * send pool of 6 buffers, towards a peer that does not read (its queue
 * holds 10).  N datagrams of three kinds, interleaved: copies
 * (ub_dgram_send), the send pool's own buffers (copied to the heap when
 * they must wait, so that they never hold the pool the copies wait for)
 * and received buffers (wait as they are).  Every call accepts; send_buf
 * says 1 exactly when no slot is free, the mark is reached or datagrams
 * wait; queued_* count all of it; no WRITABLE while the peer does not read.
 * Then the peer reads: every datagram arrives whole, once, in order, one
 * WRITABLE, every pool idle.  Switched off with datagrams waiting, sends
 * are refused (they would pass the waiting ones) until WRITABLE.  And the
 * same fill closed: CLOSED comes, the peer has an in-order prefix, every
 * buffer is back.
 */

struct soft {
	ub_loop *loop;
	ub_dgram *in, *ep;
	ub_buf *rx[64];
	unsigned nrx, writable, closed;
};

static void soft_event(const ub_event *ev, void *arg)
{
	struct soft *t = arg;

	if (ev->type == UB_EV_DATA && ev->dgram == t->in) {
		CHECK_CMP(t->nrx, <, 64u);
		t->rx[t->nrx++] = ev->buf;
	} else if (ev->type == UB_EV_WRITABLE && ev->dgram == t->ep) {
		t->writable++;
	} else if (ev->type == UB_EV_CLOSED && ev->dgram == t->ep) {
		CHECK_EQ(ev->res, 0);
		t->closed = 1;
	} else {
		TH_FAILF("unexpected %s res %d", ub_event_name(ev->type),
			 ev->res);
	}
}

static int soft_rx_step(void *arg)
{
	struct soft *t = arg;

	return t->nrx == 24 ? TH_DONE : 0;
}

static int soft_closed_step(void *arg)
{
	return ((struct soft *)arg)->closed ? TH_DONE : 0;
}

/* Datagram i: its length and bytes. */
static size_t soft_len(unsigned i)
{
	return 40 + (i * 37) % 600;
}

static void soft_fill(unsigned i, unsigned char *p)
{
	th_pat_fill(seed_of(99, i), 0, p, soft_len(i));
	memcpy(p, &i, sizeof(i));
}

/* Queue datagrams first..first+n-1 on t->ep; returns how many were
 * received buffers. */
static unsigned soft_queue(struct soft *t, ub_pool *spool, unsigned first,
			   unsigned n)
{
	unsigned char data[700];
	unsigned i, from_rx = 0;
	unsigned bufs0 = ub_dgram_queued_bufs(t->ep);

	for (i = first; i < first + n; i++) {
		size_t len = soft_len(i);
		ub_buf *b = NULL;
		int err = 0, r;

		if (i % 3 == 1)
			b = ub_pool_acquire(spool, &err); /* NULL: a copy */
		else if (i % 3 == 2 && t->nrx)
			b = t->rx[--t->nrx];
		if (!b) {
			soft_fill(i, data);
			CHECK_EQ(ub_dgram_send(t->ep, data, len, NULL, 0),
				 (ssize_t)len);
			continue;
		}
		if (ub_buf_pool(b) != spool)
			from_rx++;
		CHECK_CMP(ub_buf_capacity(b), >=, len);
		soft_fill(i, ub_buf_data(b));
		CHECK_OK(ub_buf_set_len(b, len));
		r = ub_dgram_send_buf(t->ep, b, NULL, 0);
		CHECK(r == 0 || r == 1);
		if (ub_dgram_queued_bufs(t->ep) > 4 ||
		    ub_dgram_queued_bytes(t->ep) >= 2000)
			CHECK_EQ(r, 1);
		/* the handle is spent whether it waits or was copied */
		CHECK_ERR(ub_buf_release(b), EINVAL);
	}
	CHECK_EQ(ub_dgram_queued_bufs(t->ep), bufs0 + n);
	return from_rx;
}

static void test_soft_water(void)
{
	enum { N = 90 };
	struct soft *t = calloc(1, sizeof(*t));
	struct sockaddr_storage srv, peer, insrv;
	socklen_t slen, plen, inlen;
	ub_dgram_opts opt;
	char name[64];
	unsigned char got[800], want[800];
	int err, fd, cl, n, i, refused;
	unsigned from_rx;
	ub_pool *rpool, *spool;
	double deadline;
	size_t total = 0;

	CHECK(t != NULL);
	t->loop = th_loop_new(NULL);
	rpool = ub_pool_new(t->loop, 32, 1024, UB_POOL_RECV, &err);
	CHECK_PTR(rpool, err);
	spool = ub_pool_new(t->loop, 6, 1024, 0, &err);
	CHECK_PTR(spool, err);
	/* received buffers to forward: 24 datagrams from a client */
	snprintf(name, sizeof(name), "ub-udp-softin-%d", (int)getpid());
	t->in = open_ep(t->loop, AF_UNIX, name, rpool, NULL, &insrv, &inlen);
	cl = client_socket(AF_UNIX);
	deadline = th_now_ms() + TH_TIMEOUT_MS;
	for (i = 0; i < 24;) {
		/* the receiver's queue holds 10: let the loop take them */
		if (sendto(cl, "x", 1, 0, (struct sockaddr *)&insrv, inlen) ==
		    1) {
			i++;
			continue;
		}
		CHECK(errno == EAGAIN && th_now_ms() < deadline);
		th_run_for(t->loop, soft_event, NULL, t, 1, 5);
	}
	th_run(t->loop, soft_event, soft_rx_step, t, 5, TH_TIMEOUT_MS,
	       "24 datagrams to forward");
	CHECK_OK(ub_dgram_pause_recv(t->in));
	ub_dgram_opts_init(&opt);
	opt.send_pool = spool;
	opt.queue_max = 4;
	opt.high_water = 2000;
	opt.low_water = 500;
	opt.flags = UB_DGRAM_NO_RECV | UB_DGRAM_SOFT_WATER;
	snprintf(name, sizeof(name), "ub-udp-soft-%d", (int)getpid());
	t->ep = open_ep(t->loop, AF_UNIX, name, rpool, &opt, &srv, &slen);
	fd = client_socket(AF_UNIX);
	local_addr(fd, &peer, &plen);
	CHECK_OK(ub_dgram_connect(t->ep, (struct sockaddr *)&peer, plen));

	from_rx = soft_queue(t, spool, 0, N);
	CHECK_CMP(from_rx, >, 0u);
	for (i = 0; i < N; i++)
		total += soft_len((unsigned)i);
	CHECK_EQ(ub_dgram_queued_bytes(t->ep), total);
	/* the peer does not read: its queue fills, the rest waits */
	th_run_for(t->loop, soft_event, NULL, t, 5, 100);
	CHECK_CMP(ub_dgram_queued_bufs(t->ep), >, 0);
	CHECK_EQ(t->writable, 0);
	/* switched off with datagrams waiting: refused, they go first */
	CHECK_OK(ub_dgram_set_soft_water(t->ep, 0));
	CHECK_ERR(ub_dgram_send(t->ep, "late", 4, NULL, 0), EAGAIN);
	n = 0;
	deadline = th_now_ms() + 10000;
	while ((n < N || ub_dgram_queued_bufs(t->ep)) &&
	       th_now_ms() < deadline) {
		ssize_t r = recv(fd, got, sizeof(got), 0);

		if (r < 0) {
			CHECK(errno == EAGAIN);
			th_run_for(t->loop, soft_event, NULL, t, 1, 2);
			continue;
		}
		CHECK_CMP(n, <, N);
		CHECK_EQ(r, (ssize_t)soft_len((unsigned)n));
		soft_fill((unsigned)n, want);
		if (memcmp(got, want, (size_t)r) != 0)
			TH_FAILF("datagram %d: wrong bytes", n);
		n++;
	}
	CHECK_EQ(n, N);
	th_run_for(t->loop, soft_event, NULL, t, 5, 50);
	CHECK_EQ(ub_dgram_queued_bufs(t->ep), 0);
	CHECK_EQ(ub_dgram_queued_bytes(t->ep), 0);
	CHECK_EQ(t->writable, 1); /* owed by the refusal, once */
	CHECK_EQ(ub_dgram_sent(t->ep), N);
	printf("  soft water: %d datagrams (%u received buffers) accepted "
	       "past 4 slots, whole and in order\n", N, from_rx);

	/* the same fill, then close: a prefix in order, all back */
	CHECK_OK(ub_dgram_set_soft_water(t->ep, 1));
	(void)soft_queue(t, spool, 0, N);
	th_run_for(t->loop, soft_event, NULL, t, 5, 50);
	CHECK_OK(ub_dgram_close(t->ep));
	th_run(t->loop, soft_event, soft_closed_step, t, 5, TH_TIMEOUT_MS,
	       "CLOSED with datagrams waiting");
	n = 0;
	for (;;) {
		ssize_t r = recv(fd, got, sizeof(got), 0);

		if (r < 0)
			break;
		CHECK_EQ(r, (ssize_t)soft_len((unsigned)n));
		soft_fill((unsigned)n, want);
		if (memcmp(got, want, (size_t)r) != 0)
			TH_FAILF("after close, datagram %d: wrong bytes", n);
		n++;
	}
	CHECK_CMP(n, <=, N);
	refused = N - n;
	printf("  soft water, closed full: %d arrived in order, %d dropped\n",
	       n, refused);
	while (t->nrx)
		CHECK_OK(ub_buf_release(t->rx[--t->nrx]));
	close_ep(t->loop, t->in);
	th_check_pool_idle(spool, "send pool after soft water");
	th_check_pool_idle(rpool, "recv pool after soft water");
	close(fd);
	close(cl);
	CHECK_OK(ub_pool_free(spool));
	CHECK_OK(ub_pool_free(rpool));
	CHECK_OK(ub_loop_free(t->loop));
	free(t);
}

static void writable_ok(const ub_event *ev, void *arg)
{
	(void)arg;
	if (ev->type != UB_EV_WRITABLE)
		TH_FAILF("unexpected %s res %d", ub_event_name(ev->type),
			 ev->res);
}

/* Soft water, buffers of other send pools, on an endpoint that has no send
 * pool yet (no copying send made one): those that must wait and fit a
 * buffer of the loop's default send pool are copied (the pool is made for
 * them), larger ones wait as they are.  All arrive, in order. */
static void test_soft_water_foreign(void)
{
	enum { N = 12 };
	ub_loop *loop = th_loop_new(NULL);
	struct sockaddr_storage srv, peer;
	socklen_t slen, plen;
	ub_dgram_opts opt;
	ub_dgram *ep;
	ub_pool *small, *big;
	char name[64];
	static unsigned char got[9000], want[9000];
	int err, fd, i, n = 0;
	double deadline;

	small = ub_pool_new(loop, 8, 256, 0, &err);
	CHECK_PTR(small, err);
	big = ub_pool_new(loop, 8, 8192, 0, &err);
	CHECK_PTR(big, err);
	ub_dgram_opts_init(&opt);
	opt.queue_max = 1;
	opt.flags = UB_DGRAM_NO_RECV | UB_DGRAM_SOFT_WATER;
	snprintf(name, sizeof(name), "ub-udp-softf-%d", (int)getpid());
	ep = open_ep(loop, AF_UNIX, name, NULL, &opt, &srv, &slen);
	CHECK(ub_dgram_send_pool(ep) == NULL);
	fd = client_socket(AF_UNIX);
	local_addr(fd, &peer, &plen);
	CHECK_OK(ub_dgram_connect(ep, (struct sockaddr *)&peer, plen));
	for (i = 0; i < N; i++) {
		/* every third: 5000 bytes, more than a default send buffer */
		size_t len = i % 3 == 2 ? 5000 : 100 + (size_t)i;
		ub_buf *b = ub_pool_acquire(i % 3 == 2 ? big : small, &err);

		CHECK_PTR(b, err);
		th_pat_fill(seed_of(98, (unsigned)i), 0, ub_buf_data(b), len);
		CHECK_OK(ub_buf_set_len(b, len));
		CHECK(ub_dgram_send_buf(ep, b, NULL, 0) >= 0);
	}
	CHECK(ub_dgram_send_pool(ep) != NULL); /* made for the copies */
	CHECK_EQ(ub_dgram_queued_bufs(ep), N);
	/* the first took the one slot as it is; the small ones waiting
	 * were copied, back in their pool already; the big ones wait as
	 * they are */
	CHECK_EQ(ub_pool_count_state(small, UB_BUF_FREE), 7);
	CHECK_EQ(ub_pool_count_state(big, UB_BUF_QUEUED), N / 3);
	deadline = th_now_ms() + 10000;
	while (n < N && th_now_ms() < deadline) {
		ssize_t r = recv(fd, got, sizeof(got), 0);
		size_t len = n % 3 == 2 ? 5000 : 100 + (size_t)n;

		if (r < 0) {
			CHECK(errno == EAGAIN);
			th_run_for(loop, writable_ok, NULL, NULL, 1, 2);
			continue;
		}
		CHECK_EQ(r, (ssize_t)len);
		th_pat_fill(seed_of(98, (unsigned)n), 0, want, len);
		if (memcmp(got, want, len) != 0)
			TH_FAILF("foreign datagram %d: wrong bytes", n);
		n++;
	}
	CHECK_EQ(n, N);
	printf("  soft water, other pools' buffers: %d whole and in order\n",
	       N);
	close_ep(loop, ep);
	th_check_pool_idle(small, "small pool");
	th_check_pool_idle(big, "big pool");
	close(fd);
	CHECK_OK(ub_loop_free(loop));
}

/* ---- a Unix path: bound, then unlinked on close ---- */

static void test_unix_path(void)
{
	ub_loop *loop = th_loop_new(NULL);
	struct sockaddr_un un;
	struct stat st;
	ub_dgram *ep;
	int err;

	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	snprintf(un.sun_path, sizeof(un.sun_path), "/tmp/ub-udp-%d.sock",
		 (int)getpid());
	unlink(un.sun_path);
	ep = ub_dgram_open(loop, (struct sockaddr *)&un, sizeof(un), NULL,
			   &err);
	CHECK_PTR(ep, err);
	CHECK(stat(un.sun_path, &st) == 0);
	close_ep(loop, ep);
	CHECK(stat(un.sun_path, &st) < 0 && errno == ENOENT);
	CHECK_OK(ub_loop_free(loop));
}

/* ---- bad input ---- */

static void test_bad_input(void)
{
	ub_loop *loop = th_loop_new(NULL);
	struct sockaddr_storage srv, v6;
	socklen_t slen, v6len = make_addr(AF_INET6, &v6, NULL);
	ub_dgram_opts opt;
	ub_buf *b;
	struct one o;
	char big[2048];
	int err, fd;
	ub_pool *rpool = ub_pool_new(loop, 8, 1024, UB_POOL_RECV, &err);
	ub_pool *small = ub_pool_new(loop, 8, 128, UB_POOL_RECV, &err);
	ub_pool *odd = ub_pool_new(loop, 8, 1001, UB_POOL_RECV, &err);
	ub_pool *spool = ub_pool_new(loop, 8, 1024, 0, &err);
	ub_pool *huge = ub_pool_new(loop, 2, 70000, 0, &err);
	ub_dgram *ep, *conn_ep;

	CHECK(rpool && small && odd && spool && huge);
	memset(big, 'b', sizeof(big));
	/* constructors */
	CHECK(ub_dgram_open(NULL, (void *)&v6, v6len, NULL, &err) == NULL);
	CHECK_EQ(err, -EINVAL);
	CHECK(ub_dgram_open(loop, NULL, 16, NULL, &err) == NULL);
	CHECK_EQ(err, -EINVAL);
	CHECK(ub_dgram_open(loop, (void *)&v6, 3, NULL, &err) == NULL);
	CHECK_EQ(err, -EINVAL);
	ub_dgram_opts_init(&opt);
	opt.recv_pool = small; /* no room for a payload */
	CHECK(ub_dgram_open(loop, (void *)&v6, v6len, &opt, &err) == NULL);
	CHECK_EQ(err, -EINVAL);
	opt.recv_pool = odd; /* addresses would not be aligned */
	CHECK(ub_dgram_open(loop, (void *)&v6, v6len, &opt, &err) == NULL);
	CHECK_EQ(err, -EINVAL);
	opt.recv_pool = spool; /* not a receive pool */
	CHECK(ub_dgram_open(loop, (void *)&v6, v6len, &opt, &err) == NULL);
	CHECK_EQ(err, -EINVAL);
	ub_dgram_opts_init(&opt);
	opt.low_water = opt.high_water + 1;
	CHECK(ub_dgram_open(loop, (void *)&v6, v6len, &opt, &err) == NULL);
	CHECK_EQ(err, -EINVAL);
	ub_dgram_opts_init(&opt);
	opt.flags = 1u << 20;
	CHECK(ub_dgram_open(loop, (void *)&v6, v6len, &opt, &err) == NULL);
	CHECK_EQ(err, -EINVAL);
	CHECK(ub_dgram_adopt(loop, -1, NULL, &err) == NULL);
	CHECK_EQ(err, -EBADF);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(ub_dgram_adopt(loop, fd, NULL, &err) == NULL);
	CHECK_EQ(err, -EINVAL); /* not a datagram socket */
	close(fd);

	ub_dgram_opts_init(&opt);
	opt.send_pool = spool;
	ep = open_ep(loop, AF_INET, NULL, rpool, &opt, &srv, &slen);
	/* sends */
	CHECK_ERR(ub_dgram_send(NULL, "x", 1, NULL, 0), EINVAL);
	CHECK_ERR(ub_dgram_send(ep, NULL, 1, (void *)&srv, slen), EINVAL);
	CHECK_ERR(ub_dgram_send(ep, "x", 1, NULL, 0), EDESTADDRREQ);
	CHECK_ERR(ub_dgram_send(ep, "x", 1, (void *)&v6, v6len), EINVAL);
	CHECK_ERR(ub_dgram_send(ep, "x", 1, (void *)&srv, 4), EINVAL);
	CHECK_ERR(ub_dgram_send(ep, big, 1025, (void *)&srv, slen), EMSGSIZE);
	CHECK_ERR(ub_dgram_connect(ep, (void *)&v6, v6len), EINVAL);
	CHECK_ERR(ub_dgram_connect(NULL, (void *)&srv, slen), EINVAL);
	b = ub_pool_acquire(spool, &err);
	CHECK_PTR(b, err);
	CHECK_ERR(ub_dgram_send_buf(ep, NULL, (void *)&srv, slen), EINVAL);
	CHECK_ERR(ub_dgram_send_buf(NULL, b, (void *)&srv, slen), EINVAL);
	CHECK_ERR(ub_dgram_send_buf(ep, b, (void *)&v6, v6len), EINVAL);
	CHECK_ERR(ub_dgram_send_buf(ep, b, NULL, 0), EDESTADDRREQ);
	CHECK_OK(ub_buf_release(b));
	CHECK_ERR(ub_dgram_send_buf(ep, b, (void *)&srv, slen), EINVAL);
	CHECK_ERR(ub_dgram_set_water(ep, 0, 0), EINVAL);
	CHECK_ERR(ub_dgram_set_water(ep, 10, 20), EINVAL);
	CHECK_ERR(ub_dgram_set_recv_budget(ep, 0), EINVAL);
	/* NULL everywhere */
	CHECK_ERR(ub_dgram_close(NULL), EINVAL);
	CHECK_ERR(ub_dgram_pause_recv(NULL), EINVAL);
	CHECK_ERR(ub_dgram_resume_recv(NULL), EINVAL);
	CHECK_ERR(ub_dgram_want_writable(NULL), EINVAL);
	CHECK_ERR(ub_dgram_set_water(NULL, 10, 1), EINVAL);
	CHECK_ERR(ub_dgram_set_recv_budget(NULL, 10), EINVAL);
	CHECK_ERR(ub_dgram_fd(NULL), EINVAL);
	CHECK_ERR(ub_dgram_recv_throttled(NULL), EINVAL);
	CHECK(ub_dgram_loop(NULL) == NULL && ub_dgram_udata(NULL) == NULL);
	ub_dgram_set_udata(NULL, NULL);
	ub_dgram_opts_init(NULL);
	CHECK_EQ(ub_dgram_queued_bytes(NULL) + ub_dgram_queued_bufs(NULL) +
			 ub_dgram_received(NULL) + ub_dgram_sent(NULL) +
			 ub_dgram_nobufs(NULL) + ub_dgram_recv_budget(NULL) +
			 ub_dgram_recv_held(NULL),
		 0);
	CHECK(ub_buf_addr(NULL, NULL) == NULL);
	CHECK_ERR(ub_buf_addr_format(NULL, big, sizeof(big)), EINVAL);
	CHECK_EQ(ub_buf_truncated(NULL), 0);
	b = ub_pool_acquire(spool, &err);
	CHECK(ub_buf_addr(b, NULL) == NULL); /* not a received datagram */
	CHECK_ERR(ub_buf_addr_format(b, big, sizeof(big)), EINVAL);
	CHECK_OK(ub_buf_release(b));

	/* the kernel's verdict: a UDP datagram over 65507 bytes is an ERROR
	 * event, and the endpoint goes on */
	ub_dgram_opts_init(&opt);
	opt.send_pool = huge;
	conn_ep = open_ep(loop, AF_INET, NULL, rpool, &opt, &v6, &v6len);
	CHECK_OK(ub_dgram_connect(conn_ep, (void *)&srv, slen));
	{
		char *p = calloc(1, 70000);

		CHECK(p);
		CHECK_EQ(ub_dgram_send(conn_ep, p, 70000, NULL, 0), 70000);
		free(p);
	}
	memset(&o, 0, sizeof(o));
	o.ep = conn_ep;
	th_run_for(loop, one_event, NULL, &o, 5, 100);
	CHECK_EQ(o.errors, 1);
	CHECK_EQ(o.err, -EMSGSIZE);
	CHECK_EQ(ub_pool_count_state(huge, UB_BUF_FREE), 2);
	/* and the next one goes out and arrives */
	CHECK_EQ(ub_dgram_send(conn_ep, "hello", 5, NULL, 0), 5);
	memset(&o, 0, sizeof(o));
	o.ep = ep;
	th_run(loop, one_event, one_step, &o, 5, TH_TIMEOUT_MS,
	       "datagram after an error");
	CHECK_EQ(o.res, 5);
	CHECK(memcmp(ub_buf_data(o.buf), "hello", 5) == 0);
	CHECK_OK(ub_buf_release(o.buf));
	CHECK_EQ(ub_dgram_sent(conn_ep), 1);
	close_ep(loop, conn_ep);
	/* closed: everything says EPIPE */
	CHECK_OK(ub_dgram_close(ep));
	CHECK_ERR(ub_dgram_send(ep, "x", 1, (void *)&srv, slen), EPIPE);
	CHECK_ERR(ub_dgram_pause_recv(ep), EPIPE);
	CHECK_ERR(ub_dgram_connect(ep, (void *)&srv, slen), EPIPE);
	CHECK_OK(ub_loop_free(loop)); /* frees the closing endpoint too */
	printf("  bad input: the documented errors\n");
}

/* ---- UDP GSO: groups, their ends, order ---- */

/* The datagrams test_gso sends: runs to two receivers, of one size with a
 * shorter one, an empty one, 150 in a row (past a group's 64), and sizes
 * whose groups the byte cap cuts. */
#define GSO_N 400
static void gso_plan(unsigned i, unsigned *to, size_t *len)
{
	*to = (i / 37) % 2;
	if (i < 150)
		*len = 100;
	else if (i == 170)
		*len = 40;            /* shorter: ends a group */
	else if (i == 171)
		*len = 0;             /* empty: never grouped */
	else if (i < 200)
		*len = 300;
	else if (i < 220)
		*len = 30000;         /* two to a group at most */
	else
		*len = 1 + (i * 7919) % 1400;
	if (i < 150)
		*to = 0;              /* one run of 150 to the first */
}

static int gso_step(void *arg)
{
	ub_dgram *ep = arg;

	return ub_dgram_queued_bufs(ep) == 0 ? TH_DONE : TH_IDLE;
}

static void gso_drop(const ub_event *ev, void *arg)
{
	(void)arg;
	CHECK(ev->type != UB_EV_ERROR);
	if (ev->type == UB_EV_DATA)
		ub_buf_release(ev->buf);
}

static void gso_run_once(int family, unsigned disable, const char *what)
{
	ub_loop_opts lo;
	ub_loop *loop;
	ub_dgram_opts o;
	ub_dgram *ep;
	ub_pool *spool;
	struct sockaddr_storage self, to[2];
	socklen_t selflen, tolen[2];
	int rx[2], k, grouped;
	unsigned i, got[2] = { 0, 0 };
	static unsigned char buf[65536];

	memset(&lo, 0, sizeof(lo));
	lo.disable = disable;
	loop = th_loop_new(&lo);
	grouped = (ub_loop_features(loop) & UB_FEAT_UDP_GSO) != 0;
	CHECK(!(disable & UB_FEAT_UDP_GSO) || !grouped);
	spool = ub_pool_new(loop, GSO_N, 32768, 0, NULL);
	CHECK(spool != NULL);
	ub_dgram_opts_init(&o);
	o.queue_max = GSO_N;
	o.high_water = 64u << 20;
	o.send_pool = spool;
	ep = open_ep(loop, family, NULL, NULL, &o, &self, &selflen);
	for (k = 0; k < 2; k++) {
		rx[k] = client_socket(family);
		local_addr(rx[k], &to[k], &tolen[k]);
	}
	/* All queued before the loop runs: the groups are what one batch
	 * of replies would make. */
	for (i = 0; i < GSO_N; i++) {
		unsigned t;
		size_t len;

		gso_plan(i, &t, &len);
		if (len > 32768) {
			th_pat_fill(seed_of(t, i), 0, buf, len);
			CHECK_EQ(ub_dgram_send(ep, buf, len,
					       (struct sockaddr *)&to[t],
					       tolen[t]), (ssize_t)len);
		} else {
			int err;
			ub_buf *b = ub_pool_acquire(spool, &err);

			CHECK_PTR(b, err);
			th_pat_fill(seed_of(t, i), 0, ub_buf_data(b), len);
			CHECK_OK(ub_buf_set_len(b, len));
			CHECK_OK(ub_dgram_send_buf(ep, b,
						   (struct sockaddr *)&to[t],
						   tolen[t]));
		}
	}
	th_run(loop, gso_drop, gso_step, ep, 5, TH_TIMEOUT_MS, what);
	CHECK_EQ(ub_dgram_sent(ep), GSO_N);
	if (grouped)
		/* 150 x 100 B alone: 3 groups; far fewer sends than datagrams */
		CHECK_CMP(ub_dgram_send_ops(ep), <, GSO_N / 2);
	else
		CHECK_EQ(ub_dgram_send_ops(ep), GSO_N);
	/* each receiver: every datagram, whole, in the order queued */
	for (i = 0; i < GSO_N; i++) {
		unsigned t;
		size_t len;
		ssize_t n;
		int64_t deadline = (int64_t)th_now_ms() + TH_TIMEOUT_MS;

		gso_plan(i, &t, &len);
		do {
			n = recv(rx[t], buf, sizeof(buf), 0);
			CHECK(n >= 0 || errno == EAGAIN);
			CHECK((int64_t)th_now_ms() < deadline);
		} while (n < 0);
		CHECK_EQ((size_t)n, len);
		th_pat_check(seed_of(t, i), 0, buf, len, what);
		got[t]++;
	}
	for (k = 0; k < 2; k++) {
		CHECK(recv(rx[k], buf, sizeof(buf), 0) < 0 && errno == EAGAIN);
		close(rx[k]);
	}
	printf("  %s: %u + %u datagrams whole and in order, %llu sends\n",
	       what, got[0], got[1],
	       (unsigned long long)ub_dgram_send_ops(ep));
	close_ep(loop, ep);
	th_check_pool_idle(spool, "send pool");
	CHECK_OK(ub_loop_free(loop));
}

static void test_gso(void)
{
	ub_loop *probe = th_loop_new(NULL);
	int fd;

	if (!(ub_loop_features(probe) & UB_FEAT_UDP_GSO))
		printf("  udp_gso unavailable: %s\n",
		       ub_loop_feature_reason(probe, UB_FEAT_UDP_GSO));
	CHECK_OK(ub_loop_free(probe));
	gso_run_once(AF_INET, 0, "GSO over 127.0.0.1");
	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	if (fd >= 0) {
		close(fd);
		gso_run_once(AF_INET6, 0, "GSO over ::1");
	}
	gso_run_once(AF_INET, UB_FEAT_UDP_GSO, "udp_gso disabled");
}

int main(void)
{
	ub_loop *probe;
	int fd;

	th_init("udp");
	th_watchdog(120);
	probe = th_loop_new(NULL);
	if (!(ub_loop_features(probe) & UB_FEAT_RECV_MULTISHOT))
		th_skip("no multishot recvmsg: %s",
			ub_loop_feature_reason(probe, UB_FEAT_RECV_MULTISHOT));
	CHECK_OK(ub_loop_free(probe));
	test_bad_input();
	test_truncation();
	test_exhaustion();
	test_budget();
	test_exact_budget();
	test_shared_pool();
	test_close_inflight();
	test_unix_full_peer();
	test_soft_water();
	test_soft_water_foreign();
	test_unix_path();
	test_gso();
	test_echo(AF_INET, "echo over 127.0.0.1");
	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	if (fd >= 0) {
		close(fd);
		test_echo(AF_INET6, "echo over ::1");
	} else {
		printf("  echo over ::1: skipped (no IPv6)\n");
	}
	test_echo(AF_UNIX, "echo over a Unix datagram socket");
	th_check_fds("at exit");
	return th_finish();
}
