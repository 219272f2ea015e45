/*
 * uringbuf_lua.c - the Lua binding's C runtime (see uringbuf_lua.h).
 *
 * Owns: the handle userdata of every core object (datagram endpoints
 * included), the tokens that tell a
 * handle whether its object still exists, the per-loop registry tables, the
 * Lua layer's per-handle state slot, the event batch, buffer access (#,
 * byte, sub, find, write, tostring), the signal flag, and the few process
 * calls that workers need (fork, waitpid, kill, pipes).
 *
 * Invariants:
 *  - a loop handle holds one reference on its loop token and one on each
 *    pool token of the loop (the list in struct ubl_loop), so closing the
 *    loop can kill them all, in whatever order handles are collected;
 *  - a buffer is touched only after checking, in this order: pool token
 *    alive (so the descriptors exist), state APP, generation unchanged;
 *  - a conn/listener/endpoint handle holds its core object (ub_*_hold)
 *    until its __gc, so its pointer is never stale; whether the object is
 *    gone (the wait after its CLOSED, or its loop freed) is the core's
 *    answer (ub_*_is_closed) or the loop token's, and its state slot reads
 *    nil from then on, so per-connection Lua state never outlives the
 *    connection;
 *  - nothing here calls into Lua while core code runs (the core never calls
 *    back), so a __gc that releases a buffer never re-enters the core.
 */
#include "uringbuf_lua.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Events fetched per ub_loop_wait() crossing. */
#define UBL_BATCH 256

struct ubl_tok {
	unsigned refs;
	int alive;
};

struct ubl_loop {
	ub_loop *loop;          /* NULL once freed */
	struct ubl_tok *tok;
	lua_Integer next_id;    /* ids of conns and listeners */
	ub_event *ev;
	int evn;                /* event tables filled by the last wait */
	struct ubl_tok **ptoks; /* one per pool seen, each referenced */
	unsigned nptoks, capptoks;
};

/* User values of a loop handle. */
enum {
	UV_OBJS = 1, /* id -> conn/listener handle, until CLOSED    */
	UV_POOLS,    /* lightuserdata(ub_pool) -> pool handle        */
	UV_EVENTS,   /* the default event table                      */
	UV_LSTATE,   /* the Lua layer's value for this loop (state()) */
	UV_NLOOP = UV_LSTATE
};

/* User values of a conn or listener handle. */
enum {
	UV_OLOOP = 1, /* its loop handle (keeps the loop's tables alive)    */
	UV_OSTATE,    /* the Lua layer's value (state()): gone with the
		       * handle's object (reads nil, cleared, once gone)   */
	UV_NOBJ = UV_OSTATE
};

struct ubl_pool {
	ub_pool *pool;
	struct ubl_tok *ptok;
};

struct ubl_buf {
	ub_buf *buf;
	struct ubl_tok *ptok;
	uint32_t gen;
};

/* A connection, a listener or a datagram endpoint. */
enum ubl_kind { K_LISTENER = 0, K_CONN = 1, K_DGRAM = 2 };

/*
 * The classes' metatables are also in the registry under a light userdata
 * key each, so that type checks and new handles need no string: Lua's
 * luaL_testudata() and luaL_setmetatable() look the name up as a string,
 * which a type check per call and field makes a visible part of a
 * datagram echo (strcmp in luaS_new).
 */
static const char *const ubl_tnames[] = { UBL_LOOP, UBL_POOL, UBL_BUF,
					  UBL_CONN, UBL_LISTENER, UBL_DGRAM };
static char ubl_mtkeys[sizeof(ubl_tnames) / sizeof(ubl_tnames[0])];

static const void *mtkey(const char *tname)
{
	unsigned i;

	for (i = 0; i < sizeof(ubl_tnames) / sizeof(ubl_tnames[0]); i++)
		if (ubl_tnames[i] == tname) /* this file's literals */
			return &ubl_mtkeys[i];
	for (i = 0; i < sizeof(ubl_tnames) / sizeof(ubl_tnames[0]); i++)
		if (!strcmp(ubl_tnames[i], tname))
			return &ubl_mtkeys[i];
	return NULL;
}

static void *ubl_testudata(lua_State *L, int idx, const char *tname)
{
	void *p = lua_touserdata(L, idx);
	int eq;

	if (!p || !lua_getmetatable(L, idx))
		return NULL;
	lua_rawgetp(L, LUA_REGISTRYINDEX, mtkey(tname));
	eq = lua_rawequal(L, -1, -2);
	lua_pop(L, 2);
	return eq ? p : NULL;
}

static void *ubl_checkudata(lua_State *L, int idx, const char *tname)
{
	void *p = ubl_testudata(L, idx, tname);

	if (!p)
		luaL_typeerror(L, idx, tname);
	return p;
}

static void ubl_setmetatable(lua_State *L, const char *tname)
{
	lua_rawgetp(L, LUA_REGISTRYINDEX, mtkey(tname));
	lua_setmetatable(L, -2);
}

struct ubl_obj {
	void *p;               /* held (NULL: not yet, or released in __gc) */
	struct ubl_tok *tok;
	lua_Integer id;
	int kind;              /* enum ubl_kind */
};

static const char loops_key = 0; /* registry: lightud(ub_loop) -> handle */

/* ---- tokens ------------------------------------------------------------ */

static struct ubl_tok *tok_new(lua_State *L)
{
	struct ubl_tok *t = malloc(sizeof(*t));

	if (!t)
		luaL_error(L, "not enough memory");
	t->refs = 1;
	t->alive = 1;
	return t;
}

static struct ubl_tok *tok_ref(struct ubl_tok *t)
{
	t->refs++;
	return t;
}

static void tok_unref(struct ubl_tok **tp)
{
	struct ubl_tok *t = *tp;

	*tp = NULL;
	if (t && --t->refs == 0)
		free(t);
}

/* ---- errors and integers ----------------------------------------------- */

int ubl_push_reason(lua_State *L, int err, const char *why)
{
	luaL_pushfail(L);
	lua_pushstring(L, why ? why : strerror(-err));
	lua_pushinteger(L, -err);
	return 3;
}

int ubl_push_error(lua_State *L, int err)
{
	return ubl_push_reason(L, err, NULL);
}

lua_Integer ubl_check_int(lua_State *L, int idx, lua_Integer min,
			  lua_Integer max)
{
	lua_Integer v = luaL_checkinteger(L, idx);

	if (v < min || v > max)
		luaL_argerror(L, idx,
			      lua_pushfstring(L, "value out of range (%I..%I)",
					      (LUAI_UACINT)min,
					      (LUAI_UACINT)max));
	return v;
}

static lua_Integer opt_int(lua_State *L, int idx, lua_Integer def,
			   lua_Integer min, lua_Integer max)
{
	return lua_isnoneornil(L, idx) ? def : ubl_check_int(L, idx, min, max);
}

/* string.sub / string.byte position rules (lstrlib.c). */
static size_t posrelat_start(lua_Integer pos, size_t len)
{
	if (pos > 0)
		return (size_t)pos;
	if (pos == 0)
		return 1;
	if (pos < -(lua_Integer)len)
		return 1;
	return len + (size_t)pos + 1;
}

static size_t posrelat_end(lua_State *L, int arg, lua_Integer def, size_t len)
{
	lua_Integer pos = luaL_optinteger(L, arg, def);

	if (pos > (lua_Integer)len)
		return len;
	if (pos >= 0)
		return (size_t)pos;
	if (pos < -(lua_Integer)len)
		return 0;
	return len + (size_t)pos + 1;
}

/* ---- handles: loops ---------------------------------------------------- */

static struct ubl_loop *to_loop(lua_State *L, int idx)
{
	return ubl_checkudata(L, idx, UBL_LOOP);
}

ub_loop *ubl_check_loop(lua_State *L, int idx)
{
	struct ubl_loop *h = to_loop(L, idx);

	if (!h->loop)
		luaL_argerror(L, idx, "loop is closed");
	return h->loop;
}

void ubl_push_loop(lua_State *L, ub_loop *loop)
{
	struct ubl_loop *h;
	int i;

	if (!loop) {
		lua_pushnil(L);
		return;
	}
	lua_rawgetp(L, LUA_REGISTRYINDEX, &loops_key);
	if (lua_rawgetp(L, -1, loop) != LUA_TNIL) {
		lua_remove(L, -2);
		return;
	}
	lua_pop(L, 1);
	/* First sight: a loop ub_loop_new() just made.  Should an allocation
	 * below fail, free the loop rather than lose it. */
	h = lua_newuserdatauv(L, sizeof(*h), UV_NLOOP);
	memset(h, 0, sizeof(*h));
	h->loop = loop;
	ubl_setmetatable(L, UBL_LOOP);
	h->ev = malloc(UBL_BATCH * sizeof(*h->ev));
	h->tok = malloc(sizeof(*h->tok));
	if (!h->ev || !h->tok) {
		free(h->ev);
		free(h->tok);
		h->ev = NULL;
		h->tok = NULL;
		h->loop = NULL;
		ub_loop_free(loop);
		luaL_error(L, "not enough memory");
	}
	h->tok->refs = 1;
	h->tok->alive = 1;
	for (i = 1; i < UV_LSTATE; i++) { /* UV_LSTATE starts nil */
		lua_newtable(L);
		lua_setiuservalue(L, -2, i);
	}
	lua_pushvalue(L, -1);
	lua_rawsetp(L, -3, loop);
	lua_remove(L, -2);
}

/* ---- handles: pools and buffers ---------------------------------------- */

static int pool_alive(const struct ubl_pool *h)
{
	return h->pool && h->ptok && h->ptok->alive;
}

ub_pool *ubl_check_pool(lua_State *L, int idx)
{
	struct ubl_pool *h = ubl_checkudata(L, idx, UBL_POOL);

	if (!pool_alive(h))
		luaL_argerror(L, idx, "pool is freed");
	return h->pool;
}

