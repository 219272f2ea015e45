/*
 * uringbuf.h - provided-buffer serialized send queues and multishot
 * send/receive over io_uring.
 *
 * Model (see uringbuf(7) / README):
 *   ub_loop      one io_uring, single-threaded; produces events in batches.
 *   ub_pool      N buffers of S bytes in one page-aligned mapping.  A RECV
 *                pool is a provided-buffer ring the kernel receives into; a
 *                SEND pool hands buffers out with ub_pool_acquire().
 *   ub_buf       one buffer of a pool.  Exactly one owner at a time:
 *                KERNEL (in a receive ring), FREE (idle in a send pool),
 *                APP (handed to the application), QUEUED (in a send queue).
 *   ub_conn      one stream socket: multishot receive on a pool, and a send
 *                queue drained in order by the kernel (BUNDLE, RING or SERIAL).
 *   ub_listener  multishot accept; accepted sockets become connections.
 *   ub_dgram     one datagram socket (UDP, Unix): multishot recvmsg on a
 *                pool, each datagram with its source address in one buffer.
 *
 * Lifetime (libuv's handle model): a connection, listener or datagram
 * endpoint is freed when the ub_loop_wait() call after the one that
 * returned its UB_EV_CLOSED event starts.  A binding or an application that
 * keeps pointers to them takes a hold (ub_conn_hold(), ub_listener_hold(),
 * ub_dgram_hold()): a held object stays allocated past that until its last
 * release, and meanwhile ub_*_is_closed() says 1 and every operation fails
 * with its documented error, never touching freed memory (a loop freed
 * under it included).
 *
 * Conventions: functions return 0 (or a count) on success and a negative
 * errno on failure; constructors return NULL and store -errno in *err.  A call
 * that fails changes nothing and produces no event.  The library never prints,
 * never exits, never sets errno for the caller, and is not thread-safe: use
 * one loop per thread.  The checks (ub_*_check) are what the constructors
 * and setters apply to their options, with a reason: a binding raises the
 * core's words instead of restating its rules.
 *
 * Minimum kernel: 5.19 (provided-buffer rings).  Multishot recv needs 6.0
 * (else one-shot receives, re-armed), SINGLE_ISSUER|DEFER_TASKRUN 6.1.
 * BUNDLE needs 6.10 (IORING_FEAT_RECVSEND_BUNDLE); RING needs send buffer
 * select (6.10).  Older kernels fall back to SERIAL with a stated reason.
 * Every function has a man page (man 3 <name>); errors listed here and
 * there agree (man/check-pages.py checks it).
 */
#ifndef URINGBUF_H
#define URINGBUF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(UB_STATIC_BUILD)
#define UB_EXTERN __attribute__((visibility("default")))
#else
#define UB_EXTERN
#endif

#define UB_VERSION_MAJOR 0
#define UB_VERSION_MINOR 1
#define UB_VERSION_PATCH 0

typedef struct ub_loop ub_loop;
typedef struct ub_pool ub_pool;
typedef struct ub_buf ub_buf;
typedef struct ub_conn ub_conn;
typedef struct ub_listener ub_listener;
typedef struct ub_dgram ub_dgram; /* datagram endpoint, see "datagrams" */

/* ---- events ------------------------------------------------------------ */

enum ub_event_type {
	UB_EV_NONE = 0,
	UB_EV_ACCEPT,   /* conn: new connection, listener: where; res: fd      */
	UB_EV_CONNECT,  /* conn; res: 0, or -errno (then CLOSED follows)       */
	UB_EV_DATA,     /* conn, buf (owned by the application now); res: len.
			   dgram: res is the datagram's length as sent, more
			   than ub_buf_len(buf) when it was truncated       */
	UB_EV_SENT,     /* conn; res: bytes the kernel took (opt-in, see flags) */
	UB_EV_WRITABLE, /* conn: queue fell to the low water mark after having
			   been above high, or a refused send can now go       */
	UB_EV_EOF,      /* conn: peer closed its sending side; res: 0          */
	UB_EV_ERROR,    /* conn or listener; res: -errno.  A connection error
			   closes the connection: CLOSED follows.  A
			   listener's (a failed accept) does not close it   */
	UB_EV_CLOSED,   /* conn or listener is gone; res: 0 or the -errno that
			   ended it.  The object is freed when the next
			   ub_loop_wait() call starts: use it until then
			   (held: at its last release, ub_conn_hold()).       */
};

typedef struct ub_event {
	int type;               /* enum ub_event_type */
	int res;
	ub_conn *conn;
	ub_listener *listener;
	ub_buf *buf;            /* UB_EV_DATA only */
	void *udata;            /* the conn's (or listener's) user data as
				   it was when ub_loop_wait() returned this
				   batch: one set while handling an earlier
				   event of the batch (an ACCEPT) shows in
				   ub_conn_udata(), not here */
	ub_dgram *dgram;        /* a datagram endpoint's event (DATA,
				   WRITABLE, ERROR, CLOSED); conn and
				   listener are NULL then.  Last, so that
				   every field above keeps its offset */
} ub_event;

UB_EXTERN const char *ub_event_name(int type);

/* ---- loop -------------------------------------------------------------- */

enum ub_send_mode {
	UB_MODE_AUTO = 0, /* best the kernel offers: BUNDLE > SERIAL           */
	UB_MODE_BUNDLE,   /* send from a provided-buffer ring, many per send    */
	UB_MODE_RING,     /* send from a provided-buffer ring, one per send     */
	UB_MODE_SERIAL,   /* plain sends, one in flight, backlog in user space  */
};

/* Feature bits reported by ub_loop_features(). */
enum ub_feature {
	UB_FEAT_SINGLE_ISSUER = 1u << 0, /* SINGLE_ISSUER|DEFER_TASKRUN ring   */
	UB_FEAT_RECV_MULTISHOT = 1u << 1,
	UB_FEAT_ACCEPT_MULTISHOT = 1u << 2,
	UB_FEAT_SEND_RING = 1u << 3,     /* send with IOSQE_BUFFER_SELECT      */
	UB_FEAT_SEND_BUNDLE = 1u << 4,   /* IORING_RECVSEND_BUNDLE on send     */
	UB_FEAT_RECV_BUNDLE = 1u << 5,   /* IORING_RECVSEND_BUNDLE on recv     */
	UB_FEAT_PBUF_INC = 1u << 6,      /* IOU_PBUF_RING_INC buffer rings     */
	UB_FEAT_RECV_LIMIT = 1u << 7,    /* byte limit on a multishot recv     */
	UB_FEAT_UDP_GSO = 1u << 8,       /* UDP_SEGMENT: replies to one peer
					    in one send (datagram endpoints) */
	UB_FEAT_ALL = (1u << 9) - 1,
};

