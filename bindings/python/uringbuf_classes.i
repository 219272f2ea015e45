/*
 * uringbuf_classes.i - the classes of the Python binding: Loop, Pool,
 * Connection, Listener and Buffer (handles over the core's objects; see
 * uringbuf_python.i for the rules they keep).
 *
 * Every method is a thin call of the core function of the same name, after
 * a check that the handle is alive.  Methods return None / an int, or
 * raise: OSError(errno) for the core's -errno, ClosedError for use after
 * close, TypeError / ValueError for bad arguments.
 */

%feature("kwargs");
/* The per-buffer hot path: one positional argument (METH_O, no keyword
 * parsing). */
%feature("kwargs", "0") ubpy_conn::_wsend;
%feature("kwargs", "0") ubpy_conn::_wsendv;

typedef int ubpy_rc;
typedef long long ubpy_n;

%nodefaultctor ubpy_pool;
%nodefaultctor ubpy_conn;
%nodefaultctor ubpy_listener;
%nodefaultctor ubpy_dgram;
%nodefaultctor ubpy_buf;

%rename(Loop) ubpy_loop;
%rename(Pool) ubpy_pool;
%rename(Connection) ubpy_conn;
%rename(Listener) ubpy_listener;
%rename(Datagram) ubpy_dgram;
%rename(Buffer) ubpy_buf;

%feature("python:bf_getbuffer", functype="getbufferproc") ubpy_buf "ubpy__buf_getbuffer";
%feature("python:bf_releasebuffer", functype="releasebufferproc") ubpy_buf "ubpy__buf_releasebuffer";
/* len() and bool() fill the slots directly: SWIG 4.1's slot closures
 * (SwigPyBuiltin_lenfunc_closure) dereference a NULL result, so a method
 * that raises would crash there. */
%feature("python:sq_length") ubpy_buf "ubpy__buf_len";
%feature("python:nb_nonzero") ubpy_buf "ubpy__buf_bool";
%feature("python:slot", "tp_repr", functype="reprfunc") ubpy_loop::__repr__;
%feature("python:slot", "tp_repr", functype="reprfunc") ubpy_pool::__repr__;
%feature("python:slot", "tp_repr", functype="reprfunc") ubpy_conn::__repr__;
%feature("python:slot", "tp_repr", functype="reprfunc") ubpy_listener::__repr__;
%feature("python:slot", "tp_repr", functype="reprfunc") ubpy_dgram::__repr__;
%feature("python:slot", "tp_repr", functype="reprfunc") ubpy_buf::__repr__;

/* The Loop object learns its own address (handles hand it out as .loop). */
%exception ubpy_loop::ubpy_loop {
	$action
	if (result)
		result->obj = self;
}
/* Setters cannot return an error: check for one. */
%exception ubpy_buf::length {
	$action
	if (PyErr_Occurred())
		SWIG_fail;
}
%exception ubpy_conn::idle_timeout {
	$action
	if (PyErr_Occurred())
		SWIG_fail;
}
%exception ubpy_conn::on_buffers {
	$action
	if (PyErr_Occurred())
		SWIG_fail;
}
%exception ubpy_conn::on_data {
	$action
	if (PyErr_Occurred())
		SWIG_fail;
}
%exception ubpy_conn::recv_budget {
	$action
	if (PyErr_Occurred())
		SWIG_fail;
}
%exception ubpy_dgram::recv_budget {
	$action
	if (PyErr_Occurred())
		SWIG_fail;
}
%exception ubpy_dgram::on_data {
	$action
	if (PyErr_Occurred())
		SWIG_fail;
}
%exception ubpy_dgram::on_datagram {
	$action
	if (PyErr_Occurred())
		SWIG_fail;
}
%exception ubpy_listener::max_connections {
	$action
	if (PyErr_Occurred())
		SWIG_fail;
}

/* ==================================================================== */

%feature("docstring") ubpy_loop
"Loop(entries=0, disable=0, pool_count=0, pool_size=0,
     pool_incremental=False)

One io_uring and its event queue (ub_loop).  Single-threaded: use it (and
its pools, connections and buffers) from the thread that created it; other
threads get RuntimeError.  entries: submission queue size (0: 256);
disable: uringbuf.FEAT_* bits to treat as unavailable; pool_count and
pool_size: buffers and bytes per buffer of the default pools (0: 1024 and
4096); pool_incremental (a bool): the default receive pool is incremental
(see pool()), where the kernel has FEAT_PBUF_INC (else it is made without:
recv_pool().incremental says which, feature_reason(FEAT_PBUF_INC) why).
Raises OSError if io_uring is unavailable.

close() frees everything (it aborts every connection); it refuses with
BufferError while a memoryview of any of its buffers exists.  Usable as a
context manager.  wait() returns events in batches.";

typedef struct ubpy_loop {} ubpy_loop;

%extend ubpy_loop {
	ubpy_loop(unsigned int entries = 0, unsigned int disable = 0,
		  unsigned int pool_count = 0, unsigned int pool_size = 0,
		  PyObject *pool_incremental = NULL)
	{
		const char *why = NULL;
		ub_loop_opts o;
		ubpy_loop *L;
		int err = 0, inc = 0;

		memset(&o, 0, sizeof(o));
		o.entries = entries;
		o.disable = disable;
		o.pool_count = pool_count;
		o.pool_size = pool_size;
		if (ubpy__flag_arg(pool_incremental, "pool_incremental",
				   &inc) < 0)
			return NULL;
		o.pool_flags = inc ? UB_POOL_INC : 0;
		if (ubpy__hide_swig_api() < 0 ||
		    ubpy__check(ub_loop_opts_check(&o, &why), &why) < 0)
			return NULL;
		L = calloc(1, sizeof(*L));
		if (!L) {
			PyErr_NoMemory();
			return NULL;
		}
		L->pools = PyDict_New();
		L->live = PySet_New(NULL);
		if (!L->pools || !L->live)
			goto fail;
		L->loop = ub_loop_new(&o, &err);
		if (!L->loop) {
			ubpy__raise(err);
			goto fail;
		}
		L->refs = 1;
		L->owner = PyThread_get_thread_ident();
		L->next = ubpy__loops;
		ubpy__loops = L;
		return L;
	fail:
		Py_XDECREF(L->pools);
		Py_XDECREF(L->live);
		free(L);
		return NULL;
	}

	~ubpy_loop()
	{
		$self->obj = NULL;
		if ($self->loop) {
			if ($self->exports > 0 || ubpy__foreign($self))
				/* Freed by the last view released in the
				 * owner thread; dropped by another thread,
				 * it is leaked (the ring is that thread's). */
				$self->orphan = 1;
			else
				ubpy__loop_shut($self);
		}
		ubpy__loop_unref($self);
	}

	%feature("docstring") wait
	"wait(max=256, min=1, timeout=-1) -> list[Event]

Submit pending work and return up to max events, blocking (with the GIL
released) until at least min are ready or timeout milliseconds pass (-1: no
timeout).  A signal ends the wait early: Python signal handlers run, and an
exception they raise (KeyboardInterrupt) propagates; otherwise [] is
returned.  Connections and listeners whose CLOSED event was in the previous
batch are gone from here on.";
	PyObject *wait(int max = 256, int min = 1, int timeout = -1)
	{
		return ubpy__loop_wait($self, max, min, timeout);
	}

	%feature("docstring") dispatch
	"dispatch(max, min, timeout, slow, report) -> int

wait(max, min, timeout), then deliver the batch in order without building
a list: an EV_DATA event of a Connection whose on_data is set calls
conn.on_data(buf); every other event calls slow(event).  An Exception
raised by on_data is passed to report(exc, conn.udata) and the batch goes
on.  Anything else that raises (KeyboardInterrupt, or an exception out of
slow or report) propagates, and the events after it are delivered first by
the next dispatch() or wait() (leftover counts them).  Returns the number
of events delivered.  uringbuf.EventLoop runs on it.";
	PyObject *dispatch(int max, int min, int timeout, PyObject *slow,
			   PyObject *report)
	{
		return ubpy__loop_dispatch($self, max, min, timeout, slow,
					   report);
	}

	%feature("docstring") close
	"close() -> None

Abort every connection and listener, reap what the kernel holds and free
the loop, its pools and its buffers.  Every handle of this loop raises
ClosedError afterwards.  BufferError while a buffer view is exported.
Idempotent.";
	PyObject *close()
	{
		if (!$self->loop)
			Py_RETURN_NONE;
		if (ubpy__foreign($self))
			return UBPY_NULL(ubpy__busy());
		if ($self->exports > 0) {
			PyErr_Format(PyExc_BufferError,
				     "cannot close the loop: %zd buffer "
				     "view(s) are still exported",
				     $self->exports);
			return NULL;
		}
		return ubpy__none_or_raise(ubpy__loop_shut($self));
	}

	%feature("docstring") recv_pool
	"recv_pool() -> Pool: the default receive pool (created on first use).";
	PyObject *recv_pool()
	{
		ub_loop *loop = ubpy__loop_get($self);
		ub_pool *p;
		int err = 0;

		if (!loop)
			return NULL;
		p = ub_loop_recv_pool(loop, &err);
		if (!p)
			return ubpy__none_or_raise(err);
		return ubpy__pool_obj($self, p);
	}

	%feature("docstring") send_pool
	"send_pool() -> Pool: the default send pool, which Connection.send()
copies into (created on first use).";
	PyObject *send_pool()
	{
		ub_loop *loop = ubpy__loop_get($self);
		ub_pool *p;
		int err = 0;

		if (!loop)
			return NULL;
		p = ub_loop_send_pool(loop, &err);
		if (!p)
			return ubpy__none_or_raise(err);
		return ubpy__pool_obj($self, p);
	}

	%feature("docstring") pool
	"pool(count, size, recv=False, incremental=False) -> Pool

A new pool of count buffers (1..32768) of size bytes (1..1 GiB) in one
mapping: a receive pool (recv=True) that connections receive into, or a
send pool to acquire() buffers from.  recv and incremental are bools
(TypeError otherwise: a string such as \"send\" is not taken for its
truth).

incremental=True (a bool; receive pools only) makes an incremental receive
pool (UB_POOL_INC): the kernel fills each buffer piece by piece, so
buffers can be large without a small message taking a whole one.  Each
EV_DATA buffer is then a slice: its own Buffer over the bytes of one
receive, capacity == length, index naming the pool buffer it lies in
(several slices may share one).  A pool buffer goes back to the kernel
once every slice of it is back (Pool.slices counts those out).  Where the
kernel lacks FEAT_PBUF_INC the pool is made without it: Pool.incremental
says which, Loop.feature_reason(FEAT_PBUF_INC) why.  Datagram endpoints
refuse an incremental pool.";
	PyObject *pool(unsigned int count, unsigned int size,
		       PyObject *recv = NULL, PyObject *incremental = NULL)
	{
		ub_loop *loop = ubpy__loop_get($self);
		const char *why = NULL;
		int r = 0, inc = 0, err = 0;
		unsigned flags;
		ub_pool *p;

		/* Flags only once no exception is set (the loop check). */
		if (!loop || ubpy__flag_arg(recv, "recv", &r) < 0 ||
		    ubpy__flag_arg(incremental, "incremental", &inc) < 0)
			return NULL;
		flags = (r ? UB_POOL_RECV : 0) | (inc ? UB_POOL_INC : 0);
		if (ubpy__check(ub_pool_check(count, size, flags, &why),
				&why) < 0)
			return NULL;
		p = ub_pool_new(loop, count, size, flags, &err);
		if (!p)
			return ubpy__none_or_raise(err);
		return ubpy__pool_obj($self, p);
	}

	%feature("docstring") listen
	"listen(addr, backlog=0, reuseport=False, *, recv_pool=None,
       send_pool=None, mode=None, high_water=None, low_water=None,
       ring_entries=None, flags=None, recv_budget=None, idle_timeout=None,
       connect_timeout=None, close_timeout=None,
       max_connections=None) -> Listener