/* Pool handle of pool, whose loop handle is at lidx. */
static struct ubl_pool *push_pool_in(lua_State *L, int lidx, ub_pool *pool)
{
	struct ubl_loop *lh = lua_touserdata(L, lidx);
	struct ubl_pool *h;

	lidx = lua_absindex(L, lidx);
	lua_getiuservalue(L, lidx, UV_POOLS);
	if (lua_rawgetp(L, -1, pool) != LUA_TNIL) {
		lua_remove(L, -2);
		return lua_touserdata(L, -1);
	}
	lua_pop(L, 1);
	if (lh->nptoks == lh->capptoks) {
		unsigned ncap = lh->capptoks ? lh->capptoks * 2 : 4;
		struct ubl_tok **n = realloc(lh->ptoks, ncap * sizeof(*n));

		if (!n)
			luaL_error(L, "not enough memory");
		lh->ptoks = n;
		lh->capptoks = ncap;
	}
	h = lua_newuserdatauv(L, sizeof(*h), 1);
	h->pool = NULL;
	h->ptok = NULL;
	ubl_setmetatable(L, UBL_POOL);
	h->ptok = tok_new(L);
	lh->ptoks[lh->nptoks++] = tok_ref(h->ptok);
	h->pool = pool;
	lua_pushvalue(L, lidx);
	lua_setiuservalue(L, -2, 1);
	lua_pushvalue(L, -1);
	lua_rawsetp(L, -3, pool);
	lua_remove(L, -2);
	return h;
}

void ubl_push_pool(lua_State *L, ub_pool *pool)
{
	if (!pool) {
		lua_pushnil(L);
		return;
	}
	ubl_push_loop(L, ub_pool_loop(pool));
	push_pool_in(L, -1, pool);
	lua_remove(L, -2);
}

static int buf_valid(const struct ubl_buf *h)
{
	return h->buf && h->ptok && h->ptok->alive &&
	       ub_buf_state(h->buf) == UB_BUF_APP &&
	       ub_buf_gen(h->buf) == h->gen;
}

static struct ubl_buf *check_buf(lua_State *L, int idx)
{
	struct ubl_buf *h = ubl_checkudata(L, idx, UBL_BUF);

	if (!buf_valid(h))
		luaL_argerror(L, idx, "buffer is released");
	return h;
}

ub_buf *ubl_check_buf(lua_State *L, int idx)
{
	return check_buf(L, idx)->buf;
}

static void new_buf(lua_State *L, ub_buf *buf, struct ubl_tok *ptok)
{
	struct ubl_buf *h = lua_newuserdatauv(L, sizeof(*h), 0);

	h->buf = buf;
	h->ptok = tok_ref(ptok);
	h->gen = ub_buf_gen(buf);
	ubl_setmetatable(L, UBL_BUF);
}

void ubl_push_buf(lua_State *L, ub_buf *buf)
{
	struct ubl_pool *ph;

	if (!buf) {
		lua_pushnil(L);
		return;
	}
	ubl_push_pool(L, ub_buf_pool(buf));
	ph = lua_touserdata(L, -1);
	new_buf(L, buf, ph->ptok);
	lua_remove(L, -2);
}

/* ---- handles: connections and listeners -------------------------------- */

/* The core's word on a held object: gone (is_closed) or not. */
static int obj_core_closed(void *p, int kind)
{
	switch (kind) {
	case K_CONN:
		return ub_conn_is_closed(p) > 0;
	case K_DGRAM:
		return ub_dgram_is_closed(p) > 0;
	default:
		return ub_listener_is_closed(p) > 0;
	}
}

static int obj_alive(const struct ubl_obj *h)
{
	return h->p && h->tok && h->tok->alive &&
	       !obj_core_closed(h->p, h->kind);
}

static void *check_obj(lua_State *L, int idx, const char *tname,
		       const char *closed)
{
	struct ubl_obj *h = ubl_checkudata(L, idx, tname);

	if (!h->tok || !h->tok->alive)
		luaL_argerror(L, idx, "its loop is closed");
	if (!h->p || obj_core_closed(h->p, h->kind))
		luaL_argerror(L, idx, closed);
	return h->p;
}

ub_conn *ubl_check_conn(lua_State *L, int idx)
{
	return check_obj(L, idx, UBL_CONN, "connection is closed");
}

ub_conn *ubl_opt_conn(lua_State *L, int idx)
{
	return lua_isnoneornil(L, idx) ? NULL : ubl_check_conn(L, idx);
}

ub_listener *ubl_check_listener(lua_State *L, int idx)
{
	return check_obj(L, idx, UBL_LISTENER, "listener is closed");
}

ub_dgram *ubl_check_dgram(lua_State *L, int idx)
{
	return check_obj(L, idx, UBL_DGRAM, "endpoint is closed");
}

static const char *const kind_tname[] = { UBL_LISTENER, UBL_CONN, UBL_DGRAM };

static void *obj_udata(void *p, int kind)
{
	switch (kind) {
	case K_CONN:
		return ub_conn_udata(p);
	case K_DGRAM:
		return ub_dgram_udata(p);
	default:
		return ub_listener_udata(p);
	}
}

static void obj_set_udata(void *p, int kind, void *u)
{
	switch (kind) {
	case K_CONN:
		ub_conn_set_udata(p, u);
		break;
	case K_DGRAM:
		ub_dgram_set_udata(p, u);
		break;
	default:
		ub_listener_set_udata(p, u);
	}
}

/* Handle of a conn, listener or endpoint p (enum ubl_kind) of the loop
 * whose handle is at lidx and OBJS table at oidx; created and registered on
 * first sight. */
static void push_obj_in(lua_State *L, int lidx, int oidx, void *p, int kind)
{
	struct ubl_loop *lh = lua_touserdata(L, lidx);
	lua_Integer id = (lua_Integer)(intptr_t)obj_udata(p, kind);
	struct ubl_obj *h;
	int r;

	if (id && lua_rawgeti(L, oidx, id) == LUA_TUSERDATA)
		return;
	if (id)
		lua_pop(L, 1);
	h = lua_newuserdatauv(L, sizeof(*h), UV_NOBJ);
	h->p = NULL;
	h->tok = NULL;
	h->kind = kind;
	ubl_setmetatable(L, kind_tname[kind]);
	r = kind == K_CONN ? ub_conn_hold(p)
	    : kind == K_DGRAM ? ub_dgram_hold(p) : ub_listener_hold(p);
	if (r < 0)
		luaL_error(L, "cannot hold a %s: %s", kind_tname[kind],
			   strerror(-r));
	h->p = p; /* held: released by __gc */
	h->tok = tok_ref(lh->tok);
	h->id = ++lh->next_id;
	obj_set_udata(p, kind, (void *)(intptr_t)h->id);
	lua_pushvalue(L, lidx);
	lua_setiuservalue(L, -2, UV_OLOOP);
	lua_pushvalue(L, -1);
	lua_rawseti(L, oidx, h->id);
}

static void push_obj(lua_State *L, ub_loop *loop, void *p, int kind)
{
	int top = lua_gettop(L);

	if (!p) {
		lua_pushnil(L);
		return;
	}
	ubl_push_loop(L, loop);
	lua_getiuservalue(L, -1, UV_OBJS);
	push_obj_in(L, top + 1, top + 2, p, kind);
	lua_replace(L, top + 1);
	lua_settop(L, top + 1);
}

void ubl_push_conn(lua_State *L, ub_conn *c)
{
	push_obj(L, c ? ub_conn_loop(c) : NULL, c, K_CONN);
}

void ubl_push_listener(lua_State *L, ub_listener *l)
{
	push_obj(L, l ? ub_listener_loop(l) : NULL, l, K_LISTENER);
}

void ubl_push_dgram(lua_State *L, ub_dgram *d)
{
	push_obj(L, d ? ub_dgram_loop(d) : NULL, d, K_DGRAM);
}

/* Let go of the core object: freed now if it is gone, else when it is
 * (a detached one, its loop closed, needs no loop).  Lua runs no __gc
 * while core code runs: this never re-enters the core. */
static int obj_gc(lua_State *L)
{
	struct ubl_obj *h = lua_touserdata(L, 1);
	void *p = h->p;

	h->p = NULL;
	if (p) {
		obj_set_udata(p, h->kind, NULL); /* events no longer find us */
		if (h->kind == K_CONN)
			ub_conn_release(p);
		else if (h->kind == K_DGRAM)
			ub_dgram_release(p);
		else
			ub_listener_release(p);
	}
	tok_unref(&h->tok);
	return 0;
}

static int obj_tostring(lua_State *L)
{
	struct ubl_obj *h = lua_touserdata(L, 1);
	const char *name = luaL_checkstring(L, lua_upvalueindex(1));

	lua_pushfstring(L, "%s #%I%s", name, (LUAI_UACINT)h->id,
			obj_alive(h) ? "" : " (closed)");
	return 1;
}

/* ---- options ----------------------------------------------------------- */

static lua_Integer field_int(lua_State *L, int idx, const char *name,
			     lua_Integer def, lua_Integer min, lua_Integer max)
{
	lua_Integer v;
	int isnum;

	if (lua_getfield(L, idx, name) == LUA_TNIL) {
		lua_pop(L, 1);
		return def;
	}
	v = lua_tointegerx(L, -1, &isnum);
	if (!isnum)
		luaL_argerror(L, idx,
			      lua_pushfstring(L, "field '%s': integer expected, got %s",
					      name, luaL_typename(L, -1)));
	if (v < min || v > max)
		luaL_argerror(L, idx,
			      lua_pushfstring(L, "field '%s': value out of range (%I..%I)",
					      name, (LUAI_UACINT)min,
					      (LUAI_UACINT)max));
	lua_pop(L, 1);
	return v;
}

static int field_bool(lua_State *L, int idx, const char *name)
{
	int v;

	lua_getfield(L, idx, name);
	v = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return v;
}

