/*
 * internal.h - structures shared by the core's files.  Not installed.
 *
 * Ownership rules, in one place:
 *  - every ub_buf is in exactly one state (enum ub_buf_state) and, when it
 *    is FREE or QUEUED, on exactly one intrusive list (pool free list or one
 *    connection's send queue) through buf->next;
 *  - an object (conn, listener, dgram) releases what the kernel may touch
 *    only when its count of operations armed in the kernel (inflight) is
 *    zero; its struct goes only after its CLOSED event has been handed to
 *    the application and nobody holds it (handle.c);
 *  - a send ring or buffer is handed back only after the CQE of the send that
 *    may read it.
 */
#ifndef UB_INTERNAL_H
#define UB_INTERNAL_H

#include "compat.h"
#include "uringbuf.h"

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <stdint.h>

#define UB_UNUSED(x) ((void)(x))

/* ---- intrusive doubly linked list ---- */
struct ub_list {
	struct ub_list *next, *prev;
};

static inline void ub__list_init(struct ub_list *l)
{
	l->next = l->prev = l;
}
static inline bool ub__list_empty(const struct ub_list *l)
{
	return l->next == l;
}
static inline void ub__list_add_tail(struct ub_list *l, struct ub_list *n)
{
	n->prev = l->prev;
	n->next = l;
	l->prev->next = n;
	l->prev = n;
}
static inline void ub__list_del(struct ub_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->next = n->prev = n;
}
#define ub__container_of(p, type, member)                                      \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/* ---- user_data tags: object pointer | operation kind ---- */
enum ub_op {
	UB_OP_NONE = 0,
	UB_OP_RECV,
	UB_OP_SEND,
	UB_OP_CONNECT,
	UB_OP_CANCEL,   /* conn: cancel its operations */
	UB_OP_ACCEPT,
	UB_OP_TIMER,    /* a timeout: the loop's deadlines (object: the loop)
			   or a listener's back-off before re-arming accept */
	UB_OP_LCANCEL,  /* listener: cancel accept/timer */
};
#define UB_OP_MASK 7u

static inline uint64_t ub__tag(const void *obj, enum ub_op op)
{
	return (uint64_t)(uintptr_t)obj | (uint64_t)op;
}

/*
 * Object kinds.  The tag's 3 op bits are all used, and RECV, SEND and
 * CANCEL mean different work for a connection and a datagram endpoint; so
 * every object such a tag can name starts with a byte saying what it is,
 * and loop.c reads that byte (through unsigned char, which may alias
 * anything) to route the CQE.  One load of a line the handler touches
 * anyway; no alignment bits to find, and any number of kinds.
 */
enum ub_kind {
	UB_KIND_CONN = 1,
	UB_KIND_DGRAM,  /* a datagram endpoint: RECV, CANCEL */
	UB_KIND_DSEND,  /* one datagram being sent (struct ub_dsend): SEND */
	UB_KIND_LISTENER, /* its tags are ACCEPT, TIMER, LCANCEL: not routed
			     by kind; named for handle.c */
};

/* The answer of an option check (ub_*_check): err, with *reason, if the
 * caller asked for it, set to why (NULL with 0). */
static inline int ub__refuse(const char **reason, int err, const char *why)
{
	if (reason)
		*reason = why;
	return err;
}

static inline enum ub_kind ub__kind(const void *obj)
{
	return (enum ub_kind)*(const unsigned char *)obj;
}

/*
 * The head of every connection, listener and datagram endpoint: its kind
 * and its lifetime (handle.c), libuv's handle model.  life goes OPEN ->
 * REPORTED (its CLOSED was returned by ub_loop_wait) -> GONE (the next
 * wait started, or the loop was freed).  GONE and not held: freed.  GONE
 * and held: kept (on loop->held, or detached from a freed loop) until the
 * last release.
 */
enum ub_life {
	UB_LIFE_OPEN = 0,
	UB_LIFE_REPORTED,
	UB_LIFE_GONE,
};

struct ub_handle {
	uint8_t kind;        /* enum ub_kind; first, see above */
	uint8_t life;        /* enum ub_life */
	bool leak;           /* its loop was freed with operations the kernel
				did not give back: never free it */
	unsigned holds;      /* ub_*_hold() minus ub_*_release() */
	/* OPEN: loop->conns, listeners or dgrams; REPORTED: loop->zombies;
	 * GONE and held: loop->held, or itself once detached */
	struct ub_list link;
};

