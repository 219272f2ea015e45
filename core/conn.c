/*
 * conn.c - connections: receive, send API, pipes, backpressure, close.
 *
 * Owns: the socket, the state of its receive (armed / cancelling / starved /
 * paused), its send queue (sendq.c does the queue itself), its pipe links and
 * its life cycle.
 *
 * All state changes that need the kernel (arming, cancelling, shutdown,
 * closing) happen in ub__conn_update(), which runs for "dirty" connections
 * after each batch of completions and before each wait: API calls only
 * record what they want and mark the connection dirty.  That gives one place
 * that decides, and makes every API call cheap and side-effect free on
 * failure.
 *
 * Life: connecting -> connected -> (closing: drain, shutdown, read to EOF)
 * -> closed.  Any error or ub_conn_abort() goes to aborting: cancel every
 * operation, and once the last CQE is in, return queued buffers, close the
 * socket and emit CLOSED.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define UB_DEF_HIGH (1u << 20)
#define UB_DEF_ENTRIES 256u
#define UB_MAX_ENTRIES 32768u
/* Buffers a connection's receive asks for at first; doubled each time an
 * arm ends at its limit with full buffers, up to the budget (arm_recv). */
#define UB_INIT_RWND 2u
#define UB_MAX_ARM_BYTES (1u << 30)
/* partly filled buffers a multishot receive's promise covers (arm_recv) */
#define UB_ARM_SLACK 2u

void ub_conn_opts_init(ub_conn_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	o->mode = UB_MODE_AUTO;
	o->ring_entries = UB_DEF_ENTRIES;
	o->high_water = UB_DEF_HIGH;
	o->low_water = UB_DEF_HIGH / 4;
	o->recv_budget = UB_DEF_RECV_BUDGET;
	o->close_timeout_ms = UB_DEF_CLOSE_TIMEOUT_MS;
}

void ub__conn_dirty(ub_conn *c)
{
	if (c->dirty || c->closed)
		return;
	c->dirty = true;
	ub__list_add_tail(&c->loop->dirty, &c->dirty_link);
}

/* The SQ is full even after a submit: try again in the next round, not in
 * this one (which would spin). */
static void retry_later(ub_conn *c)
{
	if (c->dirty)
		ub__list_del(&c->dirty_link);
	c->dirty = true;
	ub__list_add_tail(&c->loop->later, &c->dirty_link);
}

int ub_conn_opts_check(const ub_loop *loop, const ub_conn_opts *o,
		       const char **reason)
{
	unsigned e;

	if (!loop)
		return ub__refuse(reason, -EINVAL, "loop is NULL");
	if (!o)
		return ub__refuse(reason, 0, NULL);
	e = o->ring_entries;
	if (o->mode < UB_MODE_AUTO || o->mode > UB_MODE_SERIAL)
		return ub__refuse(reason, -EINVAL,
				  "mode must be a send mode (UB_MODE_AUTO, "
				  "BUNDLE, RING or SERIAL)");
	if (ub_loop_mode_check(loop, o->mode, NULL) < 0)
		return ub__refuse(reason, -EOPNOTSUPP,
				  loop->mode_why[o->mode == UB_MODE_BUNDLE]);
	if (e && (e > UB_MAX_ENTRIES || (e & (e - 1))))
		return ub__refuse(reason, -EINVAL,
				  "ring_entries must be a power of 2 up to "
				  "32768");
	/* high_water 0 means the default: low_water must fit under that too,
	 * or the connection would start with low > high. */
	if (o->low_water > (o->high_water ? o->high_water : UB_DEF_HIGH))
		return ub__refuse(reason, -EINVAL,
				  o->high_water ? "low_water must not exceed "
						  "high_water"
						: "low_water must not exceed "
						  "the default high_water "
						  "(1 MiB)");
	if (o->flags & ~(unsigned)(UB_CONN_NO_RECV | UB_CONN_SINGLESHOT |
				   UB_CONN_NO_RECV_BUNDLE |
				   UB_CONN_SENT_EVENTS | UB_CONN_SOFT_WATER))
		return ub__refuse(reason, -EINVAL,
				  "flags has a bit that is no UB_CONN_* flag");
	if (o->recv_pool && o->recv_pool->loop != loop)
		return ub__refuse(reason, -EINVAL,
				  "recv_pool belongs to another loop");
	if (o->recv_pool && !(o->recv_pool->flags & UB_POOL_RECV))
		return ub__refuse(reason, -EINVAL,
				  "recv_pool must be a receive pool");
	if (o->send_pool && o->send_pool->loop != loop)
		return ub__refuse(reason, -EINVAL,
				  "send_pool belongs to another loop");
	if (o->send_pool && (o->send_pool->flags & UB_POOL_RECV))
		return ub__refuse(reason, -EINVAL,
				  "send_pool must be a send pool");
	return ub__refuse(reason, 0, NULL);
}