Bind and listen on addr (\"HOST:PORT\" with a numeric host, \"[V6]:PORT\",
\"unix:PATH\" or a (host, port) tuple; port 0 picks a free port) and accept
with multishot accept.  Accepted connections arrive as EV_ACCEPT events and
use the connection options given here (see connect()).  max_connections:
accept at most this many connections of this listener at once (None: no
limit); at the limit accepting pauses (new connections wait in the
kernel's backlog) until one of them is EV_CLOSED.";
	PyObject *listen(PyObject *addr, int backlog = 0,
			 PyObject *reuseport = NULL, PyObject *recv_pool = NULL,
			 PyObject *send_pool = NULL, PyObject *mode = NULL,
			 PyObject *high_water = NULL,
			 PyObject *low_water = NULL,
			 PyObject *ring_entries = NULL, PyObject *flags = NULL,
			 PyObject *recv_budget = NULL,
			 PyObject *idle_timeout = NULL,
			 PyObject *connect_timeout = NULL,
			 PyObject *close_timeout = NULL,
			 PyObject *max_connections = NULL)
	{
		ub_loop *loop = ubpy__loop_get($self);
		struct sockaddr_storage ss;
		socklen_t len;
		ub_conn_opts o;
		ub_listener *l;
		unsigned maxc;
		int rp = 0, err = 0;

		if (!loop || (reuseport && (rp = PyObject_IsTrue(reuseport)) < 0) ||
		    ubpy__addr_arg(addr, &ss, &len) < 0 ||
		    ubpy__conn_opts(&o, $self, recv_pool, send_pool, mode,
				    high_water, low_water, ring_entries,
				    flags, recv_budget, idle_timeout,
				    connect_timeout, close_timeout) < 0 ||
		    ubpy__max_conns_arg(max_connections, &maxc) < 0)
			return NULL;
		l = ub_listen(loop, (struct sockaddr *)&ss, len, backlog, rp,
			      &o, &err);
		if (!l)
			return ubpy__none_or_raise(err);
		return ubpy__listener_new($self, l, maxc);
	}

	%feature("docstring") connect
	"connect(addr, *, recv_pool=None, send_pool=None, mode=None,
        high_water=None, low_water=None, ring_entries=None,
        flags=None, recv_budget=None, idle_timeout=None,
        connect_timeout=None, close_timeout=None) -> Connection

Connect to addr (as for listen()).  EV_CONNECT reports the outcome (res 0
or -errno; a failure is followed by EV_CLOSED).  Data sent before then goes
out once connected.  Options (None: the default): recv_pool (a receive
Pool of this loop), send_pool (a send Pool for send() copies), mode
(MODE_* or 'bundle', 'ring', 'serial', 'auto'), high_water and low_water
(send queue marks in bytes; low defaults to high/4), ring_entries (send
ring size, a power of 2), flags (CONN_* bits).

Isolation (see docs/python.md, \"Budgets, fairness and deadlines\"):
recv_budget: bytes of its receive pool the connection may hold (default
256 KiB; counted in whole buffers): at the budget its receive stops and
the peer is pushed back by TCP alone.  Deadlines, in seconds (int or
float, rounded up to milliseconds; math.inf: never): idle_timeout
(nothing received or sent for this long; default none), connect_timeout
(default none) and close_timeout (a graceful close() that cannot finish in time
becomes an abort; default 30 s).  A deadline that passes ends the
connection with EV_ERROR -ETIMEDOUT (EV_CONNECT -ETIMEDOUT for the
connect deadline), then EV_CLOSED.";
	PyObject *connect(PyObject *addr, PyObject *recv_pool = NULL,
			  PyObject *send_pool = NULL, PyObject *mode = NULL,
			  PyObject *high_water = NULL,
			  PyObject *low_water = NULL,
			  PyObject *ring_entries = NULL, PyObject *flags = NULL,
			  PyObject *recv_budget = NULL,
			  PyObject *idle_timeout = NULL,
			  PyObject *connect_timeout = NULL,
			  PyObject *close_timeout = NULL)
	{
		ub_loop *loop = ubpy__loop_get($self);
		struct sockaddr_storage ss;
		socklen_t len;
		ub_conn_opts o;
		ub_conn *c;
		int err = 0;

		if (!loop || ubpy__addr_arg(addr, &ss, &len) < 0 ||
		    ubpy__conn_opts(&o, $self, recv_pool, send_pool, mode,
				    high_water, low_water, ring_entries,
				    flags, recv_budget, idle_timeout,
				    connect_timeout, close_timeout) < 0)
			return NULL;
		c = ub_conn_connect(loop, (struct sockaddr *)&ss, len, &o,
				    &err);
		if (!c)
			return ubpy__none_or_raise(err);
		return ubpy__obj_obj($self, c, UBPY_CONN);
	}

	%feature("docstring") adopt
	"adopt(sock, *, <connection options as for connect()>) -> Connection

Take over a connected stream socket (a socket object, which is detached on
success, or an int fd).  The connection owns the descriptor from then on; on
failure the caller keeps it.  Receiving starts at once unless flags has
CONN_NO_RECV.";
	PyObject *adopt(PyObject *sock, PyObject *recv_pool = NULL,
			PyObject *send_pool = NULL, PyObject *mode = NULL,
			PyObject *high_water = NULL, PyObject *low_water = NULL,
			PyObject *ring_entries = NULL, PyObject *flags = NULL,
			PyObject *recv_budget = NULL,
			PyObject *idle_timeout = NULL,
			PyObject *connect_timeout = NULL,
			PyObject *close_timeout = NULL)
	{
		ub_loop *loop = ubpy__loop_get($self);
		ub_conn_opts o;
		ub_conn *c;
		int fd, err = 0;

		if (!loop || ubpy__fd_arg(sock, &fd) < 0 ||
		    ubpy__conn_opts(&o, $self, recv_pool, send_pool, mode,
				    high_water, low_water, ring_entries,
				    flags, recv_budget, idle_timeout,
				    connect_timeout, close_timeout) < 0)
			return NULL;
		c = ub_conn_adopt(loop, fd, &o, &err);
		if (!c)
			return ubpy__none_or_raise(err);
		ubpy__detach(sock);
		return ubpy__obj_obj($self, c, UBPY_CONN);
	}

	%feature("docstring") adopt_listener
	"adopt_listener(sock, *, <connection options>, max_connections=None)
       -> Listener

Accept on an existing listening socket (a socket object, detached on
success, or an int fd), which the listener then owns.  Options as for
listen().";
	PyObject *adopt_listener(PyObject *sock, PyObject *recv_pool = NULL,
				 PyObject *send_pool = NULL,
				 PyObject *mode = NULL,
				 PyObject *high_water = NULL,
				 PyObject *low_water = NULL,
				 PyObject *ring_entries = NULL,
				 PyObject *flags = NULL,
				 PyObject *recv_budget = NULL,
				 PyObject *idle_timeout = NULL,
				 PyObject *connect_timeout = NULL,
				 PyObject *close_timeout = NULL,
				 PyObject *max_connections = NULL)
	{
		ub_loop *loop = ubpy__loop_get($self);
		ub_conn_opts o;
		ub_listener *l;
		unsigned maxc;
		int fd, err = 0;

		if (!loop || ubpy__fd_arg(sock, &fd) < 0 ||
		    ubpy__conn_opts(&o, $self, recv_pool, send_pool, mode,
				    high_water, low_water, ring_entries,
				    flags, recv_budget, idle_timeout,
				    connect_timeout, close_timeout) < 0 ||
		    ubpy__max_conns_arg(max_connections, &maxc) < 0)
			return NULL;
		l = ub_listener_adopt(loop, fd, &o, &err);
		if (!l)
			return ubpy__none_or_raise(err);
		ubpy__detach(sock);
		return ubpy__listener_new($self, l, maxc);
	}

	%feature("docstring") datagram
	"datagram(addr, *, recv_pool=None, send_pool=None, queue_max=None,
         high_water=None, low_water=None, recv_budget=None,
         reuseport=False, no_recv=False) -> Datagram

Open a datagram socket bound to addr (\"HOST:PORT\", \"[V6]:PORT\", a
(host, port) tuple: UDP, port 0 picks a free port; \"unix:PATH\" or
\"unix:@NAME\": Unix datagram) and receive with multishot recvmsg: every
datagram is one EV_DATA event (Event.dgram this endpoint, Event.buf the
payload, Buffer.source its sender, Event.res its full length: more than
len(buf) when it was truncated, see Buffer.truncated).  Options (None:
the default): recv_pool (a receive Pool of this loop whose buffers hold
128 header bytes plus the largest datagram expected, a multiple of 8;
default: the loop's), send_pool (for send() copies), queue_max (datagrams
queued at most, 1..32768; default 256), high_water / low_water (queued
bytes; default 1 MiB / high/4), recv_budget (bytes of the receive pool the
endpoint may hold; see Connection.recv_budget), reuseport (SO_REUSEPORT),
no_recv (do not start receiving: resume_recv() does).  OSError
EOPNOTSUPP before Linux 6.0 (no multishot recvmsg).";
	PyObject *datagram(PyObject *addr, PyObject *recv_pool = NULL,
			   PyObject *send_pool = NULL,
			   PyObject *queue_max = NULL,
			   PyObject *high_water = NULL,
			   PyObject *low_water = NULL,
			   PyObject *recv_budget = NULL,
			   PyObject *reuseport = NULL, PyObject *no_recv = NULL)
	{
		ub_loop *loop = ubpy__loop_get($self);
		struct sockaddr_storage ss;
		socklen_t len;
		ub_dgram_opts o;
		ub_dgram *d;
		int err = 0;

		if (!loop || ubpy__addr_arg(addr, &ss, &len) < 0 ||
		    ubpy__dgram_opts(&o, $self, recv_pool, send_pool,
				     queue_max, high_water, low_water,
				     recv_budget, reuseport, no_recv) < 0)
			return NULL;
		d = ub_dgram_open(loop, (struct sockaddr *)&ss, len, &o, &err);
		if (!d)
			return ubpy__none_or_raise(err);
		return ubpy__obj_obj($self, d, UBPY_DGRAM);
	}

	%feature("docstring") adopt_datagram
	"adopt_datagram(sock, *, <options as for datagram() but reuseport>)
       -> Datagram

Take over a datagram socket (UDP or Unix; bound or not, connected or not:
a socket object, detached on success, or an int fd), which the endpoint
then owns; on failure the caller keeps it.";
	PyObject *adopt_datagram(PyObject *sock, PyObject *recv_pool = NULL,
				 PyObject *send_pool = NULL,
				 PyObject *queue_max = NULL,
				 PyObject *high_water = NULL,
				 PyObject *low_water = NULL,
				 PyObject *recv_budget = NULL,
				 PyObject *no_recv = NULL)
	{
		ub_loop *loop = ubpy__loop_get($self);
		ub_dgram_opts o;
		ub_dgram *d;
		int fd, err = 0;

		if (!loop || ubpy__fd_arg(sock, &fd) < 0 ||
		    ubpy__dgram_opts(&o, $self, recv_pool, send_pool,
				     queue_max, high_water, low_water,
				     recv_budget, NULL, no_recv) < 0)
			return NULL;
		d = ub_dgram_adopt(loop, fd, &o, &err);
		if (!d)
			return ubpy__none_or_raise(err);
		ubpy__detach(sock);
		return ubpy__obj_obj($self, d, UBPY_DGRAM);
	}

	%feature("docstring") eventfd
	"eventfd() -> int: an eventfd that becomes readable when this loop has
completions to process, for driving it from another event loop (what
uringbuf.asyncio does): watch it for reading, and call wait(min=0,
timeout=0) whenever it is readable and after queueing work (sends and
closes reach the kernel only in wait()).  wait() clears it and sets it
again when it leaves work behind, so a wakeup may find nothing.  Created on
the first call (the same fd afterwards); the loop owns and closes it.  The
ring's own fd (Loop.fd) is not woken by completions on a DEFER_TASKRUN ring,
hence this.";
	PyObject *eventfd()
	{
		ub_loop *loop = ubpy__loop_get($self);
		int fd;

		if (!loop)
			return NULL;
		fd = ub_loop_eventfd(loop);
		if (fd < 0)
			return UBPY_NULL(ubpy__raise(fd));
		return PyLong_FromLong(fd);
	}

	%feature("docstring") feature_reason
	"feature_reason(feature) -> str | None: why a FEAT_* bit is unavailable
on this loop, or None if it is available.";
	PyObject *feature_reason(unsigned int feature)
	{
		ub_loop *loop = ubpy__loop_get($self);
		const char *why;

		if (!loop)
			return NULL;
		why = ub_loop_feature_reason(loop, feature);
		if (!why)
			Py_RETURN_NONE;
		return PyUnicode_FromString(why);
	}

	%feature("docstring") mode_check
	"mode_check(mode) -> str | None: None if the send mode (MODE_* or its
name) can be used on this loop, else the reason it cannot.";
	PyObject *mode_check(PyObject *mode)
	{
		ub_loop *loop = ubpy__loop_get($self);
		const char *why = NULL;
		int m;

		if (!loop || ubpy__mode_arg(mode, &m) < 0)
			return NULL;
		if (ub_loop_mode_check(loop, m, &why) == 0 || !why)
			Py_RETURN_NONE;
		return PyUnicode_FromString(why);
	}

	PyObject *__enter__()
	{
		if (!ubpy__loop_get($self))
			return NULL;
		return ubpy__loop_objref($self);
	}

	PyObject *__exit__(PyObject *type = NULL, PyObject *value = NULL,
			   PyObject *tb = NULL)
	{
		PyObject *r;

		(void)type, (void)value, (void)tb;
		if (!$self->loop)
			Py_RETURN_NONE;
		if (ubpy__foreign($self))
			return UBPY_NULL(ubpy__busy());
		if ($self->exports > 0) {
			PyErr_SetString(PyExc_BufferError,
					"cannot close the loop: buffer views "
					"are still exported");
			return NULL;
		}
		r = ubpy__none_or_raise(ubpy__loop_shut($self));
		if (!r)
			return NULL;
		Py_DECREF(r);
		Py_RETURN_FALSE;
	}

	PyObject *__repr__()
	{
		return ubpy__repr_state("Loop", $self,
					$self->loop ? "open" : "closed");
	}

	%immutable;
	%feature("docstring") closed "True once close() ran.";
	PyObject *closed;
	%feature("docstring") fd "The ring's file descriptor (not a readiness signal on a DEFER_TASKRUN ring: see eventfd()).";
	PyObject *fd;
	%feature("docstring") features "FEAT_* bits this loop can use.";
	PyObject *features;
	%feature("docstring") best_mode "The send mode MODE_AUTO resolves to here.";
	PyObject *best_mode;
	%feature("docstring") pending "Events queued but not yet returned by wait().";
	PyObject *pending;
	%feature("docstring") leftover "Events of an interrupted dispatch() not delivered yet.";
	PyObject *leftover;
	%feature("docstring") exports "Buffer views currently exported (close() refuses while > 0).";
	PyObject *exports;
	%feature("docstring") connections "The live Connection objects (CLOSED not yet returned).";
	PyObject *connections;
	%feature("docstring") datagrams "The live Datagram endpoints (CLOSED not yet returned).";
	PyObject *datagrams;
	%feature("docstring") pools "The Pool objects of this loop.";
	PyObject *pools;
	%mutable;
}