typedef struct ub_loop_opts {
	unsigned entries;     /* SQ entries (<= 32768); 0 = 256               */
	unsigned disable;     /* ub_feature bits to treat as unavailable       */
	unsigned pool_count;  /* default pools: buffers each; 0 = 1024         */
	unsigned pool_size;   /* default pools: bytes per buffer; 0 = 4096     */
	/* pool_count <= 32768, pool_size <= 1 GiB, their product <= 64 GiB */
	unsigned pool_flags;  /* default receive pool: UB_POOL_INC, or 0       */
} ub_loop_opts;

/*
 * Create a loop.  opts may be NULL.  Probes the kernel once.  A loop belongs
 * to the thread that created it (the ring is set up single-issuer where the
 * kernel allows): call it from that thread only.
 * Errors: -EINVAL (bad opts), -ENOMEM, -ENOSYS (no io_uring, or older than
 * 5.19), -EPERM (io_uring disabled by sysctl), or what io_uring_setup says.
 */
UB_EXTERN ub_loop *ub_loop_new(const ub_loop_opts *opts, int *err);

/*
 * The option checks.  Each returns 0 and sets *reason to NULL when
 * ub_loop_new() (ub_pool_new(), ub_conn_adopt() and the other connection
 * and listener constructors, ub_dgram_open() and ub_dgram_adopt(),
 * ub_conn_set_water() and ub_dgram_set_water()) would accept the options,
 * else returns what that call fails with and sets *reason to a string
 * naming the field and the rule ("ring_entries must be a power of 2 up to
 * 32768"): a static string, or one owned by loop that lives as long as it.
 * reason may be NULL.  Errors: -EINVAL (a rule broken; loop NULL),
 * -EOPNOTSUPP (ub_conn_opts_check: the forced send mode is unavailable on
 * loop; ub_dgram_opts_check: the kernel has no multishot recvmsg).  NULL
 * opts are the defaults.  They check arguments only: a loop being freed,
 * an address or a socket are the constructors' to refuse.
 */
UB_EXTERN int ub_loop_opts_check(const ub_loop_opts *opts,
				 const char **reason);

/*
 * Close every connection and listener (abort), reap every operation the
 * kernel still holds, free every pool and the loop.  Buffers the application
 * still holds become invalid; no CLOSED events are delivered.  Connections,
 * listeners and endpoints that are held (ub_conn_hold()) keep only their
 * struct, detached, until their last release: their loop accessor returns
 * NULL, is_closed 1, every operation an error.  Returns 0,
 * -EINVAL (loop NULL), -EBUSY if the loop is already being freed, or
 * -ETIMEDOUT if the kernel did not give back every operation within 10 s
 * (the memory it may still touch is then leaked, not freed).
 */
UB_EXTERN int ub_loop_free(ub_loop *loop);

/*
 * Submit pending work, wait for completions and return up to max events in
 * ev[].  Blocks until at least min events are ready (min 0: do not block) or
 * timeout_ms passes (-1: no timeout).  Returns the event count (0 on
 * timeout), or -EINVAL (bad arguments: max <= 0, min < 0 or > max, or the
 * loop is being freed), -EINTR (a signal arrived and no event was ready; if
 * some were, they are returned instead), or another io_uring_enter error
 * (likewise only when no event was ready).
 * Objects that received UB_EV_CLOSED in the previous batch are freed here
 * (those held: at their last release; ub_*_is_closed() says 1 from here).
 */
UB_EXTERN int ub_loop_wait(ub_loop *loop, ub_event *ev, int max, int min,
			   int timeout_ms);

/* Number of events queued but not yet returned; -EINVAL if loop is NULL. */
UB_EXTERN int ub_loop_pending(const ub_loop *loop);

/* Features the kernel offers (enum ub_feature bits, minus opts.disable). */
UB_EXTERN unsigned ub_loop_features(const ub_loop *loop);

/* Human-readable reason a feature is unavailable, or NULL if available;
 * "unknown feature" if loop is NULL or feature is not one known bit. */
UB_EXTERN const char *ub_loop_feature_reason(const ub_loop *loop,
					     unsigned feature);

/* Name of a single feature bit ("send_bundle", ...), NULL if unknown. */
UB_EXTERN const char *ub_feature_name(unsigned feature);

/* The mode UB_MODE_AUTO resolves to on this loop (BUNDLE or SERIAL);
 * -EINVAL if loop is NULL. */
UB_EXTERN int ub_loop_best_mode(const ub_loop *loop);

/* Whether a mode can be used on this loop: 0, or -EOPNOTSUPP with
 * *reason (if non-NULL) set to why; -EINVAL if loop is NULL or mode is not
 * a mode (*reason: "unknown send mode"). */
UB_EXTERN int ub_loop_mode_check(const ub_loop *loop, int mode,
				 const char **reason);

/* "bundle", "ring", "serial" or "auto"; "unknown" if not a mode. */
UB_EXTERN const char *ub_mode_name(int mode);
/* "bundle", "ring", "serial", "auto" -> mode, or -EINVAL. */
UB_EXTERN int ub_mode_from_name(const char *name);

/*
 * The ring's file descriptor.  Not a readiness signal on a
 * SINGLE_ISSUER|DEFER_TASKRUN ring: completions wait in the kernel as task
 * work until the owning thread enters it, and a poll()/epoll sleeping on the
 * ring fd is not woken for them (measured on Linux 6.18: 0 of 10 arrivals).
 * To drive a loop from another event loop, use ub_loop_eventfd().
 * -EINVAL if loop is NULL.
 */
UB_EXTERN int ub_loop_fd(const ub_loop *loop);

/*
 * An eventfd that becomes readable when the loop has completions to process,
 * for driving the loop from another event loop (asyncio, libuv, epoll):
 * watch it for reading there and call ub_loop_wait(loop, ev, max, 0, 0)
 * whenever it is readable, and once after queueing work (sends, connects,
 * closes go to the kernel only in ub_loop_wait).  ub_loop_wait() clears it
 * before it reaps, so a completion arriving during the call sets it again,
 * and sets it itself when it returns with work left (events beyond max,
 * completions or kernel task work not yet processed): one call per wakeup
 * is enough; a wakeup may find nothing.  Created and registered
 * (io_uring_register_eventfd) on the first call; later calls return the same
 * descriptor.  The loop owns it: ub_loop_free() closes it.
 * Returns the fd, or -EINVAL (loop NULL or being freed), -EMFILE, -ENFILE,
 * -ENOMEM, or what registering says.  Linux 5.19 (as the loop).
 */
UB_EXTERN int ub_loop_eventfd(ub_loop *loop);

/*
 * Whether work waits for a ub_loop_wait() call that the ring fd does not
 * announce: operations that API calls queued since the last wait (they are
 * submitted only inside ub_loop_wait()), events not yet returned, or
 * kernel task work an earlier call left (the kernel runs at most 20 items
 * per enter; IORING_SQ_TASKRUN says some is left).  An
 * application driving the loop from another event loop checks this before
 * that loop blocks (libuv: a prepare handle) and calls
 * ub_loop_wait(loop, ev, max, 0, 0) while it returns 1.
 * Returns 1 or 0; -EINVAL if loop is NULL.
 */