/* Called by loop.c: h's CLOSED was returned by this wait. */
void ub__handle_reported(ub_loop *loop, struct ub_handle *h);
/* At the start of a wait: every REPORTED object becomes GONE. */
void ub__handles_reap(ub_loop *loop);
/* ub_loop_free(): h (whose resources are released, or leaked: leak)
 * becomes GONE and forgets its loop. */
void ub__handle_detach(struct ub_handle *h, bool leak);

/* What a receive-pool buffer is charged to (ub_buf.owner): a connection or
 * a datagram endpoint, which both begin with one.  pool.c counts it. */
struct ub_obj {
	struct ub_handle h; /* first: kind at offset 0, see above */
	unsigned rheld;     /* buffers of its receive pool charged to it */
};

/* ---- buffers and pools (pool.c) ---- */
struct ub_buf {
	ub_pool *pool;
	struct ub_buf *next; /* free list or send queue */
	/* receive pool: the connection or endpoint that received it and is
	 * charged for it until it comes back (NULL: in the ring, or its
	 * receiver is gone) */
	struct ub_obj *owner;
	uint32_t len;        /* bytes of data */
	uint32_t sent;       /* bytes of it already sent (while QUEUED) */
	uint32_t gen;
	uint16_t idx;        /* a slice: its parent's */
	uint8_t state;
	uint8_t dflags;      /* UB_BUF_F_*: a received datagram (its data
				starts UB_DGRAM_HDR bytes in); cleared when
				it goes back to its pool */
	/* Incremental pools (UB_POOL_INC).  A slice is a handle of its own
	 * for cap bytes at off in its parent pool buffer (parent != NULL;
	 * never KERNEL or FREE, not counted in nstate[]).  A pool buffer
	 * counts the bytes the kernel filled while in the ring (kused) and
	 * its slices out (nslices); it is APP once the kernel moved past it
	 * with slices still out, and goes back to the ring with the last. */
	struct ub_buf *parent;
	uint32_t off, cap;
	uint32_t kused, nslices;
};

enum {
	UB_BUF_F_DGRAM = 1u << 0, /* recvmsg layout: header, address, data */
	UB_BUF_F_TRUNC = 1u << 1, /* the datagram did not fit */
};

/* Where a buffer's data starts within its slot of the pool. */
static inline unsigned ub__buf_off(const struct ub_buf *b)
{
	return (b->dflags & UB_BUF_F_DGRAM) ? UB_DGRAM_HDR : 0;
}

struct ub_pool {
	ub_loop *loop;
	unsigned count, size, flags;
	unsigned nstate[UB_BUF_NSTATES];
	char *mem;
	size_t memlen;
	struct ub_buf *bufs;
	struct ub_buf *free_head; /* send pool: LIFO of FREE buffers */
	/* receive pool: the provided-buffer ring */
	struct io_uring_buf_ring *br;
	size_t br_len;
	unsigned br_entries;
	int bgid;
	uint32_t br_tail;   /* buffers ever added (kernel sees it mod 2^16) */
	uint16_t *slot_bid; /* which buffer was added at ring position p */
	uint32_t *bid_pos;  /* ring position at which buffer b was added */
	unsigned users;     /* connections, listeners, endpoints using it */
	struct ub_list recv_waiters; /* conns starved of buffers */
	unsigned handoff;            /* KERNEL buffers handed to a waiter */
	unsigned reserve;            /* free buffers kept for conns holding
					none (conn.c, recv_allowance) */
	unsigned promised;           /* buffers armed receives may still take */
	struct ub_list throttled;    /* conns stopped by budget or share */
	struct ub_list dthrottled;   /* endpoints stopped by their share */
	unsigned wake_level;         /* wake them at this many free buffers
					no receive has promised away */
	unsigned ocount;             /* armed one-buffer receives of holders
					that found nothing unpromised
					(conn.c, arm_recv): not promised */
	bool owait;                  /* a throttled conn waits for room for
					one of those */
	struct ub_list send_waiters; /* conns refused for want of buffers */
	struct ub_list dgram_waiters;  /* endpoints whose receive waits for a
					  buffer in the ring */
	struct ub_list dsend_waiters;  /* endpoints refused for want of one */
	struct ub_list link;         /* loop->pools */
	/* UB_POOL_INC in effect: slice handles, in chunks that live as long
	 * as the pool (bindings keep pointers to handles and check gen) */
	bool inc;
	struct ub_buf *slice_free;
	struct ub_buf **chunks;
	unsigned nchunks, nslices, max_slices;
};

