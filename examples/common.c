/*
 * common.c - command line, signals, loop and listener setup shared by the C
 * examples.  See common.h.
 */
#include "common.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

volatile sig_atomic_t ex_stop;

void ex_warn(const struct ex_opts *o, const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", o->prog, what, strerror(-err));
}

void ex_die(const struct ex_opts *o, ub_loop *loop, const char *what, int err)
{
	ex_warn(o, what, err);
	if (loop)
		ub_loop_free(loop);
	exit(1);
}

static void usage(FILE *f, const char *prog, unsigned need)
{
	fprintf(f,
		"usage: %s --listen HOST:PORT%s [--mode bundle|ring|serial|auto]\n"
		"       [--buf-size BYTES] [--buf-count N] [--no-recv-bundle]\n"
		"       [--singleshot] [--recv-budget BYTES] [--idle-timeout MS]\n"
		"       [--max-conns N]%s\n"
		"  --listen HOST:PORT   address to accept on (port 0: any free port)\n"
		"%s"
		"  --mode M             send mode (default auto: the best available)\n"
		"  --buf-size BYTES     receive pool buffer size (default 4096)\n"
		"  --buf-count N        receive pool buffers (default 1024)\n"
		"%s"
		"  --no-recv-bundle     never use receive bundles (benchmarks)\n"
		"  --singleshot         one-shot receive, re-armed after each\n"
		"                       completion, instead of multishot (no\n"
		"                       receive bundles either; benchmarks)\n"
		"  --recv-budget BYTES  receive pool bytes one connection may\n"
		"                       hold (default 262144)\n"
		"  --idle-timeout MS    close a connection that received and sent\n"
		"                       nothing for MS (default: never)\n"
		"  --max-conns N        accept at most N connections at once\n"
		"Prints \"listening on HOST:PORT\"; exits 0 on SIGINT/SIGTERM.\n",
		prog, (need & EX_NEED_TO) ? " --to HOST:PORT" : "",
		(need & EX_ALLOW_INC) ? " [--inc]" : "",
		(need & EX_NEED_TO)
			? "  --to HOST:PORT       where to forward each connection\n"
			: "",
		(need & EX_ALLOW_INC)
			? "  --inc                incremental receive pools of --buf-size\n"
			  "                       buffers: a receive takes only the bytes it\n"
			  "                       needs (Linux 6.12+; elsewhere one line on\n"
			  "                       stderr says why not, and the pools are not)\n"
			: "");
}

/* A decimal unsigned in [min, max], or exit 1. */
static unsigned parse_uint(const char *prog, const char *name, const char *s,
			   unsigned long min, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "%s: %s wants an integer in %lu..%lu, not '%s'\n",
			prog, name, min, max, s);
		exit(1);
	}
	return (unsigned)v;
}

/* An option only some examples take (need lacks bit): usage, exit 1. */
static void refuse_unless(const char *prog, unsigned need, unsigned bit,
			  const char *opt)
{
	if (need & bit)
		return;
	fprintf(stderr, "%s: %s is not an option of %s\n", prog, opt, prog);
	usage(stderr, prog, need);
	exit(1);
}

void ex_parse_args(int argc, char **argv, const char *prog, unsigned need,
		   struct ex_opts *o)
{
	enum { O_LISTEN = 1, O_TO, O_MODE, O_BUF_SIZE, O_BUF_COUNT,
	       O_NO_RECV_BUNDLE, O_SINGLESHOT, O_RECV_BUDGET, O_IDLE,
	       O_MAX_CONNS, O_INC, O_HELP };
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "to", required_argument, NULL, O_TO },
		{ "mode", required_argument, NULL, O_MODE },
		{ "buf-size", required_argument, NULL, O_BUF_SIZE },
		{ "buf-count", required_argument, NULL, O_BUF_COUNT },
		{ "no-recv-bundle", no_argument, NULL, O_NO_RECV_BUNDLE },
		{ "singleshot", no_argument, NULL, O_SINGLESHOT },
		{ "recv-budget", required_argument, NULL, O_RECV_BUDGET },
		{ "idle-timeout", required_argument, NULL, O_IDLE },
		{ "max-conns", required_argument, NULL, O_MAX_CONNS },
		{ "inc", no_argument, NULL, O_INC },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->prog = prog;
	o->mode = UB_MODE_AUTO;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case O_LISTEN:
			o->listen = optarg;
			break;
		case O_TO:
			refuse_unless(prog, need, EX_NEED_TO, "--to");
			o->to = optarg;
			break;
		case O_MODE:
			o->mode = ub_mode_from_name(optarg);
			if (o->mode < 0) {
				fprintf(stderr,
					"%s: unknown --mode '%s' (bundle, ring, serial or auto)\n",
					prog, optarg);
				exit(1);
			}
			break;
		case O_BUF_SIZE:
			o->buf_size = parse_uint(prog, "--buf-size", optarg, 1,
						 1u << 30);
			break;
		case O_BUF_COUNT:
			o->buf_count = parse_uint(prog, "--buf-count", optarg, 1,
						  32768);
			break;
		case O_NO_RECV_BUNDLE:
			o->conn_flags |= UB_CONN_NO_RECV_BUNDLE;
			break;
		case O_SINGLESHOT:
			o->conn_flags |= UB_CONN_SINGLESHOT;
			break;
		case O_RECV_BUDGET:
			o->recv_budget = parse_uint(prog, "--recv-budget", optarg,
						    1, 1u << 30);
			break;
		case O_IDLE:
			o->idle_ms = parse_uint(prog, "--idle-timeout", optarg,
						1, 86400000);
			break;
		case O_MAX_CONNS:
			o->max_conns = parse_uint(prog, "--max-conns", optarg,
						  1, 1000000);
			break;
		case O_INC:
			refuse_unless(prog, need, EX_ALLOW_INC, "--inc");
			o->inc = 1;
			break;
		case O_HELP:
			usage(stdout, prog, need);
			exit(0);
		default:
			goto bad;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", prog,
			argv[optind]);
		usage(stderr, prog, need);
		exit(1);
	}
	if (!o->listen) {
		fprintf(stderr, "%s: --listen HOST:PORT is required\n", prog);
		usage(stderr, prog, need);
		exit(1);
	}
	if ((need & EX_NEED_TO) && !o->to) {
		fprintf(stderr, "%s: --to HOST:PORT is required\n", prog);
		usage(stderr, prog, need);
		exit(1);
	}
	return;