ub_conn *ub__conn_new(ub_loop *loop, int fd, const ub_conn_opts *opts,
		      bool connected, int *err)
{
	ub_conn_opts o;
	ub_conn *c;
	int ret;

	if (opts)
		o = *opts;
	else
		ub_conn_opts_init(&o);
	ret = ub_conn_opts_check(loop, &o, NULL);
	if (ret < 0)
		goto fail;
	ret = ub__evq_reserve(loop, 1);
	if (ret < 0)
		goto fail;
	c = calloc(1, sizeof(*c));
	if (!c) {
		ret = -ENOMEM;
		goto fail;
	}
	c->obj.h.kind = UB_KIND_CONN;
	c->loop = loop;
	c->fd = fd;
	c->mode = o.mode == UB_MODE_AUTO ? loop->best_mode : o.mode;
	c->flags = o.flags;
	c->udata = o.udata;
	c->rpool = o.recv_pool;
	if (c->rpool)
		c->rpool->users++;
	c->spool = o.send_pool;
	if (c->spool)
		c->spool->users++;
	c->high = o.high_water ? o.high_water : UB_DEF_HIGH;
	c->low = o.low_water ? o.low_water : c->high / 4;
	c->rbudget = o.recv_budget ? o.recv_budget : UB_DEF_RECV_BUDGET;
	c->rwnd = UB_INIT_RWND;
	c->idle_ms = o.idle_timeout_ms;
	c->connect_ms = o.connect_timeout_ms;
	c->close_ms = o.close_timeout_ms == UINT_MAX ? 0
		      : o.close_timeout_ms ? o.close_timeout_ms
					   : UB_DEF_CLOSE_TIMEOUT_MS;
	c->last_active = c->t_start = ub__now_ms();
	c->sq.entries = o.ring_entries ? o.ring_entries : UB_DEF_ENTRIES;
	c->sq.bgid = -1;
	c->use_recv_bundle = (loop->features & UB_FEAT_RECV_BUNDLE) &&
			     (loop->features & UB_FEAT_RECV_MULTISHOT) &&
			     !(o.flags & (UB_CONN_NO_RECV_BUNDLE |
					  UB_CONN_SINGLESHOT));
	c->recv_started = !(o.flags & UB_CONN_NO_RECV);
	c->connected = connected;
	ub__list_init(&c->dirty_link);
	ub__list_init(&c->wait_link);
	ub__list_init(&c->swait_link);
	ub__list_init(&c->thr_link);
	ub__list_add_tail(&loop->conns, &c->obj.h.link);
	loop->nlive++;
	{
		/* Latency matters more than segment count for a message
		 * server; SERIAL coalesces with MSG_MORE where it helps. */
		int one = 1;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (connected) {
		ub__conn_dirty(c);
		ub__timer_update(c);
	}
	if (err)
		*err = 0;
	return c;
fail:
	if (err)
		*err = ret;
	return NULL;
}

static int check_stream_socket(int fd)
{
	int type = 0;
	socklen_t len = sizeof(type);
	int fl;

	if (fd < 0)
		return -EBADF;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return errno == ENOTSOCK ? -ENOTSOCK : -errno;
	if (type != SOCK_STREAM)
		return -EINVAL;
	/* io_uring waits for readiness itself; a non-blocking file would
	 * make some kernels fail operations with -EAGAIN instead. */
	fl = fcntl(fd, F_GETFL);
	if (fl >= 0 && (fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	return 0;
}

ub_conn *ub_conn_adopt(ub_loop *loop, int fd, const ub_conn_opts *opts,
		       int *err)
{
	int ret;

	if (!loop || loop->freeing) {
		ret = -EINVAL;
		goto fail;
	}
	/* Options first: check_stream_socket() clears O_NONBLOCK, and a call
	 * that fails must leave the caller's fd as it was. */
	if ((ret = ub_conn_opts_check(loop, opts, NULL)) < 0)
		goto fail;
	ret = check_stream_socket(fd);
	if (ret < 0)
		goto fail;
	return ub__conn_new(loop, fd, opts, true, err);
fail:
	if (err)
		*err = ret;
	return NULL;
}

ub_conn *ub_conn_connect(ub_loop *loop, const struct sockaddr *addr,
			 socklen_t addrlen, const ub_conn_opts *opts, int *err)
{
	struct io_uring_sqe *sqe;
	ub_conn *c;
	int fd, ret;

	if (!loop || loop->freeing || !ub__addr_ok(addr, addrlen)) {
		ret = -EINVAL;
		goto fail;
	}
	if ((ret = ub_conn_opts_check(loop, opts, NULL)) < 0)
		goto fail;
	fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		goto fail;
	}
	c = ub__conn_new(loop, fd, opts, false, &ret);
	if (!c) {
		close(fd);
		goto fail;
	}
	c->caddr = malloc(sizeof(*c->caddr));
	sqe = c->caddr ? ub__sqe(loop) : NULL;
	if (!sqe) {
		ret = c->caddr ? -EBUSY : -ENOMEM;
		ub__list_del(&c->obj.h.link);
		ub__conn_free(c); /* pool references, the socket, caddr */
		free(c);
		goto fail;
	}
	memcpy(c->caddr, addr, addrlen);
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)c->caddr, addrlen);
	io_uring_sqe_set_data64(sqe, ub__tag(c, UB_OP_CONNECT));
	c->connecting = true;
	c->inflight++;
	ub__timer_update(c);
	if (err)
		*err = 0;
	return c;
fail:
	if (err)
		*err = ret;
	return NULL;
}

/* ---- receive ---- */

static ub_pool *recv_pool(ub_conn *c, int *err)
{
	*err = -ENOMEM;
	if (!c->rpool) {
		c->rpool = ub_loop_recv_pool(c->loop, err);
		if (c->rpool)
			c->rpool->users++;
	}
	return c->rpool;
}

static void starve(ub_conn *c, ub_pool *p)
{
	c->starved = true;
	if (ub__list_empty(&c->wait_link))
		ub__list_add_tail(&p->recv_waiters, &c->wait_link);
}

/* The budget in whole buffers of p: at least one, at most the pool. */
static unsigned budget_bufs(const ub_conn *c, const ub_pool *p)
{
	size_t n = c->rbudget / p->size;

	if (n < 1)
		n = 1;
	if (n > p->count)
		n = p->count;
	return (unsigned)n;
}

/*
 * How many more buffers c may take from p now: the pool's share rule
 * (ub__pool_allowance, pool.c) within its budget.  A closing connection
 * discards what it receives at once: it always may take one.
 */
static unsigned recv_allowance(const ub_conn *c, const ub_pool *p,
			       unsigned *need)
{
	unsigned allow = ub__pool_allowance(p, c->obj.rheld,
					    budget_bufs(c, p), need);

	if (!allow && c->closing)
		allow = 1;
	return allow;
}

