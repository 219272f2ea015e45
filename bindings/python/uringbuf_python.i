/*
 * uringbuf_python.i - Python typemaps and helpers for bindings/uringbuf.i.
 *
 * Included by uringbuf.i before core/uringbuf.h, so that what is declared
 * here applies to the header.  Built with `swig -python -builtin`: every
 * class below is a static CPython type (fast calls, and the buffer protocol
 * needs it).
 *
 * Handles.  Python never holds a raw core pointer.  Loop, Pool, Connection,
 * Listener, Datagram and Buffer are small C structs (ubpy_*) that SWIG wraps as
 * classes; typemaps turn them into the core's pointers for every wrapped
 * core function, after checking that the object is still alive:
 *   - a Loop owns a ubpy_loop, which every other handle of that loop also
 *     references (a C refcount): the "loop alive" token.  Closing the loop
 *     sets every handle's pointer to NULL, so any later use raises
 *     uringbuf.ClosedError instead of touching freed memory.
 *   - a Connection, Listener or Datagram holds its core object
 *     (ub_*_hold) from when it is made until it is deallocated, so its
 *     pointer is never stale: "gone?" is a question to the core
 *     (ub_*_is_closed: from the wait after the one that returned its CLOSED,
 *     or once the loop is freed), and a gone handle raises ClosedError.  Its
 *     loop references it (ubpy_loop.live) until its CLOSED is delivered, so
 *     events reach the same object; its core udata points at the handle, so
 *     that needs no lookup.  Its udata and callbacks (which usually point
 *     back at it: a cycle) are dropped once its CLOSED was delivered:
 *     dispatch() right after the callback, wait() at the next wait (the
 *     handlers of a wait() batch run after it returns).
 *   - a Buffer remembers the generation (ub_buf_gen) and state it was handed
 *     over in; once the buffer is released or queued for sending the handle
 *     is stale and refuses use.  A Buffer dropped while still owned goes back
 *     to its pool.
 *   - the buffer protocol exports the pool's own memory (read-only for a
 *     receive pool) and counts exports, like bytearray: releasing, resizing
 *     or sending a buffer while a view exists raises BufferError, and so
 *     does Loop.close() while any view of any of its buffers exists (the
 *     pools are unmapped by ub_loop_free).  A Loop garbage-collected while
 *     views exist is freed when the last view is released.
 *
 * Typemap conventions: `ub_buf *` (mutating: release, set_len, send_buf)
 * refuses an exported buffer, `const ub_buf *` (accessors) does not.  An
 * int that is "0 or -errno" becomes None or an OSError(errno, strerror)
 * (EINVAL: uringbuf.InvalidArgument, both an OSError and a ValueError); a
 * count that is ">= 0 or -errno" becomes an int.  Integer arguments are
 * range-checked: TypeError for a non-integer, ValueError out of range.
 *
 * Not wrapped as flat functions (the classes cover them): ub_loop_new /
 * ub_loop_free / ub_loop_wait (Loop(), Loop.close(), Loop.wait()),
 * ub_pool_free (Pool.free(): the handle must learn it is gone), ub_pool_buf
 * (would hand out a second handle to a buffer, or one in KERNEL state),
 * the udata accessors (the binding owns udata), ub_conn_opts_init,
 * ub_addr_format (addresses are strings or (host, port); ub_addr_parse(s)
 * returns the address normalized, as ub_addr_format writes it), and the
 * option and event structs (dicts, keyword arguments and Event).
 *
 * Threads: a loop belongs to the thread that created it (the core's ring is
 * single-issuer).  Any use of it, or of its handles, from another thread
 * raises RuntimeError; Loop.wait() releases the GIL while blocked.  A Buffer
 * dropped by another thread goes back to its pool at the owner's next
 * wait(); a Loop dropped by another thread is leaked, not freed (freeing
 * needs the owner's ring).
 */

/* The shim's (uringbuf/core.py) module docstring: a string literal at its
 * top.  help(uringbuf.core) starts here. */
%pythonbegin %{
"""uringbuf.core: the SWIG-built wrapper of the uringbuf C core
(core/uringbuf.h; extension module uringbuf._core).

Classes: Loop (one io_uring: wait() returns Event batches), Pool, Connection,
Listener, Datagram (a UDP or Unix datagram endpoint), Buffer (a zero-copy view of pool memory: memoryview(buf)), Event,
and the exceptions ClosedError and InvalidArgument.  The flat ub_* functions
are the C API with the C names and meanings (ub_conn_send(conn, data),
ub_pool_count_state(pool, state), ...), taking and returning those objects;
UB_* are the C constants.  The package uringbuf re-exports the classes with
short constant names (EV_DATA, MODE_BUNDLE, ...) and adds the server API.

Errors: the core's -errno raises OSError(errno, strerror) (EINVAL:
InvalidArgument, also a ValueError); use after close raises ClosedError;
bad arguments raise TypeError or ValueError.  See docs/python.md.
"""
%}

%include <stdint.i>

