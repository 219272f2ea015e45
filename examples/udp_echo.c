/*
 * udp_echo.c - UDP (or Unix datagram) echo server: every received datagram
 * goes straight back to its sender, zero copy: ub_dgram_send_buf() of the
 * DATA buffer to the source address the kernel wrote into that buffer.
 *
 *   udp_echo --listen HOST:PORT [--buf-size BYTES] [--buf-count N]
 *            [--recv-budget BYTES]
 *
 * HOST:PORT as ub_addr_parse() reads it ("127.0.0.1:0", "[::1]:9000",
 * "unix:/path", "unix:@name"); port 0 picks a free port, and the line
 * "listening on HOST:PORT" gives the real one.  Exits 0 on SIGINT/SIGTERM.
 * Buffers default to 64 KiB + UB_DGRAM_HDR, so that no UDP datagram is
 * truncated (one that is still is echoed as received, cut).
 *
 * Backpressure: when the send queue is full ub_dgram_send_buf() refuses
 * with -EAGAIN; the buffer waits in a FIFO (its return address travels in
 * it), receiving pauses, and WRITABLE flushes the FIFO and resumes.  The
 * FIFO only ever holds buffers of the receive pool, so it is bounded.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define DEF_BUF_SIZE (65536u + UB_DGRAM_HDR)
#define DEF_BUF_COUNT 256u

struct echo {
	ub_dgram *ep;
	ub_buf **fifo;
	unsigned cap, head, len;
	int paused;
	unsigned long long echoed, dropped;
};

/* Send one buffer back to where it came from: 0, -EAGAIN (keep it), or
 * another error (the buffer was released). */
static int echo_one(struct echo *e, ub_buf *b)
{
	socklen_t alen;
	const struct sockaddr *a = ub_buf_addr(b, &alen);
	int r;

	if (!a) { /* an unbound Unix sender: nowhere to reply */
		ub_buf_release(b);
		e->dropped++;
		return 0;
	}
	r = ub_dgram_send_buf(e->ep, b, a, alen);
	if (r == 0)
		e->echoed++;
	else if (r != -EAGAIN) {
		ub_buf_release(b);
		e->dropped++;
	}
	return r == -EAGAIN ? r : 0;
}

static void flush(struct echo *e)
{
	while (e->len) {
		if (echo_one(e, e->fifo[e->head]) == -EAGAIN)
			return;
		e->head = (e->head + 1) % e->cap;
		e->len--;
	}
	if (e->paused) {
		ub_dgram_resume_recv(e->ep);
		e->paused = 0;
	}
}

static void on_data(struct echo *e, ub_buf *b, const struct ex_opts *o)
{
	if (!e->len && echo_one(e, b) == 0)
		return;
	/* Refused, or others wait already (keep the order): queue it. */
	if (e->len == e->cap) {
		ex_warn(o, "echo backlog full (bug)", -ENOBUFS);
		ub_buf_release(b);
		return;
	}
	e->fifo[(e->head + e->len++) % e->cap] = b;
	if (!e->paused) {
		ub_dgram_pause_recv(e->ep);
		e->paused = 1;
	}
}

int main(int argc, char **argv)
{
	struct ex_opts o;
	struct echo e;
	ub_event ev[EX_BATCH];
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	ub_dgram_opts dopts;
	ub_loop *loop;
	ub_pool *pool;
	char name[128];
	unsigned size, count, i;
	int err = 0, r, n;

	ex_parse_args(argc, argv, "udp_echo", 0, &o);
	ex_signals_install(&o);
	memset(&e, 0, sizeof(e));
	size = o.buf_size ? o.buf_size : DEF_BUF_SIZE;
	size = (size + 7) & ~7u; /* endpoints take multiples of 8 */
	count = o.buf_count ? o.buf_count : DEF_BUF_COUNT;
	if (size <= UB_DGRAM_HDR)
		ex_die(&o, NULL, "--buf-size must exceed UB_DGRAM_HDR (128)",
		       -EINVAL);
	r = ub_addr_parse(o.listen, &ss, &len);
	if (r < 0)
		ex_die(&o, NULL, "bad --listen address", r);
	loop = ub_loop_new(NULL, &err);
	if (!loop)
		ex_die(&o, NULL, "cannot create the loop", err);
	pool = ub_pool_new(loop, count, size, UB_POOL_RECV, &err);
	if (!pool)
		ex_die(&o, loop, "cannot create the receive pool", err);
	e.cap = count;
	e.fifo = calloc(count, sizeof(*e.fifo));
	if (!e.fifo)
		ex_die(&o, loop, "out of memory", -ENOMEM);
	ub_dgram_opts_init(&dopts);
	dopts.recv_pool = pool;
	/* default: the whole pool (one endpoint, nobody to share with) */
	dopts.recv_budget = o.recv_budget ? o.recv_budget
					  : (size_t)count * size;
	dopts.queue_max = count; /* a reply per buffer never waits for a slot */
	dopts.high_water = (size_t)count * size;
	dopts.low_water = dopts.high_water / 4;
	e.ep = ub_dgram_open(loop, (struct sockaddr *)&ss, len, &dopts, &err);
	if (!e.ep)
		ex_die(&o, loop, "cannot open the endpoint", err);
	r = ub_sock_name(ub_dgram_fd(e.ep), 0, name, sizeof(name));
	if (r < 0)
		ex_die(&o, loop, "cannot read the bound address", r);
	printf("listening on %s\n", name);
	fflush(stdout);

	while (!ex_stop) {
		n = ub_loop_wait(loop, ev, EX_BATCH, 1, EX_WAIT_MS);
		if (n == -EINTR)
			continue;
		if (n < 0)
			ex_die(&o, loop, "ub_loop_wait", n);
		for (i = 0; i < (unsigned)n; i++) {
			switch (ev[i].type) {
			case UB_EV_DATA:
				on_data(&e, ev[i].buf, &o);
				break;
			case UB_EV_WRITABLE:
				flush(&e);
				break;
			case UB_EV_ERROR:
				/* a send failed or an ICMP error came back:
				 * the endpoint goes on */
				break;
			case UB_EV_CLOSED:
				ex_die(&o, loop, "endpoint closed",
				       ev[i].res ? ev[i].res : -EPIPE);
			default:
				break;
			}
		}
	}
	while (e.len) {
		ub_buf_release(e.fifo[e.head]);
		e.head = (e.head + 1) % e.cap;
		e.len--;
	}
	free(e.fifo);
	ub_loop_free(loop);
	return 0;
}
