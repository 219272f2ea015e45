/*
 * sendq.c - the per-connection serialized send queue.
 *
 * Owns: the FIFO of QUEUED buffers of one connection and, in RING and BUNDLE
 * modes, the connection's own provided-buffer ring (its own buffer group).
 *
 * How order is kept: the kernel takes buffers from a provided-buffer ring
 * strictly from its head, so whatever is queued leaves in queue order.  The
 * core keeps exactly one send armed while anything is unsent (a second armed
 * send could interleave after a short write), and accounts completions by
 * bytes: a completion of n bytes finishes the oldest buffers covering n.
 * With MSG_WAITALL (implied by bundles) the kernel retries short writes on a
 * stream socket itself.  Yet a bundle can still complete short and take
 * more ring entries than it sent (seen on Linux 6.18 with AF_UNIX at minimum
 * socket buffers: 573440 bytes sent, all 32 entries gone, the next send
 * -ENOBUFS).  Either sign - a completion ending inside a buffer, or -ENOBUFS
 * while we still count entries in the ring - means the kernel's ring head is
 * no longer where we think.  The core then resyncs: with no send armed it
 * re-registers the ring (head back to 0) and publishes every unsent byte
 * again, the partly sent buffer from where it stopped.  The bid check on
 * every completion proves the kernel started where we expect.
 *
 * A short bundle can also end exactly on a buffer boundary after taking
 * more entries than it sent (seen after the peer's FIN): no sign at all,
 * and the next send would start past bytes never sent.  So where the kernel
 * lets us read a ring's head (Linux 6.8, IORING_REGISTER_PBUF_STATUS), the
 * final completion of every bundle send that left entries in the ring
 * compares it with our count; any difference resyncs.  One register call
 * per such bundle, not per buffer; none when the send took all we published
 * (the usual case for request/response traffic), where the head cannot
 * differ: it is at least our count and at most the tail.
 *
 * A third sign: a bundle send the kernel cancels by itself (-ECANCELED
 * while we are not aborting, see ub__sendq_complete) has committed the
 * entries it selected without sending them.  That resyncs too.
 *
 * SERIAL mode (no kernel support, or forced) keeps the same FIFO but sends
 * the head buffer with a plain send, MSG_MORE while more is queued.
 *
 * Invariants: published - completed <= entries (a ring slot is rewritten
 * only after the buffer in it has been sent); a buffer returns to its pool
 * only after the completion covering its last byte.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static bool ring_mode(const ub_conn *c)
{
	return c->mode == UB_MODE_RING || c->mode == UB_MODE_BUNDLE;
}

/* RING / BUNDLE: the connection's ring, created on first use (idle
 * connections cost no ring).  -ENOMEM or -ENOSPC. */
static int ensure_ring(ub_conn *c)
{
	struct ub_sendq *q = &c->sq;

	if (!ring_mode(c) || q->br)
		return 0;
	return ub__buf_ring_new(c->loop, q->entries, 0, &q->br, &q->br_len,
				&q->bgid);
}

/* Append a QUEUED buffer to the FIFO.  -ENOMEM or -ENOSPC (no ring). */
static int sendq_link(ub_conn *c, ub_buf *buf)
{
	struct ub_sendq *q = &c->sq;
	int ret = ensure_ring(c);

	if (ret < 0)
		return ret;
	buf->sent = 0;
	buf->next = NULL;
	if (q->tail)
		q->tail->next = buf;
	else
		q->head = buf;
	q->tail = buf;
	if (!q->unpub)
		q->unpub = buf;
	q->nbufs++;
	q->bytes += buf->len;
	return 0;
}

/* The application's handle of buf is spent from here on. */
static void mark_queued(ub_buf *buf)
{
	ub__buf_set_state(buf, UB_BUF_QUEUED);
	buf->gen++;
}

int ub__sendq_push(ub_conn *c, ub_buf *buf)
{
	int ret = ensure_ring(c); /* first: on failure buf stays APP */

	if (ret < 0)
		return ret;
	mark_queued(buf);
	return sendq_link(c, buf);
}

/*
 * The spill (UB_CONN_SOFT_WATER): what a soft-water connection accepted
 * that its send queue cannot take yet, oldest first.  Bytes are copied to
 * the heap when the send pool has no buffer or the queue is at its high
 * mark (a connection above its mark takes no more of the shared send
 * pool: the heap it spills into is the application's to bound, as with
 * asyncio's transport buffer, and pause/WRITABLE tell it when).  A buffer
 * queued while anything is spilled waits here too, so order holds.
 * ub__sendq_unspill() moves the head into the queue as it drains.
 */
struct ub_spill {
	struct ub_spill *next;
	ub_buf *buf;          /* a QUEUED buffer waiting its turn, or NULL: */
	size_t off, len, cap; /* heap bytes data[off, len) */
	unsigned char data[];
};

#define UB_SPILL_CHUNK 16384u

