/*
 * helpers.c - checks, sockets, patterns and a bounded loop driver shared by
 * the tests.  See helpers.h for the conventions.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 */
#endif
#include "helpers.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t th_seed;
int th_start_fds = -1;
static uint64_t th_state;
static const char *th_name = "test";

void th_fail_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "%s:%d: FAIL: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " [%s, seed %llu]\n", th_name,
		(unsigned long long)th_seed);
	exit(TH_FAIL);
}

int th_soft_failures;

void th_soft_fail_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "%s:%d: FAIL: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " [%s, seed %llu; going on]\n", th_name,
		(unsigned long long)th_seed);
	th_soft_failures++;
}

int th_finish(void)
{
	th_check_fds("at exit");
	if (th_soft_failures) {
		fprintf(stderr, "%s: FAIL (%d failed checks)\n", th_name,
			th_soft_failures);
		return TH_FAIL;
	}
	printf("%s: PASS\n", th_name);
	return TH_PASS;
}

void th_skip(const char *fmt, ...)
{
	va_list ap;

	printf("SKIP: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(TH_SKIP);
}

void th_init(const char *name)
{
	const char *s = getenv("UB_TEST_SEED");

	th_name = name;
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	if (s && *s)
		th_seed = strtoull(s, NULL, 0);
	else
		th_seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	if (!th_seed)
		th_seed = 1;
	th_state = th_seed;
	printf("%s: seed %llu (set UB_TEST_SEED to replay)\n", name,
	       (unsigned long long)th_seed);
	th_start_fds = th_fd_count();
}

static void th_alarm(int sig)
{
	static const char msg[] = "FAIL: watchdog: test ran too long\n";
	ssize_t r;

	(void)sig;
	r = write(2, msg, sizeof(msg) - 1);
	(void)r;
	_exit(TH_FAIL);
}

/* Under valgrind everything runs 20-50 times slower: stretch the
 * watchdog there (its preloaded core shows in our own mappings). */
int th_under_valgrind(void)
{
	static int known = -1;
	char line[512];
	FILE *f;

	if (known >= 0)
		return known;
	known = 0;
	f = fopen("/proc/self/maps", "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "vgpreload")) {
			known = 1;
			break;
		}
	fclose(f);
	return known;
}

void th_watchdog(unsigned seconds)
{
	signal(SIGALRM, th_alarm);
	alarm(seconds && th_under_valgrind() ? seconds * 30 : seconds);
}

int th_cq_overflow(int ring_fd)
{
	char path[64], line[256];
	FILE *f;
	int n = -1, in = 0;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", ring_fd);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "CqOverflowList:", 15)) {
			in = 1;
			n = 0;
			continue;
		}
		if (!in)
			continue;
		if (line[0] == ' ' || line[0] == '\t')
			n++;
		else
			break;
	}
	fclose(f);
	return n;
}

long th_fdinfo_field(int fd, const char *key)
{
	char path[64], line[256];
	size_t klen = strlen(key);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, klen) && line[klen] == ':') {
			v = strtol(line + klen + 1, NULL, 0);
			break;
		}
	fclose(f);
	return v;
}

uint64_t th_rand(void)
{
	uint64_t x = th_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	th_state = x;
	return x * 0x2545f4914f6cdd1dull;
}

uint64_t th_rand_range(uint64_t lo, uint64_t hi)
{
	return lo + th_rand() % (hi - lo + 1);
}

double th_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

double th_cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

void th_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int th_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	CHECK(d != NULL);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

void th_check_fds(const char *when)
{
	int n = th_fd_count();

	if (n != th_start_fds)
		TH_FAILF("fd leak %s: %d open, %d at start", when, n,
			 th_start_fds);
}

int th_fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

/* ---- sockets ---- */

void th_socketpair(int fds[2])
{
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
}

int th_tcp_pair(int fds[2], int ipv6)
{
	return th_tcp_pair_bufs(fds, ipv6, 0);
}

