/*
 * opts.c - the option checks (ub_loop_opts_check, ub_pool_check,
 * ub_conn_opts_check, ub_water_check, ub_dgram_opts_check).
 *
 * Every rule gives its code and its reason, word for word (the bindings
 * raise these strings); valid options give 0 with *reason NULL; and the
 * constructor or setter the check stands for fails with the same code,
 * changing nothing (an adopted fd stays the caller's), so a binding that
 * asks the check first never disagrees with the call.
 */
#include "helpers.h"

#include <sys/socket.h>
#include <unistd.h>

/* Something a check must overwrite: NULL on success, the reason else. */
static const char unset[] = "unset";

/* reason by address: C leaves the order of a call's arguments open, and
 * it must be read after the check ran. */
static void expect(const char *what, int r, const char *const *whyp,
		   int err, const char *want)
{
	const char *reason = *whyp;

	if (r != -err)
		TH_FAILF("%s: returned %d, expected %d", what, r, -err);
	if (!want && reason)
		TH_FAILF("%s: valid, yet reason \"%s\"", what, reason);
	if (want && (!reason || strcmp(reason, want)))
		TH_FAILF("%s: reason \"%s\", expected \"%s\"", what,
			 reason ? reason : "(null)", want);
}

static void loop_opts(void)
{
	static const struct {
		ub_loop_opts o;
		const char *why;
	} bad[] = {
		{ { .entries = 32769 }, "entries must be at most 32768" },
		{ { .pool_count = 32769 },
		  "pool_count must be at most 32768" },
		{ { .pool_size = (1u << 30) + 1 },
		  "pool_size must be at most 1 GiB" },
		{ { .pool_count = 32768, .pool_size = 1u << 30 },
		  "pool_count * pool_size must be at most 64 GiB" },
		{ { .disable = UB_FEAT_ALL + 1 },
		  "disable has a bit that is no UB_FEAT_* feature" },
		{ { .pool_flags = UB_POOL_RECV },
		  "pool_flags may hold UB_POOL_INC only" },
	};
	ub_loop_opts ok = { .entries = 32768, .pool_count = 32768,
			    .pool_size = 2u << 20, .disable = UB_FEAT_ALL,
			    .pool_flags = UB_POOL_INC };
	const char *why;
	int err = 0;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = unset;
		expect("ub_loop_opts_check",
		       ub_loop_opts_check(&bad[i].o, &why), &why, EINVAL,
		       bad[i].why);
		CHECK(!ub_loop_new(&bad[i].o, &err));
		CHECK_EQ(err, -EINVAL);
		CHECK_ERR(ub_loop_opts_check(&bad[i].o, NULL), EINVAL);
	}
	why = unset;
	expect("ub_loop_opts_check(NULL)", ub_loop_opts_check(NULL, &why), &why,
	       0, NULL);
	why = unset;
	expect("ub_loop_opts_check(max)", ub_loop_opts_check(&ok, &why), &why,
	       0, NULL);
}

static void pool_args(ub_loop *loop)
{
	static const struct {
		unsigned count, size, flags;
		const char *why;
	} bad[] = {
		{ 0, 64, 0, "count must be 1..32768 buffers" },
		{ 32769, 64, UB_POOL_RECV, "count must be 1..32768 buffers" },
		{ 4, 0, 0, "size must be 1 byte..1 GiB" },
		{ 4, (1u << 30) + 1, 0, "size must be 1 byte..1 GiB" },
		{ 32768, 1u << 30, 0, "count * size must be at most 64 GiB" },
		{ 4, 64, UB_POOL_INC << 1,
		  "flags has a bit that is no UB_POOL_* flag" },
		{ 4, 64, UB_POOL_INC,
		  "UB_POOL_INC is for receive pools: it needs UB_POOL_RECV" },
	};
	const char *why;
	int err = 0;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = unset;
		expect("ub_pool_check",
		       ub_pool_check(bad[i].count, bad[i].size, bad[i].flags,
				     &why),
		       &why, EINVAL, bad[i].why);
		CHECK(!ub_pool_new(loop, bad[i].count, bad[i].size,
				   bad[i].flags, &err));
		CHECK_EQ(err, -EINVAL);
	}
	why = unset;
	expect("ub_pool_check(1, 1, RECV)",
	       ub_pool_check(1, 1, UB_POOL_RECV, &why), &why, 0, NULL);
	why = unset;
	expect("ub_pool_check(32768, 2 MiB)",
	       ub_pool_check(32768, 2u << 20, 0, &why), &why, 0, NULL);
}

