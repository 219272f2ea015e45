/*
 * handles.c - lifetime of connections, listeners and datagram endpoints
 * (libuv's handle model): ub_*_hold(), ub_*_release(), ub_*_is_closed().
 *
 * An object nobody holds is freed when the wait after the one that returned
 * its CLOSED starts, as always.  A held one outlives that: is_closed says 1
 * from that wait on, every operation fails with its documented error, fd is
 * -1, and the last release frees it.  ub_loop_free() with held objects
 * (open, REPORTED and GONE ones) releases their sockets and leaves only the
 * struct, detached: loop accessor NULL.  Memory errors (a use after free, a
 * leak, a double free) are for valgrind and ASan to find: the suites run
 * this test under both.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

static ub_event ev[64];
/* Objects whose CLOSED came in the last batch (one batch may end several) */
static const void *closed[64];
static int nclosed;

/* Take a batch: DATA buffers go back at once, CLOSED are noted. */
static void batch(ub_loop *loop, int min, int timeout_ms)
{
	int i, n = ub_loop_wait(loop, ev, 64, min, timeout_ms);

	CHECK(n >= 0);
	nclosed = 0;
	for (i = 0; i < n; i++) {
		if (ev[i].type == UB_EV_DATA && ev[i].buf)
			CHECK_OK(ub_buf_release(ev[i].buf));
		if (ev[i].type == UB_EV_CLOSED)
			closed[nclosed++] = ev[i].conn ? (const void *)ev[i].conn
					    : ev[i].listener
						    ? (const void *)ev[i].listener
						    : (const void *)ev[i].dgram;
	}
}

static int saw_closed(const void *obj)
{
	for (int i = 0; i < nclosed; i++)
		if (closed[i] == obj)
			return 1;
	return 0;
}

/* Wait until the batch that returns obj's CLOSED (obj: a conn, listener or
 * dgram), unless the last batch did. */
static void wait_closed(ub_loop *loop, const void *obj)
{
	for (int round = 0; round < 300; round++) {
		if (saw_closed(obj))
			return;
		batch(loop, 1, 100);
	}
	TH_FAILF("no CLOSED event");
}

/* One more wait: where an unheld object would be freed. */
static void next_wait(ub_loop *loop)
{
	batch(loop, 0, 0);
}

static ub_conn *adopt_pair(ub_loop *loop, int *peer)
{
	int fds[2], err = 0;
	ub_conn *c;

	th_socketpair(fds);
	c = ub_conn_adopt(loop, fds[0], NULL, &err);
	CHECK_PTR(c, err);
	*peer = fds[1];
	return c;
}

/* Every operation of a connection that is gone fails; accessors answer. */
static void check_conn_dead(ub_conn *c, ub_conn *live, ub_loop *loop)
{
	CHECK_EQ(ub_conn_is_closed(c), 1);
	CHECK_EQ(ub_conn_fd(c), -1);
	CHECK(ub_conn_loop(c) == loop);
	CHECK_EQ(ub_conn_is_closing(c), 1);
	CHECK_EQ(ub_conn_queued_bytes(c), 0);
	CHECK_EQ(ub_conn_recv_held(c), 0);
	CHECK_ERR(ub_conn_send(c, "x", 1), EPIPE);
	CHECK_ERR(ub_conn_close(c), EPIPE);
	CHECK_ERR(ub_conn_abort(c), EPIPE);
	CHECK_ERR(ub_conn_shutdown(c), EPIPE);
	CHECK_ERR(ub_conn_pause_recv(c), EPIPE);
	CHECK_ERR(ub_conn_resume_recv(c), EPIPE);
	CHECK_ERR(ub_conn_want_writable(c), EPIPE);
	CHECK_ERR(ub_conn_set_idle_timeout(c, 10), EPIPE);
	CHECK_ERR(ub_conn_pipe(c, NULL), EPIPE);
	/* setters that only store a value are harmless */
	CHECK_OK(ub_conn_set_water(c, 100, 10));
	CHECK_OK(ub_conn_set_recv_budget(c, 4096));
	if (live) {
		ub_pool *sp = ub_loop_send_pool(loop, NULL);
		ub_buf *b = ub_pool_acquire(sp, NULL);

		CHECK(b != NULL);
		CHECK_OK(ub_buf_set_len(b, 1));
		CHECK_ERR(ub_conn_send_buf(c, b), EPIPE);
		CHECK_OK(ub_buf_release(b));
		CHECK_ERR(ub_conn_pipe(live, c), EPIPE);
	}
}

