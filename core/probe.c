/*
 * probe.c - ring setup and the one-time kernel feature probe.
 *
 * Owns: the decision of which io_uring features a loop uses, and a readable
 * reason for every feature it does not use.  Features are tested by doing
 * the operation once on a socketpair where a feature bit alone could lie
 * (a kernel may know the bit but refuse the flag combination we use).
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *const feat_names[UB_NFEAT] = {
	"single_issuer", "recv_multishot", "accept_multishot", "send_ring",
	"send_bundle",   "recv_bundle",    "pbuf_inc",    "recv_limit",
	"udp_gso",
};

const char *ub_feature_name(unsigned feature)
{
	unsigned i;

	for (i = 0; i < UB_NFEAT; i++)
		if (feature == (1u << i))
			return feat_names[i];
	return NULL;
}

static int feat_index(unsigned feature)
{
	unsigned i;

	for (i = 0; i < UB_NFEAT; i++)
		if (feature == (1u << i))
			return (int)i;
	return -1;
}

const char *ub_loop_feature_reason(const ub_loop *loop, unsigned feature)
{
	int i = feat_index(feature);

	if (!loop || i < 0)
		return "unknown feature";
	if (loop->features & feature)
		return NULL;
	return loop->reason[i] ? loop->reason[i] : "not available";
}

static void no(ub_loop *loop, unsigned feature, const char *why)
{
	int i = feat_index(feature);

	loop->features &= ~feature;
	if (i >= 0 && !loop->reason[i])
		loop->reason[i] = why;
}

/* Probe operations' user_data: low bits UB_OP_NONE, so that a completion
 * that arrives late is ignored by the loop instead of decoded. */
#define PROBE_SEND ((uint64_t)1 << 3)
#define PROBE_RECV ((uint64_t)2 << 3)

/* Wait for one CQE with user_data ud (bounded); returns res, flags in *fl. */
static int probe_wait(ub_loop *loop, uint64_t ud, unsigned *fl)
{
	struct __kernel_timespec ts = { .tv_sec = 1, .tv_nsec = 0 };
	struct io_uring_cqe *cqe;
	int tries;

	for (tries = 0; tries < 8; tries++) {
		int ret = io_uring_submit_and_wait_timeout(&loop->ring, &cqe, 1,
							   &ts, NULL);
		if (ret < 0 && ret != -EINTR)
			return ret;
		if (ret < 0 || !cqe)
			continue;
		if (cqe->user_data == ud) {
			int res = cqe->res;

			if (fl)
				*fl = cqe->flags;
			io_uring_cqe_seen(&loop->ring, cqe);
			return res;
		}
		io_uring_cqe_seen(&loop->ring, cqe);
	}
	return -ETIME;
}

/* A one-byte send taken from a provided-buffer ring (bundle or not). */
static int probe_send_select(ub_loop *loop, bool bundle)
{
	static char byte = 'p';
	struct io_uring_buf_ring *br;
	struct io_uring_sqe *sqe;
	size_t brlen;
	int sv[2], bgid, ret;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	ret = ub__buf_ring_new(loop, 1, 0, &br, &brlen, &bgid);
	if (ret < 0)
		goto out;
	io_uring_buf_ring_add(br, &byte, 1, 0, 0, 0);
	io_uring_buf_ring_advance(br, 1);
	sqe = io_uring_get_sqe(&loop->ring);
	io_uring_prep_send(sqe, sv[0], NULL, 0, MSG_NOSIGNAL);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = (uint16_t)bgid;
	if (bundle)
		sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	sqe->user_data = PROBE_SEND;
	ret = probe_wait(loop, PROBE_SEND, NULL);
	/* Still armed after the wait gave up: the kernel may yet read the
	 * ring, so leave it (and its group id) alone. */
	if (ret != -ETIME)
		ub__buf_ring_free(loop, br, brlen, bgid);
	if (ret == 1)
		ret = 0;
	else if (ret >= 0)
		ret = -EIO;
out:
	close(sv[0]);
	close(sv[1]);
	return ret;
}

/*
 * Multishot recv into a provided-buffer ring: one byte, CQE_F_MORE set.
 * With limit, a byte limit of 1 (sqe->optlen, Linux 6.17): the one byte
 * must end the multishot (no CQE_F_MORE).  Older kernels refuse the field
 * with -EINVAL; one that ignored it would go on, which also counts as no.
 */
