/*
 * relay.c - no relay deadlock: a uringbuf proxy in front of a uringbuf echo
 * server, both with default options, carries many concurrent streams byte
 * for byte (issue 11).
 *
 * With one shared receive pool per process (default 1024 x 4 KiB) and 1 MiB
 * high water marks, the buffers each server has queued towards the other
 * could take every buffer of both pools; then neither could receive what
 * would free the other's, and the streams stopped.  Per-connection receive
 * budgets and fair sharing must make that impossible.
 *
 * Clients (this process, one poll() loop): 64 concurrent streams of 4 MiB,
 * then 200 concurrent streams of 256 KiB.  Each writes its own pattern
 * (seeded per stream; every 8 bytes are a hash of the stream offset), shuts
 * down its sending side after the last byte, reads the echo concurrently,
 * checks every byte at its offset, and must see EOF right after the last
 * one.  A stream phase fails if no byte moves for 20 s or it takes over
 * 120 s, printing which streams are stuck and each server's buffer counts.
 *
 * Servers, each round in each send mode (the same mode for both):
 *  - in-process rounds: an echo server and a proxy written here with the
 *    core API and default uringbuf options, each in a child process forked
 *    before any loop exists.  The echo is examples/echo.c's (DATA buffer
 *    back out with ub_conn_send_buf, a FIFO and a paused receive while the
 *    queue is full).  Three proxies: examples/proxy.c's (ub_conn_pipe both
 *    ways, a receive pool per direction), and examples/proxy.py's two ways,
 *    both directions on the loop's one default pool: pipes, or forwarding
 *    DATA buffers itself (ub_conn_send_buf on the partner, a FIFO and a
 *    paused receive on -EAGAIN, WRITABLE flushes).  Their sockets have
 *    64 KiB buffers (SO_SNDBUF/SO_RCVBUF): with loopback's autotuned ones
 *    (MiBs per socket) the streams fit in the kernel and the pools never
 *    fill, while a busy server's sockets do fill.  With the core as it was
 *    before budgets, the one-pool proxies stalled here in 14 of 18 rounds
 *    (3 runs, 3 modes), the two-pool one in none, nor anything with the
 *    kernel's socket buffers.
 *  - the real $top_builddir/examples/echo and examples/proxy binaries, with
 *    the kernel's socket buffers, when they are built (tests build before
 *    examples: `make check` in a fresh tree leaves them out, saying so);
 *    then again with `proxy --inc --buf-size 65536 --buf-count 256`
 *    (incremental receive pools, forwarding slices).
 * The in-process servers, told to stop (through a pipe: under valgrind a
 * signal can wait for minutes), check that every connection closed without
 * an error and every pool is idle; the examples must exit 0 on SIGTERM.
 * Under valgrind the streams are 512 KiB and 64 KiB, the deadlines longer.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "helpers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHUNK 65536
#define MAX_STREAMS 256
/* Socket buffers of the in-process servers' sockets (see the top). */
#define SRV_SOCKBUF 65536

static uint64_t big_size = 4ull << 20, small_size = 256ull << 10;
static int stall_ms = 20000, phase_ms = 120000, stop_ms = 30000;

/* ---- the pattern: 8 bytes of hash per 8 bytes of stream ---------------- */

static inline uint64_t pat_word(uint64_t seed, uint64_t idx)
{
	uint64_t x = idx * 0x9e3779b97f4a7c15ull + seed;

	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void pat_fill(uint64_t seed, uint64_t off, uint8_t *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint64_t o = off + i, w = pat_word(seed, o >> 3);
		unsigned b = (unsigned)(o & 7);

		if (!b && len - i >= 8) {
			memcpy(p + i, &w, 8); /* little or big endian alike:
						 the check uses the same */
			i += 8;
			continue;
		}
		for (; b < 8 && i < len; b++, i++) {
			uint8_t v[8];

			memcpy(v, &w, 8);
			p[i] = v[b];
		}
	}
}

static void pat_check(uint64_t seed, uint64_t off, const uint8_t *p,
		      size_t len, int stream)
{
	static uint8_t want[CHUNK];

	CHECK_CMP(len, <=, CHUNK);
	pat_fill(seed, off, want, len);
	if (memcmp(want, p, len)) {
		size_t i = 0;

		while (want[i] == p[i])
			i++;
		TH_FAILF("stream %d: wrong byte at offset %llu: got 0x%02x, "
			 "expected 0x%02x", stream,
			 (unsigned long long)(off + i), p[i], want[i]);
	}
}

/* ---- servers in child processes ---------------------------------------- */