/*
 * Loopback's MSS (about 64 KiB) is larger than the window a socket with
 * th_small_bufs() advertises (about 31 KiB): the sender then holds a full
 * segment back and sends only on its probe timer, with backoff - a stream
 * that crawls for seconds (seen: tests/stream, ring mode, 1 seed in 25).
 * Tests shrink buffers after connecting, so cap the MSS before.
 */
static void th_cap_mss(int fd)
{
	int mss = 8192;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof(mss));
}

int th_tcp_pair_bufs(int fds[2], int ipv6, int bufs)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int l, c, s, fam = ipv6 ? AF_INET6 : AF_INET;

	memset(&ss, 0, sizeof(ss));
	if (ipv6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*a);
	}
	l = socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 && ipv6)
		return -errno;
	CHECK(l >= 0);
	if (bind(l, (struct sockaddr *)&ss, len) < 0) {
		int e = errno;
		close(l);
		if (ipv6)
			return -e;
		errno = e;
		CHECK(!"bind 127.0.0.1:0");
	}
	if (bufs)
		th_set_bufs(l, bufs); /* inherited by the accepted socket */
	th_cap_mss(l);
	CHECK(listen(l, 1) == 0);
	CHECK(getsockname(l, (struct sockaddr *)&ss, &len) == 0);
	c = socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(c >= 0);
	if (bufs)
		th_set_bufs(c, bufs);
	th_cap_mss(c);
	CHECK(connect(c, (struct sockaddr *)&ss, len) == 0);
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	CHECK(s >= 0);
	close(l);
	fds[0] = c;
	fds[1] = s;
	return 0;
}

void th_set_bufs(int fd, int bytes)
{
	CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes)) == 0);
	CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes)) == 0);
}

void th_small_bufs(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	CHECK(getsockname(fd, (struct sockaddr *)&ss, &len) == 0);
	th_set_bufs(fd, ss.ss_family == AF_UNIX ? 1 : 16384);
}

void th_set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);

	CHECK(fl >= 0);
	fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	CHECK(fcntl(fd, F_SETFL, fl) == 0);
}

void th_close_rst(int fd)
{
	struct linger lg = { 1, 0 };

	CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
	CHECK(close(fd) == 0);
}

/* ---- patterns ---- */

void th_pat_fill(uint64_t seed, uint64_t off, void *buf, size_t len)
{
	uint8_t *p = buf;

	for (size_t i = 0; i < len; i++)
		p[i] = th_pat_byte(seed, off + i);
}

long th_pat_diff(uint64_t seed, uint64_t off, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	for (size_t i = 0; i < len; i++)
		if (p[i] != th_pat_byte(seed, off + i))
			return (long)i;
	return -1;
}

void th_pat_check_at(const char *file, int line, uint64_t seed, uint64_t off,
		     const void *buf, size_t len, const char *what)
{
	long i = th_pat_diff(seed, off, buf, len);

	if (i >= 0)
		th_fail_at(file, line,
			   "%s: wrong byte at stream offset %llu (chunk of %zu "
			   "at %llu): got 0x%02x, expected 0x%02x",
			   what, (unsigned long long)(off + i), len,
			   (unsigned long long)off, ((const uint8_t *)buf)[i],
			   th_pat_byte(seed, off + i));
}

void th_peer_init(struct th_peer *p, int fd, const char *name)
{
	memset(p, 0, sizeof(*p));
	p->fd = fd;
	p->name = name;
	th_set_nonblock(fd, 1);
}

long th_peer_write(struct th_peer *p)
{
	uint8_t buf[65536];
	long done = 0;

	while (p->written < p->wtotal) {
		uint64_t n = p->wtotal - p->written;
		ssize_t w;

		if (n > sizeof(buf))
			n = sizeof(buf);
		th_pat_fill(p->wseed, p->written, buf, n);
		w = write(p->fd, buf, n);
		if (w < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			TH_FAILF("%s: write: %s", p->name, strerror(errno));
		}
		p->written += w;
		done += w;
	}
	if (p->written == p->wtotal && p->wshut && !p->wshut_done) {
		CHECK(shutdown(p->fd, SHUT_WR) == 0);
		p->wshut_done = 1;
	}
	return done;
}