UB_EXTERN int ub_loop_needs_wait(const ub_loop *loop);

/* Default pools, created on first use (sizes from ub_loop_opts).
 * Errors: -EINVAL (loop NULL), or those of ub_pool_new(). */
UB_EXTERN ub_pool *ub_loop_recv_pool(ub_loop *loop, int *err);
UB_EXTERN ub_pool *ub_loop_send_pool(ub_loop *loop, int *err);

/* ---- pools and buffers ------------------------------------------------- */

enum ub_pool_flags {
	UB_POOL_RECV = 1u << 0, /* register as a receive ring (else: send pool) */
	UB_POOL_INC = 1u << 1,  /* with UB_POOL_RECV: incremental, see below */
};

/*
 * An incremental receive pool (UB_POOL_RECV | UB_POOL_INC; Linux 6.12+,
 * IOU_PBUF_RING_INC) lets the kernel fill each buffer piece by piece: a
 * receive takes only the bytes it needs from the buffer at the ring's head
 * and the next receive, of any connection, goes on where it stopped.  So
 * buffers can be large (tens of KiB: one DATA event per read under stream
 * load) without a small message taking a whole one.
 *  - Each DATA event carries a slice: its own ub_buf handle for the bytes
 *    of one completion, released, sent and piped like any received buffer.
 *    ub_buf_capacity() is its length when received (it cannot grow into
 *    bytes the kernel may still write); ub_buf_index() names the pool
 *    buffer it lies in, which other slices may share.
 *  - A pool buffer goes back to the ring once the kernel has moved past it
 *    and every slice of it is back.  ub_pool_count_state() counts pool
 *    buffers (KERNEL: in the ring, partly filled or not; APP: finished by
 *    the kernel, slices still out); ub_pool_slices() counts slices out.
 *  - A connection's receive budget counts slices as buffers, so what it
 *    holds pins at most as many pool buffers as without UB_POOL_INC.
 *    Receive bundles do not apply (each read is already contiguous).
 *    A connection holds at most its budget in slices (and what receives
 *    already completing bring); a pool hands out at most 64 per buffer,
 *    and no fewer than 65536, in all at once: a receive beyond that fails
 *    its connection with -ENOBUFS.
 *  - Its pool buffers are never the application's: ub_pool_buf() of one
 *    may be APP (pinned by slices), but releasing, resizing or sending it
 *    is refused (-EINVAL).
 *  - Datagram endpoints refuse an incremental pool (-EINVAL).
 *  - Where the kernel lacks it (ub_loop_feature_reason(loop,
 *    UB_FEAT_PBUF_INC) says why, or the loop's opts disabled it), the pool
 *    is made without it: ub_pool_flags() then lacks UB_POOL_INC.
 */

enum ub_buf_state {
	UB_BUF_FREE = 0,   /* idle in a send pool: ub_pool_acquire() can take it */
	UB_BUF_KERNEL,     /* idle in a receive ring: the kernel may fill it    */
	UB_BUF_APP,        /* owned by the application                          */
	UB_BUF_QUEUED,     /* in a connection's send queue                      */
	UB_BUF_NSTATES
};

/*
 * count buffers (1..32768) of size bytes (1..1 GiB, count*size <= 64 GiB) in
 * one page-aligned mapping.  Errors: -EINVAL (also loop NULL or an unknown
 * flag), -ENOMEM, -ENOSPC (a receive pool: no buffer group id left), or what
 * registering the ring says.
 */
UB_EXTERN ub_pool *ub_pool_new(ub_loop *loop, unsigned count, unsigned size,
			       unsigned flags, int *err);
/* ub_pool_new()'s rules for count, size and flags, as the option checks
 * above: 0, or -EINVAL with *reason. */
UB_EXTERN int ub_pool_check(unsigned count, unsigned size, unsigned flags,
			    const char **reason);

/* Free a pool.  -EBUSY while any buffer or slice is APP or QUEUED or a
 * connection or listener uses it (as its receive or send pool); -EINVAL if
 * pool is NULL. */
UB_EXTERN int ub_pool_free(ub_pool *pool);

/* A FREE buffer of a send pool becomes APP, with length 0.
 * Errors: -ENOBUFS (none free), -EINVAL (pool NULL or a receive pool). */
UB_EXTERN ub_buf *ub_pool_acquire(ub_pool *pool, int *err);

/* Accessors: 0 or NULL if pool is NULL. */
UB_EXTERN unsigned ub_pool_count(const ub_pool *pool);
UB_EXTERN unsigned ub_pool_buf_size(const ub_pool *pool);
UB_EXTERN unsigned ub_pool_flags(const ub_pool *pool);
/* Receive pool: free buffers below which only connections under their fair
 * share receive (count / 4); 0 for a send pool or NULL. */
UB_EXTERN unsigned ub_pool_reserve(const ub_pool *pool);
/* Buffers currently in a state (enum ub_buf_state); 0 for a bad state. */
UB_EXTERN unsigned ub_pool_count_state(const ub_pool *pool, int state);
/* Slices of an incremental pool out of it (APP or QUEUED); 0 otherwise. */
UB_EXTERN unsigned ub_pool_slices(const ub_pool *pool);
/* The mapping: base address and length in bytes. */
UB_EXTERN void *ub_pool_base(const ub_pool *pool);
UB_EXTERN size_t ub_pool_bytes(const ub_pool *pool);
UB_EXTERN ub_loop *ub_pool_loop(const ub_pool *pool);
/* Buffer by index (0..count-1), NULL if out of range. */
UB_EXTERN ub_buf *ub_pool_buf(ub_pool *pool, unsigned index);

/*
 * Give an APP buffer back to its pool.  Errors: -EINVAL if the buffer is
 * NULL or not APP (double release, a QUEUED buffer, ...).
 */
UB_EXTERN int ub_buf_release(ub_buf *buf);

/* Accessors: 0 or NULL if buf is NULL. */
UB_EXTERN void *ub_buf_data(const ub_buf *buf);
UB_EXTERN size_t ub_buf_len(const ub_buf *buf);
UB_EXTERN size_t ub_buf_capacity(const ub_buf *buf);
/* Set the data length of an APP buffer: -EINVAL if not APP or len > capacity. */
UB_EXTERN int ub_buf_set_len(ub_buf *buf, size_t len);
UB_EXTERN int ub_buf_state(const ub_buf *buf); /* -EINVAL if buf is NULL */
UB_EXTERN unsigned ub_buf_index(const ub_buf *buf);
UB_EXTERN ub_pool *ub_buf_pool(const ub_buf *buf);
/* Changes every time the buffer leaves the application: a binding keeps the
 * generation it was handed and refuses a stale handle. */
UB_EXTERN uint32_t ub_buf_gen(const ub_buf *buf);

