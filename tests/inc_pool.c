/*
 * inc_pool.c - incremental receive pools (UB_POOL_RECV | UB_POOL_INC,
 * IOU_PBUF_RING_INC): each DATA event is a slice of a pool buffer.
 *
 * Always, feature or not:
 *  - fallback: on a loop whose opts disable UB_FEAT_PBUF_INC, a RECV|INC
 *    pool is made without UB_POOL_INC and receives in whole buffers
 *    (capacity = the pool's size, ub_pool_slices() 0 throughout; held
 *    buffers count one each), and a datagram endpoint takes it; so does the
 *    default receive pool of such a loop with pool_flags UB_POOL_INC;
 *  - the checks: ub_loop_opts_check() refuses an unknown pool_flags bit
 *    (-EINVAL, a reason; ub_loop_new() too), ub_pool_check() and
 *    ub_pool_new() refuse UB_POOL_INC without UB_POOL_RECV.
 * Then, where the kernel has UB_FEAT_PBUF_INC (else SKIP with its reason):
 *  - stream: random writes of 1 B .. 200 KiB over TCP, a Unix socketpair
 *    and TCP with one-shot receives arrive byte-exact in order; every slice has capacity == len, lies in
 *    the pool buffer ub_buf_index() names, and consecutive slices of one
 *    pool buffer are contiguous; many share a pool buffer; set_len above the
 *    capacity is -EINVAL, below works; release moves the generation on and
 *    a second release is -EINVAL;
 *  - small messages: 1000 writes of 10 bytes, every slice held: they share
 *    one pool buffer (KERNEL stays at the pool's count, ub_pool_slices()
 *    and ub_conn_recv_held() count them) until the receive budget (in
 *    slices) throttles, the throttle holds, releasing resumes, every byte
 *    arrives;
 *  - out of order: two connections' held slices over several pool buffers,
 *    some shared between them, survive a third connection cycling the ring
 *    (bytes intact), and come back in random order: APP counts the finished
 *    pool buffers with slices out at every step, all KERNEL at the end;
 *  - an exhausted pool (four connections hold a whole pool buffer each): a
 *    fifth waits, and the buffer released first is handed to it: one slice
 *    at its start;
 *  - lifetime: a slice held past its connection's end keeps its bytes and
 *    keeps the pool from being freed (-EBUSY) until released; a slice held
 *    when the loop is freed is the loop's to free (valgrind watches);
 *  - the limit of 64 slices out per pool buffer: the 65th receive fails the
 *    connection with -ENOBUFS;
 *  - ub_loop_opts.pool_flags = UB_POOL_INC: the default receive pool is
 *    incremental (not the send pool), connections with no pool of their
 *    own receive slices from it;
 *  - datagram endpoints refuse an incremental pool (opts check with a
 *    reason, open, adopt; the loop's incremental default pool too);
 *  - zero-copy forwarding in every send mode: client -> A, each slice sent
 *    on B (ub_conn_send_buf), B's reader gets every byte; then the same with
 *    ub_conn_pipe(A, B); A's budget throttles while B's reader stalls, and
 *    every slice comes back: the pool is all KERNEL, no slice out;
 *  - a pool buffer's own handle (ub_pool_buf()) while a slice of it is out
 *    is not the application's: release, set_len and send_buf refuse it,
 *    and the held slice's bytes stay as the ring goes round.
 * Budget overshoot: a multishot receive may complete more than once before
 * the loop sees the budget reached, so where reads are not one at a time
 * the slices held are bounded loosely and the pool buffers they pin by the
 * budget.
 */
#include "helpers.h"

#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#define KIB 1024u
#define WMAX (200u * KIB) /* largest write */
#define MAX_HELD 512
#define NSIDES 5