/* The application's to use (release, send, resize): APP, and not a pool
 * buffer of an incremental pool (only its slices are handed out; it is
 * APP while they pin it). */
static inline bool ub__buf_usable(const struct ub_buf *b)
{
	return b->state == UB_BUF_APP && (b->parent || !b->pool->inc);
}

void ub__buf_set_state(ub_buf *buf, int state);
/* Return a buffer (any state but FREE/KERNEL) to its pool. */
void ub__buf_recycle(ub_buf *buf);
/* Turn a receive CQE into APP buffers charged to owner; returns how many
 * were filled in out[].  An incremental pool: one slice (cflags says
 * whether the kernel goes on filling its pool buffer); 0 with *err set
 * when the CQE names a buffer it cannot be (-EIO) or no slice handle is
 * left (-ENOBUFS). */
unsigned ub__pool_take_recv(ub_pool *pool, unsigned bid, unsigned bytes,
			    unsigned cflags, struct ub_obj *owner,
			    ub_buf **out, unsigned max, int *err);
/* A pool buffer handed to a waiter for a plain receive got bytes: a slice
 * of it (the kernel is done with it), or NULL (no slice handle left: the
 * buffer went back). */
ub_buf *ub__pool_slice_whole(ub_buf *buf, unsigned bytes);
/* Charge a buffer the connection or endpoint received to it. */
void ub__buf_charge(ub_buf *buf, struct ub_obj *owner);
/* A receiver is going: its buffers still out are charged to nobody. */
void ub__pool_disown(ub_pool *pool, struct ub_obj *owner);
void ub__pool_destroy(ub_pool *pool);
/* KERNEL buffers that are in the ring (not handed to a waiter). */
static inline unsigned ub__pool_in_ring(const ub_pool *p)
{
	return p->nstate[UB_BUF_KERNEL] - p->handoff;
}

/* Free buffers no armed receive has promised away (conn.c, arm_recv). */
static inline unsigned ub__pool_unpromised(const ub_pool *p)
{
	unsigned in = ub__pool_in_ring(p);

	return in > p->promised ? in - p->promised : 0;
}
/* Wake the throttled connections if the pool reached their wake level. */
void ub__pool_check_wake(ub_pool *pool);
/* Whether a holder that found nothing unpromised may take one buffer
 * anyway (conn.c, arm_recv), and the end of such a receive. */
bool ub__pool_overcommit_ok(const ub_pool *p);
void ub__pool_overcommit_end(ub_pool *p);

/* Free buffers receives leave in the ring: the reserve, while others use
 * the pool (nobody else needs it otherwise). */
static inline unsigned ub__pool_recv_keep(const ub_pool *p)
{
	return p->users > 1 ? p->reserve : 0;
}

/* What the pool has for a new receive: free buffers above what receives
 * leave in the ring, once every armed receive's promise is counted. */
static inline unsigned ub__pool_recv_avail(const ub_pool *p)
{
	unsigned nfree = ub__pool_unpromised(p), keep = ub__pool_recv_keep(p);

	return nfree > keep ? nfree - keep : 0;
}

/* How many more buffers a receiver holding rheld, with a budget of cap
 * buffers, may take from p now (the share rule, conn.c's recv_allowance);
 * *need: the free buffers at which it could take one more (UINT_MAX: only
 * its own coming back can). */
unsigned ub__pool_allowance(const ub_pool *p, unsigned rheld, unsigned cap,
			    unsigned *need);
/* *promise (a receiver's, summed in p->promised) becomes n. */
void ub__pool_promise(ub_pool *p, unsigned *promise, unsigned n);