/* ---- connections ------------------------------------------------------- */

enum ub_conn_flags {
	UB_CONN_NO_RECV = 1u << 0,        /* do not start receiving          */
	UB_CONN_SINGLESHOT = 1u << 1,     /* one-shot recv, re-armed each time */
	UB_CONN_NO_RECV_BUNDLE = 1u << 2, /* never use recv bundles          */
	UB_CONN_SENT_EVENTS = 1u << 3,    /* emit UB_EV_SENT per completion  */
	UB_CONN_SOFT_WATER = 1u << 4,     /* the high water mark is soft: sends
					     are never refused for it (see
					     ub_conn_set_soft_water())      */
};

typedef struct ub_conn_opts {
	ub_pool *recv_pool;  /* NULL: the loop's default receive pool         */
	ub_pool *send_pool;  /* for ub_conn_send() copies; NULL: loop default  */
	int mode;            /* enum ub_send_mode; AUTO picks the best         */
	unsigned ring_entries; /* send ring entries (power of 2); 0 = 256     */
	size_t high_water;   /* queued bytes at which sends are refused; 0=1MiB */
	size_t low_water;    /* WRITABLE once at or below; default high/4      */
	unsigned flags;      /* enum ub_conn_flags                             */
	void *udata;
	/* Isolation (see "Receive budgets" below and uringbuf(7)). */
	size_t recv_budget;  /* bytes of its receive pool the connection may
				hold; 0 = 256 KiB (UB_DEF_RECV_BUDGET)      */
	unsigned idle_timeout_ms;    /* nothing received or sent for this
					long: ERROR -ETIMEDOUT, then CLOSED;
					0 = none                               */
	unsigned connect_timeout_ms; /* ub_conn_connect() not done in time:
					CONNECT -ETIMEDOUT, CLOSED; 0 = none   */
	unsigned close_timeout_ms;   /* a graceful close not finished in time
					becomes an abort (ERROR -ETIMEDOUT,
					CLOSED); 0 = 30000, UINT_MAX = never   */
} ub_conn_opts;

#define UB_DEF_RECV_BUDGET (256u << 10)
#define UB_DEF_CLOSE_TIMEOUT_MS 30000u

/* Fill opts with the defaults. */
UB_EXTERN void ub_conn_opts_init(ub_conn_opts *opts);
/* Connection options (also a listener's) on loop, as the option checks
 * above: 0, or -EINVAL or -EOPNOTSUPP with *reason. */
UB_EXTERN int ub_conn_opts_check(const ub_loop *loop, const ub_conn_opts *opts,
				 const char **reason);

/*
 * Take over a connected stream socket (TCP or Unix).  The connection owns fd
 * from then on (even on failure it is not closed: the caller keeps it then).
 * O_NONBLOCK is cleared: io_uring does the waiting.
 * Errors: -EINVAL (loop NULL or being freed, bad opts, or not a stream
 * socket), -EOPNOTSUPP (forced mode unavailable), -EBADF, -ENOTSOCK,
 * -ENOMEM.
 */
UB_EXTERN ub_conn *ub_conn_adopt(ub_loop *loop, int fd,
				 const ub_conn_opts *opts, int *err);

/* Connect to addr (INET, INET6 or UNIX); UB_EV_CONNECT reports the outcome.
 * Sends queued before it go out once connected.  Errors: -EINVAL (loop NULL
 * or being freed, bad address or opts), -EOPNOTSUPP (forced mode
 * unavailable), -ENOMEM, -EBUSY (no SQE free), or what socket(2) says. */
UB_EXTERN ub_conn *ub_conn_connect(ub_loop *loop, const struct sockaddr *addr,
				   socklen_t addrlen, const ub_conn_opts *opts,
				   int *err);

/*
 * Queue an APP buffer (ub_buf_len bytes) for sending: zero copy.  The buffer
 * may come from any pool of the same loop; it becomes QUEUED and returns to
 * its own pool once sent.  Errors: -EINVAL (NULL, not APP, empty, other
 * loop), -EAGAIN (queue at or above the high water mark; WRITABLE follows;
 * never with UB_CONN_SOFT_WATER, where 1 says the queue is now above it),
 * -EPIPE
 * (connection closing or closed), -ENOTCONN (connect failed), -ENOMEM or
 * -ENOSPC (the first send in RING/BUNDLE mode could not create the
 * connection's send ring; -ENOSPC: the loop's 65536 buffer groups are used).
 */
UB_EXTERN int ub_conn_send_buf(ub_conn *conn, ub_buf *buf);

/*
 * Copy len bytes into buffers of the send pool and queue them.  Returns the
 * bytes accepted (maybe fewer than len, like write(2)), or -EAGAIN (nothing
 * accepted: queue at or above high water or no free buffer; WRITABLE
 * follows; never with UB_CONN_SOFT_WATER, which takes all len), -EPIPE, -ENOTCONN, -EINVAL (conn NULL, data NULL with len > 0),
 * -ENOMEM or -ENOSPC (the default send pool or the send ring could not be
 * made; see ub_conn_send_buf()).  len 0 returns 0 if the conn can send.
 */
UB_EXTERN ssize_t ub_conn_send(ub_conn *conn, const void *data, size_t len);

/*
 * Soft backpressure (UB_CONN_SOFT_WATER; on = 1 sets it, 0 clears it):
 * the high water mark stops being a refusal and becomes a signal, as in
 * asyncio's and libuv's write queues.  ub_conn_send_buf() queues the
 * buffer whatever the queue holds and returns 1 when the queue is now at
 * or above the high mark (0 below it); ub_conn_send() accepts all len
 * bytes (failing only for want of memory, see there).  Either way, above
 * the mark UB_EV_WRITABLE follows once the queue is at or below the low
 * mark: the caller stops producing until then.  Bytes the send pool
 * cannot take, or that arrive while the queue is above its high mark (so
 * that one connection takes no more of the shared send pool), are copied
 * to the heap and move into pool buffers as the queue drains; a buffer
 * queued behind them waits its turn.  Order, close and shutdown after draining
 * are as for everything queued; ub_conn_queued_bytes() counts all of it.
 * That memory is bounded by what the application writes past the
 * signal.  -EINVAL if conn is NULL.
 */
UB_EXTERN int ub_conn_set_soft_water(ub_conn *conn, int on);

/* Ask for one UB_EV_WRITABLE once the queue is at or below the low water
 * mark (in the next wait if it already is), without a refused send: for a
 * layer that keeps its own backlog above the core's queue.  -EPIPE if the
 * connection no longer sends, -EINVAL if conn is NULL. */
UB_EXTERN int ub_conn_want_writable(ub_conn *conn);

/* Stop / restart receiving (data waits in the socket meanwhile); resume
 * also starts a UB_CONN_NO_RECV connection.  -EINVAL (NULL), -EPIPE (being
 * aborted or closed). */
