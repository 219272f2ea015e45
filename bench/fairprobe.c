/*
 * fairprobe.c - can one client starve the others?  The fairness probe of
 * bench/run (issue #11).  Plain epoll, poll and nonblocking sockets, one
 * helper thread: it shares nothing with the library under test.
 *
 *   fairprobe --connect HOST:PORT [--pid PID] [--slow K1,K2,...]
 *             [--slow-bytes N] [--settle S] [--fill-max S]
 *             [--pings N] [--warmup N] [--size S] [--timeout S]
 *             [--max-timeouts N] [--ping-max S] [--json]
 *
 * For each K of --slow (ascending; default 0,8,64), in one run against one
 * echo server:
 *
 *  1. "Slow readers" are added until K are connected (they accumulate from
 *     one K to the next).  Each writes up to --slow-bytes (default 8 MiB) as
 *     fast as the server takes it (nonblocking send() of up to 256 KiB) and
 *     never reads.  They keep writing, on the main thread, for the rest of
 *     the run.
 *  2. Wait until they are stuck: no slow reader got a byte out for --settle
 *     seconds (default 0.5) or all wrote everything, and (with --pid) the
 *     server used less than 20% of a core over the last 0.2 s, so that it
 *     is not still working through what the kernel buffered; or until
 *     --fill-max seconds (default 6) passed (then "settled": false).
 *  3. An ordinary client connects (a new connection per K, on a thread of
 *     its own so that the slow readers' writes never delay its reads) and
 *     sends --pings messages of --size bytes (default 2,000 x 1 KiB), one in
 *     flight, after --warmup unrecorded ones (default 20).  Every echoed
 *     byte is checked.  A ping not answered within --timeout seconds
 *     (default 3) is a timeout: the next ping is sent anyway (an answer that
 *     comes later counts as "late", not as a latency), and after
 *     --max-timeouts timeouts (default 2) the phase stops, so a frozen
 *     server costs bounded time.  --ping-max (default 30 s) bounds the
 *     phase too.
 *  4. With --pid, the server's VmRSS (/proc/PID/status) is read before any
 *     slow reader connects and at the end of every phase, and its CPU time
 *     (utime+stime, /proc/PID/stat) over the fill and over the pings.
 *
 * Per phase: p50/p99/max latency of the answered pings (exact, from every
 * sample), pings, answered, timeouts, late answers, the slow readers'
 * bytes written and how many finished or were closed by the server, the
 * server's RSS and CPU.  --json prints one JSON object on stdout (a human
 * line per phase always goes to stderr).
 *
 * Every wait is bounded: connects 5 s, fill --fill-max, pings
 * --max-timeouts x --timeout and --ping-max.
 * Exit: 0 ok (timeouts are results, not failures); 1 setup failed (bad
 * option, cannot connect); 2 the ordinary client saw a data error (wrong
 * byte, EOF, reset).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "netutil.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256u * 1024)  /* largest slow-reader send()              */
#define WRITE_BURST 8        /* slow-reader sends per wakeup            */
#define CONNECT_SECS 5.0
#define MAX_SLOW 10000
#define MAX_PHASES 16
#define QUIET_WINDOW 0.2     /* s: the server's CPU is sampled this often */
#define QUIET_CPU 0.2        /* stuck: the server used less than this share
				* of a core over the last window            */

struct cfg {
	const char *connect;
	long pid;
	unsigned slow[MAX_PHASES];
	unsigned nphases;
	uint64_t slow_bytes;
	double settle;
	double fill_max;
	unsigned pings;
	unsigned warmup;
	size_t size;
	double timeout;
	unsigned max_timeouts;
	double ping_max;
	int json;
};

static struct cfg cfg = {
	.pid = 0,
	.slow_bytes = 8u << 20,
	.settle = 0.5,
	.fill_max = 6.0,
	.pings = 2000,
	.warmup = 20,
	.size = 1024,
	.timeout = 3.0,
	.max_timeouts = 2,
	.ping_max = 30.0,
};

struct slow {
	int fd;
	uint64_t tx;
	int done;    /* wrote everything                 */
	int closed;  /* the server closed or reset it    */
};