/* ==================================================================== */

%feature("docstring") ubpy_pool
"A pool of equal-sized buffers in one page-aligned mapping (ub_pool).

Get one from Loop.pool(), recv_pool() or send_pool().  base and nbytes
describe the mapping; every Buffer's memory lies inside it.  count_state()
tells where the buffers are (BUF_FREE, BUF_KERNEL, BUF_APP, BUF_QUEUED).";

typedef struct ubpy_pool {} ubpy_pool;

%extend ubpy_pool {
	~ubpy_pool()
	{
		ubpy__loop_unref($self->L);
		free($self);
	}

	%feature("docstring") acquire
	"acquire() -> Buffer: a free buffer of a send pool, length 0, writable
(memoryview(buf) after setting buf.length, or buf.fill(data)).  OSError
ENOBUFS when none is free; InvalidArgument for a receive pool.";
	PyObject *acquire()
	{
		ub_pool *p = ubpy__pool_get($self);
		ub_buf *b;
		int err = 0;

		if (!p)
			return NULL;
		b = ub_pool_acquire(p, &err);
		if (!b)
			return ubpy__none_or_raise(err);
		return ubpy__buf_obj($self->L, b);
	}

	%feature("docstring") free
	"free() -> None: free the pool.  OSError EBUSY while any of its buffers
is held or queued, or a connection or listener uses it.";
	PyObject *free()
	{
		ub_pool *p = ubpy__pool_get($self);
		ubpy_loop *L = $self->L;
		PyObject *key;
		int r;

		if (!p)
			return NULL;
		key = PyLong_FromVoidPtr(p);
		if (!key)
			return NULL;
		r = ub_pool_free(p);
		if (r < 0) {
			Py_DECREF(key);
			return ubpy__none_or_raise(r);
		}
		$self->pool = NULL;
		if (L->last_pool == p)
			L->last_pool = NULL;
		if (PyDict_DelItem(L->pools, key) < 0)
			PyErr_Clear();
		Py_DECREF(key);
		Py_RETURN_NONE;
	}

	%feature("docstring") count_state
	"count_state(state) -> int: buffers currently in state (BUF_*).";
	PyObject *count_state(int state)
	{
		ub_pool *p = ubpy__pool_get($self);

		if (!p)
			return NULL;
		if (state < 0 || state >= UB_BUF_NSTATES) {
			PyErr_SetString(PyExc_ValueError,
					"state must be one of BUF_FREE, "
					"BUF_KERNEL, BUF_APP, BUF_QUEUED");
			return NULL;
		}
		return PyLong_FromUnsignedLong(ub_pool_count_state(p, state));
	}

	PyObject *__repr__()
	{
		char s[96];

		if (!$self->pool)
			return ubpy__repr_state("Pool", $self, "freed");
		snprintf(s, sizeof(s), "%s%s %ux%u",
			 ub_pool_flags($self->pool) & UB_POOL_RECV ? "recv"
								   : "send",
			 ub_pool_flags($self->pool) & UB_POOL_INC ? " inc" : "",
			 ub_pool_count($self->pool),
			 ub_pool_buf_size($self->pool));
		return ubpy__repr_state("Pool", $self, s);
	}

	%immutable;
	%feature("docstring") count "Number of buffers.";
	PyObject *count;
	%feature("docstring") buf_size "Bytes per buffer.";
	PyObject *buf_size;
	%feature("docstring") recv "True for a receive pool.";
	PyObject *recv;
	%feature("docstring") incremental "True for an incremental receive pool (UB_POOL_INC in ub_pool_flags()): asked for with Loop.pool(..., incremental=True) or Loop(pool_incremental=True), and the kernel has FEAT_PBUF_INC.  Its received buffers are slices.";
	PyObject *incremental;
	%feature("docstring") slices "Slices of an incremental pool out of it now (held by you, or queued for sending); 0 for any other pool (ub_pool_slices()).";
	PyObject *slices;
	%feature("docstring") base "Address of the mapping (an int).";
	PyObject *base;
	%feature("docstring") nbytes "Bytes of buffers in the mapping (count * buf_size).";
	PyObject *nbytes;
	%feature("docstring") reserve "A receive pool's reserve, in buffers (a quarter of the pool; 0 for a send pool).  While more than one connection uses the pool, a connection may hold at most half of the free buffers above the reserve, and one that holds nothing may always take one, from the reserve if need be.";
	PyObject *reserve;
	%feature("docstring") loop "The pool's Loop.";
	PyObject *loop;
	%feature("docstring") closed "True once freed (or its loop closed).";
	PyObject *closed;
	%mutable;
}