/* A flag field that must be a boolean when given (nil: false): a flag
 * that silently took "no" or 0 for true would hide a mistake. */
static int field_flag(lua_State *L, int idx, const char *name)
{
	int t = lua_getfield(L, idx, name), v;

	if (t != LUA_TNIL && t != LUA_TBOOLEAN)
		luaL_argerror(L, idx,
			      lua_pushfstring(L, "field '%s': boolean expected, got %s",
					      name, luaL_typename(L, -1)));
	v = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return v;
}

/* Refuse keys not in names[] (a typo must not pass for a default). */
static void check_keys(lua_State *L, int idx, const char *const *names)
{
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING
				? lua_tostring(L, -2) : NULL;
		int i, ok = 0;

		for (i = 0; k && names[i]; i++)
			if (!strcmp(k, names[i]))
				ok = 1;
		if (!ok)
			luaL_argerror(L, idx,
				      lua_pushfstring(L, "unknown option '%s'",
						      k ? k : luaL_typename(L, -2)));
		lua_pop(L, 1);
	}
}

void ubl_check_loop_opts(lua_State *L, int idx, ub_loop_opts *o)
{
	static const char *const names[] = { "entries", "pool_count",
		"pool_size", "disable", "pool_incremental", NULL };

	memset(o, 0, sizeof(*o));
	if (lua_isnoneornil(L, idx))
		return;
	idx = lua_absindex(L, idx);
	luaL_checktype(L, idx, LUA_TTABLE);
	check_keys(L, idx, names);
	o->entries = (unsigned)field_int(L, idx, "entries", 0, 0, UINT_MAX);
	o->pool_count = (unsigned)field_int(L, idx, "pool_count", 0, 0,
					    UINT_MAX);
	o->pool_size = (unsigned)field_int(L, idx, "pool_size", 0, 0,
					   UINT_MAX);
	o->pool_flags = field_flag(L, idx, "pool_incremental") ? UB_POOL_INC
							       : 0;
	lua_getfield(L, idx, "disable");
	if (lua_type(L, -1) == LUA_TTABLE) {
		/* An array of feature names. */
		lua_Integer i, n = (lua_Integer)lua_rawlen(L, -1);

		for (i = 1; i <= n; i++) {
			const char *name;
			unsigned f, found = 0;

			lua_rawgeti(L, -1, i);
			name = lua_tostring(L, -1);
			for (f = 1; name && f <= UB_FEAT_ALL; f <<= 1)
				if (!strcmp(ub_feature_name(f), name))
					found = f;
			if (!found)
				luaL_argerror(L, idx,
					      lua_pushfstring(L, "disable: unknown feature '%s'",
							      name ? name : "?"));
			o->disable |= found;
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	} else {
		lua_pop(L, 1);
		o->disable = (unsigned)field_int(L, idx, "disable", 0, 0,
						 UINT_MAX);
	}
}

static ub_pool *field_pool(lua_State *L, int idx, const char *name)
{
	ub_pool *p = NULL;

	if (lua_getfield(L, idx, name) != LUA_TNIL) {
		struct ubl_pool *h = ubl_testudata(L, -1, UBL_POOL);

		if (!h || !pool_alive(h))
			luaL_argerror(L, idx,
				      lua_pushfstring(L, "field '%s': live %s expected",
						      name, UBL_POOL));
		p = h->pool;
	}
	lua_pop(L, 1);
	return p;
}

/* Largest finite deadline, in ms (UINT_MAX is "never" for close). */
#define UBL_MAX_MS (UINT_MAX - 1u)

/*
 * Seconds (the number at vidx) -> milliseconds, rounded up (any positive
 * number is at least 1 ms): math.huge gives huge; 0 gives zero, or raises
 * if zero is UINT_MAX (not allowed).  Raises, blaming argument arg (and
 * naming the field, if any), on a non-number, NaN, a negative number or
 * more than UBL_MAX_MS ms.
 */
static unsigned check_seconds(lua_State *L, int vidx, int arg,
			      const char *field, unsigned zero, unsigned huge)
{
	lua_Number s, ms;
	unsigned ims;
	int isnum;
	const char *pre;

	if (vidx > 0 && lua_isnone(L, vidx))
		lua_settop(L, vidx); /* an absent argument reads as nil */
	vidx = lua_absindex(L, vidx);
	pre = field ? lua_pushfstring(L, "field '%s': ", field)
		    : lua_pushliteral(L, "");
	s = lua_tonumberx(L, vidx, &isnum);
	if (!isnum)
		luaL_argerror(L, arg,
			      lua_pushfstring(L, "%snumber of seconds expected, got %s",
					      pre, luaL_typename(L, vidx)));
	if (s != s)
		luaL_argerror(L, arg,
			      lua_pushfstring(L, "%sseconds expected, got NaN", pre));
	ms = s * 1000;
	if (s != (lua_Number)HUGE_VAL && (s < 0 || (s == 0 && zero == UINT_MAX) ||
					  ms > (lua_Number)UBL_MAX_MS))
		luaL_argerror(L, arg,
			      lua_pushfstring(L, "%sseconds out of range (0 %s s <= %f, or math.huge)",
					      pre, zero == UINT_MAX ? "<" : "<=",
					      (lua_Number)UBL_MAX_MS / 1000));
	lua_pop(L, 1); /* pre */
	if (s == (lua_Number)HUGE_VAL)
		return huge;
	if (s == 0)
		return zero;
	/* Round up, forgiving the last bits of a decimal fraction
	 * (0.035 * 1000 is 35.000000000000004), and at least 1 ms. */
	ms -= ms * 1e-12;
	ims = (unsigned)ms;
	if ((lua_Number)ims < ms)
		ims++;
	return ims ? ims : 1u;
}

/* A deadline field (seconds) of the table at idx -> ms; nil gives def. */
static unsigned field_seconds(lua_State *L, int idx, const char *name,
			      unsigned def, unsigned zero, unsigned huge)
{
	unsigned ms;

	if (lua_getfield(L, idx, name) == LUA_TNIL) {
		lua_pop(L, 1);
		return def;
	}
	ms = check_seconds(L, -1, idx, name, zero, huge);
	lua_pop(L, 1);
	return ms;
}

/* conn_set_idle_timeout(conn, seconds): 0 or math.huge for none. */
int ubl_conn_set_idle_timeout(lua_State *L)
{
	ub_conn *c = ubl_check_conn(L, 1);
	unsigned ms = check_seconds(L, 2, 2, NULL, 0, 0);
	int r = ub_conn_set_idle_timeout(c, ms);

	if (r < 0)
		return ubl_push_error(L, r);
	lua_pushboolean(L, 1);
	return 1;
}

void ubl_check_conn_opts(lua_State *L, int idx, ub_conn_opts *o)
{
	static const char *const names[] = { "recv_pool", "send_pool", "mode",
		"ring_entries", "high_water", "low_water", "flags", "no_recv",
		"singleshot", "no_recv_bundle", "sent_events", "recv_budget",
		"idle_timeout", "connect_timeout", "close_timeout", NULL };

	ub_conn_opts_init(o);
	if (lua_isnoneornil(L, idx))
		return;
	idx = lua_absindex(L, idx);
	luaL_checktype(L, idx, LUA_TTABLE);
	check_keys(L, idx, names);
	o->recv_pool = field_pool(L, idx, "recv_pool");
	o->send_pool = field_pool(L, idx, "send_pool");
	if (lua_getfield(L, idx, "mode") == LUA_TSTRING) {
		int m = ub_mode_from_name(lua_tostring(L, -1));

		if (m < 0)
			luaL_argerror(L, idx,
				      lua_pushfstring(L, "field 'mode': unknown mode '%s'",
						      lua_tostring(L, -1)));
		o->mode = m;
		lua_pop(L, 1);
	} else {
		lua_pop(L, 1);
		o->mode = (int)field_int(L, idx, "mode", UB_MODE_AUTO,
					 INT_MIN, INT_MAX);
	}
	o->ring_entries = (unsigned)field_int(L, idx, "ring_entries",
					      o->ring_entries, 0, UINT_MAX);
	o->high_water = (size_t)field_int(L, idx, "high_water", 0, 0,
					  LUA_MAXINTEGER);
	o->low_water = (size_t)field_int(L, idx, "low_water",
					 (lua_Integer)(o->high_water / 4), 0,
					 LUA_MAXINTEGER);
	o->flags = (unsigned)field_int(L, idx, "flags", 0, 0, UINT_MAX);
	if (field_bool(L, idx, "no_recv"))
		o->flags |= UB_CONN_NO_RECV;
	if (field_bool(L, idx, "singleshot"))
		o->flags |= UB_CONN_SINGLESHOT;
	if (field_bool(L, idx, "no_recv_bundle"))
		o->flags |= UB_CONN_NO_RECV_BUNDLE;
	if (field_bool(L, idx, "sent_events"))
		o->flags |= UB_CONN_SENT_EVENTS;
	/* Isolation: bytes, and deadlines in seconds (0 or math.huge: none;
	 * close: math.huge is never, 0 is refused - that is abort()). */
	o->recv_budget = (size_t)field_int(L, idx, "recv_budget",
					   (lua_Integer)o->recv_budget, 0,
					   LUA_MAXINTEGER);
	o->idle_timeout_ms = field_seconds(L, idx, "idle_timeout",
					   o->idle_timeout_ms, 0, 0);
	o->connect_timeout_ms = field_seconds(L, idx, "connect_timeout",
					      o->connect_timeout_ms, 0, 0);
	o->close_timeout_ms = field_seconds(L, idx, "close_timeout",
					    o->close_timeout_ms, UINT_MAX,
					    UINT_MAX);
}

void ubl_check_addr(lua_State *L, int idx, struct sockaddr_storage *ss,
		    socklen_t *len)
{
	const char *s = luaL_checkstring(L, idx);

	*len = sizeof(*ss);
	if (ub_addr_parse(s, ss, len) < 0)
		luaL_argerror(L, idx,
			      lua_pushfstring(L, "malformed address '%s' (HOST:PORT, [V6]:PORT or unix:PATH)",
					      s));
}

/* ---- loop: close and wait ---------------------------------------------- */

int ubl_loop_close(lua_State *L)
{
	struct ubl_loop *h = to_loop(L, 1);
	ub_loop *loop = h->loop;
	unsigned i;
	int ret;

	if (!loop) {
		lua_pushboolean(L, 1);
		return 1;
	}
	h->loop = NULL;
	ret = ub_loop_free(loop);
	if (h->tok)
		h->tok->alive = 0;
	tok_unref(&h->tok);
	for (i = 0; i < h->nptoks; i++) {
		h->ptoks[i]->alive = 0;
		tok_unref(&h->ptoks[i]);
	}
	free(h->ptoks);
	h->ptoks = NULL;
	h->nptoks = h->capptoks = 0;
	free(h->ev);
	h->ev = NULL;
	/* Handles still referenced keep their (detached) objects until their
	 * __gc; the loop no longer keeps them. */
	lua_settop(L, 1);
	lua_newtable(L);
	lua_setiuservalue(L, 1, UV_OBJS);
	lua_pushnil(L);
	lua_setiuservalue(L, 1, UV_LSTATE);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &loops_key);
	lua_pushnil(L);
	lua_rawsetp(L, -2, loop);
	lua_pop(L, 1);
	if (ret < 0)
		return ubl_push_error(L, ret);
	lua_pushboolean(L, 1);
	return 1;
}

