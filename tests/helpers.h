/*
 * helpers.h - what every uringbuf test program shares.
 *
 * A test is one program per feature with its own main(); it exits 0 (pass),
 * 1 (fail) or 77 (skip: automake's convention, liburing's test/helpers.h),
 * and a skip prints "SKIP: reason" first.  Failures print file:line, the
 * expression, and the values or errno involved, then exit(1) at once.
 *
 * Byte streams are checked, not just counted: the byte at stream offset o of
 * a stream with seed s is th_pat_byte(s, o), so any chunk that arrives can be
 * verified at the offset where it belongs, and a lost, repeated or reordered
 * chunk fails at the first byte that is wrong.
 *
 * Every wait is bounded in time and in iterations: th_run() drives a loop
 * with short ub_loop_wait() timeouts until a step function says done, and
 * fails the test when the deadline passes.
 */
#ifndef UB_TEST_HELPERS_H
#define UB_TEST_HELPERS_H

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uringbuf.h"

#define TH_PASS 0
#define TH_FAIL 1
#define TH_SKIP 77

/* Deadline for any single wait of a test, and the iteration bound. */
#define TH_TIMEOUT_MS 30000
#define TH_MAX_ITERS 20000000L

void th_fail_at(const char *file, int line, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 3, 4)));
void th_skip(const char *fmt, ...)
	__attribute__((noreturn, format(printf, 1, 2)));

#define TH_FAILF(...) th_fail_at(__FILE__, __LINE__, __VA_ARGS__)

/* cond must hold; errno is shown (meaningful after a libc call). */
#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			int e_ = errno;                                        \
			th_fail_at(__FILE__, __LINE__,                         \
				   "CHECK(%s) failed (errno %d: %s)", #cond,   \
				   e_, strerror(e_));                          \
		}                                                              \
	} while (0)