/* Soft checks of counts: printed and counted, the test goes on. */
#define EXPECT_EQ(a, b)                                                        \
	do {                                                                   \
		long long a_ = (long long)(a), b_ = (long long)(b);            \
		if (a_ != b_)                                                  \
			th_soft_fail_at(__FILE__, __LINE__,                    \
					"EXPECT_EQ(%s, %s) failed: %lld != "   \
					"%lld",                                \
					#a, #b, a_, b_);                       \
	} while (0)
#define EXPECT_CMP(a, op, b)                                                   \
	do {                                                                   \
		long long a_ = (long long)(a), b_ = (long long)(b);            \
		if (!(a_ op b_))                                               \
			th_soft_fail_at(__FILE__, __LINE__,                    \
					"EXPECT(%s %s %s) failed: %lld vs "    \
					"%lld",                                \
					#a, #op, #b, a_, b_);                  \
	} while (0)

/* A plain socket writing a pattern into a connection, one message at a
 * time (nonblocking; a message cut short goes on at the next call). */
struct writer {
	int fd;
	uint64_t seed;
	uint64_t wr;     /* bytes written */
	size_t left;     /* of the current message */
	size_t mlen;     /* the current message's length */
	long msgs;       /* messages still to start */
	size_t maxmsg;   /* 0: the mixed distribution of msg_size() */
	int shut, shut_done; /* shutdown(SHUT_WR) once done */
	uint8_t *msg;    /* the current message */
};

struct side {
	const char *name;
	ub_conn *c;
	struct writer w;
	uint64_t rd;     /* bytes delivered (checked) */
	long data;       /* DATA events */
	unsigned held;   /* slices of it the test holds */
	int hold;        /* hold slices instead of releasing them */
	ub_conn *fwd;    /* send every slice there instead */
	int eof, closed, close_res, err_res, expect_err;
	long writable;
};

struct slice {
	ub_buf *b;
	struct side *s;
	uint64_t off;
	size_t len;
	unsigned idx;
};

struct test {
	ub_loop *loop;
	ub_pool *pool;   /* the receive pool under test */
	int inc;         /* it is incremental: expect slices */
	struct side s[NSIDES];
	unsigned conn_flags; /* for side_open() */
	struct th_peer rdr; /* forwarding: B's reader */
	struct side *cur;
	struct slice held[MAX_HELD];
	int nheld;
	/* consecutive slices */
	int have_prev;
	unsigned prev_idx;
	const uint8_t *prev_end;
	long slices_seen, shared, noncontig, setlen_done, stale_gen;
	size_t max_slice;
};

static uint8_t seen_idx[32768];

static size_t msg_size(const struct writer *w)
{
	if (w->maxmsg)
		return th_rand_range(1, w->maxmsg);
	switch (th_rand() % 4) {
	case 0:
		return th_rand_range(1, WMAX);
	case 1:
		return th_rand_range(1, 64);
	default:
		return th_rand_range(1, 8192);
	}
}

static void writer_init(struct writer *w, int fd, long msgs, size_t maxmsg)
{
	memset(w, 0, sizeof(*w));
	w->fd = fd;
	w->seed = th_rand();
	w->msgs = msgs;
	w->maxmsg = maxmsg;
	w->msg = malloc(WMAX);
	CHECK(w->msg != NULL);
	th_set_nonblock(fd, 1);
}

static int writer_done(const struct writer *w)
{
	return !w->left && !w->msgs;
}

static void writer_start(struct writer *w, size_t len)
{
	CHECK(len > 0 && len <= WMAX);
	w->mlen = w->left = len;
	th_pat_fill(w->seed, w->wr, w->msg, len);
}

/* Write (the rest of) one message; returns the bytes written now. */
static long writer_step(struct writer *w)
{
	ssize_t r;

	if (!w->left) {
		if (!w->msgs) {
			if (w->shut && !w->shut_done) {
				CHECK(shutdown(w->fd, SHUT_WR) == 0);
				w->shut_done = 1;
			}
			return 0;
		}
		writer_start(w, msg_size(w));
		w->msgs--;
	}
	r = write(w->fd, w->msg + (w->mlen - w->left), w->left);
	if (r < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		TH_FAILF("write: %s", strerror(errno));
	}
	w->wr += (uint64_t)r;
	w->left -= (size_t)r;
	return r;
}

/* One whole message of len bytes, now (the socket has room for it). */
static void writer_msg(struct writer *w, size_t len)
{
	CHECK(!w->left);
	writer_start(w, len);
	CHECK_EQ(writer_step(w), (long)len);
}

static unsigned count(const struct test *t, int state)
{
	return ub_pool_count_state(t->pool, state);
}

static void check_idle(struct test *t, const char *what)
{
	unsigned n = ub_pool_count(t->pool);

	if (count(t, UB_BUF_KERNEL) != n || ub_pool_slices(t->pool) ||
	    count(t, UB_BUF_APP) || count(t, UB_BUF_QUEUED) ||
	    count(t, UB_BUF_FREE))
		TH_FAILF("%s: pool not idle: count %u, KERNEL %u APP %u "
			 "QUEUED %u FREE %u, %u slices out",
			 what, n, count(t, UB_BUF_KERNEL), count(t, UB_BUF_APP),
			 count(t, UB_BUF_QUEUED), count(t, UB_BUF_FREE),
			 ub_pool_slices(t->pool));
}

/* Release an APP slice: the generation moves on, a second release is
 * -EINVAL, one slice less is out. */
static void release_checked(struct test *t, ub_buf *b)
{
	uint32_t g = ub_buf_gen(b);
	unsigned sl = ub_pool_slices(t->pool);

	CHECK_OK(ub_buf_release(b));
	CHECK(ub_buf_gen(b) != g);
	CHECK_ERR(ub_buf_release(b), EINVAL);
	CHECK_ERR(ub_buf_set_len(b, 0), EINVAL);
	if (t->inc)
		CHECK_EQ(ub_pool_slices(t->pool), sl - 1);
}

/* set_len on a slice: up to its capacity (= its length when received). */
static void setlen_checks(struct test *t, ub_buf *b, size_t len)
{
	CHECK_ERR(ub_buf_set_len(b, len + 1), EINVAL);
	CHECK_ERR(ub_buf_set_len(b, (size_t)ub_pool_buf_size(t->pool) + 1),
		  EINVAL);
	CHECK_EQ(ub_buf_len(b), len); /* a failed call changes nothing */
	if (len > 1) {
		CHECK_OK(ub_buf_set_len(b, len - 1));
		CHECK_EQ(ub_buf_len(b), len - 1);
		CHECK_EQ(ub_buf_capacity(b), len);
	}
	CHECK_OK(ub_buf_set_len(b, 0));
	CHECK_EQ(ub_buf_len(b), 0);
	CHECK_OK(ub_buf_set_len(b, len));
	CHECK_EQ(ub_buf_len(b), len);
	t->setlen_done++;
}

static void on_data(struct test *t, struct side *s, const ub_event *ev)
{
	ub_buf *b = ev->buf;
	size_t len, size = ub_pool_buf_size(t->pool);
	const uint8_t *d, *start;
	unsigned idx;

	CHECK(b != NULL);
	CHECK(ub_buf_pool(b) == t->pool);
	CHECK_EQ(ub_buf_state(b), UB_BUF_APP);
	len = ub_buf_len(b);
	CHECK_EQ(ev->res, len);
	CHECK_CMP(len, >, 0);
	idx = ub_buf_index(b);
	CHECK_CMP(idx, <, ub_pool_count(t->pool));
	d = ub_buf_data(b);
	start = ub_buf_data(ub_pool_buf(t->pool, idx));
	CHECK(d != NULL && start != NULL);
	if (t->inc) {
		/* the slice cannot grow into bytes the kernel may still
		 * write: its capacity is what it received */
		CHECK_EQ(ub_buf_capacity(b), len);
		if (d < start || d + len > start + size)
			TH_FAILF("%s: slice of %zu bytes at %td of pool buffer "
				 "%u (of %zu bytes)", s->name, len, d - start,
				 idx, size);
		CHECK_CMP(ub_pool_slices(t->pool), >=, 1);
		if (t->have_prev && idx == t->prev_idx) {
			/* the kernel goes on where it stopped */
			t->shared++;
			if (d != t->prev_end)
				t->noncontig++;
		}
	} else {
		CHECK_EQ(ub_buf_capacity(b), size);
		CHECK(d == start);
		CHECK_CMP(len, <=, size);
		CHECK_EQ(ub_pool_slices(t->pool), 0);
	}
	t->have_prev = 1;
	t->prev_idx = idx;
	t->prev_end = d + len;
	if (len > t->max_slice)
		t->max_slice = len;
	th_pat_check(s->w.seed, s->rd, d, len, s->name);
	t->slices_seen++;
	s->data++;
	if (t->inc && t->slices_seen % 5 == 0)
		setlen_checks(t, b, len);
	if (s->fwd) {
		uint32_t g = ub_buf_gen(b);

		CHECK_EQ(ub_conn_send_buf(s->fwd, b), 0);
		CHECK_EQ(ub_buf_state(b), UB_BUF_QUEUED);
		if (ub_buf_gen(b) == g)
			t->stale_gen++;
	} else if (s->hold) {
		struct slice *h;

		CHECK_CMP(t->nheld, <, MAX_HELD);
		h = &t->held[t->nheld++];
		h->b = b;
		h->s = s;
		h->off = s->rd;
		h->len = len;
		h->idx = idx;
		s->held++;
	} else {
		release_checked(t, b);
	}
	s->rd += len;
}

static void on_event(const ub_event *ev, void *arg)
{
	struct test *t = arg;
	struct side *s = ev->udata;

	if (ev->dgram)
		return; /* an endpoint that should not have opened: closing */
	CHECK(s != NULL);
	CHECK(ev->conn == s->c);
	switch (ev->type) {
	case UB_EV_DATA:
		on_data(t, s, ev);
		return;
	case UB_EV_EOF:
		s->eof = 1;
		return;
	case UB_EV_WRITABLE:
		s->writable++;
		return;
	case UB_EV_ERROR:
		s->err_res = ev->res;
		if (s->expect_err)
			return;
		break;
	case UB_EV_CLOSED:
		s->closed = 1;
		s->close_res = ev->res;
		return;
	}
	TH_FAILF("%s: unexpected %s res %d (%s)", s->name,
		 ub_event_name(ev->type), ev->res,
		 ev->res < 0 ? strerror(-ev->res) : "");
}

static void nodelay(int fd)
{
	int one = 1;

	/* small writes go out at once, not after the peer's delayed ACK */
	CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ==
	      0);
}

/* A connection on one end of a new pair (TCP over loopback, or a Unix
 * socketpair), its writer on the other. */
static void side_open(struct test *t, struct side *s, const char *name,
		      int unix_pair, ub_pool *rpool, size_t budget, int mode,
		      long msgs, size_t maxmsg)
{
	ub_conn_opts o;
	int fds[2], err = 0;

	if (unix_pair) {
		th_socketpair(fds);
	} else {
		th_tcp_pair(fds, 0);
		nodelay(fds[0]);
		nodelay(fds[1]);
	}
	memset(s, 0, sizeof(*s));
	s->name = name;
	writer_init(&s->w, fds[1], msgs, maxmsg);
	ub_conn_opts_init(&o);
	o.recv_pool = rpool;
	o.recv_budget = budget;
	o.mode = mode;
	o.flags = t->conn_flags;
	o.udata = s;
	s->c = ub_conn_adopt(t->loop, fds[0], &o, &err);
	CHECK_PTR(s->c, err);
}

static struct test *test_new(const ub_loop_opts *lo)
{
	struct test *t = calloc(1, sizeof(*t));

	CHECK(t != NULL);
	t->loop = th_loop_new(lo);
	t->rdr.fd = -1;
	return t;
}

static ub_pool *inc_pool(struct test *t, unsigned n, unsigned size)
{
	int err = 0;

	t->pool = ub_pool_new(t->loop, n, size, UB_POOL_RECV | UB_POOL_INC,
			      &err);
	CHECK_PTR(t->pool, err);
	t->inc = !!(ub_pool_flags(t->pool) & UB_POOL_INC);
	CHECK_EQ(ub_pool_count(t->pool), n);
	CHECK_EQ(ub_pool_buf_size(t->pool), size);
	CHECK(ub_pool_flags(t->pool) & UB_POOL_RECV);
	CHECK_EQ(ub_pool_slices(t->pool), 0);
	CHECK_EQ(count(t, UB_BUF_KERNEL), n);
	return t->pool;
}

static int step_all_closed(void *arg)
{
	struct test *t = arg;

	if (t->rdr.fd >= 0)
		th_peer_read(&t->rdr);
	for (int i = 0; i < NSIDES; i++)
		if (t->s[i].c && !t->s[i].closed)
			return TH_IDLE;
	return TH_DONE;
}

/* Close every connection still open, wait for their CLOSED, free them,
 * close the plain sockets; then the pool must be idle. */
static void test_end(struct test *t, int free_loop)
{
	for (int i = 0; i < NSIDES; i++) {
		struct side *s = &t->s[i];

		if (s->c && !s->closed && !ub_conn_is_closing(s->c))
			CHECK_OK(ub_conn_close(s->c));
		else if (s->c && !s->closed)
			(void)ub_conn_close(s->c); /* shut: close all the same */
	}
	th_run(t->loop, on_event, step_all_closed, t, 10, TH_TIMEOUT_MS,
	       "every connection CLOSED");
	th_run_for(t->loop, on_event, NULL, t, 1, 20); /* frees them */
	for (int i = 0; i < NSIDES; i++) {
		struct side *s = &t->s[i];

		if (s->c) {
			CHECK_EQ(s->held, 0);
			if (s->close_res != 0 && !s->expect_err)
				TH_FAILF("%s: CLOSED res %d", s->name,
					 s->close_res);
			if (s->w.fd >= 0)
				CHECK(close(s->w.fd) == 0);
			free(s->w.msg);
			s->c = NULL;
		}
	}
	if (t->rdr.fd >= 0) {
		CHECK(close(t->rdr.fd) == 0);
		t->rdr.fd = -1;
	}
	CHECK_EQ(t->nheld, 0);
	if (t->pool) {
		check_idle(t, "at the end");
		CHECK_OK(ub_pool_free(t->pool));
		t->pool = NULL;
	}
	if (free_loop) {
		CHECK_OK(ub_loop_free(t->loop));
		free(t);
	}
}

/* Distinct pool buffers among held[from, to). */
static unsigned distinct(const struct test *t, int from, int to)
{
	unsigned n = 0;

	memset(seen_idx, 0, sizeof(seen_idx));
	for (int i = from; i < to; i++)
		if (!seen_idx[t->held[i].idx]) {
			seen_idx[t->held[i].idx] = 1;
			n++;
		}
	return n;
}

/* Every held slice still APP, its length and bytes as received. */
static void verify_held(const struct test *t, const char *what)
{
	for (int i = 0; i < t->nheld; i++) {
		const struct slice *h = &t->held[i];

		CHECK_EQ(ub_buf_state(h->b), UB_BUF_APP);
		CHECK_EQ(ub_buf_len(h->b), h->len);
		CHECK_EQ(ub_buf_index(h->b), h->idx);
		th_pat_check(h->s->w.seed, h->off, ub_buf_data(h->b), h->len,
			     what);
	}
}

static void release_held(struct test *t, int from_end)
{
	while (t->nheld) {
		struct slice *h = &t->held[from_end ? t->nheld - 1 : 0];

		release_checked(t, h->b);
		h->s->held--;
		if (!from_end)
			memmove(&t->held[0], &t->held[1],
				(size_t)(t->nheld - 1) * sizeof(t->held[0]));
		t->nheld--;
	}
	CHECK_EQ(ub_pool_slices(t->pool), 0);
}

/* ---- 7: fallback without the feature ------------------------------------ */

static int step_stream(void *arg)
{
	struct test *t = arg;
	struct side *s = t->cur;
	long n = writer_step(&s->w);

	if (writer_done(&s->w) && s->rd == s->w.wr)
		return TH_DONE;
	return n > 0 ? TH_BUSY : TH_IDLE;
}

static int step_got_or_throttled(void *arg)
{
	struct test *t = arg;
	struct side *s = t->cur;

	if (s->rd == s->w.wr || s->closed)
		return TH_DONE;
	if (s->held && ub_conn_recv_throttled(s->c) == 1)
		return TH_DONE;
	return TH_IDLE;
}

static void fallback(void)
{
	ub_loop_opts lo = { .disable = UB_FEAT_PBUF_INC };
	struct test *t;
	const char *reason;
	ub_dgram_opts dopt;
	int r;

	printf("fallback: loop without UB_FEAT_PBUF_INC\n");
	t = test_new(&lo);
	CHECK_EQ(ub_loop_features(t->loop) & UB_FEAT_PBUF_INC, 0);
	reason = ub_loop_feature_reason(t->loop, UB_FEAT_PBUF_INC);
	CHECK(reason != NULL);
	printf("  reason: %s\n", reason);
	inc_pool(t, 8, 16 * KIB);
	CHECK_EQ(ub_pool_flags(t->pool), UB_POOL_RECV);
	CHECK_EQ(t->inc, 0);

	/* small messages, held: a whole buffer each */
	side_open(t, &t->s[0], "fallback", 0, t->pool, 0, UB_MODE_AUTO, 0, 0);
	t->cur = &t->s[0];
	t->s[0].hold = 1;
	for (int i = 0; i < 3; i++) {
		writer_msg(&t->s[0].w, 10);
		th_run(t->loop, on_event, step_got_or_throttled, t, 5,
		       TH_TIMEOUT_MS, "a small message");
		CHECK_EQ(t->s[0].rd, t->s[0].w.wr);
		CHECK_EQ(t->nheld, i + 1);
		CHECK_EQ(count(t, UB_BUF_APP), i + 1);
		CHECK_EQ(count(t, UB_BUF_KERNEL), 8 - i - 1);
		CHECK_EQ(ub_pool_slices(t->pool), 0);
	}
	CHECK_EQ(distinct(t, 0, t->nheld), 3);
	verify_held(t, "fallback held");
	release_held(t, 1);
	CHECK_EQ(count(t, UB_BUF_KERNEL), 8);

	/* a stream of random writes, released at once */
	t->s[0].hold = 0;
	t->s[0].w.msgs = 60;
	t->s[0].w.maxmsg = 0;
	th_run_progress(t->loop, on_event, step_stream, t, 5, &t->s[0].rd,
			TH_TIMEOUT_MS, 10 * TH_TIMEOUT_MS, "fallback stream");
	CHECK_EQ(t->shared, 0);
	printf("  %llu bytes in %ld whole buffers\n",
	       (unsigned long long)t->s[0].rd, t->s[0].data);

	/* not incremental, so a datagram endpoint takes it */
	ub_dgram_opts_init(&dopt);
	dopt.recv_pool = t->pool;
	reason = NULL;
	r = ub_dgram_opts_check(t->loop, &dopt, &reason);
	if (r != 0 && r != -EOPNOTSUPP)
		EXPECT_FAILF("ub_dgram_opts_check with the fallback pool: %d "
			     "(%s)", r, reason ? reason : "no reason");
	test_end(t, 1);

	/* the default receive pool of such a loop, pool_flags INC */
	lo.pool_flags = UB_POOL_INC;
	lo.pool_count = 4;
	lo.pool_size = 4096;
	CHECK_OK(ub_loop_opts_check(&lo, &reason));
	{
		ub_loop *loop = th_loop_new(&lo);
		int err = 0;
		ub_pool *p = ub_loop_recv_pool(loop, &err);

		CHECK_PTR(p, err);
		CHECK_EQ(ub_pool_flags(p), UB_POOL_RECV);
		CHECK_EQ(ub_pool_count(p), 4);
		CHECK_OK(ub_loop_free(loop));
	}
}

/* ---- 8 (the part without the feature): option checks -------------------- */

static void option_checks(void)
{
	ub_loop_opts lo;
	const char *reason;
	unsigned bad[] = { 1u << 2, 1u << 7, 1u << 31, UB_POOL_INC | 1u << 5 };
	ub_loop *loop;
	int err;

	printf("option checks\n");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&lo, 0, sizeof(lo));
		lo.pool_flags = bad[i];
		reason = NULL;
		CHECK_ERR(ub_loop_opts_check(&lo, &reason), EINVAL);
		if (!reason)
			TH_FAILF("ub_loop_opts_check(pool_flags 0x%x): no "
				 "reason", bad[i]);
		if (i == 0)
			printf("  pool_flags 0x%x: %s\n", bad[i], reason);
		err = 0;
		loop = ub_loop_new(&lo, &err);
		if (loop)
			TH_FAILF("ub_loop_new(pool_flags 0x%x) succeeded",
				 bad[i]);
		CHECK_ERR(err, EINVAL);
	}
	memset(&lo, 0, sizeof(lo));
	lo.pool_flags = UB_POOL_INC;
	reason = "unset";
	CHECK_OK(ub_loop_opts_check(&lo, &reason));
	CHECK(reason == NULL);

	reason = NULL;
	CHECK_ERR(ub_pool_check(8, 4096, UB_POOL_INC, &reason), EINVAL);
	CHECK(reason != NULL);
	printf("  pool flags INC alone: %s\n", reason);
	reason = "unset";
	CHECK_OK(ub_pool_check(8, 4096, UB_POOL_RECV | UB_POOL_INC, &reason));
	CHECK(reason == NULL);
	reason = NULL;
	CHECK_ERR(ub_pool_check(8, 4096, UB_POOL_RECV | UB_POOL_INC | 1u << 9,
				&reason),
		  EINVAL);
	CHECK(reason != NULL);
	CHECK_ERR(ub_pool_check(0, 4096, UB_POOL_RECV | UB_POOL_INC, NULL),
		  EINVAL);

	loop = th_loop_new(NULL);
	err = 0;
	CHECK(ub_pool_new(loop, 8, 4096, UB_POOL_INC, &err) == NULL);
	CHECK_ERR(err, EINVAL);
	CHECK_OK(ub_loop_free(loop));
}