long th_peer_read(struct th_peer *p)
{
	uint8_t buf[65536];
	long done = 0;

	while (!p->eof) {
		size_t n = sizeof(buf);
		ssize_t r;

		if (p->rlimit && p->rlimit < n)
			n = p->rlimit;
		r = read(p->fd, buf, n);
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			p->err = -errno;
			break;
		}
		if (r == 0) {
			p->eof = 1;
			break;
		}
		th_pat_check(p->seed, p->rd, buf, (size_t)r, p->name);
		p->rd += r;
		done += r;
		if (p->rlimit)
			break;
	}
	return done;
}

/* ---- loops and modes ---- */

ub_loop *th_loop_new(const ub_loop_opts *opts)
{
	int err = 0;
	ub_loop *loop = ub_loop_new(opts, &err);

	if (!loop) {
		if (err == -ENOSYS || err == -EPERM)
			th_skip("io_uring unavailable: %s", strerror(-err));
		TH_FAILF("ub_loop_new: %d (%s)", err, strerror(-err));
	}
	return loop;
}

const int th_modes[3] = { UB_MODE_BUNDLE, UB_MODE_RING, UB_MODE_SERIAL };

int th_mode_usable(ub_loop *loop, int mode)
{
	const char *reason = NULL;
	int r = ub_loop_mode_check(loop, mode, &reason);

	if (r == 0)
		return 1;
	if (r != -EOPNOTSUPP)
		TH_FAILF("ub_loop_mode_check(%s) = %d, expected 0 or "
			 "-EOPNOTSUPP", ub_mode_name(mode), r);
	printf("mode %s: skipped: %s\n", ub_mode_name(mode),
	       reason ? reason : "(no reason given)");
	return 0;
}

int th_for_each_mode(void (*fn)(int mode, void *arg), void *arg)
{
	const char *only = getenv("UB_TEST_MODE");
	int ran = 0;

	for (int i = 0; i < 3; i++) {
		const char *name = ub_mode_name(th_modes[i]);
		ub_loop *probe;
		double t0;
		pid_t pid;
		int ok, status;

		if (only && *only && strcmp(only, name))
			continue;
		probe = th_loop_new(NULL);
		ok = th_mode_usable(probe, th_modes[i]);
		CHECK_OK(ub_loop_free(probe));
		if (!ok)
			continue;
		printf("mode %s:\n", name);
		fflush(stdout);
		fflush(stderr);
		t0 = th_now_ms();
		/* Each mode in its own process: one mode's failure does not
		 * hide how the others fare. */
		pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			th_soft_failures = 0; /* the parent's are its own */
			th_start_fds = th_fd_count();
			fn(th_modes[i], arg);
			th_check_fds("after the mode");
			fflush(stdout);
			exit(th_soft_failures ? TH_FAIL : TH_PASS);
		}
		while (waitpid(pid, &status, 0) < 0)
			CHECK(errno == EINTR);
		ran++;
		if (WIFEXITED(status) && WEXITSTATUS(status) == TH_PASS) {
			printf("mode %s: ok (%.0f ms)\n", name,
			       th_now_ms() - t0);
			continue;
		}
		th_soft_failures++;
		if (WIFSIGNALED(status))
			fprintf(stderr, "mode %s: FAIL (signal %d)\n", name,
				WTERMSIG(status));
		else
			fprintf(stderr, "mode %s: FAIL (exit %d)\n", name,
				WEXITSTATUS(status));
	}
	if (!ran)
		th_skip("no send mode usable on this kernel");
	return ran;
}

int th_pool_idle(const ub_pool *pool)
{
	int idle = (ub_pool_flags(pool) & UB_POOL_RECV) ? UB_BUF_KERNEL
							: UB_BUF_FREE;

	return ub_pool_count_state(pool, idle) == ub_pool_count(pool);
}