/* ---- send queue (sendq.c) ---- */
struct ub_sendq {
	struct ub_buf *head, *tail; /* QUEUED buffers, oldest first */
	struct ub_buf *unpub;       /* first buffer not yet in the kernel ring */
	unsigned nbufs;
	size_t bytes;               /* unsent bytes */
	/* RING / BUNDLE: the connection's own provided-buffer ring */
	struct io_uring_buf_ring *br;
	size_t br_len;
	unsigned entries;
	int bgid;
	uint32_t published;  /* buffers put in the ring since it was made */
	uint32_t completed;  /* of those, buffers fully sent */
	bool resync;         /* the kernel's ring head left our count */
	unsigned resyncs;    /* times that happened (diagnostics) */
	/* UB_CONN_SOFT_WATER: accepted, not in the FIFO yet (sendq.c) */
	struct ub_spill *spill_head, *spill_tail;
	size_t spill_bytes;
	unsigned spill_nbufs; /* QUEUED buffers waiting in the spill */
};

int ub__sendq_push(ub_conn *c, ub_buf *buf);
int ub__sendq_publish(ub_conn *c);
int ub__sendq_arm(ub_conn *c);
int ub__sendq_complete(ub_conn *c, int res, unsigned cflags);
void ub__sendq_drop(ub_conn *c);
/* The spill: copy n bytes, or queue a buffer, behind what is spilled.
 * -ENOMEM (nothing taken). */
int ub__sendq_spill_copy(ub_conn *c, const void *data, size_t n);
int ub__sendq_spill_buf(ub_conn *c, ub_buf *buf);
/* Move the spill into the FIFO while it is below c's high mark: 0 (done,
 * or at the mark), 1 (the send pool has no buffer: wait for one), or
 * -errno (no send ring could be made). */
int ub__sendq_unspill(ub_conn *c);
/* Bytes accepted and not yet sent: the FIFO's and the spill's. */
static inline size_t ub__sendq_queued(const struct ub_sendq *q)
{
	return q->bytes + q->spill_bytes;
}
void ub__sendq_destroy(ub_conn *c);

/* ---- connections (conn.c) ---- */
struct ub_conn {
	struct ub_obj obj;      /* first: handle (kind UB_KIND_CONN), rheld */
	ub_loop *loop;
	int fd;
	int mode;
	unsigned flags;
	void *udata;
	ub_pool *rpool, *spool;
	struct ub_sendq sq;
	size_t high, low;
	ub_conn *pipe_to, *pipe_from; /* a->pipe_to == b iff b->pipe_from == a */
	uint64_t bytes_sent, bytes_recv;
	unsigned inflight;      /* operations armed in the kernel */
	uint32_t arm_tail;      /* rpool->br_tail when the receive was armed */
	int close_res;          /* res of the CLOSED event */
	/* where an outbound connect goes: the kernel reads it until the
	 * CONNECT completes; allocated only for connects (idle accepted
	 * connections are the many) */
	struct sockaddr_storage *caddr;
	/* receive budget: buffers of rpool charged to us (ub_buf.owner,
	 * counted in obj.rheld) and the budget in bytes.  An armed receive carries a byte limit
	 * (arm_left, what it may still take); the buffers that limit could
	 * still fill are promised (promise, summed in rpool->promised), so
	 * that many receives armed at once cannot promise more than the pool
	 * has above its reserve.  rwnd: buffers the next arm asks for; it
	 * grows while arms end at their limit with full buffers (bulk). */
	unsigned rwnd, promise;
	size_t rbudget;
	uint32_t arm_left, arm_bytes, arm_bufs;
	/* starved: on rpool->recv_waiters, no receive armed.  handoff: a
	 * KERNEL buffer the pool gave us (counted in rpool->handoff) for one
	 * plain receive; direct: that receive is the one armed. */
	ub_buf *handoff;
	/* Flags, one bit each (an idle connection is mostly this struct:
	 * memory per connection, bench/RESULTS.md).
	 * throttled: on rpool->throttled, receive not re-armed (an armed one
	 * is being cancelled).  rx_done: closing, sent and shut down, nothing
	 * unread left: stop receiving. */
	bool throttled : 1;
	bool recv_armed : 1, recv_cancelling : 1, recv_started : 1,
		user_paused : 1, pipe_paused : 1, starved : 1, direct : 1,
		eof : 1;
	/* recv_over: the armed receive is one of rpool->ocount; recv_peek:
	 * it is a MSG_PEEK of peek_byte, which takes no buffer; readable: one
	 * saw data (or the end) waiting (conn.c, arm_recv) */
	bool recv_over : 1, recv_peek : 1, readable : 1;
	unsigned char peek_byte;
	bool send_armed : 1, want_writable : 1, want_spool : 1;
	bool connecting : 1, connected : 1, connect_failed : 1, closing : 1,
		aborting : 1, cancel_sent : 1, shut_req : 1, shut_done : 1,
		closed : 1, linger_rst : 1, dirty : 1;
	bool rx_done : 1, use_recv_bundle : 1;
	/* arm_slack: partly filled buffers the armed multishot receive may
	 * still end completions with (promised beside its limit's count);
	 * arm_spent: it ended more than that, so it is cancelled and armed
	 * again with a fresh promise (conn.c, arm_recv). */
	unsigned arm_slack : 2;
	bool arm_spent : 1;
	struct ub_list dirty_link; /* loop->dirty */
	struct ub_list wait_link;  /* pool recv_waiters */
	struct ub_list swait_link; /* pool send_waiters */
	struct ub_list thr_link;   /* pool throttled */
	/* deadlines (0 ms: none); the loop's timer heap holds us at tkey
	 * (<= our real deadline: activity only moves that later, and the
	 * heap looks again when tkey comes) */
	unsigned idle_ms, connect_ms, close_ms;
	int64_t last_active, t_start, t_close, tkey;
	unsigned tidx;             /* index in loop->theap + 1; 0: not in it */
	ub_listener *lsn;          /* accepted by it (counted there) */
};