bad:
	fprintf(stderr, "%s: bad option '%s'\n", prog,
		optind > 0 && optind <= argc ? argv[optind - 1] : "?");
	usage(stderr, prog, need);
	exit(1);
}

static void on_stop_signal(int sig)
{
	(void)sig;
	ex_stop = 1;
}

void ex_signals_install(const struct ex_opts *o)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: the blocked io_uring_enter() must return -EINTR. */
	sa.sa_flags = 0;
	sa.sa_handler = on_stop_signal;
	if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL))
		ex_die(o, NULL, "sigaction", -errno);
	/* A peer that resets must cost an -EPIPE, never the process. */
	sa.sa_handler = SIG_IGN;
	if (sigaction(SIGPIPE, &sa, NULL))
		ex_die(o, NULL, "sigaction", -errno);
}

ub_loop *ex_loop_new(const struct ex_opts *o, ub_pool **recv_pool)
{
	ub_loop_opts lo;
	const char *reason = NULL;
	ub_loop *loop;
	ub_pool *pool;
	char what[128];
	struct rlimit rl;
	int err = 0;

	/* An echo server or proxy holding thousands of connections needs a
	 * descriptor each (two per client for the proxy). */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	memset(&lo, 0, sizeof(lo));
	lo.pool_count = o->buf_count;
	lo.pool_size = o->buf_size;
	lo.pool_flags = o->inc ? UB_POOL_INC : 0;
	loop = ub_loop_new(&lo, &err);
	if (!loop)
		ex_die(o, NULL, "cannot create the io_uring loop", err);

	if (ub_loop_mode_check(loop, o->mode, &reason) < 0) {
		fprintf(stderr, "%s: mode %s unavailable: %s\n", o->prog,
			ub_mode_name(o->mode), reason ? reason : "(no reason given)");
		ub_loop_free(loop);
		exit(1);
	}

	pool = ub_loop_recv_pool(loop, &err);
	if (!pool) {
		snprintf(what, sizeof(what),
			 "cannot create a receive pool of %u x %u bytes",
			 o->buf_count ? o->buf_count : 1024,
			 o->buf_size ? o->buf_size : 4096);
		ex_die(o, loop, what, err);
	}
	if (o->inc && !(ub_pool_flags(pool) & UB_POOL_INC)) {
		reason = ub_loop_feature_reason(loop, UB_FEAT_PBUF_INC);
		fprintf(stderr,
			"%s: --inc: the receive pools fell back to whole "
			"buffers: %s\n", o->prog,
			reason ? reason : "(no reason given)");
	}
	*recv_pool = pool;
	return loop;
}

void ex_conn_opts(const struct ex_opts *o, ub_pool *pool, ub_conn_opts *co)
{
	ub_conn_opts_init(co);
	co->recv_pool = pool;
	co->mode = o->mode;
	co->flags |= o->conn_flags;
	if (o->recv_budget)
		co->recv_budget = o->recv_budget;
	co->idle_timeout_ms = o->idle_ms;
}

ub_listener *ex_listen(ub_loop *loop, const struct ex_opts *o,
		       const ub_conn_opts *conn_opts)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	ub_listener *l;
	char name[128], what[160];
	int err = 0, r;

	r = ub_addr_parse(o->listen, &ss, &len);
	if (r < 0) {
		snprintf(what, sizeof(what), "bad --listen address '%s'",
			 o->listen);
		ex_die(o, loop, what, r);
	}
	l = ub_listen(loop, (const struct sockaddr *)&ss, len, SOMAXCONN, 0,
		      conn_opts, &err);
	if (!l) {
		snprintf(what, sizeof(what), "cannot listen on %s", o->listen);
		ex_die(o, loop, what, err);
	}
	if (o->max_conns && (r = ub_listener_set_max_conns(l, o->max_conns)) < 0)
		ex_die(o, loop, "cannot limit connections", r);
	r = ub_sock_name(ub_listener_fd(l), 0, name, sizeof(name));
	if (r < 0)
		ex_die(o, loop, "cannot read the listening address", r);
	printf("listening on %s\n", name);
	fflush(stdout);
	return l;
}