void th_check_pool_idle_at(const char *file, int line, const ub_pool *pool,
			   const char *name)
{
	unsigned n[UB_BUF_NSTATES], sum = 0;

	for (int s = 0; s < UB_BUF_NSTATES; s++)
		sum += n[s] = ub_pool_count_state(pool, s);
	if (!th_pool_idle(pool) || sum != ub_pool_count(pool))
		th_fail_at(file, line,
			   "pool %s not idle: count %u, FREE %u KERNEL %u "
			   "APP %u QUEUED %u",
			   name, ub_pool_count(pool), n[UB_BUF_FREE],
			   n[UB_BUF_KERNEL], n[UB_BUF_APP], n[UB_BUF_QUEUED]);
}

/* ---- driving a loop ---- */

static long th_drive(ub_loop *loop, th_event_fn on_event, th_step_fn step,
		     void *arg, int wait_ms, int ms, int until_done,
		     const char *what, int *done)
{
	ub_event ev[64];
	double deadline = th_now_ms() + ms;
	long events = 0, iters = 0;
	int next_wait = 0;

	for (;;) {
		int st = step ? step(arg) : TH_IDLE;
		double now;
		int n;

		if (until_done && st == TH_DONE) {
			if (done)
				*done = 1;
			return events;
		}
		now = th_now_ms();
		if (now >= deadline) {
			if (until_done && !done)
				TH_FAILF("timeout after %d ms waiting for %s",
					 ms, what);
			return events;
		}
		if (++iters > TH_MAX_ITERS)
			TH_FAILF("%ld iterations waiting for %s", iters, what);
		next_wait = st == TH_BUSY ? 0 : wait_ms;
		if (next_wait > deadline - now)
			next_wait = (int)(deadline - now) + 1;
		n = ub_loop_wait(loop, ev, 64, next_wait ? 1 : 0, next_wait);
		if (n == -EINTR)
			continue;
		if (n < 0)
			TH_FAILF("ub_loop_wait: %d (%s) waiting for %s", n,
				 strerror(-n), what);
		CHECK_CMP(n, <=, 64);
		for (int i = 0; i < n; i++) {
			if (!on_event)
				TH_FAILF("unexpected event %s waiting for %s",
					 ub_event_name(ev[i].type), what);
			on_event(&ev[i], arg);
		}
		events += n;
	}
}

long th_run(ub_loop *loop, th_event_fn on_event, th_step_fn step, void *arg,
	    int wait_ms, int timeout_ms, const char *what)
{
	return th_drive(loop, on_event, step, arg, wait_ms, timeout_ms, 1,
			what, NULL);
}

int th_run_try(ub_loop *loop, th_event_fn on_event, th_step_fn step,
	       void *arg, int wait_ms, int timeout_ms)
{
	int done = 0;

	th_drive(loop, on_event, step, arg, wait_ms, timeout_ms, 1, "", &done);
	return done;
}

void th_run_progress(ub_loop *loop, th_event_fn on_event, th_step_fn step,
		     void *arg, int wait_ms, const uint64_t *progress,
		     int stall_ms, int max_ms, const char *what)
{
	double start = th_now_ms();

	for (;;) {
		uint64_t before = *progress;

		if (th_run_try(loop, on_event, step, arg, wait_ms, stall_ms))
			return;
		if (*progress == before)
			TH_FAILF("no progress for %d ms (at %llu) waiting for %s",
				 stall_ms, (unsigned long long)before, what);
		if (th_now_ms() - start > max_ms)
			TH_FAILF("%s took over %d ms (at %llu)", what, max_ms,
				 (unsigned long long)*progress);
	}
}

long th_run_for(ub_loop *loop, th_event_fn on_event, th_step_fn step,
		void *arg, int wait_ms, int ms)
{
	return th_drive(loop, on_event, step, arg, wait_ms, ms, 0, "time",
			NULL);
}

int th_listen_socket(struct sockaddr_in *a, int backlog, int bufs)
{
	socklen_t len = sizeof(*a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bufs)
		th_set_bufs(fd, bufs);
	CHECK(bind(fd, (struct sockaddr *)a, len) == 0);
	CHECK(listen(fd, backlog) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)a, &len) == 0);
	return fd;
}
