/*
 * echo.c - echo server: every received buffer goes straight back out on the
 * same connection, zero copy (ub_conn_send_buf on the DATA buffer).
 *
 *   echo --listen HOST:PORT [--mode bundle|ring|serial|auto]
 *        [--buf-size BYTES] [--buf-count N]
 *        [--no-recv-bundle] [--singleshot]
 *
 * Backpressure: when the send queue is above its high water mark,
 * ub_conn_send_buf() refuses with -EAGAIN.  The refused buffer, and any that
 * were already on their way, wait in a per-connection FIFO (order matters:
 * once the FIFO is non-empty every new buffer joins its tail) and receiving
 * pauses.  WRITABLE flushes the FIFO and resumes.  The FIFO is bounded by
 * the receive pool: it only ever holds buffers of that pool.
 * (ub_conn_pipe(conn, conn) would do all this in the core, but a pipe needs
 * two distinct connections.)
 *
 * Invariants: a buffer handed to us is either queued with send_buf, in the
 * FIFO, or released - never dropped.  Connection state is freed on CLOSED,
 * or at exit after releasing the FIFO's buffers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

struct echo_conn {
	struct echo_conn *prev, *next; /* all live connections, for exit */
	ub_conn *conn;
	ub_buf **fifo;                 /* ring of refused buffers        */
	unsigned cap, head, len;
	unsigned paused : 1;           /* we paused receive              */
	unsigned eof : 1;              /* peer sent EOF: close once flushed */
	unsigned closing : 1;          /* close or abort requested       */
};

static struct echo_conn conns = { .prev = &conns, .next = &conns };
static const struct ex_opts *opts;
static int listener_closed;

static void fifo_release_all(struct echo_conn *ec)
{
	while (ec->len) {
		ub_buf_release(ec->fifo[ec->head]);
		ec->head = (ec->head + 1) % ec->cap;
		ec->len--;
	}
}