static void set_throttled(ub_conn *c, bool on, unsigned need)
{
	ub_pool *p = c->rpool;

	if (on && need < p->wake_level)
		p->wake_level = need; /* pool.c wakes us there */
	if (on == c->throttled)
		return;
	c->throttled = on;
	if (on)
		ub__list_add_tail(&p->throttled, &c->thr_link);
	else
		ub__list_del(&c->thr_link);
}

/* Buffers the armed receive could still fill: the promise it holds. */
static void set_promise(ub_conn *c, unsigned n)
{
	ub__pool_promise(c->rpool, &c->promise, n);
}

/* Wait for data without taking a buffer (arm_recv): MSG_PEEK of one byte
 * into the connection itself, freed only once nothing is in flight. */
static int arm_peek(ub_conn *c)
{
	struct io_uring_sqe *sqe = ub__sqe(c->loop);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_recv(sqe, c->fd, &c->peek_byte, 1, MSG_PEEK);
	io_uring_sqe_set_data64(sqe, ub__tag(c, UB_OP_RECV));
	set_promise(c, 0);
	c->recv_peek = true;
	c->recv_armed = true;
	c->inflight++;
	return 0;
}

/*
 * Arm a receive that takes at most n buffers, n = the allowance, the
 * window (rwnd) and what the pool has left above its reserve once every
 * armed receive's promise is counted (at least one for a connection that
 * holds none: a quiet connection always gets to receive; one that holds
 * some peeks first, below).  Multishot with the kernel's byte limit where it
 * has one (UB_FEAT_RECV_LIMIT); else one-shot, one buffer each, re-armed
 * after each completion: exact, at the cost of multishot and bundles.
 */
static int arm_recv(ub_conn *c)
{
	struct io_uring_sqe *sqe;
	int err;
	ub_pool *p = recv_pool(c, &err);
	unsigned allow, need, n, avail, slack, f = c->loop->features;
	uint64_t bytes;
	bool ms, over = false;

	if (!p)
		return err < 0 ? err : -ENOMEM;
	/* No buffer to receive into: wait for one instead of letting the
	 * kernel fail the receive at once (proxy.c's busy loop). */
	if (ub__pool_in_ring(p) == 0) {
		starve(c, p);
		return 0;
	}
	allow = recv_allowance(c, p, &need);
	if (!allow) {
		set_throttled(c, true, need);
		return 0;
	}
	n = allow < c->rwnd ? allow : c->rwnd;
	avail = ub__pool_recv_avail(p);
	ms = (f & UB_FEAT_RECV_MULTISHOT) && (f & UB_FEAT_RECV_LIMIT) &&
	     !(c->flags & UB_CONN_SINGLESHOT);
	/* The limit counts bytes, but every completion that ends a buffer
	 * early uses a whole one: a multishot receive also promises
	 * UB_ARM_SLACK such buffers (an incremental pool wastes none), and
	 * asks for that many fewer within the budget.  Where the pool or the
	 * budget has no room for them, the receive is one-shot, one buffer,
	 * exact: 64 slow connections each ending a few buffers early ate
	 * the whole reserve, and a new connection starved. */
	slack = ms && !p->inc ? UB_ARM_SLACK : 0;
	if (slack && (avail <= slack || allow <= slack)) {
		ms = false;
		slack = 0;
	}
	/* One that holds buffers takes what nobody was promised: taking
	 * more is how the reserve ran out (one that holds none takes one,
	 * recv_allowance).  But idle receives' promises never end: with
	 * none left it waits for data with a peek, which takes no buffer,
	 * and then takes one buffer, exactly, if the pool has room for that
	 * beside the reserve (pool.c); else it waits for either.  600 clients
	 * that each sent half a line and waited froze every other connection
	 * holding part of one, with 400 buffers free: their receives'
	 * promises, or one-buffer receives armed on their sockets, were all
	 * there was.  A peek of an idle one holds nothing back. */
	if (!avail && c->obj.rheld) {
		if (!c->readable)
			return arm_peek(c);
		if (!ub__pool_overcommit_ok(p)) {
			set_throttled(c, true, ub__pool_recv_keep(p) + 1);
			p->owait = true;
			return 0;
		}
		over = true;
		ms = false;
		slack = 0;
	}
	if (n + slack > avail)
		n = avail > slack ? avail - slack : 1;
	if (n + slack > allow)
		n = allow - slack; /* (allow > slack here, n <= allow without) */
	sqe = ub__sqe(c->loop);
	if (!sqe)
		return -EBUSY;
	bytes = (uint64_t)n * p->size;
	if (bytes > UB_MAX_ARM_BYTES)
		bytes = UB_MAX_ARM_BYTES;
	if (ms) {
		io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
		sqe->file_index = (uint32_t)bytes; /* sqe->optlen: the limit */
		/* An incremental pool's reads are contiguous already. */
		if (c->use_recv_bundle && !p->inc)
			sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	} else {
		/* One buffer.  Not a bundle: a one-shot bundle that fills its
		 * length is retried once by the kernel with the length of all
		 * the socket holds (io_recv_finish), past any cap we set. */
		io_uring_prep_recv(sqe, c->fd, NULL, 0, 0);
		n = 1;
		bytes = p->size;
	}
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = (uint16_t)p->bgid;
	io_uring_sqe_set_data64(sqe, ub__tag(c, UB_OP_RECV));
	c->arm_left = (uint32_t)bytes;
	c->arm_bytes = c->arm_bufs = 0;
	c->arm_slack = slack & 3;
	c->arm_spent = false;
	set_promise(c, over ? 0 : n + slack);
	if (over)
		p->ocount++;
	c->recv_over = over;
	c->readable = false; /* this receive takes what waits */
	c->arm_tail = p->br_tail;
	c->recv_armed = true;
	c->inflight++;
	return 0;
}

/* A completion of the armed receive (not a handoff's): res bytes in nbufs
 * buffers; more: it stays armed. */