/* ---- 2: a stream of random writes ---------------------------------------- */

static void stream(int unix_pair, unsigned flags)
{
	struct test *t = test_new(NULL);
	struct side *s = &t->s[0];

	printf("stream over %s%s: random writes of 1 B .. 200 KiB\n",
	       unix_pair ? "a Unix socketpair" : "TCP",
	       flags & UB_CONN_SINGLESHOT ? ", one-shot receives" : "");
	t->conn_flags = flags;
	inc_pool(t, 8, 64 * KIB);
	CHECK(t->inc);
	CHECK_EQ(ub_pool_flags(t->pool), UB_POOL_RECV | UB_POOL_INC);
	side_open(t, s, "stream", unix_pair, t->pool, 0, UB_MODE_AUTO,
		  th_under_valgrind() ? 120 : 300, 0);
	t->cur = s;
	th_run_progress(t->loop, on_event, step_stream, t, 5, &s->rd,
			TH_TIMEOUT_MS, 20 * TH_TIMEOUT_MS, "the stream");
	CHECK_EQ(s->rd, s->w.wr);
	CHECK_EQ(ub_conn_bytes_received(s->c), s->w.wr);
	printf("  %llu bytes in %ld slices (largest %zu), %ld sharing the "
	       "previous one's pool buffer, %ld set_len checks\n",
	       (unsigned long long)s->rd, s->data, t->max_slice, t->shared,
	       t->setlen_done);
	CHECK_CMP(t->shared, >, 1);
	CHECK_CMP(t->max_slice, <=, 64 * KIB);
	if (t->noncontig)
		EXPECT_FAILF("%ld slices followed one of the same pool buffer "
			     "without starting where it ended", t->noncontig);
	CHECK_EQ(ub_pool_slices(t->pool), 0);
	CHECK_EQ(count(t, UB_BUF_KERNEL), 8);
	test_end(t, 1);
}