void ub__conn_dirty(ub_conn *c);
void ub__conn_update(ub_conn *c);
void ub__conn_cqe(ub_conn *c, enum ub_op op, int res, unsigned cflags);
void ub__conn_fail(ub_conn *c, int err);
ub_conn *ub__conn_new(ub_loop *loop, int fd, const ub_conn_opts *opts,
		      bool connected, int *err);
void ub__conn_free(ub_conn *c);
/* When the earliest of c's deadlines is due (ms, CLOCK_MONOTONIC), or
 * INT64_MAX; and what to do when it is. */
int64_t ub__conn_deadline(const ub_conn *c);
void ub__conn_expire(ub_conn *c);

/* ---- listeners (listener.c) ---- */
struct ub_listener {
	struct ub_handle h;      /* first: kind UB_KIND_LISTENER, lifetime */
	ub_loop *loop;
	int fd;
	void *udata;
	ub_conn_opts opts;
	unsigned inflight;
	unsigned max_conns, nconns; /* ub_listener_set_max_conns() */
	bool accept_armed, accept_multi, timer_armed, closing, cancel_sent,
		closed;
	struct __kernel_timespec backoff;
	char *unix_path; /* bound by ub_listen(): unlinked on close */
	/* on loop->lstart until its first accept is armed, at the next wait,
	 * so that options set right after creation (max_conns) apply to it */
	struct ub_list start_link;
};

void ub__listener_cqe(ub_listener *l, enum ub_op op, int res, unsigned cflags);
void ub__listener_free(ub_listener *l);
/* One of l's connections is gone (CLOSED). */
void ub__listener_conn_gone(ub_listener *l);
/* Arm the first accept of listeners created since the last round. */
void ub__listeners_start(ub_loop *loop);

/* ---- datagram endpoints (dgram.c) ---- */

/* One datagram queued for sending: what sendmsg reads lives here until its
 * CQE (the tag names the slot, so completions may come in any order). */
struct ub_dsend {
	uint8_t kind;              /* UB_KIND_DSEND; first (ub__kind) */
	ub_dgram *ep;
	ub_buf *buf;
	struct ub_dsend *next;     /* free list or the not yet armed FIFO */
	struct ub_dgso *grp;       /* armed as the head of this group */
	struct msghdr mh;
	struct iovec iov;
	struct sockaddr_storage to;
};

/* Consecutive datagrams to one destination, of one size (the last may be
 * shorter), armed as one SENDMSG with UDP_SEGMENT (dgram.c, arm_sends):
 * each stays one datagram on the wire, and the kernel's send path runs
 * once for all.  The head slot's SQE points at mh. */