/* ==================================================================== */

%feature("docstring") ubpy_conn
"One stream socket (ub_conn): multishot receive into a pool and an ordered
send queue.

From Loop.connect(), Loop.adopt() or an EV_ACCEPT event.  The object stays
the same for every event of the connection and stays alive until its
EV_CLOSED event; after the next wait() it raises ClosedError.  udata is
yours (the event carries it as Event.udata).";

typedef struct ubpy_conn {} ubpy_conn;

%extend ubpy_conn {
	~ubpy_conn()
	{
		ubpy__obj_dealloc(&$self->o);
	}

	%feature("docstring") send
	"send(data) -> int

Queue data.  A Buffer is forwarded without copying (see send_buf()) and
the number of bytes it holds is returned.  Anything else bytes-like is
copied into send-pool buffers: the bytes accepted are returned, maybe fewer
than len(data), like write(2).  BlockingIOError (EAGAIN) when the queue is
above its high water mark (EV_WRITABLE follows; never after
set_soft_water(True), which takes it all); BrokenPipeError once
closing.";
	PyObject *send(PyObject *data)
	{
		ub_conn *c = ubpy__conn_get($self);
		Py_ssize_t want;
		long long n;

		if (!c)
			return NULL;
		n = ubpy__conn_send_obj($self, c, data, &want);
		if (n < 0)
			return ubpy__none_or_raise(n);
		return PyLong_FromLongLong(n);
	}

	%feature("docstring") _wsend
	"_wsend(data) -> int

send(data) for uringbuf.Transport.write(): returns 2 * (bytes accepted),
plus 1 if the queue is now above its high water mark, so that the
transport learns both in one call.";
	PyObject *_wsend(PyObject *data)
	{
		ub_conn *c = ubpy__conn_get($self);
		Py_ssize_t want;
		long long n;

		if (!c)
			return NULL;
		n = ubpy__conn_send_obj($self, c, data, &want);
		if (n < 0)
			return ubpy__none_or_raise(n);
		return PyLong_FromLongLong(2 * n + (ub_conn_queued_bytes(c) >
						    ub_conn_high_water(c)));
	}

	%feature("docstring") _wsendv
	"_wsendv(items) -> (done, partial, above)

_wsend() of each item of a list or tuple in turn, in one call, for
uringbuf.Transport.writelines(): stops at the first item that is not
queued whole: refused (above the high water mark), only partly copied, or
failing (the transport then write()s it, which raises the error or does
what write() does for it).  done: items queued whole; partial: bytes of
item done that were queued (a copy cut short); above: the queue is now
above its high water mark.";
	PyObject *_wsendv(PyObject *items)
	{
		ub_conn *c = ubpy__conn_get($self);
		Py_ssize_t i, n;
		long long partial = 0;

		if (!c)
			return NULL;
		if (!PyList_Check(items) && !PyTuple_Check(items)) {
			PyErr_SetString(PyExc_TypeError,
					"_wsendv() needs a list or a tuple");
			return NULL;
		}
		n = PySequence_Fast_GET_SIZE(items);
		for (i = 0; i < n; i++) {
			Py_ssize_t want;
			long long r = ubpy__conn_send_obj(
				$self, c, PySequence_Fast_GET_ITEM(items, i),
				&want);

			if (r < 0) {
				/* write() redoes it and reports it properly */
				PyErr_Clear();
				break;
			}
			if (r < want) {
				partial = r;
				break;
			}
		}
		return Py_BuildValue("(nLO)", i, partial,
				     ub_conn_queued_bytes(c) >
				     ub_conn_high_water(c) ? Py_True : Py_False);
	}

	%feature("docstring") send_buf
	"send_buf(buf) -> None

Queue a Buffer (any pool of this loop) without copying; it returns to its
own pool once sent and the handle is stale from now on.  BufferError while
a view of it is exported; ValueError if it is empty or of another loop;
BlockingIOError above the high water mark (the buffer stays yours; never
after set_soft_water(True)).";
	ubpy_rc send_buf(PyObject *buf)
	{
		long long n = ubpy__send_buf($self, buf);

		return n < 0 ? (int)n : 0;
	}

	%feature("docstring") pause_recv
	"pause_recv() -> None: stop receiving (data waits in the socket).";
	ubpy_rc pause_recv()
	{
		ub_conn *c = ubpy__conn_get($self);

		return c ? ub_conn_pause_recv(c) : UBPY_EXC;
	}

	%feature("docstring") resume_recv
	"resume_recv() -> None: (re)start receiving.";
	ubpy_rc resume_recv()
	{
		ub_conn *c = ubpy__conn_get($self);

		return c ? ub_conn_resume_recv(c) : UBPY_EXC;
	}

	%feature("docstring") pipe
	"pipe(dst) -> None

Forward everything received here into dst's send queue in the core, zero
copy and without EV_DATA events; receiving pauses while dst is above its
high water mark, and an EOF here shuts dst's sending side once its queue
drains.  pipe(None) stops forwarding.";
	ubpy_rc pipe(PyObject *dst = NULL)
	{
		ub_conn *c = ubpy__conn_get($self), *d = NULL;
		ubpy_conn *h;

		if (!c)
			return UBPY_EXC;
		if (dst && dst != Py_None) {
			h = ubpy__unwrap(dst, SWIGTYPE_p_ubpy_conn,
					 "Connection");
			if (!h || !(d = ubpy__conn_get(h)))
				return UBPY_EXC;
			if (h->o.L != $self->o.L) {
				PyErr_SetString(PyExc_ValueError,
						"cannot pipe to a connection "
						"of another loop");
				return UBPY_EXC;
			}
			if (h == $self) {
				PyErr_SetString(PyExc_ValueError,
						"cannot pipe a connection "
						"into itself");
				return UBPY_EXC;
			}
		}
		return ub_conn_pipe(c, d);
	}

	%feature("docstring") shutdown
	"shutdown() -> None: shut the sending side once the queue drained.";
	ubpy_rc shutdown()
	{
		ub_conn *c = ubpy__conn_get($self);

		return c ? ub_conn_shutdown(c) : UBPY_EXC;
	}

	%feature("docstring") close
	"close() -> None

Graceful close: stop delivering data (what arrives is discarded), send
what is queued, shut down, and close once nothing unread is left in the
socket; EV_CLOSED follows.  A close that cannot finish within the
connection's close_timeout (default 30 s) becomes an abort: EV_ERROR
-ETIMEDOUT, then EV_CLOSED.  BrokenPipeError if already closing.";
	ubpy_rc close()
	{
		ub_conn *c = ubpy__conn_get($self);

		return c ? ub_conn_close(c) : UBPY_EXC;
	}

	%feature("docstring") abort
	"abort() -> None: cancel everything now (queued buffers return to their
pools) and reset the connection; EV_CLOSED follows.";
	ubpy_rc abort()
	{
		ub_conn *c = ubpy__conn_get($self);

		return c ? ub_conn_abort(c) : UBPY_EXC;
	}

	%feature("docstring") set_water
	"set_water(high, low) -> None: send queue marks in bytes (0 < high,
low <= high).  Above high, sends are refused with BlockingIOError and
EV_WRITABLE comes once the queue is at or below low.";
	ubpy_rc set_water(size_t high, size_t low)
	{
		ub_conn *c = ubpy__conn_get($self);
		const char *why = NULL;

		if (!c ||
		    ubpy__check(ub_water_check(high, low, &why), &why) < 0)
			return UBPY_EXC;
		return ub_conn_set_water(c, high, low);
	}

	%feature("docstring") set_soft_water
	"set_soft_water(on) -> None: with on true the high water mark is a
signal, not a refusal (UB_CONN_SOFT_WATER): send() takes every byte and
send_buf() every buffer whatever the queue holds, and EV_WRITABLE follows
once the queue is at or below the low mark.  Bytes the send pool cannot
take, or that come while the queue is above its high mark, wait in the
core's heap, in order (queued_bytes counts them).  uringbuf.Transport
sets it: write() never refuses.";
	ubpy_rc set_soft_water(int on)
	{
		ub_conn *c = ubpy__conn_get($self);

		return c ? ub_conn_set_soft_water(c, on) : UBPY_EXC;
	}

	%feature("docstring") want_writable
	"want_writable() -> None: ask for one EV_WRITABLE once the send queue
is at or below the low water mark (at the next wait if it already is),
without a refused send.";
	ubpy_rc want_writable()
	{
		ub_conn *c = ubpy__conn_get($self);

		if (!c)
			return UBPY_EXC;
		return ub_conn_want_writable(c);
	}

	PyObject *__repr__()
	{
		char s[96];

		if (ubpy__obj_dead(&$self->o))
			return ubpy__repr_state("Connection", $self, "closed");
		snprintf(s, sizeof(s), "fd=%d mode=%s%s",
			 ub_conn_fd($self->o.ptr),
			 ub_mode_name(ub_conn_mode($self->o.ptr)),
			 $self->o.closed ? " CLOSED"
			 : ub_conn_is_closing($self->o.ptr) ? " closing" : "");
		return ubpy__repr_state("Connection", $self, s);
	}

	%immutable;
	%feature("docstring") fd "The socket's file descriptor (-1 once closed by the core).";
	PyObject *fd;
	%feature("docstring") mode "The send mode in use (MODE_BUNDLE, MODE_RING or MODE_SERIAL).";
	PyObject *mode;
	%feature("docstring") queued_bytes "Bytes queued and not yet sent.";
	PyObject *queued_bytes;
	%feature("docstring") queued_bufs "Buffers in the send queue.";
	PyObject *queued_bufs;
	%feature("docstring") high_water "High water mark of the send queue, bytes.";
	PyObject *high_water;
	%feature("docstring") low_water "Low water mark of the send queue, bytes.";
	PyObject *low_water;
	%feature("docstring") closing "True once closing, closed or shut down (no more sends accepted).";
	PyObject *closing;
	%feature("docstring") closed "True once EV_CLOSED was returned (or the loop closed).";
	PyObject *closed;
	%feature("docstring") bytes_sent "Total bytes sent.";
	PyObject *bytes_sent;
	%feature("docstring") bytes_received "Total bytes received.";
	PyObject *bytes_received;
	%feature("docstring") sockname "Local address, \"HOST:PORT\".";
	PyObject *sockname;
	%feature("docstring") peername "Peer address, \"HOST:PORT\".";
	PyObject *peername;
	%feature("docstring") loop "The connection's Loop.";
	PyObject *loop;
	%feature("docstring") recv_held "Buffers of its receive pool the connection holds now: received and not yet back in the pool (held by you, in any send queue, or being sent).";
	PyObject *recv_held;
	%feature("docstring") recv_throttled "True while its receive is stopped by its recv_budget or its share of the pool (the bytes wait in the socket).";
	PyObject *recv_throttled;
	%feature("docstring") close_timeout "The close deadline given when the connection was made (or by its listener), in seconds: a graceful close() that cannot finish within it becomes an abort (math.inf: never).";
	PyObject *close_timeout;
	%mutable;
	%feature("docstring") idle_timeout "Idle timeout in seconds, or None: nothing received or sent for this long ends the connection (EV_ERROR -ETIMEDOUT, then EV_CLOSED).  Settable (seconds, rounded up to milliseconds; None or math.inf: none); setting it counts from now.";
	PyObject *idle_timeout;
	%feature("docstring") recv_budget "Bytes of its receive pool the connection may hold (settable: an int > 0, counted in whole buffers, at least one); at the budget its receive stops until buffers come back.";
	PyObject *recv_budget;
	%feature("docstring") udata "Yours: any object, carried by events as Event.udata.";
	PyObject *udata;
	%feature("docstring") on_data "A callable or None: Loop.dispatch() calls on_data(buf) with each received Buffer of this connection instead of delivering an EV_DATA event (wait() ignores it).  Cleared once the connection is gone.";
	PyObject *on_data;
	%feature("docstring") on_buffers "A callable or None: like on_data, but called with a list of the Buffers of consecutive EV_DATA events of this connection in a batch (one receive bundle, or several receives); takes precedence over on_data.";
	PyObject *on_buffers;
}

