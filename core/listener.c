/*
 * listener.c - listening sockets with multishot accept.
 *
 * Owns: the listening socket, its accept operation and a back-off timer.
 * When accept fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM)
 * the listener waits 100 ms before accepting again instead of spinning; the
 * pending connections wait in the kernel's backlog meanwhile.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int arm_accept(ub_listener *l)
{
	struct io_uring_sqe *sqe = ub__sqe(l->loop);

	if (!sqe)
		return -EBUSY;
	/* With a connection limit, one accept at a time: a multishot accept
	 * would take connections past it before a cancel could land. */
	l->accept_multi = (l->loop->features & UB_FEAT_ACCEPT_MULTISHOT) &&
			  !l->max_conns;
	if (l->accept_multi)
		io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL,
					       SOCK_CLOEXEC);
	else
		io_uring_prep_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ub__tag(l, UB_OP_ACCEPT));
	l->accept_armed = true;
	l->inflight++;
	return 0;
}

static int arm_backoff(ub_listener *l)
{
	struct io_uring_sqe *sqe = ub__sqe(l->loop);

	if (!sqe)
		return -EBUSY;
	l->backoff.tv_sec = 0;
	l->backoff.tv_nsec = 100 * 1000 * 1000;
	io_uring_prep_timeout(sqe, &l->backoff, 0, 0);
	io_uring_sqe_set_data64(sqe, ub__tag(l, UB_OP_TIMER));
	l->timer_armed = true;
	l->inflight++;
	return 0;
}

static void finish(ub_listener *l)
{
	struct ub_list *n;

	if (l->closed || l->inflight)
		return;
	/* Its connections live on without it. */
	for (n = l->loop->conns.next; l->nconns && n != &l->loop->conns;
	     n = n->next) {
		ub_conn *c = ub__container_of(n, ub_conn, obj.h.link);

		if (c->lsn == l) {
			c->lsn = NULL;
			l->nconns--;
		}
	}
	ub__listener_free(l);
	l->closed = true;
	ub__emit(l->loop, UB_EV_CLOSED, 0, NULL, l, NULL);
}

static void cancel(ub_listener *l)
{
	struct io_uring_sqe *sqe;

	if (l->cancel_sent || l->inflight == 0)
		return;
	sqe = ub__sqe(l->loop);
	if (!sqe)
		return;
	io_uring_prep_cancel_fd(sqe, l->fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, ub__tag(l, UB_OP_LCANCEL));
	l->inflight++;
	l->cancel_sent = true;
	if (l->timer_armed) {
		/* the timer is not tied to the fd: cancel it by tag */
		sqe = ub__sqe(l->loop);
		if (sqe) {
			io_uring_prep_cancel64(sqe, ub__tag(l, UB_OP_TIMER), 0);
			io_uring_sqe_set_data64(sqe,
						ub__tag(l, UB_OP_LCANCEL));
			l->inflight++;
		}
	}
}

/* Accepting may go on: not closing, nothing armed, under the limit. */
static bool may_accept(const ub_listener *l)
{
	return !l->closing && !l->accept_armed && !l->timer_armed &&
	       (!l->max_conns || l->nconns < l->max_conns);
}

/* Arm an accept at the next round, if it may accept then (a failure to
 * get an SQE there leaves it listed for the round after). */
static void start_later(ub_listener *l)
{
	if (ub__list_empty(&l->start_link))
		ub__list_add_tail(&l->loop->lstart, &l->start_link);
}

static bool resource_error(int res)
{
	return res == -EMFILE || res == -ENFILE || res == -ENOBUFS ||
	       res == -ENOMEM;
}