static void arm_progress(ub_conn *c, int res, unsigned nbufs, bool more)
{
	unsigned size = c->rpool->size;

	if (res > 0) {
		c->arm_left -= (unsigned)res < c->arm_left ? (unsigned)res
							   : c->arm_left;
		c->arm_bytes += (unsigned)res;
		c->arm_bufs += nbufs;
		/* Ended a buffer early, so the receive may take a buffer
		 * more than its limit counted: one of the slack's.  Once
		 * they are spent, a receive that could still reach the
		 * budget, or one on a pool that is short, is cancelled (and
		 * armed again for what is left). */
		if (more && !c->rpool->inc &&
		    (uint64_t)nbufs * size > (unsigned)res) {
			ub_pool *p = c->rpool;
			unsigned left = (unsigned)((c->arm_left +
						    (uint64_t)size - 1) / size);

			if (c->arm_slack)
				c->arm_slack--;
			if (!c->arm_slack &&
			    (c->obj.rheld + left >= budget_bufs(c, p) ||
			     !ub__pool_recv_avail(p)))
				c->arm_spent = true;
		}
	}
	if (more) {
		set_promise(c, (unsigned)((c->arm_left + (uint64_t)size - 1) /
					  size) + c->arm_slack);
		return;
	}
	/* Ended at its limit with buffers at least half full on average: a
	 * bulk sender, whose next arm may take a larger window.  A small
	 * message sender's window stays small, so its promise does. */
	if (c->arm_left == 0 && (uint64_t)c->arm_bytes * 2 >=
				(uint64_t)c->arm_bufs * size &&
	    c->rwnd < budget_bufs(c, c->rpool))
		c->rwnd *= 2;
	set_promise(c, 0);
}

/* A plain receive into the buffer the pool handed us (see pool.c). */
static int arm_direct(ub_conn *c)
{
	struct io_uring_sqe *sqe = ub__sqe(c->loop);
	ub_buf *b = c->handoff;

	if (!sqe)
		return -EBUSY;
	io_uring_prep_recv(sqe, c->fd, ub_buf_data(b), c->rpool->size, 0);
	io_uring_sqe_set_data64(sqe, ub__tag(c, UB_OP_RECV));
	c->direct = true;
	c->recv_armed = true;
	c->inflight++;
	return 0;
}

static void give_back(ub_conn *c)
{
	ub_buf *b = c->handoff;

	c->handoff = NULL;
	b->pool->handoff--;
	ub__buf_recycle(b);
}

static int cancel_op(ub_conn *c, enum ub_op op)
{
	struct io_uring_sqe *sqe = ub__sqe(c->loop);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_cancel64(sqe, ub__tag(c, op), 0);
	io_uring_sqe_set_data64(sqe, ub__tag(c, UB_OP_CANCEL));
	c->inflight++;
	return 0;
}

static int cancel_all(ub_conn *c)
{
	struct io_uring_sqe *sqe = ub__sqe(c->loop);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, ub__tag(c, UB_OP_CANCEL));
	c->inflight++;
	return 0;
}

/* No more sends accepted: closing, closed, or the sending side shut. */
static bool sends_over(const ub_conn *c)
{
	return c->closing || c->shut_req || c->aborting || c->closed;
}

/* Wait for a buffer of the send pool: the pool wakes c (dirty, and owed a
 * WRITABLE unless it has soft water: then it only waits to move its
 * spill) when it has buffers again. */
static void wait_spool(ub_conn *c)
{
	c->want_spool = true;
	if (ub__list_empty(&c->swait_link))
		ub__list_add_tail(&c->spool->send_waiters, &c->swait_link);
}

/* At or above the high mark: counts what is spilled too. */
static bool above_high(const ub_conn *c)
{
	return ub__sendq_queued(&c->sq) >= c->high;
}

/* Queue a buffer on c without the high water check (pipes, internal);
 * behind the spill if anything is spilled. */
static int queue_buf(ub_conn *c, ub_buf *buf)
{
	int ret;

	if (sends_over(c))
		return -EPIPE;
	if (c->sq.spill_head)
		ret = ub__sendq_spill_buf(c, buf);
	else
		ret = ub__sendq_push(c, buf);
	if (ret < 0)
		return ret;
	if (above_high(c))
		c->want_writable = true;
	ub__conn_dirty(c);
	return 0;
}

static void deliver(ub_conn *c, ub_buf *buf)
{
	ub_conn *dst = c->pipe_to;

	if (c->closing || c->aborting) {
		/* Draining before close: nobody wants these bytes. */
		ub__buf_recycle(buf);
		return;
	}
	if (dst && queue_buf(dst, buf) == 0) {
		if (above_high(dst))
			c->pipe_paused = true;
		return;
	}
	if (ub__emit(c->loop, UB_EV_DATA, (int)buf->len, c, NULL, buf) < 0)
		ub__buf_recycle(buf); /* out of memory: cannot deliver */
}

/*
 * A reset reads as end of file once another call (our send) has taken the
 * socket's error: tell the two apart by the TCP state, CLOSE after a reset
 * versus CLOSE_WAIT after the peer's FIN.  Once we have shut down our side,
 * a FIN moves the socket to TIME_WAIT, which also leaves it CLOSE: then EOF
 * is what it is.
 */
static bool peer_reset(const ub_conn *c)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (c->shut_done)
		return false;
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return false; /* not TCP */
	return ti.tcpi_state == TCP_CLOSE;
}