/* The strings buf:source() made last, by address (direct-mapped): a
 * server's peers are few and come back, and formatting one per datagram
 * was a visible part of an echo's cost.  The strings are in the
 * userdata's user value (a table, slot i + 1), which keeps them alive: so
 * str[i], the string now in slot i, found again by its pointer (byptr, by
 * a hash of it), names that address without parsing when it comes back as
 * a send's destination (the echo's reply). */
#define UBL_ACACHE 64u
struct ubl_acache {
	socklen_t len[UBL_ACACHE];
	struct sockaddr_storage sa[UBL_ACACHE];
	const char *str[UBL_ACACHE];
	unsigned char byptr[UBL_ACACHE];
};

static unsigned ptr_slot(const char *s)
{
	uintptr_t v = (uintptr_t)s;

	return (unsigned)((v >> 4) ^ (v >> 12)) % UBL_ACACHE;
}

/* The address-string cache's registry key (the userdata is also
 * buf:source()'s upvalue). */
static char ubl_acache_key;

/* Push the source of received datagram b as buf:source() does, from the
 * cache userdata at ci (its uservalue: the strings); nil if none. */
static void push_source(lua_State *L, ub_buf *b, int ci)
{
	struct ubl_acache *c = lua_touserdata(L, ci);
	socklen_t len = 0;
	const struct sockaddr *sa = ub_buf_addr(b, &len);
	const unsigned char *p = (const unsigned char *)sa;
	uint32_t hash = 2166136261u;
	char out[128];
	socklen_t k;
	unsigned i;
	int n;

	if (!sa || !len || len > sizeof(c->sa[0])) {
		lua_pushnil(L);
		return;
	}
	for (k = 0; k < len; k++)
		hash = (hash ^ p[k]) * 16777619u;
	i = (unsigned)(hash ^ (hash >> 16)) % UBL_ACACHE;
	lua_getiuservalue(L, ci, 1);
	if (c->len[i] == len && memcmp(&c->sa[i], sa, len) == 0) {
		lua_rawgeti(L, -1, (lua_Integer)i + 1);
		lua_remove(L, -2);
		return;
	}
	n = ub_buf_addr_format(b, out, sizeof(out));
	if (n < 0) {
		lua_pop(L, 1);
		lua_pushnil(L);
		return;
	}
	c->str[i] = lua_pushlstring(L, out, (size_t)n);
	c->byptr[ptr_slot(c->str[i])] = (unsigned char)i;
	lua_pushvalue(L, -1);
	lua_rawseti(L, -3, (lua_Integer)i + 1);
	lua_remove(L, -2);
	memcpy(&c->sa[i], sa, len);
	c->len[i] = len;
}

/* The address of string s if it is one the cache made (the same string,
 * still in its slot): 1, else 0. */
static int cached_addr(lua_State *L, const char *s,
		       struct sockaddr_storage *ss, socklen_t *len)
{
	const struct ubl_acache *c;
	unsigned i;

	lua_rawgetp(L, LUA_REGISTRYINDEX, &ubl_acache_key);
	c = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (!c)
		return 0;
	i = c->byptr[ptr_slot(s)];
	if (c->str[i] != s)
		return 0;
	memcpy(ss, &c->sa[i], c->len[i]);
	*len = c->len[i];
	return 1;
}

static volatile sig_atomic_t ubl_sig;

/* loop:wait([min [, timeout_ms [, events]]]) -> n, events */
/* The event tables' field names, and the event names after them, in a
 * registry table (&ubl_fkeys) by index: setting a field by a name pushed
 * from there needs no string interning per field (see ubl_testudata). */
enum { F_TYPE = 1, F_RES, F_LISTENER, F_CONN, F_DGRAM, F_STATE, F_BUF,
       F_FAST, F_ERR, F_FASTN, F_EVNAMES };
#define UBL_NEVNAMES 16
static char ubl_fkeys;

static void make_fkeys(lua_State *L)
{
	static const char *const f[] = { "type", "res", "listener", "conn",
					  "dgram", "state", "buf", "_fast",
					  "err", "fast" };
	int i;

	lua_createtable(L, F_EVNAMES + UBL_NEVNAMES, 0);
	for (i = 0; i < (int)(sizeof(f) / sizeof(f[0])); i++) {
		lua_pushstring(L, f[i]);
		lua_rawseti(L, -2, F_TYPE + i);
	}
	for (i = 0; i < UBL_NEVNAMES; i++) {
		lua_pushstring(L, ub_event_name(i));
		lua_rawseti(L, -2, F_EVNAMES + i);
	}
	lua_rawsetp(L, LUA_REGISTRYINDEX, &ubl_fkeys);
}

/* t[field f] = the value on top (popped); t at absolute index it. */
static void setf(lua_State *L, int it, int ik, int f)
{
	lua_rawgeti(L, ik, f);
	lua_insert(L, -2);
	lua_rawset(L, it);
}

static void push_evname(lua_State *L, int ik, int type)
{
	if (type >= 0 && type < UBL_NEVNAMES)
		lua_rawgeti(L, ik, F_EVNAMES + type);
	else
		lua_pushstring(L, ub_event_name(type));
}

/* Message handler of the callbacks wait() calls: a string error gets the
 * callback's traceback (it is raised again later, from Lua, after the
 * rest of the batch was delivered). */
static int fast_msgh(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);

	if (msg && lua_type(L, 1) == LUA_TSTRING)
		luaL_traceback(L, L, msg, 1);
	return 1;
}

/* Push a handle for event buffer b; the batch's last pool and its token
 * in *last_pool, *last_ptok (a batch's buffers are mostly of one pool). */
static void push_event_buf(lua_State *L, ub_buf *b, ub_pool **last_pool,
			   struct ubl_tok **last_ptok)
{
	ub_pool *p = ub_buf_pool(b);

	if (p != *last_pool) {
		struct ubl_pool *ph = push_pool_in(L, 1, p);

		*last_pool = p;
		*last_ptok = ph->ptok;
		lua_pop(L, 1); /* the OBJS table keeps it */
	}
	new_buf(L, b, *last_ptok);
}

/*
 * A DATA event of an endpoint whose Lua layer set state._fast (uringbuf.udp:
 * its on_datagram): call it (state, buf, source, res) right here, without
 * an event table and the Lua dispatch chain.  Returns 0 when the event is
 * not for this path (it goes into the table); else 1, with *err set when
 * the callback raised (the error object pushed).  At io: the loop's OBJS
 * table, ik: the field keys, ic: the address-string cache, im: fast_msgh.
 */
static int fast_data(lua_State *L, int io, int ik, int ic, int im,
		     const ub_event *e, ub_pool **last_pool,
		     struct ubl_tok **last_ptok, int *err)
{
	int top = lua_gettop(L);

	push_obj_in(L, 1, io, e->dgram, K_DGRAM);
	if (lua_getiuservalue(L, -1, UV_OSTATE) != LUA_TTABLE) {
		lua_settop(L, top);
		return 0;
	}
	lua_rawgeti(L, ik, F_FAST);
	if (lua_rawget(L, -2) != LUA_TFUNCTION) {
		lua_settop(L, top);
		return 0;
	}
	if (ub_dgram_is_closing(e->dgram)) {
		/* closed by an earlier callback of this batch: nobody wants
		 * it (as uringbuf.udp's own dispatch) */
		ub_buf_release(e->buf);
		lua_settop(L, top);
		return 1;
	}
	lua_insert(L, -2); /* fn, state */
	push_event_buf(L, e->buf, last_pool, last_ptok);
	push_source(L, e->buf, ic);
	lua_pushinteger(L, e->res);
	if (lua_pcall(L, 4, 0, im) != LUA_OK) {
		*err = 1;
		lua_replace(L, top + 1); /* the error object */
		lua_settop(L, top + 1);
		return 1;
	}
	lua_settop(L, top);
	return 1;
}

/* Event table it's field f: the handle of object p (kind), or nil.
 * own: the event is about p itself (not a listener's accept), so its Lua
 * layer state goes in "state" (handed over with the event: no lookup by
 * handle in Lua), and on CLOSED, its last event, the loop stops keeping
 * the handle.  Returns own for a p. */