/* ==================================================================== */

%feature("docstring") ubpy_listener
"A listening socket with multishot accept (ub_listener); from
Loop.listen() or Loop.adopt_listener().  Accepted connections arrive as
EV_ACCEPT events (Event.conn new, Event.listener this).";

typedef struct ubpy_listener {} ubpy_listener;

%extend ubpy_listener {
	~ubpy_listener()
	{
		ubpy__obj_dealloc(&$self->o);
	}

	%feature("docstring") close
	"close() -> None: stop accepting and close the socket; EV_CLOSED
follows.";
	ubpy_rc close()
	{
		ub_listener *l = ubpy__listener_get($self);

		return l ? ub_listener_close(l) : UBPY_EXC;
	}

	PyObject *__repr__()
	{
		char s[32];

		if (ubpy__obj_dead(&$self->o))
			return ubpy__repr_state("Listener", $self, "closed");
		snprintf(s, sizeof(s), "fd=%d", ub_listener_fd($self->o.ptr));
		return ubpy__repr_state("Listener", $self, s);
	}

	%immutable;
	%feature("docstring") fd "The listening socket's file descriptor.";
	PyObject *fd;
	%feature("docstring") sockname "Local address, \"HOST:PORT\" (the real port when listening on 0).";
	PyObject *sockname;
	%feature("docstring") closed "True once EV_CLOSED was returned (or the loop closed).";
	PyObject *closed;
	%feature("docstring") loop "The listener's Loop.";
	PyObject *loop;
	%feature("docstring") connection_count "Connections this listener accepted that are not yet EV_CLOSED.";
	PyObject *connection_count;
	%mutable;
	%feature("docstring") max_connections "Most connections of this listener at once, or None (no limit; the default).  At the limit accepting pauses (new connections wait in the kernel's backlog) until one of them is EV_CLOSED.  Settable.";
	PyObject *max_connections;
	%feature("docstring") udata "Yours: any object, carried by its events as Event.udata.";
	PyObject *udata;
}

/* ==================================================================== */

%feature("docstring") ubpy_dgram
"A datagram endpoint (ub_dgram): one UDP (IPv4, IPv6) or Unix datagram
socket with multishot recvmsg into a receive pool.

From Loop.datagram() or Loop.adopt_datagram().  Every received datagram is
an EV_DATA event with Event.dgram this object and Event.buf its payload (a
read-only Buffer: Buffer.source is the sender, Buffer.truncated whether it
was cut to fit); send() queues one datagram per call, never coalesced (a
Buffer zero copy: send(buf, buf.source) echoes it).  EV_ERROR (res -errno)
reports a failed send or an ICMP error and the endpoint stays open;
EV_WRITABLE follows a refused send once the queue drained; EV_CLOSED ends
it (after close(), or a receive error).  The object stays valid until the
wait() after its EV_CLOSED; then it raises ClosedError.  udata is yours.";

typedef struct ubpy_dgram {} ubpy_dgram;

%extend ubpy_dgram {
	~ubpy_dgram()
	{
		ubpy__obj_dealloc(&$self->o);
	}

	%feature("docstring") send
	"send(data, addr=None) -> int

Queue one datagram to addr (as for Loop.datagram(); None: the connected
peer) and return its length.  A Buffer (a received one, or one acquired
from a send pool and filled) goes without copying and the handle is stale
from then on; anything else bytes-like is copied into one buffer of the
send pool (never split: OSError EMSGSIZE if it does not fit one).  Refused,
nothing queued: BlockingIOError (queue_max datagrams or high_water bytes
queued, or no free send buffer; EV_WRITABLE follows; never after
set_soft_water(True)), OSError
EDESTADDRREQ (no addr and not connected), OSError EMSGSIZE (more than UDP
carries: 65507 bytes over IPv4, 65527 over IPv6), BrokenPipeError
(closing), ValueError (an address of another family, a buffer of another
loop), BufferError (a view of the buffer is exported).  The kernel's
verdict on a queued datagram (ENETUNREACH, ...) comes as EV_ERROR.";
	PyObject *send(PyObject *data, PyObject *addr = NULL)
	{
		long long r = ubpy__dgram_send($self, data, addr);

		if (r < 0)
			return ubpy__none_or_raise(r);
		return PyLong_FromLongLong(r);
	}

	%feature("docstring") connect
	"connect(addr) -> None: set the default peer (connect(2), which does
not block for datagrams): send() without an address goes there, and only
its datagrams are received.";
	ubpy_rc connect(PyObject *addr)
	{
		ub_dgram *d = ubpy__dgram_get($self);
		struct sockaddr_storage ss;
		socklen_t len;

		if (!d || ubpy__addr_arg(addr, &ss, &len) < 0)
			return UBPY_EXC;
		if (ub_dgram_family(d) && ss.ss_family != ub_dgram_family(d)) {
			PyErr_SetString(PyExc_ValueError,
					"the address is of another family "
					"than the endpoint's socket");
			return UBPY_EXC;
		}
		return ub_dgram_connect(d, (struct sockaddr *)&ss, len);
	}

	%feature("docstring") close
	"close() -> None: stop receiving; queued datagrams go to the kernel
first (those it cannot take at once are cancelled) and every queued
buffer returns to its pool; EV_CLOSED follows.  Buffers you hold stay
yours.  BrokenPipeError if already closing.";
	ubpy_rc close()
	{
		ub_dgram *d = ubpy__dgram_get($self);

		return d ? ub_dgram_close(d) : UBPY_EXC;
	}

	%feature("docstring") pause_recv
	"pause_recv() -> None: stop receiving (datagrams wait in the socket;
the kernel drops what does not fit there).";
	ubpy_rc pause_recv()
	{
		ub_dgram *d = ubpy__dgram_get($self);

		return d ? ub_dgram_pause_recv(d) : UBPY_EXC;
	}

	%feature("docstring") resume_recv
	"resume_recv() -> None: (re)start receiving.";
	ubpy_rc resume_recv()
	{
		ub_dgram *d = ubpy__dgram_get($self);

		return d ? ub_dgram_resume_recv(d) : UBPY_EXC;
	}

	%feature("docstring") want_writable
	"want_writable() -> None: ask for one EV_WRITABLE once the send queue
is at its low water mark (at the next wait if it already is).";
	ubpy_rc want_writable()
	{
		ub_dgram *d = ubpy__dgram_get($self);

		return d ? ub_dgram_want_writable(d) : UBPY_EXC;
	}

	%feature("docstring") set_water
	"set_water(high, low) -> None: send queue marks in bytes (0 < high,
low <= high).  At high, send() is refused with BlockingIOError and
EV_WRITABLE comes once the queue is at or below low.";
	ubpy_rc set_water(size_t high, size_t low)
	{
		ub_dgram *d = ubpy__dgram_get($self);
		const char *why = NULL;
		int r;

		if (!d ||
		    ubpy__check(ub_water_check(high, low, &why), &why) < 0)
			return UBPY_EXC;
		r = ub_dgram_set_water(d, high, low);
		return r;
	}

	%feature("docstring") set_soft_water
	"set_soft_water(on) -> None: with on true a full queue is a signal,