/* ---- 3: small messages held, the budget ----------------------------------- */

static void small_messages(void)
{
	const unsigned n = 16, budget = 12;
	struct test *t = test_new(NULL);
	struct side *s = &t->s[0];
	long writes = 0, cycles = 0;
	unsigned max_held = 0;
	int throttled;

	printf("small messages: 1000 writes of 10 bytes, slices held\n");
	inc_pool(t, n, 64 * KIB);
	CHECK(t->inc);
	side_open(t, s, "small", 0, t->pool, 0, UB_MODE_AUTO, 0, 0);
	CHECK_OK(ub_conn_set_recv_budget(s->c, (size_t)budget * 64 * KIB));
	CHECK_EQ(ub_conn_recv_budget(s->c), (size_t)budget * 64 * KIB);
	s->hold = 1;
	t->cur = s;
	while (writes < 1000 || s->rd < s->w.wr) {
		CHECK_CMP(cycles, <, 1000);
		if (writes < 1000 && s->rd == s->w.wr) {
			writer_msg(&s->w, 10);
			writes++;
		}
		th_run(t->loop, on_event, step_got_or_throttled, t, 5,
		       TH_TIMEOUT_MS, "a small message or the throttle");
		if (t->nheld > (int)max_held)
			max_held = (unsigned)t->nheld;
		throttled = s->held && ub_conn_recv_throttled(s->c) == 1;
		if (throttled || writes % 50 == 0) {
			/* every slice in the first pool buffer (10 KiB in
			 * all): the pool stays in the ring */
			EXPECT_EQ(count(t, UB_BUF_KERNEL), n);
			EXPECT_EQ(count(t, UB_BUF_APP), 0);
			EXPECT_EQ(ub_pool_slices(t->pool), t->nheld);
			EXPECT_EQ(ub_conn_recv_held(s->c), t->nheld);
		}
		if (!throttled)
			continue;
		/* throttled: at the budget, counted in slices */
		cycles++;
		EXPECT_CMP(t->nheld, >=, (int)budget);
		EXPECT_CMP(t->nheld, <=, (int)budget + 1);
		if (t->nheld > 1)
			CHECK_EQ(distinct(t, 0, t->nheld), 1);
		if (cycles <= 2) {
			/* it holds: what comes now waits in the socket */
			uint64_t rd;

			th_run_for(t->loop, on_event, NULL, t, 5, 20);
			rd = s->rd;
			for (int i = 0; i < 3 && writes < 1000; i++) {
				writer_msg(&s->w, 10);
				writes++;
			}
			th_run_for(t->loop, on_event, NULL, t, 5, 50);
			EXPECT_EQ(s->rd, rd);
			EXPECT_EQ(ub_conn_recv_throttled(s->c), 1);
		}
		verify_held(t, "small held");
		release_held(t, cycles & 1);
	}
	CHECK_EQ(writes, 1000);
	CHECK_EQ(s->rd, 10000);
	printf("  %ld slices, at most %u held at once, %ld throttles\n",
	       s->data, max_held, cycles);
	CHECK_CMP(cycles, >=, 1);
	CHECK_CMP(max_held, >=, budget);
	verify_held(t, "small held");
	release_held(t, 0);
	th_run_for(t->loop, on_event, NULL, t, 1, 10);
	EXPECT_EQ(ub_conn_recv_throttled(s->c), 0);
	test_end(t, 1);
}

