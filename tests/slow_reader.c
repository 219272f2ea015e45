/*
 * slow_reader.c - a bundle send that completes short, again and again.
 *
 * 1 MiB is queued at once as 256 buffers of 4 KiB (one bundle can take the
 * whole ring) on a loopback TCP connection with 4 KiB socket buffers and
 * loopback's 64 KiB MSS, towards a reader in another process that takes 512
 * bytes per read().  The send then completes short many times over:
 *  - each short write with MSG_WAITALL makes the kernel commit every ring
 *    entry it touched, the partly sent one included, and continue the same
 *    bundle later: the ring's head and our count disagree, and the core must
 *    resync the ring before its next send (sendq.c, the head check);
 *  - a send that the kernel keeps retrying this way more than 128 times
 *    (APOLL_MAX_RETRY in io_uring/poll.c) goes to io-wq, which cancels a
 *    bundle with -ECANCELED when its socket is already writable (Linux
 *    6.18): no bytes sent, yet the entries it selected are committed.  A
 *    core that re-arms as if nothing happened sends the rest of the stream
 *    with a hole in it.  tests/lua/test_stream.lua's pipe proxy lost 4070
 *    bytes that way (seen only when the loop's timing was changed).  This
 *    test cannot force that cancel; it reports the resyncs it saw.
 * The reader checks every byte and the exact total, every buffer returns
 * to its pool, and the connection closes cleanly, in every send mode.
 */
#include "helpers.h"
#include "internal.h" /* c->sq.resyncs: did the recovery path run? */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define NBUF 256
#define BUFSZ 4096
#define TOTAL ((uint64_t)NBUF * BUFSZ)
#define READ_MAX 512
#define SOCKBUF 4096
#define SEED 42

struct sr {
	ub_conn *c;
	pid_t reader;
	int closed, closed_res, errors, reader_status, reader_done;
	unsigned resyncs;
};

static void on_event(const ub_event *ev, void *arg)
{
	struct sr *s = arg;

	switch (ev->type) {
	case UB_EV_DATA:
		CHECK_OK(ub_buf_release(ev->buf));
		return;
	case UB_EV_ERROR:
		s->errors++;
		fprintf(stderr, "ERROR event: %d (%s)\n", ev->res,
			strerror(-ev->res));
		return;
	case UB_EV_CLOSED:
		s->closed = 1;
		s->closed_res = ev->res;
		s->resyncs = ev->conn->sq.resyncs; /* valid until the next wait */
		return;
	default:
		return;
	}
}

static int step(void *arg)
{
	struct sr *s = arg;

	if (!s->reader_done &&
	    waitpid(s->reader, &s->reader_status, WNOHANG) == s->reader)
		s->reader_done = 1;
	return s->closed && s->reader_done ? TH_DONE : TH_IDLE;
}

/* The reader, in its own process so that it runs while the kernel works
 * on the send: small blocking reads, each checked against the pattern. */
static void reader(int fd)
{
	static uint8_t buf[READ_MAX];
	uint64_t off = 0;
	ssize_t n;

	th_watchdog(50);
	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (th_pat_diff(SEED, off, buf, (size_t)n) >= 0) {
			fprintf(stderr, "reader: wrong byte at stream offset %llu\n",
			       (unsigned long long)(off +
				 (uint64_t)th_pat_diff(SEED, off, buf,
						       (size_t)n)));
			_exit(1);
		}
		off += (uint64_t)n;
	}
	if (n < 0 || off != TOTAL) {
		fprintf(stderr, "reader: %s after %llu of %llu bytes\n",
		       n < 0 ? strerror(errno) : "EOF",
		       (unsigned long long)off, (unsigned long long)TOTAL);
		_exit(1);
	}
	_exit(0);
}

/* A loopback TCP pair with bufs-byte socket buffers set before the
 * handshake and the MSS left at loopback's 64 KiB: the receive window stays
 * below one MSS, so the sender crawls in small pieces. */
static void tcp_pair(int fds[2], int bufs)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int l;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(l >= 0);
	th_set_bufs(l, bufs);
	CHECK(bind(l, (struct sockaddr *)&a, len) == 0);
	CHECK(listen(l, 1) == 0);
	CHECK(getsockname(l, (struct sockaddr *)&a, &len) == 0);
	fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(fds[0] >= 0);
	th_set_bufs(fds[0], bufs);
	CHECK(connect(fds[0], (struct sockaddr *)&a, len) == 0);
	fds[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	CHECK(fds[1] >= 0);
	close(l);
}

static void run(int mode, void *arg)
{
	struct sr s;
	ub_loop *loop;
	ub_conn_opts o;
	ub_pool *spool;
	int fds[2], err = 0;
	static uint8_t chunk[BUFSZ];

	(void)arg;
	memset(&s, 0, sizeof(s));
	/* The reader first, so that it holds no copy of the loop. */
	tcp_pair(fds, SOCKBUF);
	fflush(stdout);
	s.reader = fork();
	CHECK(s.reader >= 0);
	if (s.reader == 0) {
		close(fds[0]);
		reader(fds[1]);
	}
	close(fds[1]);
	loop = th_loop_new(NULL);
	spool = ub_pool_new(loop, NBUF, BUFSZ, 0, &err);
	CHECK_PTR(spool, err);
	ub_conn_opts_init(&o);
	o.mode = mode;
	o.send_pool = spool;
	o.ring_entries = NBUF;
	o.high_water = 2 * TOTAL;
	o.low_water = TOTAL / 2;
	s.c = ub_conn_adopt(loop, fds[0], &o, &err);
	CHECK_PTR(s.c, err);

	/* Queue it all before the first wait: one bundle takes every entry. */
	for (uint64_t off = 0; off < TOTAL; off += BUFSZ) {
		th_pat_fill(SEED, off, chunk, BUFSZ);
		CHECK_EQ(ub_conn_send(s.c, chunk, BUFSZ), BUFSZ);
	}
	CHECK_OK(ub_conn_close(s.c));
	th_run(loop, on_event, step, &s, 1, TH_TIMEOUT_MS,
	       "the stream through a slow reader");
	CHECK(WIFEXITED(s.reader_status));
	CHECK_EQ(WEXITSTATUS(s.reader_status), 0);
	CHECK_EQ(s.errors, 0);
	CHECK_EQ(s.closed_res, 0);
	if (mode == UB_MODE_BUNDLE)
		printf("mode %s: %u ring resyncs\n", ub_mode_name(mode),
		       s.resyncs);
	th_check_pool_idle(spool, "send pool");
	CHECK_OK(ub_pool_free(spool));
	CHECK_OK(ub_loop_free(loop));
	th_check_fds("after the slow reader");
}

int main(void)
{
	th_init("slow_reader");
	th_watchdog(60);
	th_for_each_mode(run, NULL);
	return th_finish();
}