/* Integer equality, both values shown. */
#define CHECK_EQ(a, b)                                                         \
	do {                                                                   \
		long long a_ = (long long)(a), b_ = (long long)(b);            \
		if (a_ != b_)                                                  \
			th_fail_at(__FILE__, __LINE__,                         \
				   "CHECK_EQ(%s, %s) failed: %lld != %lld",    \
				   #a, #b, a_, b_);                            \
	} while (0)

#define CHECK_CMP(a, op, b)                                                    \
	do {                                                                   \
		long long a_ = (long long)(a), b_ = (long long)(b);            \
		if (!(a_ op b_))                                               \
			th_fail_at(__FILE__, __LINE__,                         \
				   "CHECK(%s %s %s) failed: %lld vs %lld", #a, \
				   #op, #b, a_, b_);                           \
	} while (0)

/* A uringbuf call returning 0/count or -errno must succeed. */
#define CHECK_OK(expr)                                                         \
	do {                                                                   \
		long long r_ = (long long)(expr);                              \
		if (r_ < 0)                                                    \
			th_fail_at(__FILE__, __LINE__,                         \
				   "%s failed: %lld (%s)", #expr, r_,          \
				   strerror((int)-r_));                        \
	} while (0)

/* A uringbuf call must fail with exactly -err. */
#define CHECK_ERR(expr, err)                                                   \
	do {                                                                   \
		long long r_ = (long long)(expr);                              \
		if (r_ != -(long long)(err))                                   \
			th_fail_at(__FILE__, __LINE__,                         \
				   "%s returned %lld (%s), expected -%s",      \
				   #expr, r_,                                  \
				   r_ < 0 ? strerror((int)-r_) : "success",    \
				   #err);                                      \
	} while (0)

/* A constructor (ptr, int *err) must succeed: shows *err otherwise. */
#define CHECK_PTR(ptr, err)                                                    \
	do {                                                                   \
		if (!(ptr))                                                    \
			th_fail_at(__FILE__, __LINE__,                         \
				   "%s is NULL, err %d (%s)", #ptr, (err),     \
				   strerror(-(err)));                          \
	} while (0)

/*
 * Soft checks, for contract points whose failure leaves the test able to go
 * on: the failure is printed like a CHECK's, counted, and th_finish() makes
 * the test fail at the end, so one broken promise does not hide the rest.
 */
extern int th_soft_failures;
void th_soft_fail_at(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define EXPECT_FAILF(...) th_soft_fail_at(__FILE__, __LINE__, __VA_ARGS__)
#define EXPECT_ERR(expr, err)                                                  \
	do {                                                                   \
		long long r_ = (long long)(expr);                              \
		if (r_ != -(long long)(err))                                   \
			th_soft_fail_at(__FILE__, __LINE__,                    \
					"%s returned %lld (%s), expected -%s", \
					#expr, r_,                             \
					r_ < 0 ? strerror((int)-r_)            \
					       : "success",                    \
					#err);                                 \
	} while (0)
/* Prints "NAME: PASS" and returns 0, or reports the soft failures and
 * returns 1: main() ends with return th_finish(). */
int th_finish(void);

/* Start a test: prints its name and the PRNG seed (UB_TEST_SEED to replay),
 * records the fd count, and turns off SIGPIPE. */
void th_init(const char *name);
extern uint64_t th_seed;
extern int th_start_fds;

/* Watchdog: if the process still runs after seconds (30 times that under
 * valgrind), print a FAIL line and _exit(1).  alarm() is not inherited
 * across fork(): a child of th_for_each_mode() calls it again.  seconds 0
 * disarms it. */
void th_watchdog(unsigned seconds);
/* 1 when running under valgrind (its preload is mapped), else 0. */
int th_under_valgrind(void);

/* Entries in the io_uring's CQ overflow list (CQEs the kernel holds because
 * the CQ ring was full), read from /proc/self/fdinfo/<ring_fd>; -1 if the
 * kernel does not show it. */
int th_cq_overflow(int ring_fd);

/* A numeric "Key:\tvalue" line of /proc/self/fdinfo/<fd> (e.g. "CqMask"
 * of an io_uring), or -1 if absent. */
long th_fdinfo_field(int fd, const char *key);

/* xorshift64*; deterministic for a given seed. */
uint64_t th_rand(void);
/* Uniform in [lo, hi]. */
uint64_t th_rand_range(uint64_t lo, uint64_t hi);

/* Milliseconds on CLOCK_MONOTONIC. */
double th_now_ms(void);
/* Process CPU time (user + system) in milliseconds. */
double th_cpu_ms(void);
void th_sleep_ms(int ms);

/* Open file descriptors, from /proc/self/fd. */
int th_fd_count(void);
/* Fails unless the fd count is back to th_start_fds. */
void th_check_fds(const char *when);
int th_fd_is_open(int fd);

/* ---- sockets ---- */
/* Connected AF_UNIX stream pair, close-on-exec. */
void th_socketpair(int fds[2]);
/* Connected TCP pair over 127.0.0.1 (or ::1 with ipv6): fds[0] is the
 * connecting side, fds[1] the accepted one.  Returns 0, or -errno when the
 * family is unavailable (ipv6 only; ipv4 failures fail the test). */
int th_tcp_pair(int fds[2], int ipv6);
/* The same with SO_SNDBUF/SO_RCVBUF set to bufs before the handshake (set
 * later, on an established loopback connection, they can stall TCP). */
int th_tcp_pair_bufs(int fds[2], int ipv6, int bufs);
/* SO_SNDBUF and SO_RCVBUF to bytes (1: the kernel's minimum). */
void th_set_bufs(int fd, int bytes);
/* A listening TCP socket on 127.0.0.1:0, its address in *a; bufs: socket
 * buffers the accepted sockets inherit (0: the kernel's). */
int th_listen_socket(struct sockaddr_in *a, int backlog, int bufs);
/*
 * Small socket buffers to force short sends.  AF_UNIX gets the minimum.
 * TCP over loopback gets 16 KiB: at the minimum (4608/2304 bytes) the
 * receive window stays below the 64 KiB loopback MSS and the connection
 * crawls on the persist timer (measured here: 256 KiB in 12.5 s; 8 KiB
 * buffers 1.7 s; 16 KiB buffers 64 MiB in 0.24 s).
 */
void th_small_bufs(int fd);
void th_set_nonblock(int fd, int on);
/* Close with SO_LINGER {1, 0}: the peer gets a RST. */
void th_close_rst(int fd);

/* ---- byte patterns ---- */
static inline uint8_t th_pat_byte(uint64_t seed, uint64_t off)
{
	uint64_t x = (off + seed * 0x9e3779b97f4a7c15ull) * 2654435761ull;
	return (uint8_t)((x >> 13) ^ (x >> 31) ^ seed);
}
void th_pat_fill(uint64_t seed, uint64_t off, void *buf, size_t len);
/* Index of the first byte that differs from the pattern, or -1. */
long th_pat_diff(uint64_t seed, uint64_t off, const void *buf, size_t len);
/* Fails the test, naming what and the stream offset, on a mismatch. */
#define th_pat_check(seed, off, buf, len, what)                                \
	th_pat_check_at(__FILE__, __LINE__, seed, off, buf, len, what)
void th_pat_check_at(const char *file, int line, uint64_t seed, uint64_t off,
		     const void *buf, size_t len, const char *what);

/* A plain nonblocking peer socket that writes and/or reads a pattern. */
struct th_peer {
	int fd;
	uint64_t seed;      /* pattern written (wseed) and expected (seed) */
	uint64_t wseed;
	uint64_t wtotal;    /* bytes to write, then shutdown(SHUT_WR) if wshut */
	uint64_t written;
	uint64_t rd;        /* bytes read and verified */
	uint64_t rlimit;    /* read at most this much per call (0: no limit) */
	int wshut, wshut_done, eof, err;
	const char *name;
};
void th_peer_init(struct th_peer *p, int fd, const char *name);
/* Write what is due; returns bytes written now (0 when blocked or done). */
long th_peer_write(struct th_peer *p);
/* Read and verify what is there; returns bytes read now.  Sets eof on 0. */
long th_peer_read(struct th_peer *p);

/* ---- loops and modes ---- */
/* ub_loop_new that skips the test when io_uring is unavailable. */
ub_loop *th_loop_new(const ub_loop_opts *opts);
extern const int th_modes[3]; /* BUNDLE, RING, SERIAL */
/* 0 if the loop can use mode; else prints "mode NAME: skipped: reason". */
int th_mode_usable(ub_loop *loop, int mode);
/* Runs fn(mode, arg) for each mode usable on a fresh probe loop (only the
 * one named by UB_TEST_MODE, if set), each in a child process so that every
 * mode is tried even when one fails; a failed mode counts as a soft failure
 * (th_finish then fails the test).  Returns the number of modes that ran;
 * skips the test if none could. */
int th_for_each_mode(void (*fn)(int mode, void *arg), void *arg);

/* Every buffer of the pool idle: FREE for a send pool, KERNEL for receive. */
void th_check_pool_idle_at(const char *file, int line, const ub_pool *pool,
			   const char *name);
#define th_check_pool_idle(p, n) th_check_pool_idle_at(__FILE__, __LINE__, p, n)
int th_pool_idle(const ub_pool *pool);

/* ---- driving a loop ---- */
enum { TH_IDLE = 0, TH_DONE = 1, TH_BUSY = 2 };
typedef void (*th_event_fn)(const ub_event *ev, void *arg);
/* Side work between waits (plain peers, sends); returns TH_DONE when the
 * condition waited for holds, TH_BUSY if it made progress, else TH_IDLE. */
typedef int (*th_step_fn)(void *arg);

/*
 * Reap events into on_event and call step until it returns TH_DONE, with
 * ub_loop_wait timeouts of at most wait_ms (0 after a busy step).  Fails the
 * test, naming what, if timeout_ms passes or TH_MAX_ITERS iterations run.
 * Returns the number of events handled.
 */
long th_run(ub_loop *loop, th_event_fn on_event, th_step_fn step, void *arg,
	    int wait_ms, int timeout_ms, const char *what);
/* Like th_run, but returns 1 when step said TH_DONE and 0 on timeout
 * instead of failing. */
int th_run_try(ub_loop *loop, th_event_fn on_event, th_step_fn step,
	       void *arg, int wait_ms, int timeout_ms);
/* For long transfers: like th_run, but the deadline is on progress: fails
 * if *progress stays the same for stall_ms, or after max_ms in all. */
void th_run_progress(ub_loop *loop, th_event_fn on_event, th_step_fn step,
		     void *arg, int wait_ms, const uint64_t *progress,
		     int stall_ms, int max_ms, const char *what);
/* The same for a fixed time: runs for ms milliseconds (step may be NULL;
 * its TH_DONE is ignored). */
long th_run_for(ub_loop *loop, th_event_fn on_event, th_step_fn step,
		void *arg, int wait_ms, int ms);

#endif /* UB_TEST_HELPERS_H */