int ub__sendq_spill_copy(ub_conn *c, const void *data, size_t n)
{
	struct ub_sendq *q = &c->sq;
	struct ub_spill *s = q->spill_tail;

	if (!n)
		return 0;
	if (!s || s->buf || s->cap - s->len < n) {
		/* Copies in a row share chunks of UB_SPILL_CHUNK; one between
		 * two buffers (a header before a forwarded body) gets what it
		 * needs, so that heap use follows queued_bytes. */
		size_t cap = (n + 63) & ~(size_t)63;

		if (s && !s->buf && cap < UB_SPILL_CHUNK)
			cap = UB_SPILL_CHUNK;

		s = malloc(sizeof(*s) + cap);
		if (!s)
			return -ENOMEM;
		s->next = NULL;
		s->buf = NULL;
		s->off = s->len = 0;
		s->cap = cap;
		if (q->spill_tail)
			q->spill_tail->next = s;
		else
			q->spill_head = s;
		q->spill_tail = s;
	}
	memcpy(s->data + s->len, data, n);
	s->len += n;
	q->spill_bytes += n;
	return 0;
}

int ub__sendq_spill_buf(ub_conn *c, ub_buf *buf)
{
	struct ub_sendq *q = &c->sq;
	struct ub_spill *s;

	if (!(buf->pool->flags & UB_POOL_RECV)) {
		/* A send-pool buffer is copied and goes back at once: held
		 * here behind bytes that wait for a send-pool buffer it could
		 * be the one they wait for, and with the pool's other buffers
		 * held the same way nothing would ever come back.  (A receive
		 * pool's buffers are bounded by their receiver's budget.) */
		int ret = ub__sendq_spill_copy(c, ub_buf_data(buf), buf->len);

		if (ret < 0)
			return ret; /* buf stays APP */
		mark_queued(buf); /* the handle is spent, as for a queued one */
		ub__buf_recycle(buf);
		return 0;
	}
	s = malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->next = NULL;
	s->buf = buf;
	s->off = s->cap = 0;
	s->len = buf->len;
	mark_queued(buf);
	if (q->spill_tail)
		q->spill_tail->next = s;
	else
		q->spill_head = s;
	q->spill_tail = s;
	q->spill_bytes += buf->len;
	q->spill_nbufs++;
	return 0;
}

static void spill_pop(struct ub_sendq *q)
{
	struct ub_spill *s = q->spill_head;

	q->spill_head = s->next;
	if (!q->spill_head)
		q->spill_tail = NULL;
	free(s);
}

int ub__sendq_unspill(ub_conn *c)
{
	struct ub_sendq *q = &c->sq;
	ub_pool *spool = c->spool; /* a spilled copy made it exist */

	while (q->spill_head) {
		struct ub_spill *s = q->spill_head;
		int ret;

		if (s->buf) {
			ret = sendq_link(c, s->buf);
			if (ret < 0)
				return ret;
			q->spill_bytes -= s->len;
			q->spill_nbufs--;
			spill_pop(q);
			continue;
		}
		while (s->off < s->len) {
			ub_buf *b;
			size_t n = s->len - s->off;

			if (q->bytes >= c->high)
				return 0; /* the rest when it drains */
			b = spool ? ub_pool_acquire(spool, NULL) : NULL;
			if (!b)
				return 1;
			if (n > spool->size)
				n = spool->size;
			memcpy(ub_buf_data(b), s->data + s->off, n);
			b->len = (uint32_t)n;
			mark_queued(b);
			ret = sendq_link(c, b);
			if (ret < 0) {
				ub__buf_recycle(b);
				return ret;
			}
			s->off += n;
			q->spill_bytes -= n;
		}
		spill_pop(q);
	}
	return 0;
}

/* A fresh ring (head 0) holding nothing; every unsent byte to publish. */
static int resync(ub_conn *c)
{
	struct ub_sendq *q = &c->sq;

	ub__buf_ring_free(c->loop, q->br, q->br_len, q->bgid);
	q->br = NULL;
	q->published = q->completed = 0;
	q->unpub = q->head;
	q->resync = false;
	q->resyncs++;
	return ub__buf_ring_new(c->loop, q->entries, 0, &q->br, &q->br_len,
				&q->bgid);
}

/* Put as many queued buffers into the kernel ring as it has room for. */
int ub__sendq_publish(ub_conn *c)
{
	struct ub_sendq *q = &c->sq;
	unsigned mask = q->entries - 1;
	int n = 0;

	if (!ring_mode(c) || !q->br)
		return 0;
	if (q->resync) {
		int ret;

		if (c->send_armed)
			return 0; /* after its last completion */
		ret = resync(c);
		if (ret < 0)
			return ret;
	}
	while (q->unpub && q->published + (unsigned)n - q->completed < q->entries) {
		ub_buf *b = q->unpub;
		uint16_t bid = (uint16_t)((q->published + (unsigned)n) & mask);

		/* b->sent is 0 except for a buffer resync re-publishes. */
		io_uring_buf_ring_add(q->br, (char *)ub_buf_data(b) + b->sent,
				      b->len - b->sent, bid, (int)mask, n);
		n++;
		q->unpub = b->next;
	}
	if (n) {
		io_uring_buf_ring_advance(q->br, n);
		q->published += (unsigned)n;
	}
	return 0;
}