static void on_recv(ub_conn *c, int res, unsigned cflags)
{
	bool direct = c->direct;

	if (c->direct) {
		/* One-shot: CQE_F_MORE never set, never a ring buffer. */
		c->direct = false;
		cflags &= ~(unsigned)IORING_CQE_F_MORE;
	}
	if (!(cflags & IORING_CQE_F_MORE)) {
		c->recv_armed = false;
		c->recv_cancelling = false;
		c->inflight--;
		if (c->recv_over) {
			c->recv_over = false;
			ub__pool_overcommit_end(c->rpool);
		}
	}
	if (c->recv_peek) {
		/* (one-shot: it ended above) Something waits: data, the end
		 * or an error, which the receive then reports (peer_reset
		 * tells a taken reset from EOF); cancelled, nothing is known. */
		c->recv_peek = false;
		if (res != -ECANCELED)
			c->readable = true;
		ub__conn_dirty(c);
		return;
	}
	if (c->handoff && !c->recv_armed) {
		ub_buf *b = c->handoff;

		if (res > 0) {
			c->handoff = NULL;
			b->pool->handoff--;
			if (b->pool->inc) {
				/* The whole buffer was ours: one slice of it. */
				b = ub__pool_slice_whole(b, (unsigned)res);
				if (!b) {
					ub__conn_fail(c, -ENOBUFS);
					ub__conn_dirty(c);
					return;
				}
			} else {
				ub__buf_set_state(b, UB_BUF_APP);
				b->len = (uint32_t)res;
				b->sent = 0;
			}
			ub__buf_charge(b, &c->obj);
			c->bytes_recv += (unsigned)res;
			c->last_active = c->loop->now;
			deliver(c, b);
			ub__conn_dirty(c);
			return;
		}
		give_back(c);
	}
	if (res > 0) {
		ub_pool *p = c->rpool;
		ub_buf **bufs = c->loop->scratch;
		unsigned n, i, got = 0;
		int err;

		if (!(cflags & IORING_CQE_F_BUFFER)) {
			ub__conn_fail(c, -EIO);
			return;
		}
		c->bytes_recv += (unsigned)res;
		c->last_active = c->loop->now;
		/* Take every buffer of the bundle before delivering any:
		 * delivering may recycle buffers into ring slots. */
		n = ub__pool_take_recv(p, cflags >> UB_CQE_BUFFER_SHIFT,
				       (unsigned)res, cflags, &c->obj, bufs,
				       c->loop->scratch_cap, &err);
		for (i = 0; i < n; i++)
			got += bufs[i]->len;
		arm_progress(c, res, n, cflags & IORING_CQE_F_MORE);
		for (i = 0; i < n; i++)
			deliver(c, bufs[i]);
		if (got != (unsigned)res) {
			/* ring out of sync (-EIO), or no slice handle left */
			ub__conn_fail(c, err < 0 ? err : -EIO);
			return;
		}
	} else if (!direct && c->rpool) {
		/* A kernel that consumed an incremental buffer on a
		 * zero-length completion (fixed in later stable kernels)
		 * says so with the buffer's id and no BUF_MORE. */
		if ((cflags & IORING_CQE_F_BUFFER) && c->rpool->inc) {
			int err;

			(void)ub__pool_take_recv(c->rpool,
						 cflags >> UB_CQE_BUFFER_SHIFT,
						 0, cflags, &c->obj, NULL, 0,
						 &err);
		}
		arm_progress(c, res, 0, cflags & IORING_CQE_F_MORE);
	}
	if (res == 0 && peer_reset(c)) {
		ub__conn_fail(c, -ECONNRESET);
	} else if (res == 0) {
		c->eof = true;
		if (c->pipe_to) {
			c->pipe_to->shut_req = true;
			ub__conn_dirty(c->pipe_to);
		}
		if (!c->closing && !c->aborting)
			ub__emit(c->loop, UB_EV_EOF, 0, c, NULL, NULL);
	} else if (res == -ENOBUFS) {
		/* The kernel found the ring empty.  Our count of ring buffers
		 * lags (buffers other receives took may still be in CQEs we
		 * have not reaped), so it cannot say "try again": only a
		 * buffer added since this receive was armed can. */
		if (c->rpool->br_tail == c->arm_tail ||
		    ub__pool_in_ring(c->rpool) == 0)
			starve(c, c->rpool);
	} else if (res < 0 && res != -ECANCELED) {
		ub__conn_fail(c, res);
	}
	ub__conn_dirty(c);
}

/* ---- the one place that talks to the kernel about a connection ---- */

/* Cut src's pipe.  Invariant: a->pipe_to == b exactly when
 * b->pipe_from == a; only this function and ub_conn_pipe() change them. */
static void unpipe(ub_conn *src)
{
	ub_conn *dst = src->pipe_to;

	if (!dst)
		return;
	dst->pipe_from = NULL;
	src->pipe_to = NULL;
	if (src->pipe_paused) {
		src->pipe_paused = false;
		ub__conn_dirty(src);
	}
}

static void finalize(ub_conn *c)
{
	unpipe(c);
	if (c->pipe_from)
		unpipe(c->pipe_from);
	if (c->lsn) {
		ub__listener_conn_gone(c->lsn);
		c->lsn = NULL;
	}
	ub__conn_free(c);
	c->closed = true;
	ub__emit(c->loop, UB_EV_CLOSED, c->close_res, c, NULL, NULL);
}