/*
 * The test drives its in-process servers through a pipe, not signals: 's'
 * prints the state, 'q' (or EOF: the test is gone) stops.  Under valgrind
 * a signal can stay pending for minutes: the child spends its time in
 * io_uring_enter(), which valgrind runs with signals blocked.
 */
static int srv_ctl = -1;

/* A child server's state; one kind per process. */
struct side;
struct pair {
	struct pair *next, *prev;
	struct side *side[2];
	int connected;
};

enum { CLIENT = 0, UPSTREAM = 1 };

/* One connection: an echo client, or one side of a proxy pair. */
struct side {
	ub_conn *c;
	struct pair *pair;       /* proxy only */
	int which;               /* CLIENT, UPSTREAM */
	ub_buf **fifo;           /* refused buffers received on this side */
	unsigned head, len, cap;
	int paused, eof, shut, closing;
	struct side *next, *prev; /* echo: all live connections */
};

/* The proxies: examples/proxy.c (pipes, a pool per direction), and
 * examples/proxy.py's two ways (pipes, or forwarding DATA buffers itself,
 * both directions on the loop's one default pool). */
enum { ECHO = 0, PROXY_PIPE2, PROXY_PIPE1, PROXY_FORWARD1 };
static const char *const kind_name[] = { "echo", "proxy(pipe, 2 pools)",
					 "proxy(pipe, 1 pool)",
					 "proxy(forward, 1 pool)" };
#define IS_PIPE(k) ((k) == PROXY_PIPE2 || (k) == PROXY_PIPE1)

struct server {
	int kind;
	ub_loop *loop;
	ub_pool *pool, *up_pool;
	ub_listener *l;
	ub_conn_opts up_opts;
	struct sockaddr_in to;
	struct side conns;       /* echo list head */
	struct pair pairs;       /* proxy list head */
	unsigned live, accepted, errors, l_closed;
};

static struct server S;

static void srv_warn(const char *what, int res)
{
	fprintf(stderr, "%s: %s: %d (%s)\n", kind_name[S.kind], what, res,
		strerror(-res));
	S.errors++;
}

static struct side *side_new(ub_conn *c)
{
	struct side *s = calloc(1, sizeof(*s));

	CHECK(s != NULL);
	s->c = c;
	s->cap = ub_pool_count(S.pool) + (S.up_pool ? ub_pool_count(S.up_pool)
						    : 0);
	s->fifo = calloc(s->cap, sizeof(*s->fifo));
	CHECK(s->fifo != NULL);
	S.live++;
	ub_conn_set_udata(c, s);
	return s;
}

static void fifo_push(struct side *s, ub_buf *b)
{
	CHECK_CMP(s->len, <, s->cap);
	s->fifo[(s->head + s->len) % s->cap] = b;
	s->len++;
}

static void fifo_release_all(struct side *s)
{
	while (s->len) {
		CHECK_OK(ub_buf_release(s->fifo[s->head]));
		s->head = (s->head + 1) % s->cap;
		s->len--;
	}
}

static void side_close(struct side *s)
{
	int r;

	if (!s || !s->c || s->closing)
		return;
	s->closing = 1;
	r = ub_conn_close(s->c);
	if (r < 0 && r != -EPIPE)
		srv_warn("close", r);
}

static void side_abort(struct side *s)
{
	if (!s || !s->c)
		return;
	s->closing = 1;
	(void)ub_conn_abort(s->c);
}

static struct side *partner(struct side *s)
{
	return s->pair ? s->pair->side[s->which ^ 1] : s;
}

/*
 * Send buffers received on src out of dst (dst == src for the echo):
 * everything in src's FIFO first, then b (may be NULL).  On -EAGAIN what
 * is left waits in the FIFO and src pauses; WRITABLE on dst calls again.
 */
static void forward(struct side *src, struct side *dst, ub_buf *b)
{
	int r;

	if (b)
		fifo_push(src, b);
	if (!dst || !dst->c || dst->closing || dst->shut) {
		fifo_release_all(src); /* nobody can take these bytes */
		return;
	}
	while (src->len) {
		r = ub_conn_send_buf(dst->c, src->fifo[src->head]);
		if (r == -EAGAIN)
			break;
		if (r < 0) {
			srv_warn("send_buf", r);
			fifo_release_all(src);
			side_abort(dst);
			return;
		}
		src->head = (src->head + 1) % src->cap;
		src->len--;
	}
	if (src->len && !src->paused && !src->closing) {
		r = ub_conn_pause_recv(src->c);
		if (r < 0)
			srv_warn("pause_recv", r);
		src->paused = 1;
	} else if (!src->len && src->paused && !src->closing) {
		r = ub_conn_resume_recv(src->c);
		if (r < 0)
			srv_warn("resume_recv", r);
		src->paused = 0;
	}
}

