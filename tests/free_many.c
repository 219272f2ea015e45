/*
 * free_many.c - ub_loop_free() with many connections still open.
 *
 * A server stopped by a signal frees its loop while its clients are still
 * connected: every connection then has a multishot receive armed, and the
 * free has to cancel all of them and reap every completion.  With a few
 * hundred connections this once never finished (each cancel completion
 * sent another cancel-all before the receive's own completion could
 * arrive, so the reaper always found a full batch and never waited):
 * ub_loop_free() returned -ETIMEDOUT after 10 s, or spun.  Here N
 * connections are accepted, each receives one verified message (so every
 * receive is armed and has run), and the loop must free in well under its
 * 10 s safety net, returning 0.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define N 1000

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(void)
{
	static int fds[N];
	static ub_event ev[256];
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct rlimit rl;
	ub_loop *loop;
	ub_listener *l;
	unsigned accepted = 0, got = 0, i;
	double t0, deadline;
	int err = 0, n, k, r;

	th_init("free_many");
	/* The bug this guards against spins inside ub_loop_free(): a signal
	 * ends the test (a failure) instead of a hang. */
	alarm(60);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * N + 64)
		th_skip("RLIMIT_NOFILE %llu is below the %d descriptors needed",
			(unsigned long long)rl.rlim_cur, 2 * N + 64);
	loop = ub_loop_new(NULL, &err);
	if (!loop && (err == -ENOSYS || err == -EPERM))
		th_skip("no io_uring here (%s)", strerror(-err));
	CHECK_PTR(loop, err);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = ub_listen(loop, (struct sockaddr *)&sin, sizeof(sin), 4096, 0,
		      NULL, &err);
	CHECK_PTR(l, err);
	CHECK(getsockname(ub_listener_fd(l), (struct sockaddr *)&sin,
			  &len) == 0);

	/* Connect in steps that fit the backlog; each client sends its
	 * index, which the server must receive (so its receive ran). */
	deadline = now_s() + 30;
	for (i = 0; i < N; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		CHECK(fds[i] >= 0);
		CHECK(connect(fds[i], (struct sockaddr *)&sin, sizeof(sin)) == 0);
		CHECK(send(fds[i], &i, sizeof(i), 0) == (ssize_t)sizeof(i));
		while (accepted + 256 <= i + 1 || (i == N - 1 && got < N)) {
			CHECK(now_s() < deadline);
			n = ub_loop_wait(loop, ev, 256, 1, 100);
			CHECK(n >= 0 || n == -EINTR);
			for (k = 0; k < n; k++) {
				if (ev[k].type == UB_EV_ACCEPT) {
					accepted++;
				} else if (ev[k].type == UB_EV_DATA) {
					CHECK_EQ(ub_buf_len(ev[k].buf), sizeof(unsigned));
					got++;
					CHECK_OK(ub_buf_release(ev[k].buf));
				} else {
					TH_FAILF("unexpected event %s (res %d)",
						 ub_event_name(ev[k].type),
						 ev[k].res);
				}
			}
		}
	}
	CHECK_EQ(accepted, N);
	CHECK_EQ(got, N);

	/* Every client is still connected: free the loop now. */
	t0 = now_s();
	r = ub_loop_free(loop);
	CHECK_OK(r);
	CHECK_EQ(r, 0);
	CHECK_CMP((long long)((now_s() - t0) * 1000), <, 5000);
	for (i = 0; i < N; i++)
		close(fds[i]);
	return th_finish();
}