void ub__conn_update(ub_conn *c)
{
	bool want_recv;

	if (c->closed)
		return;
	if (c->aborting) {
		if (c->inflight == 0) {
			finalize(c);
		} else if (!c->cancel_sent) {
			if (cancel_all(c) == 0)
				c->cancel_sent = true;
			else
				retry_later(c);
		}
		return;
	}
	if (c->sq.spill_head && !c->want_spool) {
		int ret = ub__sendq_unspill(c);

		if (ret == 1) {
			wait_spool(c);
		} else if (ret < 0) {
			ub__conn_fail(c, ret);
			ub__conn_dirty(c);
			return;
		}
	}
	if (c->connected) {
		int ret = ub__sendq_publish(c);

		if (ret < 0) {
			ub__conn_fail(c, ret);
			ub__conn_dirty(c);
			return;
		}
		if (ub__sendq_arm(c) < 0)
			retry_later(c);
		if (c->shut_req && !c->shut_done && !c->sq.head &&
		    !c->sq.spill_head && !c->send_armed) {
			shutdown(c->fd, SHUT_WR);
			c->shut_done = true;
		}
	}
	/* After a shutdown only for soft water: its producer may have
	 * stopped at the mark just before, and waits to hear it drained. */
	if (c->want_writable && !c->want_spool && !c->closing &&
	    (!c->shut_req || (c->flags & UB_CONN_SOFT_WATER)) &&
	    ub__sendq_queued(&c->sq) <= c->low) {
		c->want_writable = false;
		ub__emit(c->loop, UB_EV_WRITABLE, 0, c, NULL, NULL);
	}
	if (c->pipe_from && c->pipe_from->pipe_paused &&
	    ub__sendq_queued(&c->sq) <= c->low) {
		c->pipe_from->pipe_paused = false;
		ub__conn_dirty(c->pipe_from);
	}
	/* Closing, sent and shut down: once nothing unread is left, close.
	 * (Closing with unread data would send a reset, which can destroy
	 * our own bytes still in flight; waiting for the peer's EOF instead
	 * would let a peer hold the connection open forever.) */
	if (c->closing && c->shut_done && !c->eof && !c->rx_done) {
		int inq = 0;

		if (!c->recv_started ||
		    (ioctl(c->fd, SIOCINQ, &inq) == 0 && inq == 0))
			c->rx_done = true;
	}
	want_recv = c->connected && c->recv_started && !c->eof &&
		    !c->rx_done &&
		    (c->closing || (!c->user_paused && !c->pipe_paused));
	/* The budget and the fair share (recv_allowance): at the cap, stop
	 * (the bytes wait in the socket) until a buffer of ours comes back. */
	if (want_recv && c->rpool) {
		unsigned need;
		bool stop = recv_allowance(c, c->rpool, &need) == 0;

		set_throttled(c, stop, need);
		want_recv = !stop;
	} else if (c->throttled) {
		set_throttled(c, false, 0);
	}
	if (c->handoff && !c->recv_armed) {
		if (want_recv) {
			if (arm_direct(c) < 0)
				retry_later(c);
		} else {
			give_back(c); /* to the next waiter */
		}
	}
	if (want_recv && !c->recv_armed && !c->starved && !c->handoff) {
		int ret = arm_recv(c);

		if (ret == -EBUSY) {
			retry_later(c);
		} else if (ret < 0) {
			ub__conn_fail(c, ret); /* e.g. no pool could be made */
			ub__conn_dirty(c);
			return;
		}
	} else if ((!want_recv || c->arm_spent) && c->recv_armed &&
		   !c->recv_cancelling) {
		if (cancel_op(c, UB_OP_RECV) == 0)
			c->recv_cancelling = true;
		else
			retry_later(c);
	}
	if (!want_recv && c->starved) {
		c->starved = false;
		ub__list_del(&c->wait_link);
	}
	if (c->closing && c->shut_done && (c->eof || c->rx_done) &&
	    c->inflight == 0)
		finalize(c);
}

void ub__conn_fail(ub_conn *c, int err)
{
	if (c->aborting || c->closed)
		return;
	if (err && !c->closing && !(err == -ECANCELED && c->loop->freeing))
		ub__emit(c->loop, UB_EV_ERROR, err, c, NULL, NULL);
	c->aborting = true;
	c->closing = true;
	c->close_res = err;
	if (c->starved) {
		c->starved = false;
		ub__list_del(&c->wait_link);
	}
	if (c->throttled)
		set_throttled(c, false, 0);
	ub__list_del(&c->swait_link);
	c->want_spool = false;
	ub__conn_dirty(c);
}

void ub__conn_cqe(ub_conn *c, enum ub_op op, int res, unsigned cflags)
{
	switch (op) {
	case UB_OP_RECV:
		on_recv(c, res, cflags);
		break;
	case UB_OP_SEND: {
		int ret;

		if (!(cflags & IORING_CQE_F_MORE)) {
			c->send_armed = false;
			c->inflight--;
		}
		if (res > 0)
			c->last_active = c->loop->now;
		ret = ub__sendq_complete(c, res, cflags);
		if (ret < 0)
			ub__conn_fail(c, ret);
		else if (res > 0 && (c->flags & UB_CONN_SENT_EVENTS))
			ub__emit(c->loop, UB_EV_SENT, res, c, NULL, NULL);
		ub__conn_dirty(c);
		break;
	}
	case UB_OP_CONNECT:
		c->inflight--;
		c->connecting = false;
		free(c->caddr); /* the kernel is done with it */
		c->caddr = NULL;
		if (c->aborting) {
			/* aborted while connecting: CLOSED will tell */
		} else if (res == 0) {
			c->connected = true;
			c->last_active = c->loop->now;
			ub__timer_update(c); /* idle from now on */
			ub__emit(c->loop, UB_EV_CONNECT, 0, c, NULL, NULL);
		} else {
			ub__emit(c->loop, UB_EV_CONNECT, res, c, NULL, NULL);
			c->connect_failed = true;
			c->closing = true; /* no ERROR event: CONNECT said it */
			ub__conn_fail(c, res);
		}
		ub__conn_dirty(c);
		break;
	case UB_OP_CANCEL:
		c->inflight--;
		/* A cancel that found its operations (res >= 0) or found
		 * nothing (-ENOENT) is done: what it cancelled completes by
		 * itself (under DEFER_TASKRUN, only at the next GETEVENTS
		 * wait), and nothing is armed while aborting.  Sending
		 * another cancel-all at once would post a fresh CQE before
		 * those completions can arrive: with a few hundred
		 * connections reap() then always finds a full batch and
		 * never waits (ub_loop_free() spun until its timeout).
		 * Only a cancel the kernel could not do (-EALREADY: the
		 * operation is running) is tried again. */
		if (res < 0 && res != -ENOENT)
			c->cancel_sent = false;
		ub__conn_dirty(c);
		break;
	default:
		break;
	}
}

