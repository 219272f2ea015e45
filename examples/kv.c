/*
 * kv.c - a small in-memory key-value server speaking RESP2 (the redis
 * protocol): GET, SET, DEL, PING and CONFIG GET, inline or multibulk,
 * pipelined, so redis-benchmark and redis-cli can drive it.
 *
 *   kv --listen HOST:PORT [--mode bundle|ring|serial|auto]
 *      [--max-memory BYTES] [--max-bulk BYTES] [--max-args N]
 *      [--max-inline BYTES] [the options of examples/echo.c]
 *
 * Prints "listening on HOST:PORT" (the real port after port 0); exits 0 on
 * SIGINT/SIGTERM, 1 on a bad argument.
 *
 * Per received buffer: requests are parsed straight from the pool's memory
 * (no copy unless a request is split across buffers: only its head is kept,
 * in the connection's input buffer), every reply of the buffer is appended
 * to one output buffer, and that is queued with one ub_conn_send().
 *
 * Bounds (a connection's memory never depends on what a client sends):
 *   - a request is at most --max-args arguments of at most --max-bulk bytes
 *     each and 2 * max-bulk + 64 KiB in all, an inline request at most
 *     --max-inline bytes; beyond, or on garbage, the client gets
 *     "-ERR Protocol error: ..." and the connection closes (as redis does);
 *   - replies: parsing stops once OUT_MAX bytes of replies wait (one value
 *     may pass it); while the send queue refuses (-EAGAIN) or is above its
 *     high water mark, receiving pauses and what was already received waits
 *     unparsed; WRITABLE resumes both;
 *   - stored keys and values: --max-memory bytes; a SET beyond gets -OOM.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"

/* Replies waiting to be queued before parsing stops (one value may pass). */
#define OUT_MAX (256u << 10)
/* Longest "*N" / "$N" line: redis-style lengths are at most 20 digits. */
#define HDR_MAX 32

struct kv_limits {
	size_t max_memory;  /* bytes of keys + values stored      */
	size_t max_bulk;    /* bytes of one argument              */
	size_t max_args;    /* arguments of one request           */
	size_t max_inline;  /* bytes of one inline request line   */
	size_t max_request; /* bytes of one (incomplete) request  */
};

static struct kv_limits lim = {
	.max_memory = 64u << 20,
	.max_bulk = 1u << 20,
	.max_args = 1024,
	.max_inline = 64u << 10,
};

/* ---- the table ---------------------------------------------------------- */

/* One allocation per entry: the key, then the value. */
struct entry {
	struct entry *next;
	uint64_t hash;
	size_t klen, vlen;
	char kv[];
};

static struct {
	struct entry **b;
	size_t mask;  /* buckets - 1 (a power of two) */
	size_t count;
	size_t used;  /* key + value bytes stored, against max_memory */
} tab;

static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a: keys are short */

	while (n--) {
		h ^= (unsigned char)*p++;
		h *= 1099511628211ull;
	}
	return h ^ (h >> 29);
}

static struct entry **tab_slot(const char *k, size_t klen, uint64_t h)
{
	struct entry **pp = &tab.b[h & tab.mask];

	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->klen == klen &&
		    !memcmp((*pp)->kv, k, klen))
			return pp;
	return pp;
}

