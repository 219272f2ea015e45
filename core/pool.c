/*
 * pool.c - buffer pools and the owner state of every buffer.
 *
 * Owns: the pool mapping, the per-buffer descriptors, the free list of a send
 * pool and the provided-buffer ring of a receive pool.
 * Invariants: nstate[] always sums to count; a KERNEL buffer is in the ring
 * exactly once; only an APP buffer can be released or queued; a buffer's
 * memory is never handed out while the kernel may write it (KERNEL) or read
 * it (QUEUED); a receive-pool buffer out of the ring (APP, QUEUED, or
 * handed to a waiter and filled) is charged to the connection that received
 * it (ub_buf.owner, counted in its rheld) until it comes back, so that a
 * connection's budget counts it wherever it went; a datagram endpoint's
 * buffers are charged the same way (dgram.c).  A received datagram's data
 * starts UB_DGRAM_HDR bytes into its slot (ub_buf.dflags), after the
 * kernel's recvmsg header and the source address.
 * An incremental pool (UB_POOL_INC) hands out slices instead: handles of
 * their own for the bytes of one completion, charged like buffers; their
 * pool buffer stays KERNEL while the kernel fills it, becomes APP when the
 * kernel moves past it, and goes back to the ring with its last slice.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define UB_POOL_MAX_COUNT 32768u
#define UB_POOL_MAX_SIZE (1u << 30)
#define UB_POOL_MAX_BYTES (64ull << 30)
/* Incremental pools: slice handles are made 256 at a time, at most 64 per
 * pool buffer and no fewer than 65536 in all (uringbuf.h).  Each
 * connection holds at most its budget in slices (plus what completions
 * already on their way bring); the cap bounds what a pool can take
 * whatever the application holds. */
#define UB_SLICE_CHUNK 256u
#define UB_SLICES_PER_BUF 64u
#define UB_SLICES_MIN 65536u

void ub__buf_set_state(ub_buf *b, int state)
{
	if (!b->parent) { /* slices are not counted there */
		b->pool->nstate[b->state]--;
		b->pool->nstate[state]++;
	}
	b->state = (uint8_t)state;
}

/* Publish one buffer to the receive ring. */
static void ring_add(ub_pool *p, ub_buf *b)
{
	unsigned mask = p->br_entries - 1;
	unsigned slot = p->br_tail & mask;

	b->kused = 0;
	io_uring_buf_ring_add(p->br, p->mem + (size_t)b->idx * p->size,
			      p->size, b->idx, (int)mask, 0);
	p->slot_bid[slot] = b->idx;
	p->bid_pos[b->idx] = p->br_tail;
	p->br_tail++;
	io_uring_buf_ring_advance(p->br, 1);
}

/* Buffers came back: senders refused for want of one may go on. */
static void wake_senders(ub_pool *p)
{
	while (!ub__list_empty(&p->dsend_waiters)) {
		ub_dgram *d = ub__container_of(p->dsend_waiters.next, ub_dgram,
					       swait_link);

		ub__list_del(&d->swait_link);
		d->want_spool = false;
		/* Soft water refuses nothing: it waited to move what waits
		 * (dgram.c), and is owed a WRITABLE only if above its mark */
		if (!(d->flags & UB_DGRAM_SOFT_WATER))
			d->want_writable = true;
		ub__dgram_dirty(d);
	}
	while (!ub__list_empty(&p->send_waiters)) {
		ub_conn *c = ub__container_of(p->send_waiters.next, ub_conn,
					      swait_link);

		ub__list_del(&c->swait_link);
		c->want_spool = false;
		/* Refused: owed a WRITABLE.  Soft water refuses nothing: it
		 * waited to move its spill, and is owed one only if it went
		 * above its mark (queue_buf says so then). */
		if (!(c->flags & UB_CONN_SOFT_WATER))
			c->want_writable = true;
		ub__conn_dirty(c);
	}
}

void ub__buf_charge(ub_buf *b, struct ub_obj *owner)
{
	b->owner = owner;
	owner->rheld++;
}

/* Dirty every throttled connection and endpoint of the pool (it has
 * room again). */