#define UB_GSO_MAX 64u
struct ub_dgso {
	struct ub_dgso *next;       /* the endpoint's free list */
	struct ub_dgso *all;        /* every group it made (freed with it) */
	unsigned n;
	struct ub_dsend *slot[UB_GSO_MAX]; /* in queue order, the head first */
	struct msghdr mh;
	struct iovec iov[UB_GSO_MAX];
	union {
		char buf[CMSG_SPACE(sizeof(uint16_t))];
		struct cmsghdr align;
	} cm;
};

/* A datagram of a soft-water endpoint waiting for a send slot (dgram.c):
 * a QUEUED buffer, or (buf NULL) a copy in data[] that takes a send-pool
 * buffer when its turn comes. */
struct ub_dspill {
	struct ub_dspill *next;
	ub_buf *buf;
	size_t len;
	socklen_t tolen;           /* 0: the connected peer */
	struct sockaddr_storage to;
	unsigned char data[];
};

struct ub_dgram {
	struct ub_obj obj;         /* first: handle (UB_KIND_DGRAM), rheld */
	ub_loop *loop;
	int fd, family;
	unsigned flags;
	void *udata;
	ub_pool *rpool, *spool;
	/* the multishot recvmsg's msghdr: only msg_namelen matters (room for
	 * the address in each buffer); kept while the receive is armed */
	struct msghdr rmh;
	uint32_t arm_tail;         /* rpool->br_tail when the receive was armed */
	size_t rbudget;
	/* receive share (dgram.c, recv_room): promise: the datagrams the
	 * armed receive may still deliver (summed in rpool->promised; more
	 * than the room are dropped, counted in ndropped).  recv_one: the
	 * armed receive is a one-shot recvmsg into omh (payload at the
	 * buffer's start, address in osrc: dgram.c moves both into the
	 * multishot layout) */
	unsigned promise;
	struct msghdr omh;
	struct iovec oiov;
	struct sockaddr_storage osrc;
	/* send: slots[queue_max], free ones on sfree, queued but not yet
	 * armed ones on phead..ptail, ones the socket refused (EAGAIN) on
	 * rhead..rtail until the POLLOUT wait ends; nqueued counts them all */
	struct ub_dsend *slots, *sfree, *phead, *ptail, *rhead, *rtail;
	/* soft water (UB_DGRAM_SOFT_WATER): what found no slot, or no send
	 * pool buffer, or something spilled before it, oldest first; counted
	 * in nqueued and qbytes */
	struct ub_dspill *spill_head, *spill_tail;
	/* UDP GSO (UB_FEAT_UDP_GSO, a UDP socket): groups free and made;
	 * gso_good: the largest segment size a group was sent with (a
	 * larger one goes alone in its batch first, so that a refusal can
	 * put its datagrams back in order); gso_limit: the largest that may
	 * be tried (a refused size lowers it) */
	struct ub_dgso *gfree, *gall;
	unsigned gso_good, gso_limit;
	unsigned nslots, nqueued;
	size_t qbytes, high, low;
	uint64_t nrecv, nsent, nobufs, nsendops, ndropped;
	unsigned inflight;         /* operations armed in the kernel */
	unsigned sends_armed;      /* of them sends: one linked chain at most */
	int close_res;
	bool recv_armed, recv_cancelling, recv_waiting, throttled,
		recv_started, user_paused, want_writable, want_spool,
		connected, closing, cancel_sent, closed, dirty, poll_armed,
		gso, recv_one;
	char *unix_path;           /* bound by ub_dgram_open(): unlinked */
	struct ub_list dirty_link; /* loop->ddirty */
	struct ub_list wait_link;  /* rpool->dgram_waiters */
	struct ub_list swait_link; /* spool->dsend_waiters */
	struct ub_list thr_link;   /* rpool->dthrottled */
};

void ub__dgram_dirty(ub_dgram *d);
void ub__dgram_update(ub_dgram *d);
void ub__dgram_cqe(ub_dgram *d, enum ub_op op, int res, unsigned cflags);
void ub__dgram_send_cqe(struct ub_dsend *s, int res);
/* Close now (ub_loop_free()): as ub_dgram_close(), no events wanted. */
void ub__dgram_fail(ub_dgram *d, int err);
void ub__dgram_free(ub_dgram *d);