/* Release what the connection holds.  Idempotent; only when nothing is
 * armed in the kernel. */
void ub__conn_free(ub_conn *c)
{
	ub__timer_remove(c);
	free(c->caddr);
	c->caddr = NULL;
	ub__sendq_destroy(c);
	if (c->handoff)
		give_back(c);
	if (c->throttled)
		set_throttled(c, false, 0);
	if (c->rpool) {
		set_promise(c, 0); /* nothing is armed any more */
		if (c->obj.rheld)
			ub__pool_disown(c->rpool, &c->obj);
		c->rpool->users--;
		c->rpool = NULL;
	}
	if (c->spool) {
		c->spool->users--;
		c->spool = NULL;
	}
	if (c->starved) {
		c->starved = false;
		ub__list_del(&c->wait_link);
	}
	ub__list_del(&c->swait_link);
	if (c->dirty) {
		ub__list_del(&c->dirty_link);
		c->dirty = false;
	}
	if (c->fd >= 0) {
		if (c->linger_rst) {
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };

			setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg,
				   sizeof(lg));
		}
		close(c->fd);
		c->fd = -1;
	}
}

/* ---- deadlines (the loop keeps the heap and the timeout, loop.c) ---- */

int64_t ub__conn_deadline(const ub_conn *c)
{
	int64_t d = INT64_MAX;

	if (c->closed || c->aborting)
		return d; /* ends by itself, soon */
	if (c->connecting && c->connect_ms)
		d = c->t_start + c->connect_ms;
	if (c->closing) {
		if (c->close_ms && c->t_close + c->close_ms < d)
			d = c->t_close + c->close_ms;
	} else if (c->connected && c->idle_ms &&
		   c->last_active + c->idle_ms < d) {
		d = c->last_active + c->idle_ms;
	}
	/* Times are whole ms, truncated: one more, so that no deadline
	 * fires before its full length has passed. */
	return d == INT64_MAX ? d : d + 1;
}

void ub__conn_expire(ub_conn *c)
{
	if (c->connecting && c->connect_ms &&
	    c->loop->now >= c->t_start + c->connect_ms) {
		/* As a failed connect: CONNECT says why, no ERROR. */
		ub__emit(c->loop, UB_EV_CONNECT, -ETIMEDOUT, c, NULL, NULL);
		c->connect_failed = true;
		c->closing = true;
		c->linger_rst = true;
	} else if (c->closing) {
		/* The close could not drain in time: abort it. */
		ub__emit(c->loop, UB_EV_ERROR, -ETIMEDOUT, c, NULL, NULL);
		c->linger_rst = true;
	}
	/* Idle: nothing received or sent for idle_ms.  ERROR -ETIMEDOUT
	 * (from ub__conn_fail, the connection not being closing). */
	ub__conn_fail(c, -ETIMEDOUT);
}

/* ---- public API ---- */

static int check_sendable(ub_conn *c)
{
	if (c->connect_failed)
		return -ENOTCONN;
	if (sends_over(c))
		return -EPIPE;
	if (!(c->flags & UB_CONN_SOFT_WATER) && above_high(c)) {
		c->want_writable = true;
		return -EAGAIN;
	}
	return 0;
}

int ub_conn_send_buf(ub_conn *c, ub_buf *buf)
{
	int ret;

	if (!c || !buf || !ub__buf_usable(buf) || buf->len == 0 ||
	    buf->pool->loop != c->loop)
		return -EINVAL;
	ret = check_sendable(c);
	if (ret < 0)
		return ret;
	ret = queue_buf(c, buf);
	if (ret < 0)
		return ret;
	/* Soft water says "stop producing"; a hard mark says it with the
	 * next refusal instead (compatible with the callers of old). */
	return (c->flags & UB_CONN_SOFT_WATER) && above_high(c);
}

ssize_t ub_conn_send(ub_conn *c, const void *data, size_t len)
{
	const char *p = data;
	size_t off = 0;
	int ret;

	if (!c || (!data && len))
		return -EINVAL;
	ret = check_sendable(c);
	if (ret < 0)
		return ret;
	if (len == 0)
		return 0;
	if (!c->spool) {
		c->spool = ub_loop_send_pool(c->loop, &ret);
		if (!c->spool)
			return ret;
		c->spool->users++;
	}
	/* Into pool buffers while below the mark and nothing is spilled. */
	while (off < len && c->sq.bytes < c->high && !c->sq.spill_head) {
		ub_buf *b = ub_pool_acquire(c->spool, NULL);
		size_t n = len - off;

		if (!b) {
			wait_spool(c);
			break;
		}
		if (n > b->pool->size)
			n = b->pool->size;
		memcpy(ub_buf_data(b), p + off, n);
		b->len = (uint32_t)n;
		ret = queue_buf(c, b);
		if (ret < 0) {
			ub__buf_recycle(b);
			if (off == 0)
				return ret;
			break;
		}
		off += n;
	}
	if (off < len && (c->flags & UB_CONN_SOFT_WATER)) {
		/* The rest waits in the spill, in order. */
		ret = ub__sendq_spill_copy(c, p + off, len - off);
		if (ret == 0)
			off = len;
		else if (off == 0)
			return ret;
		if (above_high(c))
			c->want_writable = true;
		ub__conn_dirty(c);
		return (ssize_t)off;
	}
	if (off == 0) {
		c->want_writable = true;
		return -EAGAIN;
	}
	return (ssize_t)off;
}

int ub_conn_want_writable(ub_conn *c)
{
	if (!c)
		return -EINVAL;
	if (sends_over(c))
		return -EPIPE;
	c->want_writable = true;
	ub__conn_dirty(c);
	return 0;
}

int ub_conn_pause_recv(ub_conn *c)
{
	if (!c)
		return -EINVAL;
	if (c->closed || c->aborting)
		return -EPIPE;
	c->user_paused = true;
	ub__conn_dirty(c);
	return 0;
}