static int set_obj(lua_State *L, int it, int io, int ik, int f, void *p,
		   int kind, int own, int closed)
{
	if (!p) {
		lua_pushnil(L);
		setf(L, it, ik, f);
		return 0;
	}
	push_obj_in(L, 1, io, p, kind);
	if (own) {
		lua_getiuservalue(L, -1, UV_OSTATE);
		setf(L, it, ik, F_STATE);
		if (closed) {
			struct ubl_obj *o = lua_touserdata(L, -1);

			lua_pushnil(L);
			lua_rawseti(L, io, o->id);
		}
	}
	setf(L, it, ik, f);
	return own;
}

/* Fill event table slot j+1 of the table at ie from e; at io, ik as
 * fast_data. */
static void fill_event(lua_State *L, int ie, int io, int ik, int j,
		       const ub_event *e, ub_pool **last_pool,
		       struct ubl_tok **last_ptok)
{
	int closed = e->type == UB_EV_CLOSED, have_state, it;

	if (lua_rawgeti(L, ie, j + 1) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_createtable(L, 0, 6);
		lua_pushvalue(L, -1);
		lua_rawseti(L, ie, j + 1);
	}
	it = lua_gettop(L);
	push_evname(L, ik, e->type);
	setf(L, it, ik, F_TYPE);
	lua_pushinteger(L, e->res);
	setf(L, it, ik, F_RES);
	have_state = set_obj(L, it, io, ik, F_LISTENER, e->listener,
			     K_LISTENER, !e->conn, closed);
	have_state |= set_obj(L, it, io, ik, F_CONN, e->conn, K_CONN, 1,
			      closed);
	have_state |= set_obj(L, it, io, ik, F_DGRAM, e->dgram, K_DGRAM, 1,
			      closed);
	if (!have_state) {
		lua_pushnil(L);
		setf(L, it, ik, F_STATE);
	}
	if (e->type == UB_EV_DATA && e->buf)
		push_event_buf(L, e->buf, last_pool, last_ptok);
	else
		lua_pushnil(L);
	setf(L, it, ik, F_BUF);
	lua_pop(L, 1);
}

/*
 * loop:wait([min [, timeout_ms [, events [, dispatch]]]]) -> n, events.
 * dispatch (uringbuf.server's step and pump): DATA events of endpoints
 * whose Lua layer set state._fast are handed to it here, in order, and
 * only the others fill the table (events.fast: how many were handed).  A
 * callback may wait again (its batch is copied first) or close the loop
 * (the rest of the batch went with it).  One that raises: the rest of the
 * batch goes into the table as usual, and the error is in events.err for
 * the caller to raise once those are dispatched.
 */
int ubl_loop_wait(lua_State *L)
{
	struct ubl_loop *h = to_loop(L, 1);
	int min, timeout, n, i, j = 0, nfast = 0, ie, io, ik, ic = 0, im = 0;
	int dispatch, failed = 0;
	ub_pool *last_pool = NULL;
	struct ubl_tok *last_ptok = NULL;
	ub_event local[UBL_BATCH];
	const ub_event *ev;

	if (!h->loop)
		luaL_argerror(L, 1, "loop is closed");
	min = (int)opt_int(L, 2, 1, 0, UBL_BATCH);
	timeout = (int)opt_int(L, 3, -1, -1, INT_MAX);
	if (!lua_isnoneornil(L, 4))
		luaL_checktype(L, 4, LUA_TTABLE);
	dispatch = lua_toboolean(L, 5);
	lua_settop(L, 4);
	if (lua_isnil(L, 4)) {
		lua_getiuservalue(L, 1, UV_EVENTS);
		lua_replace(L, 4);
	}
	ie = 4;
	lua_getiuservalue(L, 1, UV_OBJS);
	io = 5;
	lua_rawgetp(L, LUA_REGISTRYINDEX, &ubl_fkeys);
	ik = 6;
	if (dispatch) {
		lua_rawgetp(L, LUA_REGISTRYINDEX, &ubl_acache_key);
		ic = 7;
		lua_pushcfunction(L, fast_msgh);
		im = 8;
		/* no error of an earlier batch left in a reused table */
		lua_rawgeti(L, ik, F_ERR);
		lua_pushnil(L);
		lua_rawset(L, ie);
	}

	if (ubl_sig && min > 0) {
		/* A signal is pending: do not sleep on it. */
		min = 0;
		timeout = 0;
	}
	n = ub_loop_wait(h->loop, h->ev, UBL_BATCH, min, timeout);
	if (n < 0)
		return ubl_push_error(L, n);
	ev = h->ev;
	if (dispatch) {
		/* a callback's own wait would overwrite h->ev */
		memcpy(local, h->ev, (size_t)n * sizeof(*local));
		ev = local;
	}
	for (i = 0; i < n; i++) {
		const ub_event *e = &ev[i];

		if (dispatch && !failed && e->type == UB_EV_DATA && e->dgram &&
		    e->buf &&
		    fast_data(L, io, ik, ic, im, e, &last_pool, &last_ptok,
			      &failed)) {
			nfast++;
			if (failed) {
				/* the error object, kept for the caller */
				lua_rawgeti(L, ik, F_ERR);
				lua_insert(L, -2);
				lua_rawset(L, ie);
			}
			if (!h->loop)
				break; /* closed by the callback: the rest
					  of the batch went with it */
			continue;
		}
		fill_event(L, ie, io, ik, j++, e, &last_pool, &last_ptok);
	}
	/* Tables past this batch must not keep old buffers from __gc. */
	for (i = j; i < h->evn; i++) {
		if (lua_rawgeti(L, ie, i + 1) == LUA_TTABLE) {
			lua_pushnil(L);
			lua_setfield(L, -2, "buf");
			lua_pushnil(L);
			lua_setfield(L, -2, "conn");
			lua_pushnil(L);
			lua_setfield(L, -2, "listener");
			lua_pushnil(L);
			lua_setfield(L, -2, "dgram");
			lua_pushnil(L);
			lua_setfield(L, -2, "state");
		}
		lua_pop(L, 1);
	}
	h->evn = j;
	lua_pushinteger(L, j);
	lua_setfield(L, ie, "n");
	lua_rawgeti(L, ik, F_FASTN);
	lua_pushinteger(L, nfast);
	lua_rawset(L, ie);
	lua_pushinteger(L, j);
	lua_pushvalue(L, ie);
	return 2;
}

static int loop_tostring(lua_State *L)
{
	struct ubl_loop *h = to_loop(L, 1);

	if (h->loop)
		lua_pushfstring(L, UBL_LOOP " (%p)", (void *)h->loop);
	else
		lua_pushliteral(L, UBL_LOOP " (closed)");
	return 1;
}

/* ---- pools ------------------------------------------------------------- */

int ubl_pool_free(lua_State *L)
{
	struct ubl_pool *h = ubl_checkudata(L, 1, UBL_POOL);
	struct ubl_loop *lh;
	ub_pool *pool;
	unsigned i;
	int ret;

	if (!pool_alive(h))
		luaL_argerror(L, 1, "pool is freed");
	pool = h->pool;
	ret = ub_pool_free(pool);
	if (ret < 0)
		return ubl_push_error(L, ret);
	h->pool = NULL;
	h->ptok->alive = 0;
	lua_getiuservalue(L, 1, 1);
	lh = lua_touserdata(L, -1);
	for (i = 0; i < lh->nptoks; i++) {
		if (lh->ptoks[i] == h->ptok) {
			tok_unref(&lh->ptoks[i]);
			lh->ptoks[i] = lh->ptoks[--lh->nptoks];
			break;
		}
	}
	lua_getiuservalue(L, -1, UV_POOLS);
	lua_pushnil(L);
	lua_rawsetp(L, -2, pool);
	tok_unref(&h->ptok);
	lua_pushboolean(L, 1);
	return 1;
}

static int pool_gc(lua_State *L)
{
	struct ubl_pool *h = lua_touserdata(L, 1);

	h->pool = NULL;
	tok_unref(&h->ptok);
	return 0;
}

static int pool_tostring(lua_State *L)
{
	struct ubl_pool *h = lua_touserdata(L, 1);

	if (pool_alive(h))
		lua_pushfstring(L, UBL_POOL " (%d x %d bytes, %s)",
				(int)ub_pool_count(h->pool),
				(int)ub_pool_buf_size(h->pool),
				(ub_pool_flags(h->pool) & UB_POOL_RECV)
					? "recv" : "send");
	else
		lua_pushliteral(L, UBL_POOL " (freed)");
	return 1;
}

/* ---- buffers ----------------------------------------------------------- */

static const char *buf_bytes(lua_State *L, int idx, size_t *len)
{
	struct ubl_buf *h = check_buf(L, idx);

	*len = ub_buf_len(h->buf);
	return ub_buf_data(h->buf);
}

static int buf_len(lua_State *L)
{
	size_t len;

	buf_bytes(L, 1, &len);
	lua_pushinteger(L, (lua_Integer)len);
	return 1;
}

static int buf_capacity(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)ub_buf_capacity(check_buf(L, 1)->buf));
	return 1;
}

/* buf:byte([i [, j]]) as string.byte. */
static int buf_byte(lua_State *L)
{
	size_t l, pi, pose, n, i;
	const char *s = buf_bytes(L, 1, &l);
	lua_Integer rawpi = luaL_optinteger(L, 2, 1);

	/* j defaults to i as given, before i is clipped (str_byte) */
	pose = posrelat_end(L, 3, rawpi, l);
	pi = posrelat_start(rawpi, l);
	if (pi > pose)
		return 0;
	if (pose - pi >= (size_t)INT_MAX)
		return luaL_error(L, "buffer slice too long");
	n = pose - pi + 1;
	luaL_checkstack(L, (int)n, "buffer slice too long");
	for (i = 0; i < n; i++)
		lua_pushinteger(L, (unsigned char)s[pi + i - 1]);
	return (int)n;
}

/* buf:sub(i [, j]) as string.sub: a copy of the slice. */
static int buf_sub(lua_State *L)
{
	size_t l, start, end;
	const char *s = buf_bytes(L, 1, &l);

	start = posrelat_start(luaL_checkinteger(L, 2), l);
	end = posrelat_end(L, 3, -1, l);
	if (start > end)
		lua_pushliteral(L, "");
	else
		lua_pushlstring(L, s + start - 1, end - start + 1);
	return 1;
}