UB_EXTERN int ub_conn_pause_recv(ub_conn *conn);
UB_EXTERN int ub_conn_resume_recv(ub_conn *conn);

/*
 * Forward everything received on src into dst's send queue, zero copy,
 * without DATA events; src pauses while dst is above its high water mark.
 * An EOF on src shuts dst's sending side once its queue drains.
 * dst NULL stops forwarding.  Errors: -EINVAL (src NULL, same conn, other
 * loop), -EPIPE (src being aborted or closed, dst closing or closed).
 */
UB_EXTERN int ub_conn_pipe(ub_conn *src, ub_conn *dst);

/* Half-close: shut the sending side once the queue has drained.  -EINVAL
 * (NULL), -EPIPE (closing, closed, or its sending side already shut). */
UB_EXTERN int ub_conn_shutdown(ub_conn *conn);

/* Graceful close: stop delivering data (what arrives is discarded), let the
 * queue drain, shut the sending side, and close once nothing unread is left
 * in the socket (so the close sends FIN, not a reset that could destroy our
 * own bytes in flight).  CLOSED follows.  Still connecting with nothing
 * queued: cancelled as by ub_conn_abort() (CLOSED 0, no CONNECT).
 * -EPIPE if already closing, -EINVAL if conn is NULL. */
UB_EXTERN int ub_conn_close(ub_conn *conn);

/* Abort: cancel everything now; queued buffers return to their pools once
 * the kernel has let go of them; the socket closes with a reset.  CLOSED
 * follows.  -EPIPE if already aborting or closed, -EINVAL if conn is NULL. */
UB_EXTERN int ub_conn_abort(ub_conn *conn);

/* Accessors: 0 or NULL if conn is NULL, but fd, mode and is_closing
 * return -EINVAL then.  fd is -1 once closed; mode is never AUTO. */
UB_EXTERN int ub_conn_fd(const ub_conn *conn);
UB_EXTERN int ub_conn_mode(const ub_conn *conn);
UB_EXTERN ub_loop *ub_conn_loop(const ub_conn *conn);
UB_EXTERN size_t ub_conn_queued_bytes(const ub_conn *conn);
UB_EXTERN unsigned ub_conn_queued_bufs(const ub_conn *conn);
UB_EXTERN size_t ub_conn_high_water(const ub_conn *conn);
UB_EXTERN size_t ub_conn_low_water(const ub_conn *conn);
/* Set both marks (low <= high, high > 0): -EINVAL otherwise. */
UB_EXTERN int ub_conn_set_water(ub_conn *conn, size_t high, size_t low);
/* The marks' rules (high > 0, low <= high) for ub_conn_set_water() and
 * ub_dgram_set_water(), as the option checks above: 0, or -EINVAL with
 * *reason. */
UB_EXTERN int ub_water_check(size_t high, size_t low, const char **reason);
/* User data, carried by every event about the connection. */
UB_EXTERN void *ub_conn_udata(const ub_conn *conn);
UB_EXTERN void ub_conn_set_udata(ub_conn *conn, void *udata);
/* 1 once no more sends are accepted: closing, closed, or its sending side
 * shut down (by ub_conn_shutdown() or by the EOF of a connection piped into
 * it); else 0. */
UB_EXTERN int ub_conn_is_closing(const ub_conn *conn);
/* Totals since the connection began. */
UB_EXTERN uint64_t ub_conn_bytes_sent(const ub_conn *conn);
UB_EXTERN uint64_t ub_conn_bytes_received(const ub_conn *conn);

/*
 * Keep the connection's memory past its life: it is not freed when the wait
 * after its CLOSED event starts, but at the last ub_conn_release().  Any
 * number of holds; take them from the loop's thread, as every call.  For a
 * binding whose handle objects outlive what they name: it checks
 * ub_conn_is_closed() instead of tracking CLOSED events itself.
 * Returns 0, -EINVAL (NULL) or -EOVERFLOW (UINT_MAX holds).
 */
UB_EXTERN int ub_conn_hold(ub_conn *conn);
/* Drop one hold; the last one of a connection that is closed (is_closed 1)
 * frees it then and there.  Nothing if conn is NULL or not held. */
UB_EXTERN void ub_conn_release(ub_conn *conn);
/* 1 once the connection is gone: from the ub_loop_wait() call after the one
 * that returned its CLOSED event (when an unheld one is freed), or once its
 * loop is freed; then every operation fails with its documented error
 * (EPIPE; EINVAL where a buffer names another loop: ub_conn_loop() is NULL
 * once the loop is freed), setters that only store a value (water marks,
 * budget, udata) still do, ub_conn_fd() is -1; only a held connection can
 * be asked.
 * Else 0; -EINVAL if conn is NULL. */
UB_EXTERN int ub_conn_is_closed(const ub_conn *conn);

/*
 * Receive budgets.  Every connection counts the buffers of its receive pool
 * that it received and that have not gone back to the pool: held by the
 * application, queued on any connection's send queue (echo, forwarding,
 * ub_conn_pipe()) or being sent.  At its budget its receive stops and the
 * bytes wait in its socket, so TCP pushes back on that peer alone; it
 * resumes when one of its buffers comes back.
 * Sharing: while more than one connection uses the pool, a connection may
 * hold at most half of the pool's free buffers above its reserve
 * (ub_pool_reserve(), a quarter of the pool), and one that holds nothing
 * may always take one, from the reserve if need be.  So as the pool fills,
 * those holding much stop first, and a new or quiet connection still finds
 * a buffer as long as fewer connections than the reserve hold one each
 * (more connections than that: bound them, ub_listener_set_max_conns()).
 * Overshoot: a receive is armed for the buffers it may take, and the
 * promises of all armed receives never exceed what the pool has above its
 * reserve (a connection holding nothing always may take one; one holding
 * some waits until a buffer nobody was promised is free).  Where the
 * kernel has UB_FEAT_RECV_LIMIT (Linux 6.17) that is a multishot receive
 * with a byte limit: buffers the kernel fills completely never pass the
 * budget; a completion that ends a buffer early lets the next start a new
 * one, so a buffer more per such completion.  A multishot receive makes
 * room for two such buffers, in the pool's promises and in the budget (it
 * asks for two fewer); after them, a receive that could still reach the
 * budget, or one on a pool that is short, is cancelled and armed again,
 * and where there is no room for them the receive is one-shot, one buffer.
 * So a connection passes its budget only when more such completions than
 * that arrive before the loop reaps them.
 * Without the limit, receives are one-shot, one buffer each, and never
 * pass it (slower: no multishot, no receive bundles).
 */
/* Idle timeout in ms (0: none): nothing received or sent for that long
 * ends the connection with UB_EV_ERROR (res ETIMEDOUT), then UB_EV_CLOSED.
 * Setting it counts from now.  -EINVAL (NULL), -EPIPE (aborting, closed).
 * Deadlines run on one io_uring timeout per loop (Linux 5.11), not a timer
 * per connection. */