static void test_conn(void)
{
	ub_loop *loop = th_loop_new(NULL);
	ub_conn *c, *live, *plain;
	int peer, peer2, peer3;

	c = adopt_pair(loop, &peer);
	live = adopt_pair(loop, &peer2);
	plain = adopt_pair(loop, &peer3);
	CHECK_ERR(ub_conn_hold(NULL), EINVAL);
	CHECK_ERR(ub_conn_is_closed(NULL), EINVAL);
	ub_conn_release(NULL);
	ub_conn_release(plain); /* not held: nothing */
	CHECK_OK(ub_conn_hold(c));
	CHECK_OK(ub_conn_hold(c));
	/* held and released before it closes: an unheld connection */
	CHECK_OK(ub_conn_hold(plain));
	ub_conn_release(plain);
	CHECK_EQ(ub_conn_is_closed(c), 0);
	CHECK_OK(ub_conn_abort(c));
	CHECK_OK(ub_conn_close(plain));
	wait_closed(loop, c);
	/* CLOSED returned: usable until the next wait, as ever */
	CHECK_EQ(ub_conn_is_closed(c), 0);
	CHECK_ERR(ub_conn_send(c, "x", 1), EPIPE);
	wait_closed(loop, plain);
	for (int i = 0; i < 3; i++) {
		next_wait(loop);
		check_conn_dead(c, live, loop);
	}
	ub_conn_release(c);
	CHECK_EQ(ub_conn_is_closed(c), 1); /* one hold left */
	ub_conn_release(c);                /* freed here */
	CHECK_OK(ub_conn_close(live));
	wait_closed(loop, live);
	CHECK_OK(ub_loop_free(loop));
	close(peer);
	close(peer2);
	close(peer3);
}

static ub_listener *listen_any(ub_loop *loop)
{
	struct sockaddr_in sin;
	ub_listener *l;
	int err = 0;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = ub_listen(loop, (struct sockaddr *)&sin, sizeof(sin), 16, 0, NULL,
		      &err);
	CHECK_PTR(l, err);
	return l;
}

static ub_dgram *udp_any(ub_loop *loop)
{
	struct sockaddr_in sin;
	ub_dgram *d;
	int err = 0;

	if (!(ub_loop_features(loop) & UB_FEAT_RECV_MULTISHOT))
		return NULL;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	d = ub_dgram_open(loop, (struct sockaddr *)&sin, sizeof(sin), NULL,
			  &err);
	CHECK_PTR(d, err);
	return d;
}

static void check_listener_dead(ub_listener *l, ub_loop *loop)
{
	CHECK_EQ(ub_listener_is_closed(l), 1);
	CHECK_EQ(ub_listener_fd(l), -1);
	CHECK(ub_listener_loop(l) == loop);
	CHECK_EQ(ub_listener_conns(l), 0);
	CHECK_ERR(ub_listener_close(l), EPIPE);
	CHECK_ERR(ub_listener_set_max_conns(l, 3), EPIPE);
}

static void check_dgram_dead(ub_dgram *d, ub_loop *loop)
{
	struct sockaddr_in sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(9);
	CHECK_EQ(ub_dgram_is_closed(d), 1);
	CHECK_EQ(ub_dgram_fd(d), -1);
	CHECK(ub_dgram_loop(d) == loop);
	CHECK_EQ(ub_dgram_queued_bufs(d), 0);
	CHECK_ERR(ub_dgram_send(d, "x", 1, (struct sockaddr *)&sin,
				sizeof(sin)),
		  EPIPE);
	CHECK_ERR(ub_dgram_send_buf(d, NULL, NULL, 0), EINVAL);
	CHECK_ERR(ub_dgram_connect(d, (struct sockaddr *)&sin, sizeof(sin)),
		  EPIPE);
	CHECK_ERR(ub_dgram_close(d), EPIPE);
	CHECK_ERR(ub_dgram_pause_recv(d), EPIPE);
	CHECK_ERR(ub_dgram_resume_recv(d), EPIPE);
	CHECK_ERR(ub_dgram_want_writable(d), EPIPE);
	CHECK_OK(ub_dgram_set_water(d, 100, 10));
	CHECK_OK(ub_dgram_set_recv_budget(d, 4096));
}