not a refusal (UB_DGRAM_SOFT_WATER): send() takes every datagram whatever
the queue holds (those without a slot, or without a send buffer, wait in
the core, in order; queued_bytes counts them) and EV_WRITABLE follows once
the queue is back at its low mark.  Switched off while datagrams wait,
send() is refused until they are out.";
	ubpy_rc set_soft_water(int on)
	{
		ub_dgram *d = ubpy__dgram_get($self);

		return d ? ub_dgram_set_soft_water(d, on) : UBPY_EXC;
	}

	PyObject *__repr__()
	{
		char s[96];

		if (ubpy__obj_dead(&$self->o))
			return ubpy__repr_state("Datagram", $self, "closed");
		snprintf(s, sizeof(s), "fd=%d%s", ub_dgram_fd($self->o.ptr),
			 $self->o.closed ? " CLOSED"
			 : ub_dgram_is_closing($self->o.ptr) > 0 ? " closing"
			 : "");
		return ubpy__repr_state("Datagram", $self, s);
	}

	%immutable;
	%feature("docstring") fd "The socket's file descriptor (-1 once closed by the core).";
	PyObject *fd;
	%feature("docstring") family "The socket's address family (socket.AF_INET, AF_INET6 or AF_UNIX).";
	PyObject *family;
	%feature("docstring") sockname "Local address, \"HOST:PORT\" (the real port when bound to 0; \"unix:PATH\", \"unix:@NAME\").";
	PyObject *sockname;
	%feature("docstring") peername "The connected peer's address (OSError ENOTCONN if not connected).";
	PyObject *peername;
	%feature("docstring") queued_bytes "Bytes queued for sending and not yet sent.";
	PyObject *queued_bytes;
	%feature("docstring") queued_bufs "Datagrams queued for sending and not yet sent.";
	PyObject *queued_bufs;
	%feature("docstring") high_water "High water mark of the send queue, bytes.";
	PyObject *high_water;
	%feature("docstring") low_water "Low water mark of the send queue, bytes.";
	PyObject *low_water;
	%feature("docstring") received "Datagrams received since the endpoint began.";
	PyObject *received;
	%feature("docstring") sent "Datagrams sent (completed) since the endpoint began.";
	PyObject *sent;
	%feature("docstring") nobufs "Times the kernel ended the receive for want of a free buffer (ENOBUFS; it re-arms as soon as one is back).  Not the datagrams lost: the kernel does not count those per socket.";
	PyObject *nobufs;
	%feature("docstring") send_ops "Send operations completed: fewer than sent where UDP GSO (Feature.UDP_GSO) sent several datagrams to one peer in one (each still one datagram on the wire, in order).";
	PyObject *send_ops;
	%feature("docstring") dropped "Datagrams the kernel delivered past recv_budget or the endpoint's share of a shared pool (in the pass before its receive stopped), dropped at once as a full socket drops them: the budget is exact.";
	PyObject *dropped;
	%feature("docstring") recv_held "Buffers of its receive pool the endpoint holds now (received and not yet back: held by you or queued for sending anywhere).";
	PyObject *recv_held;
	%feature("docstring") recv_throttled "True while its receive is stopped by its recv_budget or its share of a shared pool (datagrams wait in the socket).";
	PyObject *recv_throttled;
	%feature("docstring") closing "True once close() was accepted (or the endpoint is gone).";
	PyObject *closing;
	%feature("docstring") closed "True once EV_CLOSED was returned (or the loop closed).";
	PyObject *closed;
	%feature("docstring") loop "The endpoint's Loop.";
	PyObject *loop;
	%mutable;
	%feature("docstring") recv_budget "Bytes of its receive pool the endpoint may hold (settable: an int > 0, counted in whole buffers); at the budget its receive stops until buffers come back (approximately: a multishot receive has no count limit).";
	PyObject *recv_budget;
	%feature("docstring") udata "Yours: any object, carried by its events as Event.udata.";
	PyObject *udata;
	%feature("docstring") on_data "A callable or None: Loop.dispatch() calls on_data(buf) with each received Buffer of this endpoint instead of delivering an EV_DATA event (wait() ignores it; buf.source is the sender, buf.truncated says whether it was cut).  Cleared once the endpoint is gone.";
	PyObject *on_data;
	%feature("docstring") on_datagram "A callable or None: like on_data, but called on_datagram(buf, source) with the sender (buf.source, None without an address): the shape of asyncio's datagram_received, with no Python frame in between.  Setting either replaces the other.";
	PyObject *on_datagram;
}

/* ==================================================================== */

%feature("docstring") ubpy_buf
"One buffer of a pool, owned by you (ub_buf in APP state).

A received buffer (EV_DATA) is a read-only view of the receive pool's own
memory: memoryview(buf) copies nothing.  A buffer from Pool.acquire() is
writable: set buf.length (or use fill()) and write through memoryview(buf).
Hand it back with release(), forward it with Connection.send(buf), or just
drop it: a Buffer that is garbage-collected goes back to its pool.  As
with bytearray, release, resize and send raise BufferError while a
memoryview of it exists.  Once released or sent the handle is stale and
raises ClosedError.  Usable as a context manager (releases on exit if still
yours).

From an incremental pool (Pool.incremental) a received buffer is a slice:
the bytes of one receive inside a pool buffer that other slices may share
(capacity == length; index names that pool buffer), used like any other
received buffer.";

typedef struct ubpy_buf {} ubpy_buf;

%extend ubpy_buf {
	~ubpy_buf()
	{
		ubpy_pool *p = $self->pool ? ((SwigPyObject *)$self->pool)->ptr
					   : NULL;

		if (p && p->pool && ub_buf_state($self->buf) == UB_BUF_APP &&
		    ub_buf_gen($self->buf) == $self->gen) {
			ubpy_loop *L = p->L;

			if (!ubpy__foreign(L))
				ub_buf_release($self->buf);
			else
				ubpy__defer(L, $self->buf, $self->gen,
					    UBPY_DEF_BUF);
		}
		Py_XDECREF($self->pool);
		free($self);
	}

	%feature("docstring") release
	"release() -> None: give the buffer back to its pool.  BufferError while
a view is exported; ClosedError if already released or sent.";
	ubpy_rc release()
	{
		ub_buf *b = ubpy__buf_get($self, 1);

		return b ? ub_buf_release(b) : UBPY_EXC;
	}

	%feature("docstring") fill
	"fill(data, offset=0) -> int: copy bytes-like data into a writable
(send pool) buffer at offset and set length to offset + len(data); returns
the new length.  ValueError if it does not fit; BufferError while
exported; TypeError for a received (read-only) buffer.";
	PyObject *fill(PyObject *data, size_t offset = 0)
	{
		ub_buf *b = ubpy__buf_get($self, 1);
		Py_buffer view;
		size_t cap;

		if (!b)
			return NULL;
		if ($self->readonly) {
			PyErr_SetString(PyExc_TypeError,
					"a received buffer is read-only");
			return NULL;
		}
		if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
			return NULL;
		cap = ub_buf_capacity(b);
		if (offset > cap || (size_t)view.len > cap - offset) {
			PyBuffer_Release(&view);
			PyErr_Format(PyExc_ValueError,
				     "%zd bytes at offset %zu do not fit a "
				     "buffer of %zu bytes",
				     view.len, offset, cap);
			return NULL;
		}
		memcpy((char *)ub_buf_data(b) + offset, view.buf,
		       (size_t)view.len);
		ub_buf_set_len(b, offset + (size_t)view.len);
		PyBuffer_Release(&view);
		return PyLong_FromSize_t(offset + (size_t)view.len);
	}

	%feature("docstring") tobytes
	"tobytes() -> bytes: a copy of the data (same as bytes(buf)).";
	PyObject *tobytes()
	{
		ub_buf *b = ubpy__buf_get($self, 0);

		if (!b)
			return NULL;
		return PyBytes_FromStringAndSize(ub_buf_data(b),
						 (Py_ssize_t)ub_buf_len(b));
	}

	PyObject *__enter__()
	{
		if (!ubpy__buf_get($self, 0))
			return NULL;
		Py_INCREF($self->self);
		return $self->self;
	}

	%feature("docstring") __exit__
	"Release the buffer if it is still yours (not sent or released).";
	PyObject *__exit__(PyObject *type = NULL, PyObject *value = NULL,
			   PyObject *tb = NULL)
	{
		ubpy_pool *p = ((SwigPyObject *)$self->pool)->ptr;
		ub_buf *b;

		(void)type, (void)value, (void)tb;
		if (!p->pool || ub_buf_state($self->buf) != UB_BUF_APP ||
		    ub_buf_gen($self->buf) != $self->gen)
			Py_RETURN_FALSE; /* sent, released or loop closed */
		b = ubpy__buf_get($self, 1);
		if (!b)
			return NULL;
		if (ub_buf_release(b) < 0)
			return ubpy__none_or_raise(-EINVAL);
		Py_RETURN_FALSE;
	}

	PyObject *__repr__()
	{
		ubpy_pool *p = ((SwigPyObject *)$self->pool)->ptr;
		char s[96];

		if (!p->pool || ub_buf_state($self->buf) != UB_BUF_APP ||
		    ub_buf_gen($self->buf) != $self->gen)
			return ubpy__repr_state("Buffer", $self, "stale");
		snprintf(s, sizeof(s), "#%u len=%zu/%zu%s%s",
			 ub_buf_index($self->buf), ub_buf_len($self->buf),
			 ub_buf_capacity($self->buf),
			 $self->readonly ? " read-only" : "",
			 $self->exports ? " exported" : "");
		return ubpy__repr_state("Buffer", $self, s);
	}

	%feature("docstring") length "Bytes of data (settable on a writable buffer, up to capacity; BufferError while exported).";
	PyObject *length;
	%immutable;
	%feature("docstring") capacity "Size of the buffer in bytes (a slice of an incremental pool: its length when received).";
	PyObject *capacity;
	%feature("docstring") readonly "True for a received buffer (its views are read-only).";
	PyObject *readonly;
	%feature("docstring") valid "True while the buffer is yours (not released, sent, or closed).";
	PyObject *valid;
	%feature("docstring") state "BUF_APP while yours; the core's state once the handle is stale.";
	PyObject *state;
	%feature("docstring") index "Index of the buffer in its pool (a slice: of the pool buffer it lies in, which other slices may share).";
	PyObject *index;
	%feature("docstring") gen "Generation (changes every time the buffer leaves the application).";
	PyObject *gen;
	%feature("docstring") address "Address of the buffer's memory (an int, inside its pool's mapping).";
	PyObject *address;
	%feature("docstring") pool "The buffer's Pool.";
	PyObject *pool;
	%feature("docstring") exports "Views currently exported.";
	PyObject *exports;
	%feature("docstring") source "A received datagram's sender, \"HOST:PORT\" (\"[V6]:PORT\", \"unix:PATH\", \"unix:@NAME\"), which Datagram.send() takes as its address; None for other buffers and for a sender without an address (an unbound Unix socket).";
	PyObject *source;
	%feature("docstring") truncated "True if the buffer holds a received datagram that was cut to fit it (the EV_DATA event's res is then its full length).";
	PyObject *truncated;
	%mutable;
}