static int buf_tostring(lua_State *L)
{
	size_t l;
	const char *s = buf_bytes(L, 1, &l);

	lua_pushlstring(L, s, l);
	return 1;
}

static int nospecials(const char *p, size_t l)
{
	size_t upto = 0;

	do {
		if (strpbrk(p + upto, "^$*+?.([%-"))
			return 0;
		upto += strlen(p + upto) + 1;
	} while (upto <= l);
	return 1;
}

static const char *memfind(const char *s1, size_t l1, const char *s2,
			   size_t l2)
{
	if (l2 == 0)
		return s1;
	if (l2 > l1)
		return NULL;
	return memmem(s1, l1, s2, l2);
}

/* buf:find(s [, init [, plain]]): plain search in place; a pattern search
 * (only when s has magic characters and plain is false) runs string.find
 * on a copy. */
static int buf_find(lua_State *L)
{
	size_t ls, lp, init;
	const char *s = buf_bytes(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);

	init = posrelat_start(luaL_optinteger(L, 3, 1), ls);
	if (init > ls + 1) {
		luaL_pushfail(L);
		return 1;
	}
	if (lua_toboolean(L, 4) || nospecials(p, lp)) {
		const char *f = memfind(s + init - 1, ls - init + 1, p, lp);

		if (f) {
			lua_pushinteger(L, (lua_Integer)(f - s) + 1);
			lua_pushinteger(L, (lua_Integer)(f - s + lp));
			return 2;
		}
		luaL_pushfail(L);
		return 1;
	}
	lua_settop(L, 2);
	lua_pushvalue(L, lua_upvalueindex(1)); /* string.find */
	lua_pushlstring(L, s, ls);
	lua_pushvalue(L, 2);
	lua_pushinteger(L, (lua_Integer)init);
	lua_call(L, 3, LUA_MULTRET);
	return lua_gettop(L) - 2;
}

/* buf:write(i, s): copy s into an acquired buffer at position i (1-based,
 * negative from the end, at most #buf + 1: no gaps); the length grows to
 * cover it.  Returns the new length. */
static int buf_write(lua_State *L)
{
	struct ubl_buf *h = check_buf(L, 1);
	lua_Integer pos = luaL_checkinteger(L, 2);
	size_t lstr, len, cap, start;
	const char *s = luaL_checklstring(L, 3, &lstr);
	char *d;

	if (ub_pool_flags(ub_buf_pool(h->buf)) & UB_POOL_RECV)
		return luaL_argerror(L, 1, "received buffer is read-only");
	len = ub_buf_len(h->buf);
	cap = ub_buf_capacity(h->buf);
	if (pos < 0 && pos >= -(lua_Integer)len)
		start = len + (size_t)pos + 1;
	else if (pos >= 1 && (size_t)pos <= len + 1)
		start = (size_t)pos;
	else
		return luaL_argerror(L, 2,
				     lua_pushfstring(L, "position out of range (1..%I)",
						     (LUAI_UACINT)len + 1));
	if (lstr > cap - (start - 1))
		return luaL_argerror(L, 3,
				     lua_pushfstring(L, "does not fit: %I bytes at %I, capacity %I",
						     (LUAI_UACINT)lstr,
						     (LUAI_UACINT)start,
						     (LUAI_UACINT)cap));
	d = ub_buf_data(h->buf);
	memcpy(d + start - 1, s, lstr);
	if (start - 1 + lstr > len) {
		len = start - 1 + lstr;
		ub_buf_set_len(h->buf, len);
	}
	lua_pushinteger(L, (lua_Integer)len);
	return 1;
}

static int buf_writable(lua_State *L)
{
	struct ubl_buf *h = check_buf(L, 1);

	lua_pushboolean(L, !(ub_pool_flags(ub_buf_pool(h->buf)) &
			     UB_POOL_RECV));
	return 1;
}

/* __gc and __close: give a forgotten buffer back.  Idempotent (f_gc). */
static int buf_gc(lua_State *L)
{
	struct ubl_buf *h = ubl_checkudata(L, 1, UBL_BUF);

	if (buf_valid(h))
		ub_buf_release(h->buf);
	h->buf = NULL;
	tok_unref(&h->ptok);
	return 0;
}

/* ---- misc -------------------------------------------------------------- */

/* valid(handle): whether a handle can still be used, without raising. */
int ubl_handle_valid(lua_State *L)
{
	void *u;
	int ok = 0;

	if ((u = ubl_testudata(L, 1, UBL_BUF)))
		ok = buf_valid(u);
	else if ((u = ubl_testudata(L, 1, UBL_CONN)) ||
		 (u = ubl_testudata(L, 1, UBL_LISTENER)) ||
		 (u = ubl_testudata(L, 1, UBL_DGRAM)))
		ok = obj_alive(u);
	else if ((u = ubl_testudata(L, 1, UBL_POOL)))
		ok = pool_alive(u);
	else if ((u = ubl_testudata(L, 1, UBL_LOOP)))
		ok = ((struct ubl_loop *)u)->loop != NULL;
	else
		luaL_typeerror(L, 1, "uringbuf handle");
	lua_pushboolean(L, ok);
	return 1;
}

/* Push the state slot of the conn/listener/endpoint handle at idx: nil,
 * and dropped, once its object is gone. */
static void push_ostate(lua_State *L, int idx)
{
	if (!obj_alive(lua_touserdata(L, idx))) {
		lua_pushnil(L);
		lua_setiuservalue(L, idx, UV_OSTATE);
	}
	lua_getiuservalue(L, idx, UV_OSTATE);
}

/* state(handle): the Lua value the layer above keeps with a conn, listener
 * or loop handle (nil until set_state; nil again once the handle's object
 * is gone or its loop closed).  Readable on a dead handle, so that code
 * asking "is this connection managed?" gets nil rather than an error. */
int ubl_handle_state(lua_State *L)
{
	if (ubl_testudata(L, 1, UBL_CONN) ||
	    ubl_testudata(L, 1, UBL_LISTENER) ||
	    ubl_testudata(L, 1, UBL_DGRAM))
		push_ostate(L, 1);
	else if (ubl_testudata(L, 1, UBL_LOOP))
		lua_getiuservalue(L, 1, UV_LSTATE);
	else
		return luaL_typeerror(L, 1, UBL_CONN ", " UBL_LISTENER ", "
				      UBL_DGRAM " or " UBL_LOOP);
	return 1;
}

/* conn_state(conn): state() of a connection handle only (the server
 * helper's methods must not take a loop's state for a connection's). */
int ubl_conn_state(lua_State *L)
{
	ubl_checkudata(L, 1, UBL_CONN);
	push_ostate(L, 1);
	return 1;
}

/* set_state(handle, value): a value only on a live handle (one set on a
 * dead handle could never be cleared); nil on any. */
int ubl_handle_set_state(lua_State *L)
{
	int slot, set;

	luaL_checkany(L, 2);
	lua_settop(L, 2);
	set = !lua_isnil(L, 2);
	if (ubl_testudata(L, 1, UBL_CONN)) {
		if (set)
			ubl_check_conn(L, 1);
		slot = UV_OSTATE;
	} else if (ubl_testudata(L, 1, UBL_LISTENER)) {
		if (set)
			ubl_check_listener(L, 1);
		slot = UV_OSTATE;
	} else if (ubl_testudata(L, 1, UBL_DGRAM)) {
		if (set)
			ubl_check_dgram(L, 1);
		slot = UV_OSTATE;
	} else if (ubl_testudata(L, 1, UBL_LOOP)) {
		if (set)
			ubl_check_loop(L, 1);
		slot = UV_LSTATE;
	} else {
		return luaL_typeerror(L, 1, UBL_CONN ", " UBL_LISTENER ", "
				      UBL_DGRAM " or " UBL_LOOP);
	}
	lua_setiuservalue(L, 1, slot);
	return 0;
}

/* send(conn, string [, i [, j]]) copies (string.sub's i, j) through the
 * send pool; send(conn, buf) queues the buffer itself, zero copy.  Returns
 * the bytes queued (a string may be taken in part, like write(2)) and
 * whether the queue is now at or above its high water mark; or nil,
 * message, errno (EAGAIN above the high water mark, unless the connection
 * has soft water: ub_conn_set_soft_water). */
int ubl_conn_send(lua_State *L)
{
	ub_conn *c = ubl_check_conn(L, 1);
	lua_Integer n;

	if (lua_type(L, 2) == LUA_TSTRING) {
		size_t l, i, j;
		const char *s = lua_tolstring(L, 2, &l);
		ssize_t r;

		i = posrelat_start(luaL_optinteger(L, 3, 1), l);
		j = posrelat_end(L, 4, -1, l);
		r = ub_conn_send(c, s + (i <= l ? i - 1 : l),
				 i > j ? 0 : j - i + 1);
		if (r < 0)
			return ubl_push_error(L, (int)r);
		n = (lua_Integer)r;
	} else if (ubl_testudata(L, 2, UBL_BUF)) {
		ub_buf *b = ubl_check_buf(L, 2);
		size_t len = ub_buf_len(b);
		int r = ub_conn_send_buf(c, b);

		if (r < 0)
			return ubl_push_error(L, r);
		n = (lua_Integer)len;
	} else {
		return luaL_typeerror(L, 2, "string or " UBL_BUF);
	}
	lua_pushinteger(L, n);
	lua_pushboolean(L, ub_conn_queued_bytes(c) >= ub_conn_high_water(c));
	return 2;
}

/* ---- datagram endpoints ------------------------------------------------ */