%{
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* A status meaning "a Python exception is already set". */
#define UBPY_EXC INT_MIN
/* Evaluate x (which sets an exception) and yield NULL. */
#define UBPY_NULL(x) ((void)(x), (PyObject *)NULL)

/* Return types of methods: see the out typemaps below. */
typedef int ubpy_rc;      /* 0 -> None; -errno / UBPY_EXC -> raise */
typedef long long ubpy_n; /* >= 0 -> int; -errno / UBPY_EXC -> raise */

static PyObject *ubpy_ClosedError;
static PyObject *ubpy_InvalidArgument;
static PyTypeObject *ubpy_EventType;

typedef struct ubpy_obj ubpy_obj;

/* Shared by a Loop and every handle of it; freed when refs reaches 0. */
typedef struct ubpy_loop {
	ub_loop *loop;          /* NULL once closed */
	PyObject *obj;          /* the Loop object (borrowed); NULL once gone */
	PyObject *pools;        /* dict: address -> Pool */
	PyObject *live;         /* set: handles whose CLOSED is still to come */
	ub_event *ev;
	int evcap;
	/* ev[left_i, left_n): events of a dispatch() batch not delivered yet
	 * (a callback raised KeyboardInterrupt or the like): they come first
	 * at the next dispatch() or wait(), so no event is lost. */
	int left_i, left_n;
	/* ev[closed_i, closed_n): the last wait() batch, if it returned a
	 * CLOSED: those handles drop udata and callbacks at the next wait */
	int closed_i, closed_n;
	/* Dropped while the loop waited in another thread: a buffer to
	 * release (kind UBPY_DEF_BUF, if still at gen) or a handle's hold
	 * (kind: its is_conn). */
	struct ubpy_deferred { void *ptr; uint32_t gen; int kind; } *deferred;
	size_t ndeferred, capdeferred;
	ub_pool *last_pool;     /* lookup cache for DATA buffers */
	PyObject *last_pool_obj;
	Py_ssize_t exports;     /* buffer views exported, all pools */
	Py_ssize_t refs;
	int busy;               /* in ub_loop_wait / ub_loop_free, GIL released */
	unsigned long owner;    /* the thread that created it (single issuer) */
	int orphan;             /* Loop object gone: free when exports reach 0 */
	struct ubpy_loop *next; /* ubpy__loops */
} ubpy_loop;

/* Common head of Connection and Listener handles. */
struct ubpy_obj {
	void *ptr;              /* ub_conn * / ub_listener *; NULL once gone */
	ubpy_loop *L;
	PyObject *self;         /* the handle object (borrowed, held by L->live) */
	PyObject *udata;
	/* Connections: what Loop.dispatch() calls with each DATA buffer
	 * instead of building an Event (NULL: the event goes the slow way). */
	PyObject *on_data;
	/* Like on_data, with a list of the buffers of consecutive DATA
	 * events (one receive bundle, or several receives in one batch). */
	PyObject *on_buffers;
	int closed;             /* CLOSED returned */
	int held;               /* holds ptr (ub_*_hold): released at dealloc */
	int is_conn;            /* UBPY_LISTENER, UBPY_CONN or UBPY_DGRAM */
	int with_source;        /* datagrams: on_data(buf, buf.source) */
};

/* ubpy_obj.is_conn: what ptr is. */
enum { UBPY_LISTENER = 0, UBPY_CONN = 1, UBPY_DGRAM = 2, UBPY_DEF_BUF = -1 };

typedef struct ubpy_conn { ubpy_obj o; } ubpy_conn;
/* Everything else a handle could want to know, the core reports (water
 * marks, family, closing, limits, deadlines): the handles remember
 * nothing of their own. */
typedef struct ubpy_dgram { ubpy_obj o; } ubpy_dgram;
typedef struct ubpy_listener { ubpy_obj o; } ubpy_listener;

typedef struct ubpy_pool {
	ub_pool *pool;          /* NULL once freed (or the loop closed) */
	ubpy_loop *L;
} ubpy_pool;

typedef struct ubpy_buf {
	ub_buf *buf;
	PyObject *pool;         /* the Pool object (strong) */
	uint32_t gen;           /* ub_buf_gen when handed over */
	PyObject *self;         /* the Buffer object (borrowed) */
	Py_ssize_t exports;
	int readonly;
} ubpy_buf;

/* Every open loop: raw ub_loop * -> ubpy_loop (for pointers the core
 * returns, e.g. ub_pool_loop).  A process has a handful of loops. */
static ubpy_loop *ubpy__loops;

static ubpy_loop *ubpy__loop_find(const ub_loop *loop)
{
	ubpy_loop *L;

	for (L = ubpy__loops; L; L = L->next)
		if (L->loop == loop)
			return L;
	return NULL;
}

/* ---- errors ---- */

/* -errno as OSError(errno, why), why defaulting to strerror: the reason an
 * option check of the core gave, or none. */
static int ubpy__raise_why(long long r, const char *why)
{
	PyObject *args;
	int e;

	if (r == UBPY_EXC)
		return UBPY_EXC;
	e = (int)-r;
	args = Py_BuildValue("(is)", e, why ? why : strerror(e));
	if (args) {
		PyErr_SetObject(e == EINVAL ? ubpy_InvalidArgument
					    : PyExc_OSError, args);
		Py_DECREF(args);
	}
	return UBPY_EXC;
}

static int ubpy__raise(long long r)
{
	return ubpy__raise_why(r, NULL);
}

static int ubpy__closed(const char *what)
{
	PyErr_SetString(ubpy_ClosedError, what);
	return UBPY_EXC;
}

static int ubpy__busy(void)
{
	PyErr_SetString(PyExc_RuntimeError,
			"a loop is used only from the thread that created it");
	return UBPY_EXC;
}

/* Another thread may not use the loop (the core's rule: the ring is
 * single-issuer), nor anyone while wait() has the GIL released. */
static int ubpy__foreign(const ubpy_loop *L)
{
	return L->busy || L->owner != PyThread_get_thread_ident();
}

/* ---- handle objects ---- */

/* The C struct behind a handle object of SWIG type ty, or NULL with
 * TypeError. */
static void *ubpy__unwrap(PyObject *o, swig_type_info *ty, const char *what)
{
	SwigPyClientData *cd = ty ? (SwigPyClientData *)ty->clientdata : NULL;

	if (o && cd && cd->pytype && PyObject_TypeCheck(o, cd->pytype) &&
	    ((SwigPyObject *)o)->ptr)
		return ((SwigPyObject *)o)->ptr;
	PyErr_Format(PyExc_TypeError, "expected a uringbuf.%s, not %.100s",
		     what, o ? Py_TYPE(o)->tp_name : "NULL");
	return NULL;
}

static PyObject *ubpy__wrap(void *ptr, swig_type_info *ty)
{
	PyObject *o = SWIG_Python_NewPointerObj(NULL, ptr, ty, SWIG_POINTER_OWN);

	if (o == Py_None) { /* SWIG's way of saying allocation failed */
		Py_DECREF(o);
		if (!PyErr_Occurred())
			PyErr_NoMemory();
		return NULL;
	}
	return o;
}

static void ubpy__loop_unref(ubpy_loop *L)
{
	if (--L->refs > 0)
		return;
	Py_XDECREF(L->pools);
	Py_XDECREF(L->live);
	free(L->ev);
	free(L->deferred);
	free(L);
}

/* The live loop of a handle, or NULL with an exception. */
static ub_loop *ubpy__loop_get(ubpy_loop *L)
{
	if (!L || !L->loop) {
		ubpy__closed("the loop is closed");
		return NULL;
	}
	if (ubpy__foreign(L)) {
		ubpy__busy();
		return NULL;
	}
	return L->loop;
}

/* The core's word on a handle's object (held: never freed under it). */
static int ubpy__core_closed(const ubpy_obj *o)
{
	return o->is_conn == UBPY_DGRAM ? ub_dgram_is_closed(o->ptr) > 0
	       : o->is_conn ? ub_conn_is_closed(o->ptr) > 0
			    : ub_listener_is_closed(o->ptr) > 0;
}

/* Gone: its loop closed, or the core says so.  Not asked while the loop
 * waits in another thread (the core is not thread-safe): then it is not
 * gone yet as far as this thread can tell. */
static int ubpy__obj_dead(const ubpy_obj *o)
{
	return !o->L->loop || (!o->L->busy && ubpy__core_closed(o));
}

static void *ubpy__obj_get(ubpy_obj *o, const char *closed_msg)
{
	if (!o || ubpy__obj_dead(o)) {
		ubpy__closed(o && !o->L->loop ? "the loop is closed" : closed_msg);
		return NULL;
	}
	if (ubpy__foreign(o->L)) {
		ubpy__busy();
		return NULL;
	}
	return o->ptr;
}

/* Something dropped while the loop is another thread's or waits with the
 * GIL released: done at the owner's next wait (ubpy__flush_deferred).
 * Out of memory: it leaks, nothing breaks. */
static void ubpy__defer(ubpy_loop *L, void *ptr, uint32_t gen, int kind)
{
	if (L->ndeferred < L->capdeferred ||
	    (L->deferred = realloc(L->deferred,
			(L->capdeferred = L->capdeferred * 2 + 16) *
			sizeof(*L->deferred)))) {
		L->deferred[L->ndeferred].ptr = ptr;
		L->deferred[L->ndeferred].gen = gen;
		L->deferred[L->ndeferred++].kind = kind;
	}
}

/* A handle lets go of its core object (kind: its is_conn), whose events
 * then no longer find it (ubpy__let_go reads the udata). */
static void ubpy__core_release(void *p, int kind)
{
	if (kind == UBPY_DGRAM) {
		ub_dgram_set_udata(p, NULL);
		ub_dgram_release(p);
	} else if (kind == UBPY_CONN) {
		ub_conn_set_udata(p, NULL);
		ub_conn_release(p);
	} else {
		ub_listener_set_udata(p, NULL);
		ub_listener_release(p);
	}
}

/* A handle's deallocation: its references, its hold (a detached object,
 * its loop closed, needs no loop), its loop. */
static void ubpy__obj_dealloc(ubpy_obj *o)
{
	Py_CLEAR(o->udata);
	Py_CLEAR(o->on_data);
	Py_CLEAR(o->on_buffers);
	if (o->held && o->L->loop && ubpy__foreign(o->L))
		ubpy__defer(o->L, o->ptr, 0, o->is_conn);
	else if (o->held)
		ubpy__core_release(o->ptr, o->is_conn);
	ubpy__loop_unref(o->L);
	free(o);
}

static ub_conn *ubpy__conn_get(ubpy_conn *h)
{
	return ubpy__obj_get(h ? &h->o : NULL, "the connection is closed");
}

static ub_listener *ubpy__listener_get(ubpy_listener *h)
{
	return ubpy__obj_get(h ? &h->o : NULL, "the listener is closed");
}

static ub_dgram *ubpy__dgram_get(ubpy_dgram *h)
{
	return ubpy__obj_get(h ? &h->o : NULL,
			     "the datagram endpoint is closed");
}

static ub_pool *ubpy__pool_get(ubpy_pool *p)
{
	if (!p || !p->pool) {
		ubpy__closed(p && !p->L->loop ? "the loop is closed"
					     : "the pool is freed");
		return NULL;
	}
	if (ubpy__foreign(p->L)) {
		ubpy__busy();
		return NULL;
	}
	return p->pool;
}

/* The buffer of a handle if it is still the application's, else NULL with
 * ClosedError.  mutate: also refuse while exported or while the loop is
 * waiting in another thread. */
static ub_buf *ubpy__buf_get(ubpy_buf *b, int mutate)
{
	ubpy_pool *p = b && b->pool ? ((SwigPyObject *)b->pool)->ptr : NULL;

	if (!p || !p->pool) {
		ubpy__closed(p && !p->L->loop ? "the buffer's loop is closed"
					     : "the buffer's pool is freed");
		return NULL;
	}
	if (ub_buf_state(b->buf) != UB_BUF_APP || ub_buf_gen(b->buf) != b->gen) {
		ubpy__closed("the buffer was released or sent: this handle is "
			    "stale");
		return NULL;
	}
	if (mutate && b->exports > 0) {
		PyErr_Format(PyExc_BufferError,
			     "the buffer has %zd exported view(s): release "
			     "them (memoryview.release() or a with block) first",
			     b->exports);
		return NULL;
	}
	if (mutate && ubpy__foreign(p->L)) {
		ubpy__busy();
		return NULL;
	}
	return b->buf;
}

static ubpy_loop *ubpy__buf_loop(ubpy_buf *b)
{
	return ((ubpy_pool *)((SwigPyObject *)b->pool)->ptr)->L;
}

/* The Pool object of p (new reference), creating it on first use. */
static PyObject *ubpy__pool_obj(ubpy_loop *L, ub_pool *p)
{
	PyObject *key, *o;
	ubpy_pool *h;

	if (!p)
		Py_RETURN_NONE;
	if (p == L->last_pool) {
		Py_INCREF(L->last_pool_obj);
		return L->last_pool_obj;
	}
	key = PyLong_FromVoidPtr(p);
	if (!key)
		return NULL;
	o = PyDict_GetItemWithError(L->pools, key);
	if (o) {
		Py_INCREF(o);
	} else if (!PyErr_Occurred()) {
		h = calloc(1, sizeof(*h));
		if (!h) {
			Py_DECREF(key);
			return PyErr_NoMemory();
		}
		h->pool = p;
		h->L = L;
		L->refs++;
		o = ubpy__wrap(h, SWIGTYPE_p_ubpy_pool);
		if (!o) {
			ubpy__loop_unref(L);
			free(h);
		} else if (PyDict_SetItem(L->pools, key, o) < 0) {
			Py_CLEAR(o);
		}
	}
	Py_DECREF(key);
	if (o) {
		L->last_pool = p;
		L->last_pool_obj = o; /* borrowed: L->pools holds it */
	}
	return o;
}

/* The handle object of a connection or listener (new reference), created
 * and registered on first sight.  On failure the core object is aborted:
 * nothing could ever close it. */
static PyObject *ubpy__obj_obj(ubpy_loop *L, void *ptr, int is_conn)
{
	PyObject *o = is_conn == UBPY_DGRAM ? ub_dgram_udata(ptr)
		      : is_conn ? ub_conn_udata(ptr) : ub_listener_udata(ptr);
	ubpy_obj *h;
	int r;

	if (o) {
		Py_INCREF(o);
		return o;
	}
	h = calloc(1, is_conn == UBPY_DGRAM ? sizeof(ubpy_dgram)
		      : is_conn ? sizeof(ubpy_conn) : sizeof(ubpy_listener));
	if (!h) {
		PyErr_NoMemory();
		goto fail;
	}
	h->ptr = ptr;
	h->L = L;
	h->is_conn = is_conn;
	L->refs++;
	o = ubpy__wrap(h, is_conn == UBPY_DGRAM ? SWIGTYPE_p_ubpy_dgram
			  : is_conn ? SWIGTYPE_p_ubpy_conn
				    : SWIGTYPE_p_ubpy_listener);
	if (!o) {
		ubpy__loop_unref(L);
		free(h);
		goto fail;
	}
	r = is_conn == UBPY_DGRAM ? ub_dgram_hold(ptr)
	    : is_conn ? ub_conn_hold(ptr) : ub_listener_hold(ptr);
	if (r < 0) {
		Py_DECREF(o);
		ubpy__raise(r);
		goto fail;
	}
	h->held = 1;
	if (PySet_Add(L->live, o) < 0) {
		Py_DECREF(o);
		goto fail;
	}
	h->self = o;
	if (is_conn == UBPY_DGRAM)
		ub_dgram_set_udata(ptr, o);
	else if (is_conn)
		ub_conn_set_udata(ptr, o);
	else
		ub_listener_set_udata(ptr, o);
	return o;
fail:
	if (is_conn == UBPY_DGRAM)
		ub_dgram_close(ptr);
	else if (is_conn)
		ub_conn_abort(ptr);
	else
		ub_listener_close(ptr);
	return NULL;
}

/* The handle of a listener just made with a connection limit (0: none)
 * (new reference).  No accept has completed yet (that takes a
 * ub_loop_wait), so the limit holds from the first connection. */
static PyObject *ubpy__listener_new(ubpy_loop *L, ub_listener *l,
				    unsigned max_conns)
{
	PyObject *obj = ubpy__obj_obj(L, l, UBPY_LISTENER);
	int r;

	if (!obj)
		return NULL;
	if (max_conns) {
		r = ub_listener_set_max_conns(l, max_conns);
		if (r < 0) {
			ub_listener_close(l);
			Py_DECREF(obj);
			ubpy__raise(r);
			return NULL;
		}
	}
	return obj;
}

/* A new owning Buffer object for an APP buffer (new reference).  On failure
 * the buffer goes back to its pool. */
static PyObject *ubpy__buf_obj(ubpy_loop *L, ub_buf *b)
{
	PyObject *pool, *o;
	ubpy_buf *h;

	pool = ubpy__pool_obj(L, ub_buf_pool(b));
	if (!pool)
		goto fail;
	h = malloc(sizeof(*h));
	if (!h) {
		Py_DECREF(pool);
		PyErr_NoMemory();
		goto fail;
	}
	h->buf = b;
	h->pool = pool;
	h->gen = ub_buf_gen(b);
	h->exports = 0;
	h->readonly = (ub_pool_flags(ub_buf_pool(b)) & UB_POOL_RECV) != 0;
	o = ubpy__wrap(h, SWIGTYPE_p_ubpy_buf);
	if (!o) {
		Py_DECREF(pool);
		free(h);
		goto fail;
	}
	h->self = o;
	return o;
fail:
	ub_buf_release(b);
	return NULL;
}

/* What was dropped while the loop waited in another thread: buffers go
 * back to their pools (still at their gen; not once the loop is freed: it
 * took them back), handles' holds are released (a detached object needs
 * no loop). */
static void ubpy__flush_deferred(ubpy_loop *L)
{
	size_t i;

	for (i = 0; i < L->ndeferred; i++) {
		struct ubpy_deferred *d = &L->deferred[i];

		if (d->kind != UBPY_DEF_BUF)
			ubpy__core_release(d->ptr, d->kind);
		else if (L->loop && ub_buf_state(d->ptr) == UB_BUF_APP &&
			 ub_buf_gen(d->ptr) == d->gen)
			ub_buf_release(d->ptr);
	}
	L->ndeferred = 0;
}

/* Drop what a gone handle references: its udata and callbacks usually
 * reference it back (a Transport), a cycle only this breaks. */
static void ubpy__obj_drop_refs(ubpy_obj *o)
{
	Py_CLEAR(o->udata);
	Py_CLEAR(o->on_data);
	Py_CLEAR(o->on_buffers);
}

/* The handle of a CLOSED event's object (borrowed; NULL: none, or it was
 * deallocated). */
static PyObject *ubpy__ev_subject(const ub_event *e)
{
	return e->type != UB_EV_CLOSED ? NULL
	       : e->dgram ? ub_dgram_udata(e->dgram)
	       : e->conn ? ub_conn_udata(e->conn)
	       : e->listener ? ub_listener_udata(e->listener) : NULL;
}

/* Its CLOSED is being delivered: no more events, so the loop stops
 * keeping it alive (the Event references it). */
static void ubpy__closed_seen(ubpy_obj *o)
{
	PyObject *self = o->self;

	if (o->closed)
		return;
	o->closed = 1;
	o->self = NULL;
	/* may be the last reference: o is not touched after it */
	if (self && PySet_Discard(o->L->live, self) < 0)
		PyErr_Clear();
}

/* The handles whose CLOSED the last wait() batch delivered (ev[closed_i,
 * closed_n)) drop their references: their handlers have run.  Before the
 * core frees anything of that batch (ub_loop_wait, ub_loop_free), after
 * the deferred releases (which unlink a dropped handle from its core
 * object's udata).  Their handles are taken first: dropping references
 * runs arbitrary code. */
static void ubpy__let_go(ubpy_loop *L)
{
	PyObject *hs;
	int i, i0 = L->closed_i, n = L->closed_n;

	if (i0 >= n)
		return;
	L->closed_i = L->closed_n = 0;
	hs = PyList_New(0);
	for (i = i0; hs && i < n; i++) {
		PyObject *o = ubpy__ev_subject(&L->ev[i]);

		if (o && PyList_Append(hs, o) < 0)
			Py_CLEAR(hs);
	}
	if (!hs) {
		PyErr_Clear(); /* out of memory: the cycles stay */
		return;
	}
	for (i = 0; i < PyList_GET_SIZE(hs); i++)
		ubpy__obj_drop_refs(((SwigPyObject *)PyList_GET_ITEM(hs, i))->ptr);
	Py_DECREF(hs);
}

/*
 * Free the core loop; every handle of it is cleared.  The caller checked
 * busy and exports.  Returns 0 or what ub_loop_free returned.
 */
static int ubpy__loop_shut(ubpy_loop *L)
{
	PyObject *items, *key, *val;
	ubpy_loop **pp;
	Py_ssize_t pos = 0, i;
	int r;

	if (!L->loop)
		return 0;
	ubpy__flush_deferred(L);
	ubpy__let_go(L);
	L->left_i = L->left_n = 0; /* ub_loop_free takes their buffers back */
	L->busy = 1;
	Py_BEGIN_ALLOW_THREADS
	r = ub_loop_free(L->loop);
	Py_END_ALLOW_THREADS
	L->busy = 0;
	L->loop = NULL;
	/* dropped meanwhile by other threads: their holds (detached) */
	ubpy__flush_deferred(L);
	L->last_pool = NULL;
	L->last_pool_obj = NULL;
	for (pp = &ubpy__loops; *pp; pp = &(*pp)->next) {
		if (*pp == L) {
			*pp = L->next;
			break;
		}
	}
	while (PyDict_Next(L->pools, &pos, &key, &val))
		((ubpy_pool *)((SwigPyObject *)val)->ptr)->pool = NULL;
	/* Snapshot: clearing udata may run arbitrary code. */
	items = PySequence_List(L->live);
	if (!items)
		PyErr_Clear();
	for (i = 0; items && i < PyList_GET_SIZE(items); i++)
		((ubpy_obj *)((SwigPyObject *)PyList_GET_ITEM(items, i))->ptr)
			->self = NULL;
	for (i = 0; items && i < PyList_GET_SIZE(items); i++)
		ubpy__obj_drop_refs(
			((SwigPyObject *)PyList_GET_ITEM(items, i))->ptr);
	Py_XDECREF(items);
	PyDict_Clear(L->pools);
	PySet_Clear(L->live);
	return r;
}

/*
 * The handle classes inherit SwigPyObject's pointer-ownership API (own,
 * disown, acquire, append, next, this, thisown): meaningless here, and
 * disown() would leak a buffer.  Hide it (the attribute is None on our
 * classes).  Run by the first Loop(): %init code runs before the classes'
 * types are ready, and every handle comes from a Loop.
 */
static int ubpy__hide_swig_api(void)
{
	static int done;
	swig_type_info *const tys[] = {
		SWIGTYPE_p_ubpy_loop, SWIGTYPE_p_ubpy_pool, SWIGTYPE_p_ubpy_conn,
		SWIGTYPE_p_ubpy_listener, SWIGTYPE_p_ubpy_buf,
		SWIGTYPE_p_ubpy_dgram };
	static const char *const hide[] = { "own", "disown", "acquire",
					    "append", "next", "this",
					    "thisown" };
	unsigned i, j;

	if (done)
		return 0;
	for (i = 0; i < sizeof(tys) / sizeof(tys[0]); i++) {
		SwigPyClientData *cd = tys[i]->clientdata;
		PyTypeObject *t = cd ? cd->pytype : NULL;

		if (!t || !t->tp_dict)
			continue;
		for (j = 0; j < 7; j++) {
			if (PyDict_GetItemString(t->tp_dict, hide[j]))
				continue; /* ours: Pool.acquire */
			if (PyDict_SetItemString(t->tp_dict, hide[j],
						 Py_None) < 0)
				return -1;
		}
		PyType_Modified(t);
	}
	done = 1;
	return 0;
}

/* ---- integers, addresses, options ---- */

static int ubpy__ll_arg(PyObject *o, long long lo, long long hi,
		       const char *name, long long *out)
{
	long long v;
	int overflow = 0;

	if (!PyLong_Check(o)) {
		if (PyFloat_Check(o) || !PyIndex_Check(o)) {
			PyErr_Format(PyExc_TypeError,
				     "%s must be an integer, not %.100s", name,
				     Py_TYPE(o)->tp_name);
			return -1;
		}
		o = PyNumber_Index(o);
		if (!o)
			return -1;
		v = PyLong_AsLongLongAndOverflow(o, &overflow);
		Py_DECREF(o);
	} else {
		v = PyLong_AsLongLongAndOverflow(o, &overflow);
	}
	if (v == -1 && PyErr_Occurred())
		return -1;
	if (overflow || v < lo || v > hi) {
		PyErr_Format(PyExc_ValueError, "%s out of range (%lld..%lld)",
			     name, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

static int ubpy__size_arg(PyObject *o, const char *name, size_t *out)
{
	unsigned long long v;
	long long s;

	/* Negative first, for a ValueError rather than OverflowError. */
	if (ubpy__ll_arg(o, 0, LLONG_MAX, name, &s) == 0) {
		*out = (size_t)s;
		return 0;
	}
	if (!PyErr_ExceptionMatches(PyExc_ValueError) || !PyLong_Check(o))
		return -1;
	PyErr_Clear();
	v = PyLong_AsUnsignedLongLong(o);
	if (v == (unsigned long long)-1 && PyErr_Occurred()) {
		PyErr_Clear();
		PyErr_Format(PyExc_ValueError, "%s out of range (0..%zu)",
			     name, (size_t)SIZE_MAX);
		return -1;
	}
	*out = (size_t)v;
	return 0;
}

/*
 * Address strings, both ways, for the echo idiom sendto(buf, buf.source):
 * a small direct-mapped cache of (address, str) pairs.  Buffer.source
 * returns the cached str of its address, and an address argument that is
 * a cached str (the same object) takes its address without parsing; a str
 * that was parsed is cached too.  Holding the str keeps its identity
 * unique; the GIL guards the table.
 */
#define UBPY_ACACHE 64u
struct ubpy_aent {
	PyObject *str;
	socklen_t len;
	struct sockaddr_storage sa;
};
static struct ubpy_aent ubpy__acache[UBPY_ACACHE];
static unsigned char ubpy__aptr[UBPY_ACACHE]; /* str slot -> entry + 1 */

static unsigned ubpy__ahash(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint32_t h = 2166136261u;

	while (n--)
		h = (h ^ *b++) * 16777619u;
	return (unsigned)(h ^ (h >> 16)) % UBPY_ACACHE;
}

static unsigned ubpy__pslot(const PyObject *o)
{
	uintptr_t v = (uintptr_t)o >> 4;

	return (unsigned)((v ^ (v >> 7)) % UBPY_ACACHE);
}

static struct ubpy_aent *ubpy__aget(const struct sockaddr *sa,
				     socklen_t len)
{
	struct ubpy_aent *e = &ubpy__acache[ubpy__ahash(sa, len)];

	return e->str && e->len == len && memcmp(&e->sa, sa, len) == 0 ? e
									 : NULL;
}

/* Remember str for the address (replacing what held its slot). */
static void ubpy__aput(const struct sockaddr *sa, socklen_t len,
		       PyObject *str)
{
	unsigned i = ubpy__ahash(sa, len);
	struct ubpy_aent *e = &ubpy__acache[i];
	PyObject *old = e->str;

	if (len > sizeof(e->sa))
		return;
	Py_INCREF(str);
	e->str = str;
	e->len = len;
	memcpy(&e->sa, sa, len);
	ubpy__aptr[ubpy__pslot(str)] = (unsigned char)(i + 1);
	Py_XDECREF(old); /* last: its release may run arbitrary code */
}

/* The cached address of str (the same object), or NULL. */
static const struct ubpy_aent *ubpy__aof(const PyObject *str)
{
	unsigned i = ubpy__aptr[ubpy__pslot(str)];

	return i && ubpy__acache[i - 1].str == str ? &ubpy__acache[i - 1]
						   : NULL;
}

/* A received buffer's source as a str (cached), None without one. */
static PyObject *ubpy__source_str(const ub_buf *u)
{
	socklen_t len = 0;
	const struct sockaddr *sa = ub_buf_addr(u, &len);
	struct ubpy_aent *e;
	PyObject *str;
	char s[256];
	int r;

	if (!sa || !len)
		Py_RETURN_NONE;
	e = ubpy__aget(sa, len);
	if (e) {
		Py_INCREF(e->str);
		return e->str;
	}
	r = ub_buf_addr_format(u, s, sizeof(s));
	if (r < 0)
		Py_RETURN_NONE; /* an address we cannot name */
	str = PyUnicode_DecodeUTF8(s, r, "surrogateescape");
	if (str)
		ubpy__aput(sa, len, str);
	return str;
}

/* "HOST:PORT", "[V6]:PORT", "unix:PATH", "/PATH" or (host, port), numeric
 * hosts only (the core never resolves names; uringbuf.server does). */
static int ubpy__addr_arg(PyObject *o, struct sockaddr_storage *ss,
			 socklen_t *len)
{
	char text[300];
	const char *s;

	if (PyUnicode_CheckExact(o)) {
		const struct ubpy_aent *e = ubpy__aof(o);

		if (e) {
			memcpy(ss, &e->sa, e->len);
			*len = e->len;
			return 0;
		}
	}

	if (PyTuple_Check(o) && PyTuple_GET_SIZE(o) >= 2) {
		PyObject *host = PyTuple_GET_ITEM(o, 0);
		long long port;
		const char *h;

		if (!PyUnicode_Check(host)) {
			PyErr_SetString(PyExc_TypeError,
					"address host must be a str");
			return -1;
		}
		h = PyUnicode_AsUTF8(host);
		if (!h || ubpy__ll_arg(PyTuple_GET_ITEM(o, 1), 0, 65535,
				      "port", &port) < 0)
			return -1;
		if (strlen(h) > 250) {
			PyErr_SetString(PyExc_ValueError, "host too long");
			return -1;
		}
		snprintf(text, sizeof(text), strchr(h, ':') ? "[%s]:%lld"
							     : "%s:%lld",
			 h, port);
		s = text;
	} else if (PyUnicode_Check(o)) {
		s = PyUnicode_AsUTF8(o);
		if (!s)
			return -1;
	} else {
		PyErr_Format(PyExc_TypeError,
			     "address must be a str \"HOST:PORT\" or a (host, "
			     "port) tuple, not %.100s",
			     Py_TYPE(o)->tp_name);
		return -1;
	}
	*len = sizeof(*ss);
	if (ub_addr_parse(s, ss, len) < 0) {
		PyErr_Format(PyExc_ValueError,
			     "bad address '%.200s': expected HOST:PORT with a "
			     "numeric host, [IPV6]:PORT, unix:PATH or (host, "
			     "port)",
			     s);
		return -1;
	}
	if (PyUnicode_CheckExact(o))
		ubpy__aput((struct sockaddr *)ss, *len, o);
	return 0;
}

static int ubpy__mode_arg(PyObject *o, int *mode)
{
	long long v;

	if (PyUnicode_Check(o)) {
		const char *s = PyUnicode_AsUTF8(o);

		if (!s)
			return -1;
		*mode = ub_mode_from_name(s);
		if (*mode < 0) {
			PyErr_Format(PyExc_ValueError,
				     "unknown mode '%.50s' (bundle, ring, "
				     "serial or auto)",
				     s);
			return -1;
		}
		return 0;
	}
	if (ubpy__ll_arg(o, UB_MODE_AUTO, UB_MODE_SERIAL, "mode", &v) < 0)
		return -1;
	*mode = (int)v;
	return 0;
}

/* A Pool object for an option (which loop and kind: the core's check). */
static int ubpy__opt_pool(PyObject *o, ub_pool **out)
{
	ubpy_pool *p;

	*out = NULL;
	if (!o || o == Py_None)
		return 0;
	p = ubpy__unwrap(o, SWIGTYPE_p_ubpy_pool, "Pool");
	if (!p || !(*out = ubpy__pool_get(p)))
		return -1;
	return 0;
}

/* The longest finite deadline, in milliseconds (UINT_MAX means "never"
 * to the core's close_timeout_ms). */
#define UBPY_MAX_TIMEOUT_MS (UINT_MAX - 1u)

/*
 * A deadline in seconds (int or float, asyncio's idiom) as the core's
 * milliseconds, rounded up (0.0001 s is 1 ms; float noise such as
 * 1.1 * 1000 = 1100.0000000000002 is not rounded up).  math.inf stores
 * never_ms (0 for the deadlines whose 0 means none; UINT_MAX for the close
 * deadline).  TypeError for a non-number (bool included), ValueError for
 * NaN, a value <= 0, or one above UBPY_MAX_TIMEOUT_MS.
 */
static int ubpy__timeout_arg(PyObject *o, const char *name, unsigned never_ms,
			    unsigned *ms)
{
	PyNumberMethods *nb = Py_TYPE(o)->tp_as_number;
	double s, x, r;

	if (PyBool_Check(o) || (!PyFloat_Check(o) && !PyLong_Check(o) &&
				!PyIndex_Check(o) && !(nb && nb->nb_float))) {
		PyErr_Format(PyExc_TypeError,
			     "%s must be a number of seconds (int or float), "
			     "None or math.inf, not %.100s",
			     name, Py_TYPE(o)->tp_name);
		return -1;
	}
	if (!PyFloat_Check(o) && PyIndex_Check(o)) {
		long long v;
		int overflow = 0;
		PyObject *i = PyNumber_Index(o);

		if (!i)
			return -1;
		v = PyLong_AsLongLongAndOverflow(i, &overflow);
		Py_DECREF(i);
		if (v == -1 && PyErr_Occurred())
			return -1;
		if (overflow < 0 || (!overflow && v <= 0))
			goto nonpositive;
		if (overflow || v > (long long)(UBPY_MAX_TIMEOUT_MS / 1000u))
			goto toobig;
		*ms = (unsigned)v * 1000u;
		return 0;
	}
	s = PyFloat_AsDouble(o);
	if (s == -1.0 && PyErr_Occurred())
		return -1;
	if (isnan(s)) {
		PyErr_Format(PyExc_ValueError, "%s must not be NaN", name);
		return -1;
	}
	if (s <= 0)
		goto nonpositive;
	if (isinf(s)) {
		*ms = never_ms;
		return 0;
	}
	x = s * 1000.0;
	r = nearbyint(x);
	x = fabs(x - r) <= 1e-6 * (r > 1.0 ? r : 1.0) ? r : ceil(x);
	if (x < 1.0)
		x = 1.0;
	if (x > (double)UBPY_MAX_TIMEOUT_MS)
		goto toobig;
	*ms = (unsigned)x;
	return 0;
nonpositive:
	PyErr_Format(PyExc_ValueError, "%s must be > 0 seconds (%s)", name,
		     never_ms ? "None: the default, math.inf: never"
			      : "None or math.inf: none");
	return -1;
toobig:
	PyErr_Format(PyExc_ValueError,
		     "%s too big: at most %u.%03u seconds (math.inf: never)",
		     name, UBPY_MAX_TIMEOUT_MS / 1000u,
		     UBPY_MAX_TIMEOUT_MS % 1000u);
	return -1;
}

/* A positive byte count (recv_budget): TypeError for a non-integer (bool
 * included), ValueError for 0, a negative or a too big value. */
static int ubpy__bytes_arg(PyObject *o, const char *name, size_t *out)
{
	if (PyBool_Check(o)) {
		PyErr_Format(PyExc_TypeError,
			     "%s must be an integer (bytes), not bool", name);
		return -1;
	}
	if (ubpy__size_arg(o, name, out) < 0)
		return -1;
	if (*out == 0) {
		PyErr_Format(PyExc_ValueError, "%s must be > 0 bytes", name);
		return -1;
	}
	return 0;
}

/* max_connections: None (no limit) or 1..UINT_MAX. */
static int ubpy__max_conns_arg(PyObject *o, unsigned *out)
{
	long long v;

	*out = 0;
	if (!o || o == Py_None)
		return 0;
	if (PyBool_Check(o)) {
		PyErr_SetString(PyExc_TypeError,
				"max_connections must be an integer or None, "
				"not bool");
		return -1;
	}
	if (ubpy__ll_arg(o, 1, UINT_MAX, "max_connections", &v) < 0)
		return -1;
	*out = (unsigned)v;
	return 0;
}

/* A flag keyword (recv, incremental, pool_incremental): absent is False,
 * else a bool; anything else is a TypeError (a flag must not be a truthy
 * "no", such as recv="send"). */
static int ubpy__flag_arg(PyObject *o, const char *name, int *out)
{
	*out = 0;
	if (!o)
		return 0;
	if (!PyBool_Check(o)) {
		PyErr_Format(PyExc_TypeError, "%s must be a bool, not %.100s",
			     name, Py_TYPE(o)->tp_name);
		return -1;
	}
	*out = o == Py_True;
	return 0;
}

/* What an option check of the core answered: 0, or -1 with its reason
 * raised (InvalidArgument, or OSError EOPNOTSUPP for a mode the kernel
 * lacks).  *why is read after the check ran (argument order is
 * unspecified in C, hence the pointer). */
static int ubpy__check(int r, const char *const *why)
{
	if (r < 0) {
		ubpy__raise_why(r, *why);
		return -1;
	}
	return 0;
}

/* high_water and low_water keywords (None: the default; low defaults to a
 * quarter of a given high).  A given high_water goes through the core's
 * ub_water_check(): None is the default here, so 0 is refused rather than
 * taken for the C default. */
static int ubpy__water_args(PyObject *high, PyObject *low, size_t *h,
			    size_t *l)
{
	const char *why = NULL;

	if (high && high != Py_None) {
		if (ubpy__size_arg(high, "high_water", h) < 0)
			return -1;
		*l = *h / 4;
	}
	if (low && low != Py_None && ubpy__size_arg(low, "low_water", l) < 0)
		return -1;
	if (high && high != Py_None)
		return ubpy__check(ub_water_check(*h, *l, &why), &why);
	return 0;
}

/* Connection options from keyword arguments (None: default).  Deadlines
 * are in seconds here (see ubpy__timeout_arg). */
static int ubpy__conn_opts(ub_conn_opts *o, ubpy_loop *L, PyObject *recv_pool,
			  PyObject *send_pool, PyObject *mode,
			  PyObject *high_water, PyObject *low_water,
			  PyObject *ring_entries, PyObject *flags,
			  PyObject *recv_budget, PyObject *idle_timeout,
			  PyObject *connect_timeout, PyObject *close_timeout)
{
	const char *why = NULL;
	long long v;

	ub_conn_opts_init(o);
	if (ubpy__opt_pool(recv_pool, &o->recv_pool) < 0 ||
	    ubpy__opt_pool(send_pool, &o->send_pool) < 0)
		return -1;
	if (mode && mode != Py_None && ubpy__mode_arg(mode, &o->mode) < 0)
		return -1;
	if (ubpy__water_args(high_water, low_water, &o->high_water,
			     &o->low_water) < 0)
		return -1;
	/* None is the default here, so 0 is refused rather than taken for
	 * the C default; the rest of the rule is the core's. */
	if (ring_entries && ring_entries != Py_None) {
		if (ubpy__ll_arg(ring_entries, 1, UINT_MAX, "ring_entries",
				 &v) < 0)
			return -1;
		o->ring_entries = (unsigned)v;
	}
	if (flags && flags != Py_None) {
		if (ubpy__ll_arg(flags, 0, UINT_MAX, "flags", &v) < 0)
			return -1;
		o->flags = (unsigned)v;
	}
	if (recv_budget && recv_budget != Py_None &&
	    ubpy__bytes_arg(recv_budget, "recv_budget", &o->recv_budget) < 0)
		return -1;
	if (idle_timeout && idle_timeout != Py_None &&
	    ubpy__timeout_arg(idle_timeout, "idle_timeout", 0,
			      &o->idle_timeout_ms) < 0)
		return -1;
	if (connect_timeout && connect_timeout != Py_None &&
	    ubpy__timeout_arg(connect_timeout, "connect_timeout", 0,
			      &o->connect_timeout_ms) < 0)
		return -1;
	if (close_timeout && close_timeout != Py_None &&
	    ubpy__timeout_arg(close_timeout, "close_timeout", UINT_MAX,
			      &o->close_timeout_ms) < 0)
		return -1;
	if (!L)
		return 0; /* the flat functions: their wrappers check */
	return ubpy__check(ub_conn_opts_check(L->loop, o, &why), &why);
}

/* Connection options from a dict (flat functions): the keys and meanings
 * of struct ub_conn_opts, deadlines in milliseconds (0: none, or the
 * default close deadline; close_timeout_ms UINT_MAX: never). */
static int ubpy__conn_opts_dict(PyObject *d, ub_conn_opts *o)
{
	static const char *const keys[] = { "recv_pool", "send_pool", "mode",
					    "high_water", "low_water",
					    "ring_entries", "flags",
					    "recv_budget", "idle_timeout_ms",
					    "connect_timeout_ms",
					    "close_timeout_ms" };
	enum { NKEYS = sizeof(keys) / sizeof(keys[0]) };
	PyObject *v[NKEYS] = { NULL };
	PyObject *key, *val;
	Py_ssize_t pos = 0;
	unsigned i, *ms[3];
	long long t;

	if (!PyDict_Check(d)) {
		PyErr_Format(PyExc_TypeError,
			     "connection options must be a dict or None, not "
			     "%.100s",
			     Py_TYPE(d)->tp_name);
		return -1;
	}
	while (PyDict_Next(d, &pos, &key, &val)) {
		const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key)
						     : NULL;

		for (i = 0; k && i < NKEYS; i++)
			if (!strcmp(k, keys[i]))
				break;
		if (!k || i == NKEYS) {
			PyErr_Clear();
			PyErr_Format(PyExc_TypeError,
				     "unknown connection option %R (known: "
				     "recv_pool, send_pool, mode, high_water, "
				     "low_water, ring_entries, flags, "
				     "recv_budget, idle_timeout_ms, "
				     "connect_timeout_ms, close_timeout_ms)",
				     key);
			return -1;
		}
		v[i] = val;
	}
	if (ubpy__conn_opts(o, NULL, v[0], v[1], v[2], v[3], v[4], v[5], v[6],
			    NULL, NULL, NULL, NULL) < 0)
		return -1;
	if (v[7] && v[7] != Py_None &&
	    ubpy__size_arg(v[7], "recv_budget", &o->recv_budget) < 0)
		return -1; /* 0: the default, as in C */
	ms[0] = &o->idle_timeout_ms;
	ms[1] = &o->connect_timeout_ms;
	ms[2] = &o->close_timeout_ms;
	for (i = 0; i < 3; i++) {
		if (!v[8 + i] || v[8 + i] == Py_None)
			continue;
		if (ubpy__ll_arg(v[8 + i], 0, UINT_MAX, keys[8 + i], &t) < 0)
			return -1;
		*ms[i] = (unsigned)t;
	}
	return 0;
}

/* A file descriptor from an int or an object with fileno(). */
static int ubpy__fd_arg(PyObject *o, int *fd)
{
	long long v;

	if (PyLong_Check(o)) {
		if (ubpy__ll_arg(o, 0, INT_MAX, "fd", &v) < 0)
			return -1;
		*fd = (int)v;
		return 0;
	}
	*fd = PyObject_AsFileDescriptor(o);
	return *fd < 0 ? -1 : 0;
}

/* After the core took over the fd of a socket object: detach it so that
 * the socket object never closes it. */
static void ubpy__detach(PyObject *o)
{
	PyObject *r;

	if (PyLong_Check(o) || !PyObject_HasAttrString(o, "detach"))
		return;
	r = PyObject_CallMethod(o, "detach", NULL);
	if (!r)
		PyErr_Clear();
	Py_XDECREF(r);
}

static PyObject *ubpy__sock_name(int fd, int peer)
{
	char name[256];
	int r;

	if (fd < 0)
		return UBPY_NULL(ubpy__closed("the socket is closed"));
	r = ub_sock_name(fd, peer, name, sizeof(name));
	if (r < 0) {
		ubpy__raise(r);
		return NULL;
	}
	return PyUnicode_FromString(name);
}

/* ---- events ---- */

static PyStructSequence_Field ubpy__event_fields[] = {
	{ "type", "event type: uringbuf.EV_ACCEPT ... EV_CLOSED" },
	{ "res", "result: bytes (DATA, SENT), fd (ACCEPT), 0 or -errno" },
	{ "conn", "the Connection, or None (listener events)" },
	{ "listener", "the Listener (ACCEPT, listener ERROR/CLOSED), or None" },
	{ "buf", "the received Buffer (DATA only; yours now), or None" },
	{ "udata", "the connection's (else the listener's or the datagram "
		   "endpoint's) udata" },
	{ "dgram", "the Datagram endpoint of the event, or None (an attribute "
		   "only: the tuple keeps its 6 items)" },
	{ NULL, NULL },
};

static PyStructSequence_Desc ubpy__event_desc = {
	"uringbuf.Event",
	"One event of a Loop.wait() batch: (type, res, conn, listener, buf, "
	"udata), like the C struct ub_event; a datagram endpoint's events "
	"carry it as ev.dgram (conn and listener None).",
	ubpy__event_fields,
	6, /* dgram is not in the tuple: `t, res, c, l, b, u = ev` still works */
};

static PyObject *ubpy__event(ubpy_loop *L, ub_event *e)
{
	PyObject *conn = NULL, *lst = NULL, *buf = NULL, *dg = NULL, *ev, *res;
	ubpy_obj *subject = NULL;
	PyObject *ud;

	if (e->dgram) {
		dg = ubpy__obj_obj(L, e->dgram, UBPY_DGRAM);
		if (!dg)
			goto fail;
		subject = ((SwigPyObject *)dg)->ptr;
	}
	if (e->conn) {
		conn = ubpy__obj_obj(L, e->conn, 1);
		if (!conn)
			goto fail;
		subject = ((SwigPyObject *)conn)->ptr;
	}
	if (e->listener) {
		lst = ubpy__obj_obj(L, e->listener, 0);
		if (!lst)
			goto fail;
		if (!subject)
			subject = ((SwigPyObject *)lst)->ptr;
	}
	if (e->type == UB_EV_CLOSED && subject)
		ubpy__closed_seen(subject);
	if (e->buf) {
		buf = ubpy__buf_obj(L, e->buf);
		e->buf = NULL; /* ours now (or released) */
		if (!buf)
			goto fail;
	}
	res = PyLong_FromLong(e->res);
	if (!res)
		goto fail;
	ev = PyStructSequence_New(ubpy_EventType);
	if (!ev) {
		Py_DECREF(res);
		goto fail;
	}
	ud = subject && subject->udata ? subject->udata : Py_None;
	Py_INCREF(ud);
	PyStructSequence_SET_ITEM(ev, 0, PyLong_FromLong(e->type));
	PyStructSequence_SET_ITEM(ev, 1, res);
	PyStructSequence_SET_ITEM(ev, 2, conn ? conn : (Py_INCREF(Py_None), Py_None));
	PyStructSequence_SET_ITEM(ev, 3, lst ? lst : (Py_INCREF(Py_None), Py_None));
	PyStructSequence_SET_ITEM(ev, 4, buf ? buf : (Py_INCREF(Py_None), Py_None));
	PyStructSequence_SET_ITEM(ev, 5, ud);
	PyStructSequence_SET_ITEM(ev, 6, dg ? dg : (Py_INCREF(Py_None), Py_None));
	return ev;
fail:
	Py_XDECREF(dg);
	Py_XDECREF(conn);
	Py_XDECREF(lst);
	Py_XDECREF(buf);
	return NULL;
}

/* dispatch() is done with a CLOSED event (delivered, or not deliverable):
 * its handle drops its references at once. */
static void ubpy__drop_closed(const ub_event *e)
{
	PyObject *o = ubpy__ev_subject(e);

	if (o) {
		Py_INCREF(o);
		ubpy__obj_drop_refs(((SwigPyObject *)o)->ptr);
		Py_DECREF(o);
	}
}

/* Building the batch failed at event i: no buffer may leak and no CLOSED
 * may go unnoticed. */
static void ubpy__events_drop(ubpy_loop *L, int i, int n)
{
	for (; i < n; i++) {
		ub_event *e = &L->ev[i];
		PyObject *o = ubpy__ev_subject(e);

		if (e->buf)
			ub_buf_release(e->buf);
		e->buf = NULL;
		if (o)
			ubpy__closed_seen(((SwigPyObject *)o)->ptr);
	}
}

/*
 * The next batch in L->ev: the events a dispatch() left undelivered if
 * there are any (no wait then), else what ub_loop_wait returns.  Returns the
 * index of its first event and sets *np to the end, or -1 with an
 * exception.
 */
static int ubpy__loop_collect(ubpy_loop *L, int max, int min, int timeout,
			      int *np)
{
	ub_loop *loop = ubpy__loop_get(L);
	int n;

	if (!loop)
		return -1;
	if (max < 1 || max > 65536 || min < 0 || min > max || timeout < -1) {
		PyErr_SetString(PyExc_ValueError,
				"wait() needs 1 <= max <= 65536, 0 <= min <= "
				"max and timeout >= -1");
		return -1;
	}
	if (L->left_i < L->left_n) {
		n = L->left_i;
		*np = L->left_n;
		L->left_i = L->left_n = 0;
		return n;
	}
	if (L->evcap < max) {
		ub_event *ev = realloc(L->ev, (size_t)max * sizeof(*ev));

		if (!ev) {
			PyErr_NoMemory();
			return -1;
		}
		L->ev = ev;
		L->evcap = max;
	}
	ubpy__flush_deferred(L);
	ubpy__let_go(L);
	L->busy = 1;
	Py_BEGIN_ALLOW_THREADS
	n = ub_loop_wait(loop, L->ev, max, min, timeout);
	Py_END_ALLOW_THREADS
	L->busy = 0;
	ubpy__flush_deferred(L);
	if (n == -EINTR) {
		/* Run Python signal handlers now: SIGINT raises here. */
		if (PyErr_CheckSignals() < 0)
			return -1;
		n = 0;
	}
	if (n < 0) {
		ubpy__raise(n);
		return -1;
	}
	*np = n;
	return 0;
}

static PyObject *ubpy__loop_wait(ubpy_loop *L, int max, int min, int timeout)
{
	PyObject *list;
	int i0, n, i;

	i0 = ubpy__loop_collect(L, max, min, timeout, &n);
	if (i0 < 0)
		return NULL;
	/* the handlers of this batch run after we return: its CLOSED
	 * handles keep their references until the next wait */
	for (i = i0; i < n; i++)
		if (L->ev[i].type == UB_EV_CLOSED) {
			L->closed_i = i0;
			L->closed_n = n;
			break;
		}
	list = PyList_New(n - i0);
	if (!list) {
		ubpy__events_drop(L, i0, n);
		return NULL;
	}
	for (i = i0; i < n; i++) {
		PyObject *ev = ubpy__event(L, &L->ev[i]);

		if (!ev) {
			ubpy__events_drop(L, i, n);
			Py_DECREF(list);
			return NULL;
		}
		PyList_SET_ITEM(list, i - i0, ev);
	}
	return list;
}

/* A list of Buffer objects for the DATA events ev[i, j) (new reference).
 * Every buffer of them is the list's or released, also on failure. */
static PyObject *ubpy__bufs_list(ubpy_loop *L, int i, int j)
{
	PyObject *list = PyList_New(j - i);
	int k;

	for (k = i; k < j; k++) {
		ub_event *e = &L->ev[k];
		PyObject *b = list ? ubpy__buf_obj(L, e->buf) : NULL;

		if (!b) {
			if (list)
				e->buf = NULL; /* ubpy__buf_obj released it */
			for (; k < j; k++) {
				if (L->ev[k].buf)
					ub_buf_release(L->ev[k].buf);
				L->ev[k].buf = NULL;
			}
			Py_XDECREF(list); /* and the Buffers in it */
			return NULL;
		}
		e->buf = NULL;
		PyList_SET_ITEM(list, k - i, b);
	}
	return list;
}

/* The exception being raised, normalized, with its traceback (new
 * reference); the error indicator is cleared. */
static PyObject *ubpy__take_exc(void)
{
#if PY_VERSION_HEX >= 0x030C0000
	return PyErr_GetRaisedException();
#else
	PyObject *t, *v, *tb;

	PyErr_Fetch(&t, &v, &tb);
	PyErr_NormalizeException(&t, &v, &tb);
	if (tb && v)
		PyException_SetTraceback(v, tb);
	Py_XDECREF(t);
	Py_XDECREF(tb);
	return v;
#endif
}

/*
 * Loop.dispatch(): the batch wait() would return, delivered in order
 * without a list: DATA of a connection whose on_data is set calls
 * on_data(buf), with no Event object and no Python frame in between (the
 * per-buffer hot path); every other event calls slow(event).  An Exception
 * from on_data goes to report(exc, udata) and the batch goes on.  Anything
 * else that raises (KeyboardInterrupt from a callback, an exception out of
 * slow or report) propagates, and the rest of the batch is kept for the
 * next dispatch() or wait(): no event is lost.  Returns the number of
 * events delivered.
 */
static PyObject *ubpy__loop_dispatch(ubpy_loop *L, int max, int min,
				     int timeout, PyObject *slow,
				     PyObject *report)
{
	int i0, n, i;

	if (!PyCallable_Check(slow) || !PyCallable_Check(report)) {
		PyErr_SetString(PyExc_TypeError,
				"dispatch() needs callable slow and report");
		return NULL;
	}
	i0 = ubpy__loop_collect(L, max, min, timeout, &n);
	if (i0 < 0)
		return NULL;
	for (i = i0; i < n; i++) {
		ub_event *e = &L->ev[i];
		PyObject *cb = NULL, *ud = NULL, *arg, *r, *src = NULL;
		int many = 0, with_source = 0;

		if (e->type == UB_EV_DATA && (e->conn || e->dgram) && e->buf) {
			PyObject *co = e->conn ? ub_conn_udata(e->conn)
					       : ub_dgram_udata(e->dgram);
			ubpy_obj *h = co ? ((SwigPyObject *)co)->ptr : NULL;

			if (h && (h->on_buffers || h->on_data)) {
				many = h->on_buffers != NULL;
				cb = many ? h->on_buffers : h->on_data;
				ud = h->udata ? h->udata : Py_None;
				with_source = h->with_source;
			}
		}
		if (many) {
			int j;

			/* this event and every DATA of the same connection
			 * right after it: one list, one call */
			for (j = i + 1; j < n && L->ev[j].type == UB_EV_DATA &&
			     L->ev[j].conn == e->conn &&
			     L->ev[j].dgram == e->dgram && L->ev[j].buf; j++)
				;
			arg = ubpy__bufs_list(L, i, j);
			i = j - 1; /* the last of the run: leftovers follow it */
			if (!arg)
				goto stop;
		} else if (cb) {
			if (with_source) {
				/* on_datagram: (buf, source), asyncio's
				 * datagram_received shape, no frame between */
				src = ubpy__source_str(e->buf);
				if (!src)
					goto stop;
			}
			arg = ubpy__buf_obj(L, e->buf);
			e->buf = NULL; /* ours now (or released) */
			if (!arg) {
				Py_XDECREF(src);
				goto stop;
			}
		}
		if (cb) {
			/* on_data may clear itself or the udata: hold both */
			Py_INCREF(cb);
			Py_INCREF(ud);
			if (src) {
				PyObject *args[2] = { arg, src };

				r = PyObject_Vectorcall(cb, args, 2, NULL);
				Py_DECREF(src);
			} else {
				r = PyObject_CallOneArg(cb, arg);
			}
			Py_DECREF(cb);
			Py_DECREF(arg);
			if (!r && PyErr_ExceptionMatches(PyExc_Exception)) {
				PyObject *exc = ubpy__take_exc();

				r = PyObject_CallFunctionObjArgs(report, exc, ud,
								 NULL);
				Py_XDECREF(exc);
			}
			Py_DECREF(ud);
		} else {
			PyObject *subj;

			arg = ubpy__event(L, e);
			if (!arg) {
				ubpy__events_drop(L, i, i + 1);
				ubpy__drop_closed(e);
				goto stop;
			}
			/* CLOSED: once handled, its handle (which arg keeps
			 * alive) drops its references */
			subj = ubpy__ev_subject(e);
			r = PyObject_CallOneArg(slow, arg);
			if (subj)
				ubpy__obj_drop_refs(((SwigPyObject *)subj)->ptr);
			Py_DECREF(arg);
		}
		if (!r)
			goto stop;
		Py_DECREF(r);
	}
	return PyLong_FromLong(n - i0);
stop:
	if (i + 1 < n) {
		L->left_i = i + 1;
		L->left_n = n;
	}
	return NULL;
}

/* ---- the buffer protocol ---- */

static int ubpy__buf_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
	ubpy_buf *b = ((SwigPyObject *)self)->ptr;
	ub_buf *buf;

	view->obj = NULL;
	if (!b) {
		PyErr_SetString(PyExc_BufferError, "not a buffer");
		return -1;
	}
	buf = ubpy__buf_get(b, 0);
	if (!buf)
		return -1;
	if (PyBuffer_FillInfo(view, self, ub_buf_data(buf),
			      (Py_ssize_t)ub_buf_len(buf), b->readonly,
			      flags) < 0)
		return -1;
	b->exports++;
	ubpy__buf_loop(b)->exports++;
	return 0;
}

static void ubpy__buf_releasebuffer(PyObject *self, Py_buffer *view)
{
	ubpy_buf *b = ((SwigPyObject *)self)->ptr;
	ubpy_loop *L = ubpy__buf_loop(b);

	(void)view;
	b->exports--;
	L->exports--;
	if (L->orphan && L->exports == 0 && !ubpy__foreign(L))
		ubpy__loop_shut(L);
}

/* len(buf): the data length; ClosedError for a stale handle. */
static Py_ssize_t ubpy__buf_len(PyObject *self)
{
	ubpy_buf *b = ((SwigPyObject *)self)->ptr;
	ub_buf *buf = b ? ubpy__buf_get(b, 0) : NULL;

	if (!b)
		PyErr_SetString(PyExc_TypeError, "not a buffer");
	return buf ? (Py_ssize_t)ub_buf_len(buf) : -1;
}

/* bool(buf): valid and not empty.  A stale handle is false rather than an
 * error, so that `if buf:` is safe after sending it. */
static int ubpy__buf_bool(PyObject *self)
{
	ubpy_buf *b = ((SwigPyObject *)self)->ptr;
	ubpy_pool *p = b ? ((SwigPyObject *)b->pool)->ptr : NULL;

	return p && p->pool && ub_buf_state(b->buf) == UB_BUF_APP &&
	       ub_buf_gen(b->buf) == b->gen && ub_buf_len(b->buf) > 0;
}

/* ---- method helpers ---- */

static PyObject *ubpy__none_or_raise(long long r)
{
	if (r < 0) {
		ubpy__raise(r);
		return NULL;
	}
	Py_RETURN_NONE;
}

static PyObject *ubpy__loop_objref(ubpy_loop *L)
{
	PyObject *o = L->obj && L->loop ? L->obj : Py_None;

	Py_INCREF(o);
	return o;
}

/* ub_conn_send_buf for a Buffer object, with clear errors; returns the
 * bytes queued. */
static long long ubpy__send_buf(ubpy_conn *h, PyObject *bufobj)
{
	ub_conn *c = ubpy__conn_get(h);
	ubpy_buf *b;
	ub_buf *buf;
	size_t len;
	int r;

	if (!c)
		return UBPY_EXC;
	b = ubpy__unwrap(bufobj, SWIGTYPE_p_ubpy_buf, "Buffer");
	if (!b || !(buf = ubpy__buf_get(b, 1)))
		return UBPY_EXC;
	if (ubpy__buf_loop(b) != h->o.L) {
		PyErr_SetString(PyExc_ValueError,
				"the buffer belongs to another loop");
		return UBPY_EXC;
	}
	len = ub_buf_len(buf);
	if (len == 0) {
		PyErr_SetString(PyExc_ValueError,
				"cannot send an empty buffer (set its length "
				"first)");
		return UBPY_EXC;
	}
	r = ub_conn_send_buf(c, buf);
	return r < 0 ? r : (long long)len;
}

/* An address argument that may be None (*lenp 0: no address). */
static int ubpy__addr_opt(PyObject *o, struct sockaddr_storage *ss,
			  socklen_t *lenp)
{
	*lenp = 0;
	if (!o || o == Py_None)
		return 0;
	return ubpy__addr_arg(o, ss, lenp);
}

/* The largest UDP payload of a family (IPv4: 65535 - 20 - 8; IPv6, whose
 * payload length excludes its header: 65535 - 8), else 0 (no limit here). */
static size_t ubpy__dgram_max(int family)
{
	return family == AF_INET ? 65507 : family == AF_INET6 ? 65527 : 0;
}

static int ubpy__msgsize(size_t len, size_t max, const char *what)
{
	PyObject *args = Py_BuildValue("(is)", EMSGSIZE, "");
	PyObject *msg = PyUnicode_FromFormat(
		"a datagram of %zu bytes is larger than %s (%zu bytes)%s", len,
		what, max, strcmp(what, "UDP allows") ? ": give the endpoint a "
		"send_pool of larger buffers, or send a Buffer" : "");

	if (args && msg) {
		PyTuple_SET_ITEM(args, 1, msg);
		msg = NULL;
		PyErr_SetObject(PyExc_OSError, args);
	}
	Py_XDECREF(msg);
	Py_XDECREF(args);
	return UBPY_EXC;
}

/*
 * Datagram.send(): one datagram of data (a Buffer of this loop: queued
 * zero copy, the handle stale afterwards; anything bytes-like: copied into
 * one send-pool buffer) to addr (None: the connected peer).  Returns the
 * bytes queued, or -errno / UBPY_EXC.  A UDP datagram over the protocol's
 * limit is refused here (OSError EMSGSIZE) rather than by the kernel later
 * (an EV_ERROR).
 */
static long long ubpy__dgram_send(ubpy_dgram *h, PyObject *data,
				  PyObject *addr)
{
	ub_dgram *d = ubpy__dgram_get(h);
	PyTypeObject *buftype =
		((SwigPyClientData *)SWIGTYPE_p_ubpy_buf->clientdata)->pytype;
	struct sockaddr_storage ss;
	socklen_t alen;
	size_t max, len;
	const struct sockaddr *sa;
	long long r;
	int family;

	if (!d || ubpy__addr_opt(addr, &ss, &alen) < 0)
		return UBPY_EXC;
	sa = alen ? (struct sockaddr *)&ss : NULL;
	family = ub_dgram_family(d);
	if (sa && family && sa->sa_family != family) {
		PyErr_SetString(PyExc_ValueError,
				"the address is of another family than the "
				"endpoint's socket");
		return UBPY_EXC;
	}
	max = ubpy__dgram_max(family);
	if (PyObject_TypeCheck(data, buftype)) {
		ubpy_buf *b = ((SwigPyObject *)data)->ptr;
		ub_buf *buf = b ? ubpy__buf_get(b, 1) : NULL;

		if (!buf)
			return UBPY_EXC;
		if (ubpy__buf_loop(b) != h->o.L) {
			PyErr_SetString(PyExc_ValueError,
					"the buffer belongs to another loop");
			return UBPY_EXC;
		}
		len = ub_buf_len(buf);
		if (max && len > max)
			return ubpy__msgsize(len, max, "UDP allows");
		r = ub_dgram_send_buf(d, buf, sa, alen);
		return r < 0 ? r : (long long)len;
	} else {
		Py_buffer view;

		if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
			return UBPY_EXC;
		len = (size_t)view.len;
		if (max && len > max) {
			PyBuffer_Release(&view);
			return ubpy__msgsize(len, max, "UDP allows");
		}
		r = ub_dgram_send(d, view.buf, len, sa, alen);
		PyBuffer_Release(&view);
		if (r == -EMSGSIZE) {
			int err = 0;
			ub_pool *sp = ub_dgram_send_pool(d);

			if (!sp)
				sp = ub_loop_send_pool(h->o.L->loop, &err);

			return ubpy__msgsize(len, sp ? ub_pool_buf_size(sp) : 0,
					     "a buffer of its send pool");
		}
		return r;
	}
}

/* Datagram options from keyword arguments (None: the default). */
static int ubpy__dgram_opts(ub_dgram_opts *o, ubpy_loop *L,
			    PyObject *recv_pool, PyObject *send_pool,
			    PyObject *queue_max, PyObject *high_water,
			    PyObject *low_water, PyObject *recv_budget,
			    PyObject *reuseport, PyObject *no_recv)
{
	const char *why = NULL;
	long long v;
	int t;

	ub_dgram_opts_init(o);
	if (ubpy__opt_pool(recv_pool, &o->recv_pool) < 0 ||
	    ubpy__opt_pool(send_pool, &o->send_pool) < 0)
		return -1;
	/* None is the default here, so 0 (the C default) is refused. */
	if (queue_max && queue_max != Py_None) {
		if (ubpy__ll_arg(queue_max, 1, UINT_MAX, "queue_max", &v) < 0)
			return -1;
		o->queue_max = (unsigned)v;
	}
	if (ubpy__water_args(high_water, low_water, &o->high_water,
			     &o->low_water) < 0)
		return -1;
	if (recv_budget && recv_budget != Py_None &&
	    ubpy__bytes_arg(recv_budget, "recv_budget", &o->recv_budget) < 0)
		return -1;
	if (reuseport && reuseport != Py_None) {
		if ((t = PyObject_IsTrue(reuseport)) < 0)
			return -1;
		if (t)
			o->flags |= UB_DGRAM_REUSEPORT;
	}
	if (no_recv && no_recv != Py_None) {
		if ((t = PyObject_IsTrue(no_recv)) < 0)
			return -1;
		if (t)
			o->flags |= UB_DGRAM_NO_RECV;
	}
	return ubpy__check(ub_dgram_opts_check(L->loop, o, &why), &why);
}

/* Connection.send() and the transport's _wsend/_wsendv: a Buffer zero
 * copy (ubpy__send_buf), anything bytes-like copied (ub_conn_send).
 * Returns the bytes accepted (*want: the bytes offered; fewer is a copy
 * cut short), or -errno / UBPY_EXC. */
static long long ubpy__conn_send_obj(ubpy_conn *h, ub_conn *c,
				     PyObject *data, Py_ssize_t *want)
{
	Py_buffer view;
	long long n;

	if (PyObject_TypeCheck(data, ((SwigPyClientData *)
				      SWIGTYPE_p_ubpy_buf->clientdata)->pytype)) {
		n = ubpy__send_buf(h, data);
		*want = n; /* all or nothing */
		return n;
	}
	if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
		return UBPY_EXC;
	n = ub_conn_send(c, view.buf, (size_t)view.len);
	*want = view.len;
	PyBuffer_Release(&view);
	return n;
}

static PyObject *ubpy__repr_state(const char *cls, const void *self,
				 const char *state)
{
	return PyUnicode_FromFormat("<uringbuf.%s %s at %p>", cls, state, self);
}
%}

%init %{
	{
		PyObject *bases;

		ubpy_ClosedError = PyErr_NewExceptionWithDoc(
			"uringbuf.ClosedError",
			"Use of a closed loop, connection, listener or pool, "
			"or of a stale buffer handle (released, sent, or its "
			"loop closed).",
			PyExc_ValueError, NULL);
		bases = PyTuple_Pack(2, PyExc_OSError, PyExc_ValueError);
		ubpy_InvalidArgument = bases ? PyErr_NewExceptionWithDoc(
			"uringbuf.InvalidArgument",
			"The core refused an argument (-EINVAL): an OSError "
			"with errno EINVAL that is also a ValueError.",
			bases, NULL) : NULL;
		Py_XDECREF(bases);
		ubpy_EventType = PyStructSequence_NewType(&ubpy__event_desc);
		if (!ubpy_ClosedError || !ubpy_InvalidArgument || !ubpy_EventType)
			return NULL;
		Py_INCREF(ubpy_ClosedError);
		Py_INCREF(ubpy_InvalidArgument);
		Py_INCREF((PyObject *)ubpy_EventType);
		if (PyModule_AddObject(m, "ClosedError", ubpy_ClosedError) < 0 ||
		    PyModule_AddObject(m, "InvalidArgument",
				       ubpy_InvalidArgument) < 0 ||
		    PyModule_AddObject(m, "Event",
				       (PyObject *)ubpy_EventType) < 0)
			return NULL;
		/* -builtin lists the public names in __all__: add ours. */
		{
			PyObject *all = PyObject_GetAttrString(m, "__all__");
			static const char *const names[] = {
				"ClosedError", "InvalidArgument", "Event" };
			unsigned i;

			for (i = 0; all && i < 3; i++) {
				PyObject *n = PyUnicode_FromString(names[i]);

				if (!n || PyList_Append(all, n) < 0) {
					Py_XDECREF(n);
					Py_DECREF(all);
					return NULL;
				}
				Py_DECREF(n);
			}
			Py_XDECREF(all);
			PyErr_Clear();
		}
	}
%}

/* ====================================================================
 * Typemaps for the flat core functions
 * ==================================================================== */

/* Return values. */
%typemap(out) ubpy_rc {
	if ($1 < 0) {
		ubpy__raise($1);
		SWIG_fail;
	}
	$result = SWIG_Py_Void();
}
%typemap(out) ubpy_n {
	if ($1 < 0) {
		ubpy__raise($1);
		SWIG_fail;
	}
	$result = PyLong_FromLongLong($1);
}

/* "0 or -errno" -> None or raise. */
%typemap(out) int ub_buf_release, int ub_buf_set_len, int ub_conn_send_buf,
	int ub_conn_pause_recv, int ub_conn_resume_recv, int ub_conn_pipe,
	int ub_conn_shutdown, int ub_conn_close, int ub_conn_abort,
	int ub_conn_set_water, int ub_listener_close,
	int ub_conn_set_recv_budget, int ub_listener_set_max_conns,
	int ub_conn_set_idle_timeout {
	if ($1 < 0) {
		ubpy__raise($1);
		SWIG_fail;
	}
	$result = SWIG_Py_Void();
}
/* ">= 0 or -errno" -> int or raise. */
%typemap(out) int ub_loop_pending, int ub_loop_best_mode, int ub_loop_eventfd,
	int ub_mode_from_name, int ub_buf_state, int ub_conn_mode,
	int ub_sock_name, int ub_buf_addr_format {
	if ($1 < 0) {
		ubpy__raise($1);
		SWIG_fail;
	}
	$result = PyLong_FromLong($1);
}
%typemap(out) ssize_t ub_conn_send {
	if ($1 < 0) {
		ubpy__raise($1);
		SWIG_fail;
	}
	$result = PyLong_FromSsize_t($1);
}
%typemap(out) int ub_conn_is_closing, int ub_conn_recv_throttled,
	int ub_buf_truncated {
	$result = PyBool_FromLong($1 > 0);
}
/* Addresses, as ints. */
%typemap(out) void * {
	$result = PyLong_FromVoidPtr($1);
}

/* Integer arguments: TypeError for non-integers, ValueError out of range. */
%typemap(in, noblock=1) int (long long v) {
	if (ubpy__ll_arg($input, INT_MIN, INT_MAX, "$1_name", &v) < 0)
		SWIG_fail;
	$1 = (int)v;
}
%typemap(in, noblock=1) unsigned int (long long v) {
	if (ubpy__ll_arg($input, 0, UINT_MAX, "$1_name", &v) < 0)
		SWIG_fail;
	$1 = (unsigned int)v;
}
%typemap(in, noblock=1) size_t {
	if (ubpy__size_arg($input, "$1_name", &$1) < 0)
		SWIG_fail;
}

/* Core objects from their handles. */
%typemap(in, noblock=1) ub_loop *, const ub_loop * {
	{
		ubpy_loop *h_ = ubpy__unwrap($input, SWIGTYPE_p_ubpy_loop, "Loop");
		if (!h_ || !($1 = ubpy__loop_get(h_)))
			SWIG_fail;
	}
}
%typemap(in, noblock=1) ub_pool *, const ub_pool * {
	{
		ubpy_pool *h_ = ubpy__unwrap($input, SWIGTYPE_p_ubpy_pool, "Pool");
		if (!h_ || !($1 = ubpy__pool_get(h_)))
			SWIG_fail;
	}
}
%typemap(in, noblock=1) ub_conn *, const ub_conn * {
	{
		ubpy_conn *h_ = ubpy__unwrap($input, SWIGTYPE_p_ubpy_conn,
					    "Connection");
		if (!h_ || !($1 = ubpy__conn_get(h_)))
			SWIG_fail;
	}
}
/* ub_conn_pipe(src, None) stops forwarding. */
%typemap(in, noblock=1) ub_conn *dst {
	if ($input == Py_None) {
		$1 = NULL;
	} else {
		ubpy_conn *h_ = ubpy__unwrap($input, SWIGTYPE_p_ubpy_conn,
					    "Connection");
		if (!h_ || !($1 = ubpy__conn_get(h_)))
			SWIG_fail;
	}
}
%typemap(in, noblock=1) ub_listener *, const ub_listener * {
	{
		ubpy_listener *h_ = ubpy__unwrap($input, SWIGTYPE_p_ubpy_listener,
						"Listener");
		if (!h_ || !($1 = ubpy__listener_get(h_)))
			SWIG_fail;
	}
}
/* Mutators (release, set_len, send_buf) refuse an exported buffer. */
%typemap(in, noblock=1) ub_buf * {
	{
		ubpy_buf *h_ = ubpy__unwrap($input, SWIGTYPE_p_ubpy_buf, "Buffer");
		if (!h_ || !($1 = ubpy__buf_get(h_, 1)))
			SWIG_fail;
	}
}
%typemap(in, noblock=1) const ub_buf * {
	{
		ubpy_buf *h_ = ubpy__unwrap($input, SWIGTYPE_p_ubpy_buf, "Buffer");
		if (!h_ || !($1 = ubpy__buf_get(h_, 0)))
			SWIG_fail;
	}
}

/* Core objects the core returns: their (unique) handles. */
%typemap(out, noblock=1) ub_loop * {
	{
		ubpy_loop *L_ = $1 ? ubpy__loop_find($1) : NULL;
		$result = L_ ? ubpy__loop_objref(L_) : SWIG_Py_Void();
	}
}
%typemap(out, noblock=1) ub_pool * {
	if (!$1) {
		$result = SWIG_Py_Void();
	} else {
		ubpy_loop *L_ = ubpy__loop_find(ub_pool_loop($1));
		$result = L_ ? ubpy__pool_obj(L_, $1) : SWIG_Py_Void();
		if (!$result)
			SWIG_fail;
	}
}
%typemap(out, noblock=1) ub_conn * {
	if (!$1) {
		$result = SWIG_Py_Void();
	} else if (!($result = ubpy__obj_obj(ubpy__loop_find(ub_conn_loop($1)),
					      $1, 1))) {
		SWIG_fail;
	}
}
/* ub_listen and ub_listener_adopt both take the loop as their first argument. */
%typemap(out, noblock=1) ub_listener * {
	if (!$1) {
		$result = SWIG_Py_Void();
	} else if (!($result = ubpy__obj_obj(ubpy__loop_find(arg1), $1, 0))) {
		SWIG_fail;
	}
}
%typemap(out, noblock=1) ub_buf * {
	if (!$1) {
		$result = SWIG_Py_Void();
	} else {
		ubpy_loop *L_ = ubpy__loop_find(ub_pool_loop(ub_buf_pool($1)));
		if (!L_ || !($result = ubpy__buf_obj(L_, $1)))
			SWIG_fail;
	}
}

/* Constructors report through int *err. */
%typemap(in, numinputs=0, noblock=1) int *err (int err_ = 0) {
	$1 = &err_;
}
%typemap(argout, noblock=1) int *err {
	if (*$1 < 0) {
		Py_XDECREF($result);
		$result = NULL;
		ubpy__raise(*$1);
		SWIG_fail;
	}
}

/* Data to copy: the Py_buffer is held until the core has read it (unlike
 * Lib/python/pybuffer.i, which releases it before the call). */
%typemap(in, noblock=1) (const void *data, size_t len)
	(Py_buffer view_, int have_view_ = 0) {
	if (PyObject_GetBuffer($input, &view_, PyBUF_SIMPLE) < 0)
		SWIG_fail;
	have_view_ = 1;
	$1 = view_.buf;
	$2 = (size_t)view_.len;
}
/* Also runs when an earlier argument failed: only release what we got. */
%typemap(freearg, noblock=1) (const void *data, size_t len) {
	if (have_view_$argnum)
		PyBuffer_Release(&view_$argnum);
}

/* Addresses: "HOST:PORT", "[V6]:PORT", "unix:PATH" or (host, port). */
%typemap(in, noblock=1) (const struct sockaddr *addr, socklen_t addrlen)
	(struct sockaddr_storage ss_, socklen_t sslen_) {
	if (ubpy__addr_arg($input, &ss_, &sslen_) < 0)
		SWIG_fail;
	$1 = (struct sockaddr *)&ss_;
	$2 = sslen_;
}

/* ub_addr_parse(s) -> s normalized ("localhost:80" -> "127.0.0.1:80"). */
%typemap(in, numinputs=0, noblock=1)
	(struct sockaddr_storage *ss, socklen_t *len)
	(struct sockaddr_storage pss_, socklen_t plen_ = sizeof(struct sockaddr_storage)) {
	$1 = &pss_;
	$2 = &plen_;
}
%typemap(out) int ub_addr_parse {
	if ($1 < 0) {
		ubpy__raise($1);
		SWIG_fail;
	}
	$result = SWIG_Py_Void();
}
%typemap(argout, noblock=1) (struct sockaddr_storage *ss, socklen_t *len) {
	{
		char text_[300];
		int n_ = ub_addr_format((struct sockaddr *)$1, *$2, text_,
					sizeof(text_));
		Py_XDECREF($result);
		$result = n_ < 0 ? NULL : PyUnicode_FromString(text_);
		if (!$result) {
			if (n_ < 0)
				ubpy__raise(n_);
			SWIG_fail;
		}
	}
}

/* Connection options: a dict (keys as in ub_conn_opts) or None. */
%typemap(in, noblock=1) const ub_conn_opts * (ub_conn_opts opts_) {
	if ($input == Py_None) {
		$1 = NULL;
	} else {
		if (ubpy__conn_opts_dict($input, &opts_) < 0)
			SWIG_fail;
		$1 = &opts_;
	}
}

/* ub_sock_name(fd, peer), ub_buf_addr_format(buf) -> "HOST:PORT". */
%typemap(in, numinputs=0, noblock=1) (char *out, size_t outlen)
	(char name_[256]) {
	name_[0] = 0;
	$1 = name_;
	$2 = sizeof(name_);
}
%typemap(argout, noblock=1) (char *out, size_t outlen) {
	Py_XDECREF($result);
	$result = PyUnicode_FromString($1);
	if (!$result)
		SWIG_fail;
}

/* ub_loop_mode_check(loop, mode) -> None if usable, else the reason. */
%typemap(in, numinputs=0, noblock=1) const char **reason (const char *why_ = NULL) {
	$1 = ($1_ltype)&why_;
}
%typemap(out) int ub_loop_mode_check {
	if ($1 < 0 && $1 != -EOPNOTSUPP) {
		ubpy__raise($1);
		SWIG_fail;
	}
	$result = SWIG_Py_Void();
}
%typemap(argout, noblock=1) const char **reason {
	if (*$1) {
		Py_XDECREF($result);
		$result = PyUnicode_FromString(*$1);
		if (!$result)
			SWIG_fail;
	}
}

/* The core's option checks: None if valid, else the reason (as
 * ub_loop_mode_check).  ub_loop_opts_check takes a struct, which has no
 * Python form: Loop() raises its reason. */
%typemap(out) int ub_conn_opts_check, int ub_pool_check, int ub_water_check {
	(void)$1; /* a failure always comes with a reason */
	$result = SWIG_Py_Void();
}
%ignore ub_loop_opts_check;

/* Flat functions whose arguments the core checks: raise the check's reason
 * instead of a bare EINVAL (argN: the wrapper's converted arguments). */
%define UBPY_CHECK_FIRST(fn, check)
%exception fn {
	{
		const char *why_ = NULL;
		int r_ = check;

		if (r_ < 0) {
			ubpy__raise_why(r_, why_);
			SWIG_fail;
		}
	}
	$action
}
%enddef
UBPY_CHECK_FIRST(ub_conn_connect, ub_conn_opts_check(arg1, arg4, &why_))
UBPY_CHECK_FIRST(ub_conn_adopt, ub_conn_opts_check(arg1, arg3, &why_))
UBPY_CHECK_FIRST(ub_listen, ub_conn_opts_check(arg1, arg6, &why_))
UBPY_CHECK_FIRST(ub_listener_adopt, ub_conn_opts_check(arg1, arg3, &why_))
UBPY_CHECK_FIRST(ub_pool_new, ub_pool_check(arg2, arg3, arg4, &why_))
UBPY_CHECK_FIRST(ub_conn_set_water, ub_water_check(arg2, arg3, &why_))

/* Enum tags that share a name with a function: C keeps them apart, SWIG
 * does not.  The enums' constants are kept. */
%rename(ub_pool_flags_enum) ub_pool_flags;
%rename(ub_pool_flags) ub_pool_flags(const ub_pool *);
%rename(ub_buf_state_enum) ub_buf_state;
%rename(ub_buf_state) ub_buf_state(const ub_buf *);

%ignore ub_event;
%ignore ub_loop_opts;
%ignore ub_conn_opts;
%ignore ub_loop_new;
%ignore ub_loop_free;
%ignore ub_loop_wait;
%ignore ub_pool_free;
%ignore ub_pool_buf;
%ignore ub_conn_opts_init;
%ignore ub_conn_udata;
%ignore ub_conn_set_udata;
%ignore ub_listener_udata;
%ignore ub_listener_set_udata;
%ignore ub_addr_format;
/* Lifetime is the handles' own: each holds what it names (a flat release
 * could free it under the handle). */
%rename("$ignore", regextarget=1) "^ub_(conn|listener)_(hold|release|is_closed)$";
%ignore ub_listener_loop;
/* Datagram endpoints: the Datagram class (Loop.datagram(),
 * Loop.adopt_datagram()) covers every ub_dgram_* function; as flat
 * functions SWIG would pass raw pointers and option structs. */
%rename("$ignore", regextarget=1) "^ub_dgram";
%ignore ub_buf_addr;   /* raw sockaddr: Buffer.source formats it */

%include "python/uringbuf_classes.i"

/* The package calls this once at import, so that help() on the classes does
 * not list SWIG's internal slots (this, thisown, ...) before the first Loop
 * hides them. */
%feature("docstring") _hide_swig_api "Internal: hide SWIG's own slots from the classes.";
%inline %{
static PyObject *_hide_swig_api(void)
{
	if (ubpy__hide_swig_api() < 0)
		return NULL;
	Py_RETURN_NONE;
}
%}

/* The flat functions of core/uringbuf.h (parsed after this file): their
 * signature as docstring; core/uringbuf.h documents them. */
%feature("autodoc", "0");
