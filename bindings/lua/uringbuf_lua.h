/*
 * uringbuf_lua.h - the Lua binding's C runtime: safe handles over the core's
 * objects, used by the typemaps in uringbuf_lua.i and by the few functions
 * that SWIG cannot generate (the event batch, buffers, signals).
 *
 * Handles.  Every core object reaches Lua as a full userdata with a named
 * metatable ("uringbuf.loop", ".pool", ".buf", ".conn", ".listener",
 * ".dgram"), never
 * as a raw pointer, so that a handle can always tell whether what it points
 * at still exists:
 *  - a loop token (struct ubl_tok) is shared, reference counted, by the loop
 *    handle and every conn/listener handle; ub_loop_free() marks it dead;
 *  - each pool has a token of its own, killed by ub_pool_free() or by the
 *    loop's end; buffer handles hold it, so a stale buffer handle never reads
 *    the descriptors of a freed pool;
 *  - a buffer handle remembers ub_buf_gen() from when it was handed out and is
 *    valid only while the buffer is APP with that generation;
 *  - a connection, listener or datagram endpoint handle holds its core
 *    object (ub_*_hold) until its __gc, and stays in its loop's registry
 *    table (keyed by an id stored as the core object's udata) until its
 *    CLOSED event; from the next wait on the core says it is gone
 *    (ub_*_is_closed) and every use raises.
 * State.  Conn, listener and loop handles carry one Lua value for the layer
 * above (a user value: state(), set_state(), and the "state" field of each
 * event); it reads nil once the object is gone or its loop closed, so the
 * server helper's per-connection state needs no table keyed by handle.
 * Every check that fails raises a Lua error ("bad argument #n to 'f' (...)");
 * nothing ever touches freed memory.
 */
#ifndef URINGBUF_LUA_H
#define URINGBUF_LUA_H

#include <lauxlib.h>
#include <lua.h>
#include <sys/socket.h>

#include "uringbuf.h"

#define UBL_LOOP "uringbuf.loop"
#define UBL_POOL "uringbuf.pool"
#define UBL_BUF "uringbuf.buf"
#define UBL_CONN "uringbuf.conn"
#define UBL_LISTENER "uringbuf.listener"
#define UBL_DGRAM "uringbuf.dgram"

/* Module set-up, run from SWIG's %init with the module table on top. */
void ubl_init(lua_State *L);

/* Argument checks: raise "bad argument #idx" unless the handle is live. */
ub_loop *ubl_check_loop(lua_State *L, int idx);
ub_pool *ubl_check_pool(lua_State *L, int idx);
ub_buf *ubl_check_buf(lua_State *L, int idx);
ub_conn *ubl_check_conn(lua_State *L, int idx);
ub_conn *ubl_opt_conn(lua_State *L, int idx); /* nil -> NULL */
ub_listener *ubl_check_listener(lua_State *L, int idx);
ub_dgram *ubl_check_dgram(lua_State *L, int idx);

/* An integer in [min, max] (luaL_checkinteger rules: 1.5 is refused). */
lua_Integer ubl_check_int(lua_State *L, int idx, lua_Integer min,
			  lua_Integer max);

/* Options tables (nil: defaults).  Raise on a wrong field (type, unknown
 * key); the rules of the values are the core's option checks. */
void ubl_check_loop_opts(lua_State *L, int idx, ub_loop_opts *o);
void ubl_check_conn_opts(lua_State *L, int idx, ub_conn_opts *o);
void ubl_check_dgram_opts(lua_State *L, int idx, ub_dgram_opts *o);
/* "HOST:PORT", "[V6]:PORT", "unix:PATH" or "/PATH"; raises if malformed. */
void ubl_check_addr(lua_State *L, int idx, struct sockaddr_storage *ss,
		    socklen_t *len);

/* Push the handle of an object (creating it on first sight); nil for NULL.
 * ubl_push_buf makes a new handle for an APP buffer. */
void ubl_push_loop(lua_State *L, ub_loop *loop);
void ubl_push_pool(lua_State *L, ub_pool *pool);
void ubl_push_buf(lua_State *L, ub_buf *buf);
void ubl_push_conn(lua_State *L, ub_conn *conn);
void ubl_push_listener(lua_State *L, ub_listener *l);
void ubl_push_dgram(lua_State *L, ub_dgram *d);

/* Push nil, strerror(-err), -err; returns 3 (luaL_fileresult's shape). */
int ubl_push_error(lua_State *L, int err);
/* The same with why (a core check's reason) as the message, if not NULL. */
int ubl_push_reason(lua_State *L, int err, const char *why);

/* Functions SWIG cannot generate (registered with %native). */
int ubl_loop_close(lua_State *L);
int ubl_loop_wait(lua_State *L);
int ubl_pool_free(lua_State *L);
int ubl_conn_send(lua_State *L);
int ubl_dgram_open(lua_State *L);
int ubl_dgram_send(lua_State *L);
int ubl_catch_signals(lua_State *L);
int ubl_signaled(lua_State *L);
int ubl_handle_valid(lua_State *L);
int ubl_set_buffers(lua_State *L);
int ubl_now(lua_State *L);
int ubl_strerror(lua_State *L);
int ubl_conn_set_idle_timeout(lua_State *L);
int ubl_handle_state(lua_State *L);
int ubl_conn_state(lua_State *L);
int ubl_handle_set_state(lua_State *L);

/* Process calls for workers (one system call each). */
int ubl_fork(lua_State *L);
int ubl_waitpid(lua_State *L);
int ubl_kill(lua_State *L);
int ubl_getpid(lua_State *L);
int ubl_getppid(lua_State *L);
int ubl_set_pdeathsig(lua_State *L);
int ubl_pipe(lua_State *L);
int ubl_fd_read(lua_State *L);
int ubl_fd_write(lua_State *L);
int ubl_fd_close(lua_State *L);
int ubl_sleep(lua_State *L);
int ubl_ncpus(lua_State *L);

#endif /* URINGBUF_LUA_H */