static int tab_grow(void)
{
	size_t n = (tab.mask + 1) * 2, i;
	struct entry **b = calloc(n, sizeof(*b)), *e, *next;

	if (!b)
		return -ENOMEM;
	for (i = 0; i <= tab.mask; i++)
		for (e = tab.b[i]; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	free(tab.b);
	tab.b = b;
	tab.mask = n - 1;
	return 0;
}

static void tab_free(void)
{
	size_t i;
	struct entry *e, *next;

	for (i = 0; tab.b && i <= tab.mask; i++)
		for (e = tab.b[i]; e; e = next) {
			next = e->next;
			free(e);
		}
	free(tab.b);
	tab.b = NULL;
}

/* ---- byte buffers ------------------------------------------------------- */

struct bytes {
	char *p;
	size_t off, len, cap; /* live bytes: p[off..len) */
};

static int bytes_reserve(struct bytes *b, size_t more)
{
	size_t need, cap;
	char *p;

	if (b->off && b->off == b->len) {
		b->off = b->len = 0;
	} else if (b->off > b->cap / 2) {
		/* compact rather than grow: what was consumed is dead */
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	need = b->len + more;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 4096;
	while (cap < need)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

static int bytes_add(struct bytes *b, const void *p, size_t n)
{
	int r = bytes_reserve(b, n);

	if (r == 0) {
		memcpy(b->p + b->len, p, n);
		b->len += n;
	}
	return r;
}

/* Empty it, and give a big allocation back (one large value passed by). */
static void bytes_clear(struct bytes *b)
{
	b->off = b->len = 0;
	if (b->cap > (1u << 20)) {
		free(b->p);
		b->p = NULL;
		b->cap = 0;
	}
}

/* ---- connections -------------------------------------------------------- */

struct kv_conn {
	struct kv_conn *prev, *next;  /* all live connections, for exit */
	ub_conn *conn;
	struct bytes in;              /* unparsed input                 */
	struct bytes out;             /* replies the queue has not taken */
	int oom;                      /* a reply could not be buffered  */
	unsigned paused : 1;          /* we paused receive              */
	unsigned blocked : 1;         /* replies wait for WRITABLE      */
	unsigned more : 1;            /* parsing stopped at OUT_MAX     */
	unsigned quit : 1;            /* protocol error: close once sent */
	unsigned eof : 1;             /* the peer finished sending      */
	unsigned closing : 1;         /* close or abort requested       */
};

static struct kv_conn conns = { .prev = &conns, .next = &conns };
static const struct ex_opts *opts;
static int listener_closed;

/* Scratch argument vector (max_args entries), reused by every request. */
struct arg {
	const char *p;
	size_t n;
};
static struct arg *argv_buf;

static void out_add(struct kv_conn *c, const void *p, size_t n)
{
	if (bytes_add(&c->out, p, n) < 0)
		c->oom = 1;
}

static void out_str(struct kv_conn *c, const char *s)
{
	out_add(c, s, strlen(s));
}

static void out_bulk(struct kv_conn *c, const char *p, size_t n)
{
	char hdr[HDR_MAX];
	int h = snprintf(hdr, sizeof(hdr), "$%zu\r\n", n);

	if (bytes_reserve(&c->out, (size_t)h + n + 2) < 0) {
		c->oom = 1;
		return;
	}
	memcpy(c->out.p + c->out.len, hdr, (size_t)h);
	memcpy(c->out.p + c->out.len + h, p, n);
	memcpy(c->out.p + c->out.len + h + n, "\r\n", 2);
	c->out.len += (size_t)h + n + 2;
}

static void out_int(struct kv_conn *c, long long v)
{
	char s[HDR_MAX];
	int n = snprintf(s, sizeof(s), ":%lld\r\n", v);

	out_add(c, s, (size_t)n);
}

/* An error quoting client bytes: CR and LF would end the reply early. */
static void out_quoted(struct kv_conn *c, const char *p, size_t n,
		       size_t max)
{
	char tmp[128];
	size_t i;

	if (n > max)
		n = max;
	if (n > sizeof(tmp))
		n = sizeof(tmp);
	for (i = 0; i < n; i++)
		tmp[i] = (p[i] == '\r' || p[i] == '\n') ? ' ' : p[i];
	out_add(c, tmp, n);
}

static void kv_protocol_error(struct kv_conn *c, const char *why)
{
	out_str(c, "-ERR Protocol error: ");
	out_str(c, why);
	out_str(c, "\r\n");
	c->quit = 1;
}

/* ---- commands ----------------------------------------------------------- */

static int is_cmd(const struct arg *a, const char *name)
{
	size_t n = strlen(name);

	return a->n == n && !strncasecmp(a->p, name, n);
}

static void wrong_args(struct kv_conn *c, const char *name)
{
	out_str(c, "-ERR wrong number of arguments for '");
	out_str(c, name);
	out_str(c, "' command\r\n");
}

static void cmd_get(struct kv_conn *c, const struct arg *a)
{
	uint64_t h = hash_bytes(a[1].p, a[1].n);
	struct entry *e = *tab_slot(a[1].p, a[1].n, h);

	if (e)
		out_bulk(c, e->kv + e->klen, e->vlen);
	else
		out_str(c, "$-1\r\n");
}

static void cmd_set(struct kv_conn *c, const struct arg *a)
{
	uint64_t h = hash_bytes(a[1].p, a[1].n);
	struct entry **pp = tab_slot(a[1].p, a[1].n, h), *e = *pp, *n;
	size_t old = e ? e->klen + e->vlen : 0;

	if (tab.used - old + a[1].n + a[2].n > lim.max_memory) {
		out_str(c, "-OOM command not allowed when used memory > "
			   "'maxmemory'.\r\n");
		return;
	}
	if (e && e->vlen == a[2].n) {
		/* same size: overwrite in place (redis-benchmark's SET) */
		memcpy(e->kv + e->klen, a[2].p, a[2].n);
		out_str(c, "+OK\r\n");
		return;
	}
	n = malloc(sizeof(*n) + a[1].n + a[2].n);
	if (!n) {
		out_str(c, "-OOM out of memory\r\n");
		return;
	}
	n->hash = h;
	n->klen = a[1].n;
	n->vlen = a[2].n;
	memcpy(n->kv, a[1].p, a[1].n);
	memcpy(n->kv + a[1].n, a[2].p, a[2].n);
	if (e) {
		n->next = e->next;
		free(e);
	} else {
		n->next = NULL;
		tab.count++;
	}
	*pp = n;
	tab.used = tab.used - old + n->klen + n->vlen;
	/* A failed grow only lengthens the chains. */
	if (tab.count > tab.mask + 1)
		(void)tab_grow();
	out_str(c, "+OK\r\n");
}

static void cmd_del(struct kv_conn *c, const struct arg *a, int argc)
{
	long long n = 0;
	int i;

	for (i = 1; i < argc; i++) {
		uint64_t h = hash_bytes(a[i].p, a[i].n);
		struct entry **pp = tab_slot(a[i].p, a[i].n, h), *e = *pp;

		if (!e)
			continue;
		*pp = e->next;
		tab.used -= e->klen + e->vlen;
		tab.count--;
		free(e);
		n++;
	}
	out_int(c, n);
}

/* CONFIG GET: redis-benchmark asks for "save" and "appendonly" at start and
 * wants [name, value] pairs; other names match nothing (an empty array). */
static void cmd_config(struct kv_conn *c, const struct arg *a, int argc)
{
	static const char *const known[][2] = {
		{ "save", "" }, { "appendonly", "no" },
	};
	const char *hit[2 * 2];
	size_t i, k, nhit = 0;
	char hdr[HDR_MAX];

	if (argc < 2) {
		wrong_args(c, "config");
		return;
	}
	if (!is_cmd(&a[1], "get")) {
		out_str(c, "-ERR unknown subcommand '");
		out_quoted(c, a[1].p, a[1].n, 64);
		out_str(c, "'. Try CONFIG GET.\r\n");
		return;
	}
	if (argc < 3) {
		wrong_args(c, "config|get");
		return;
	}
	for (k = 0; k < sizeof(known) / sizeof(known[0]); k++)
		for (i = 2; i < (size_t)argc; i++)
			if (is_cmd(&a[i], known[k][0])) {
				hit[nhit++] = known[k][0];
				hit[nhit++] = known[k][1];
				break;
			}
	snprintf(hdr, sizeof(hdr), "*%zu\r\n", nhit);
	out_str(c, hdr);
	for (i = 0; i < nhit; i++)
		out_bulk(c, hit[i], strlen(hit[i]));
}

static void run_command(struct kv_conn *c, const struct arg *a, int argc)
{
	int i;

	if (is_cmd(&a[0], "get")) {
		if (argc != 2)
			wrong_args(c, "get");
		else
			cmd_get(c, a);
	} else if (is_cmd(&a[0], "set")) {
		if (argc == 3)
			cmd_set(c, a);
		else if (argc > 3)
			out_str(c, "-ERR syntax error (SET options are not "
				   "supported)\r\n");
		else
			wrong_args(c, "set");
	} else if (is_cmd(&a[0], "del")) {
		if (argc < 2)
			wrong_args(c, "del");
		else
			cmd_del(c, a, argc);
	} else if (is_cmd(&a[0], "ping")) {
		if (argc == 1)
			out_str(c, "+PONG\r\n");
		else if (argc == 2)
			out_bulk(c, a[1].p, a[1].n);
		else
			wrong_args(c, "ping");
	} else if (is_cmd(&a[0], "config")) {
		cmd_config(c, a, argc);
	} else {
		out_str(c, "-ERR unknown command '");
		out_quoted(c, a[0].p, a[0].n, 64);
		out_str(c, "', with args beginning with: ");
		for (i = 1; i < argc && i < 4; i++) {
			out_str(c, "'");
			out_quoted(c, a[i].p, a[i].n, 32);
			out_str(c, "' ");
		}
		out_str(c, "\r\n");
	}
}

/* ---- the parser --------------------------------------------------------- */

/* A decimal in p[0..n) (an optional '-', then digits) into *v; -1 if it is
 * not one or does not fit. */
static int parse_ll(const char *p, size_t n, long long *v)
{
	long long x = 0;
	size_t i = 0;
	int neg = 0;

	if (n && p[0] == '-') {
		neg = 1;
		i = 1;
	}
	if (i == n || n - i > 18)
		return -1;
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		x = x * 10 + (p[i] - '0');
	}
	*v = neg ? -x : x;
	return 0;
}

enum { REQ_PARTIAL = 0, REQ_ERROR = -1 };

/*
 * One request at p[0..n): its length (argc and argv_buf filled; argc 0 for
 * an empty one), REQ_PARTIAL if more bytes are needed (n is then within
 * the limits), or REQ_ERROR with *why set.
 */
static long parse_request(const char *p, size_t n, int *argc,
			  const char **why)
{
	const char *e, *q;
	long long cnt, len;
	size_t pos, i;

	*argc = 0;
	if (p[0] != '*') {
		/* inline: words separated by spaces, up to LF (CR optional) */
		e = memchr(p, '\n', n < lim.max_inline ? n : lim.max_inline);
		if (!e) {
			if (n >= lim.max_inline) {
				*why = "too big inline request";
				return REQ_ERROR;
			}
			return REQ_PARTIAL;
		}
		q = e > p && e[-1] == '\r' ? e - 1 : e;
		for (pos = 0; p + pos < q;) {
			while (p + pos < q && (p[pos] == ' ' || p[pos] == '\t'))
				pos++;
			if (p + pos == q)
				break;
			if ((size_t)*argc == lim.max_args) {
				*why = "too many arguments in inline request";
				return REQ_ERROR;
			}
			argv_buf[*argc].p = p + pos;
			while (p + pos < q && p[pos] != ' ' && p[pos] != '\t')
				pos++;
			argv_buf[*argc].n = (size_t)(p + pos - argv_buf[*argc].p);
			(*argc)++;
		}
		return (long)(e - p + 1);
	}
	e = memchr(p, '\r', n < HDR_MAX ? n : HDR_MAX);
	if (!e || (size_t)(e - p) + 1 == n) {
		if (n >= HDR_MAX) {
			*why = "too big mbulk count string";
			return REQ_ERROR;
		}
		return REQ_PARTIAL;
	}
	if (e[1] != '\n' || parse_ll(p + 1, (size_t)(e - p - 1), &cnt) ||
	    cnt > (long long)lim.max_args) {
		*why = "invalid multibulk length";
		return REQ_ERROR;
	}
	pos = (size_t)(e - p) + 2;
	if (cnt <= 0)
		return (long)pos; /* "*0" and "*-1": nothing to run */
	for (i = 0; i < (size_t)cnt; i++) {
		if (pos == n)
			return REQ_PARTIAL;
		if (p[pos] != '$') {
			*why = "expected '$'";
			return REQ_ERROR;
		}
		e = memchr(p + pos, '\r', n - pos < HDR_MAX ? n - pos : HDR_MAX);
		if (!e || (size_t)(e - p) + 1 == n) {
			if (n - pos >= HDR_MAX) {
				*why = "invalid bulk length";
				return REQ_ERROR;
			}
			return REQ_PARTIAL;
		}
		if (e[1] != '\n' ||
		    parse_ll(p + pos + 1, (size_t)(e - p) - pos - 1, &len) ||
		    len < 0 || (unsigned long long)len > lim.max_bulk) {
			*why = "invalid bulk length";
			return REQ_ERROR;
		}
		pos = (size_t)(e - p) + 2;
		if (pos + (size_t)len + 2 > n) {
			if (pos + (size_t)len + 2 > lim.max_request) {
				*why = "request too big";
				return REQ_ERROR;
			}
			return REQ_PARTIAL;
		}
		if (p[pos + len] != '\r' || p[pos + len + 1] != '\n') {
			*why = "expected CRLF after bulk";
			return REQ_ERROR;
		}
		argv_buf[i].p = p + pos;
		argv_buf[i].n = (size_t)len;
		pos += (size_t)len + 2;
	}
	*argc = (int)cnt;
	return (long)pos;
}

/* Run the requests in p[0..n) until one is incomplete, OUT_MAX bytes of
 * replies wait, or a protocol error; returns the bytes consumed. */
static size_t kv_parse(struct kv_conn *c, const char *p, size_t n)
{
	size_t done = 0;
	const char *why = NULL;
	long r;
	int argc;

	c->more = 0;
	while (done < n) {
		if (c->out.len - c->out.off >= OUT_MAX) {
			c->more = 1;
			break;
		}
		r = parse_request(p + done, n - done, &argc, &why);
		if (r == REQ_PARTIAL && n - done > lim.max_request) {
			/* complete arguments can add up too: bound them all */
			why = "request too big";
			r = REQ_ERROR;
		}
		if (r == REQ_PARTIAL)
			break;
		if (r == REQ_ERROR) {
			kv_protocol_error(c, why);
			return n;
		}
		if (argc)
			run_command(c, argv_buf, argc);
		done += (size_t)r;
	}
	return done;
}

/* ---- connection state --------------------------------------------------- */

static void kv_free(struct kv_conn *c)
{
	c->prev->next = c->next;
	c->next->prev = c->prev;
	free(c->in.p);
	free(c->out.p);
	free(c);
}

static void kv_abort(struct kv_conn *c, const char *what, int err)
{
	if (err != -EPIPE && err != -ENOTCONN)
		ex_warn(opts, what, err);
	if (!c->closing) {
		c->closing = 1;
		ub_conn_abort(c->conn);
	}
}

static void kv_close(struct kv_conn *c)
{
	int r;

	if (c->closing)
		return;
	c->closing = 1;
	r = ub_conn_close(c->conn);
	if (r < 0 && r != -EPIPE)
		ex_warn(opts, "close", r);
}

/* Queue what replies wait; 1 if the connection must wait for WRITABLE
 * (the queue refused some, or is above its high water mark), 0 if not,
 * -1 if it was aborted. */
static int kv_flush(struct kv_conn *c)
{
	ssize_t r;

	while (c->out.off < c->out.len) {
		r = ub_conn_send(c->conn, c->out.p + c->out.off,
				 c->out.len - c->out.off);
		if (r == -EAGAIN)
			return 1; /* WRITABLE follows */
		if (r < 0) {
			kv_abort(c, "send", (int)r);
			return -1;
		}
		c->out.off += (size_t)r;
	}
	bytes_clear(&c->out);
	if (ub_conn_queued_bytes(c->conn) > ub_conn_high_water(c->conn)) {
		r = ub_conn_want_writable(c->conn);
		if (r < 0) {
			kv_abort(c, "want_writable", (int)r);
			return -1;
		}
		return 1;
	}
	return 0;
}

/*
 * Parse what waits in c->in, queue the replies, repeat while parsing
 * stopped only for OUT_MAX and the queue takes more; then pause or resume
 * receiving, or close (protocol error, or EOF with nothing left to run).
 */
static void kv_run(struct kv_conn *c)
{
	int r;

	for (;;) {
		if (!c->quit && c->in.off < c->in.len) {
			c->in.off += kv_parse(c, c->in.p + c->in.off,
					      c->in.len - c->in.off);
			if (c->quit || c->in.off == c->in.len)
				bytes_clear(&c->in);
		}
		if (c->oom) {
			kv_abort(c, "buffering replies", -ENOMEM);
			return;
		}
		r = kv_flush(c);
		if (r < 0)
			return;
		c->blocked = r == 1;
		if (c->blocked || !c->more || c->quit)
			break;
	}
	if (c->blocked) {
		if (!c->paused) {
			r = ub_conn_pause_recv(c->conn);
			if (r < 0) {
				kv_abort(c, "pause_recv", r);
				return;
			}
			c->paused = 1;
		}
		return;
	}
	if (c->quit || (c->eof && !c->more)) {
		kv_close(c);
	} else if (c->paused) {
		r = ub_conn_resume_recv(c->conn);
		if (r < 0) {
			kv_abort(c, "resume_recv", r);
			return;
		}
		c->paused = 0;
	}
}

static void on_data(struct kv_conn *c, ub_buf *buf)
{
	const char *p = ub_buf_data(buf);
	size_t n = ub_buf_len(buf), used;

	if (c->closing || c->quit) {
		ub_buf_release(buf);
		return;
	}
	if (c->in.off < c->in.len || c->blocked) {
		/* behind a partial request, or replies wait: keep it all */
		if (bytes_add(&c->in, p, n) < 0)
			c->oom = 1;
		ub_buf_release(buf);
		if (!c->blocked)
			kv_run(c);
		else if (c->oom)
			kv_abort(c, "buffering input", -ENOMEM);
		return;
	}
	/* Common case: parse the pool's memory itself; keep only the rest. */
	used = kv_parse(c, p, n);
	if (!c->quit && used < n && bytes_add(&c->in, p + used, n - used) < 0)
		c->oom = 1;
	ub_buf_release(buf);
	kv_run(c);
}

static void on_accept(ub_conn *conn)
{
	struct kv_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		ex_warn(opts, "accept", -ENOMEM);
		ub_conn_abort(conn);
		return;
	}
	c->conn = conn;
	c->next = &conns;
	c->prev = conns.prev;
	conns.prev->next = c;
	conns.prev = c;
	ub_conn_set_udata(conn, c);
}

static void on_event(const ub_event *ev)
{
	struct kv_conn *c;

	if (ev->type == UB_EV_ACCEPT) {
		on_accept(ev->conn);
		return;
	}
	if (!ev->conn) {
		if (ev->type == UB_EV_ERROR)
			ex_warn(opts, "accept", ev->res);
		else if (ev->type == UB_EV_CLOSED)
			listener_closed = 1;
		return;
	}
	c = ub_conn_udata(ev->conn);
	if (!c) {
		if (ev->type == UB_EV_DATA)
			ub_buf_release(ev->buf);
		return;
	}
	switch (ev->type) {
	case UB_EV_DATA:
		on_data(c, ev->buf);
		break;
	case UB_EV_WRITABLE:
		if (!c->closing && c->blocked)
			kv_run(c);
		break;
	case UB_EV_EOF:
		c->eof = 1;
		if (!c->closing && !c->blocked)
			kv_run(c);
		break;
	case UB_EV_ERROR:
		c->closing = 1; /* the core closes it: CLOSED follows */
		break;
	case UB_EV_CLOSED:
		ub_conn_set_udata(ev->conn, NULL);
		kv_free(c);
		break;
	default:
		break;
	}
}

/* ---- command line ------------------------------------------------------- */

/* kv's own options, taken out of argv before ex_parse_args() sees the rest
 * (the examples' common options). */
static void parse_kv_args(int *argc, char **argv)
{
	static const struct {
		const char *name;
		size_t *dst;
		unsigned long long min, max;
	} own[] = {
		{ "--max-memory", &lim.max_memory, 0, 1ull << 40 },
		{ "--max-bulk", &lim.max_bulk, 1, 512ull << 20 },
		{ "--max-args", &lim.max_args, 1, 1u << 20 },
		{ "--max-inline", &lim.max_inline, 16, 1u << 30 },
	};
	int i, j, out = 1;
	size_t k, nl;

	for (i = 1; i < *argc; i++) {
		const char *a = argv[i], *val = NULL;

		if (!strcmp(a, "--")) {
			while (i < *argc)
				argv[out++] = argv[i++];
			break;
		}
		if (!strcmp(a, "--help")) {
			printf("kv's own options (defaults: 64 MiB, 1 MiB, "
			       "1024, 64 KiB):\n"
			       "  --max-memory BYTES   key + value bytes "
			       "stored; a SET beyond gets -OOM\n"
			       "  --max-bulk BYTES     longest argument\n"
			       "  --max-args N         most arguments of a "
			       "request\n"
			       "  --max-inline BYTES   longest inline "
			       "request\n");
		}
		for (k = 0; k < sizeof(own) / sizeof(own[0]); k++) {
			nl = strlen(own[k].name);
			if (strncmp(a, own[k].name, nl))
				continue;
			if (a[nl] == '=')
				val = a + nl + 1;
			else if (a[nl] == '\0' && i + 1 < *argc)
				val = argv[++i];
			else if (a[nl] != '\0')
				continue;
			break;
		}
		if (k == sizeof(own) / sizeof(own[0])) {
			argv[out++] = argv[i];
			continue;
		}
		{
			char *end;
			unsigned long long v;

			errno = 0;
			v = val ? strtoull(val, &end, 10) : 0;
			if (!val || errno || end == val || *end ||
			    val[0] == '-' || v < own[k].min || v > own[k].max) {
				fprintf(stderr, "kv: %s wants an integer in "
					"%llu..%llu, not '%s'\n", own[k].name,
					own[k].min, own[k].max,
					val ? val : "");
				exit(1);
			}
			*own[k].dst = (size_t)v;
		}
	}
	for (j = out; j < *argc; j++)
		argv[j] = NULL;
	*argc = out;
	lim.max_request = 2 * lim.max_bulk + (64u << 10);
}

int main(int argc, char **argv)
{
	static ub_event ev[EX_BATCH];
	struct ex_opts o;
	ub_conn_opts copts;
	ub_pool *pool;
	ub_loop *loop;
	int n, i, status = 0;

	parse_kv_args(&argc, argv);
	ex_parse_args(argc, argv, "kv", 0, &o);
	opts = &o;
	argv_buf = calloc(lim.max_args, sizeof(*argv_buf));
	tab.mask = 1023;
	tab.b = calloc(tab.mask + 1, sizeof(*tab.b));
	if (!argv_buf || !tab.b) {
		fprintf(stderr, "kv: out of memory\n");
		return 1;
	}
	ex_signals_install(&o);
	loop = ex_loop_new(&o, &pool);
	ex_conn_opts(&o, pool, &copts);
	(void)ex_listen(loop, &o, &copts);

	while (!ex_stop && !listener_closed) {
		n = ub_loop_wait(loop, ev, EX_BATCH, 1, EX_WAIT_MS);
		if (n == -EINTR)
			continue;
		if (n < 0) {
			ex_warn(&o, "ub_loop_wait", n);
			status = 1;
			break;
		}
		for (i = 0; i < n; i++)
			on_event(&ev[i]);
	}
	if (listener_closed) {
		fprintf(stderr, "kv: the listener closed\n");
		status = 1;
	}
	while (conns.next != &conns)
		kv_free(conns.next);
	n = ub_loop_free(loop);
	if (n < 0) {
		ex_warn(&o, "ub_loop_free", n);
		status = 1;
	}
	tab_free();
	free(argv_buf);
	return status;
}