/* ---- 4: out-of-order release -------------------------------------------- */

static int step_others(void *arg)
{
	struct test *t = arg;
	long n = writer_step(&t->s[2].w);

	if (writer_done(&t->s[2].w) && t->s[2].rd == t->s[2].w.wr)
		return TH_DONE;
	return n > 0 ? TH_BUSY : TH_IDLE;
}

static int step_ab_done(void *arg)
{
	struct test *t = arg;

	return t->s[0].rd == t->s[0].w.wr && t->s[1].rd == t->s[1].w.wr
		       ? TH_DONE
		       : TH_IDLE;
}

static void out_of_order(void)
{
	const unsigned n = 16, size = 16 * KIB;
	struct test *t = test_new(NULL);
	struct side *a = &t->s[0], *b = &t->s[1], *c = &t->s[2];
	unsigned d, app, both = 0;
	size_t bytes = 0;
	int i;

	printf("out-of-order release: two connections' slices held\n");
	inc_pool(t, n, size);
	CHECK(t->inc);
	side_open(t, a, "A", 0, t->pool, (size_t)n * size, UB_MODE_AUTO, 0,
		  0);
	side_open(t, b, "B", 1, t->pool, (size_t)n * size, UB_MODE_AUTO, 0,
		  0);
	side_open(t, c, "C", 0, t->pool, 0, UB_MODE_AUTO, 0, 0);
	a->hold = b->hold = 1;
	for (i = 0; i < 24; i++) {
		struct side *s = i & 1 ? b : a;

		if (s->rd != s->w.wr)
			continue; /* throttled, with bytes waiting */
		writer_msg(&s->w, th_rand_range(6 * KIB, 12 * KIB));
		t->cur = s;
		th_run(t->loop, on_event, step_got_or_throttled, t, 5,
		       TH_TIMEOUT_MS, "a message or the throttle");
	}
	for (i = 0; i < t->nheld; i++)
		bytes += t->held[i].len;
	d = distinct(t, 0, t->nheld);
	app = count(t, UB_BUF_APP);
	/* pool buffers holding slices of both */
	for (unsigned x = 0; x < n; x++) {
		int ina = 0, inb = 0;

		for (i = 0; i < t->nheld; i++)
			if (t->held[i].idx == x) {
				ina |= t->held[i].s == a;
				inb |= t->held[i].s == b;
			}
		both += ina && inb;
	}
	printf("  held: %d slices (A %u, B %u), %zu bytes in %u pool "
	       "buffers (%u of them shared by A and B); APP %u KERNEL %u\n",
	       t->nheld, a->held, b->held, bytes, d, both, app,
	       count(t, UB_BUF_KERNEL));
	CHECK_CMP(t->nheld, >=, 3);
	CHECK_CMP(d, >=, 2);
	EXPECT_CMP(both, >=, 1);
	EXPECT_EQ(ub_pool_slices(t->pool), t->nheld);
	EXPECT_EQ(ub_conn_recv_held(a->c), a->held);
	EXPECT_EQ(ub_conn_recv_held(b->c), b->held);
	/* finished pool buffers with slices out are APP; the one the kernel
	 * is filling stays KERNEL */
	EXPECT_CMP(app, <=, d);
	EXPECT_CMP(app + 1, >=, d);
	EXPECT_EQ(app + count(t, UB_BUF_KERNEL), n);
	EXPECT_EQ(count(t, UB_BUF_QUEUED), 0);
	verify_held(t, "held before C");

	/* C cycles the ring many times over: the held slices' pool buffers
	 * must stay out of it */
	c->w.msgs = th_under_valgrind() ? 100 : 400;
	c->w.maxmsg = 3 * size;
	th_run_progress(t->loop, on_event, step_others, t, 5, &c->rd,
			TH_TIMEOUT_MS, 10 * TH_TIMEOUT_MS, "C's stream");
	printf("  C: %llu bytes in %ld slices meanwhile\n",
	       (unsigned long long)c->rd, c->data);
	verify_held(t, "held after C");
	d = distinct(t, 0, t->nheld);
	app = count(t, UB_BUF_APP);
	EXPECT_EQ(ub_pool_slices(t->pool), t->nheld);
	EXPECT_CMP(app, <=, d);
	EXPECT_CMP(app + 1, >=, d);
	EXPECT_EQ(app + count(t, UB_BUF_KERNEL), n);

	/* back in random order */
	for (i = t->nheld - 1; i > 0; i--) {
		int j = (int)th_rand_range(0, (uint64_t)i);
		struct slice x = t->held[i];

		t->held[i] = t->held[j];
		t->held[j] = x;
	}
	while (t->nheld) {
		struct slice *h = &t->held[t->nheld - 1];
		unsigned before = count(t, UB_BUF_APP);

		release_checked(t, h->b);
		h->s->held--;
		t->nheld--;
		d = distinct(t, 0, t->nheld);
		app = count(t, UB_BUF_APP);
		EXPECT_EQ(ub_pool_slices(t->pool), t->nheld);
		EXPECT_CMP(app, <=, before);
		EXPECT_CMP(app, <=, d);
		EXPECT_CMP(app + 1, >=, d);
		EXPECT_EQ(app + count(t, UB_BUF_KERNEL), n);
	}
	check_idle(t, "after the out-of-order release");

	/* what waited in the sockets (a throttled side's) comes now */
	a->hold = b->hold = 0;
	th_run(t->loop, on_event, step_ab_done, t, 5, TH_TIMEOUT_MS,
	       "A's and B's bytes");
	check_idle(t, "after A's and B's last bytes");
	test_end(t, 1);
}

/* ---- an exhausted pool: a buffer handed to a waiting connection ---------- */