/* ---- attribute accessors ---- */
%{
/* Loop */
static PyObject *ubpy_loop_closed_get(ubpy_loop *L)
{
	return PyBool_FromLong(!L->loop);
}
static PyObject *ubpy_loop_fd_get(ubpy_loop *L)
{
	ub_loop *l = ubpy__loop_get(L);
	return l ? PyLong_FromLong(ub_loop_fd(l)) : NULL;
}
static PyObject *ubpy_loop_features_get(ubpy_loop *L)
{
	ub_loop *l = ubpy__loop_get(L);
	return l ? PyLong_FromUnsignedLong(ub_loop_features(l)) : NULL;
}
static PyObject *ubpy_loop_best_mode_get(ubpy_loop *L)
{
	ub_loop *l = ubpy__loop_get(L);
	return l ? PyLong_FromLong(ub_loop_best_mode(l)) : NULL;
}
static PyObject *ubpy_loop_pending_get(ubpy_loop *L)
{
	ub_loop *l = ubpy__loop_get(L);
	return l ? PyLong_FromLong(ub_loop_pending(l)) : NULL;
}
static PyObject *ubpy_loop_leftover_get(ubpy_loop *L)
{
	return PyLong_FromLong(L->left_n - L->left_i);
}
static PyObject *ubpy_loop_exports_get(ubpy_loop *L)
{
	return PyLong_FromSsize_t(L->exports);
}
static PyObject *ubpy_loop_connections_get(ubpy_loop *L)
{
	PyObject *list, *it, *o;

	if (!ubpy__loop_get(L))
		return NULL;
	list = PyList_New(0);
	it = list ? PyObject_GetIter(L->live) : NULL;
	if (!it) {
		Py_XDECREF(list);
		return NULL;
	}
	while ((o = PyIter_Next(it))) {
		ubpy_obj *h = ((SwigPyObject *)o)->ptr;

		if (h->is_conn == UBPY_CONN && !h->closed && PyList_Append(list, o) < 0) {
			Py_DECREF(o);
			Py_CLEAR(list);
			break;
		}
		Py_DECREF(o);
	}
	Py_DECREF(it);
	if (list && PyErr_Occurred())
		Py_CLEAR(list);
	return list;
}
static PyObject *ubpy_loop_pools_get(ubpy_loop *L)
{
	if (!ubpy__loop_get(L))
		return NULL;
	return PyDict_Values(L->pools);
}

/* Pool */
static PyObject *ubpy_pool_count_get(ubpy_pool *p)
{
	ub_pool *q = ubpy__pool_get(p);
	return q ? PyLong_FromUnsignedLong(ub_pool_count(q)) : NULL;
}
static PyObject *ubpy_pool_buf_size_get(ubpy_pool *p)
{
	ub_pool *q = ubpy__pool_get(p);
	return q ? PyLong_FromUnsignedLong(ub_pool_buf_size(q)) : NULL;
}
static PyObject *ubpy_pool_recv_get(ubpy_pool *p)
{
	ub_pool *q = ubpy__pool_get(p);
	return q ? PyBool_FromLong(ub_pool_flags(q) & UB_POOL_RECV) : NULL;
}
static PyObject *ubpy_pool_incremental_get(ubpy_pool *p)
{
	ub_pool *q = ubpy__pool_get(p);
	return q ? PyBool_FromLong(ub_pool_flags(q) & UB_POOL_INC) : NULL;
}
static PyObject *ubpy_pool_slices_get(ubpy_pool *p)
{
	ub_pool *q = ubpy__pool_get(p);
	return q ? PyLong_FromUnsignedLong(ub_pool_slices(q)) : NULL;
}
static PyObject *ubpy_pool_base_get(ubpy_pool *p)
{
	ub_pool *q = ubpy__pool_get(p);
	return q ? PyLong_FromVoidPtr(ub_pool_base(q)) : NULL;
}
static PyObject *ubpy_pool_nbytes_get(ubpy_pool *p)
{
	ub_pool *q = ubpy__pool_get(p);
	return q ? PyLong_FromSize_t(ub_pool_bytes(q)) : NULL;
}
static PyObject *ubpy_pool_reserve_get(ubpy_pool *p)
{
	ub_pool *q = ubpy__pool_get(p);
	return q ? PyLong_FromUnsignedLong(ub_pool_reserve(q)) : NULL;
}
static PyObject *ubpy_pool_loop_get(ubpy_pool *p)
{
	return ubpy__loop_objref(p->L);
}
static PyObject *ubpy_pool_closed_get(ubpy_pool *p)
{
	return PyBool_FromLong(!p->pool);
}

/* Connection */
static PyObject *ubpy_conn_fd_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? PyLong_FromLong(ub_conn_fd(c)) : NULL;
}
static PyObject *ubpy_conn_mode_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? PyLong_FromLong(ub_conn_mode(c)) : NULL;
}
static PyObject *ubpy_conn_queued_bytes_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? PyLong_FromSize_t(ub_conn_queued_bytes(c)) : NULL;
}
static PyObject *ubpy_conn_queued_bufs_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? PyLong_FromUnsignedLong(ub_conn_queued_bufs(c)) : NULL;
}
static PyObject *ubpy_conn_high_water_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? PyLong_FromSize_t(ub_conn_high_water(c)) : NULL;
}
static PyObject *ubpy_conn_low_water_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? PyLong_FromSize_t(ub_conn_low_water(c)) : NULL;
}
static PyObject *ubpy_conn_closing_get(ubpy_conn *h)
{
	if (ubpy__obj_dead(&h->o))
		Py_RETURN_TRUE;
	return PyBool_FromLong(ub_conn_is_closing(h->o.ptr) > 0);
}
static PyObject *ubpy_conn_closed_get(ubpy_conn *h)
{
	return PyBool_FromLong(h->o.closed || ubpy__obj_dead(&h->o));
}
static PyObject *ubpy_conn_bytes_sent_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? PyLong_FromUnsignedLongLong(ub_conn_bytes_sent(c)) : NULL;
}
static PyObject *ubpy_conn_bytes_received_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? PyLong_FromUnsignedLongLong(ub_conn_bytes_received(c))
		 : NULL;
}
static PyObject *ubpy_conn_sockname_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? ubpy__sock_name(ub_conn_fd(c), 0) : NULL;
}
static PyObject *ubpy_conn_peername_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? ubpy__sock_name(ub_conn_fd(c), 1) : NULL;
}
static PyObject *ubpy_conn_loop_get(ubpy_conn *h)
{
	return ubpy__loop_objref(h->o.L);
}
static PyObject *ubpy_conn_udata_get(ubpy_conn *h)
{
	PyObject *o = h->o.udata ? h->o.udata : Py_None;

	Py_INCREF(o);
	return o;
}
static void ubpy_conn_udata_set(ubpy_conn *h, PyObject *v)
{
	PyObject *old = h->o.udata;

	Py_XINCREF(v);
	h->o.udata = v == Py_None ? (Py_XDECREF(v), NULL) : v;
	Py_XDECREF(old);
}
static PyObject *ubpy_conn_on_data_get(ubpy_conn *h)
{
	PyObject *o = h->o.on_data ? h->o.on_data : Py_None;

	Py_INCREF(o);
	return o;
}
/* Set a dispatch callable (on_data, on_buffers) of a connection. */
static void ubpy__set_callable(ubpy_conn *h, PyObject **slot, PyObject *v,
			       const char *what)
{
	PyObject *old = *slot;

	if (v != Py_None && !PyCallable_Check(v)) {
		PyErr_Format(PyExc_TypeError, "%s must be callable or None",
			     what);
		return;
	}
	/* A gone connection gets no DATA: keep no reference (cycles). */
	if (h->o.closed || ubpy__obj_dead(&h->o))
		v = Py_None;
	Py_INCREF(v);
	*slot = v == Py_None ? (Py_DECREF(v), NULL) : v;
	Py_XDECREF(old);
}
static void ubpy_conn_on_data_set(ubpy_conn *h, PyObject *v)
{
	ubpy__set_callable(h, &h->o.on_data, v, "on_data");
}
static PyObject *ubpy_conn_on_buffers_get(ubpy_conn *h)
{
	PyObject *o = h->o.on_buffers ? h->o.on_buffers : Py_None;

	Py_INCREF(o);
	return o;
}
static void ubpy_conn_on_buffers_set(ubpy_conn *h, PyObject *v)
{
	ubpy__set_callable(h, &h->o.on_buffers, v, "on_buffers");
}

static PyObject *ubpy_conn_recv_held_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? PyLong_FromUnsignedLong(ub_conn_recv_held(c)) : NULL;
}
static PyObject *ubpy_conn_recv_throttled_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? PyBool_FromLong(ub_conn_recv_throttled(c) > 0) : NULL;
}
static PyObject *ubpy__timeout_obj(unsigned ms, unsigned def)
{
	if (ms == UINT_MAX)
		return PyFloat_FromDouble(Py_HUGE_VAL);
	return PyFloat_FromDouble((ms ? ms : def) / 1000.0);
}
static PyObject *ubpy_conn_close_timeout_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);

	return c ? ubpy__timeout_obj(ub_conn_close_timeout(c),
				     UB_DEF_CLOSE_TIMEOUT_MS) : NULL;
}
static PyObject *ubpy_conn_idle_timeout_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	unsigned ms;

	if (!c)
		return NULL;
	ms = ub_conn_idle_timeout(c);
	if (!ms)
		Py_RETURN_NONE;
	return PyFloat_FromDouble(ms / 1000.0);
}
static void ubpy_conn_idle_timeout_set(ubpy_conn *h, PyObject *v)
{
	ub_conn *c = ubpy__conn_get(h);
	unsigned ms = 0;
	int r;

	if (!c)
		return;
	if (!v) {
		PyErr_SetString(PyExc_TypeError,
				"cannot delete idle_timeout (set None)");
		return;
	}
	if (v != Py_None && ubpy__timeout_arg(v, "idle_timeout", 0, &ms) < 0)
		return;
	r = ub_conn_set_idle_timeout(c, ms);
	if (r < 0)
		ubpy__raise(r);
}
static PyObject *ubpy_conn_recv_budget_get(ubpy_conn *h)
{
	ub_conn *c = ubpy__conn_get(h);
	return c ? PyLong_FromSize_t(ub_conn_recv_budget(c)) : NULL;
}
static void ubpy_conn_recv_budget_set(ubpy_conn *h, PyObject *v)
{
	ub_conn *c = ubpy__conn_get(h);
	size_t n;
	int r;

	if (!c)
		return;
	if (!v || v == Py_None) {
		PyErr_SetString(PyExc_TypeError,
				"recv_budget must be an integer (bytes)");
		return;
	}
	if (ubpy__bytes_arg(v, "recv_budget", &n) < 0)
		return;
	r = ub_conn_set_recv_budget(c, n);
	if (r < 0)
		ubpy__raise(r);
}