void ub__listener_cqe(ub_listener *l, enum ub_op op, int res, unsigned cflags)
{
	switch (op) {
	case UB_OP_ACCEPT:
		if (!(cflags & IORING_CQE_F_MORE)) {
			l->accept_armed = false;
			l->inflight--;
		}
		if (res >= 0) {
			ub_conn *c;
			int err;

			if (l->closing) {
				close(res);
				break;
			}
			/* Room for its ACCEPT and its CLOSED, or no conn:
			 * one the application never hears of would leak. */
			err = ub__evq_reserve(l->loop, 2);
			c = err < 0 ? NULL :
				ub__conn_new(l->loop, res, &l->opts, true, &err);
			if (!c) {
				close(res);
				ub__emit(l->loop, UB_EV_ERROR, err, NULL, l, NULL);
			} else {
				c->lsn = l;
				l->nconns++;
				ub__emit(l->loop, UB_EV_ACCEPT, res, c, l, NULL);
			}
		} else if (res != -ECANCELED && !l->closing) {
			ub__emit(l->loop, UB_EV_ERROR, res, NULL, l, NULL);
		}
		if (may_accept(l)) {
			if (res < 0 && resource_error(res))
				arm_backoff(l);
			else if ((res == -ECANCELED || res >= 0 ||
				  res == -EINTR || res == -ECONNABORTED ||
				  res == -EAGAIN) && arm_accept(l) < 0)
				start_later(l); /* no SQE now */
			/* other errors (EINVAL: not listening, EBADF) end
			 * accepting: the ERROR event said why */
		}
		break;
	case UB_OP_TIMER:
		l->timer_armed = false;
		l->inflight--;
		if (may_accept(l) && arm_accept(l) < 0)
			start_later(l);
		break;
	case UB_OP_LCANCEL:
		l->inflight--;
		break;
	default:
		break;
	}
	if (l->closing)
		finish(l);
}

static ub_listener *listener_new(ub_loop *loop, int fd,
				 const ub_conn_opts *opts, int *err)
{
	ub_listener *l;
	int ret;

	ret = ub__evq_reserve(loop, 1);
	if (ret < 0)
		goto fail;
	l = calloc(1, sizeof(*l));
	if (!l) {
		ret = -ENOMEM;
		goto fail;
	}
	l->h.kind = UB_KIND_LISTENER;
	l->loop = loop;
	l->fd = fd;
	if (opts)
		l->opts = *opts;
	else
		ub_conn_opts_init(&l->opts);
	/* The first accept goes out with the next wait (ub__listeners_start),
	 * with whatever limit the application sets before it. */
	ub__list_add_tail(&loop->lstart, &l->start_link);
	/* The pools must outlive every connection this listener makes. */
	if (l->opts.recv_pool)
		l->opts.recv_pool->users++;
	if (l->opts.send_pool)
		l->opts.send_pool->users++;
	ub__list_add_tail(&loop->listeners, &l->h.link);
	loop->nlive++;
	if (err)
		*err = 0;
	return l;
fail:
	if (err)
		*err = ret;
	return NULL;
}

ub_listener *ub_listener_adopt(ub_loop *loop, int fd,
			       const ub_conn_opts *conn_opts, int *err)
{
	int ret, acc = 0;
	socklen_t len = sizeof(acc);

	if (!loop || loop->freeing || fd < 0) {
		ret = -EINVAL;
		goto fail;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0) {
		ret = -errno;
		goto fail;
	}
	if (!acc) {
		ret = -EINVAL;
		goto fail;
	}
	ret = ub_conn_opts_check(loop, conn_opts, NULL);
	if (ret < 0)
		goto fail;
	return listener_new(loop, fd, conn_opts, err);
fail:
	if (err)
		*err = ret;
	return NULL;
}

