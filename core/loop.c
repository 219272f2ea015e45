/*
 * loop.c - the ring, the event queue and the wait call.
 *
 * Owns: the struct io_uring, the queue of events not yet returned, the lists
 * of connections, listeners, datagram endpoints and pools, and the buffer
 * group id allocator.
 * Invariants: CQEs are turned into events in the order the kernel posted
 * them; an object is freed at the earliest at the start of the wait call
 * after the one that returned its CLOSED event (later if held: handle.c);
 * every SQE prepared is submitted before ub_loop_wait() returns.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define UB_CQE_BATCH 256

static void timers_arm(ub_loop *loop);

struct io_uring_sqe *ub__sqe(ub_loop *loop)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&loop->ring);

	if (!sqe) {
		/* SQ full: hand what we have to the kernel and retry. */
		io_uring_submit(&loop->ring);
		sqe = io_uring_get_sqe(&loop->ring);
	}
	return sqe;
}

/* Grow the event queue to hold at least need events. */
static int evq_grow(ub_loop *loop, unsigned need)
{
	unsigned ncap = loop->evq_cap ? loop->evq_cap : 256, i;
	ub_event *n;

	if (need <= loop->evq_cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	n = malloc(ncap * sizeof(*n));
	if (!n)
		return -ENOMEM;
	for (i = 0; i < loop->evq_len; i++)
		n[i] = loop->evq[(loop->evq_head + i) % loop->evq_cap];
	free(loop->evq);
	loop->evq = n;
	loop->evq_cap = ncap;
	loop->evq_head = 0;
	return 0;
}

/*
 * The queue always keeps a free slot for the CLOSED event of every live
 * connection and listener (loop->nlive), so that CLOSED cannot fail for
 * want of memory: a lost CLOSED would leak the object and leave the
 * bindings holding a handle to it forever.  Creating an object reserves its
 * slot first (ub__evq_reserve, then nlive++ once creation cannot fail);
 * an accepted connection reserves its ACCEPT event's slot too.
 */
int ub__evq_reserve(ub_loop *loop, unsigned n)
{
	return evq_grow(loop, loop->evq_len + loop->nlive + n);
}

int ub__emit(ub_loop *loop, int type, int res, ub_conn *c, ub_listener *l,
	     ub_buf *buf)
{
	ub_event *e;

	if (type == UB_EV_CLOSED && loop->nlive) {
		loop->nlive--; /* its slot was reserved: growth needs nothing */
		if (evq_grow(loop, loop->evq_len + 1) < 0)
			return -ENOMEM; /* not reached: the slot is there */
	} else if (evq_grow(loop, loop->evq_len + 1 + loop->nlive) < 0) {
		return -ENOMEM;
	}
	e = &loop->evq[(loop->evq_head + loop->evq_len) % loop->evq_cap];
	loop->evq_len++;
	e->type = type;
	e->res = res;
	e->conn = c;
	e->listener = l;
	e->buf = buf;
	e->udata = NULL;
	e->dgram = NULL;
	return 0;
}

int ub__emit_dgram(ub_loop *loop, int type, int res, ub_dgram *d, ub_buf *buf)
{
	int ret = ub__emit(loop, type, res, NULL, NULL, buf);

	if (ret == 0)
		loop->evq[(loop->evq_head + loop->evq_len - 1) % loop->evq_cap]
			.dgram = d;
	return ret;
}

int ub__bgid_alloc(ub_loop *loop)
{
	if (loop->nfree_bgid)
		return loop->free_bgid[--loop->nfree_bgid];
	if (loop->next_bgid > 0xffff)
		return -ENOSPC;
	return (int)loop->next_bgid++;
}

void ub__bgid_free(ub_loop *loop, int bgid)
{
	if (loop->nfree_bgid == loop->cap_free_bgid) {
		unsigned ncap = loop->cap_free_bgid ? loop->cap_free_bgid * 2 : 64;
		uint16_t *n = realloc(loop->free_bgid, ncap * sizeof(*n));

		if (!n)
			return; /* the id is simply not reused */
		loop->free_bgid = n;
		loop->cap_free_bgid = ncap;
	}
	loop->free_bgid[loop->nfree_bgid++] = (uint16_t)bgid;
}

int ub_loop_opts_check(const ub_loop_opts *opts, const char **reason)
{
	ub_loop_opts o;

	memset(&o, 0, sizeof(o));
	if (opts)
		o = *opts;
	if (o.entries > 32768)
		return ub__refuse(reason, -EINVAL,
				  "entries must be at most 32768");
	if (o.pool_count > 32768)
		return ub__refuse(reason, -EINVAL,
				  "pool_count must be at most 32768");
	if (o.pool_size > (1u << 30))
		return ub__refuse(reason, -EINVAL,
				  "pool_size must be at most 1 GiB");
	if ((unsigned long long)(o.pool_count ? o.pool_count : 1024) *
		    (o.pool_size ? o.pool_size : 4096) > (64ull << 30))
		return ub__refuse(reason, -EINVAL,
				  "pool_count * pool_size must be at most 64 GiB");
	if (o.disable & ~(unsigned)UB_FEAT_ALL)
		return ub__refuse(reason, -EINVAL,
				  "disable has a bit that is no UB_FEAT_* feature");
	if (o.pool_flags & ~(unsigned)UB_POOL_INC)
		return ub__refuse(reason, -EINVAL,
				  "pool_flags may hold UB_POOL_INC only");
	return ub__refuse(reason, 0, NULL);
}

ub_loop *ub_loop_new(const ub_loop_opts *opts, int *err)
{
	ub_loop_opts o;
	ub_loop *loop;
	int ret;

	ret = ub_loop_opts_check(opts, NULL);
	if (ret < 0)
		goto fail0;
	memset(&o, 0, sizeof(o));
	if (opts)
		o = *opts;
	if (o.entries == 0)
		o.entries = 256;
	loop = calloc(1, sizeof(*loop));
	if (!loop) {
		ret = -ENOMEM;
		goto fail0;
	}
	ub__list_init(&loop->conns);
	ub__list_init(&loop->listeners);
	ub__list_init(&loop->lstart);
	ub__list_init(&loop->pools);
	ub__list_init(&loop->dirty);
	ub__list_init(&loop->later);
	ub__list_init(&loop->zombies);
	ub__list_init(&loop->held);
	ub__list_init(&loop->dgrams);
	ub__list_init(&loop->ddirty);
	ub__list_init(&loop->dlater);
	loop->evfd = -1;
	loop->pool_count = o.pool_count ? o.pool_count : 1024;
	loop->pool_size = o.pool_size ? o.pool_size : 4096;
	loop->pool_flags = o.pool_flags;
	ret = ub__probe(loop, o.entries, o.disable);
	if (ret < 0) {
		free(loop);
		goto fail0;
	}
	if (err)
		*err = 0;
	return loop;
fail0:
	if (err)
		*err = ret;
	return NULL;
}

static void run_dirty(ub_loop *loop)
{
	/* What had to wait for a free SQE gets its turn again now. */
	while (!ub__list_empty(&loop->later)) {
		struct ub_list *n = loop->later.next;

		ub__list_del(n);
		ub__list_add_tail(&loop->dirty, n);
	}
	while (!ub__list_empty(&loop->dlater)) {
		struct ub_list *n = loop->dlater.next;

		ub__list_del(n);
		ub__list_add_tail(&loop->ddirty, n);
	}
	/* update() may dirty other connections (pipes, pool waiters): loop
	 * until quiet; each pass makes progress, so bound it generously. */
	unsigned rounds = 0;

	while ((!ub__list_empty(&loop->dirty) ||
		!ub__list_empty(&loop->ddirty)) &&
	       rounds++ < 1000000) {
		if (!ub__list_empty(&loop->dirty)) {
			ub_conn *c = ub__container_of(loop->dirty.next, ub_conn,
						      dirty_link);

			ub__list_del(&c->dirty_link);
			c->dirty = false;
			ub__conn_update(c);
		} else {
			ub_dgram *d = ub__container_of(loop->ddirty.next,
						       ub_dgram, dirty_link);

			ub__list_del(&d->dirty_link);
			d->dirty = false;
			ub__dgram_update(d);
		}
	}
	ub__listeners_start(loop);
	timers_arm(loop);
}

/* ---- deadlines: a min-heap of connections by tkey ---- */

static void heap_set(ub_loop *loop, unsigned i, ub_conn *c)
{
	loop->theap[i] = c;
	c->tidx = i + 1;
}

static void heap_up(ub_loop *loop, unsigned i)
{
	ub_conn *c = loop->theap[i];

	while (i > 0) {
		unsigned parent = (i - 1) / 2;

		if (loop->theap[parent]->tkey <= c->tkey)
			break;
		heap_set(loop, i, loop->theap[parent]);
		i = parent;
	}
	heap_set(loop, i, c);
}

static void heap_down(ub_loop *loop, unsigned i)
{
	ub_conn *c = loop->theap[i];

	for (;;) {
		unsigned l = 2 * i + 1, m = i;
		int64_t key = c->tkey;

		if (l < loop->theap_len && loop->theap[l]->tkey < key) {
			m = l;
			key = loop->theap[l]->tkey;
		}
		if (l + 1 < loop->theap_len && loop->theap[l + 1]->tkey < key)
			m = l + 1;
		if (m == i)
			break;
		heap_set(loop, i, loop->theap[m]);
		i = m;
	}
	heap_set(loop, i, c);
}

void ub__timer_remove(ub_conn *c)
{
	ub_loop *loop = c->loop;
	unsigned i = c->tidx;
	ub_conn *last;

	if (!i)
		return;
	c->tidx = 0;
	i--;
	last = loop->theap[--loop->theap_len];
	if (i == loop->theap_len)
		return;
	heap_set(loop, i, last);
	heap_up(loop, i);
	heap_down(loop, last->tidx - 1);
}

void ub__timer_update(ub_conn *c)
{
	ub_loop *loop = c->loop;
	int64_t d = ub__conn_deadline(c);

	if (d == INT64_MAX) {
		ub__timer_remove(c);
		return;
	}
	if (!c->tidx) {
		if (loop->theap_len == loop->theap_cap) {
			unsigned ncap = loop->theap_cap ? loop->theap_cap * 2
							: 64;
			ub_conn **n = realloc(loop->theap, ncap * sizeof(*n));

			/* Out of memory: the deadline is not kept (a later
			 * update may succeed); nothing else breaks. */
			if (!n)
				return;
			loop->theap = n;
			loop->theap_cap = ncap;
		}
		c->tkey = d;
		heap_set(loop, loop->theap_len++, c);
		heap_up(loop, c->tidx - 1);
		return;
	}
	c->tkey = d;
	heap_up(loop, c->tidx - 1);
	heap_down(loop, c->tidx - 1);
}

/* The timeout fired: expire what is due, move the rest to its real
 * deadline.  Bounded: each connection expires or moves later. */
static void timers_run(ub_loop *loop)
{
	unsigned rounds = loop->theap_len * 2 + 1;
	int64_t now = ub__now_ms();

	loop->now = now;
	while (loop->theap_len && loop->theap[0]->tkey <= now && rounds--) {
		ub_conn *c = loop->theap[0];
		int64_t d = ub__conn_deadline(c);

		if (d > now && d != INT64_MAX) {
			c->tkey = d;
			heap_down(loop, 0);
		} else {
			ub__timer_remove(c);
			if (d != INT64_MAX)
				ub__conn_expire(c);
		}
	}
}

/* One timeout in the kernel for the earliest deadline: armed, or moved
 * earlier (IORING_TIMEOUT_UPDATE, Linux 5.11) when one came before it.
 * An update that finds the timeout already fired does nothing: its CQE
 * comes and the next round arms again. */
static void timers_arm(ub_loop *loop)
{
	struct io_uring_sqe *sqe;
	int64_t top, ms;

	if (!loop->theap_len || loop->freeing)
		return;
	top = loop->theap[0]->tkey;
	if (loop->timer_armed && loop->timer_at <= top)
		return;
	sqe = io_uring_get_sqe(&loop->ring);
	if (!sqe)
		return; /* the next round tries again */
	ms = top - ub__now_ms();
	if (ms < 1)
		ms = 1;
	loop->tts.tv_sec = ms / 1000;
	loop->tts.tv_nsec = (ms % 1000) * 1000000;
	if (loop->timer_armed) {
		io_uring_prep_timeout_update(sqe, &loop->tts,
					     ub__tag(loop, UB_OP_TIMER), 0);
		io_uring_sqe_set_data64(sqe, ub__tag(NULL, UB_OP_NONE));
	} else {
		io_uring_prep_timeout(sqe, &loop->tts, 0, 0);
		io_uring_sqe_set_data64(sqe, ub__tag(loop, UB_OP_TIMER));
		loop->timer_armed = true;
	}
	loop->timer_at = top;
}

static void handle_cqe(ub_loop *loop, const struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	enum ub_op op = (enum ub_op)(ud & UB_OP_MASK);
	void *obj = (void *)(uintptr_t)(ud & ~(uint64_t)UB_OP_MASK);

	switch (op) {
	case UB_OP_RECV:
	case UB_OP_SEND:
	case UB_OP_CONNECT:
	case UB_OP_CANCEL:
		/* Shared by connections and datagram endpoints: the object's
		 * first byte says which (internal.h, ub__kind). */
		switch (ub__kind(obj)) {
		case UB_KIND_DGRAM:
			ub__dgram_cqe(obj, op, cqe->res, cqe->flags);
			break;
		case UB_KIND_DSEND:
			ub__dgram_send_cqe(obj, cqe->res);
			break;
		default:
			ub__conn_cqe(obj, op, cqe->res, cqe->flags);
			break;
		}
		break;
	case UB_OP_TIMER:
		if (obj == loop) {
			loop->timer_armed = false;
			if (!loop->freeing)
				timers_run(loop);
			break;
		}
		ub__listener_cqe(obj, op, cqe->res, cqe->flags);
		break;
	case UB_OP_ACCEPT:
	case UB_OP_LCANCEL:
		ub__listener_cqe(obj, op, cqe->res, cqe->flags);
		break;
	case UB_OP_NONE:
		break;
	}
}

/* Process every CQE that is ready; returns how many. */
static unsigned reap(ub_loop *loop)
{
	struct io_uring_cqe *cqe;
	unsigned head, n, total = 0;

	do {
		n = 0;
		loop->now = ub__now_ms();
		io_uring_for_each_cqe(&loop->ring, head, cqe)
		{
			handle_cqe(loop, cqe);
			if (++n == UB_CQE_BATCH)
				break;
		}
		io_uring_cq_advance(&loop->ring, n);
		total += n;
		loop->reaped += n;
		run_dirty(loop);
	} while (n == UB_CQE_BATCH);
	return total;
}

int64_t ub__now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Submit, flush deferred completions into the CQ, and process them. */
static int pump(ub_loop *loop, unsigned wait_nr, int timeout_ms)
{
	struct io_uring_cqe *cqe;
	int ret;

	if (wait_nr == 0) {
		ret = io_uring_submit_and_get_events(&loop->ring);
	} else if (timeout_ms < 0) {
		ret = io_uring_submit_and_wait_timeout(&loop->ring, &cqe,
						       wait_nr, NULL, NULL);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = timeout_ms / 1000,
			.tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
		};
		ret = io_uring_submit_and_wait_timeout(&loop->ring, &cqe,
						       wait_nr, &ts, NULL);
	}
	reap(loop);
	if (ret == -ETIME || ret == -EAGAIN || ret == -EBUSY)
		ret = 0;
	return ret < 0 ? ret : 0;
}