static void wake_throttled(ub_pool *p)
{
	p->wake_level = UINT_MAX; /* those still stopped set it again */
	p->owait = false;
	while (!ub__list_empty(&p->throttled)) {
		ub_conn *c = ub__container_of(p->throttled.next, ub_conn,
					      thr_link);

		ub__list_del(&c->thr_link);
		c->throttled = false;
		ub__conn_dirty(c);
	}
	while (!ub__list_empty(&p->dthrottled)) {
		ub_dgram *d = ub__container_of(p->dthrottled.next, ub_dgram,
					       thr_link);

		ub__list_del(&d->thr_link);
		ub__dgram_dirty(d); /* its update decides again */
	}
}

/*
 * The receiver's budget (cap buffers); and, while others use the pool, at
 * most half of what is free above the reserve: as the pool fills, those
 * holding much stop first (with K holders the free part settles near
 * 2/(K+2) of it instead of running out), and one holding nothing may
 * always take one, from the reserve if need be, so a new or quiet
 * receiver finds a buffer.
 */
unsigned ub__pool_allowance(const ub_pool *p, unsigned rheld, unsigned cap,
			    unsigned *need)
{
	*need = UINT_MAX;
	if (p->users > 1) {
		unsigned in = ub__pool_in_ring(p);
		unsigned half = in > p->reserve ? (in - p->reserve) / 2 : 0;

		if (half < 1)
			half = 1;
		if (half < cap) {
			cap = half;
			*need = p->reserve + 2 * (rheld + 1);
		}
	}
	return rheld < cap ? cap - rheld : 0;
}

void ub__pool_promise(ub_pool *p, unsigned *promise, unsigned n)
{
	bool less = n < *promise;

	p->promised = p->promised - *promise + n;
	*promise = n;
	/* (a smaller promise changes nothing an over-commit waiter waits
	 * for: ocount and the ring) */
	if (less && p->wake_level != UINT_MAX)
		ub__pool_check_wake(p); /* a receiver may have stopped for it */
}

void ub__pool_check_wake(ub_pool *p)
{
	if (ub__pool_unpromised(p) >= p->wake_level ||
	    (p->owait && ub__pool_overcommit_ok(p)))
		wake_throttled(p);
}

/*
 * Promises of receives that stay idle never end (a client that sent half
 * a request and waits), so holders cannot always wait for a buffer nobody
 * was promised: one may take a single buffer anyway while the ring has
 * more than the reserve beyond every such take, and at most a sixteenth
 * of the reserve of them are armed at once (conn.c arms them only on a
 * socket with data waiting, so they end at once, and one at a time is
 * enough to go on).  What they take from others' promises comes out of
 * the reserve in the worst case.  With a quarter, 64 writers that never
 * read (Lua's isolation test, bundle mode, under ASan) left 207-210 of
 * the reserve's 256 in the ring and once 116; with a sixteenth, 494-510.
 */
bool ub__pool_overcommit_ok(const ub_pool *p)
{
	unsigned cap = p->reserve / 16 ? p->reserve / 16 : 1;

	return p->ocount < cap &&
	       ub__pool_in_ring(p) > ub__pool_recv_keep(p) + p->ocount;
}

void ub__pool_overcommit_end(ub_pool *p)
{
	p->ocount--;
	ub__pool_check_wake(p);
}

void ub__pool_disown(ub_pool *p, struct ub_obj *owner)
{
	unsigned i;

	/* Rare (the application or another connection still holds what
	 * this one received when it goes) and bounded by the pool. */
	for (i = 0; i < p->count && owner->rheld; i++)
		if (p->bufs[i].owner == owner) {
			p->bufs[i].owner = NULL;
			owner->rheld--;
		}
	for (i = 0; i < p->nchunks * UB_SLICE_CHUNK && owner->rheld; i++) {
		ub_buf *s = &p->chunks[i / UB_SLICE_CHUNK][i % UB_SLICE_CHUNK];

		if (s->owner == owner) {
			s->owner = NULL;
			owner->rheld--;
		}
	}
}

/* b (a buffer or slice of a receive pool) is back: its receiver, charged
 * for it, may take one more; let it look. */
static void uncharge(ub_buf *b)
{
	struct ub_obj *o = b->owner;

	if (!o)
		return;
	b->owner = NULL;
	o->rheld--;
	if (o->h.kind == UB_KIND_DGRAM) {
		ub_dgram *d = ub__container_of(o, ub_dgram, obj);

		if (d->throttled)
			ub__dgram_dirty(d);
	} else {
		ub_conn *c = ub__container_of(o, ub_conn, obj);

		if (c->throttled)
			ub__conn_dirty(c);
	}
}