int ub__sendq_arm(ub_conn *c)
{
	struct ub_sendq *q = &c->sq;
	struct io_uring_sqe *sqe;

	if (c->send_armed || !q->head)
		return 0;
	if (ring_mode(c) && (q->resync || q->published == q->completed))
		return 0;
	sqe = ub__sqe(c->loop);
	if (!sqe)
		return -EBUSY;
	if (ring_mode(c)) {
		io_uring_prep_send(sqe, c->fd, NULL, 0,
				   MSG_NOSIGNAL | MSG_WAITALL);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = (uint16_t)q->bgid;
		if (c->mode == UB_MODE_BUNDLE)
			sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	} else {
		ub_buf *b = q->head;

		io_uring_prep_send(sqe, c->fd, (char *)ub_buf_data(b) + b->sent,
				   b->len - b->sent,
				   MSG_NOSIGNAL | (b->next ? MSG_MORE : 0));
	}
	io_uring_sqe_set_data64(sqe, ub__tag(c, UB_OP_SEND));
	c->send_armed = true;
	c->inflight++;
	return 0;
}

int ub__sendq_complete(ub_conn *c, int res, unsigned cflags)
{
	struct ub_sendq *q = &c->sq;
	unsigned left;

	if (res < 0) {
		if (res == -ECANCELED || (res == -ENOBUFS && ring_mode(c))) {
			/* Either means the kernel's ring head may be ahead of
			 * us while we still count entries in the ring:
			 * -ENOBUFS, it found the ring empty (see the top);
			 * -ECANCELED, ours when aborting (the caller tidies
			 * up), but the kernel also cancels a bundle send by
			 * itself: one retried more than 128 times
			 * (APOLL_MAX_RETRY: short sends to a slow reader)
			 * goes to io-wq, which cancels a multishot-style
			 * request if its socket is already writable (seen on
			 * Linux 6.18).  It sent nothing (a partial send
			 * reports its bytes), yet its ring entries were
			 * committed when it selected them.  Resync. */
			if (ring_mode(c) && q->published != q->completed)
				q->resync = true;
			return 0;
		}
		return res;
	}
	if (ring_mode(c) && res > 0 && (cflags & IORING_CQE_F_BUFFER)) {
		unsigned bid = cflags >> UB_CQE_BUFFER_SHIFT;

		if (bid != (q->completed & (q->entries - 1)))
			return -EIO; /* the kernel and we disagree: stop */
	}
	left = (unsigned)res;
	while (left && q->head) {
		ub_buf *b = q->head;
		unsigned take = b->len - b->sent;

		if (take > left)
			take = left;
		b->sent += take;
		left -= take;
		q->bytes -= take;
		c->bytes_sent += take;
		if (b->sent < b->len)
			break;
		q->head = b->next;
		if (!q->head)
			q->tail = NULL;
		q->nbufs--;
		if (ring_mode(c))
			q->completed++;
		ub__buf_recycle(b);
	}
	if (left)
		return -EIO; /* more bytes than were queued */
	if (ring_mode(c) && q->head && q->head->sent)
		q->resync = true; /* stopped inside a buffer (see the top) */
	else if (c->mode == UB_MODE_BUNDLE && !(cflags & IORING_CQE_F_MORE) &&
		 c->loop->has_pbuf_status && q->br &&
		 q->published != q->completed) {
		/* Only while entries are left in the ring: when the send took
		 * everything we published, the kernel's head can be neither
		 * behind our count (it sent those bytes) nor ahead of it
		 * (there is nothing past the tail), so the register call
		 * (one syscall per send in request/response traffic) can
		 * only agree. */
		unsigned head;

		if (ub__buf_ring_head(c->loop, q->bgid, &head) == 0 &&
		    (head & 0xffff) != (q->completed & 0xffff))
			q->resync = true; /* took more than it sent */
	}
	return 0;
}

/* Give every queued buffer back to its pool: nothing is armed any more. */
void ub__sendq_drop(ub_conn *c)
{
	struct ub_sendq *q = &c->sq;

	while (q->head) {
		ub_buf *b = q->head;

		q->head = b->next;
		ub__buf_recycle(b);
	}
	q->tail = q->unpub = NULL;
	q->nbufs = 0;
	q->bytes = 0;
	q->published = q->completed = 0;
	while (q->spill_head) {
		if (q->spill_head->buf)
			ub__buf_recycle(q->spill_head->buf);
		spill_pop(q);
	}
	q->spill_bytes = 0;
	q->spill_nbufs = 0;
}

void ub__sendq_destroy(ub_conn *c)
{
	struct ub_sendq *q = &c->sq;

	ub__sendq_drop(c);
	if (q->br) {
		ub__buf_ring_free(c->loop, q->br, q->br_len, q->bgid);
		q->br = NULL;
	}
}