/* What the ordinary client of one phase measured. */
struct pingres {
	unsigned sent;       /* recorded pings sent (warmup excluded)     */
	unsigned answered;   /* recorded pings answered in time           */
	unsigned timeouts;   /* pings (warmup included) not answered in time */
	unsigned late;       /* timed-out pings answered later             */
	int connect_failed;
	int error;           /* data error, EOF or reset                  */
	char why[200];
	double secs;         /* the recorded pings' wall time              */
	double p50_us, p99_us, max_us;
};

static struct slow *slows;
static unsigned nslow;
static struct addrinfo *srv_ai;
static uint8_t *wbuf;
static long hz;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the server process ----------------------------------------------- */

static long rss_kib(void)
{
	char path[64], line[256];
	long v = -1;
	FILE *f;

	if (cfg.pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%ld/status", cfg.pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6)) {
			v = strtol(line + 6, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* utime + stime in seconds; -1 if unknown. */
static double cpu_s(void)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	size_t n;
	FILE *f;
	int i;

	if (cfg.pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%ld/stat", cfg.pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')');
	if (!p)
		return -1;
	p += 2; /* field 3, the state */
	for (i = 3; i < 14 && p; i++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (!p || sscanf(p, "%llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)hz;
}

/* ---- the ordinary client's bytes -------------------------------------- */

static uint8_t pat_byte(uint64_t off)
{
	uint64_t w = (off >> 3) * 0x9E3779B97F4A7C15ull ^ 0x5bd1e995u;

	return (uint8_t)(w >> (8 * (off & 7)));
}

static void pat_fill(uint8_t *dst, uint64_t off, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		dst[i] = pat_byte(off + i);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank quantile of n sorted samples. */
static double quantile(const double *v, unsigned n, double q)
{
	double r = q * n;
	unsigned k = (unsigned)r;

	if ((double)k < r)
		k++;
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return v[k - 1];
}

/* ---- connecting ------------------------------------------------------- */

static int new_socket(void)
{
	int one = 1, fd;

	fd = socket(srv_ai->ai_family,
		    srv_ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    srv_ai->ai_protocol);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, srv_ai->ai_addr, srv_ai->ai_addrlen) < 0 &&
	    errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Wait for a nonblocking connect; 0 or an errno value. */
static int connect_wait(int fd, double deadline)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	socklen_t sl = sizeof(int);
	int soerr = 0, r;

	for (;;) {
		double left = deadline - now_s();

		if (left <= 0)
			return ETIMEDOUT;
		r = poll(&p, 1, (int)(left * 1000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r > 0)
			break;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		return errno;
	return soerr;
}

/* ---- the ordinary client (its own thread) ----------------------------- */

struct pinger {
	struct pingres res;
	int efd; /* written when done */
};

static void ping_fail(struct pingres *pr, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void ping_fail(struct pingres *pr, const char *fmt, ...)
{
	va_list ap;

	pr->error = 1;
	va_start(ap, fmt);
	vsnprintf(pr->why, sizeof(pr->why), fmt, ap);
	va_end(ap);
}

static void *pinger_main(void *arg)
{
	struct pinger *pg = arg;
	struct pingres *pr = &pg->res;
	unsigned total = cfg.warmup + cfg.pings, i, m, nlat = 0;
	double *tsend = calloc(total, sizeof(double));
	double *lat = calloc(total, sizeof(double));
	uint8_t *timedout = calloc(total, 1);
	uint8_t *sbuf = malloc(cfg.size), *rbuf = malloc(65536),
		*ebuf = malloc(65536);
	uint64_t tx = 0, rx = 0, one = 1;
	double t0 = 0, t_end, stop_at;
	struct pollfd p;
	int fd, e;

	memset(pr, 0, sizeof(*pr));
	if (!tsend || !lat || !timedout || !sbuf || !rbuf || !ebuf) {
		ping_fail(pr, "out of memory");
		goto out;
	}
	fd = new_socket();
	e = fd < 0 ? errno : connect_wait(fd, now_s() + cfg.timeout);
	if (e) {
		pr->connect_failed = 1;
		pr->timeouts = cfg.max_timeouts;
		snprintf(pr->why, sizeof(pr->why), "connect: %s", strerror(e));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	stop_at = now_s() + cfg.ping_max;
	for (i = 0; i < total; i++) {
		double deadline;
		size_t off = 0;

		if (i == cfg.warmup)
			t0 = now_s();
		if (now_s() > stop_at) {
			snprintf(pr->why, sizeof(pr->why),
				 "stopped after --ping-max %.0f s", cfg.ping_max);
			break;
		}
		/* Send ping i whole (a full send buffer counts against its
		 * deadline). */
		pat_fill(sbuf, tx, cfg.size);
		tsend[i] = now_s();
		deadline = tsend[i] + cfg.timeout;
		while (off < cfg.size) {
			ssize_t w = send(fd, sbuf + off, cfg.size - off,
					 MSG_NOSIGNAL);

			if (w >= 0) {
				off += (size_t)w;
				continue;
			}
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				ping_fail(pr, "send: %s", strerror(errno));
				goto done;
			}
			if (now_s() >= deadline)
				break;
			p.fd = fd;
			p.events = POLLOUT;
			poll(&p, 1, (int)((deadline - now_s()) * 1000) + 1);
		}
		tx += off;
		if (off < cfg.size) {
			/* Cannot even send: the stream is out of step now. */
			pr->timeouts++;
			if (i >= cfg.warmup)
				pr->sent++;
			snprintf(pr->why, sizeof(pr->why),
				 "a ping could not be sent within %.1f s", cfg.timeout);
			break;
		}
		if (i >= cfg.warmup)
			pr->sent++;
		/* Read until ping i is back or its deadline passes. */
		while (rx < tx) {
			double now = now_s();
			ssize_t r;
			int pr_;

			if (now >= deadline)
				break;
			p.fd = fd;
			p.events = POLLIN;
			pr_ = poll(&p, 1, (int)((deadline - now) * 1000) + 1);
			if (pr_ < 0 && errno != EINTR) {
				ping_fail(pr, "poll: %s", strerror(errno));
				goto done;
			}
			if (pr_ <= 0)
				continue;
			r = recv(fd, rbuf, 65536, 0);
			if (r < 0) {
				if (errno == EINTR || errno == EAGAIN ||
				    errno == EWOULDBLOCK)
					continue;
				ping_fail(pr, "recv: %s at offset %llu",
					  strerror(errno), (unsigned long long)rx);
				goto done;
			}
			if (r == 0) {
				ping_fail(pr, "EOF from the server at offset %llu",
					  (unsigned long long)rx);
				goto done;
			}
			if (rx + (uint64_t)r > tx) {
				ping_fail(pr, "got more bytes than sent (offset %llu)",
					  (unsigned long long)rx);
				goto done;
			}
			pat_fill(ebuf, rx, (size_t)r);
			if (memcmp(rbuf, ebuf, (size_t)r)) {
				ping_fail(pr, "wrong echoed byte near offset %llu",
					  (unsigned long long)rx);
				goto done;
			}
			now = now_s();
			/* Pings whose last byte just arrived. */
			for (m = (unsigned)(rx / cfg.size);
			     (uint64_t)(m + 1) * cfg.size <= rx + (uint64_t)r; m++) {
				if (timedout[m])
					pr->late++;
				else if (m >= cfg.warmup) {
					lat[nlat++] = (now - tsend[m]) * 1e6;
					pr->answered++;
				}
			}
			rx += (uint64_t)r;
		}
		if (rx < tx) {
			timedout[i] = 1;
			pr->timeouts++;
			if (pr->timeouts >= cfg.max_timeouts) {
				snprintf(pr->why, sizeof(pr->why),
					 "stopped after %u timeouts", pr->timeouts);
				break;
			}
		}
	}
done:
	t_end = now_s();
	pr->secs = t0 ? t_end - t0 : 0;
	close(fd);
	if (nlat) {
		qsort(lat, nlat, sizeof(double), cmp_double);
		pr->p50_us = quantile(lat, nlat, 0.50);
		pr->p99_us = quantile(lat, nlat, 0.99);
		pr->max_us = lat[nlat - 1];
	}
out:
	free(tsend);
	free(lat);
	free(timedout);
	free(sbuf);
	free(rbuf);
	free(ebuf);
	if (write(pg->efd, &one, sizeof(one)) < 0)
		perror("fairprobe: eventfd write");
	return NULL;
}

/* ---- slow readers (the main thread) ----------------------------------- */

static int ep = -1;
static double last_progress;

static void slow_close(struct slow *s)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
	/* Keep the descriptor: closing would release the server.  It is
	 * closed at exit with the others. */
	s->closed = 1;
}

static void slow_write(struct slow *s)
{
	unsigned n;

	for (n = 0; n < WRITE_BURST && !s->done && !s->closed; n++) {
		uint64_t left = cfg.slow_bytes - s->tx;
		size_t len = left > CHUNK ? CHUNK : (size_t)left;
		ssize_t w = send(s->fd, wbuf, len, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				slow_close(s);
			return;
		}
		s->tx += (uint64_t)w;
		last_progress = now_s();
		if (s->tx >= cfg.slow_bytes) {
			s->done = 1;
			epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
		}
	}
}

/* Connect slow readers until there are k; 0 or -1. */
static int add_slow(unsigned k)
{
	struct epoll_event ev;
	double deadline = now_s() + CONNECT_SECS;
	unsigned i, first = nslow;
	int e;

	for (i = first; i < k; i++) {
		struct slow *s = &slows[i];

		memset(s, 0, sizeof(*s));
		s->fd = new_socket();
		if (s->fd < 0) {
			fprintf(stderr, "fairprobe: slow reader %u: %s\n", i,
				strerror(errno));
			return -1;
		}
		nslow = i + 1;
	}
	for (i = first; i < k; i++) {
		struct slow *s = &slows[i];

		e = connect_wait(s->fd, deadline);
		if (e) {
			fprintf(stderr, "fairprobe: slow reader %u: connect: %s\n",
				i, strerror(e));
			return -1;
		}
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLOUT; /* never EPOLLIN: it never reads */
		ev.data.ptr = s;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
			fprintf(stderr, "fairprobe: epoll_ctl: %s\n", strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Serve the slow readers for up to `secs`, or until `efd` fires (if
 * non-negative).  Returns 1 if efd fired. */
static int slow_loop(double until, int efd)
{
	struct epoll_event evs[256];
	int n, k;

	for (;;) {
		double left = until - now_s();

		if (left <= 0)
			return 0;
		n = epoll_wait(ep, evs, 256, (int)(left * 1000) + 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "fairprobe: epoll_wait: %s\n", strerror(errno));
			exit(1);
		}
		for (k = 0; k < n; k++) {
			struct slow *s = evs[k].data.ptr;

			if (s == NULL) {
				if (efd >= 0)
					return 1;
				continue;
			}
			if (evs[k].events & (EPOLLERR | EPOLLHUP))
				slow_close(s);
			else if (evs[k].events & EPOLLOUT)
				slow_write(s);
		}
		if (efd < 0)
			return 0; /* the caller checks its condition */
	}
}

/* ---- options ---------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fairprobe --connect HOST:PORT [--pid PID] [--slow K1,K2,...]\n"
		"                 [--slow-bytes N] [--settle S] [--fill-max S]\n"
		"                 [--pings N] [--warmup N] [--size BYTES] [--timeout S]\n"
		"                 [--max-timeouts N] [--ping-max S] [--json]\n"
		"  --pid PID          the server's process: VmRSS and CPU time\n"
		"  --slow LIST        slow readers per phase, ascending (default 0,8,64)\n"
		"  --slow-bytes N     each slow reader writes up to N bytes (default 8388608)\n"
		"  --settle S         stuck = no slow-reader progress for S s (default 0.5)\n"
		"                     and (--pid) the server under 20%% CPU for 0.2 s\n"
		"  --fill-max S       wait at most S s for that (default 6)\n"
		"  --pings N          recorded pings per phase, one in flight (default 2000)\n"
		"  --warmup N         unrecorded pings first (default 20)\n"
		"  --size BYTES       ping size (default 1024)\n"
		"  --timeout S        a ping unanswered after S s is a timeout (default 3)\n"
		"  --max-timeouts N   end a phase after N timeouts (default 2)\n"
		"  --ping-max S       end a phase after S s of pinging (default 30)\n"
		"  --json             one JSON object on stdout\n"
		"Exit: 0 ok (timeouts included), 1 setup failed, 2 data error.\n");
}

static double parse_secs(const char *name, const char *s, double max)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0 && v <= max)) {
		fprintf(stderr, "fairprobe: %s wants a number in (0, %g], not '%s'\n",
			name, max, s);
		exit(1);
	}
	return v;
}

static unsigned long long parse_ull(const char *name, const char *s,
				    unsigned long long min,
				    unsigned long long max)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "fairprobe: %s wants an integer in %llu..%llu, not '%s'\n",
			name, min, max, s);
		exit(1);
	}
	return v;
}

static void parse_slow(const char *s)
{
	char tmp[256], *tok, *save = NULL;

	if (strlen(s) >= sizeof(tmp)) {
		fprintf(stderr, "fairprobe: --slow list too long\n");
		exit(1);
	}
	strcpy(tmp, s);
	cfg.nphases = 0;
	for (tok = strtok_r(tmp, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (cfg.nphases == MAX_PHASES) {
			fprintf(stderr, "fairprobe: at most %d phases\n", MAX_PHASES);
			exit(1);
		}
		cfg.slow[cfg.nphases] = (unsigned)parse_ull("--slow", tok, 0, MAX_SLOW);
		if (cfg.nphases && cfg.slow[cfg.nphases] < cfg.slow[cfg.nphases - 1]) {
			fprintf(stderr, "fairprobe: --slow must be ascending\n");
			exit(1);
		}
		cfg.nphases++;
	}
	if (!cfg.nphases) {
		fprintf(stderr, "fairprobe: --slow wants a list like 0,8,64\n");
		exit(1);
	}
}

static void parse_args(int argc, char **argv)
{
	enum { O_CONNECT = 1, O_PID, O_SLOW, O_SLOW_BYTES, O_SETTLE, O_FILL_MAX,
	       O_PINGS, O_WARMUP, O_SIZE, O_TIMEOUT, O_MAX_TIMEOUTS,
	       O_PING_MAX, O_JSON, O_HELP };
	static const struct option longopts[] = {
		{ "connect", required_argument, NULL, O_CONNECT },
		{ "pid", required_argument, NULL, O_PID },
		{ "slow", required_argument, NULL, O_SLOW },
		{ "slow-bytes", required_argument, NULL, O_SLOW_BYTES },
		{ "settle", required_argument, NULL, O_SETTLE },
		{ "fill-max", required_argument, NULL, O_FILL_MAX },
		{ "pings", required_argument, NULL, O_PINGS },
		{ "warmup", required_argument, NULL, O_WARMUP },
		{ "size", required_argument, NULL, O_SIZE },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "max-timeouts", required_argument, NULL, O_MAX_TIMEOUTS },
		{ "ping-max", required_argument, NULL, O_PING_MAX },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	cfg.slow[0] = 0;
	cfg.slow[1] = 8;
	cfg.slow[2] = 64;
	cfg.nphases = 3;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case O_CONNECT:
			cfg.connect = optarg;
			break;
		case O_PID:
			cfg.pid = (long)parse_ull("--pid", optarg, 1, 1u << 30);
			break;
		case O_SLOW:
			parse_slow(optarg);
			break;
		case O_SLOW_BYTES:
			cfg.slow_bytes = parse_ull("--slow-bytes", optarg, 1, 1ull << 36);
			break;
		case O_SETTLE:
			cfg.settle = parse_secs("--settle", optarg, 60);
			break;
		case O_FILL_MAX:
			cfg.fill_max = parse_secs("--fill-max", optarg, 600);
			break;
		case O_PINGS:
			cfg.pings = (unsigned)parse_ull("--pings", optarg, 1, 10000000);
			break;
		case O_WARMUP:
			cfg.warmup = (unsigned)parse_ull("--warmup", optarg, 0, 1000000);
			break;
		case O_SIZE:
			cfg.size = (size_t)parse_ull("--size", optarg, 1, 65536);
			break;
		case O_TIMEOUT:
			cfg.timeout = parse_secs("--timeout", optarg, 600);
			break;
		case O_MAX_TIMEOUTS:
			cfg.max_timeouts = (unsigned)parse_ull("--max-timeouts", optarg, 1, 1000000);
			break;
		case O_PING_MAX:
			cfg.ping_max = parse_secs("--ping-max", optarg, 3600);
			break;
		case O_JSON:
			cfg.json = 1;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			fprintf(stderr, "fairprobe: bad option '%s'\n", argv[optind - 1]);
			usage(stderr);
			exit(1);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "fairprobe: unexpected argument '%s'\n", argv[optind]);
		exit(1);
	}
	if (!cfg.connect) {
		fprintf(stderr, "fairprobe: --connect HOST:PORT is required\n");
		usage(stderr);
		exit(1);
	}
}

/* ---- main ------------------------------------------------------------- */

struct phase {
	unsigned k;
	int settled;
	double fill_s;
	uint64_t slow_tx;         /* bytes all slow readers wrote so far */
	unsigned slow_done, slow_closed;
	long rss_fill_kib, rss_end_kib;
	double cpu_fill_s, cpu_ping_s;
	struct pingres pr;
};

static void jnum(const char *name, double v, int last)
{
	if (v < 0)
		printf("\"%s\":null%s", name, last ? "" : ",");
	else
		printf("\"%s\":%.3f%s", name, v, last ? "" : ",");
}

static void jstr(const char *name, const char *s)
{
	const char *p;

	printf("\"%s\":\"", name);
	for (p = s; *p; p++)
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if ((unsigned char)*p >= 0x20)
			putchar(*p);
	printf("\",");
}

int main(int argc, char **argv)
{
	static struct phase ph[MAX_PHASES];
	struct epoll_event ev;
	struct sigaction sa;
	long rss0;
	unsigned p, i;
	int errors = 0;

	parse_args(argc, argv);
	hz = sysconf(_SC_CLK_TCK);
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	slows = calloc(MAX_SLOW, sizeof(*slows));
	wbuf = malloc(CHUNK);
	if (!slows || !wbuf) {
		fprintf(stderr, "fairprobe: out of memory\n");
		return 1;
	}
	memset(wbuf, 'x', CHUNK);
	srv_ai = bench_resolve("fairprobe", cfg.connect);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		fprintf(stderr, "fairprobe: epoll_create1: %s\n", strerror(errno));
		return 1;
	}
	rss0 = rss_kib();

	for (p = 0; p < cfg.nphases; p++) {
		struct phase *f = &ph[p];
		struct pinger pg;
		pthread_t th;
		double t0, cpu0, cpu1, qt, qcpu;
		int quiet = 0;
		uint64_t v;
		int r;

		f->k = cfg.slow[p];
		cpu0 = cpu_s();
		t0 = now_s();
		last_progress = t0;
		if (add_slow(f->k) < 0)
			return 1;
		/* Fill until stuck: no slow reader gets a byte out (or all
		 * wrote everything), and the server is quiet: it used less
		 * than QUIET_CPU of a core over the last QUIET_WINDOW s (it
		 * may still be working through what the kernel buffered). */
		qt = t0;
		qcpu = cpu0;
		for (;;) {
			double now = now_s(), until;
			unsigned busy = 0;

			for (i = 0; i < nslow; i++)
				if (!slows[i].done && !slows[i].closed)
					busy++;
			if (now - qt >= QUIET_WINDOW) {
				double c = cpu_s();

				quiet = c < 0 || qcpu < 0 ||
					c - qcpu < QUIET_CPU * (now - qt);
				qt = now;
				qcpu = c;
			}
			if ((!busy || now - last_progress >= cfg.settle) &&
			    quiet && now - t0 >= QUIET_WINDOW) {
				f->settled = 1;
				break;
			}
			if (now - t0 >= cfg.fill_max)
				break;
			until = last_progress + cfg.settle;
			if (until > t0 + cfg.fill_max)
				until = t0 + cfg.fill_max;
			if (until > now + 0.05 || until <= now)
				until = now + 0.05;
			slow_loop(until, -1);
		}
		f->fill_s = now_s() - t0;
		cpu1 = cpu_s();
		f->cpu_fill_s = cpu0 < 0 || cpu1 < 0 ? -1 : cpu1 - cpu0;
		f->rss_fill_kib = rss_kib();

		/* Ping, on a thread; the slow readers keep writing here. */
		pg.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (pg.efd < 0) {
			fprintf(stderr, "fairprobe: eventfd: %s\n", strerror(errno));
			return 1;
		}
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN;
		ev.data.ptr = NULL;
		epoll_ctl(ep, EPOLL_CTL_ADD, pg.efd, &ev);
		r = pthread_create(&th, NULL, pinger_main, &pg);
		if (r) {
			fprintf(stderr, "fairprobe: pthread_create: %s\n", strerror(r));
			return 1;
		}
		/* The pinger is bounded by --ping-max and its timeouts; this
		 * loop by the eventfd. */
		while (!slow_loop(now_s() + 1.0, pg.efd))
			;
		pthread_join(th, NULL);
		if (read(pg.efd, &v, sizeof(v)) < 0)
			v = 0;
		epoll_ctl(ep, EPOLL_CTL_DEL, pg.efd, NULL);
		close(pg.efd);
		f->pr = pg.res;
		cpu0 = cpu_s();
		f->cpu_ping_s = cpu0 < 0 || cpu1 < 0 ? -1 : cpu0 - cpu1;
		f->rss_end_kib = rss_kib();
		for (i = 0; i < nslow; i++) {
			f->slow_tx += slows[i].tx;
			f->slow_done += (unsigned)slows[i].done;
			f->slow_closed += (unsigned)slows[i].closed;
		}
		if (f->pr.error)
			errors++;
		fprintf(stderr,
			"fairprobe: K=%-3u %s in %.1f s (%.1f MiB written, %u done, %u closed); "
			"pings %u answered %u timeouts %u late %u; p50 %.0f us p99 %.0f us max %.0f us; "
			"RSS %+.1f MiB; server CPU %.2f s fill, %.2f s pings%s%s\n",
			f->k, f->settled ? "stuck" : "NOT settled", f->fill_s,
			(double)f->slow_tx / 1048576.0, f->slow_done, f->slow_closed,
			f->pr.sent, f->pr.answered, f->pr.timeouts, f->pr.late,
			f->pr.p50_us, f->pr.p99_us, f->pr.max_us,
			rss0 < 0 || f->rss_end_kib < 0 ? 0.0 :
				(double)(f->rss_end_kib - rss0) / 1024.0,
			f->cpu_fill_s, f->cpu_ping_s, f->pr.why[0] ? "; " : "", f->pr.why);
	}

	if (cfg.json) {
		printf("{\"connect\":\"%s\",\"pid\":%ld,\"slow_bytes\":%llu,\"pings\":%u,"
		       "\"warmup\":%u,\"size\":%zu,\"timeout_s\":%.3f,\"max_timeouts\":%u,"
		       "\"settle_s\":%.3f,\"fill_max_s\":%.3f,\"rss_start_kib\":%ld,\"phases\":[",
		       cfg.connect, cfg.pid, (unsigned long long)cfg.slow_bytes, cfg.pings,
		       cfg.warmup, cfg.size, cfg.timeout, cfg.max_timeouts, cfg.settle,
		       cfg.fill_max, rss0);
		for (p = 0; p < cfg.nphases; p++) {
			struct phase *f = &ph[p];

			printf("%s{\"k\":%u,\"settled\":%s,\"fill_s\":%.3f,\"slow_tx_bytes\":%llu,"
			       "\"slow_done\":%u,\"slow_closed\":%u,\"rss_fill_kib\":%ld,"
			       "\"rss_end_kib\":%ld,",
			       p ? "," : "", f->k, f->settled ? "true" : "false", f->fill_s,
			       (unsigned long long)f->slow_tx, f->slow_done, f->slow_closed,
			       f->rss_fill_kib, f->rss_end_kib);
			jnum("cpu_fill_s", f->cpu_fill_s, 0);
			jnum("cpu_ping_s", f->cpu_ping_s, 0);
			printf("\"pings\":%u,\"answered\":%u,\"timeouts\":%u,\"late\":%u,"
			       "\"connect_failed\":%s,\"error\":%s,",
			       f->pr.sent, f->pr.answered, f->pr.timeouts, f->pr.late,
			       f->pr.connect_failed ? "true" : "false",
			       f->pr.error ? "true" : "false");
			jstr("note", f->pr.why);
			printf("\"ping_s\":%.3f,", f->pr.secs);
			if (f->pr.answered)
				printf("\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}",
				       f->pr.p50_us, f->pr.p99_us, f->pr.max_us);
			else
				printf("\"p50_us\":null,\"p99_us\":null,\"max_us\":null}");
		}
		printf("]}\n");
	}
	fflush(stdout);
	for (i = 0; i < nslow; i++)
		close(slows[i].fd);
	close(ep);
	freeaddrinfo(srv_ai);
	free(slows);
	free(wbuf);
	return errors ? 2 : 0;
}