/* A check of conn options, and every constructor that takes them. */
static void conn_case(ub_loop *loop, const ub_conn_opts *o, int err,
		      const char *want)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(9),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	const char *why = unset;
	int fds[2], e = 0;

	expect("ub_conn_opts_check", ub_conn_opts_check(loop, o, &why), &why,
	       err, want);
	if (!err)
		return;
	th_socketpair(fds);
	CHECK(!ub_conn_adopt(loop, fds[0], o, &e));
	CHECK_EQ(e, -err);
	CHECK(th_fd_is_open(fds[0])); /* still the caller's */
	CHECK(!ub_conn_connect(loop, (struct sockaddr *)&a, sizeof(a), o, &e));
	CHECK_EQ(e, -err);
	a.sin_port = 0;
	CHECK(!ub_listen(loop, (struct sockaddr *)&a, sizeof(a), 0, 0, o, &e));
	CHECK_EQ(e, -err);
	close(fds[0]);
	close(fds[1]);
}

static void conn_opts(ub_loop *loop, ub_loop *other)
{
	int err = 0;
	ub_pool *rp = ub_pool_new(loop, 4, 256, UB_POOL_RECV, &err);
	ub_pool *sp = ub_pool_new(loop, 4, 256, 0, &err);
	ub_pool *orp = ub_loop_recv_pool(other, &err);
	ub_pool *osp = ub_loop_send_pool(other, &err);
	ub_conn_opts o;
	const char *why;

	CHECK(rp && sp && orp && osp);
	ub_conn_opts_init(&o);
	conn_case(loop, &o, 0, NULL);
	conn_case(loop, NULL, 0, NULL);
	o.recv_pool = rp;
	o.send_pool = sp;
	o.ring_entries = 32768;
	o.mode = UB_MODE_SERIAL;
	o.flags = UB_CONN_NO_RECV | UB_CONN_SINGLESHOT |
		  UB_CONN_NO_RECV_BUNDLE | UB_CONN_SENT_EVENTS;
	o.high_water = 100;
	o.low_water = 100;
	conn_case(loop, &o, 0, NULL);

#define BAD(field, value, why_)                                                \
	do {                                                                   \
		ub_conn_opts_init(&o);                                         \
		o.field = value;                                               \
		conn_case(loop, &o, EINVAL, why_);                             \
	} while (0)
	BAD(mode, -1, "mode must be a send mode (UB_MODE_AUTO, BUNDLE, RING "
		      "or SERIAL)");
	BAD(mode, UB_MODE_SERIAL + 1,
	    "mode must be a send mode (UB_MODE_AUTO, BUNDLE, RING or SERIAL)");
	BAD(ring_entries, 3, "ring_entries must be a power of 2 up to 32768");
	BAD(ring_entries, 65536,
	    "ring_entries must be a power of 2 up to 32768");
	BAD(low_water, (1u << 20) + 1, "low_water must not exceed high_water");
	BAD(flags, UB_CONN_SOFT_WATER << 1,
	    "flags has a bit that is no UB_CONN_* flag");
	BAD(recv_pool, orp, "recv_pool belongs to another loop");
	BAD(recv_pool, sp, "recv_pool must be a receive pool");
	BAD(send_pool, osp, "send_pool belongs to another loop");
	BAD(send_pool, rp, "send_pool must be a send pool");
#undef BAD
	/* high_water 0 is the default (1 MiB): low_water must fit under it */
	ub_conn_opts_init(&o);
	o.high_water = 0;
	o.low_water = (1u << 20) + 1;
	conn_case(loop, &o, EINVAL,
		  "low_water must not exceed the default high_water (1 MiB)");
	o.low_water = 1u << 20;
	conn_case(loop, &o, 0, NULL);
	o.high_water = 10;
	o.low_water = 11;
	conn_case(loop, &o, EINVAL, "low_water must not exceed high_water");

	why = unset;
	expect("ub_conn_opts_check(NULL loop)",
	       ub_conn_opts_check(NULL, &o, &why), &why, EINVAL,
	       "loop is NULL");
	CHECK_ERR(ub_conn_opts_check(loop, &o, NULL), EINVAL);
	CHECK_OK(ub_pool_free(rp));
	CHECK_OK(ub_pool_free(sp));
}

/* A forced mode the loop lacks: -EOPNOTSUPP, the mode and the probe's
 * reason (disabled here, so that every kernel lacks it). */