int ub_conn_resume_recv(ub_conn *c)
{
	if (!c)
		return -EINVAL;
	if (c->closed || c->aborting)
		return -EPIPE;
	c->user_paused = false;
	c->recv_started = true;
	ub__conn_dirty(c);
	return 0;
}

int ub_conn_pipe(ub_conn *src, ub_conn *dst)
{
	if (!src || src == dst || (dst && dst->loop != src->loop))
		return -EINVAL;
	if (src->closed || src->aborting ||
	    (dst && (dst->closed || dst->aborting || dst->closing)))
		return -EPIPE;
	unpipe(src);
	if (dst) {
		if (dst->pipe_from)
			unpipe(dst->pipe_from); /* even if that one is dying */
		src->pipe_to = dst;
		dst->pipe_from = src;
		if (src->eof) {
			dst->shut_req = true;
			ub__conn_dirty(dst);
		}
	}
	ub__conn_dirty(src);
	return 0;
}

int ub_conn_shutdown(ub_conn *c)
{
	if (!c)
		return -EINVAL;
	if (c->closing || c->aborting || c->closed || c->shut_req)
		return -EPIPE;
	c->shut_req = true;
	ub__conn_dirty(c);
	return 0;
}

int ub_conn_close(ub_conn *c)
{
	if (!c)
		return -EINVAL;
	if (c->closing || c->aborting || c->closed)
		return -EPIPE;
	if (c->connecting && !c->sq.head && !c->sq.spill_head) {
		/* Nothing to deliver: do not wait for a connect that may
		 * take minutes (SYN retries) to end; cancel it.  CLOSED 0,
		 * no CONNECT, as after an abort. */
		ub__conn_fail(c, 0);
		return 0;
	}
	c->closing = true;
	c->shut_req = true;
	c->want_writable = false;
	ub__list_del(&c->swait_link);
	c->want_spool = false;
	unpipe(c);
	ub__conn_dirty(c);
	c->t_close = ub__now_ms();
	ub__timer_update(c); /* the close deadline replaces the idle one */
	return 0;
}

int ub_conn_abort(ub_conn *c)
{
	if (!c)
		return -EINVAL;
	if (c->aborting || c->closed)
		return -EPIPE;
	c->linger_rst = true;
	ub__conn_fail(c, 0);
	return 0;
}

int ub_conn_fd(const ub_conn *c) { return c ? c->fd : -EINVAL; }
int ub_conn_mode(const ub_conn *c) { return c ? c->mode : -EINVAL; }
ub_loop *ub_conn_loop(const ub_conn *c) { return c ? c->loop : NULL; }
size_t ub_conn_queued_bytes(const ub_conn *c)
{
	return c ? ub__sendq_queued(&c->sq) : 0;
}
unsigned ub_conn_queued_bufs(const ub_conn *c)
{
	return c ? c->sq.nbufs + c->sq.spill_nbufs : 0;
}
size_t ub_conn_high_water(const ub_conn *c) { return c ? c->high : 0; }
size_t ub_conn_low_water(const ub_conn *c) { return c ? c->low : 0; }
void *ub_conn_udata(const ub_conn *c) { return c ? c->udata : NULL; }
void ub_conn_set_udata(ub_conn *c, void *udata) { if (c) c->udata = udata; }
uint64_t ub_conn_bytes_sent(const ub_conn *c) { return c ? c->bytes_sent : 0; }
uint64_t ub_conn_bytes_received(const ub_conn *c) { return c ? c->bytes_recv : 0; }
size_t ub_conn_recv_budget(const ub_conn *c) { return c ? c->rbudget : 0; }
unsigned ub_conn_recv_held(const ub_conn *c) { return c ? c->obj.rheld : 0; }
int ub_conn_recv_throttled(const ub_conn *c) { return c ? c->throttled : -EINVAL; }

unsigned ub_conn_idle_timeout(const ub_conn *c) { return c ? c->idle_ms : 0; }

unsigned ub_conn_close_timeout(const ub_conn *c)
{
	if (!c)
		return 0;
	return c->close_ms ? c->close_ms : UINT_MAX; /* 0 inside: never */
}

int ub_conn_set_idle_timeout(ub_conn *c, unsigned ms)
{
	if (!c)
		return -EINVAL;
	if (c->closed || c->aborting)
		return -EPIPE;
	c->idle_ms = ms;
	c->last_active = ub__now_ms(); /* counts from now */
	ub__timer_update(c);
	/* The loop's timeout is (re)armed in the next wait: make
	 * ub_loop_needs_wait() say so to a loop driven by an eventfd. */
	ub__conn_dirty(c);
	return 0;
}

int ub_conn_set_recv_budget(ub_conn *c, size_t bytes)
{
	if (!c || bytes == 0)
		return -EINVAL;
	c->rbudget = bytes;
	ub__conn_dirty(c); /* a larger budget may let it receive again */
	return 0;
}

int ub_conn_is_closing(const ub_conn *c)
{
	return c ? sends_over(c) : -EINVAL;
}

int ub_conn_set_soft_water(ub_conn *c, int on)
{
	if (!c)
		return -EINVAL;
	if (on)
		c->flags |= UB_CONN_SOFT_WATER;
	else
		c->flags &= ~(unsigned)UB_CONN_SOFT_WATER;
	return 0;
}

int ub_water_check(size_t high, size_t low, const char **reason)
{
	if (high == 0)
		return ub__refuse(reason, -EINVAL, "high_water must be > 0");
	if (low > high)
		return ub__refuse(reason, -EINVAL,
				  "low_water must not exceed high_water");
	return ub__refuse(reason, 0, NULL);
}

int ub_conn_set_water(ub_conn *c, size_t high, size_t low)
{
	if (!c || ub_water_check(high, low, NULL) < 0)
		return -EINVAL;
	c->high = high;
	c->low = low;
	ub__conn_dirty(c);
	return 0;
}