static int probe_recv_multishot(ub_loop *loop, bool limit)
{
	static char slot[16];
	struct io_uring_buf_ring *br;
	struct io_uring_sqe *sqe;
	unsigned fl = 0;
	size_t brlen;
	int sv[2], bgid, ret, i;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	ret = ub__buf_ring_new(loop, 1, 0, &br, &brlen, &bgid);
	if (ret < 0)
		goto out;
	io_uring_buf_ring_add(br, slot, sizeof(slot), 0, 0, 0);
	io_uring_buf_ring_advance(br, 1);
	sqe = io_uring_get_sqe(&loop->ring);
	io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = (uint16_t)bgid;
	if (limit)
		sqe->file_index = 1; /* optlen in newer headers */
	sqe->user_data = PROBE_RECV;
	fl = IORING_CQE_F_MORE; /* armed until a CQE says otherwise */
	if (write(sv[1], "x", 1) != 1) {
		ret = -EIO;
	} else {
		ret = probe_wait(loop, PROBE_RECV, &fl);
		if (ret == 1)
			ret = !(fl & IORING_CQE_F_MORE) == limit ? 0
								 : -EOPNOTSUPP;
		else if (ret >= 0)
			ret = -EIO;
	}
	/* End the multishot (EOF or -ENOBUFS) and reap it before the ring
	 * it reads from goes away. */
	shutdown(sv[1], SHUT_RDWR);
	for (i = 0; (fl & IORING_CQE_F_MORE) && i < 8; i++) {
		int r = probe_wait(loop, PROBE_RECV, &fl);

		if (r == -ETIME)
			fl = IORING_CQE_F_MORE;
	}
	if (fl & IORING_CQE_F_MORE) /* never ended: leave its ring be */
		ret = ret < 0 ? ret : -EIO;
	else
		ub__buf_ring_free(loop, br, brlen, bgid);
out:
	close(sv[0]);
	close(sv[1]);
	return ret;
}

int ub__buf_ring_head(ub_loop *loop, int bgid, unsigned *head)
{
	struct ub_buf_status st;
	long ret;

	memset(&st, 0, sizeof(st));
	st.buf_group = (uint32_t)bgid;
	ret = syscall(__NR_io_uring_register, loop->ring.ring_fd,
		      UB_REGISTER_PBUF_STATUS, &st, 1);
	if (ret < 0)
		return -errno;
	*head = st.head;
	return 0;
}

static int setup_ring(ub_loop *loop, unsigned entries)
{
	struct io_uring_params p;
	int ret;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
		  IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
	/* TASKRUN_FLAG: the kernel runs deferred task work at most 20 items
	 * per enter and sets IORING_SQ_TASKRUN while some is left; without
	 * the flag nothing shows it, and a loop driven by the eventfd (which
	 * the kernel signals only when that list goes from empty to not
	 * empty) could sleep on work that is never run (seen: the asyncio
	 * --pipe proxy test stalled under load).  ub_loop_wait() reads it. */
	p.cq_entries = entries * 16;
	ret = io_uring_queue_init_params(entries, &loop->ring, &p);
	if (ret == 0) {
		loop->features |= UB_FEAT_SINGLE_ISSUER;
		/* Every io_uring_enter() then skips the fd table lookup
		 * (fget/fput: 2-4% of the proxy's CPU, bench/RESULTS.md).
		 * Best effort: an older kernel simply refuses. */
		(void)io_uring_register_ring_fd(&loop->ring);
		return 0;
	}
	if (ret != -EINVAL)
		return ret;
	no(loop, UB_FEAT_SINGLE_ISSUER,
	   "IORING_SETUP_SINGLE_ISSUER|DEFER_TASKRUN refused (needs Linux 6.1)");
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
	p.cq_entries = entries * 16;
	return io_uring_queue_init_params(entries, &loop->ring, &p);
}