void ubl_check_dgram_opts(lua_State *L, int idx, ub_dgram_opts *o)
{
	static const char *const names[] = { "recv_pool", "send_pool",
		"queue_max", "high_water", "low_water", "recv_budget",
		"reuseport", "no_recv", NULL };
	lua_Integer high;

	ub_dgram_opts_init(o);
	if (lua_isnoneornil(L, idx))
		return;
	idx = lua_absindex(L, idx);
	luaL_checktype(L, idx, LUA_TTABLE);
	check_keys(L, idx, names);
	o->recv_pool = field_pool(L, idx, "recv_pool");
	o->send_pool = field_pool(L, idx, "send_pool");
	/* queue_max and high_water: 0 would be the C default, nil is that
	 * here. */
	o->queue_max = (unsigned)field_int(L, idx, "queue_max",
					   (lua_Integer)o->queue_max, 1,
					   UINT_MAX);
	high = field_int(L, idx, "high_water", 0, 1, LUA_MAXINTEGER);
	if (high) {
		o->high_water = (size_t)high;
		o->low_water = (size_t)high / 4;
	}
	o->low_water = (size_t)field_int(L, idx, "low_water",
					 (lua_Integer)o->low_water, 0,
					 LUA_MAXINTEGER);
	o->recv_budget = (size_t)field_int(L, idx, "recv_budget",
					   (lua_Integer)o->recv_budget, 1,
					   LUA_MAXINTEGER);
	if (field_bool(L, idx, "reuseport"))
		o->flags |= UB_DGRAM_REUSEPORT;
	if (field_bool(L, idx, "no_recv"))
		o->flags |= UB_DGRAM_NO_RECV;
}

/* dgram_open(loop, addr [, opts]) -> endpoint, or nil, message, errno.
 * addr as ubl_check_addr reads it, or "unix:" alone: a Unix datagram
 * socket with an autobound abstract name (a client that wants replies). */
int ubl_dgram_open(lua_State *L)
{
	ub_loop *loop = ubl_check_loop(L, 1);
	struct sockaddr_storage ss;
	socklen_t len;
	ub_dgram_opts o;
	ub_dgram *d;
	const char *why = NULL;
	int err = 0;

	if (lua_type(L, 2) == LUA_TSTRING && !strcmp(lua_tostring(L, 2), "unix:")) {
		memset(&ss, 0, sizeof(ss));
		ss.ss_family = AF_UNIX;
		len = sizeof(sa_family_t);
	} else {
		ubl_check_addr(L, 2, &ss, &len);
	}
	ubl_check_dgram_opts(L, 3, &o);
	if ((err = ub_dgram_opts_check(loop, &o, &why)) < 0)
		return ubl_push_reason(L, err, why);
	d = ub_dgram_open(loop, (struct sockaddr *)&ss, len, &o, &err);
	if (!d)
		return ubl_push_error(L, err);
	ubl_push_dgram(L, d);
	return 1;
}

/* The destination argument of dgram_send at idx: nil/none (the connected
 * peer: *len 0), an address string, or a received buffer (its source).
 * Returns 0 or -EDESTADDRREQ (a buffer without a source address). */
static int check_dest(lua_State *L, int idx, struct sockaddr_storage *ss,
		      socklen_t *len)
{
	*len = 0;
	if (lua_isnoneornil(L, idx))
		return 0;
	if (lua_type(L, idx) == LUA_TSTRING) {
		if (!cached_addr(L, lua_tostring(L, idx), ss, len))
			ubl_check_addr(L, idx, ss, len);
		return 0;
	}
	if (ubl_testudata(L, idx, UBL_BUF)) {
		socklen_t alen = 0;
		const struct sockaddr *a = ub_buf_addr(ubl_check_buf(L, idx),
						       &alen);

		if (!a || alen == 0 || alen > sizeof(*ss))
			return -EDESTADDRREQ;
		memcpy(ss, a, alen);
		*len = alen;
		return 0;
	}
	return luaL_typeerror(L, idx, "address string, " UBL_BUF " or nil");
}

/* dgram_send(ep, data [, addr]): one datagram.  data: a string (copied
 * into one buffer of the send pool; EMSGSIZE if it does not fit: never
 * split) or a buffer (queued itself, zero copy).  addr: "HOST:PORT", a
 * received buffer (reply to its source), or nil (the connected peer).
 * Returns the datagram's length and the bytes then queued (one call for
 * what a sender checks against its marks), or nil, message, errno
 * (EAGAIN: queue full or no free send buffer, a "writable" event follows
 * once asked for with want_writable; EDESTADDRREQ: no address and not
 * connected; EINVAL: an address of another family; EPIPE: closing). */
int ubl_dgram_send(lua_State *L)
{
	ub_dgram *d = ubl_check_dgram(L, 1);
	struct sockaddr_storage ss;
	socklen_t alen;
	const struct sockaddr *a;
	struct ubl_buf *bh = NULL;
	int r;

	if (lua_type(L, 2) != LUA_TSTRING) {
		bh = ubl_testudata(L, 2, UBL_BUF);
		if (!bh)
			return luaL_typeerror(L, 2, "string or " UBL_BUF);
		if (!buf_valid(bh))
			luaL_argerror(L, 2, "buffer is released");
	}
	r = check_dest(L, 3, &ss, &alen);
	if (r < 0)
		return ubl_push_error(L, r);
	a = alen ? (const struct sockaddr *)&ss : NULL;
	if (lua_type(L, 2) == LUA_TSTRING) {
		size_t l;
		const char *s = lua_tolstring(L, 2, &l);
		ssize_t n = ub_dgram_send(d, s, l, a, alen);

		if (n < 0)
			return ubl_push_error(L, (int)n);
		lua_pushinteger(L, (lua_Integer)n);
	} else {
		ub_buf *b = bh->buf;
		size_t l = ub_buf_len(b);

		r = ub_dgram_send_buf(d, b, a, alen);
		if (r < 0)
			return ubl_push_error(L, r);
		lua_pushinteger(L, (lua_Integer)l);
	}
	lua_pushinteger(L, (lua_Integer)ub_dgram_queued_bytes(d));
	return 2;
}

/* buf:source(): a received datagram's source, "HOST:PORT", "[V6]:PORT" or
 * "unix:PATH"; nil for a buffer that is no received datagram or whose
 * sender had no address (an unbound Unix socket).  Upvalue 1: the cache. */
static int buf_source(lua_State *L)
{
	struct ubl_buf *h = check_buf(L, 1);

	push_source(L, h->buf, lua_upvalueindex(1));
	return 1;
}

/* buf:truncated(): whether a received datagram was cut to fit. */
static int buf_truncated(lua_State *L)
{
	lua_pushboolean(L, ub_buf_truncated(check_buf(L, 1)->buf) > 0);
	return 1;
}

/* set_buffers(conn_or_listener, sndbuf, rcvbuf): SO_SNDBUF / SO_RCVBUF
 * (0 leaves one alone).  A listener passes them on to the sockets it
 * accepts; a connecting conn gets them before its SYN leaves.  Tests use
 * tiny ones to force short sends. */
int ubl_set_buffers(lua_State *L)
{
	int fd, sizes[2], opts[2] = { SO_SNDBUF, SO_RCVBUF }, i;

	if (ubl_testudata(L, 1, UBL_LISTENER))
		fd = ub_listener_fd(ubl_check_listener(L, 1));
	else if (ubl_testudata(L, 1, UBL_DGRAM))
		fd = ub_dgram_fd(ubl_check_dgram(L, 1));
	else
		fd = ub_conn_fd(ubl_check_conn(L, 1));
	sizes[0] = (int)ubl_check_int(L, 2, 0, INT_MAX);
	sizes[1] = (int)opt_int(L, 3, 0, 0, INT_MAX);
	if (fd < 0)
		return ubl_push_error(L, -EBADF);
	for (i = 0; i < 2; i++)
		if (sizes[i] && setsockopt(fd, SOL_SOCKET, opts[i], &sizes[i],
					   sizeof(sizes[i])) < 0)
			return ubl_push_error(L, -errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* strerror(errno) */
int ubl_strerror(lua_State *L)
{
	lua_pushstring(L, strerror((int)ubl_check_int(L, 1, 0, INT_MAX)));
	return 1;
}

/* now(): monotonic clock in seconds, a float (for deadlines). */
int ubl_now(lua_State *L)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
	return 1;
}

static void on_signal(int sig)
{
	ubl_sig = sig;
}

/* catch_signals(): SIGINT/SIGTERM set a flag (see signaled()) and make a
 * blocked wait return EINTR; SIGPIPE is ignored. */
int ubl_catch_signals(lua_State *L)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_signal; /* no SA_RESTART: the wait must return */
	if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL))
		return ubl_push_error(L, -errno);
	sa.sa_handler = SIG_IGN;
	if (sigaction(SIGPIPE, &sa, NULL))
		return ubl_push_error(L, -errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* signaled([clear]): the number of the last caught signal, or false. */
int ubl_signaled(lua_State *L)
{
	int sig = ubl_sig;

	if (lua_toboolean(L, 1))
		ubl_sig = 0;
	if (sig)
		lua_pushinteger(L, sig);
	else
		lua_pushboolean(L, 0);
	return 1;
}

/* ---- processes (workers) ----------------------------------------------
 * Thin wrappers, each one system call, for the Lua layer's workers: Lua's
 * standard library has none of them.  Failures return nil, message, errno.
 * Only positive pids are taken: a pid of 0 or -1 would reach process groups
 * or every process, and waitpid(-1) would reap children that are not ours
 * (io.popen's). */

static pid_t check_pid(lua_State *L, int idx)
{
	return (pid_t)ubl_check_int(L, idx, 1, INT_MAX);
}

static int check_sig(lua_State *L, int idx)
{
	return (int)ubl_check_int(L, idx, 0, SIGRTMAX);
}

static int check_fd(lua_State *L, int idx)
{
	return (int)ubl_check_int(L, idx, 0, INT_MAX);
}

/* fork() -> pid (0 in the child).  stdio is flushed first: buffered output
 * would otherwise be written by both processes.  The child starts with no
 * caught signal pending. */
int ubl_fork(lua_State *L)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return ubl_push_error(L, -errno);
	if (pid == 0)
		ubl_sig = 0;
	lua_pushinteger(L, (lua_Integer)pid);
	return 1;
}