static void exhausted(void)
{
	const unsigned n = 4, size = 4096;
	static const char *names[] = { "A", "B", "C", "D", "E" };
	struct test *t = test_new(NULL);
	struct side *e = &t->s[4];
	const uint8_t *start;
	unsigned x;
	int i;

	printf("exhausted pool: a buffer handed to a waiting connection\n");
	inc_pool(t, n, size);
	CHECK(t->inc);
	/* four connections take a whole pool buffer each (each may always
	 * take one) and hold it */
	for (i = 0; i < 4; i++) {
		struct side *s = &t->s[i];

		side_open(t, s, names[i], 1, t->pool, 0, UB_MODE_AUTO, 0, 0);
		s->hold = 1;
		writer_msg(&s->w, size);
		t->cur = s;
		th_run(t->loop, on_event, step_got_or_throttled, t, 5,
		       TH_TIMEOUT_MS, "a message of a whole buffer");
		CHECK_EQ(s->rd, size);
		CHECK_EQ(s->held, 1);
	}
	CHECK_EQ(t->nheld, 4);
	CHECK_EQ(distinct(t, 0, 4), 4);
	EXPECT_EQ(count(t, UB_BUF_APP), n);
	EXPECT_EQ(count(t, UB_BUF_KERNEL), 0);
	EXPECT_EQ(ub_pool_slices(t->pool), 4);
	for (i = 0; i < 4; i++)
		CHECK_EQ(ub_buf_capacity(t->held[i].b), size);

	/* a fifth finds nothing: it waits */
	side_open(t, e, names[4], 1, t->pool, 0, UB_MODE_AUTO, 0, 0);
	e->hold = 1;
	writer_msg(&e->w, 3000);
	th_run_for(t->loop, on_event, NULL, t, 5, 30);
	CHECK_EQ(e->rd, 0);

	/* A's buffer comes back: E receives into it, one slice */
	x = t->held[0].idx;
	release_checked(t, t->held[0].b);
	t->held[0].s->held--;
	memmove(&t->held[0], &t->held[1], 3 * sizeof(t->held[0]));
	t->nheld = 3;
	t->cur = e;
	th_run(t->loop, on_event, step_got_or_throttled, t, 5, TH_TIMEOUT_MS,
	       "E's bytes in the buffer A gave back");
	CHECK_EQ(e->rd, 3000);
	CHECK_EQ(t->nheld, 4);
	CHECK_EQ(t->held[3].idx, x);
	start = ub_buf_data(ub_pool_buf(t->pool, x));
	CHECK(ub_buf_data(t->held[3].b) == start);
	CHECK_EQ(ub_buf_capacity(t->held[3].b), 3000);
	EXPECT_EQ(ub_pool_slices(t->pool), 4);
	EXPECT_EQ(count(t, UB_BUF_APP), n);
	verify_held(t, "exhausted pool");
	release_held(t, 1);
	EXPECT_EQ(count(t, UB_BUF_KERNEL), n);

	/* and everything goes on through the ring */
	for (i = 0; i < 5; i++)
		t->s[i].hold = 0;
	e->w.msgs = 40;
	e->w.maxmsg = 3 * size;
	th_run_progress(t->loop, on_event, step_stream, t, 5, &e->rd,
			TH_TIMEOUT_MS, 10 * TH_TIMEOUT_MS, "E's stream");
	check_idle(t, "after E's stream");
	test_end(t, 1);
}

/* ---- 6: stale handles, lifetime -------------------------------------------- */

static void lifetime(void)
{
	struct test *t = test_new(NULL);
	struct side *s = &t->s[0];
	ub_buf *x;
	uint32_t g;

	printf("lifetime: a slice held past its connection\n");
	inc_pool(t, 4, 16 * KIB);
	CHECK(t->inc);
	side_open(t, s, "lifetime", 0, t->pool, 0, UB_MODE_AUTO, 0, 0);
	s->hold = 1;
	t->cur = s;
	writer_msg(&s->w, 100);
	th_run(t->loop, on_event, step_got_or_throttled, t, 5, TH_TIMEOUT_MS,
	       "100 bytes");
	writer_msg(&s->w, 200);
	th_run(t->loop, on_event, step_got_or_throttled, t, 5, TH_TIMEOUT_MS,
	       "200 bytes");
	CHECK_EQ(s->rd, 300);
	CHECK_EQ(t->nheld, 2);
	CHECK_EQ(ub_pool_slices(t->pool), 2);
	CHECK_EQ(t->held[0].idx, t->held[1].idx);
	CHECK_ERR(ub_pool_free(t->pool), EBUSY);

	/* a released slice is a stale handle */
	x = t->held[1].b;
	g = ub_buf_gen(x);
	CHECK_OK(ub_buf_release(x));
	CHECK(ub_buf_gen(x) != g);
	g = ub_buf_gen(x);
	CHECK_ERR(ub_buf_release(x), EINVAL);
	CHECK_ERR(ub_buf_set_len(x, 1), EINVAL);
	CHECK_ERR(ub_conn_send_buf(s->c, x), EINVAL);
	CHECK_EQ(ub_buf_gen(x), g);
	CHECK_EQ(ub_pool_slices(t->pool), 1);
	t->nheld = 1;
	s->held = 1;

	/* the connection goes; the other slice stays the application's */
	CHECK_OK(ub_conn_abort(s->c));
	th_run(t->loop, on_event, step_all_closed, t, 10, TH_TIMEOUT_MS,
	       "CLOSED");
	th_run_for(t->loop, on_event, NULL, t, 1, 20); /* freed */
	x = t->held[0].b;
	CHECK_ERR(ub_pool_free(t->pool), EBUSY);
	CHECK_EQ(ub_pool_slices(t->pool), 1);
	verify_held(t, "held past its connection");
	CHECK_ERR(ub_buf_set_len(x, 101), EINVAL);
	CHECK_OK(ub_buf_set_len(x, 50));
	CHECK_OK(ub_buf_set_len(x, 100));
	release_checked(t, x);
	t->nheld = 0;
	s->held = 0;
	CHECK_EQ(ub_pool_slices(t->pool), 0);
	CHECK_EQ(count(t, UB_BUF_KERNEL), 4);
	CHECK_EQ(count(t, UB_BUF_APP), 0);
	CHECK_OK(ub_pool_free(t->pool));
	t->pool = NULL;
	CHECK(close(s->w.fd) == 0);
	free(s->w.msg);
	s->c = NULL;

	/* a slice still held when the loop is freed: the loop's to free */
	printf("lifetime: a slice held when the loop is freed\n");
	inc_pool(t, 4, 16 * KIB);
	side_open(t, s, "loop freed", 1, t->pool, 0, UB_MODE_AUTO, 0, 0);
	s->hold = 1;
	writer_msg(&s->w, 64);
	th_run(t->loop, on_event, step_got_or_throttled, t, 5, TH_TIMEOUT_MS,
	       "64 bytes");
	CHECK_EQ(t->nheld, 1);
	CHECK_EQ(ub_pool_slices(t->pool), 1);
	CHECK_OK(ub_loop_free(t->loop));
	CHECK(close(s->w.fd) == 0);
	free(s->w.msg);
	free(t);
}

/* ---- a pool buffer's own handle is not the application's ----------------- */

/*
 * ub_pool_buf() names every pool buffer, and one the kernel finished while
 * slices of it are out is APP by the pool's count; but the application was
 * never handed it: releasing it (or queueing it) would put its memory back
 * in the ring under the slices it holds.  Refused with -EINVAL, nothing
 * changed.  Last in its own loop, so that a failure does not spoil the rest.
 */
