/*
 * dgram.c - datagram endpoints: UDP (IPv4, IPv6) and Unix datagram sockets.
 *
 * Owns: the socket, its one multishot recvmsg, the slots of the datagrams it
 * is sending, and its life cycle.
 *
 * Receive: one multishot IORING_OP_RECVMSG with buffer select on a receive
 * pool.  The kernel writes each datagram into one buffer as struct
 * io_uring_recvmsg_out, the source address (room: UB_DGRAM_HDR less the
 * header, enough for any family we take) and the payload, which thus
 * always starts UB_DGRAM_HDR bytes in: ub_buf.dflags tells ub_buf_data()
 * so, and ub_buf_addr() reads the address where the kernel put it (no copy,
 * valid exactly as long as the buffer, and it travels with it).  MSG_TRUNC
 * is passed so that the header's payloadlen is the datagram's real length:
 * a datagram cut to fit is reported (DATA res > ub_buf_len), never silently.
 * Receive bundles do not apply: one datagram is one buffer.
 *
 * Buffers received are charged to the endpoint (ub_buf.owner, pool.c) as
 * for connections, so its receive budget counts what the application and
 * any send queue hold; on a shared pool the connections' share rule and
 * reserve apply too (recv_allow).  The kernel has no count limit for a
 * multishot recvmsg, so ours is on this side: a datagram that arrives
 * with no room left is dropped at once (ub_dgram_dropped), and with
 * little room the receive is a one-shot recvmsg, exactly one buffer (its
 * payload lands at the buffer's start and is moved into the multishot
 * layout).  The armed receive holds a promise in the pool's count, as a
 * connection's, so that others see what it may take (recv_room).  At the limit the receive is cancelled; a
 * buffer coming back, or the pool's wake level, dirties the endpoint,
 * which re-arms.  When the
 * pool runs dry the kernel ends the receive with -ENOBUFS: counted
 * (ub_dgram_nobufs), and the endpoint waits on the pool's dgram_waiters
 * until a buffer is back in the ring (pool.c), unless one was added since
 * the receive was armed (then at once: our ring count lags the kernel).
 *
 * Send: each datagram has a slot (struct ub_dsend) holding its msghdr,
 * iovec and destination until its CQE; the CQE's tag names the slot, so
 * sends complete in any order.  Every queued datagram is armed as one
 * IORING_OP_SENDMSG at the next round (queue_max bounds them); a buffer is
 * never coalesced with another and returns to its pool on completion.
 * On a UDP socket (UB_FEAT_UDP_GSO), consecutive datagrams to one
 * destination of one size (the last may be shorter) are armed as one
 * SENDMSG with UDP_SEGMENT: still one datagram per buffer on the wire, in
 * order, but the kernel's send path runs once per group (measured on
 * loopback: 2.0 us per 64-byte datagram alone, 0.8 in groups of 8).
 *
 * As in conn.c, API calls only record what they want and mark the endpoint
 * dirty; ub__dgram_update() (run by the loop) talks to the kernel.  Close:
 * queued datagrams are armed, then one cancel of everything on the fd;
 * once the last CQE is in, the socket closes and CLOSED goes out.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define UB_DG_DEF_QUEUE 256u
#define UB_DG_MAX_QUEUE 32768u
#define UB_DG_DEF_HIGH (1u << 20)
/* A receive that may deliver fewer datagrams is one-shot (arm_recv). */
#define UB_DG_MS_MIN 8u
/* The most an endpoint's receive promises (recv_room). */
#define UB_DG_WINDOW 32u
/* Room for the source address in each buffer. */
#define UB_DG_NAMELEN (UB_DGRAM_HDR - sizeof(struct io_uring_recvmsg_out))
/* A GSO group's payload at most: under the 64 KiB of one IP packet with
 * its headers, for both families */
#define UB_GSO_MAX_BYTES 65000u

_Static_assert(sizeof(struct io_uring_recvmsg_out) == 16,
	       "the kernel's recvmsg header is 16 bytes");
_Static_assert(UB_DG_NAMELEN >= sizeof(struct sockaddr_un) &&
		       UB_DG_NAMELEN >= sizeof(struct sockaddr_in6),
	       "every family's address fits in a buffer's header");

void ub_dgram_opts_init(ub_dgram_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	o->queue_max = UB_DG_DEF_QUEUE;
	o->high_water = UB_DG_DEF_HIGH;
	o->low_water = UB_DG_DEF_HIGH / 4;
	o->recv_budget = UB_DEF_RECV_BUDGET;
}

void ub__dgram_dirty(ub_dgram *d)
{
	if (d->dirty || d->closed)
		return;
	d->dirty = true;
	ub__list_add_tail(&d->loop->ddirty, &d->dirty_link);
}

/* No SQE even after a submit: the next round, not this one (a spin). */
static void retry_later(ub_dgram *d)
{
	if (d->dirty)
		ub__list_del(&d->dirty_link);
	d->dirty = true;
	ub__list_add_tail(&d->loop->dlater, &d->dirty_link);
}

/* A receive pool an endpoint can use: its buffers hold the header and
 * address before the data, and start 8-aligned so the address is. */
static bool rpool_ok(const ub_pool *p)
{
	return p->size > UB_DGRAM_HDR && p->size % 8 == 0;
}

int ub_dgram_opts_check(const ub_loop *loop, const ub_dgram_opts *opts,
			const char **reason)
{
	ub_dgram_opts o;

	if (!loop)
		return ub__refuse(reason, -EINVAL, "loop is NULL");
	if (opts)
		o = *opts;
	else
		ub_dgram_opts_init(&o);
	if (o.queue_max > UB_DG_MAX_QUEUE)
		return ub__refuse(reason, -EINVAL,
				  "queue_max must be at most 32768 datagrams");
	if (o.low_water > (o.high_water ? o.high_water : UB_DG_DEF_HIGH))
		return ub__refuse(reason, -EINVAL,
				  o.high_water ? "low_water must not exceed "
						 "high_water"
					       : "low_water must not exceed "
						 "the default high_water "
						 "(1 MiB)");
	if (o.flags & ~(unsigned)(UB_DGRAM_NO_RECV | UB_DGRAM_REUSEPORT |
				  UB_DGRAM_SOFT_WATER))
		return ub__refuse(reason, -EINVAL,
				  "flags has a bit that is no UB_DGRAM_* flag");
	if (o.recv_pool && o.recv_pool->loop != loop)
		return ub__refuse(reason, -EINVAL,
				  "recv_pool belongs to another loop");
	if (o.recv_pool && !(o.recv_pool->flags & UB_POOL_RECV))
		return ub__refuse(reason, -EINVAL,
				  "recv_pool must be a receive pool");
	if (o.recv_pool ? (o.recv_pool->flags & UB_POOL_INC)
			: ub__loop_rpool_inc(loop))
		return ub__refuse(reason, -EINVAL,
				  o.recv_pool
					  ? "recv_pool must not be incremental "
					    "(UB_POOL_INC): one datagram per "
					    "buffer"
					  : "the loop's default receive pool is "
					    "incremental (pool_flags "
					    "UB_POOL_INC): give a recv_pool "
					    "without it");
	if (o.recv_pool && !rpool_ok(o.recv_pool))
		return ub__refuse(reason, -EINVAL,
				  "recv_pool: a datagram endpoint needs "
				  "buffers of more than 128 bytes (its header) "
				  "and a multiple of 8");
	if (!o.recv_pool && (loop->pool_size <= UB_DGRAM_HDR ||
			     loop->pool_size % 8))
		return ub__refuse(reason, -EINVAL,
				  "the loop's default receive pool (pool_size) "
				  "cannot hold datagrams: it needs buffers of "
				  "more than 128 bytes and a multiple of 8; "
				  "give a recv_pool");
	if (o.send_pool && o.send_pool->loop != loop)
		return ub__refuse(reason, -EINVAL,
				  "send_pool belongs to another loop");
	if (o.send_pool && (o.send_pool->flags & UB_POOL_RECV))
		return ub__refuse(reason, -EINVAL,
				  "send_pool must be a send pool");
	if (!(loop->features & UB_FEAT_RECV_MULTISHOT))
		return ub__refuse(reason, -EOPNOTSUPP,
				  "datagram endpoints need multishot recvmsg "
				  "(Linux 6.0)");
	return ub__refuse(reason, 0, NULL);
}