/* Forwarding proxy: once src's peer ended and its buffers are all queued,
 * shut dst's sending side; once both directions did, close both. */
static void forward_finish(struct side *src)
{
	struct side *dst = partner(src);
	int r;

	if (!src->eof || src->len || !dst || !dst->c)
		return;
	if (!dst->shut && !dst->closing) {
		dst->shut = 1;
		r = ub_conn_shutdown(dst->c);
		if (r < 0)
			srv_warn("shutdown", r);
	}
	if (dst->eof && !dst->len) {
		side_close(src);
		side_close(dst);
	}
}

/* ub_conn_udata(), not ev->udata: events queued before ACCEPT was handled
 * carry the udata of then. */
static void echo_event(const ub_event *ev)
{
	struct side *s = ub_conn_udata(ev->conn);

	if (ev->type == UB_EV_ACCEPT) {
		s = side_new(ev->conn);
		s->next = &S.conns;
		s->prev = S.conns.prev;
		S.conns.prev->next = s;
		S.conns.prev = s;
		S.accepted++;
		return;
	}
	CHECK(s != NULL);
	switch (ev->type) {
	case UB_EV_DATA:
		if (s->closing) {
			CHECK_OK(ub_buf_release(ev->buf));
			return;
		}
		forward(s, s, ev->buf);
		return;
	case UB_EV_WRITABLE:
		if (!s->closing)
			forward(s, s, NULL);
		if (s->eof && !s->len)
			side_close(s);
		return;
	case UB_EV_EOF:
		s->eof = 1;
		if (!s->len)
			side_close(s);
		return;
	case UB_EV_ERROR:
		srv_warn("connection ERROR", ev->res);
		s->closing = 1;
		fifo_release_all(s);
		return;
	case UB_EV_CLOSED:
		if (ev->res)
			srv_warn("connection CLOSED", ev->res);
		fifo_release_all(s);
		s->prev->next = s->next;
		s->next->prev = s->prev;
		free(s->fifo);
		free(s);
		S.live--;
		return;
	default:
		srv_warn(ub_event_name(ev->type), ev->res);
	}
}

static void pair_maybe_free(struct pair *p)
{
	if (p->side[CLIENT] || p->side[UPSTREAM])
		return;
	p->prev->next = p->next;
	p->next->prev = p->prev;
	free(p);
}

static void proxy_event(const ub_event *ev)
{
	struct side *s = ub_conn_udata(ev->conn), *o;
	struct pair *p;
	int err = 0, r;

	if (ev->type == UB_EV_ACCEPT) {
		ub_conn *up;

		p = calloc(1, sizeof(*p));
		CHECK(p != NULL);
		p->next = &S.pairs;
		p->prev = S.pairs.prev;
		S.pairs.prev->next = p;
		S.pairs.prev = p;
		S.accepted++;
		s = side_new(ev->conn);
		s->pair = p;
		s->which = CLIENT;
		p->side[CLIENT] = s;
		up = ub_conn_connect(S.loop, (struct sockaddr *)&S.to,
				     sizeof(S.to), &S.up_opts, &err);
		if (!up) {
			srv_warn("connect", err);
			side_abort(s);
			return;
		}
		/* before the handshake, which goes out in the next wait */
		th_set_bufs(ub_conn_fd(up), SRV_SOCKBUF);
		s = side_new(up);
		s->pair = p;
		s->which = UPSTREAM;
		p->side[UPSTREAM] = s;
		return;
	}
	CHECK(s != NULL);
	p = s->pair;
	o = partner(s);
	switch (ev->type) {
	case UB_EV_CONNECT:
		if (ev->res < 0) {
			srv_warn("CONNECT", ev->res);
			side_abort(o);
			return;
		}
		if (!o) {
			side_abort(s);
			return;
		}
		p->connected = 1;
		r = 0;
		if (IS_PIPE(S.kind)) {
			r = ub_conn_pipe(o->c, s->c);
			if (!r)
				r = ub_conn_pipe(s->c, o->c);
		}
		if (!r)
			r = ub_conn_resume_recv(o->c);
		if (!r)
			r = ub_conn_resume_recv(s->c);
		if (r < 0) {
			srv_warn("starting the pair", r);
			side_abort(s);
			side_abort(o);
		}
		return;
	case UB_EV_DATA:
		if (IS_PIPE(S.kind) || s->closing) {
			/* the core hands out what it could not pipe */
			CHECK_OK(ub_buf_release(ev->buf));
			return;
		}
		forward(s, o, ev->buf);
		return;
	case UB_EV_WRITABLE:
		if (S.kind == PROXY_FORWARD1 && o) {
			forward(o, s, NULL);
			forward_finish(o);
		}
		return;
	case UB_EV_EOF:
		s->eof = 1;
		if (S.kind == PROXY_FORWARD1) {
			forward_finish(s);
		} else if (o && o->eof) {
			side_close(s);
			side_close(o);
		}
		return;
	case UB_EV_ERROR:
		srv_warn(s->which == CLIENT ? "client ERROR" : "upstream ERROR",
			 ev->res);
		s->closing = 1;
		fifo_release_all(s);
		side_close(o);
		return;
	case UB_EV_CLOSED:
		if (ev->res)
			srv_warn("CLOSED", ev->res);
		fifo_release_all(s);
		p->side[s->which] = NULL;
		if (o && o->c) {
			if (IS_PIPE(S.kind))
				(void)ub_conn_pipe(o->c, NULL);
			fifo_release_all(o);
			if (p->connected)
				side_close(o);
			else
				side_abort(o);
		}
		free(s->fifo);
		free(s);
		S.live--;
		pair_maybe_free(p);
		return;
	default:
		srv_warn(ub_event_name(ev->type), ev->res);
	}
}

