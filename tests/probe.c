/*
 * probe.c - kernel feature probing, reasons, disabling, and send modes.
 *
 * Every feature bit is either available (reason NULL) or not (a non-empty
 * reason).  ub_loop_opts.disable removes features as if the kernel lacked
 * them, and the modes that need them then fail ub_loop_mode_check with
 * -EOPNOTSUPP and a reason, while AUTO falls back.  A connection forced into
 * a mode reports that mode; a forced mode the loop lacks is refused with
 * -EOPNOTSUPP and the fd stays the caller's.  With every feature disabled a
 * connection still moves bytes (the SERIAL + plain recv fallback).
 */
#include "helpers.h"

#include <unistd.h>

static void check_features(ub_loop *loop, unsigned disabled)
{
	unsigned feat = ub_loop_features(loop);

	CHECK_EQ(feat & ~(unsigned)UB_FEAT_ALL, 0);
	CHECK_EQ(feat & disabled, 0);
	for (unsigned bit = 1; bit & UB_FEAT_ALL; bit <<= 1) {
		const char *name = ub_feature_name(bit);
		const char *reason = ub_loop_feature_reason(loop, bit);

		if (!name || !*name)
			TH_FAILF("ub_feature_name(0x%x) is empty", bit);
		if (feat & bit) {
			if (reason)
				TH_FAILF("feature %s set but has reason \"%s\"",
					 name, reason);
		} else {
			if (!reason || !*reason)
				TH_FAILF("feature %s clear without a reason",
					 name);
		}
		if (!disabled)
			printf("  %-16s %s%s\n", name,
			       (feat & bit) ? "yes" : "no: ",
			       (feat & bit) ? "" : reason);
	}
}

static void check_mode_consistency(ub_loop *loop)
{
	unsigned feat = ub_loop_features(loop);
	const char *reason;
	int best = ub_loop_best_mode(loop);

	/* SERIAL needs nothing from the kernel. */
	reason = "unset";
	CHECK_OK(ub_loop_mode_check(loop, UB_MODE_SERIAL, &reason));
	CHECK_OK(ub_loop_mode_check(loop, UB_MODE_SERIAL, NULL));

	for (int i = 0; i < 3; i++) {
		int m = th_modes[i];
		int r;

		reason = NULL;
		r = ub_loop_mode_check(loop, m, &reason);
		if (r == 0)
			continue;
		CHECK_ERR(r, EOPNOTSUPP);
		if (!reason || !*reason)
			TH_FAILF("mode %s refused without a reason",
				 ub_mode_name(m));
		/* NULL reason pointer is allowed and gives the same answer */
		CHECK_ERR(ub_loop_mode_check(loop, m, NULL), EOPNOTSUPP);
	}
	if (!(feat & UB_FEAT_SEND_BUNDLE))
		CHECK_ERR(ub_loop_mode_check(loop, UB_MODE_BUNDLE, NULL),
			  EOPNOTSUPP);
	if (!(feat & UB_FEAT_SEND_RING)) {
		CHECK_ERR(ub_loop_mode_check(loop, UB_MODE_RING, NULL),
			  EOPNOTSUPP);
		CHECK_ERR(ub_loop_mode_check(loop, UB_MODE_BUNDLE, NULL),
			  EOPNOTSUPP);
	}
	/* AUTO: BUNDLE > SERIAL */
	if (ub_loop_mode_check(loop, UB_MODE_BUNDLE, NULL) == 0)
		CHECK_EQ(best, UB_MODE_BUNDLE);
	else
		CHECK_EQ(best, UB_MODE_SERIAL);
	CHECK_OK(ub_loop_mode_check(loop, best, NULL));
}

/* A connection forced into each mode reports it; a refused mode leaves the
 * fd open and the caller's. */