static bool family_ok(int family)
{
	return family == AF_INET || family == AF_INET6 || family == AF_UNIX;
}

/* An address of family fam with a length that family allows. */
static bool addr_fits(const struct sockaddr *a, socklen_t len, int fam)
{
	if (!a || len < sizeof(sa_family_t) ||
	    len > sizeof(struct sockaddr_storage) || a->sa_family != fam)
		return false;
	switch (fam) {
	case AF_INET:
		return len >= sizeof(struct sockaddr_in);
	case AF_INET6:
		return len >= sizeof(struct sockaddr_in6);
	case AF_UNIX:
		return len <= sizeof(struct sockaddr_un);
	default:
		return false;
	}
}

static ub_dgram *new_ep(ub_loop *loop, int fd, int family,
			const ub_dgram_opts *opts, int *err)
{
	ub_dgram_opts o;
	ub_dgram *d;
	unsigned i;
	int ret;

	if (opts)
		o = *opts;
	else
		ub_dgram_opts_init(&o);
	ret = ub__evq_reserve(loop, 1);
	if (ret < 0)
		goto fail;
	ret = -ENOMEM;
	d = calloc(1, sizeof(*d));
	if (!d)
		goto fail;
	d->nslots = o.queue_max ? o.queue_max : UB_DG_DEF_QUEUE;
	d->slots = calloc(d->nslots, sizeof(*d->slots));
	if (!d->slots) {
		free(d);
		goto fail;
	}
	d->rpool = o.recv_pool;
	if (!d->rpool) {
		d->rpool = ub_loop_recv_pool(loop, &ret);
		if (!d->rpool) {
			free(d->slots);
			free(d);
			goto fail;
		}
	}
	d->rpool->users++;
	d->spool = o.send_pool;
	if (d->spool)
		d->spool->users++;
	for (i = d->nslots; i-- > 0;) {
		d->slots[i].kind = UB_KIND_DSEND;
		d->slots[i].ep = d;
		d->slots[i].next = d->sfree;
		d->sfree = &d->slots[i];
	}
	d->obj.h.kind = UB_KIND_DGRAM;
	d->loop = loop;
	d->fd = fd;
	d->family = family;
	d->flags = o.flags;
	d->udata = o.udata;
	d->rmh.msg_namelen = UB_DG_NAMELEN;
	d->rbudget = o.recv_budget ? o.recv_budget : UB_DEF_RECV_BUDGET;
	d->high = o.high_water ? o.high_water : UB_DG_DEF_HIGH;
	d->low = o.low_water ? o.low_water : d->high / 4;
	d->recv_started = !(o.flags & UB_DGRAM_NO_RECV);
	if ((loop->features & UB_FEAT_UDP_GSO) &&
	    (family == AF_INET || family == AF_INET6)) {
		int proto = 0;
		socklen_t plen = sizeof(proto);

		/* an adopted SOCK_DGRAM may be ICMP or UDP-Lite */
		d->gso = getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto,
				    &plen) == 0 && proto == IPPROTO_UDP;
		d->gso_limit = UB_GSO_MAX_BYTES / 2;
	}
	ub__list_init(&d->dirty_link);
	ub__list_init(&d->wait_link);
	ub__list_init(&d->swait_link);
	ub__list_init(&d->thr_link);
	ub__list_add_tail(&loop->dgrams, &d->obj.h.link);
	loop->nlive++;
	ub__dgram_dirty(d);
	if (err)
		*err = 0;
	return d;
fail:
	if (err)
		*err = ret;
	return NULL;
}

/* What every constructor checks first; a failure changes nothing. */
static int check_new(ub_loop *loop, const ub_dgram_opts *opts)
{
	if (!loop || loop->freeing)
		return -EINVAL;
	return ub_dgram_opts_check(loop, opts, NULL);
}

ub_dgram *ub_dgram_open(ub_loop *loop, const struct sockaddr *addr,
			socklen_t addrlen, const ub_dgram_opts *opts, int *err)
{
	const struct sockaddr_un *un = (const void *)addr;
	ub_dgram *d;
	int fd, ret;

	ret = check_new(loop, opts);
	if (ret < 0)
		goto fail;
	if (!addr || addrlen < sizeof(sa_family_t) ||
	    !family_ok(addr->sa_family) ||
	    !addr_fits(addr, addrlen, addr->sa_family)) {
		ret = -EINVAL;
		goto fail;
	}
	fd = socket(addr->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		goto fail;
	}
	if (opts && (opts->flags & UB_DGRAM_REUSEPORT)) {
		int one = 1;

		if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one,
			       sizeof(one)) < 0) {
			ret = -errno;
			close(fd);
			goto fail;
		}
	}
	if (bind(fd, addr, addrlen) < 0) {
		ret = -errno;
		close(fd);
		goto fail;
	}
	d = new_ep(loop, fd, addr->sa_family, opts, &ret);
	if (!d) {
		close(fd);
		goto fail;
	}
	if (addr->sa_family == AF_UNIX &&
	    addrlen > offsetof(struct sockaddr_un, sun_path) &&
	    un->sun_path[0] != '\0') {
		/* A path we bound: ours to unlink on close (best effort: a
		 * path we cannot remember is simply left behind). */
		d->unix_path = strndup(un->sun_path,
				       addrlen - offsetof(struct sockaddr_un,
							  sun_path));
	}
	return d;
fail:
	if (err)
		*err = ret;
	return NULL;
}