ub_listener *ub_listen(ub_loop *loop, const struct sockaddr *addr,
		       socklen_t addrlen, int backlog, int reuseport,
		       const ub_conn_opts *conn_opts, int *err)
{
	ub_listener *l;
	int fd, one = 1, ret;

	if (!loop || loop->freeing || !ub__addr_ok(addr, addrlen)) {
		ret = -EINVAL;
		goto fail;
	}
	ret = ub_conn_opts_check(loop, conn_opts, NULL);
	if (ret < 0)
		goto fail;
	fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		goto fail;
	}
	if (addr->sa_family != AF_UNIX) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (reuseport &&
		    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one,
			       sizeof(one)) < 0) {
			ret = -errno;
			goto fail_fd;
		}
	}
	if (bind(fd, addr, addrlen) < 0 ||
	    listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0) {
		ret = -errno;
		goto fail_fd;
	}
	l = listener_new(loop, fd, conn_opts, &ret);
	if (!l)
		goto fail_fd;
	if (addr->sa_family == AF_UNIX) {
		const struct sockaddr_un *un = (const void *)addr;

		if (un->sun_path[0]) /* not the abstract namespace */
			l->unix_path = strndup(un->sun_path,
					       sizeof(un->sun_path));
	}
	if (err)
		*err = 0;
	return l;
fail_fd:
	close(fd);
fail:
	if (err)
		*err = ret;
	return NULL;
}

int ub_listener_close(ub_listener *l)
{
	if (!l)
		return -EINVAL;
	if (l->closing || l->closed)
		return -EPIPE;
	l->closing = true;
	cancel(l);
	finish(l);
	return 0;
}

/* Release the socket.  Idempotent; only when nothing is armed. */
void ub__listener_free(ub_listener *l)
{
	ub__list_del(&l->start_link);
	if (l->opts.recv_pool) {
		l->opts.recv_pool->users--;
		l->opts.recv_pool = NULL;
	}
	if (l->opts.send_pool) {
		l->opts.send_pool->users--;
		l->opts.send_pool = NULL;
	}
	if (l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
	if (l->unix_path) {
		unlink(l->unix_path);
		free(l->unix_path);
		l->unix_path = NULL;
	}
}

void ub__listeners_start(ub_loop *loop)
{
	struct ub_list *n, *next;

	for (n = loop->lstart.next; n != &loop->lstart; n = next) {
		ub_listener *l = ub__container_of(n, ub_listener, start_link);

		next = n->next;
		if (may_accept(l) && arm_accept(l) < 0)
			continue; /* no SQE: the next round */
		ub__list_del(&l->start_link);
	}
}

void ub__listener_conn_gone(ub_listener *l)
{
	l->nconns--;
	start_later(l); /* under the limit again: accept at the next round */
}

int ub_listener_set_max_conns(ub_listener *l, unsigned max)
{
	bool stop;

	if (!l)
		return -EINVAL;
	if (l->closing || l->closed)
		return -EPIPE;
	/* An armed accept that could pass the new limit is cancelled: a
	 * multishot one always (it would take several), a one-shot one if
	 * the limit is reached already.  Its -ECANCELED re-arms
	 * (ub__listener_cqe) once under the limit, one at a time. */
	stop = max && l->accept_armed &&
	       (l->accept_multi || l->nconns >= max);
	if (stop) {
		struct io_uring_sqe *sqe = ub__sqe(l->loop);

		if (!sqe)
			return -EBUSY; /* nothing changed */
		io_uring_prep_cancel64(sqe, ub__tag(l, UB_OP_ACCEPT), 0);
		io_uring_sqe_set_data64(sqe, ub__tag(l, UB_OP_LCANCEL));
		l->inflight++;
	}
	l->max_conns = max;
	if (!stop)
		start_later(l); /* a raised limit may let it accept again */
	return 0;
}

unsigned ub_listener_conns(const ub_listener *l) { return l ? l->nconns : 0; }
unsigned ub_listener_max_conns(const ub_listener *l)
{
	return l ? l->max_conns : 0;
}

int ub_listener_fd(const ub_listener *l) { return l ? l->fd : -EINVAL; }
ub_loop *ub_listener_loop(const ub_listener *l) { return l ? l->loop : NULL; }
void *ub_listener_udata(const ub_listener *l) { return l ? l->udata : NULL; }
void ub_listener_set_udata(ub_listener *l, void *udata) { if (l) l->udata = udata; }