static void srv_print_stats(const char *when)
{
	unsigned thr = 0, held = 0, maxheld = 0, paused = 0, n = 0;
	ub_pool *pools[2] = { S.pool, S.up_pool };

	/* every connection: its budget state */
	if (S.kind == ECHO) {
		for (struct side *s = S.conns.next; s != &S.conns;
		     s = s->next) {
			unsigned h = ub_conn_recv_held(s->c);

			n++;
			thr += ub_conn_recv_throttled(s->c) == 1;
			held += h;
			maxheld = h > maxheld ? h : maxheld;
			paused += s->paused;
		}
	} else {
		for (struct pair *p = S.pairs.next; p != &S.pairs; p = p->next)
			for (int i = 0; i < 2; i++) {
				struct side *s = p->side[i];
				unsigned h;

				if (!s)
					continue;
				h = ub_conn_recv_held(s->c);
				n++;
				thr += ub_conn_recv_throttled(s->c) == 1;
				held += h;
				maxheld = h > maxheld ? h : maxheld;
				paused += s->paused;
			}
	}
	fprintf(stderr, "%s %s: %u conns (%u accepted), %u throttled, %u "
		"paused by us, %u buffers held (most %u), %u errors",
		kind_name[S.kind], when, n, S.accepted, thr, paused, held,
		maxheld, S.errors);
	for (int i = 0; i < 2; i++)
		if (pools[i])
			fprintf(stderr, "; pool %d: kernel %u app %u queued %u",
				i, ub_pool_count_state(pools[i], UB_BUF_KERNEL),
				ub_pool_count_state(pools[i], UB_BUF_APP),
				ub_pool_count_state(pools[i], UB_BUF_QUEUED));
	fprintf(stderr, "\n");
}

static void srv_handle(const ub_event *ev)
{
	if (!ev->conn) {
		if (ev->type == UB_EV_CLOSED)
			S.l_closed = 1;
		else
			srv_warn("listener event", ev->res);
		return;
	}
	if (S.kind == ECHO)
		echo_event(ev);
	else
		proxy_event(ev);
}

/* 1 when asked to stop. */
static int srv_poll_ctl(void)
{
	char c;
	ssize_t r;

	for (;;) {
		r = read(srv_ctl, &c, 1);
		if (r == 0)
			return 1;
		if (r < 0) {
			CHECK(errno == EAGAIN || errno == EINTR);
			return 0;
		}
		if (c == 'q')
			return 1;
		if (c == 's')
			srv_print_stats("now");
	}
}

/* Serve until told to stop (ctl), then wait for the connections to finish,
 * check and exit: 0 if nothing went wrong. */