/* Work only another ub_loop_wait() call does: SQEs prepared but not
 * submitted, connections whose update() has not run (or must wait for the
 * next round), listeners whose first accept is still to arm, completions not yet reaped or held in the kernel's overflow
 * list, deferred task work the kernel has not run yet (an enter runs at
 * most 20 items: IORING_SQ_TASKRUN, with IORING_SETUP_TASKRUN_FLAG), events
 * not yet returned. */
static bool work_left(const ub_loop *loop)
{
	unsigned sqf = IO_URING_READ_ONCE(*loop->ring.sq.kflags);

	return (sqf & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) ||
	       io_uring_sq_ready(&loop->ring) ||
	       !ub__list_empty(&loop->dirty) ||
	       !ub__list_empty(&loop->lstart) ||
	       !ub__list_empty(&loop->later) ||
	       !ub__list_empty(&loop->ddirty) ||
	       !ub__list_empty(&loop->dlater) ||
	       io_uring_cq_ready(&loop->ring) || loop->evq_len;
}

int ub_loop_wait(ub_loop *loop, ub_event *ev, int max, int min, int timeout_ms)
{
	int64_t deadline = 0;
	int ret = 0, n, i;
	unsigned long reaped0;

	if (!loop || !ev || max <= 0 || min < 0 || min > max || loop->freeing)
		return -EINVAL;
	reaped0 = loop->reaped;
	ub__handles_reap(loop);
	if (loop->evfd >= 0) {
		/* Clear before reaping: what completes from here on sets it
		 * again, so the other loop cannot miss it. */
		eventfd_t v;

		(void)eventfd_read(loop->evfd, &v);
	}
	run_dirty(loop); /* what API calls asked for goes out with this submit */
	if (timeout_ms >= 0)
		deadline = ub__now_ms() + timeout_ms;
	ret = pump(loop, 0, 0);
	while (ret == 0 && loop->evq_len < (unsigned)min) {
		int left = -1;

		if (timeout_ms >= 0) {
			int64_t d = deadline - ub__now_ms();

			if (d <= 0)
				break;
			left = (int)d;
		}
		ret = pump(loop, 1, left);
	}
	/* Work that processing queued (re-arms, sends) goes out now. */
	io_uring_submit(&loop->ring);
	if (ret < 0 && loop->evq_len == 0)
		return ret;
	n = loop->evq_len < (unsigned)max ? (int)loop->evq_len : max;
	for (i = 0; i < n; i++) {
		ub_event *e = &loop->evq[loop->evq_head];

		loop->evq_head = (loop->evq_head + 1) % loop->evq_cap;
		loop->evq_len--;
		if (e->conn)
			e->udata = e->conn->udata;
		else if (e->listener)
			e->udata = e->listener->udata;
		else if (e->dgram)
			e->udata = e->dgram->udata;
		ev[i] = *e;
		if (e->type == UB_EV_CLOSED)
			ub__handle_reported(loop, e->conn ? &e->conn->obj.h
						  : e->listener ? &e->listener->h
						  : &e->dgram->obj.h);
	}
	/* With an eventfd, come back for what is left (work_left()): the
	 * kernel signals the eventfd only when its list of pending task work
	 * goes from empty to not empty, and an enter runs that list in
	 * batches (since 6.13).  A call that reaped anything also asks for
	 * one more look (where the kernel lacks IORING_SQ_TASKRUN): a wakeup
	 * that finds nothing reaps nothing and stops there. */
	if (loop->evfd >= 0 && (work_left(loop) || loop->reaped != reaped0))
		(void)eventfd_write(loop->evfd, 1);
	return n;
}

