/*
 * compat.h - io_uring uapi bits that liburing 2.3 (Debian 12) predates.
 *
 * The only place uringbuf defines kernel constants.  Each is used only after
 * the run-time probe (probe.c) found the kernel supports it, so building
 * against old headers never means asking an old kernel for something new.
 * Values are the kernel's (include/uapi/linux/io_uring.h).
 */
#ifndef UB_COMPAT_H
#define UB_COMPAT_H

#include <liburing.h>
#include <stdint.h>

/* Send/recv bundles and send buffer select: Linux 6.10. */
#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4)
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14)
#endif

/* Incrementally consumed provided-buffer rings: Linux 6.12. */
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
/* On a CQE of such a ring: the kernel goes on filling the buffer. */
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif

/* Single issuer / deferred task work: Linux 6.0 / 6.1. */
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif

/* An enum (not a macro) in 2.3's header, so it cannot be tested with
 * #ifndef: use our own name for the same value. */
#define UB_CQE_BUFFER_SHIFT 16

/* Reading a provided-buffer ring's head: Linux 6.8.  An enum value in newer
 * headers (so a macro of the same name would break them): our own names,
 * the kernel's values and layout (struct io_uring_buf_status). */
#define UB_REGISTER_PBUF_STATUS 26
struct ub_buf_status {
	uint32_t buf_group;
	uint32_t head;
	uint32_t resv[8];
};

#endif /* UB_COMPAT_H */