static void server_main(int kind, int mode, int lfd, int ctl,
			const struct sockaddr_in *to, pid_t parent)
{
	static ub_event ev[256];
	ub_conn_opts o;
	double deadline;
	int err = 0, n, status = TH_PASS;

	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(TH_FAIL);
	th_watchdog(900);
	srv_ctl = ctl;
	th_set_nonblock(ctl, 1);

	memset(&S, 0, sizeof(S));
	S.kind = kind;
	S.conns.next = S.conns.prev = &S.conns;
	S.pairs.next = S.pairs.prev = &S.pairs;
	S.loop = th_loop_new(NULL); /* default pools and options */
	S.pool = ub_loop_recv_pool(S.loop, &err);
	CHECK_PTR(S.pool, err);
	ub_conn_opts_init(&o);
	o.mode = mode;
	if (kind != ECHO) {
		S.to = *to;
		o.flags |= UB_CONN_NO_RECV;
		S.up_opts = o;
		if (kind == PROXY_PIPE2) {
			/* examples/proxy.c: a pool per direction */
			S.up_pool = ub_pool_new(S.loop, ub_pool_count(S.pool),
						ub_pool_buf_size(S.pool),
						UB_POOL_RECV, &err);
			CHECK_PTR(S.up_pool, err);
			S.up_opts.recv_pool = S.up_pool;
		}
	}
	S.l = ub_listener_adopt(S.loop, lfd, &o, &err);
	CHECK_PTR(S.l, err);

	while (!srv_poll_ctl()) {
		n = ub_loop_wait(S.loop, ev, 256, 1, 100);
		if (n == -EINTR)
			continue;
		if (n < 0)
			TH_FAILF("ub_loop_wait: %d", n);
		for (int i = 0; i < n; i++)
			srv_handle(&ev[i]);
	}
	/* the clients are done: every connection must close by itself */
	deadline = th_now_ms() + stop_ms;
	while (S.live && th_now_ms() < deadline) {
		n = ub_loop_wait(S.loop, ev, 256, 1, 50);
		if (n == -EINTR)
			continue;
		if (n < 0)
			TH_FAILF("ub_loop_wait: %d", n);
		for (int i = 0; i < n; i++)
			srv_handle(&ev[i]);
	}
	if (S.live) {
		srv_print_stats("at exit");
		fprintf(stderr, "%s: %u connections still open %d ms after "
			"the clients finished\n", kind_name[kind], S.live,
			stop_ms);
		status = TH_FAIL;
	}
	CHECK_OK(ub_listener_close(S.l));
	deadline = th_now_ms() + 10000;
	while (!S.l_closed && th_now_ms() < deadline) {
		n = ub_loop_wait(S.loop, ev, 256, 1, 50);
		if (n < 0 && n != -EINTR)
			TH_FAILF("ub_loop_wait: %d", n);
		for (int i = 0; i < n; i++)
			srv_handle(&ev[i]);
	}
	(void)ub_loop_wait(S.loop, ev, 256, 0, 0); /* frees the closed */
	if (S.errors)
		status = TH_FAIL;
	if (!S.live) {
		if (!th_pool_idle(S.pool) ||
		    (S.up_pool && !th_pool_idle(S.up_pool))) {
			srv_print_stats("at exit");
			fprintf(stderr, "%s: a pool is not idle at exit\n",
				kind_name[kind]);
			status = TH_FAIL;
		}
	} else {
		/* give back what we hold, so that the loop frees cleanly */
		for (struct side *s = S.conns.next; s != &S.conns; s = s->next)
			fifo_release_all(s);
		for (struct pair *p = S.pairs.next; p != &S.pairs; p = p->next)
			for (int i = 0; i < 2; i++)
				if (p->side[i])
					fifo_release_all(p->side[i]);
	}
	CHECK_OK(ub_loop_free(S.loop));
	while (S.conns.next != &S.conns) {
		struct side *s = S.conns.next;

		S.conns.next = s->next;
		free(s->fifo);
		free(s);
	}
	while (S.pairs.next != &S.pairs) {
		struct pair *p = S.pairs.next;

		for (int i = 0; i < 2; i++)
			if (p->side[i]) {
				free(p->side[i]->fifo);
				free(p->side[i]);
			}
		S.pairs.next = p->next;
		free(p);
	}
	CHECK(close(ctl) == 0);
	fflush(stdout);
	fflush(stderr);
	_exit(status);
}

/* ---- processes ---------------------------------------------------------- */

struct proc {
	pid_t pid;
	const char *name;
	int ctl;          /* one of ours: its control pipe (else -1) */
};

/* The test's ends of the control pipes of the live in-process servers:
 * each new child closes them (the others' EOF must not wait for it). */
static int ctl_fds[4];
static int n_ctl;

/* A server child on lfd (closed here afterwards); the child also closes
 * other, the listening socket meant for the other child (-1: none). */