int ub_loop_eventfd(ub_loop *loop)
{
	int fd, ret;

	if (!loop || loop->freeing)
		return -EINVAL;
	if (loop->evfd >= 0)
		return loop->evfd;
	fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0)
		return -errno;
	ret = io_uring_register_eventfd(&loop->ring, fd);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	loop->evfd = fd;
	return fd;
}

static void close_eventfd(ub_loop *loop)
{
	if (loop->evfd >= 0)
		close(loop->evfd); /* after the ring: it holds a reference */
	loop->evfd = -1;
}

int ub_loop_pending(const ub_loop *loop)
{
	return loop ? (int)loop->evq_len : -EINVAL;
}

int ub_loop_free(ub_loop *loop)
{
	struct ub_list *n, *next;
	int64_t deadline;
	int ret = 0;

	if (!loop)
		return -EINVAL;
	if (loop->freeing)
		return -EBUSY;
	loop->freeing = true;
	/* Events not yet returned may hold APP buffers: give them back. */
	while (loop->evq_len) {
		ub_event *e = &loop->evq[loop->evq_head];

		loop->evq_head = (loop->evq_head + 1) % loop->evq_cap;
		loop->evq_len--;
		if (e->type == UB_EV_DATA && e->buf &&
		    e->buf->state == UB_BUF_APP)
			ub__buf_recycle(e->buf);
	}
	for (n = loop->listeners.next; n != &loop->listeners; n = next) {
		next = n->next;
		ub_listener_close(ub__container_of(n, ub_listener, h.link));
	}
	for (n = loop->conns.next; n != &loop->conns; n = next) {
		next = n->next;
		ub_conn *c = ub__container_of(n, ub_conn, obj.h.link);

		if (!c->closed)
			ub__conn_fail(c, -ECANCELED);
	}
	for (n = loop->dgrams.next; n != &loop->dgrams; n = n->next) {
		ub_dgram *d = ub__container_of(n, ub_dgram, obj.h.link);

		if (!d->closed)
			ub__dgram_fail(d, -ECANCELED);
	}
	/* Reap until the kernel holds nothing of ours (bounded: cancels
	 * complete promptly; 10 s is a safety net, not an expected wait). */
	deadline = ub__now_ms() + 10000;
	for (;;) {
		bool busy = false;

		run_dirty(loop);
		for (n = loop->conns.next; n != &loop->conns; n = n->next)
			if (!ub__container_of(n, ub_conn, obj.h.link)->closed)
				busy = true;
		for (n = loop->listeners.next; n != &loop->listeners;
		     n = n->next)
			if (!ub__container_of(n, ub_listener, h.link)->closed)
				busy = true;
		for (n = loop->dgrams.next; n != &loop->dgrams; n = n->next)
			if (!ub__container_of(n, ub_dgram, obj.h.link)->closed)
				busy = true;
		if (!busy)
			break;
		if (ub__now_ms() > deadline) {
			ret = -ETIMEDOUT;
			break;
		}
		pump(loop, 1, 100);
		/* CLOSED events queued while reaping need no delivery. */
		loop->evq_len = 0;
	}
	if (ret < 0) {
		/* The kernel still holds operations we could not reap: leak
		 * their memory rather than free what it may touch.  Held
		 * objects are detached all the same (their holders must not
		 * reach the loop), but never freed. */
		struct ub_list *lists[] = { &loop->conns, &loop->listeners,
					    &loop->dgrams, &loop->zombies,
					    &loop->held };

		for (unsigned i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
			while (!ub__list_empty(lists[i]))
				ub__handle_detach(ub__container_of(
					lists[i]->next, struct ub_handle, link),
					true);
		io_uring_queue_exit(&loop->ring);
		close_eventfd(loop);
		return ret;
	}
	/* Nothing is armed any more: release it all, rings before the ring;
	 * what the application holds stays as a detached struct. */
	while (!ub__list_empty(&loop->conns)) {
		ub_conn *c = ub__container_of(loop->conns.next, ub_conn,
					      obj.h.link);

		ub__conn_free(c);
		ub__handle_detach(&c->obj.h, false);
	}
	while (!ub__list_empty(&loop->listeners)) {
		ub_listener *l = ub__container_of(loop->listeners.next,
						  ub_listener, h.link);

		ub__listener_free(l);
		ub__handle_detach(&l->h, false);
	}
	while (!ub__list_empty(&loop->dgrams)) {
		ub_dgram *d = ub__container_of(loop->dgrams.next, ub_dgram,
					       obj.h.link);

		ub__dgram_free(d);
		ub__handle_detach(&d->obj.h, false);
	}
	/* CLOSED already returned: their resources went when they closed. */
	while (!ub__list_empty(&loop->zombies))
		ub__handle_detach(ub__container_of(loop->zombies.next,
						   struct ub_handle, link),
				  false);
	while (!ub__list_empty(&loop->held))
		ub__handle_detach(ub__container_of(loop->held.next,
						   struct ub_handle, link),
				  false);
	while (!ub__list_empty(&loop->pools))
		ub__pool_destroy(ub__container_of(loop->pools.next, ub_pool,
						  link));
	io_uring_queue_exit(&loop->ring);
	close_eventfd(loop);
	free(loop->evq);
	free(loop->theap);
	free(loop->scratch);
	free(loop->free_bgid);
	free(loop);
	return ret;
}

unsigned ub_loop_features(const ub_loop *loop)
{
	return loop ? loop->features : 0;
}

int ub_loop_best_mode(const ub_loop *loop)
{
	return loop ? loop->best_mode : -EINVAL;
}

int ub_loop_fd(const ub_loop *loop)
{
	return loop ? loop->ring.ring_fd : -EINVAL;
}

int ub_loop_needs_wait(const ub_loop *loop)
{
	if (!loop)
		return -EINVAL;
	return work_left(loop);
}

static ub_pool *default_pool(ub_loop *loop, ub_pool **slot, unsigned flags,
			     int *err)
{
	if (!loop) {
		if (err)
			*err = -EINVAL;
		return NULL;
	}
	if (!*slot)
		*slot = ub_pool_new(loop, loop->pool_count, loop->pool_size,
				    flags, err);
	else if (err)
		*err = 0;
	return *slot;
}

ub_pool *ub_loop_recv_pool(ub_loop *loop, int *err)
{
	return default_pool(loop, loop ? &loop->def_rpool : NULL,
			    UB_POOL_RECV | (loop ? loop->pool_flags : 0), err);
}

ub_pool *ub_loop_send_pool(ub_loop *loop, int *err)
{
	return default_pool(loop, loop ? &loop->def_spool : NULL, 0, err);
}

const char *ub_event_name(int type)
{
	static const char *const names[] = {
		"none", "accept", "connect", "data", "sent",
		"writable", "eof", "error", "closed",
	};

	if (type < 0 || type > UB_EV_CLOSED)
		return "unknown";
	return names[type];
}

static const char *const mode_names[] = { "auto", "bundle", "ring", "serial" };

const char *ub_mode_name(int mode)
{
	if (mode < UB_MODE_AUTO || mode > UB_MODE_SERIAL)
		return "unknown";
	return mode_names[mode];
}

int ub_mode_from_name(const char *name)
{
	int i;

	if (!name)
		return -EINVAL;
	for (i = UB_MODE_AUTO; i <= UB_MODE_SERIAL; i++)
		if (!strcmp(name, mode_names[i]))
			return i;
	return -EINVAL;
}
