/*
 * common.h - what the C examples (echo, proxy) share: command line, signals,
 * loop and listener setup.
 *
 * Every helper here that fails prints one clear line on stderr and exits 1:
 * the examples are programs, not libraries, and a setup failure has nothing
 * to unwind but the process.
 */
#ifndef UB_EXAMPLES_COMMON_H
#define UB_EXAMPLES_COMMON_H

#include <signal.h>

#include "uringbuf.h"

/* Events handled per ub_loop_wait() call. */
#define EX_BATCH 256

/* Longest a pending SIGINT/SIGTERM can go unnoticed: a signal that lands
 * between the flag check and the blocking wait is caught by this timeout. */
#define EX_WAIT_MS 500

enum ex_need {
	EX_NEED_TO = 1u << 0,   /* --to HOST:PORT is required (proxy)      */
	EX_ALLOW_INC = 1u << 1, /* --inc is an option (proxy)               */
};

struct ex_opts {
	const char *prog;      /* for messages: "echo", "proxy"           */
	const char *listen;    /* --listen HOST:PORT (required)            */
	const char *to;        /* --to HOST:PORT (proxy)                   */
	int mode;              /* --mode: enum ub_send_mode, AUTO default  */
	unsigned buf_size;     /* --buf-size: receive pool buffer bytes    */
	unsigned buf_count;    /* --buf-count: receive pool buffers        */
	unsigned conn_flags;   /* UB_CONN_NO_RECV_BUNDLE (--no-recv-bundle),
				  UB_CONN_SINGLESHOT (--singleshot)        */
	unsigned recv_budget;  /* --recv-budget: bytes (0: the default)    */
	unsigned idle_ms;      /* --idle-timeout: ms (0: none)             */
	unsigned max_conns;    /* --max-conns: per listener (0: no limit)  */
	int inc;               /* --inc: incremental receive pools         */
};

/* Set by SIGINT/SIGTERM. */
extern volatile sig_atomic_t ex_stop;

/* Parse argv into *o (exits 0 on --help, 1 on a bad argument). */
void ex_parse_args(int argc, char **argv, const char *prog, unsigned need,
		   struct ex_opts *o);

/* SIGINT/SIGTERM set ex_stop, without SA_RESTART so that a blocked
 * ub_loop_wait() returns -EINTR; SIGPIPE is ignored. */
void ex_signals_install(const struct ex_opts *o);

/* A loop with the receive pool of --buf-size/--buf-count, after checking
 * that --mode is available here (else: the kernel's reason, exit 1).  Also
 * raises the soft RLIMIT_NOFILE to the hard limit (many connections).
 * With --inc the receive pool is incremental; where the kernel lacks that,
 * one line on stderr says the pool fell back and why, and it goes on. */
ub_loop *ex_loop_new(const struct ex_opts *o, ub_pool **recv_pool);

/* Connection options from the command line, receiving into pool. */
void ex_conn_opts(const struct ex_opts *o, ub_pool *pool, ub_conn_opts *co);

/* Listen on --listen with conn_opts for accepted connections and print
 * "listening on HOST:PORT" (the real port) on stdout. */
ub_listener *ex_listen(ub_loop *loop, const struct ex_opts *o,
		       const ub_conn_opts *conn_opts);

/* Print "prog: what: strerror(-err)" on stderr. */
void ex_warn(const struct ex_opts *o, const char *what, int err);

/* ex_warn, free the loop (if any), exit 1. */
__attribute__((noreturn)) void ex_die(const struct ex_opts *o,
				      ub_loop *loop, const char *what,
				      int err);

#endif /* UB_EXAMPLES_COMMON_H */