int ub__probe(ub_loop *loop, unsigned entries, unsigned disable)
{
	struct io_uring_buf_ring *br;
	size_t brlen;
	int ret, bgid;

	loop->features = 0;
	ret = setup_ring(loop, entries);
	if (ret < 0)
		return ret;
	/* Assume the rest until a probe below says otherwise. */
	loop->features |= UB_FEAT_ALL & ~(unsigned)UB_FEAT_SINGLE_ISSUER;
	if (!(loop->ring.features & IORING_FEAT_NODROP) ||
	    !(loop->ring.features & IORING_FEAT_EXT_ARG)) {
		io_uring_queue_exit(&loop->ring);
		return -ENOSYS; /* older than 5.11: not supported at all */
	}

	ret = probe_recv_multishot(loop, false);
	if (ret == -EINVAL || ret == -EOPNOTSUPP || ret == -ENOENT) {
		no(loop, UB_FEAT_RECV_MULTISHOT,
		   "multishot recv with provided buffers refused (needs Linux 6.0)");
		no(loop, UB_FEAT_ACCEPT_MULTISHOT,
		   "multishot accept assumed absent where multishot recv is "
		   "(needs Linux 5.19)");
	} else if (ret < 0) {
		/* Provided-buffer rings themselves are missing (< 5.19). */
		io_uring_queue_exit(&loop->ring);
		return -ENOSYS;
	} else if (probe_recv_multishot(loop, true) < 0) {
		no(loop, UB_FEAT_RECV_LIMIT,
		   "multishot recv byte limit (sqe->optlen) refused "
		   "(needs Linux 6.17): receives are one-shot, one buffer "
		   "each, so that receive budgets hold");
	}

	if (!(loop->ring.features & IORING_FEAT_RECVSEND_BUNDLE)) {
		const char *why =
			"kernel lacks IORING_FEAT_RECVSEND_BUNDLE (needs Linux 6.10)";
		no(loop, UB_FEAT_SEND_BUNDLE, why);
		no(loop, UB_FEAT_RECV_BUNDLE, why);
	}
	if (probe_send_select(loop, false) < 0) {
		no(loop, UB_FEAT_SEND_RING,
		   "send with IOSQE_BUFFER_SELECT refused (needs Linux 6.10)");
		no(loop, UB_FEAT_SEND_BUNDLE,
		   "send with IOSQE_BUFFER_SELECT refused (needs Linux 6.10)");
	} else if ((loop->features & UB_FEAT_SEND_BUNDLE) &&
		   probe_send_select(loop, true) < 0) {
		no(loop, UB_FEAT_SEND_BUNDLE,
		   "send with IORING_RECVSEND_BUNDLE refused");
	}
	ret = ub__buf_ring_new(loop, 1, IOU_PBUF_RING_INC, &br, &brlen, &bgid);
	if (ret < 0)
		no(loop, UB_FEAT_PBUF_INC,
		   "IOU_PBUF_RING_INC refused (needs Linux 6.12)");
	else
		ub__buf_ring_free(loop, br, brlen, bgid);

	/* UDP GSO is a socket option, not io_uring's: can a UDP socket
	 * take it?  (A device that cannot checksum refuses the send itself:
	 * dgram.c stops grouping on that endpoint then.) */
	{
		int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		int seg = 1200;

		if (fd < 0 || setsockopt(fd, SOL_UDP, UDP_SEGMENT, &seg,
					 sizeof(seg)) < 0)
			no(loop, UB_FEAT_UDP_GSO,
			   "UDP_SEGMENT refused (needs Linux 4.18)");
		if (fd >= 0)
			close(fd);
	}

	/* Can we read a ring's head?  sendq.c checks it after bundles. */
	ret = ub__buf_ring_new(loop, 1, 0, &br, &brlen, &bgid);
	if (ret == 0) {
		unsigned head = 1;

		loop->has_pbuf_status = ub__buf_ring_head(loop, bgid, &head) == 0 &&
					head == 0;
		ub__buf_ring_free(loop, br, brlen, bgid);
	}

	/* Disabled on request (tests, benchmarks): say so. */
	{
		unsigned i;

		for (i = 0; i < UB_NFEAT; i++)
			if ((disable & (1u << i)) && (loop->features & (1u << i)))
				no(loop, 1u << i,
				   "disabled by ub_loop_opts.disable");
	}
	/* Dependencies last, so that what was disabled counts too. */
	if (!(loop->features & UB_FEAT_RECV_MULTISHOT)) {
		no(loop, UB_FEAT_RECV_BUNDLE,
		   "recv bundles are only used with multishot recv");
		no(loop, UB_FEAT_RECV_LIMIT,
		   "the byte limit is one of multishot recv");
	}
	if (!(loop->features & UB_FEAT_SEND_RING))
		no(loop, UB_FEAT_SEND_BUNDLE, "send ring unavailable");
	loop->best_mode = (loop->features & UB_FEAT_SEND_BUNDLE)
				  ? UB_MODE_BUNDLE
				  : UB_MODE_SERIAL;
	{
		const char *ring, *bundle;

		ring = ub_loop_feature_reason(loop, UB_FEAT_SEND_RING);
		bundle = ub_loop_feature_reason(loop, UB_FEAT_SEND_BUNDLE);

		if (ring)
			snprintf(loop->mode_why[0], sizeof(loop->mode_why[0]),
				 "mode ring unavailable: %s", ring);
		if (bundle)
			snprintf(loop->mode_why[1], sizeof(loop->mode_why[1]),
				 "mode bundle unavailable: %s", bundle);
	}
	return 0;
}

int ub_loop_mode_check(const ub_loop *loop, int mode, const char **reason)
{
	const char *why = NULL;

	if (!loop)
		return -EINVAL;
	switch (mode) {
	case UB_MODE_AUTO:
	case UB_MODE_SERIAL:
		break;
	case UB_MODE_RING:
		why = ub_loop_feature_reason(loop, UB_FEAT_SEND_RING);
		break;
	case UB_MODE_BUNDLE:
		why = ub_loop_feature_reason(loop, UB_FEAT_SEND_BUNDLE);
		break;
	default:
		if (reason)
			*reason = "unknown send mode";
		return -EINVAL;
	}
	if (reason)
		*reason = why;
	return why ? -EOPNOTSUPP : 0;
}
