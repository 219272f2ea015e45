/*
 * pool.c - buffer pools: states, transitions and their checks.
 *
 * A send pool hands out FREE buffers as APP until -ENOBUFS; counts by state
 * always add up to the pool size; set_len is bounded by the capacity;
 * release returns a buffer once (a double release is -EINVAL); a receive
 * pool's buffers are KERNEL and cannot be acquired or released; a pool with
 * a buffer out (or a connection receiving from it) cannot be freed; every
 * buffer lies inside the pool's page-aligned mapping; the generation changes
 * whenever a buffer leaves the application.  Invalid sizes are -EINVAL.
 */
#include "helpers.h"

#include <unistd.h>

static void check_counts(ub_pool *p, unsigned fr, unsigned ke, unsigned ap,
			 unsigned qu)
{
	CHECK_EQ(ub_pool_count_state(p, UB_BUF_FREE), fr);
	CHECK_EQ(ub_pool_count_state(p, UB_BUF_KERNEL), ke);
	CHECK_EQ(ub_pool_count_state(p, UB_BUF_APP), ap);
	CHECK_EQ(ub_pool_count_state(p, UB_BUF_QUEUED), qu);
}

static void check_layout(ub_pool *p)
{
	uintptr_t base = (uintptr_t)ub_pool_base(p);
	size_t bytes = ub_pool_bytes(p);
	unsigned n = ub_pool_count(p), size = ub_pool_buf_size(p);

	CHECK(base != 0);
	CHECK_EQ(base % (uintptr_t)sysconf(_SC_PAGESIZE), 0);
	CHECK_CMP(bytes, >=, (size_t)n * size);
	for (unsigned i = 0; i < n; i++) {
		ub_buf *b = ub_pool_buf(p, i);
		uintptr_t d;

		CHECK(b != NULL);
		CHECK_EQ(ub_buf_index(b), i);
		CHECK(ub_buf_pool(b) == p);
		CHECK_EQ(ub_buf_capacity(b), size);
		d = (uintptr_t)ub_buf_data(b);
		CHECK_CMP(d, >=, base);
		CHECK_CMP(d + size, <=, base + bytes);
		/* no two buffers overlap */
		for (unsigned j = 0; j < i; j++) {
			uintptr_t e = (uintptr_t)ub_buf_data(ub_pool_buf(p, j));
			CHECK(d + size <= e || e + size <= d);
		}
	}
	CHECK(ub_pool_buf(p, n) == NULL);
	CHECK(ub_pool_buf(p, 1u << 20) == NULL);
}