/* A slice handle from the free list, or a new chunk of them; NULL at the
 * pool's cap or out of memory. */
static ub_buf *slice_get(ub_pool *p)
{
	ub_buf *s = p->slice_free;

	if (p->nslices >= p->max_slices)
		return NULL;
	if (!s) {
		ub_buf **cs, *chunk;
		unsigned i;

		cs = realloc(p->chunks, (p->nchunks + 1) * sizeof(*cs));
		if (!cs)
			return NULL;
		p->chunks = cs;
		chunk = calloc(UB_SLICE_CHUNK, sizeof(*chunk));
		if (!chunk)
			return NULL;
		cs[p->nchunks++] = chunk;
		for (i = UB_SLICE_CHUNK; i-- > 0;) {
			chunk[i].pool = p;
			chunk[i].state = UB_BUF_FREE;
			chunk[i].next = p->slice_free;
			p->slice_free = &chunk[i];
		}
		s = p->slice_free;
	}
	p->slice_free = s->next;
	s->next = NULL;
	return s;
}

/* A slice of b's next len bytes, APP; NULL if no handle is left. */
static ub_buf *slice_cut(ub_buf *b, unsigned len)
{
	ub_pool *p = b->pool;
	ub_buf *s = slice_get(p);

	if (!s)
		return NULL;
	s->parent = b;
	s->idx = b->idx;
	s->off = b->kused;
	s->cap = s->len = len;
	s->sent = 0;
	s->state = UB_BUF_APP;
	b->nslices++;
	p->nslices++;
	return s;
}

/* The kernel moved past b (it is out of the ring): back with its last
 * slice, now if it has none out. */
static void slice_parent_done(ub_buf *b)
{
	b->kused = 0;
	ub__buf_set_state(b, UB_BUF_APP);
	if (b->nslices == 0)
		ub__buf_recycle(b);
}

static void slice_put(ub_buf *s)
{
	ub_pool *p = s->pool;
	ub_buf *b = s->parent;

	uncharge(s);
	s->gen++; /* stale handles of it are refused from here on */
	s->len = s->sent = s->off = s->cap = 0;
	s->parent = NULL;
	s->state = UB_BUF_FREE;
	s->next = p->slice_free;
	p->slice_free = s;
	p->nslices--;
	if (--b->nslices == 0 && b->state == UB_BUF_APP)
		ub__buf_recycle(b);
}

void ub__buf_recycle(ub_buf *b)
{
	ub_pool *p = b->pool;

	if (b->parent) {
		slice_put(b);
		return;
	}
	b->gen++;
	b->len = 0;
	b->sent = 0;
	b->dflags = 0;
	b->next = NULL;
	if (p->flags & UB_POOL_RECV) {
		uncharge(b);
		ub__buf_set_state(b, UB_BUF_KERNEL);
		if (!ub__list_empty(&p->recv_waiters)) {
			/*
			 * Someone starved: hand this buffer to the oldest
			 * waiter for a plain receive into it, instead of the
			 * ring where any armed multishot receive would take
			 * it first.  Under pressure that makes receiving
			 * round-robin, and no receive is armed to fail with
			 * -ENOBUFS (our count of ring buffers lags behind
			 * receives whose CQEs are still on their way, so
			 * waking receivers by that count makes storms).
			 */
			ub_conn *c = ub__container_of(p->recv_waiters.next,
						      ub_conn, wait_link);

			ub__list_del(&c->wait_link);
			c->starved = false;
			c->handoff = b;
			p->handoff++;
			ub__conn_dirty(c);
		} else {
			ring_add(p, b);
			/* A receive that ended for want of a buffer goes
			 * again (dgram.c). */
			while (!ub__list_empty(&p->dgram_waiters)) {
				ub_dgram *d = ub__container_of(
					p->dgram_waiters.next, ub_dgram,
					wait_link);

				ub__list_del(&d->wait_link);
				d->recv_waiting = false;
				ub__dgram_dirty(d);
			}
			/* Enough free again for a connection stopped at its
			 * share (conn.c, recv_allowance) to take one more. */
			ub__pool_check_wake(p);
		}
	} else {
		ub__buf_set_state(b, UB_BUF_FREE);
		b->next = p->free_head;
		p->free_head = b;
		/* connections and datagram endpoints refused for want of
		 * a buffer wait on their own lists (found by the fuzzer:
		 * endpoints alone were never woken) */
		if (!ub__list_empty(&p->send_waiters) ||
		    !ub__list_empty(&p->dsend_waiters))
			wake_senders(p);
	}
}