/* Listener */
static PyObject *ubpy_listener_fd_get(ubpy_listener *h)
{
	ub_listener *l = ubpy__listener_get(h);
	return l ? PyLong_FromLong(ub_listener_fd(l)) : NULL;
}
static PyObject *ubpy_listener_sockname_get(ubpy_listener *h)
{
	ub_listener *l = ubpy__listener_get(h);
	return l ? ubpy__sock_name(ub_listener_fd(l), 0) : NULL;
}
static PyObject *ubpy_listener_closed_get(ubpy_listener *h)
{
	return PyBool_FromLong(h->o.closed || ubpy__obj_dead(&h->o));
}
static PyObject *ubpy_listener_loop_get(ubpy_listener *h)
{
	return ubpy__loop_objref(h->o.L);
}
static PyObject *ubpy_listener_connection_count_get(ubpy_listener *h)
{
	ub_listener *l = ubpy__listener_get(h);
	return l ? PyLong_FromUnsignedLong(ub_listener_conns(l)) : NULL;
}
static PyObject *ubpy_listener_max_connections_get(ubpy_listener *h)
{
	ub_listener *l = ubpy__listener_get(h);

	if (!l)
		return NULL;
	if (!ub_listener_max_conns(l))
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLong(ub_listener_max_conns(l));
}
static void ubpy_listener_max_connections_set(ubpy_listener *h, PyObject *v)
{
	ub_listener *l = ubpy__listener_get(h);
	unsigned m;
	int r;

	if (!l)
		return;
	if (!v) {
		PyErr_SetString(PyExc_TypeError,
				"cannot delete max_connections (set None)");
		return;
	}
	if (ubpy__max_conns_arg(v, &m) < 0)
		return;
	r = ub_listener_set_max_conns(l, m);
	if (r < 0)
		ubpy__raise(r);
}
static PyObject *ubpy_listener_udata_get(ubpy_listener *h)
{
	return ubpy_conn_udata_get((ubpy_conn *)h);
}
static void ubpy_listener_udata_set(ubpy_listener *h, PyObject *v)
{
	ubpy_conn_udata_set((ubpy_conn *)h, v);
}

/* Datagram */
static PyObject *ubpy_loop_datagrams_get(ubpy_loop *L)
{
	PyObject *list, *it, *o;

	if (!ubpy__loop_get(L))
		return NULL;
	list = PyList_New(0);
	it = list ? PyObject_GetIter(L->live) : NULL;
	if (!it) {
		Py_XDECREF(list);
		return NULL;
	}
	while ((o = PyIter_Next(it))) {
		ubpy_obj *h = ((SwigPyObject *)o)->ptr;

		if (h->is_conn == UBPY_DGRAM && !h->closed &&
		    PyList_Append(list, o) < 0) {
			Py_DECREF(o);
			Py_CLEAR(list);
			break;
		}
		Py_DECREF(o);
	}
	Py_DECREF(it);
	if (list && PyErr_Occurred())
		Py_CLEAR(list);
	return list;
}
static PyObject *ubpy_dgram_fd_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? PyLong_FromLong(ub_dgram_fd(d)) : NULL;
}
static PyObject *ubpy_dgram_family_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);

	return d ? PyLong_FromLong(ub_dgram_family(d)) : NULL;
}
static PyObject *ubpy_dgram_sockname_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? ubpy__sock_name(ub_dgram_fd(d), 0) : NULL;
}
static PyObject *ubpy_dgram_peername_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? ubpy__sock_name(ub_dgram_fd(d), 1) : NULL;
}
static PyObject *ubpy_dgram_queued_bytes_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? PyLong_FromSize_t(ub_dgram_queued_bytes(d)) : NULL;
}
static PyObject *ubpy_dgram_queued_bufs_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? PyLong_FromUnsignedLong(ub_dgram_queued_bufs(d)) : NULL;
}
static PyObject *ubpy_dgram_high_water_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);

	return d ? PyLong_FromSize_t(ub_dgram_high_water(d)) : NULL;
}
static PyObject *ubpy_dgram_low_water_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);

	return d ? PyLong_FromSize_t(ub_dgram_low_water(d)) : NULL;
}
static PyObject *ubpy_dgram_received_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? PyLong_FromUnsignedLongLong(ub_dgram_received(d)) : NULL;
}
static PyObject *ubpy_dgram_sent_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? PyLong_FromUnsignedLongLong(ub_dgram_sent(d)) : NULL;
}
static PyObject *ubpy_dgram_nobufs_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? PyLong_FromUnsignedLongLong(ub_dgram_nobufs(d)) : NULL;
}
static PyObject *ubpy_dgram_send_ops_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? PyLong_FromUnsignedLongLong(ub_dgram_send_ops(d)) : NULL;
}
static PyObject *ubpy_dgram_dropped_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? PyLong_FromUnsignedLongLong(ub_dgram_dropped(d)) : NULL;
}
static PyObject *ubpy_dgram_recv_held_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? PyLong_FromUnsignedLong(ub_dgram_recv_held(d)) : NULL;
}
static PyObject *ubpy_dgram_recv_throttled_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? PyBool_FromLong(ub_dgram_recv_throttled(d) > 0) : NULL;
}
static PyObject *ubpy_dgram_closing_get(ubpy_dgram *h)
{
	/* (the core is asked only from the loop's own thread) */
	return PyBool_FromLong(h->o.closed || ubpy__obj_dead(&h->o) ||
			       (!ubpy__foreign(h->o.L) &&
				ub_dgram_is_closing(h->o.ptr) > 0));
}
static PyObject *ubpy_dgram_closed_get(ubpy_dgram *h)
{
	return PyBool_FromLong(h->o.closed || ubpy__obj_dead(&h->o));
}
static PyObject *ubpy_dgram_loop_get(ubpy_dgram *h)
{
	return ubpy__loop_objref(h->o.L);
}
static PyObject *ubpy_dgram_recv_budget_get(ubpy_dgram *h)
{
	ub_dgram *d = ubpy__dgram_get(h);
	return d ? PyLong_FromSize_t(ub_dgram_recv_budget(d)) : NULL;
}
static void ubpy_dgram_recv_budget_set(ubpy_dgram *h, PyObject *v)
{
	ub_dgram *d = ubpy__dgram_get(h);
	size_t n;
	int r;

	if (!d)
		return;
	if (!v || v == Py_None) {
		PyErr_SetString(PyExc_TypeError,
				"recv_budget must be an integer (bytes)");
		return;
	}
	if (ubpy__bytes_arg(v, "recv_budget", &n) < 0)
		return;
	r = ub_dgram_set_recv_budget(d, n);
	if (r < 0)
		ubpy__raise(r);
}
static PyObject *ubpy_dgram_udata_get(ubpy_dgram *h)
{
	return ubpy_conn_udata_get((ubpy_conn *)h);
}
static void ubpy_dgram_udata_set(ubpy_dgram *h, PyObject *v)
{
	ubpy_conn_udata_set((ubpy_conn *)h, v);
}
static PyObject *ubpy_dgram_on_data_get(ubpy_dgram *h)
{
	return ubpy_conn_on_data_get((ubpy_conn *)h);
}
static void ubpy_dgram_on_data_set(ubpy_dgram *h, PyObject *v)
{
	ubpy__set_callable((ubpy_conn *)h, &h->o.on_data, v, "on_data");
	if (!PyErr_Occurred())
		h->o.with_source = 0;
}
static PyObject *ubpy_dgram_on_datagram_get(ubpy_dgram *h)
{
	PyObject *o = h->o.with_source && h->o.on_data ? h->o.on_data
						       : Py_None;

	Py_INCREF(o);
	return o;
}
static void ubpy_dgram_on_datagram_set(ubpy_dgram *h, PyObject *v)
{
	ubpy__set_callable((ubpy_conn *)h, &h->o.on_data, v, "on_datagram");
	if (!PyErr_Occurred())
		h->o.with_source = h->o.on_data != NULL;
}

/* Buffer */
static PyObject *ubpy_buf_source_get(ubpy_buf *b)
{
	ub_buf *u = ubpy__buf_get(b, 0);

	return u ? ubpy__source_str(u) : NULL;
}
static PyObject *ubpy_buf_truncated_get(ubpy_buf *b)
{
	ub_buf *u = ubpy__buf_get(b, 0);
	return u ? PyBool_FromLong(ub_buf_truncated(u) > 0) : NULL;
}
static PyObject *ubpy_buf_length_get(ubpy_buf *b)
{
	ub_buf *u = ubpy__buf_get(b, 0);
	return u ? PyLong_FromSize_t(ub_buf_len(u)) : NULL;
}
static void ubpy_buf_length_set(ubpy_buf *b, PyObject *v)
{
	ub_buf *u = ubpy__buf_get(b, 1);
	size_t n;

	if (!u)
		return;
	if (!v) {
		PyErr_SetString(PyExc_TypeError, "cannot delete length");
		return;
	}
	if (ubpy__size_arg(v, "length", &n) < 0)
		return;
	if (b->readonly) {
		PyErr_SetString(PyExc_TypeError,
				"a received buffer is read-only");
		return;
	}
	if (n > ub_buf_capacity(u)) {
		PyErr_Format(PyExc_ValueError,
			     "length %zu exceeds the capacity (%zu)", n,
			     ub_buf_capacity(u));
		return;
	}
	ub_buf_set_len(u, n);
}
static PyObject *ubpy_buf_capacity_get(ubpy_buf *b)
{
	ub_buf *u = ubpy__buf_get(b, 0);
	return u ? PyLong_FromSize_t(ub_buf_capacity(u)) : NULL;
}
static PyObject *ubpy_buf_readonly_get(ubpy_buf *b)
{
	return PyBool_FromLong(b->readonly);
}
static PyObject *ubpy_buf_valid_get(ubpy_buf *b)
{
	ubpy_pool *p = ((SwigPyObject *)b->pool)->ptr;

	return PyBool_FromLong(p->pool && ub_buf_state(b->buf) == UB_BUF_APP &&
			       ub_buf_gen(b->buf) == b->gen);
}
static PyObject *ubpy_buf_state_get(ubpy_buf *b)
{
	ubpy_pool *p = ((SwigPyObject *)b->pool)->ptr;

	if (!p->pool)
		return UBPY_NULL(ubpy__closed("the buffer's pool is gone"));
	if (ub_buf_gen(b->buf) != b->gen)
		return PyLong_FromLong(UB_BUF_NSTATES); /* reused: not yours */
	return PyLong_FromLong(ub_buf_state(b->buf));
}
static PyObject *ubpy_buf_index_get(ubpy_buf *b)
{
	ubpy_pool *p = ((SwigPyObject *)b->pool)->ptr;

	if (!p->pool)
		return UBPY_NULL(ubpy__closed("the buffer's pool is gone"));
	return PyLong_FromUnsignedLong(ub_buf_index(b->buf));
}
static PyObject *ubpy_buf_gen_get(ubpy_buf *b)
{
	return PyLong_FromUnsignedLong(b->gen);
}
static PyObject *ubpy_buf_address_get(ubpy_buf *b)
{
	ub_buf *u = ubpy__buf_get(b, 0);
	return u ? PyLong_FromVoidPtr(ub_buf_data(u)) : NULL;
}
static PyObject *ubpy_buf_pool_get(ubpy_buf *b)
{
	Py_INCREF(b->pool);
	return b->pool;
}
static PyObject *ubpy_buf_exports_get(ubpy_buf *b)
{
	return PyLong_FromSsize_t(b->exports);
}
%}