static void check_conn_modes(ub_loop *loop)
{
	int modes[4] = { UB_MODE_AUTO, UB_MODE_BUNDLE, UB_MODE_RING,
			 UB_MODE_SERIAL };

	for (int i = 0; i < 4; i++) {
		ub_conn_opts o;
		ub_conn *c;
		int fds[2], err = 0, usable;

		usable = modes[i] == UB_MODE_AUTO ||
			 ub_loop_mode_check(loop, modes[i], NULL) == 0;
		th_socketpair(fds);
		ub_conn_opts_init(&o);
		o.mode = modes[i];
		o.flags = UB_CONN_NO_RECV;
		c = ub_conn_adopt(loop, fds[0], &o, &err);
		if (!usable) {
			CHECK(c == NULL);
			CHECK_ERR(err, EOPNOTSUPP);
			CHECK(th_fd_is_open(fds[0]));
			close(fds[0]);
			close(fds[1]);
			continue;
		}
		CHECK_PTR(c, err);
		CHECK_EQ(ub_conn_fd(c), fds[0]);
		CHECK(ub_conn_loop(c) == loop);
		CHECK_EQ(ub_conn_mode(c), modes[i] == UB_MODE_AUTO
						  ? ub_loop_best_mode(loop)
						  : modes[i]);
		CHECK_OK(ub_conn_abort(c));
		close(fds[1]);
		/* reap the CLOSED event (and free the conn on the next wait) */
		ub_event ev[8];
		int closed = 0;
		double dl = th_now_ms() + TH_TIMEOUT_MS;
		while (!closed) {
			int n = ub_loop_wait(loop, ev, 8, 1, 50);
			CHECK(n >= 0 || n == -EINTR);
			for (int k = 0; k < n; k++) {
				CHECK(ev[k].conn == c);
				if (ev[k].type == UB_EV_CLOSED)
					closed++;
			}
			if (th_now_ms() > dl)
				TH_FAILF("no CLOSED after abort");
		}
		CHECK_EQ(ub_loop_wait(loop, ev, 8, 0, 0), 0);
		CHECK(!th_fd_is_open(fds[0]));
	}
}

/* Refused calls change nothing and leave the fd with the caller. */
static void check_bad_args(ub_loop *loop)
{
	ub_event ev[4];
	ub_conn_opts o;
	int fds[2], err = 0;

	printf("bad arguments are refused\n");
	CHECK_EQ(ub_loop_pending(loop), 0);
	CHECK_ERR(ub_loop_wait(loop, NULL, 4, 0, 0), EINVAL);
	CHECK_ERR(ub_loop_wait(loop, ev, 0, 0, 0), EINVAL);
	CHECK_ERR(ub_loop_wait(loop, ev, -1, 0, 0), EINVAL);
	CHECK_ERR(ub_loop_wait(loop, ev, 4, 5, 0), EINVAL); /* min > max */
	CHECK_EQ(ub_loop_wait(loop, ev, 4, 0, 0), 0);
	CHECK_EQ(ub_loop_wait(loop, ev, 4, 1, 20), 0); /* timeout */

	/* not a socket */
	CHECK(pipe(fds) == 0);
	ub_conn_opts_init(&o);
	CHECK(ub_conn_adopt(loop, fds[0], &o, &err) == NULL);
	CHECK_ERR(err, ENOTSOCK);
	CHECK(th_fd_is_open(fds[0]));
	close(fds[0]);
	close(fds[1]);

	/* bad options */
	th_socketpair(fds);
	ub_conn_opts_init(&o);
	o.ring_entries = 100; /* not a power of 2 */
	err = 0;
	CHECK(ub_conn_adopt(loop, fds[0], &o, &err) == NULL);
	CHECK_ERR(err, EINVAL);
	ub_conn_opts_init(&o);
	o.mode = 99;
	err = 0;
	CHECK(ub_conn_adopt(loop, fds[0], &o, &err) == NULL);
	CHECK_ERR(err, EINVAL);
	ub_conn_opts_init(&o);
	{
		/* a send pool given as the receive pool */
		ub_pool *sp = ub_pool_new(loop, 2, 1024, 0, &err);

		CHECK_PTR(sp, err);
		o.recv_pool = sp;
		err = 0;
		CHECK(ub_conn_adopt(loop, fds[0], &o, &err) == NULL);
		CHECK_ERR(err, EINVAL);
		CHECK_OK(ub_pool_free(sp));
	}
	CHECK(th_fd_is_open(fds[0]));
	close(fds[0]);
	close(fds[1]);
	CHECK_EQ(ub_loop_wait(loop, ev, 4, 0, 0), 0);
}