/* waitpid(pid [, nohang]) -> pid, "exited", status | pid, "signaled",
 * signo; 0 if nohang and still running. */
int ubl_waitpid(lua_State *L)
{
	pid_t pid = check_pid(L, 1);
	int status = 0, r;

	r = waitpid(pid, &status, lua_toboolean(L, 2) ? WNOHANG : 0);
	if (r < 0)
		return ubl_push_error(L, -errno);
	lua_pushinteger(L, r);
	if (r == 0)
		return 1;
	if (WIFSIGNALED(status)) {
		lua_pushliteral(L, "signaled");
		lua_pushinteger(L, WTERMSIG(status));
	} else {
		lua_pushliteral(L, "exited");
		lua_pushinteger(L, WEXITSTATUS(status));
	}
	return 3;
}

/* kill(pid, sig) -> true (sig 0: does it exist?) */
int ubl_kill(lua_State *L)
{
	pid_t pid = check_pid(L, 1);
	int sig = check_sig(L, 2);

	if (kill(pid, sig) < 0)
		return ubl_push_error(L, -errno);
	lua_pushboolean(L, 1);
	return 1;
}

int ubl_getpid(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)getpid());
	return 1;
}

int ubl_getppid(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)getppid());
	return 1;
}

/* set_pdeathsig(sig): the kernel sends sig to this process when its parent
 * exits, however it exits (prctl PR_SET_PDEATHSIG; 0 clears).  A parent that
 * died before the call is not covered: compare getppid() afterwards. */
int ubl_set_pdeathsig(lua_State *L)
{
	int sig = check_sig(L, 1);

	if (prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0, 0, 0) < 0)
		return ubl_push_error(L, -errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* pipe() -> read fd, write fd; both non-blocking and close-on-exec. */
int ubl_pipe(lua_State *L)
{
	int fds[2];

	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
		return ubl_push_error(L, -errno);
	lua_pushinteger(L, fds[0]);
	lua_pushinteger(L, fds[1]);
	return 2;
}

/* fd_read(fd, max) -> string ("" at end of file), or nil, msg, EAGAIN when
 * a non-blocking fd has nothing. */
int ubl_fd_read(lua_State *L)
{
	int fd = check_fd(L, 1);
	size_t max = (size_t)ubl_check_int(L, 2, 1, 1 << 20);
	luaL_Buffer b;
	char *p = luaL_buffinitsize(L, &b, max);
	ssize_t r = read(fd, p, max);

	if (r < 0)
		return ubl_push_error(L, -errno);
	luaL_pushresultsize(&b, (size_t)r);
	return 1;
}

/* fd_write(fd, s) -> bytes written (maybe fewer than #s). */
int ubl_fd_write(lua_State *L)
{
	int fd = check_fd(L, 1);
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	ssize_t r = write(fd, s, len);

	if (r < 0)
		return ubl_push_error(L, -errno);
	lua_pushinteger(L, (lua_Integer)r);
	return 1;
}

int ubl_fd_close(lua_State *L)
{
	if (close(check_fd(L, 1)) < 0)
		return ubl_push_error(L, -errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* sleep(seconds) -> true, or nil, msg, EINTR when a signal cut it short
 * (a caught SIGINT/SIGTERM: see catch_signals). */
int ubl_sleep(lua_State *L)
{
	lua_Number s = luaL_checknumber(L, 1);
	struct timespec ts;

	if (!(s >= 0 && s <= 86400))
		luaL_argerror(L, 1, "seconds out of range (0..86400)");
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
	if (ts.tv_nsec > 999999999)
		ts.tv_nsec = 999999999;
	if (nanosleep(&ts, NULL) < 0)
		return ubl_push_error(L, -errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* ncpus(): the CPUs this process may run on (its affinity mask, which
 * taskset and cpusets narrow), at least 1. */
int ubl_ncpus(lua_State *L)
{
	cpu_set_t set;
	long n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	if (n < 1)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	lua_pushinteger(L, n < 1 ? 1 : n);
	return 1;
}

/* ---- set-up ------------------------------------------------------------ */

void ubl_init(lua_State *L)
{
	static const luaL_Reg buf_meta[] = {
		{ "__len", buf_len },
		{ "__tostring", buf_tostring },
		{ "__gc", buf_gc },
		{ "__close", buf_gc },
		{ NULL, NULL },
	};
	static const luaL_Reg buf_methods[] = {
		{ "len", buf_len },
		{ "capacity", buf_capacity },
		{ "byte", buf_byte },
		{ "sub", buf_sub },
		{ "write", buf_write },
		{ "writable", buf_writable },
		{ "truncated", buf_truncated },
		{ "tostring", buf_tostring },
		{ "close", buf_gc },
		{ NULL, NULL },
	};
	int mod = lua_gettop(L), methods;
	struct {
		const char *tname, *key;
		lua_CFunction gc, tostring;
	} classes[] = {
		{ UBL_LOOP, "loop", ubl_loop_close, loop_tostring },
		{ UBL_POOL, "pool", pool_gc, pool_tostring },
		{ UBL_BUF, "buf", NULL, NULL },
		{ UBL_CONN, "conn", obj_gc, obj_tostring },
		{ UBL_LISTENER, "listener", obj_gc, obj_tostring },
		{ UBL_DGRAM, "dgram", obj_gc, obj_tostring },
	};
	unsigned i;

	/* registry: loops by address, weak values (a loop handle that is
	 * collected has freed its loop in __gc) */
	lua_newtable(L);
	lua_newtable(L);
	lua_pushliteral(L, "v");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &loops_key);
	make_fkeys(L);

	lua_newtable(L); /* module._methods */
	methods = lua_gettop(L);
	for (i = 0; i < sizeof(classes) / sizeof(classes[0]); i++) {
		luaL_newmetatable(L, classes[i].tname);
		lua_pushvalue(L, -1);
		lua_rawsetp(L, LUA_REGISTRYINDEX, mtkey(classes[i].tname));
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, -3, "__index");
		lua_pushvalue(L, -1);
		lua_setfield(L, methods, classes[i].key);
		if (classes[i].gc) {
			lua_pushcfunction(L, classes[i].gc);
			lua_setfield(L, -3, "__gc");
		}
		if (classes[i].tostring) {
			lua_pushstring(L, classes[i].tname);
			lua_pushcclosure(L, classes[i].tostring, 1);
			lua_setfield(L, -3, "__tostring");
		}
		if (classes[i].gc == ubl_loop_close) {
			lua_pushcfunction(L, ubl_loop_close);
			lua_setfield(L, -3, "__close");
		}
		if (!strcmp(classes[i].key, "buf")) {
			luaL_setfuncs(L, buf_methods, 0);
			/* source: with its cache of address strings */
			memset(lua_newuserdatauv(L, sizeof(struct ubl_acache),
						 1),
			       0, sizeof(struct ubl_acache));
			lua_newtable(L);
			lua_setiuservalue(L, -2, 1);
			lua_pushvalue(L, -1);
			lua_rawsetp(L, LUA_REGISTRYINDEX, &ubl_acache_key);
			lua_pushcclosure(L, buf_source, 1);
			lua_setfield(L, -2, "source");
			/* find: with string.find for pattern searches */
			luaL_getsubtable(L, LUA_REGISTRYINDEX,
					 LUA_LOADED_TABLE);
			lua_getfield(L, -1, "string");
			if (lua_type(L, -1) == LUA_TTABLE)
				lua_getfield(L, -1, "find");
			else
				lua_pushnil(L);
			lua_pushcclosure(L, buf_find, 1);
			lua_setfield(L, -4, "find");
			lua_pop(L, 2);
			lua_pushvalue(L, -2);
			luaL_setfuncs(L, buf_meta, 0);
			lua_pop(L, 1);
		}
		lua_pop(L, 2);
	}
	lua_setfield(L, mod, "_methods");

	lua_newtable(L);
#define UBL_ERRNO(e) (lua_pushinteger(L, e), lua_setfield(L, -2, #e))
	UBL_ERRNO(EAGAIN);
	UBL_ERRNO(EPIPE);
	UBL_ERRNO(EINVAL);
	UBL_ERRNO(EINTR);
	UBL_ERRNO(ENOBUFS);
	UBL_ERRNO(ENOMEM);
	UBL_ERRNO(EBUSY);
	UBL_ERRNO(ENOTCONN);
	UBL_ERRNO(ECONNRESET);
	UBL_ERRNO(ECONNREFUSED);
	UBL_ERRNO(ECANCELED);
	UBL_ERRNO(EOPNOTSUPP);
	UBL_ERRNO(ETIMEDOUT);
	UBL_ERRNO(EIO);
	UBL_ERRNO(EADDRINUSE);
	UBL_ERRNO(EBADF);
	UBL_ERRNO(ESRCH);
	UBL_ERRNO(ECHILD);
	UBL_ERRNO(EMSGSIZE);
	UBL_ERRNO(EDESTADDRREQ);
	UBL_ERRNO(EAFNOSUPPORT);
	UBL_ERRNO(ENETUNREACH);
#undef UBL_ERRNO
	lua_setfield(L, mod, "errno");

	lua_newtable(L);
#define UBL_SIGNAL(s) (lua_pushinteger(L, s), lua_setfield(L, -2, #s))
	UBL_SIGNAL(SIGHUP);
	UBL_SIGNAL(SIGINT);
	UBL_SIGNAL(SIGQUIT);
	UBL_SIGNAL(SIGKILL);
	UBL_SIGNAL(SIGUSR1);
	UBL_SIGNAL(SIGUSR2);
	UBL_SIGNAL(SIGTERM);
	UBL_SIGNAL(SIGCHLD);
#undef UBL_SIGNAL
	lua_setfield(L, mod, "signals");
	lua_settop(L, mod);
}