static void test_listener_dgram(void)
{
	ub_loop *loop = th_loop_new(NULL);
	ub_listener *l = listen_any(loop);
	ub_dgram *d = udp_any(loop);

	CHECK_ERR(ub_listener_hold(NULL), EINVAL);
	CHECK_ERR(ub_listener_is_closed(NULL), EINVAL);
	CHECK_ERR(ub_dgram_hold(NULL), EINVAL);
	CHECK_ERR(ub_dgram_is_closed(NULL), EINVAL);
	CHECK(ub_listener_loop(NULL) == NULL);
	ub_listener_release(NULL);
	ub_dgram_release(NULL);
	CHECK(ub_listener_loop(l) == loop);
	CHECK_OK(ub_listener_hold(l));
	CHECK_OK(ub_listener_close(l));
	wait_closed(loop, l);
	CHECK_EQ(ub_listener_is_closed(l), 0);
	next_wait(loop);
	next_wait(loop);
	check_listener_dead(l, loop);
	ub_listener_release(l);
	if (d) {
		CHECK_OK(ub_dgram_hold(d));
		CHECK_OK(ub_dgram_close(d));
		wait_closed(loop, d);
		CHECK_EQ(ub_dgram_is_closed(d), 0);
		next_wait(loop);
		check_dgram_dead(d, loop);
		ub_dgram_release(d);
	} else {
		printf("datagram endpoints: skipped (no multishot recvmsg)\n");
	}
	CHECK_OK(ub_loop_free(loop));
}

/* ub_loop_free() with held objects in every state: open (a connection with
 * a receive armed and bytes queued, a listener, an endpoint), REPORTED
 * (CLOSED just returned) and GONE (a wait later). */
static void test_loop_free(void)
{
	ub_loop *loop = th_loop_new(NULL);
	ub_conn *open_c, *reported, *gone_c;
	ub_listener *l = listen_any(loop);
	ub_dgram *d = udp_any(loop);
	int p1, p2, p3;
	char junk[64];

	open_c = adopt_pair(loop, &p1);
	reported = adopt_pair(loop, &p2);
	gone_c = adopt_pair(loop, &p3);
	CHECK_OK(ub_conn_hold(open_c));
	CHECK_OK(ub_conn_hold(reported));
	CHECK_OK(ub_conn_hold(gone_c));
	CHECK_OK(ub_listener_hold(l));
	if (d)
		CHECK_OK(ub_dgram_hold(d));
	/* the peer sends: a receive completes and is re-armed */
	memset(junk, 'x', sizeof(junk));
	CHECK(write(p1, junk, sizeof(junk)) == (ssize_t)sizeof(junk));
	CHECK_EQ(ub_conn_send(open_c, junk, sizeof(junk)), sizeof(junk));
	CHECK_OK(ub_conn_abort(gone_c));
	wait_closed(loop, gone_c);
	next_wait(loop);
	CHECK_EQ(ub_conn_is_closed(gone_c), 1);
	CHECK_OK(ub_conn_abort(reported));
	wait_closed(loop, reported);
	CHECK_EQ(ub_conn_is_closed(reported), 0);

	CHECK_OK(ub_loop_free(loop));

	/* detached: no loop, closed, every operation an error */
	check_conn_dead(open_c, NULL, NULL);
	check_conn_dead(reported, NULL, NULL);
	check_conn_dead(gone_c, NULL, NULL);
	check_listener_dead(l, NULL);
	/* the peer sees the socket gone */
	CHECK(read(p1, junk, sizeof(junk)) >= 0);
	/* hold and release still work on a detached object */
	CHECK_OK(ub_conn_hold(open_c));
	ub_conn_release(open_c);
	ub_conn_release(open_c);
	ub_conn_release(reported);
	ub_conn_release(gone_c);
	ub_listener_release(l);
	if (d) {
		check_dgram_dead(d, NULL);
		ub_dgram_release(d);
	}
	close(p1);
	close(p2);
	close(p3);
}

/* Nothing held: objects go exactly as before (ASan/valgrind: no leak). */
static void test_unheld(void)
{
	ub_loop *loop = th_loop_new(NULL);
	ub_listener *l = listen_any(loop);
	ub_dgram *d = udp_any(loop);
	int p1, p2;
	ub_conn *a = adopt_pair(loop, &p1), *b = adopt_pair(loop, &p2);

	CHECK_OK(ub_conn_close(a));
	wait_closed(loop, a);
	next_wait(loop);
	CHECK_OK(ub_listener_close(l));
	wait_closed(loop, l);
	(void)b; /* still open: ub_loop_free() frees it */
	if (d)
		(void)d;
	CHECK_OK(ub_loop_free(loop));
	close(p1);
	close(p2);
}

int main(void)
{
	th_init("handles");
	th_watchdog(120);
	test_conn();
	test_listener_dgram();
	test_loop_free();
	test_unheld();
	return th_finish();
}
