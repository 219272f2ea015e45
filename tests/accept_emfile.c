/*
 * accept_emfile.c - a listener in a process that is out of file
 * descriptors must not spin, and must recover when descriptors free up.
 *
 * In every send mode: RLIMIT_NOFILE is lowered and the table filled with
 * duplicates of one fd, a listening socket is adopted (io_uring reads the
 * limit when it prepares the accept), then 8 clients (sockets made
 * beforehand) connect and sit in the backlog while every accept fails with
 * EMFILE.  For 1 s:
 *  - the listener reports the failure as ERROR -EMFILE (or -ENFILE), at
 *    most about once per 100 ms back-off (<= 15 in the second), and no
 *    ACCEPT comes;
 *  - the process uses little CPU (getrusage: < 250 ms of the 1000 ms; a
 *    re-arm loop burns all of it).
 * Then the duplicates are closed: within 2 s every client is accepted;
 * each accepted connection sends 4 KiB of a pattern and closes gracefully,
 * so every client reads exactly those bytes then EOF.
 * Second round: starved again, a new listener, 2 more clients connect,
 * and the listener is closed while it waits out its back-off: CLOSED comes promptly (< 1 s),
 * and the backlogged clients see their connections end.
 * At the end every pool is idle and the fd count is back to the start.
 */
#include "helpers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define NCLI 8
#define NLATE 2
#define MSG 4096
#define MAXFILL 65536

struct em {
	ub_loop *loop;
	ub_listener *l;
	ub_pool *spool, *rpool;
	uint64_t seed;
	int starved;
	/* the accept the kernel tried before unstarve() may still report
	 * EMFILE after it: at most one, and before any accept succeeds */
	int accepts_at_unstarve, late_errors;
	int errors, accepts, closed, l_closed;
	struct th_peer cli[NCLI + NLATE];
	int fill[MAXFILL];
	int nfill;
	struct rlimit saved;
};

static void on_event(const ub_event *ev, void *arg)
{
	struct em *e = arg;

	switch (ev->type) {
	case UB_EV_ERROR:
		CHECK(ev->listener == e->l && !ev->conn);
		if (ev->res != -EMFILE && ev->res != -ENFILE)
			TH_FAILF("listener ERROR %d (%s), expected -EMFILE",
				 ev->res, strerror(-ev->res));
		if (!e->starved) {
			CHECK_EQ(e->accepts, e->accepts_at_unstarve);
			CHECK_CMP(++e->late_errors, <=, 1);
		}
		e->errors++;
		return;
	case UB_EV_ACCEPT: {
		static uint8_t msg[MSG];

		CHECK(ev->listener == e->l);
		CHECK(!e->starved);
		e->accepts++;
		th_pat_fill(e->seed, 0, msg, MSG);
		CHECK_EQ(ub_conn_send(ev->conn, msg, MSG), MSG);
		CHECK_OK(ub_conn_close(ev->conn));
		return;
	}
	case UB_EV_DATA:
		CHECK_OK(ub_buf_release(ev->buf));
		TH_FAILF("the clients send nothing");
		return;
	case UB_EV_CLOSED:
		if (ev->listener) {
			CHECK(ev->listener == e->l);
			CHECK(!e->l_closed);
			e->l_closed = 1;
		} else {
			CHECK_EQ(ev->res, 0);
			e->closed++;
		}
		return;
	}
	TH_FAILF("unexpected %s res %d", ub_event_name(ev->type), ev->res);
}

/* Lower the fd limit and fill the table: the next fd fails EMFILE. */
static void starve(struct em *e)
{
	struct rlimit rl = e->saved;
	int fd;

	rl.rlim_cur = (rlim_t)th_fd_count() + 64;
	if (rl.rlim_cur > e->saved.rlim_cur)
		rl.rlim_cur = e->saved.rlim_cur;
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	e->fill[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	CHECK(e->fill[0] >= 0);
	e->nfill = 1;
	while ((fd = fcntl(e->fill[0], F_DUPFD_CLOEXEC, 0)) >= 0) {
		if (e->nfill == MAXFILL)
			TH_FAILF("could not exhaust fds (limit %llu)",
				 (unsigned long long)rl.rlim_cur);
		e->fill[e->nfill++] = fd;
	}
	CHECK(errno == EMFILE);
	e->starved = 1;
}

static void unstarve(struct em *e)
{
	e->starved = 0;
	e->accepts_at_unstarve = e->accepts;
	e->late_errors = 0;
	while (e->nfill)
		CHECK(close(e->fill[--e->nfill]) == 0);
	CHECK(setrlimit(RLIMIT_NOFILE, &e->saved) == 0);
}

static void connect_clients(struct em *e, const struct sockaddr_in *sin,
			    int from, int to)
{
	for (int i = from; i < to; i++) {
		CHECK(connect(e->cli[i].fd, (const struct sockaddr *)sin,
			      sizeof(*sin)) == 0);
		th_set_nonblock(e->cli[i].fd, 1);
	}
}

static int all_served(void *arg)
{
	struct em *e = arg;
	int done = 0;

	for (int i = 0; i < NCLI; i++) {
		th_peer_read(&e->cli[i]);
		CHECK_EQ(e->cli[i].err, 0);
		done += e->cli[i].eof;
	}
	return done == NCLI && e->closed == NCLI ? TH_DONE : TH_IDLE;
}

static int got_error(void *arg)
{
	return ((struct em *)arg)->errors ? TH_DONE : TH_IDLE;
}

static int l_closed(void *arg)
{
	return ((struct em *)arg)->l_closed ? TH_DONE : TH_IDLE;
}

static int listening_socket(struct sockaddr_in *sin)
{
	socklen_t len = sizeof(*sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(bind(fd, (struct sockaddr *)sin, len) == 0);
	CHECK(listen(fd, 64) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)sin, &len) == 0);
	return fd;
}