/* A completion of an incremental pool: bytes (0: none, but the kernel
 * may have moved past the buffer) of buffer bid. */
static unsigned take_slice(ub_pool *p, unsigned bid, unsigned bytes,
			   unsigned cflags, struct ub_obj *owner, ub_buf **out,
			   int *err)
{
	ub_buf *b, *s = NULL;

	if (bid >= p->count || p->bufs[bid].state != UB_BUF_KERNEL ||
	    bytes > p->size - p->bufs[bid].kused) {
		*err = -EIO; /* not a buffer the ring holds */
		return 0;
	}
	b = &p->bufs[bid];
	if (bytes) {
		s = slice_cut(b, bytes);
		if (s)
			ub__buf_charge(s, owner);
		b->kused += bytes;
	}
	if (!(cflags & IORING_CQE_F_BUF_MORE))
		slice_parent_done(b);
	if (!s) {
		*err = bytes ? -ENOBUFS : 0;
		return 0;
	}
	out[0] = s;
	return 1;
}

ub_buf *ub__pool_slice_whole(ub_buf *b, unsigned bytes)
{
	ub_buf *s;

	b->kused = 0;
	s = slice_cut(b, bytes);

	slice_parent_done(b);
	return s;
}

unsigned ub__pool_take_recv(ub_pool *p, unsigned bid, unsigned bytes,
			    unsigned cflags, struct ub_obj *owner,
			    ub_buf **out, unsigned max, int *err)
{
	unsigned mask = p->br_entries - 1;
	unsigned n = 0;
	uint32_t pos;

	*err = 0;
	if (p->inc) {
		if (!max && bytes)
			return 0;
		return take_slice(p, bid, bytes, cflags, owner, out, err);
	}
	if (bid >= p->count || p->bufs[bid].state != UB_BUF_KERNEL) {
		*err = -EIO;
		return 0;
	}
	/* A bundle takes consecutive ring entries starting at bid's. */
	pos = p->bid_pos[bid];
	while (bytes > 0 && n < max) {
		ub_buf *b = &p->bufs[p->slot_bid[(pos + n) & mask]];
		unsigned len = bytes < p->size ? bytes : p->size;

		if (b->state != UB_BUF_KERNEL)
			break;
		ub__buf_set_state(b, UB_BUF_APP);
		ub__buf_charge(b, owner);
		b->len = len;
		b->sent = 0;
		out[n++] = b;
		bytes -= len;
	}
	return n;
}

int ub__buf_ring_new(ub_loop *loop, unsigned entries, unsigned flags,
		     struct io_uring_buf_ring **brp, size_t *lenp, int *bgidp)
{
	struct io_uring_buf_reg reg;
	size_t len = (size_t)entries * sizeof(struct io_uring_buf);
	long pg = sysconf(_SC_PAGESIZE);
	void *mem;
	int bgid, ret;

	len = (len + (size_t)pg - 1) & ~((size_t)pg - 1);
	bgid = ub__bgid_alloc(loop);
	if (bgid < 0)
		return bgid;
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (mem == MAP_FAILED) {
		ub__bgid_free(loop, bgid);
		return -ENOMEM;
	}
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)mem;
	reg.ring_entries = entries;
	reg.bgid = (uint16_t)bgid;
	reg.pad = (uint16_t)flags; /* the kernel's "flags" field */
	ret = io_uring_register_buf_ring(&loop->ring, &reg, 0);
	if (ret < 0) {
		munmap(mem, len);
		ub__bgid_free(loop, bgid);
		return ret;
	}
	io_uring_buf_ring_init(mem);
	*brp = mem;
	*lenp = len;
	*bgidp = bgid;
	return 0;
}

void ub__buf_ring_free(ub_loop *loop, struct io_uring_buf_ring *br, size_t len,
		       int bgid)
{
	if (!br)
		return;
	io_uring_unregister_buf_ring(&loop->ring, bgid);
	munmap(br, len);
	ub__bgid_free(loop, bgid);
}

static unsigned pow2_at_least(unsigned n)
{
	unsigned p = 1;

	while (p < n)
		p <<= 1;
	return p;
}