UB_EXTERN int ub_conn_set_idle_timeout(ub_conn *conn, unsigned ms);
UB_EXTERN unsigned ub_conn_idle_timeout(const ub_conn *conn); /* 0 if NULL */
/* The close deadline in ms, as the options set it (the default resolved;
 * UINT_MAX: never).  0 if conn is NULL. */
UB_EXTERN unsigned ub_conn_close_timeout(const ub_conn *conn);

/* Budget in bytes (0 if conn is NULL). */
UB_EXTERN size_t ub_conn_recv_budget(const ub_conn *conn);
/* Set it (bytes > 0; counted in whole buffers, at least one): -EINVAL. */
UB_EXTERN int ub_conn_set_recv_budget(ub_conn *conn, size_t bytes);
/* Buffers of its receive pool the connection holds now (0 if NULL). */
UB_EXTERN unsigned ub_conn_recv_held(const ub_conn *conn);
/* 1 while its receive is stopped by its budget or its fair share, else 0;
 * -EINVAL if conn is NULL. */
UB_EXTERN int ub_conn_recv_throttled(const ub_conn *conn);

/* ---- listeners --------------------------------------------------------- */

/*
 * Bind and listen on addr (SO_REUSEADDR; SO_REUSEPORT with reuseport) and
 * accept with multishot accept.  Accepted connections use conn_opts (may be
 * NULL) and arrive as UB_EV_ACCEPT.  backlog <= 0 means SOMAXCONN.
 * Errors: -EINVAL (loop NULL or being freed, bad address or conn_opts),
 * -EOPNOTSUPP (forced mode unavailable), -ENOMEM, or what socket,
 * setsockopt(SO_REUSEPORT), bind or listen say.  The first accept goes
 * out with the next ub_loop_wait().
 */
UB_EXTERN ub_listener *ub_listen(ub_loop *loop, const struct sockaddr *addr,
				 socklen_t addrlen, int backlog, int reuseport,
				 const ub_conn_opts *conn_opts, int *err);

/* Accept on an existing listening socket, which the listener then owns
 * (on failure the caller keeps it).  Errors: -EINVAL (loop NULL or being
 * freed, fd < 0 or not listening, bad conn_opts), -EOPNOTSUPP, -EBADF,
 * -ENOTSOCK, -ENOMEM. */
UB_EXTERN ub_listener *ub_listener_adopt(ub_loop *loop, int fd,
					 const ub_conn_opts *conn_opts,
					 int *err);

/* Stop accepting and close the socket (a Unix socket path that ub_listen()
 * bound is unlinked); CLOSED follows.  -EPIPE if already closing, -EINVAL
 * if l is NULL. */
UB_EXTERN int ub_listener_close(ub_listener *l);
/* Accept at most max connections of this listener at once (0: no limit,
 * the default): at the limit accepting pauses and new connections wait in
 * the kernel's backlog; it resumes when one of them is CLOSED.  With a
 * limit, accepts are one-shot (a multishot accept could overshoot it).
 * -EINVAL if l is NULL, -EPIPE if it is closing, -EBUSY (no SQE free). */
UB_EXTERN int ub_listener_set_max_conns(ub_listener *l, unsigned max);
/* Connections of this listener not yet CLOSED (0 if NULL). */
UB_EXTERN unsigned ub_listener_conns(const ub_listener *l);
/* The limit of ub_listener_set_max_conns() (0: none; 0 if l is NULL). */
UB_EXTERN unsigned ub_listener_max_conns(const ub_listener *l);
/* Accessors; udata is carried by the listener's ERROR and CLOSED events. */
UB_EXTERN int ub_listener_fd(const ub_listener *l); /* -EINVAL if NULL */
UB_EXTERN void *ub_listener_udata(const ub_listener *l);
UB_EXTERN void ub_listener_set_udata(ub_listener *l, void *udata);
/* Its loop; NULL if l is NULL or once the loop is freed (l held). */
UB_EXTERN ub_loop *ub_listener_loop(const ub_listener *l);
/* Lifetime, as ub_conn_hold(), ub_conn_release(), ub_conn_is_closed():
 * hold returns 0, -EINVAL (NULL) or -EOVERFLOW; is_closed 1 once gone
 * (fd -1, every operation fails: EPIPE), 0 before, -EINVAL if l is NULL. */
UB_EXTERN int ub_listener_hold(ub_listener *l);
UB_EXTERN void ub_listener_release(ub_listener *l);
UB_EXTERN int ub_listener_is_closed(const ub_listener *l);

/* ---- datagrams --------------------------------------------------------- */

/*
 * A datagram endpoint: one UDP (IPv4, IPv6) or Unix datagram socket.
 * Receiving is one multishot recvmsg into a receive pool: each datagram
 * lands in one buffer, its source address in the buffer's first
 * UB_DGRAM_HDR bytes (the kernel's struct io_uring_recvmsg_out and the
 * address), its payload after them: ub_buf_data() points at the payload,
 * ub_buf_addr() at the address, and ub_buf_capacity() is the pool's buffer
 * size less UB_DGRAM_HDR.  A datagram larger than that is truncated and
 * said so: the DATA event's res is its full length, ub_buf_truncated() 1.
 * Each DATA event carries the endpoint (ub_event.dgram), the buffer and
 * res; sending is one sendmsg per datagram, each buffer one datagram,
 * never coalesced.  ERROR (res -errno) reports a failed send or an error
 * the socket reported (an ICMP port unreachable after a send on a
 * connected endpoint: -ECONNREFUSED); the endpoint stays open.  Other
 * receive errors close it: ERROR, then CLOSED.
 * A full socket: a datagram the kernel refuses for want of room waits, in
 * order, until the socket polls writable and goes again, whole; except on
 * an unconnected Unix endpoint, whose peer's queue (net.unix.
 * max_dgram_qlen) nothing can wait for: there the datagram is not sent
 * and ERROR -EAGAIN says so.
 * Pool exhaustion: when the receive pool has no free buffer the kernel ends
 * the multishot receive (-ENOBUFS); datagrams arriving meanwhile wait in the
 * socket or, once its buffer is full, are dropped by the kernel, which
 * nobody can count exactly.  ub_dgram_nobufs() counts those endings; the
 * receive re-arms as soon as a buffer comes back.
 * Minimum kernel: 6.0 (multishot recvmsg); older kernels: ub_dgram_open()
 * fails with -EOPNOTSUPP.
 */
#define UB_DGRAM_HDR 128u

enum ub_dgram_flags {
	UB_DGRAM_NO_RECV = 1u << 0,   /* do not start receiving            */
	UB_DGRAM_REUSEPORT = 1u << 1, /* ub_dgram_open: SO_REUSEPORT       */
	UB_DGRAM_SOFT_WATER = 1u << 2, /* sends never refused for room (see
					  ub_dgram_set_soft_water())       */
};