/* ---- loop (loop.c) and probe (probe.c) ---- */
#define UB_NFEAT 9

struct ub_loop {
	struct io_uring ring;
	unsigned features;
	const char *reason[UB_NFEAT];
	/* "mode ring unavailable: <reason>" ([0]) and bundle's ([1]): made
	 * once by the probe, so that ub_conn_opts_check() can name the field
	 * and the kernel's reason in a string that lives as long as the loop */
	char mode_why[2][192];
	int best_mode;
	unsigned pool_count, pool_size, pool_flags;
	ub_pool *def_rpool, *def_spool;
	/* event queue: a growable ring of events */
	ub_event *evq;
	unsigned evq_head, evq_len, evq_cap;
	unsigned nlive; /* conns + listeners whose CLOSED is still to come */
	struct ub_list conns, listeners, pools, dirty;
	struct ub_list lstart; /* listeners whose accept is still to arm */
	struct ub_list later; /* dirty, but only from the next round on */
	/* objects (any kind) whose CLOSED event went out: GONE at the next
	 * wait; GONE objects still held (handle.c) */
	struct ub_list zombies, held;
	/* datagram endpoints: live and dirty (updated in run_dirty like
	 * connections) */
	struct ub_list dgrams, ddirty, dlater;
	/* buffer group ids */
	uint16_t *free_bgid;
	unsigned nfree_bgid, cap_free_bgid;
	unsigned next_bgid;
	bool has_pbuf_status; /* ub__buf_ring_head() works here */
	/* room for every buffer of the largest pool (one recv bundle) */
	ub_buf **scratch;
	unsigned scratch_cap;
	bool freeing;
	int evfd; /* ub_loop_eventfd(), or -1 */
	unsigned long reaped; /* completions processed, ever */
	/* deadlines: a min-heap of connections by tkey, and one timeout
	 * armed in the kernel for the earliest (timer_at) */
	ub_conn **theap;
	unsigned theap_len, theap_cap;
	bool timer_armed;
	int64_t timer_at;
	struct __kernel_timespec tts;
	int64_t now; /* ms, read once per batch of completions */
};

int ub__probe(ub_loop *loop, unsigned entries, unsigned disable);
/* The loop's default receive pool is (or will be made) incremental. */
static inline bool ub__loop_rpool_inc(const ub_loop *loop)
{
	return (loop->pool_flags & UB_POOL_INC) &&
	       (loop->features & UB_FEAT_PBUF_INC);
}
int64_t ub__now_ms(void);
/* c's deadline may have moved earlier (or gone): put it right in the
 * heap.  A later deadline needs nothing (the heap looks again at tkey). */
void ub__timer_update(ub_conn *c);
void ub__timer_remove(ub_conn *c);
/* An address ub_listen()/ub_conn_connect() take: INET, INET6 or UNIX, with
 * a length that fits (addr.c). */
bool ub__addr_ok(const struct sockaddr *sa, socklen_t len);
/* The kernel's head of a provided-buffer ring (entries consumed, mod 2^16),
 * or -errno (-EINVAL before Linux 6.8). */
int ub__buf_ring_head(ub_loop *loop, int bgid, unsigned *head);
struct io_uring_sqe *ub__sqe(ub_loop *loop);
int ub__emit(ub_loop *loop, int type, int res, ub_conn *c, ub_listener *l,
	     ub_buf *buf);
int ub__emit_dgram(ub_loop *loop, int type, int res, ub_dgram *d,
		   ub_buf *buf);
/* Room for n more events beyond the CLOSED of every live object; -ENOMEM. */
int ub__evq_reserve(ub_loop *loop, unsigned n);
int ub__bgid_alloc(ub_loop *loop);
void ub__bgid_free(ub_loop *loop, int bgid);
/* mmap'ed, registered provided-buffer ring; -errno on failure. */
int ub__buf_ring_new(ub_loop *loop, unsigned entries, unsigned flags,
		     struct io_uring_buf_ring **br, size_t *len, int *bgid);
void ub__buf_ring_free(ub_loop *loop, struct io_uring_buf_ring *br,
		       size_t len, int bgid);

#endif /* UB_INTERNAL_H */