static void parent_handle(void)
{
	const unsigned size = 4096;
	struct test *t = test_new(NULL);
	struct side *s = &t->s[0];
	const struct slice *h;
	ub_buf *p;
	long diff;
	int r;

	printf("a pool buffer with a slice out: its own handle is refused\n");
	inc_pool(t, 4, size);
	CHECK(t->inc);
	side_open(t, s, "parent", 1, t->pool, 0, UB_MODE_AUTO, 0, 0);
	s->hold = 1;
	t->cur = s;
	writer_msg(&s->w, size); /* the whole pool buffer: finished */
	th_run(t->loop, on_event, step_got_or_throttled, t, 5, TH_TIMEOUT_MS,
	       "a whole buffer");
	CHECK_EQ(t->nheld, 1);
	h = &t->held[0];
	p = ub_pool_buf(t->pool, h->idx);
	CHECK(p != NULL && p != h->b);
	CHECK_EQ(ub_buf_capacity(h->b), size);
	EXPECT_EQ(count(t, UB_BUF_APP), 1);
	EXPECT_EQ(ub_buf_state(p), UB_BUF_APP);
	r = ub_conn_send_buf(s->c, p);
	if (r != -EINVAL)
		EXPECT_FAILF("ub_conn_send_buf(conn, ub_pool_buf(pool, %u)), "
			     "the pool buffer of a held slice: %d, expected "
			     "-EINVAL", h->idx, r);
	r = ub_buf_set_len(p, 1);
	if (r != -EINVAL)
		EXPECT_FAILF("ub_buf_set_len(ub_pool_buf(pool, %u), 1), the "
			     "pool buffer of a held slice: %d, expected "
			     "-EINVAL", h->idx, r);
	r = ub_buf_release(p);
	if (r != -EINVAL)
		EXPECT_FAILF("ub_buf_release(ub_pool_buf(pool, %u)), the pool "
			     "buffer of a held slice: %d, expected -EINVAL; "
			     "pool now KERNEL %u APP %u, %u slices out",
			     h->idx, r, count(t, UB_BUF_KERNEL),
			     count(t, UB_BUF_APP), ub_pool_slices(t->pool));
	/* the ring goes round: the held slice's bytes must stay */
	s->hold = 0;
	for (int i = 0; i < 8; i++) {
		writer_msg(&s->w, size);
		th_run(t->loop, on_event, step_got_or_throttled, t, 5,
		       TH_TIMEOUT_MS, "a whole buffer");
	}
	diff = th_pat_diff(s->w.seed, h->off, ub_buf_data(h->b), h->len);
	if (diff >= 0)
		EXPECT_FAILF("a held slice's bytes were overwritten (at %ld of "
			     "%zu) after its pool buffer's handle was "
			     "released", diff, h->len);
	if (th_soft_failures) {
		/* the pool's books may be wrong now: leave it to the loop */
		CHECK_OK(ub_loop_free(t->loop));
		CHECK(close(s->w.fd) == 0);
		free(s->w.msg);
		free(t);
		return;
	}
	verify_held(t, "held slices");
	release_held(t, 0);
	test_end(t, 1);
}

/* ---- 8: the loop's default receive pool ------------------------------------ */

static void default_pool(void)
{
	ub_loop_opts lo = { .pool_count = 8, .pool_size = 64 * KIB,
			    .pool_flags = UB_POOL_INC };
	struct test *t = test_new(&lo);
	struct side *s = &t->s[0];
	const char *reason = NULL;
	ub_dgram_opts dopt;
	struct sockaddr_in sin;
	ub_pool *sp, *rp;
	int err = 0, r;

	printf("ub_loop_opts.pool_flags = UB_POOL_INC\n");
	t->pool = ub_loop_recv_pool(t->loop, &err);
	CHECK_PTR(t->pool, err);
	t->inc = 1;
	CHECK_EQ(ub_pool_flags(t->pool), UB_POOL_RECV | UB_POOL_INC);
	CHECK_EQ(ub_pool_count(t->pool), 8);
	CHECK_EQ(ub_pool_buf_size(t->pool), 64 * KIB);
	sp = ub_loop_send_pool(t->loop, &err);
	CHECK_PTR(sp, err);
	CHECK_EQ(ub_pool_flags(sp), 0);

	/* datagram endpoints refuse it, as their default pool too */
	r = ub_dgram_opts_check(t->loop, NULL, &reason);
	if (r != -EINVAL)
		EXPECT_FAILF("ub_dgram_opts_check(NULL opts) on a loop whose "
			     "default receive pool is incremental: %d, "
			     "expected -EINVAL", r);
	ub_dgram_opts_init(&dopt);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	{
		ub_dgram *ep = ub_dgram_open(t->loop, (struct sockaddr *)&sin,
					     sizeof(sin), NULL, &err);

		if (ep) {
			EXPECT_FAILF("ub_dgram_open with the loop's "
				     "incremental default receive pool "
				     "succeeded");
			CHECK_OK(ub_dgram_close(ep));
			th_run_for(t->loop, on_event, NULL, t, 5, 50);
		} else if (err != -EOPNOTSUPP) {
			EXPECT_ERR(err, EINVAL);
		}
	}

	/* connections without a pool of their own receive slices */
	side_open(t, s, "default pool", 0, NULL, 0, UB_MODE_AUTO, 0, 0);
	s->hold = 1;
	t->cur = s;
	for (int i = 0; i < 3; i++) {
		writer_msg(&s->w, 10 + (size_t)i);
		th_run(t->loop, on_event, step_got_or_throttled, t, 5,
		       TH_TIMEOUT_MS, "a small message");
	}
	CHECK_EQ(t->nheld, 3);
	CHECK_EQ(ub_pool_slices(t->pool), 3);
	CHECK_EQ(count(t, UB_BUF_KERNEL), 8);
	CHECK_EQ(distinct(t, 0, 3), 1);
	verify_held(t, "default pool");
	release_held(t, 1);
	/* the loop owns its default pools: not freed here */
	rp = t->pool;
	t->pool = NULL;
	test_end(t, 0);
	t->pool = rp;
	check_idle(t, "the default pool at the end");
	CHECK_OK(ub_loop_free(t->loop));
	free(t);
}

/* ---- 9: datagram endpoints refuse an incremental pool ---------------------- */

static void dgram_refuses(void)
{
	struct test *t = test_new(NULL);
	const char *reason = NULL;
	ub_dgram_opts dopt;
	struct sockaddr_in sin;
	ub_pool *plain;
	ub_dgram *ep;
	int err = 0, r, fd;

	printf("datagram endpoints refuse an incremental pool\n");
	inc_pool(t, 8, 4096);
	CHECK(t->inc);
	plain = ub_pool_new(t->loop, 8, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(plain, err);
	ub_dgram_opts_init(&dopt);
	dopt.recv_pool = plain;
	r = ub_dgram_opts_check(t->loop, &dopt, &reason);
	if (r == -EOPNOTSUPP) {
		printf("  no datagram endpoints here: %s\n",
		       reason ? reason : "(no reason)");
		CHECK_OK(ub_pool_free(plain));
		test_end(t, 1);
		return;
	}
	CHECK_OK(r);

	dopt.recv_pool = t->pool;
	reason = NULL;
	CHECK_ERR(ub_dgram_opts_check(t->loop, &dopt, &reason), EINVAL);
	CHECK(reason != NULL);
	printf("  %s\n", reason);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	err = 0;
	ep = ub_dgram_open(t->loop, (struct sockaddr *)&sin, sizeof(sin),
			   &dopt, &err);
	CHECK(ep == NULL);
	CHECK_ERR(err, EINVAL);
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0);
	err = 0;
	ep = ub_dgram_adopt(t->loop, fd, &dopt, &err);
	CHECK(ep == NULL);
	CHECK_ERR(err, EINVAL);
	CHECK(th_fd_is_open(fd)); /* the caller keeps it */
	CHECK(close(fd) == 0);
	/* nothing took the pool */
	CHECK_OK(ub_pool_free(plain));
	test_end(t, 1);
}

/* ---- 5: zero-copy forwarding ---------------------------------------------- */

static int step_fwd_fill(void *arg)
{
	struct test *t = arg;
	struct side *a = &t->s[0];
	long n = writer_step(&a->w);

	if (a->c && ub_conn_recv_throttled(a->c) == 1 &&
	    ub_pool_slices(t->pool) > 0)
		return TH_DONE;
	if (writer_done(&a->w) && ub_conn_bytes_received(a->c) == a->w.wr)
		return TH_DONE;
	return n > 0 ? TH_BUSY : TH_IDLE;
}