typedef struct ub_dgram_opts {
	ub_pool *recv_pool;  /* NULL: the loop's default receive pool; its
				buffers must be larger than UB_DGRAM_HDR    */
	ub_pool *send_pool;  /* for ub_dgram_send() copies; NULL: default   */
	unsigned queue_max;  /* datagrams queued for sending at most (1 ..
				32768); 0 = 256                              */
	size_t high_water;   /* queued bytes at which sends are refused;
				0 = 1 MiB                                    */
	size_t low_water;    /* WRITABLE once at or below this and at most
				queue_max / 4 datagrams; default high/4      */
	size_t recv_budget;  /* bytes of its receive pool the endpoint may
				hold; 0 = UB_DEF_RECV_BUDGET                 */
	unsigned flags;      /* enum ub_dgram_flags                         */
	void *udata;
} ub_dgram_opts;

/* Fill opts with the defaults. */
UB_EXTERN void ub_dgram_opts_init(ub_dgram_opts *opts);
/* Datagram options on loop, as the option checks above (NULL opts: the
 * defaults, whose receive pool is the loop's): 0, or -EINVAL or
 * -EOPNOTSUPP with *reason. */
UB_EXTERN int ub_dgram_opts_check(const ub_loop *loop,
				  const ub_dgram_opts *opts,
				  const char **reason);

/*
 * Open a datagram socket bound to addr (INET or INET6, port 0: the kernel
 * picks one; UNIX: a path, which ub_dgram_close() unlinks, an abstract
 * name, or addrlen sizeof(sa_family_t): an autobound abstract name) and
 * start receiving.  opts may be NULL.  Errors: -EINVAL (loop NULL or being
 * freed, bad address or opts, a receive pool with buffers of UB_DGRAM_HDR
 * bytes or less), -EOPNOTSUPP (no multishot recvmsg: Linux 6.0), -ENOMEM,
 * or what socket, setsockopt(SO_REUSEPORT) or bind say.
 */
UB_EXTERN ub_dgram *ub_dgram_open(ub_loop *loop, const struct sockaddr *addr,
				  socklen_t addrlen, const ub_dgram_opts *opts,
				  int *err);

/* Take over a datagram socket (bound or not, connected or not), which the
 * endpoint then owns (on failure the caller keeps it).  Errors: -EINVAL
 * (loop NULL or being freed, bad opts, not a datagram socket of a family
 * above), -EOPNOTSUPP, -EBADF, -ENOTSOCK, -ENOMEM. */
UB_EXTERN ub_dgram *ub_dgram_adopt(ub_loop *loop, int fd,
				   const ub_dgram_opts *opts, int *err);

/* Set the default peer (connect(2), which does not block for datagrams):
 * sends without an address go there, and only its datagrams are received.
 * Errors: -EINVAL (ep NULL, bad address or another family than the
 * endpoint's), -EPIPE (closing), or what connect says. */
UB_EXTERN int ub_dgram_connect(ub_dgram *ep, const struct sockaddr *addr,
			       socklen_t addrlen);

/*
 * Queue an APP buffer as one datagram of ub_buf_len() bytes (0 allowed) to
 * addr (NULL: the connected peer), zero copy: a received buffer (from any
 * endpoint or connection of the loop; ub_buf_addr() of it replies to its
 * sender) or one acquired and filled.  It becomes QUEUED and returns to its
 * own pool when the send completes.  Errors: -EINVAL (ep or buf NULL, buf
 * not APP or of another loop, addr of another family than the endpoint's or
 * of a bad length), -EDESTADDRREQ (addr NULL and not connected), -EAGAIN
 * (queue_max datagrams or high water bytes queued; WRITABLE follows;
 * never with UB_DGRAM_SOFT_WATER, which returns 1 instead when the queue is
 * now full or at its high mark), -EPIPE (closing), -ENOMEM (soft water: no
 * memory for the waiting datagram).  The kernel's verdict (EMSGSIZE for a
 * datagram over 65507 bytes of UDP, ENETUNREACH, ...) comes as an ERROR
 * event.
 */
UB_EXTERN int ub_dgram_send_buf(ub_dgram *ep, ub_buf *buf,
				const struct sockaddr *addr, socklen_t addrlen);

/* Copy len bytes into one buffer of the send pool and queue it as one
 * datagram, as ub_dgram_send_buf().  Returns len, or -EINVAL (ep NULL, data
 * NULL with len > 0, bad addr), -EMSGSIZE (len larger than a send pool
 * buffer: never split), -EDESTADDRREQ, -EAGAIN (queue full, or no free
 * buffer in the send pool; WRITABLE follows; never with
 * UB_DGRAM_SOFT_WATER), -EPIPE, -ENOMEM (the default send pool could not
 * be made; soft water: no memory for the copy). */
UB_EXTERN ssize_t ub_dgram_send(ub_dgram *ep, const void *data, size_t len,
				const struct sockaddr *addr, socklen_t addrlen);

/*
 * Soft backpressure for an endpoint (UB_DGRAM_SOFT_WATER; on = 1 sets it,
 * 0 clears it), as ub_conn_set_soft_water() for connections and asyncio's
 * DatagramTransport: a full queue stops being a refusal and becomes a
 * signal.  ub_dgram_send_buf() queues the datagram whatever the queue holds
 * and returns 1 when the endpoint is now at or above its high mark or has
 * queue_max datagrams out (0 otherwise); ub_dgram_send() takes every
 * datagram.  Either way UB_EV_WRITABLE follows once the queue is back at
 * its low mark: the caller stops producing until then.  A datagram that
 * finds no free slot, or no send-pool buffer, or others waiting before it,
 * waits in the endpoint, in order: a buffer as it is (but a send-pool
 * buffer that fits one of the endpoint's send pool, made then if need be,
 * is copied to the heap and goes back at once, so that waiting datagrams
 * never hold the pool they wait for), a copy on the heap.  It moves to the
 * kernel as slots free up.  ub_dgram_queued_bufs() and
 * ub_dgram_queued_bytes() count the waiting ones too; that memory is
 * bounded by what the application sends past the signal.  Close hands
 * them to the kernel as well, once each (those it refuses are dropped, as
 * for queued ones); a copy that then finds no send-pool buffer while
 * nothing of the endpoint is in flight is dropped.  -EINVAL if ep is NULL.
 */
UB_EXTERN int ub_dgram_set_soft_water(ub_dgram *ep, int on);

/* Close: stop receiving; queued datagrams are handed to the kernel first
 * and those it cannot take at once are cancelled; every queued buffer
 * returns to its pool, and CLOSED follows once the kernel holds nothing of
 * the endpoint.  Buffers the application holds stay its own.  -EPIPE if
 * already closing, -EINVAL if ep is NULL. */
UB_EXTERN int ub_dgram_close(ub_dgram *ep);

/* Stop / restart receiving (datagrams wait in the socket, then the kernel
 * drops what does not fit).  -EINVAL (NULL), -EPIPE (closing). */