static void run(int mode, void *arg)
{
	struct em *e = calloc(1, sizeof(*e));
	struct sockaddr_in sin;
	ub_conn_opts co;
	double t0, c0, wall, cpu;
	int err = 0, errs, lfd;

	(void)arg;
	th_watchdog(19);
	CHECK(e != NULL);
	CHECK(getrlimit(RLIMIT_NOFILE, &e->saved) == 0);
	e->seed = th_rand();
	e->loop = th_loop_new(NULL);
	e->spool = ub_pool_new(e->loop, 16, 4096, 0, &err);
	CHECK_PTR(e->spool, err);
	e->rpool = ub_pool_new(e->loop, 16, 4096, UB_POOL_RECV, &err);
	CHECK_PTR(e->rpool, err);
	ub_conn_opts_init(&co);
	co.mode = mode;
	co.send_pool = e->spool;
	co.recv_pool = e->rpool;
	for (int i = 0; i < NCLI + NLATE; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		CHECK(fd >= 0);
		th_peer_init(&e->cli[i], fd, "client");
		th_set_nonblock(fd, 0); /* connect blocking, then read async */
		e->cli[i].seed = e->seed;
	}

	/* starved for 1 s.  The listener is adopted only now: io_uring takes
	 * the fd limit when it prepares the accept, so an accept armed
	 * before the limit was lowered would still succeed. */
	lfd = listening_socket(&sin);
	starve(e);
	e->l = ub_listener_adopt(e->loop, lfd, &co, &err);
	CHECK_PTR(e->l, err);
	connect_clients(e, &sin, 0, NCLI);
	t0 = th_now_ms();
	c0 = th_cpu_ms();
	th_run_for(e->loop, on_event, NULL, e, 50, 1000);
	wall = th_now_ms() - t0;
	cpu = th_cpu_ms() - c0;
	errs = e->errors;
	unstarve(e);
	printf("  starved %.0f ms: %d ERROR -EMFILE, %.1f ms CPU, %d accepted\n",
	       wall, errs, cpu, e->accepts);
	CHECK_EQ(e->accepts, 0);
	CHECK_CMP(errs, >=, 1);
	CHECK_CMP(errs, <=, 15);
	if (cpu > 250)
		EXPECT_FAILF("%.1f ms of CPU in %.0f ms starved: a busy loop",
			     cpu, wall);

	/* recovers */
	t0 = th_now_ms();
	th_run(e->loop, on_event, all_served, e, 5, 2000,
	       "every backlogged client served after the fds came back");
	printf("  recovered: %d clients served in %.0f ms\n", e->accepts,
	       th_now_ms() - t0);
	CHECK_EQ(e->accepts, NCLI);
	for (int i = 0; i < NCLI; i++)
		CHECK_EQ(e->cli[i].rd, MSG);

	/* starved again; a new listener closed during its back-off */
	CHECK_OK(ub_listener_close(e->l));
	th_run(e->loop, on_event, l_closed, e, 5, 1000, "the first CLOSED");
	e->l_closed = 0;
	e->errors = 0;
	lfd = listening_socket(&sin);
	starve(e);
	e->l = ub_listener_adopt(e->loop, lfd, &co, &err);
	CHECK_PTR(e->l, err);
	connect_clients(e, &sin, NCLI, NCLI + NLATE);
	th_run(e->loop, on_event, got_error, e, 5, 2000, "ERROR -EMFILE");
	t0 = th_now_ms();
	CHECK_OK(ub_listener_close(e->l));
	th_run(e->loop, on_event, l_closed, e, 5, 1000,
	       "CLOSED of a listener in back-off");
	unstarve(e);
	printf("  listener closed in back-off: CLOSED after %.0f ms\n",
	       th_now_ms() - t0);
	CHECK_EQ(e->accepts, NCLI);
	for (int i = NCLI; i < NCLI + NLATE; i++) {
		char c;
		ssize_t r;
		double d = th_now_ms() + 2000;

		while ((r = read(e->cli[i].fd, &c, 1)) < 0 && errno == EAGAIN &&
		       th_now_ms() < d)
			th_sleep_ms(5);
		if (!(r == 0 || (r < 0 && errno == ECONNRESET)))
			TH_FAILF("late client %d: read %zd (%s), expected its "
				 "connection to end", i, r, strerror(errno));
	}
	for (int i = 0; i < NCLI + NLATE; i++)
		close(e->cli[i].fd);
	th_run_for(e->loop, on_event, NULL, e, 1, 10);
	th_check_pool_idle(e->spool, "send");
	th_check_pool_idle(e->rpool, "receive");
	CHECK_OK(ub_pool_free(e->spool));
	CHECK_OK(ub_pool_free(e->rpool));
	CHECK_OK(ub_loop_free(e->loop));
	free(e);
}

int main(void)
{
	th_init("accept_emfile");
	if (th_under_valgrind())
		th_skip("valgrind emulates RLIMIT_NOFILE: the kernel's limit, "
			"which io_uring's accept obeys, is not lowered");
	th_watchdog(19);
	th_for_each_mode(run, NULL);
	return th_finish();
}