static void send_pool(ub_loop *loop, unsigned count, unsigned size)
{
	ub_buf *bufs[64];
	uint32_t gen[64];
	ub_pool *p;
	ub_buf *b;
	int err = 0;

	printf("send pool %u x %u\n", count, size);
	CHECK_CMP(count, <=, 64);
	p = ub_pool_new(loop, count, size, 0, &err);
	CHECK_PTR(p, err);
	CHECK_EQ(ub_pool_count(p), count);
	CHECK_EQ(ub_pool_buf_size(p), size);
	CHECK_EQ(ub_pool_flags(p) & UB_POOL_RECV, 0);
	CHECK(ub_pool_loop(p) == loop);
	check_counts(p, count, 0, 0, 0);
	check_layout(p);
	for (unsigned i = 0; i < count; i++)
		CHECK_EQ(ub_buf_state(ub_pool_buf(p, i)), UB_BUF_FREE);

	/* acquire everything */
	for (unsigned i = 0; i < count; i++) {
		err = 0;
		bufs[i] = ub_pool_acquire(p, &err);
		CHECK_PTR(bufs[i], err);
		CHECK_EQ(ub_buf_state(bufs[i]), UB_BUF_APP);
		CHECK_EQ(ub_buf_len(bufs[i]), 0);
		CHECK_EQ(ub_buf_capacity(bufs[i]), size);
		CHECK(ub_buf_pool(bufs[i]) == p);
		CHECK(ub_pool_buf(p, ub_buf_index(bufs[i])) == bufs[i]);
		for (unsigned j = 0; j < i; j++)
			CHECK(bufs[j] != bufs[i]);
		check_counts(p, count - i - 1, 0, i + 1, 0);
		/* the whole capacity is writable (ASan checks the bounds) */
		memset(ub_buf_data(bufs[i]), (int)i, size);
		gen[i] = ub_buf_gen(bufs[i]);
	}
	err = 0;
	b = ub_pool_acquire(p, &err);
	CHECK(b == NULL);
	CHECK_ERR(err, ENOBUFS);
	check_counts(p, 0, 0, count, 0);
	/* the data written to one buffer did not spill into another */
	for (unsigned i = 0; i < count; i++) {
		uint8_t *d = ub_buf_data(bufs[i]);
		CHECK_EQ(d[0], (uint8_t)i);
		CHECK_EQ(d[size - 1], (uint8_t)i);
	}

	/* set_len bounds */
	b = bufs[0];
	CHECK_OK(ub_buf_set_len(b, size));
	CHECK_EQ(ub_buf_len(b), size);
	CHECK_ERR(ub_buf_set_len(b, (size_t)size + 1), EINVAL);
	CHECK_ERR(ub_buf_set_len(b, (size_t)-1), EINVAL);
	CHECK_EQ(ub_buf_len(b), size); /* a failed call changes nothing */
	CHECK_OK(ub_buf_set_len(b, 1));
	CHECK_EQ(ub_buf_len(b), 1);
	CHECK_OK(ub_buf_set_len(b, 0));
	CHECK_EQ(ub_buf_len(b), 0);

	/* freeing with buffers out is refused and changes nothing */
	CHECK_ERR(ub_pool_free(p), EBUSY);
	check_counts(p, 0, 0, count, 0);

	/* release: state, generation, double release */
	CHECK_OK(ub_buf_release(b));
	CHECK_EQ(ub_buf_state(b), UB_BUF_FREE);
	CHECK(ub_buf_gen(b) != gen[0]);
	check_counts(p, 1, 0, count - 1, 0);
	uint32_t g1 = ub_buf_gen(b);
	CHECK_ERR(ub_buf_release(b), EINVAL);
	CHECK_EQ(ub_buf_gen(b), g1);
	check_counts(p, 1, 0, count - 1, 0);
	CHECK_ERR(ub_buf_set_len(b, 1), EINVAL);

	/* the released buffer is the one handed out next */
	err = 0;
	b = ub_pool_acquire(p, &err);
	CHECK_PTR(b, err);
	CHECK(b == bufs[0]);
	CHECK_EQ(ub_buf_len(b), 0);
	CHECK_EQ(ub_buf_state(b), UB_BUF_APP);
	CHECK_OK(ub_buf_release(b));
	CHECK(ub_buf_gen(b) != g1);

	/* release the rest; every one changes generation once */
	for (unsigned i = 1; i < count; i++) {
		CHECK_OK(ub_buf_set_len(bufs[i], i % size + 1));
		CHECK_OK(ub_buf_release(bufs[i]));
		CHECK(ub_buf_gen(bufs[i]) != gen[i]);
		CHECK_ERR(ub_buf_release(bufs[i]), EINVAL);
	}
	check_counts(p, count, 0, 0, 0);

	/* freed only when all are back */
	CHECK_OK(ub_pool_free(p));
}

static void recv_pool(ub_loop *loop, unsigned count, unsigned size)
{
	ub_pool *p;
	ub_buf *b;
	int err = 0;

	printf("receive pool %u x %u\n", count, size);
	p = ub_pool_new(loop, count, size, UB_POOL_RECV, &err);
	CHECK_PTR(p, err);
	CHECK_EQ(ub_pool_count(p), count);
	CHECK_EQ(ub_pool_buf_size(p), size);
	CHECK(ub_pool_flags(p) & UB_POOL_RECV);
	check_counts(p, 0, count, 0, 0);
	check_layout(p);
	err = 0;
	b = ub_pool_acquire(p, &err);
	CHECK(b == NULL);
	CHECK_ERR(err, EINVAL);
	for (unsigned i = 0; i < count; i++) {
		b = ub_pool_buf(p, i);
		CHECK_EQ(ub_buf_state(b), UB_BUF_KERNEL);
		CHECK_ERR(ub_buf_release(b), EINVAL);
		CHECK_ERR(ub_buf_set_len(b, 1), EINVAL);
	}
	check_counts(p, 0, count, 0, 0);
	CHECK_OK(ub_pool_free(p));
}