UB_EXTERN int ub_dgram_pause_recv(ub_dgram *ep);
UB_EXTERN int ub_dgram_resume_recv(ub_dgram *ep);

/* Ask for one UB_EV_WRITABLE once the queue is at its low water mark (next
 * wait if it is already).  -EINVAL (NULL), -EPIPE (closing). */
UB_EXTERN int ub_dgram_want_writable(ub_dgram *ep);
/* Set both byte marks (low <= high, high > 0): -EINVAL otherwise. */
UB_EXTERN int ub_dgram_set_water(ub_dgram *ep, size_t high, size_t low);

/* Accessors: 0 or NULL if ep is NULL, but fd and recv_throttled return
 * -EINVAL then.  fd is -1 once closed. */
UB_EXTERN int ub_dgram_fd(const ub_dgram *ep);
UB_EXTERN ub_loop *ub_dgram_loop(const ub_dgram *ep);
UB_EXTERN void *ub_dgram_udata(const ub_dgram *ep);
UB_EXTERN void ub_dgram_set_udata(ub_dgram *ep, void *udata);
UB_EXTERN size_t ub_dgram_queued_bytes(const ub_dgram *ep);
UB_EXTERN unsigned ub_dgram_queued_bufs(const ub_dgram *ep);
/* The send queue's byte marks (the defaults resolved). */
UB_EXTERN size_t ub_dgram_high_water(const ub_dgram *ep);
UB_EXTERN size_t ub_dgram_low_water(const ub_dgram *ep);
/* AF_INET, AF_INET6 or AF_UNIX. */
UB_EXTERN int ub_dgram_family(const ub_dgram *ep);
/* The pool ub_dgram_send() copies into: the send_pool option, or the
 * loop's default send pool once a copying send has made it; else NULL. */
UB_EXTERN ub_pool *ub_dgram_send_pool(const ub_dgram *ep);
/* 1 once ub_dgram_close() was accepted (or the endpoint is gone), else 0;
 * -EINVAL if ep is NULL. */
UB_EXTERN int ub_dgram_is_closing(const ub_dgram *ep);
/* Datagrams received and sent (completed) since the endpoint began. */
UB_EXTERN uint64_t ub_dgram_received(const ub_dgram *ep);
UB_EXTERN uint64_t ub_dgram_sent(const ub_dgram *ep);
/* Times the kernel ended the receive for want of a buffer (ENOBUFS): not
 * the datagrams lost, which the kernel does not report per socket. */
UB_EXTERN uint64_t ub_dgram_nobufs(const ub_dgram *ep);
/* Send operations completed: fewer than ub_dgram_sent() where UDP GSO
 * (UB_FEAT_UDP_GSO) sent several datagrams to one peer in one. */
UB_EXTERN uint64_t ub_dgram_send_ops(const ub_dgram *ep);
/* Datagrams the kernel delivered past the endpoint's receive budget or its
 * share of the pool (in the pass before its receive could stop) and that
 * were dropped at once, as a full socket drops them; also an empty
 * datagram received with no send-pool buffer to carry it. */
UB_EXTERN uint64_t ub_dgram_dropped(const ub_dgram *ep);
/* Receive budget, as for connections: the buffers of its receive pool the
 * endpoint received and that have not come back (held by the application,
 * queued on any send queue) count against it; on a pool others use (more
 * endpoints, connections), also the connections' share rule and reserve.
 * At the limit the receive stops (datagrams wait in the socket), and it
 * resumes when one comes back.  Exact: a multishot receive has no count
 * limit in the kernel, so datagrams it delivers past what the endpoint may
 * hold are dropped at once (ub_dgram_dropped()), and with fewer than 8
 * buffers of room the receive is one-shot, one datagram each (the rest
 * wait in the socket).  Budget in bytes of buffers (at least one). */
UB_EXTERN size_t ub_dgram_recv_budget(const ub_dgram *ep);
/* bytes > 0, else -EINVAL. */
UB_EXTERN int ub_dgram_set_recv_budget(ub_dgram *ep, size_t bytes);
UB_EXTERN unsigned ub_dgram_recv_held(const ub_dgram *ep);
UB_EXTERN int ub_dgram_recv_throttled(const ub_dgram *ep);
/* Lifetime, as ub_conn_hold(), ub_conn_release(), ub_conn_is_closed():
 * hold returns 0, -EINVAL (NULL) or -EOVERFLOW; is_closed 1 once gone
 * (fd -1, ub_dgram_loop() NULL once the loop is freed, every operation
 * fails: EPIPE, or EINVAL for a buffer of another loop), 0 before, -EINVAL
 * if ep is NULL. */
UB_EXTERN int ub_dgram_hold(ub_dgram *ep);
UB_EXTERN void ub_dgram_release(ub_dgram *ep);
UB_EXTERN int ub_dgram_is_closed(const ub_dgram *ep);

/* A received datagram's source address, inside the buffer (valid while the
 * buffer is APP or QUEUED): NULL, *addrlen 0, for a buffer that is not a
 * received datagram or whose sender had no address (an unbound Unix
 * socket).  addrlen may be NULL. */
UB_EXTERN const struct sockaddr *ub_buf_addr(const ub_buf *buf,
					     socklen_t *addrlen);
/* That address formatted as ub_addr_format() does.  Returns the length, or
 * -EINVAL (NULL, or no address), -ENOSPC (out too small). */
UB_EXTERN int ub_buf_addr_format(const ub_buf *buf, char *out, size_t outlen);
/* 1 if the buffer holds a received datagram that did not fit, else 0. */
UB_EXTERN int ub_buf_truncated(const ub_buf *buf);

/* ---- addresses --------------------------------------------------------- */

/*
 * Parse "A.B.C.D:PORT", "[IPV6]:PORT", "localhost:PORT" (127.0.0.1),
 * "unix:PATH", "/PATH" or "unix:@NAME" (Linux's abstract namespace) into
 * *ss.  No name resolution: a DNS lookup may block an event loop for
 * seconds.  -EINVAL if malformed.
 */
UB_EXTERN int ub_addr_parse(const char *s, struct sockaddr_storage *ss,
			    socklen_t *len);
/* Format as ub_addr_parse reads it (an unnamed Unix socket, such as either
 * end of a socketpair, gives "unix:", which does not parse).  Returns the
 * length, or -ENOSPC (out too small: truncated) or -EINVAL (NULL, short, or
 * an unknown family). */
UB_EXTERN int ub_addr_format(const struct sockaddr *sa, socklen_t len,
			     char *out, size_t outlen);
/* Local (peer 0) or peer address of a socket, formatted as ub_addr_format()
 * does; its errors, or what getsockname/getpeername say. */
UB_EXTERN int ub_sock_name(int fd, int peer, char *out, size_t outlen);

#ifdef __cplusplus
}
#endif
#endif /* URINGBUF_H */