static void forced_mode(void)
{
	ub_loop_opts lo = { .disable = UB_FEAT_SEND_RING |
				       UB_FEAT_SEND_BUNDLE };
	char want[256];
	ub_conn_opts o;
	ub_loop *loop;
	int err = 0;

	loop = ub_loop_new(&lo, &err);
	CHECK_PTR(loop, err);
	ub_conn_opts_init(&o);
	o.mode = UB_MODE_BUNDLE;
	snprintf(want, sizeof(want), "mode bundle unavailable: %s",
		 ub_loop_feature_reason(loop, UB_FEAT_SEND_BUNDLE));
	conn_case(loop, &o, EOPNOTSUPP, want);
	CHECK(strstr(want, "disabled by ub_loop_opts.disable") ||
	      strstr(want, "Linux")); /* the probe's words, whichever */
	o.mode = UB_MODE_RING;
	snprintf(want, sizeof(want), "mode ring unavailable: %s",
		 ub_loop_feature_reason(loop, UB_FEAT_SEND_RING));
	conn_case(loop, &o, EOPNOTSUPP, want);
	o.mode = UB_MODE_SERIAL;
	conn_case(loop, &o, 0, NULL);
	o.mode = UB_MODE_AUTO;
	conn_case(loop, &o, 0, NULL);
	/* one answer, the first rule broken: the mode comes before the ring */
	o.mode = UB_MODE_BUNDLE;
	o.ring_entries = 3;
	CHECK_ERR(ub_conn_opts_check(loop, &o, NULL), EOPNOTSUPP);
	CHECK_OK(ub_loop_free(loop));
}

static void water(ub_loop *loop)
{
	static const struct {
		size_t high, low;
		const char *why;
	} bad[] = {
		{ 0, 0, "high_water must be > 0" },
		{ 10, 11, "low_water must not exceed high_water" },
		{ 1, (size_t)-1, "low_water must not exceed high_water" },
	};
	int fds[2], err = 0;
	ub_conn *c;
	const char *why;

	th_socketpair(fds);
	c = ub_conn_adopt(loop, fds[0], NULL, &err);
	CHECK_PTR(c, err);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = unset;
		expect("ub_water_check",
		       ub_water_check(bad[i].high, bad[i].low, &why), &why,
		       EINVAL, bad[i].why);
		CHECK_ERR(ub_conn_set_water(c, bad[i].high, bad[i].low),
			  EINVAL);
	}
	CHECK_EQ(ub_conn_high_water(c), 1u << 20); /* unchanged */
	why = unset;
	expect("ub_water_check(1, 1)", ub_water_check(1, 1, &why), &why, 0,
	       NULL);
	why = unset;
	expect("ub_water_check(max, 0)", ub_water_check((size_t)-1, 0, &why),
	       &why, 0, NULL);
	CHECK_OK(ub_conn_set_water(c, 10, 10));
	CHECK_OK(ub_conn_abort(c));
	close(fds[1]);
}

static void dgram_case(ub_loop *loop, const ub_dgram_opts *o, int err,
		       const char *want)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	const char *why = unset;
	int fd, e = 0;

	expect("ub_dgram_opts_check", ub_dgram_opts_check(loop, o, &why), &why,
	       err, want);
	if (!err)
		return;
	CHECK(!ub_dgram_open(loop, (struct sockaddr *)&a, sizeof(a), o, &e));
	CHECK_EQ(e, -err);
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0);
	CHECK(!ub_dgram_adopt(loop, fd, o, &e));
	CHECK_EQ(e, -err);
	CHECK(th_fd_is_open(fd));
	close(fd);
}