/* A pool a connection receives from cannot be freed until it is gone. */
static void pool_in_use(ub_loop *loop)
{
	ub_pool *p;
	ub_conn_opts o;
	ub_conn *c;
	ub_event ev[8];
	int fds[2], err = 0, closed = 0;
	double dl;

	printf("receive pool in use by a connection: -EBUSY\n");
	p = ub_pool_new(loop, 4, 1024, UB_POOL_RECV, &err);
	CHECK_PTR(p, err);
	th_socketpair(fds);
	ub_conn_opts_init(&o);
	o.recv_pool = p;
	c = ub_conn_adopt(loop, fds[0], &o, &err);
	CHECK_PTR(c, err);
	CHECK_ERR(ub_pool_free(p), EBUSY);
	CHECK_OK(ub_conn_abort(c));
	dl = th_now_ms() + TH_TIMEOUT_MS;
	while (!closed) {
		int n = ub_loop_wait(loop, ev, 8, 1, 50);

		CHECK(n >= 0 || n == -EINTR);
		for (int i = 0; i < n; i++) {
			CHECK(ev[i].conn == c);
			if (ev[i].type == UB_EV_CLOSED)
				closed = 1;
			else if (ev[i].type == UB_EV_DATA)
				ub_buf_release(ev[i].buf);
		}
		if (th_now_ms() > dl)
			TH_FAILF("no CLOSED after abort");
	}
	/* the conn is freed by the next wait; then the pool is unused */
	CHECK_EQ(ub_loop_wait(loop, ev, 8, 0, 0), 0);
	check_counts(p, 0, 4, 0, 0);
	CHECK_OK(ub_pool_free(p));
	close(fds[1]);
}

static void invalid_args(ub_loop *loop)
{
	struct {
		unsigned count, size, flags;
	} bad[] = {
		{ 0, 4096, 0 },
		{ 8, 0, 0 },
		{ 0, 0, UB_POOL_RECV },
		{ 0, 4096, UB_POOL_RECV },
		{ 8, 0, UB_POOL_RECV },
		{ 32769, 16, 0 },
		{ 32769, 16, UB_POOL_RECV },
		{ 1, (1u << 30) + 1, 0 },
		{ 65, 1u << 30, 0 },       /* 65 GiB > 64 GiB */
		{ 32768, 1u << 30, UB_POOL_RECV },
	};

	printf("invalid sizes: -EINVAL\n");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int err = 0;
		ub_pool *p = ub_pool_new(loop, bad[i].count, bad[i].size,
					 bad[i].flags, &err);
		if (p)
			TH_FAILF("ub_pool_new(%u, %u, 0x%x) succeeded",
				 bad[i].count, bad[i].size, bad[i].flags);
		if (err != -EINVAL)
			TH_FAILF("ub_pool_new(%u, %u, 0x%x): err %d, expected "
				 "-EINVAL", bad[i].count, bad[i].size,
				 bad[i].flags, err);
	}
}

static void default_pools(void)
{
	ub_loop_opts lo = { .pool_count = 16, .pool_size = 2048 };
	ub_loop *loop = th_loop_new(&lo);
	ub_pool *r, *s;
	int err = 0;

	printf("default pools follow ub_loop_opts\n");
	r = ub_loop_recv_pool(loop, &err);
	CHECK_PTR(r, err);
	s = ub_loop_send_pool(loop, &err);
	CHECK_PTR(s, err);
	CHECK(r != s);
	CHECK(ub_loop_recv_pool(loop, &err) == r);
	CHECK(ub_loop_send_pool(loop, &err) == s);
	CHECK_EQ(ub_pool_count(r), 16);
	CHECK_EQ(ub_pool_buf_size(r), 2048);
	CHECK(ub_pool_flags(r) & UB_POOL_RECV);
	CHECK_EQ(ub_pool_count(s), 16);
	CHECK_EQ(ub_pool_buf_size(s), 2048);
	CHECK_EQ(ub_pool_flags(s) & UB_POOL_RECV, 0);
	check_counts(r, 0, 16, 0, 0);
	check_counts(s, 16, 0, 0, 0);
	/* a buffer still held when the loop goes: the loop frees it all */
	CHECK(ub_pool_acquire(s, &err) != NULL);
	CHECK_OK(ub_loop_free(loop));
}

int main(void)
{
	ub_loop *loop;

	th_init("pool");
	loop = th_loop_new(NULL);
	send_pool(loop, 8, 4096);
	send_pool(loop, 3, 100);     /* odd sizes, not powers of two */
	send_pool(loop, 1, 1);
	send_pool(loop, 64, 65536);
	recv_pool(loop, 8, 4096);
	recv_pool(loop, 5, 1000);
	recv_pool(loop, 1, 1);
	pool_in_use(loop);
	invalid_args(loop);

	printf("pools left to ub_loop_free\n");
	{
		int err = 0;
		ub_pool *a = ub_pool_new(loop, 4, 512, 0, &err);
		ub_pool *b = ub_pool_new(loop, 4, 512, UB_POOL_RECV, &err);
		CHECK(a && b);
		CHECK(ub_pool_acquire(a, &err) != NULL);
	}
	CHECK_OK(ub_loop_free(loop));
	default_pools();
	return th_finish();
}