static void check_names(void)
{
	const char *names[] = { "auto", "bundle", "ring", "serial" };
	int modes[] = { UB_MODE_AUTO, UB_MODE_BUNDLE, UB_MODE_RING,
			UB_MODE_SERIAL };

	printf("mode names round trip\n");
	for (int i = 0; i < 4; i++) {
		const char *n = ub_mode_name(modes[i]);

		CHECK(n != NULL);
		CHECK(strcmp(n, names[i]) == 0);
		CHECK_EQ(ub_mode_from_name(n), modes[i]);
	}
	CHECK_ERR(ub_mode_from_name("nope"), EINVAL);
	CHECK_ERR(ub_mode_from_name(""), EINVAL);

	printf("event names\n");
	for (int t = UB_EV_NONE; t <= UB_EV_CLOSED; t++) {
		const char *n = ub_event_name(t);

		if (!n || !*n)
			TH_FAILF("ub_event_name(%d) empty", t);
		for (int u = UB_EV_NONE; u < t; u++)
			if (!strcmp(n, ub_event_name(u)))
				TH_FAILF("events %d and %d share name %s", u,
					 t, n);
	}

	printf("feature names: unknown or multi-bit -> NULL\n");
	CHECK(ub_feature_name(UB_FEAT_ALL + 1) == NULL);
	CHECK(ub_feature_name(0) == NULL);
	CHECK(ub_feature_name(UB_FEAT_SEND_RING | UB_FEAT_SEND_BUNDLE) == NULL);
	for (unsigned a = 1; a & UB_FEAT_ALL; a <<= 1)
		for (unsigned b = 1; b < a; b <<= 1)
			CHECK(strcmp(ub_feature_name(a), ub_feature_name(b)));
}

static void on_ev(const ub_event *ev, void *arg)
{
	long *got = arg;

	if (ev->type == UB_EV_DATA) {
		th_pat_check(7, (uint64_t)got[0], ub_buf_data(ev->buf),
			     ub_buf_len(ev->buf), "fallback recv");
		CHECK_EQ(ev->res, ub_buf_len(ev->buf));
		got[0] += ev->res;
		CHECK_OK(ub_buf_release(ev->buf));
	} else if (ev->type == UB_EV_EOF) {
		got[1] = 1;
	} else if (ev->type == UB_EV_CLOSED) {
		got[2]++;
	} else if (ev->type != UB_EV_WRITABLE) {
		TH_FAILF("unexpected %s res %d", ub_event_name(ev->type),
			 ev->res);
	}
}

struct fb {
	long got[3];
	ub_conn *tx;
	long sent, total;
	uint8_t buf[4096];
};

static void fb_ev(const ub_event *ev, void *arg)
{
	struct fb *f = arg;

	if (ev->conn == f->tx) {
		if (ev->type == UB_EV_CLOSED)
			f->got[2]++;
		else if (ev->type != UB_EV_WRITABLE)
			TH_FAILF("sender: unexpected %s",
				 ub_event_name(ev->type));
		return;
	}
	on_ev(ev, f->got);
}

static int fb_step(void *arg)
{
	struct fb *f = arg;

	while (f->sent < f->total) {
		size_t n = f->total - f->sent;
		ssize_t r;

		if (n > sizeof(f->buf))
			n = sizeof(f->buf);
		th_pat_fill(7, f->sent, f->buf, n);
		r = ub_conn_send(f->tx, f->buf, n);
		if (r == -EAGAIN)
			return TH_IDLE;
		CHECK_OK(r);
		CHECK_CMP(r, >, 0);
		f->sent += r;
		if (f->sent == f->total)
			CHECK_OK(ub_conn_shutdown(f->tx));
	}
	return f->got[1] ? TH_DONE : TH_IDLE;
}