static void dgram_opts(ub_loop *loop, ub_loop *other)
{
	int err = 0;
	ub_pool *rp = ub_pool_new(loop, 4, 256, UB_POOL_RECV, &err);
	ub_pool *tiny = ub_pool_new(loop, 4, UB_DGRAM_HDR, UB_POOL_RECV, &err);
	ub_pool *odd = ub_pool_new(loop, 4, 260, UB_POOL_RECV, &err);
	ub_pool *sp = ub_pool_new(loop, 4, 256, 0, &err);
	ub_pool *orp = ub_loop_recv_pool(other, &err);
	ub_pool *osp = ub_loop_send_pool(other, &err);
	ub_loop_opts lo = { .pool_size = 64 };
	const char *small = "the loop's default receive pool (pool_size) "
			    "cannot hold datagrams: it needs buffers of more "
			    "than 128 bytes and a multiple of 8; give a "
			    "recv_pool";
	const char *hdr = "recv_pool: a datagram endpoint needs buffers of "
			  "more than 128 bytes (its header) and a multiple "
			  "of 8";
	ub_dgram_opts o;
	ub_loop *sloop;
	const char *why;

	CHECK(rp && tiny && odd && sp && orp && osp);
	if (!(ub_loop_features(loop) & UB_FEAT_RECV_MULTISHOT)) {
		why = unset;
		expect("ub_dgram_opts_check (no multishot)",
		       ub_dgram_opts_check(loop, NULL, &why), &why, EOPNOTSUPP,
		       "datagram endpoints need multishot recvmsg "
		       "(Linux 6.0)");
		printf("  datagram rules skipped: %s\n",
		       ub_loop_feature_reason(loop, UB_FEAT_RECV_MULTISHOT));
		goto out;
	}
	dgram_case(loop, NULL, 0, NULL);
	ub_dgram_opts_init(&o);
	o.recv_pool = rp;
	o.send_pool = sp;
	o.queue_max = 32768;
	o.high_water = 5;
	o.low_water = 5;
	o.flags = UB_DGRAM_NO_RECV | UB_DGRAM_REUSEPORT | UB_DGRAM_SOFT_WATER;
	dgram_case(loop, &o, 0, NULL);

#define BAD(field, value, why_)                                                \
	do {                                                                   \
		ub_dgram_opts_init(&o);                                        \
		o.field = value;                                               \
		dgram_case(loop, &o, EINVAL, why_);                            \
	} while (0)
	BAD(queue_max, 32769, "queue_max must be at most 32768 datagrams");
	BAD(low_water, (1u << 20) + 1, "low_water must not exceed high_water");
	BAD(flags, UB_DGRAM_SOFT_WATER << 1,
	    "flags has a bit that is no UB_DGRAM_* flag");
	BAD(recv_pool, orp, "recv_pool belongs to another loop");
	BAD(recv_pool, sp, "recv_pool must be a receive pool");
	BAD(recv_pool, tiny, hdr);
	BAD(recv_pool, odd, hdr);
	BAD(send_pool, osp, "send_pool belongs to another loop");
	BAD(send_pool, rp, "send_pool must be a send pool");
#undef BAD
	ub_dgram_opts_init(&o);
	o.high_water = 0;
	o.low_water = (1u << 20) + 1;
	dgram_case(loop, &o, EINVAL,
		   "low_water must not exceed the default high_water (1 MiB)");
	why = unset;
	expect("ub_dgram_opts_check(NULL loop)",
	       ub_dgram_opts_check(NULL, NULL, &why), &why, EINVAL,
	       "loop is NULL");

	/* The default receive pool must do, unless one is given. */
	sloop = ub_loop_new(&lo, &err);
	CHECK_PTR(sloop, err);
	dgram_case(sloop, NULL, EINVAL, small);
	ub_dgram_opts_init(&o);
	o.recv_pool = ub_pool_new(sloop, 4, 256, UB_POOL_RECV, &err);
	CHECK_PTR(o.recv_pool, err);
	dgram_case(sloop, &o, 0, NULL);
	CHECK_OK(ub_loop_free(sloop));
out:
	CHECK_OK(ub_pool_free(rp));
	CHECK_OK(ub_pool_free(tiny));
	CHECK_OK(ub_pool_free(odd));
	CHECK_OK(ub_pool_free(sp));
}

/* ub_dgram_set_water follows ub_water_check. */
static void dgram_water(ub_loop *loop)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	ub_event ev[8];
	ub_dgram *d;
	int err = 0;

	if (!(ub_loop_features(loop) & UB_FEAT_RECV_MULTISHOT))
		return;
	d = ub_dgram_open(loop, (struct sockaddr *)&a, sizeof(a), NULL, &err);
	CHECK_PTR(d, err);
	CHECK_ERR(ub_dgram_set_water(d, 0, 0), EINVAL);
	CHECK_ERR(ub_dgram_set_water(d, 10, 11), EINVAL);
	CHECK_OK(ub_dgram_set_water(d, 10, 10));
	CHECK_OK(ub_dgram_close(d));
	/* Until its CLOSED: ub_loop_free() would not wait for it otherwise
	 * either, but the test should not end with work in flight. */
	for (int i = 0, closed = 0; !closed; i++) {
		int n = ub_loop_wait(loop, ev, 8, 1, 100);

		CHECK(i < 100);
		CHECK(n >= 0);
		for (int k = 0; k < n; k++)
			closed |= ev[k].type == UB_EV_CLOSED &&
				  ev[k].dgram == d;
	}
}

int main(void)
{
	ub_loop *loop, *other;
	int err = 0;

	th_init("opts");
	th_watchdog(60);
	loop = ub_loop_new(NULL, &err);
	if (!loop && (err == -ENOSYS || err == -EPERM))
		th_skip("no io_uring: %s", strerror(-err));
	CHECK_PTR(loop, err);
	other = ub_loop_new(NULL, &err);
	CHECK_PTR(other, err);

	loop_opts();
	pool_args(loop);
	conn_opts(loop, other);
	forced_mode();
	water(loop);
	dgram_opts(loop, other);
	dgram_water(loop);

	CHECK_OK(ub_loop_free(other));
	CHECK_OK(ub_loop_free(loop));
	th_check_fds("at the end");
	return th_finish();
}