static void spawn_server(struct proc *p, int kind, int mode, int lfd,
			 int other, const struct sockaddr_in *to)
{
	pid_t parent = getpid();
	int ctl[2];

	CHECK(pipe2(ctl, O_CLOEXEC) == 0);
	fflush(stdout);
	fflush(stderr);
	p->name = kind_name[kind];
	p->pid = fork();
	CHECK(p->pid >= 0);
	if (p->pid == 0) {
		if (other >= 0)
			close(other);
		for (int i = 0; i < n_ctl; i++)
			close(ctl_fds[i]);
		close(ctl[1]);
		server_main(kind, mode, lfd, ctl[0], to, parent);
	}
	CHECK(close(ctl[0]) == 0);
	CHECK(close(lfd) == 0);
	p->ctl = ctl[1];
	CHECK_CMP(n_ctl, <, 4);
	ctl_fds[n_ctl++] = ctl[1];
}

static void ctl_forget(int fd)
{
	for (int i = 0; i < n_ctl; i++)
		if (ctl_fds[i] == fd) {
			ctl_fds[i] = ctl_fds[--n_ctl];
			break;
		}
	CHECK(close(fd) == 0);
}

/* Run path with args; its first stdout line must be "listening on A:P". */
static pid_t spawn_example(const char *path, char *const argv[],
			   struct sockaddr_in *addr)
{
	char line[256];
	size_t n = 0;
	double deadline = th_now_ms() + 20000;
	pid_t parent = getpid(), pid;
	int pfd[2];
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	CHECK(pipe2(pfd, O_CLOEXEC) == 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (dup2(pfd[1], 1) < 0)
			_exit(127);
		execv(path, argv);
		fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	while (n < sizeof(line) - 1 && (!n || line[n - 1] != '\n')) {
		struct pollfd p = { .fd = pfd[0], .events = POLLIN };
		ssize_t r;

		if (th_now_ms() > deadline)
			TH_FAILF("%s printed no \"listening on\" line in 20 s",
				 path);
		if (poll(&p, 1, 100) <= 0)
			continue;
		r = read(pfd[0], line + n, 1);
		if (r <= 0)
			TH_FAILF("%s exited before listening", path);
		n++;
	}
	line[n] = 0;
	close(pfd[0]);
	if (strncmp(line, "listening on ", 13))
		TH_FAILF("%s printed \"%s\"", path, line);
	line[n - 1] = 0;
	CHECK_OK(ub_addr_parse(line + 13, &ss, &len));
	CHECK_EQ(ss.ss_family, AF_INET);
	memcpy(addr, &ss, sizeof(*addr));
	return pid;
}

/* Stop it ('q' to ours, SIGTERM to an example), then the exit status
 * within stop_ms (+ 10 s); 1 if it exited 0.  After a failed phase
 * (!graceful) the servers may be wedged: SIGKILL. */
static int stop_proc(struct proc *p, int graceful)
{
	double deadline = th_now_ms() + stop_ms + 10000;
	int status;

	if (!graceful) {
		CHECK(kill(p->pid, SIGKILL) == 0);
		while (waitpid(p->pid, &status, 0) < 0)
			CHECK(errno == EINTR);
		if (p->ctl >= 0)
			ctl_forget(p->ctl);
		return 0;
	}
	if (p->ctl >= 0) {
		CHECK_EQ(write(p->ctl, "q", 1), 1);
		ctl_forget(p->ctl);
		p->ctl = -1;
	} else {
		CHECK(kill(p->pid, SIGTERM) == 0);
	}
	for (;;) {
		pid_t r = waitpid(p->pid, &status, WNOHANG);

		if (r == p->pid)
			break;
		CHECK(r == 0);
		if (th_now_ms() > deadline) {
			fprintf(stderr, "%s did not exit when told to: "
				"killed\n", p->name);
			kill(p->pid, SIGKILL);
			while (waitpid(p->pid, &status, 0) < 0)
				CHECK(errno == EINTR);
			return 0;
		}
		th_sleep_ms(10);
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 1;
	fprintf(stderr, "%s: %s %d\n", p->name,
		WIFEXITED(status) ? "exit" : "signal",
		WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	return 0;
}

/* ---- the clients -------------------------------------------------------- */

struct stream {
	int fd;
	uint64_t seed, written, rd;
	int shut, eof;
};

static int stream_phase(const struct sockaddr_in *proxy, int n,
			uint64_t size, struct proc *procs, int nprocs,
			const char *what)
{
	static uint8_t buf[CHUNK];
	static struct pollfd pfd[MAX_STREAMS];
	static int idx[MAX_STREAMS];
	struct stream *st = calloc((size_t)n, sizeof(*st));
	uint64_t moved = 0, last_moved = 0;
	double t0 = th_now_ms(), last = t0;
	int done = 0, ok = 1;

	CHECK(st != NULL);
	CHECK_CMP(n, <=, MAX_STREAMS);
	for (int i = 0; i < n; i++) {
		st[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK(st[i].fd >= 0);
		CHECK(connect(st[i].fd, (const struct sockaddr *)proxy,
			      sizeof(*proxy)) == 0);
		th_set_nonblock(st[i].fd, 1);
		st[i].seed = th_rand() | 1;
	}
	while (done < n) {
		int np = 0;
		double now = th_now_ms();

		if (moved != last_moved) {
			last_moved = moved;
			last = now;
		}
		if (now - last > stall_ms || now - t0 > phase_ms) {
			int wr = 0, rdn = 0;
			uint64_t sw = 0, sr = 0;

			for (int i = 0; i < n; i++) {
				if (st[i].eof)
					continue;
				wr += st[i].written < size;
				rdn++;
				sw += st[i].written;
				sr += st[i].rd;
			}
			fprintf(stderr, "%s: %s after %.0f ms: %d of %d "
				"streams unfinished (%d still writing), they "
				"wrote %llu and read %llu of %llu bytes\n",
				what,
				now - t0 > phase_ms ? "too slow" : "stalled",
				now - t0, rdn, n, wr, (unsigned long long)sw,
				(unsigned long long)sr,
				(unsigned long long)(size * (uint64_t)rdn));
			for (int i = 0, shown = 0; i < n && shown < 8; i++) {
				if (st[i].eof)
					continue;
				shown++;
				fprintf(stderr, "  stream %d: wrote %llu, read "
					"%llu%s\n", i,
					(unsigned long long)st[i].written,
					(unsigned long long)st[i].rd,
					st[i].shut ? ", shut" : "");
			}
			for (int i = 0; i < nprocs; i++)
				if (procs[i].ctl >= 0)
					CHECK_EQ(write(procs[i].ctl, "s", 1),
						 1);
			th_sleep_ms(500); /* their stats lines */
			ok = 0;
			break;
		}
		for (int i = 0; i < n; i++) {
			if (st[i].eof)
				continue;
			pfd[np].fd = st[i].fd;
			pfd[np].events = (short)(POLLIN |
				(st[i].written < size ? POLLOUT : 0));
			pfd[np].revents = 0;
			idx[np++] = i;
		}
		if (poll(pfd, (nfds_t)np, 100) < 0) {
			CHECK(errno == EINTR);
			continue;
		}
		for (int k = 0; k < np; k++) {
			struct stream *s = &st[idx[k]];

			if (!pfd[k].revents)
				continue;
			for (int w = 0; w < 4 && s->written < size; w++) {
				uint64_t len = size - s->written;
				ssize_t r;

				if (len > CHUNK)
					len = CHUNK;
				pat_fill(s->seed, s->written, buf, len);
				r = write(s->fd, buf, len);
				if (r < 0 &&
				    (errno == EAGAIN || errno == EINTR))
					break;
				if (r < 0)
					TH_FAILF("%s: stream %d: write after "
						 "%llu bytes: %s", what,
						 idx[k],
						 (unsigned long long)s->written,
						 strerror(errno));
				s->written += (uint64_t)r;
				moved += (uint64_t)r;
			}
			if (s->written == size && !s->shut) {
				CHECK(shutdown(s->fd, SHUT_WR) == 0);
				s->shut = 1;
			}
			for (int rr = 0; rr < 4; rr++) {
				ssize_t r = read(s->fd, buf, CHUNK);

				if (r < 0 &&
				    (errno == EAGAIN || errno == EINTR))
					break;
				if (r < 0)
					TH_FAILF("%s: stream %d: read after "
						 "%llu bytes: %s", what,
						 idx[k],
						 (unsigned long long)s->rd,
						 strerror(errno));
				if (r == 0) {
					if (s->rd != size)
						TH_FAILF("%s: stream %d: EOF "
							 "after %llu of %llu "
							 "bytes", what, idx[k],
							 (unsigned long long)
								 s->rd,
							 (unsigned long long)
								 size);
					s->eof = 1;
					done++;
					CHECK(close(s->fd) == 0);
					break;
				}
				if (s->rd + (uint64_t)r > s->written)
					TH_FAILF("%s: stream %d: read past "
						 "what it wrote", what, idx[k]);
				pat_check(s->seed, s->rd, buf, (size_t)r,
					  idx[k]);
				s->rd += (uint64_t)r;
				moved += (uint64_t)r;
			}
		}
	}
	for (int i = 0; i < n; i++)
		if (!st[i].eof)
			CHECK(close(st[i].fd) == 0);
	if (ok)
		printf("    %s: %d x %llu KiB echoed byte-exact in %.0f ms\n",
		       what, n, (unsigned long long)(size >> 10),
		       th_now_ms() - t0);
	free(st);
	return ok;
}

/* ---- rounds ------------------------------------------------------------- */

static void streams_and_stop(const struct sockaddr_in *proxy,
			     struct proc *procs, int nprocs, const char *round)
{
	char what[96];
	int ok;

	snprintf(what, sizeof(what), "%s, 64 streams", round);
	ok = stream_phase(proxy, 64, big_size, procs, nprocs, what);
	if (ok) {
		snprintf(what, sizeof(what), "%s, 200 streams", round);
		ok = stream_phase(proxy, 200, small_size, procs, nprocs, what);
	}
	/* stop the proxy first: its connections to the echo close */
	for (int i = nprocs - 1; i >= 0; i--)
		if (!stop_proc(&procs[i], ok))
			ok = 0;
	if (!ok)
		EXPECT_FAILF("%s: failed", round);
}

static void round_in_process(int mode, int kind)
{
	struct sockaddr_in echo_addr, proxy_addr;
	struct proc procs[2];
	char round[64];
	int el = th_listen_socket(&echo_addr, SOMAXCONN, SRV_SOCKBUF);
	int pl = th_listen_socket(&proxy_addr, SOMAXCONN, SRV_SOCKBUF);

	snprintf(round, sizeof(round), "%s %s", ub_mode_name(mode),
		 kind_name[kind]);
	/* both listening sockets exist before either child: the echo's
	 * child closes the proxy's copy (the proxy's never sees the echo's) */
	spawn_server(&procs[0], ECHO, mode, el, pl, NULL);
	spawn_server(&procs[1], kind, mode, pl, -1, &echo_addr);
	streams_and_stop(&proxy_addr, procs, 2, round);
}

static int example_path(char *out, size_t len, const char *name)
{
	const char *top = getenv("top_builddir");

	snprintf(out, len, "%s/examples/%s", top && *top ? top : "..", name);
	return access(out, X_OK) == 0;
}

/* inc: the proxy with --inc (incremental receive pools of 64 KiB
 * buffers; where the kernel lacks them it says so on stderr and runs with
 * ordinary ones). */
static void round_examples(int mode, int inc)
{
	char echo[4096], proxy[4096], to[64], round[64];
	struct sockaddr_in echo_addr, proxy_addr;
	struct proc procs[2];

	if (!example_path(echo, sizeof(echo), "echo") ||
	    !example_path(proxy, sizeof(proxy), "proxy")) {
		printf("    examples: not built (%s): round left out\n", echo);
		return;
	}
	snprintf(round, sizeof(round), "%s examples%s", ub_mode_name(mode),
		 inc ? ", proxy --inc" : "");
	{
		char *argv[] = { echo, "--listen", "127.0.0.1:0", "--mode",
				 (char *)ub_mode_name(mode), NULL };

		procs[0].name = "examples/echo";
		procs[0].ctl = -1;
		procs[0].pid = spawn_example(echo, argv, &echo_addr);
	}
	snprintf(to, sizeof(to), "127.0.0.1:%u", ntohs(echo_addr.sin_port));
	{
		char *argv[] = { proxy, "--listen", "127.0.0.1:0", "--to", to,
				 "--mode", (char *)ub_mode_name(mode),
				 inc ? "--inc" : NULL, "--buf-size", "65536",
				 "--buf-count", "256", NULL };

		procs[1].name = "examples/proxy";
		procs[1].ctl = -1;
		procs[1].pid = spawn_example(proxy, argv, &proxy_addr);
	}
	streams_and_stop(&proxy_addr, procs, 2, round);
}

static void one_mode(int mode, void *arg)
{
	(void)arg;
	th_watchdog(900);
	round_in_process(mode, PROXY_PIPE2);
	round_in_process(mode, PROXY_PIPE1);
	round_in_process(mode, PROXY_FORWARD1);
	round_examples(mode, 0);
	round_examples(mode, 1);
}

int main(void)
{
	th_init("relay");
	if (th_under_valgrind()) {
		big_size = 512ull << 10;
		small_size = 64ull << 10;
		stall_ms = 120000;
		phase_ms = 900000;
		stop_ms = 120000;
	}
	th_for_each_mode(one_mode, NULL);
	return th_finish();
}