/* Every feature off: SERIAL sends and plain receives still move bytes. */
static void check_fallback_transfer(void)
{
	ub_loop_opts lo = { .disable = UB_FEAT_ALL, .pool_count = 8,
			    .pool_size = 1024 };
	ub_loop *loop = th_loop_new(&lo);
	struct fb f;
	ub_conn_opts o;
	int fds[2], err = 0;
	ub_conn *rx;

	printf("all features disabled: 1 MiB over a socketpair\n");
	memset(&f, 0, sizeof(f));
	f.total = 1 << 20;
	CHECK_EQ(ub_loop_features(loop), 0);
	check_features(loop, UB_FEAT_ALL);
	CHECK_EQ(ub_loop_best_mode(loop), UB_MODE_SERIAL);
	th_socketpair(fds);
	th_small_bufs(fds[0]);
	th_small_bufs(fds[1]);
	ub_conn_opts_init(&o);
	o.flags = UB_CONN_NO_RECV;
	f.tx = ub_conn_adopt(loop, fds[0], &o, &err);
	CHECK_PTR(f.tx, err);
	CHECK_EQ(ub_conn_mode(f.tx), UB_MODE_SERIAL);
	ub_conn_opts_init(&o);
	rx = ub_conn_adopt(loop, fds[1], &o, &err);
	CHECK_PTR(rx, err);
	th_run(loop, fb_ev, fb_step, &f, 10, TH_TIMEOUT_MS, "fallback EOF");
	CHECK_EQ(f.got[0], f.total);
	CHECK_EQ(ub_conn_bytes_received(rx), f.total);
	CHECK_OK(ub_conn_close(rx));
	CHECK_OK(ub_conn_close(f.tx));
	{
		/* wait for both CLOSED */
		double dl = th_now_ms() + TH_TIMEOUT_MS;
		while (f.got[2] < 2) {
			th_run_for(loop, fb_ev, NULL, &f, 10, 10);
			if (th_now_ms() > dl)
				TH_FAILF("CLOSED missing: %ld", f.got[2]);
		}
	}
	CHECK_EQ(f.got[2], 2);
	CHECK_OK(ub_loop_free(loop));
}

int main(void)
{
	ub_loop *loop;

	th_init("probe");
	check_names();

	printf("features of this kernel:\n");
	loop = th_loop_new(NULL);
	CHECK_CMP(ub_loop_fd(loop), >=, 0);
	check_features(loop, 0);
	check_mode_consistency(loop);
	printf("best mode: %s\n", ub_mode_name(ub_loop_best_mode(loop)));
	printf("connections forced into each mode\n");
	check_conn_modes(loop);
	check_bad_args(loop);
	CHECK_OK(ub_loop_free(loop));

	printf("disable send_bundle: BUNDLE refused, AUTO falls back\n");
	{
		ub_loop_opts lo = { .disable = UB_FEAT_SEND_BUNDLE };
		const char *reason = NULL;

		loop = th_loop_new(&lo);
		CHECK_EQ(ub_loop_features(loop) & UB_FEAT_SEND_BUNDLE, 0);
		check_features(loop, UB_FEAT_SEND_BUNDLE);
		reason = ub_loop_feature_reason(loop, UB_FEAT_SEND_BUNDLE);
		CHECK(reason && *reason);
		printf("  send_bundle: %s\n", reason);
		reason = NULL;
		CHECK_ERR(ub_loop_mode_check(loop, UB_MODE_BUNDLE, &reason),
			  EOPNOTSUPP);
		CHECK(reason && *reason);
		printf("  bundle mode: %s\n", reason);
		CHECK(ub_loop_best_mode(loop) != UB_MODE_BUNDLE);
		CHECK_EQ(ub_loop_best_mode(loop), UB_MODE_SERIAL);
		check_mode_consistency(loop);
		check_conn_modes(loop);
		CHECK_OK(ub_loop_free(loop));
	}

	printf("disable send_ring: RING and BUNDLE refused\n");
	{
		ub_loop_opts lo = { .disable = UB_FEAT_SEND_RING };
		const char *reason = NULL;

		loop = th_loop_new(&lo);
		check_features(loop, UB_FEAT_SEND_RING);
		CHECK_ERR(ub_loop_mode_check(loop, UB_MODE_RING, &reason),
			  EOPNOTSUPP);
		CHECK(reason && *reason);
		printf("  ring mode: %s\n", reason);
		check_mode_consistency(loop);
		check_conn_modes(loop);
		CHECK_OK(ub_loop_free(loop));
	}

	printf("disable everything one bit at a time\n");
	for (unsigned bit = 1; bit & UB_FEAT_ALL; bit <<= 1) {
		ub_loop_opts lo = { .disable = bit };

		loop = th_loop_new(&lo);
		check_features(loop, bit);
		check_mode_consistency(loop);
		CHECK_OK(ub_loop_free(loop));
	}

	check_fallback_transfer();
	return th_finish();
}