static int step_fwd_drain(void *arg)
{
	struct test *t = arg;
	struct side *a = &t->s[0], *b = &t->s[1];
	long n = writer_step(&a->w) + th_peer_read(&t->rdr);

	if (writer_done(&a->w) && t->rdr.rd == a->w.wr &&
	    (!a->w.shut || t->rdr.eof) && !ub_conn_queued_bytes(b->c) &&
	    !ub_pool_slices(t->pool) &&
	    count(t, UB_BUF_KERNEL) == ub_pool_count(t->pool))
		return TH_DONE;
	return n > 0 ? TH_BUSY : TH_IDLE;
}

static void forward_one(int mode, int piped)
{
	const unsigned n = 16, size = 64 * KIB;
	struct test *t = test_new(NULL);
	struct side *a = &t->s[0], *b = &t->s[1];
	ub_pool *brpool, *spool;
	ub_conn_opts o;
	int pb[2], err = 0;
	unsigned held;

	printf("  %s\n", piped ? "ub_conn_pipe(A, B)"
			       : "every slice sent on B (ub_conn_send_buf)");
	inc_pool(t, n, size);
	CHECK(t->inc);
	brpool = ub_pool_new(t->loop, 4, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(brpool, err);
	spool = ub_pool_new(t->loop, 4, 4096, 0, &err);
	CHECK_PTR(spool, err);
	side_open(t, a, "A", 0, t->pool, (size_t)n * size, mode,
		  th_under_valgrind() ? 80 : 200, 0);
	a->w.shut = piped;

	/* B: its reader stalls at first, on small socket buffers */
	th_tcp_pair(pb, 0);
	th_small_bufs(pb[0]);
	th_small_bufs(pb[1]);
	memset(b, 0, sizeof(*b));
	b->name = "B";
	b->w.fd = -1; /* its plain socket is the reader's */
	th_peer_init(&t->rdr, pb[1], "B's reader");
	t->rdr.seed = a->w.seed;
	ub_conn_opts_init(&o);
	o.mode = mode;
	o.recv_pool = brpool;
	o.send_pool = spool;
	o.high_water = 64u << 20;
	o.low_water = 16u << 20;
	o.udata = b;
	b->c = ub_conn_adopt(t->loop, pb[0], &o, &err);
	CHECK_PTR(b->c, err);
	if (piped)
		CHECK_OK(ub_conn_pipe(a->c, b->c));
	else
		a->fwd = b->c;

	/* A takes until its budget, every slice queued on B */
	th_run(t->loop, on_event, step_fwd_fill, t, 5, TH_TIMEOUT_MS,
	       "A throttled by its slices queued on B");
	/* settle (B's socket may still take a little, a slice come back and
	 * A take one more), then look at a throttled moment */
	th_run_for(t->loop, on_event, NULL, t, 5, 20);
	th_run(t->loop, on_event, step_fwd_fill, t, 5, TH_TIMEOUT_MS,
	       "A throttled again");
	held = ub_pool_slices(t->pool);
	printf("    B's reader stalled: %u slices queued on B (%zu bytes, "
	       "%u buffers), A holds %u, throttled %d; APP %u QUEUED %u "
	       "KERNEL %u\n",
	       held, ub_conn_queued_bytes(b->c), ub_conn_queued_bufs(b->c),
	       ub_conn_recv_held(a->c), ub_conn_recv_throttled(a->c),
	       count(t, UB_BUF_APP), count(t, UB_BUF_QUEUED),
	       count(t, UB_BUF_KERNEL));
	EXPECT_CMP(held, >=, 1);
	/* The budget counts slices, but a multishot receive can complete
	 * more than once before the loop sees it reached (uringbuf.h,
	 * "Overshoot"): bound what it pins, pool buffers, by the budget,
	 * and the slices loosely. */
	EXPECT_CMP(count(t, UB_BUF_APP) + count(t, UB_BUF_QUEUED), <=, n);
	EXPECT_CMP(held, <=, 2 * n);
	EXPECT_EQ(ub_conn_recv_held(a->c), held);
	EXPECT_EQ(ub_conn_recv_throttled(a->c), 1);
	EXPECT_EQ(ub_conn_queued_bufs(b->c), held);
	EXPECT_EQ(count(t, UB_BUF_KERNEL) + count(t, UB_BUF_APP) +
			  count(t, UB_BUF_QUEUED),
		  n);
	CHECK_ERR(ub_pool_free(t->pool), EBUSY);

	/* B's reader reads: every byte, every slice back */
	th_run_progress(t->loop, on_event, step_fwd_drain, t, 5, &t->rdr.rd,
			TH_TIMEOUT_MS, 20 * TH_TIMEOUT_MS,
			"B's reader to get every byte and the slices back");
	CHECK_EQ(t->rdr.rd, a->w.wr);
	CHECK_EQ(ub_conn_bytes_received(a->c), a->w.wr);
	CHECK_EQ(ub_conn_bytes_sent(b->c), a->w.wr);
	if (piped) {
		CHECK_EQ(a->data, 0);
		CHECK(t->rdr.eof);
	} else {
		CHECK_EQ(a->rd, a->w.wr);
	}
	if (piped)
		printf("    %llu bytes piped\n", (unsigned long long)a->w.wr);
	else
		printf("    %llu bytes forwarded in %ld slices, %ld sharing "
		       "the previous one's pool buffer\n",
		       (unsigned long long)a->w.wr, a->data, t->shared);
	if (t->stale_gen)
		EXPECT_FAILF("%ld of %ld slices kept their generation when "
			     "queued", t->stale_gen, a->data);
	EXPECT_EQ(count(t, UB_BUF_APP), 0);
	EXPECT_EQ(count(t, UB_BUF_QUEUED), 0);
	EXPECT_EQ(ub_pool_slices(t->pool), 0);
	EXPECT_EQ(count(t, UB_BUF_KERNEL), n);
	test_end(t, 0);
	CHECK_OK(ub_pool_free(brpool));
	CHECK_OK(ub_pool_free(spool));
	CHECK_OK(ub_loop_free(t->loop));
	free(t);
}

static void forward_mode(int mode, void *arg)
{
	(void)arg;
	forward_one(mode, 0);
	forward_one(mode, 1);
}

int main(void)
{
	ub_loop *probe;
	unsigned feat;
	const char *why;
	char whybuf[256] = "";

	th_init("inc_pool");
	th_watchdog(240);
	probe = th_loop_new(NULL);
	feat = ub_loop_features(probe);
	why = ub_loop_feature_reason(probe, UB_FEAT_PBUF_INC);
	if (feat & UB_FEAT_PBUF_INC)
		CHECK(why == NULL);
	else
		CHECK(why != NULL);
	if (why) /* the loop may own it */
		snprintf(whybuf, sizeof(whybuf), "%s", why);
	CHECK_OK(ub_loop_free(probe));

	fallback();
	option_checks();
	if (!(feat & UB_FEAT_PBUF_INC)) {
		if (th_soft_failures)
			return th_finish();
		th_check_fds("at exit");
		th_skip("incremental receive pools: %s", whybuf);
	}
	stream(0, 0);
	stream(1, 0);
	stream(0, UB_CONN_SINGLESHOT);
	small_messages();
	out_of_order();
	exhausted();
	lifetime();
	default_pool();
	dgram_refuses();
	printf("zero-copy forwarding of slices, in every mode\n");
	th_for_each_mode(forward_mode, NULL);
	parent_handle();
	return th_finish();
}