int ub_pool_check(unsigned count, unsigned size, unsigned flags,
		  const char **reason)
{
	if (count == 0 || count > UB_POOL_MAX_COUNT)
		return ub__refuse(reason, -EINVAL,
				  "count must be 1..32768 buffers");
	if (size == 0 || size > UB_POOL_MAX_SIZE)
		return ub__refuse(reason, -EINVAL,
				  "size must be 1 byte..1 GiB");
	if ((unsigned long long)count * size > UB_POOL_MAX_BYTES)
		return ub__refuse(reason, -EINVAL,
				  "count * size must be at most 64 GiB");
	if (flags & ~(unsigned)(UB_POOL_RECV | UB_POOL_INC))
		return ub__refuse(reason, -EINVAL,
				  "flags has a bit that is no UB_POOL_* flag");
	if ((flags & UB_POOL_INC) && !(flags & UB_POOL_RECV))
		return ub__refuse(reason, -EINVAL,
				  "UB_POOL_INC is for receive pools: it needs "
				  "UB_POOL_RECV");
	return ub__refuse(reason, 0, NULL);
}

ub_pool *ub_pool_new(ub_loop *loop, unsigned count, unsigned size,
		     unsigned flags, int *err)
{
	ub_pool *p;
	long pg = sysconf(_SC_PAGESIZE);
	int ret = -ENOMEM;
	unsigned i;

	if (!loop) {
		ret = -EINVAL;
		goto fail0;
	}
	ret = ub_pool_check(count, size, flags, NULL);
	if (ret < 0)
		goto fail0;
	ret = -ENOMEM;
	if (loop->scratch_cap < count) {
		ub_buf **sc = realloc(loop->scratch, count * sizeof(*sc));

		if (!sc)
			goto fail0;
		loop->scratch = sc;
		loop->scratch_cap = count;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		goto fail0;
	p->loop = loop;
	p->count = count;
	p->size = size;
	/* Without the kernel's support: a plain receive pool, and its flags
	 * say so (uringbuf.h). */
	if ((flags & UB_POOL_INC) && !(loop->features & UB_FEAT_PBUF_INC))
		flags &= ~(unsigned)UB_POOL_INC;
	p->flags = flags;
	p->inc = flags & UB_POOL_INC;
	p->max_slices = count * UB_SLICES_PER_BUF;
	if (p->max_slices < UB_SLICES_MIN)
		p->max_slices = UB_SLICES_MIN;
	p->bgid = -1;
	ub__list_init(&p->recv_waiters);
	ub__list_init(&p->send_waiters);
	ub__list_init(&p->dgram_waiters);
	ub__list_init(&p->dsend_waiters);
	ub__list_init(&p->throttled);
	ub__list_init(&p->dthrottled);
	p->wake_level = UINT_MAX;
	/* A quarter of a receive pool is kept for connections that hold
	 * nothing (conn.c, recv_allowance()). */
	if (flags & UB_POOL_RECV)
		p->reserve = count / 4;
	p->memlen = ((size_t)count * size + (size_t)pg - 1) & ~((size_t)pg - 1);
	p->mem = mmap(NULL, p->memlen, PROT_READ | PROT_WRITE,
		      MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (p->mem == MAP_FAILED) {
		p->mem = NULL;
		goto fail;
	}
	p->bufs = calloc(count, sizeof(*p->bufs));
	if (!p->bufs)
		goto fail;
	for (i = 0; i < count; i++) {
		p->bufs[i].pool = p;
		p->bufs[i].idx = (uint16_t)i;
	}
	if (flags & UB_POOL_RECV) {
		p->br_entries = pow2_at_least(count);
		p->slot_bid = calloc(p->br_entries, sizeof(*p->slot_bid));
		p->bid_pos = calloc(count, sizeof(*p->bid_pos));
		if (!p->slot_bid || !p->bid_pos)
			goto fail;
		ret = ub__buf_ring_new(loop, p->br_entries,
				       p->inc ? IOU_PBUF_RING_INC : 0, &p->br,
				       &p->br_len, &p->bgid);
		if (ret < 0)
			goto fail;
		p->nstate[UB_BUF_FREE] = count; /* set_state moves them */
		for (i = 0; i < count; i++) {
			ub__buf_set_state(&p->bufs[i], UB_BUF_KERNEL);
			ring_add(p, &p->bufs[i]);
		}
	} else {
		p->nstate[UB_BUF_FREE] = count;
		for (i = count; i-- > 0;) {
			p->bufs[i].next = p->free_head;
			p->free_head = &p->bufs[i];
		}
	}
	ub__list_add_tail(&loop->pools, &p->link);
	if (err)
		*err = 0;
	return p;
fail:
	ub__pool_destroy(p);
fail0:
	if (err)
		*err = ret;
	return NULL;
}

/* Unconditional teardown: the caller made sure the kernel holds nothing. */
void ub__pool_destroy(ub_pool *p)
{
	if (p->br)
		ub__buf_ring_free(p->loop, p->br, p->br_len, p->bgid);
	if (p->mem)
		munmap(p->mem, p->memlen);
	if (p->link.next)
		ub__list_del(&p->link);
	free(p->slot_bid);
	free(p->bid_pos);
	free(p->bufs);
	while (p->nchunks)
		free(p->chunks[--p->nchunks]);
	free(p->chunks);
	free(p);
}

int ub_pool_free(ub_pool *p)
{
	if (!p)
		return -EINVAL;
	if (p->nstate[UB_BUF_APP] || p->nstate[UB_BUF_QUEUED] || p->nslices ||
	    p->users)
		return -EBUSY;
	if (p == p->loop->def_rpool)
		p->loop->def_rpool = NULL;
	if (p == p->loop->def_spool)
		p->loop->def_spool = NULL;
	ub__pool_destroy(p);
	return 0;
}

ub_buf *ub_pool_acquire(ub_pool *p, int *err)
{
	ub_buf *b;
	int ret;

	if (!p || (p->flags & UB_POOL_RECV)) {
		ret = -EINVAL;
		goto fail;
	}
	b = p->free_head;
	if (!b) {
		ret = -ENOBUFS;
		goto fail;
	}
	p->free_head = b->next;
	b->next = NULL;
	b->len = 0;
	ub__buf_set_state(b, UB_BUF_APP);
	if (err)
		*err = 0;
	return b;
fail:
	if (err)
		*err = ret;
	return NULL;
}

int ub_buf_release(ub_buf *b)
{
	if (!b || !ub__buf_usable(b))
		return -EINVAL;
	ub__buf_recycle(b);
	return 0;
}

unsigned ub_pool_count(const ub_pool *p) { return p ? p->count : 0; }
unsigned ub_pool_buf_size(const ub_pool *p) { return p ? p->size : 0; }
unsigned ub_pool_flags(const ub_pool *p) { return p ? p->flags : 0; }
void *ub_pool_base(const ub_pool *p) { return p ? p->mem : NULL; }
size_t ub_pool_bytes(const ub_pool *p) { return p ? (size_t)p->count * p->size : 0; }
ub_loop *ub_pool_loop(const ub_pool *p) { return p ? p->loop : NULL; }

unsigned ub_pool_reserve(const ub_pool *p) { return p ? p->reserve : 0; }

unsigned ub_pool_count_state(const ub_pool *p, int state)
{
	if (!p || state < 0 || state >= UB_BUF_NSTATES)
		return 0;
	return p->nstate[state];
}

ub_buf *ub_pool_buf(ub_pool *p, unsigned index)
{
	if (!p || index >= p->count)
		return NULL;
	return &p->bufs[index];
}

unsigned ub_pool_slices(const ub_pool *p) { return p ? p->nslices : 0; }

void *ub_buf_data(const ub_buf *b)
{
	if (!b)
		return NULL;
	return b->pool->mem + (size_t)b->idx * b->pool->size +
	       (b->parent ? b->off : ub__buf_off(b));
}
size_t ub_buf_len(const ub_buf *b) { return b ? b->len : 0; }
size_t ub_buf_capacity(const ub_buf *b)
{
	if (!b)
		return 0;
	return b->parent ? b->cap : b->pool->size - ub__buf_off(b);
}
int ub_buf_state(const ub_buf *b) { return b ? b->state : -EINVAL; }
unsigned ub_buf_index(const ub_buf *b) { return b ? b->idx : 0; }
ub_pool *ub_buf_pool(const ub_buf *b) { return b ? b->pool : NULL; }
uint32_t ub_buf_gen(const ub_buf *b) { return b ? b->gen : 0; }

int ub_buf_set_len(ub_buf *b, size_t len)
{
	if (!b || !ub__buf_usable(b) || len > ub_buf_capacity(b))
		return -EINVAL;
	b->len = (uint32_t)len;
	return 0;
}