ub_dgram *ub_dgram_adopt(ub_loop *loop, int fd, const ub_dgram_opts *opts,
			 int *err)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(int);
	int type = 0, family = 0, fl, ret;
	ub_dgram *d;

	ret = check_new(loop, opts);
	if (ret < 0)
		goto fail;
	if (fd < 0) {
		ret = -EBADF;
		goto fail;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
		ret = -errno;
		goto fail;
	}
	len = sizeof(family);
	if (type != SOCK_DGRAM ||
	    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0 ||
	    !family_ok(family)) {
		ret = -EINVAL;
		goto fail;
	}
	d = new_ep(loop, fd, family, opts, &ret);
	if (!d)
		goto fail;
	/* io_uring waits itself; a non-blocking file would make some kernels
	 * fail operations with -EAGAIN instead. */
	fl = fcntl(fd, F_GETFL);
	if (fl >= 0 && (fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	len = sizeof(ss);
	d->connected = getpeername(fd, (struct sockaddr *)&ss, &len) == 0;
	return d;
fail:
	if (err)
		*err = ret;
	return NULL;
}

/* ---- receive ---- */

/* The budget in whole buffers of p: at least one, at most the pool. */
static unsigned budget_bufs(const ub_dgram *d, const ub_pool *p)
{
	size_t n = d->rbudget / p->size;

	if (n < 1)
		n = 1;
	if (n > p->count)
		n = p->count;
	return (unsigned)n;
}

static void stop_waiting(ub_dgram *d)
{
	if (d->recv_waiting) {
		d->recv_waiting = false;
		ub__list_del(&d->wait_link);
	}
}

static void set_throttled(ub_dgram *d, bool on, unsigned need)
{
	ub_pool *p = d->rpool;

	d->throttled = on;
	if (!on) {
		ub__list_del(&d->thr_link);
		return;
	}
	/* need UINT_MAX: only its own buffers coming back wake it
	 * (pool.c's uncharge) */
	if (need < p->wake_level)
		p->wake_level = need;
	if (ub__list_empty(&d->thr_link))
		ub__list_add_tail(&p->dthrottled, &d->thr_link);
}

/* How many more datagrams the endpoint may hold now: its budget and, on
 * a pool others use, the share rule of connections (ub__pool_allowance:
 * at most half of what is free above the reserve, so the reserve stays;
 * one holding nothing may always take one).  *need as there. */
static unsigned recv_allow(const ub_dgram *d, unsigned *need)
{
	ub_pool *p = d->rpool;

	return ub__pool_allowance(p, d->obj.rheld, budget_bufs(d, p), need);
}

/*
 * The room of the endpoint's receive (recv_allow); 0: stop (throttled).
 * A multishot receive has no count limit in the kernel, so the limit is
 * on our side: a datagram that arrives with no room is dropped (recycled
 * at once, counted), as a full socket would drop it, and its buffer never
 * stays away from the others.  The receive's promise in the pool's count
 * (what others see as taken) is the room, at most UB_DG_WINDOW and what
 * no other receive was promised: an idle endpoint does not hold back
 * much, and a busy one takes more than its promise if its room allows.
 */
static unsigned recv_room(ub_dgram *d, unsigned *promise)
{
	ub_pool *p = d->rpool;
	unsigned need, n = recv_allow(d, &need), in, others, keep, avail;

	in = ub__pool_in_ring(p);
	others = p->promised - d->promise;
	keep = ub__pool_recv_keep(p);
	avail = in > others + keep ? in - others - keep : 0;
	*promise = n < avail ? n : avail;
	if (*promise > UB_DG_WINDOW)
		*promise = UB_DG_WINDOW;
	set_throttled(d, n == 0, need);
	return n;
}

/* Datagrams wait in the socket (poll: a recv would consume an error the
 * receive is to report). */
static bool backlog(const ub_dgram *d)
{
	struct pollfd pfd = { .fd = d->fd, .events = POLLIN };

	return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
}

/*
 * Arm a receive with room for n datagrams.  The kernel's multishot
 * recvmsg delivers what the socket holds in one pass before a cancel can
 * land, and past the room that is dropped: so multishot only with room
 * for half the budget, or for UB_DG_MS_MIN while nothing waits in the
 * socket (then only a burst arriving within one pass can pass it).  Else a
 * one-shot recvmsg, exactly one buffer, the rest waits in the socket: a
 * slow application near its budget loses nothing the socket can keep.
 */
static int arm_recv(ub_dgram *d, unsigned n, unsigned promise)
{
	ub_pool *p = d->rpool;
	struct io_uring_sqe *sqe;
	unsigned wide = budget_bufs(d, p) / 2;
	bool one = n < UB_DG_MS_MIN ||
		   (n < wide && backlog(d));

	/* No buffer in the ring: wait for one rather than have the kernel
	 * fail the receive at once (pool.c wakes us). */
	if (ub__pool_in_ring(p) == 0) {
		d->recv_waiting = true;
		ub__list_add_tail(&p->dgram_waiters, &d->wait_link);
		return 0;
	}
	sqe = ub__sqe(d->loop);
	if (!sqe)
		return -EBUSY;
	if (one) {
		/* The payload lands at the buffer's start with room left to
		 * move it UB_DGRAM_HDR bytes in (recv_one_done). */
		memset(&d->omh, 0, sizeof(d->omh));
		d->omh.msg_name = &d->osrc;
		d->omh.msg_namelen = sizeof(d->osrc);
		d->oiov.iov_base = NULL;
		d->oiov.iov_len = p->size - UB_DGRAM_HDR;
		d->omh.msg_iov = &d->oiov;
		d->omh.msg_iovlen = 1;
		io_uring_prep_recvmsg(sqe, d->fd, &d->omh, MSG_TRUNC);
		promise = 1;
	} else {
		/* MSG_TRUNC: the header's payloadlen is the real length. */
		io_uring_prep_recvmsg_multishot(sqe, d->fd, &d->rmh,
						MSG_TRUNC);
	}
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = (uint16_t)p->bgid;
	io_uring_sqe_set_data64(sqe, ub__tag(d, UB_OP_RECV));
	ub__pool_promise(p, &d->promise, promise);
	d->arm_tail = p->br_tail;
	d->recv_one = one;
	d->recv_armed = true;
	d->inflight++;
	return 0;
}

static int cancel_op(ub_dgram *d, uint64_t what, bool all)
{
	struct io_uring_sqe *sqe = ub__sqe(d->loop);

	if (!sqe)
		return -EBUSY;
	if (all)
		io_uring_prep_cancel_fd(sqe, d->fd, IORING_ASYNC_CANCEL_ALL);
	else
		io_uring_prep_cancel64(sqe, what, 0);
	io_uring_sqe_set_data64(sqe, ub__tag(d, UB_OP_CANCEL));
	d->inflight++;
	return 0;
}

/* Errors the socket reports about an earlier datagram (ICMP) or a
 * passing condition: told, and the endpoint goes on. */
static bool soft_error(int res)
{
	return res == -ECONNREFUSED || res == -EHOSTUNREACH ||
	       res == -ENETUNREACH || res == -EHOSTDOWN ||
	       res == -ENETDOWN || res == -EMSGSIZE || res == -EINTR ||
	       res == -EAGAIN || res == -ENOMEM || res == -EPERM;
}

/* One datagram in buffer b, res bytes written by the kernel. */
static void deliver(ub_dgram *d, ub_buf *b, int res)
{
	char *base = b->pool->mem + (size_t)b->idx * b->pool->size;
	struct io_uring_recvmsg_out *o, hdr;
	int full;

	o = io_uring_recvmsg_validate(base, res, &d->rmh);
	if (!o) {
		ub__buf_recycle(b);
		ub__dgram_fail(d, -EIO); /* the kernel and we disagree */
		return;
	}
	memcpy(&hdr, o, sizeof(hdr));
	b->dflags = UB_BUF_F_DGRAM;
	b->len = io_uring_recvmsg_payload_length(o, res, &d->rmh);
	if (hdr.flags & MSG_TRUNC)
		b->dflags |= UB_BUF_F_TRUNC;
	full = (hdr.flags & MSG_TRUNC) && hdr.payloadlen > b->len
		       ? (hdr.payloadlen > INT_MAX ? INT_MAX
						   : (int)hdr.payloadlen)
		       : (int)b->len;
	d->nrecv++;
	if (d->closing) {
		ub__buf_recycle(b); /* nobody wants it any more */
		return;
	}
	if (ub__emit_dgram(d->loop, UB_EV_DATA, full, d, b) < 0)
		ub__buf_recycle(b); /* out of memory: cannot deliver */
}

/* The bytes a one-shot receive's datagram of res bytes left in its
 * buffer, once moved into the multishot layout (one_layout). */
static unsigned one_len(const ub_dgram *d, int res)
{
	size_t got = (size_t)res < d->oiov.iov_len ? (size_t)res
						   : d->oiov.iov_len;

	return (unsigned)(UB_DGRAM_HDR + got);
}

/* A one-shot receive put the payload at the buffer's start and the
 * address in osrc: lay them out as a multishot receive does (header,
 * address, payload UB_DGRAM_HDR bytes in), which is what deliver(),
 * ub_buf_data() and ub_buf_addr() read.  A copy, on this path only. */
static void one_layout(ub_dgram *d, ub_buf *b, int res)
{
	char *base = b->pool->mem + (size_t)b->idx * b->pool->size;
	size_t got = one_len(d, res) - UB_DGRAM_HDR;
	socklen_t nl = d->omh.msg_namelen;
	struct io_uring_recvmsg_out o;

	memmove(base + UB_DGRAM_HDR, base, got);
	memset(&o, 0, sizeof(o));
	o.namelen = nl;
	o.payloadlen = (unsigned)res; /* MSG_TRUNC: the real length */
	if (got < (size_t)res)
		o.flags |= MSG_TRUNC;
	memcpy(base, &o, sizeof(o));
	memset(base + sizeof(o), 0, UB_DG_NAMELEN);
	memcpy(base + sizeof(o), &d->osrc,
	       nl < UB_DG_NAMELEN ? nl : UB_DG_NAMELEN);
}

/* An empty datagram from a one-shot receive: the kernel put its buffer
 * back (nothing went in it), so the event carries a send-pool buffer
 * laid out the same way (no receive memory is needed for it, and it is
 * not charged to the budget).  NULL: no such buffer now. */
static ub_buf *empty_buf(ub_dgram *d)
{
	ub_pool *sp = d->spool;
	ub_buf *b;
	int err;

	if (!sp)
		sp = ub_loop_send_pool(d->loop, &err);
	if (!sp || sp->size < UB_DGRAM_HDR)
		return NULL;
	b = ub_pool_acquire(sp, NULL);
	if (b) {
		b->dflags = UB_BUF_F_DGRAM;
		b->len = 0;
		one_layout(d, b, 0);
	}
	return b;
}

/* One more datagram (b already charged to us): delivered while the
 * endpoint had room for it, else dropped (the kernel took it in the pass
 * before our cancel could land). */
static void take_one(ub_dgram *d, ub_buf *b, int len, bool ring)
{
	ub_pool *p = d->rpool;
	unsigned need;

	if (ring && d->promise) {
		/* one out of the ring, one promise less: the unpromised
		 * count is unchanged */
		d->promise--;
		p->promised--;
	}
	/* the room it had before it came (a ring buffer is charged to us
	 * already) */
	if (ub__pool_allowance(p, d->obj.rheld - (ring ? 1 : 0),
			       budget_bufs(d, p), &need)) {
		deliver(d, b, len);
	} else {
		d->ndropped++;
		ub__buf_recycle(b);
	}
}

static void on_recv(ub_dgram *d, int res, unsigned cflags)
{
	ub_pool *p = d->rpool;
	bool one = d->recv_one;

	if (!(cflags & IORING_CQE_F_MORE)) {
		d->recv_armed = false;
		d->recv_cancelling = false;
		d->recv_one = false;
		d->inflight--;
	}
	if (cflags & IORING_CQE_F_BUFFER) {
		ub_buf *b = NULL;
		unsigned len = one && res >= 0 ? one_len(d, res) : (unsigned)res;
		int err;

		if (res < 0 || len == 0 ||
		    ub__pool_take_recv(p, cflags >> UB_CQE_BUFFER_SHIFT, len,
				       cflags, &d->obj, &b, 1, &err) != 1) {
			ub__dgram_fail(d, -EIO);
		} else {
			if (one)
				one_layout(d, b, res);
			take_one(d, b, (int)len, true);
		}
	} else if (one && res == 0) {
		ub_buf *b = empty_buf(d);

		if (b)
			take_one(d, b, UB_DGRAM_HDR, false);
		else
			d->ndropped++;
	} else if (res == -ENOBUFS) {
		/* The ring was empty.  Only a buffer added since the receive
		 * was armed says that trying again can work now. */
		d->nobufs++;
		if (!d->recv_waiting &&
		    (p->br_tail == d->arm_tail || ub__pool_in_ring(p) == 0)) {
			d->recv_waiting = true;
			ub__list_add_tail(&p->dgram_waiters, &d->wait_link);
		}
	} else if (res < 0 && res != -ECANCELED) {
		if (soft_error(res)) {
			if (!d->closing)
				ub__emit_dgram(d->loop, UB_EV_ERROR, res, d,
					       NULL);
		} else {
			ub__dgram_fail(d, res);
		}
	}
	if (!d->recv_armed && d->rpool)
		ub__pool_promise(p, &d->promise, 0);
	ub__dgram_dirty(d);
}

/* ---- send ---- */

static bool same_dest(const struct ub_dsend *a, const struct ub_dsend *b)
{
	return a->mh.msg_namelen == b->mh.msg_namelen &&
	       memcmp(&a->to, &b->to, a->mh.msg_namelen) == 0;
}

/* How many datagrams from s on (s first, queued in a row) one GSO send
 * may take: one destination, s's size, the last no longer; 1: s alone. */
static unsigned gso_run(const ub_dgram *d, const struct ub_dsend *s)
{
	size_t size = s->buf->len, total = size;
	const struct ub_dsend *t;
	unsigned n = 1;

	if (size == 0 || size > d->gso_limit)
		return 1;
	for (t = s->next; t && n < UB_GSO_MAX; t = t->next) {
		size_t len = t->buf->len;

		if (len == 0 || len > size || total + len > UB_GSO_MAX_BYTES ||
		    !same_dest(s, t))
			break;
		n++;
		total += len;
		if (len < size)
			break; /* a shorter one ends the group */
	}
	return n;
}

/* A group for the n datagrams from s on (still queued); NULL: no memory. */
static struct ub_dgso *gso_group(ub_dgram *d, struct ub_dsend *s,
				 unsigned n)
{
	struct ub_dgso *g = d->gfree;
	struct ub_dsend *t = s;
	struct cmsghdr *cm;
	unsigned i;

	if (g) {
		d->gfree = g->next;
	} else {
		g = malloc(sizeof(*g));
		if (!g)
			return NULL;
		g->all = d->gall;
		d->gall = g;
	}
	g->next = NULL;
	g->n = n;
	for (i = 0; i < n; i++, t = t->next) {
		g->slot[i] = t;
		g->iov[i] = t->iov;
	}
	memset(&g->mh, 0, sizeof(g->mh));
	g->mh.msg_name = s->mh.msg_name;
	g->mh.msg_namelen = s->mh.msg_namelen;
	g->mh.msg_iov = g->iov;
	g->mh.msg_iovlen = n;
	memset(&g->cm, 0, sizeof(g->cm));
	g->mh.msg_control = g->cm.buf;
	g->mh.msg_controllen = sizeof(g->cm.buf);
	cm = CMSG_FIRSTHDR(&g->mh);
	cm->cmsg_level = SOL_UDP;
	cm->cmsg_type = UDP_SEGMENT;
	cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
	{
		uint16_t seg = (uint16_t)s->buf->len;

		memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
	}
	return g;
}

static void gso_put(ub_dgram *d, struct ub_dgso *g)
{
	g->next = d->gfree;
	d->gfree = g;
}

static void arm_sends(ub_dgram *d)
{
	struct io_uring_sqe *prev = NULL;

	/* Order: one batch of sends at a time, all in one submission.
	 * With MSG_DONTWAIT each completes at once, in order, and a full
	 * socket refuses every one after the first refused (the kernel's
	 * room check does not depend on the size), so the refused ones are
	 * queued again in order (ub__dgram_send_cqe) and wait for POLLOUT
	 * with everything queued after them behind them (requeue_refused
	 * puts them back first).  (Linked SQEs would make the order strict
	 * even against a reader freeing room mid-batch, but on a
	 * DEFER_TASKRUN ring each link after the first runs at a later
	 * enter: measured, p50 +50% and half the datagrams/s on the echo.) */
	if (d->rhead || d->sends_armed)
		return;
	while (d->phead) {
		struct ub_dsend *s = d->phead;
		struct io_uring_sqe *sqe;
		unsigned n = d->gso ? gso_run(d, s) : 1;
		struct ub_dgso *g = NULL;

		/* ub__sqe submits when the SQ is full, which would cut the
		 * batch: the rest waits for this batch instead */
		if (prev && io_uring_sq_space_left(&d->loop->ring) == 0)
			return;
		/* A size not yet sent grouped goes alone in its batch: if
		 * the socket refuses it, its datagrams go back first, and
		 * none queued after them has left. */
		if (n > 1 && s->buf->len > d->gso_good && prev)
			return;
		if (n > 1) {
			g = gso_group(d, s, n);
			if (!g)
				n = 1; /* out of memory: one at a time */
		}
		sqe = ub__sqe(d->loop);
		if (!sqe) {
			if (g)
				gso_put(d, g);
			retry_later(d);
			return;
		}
		while (n--) {
			struct ub_dsend *t = d->phead;

			d->phead = t->next;
			t->next = NULL;
		}
		if (!d->phead)
			d->ptail = NULL;
		/* MSG_DONTWAIT: a full socket completes with -EAGAIN and the
		 * slot waits for POLLOUT here.  Left to the kernel, the retry
		 * of a Unix datagram sendmsg sends what is left of an iovec
		 * the refused attempt already copied from: an empty datagram
		 * (unix_dgram_sendmsg copies, then finds the peer full). */
		io_uring_prep_sendmsg(sqe, d->fd, g ? &g->mh : &s->mh,
				      MSG_NOSIGNAL | MSG_DONTWAIT);
		s->grp = g;
		io_uring_sqe_set_data64(sqe, ub__tag(s, UB_OP_SEND));
		prev = sqe;
		d->sends_armed++;
		d->inflight++;
		if (d->cancel_sent)
			d->cancel_sent = false; /* armed after it: once more */
		if (g && s->buf->len > d->gso_good)
			return; /* alone (above) */
	}
}

/* Wait until the socket can take a datagram again (one poll at a time;
 * UB_OP_CONNECT on an endpoint is this wait: it has no connect op). */
static void arm_pollout(ub_dgram *d)
{
	struct io_uring_sqe *sqe;

	if (d->poll_armed || d->closing)
		return;
	sqe = ub__sqe(d->loop);
	if (!sqe) {
		retry_later(d);
		return;
	}
	io_uring_prep_poll_add(sqe, d->fd, POLLOUT);
	io_uring_sqe_set_data64(sqe, ub__tag(d, UB_OP_CONNECT));
	d->inflight++;
	d->poll_armed = true;
}

/* The refused datagrams go first, in the order they were queued. */
static void requeue_refused(ub_dgram *d)
{
	if (!d->rhead)
		return;
	d->rtail->next = d->phead;
	if (!d->phead)
		d->ptail = d->rtail;
	d->phead = d->rhead;
	d->rhead = d->rtail = NULL;
}

/* s was refused for want of room: it waits for POLLOUT (in order). */
static void refused(ub_dgram *d, struct ub_dsend *s)
{
	s->next = NULL;
	if (d->rtail)
		d->rtail->next = s;
	else
		d->rhead = s;
	d->rtail = s;
}

static void sent_one(ub_dgram *d, struct ub_dsend *s, int res);

/* The socket is full.  A connected endpoint, or an inet one, can wait for
 * POLLOUT and send the datagram again, whole.  An unconnected Unix one
 * cannot: POLLOUT says nothing about the peer it sends to, which has no
 * wait of its own to offer, so the datagram is reported not sent (ERROR
 * -EAGAIN) rather than sent empty or retried in a spin. */
static bool waits_for_room(const ub_dgram *d, int res)
{
	return !d->closing && res == -EAGAIN &&
	       (d->connected || d->family != AF_UNIX);
}

/* A GSO group's completion: res for each of its datagrams. */
static void group_done(ub_dgram *d, struct ub_dsend *s, int res)
{
	struct ub_dgso *g = s->grp;
	unsigned i, size = (unsigned)s->buf->len;

	bool unsegmented = !d->closing &&
			   (res == -EINVAL || res == -EMSGSIZE ||
			    res == -EIO || res == -EOPNOTSUPP);

	s->grp = NULL;
	if (res >= 0 && size > d->gso_good)
		d->gso_good = size;
	if (unsegmented) {
		/* The socket will not segment this: a size past the path's
		 * MTU (EINVAL, EMSGSIZE) is not grouped again, a device that
		 * cannot checksum (EIO) ends grouping here.  Its datagrams go
		 * again one at a time, first, in order, as refused ones do
		 * (the POLLOUT wait ends at once).  A size not sent grouped
		 * before went alone (arm_sends), so nothing queued after it
		 * has left; one that was (to a destination whose path has a
		 * smaller MTU) may have had datagrams of other sizes to that
		 * destination leave before it. */
		if (res == -EIO || res == -EOPNOTSUPP || size <= 1)
			d->gso = false;
		else if (size - 1 < d->gso_limit)
			d->gso_limit = size - 1;
	}
	if (unsegmented || waits_for_room(d, res)) {
		for (i = 0; i < g->n; i++)
			refused(d, g->slot[i]);
		gso_put(d, g);
		arm_pollout(d);
		ub__dgram_dirty(d);
		return;
	}
	for (i = 0; i < g->n; i++)
		sent_one(d, g->slot[i], res);
	gso_put(d, g);
}

void ub__dgram_send_cqe(struct ub_dsend *s, int res)
{
	ub_dgram *d = s->ep;

	d->inflight--;
	d->sends_armed--;
	if (res >= 0)
		d->nsendops++;
	if (s->grp) {
		group_done(d, s, res);
		return;
	}
	if (waits_for_room(d, res)) {
		refused(d, s);
		arm_pollout(d);
		ub__dgram_dirty(d);
		return;
	}
	sent_one(d, s, res);
}

/* s is done with (res: its send's, or the group's). */
static void sent_one(ub_dgram *d, struct ub_dsend *s, int res)
{
	ub_buf *b = s->buf;

	d->nqueued--;
	d->qbytes -= b->len;
	if (res >= 0)
		d->nsent++;
	else if (!d->closing)
		ub__emit_dgram(d->loop, UB_EV_ERROR, res, d, NULL);
	s->buf = NULL;
	s->next = d->sfree;
	d->sfree = s;
	ub__buf_recycle(b); /* the kernel is done with it */
	ub__dgram_dirty(d);
}

/* Whether a datagram to addr may be queued now. */
static int check_sendable(ub_dgram *d, const struct sockaddr *addr)
{
	if (d->closing || d->closed)
		return -EPIPE;
	if (!addr && !d->connected)
		return -EDESTADDRREQ;
	return 0;
}

/* At or above the mark: no slot free, the high mark reached, or soft
 * water left datagrams waiting (they go first, even once it is off). */
static bool above(const ub_dgram *d)
{
	return !d->sfree || d->qbytes >= d->high || d->spill_head;
}

static int check_room(ub_dgram *d)
{
	if (above(d)) {
		d->want_writable = true;
		return -EAGAIN;
	}
	return 0;
}

/* The application's handle of b is spent from here on. */
static void mark_queued(ub_buf *b)
{
	ub__buf_set_state(b, UB_BUF_QUEUED);
	b->gen++;
}

/* The endpoint's send pool, the loop's default made on first need.
 * -ENOMEM. */
static int ensure_spool(ub_dgram *d)
{
	int ret = 0;

	if (!d->spool) {
		d->spool = ub_loop_send_pool(d->loop, &ret);
		if (!d->spool)
			return ret;
		d->spool->users++;
	}
	return 0;
}

/* b (QUEUED from here on) into a free slot, at the end of the FIFO.
 * Counted by the caller. */
static void fill_slot(ub_dgram *d, ub_buf *b, const struct sockaddr *addr,
		      socklen_t addrlen)
{
	struct ub_dsend *s = d->sfree;

	d->sfree = s->next;
	s->next = NULL;
	s->buf = b;
	memset(&s->mh, 0, sizeof(s->mh));
	if (addr) {
		/* Copied first: addr may lie in b itself (a reply). */
		memcpy(&s->to, addr, addrlen);
		s->mh.msg_name = &s->to;
		s->mh.msg_namelen = addrlen;
	}
	mark_queued(b);
	s->iov.iov_base = ub_buf_data(b);
	s->iov.iov_len = b->len;
	s->mh.msg_iov = &s->iov;
	s->mh.msg_iovlen = 1;
	if (d->ptail)
		d->ptail->next = s;
	else
		d->phead = s;
	d->ptail = s;
	ub__dgram_dirty(d);
}

static void queue_buf(ub_dgram *d, ub_buf *b, const struct sockaddr *addr,
		      socklen_t addrlen)
{
	fill_slot(d, b, addr, addrlen);
	d->nqueued++;
	d->qbytes += b->len;
	if (d->qbytes >= d->high || !d->sfree)
		d->want_writable = true;
}

/*
 * Soft water: a datagram that cannot take a slot now waits at the end of
 * the spill, counted as queued.  buf: a QUEUED buffer (NULL: len bytes of
 * data copied here).  -ENOMEM, with nothing changed.
 */
static int spill(ub_dgram *d, ub_buf *buf, const void *data, size_t len,
		 const struct sockaddr *addr, socklen_t addrlen)
{
	struct ub_dspill *e;

	e = malloc(sizeof(*e) + (buf ? 0 : len));
	if (!e)
		return -ENOMEM;
	e->next = NULL;
	e->buf = buf;
	e->len = len;
	e->tolen = addr ? addrlen : 0;
	if (addr) /* addr may lie in buf itself (a reply): copied now */
		memcpy(&e->to, addr, addrlen);
	if (!buf && len)
		memcpy(e->data, data, len);
	if (buf)
		mark_queued(buf);
	if (d->spill_tail)
		d->spill_tail->next = e;
	else
		d->spill_head = e;
	d->spill_tail = e;
	d->nqueued++;
	d->qbytes += len;
	if (above(d))
		d->want_writable = true;
	ub__dgram_dirty(d);
	return 0;
}

/* Wait for a buffer of the send pool (pool.c wakes the endpoint). */
static void wait_spool(ub_dgram *d)
{
	d->want_spool = true;
	if (ub__list_empty(&d->swait_link))
		ub__list_add_tail(&d->spool->dsend_waiters, &d->swait_link);
}

static void spill_pop(ub_dgram *d, struct ub_dspill *e)
{
	d->spill_head = e->next;
	if (!d->spill_head)
		d->spill_tail = NULL;
	free(e);
}

/* Drop what waits (closing with no send-pool buffer in sight, or the
 * endpoint is going): buffers back to their pools. */
static void spill_drop(ub_dgram *d)
{
	while (d->spill_head) {
		struct ub_dspill *e = d->spill_head;

		d->nqueued--;
		d->qbytes -= e->len;
		if (e->buf)
			ub__buf_recycle(e->buf);
		spill_pop(d, e);
	}
}

/* Move waiting datagrams into free slots, oldest first.  A copy takes a
 * send-pool buffer; with none free the rest waits for one. */
static void unspill(ub_dgram *d)
{
	while (d->spill_head && d->sfree) {
		struct ub_dspill *e = d->spill_head;
		ub_buf *b = e->buf;

		if (!b) {
			b = d->spool ? ub_pool_acquire(d->spool, NULL) : NULL;
			if (!b) {
				if (d->spool)
					wait_spool(d);
				return;
			}
			if (e->len)
				memcpy(ub_buf_data(b), e->data, e->len);
			b->len = (uint32_t)e->len;
		}
		fill_slot(d, b, e->tolen ? (struct sockaddr *)&e->to : NULL,
			  e->tolen);
		spill_pop(d, e);
	}
}

int ub_dgram_send_buf(ub_dgram *d, ub_buf *buf, const struct sockaddr *addr,
		      socklen_t addrlen)
{
	bool copy;
	int ret;

	if (!d || !buf || !ub__buf_usable(buf) ||
	    buf->pool->loop != d->loop ||
	    (addr && !addr_fits(addr, addrlen, d->family)))
		return -EINVAL;
	ret = check_sendable(d, addr);
	if (ret < 0)
		return ret;
	if (d->flags & UB_DGRAM_SOFT_WATER) {
		if (d->sfree && !d->spill_head) {
			queue_buf(d, buf, addr, addrlen);
			return above(d);
		}
		copy = false;
		if (!(buf->pool->flags & UB_POOL_RECV)) {
			/* (the pool its copy will take a buffer of) */
			ret = ensure_spool(d);
			if (ret < 0)
				return ret;
			copy = buf->len <= d->spool->size;
		}
		if (copy) {
			/* A send-pool buffer waiting here could be the one
			 * the copies before it wait for: copied, and back.
			 * One larger than the send pool's (of another pool)
			 * waits as it is: no buffer held that way is ever
			 * one its holder's copies wait for, so no two
			 * endpoints can wait on each other. */
			ret = spill(d, NULL, ub_buf_data(buf), buf->len, addr,
				    addrlen);
			if (ret < 0)
				return ret; /* buf stays APP */
			ub__buf_recycle(buf); /* the handle is spent */
		} else {
			ret = spill(d, buf, NULL, buf->len, addr, addrlen);
			if (ret < 0)
				return ret;
		}
		return above(d);
	}
	ret = check_room(d);
	if (ret < 0)
		return ret;
	queue_buf(d, buf, addr, addrlen);
	return 0;
}

ssize_t ub_dgram_send(ub_dgram *d, const void *data, size_t len,
		      const struct sockaddr *addr, socklen_t addrlen)
{
	ub_buf *b;
	int ret;

	if (!d || (!data && len) ||
	    (addr && !addr_fits(addr, addrlen, d->family)))
		return -EINVAL;
	ret = check_sendable(d, addr);
	if (ret < 0)
		return ret;
	ret = ensure_spool(d);
	if (ret < 0)
		return ret;
	if (len > d->spool->size)
		return -EMSGSIZE; /* one datagram is one buffer: never split */
	if (d->flags & UB_DGRAM_SOFT_WATER) {
		/* Into the pool while a slot is free, nothing waits and the
		 * endpoint is below its mark (above it, it takes no more of
		 * a shared pool); else a copy that waits. */
		b = NULL;
		if (d->sfree && !d->spill_head && d->qbytes < d->high) {
			b = ub_pool_acquire(d->spool, NULL);
			if (!b)
				wait_spool(d);
		}
		if (!b) {
			ret = spill(d, NULL, data, len, addr, addrlen);
			return ret < 0 ? ret : (ssize_t)len;
		}
		if (len)
			memcpy(ub_buf_data(b), data, len);
		b->len = (uint32_t)len;
		queue_buf(d, b, addr, addrlen);
		return (ssize_t)len;
	}
	ret = check_room(d);
	if (ret < 0)
		return ret;
	b = ub_pool_acquire(d->spool, NULL);
	if (!b) {
		/* WRITABLE once the pool has a buffer again (pool.c). */
		d->want_writable = true;
		d->want_spool = true;
		if (ub__list_empty(&d->swait_link))
			ub__list_add_tail(&d->spool->dsend_waiters,
					  &d->swait_link);
		return -EAGAIN;
	}
	if (len)
		memcpy(ub_buf_data(b), data, len);
	b->len = (uint32_t)len;
	queue_buf(d, b, addr, addrlen);
	return (ssize_t)len;
}

/* ---- the one place that talks to the kernel about an endpoint ---- */

static void finalize(ub_dgram *d)
{
	ub__dgram_free(d);
	d->closed = true;
	ub__emit_dgram(d->loop, UB_EV_CLOSED, d->close_res, d, NULL);
}

void ub__dgram_update(ub_dgram *d)
{
	bool want_recv;
	unsigned n, promise = 0;

	if (d->closed)
		return;
	if (d->closing)
		requeue_refused(d); /* one last try each, before the cancel */
	unspill(d);
	if (d->closing && d->spill_head && !d->inflight && !d->phead) {
		/* A copy waits for a send-pool buffer that nothing of ours
		 * will bring back: not forever. */
		ub__list_del(&d->swait_link);
		d->want_spool = false;
		spill_drop(d);
	}
	arm_sends(d);
	if (d->closing) {
		stop_waiting(d);
		set_throttled(d, false, 0);
		if (d->inflight == 0 && !d->phead && !d->spill_head) {
			finalize(d);
		} else if (!d->cancel_sent && d->inflight) {
			/* After the sends above in the same submission: what
			 * the socket takes at once has gone out. */
			if (cancel_op(d, 0, true) == 0)
				d->cancel_sent = true;
			else
				retry_later(d);
		}
		return;
	}
	if (d->want_writable && !d->want_spool && d->qbytes <= d->low &&
	    d->nqueued <= d->nslots / 4) {
		d->want_writable = false;
		ub__emit_dgram(d->loop, UB_EV_WRITABLE, 0, d, NULL);
	}
	if (d->rhead && !d->poll_armed)
		arm_pollout(d); /* an SQE was short when it was refused */
	want_recv = d->recv_started && !d->user_paused;
	/* The budget and the pool's share: at them, stop (datagrams wait in
	 * the socket) until a buffer of ours comes back or the pool has
	 * room (pool.c dirties us then). */
	if (want_recv) {
		n = recv_room(d, &promise);
		if (d->recv_armed) {
			/* Its promise follows the room as buffers come and
			 * go; a multishot one with little room gives way to a
			 * one-shot one (armed after its last CQE). */
			ub__pool_promise(d->rpool, &d->promise,
					 d->recv_one && promise > 1 ? 1
								   : promise);
			if (!d->recv_one && n < UB_DG_MS_MIN)
				want_recv = false;
		}
		if (!n)
			want_recv = false;
	} else {
		/* paused: what the kernel delivers before the cancel lands
		 * is still within the promise, and delivered */
		set_throttled(d, false, 0);
		n = 0;
	}
	if (want_recv && !d->recv_armed && !d->recv_waiting) {
		if (arm_recv(d, n, promise) < 0)
			retry_later(d);
	} else if (!want_recv && d->recv_armed && !d->recv_cancelling) {
		if (cancel_op(d, ub__tag(d, UB_OP_RECV), false) == 0)
			d->recv_cancelling = true;
		else
			retry_later(d);
	}
	if (!want_recv)
		stop_waiting(d);
}

void ub__dgram_cqe(ub_dgram *d, enum ub_op op, int res, unsigned cflags)
{
	switch (op) {
	case UB_OP_RECV:
		on_recv(d, res, cflags);
		break;
	case UB_OP_CONNECT: /* the POLLOUT wait (arm_pollout) */
		d->inflight--;
		d->poll_armed = false;
		requeue_refused(d); /* closing: one last try, then recycled */
		ub__dgram_dirty(d);
		break;
	case UB_OP_CANCEL:
		d->inflight--;
		/* Done when it found its operations or none (-ENOENT); what
		 * it cancelled completes by itself.  Tried again only when
		 * the kernel could not (-EALREADY: running). */
		if (res < 0 && res != -ENOENT)
			d->cancel_sent = false;
		ub__dgram_dirty(d);
		break;
	default:
		break;
	}
}

void ub__dgram_fail(ub_dgram *d, int err)
{
	if (d->closing || d->closed)
		return;
	if (err && !(err == -ECANCELED && d->loop->freeing))
		ub__emit_dgram(d->loop, UB_EV_ERROR, err, d, NULL);
	d->closing = true;
	d->close_res = err;
	ub__list_del(&d->swait_link);
	d->want_spool = false;
	ub__dgram_dirty(d);
}

/* Release what the endpoint holds.  Idempotent; only when nothing is armed
 * in the kernel. */
void ub__dgram_free(ub_dgram *d)
{
	stop_waiting(d);
	ub__list_del(&d->swait_link);
	if (d->dirty) {
		ub__list_del(&d->dirty_link);
		d->dirty = false;
	}
	/* Queued but never armed, or refused and waiting, or waiting for
	 * a slot (the loop is going): back to their pools. */
	spill_drop(d);
	requeue_refused(d);
	while (d->phead) {
		struct ub_dsend *s = d->phead;

		d->phead = s->next;
		d->nqueued--;
		d->qbytes -= s->buf->len;
		ub__buf_recycle(s->buf);
		s->buf = NULL;
	}
	d->ptail = NULL;
	while (d->gall) {
		struct ub_dgso *g = d->gall;

		d->gall = g->all;
		free(g);
	}
	d->gfree = NULL;
	free(d->slots);
	d->slots = d->sfree = NULL;
	if (d->rpool) {
		set_throttled(d, false, 0);
		ub__pool_promise(d->rpool, &d->promise, 0);
		if (d->obj.rheld)
			ub__pool_disown(d->rpool, &d->obj);
		d->rpool->users--;
		d->rpool = NULL;
	}
	if (d->spool) {
		d->spool->users--;
		d->spool = NULL;
	}
	if (d->fd >= 0) {
		close(d->fd);
		d->fd = -1;
	}
	if (d->unix_path) {
		unlink(d->unix_path);
		free(d->unix_path);
		d->unix_path = NULL;
	}
}

/* ---- public API ---- */

int ub_dgram_connect(ub_dgram *d, const struct sockaddr *addr,
		     socklen_t addrlen)
{
	if (!d || !addr_fits(addr, addrlen, d->family))
		return -EINVAL;
	if (d->closing || d->closed)
		return -EPIPE;
	if (connect(d->fd, addr, addrlen) < 0)
		return -errno;
	d->connected = true;
	return 0;
}

int ub_dgram_close(ub_dgram *d)
{
	if (!d)
		return -EINVAL;
	if (d->closing || d->closed)
		return -EPIPE;
	d->closing = true;
	d->close_res = 0;
	d->want_writable = false;
	ub__list_del(&d->swait_link);
	d->want_spool = false;
	ub__dgram_dirty(d);
	return 0;
}

int ub_dgram_pause_recv(ub_dgram *d)
{
	if (!d)
		return -EINVAL;
	if (d->closing || d->closed)
		return -EPIPE;
	d->user_paused = true;
	ub__dgram_dirty(d);
	return 0;
}

int ub_dgram_resume_recv(ub_dgram *d)
{
	if (!d)
		return -EINVAL;
	if (d->closing || d->closed)
		return -EPIPE;
	d->user_paused = false;
	d->recv_started = true;
	ub__dgram_dirty(d);
	return 0;
}

int ub_dgram_want_writable(ub_dgram *d)
{
	if (!d)
		return -EINVAL;
	if (d->closing || d->closed)
		return -EPIPE;
	d->want_writable = true;
	ub__dgram_dirty(d);
	return 0;
}

int ub_dgram_set_soft_water(ub_dgram *d, int on)
{
	if (!d)
		return -EINVAL;
	if (on)
		d->flags |= UB_DGRAM_SOFT_WATER;
	else
		d->flags &= ~(unsigned)UB_DGRAM_SOFT_WATER;
	return 0;
}

int ub_dgram_set_water(ub_dgram *d, size_t high, size_t low)
{
	if (!d || ub_water_check(high, low, NULL) < 0)
		return -EINVAL;
	d->high = high;
	d->low = low;
	ub__dgram_dirty(d);
	return 0;
}

int ub_dgram_set_recv_budget(ub_dgram *d, size_t bytes)
{
	if (!d || bytes == 0)
		return -EINVAL;
	d->rbudget = bytes;
	ub__dgram_dirty(d); /* a larger budget may let it receive again */
	return 0;
}

int ub_dgram_fd(const ub_dgram *d) { return d ? d->fd : -EINVAL; }
ub_loop *ub_dgram_loop(const ub_dgram *d) { return d ? d->loop : NULL; }
void *ub_dgram_udata(const ub_dgram *d) { return d ? d->udata : NULL; }
void ub_dgram_set_udata(ub_dgram *d, void *udata) { if (d) d->udata = udata; }
size_t ub_dgram_queued_bytes(const ub_dgram *d) { return d ? d->qbytes : 0; }
unsigned ub_dgram_queued_bufs(const ub_dgram *d) { return d ? d->nqueued : 0; }
size_t ub_dgram_high_water(const ub_dgram *d) { return d ? d->high : 0; }
size_t ub_dgram_low_water(const ub_dgram *d) { return d ? d->low : 0; }
int ub_dgram_family(const ub_dgram *d) { return d ? d->family : 0; }
ub_pool *ub_dgram_send_pool(const ub_dgram *d) { return d ? d->spool : NULL; }

int ub_dgram_is_closing(const ub_dgram *d)
{
	if (!d)
		return -EINVAL;
	return d->closing || d->closed;
}
uint64_t ub_dgram_received(const ub_dgram *d) { return d ? d->nrecv : 0; }
uint64_t ub_dgram_sent(const ub_dgram *d) { return d ? d->nsent : 0; }
uint64_t ub_dgram_nobufs(const ub_dgram *d) { return d ? d->nobufs : 0; }
uint64_t ub_dgram_send_ops(const ub_dgram *d) { return d ? d->nsendops : 0; }
uint64_t ub_dgram_dropped(const ub_dgram *d) { return d ? d->ndropped : 0; }
size_t ub_dgram_recv_budget(const ub_dgram *d) { return d ? d->rbudget : 0; }
unsigned ub_dgram_recv_held(const ub_dgram *d) { return d ? d->obj.rheld : 0; }
int ub_dgram_recv_throttled(const ub_dgram *d) { return d ? d->throttled : -EINVAL; }

/* ---- received datagrams' buffers ---- */

static bool is_dgram_buf(const ub_buf *b)
{
	return b && (b->dflags & UB_BUF_F_DGRAM) &&
	       (b->state == UB_BUF_APP || b->state == UB_BUF_QUEUED);
}

const struct sockaddr *ub_buf_addr(const ub_buf *b, socklen_t *addrlen)
{
	struct io_uring_recvmsg_out hdr;
	const char *base;

	if (addrlen)
		*addrlen = 0;
	if (!is_dgram_buf(b))
		return NULL;
	base = b->pool->mem + (size_t)b->idx * b->pool->size;
	memcpy(&hdr, base, sizeof(hdr));
	if (hdr.namelen > UB_DG_NAMELEN)
		hdr.namelen = UB_DG_NAMELEN; /* cut by the kernel: ours */
	if (hdr.namelen < sizeof(sa_family_t))
		return NULL; /* an unbound sender */
	if (addrlen)
		*addrlen = hdr.namelen;
	/* 8-aligned: pool sizes are multiples of 8 (rpool_ok). */
	return (const struct sockaddr *)(const void *)(base + sizeof(hdr));
}

int ub_buf_addr_format(const ub_buf *b, char *out, size_t outlen)
{
	socklen_t len;
	const struct sockaddr *sa = ub_buf_addr(b, &len);

	if (!sa)
		return -EINVAL;
	return ub_addr_format(sa, len, out, outlen);
}

int ub_buf_truncated(const ub_buf *b)
{
	return is_dgram_buf(b) && (b->dflags & UB_BUF_F_TRUNC);
}