static int fifo_push(struct echo_conn *ec, ub_buf *buf)
{
	if (ec->len == ec->cap) {
		unsigned ncap = ec->cap ? ec->cap * 2 : 16, i;
		ub_buf **n = malloc(ncap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		for (i = 0; i < ec->len; i++)
			n[i] = ec->fifo[(ec->head + i) % ec->cap];
		free(ec->fifo);
		ec->fifo = n;
		ec->cap = ncap;
		ec->head = 0;
	}
	ec->fifo[(ec->head + ec->len) % ec->cap] = buf;
	ec->len++;
	return 0;
}

static void echo_free(struct echo_conn *ec)
{
	fifo_release_all(ec);
	ec->prev->next = ec->next;
	ec->next->prev = ec->prev;
	free(ec->fifo);
	free(ec);
}

/* Something unexpected: give every held buffer back and drop the client. */
static void echo_abort(struct echo_conn *ec, const char *what, int err)
{
	if (err != -EPIPE && err != -ENOTCONN)
		ex_warn(opts, what, err);
	fifo_release_all(ec);
	if (!ec->closing) {
		ec->closing = 1;
		ub_conn_abort(ec->conn);
	}
}

static void echo_close(struct echo_conn *ec)
{
	int r;

	if (ec->closing)
		return;
	ec->closing = 1;
	r = ub_conn_close(ec->conn);
	if (r < 0 && r != -EPIPE)
		ex_warn(opts, "close", r);
}

static void on_accept(ub_conn *conn)
{
	struct echo_conn *ec = calloc(1, sizeof(*ec));

	if (!ec) {
		ex_warn(opts, "accept", -ENOMEM);
		ub_conn_abort(conn);
		return;
	}
	ec->conn = conn;
	ec->next = &conns;
	ec->prev = conns.prev;
	conns.prev->next = ec;
	conns.prev = ec;
	ub_conn_set_udata(conn, ec);
}

static void on_data(struct echo_conn *ec, ub_buf *buf)
{
	int r;

	if (ec->closing) {
		ub_buf_release(buf);
		return;
	}
	if (ec->len == 0) {
		r = ub_conn_send_buf(ec->conn, buf);
		if (r == 0)
			return;
		if (r != -EAGAIN) {
			ub_buf_release(buf);
			echo_abort(ec, "send_buf", r);
			return;
		}
	}
	r = fifo_push(ec, buf);
	if (r < 0) {
		ub_buf_release(buf);
		echo_abort(ec, "queueing a refused buffer", r);
		return;
	}
	if (!ec->paused) {
		r = ub_conn_pause_recv(ec->conn);
		if (r < 0) {
			echo_abort(ec, "pause_recv", r);
			return;
		}
		ec->paused = 1;
	}
}

static void on_writable(struct echo_conn *ec)
{
	int r;

	if (ec->closing)
		return;
	while (ec->len) {
		r = ub_conn_send_buf(ec->conn, ec->fifo[ec->head]);
		if (r == -EAGAIN)
			return; /* another WRITABLE follows */
		if (r < 0) {
			echo_abort(ec, "send_buf", r);
			return;
		}
		ec->head = (ec->head + 1) % ec->cap;
		ec->len--;
	}
	if (ec->eof) {
		echo_close(ec);
	} else if (ec->paused) {
		r = ub_conn_resume_recv(ec->conn);
		if (r < 0) {
			echo_abort(ec, "resume_recv", r);
			return;
		}
		ec->paused = 0;
	}
}

static void on_event(const ub_event *ev)
{
	struct echo_conn *ec;

	if (ev->type == UB_EV_ACCEPT) {
		on_accept(ev->conn);
		return;
	}
	if (!ev->conn) {
		/* The listener: accept errors are worth a line, not an exit. */
		if (ev->type == UB_EV_ERROR)
			ex_warn(opts, "accept", ev->res);
		else if (ev->type == UB_EV_CLOSED)
			listener_closed = 1;
		return;
	}
	ec = ub_conn_udata(ev->conn);
	if (!ec) {
		/* Not ours (cannot happen): keep the pool whole. */
		if (ev->type == UB_EV_DATA)
			ub_buf_release(ev->buf);
		return;
	}
	switch (ev->type) {
	case UB_EV_DATA:
		on_data(ec, ev->buf);
		break;
	case UB_EV_WRITABLE:
		on_writable(ec);
		break;
	case UB_EV_EOF:
		ec->eof = 1;
		if (ec->len == 0)
			echo_close(ec);
		break;
	case UB_EV_ERROR:
		/* The core closes the connection: CLOSED follows. */
		ec->closing = 1;
		fifo_release_all(ec);
		break;
	case UB_EV_CLOSED:
		ub_conn_set_udata(ev->conn, NULL);
		echo_free(ec);
		break;
	default:
		break;
	}
}

int main(int argc, char **argv)
{
	static ub_event ev[EX_BATCH];
	struct ex_opts o;
	ub_conn_opts copts;
	ub_listener *l;
	ub_pool *pool;
	ub_loop *loop;
	int n, i, status = 0;

	ex_parse_args(argc, argv, "echo", 0, &o);
	opts = &o;
	ex_signals_install(&o);
	loop = ex_loop_new(&o, &pool);

	ex_conn_opts(&o, pool, &copts);
	l = ex_listen(loop, &o, &copts);
	(void)l;

	while (!ex_stop && !listener_closed) {
		n = ub_loop_wait(loop, ev, EX_BATCH, 1, EX_WAIT_MS);
		if (n == -EINTR)
			continue;
		if (n < 0) {
			ex_warn(&o, "ub_loop_wait", n);
			status = 1;
			break;
		}
		for (i = 0; i < n; i++)
			on_event(&ev[i]);
	}
	if (listener_closed) {
		fprintf(stderr, "echo: the listener closed\n");
		status = 1;
	}

	/* Buffers we hold go back before the loop (and its pools) go away. */
	while (conns.next != &conns)
		echo_free(conns.next);
	n = ub_loop_free(loop);
	if (n < 0) {
		ex_warn(&o, "ub_loop_free", n);
		status = 1;
	}
	return status;
}
