/*
 * uringbuf_lua.i - Lua typemaps for the shared interface (../uringbuf.i
 * includes this file under SWIGLUA, before core/uringbuf.h).
 *
 * What they do:
 *  - numbers: luaL_checkinteger with a range check instead of SWIG's
 *    lua_tonumber casts (which turn 1.5 into 1 and -1 into 4294967295);
 *  - objects: every ub_loop / ub_pool / ub_buf / ub_conn / ub_listener /
 *    ub_dgram
 *    crosses as a checked handle of uringbuf_lua.c, never a raw pointer, so
 *    a closed, freed or stale handle raises instead of reaching the core;
 *  - errors: a function that returns 0 or -errno gives true or
 *    nil, message, errno; a count, fd or mode gives the integer or the same
 *    triple; constructors (int *err) give the handle or the triple;
 *  - options structs are Lua tables, addresses are "HOST:PORT" strings.
 * What SWIG cannot generate (the event batch, buffer contents, pool_free,
 * send, signals, per-handle state, process calls) is in uringbuf_lua.c and
 * registered with %native.
 * The idiomatic API is uringbuf.lua, on top of this module.
 */

%{
#include <errno.h>
#include <limits.h>
#include <string.h>
#include "uringbuf_lua.h"
%}

%include <stdint.i>

/* ---- numbers ------------------------------------------------------------ */

%typemap(in) int
%{ $1 = (int)ubl_check_int(L, $input, INT_MIN, INT_MAX); %}
%typemap(in) unsigned int, unsigned
%{ $1 = (unsigned)ubl_check_int(L, $input, 0, UINT_MAX); %}
%typemap(in) size_t
%{ $1 = (size_t)ubl_check_int(L, $input, 0, LUA_MAXINTEGER); %}

/* A negative int is a -errno: nil, message, errno. */
%typemap(out) int
%{ if ($1 < 0) SWIG_arg += ubl_push_error(L, $1);
   else { lua_pushinteger(L, (lua_Integer)$1); SWIG_arg++; } %}
%typemap(out) unsigned int, unsigned, size_t, uint32_t, uint64_t
%{ lua_pushinteger(L, (lua_Integer)$1); SWIG_arg++; %}

/* 0 or -errno: true, or nil, message, errno. */
%define UBL_STATUS(fn)
%typemap(out) int fn
%{ if ($1 < 0) SWIG_arg += ubl_push_error(L, $1);
   else { lua_pushboolean(L, 1); SWIG_arg++; } %}
%enddef
UBL_STATUS(ub_buf_release)
UBL_STATUS(ub_buf_set_len)
UBL_STATUS(ub_conn_send_buf)
UBL_STATUS(ub_conn_pause_recv)
UBL_STATUS(ub_conn_resume_recv)
UBL_STATUS(ub_conn_pipe)
UBL_STATUS(ub_conn_shutdown)
UBL_STATUS(ub_conn_close)
UBL_STATUS(ub_conn_abort)
UBL_STATUS(ub_conn_set_water)
UBL_STATUS(ub_conn_set_soft_water)
UBL_STATUS(ub_listener_close)
UBL_STATUS(ub_conn_set_recv_budget)
UBL_STATUS(ub_listener_set_max_conns)
UBL_STATUS(ub_dgram_connect)
UBL_STATUS(ub_dgram_close)
UBL_STATUS(ub_dgram_pause_recv)
UBL_STATUS(ub_dgram_resume_recv)
UBL_STATUS(ub_dgram_want_writable)
UBL_STATUS(ub_dgram_set_water)
UBL_STATUS(ub_dgram_set_recv_budget)

%typemap(out) int ub_conn_is_closing
%{ lua_pushboolean(L, $1 > 0); SWIG_arg++; %}
%typemap(out) int ub_dgram_is_closing
%{ lua_pushboolean(L, $1 > 0); SWIG_arg++; %}
%typemap(out) int ub_loop_needs_wait
%{ lua_pushboolean(L, $1 > 0); SWIG_arg++; %}
%typemap(out) int ub_conn_recv_throttled
%{ lua_pushboolean(L, $1 > 0); SWIG_arg++; %}
%typemap(out) int ub_dgram_recv_throttled
%{ lua_pushboolean(L, $1 > 0); SWIG_arg++; %}
%typemap(out) int ub_buf_truncated
%{ lua_pushboolean(L, $1 > 0); SWIG_arg++; %}
/* An endpoint closing (not yet CLOSED) has no fd: EBADF, not -1's EPERM. */
%typemap(out) int ub_dgram_fd
%{ if ($1 < 0) SWIG_arg += ubl_push_error(L, -EBADF);
   else { lua_pushinteger(L, (lua_Integer)$1); SWIG_arg++; } %}

/* ---- strings ------------------------------------------------------------ */

%typemap(in) const char *
%{ $1 = (char *)luaL_checkstring(L, $input); %}
%typemap(out) const char *
%{ if ($1) lua_pushstring(L, $1); else lua_pushnil(L); SWIG_arg++; %}

/* ---- handles ------------------------------------------------------------ */

%typemap(in) ub_loop *, const ub_loop *
%{ $1 = ubl_check_loop(L, $input); %}
%typemap(in) ub_pool *, const ub_pool *
%{ $1 = ubl_check_pool(L, $input); %}
%typemap(in) ub_buf *, const ub_buf *
%{ $1 = ubl_check_buf(L, $input); %}
%typemap(in) ub_conn *, const ub_conn *
%{ $1 = ubl_check_conn(L, $input); %}
%typemap(in) ub_listener *, const ub_listener *
%{ $1 = ubl_check_listener(L, $input); %}
%typemap(in) ub_dgram *, const ub_dgram *
%{ $1 = ubl_check_dgram(L, $input); %}
/* ub_conn_pipe(src, nil) stops forwarding. */
%typemap(in) ub_conn *dst
%{ $1 = ubl_opt_conn(L, $input); %}

/* A NULL result pushes nothing: the int *err argout below says why. */
%typemap(out) ub_loop *
%{ if ($1) { ubl_push_loop(L, $1); SWIG_arg++; } %}
%typemap(out) ub_pool *
%{ if ($1) { ubl_push_pool(L, $1); SWIG_arg++; } %}
%typemap(out) ub_buf *
%{ if ($1) { ubl_push_buf(L, $1); SWIG_arg++; } %}
%typemap(out) ub_conn *
%{ if ($1) { ubl_push_conn(L, $1); SWIG_arg++; } %}
%typemap(out) ub_listener *
%{ if ($1) { ubl_push_listener(L, $1); SWIG_arg++; } %}
%typemap(out) ub_dgram *
%{ if ($1) { ubl_push_dgram(L, $1); SWIG_arg++; } %}

%typemap(in, numinputs=0) int *err (int tmp)
%{ tmp = 0; $1 = &tmp; %}
%typemap(argout) int *err
%{ if (*$1 < 0) SWIG_arg += ubl_push_error(L, *$1); %}

/* ---- options and addresses ---------------------------------------------- */

%typemap(default) const ub_loop_opts *opts %{ $1 = NULL; %}
%typemap(in) const ub_loop_opts *opts (ub_loop_opts tmp)
%{ ubl_check_loop_opts(L, $input, &tmp); $1 = &tmp; %}

%typemap(default) const ub_dgram_opts * %{ $1 = NULL; %}
%typemap(in) const ub_dgram_opts * (ub_dgram_opts tmp)
%{ ubl_check_dgram_opts(L, $input, &tmp); $1 = &tmp; %}

%typemap(default) const ub_conn_opts * %{ $1 = NULL; %}
%typemap(in) const ub_conn_opts * (ub_conn_opts tmp)
%{ ubl_check_conn_opts(L, $input, &tmp); $1 = &tmp; %}

%typemap(in) (const struct sockaddr *addr, socklen_t addrlen)
	(struct sockaddr_storage ss, socklen_t sslen)
%{ ubl_check_addr(L, $input, &ss, &sslen);
   $1 = (struct sockaddr *)&ss; $2 = sslen; %}

/* ub_addr_parse(s) -> the address in canonical form, or nil, msg, errno. */
%typemap(in, numinputs=0) (struct sockaddr_storage *ss, socklen_t *len)
	(struct sockaddr_storage ss, socklen_t sslen)
%{ sslen = sizeof(ss); $1 = &ss; $2 = &sslen; %}
%typemap(argout) (struct sockaddr_storage *ss, socklen_t *len)
%{ if (result == 0) {
	char out[128];
	int r = ub_addr_format((struct sockaddr *)$1, *$2, out, sizeof(out));
	if (r < 0) SWIG_arg += ubl_push_error(L, r);
	else { lua_pushstring(L, out); SWIG_arg++; }
   } %}

/* ub_sock_name(fd, peer) -> "HOST:PORT", or nil, msg, errno. */
%typemap(in, numinputs=0) (char *out, size_t outlen) (char buf[128])
%{ buf[0] = 0; $1 = buf; $2 = sizeof(buf); %}
%typemap(argout) (char *out, size_t outlen)
%{ if (result >= 0) { lua_pushstring(L, $1); SWIG_arg++; } %}

%typemap(out) int ub_addr_parse, int ub_sock_name
%{ if ($1 < 0) SWIG_arg += ubl_push_error(L, $1); %}

/* ub_loop_mode_check(loop, mode) -> true, or nil, reason, EOPNOTSUPP; the
 * option checks likewise (EINVAL or EOPNOTSUPP). */
%typemap(out) int ub_loop_mode_check, int ub_loop_opts_check,
	int ub_pool_check, int ub_conn_opts_check, int ub_water_check,
	int ub_dgram_opts_check
%{ if ($1 >= 0) { lua_pushboolean(L, 1); SWIG_arg++; } %}
%typemap(in, numinputs=0) const char **reason (const char *tmp)
%{ tmp = NULL; $1 = ($1_ltype)&tmp; %}
%typemap(argout) const char **reason
%{ if (result < 0) {
	lua_pushnil(L);
	lua_pushstring(L, *$1 ? *$1 : strerror(-result));
	lua_pushinteger(L, -result);
	SWIG_arg += 3;
   } %}

/* Functions whose arguments the core checks: nil, the check's reason,
 * errno instead of a bare EINVAL (argN: the wrapper's converted
 * arguments; ub_dgram_open is dgram_open in uringbuf_lua.c). */
%define UBL_CHECK_FIRST(fn, check)
%exception fn
%{ { const char *why_ = NULL; int r_ = check;
     if (r_ < 0) return ubl_push_reason(L, r_, why_); }
   $action %}
%enddef
UBL_CHECK_FIRST(ub_loop_new, ub_loop_opts_check(arg1, &why_))
UBL_CHECK_FIRST(ub_pool_new, ub_pool_check(arg2, arg3, arg4, &why_))
UBL_CHECK_FIRST(ub_conn_connect, ub_conn_opts_check(arg1, arg4, &why_))
UBL_CHECK_FIRST(ub_conn_adopt, ub_conn_opts_check(arg1, arg3, &why_))
UBL_CHECK_FIRST(ub_listen, ub_conn_opts_check(arg1, arg6, &why_))
UBL_CHECK_FIRST(ub_listener_adopt, ub_conn_opts_check(arg1, arg3, &why_))
UBL_CHECK_FIRST(ub_dgram_adopt, ub_dgram_opts_check(arg1, arg3, &why_))
UBL_CHECK_FIRST(ub_conn_set_water, ub_water_check(arg2, arg3, &why_))
UBL_CHECK_FIRST(ub_dgram_set_water, ub_water_check(arg2, arg3, &why_))

/* ---- what the runtime does instead -------------------------------------- */

/* Raw memory, udata (the binding's own) and structs stay in C. */
%ignore ub_event;
%ignore ub_loop_opts;
%ignore ub_conn_opts;
%ignore ub_conn_opts_init;
%ignore ub_pool_base;
%ignore ub_pool_buf;   /* would expose KERNEL buffers */
%ignore ub_buf_data;
%ignore ub_conn_udata;
%ignore ub_conn_set_udata;
%ignore ub_listener_udata;
%ignore ub_listener_set_udata;
%ignore ub_addr_format;
/* Lifetime is the handles' own: each holds what it names (a flat release
 * could free it under the handle). */
%rename("$ignore", regextarget=1) "^ub_(conn|listener|dgram)_(hold|release|is_closed)$";
%ignore ub_listener_loop;
/* Datagram endpoints: a checked handle ("uringbuf.dgram") like conns;
 * open and send are natives (an autobound "unix:", string or buffer data,
 * an optional address that may be a received buffer's source). */
%ignore ub_dgram_opts;
%ignore ub_dgram_opts_init;
%ignore ub_dgram_udata;
%ignore ub_dgram_set_udata;
%ignore ub_dgram_open;
%ignore ub_dgram_send;
%ignore ub_dgram_send_buf;
%ignore ub_buf_addr;   /* raw sockaddr: buf:source() formats it */
%ignore ub_buf_addr_format;

/* Replaced by natives that also retire handles or take Lua strings. */
%ignore ub_loop_free;
%ignore ub_loop_wait;
%ignore ub_pool_free;
%ignore ub_conn_send;
%ignore ub_conn_set_idle_timeout; /* seconds: conn_set_idle_timeout */

%native(loop_close) int ubl_loop_close(lua_State *L);
%native(loop_wait) int ubl_loop_wait(lua_State *L);
%native(pool_free) int ubl_pool_free(lua_State *L);
%native(conn_send) int ubl_conn_send(lua_State *L);
%native(dgram_open) int ubl_dgram_open(lua_State *L);
%native(dgram_send) int ubl_dgram_send(lua_State *L);
%native(catch_signals) int ubl_catch_signals(lua_State *L);
%native(signaled) int ubl_signaled(lua_State *L);
%native(valid) int ubl_handle_valid(lua_State *L);
%native(set_buffers) int ubl_set_buffers(lua_State *L);
%native(now) int ubl_now(lua_State *L);
%native(strerror) int ubl_strerror(lua_State *L);
%native(conn_set_idle_timeout) int ubl_conn_set_idle_timeout(lua_State *L);
%native(state) int ubl_handle_state(lua_State *L);
%native(conn_state) int ubl_conn_state(lua_State *L);
%native(set_state) int ubl_handle_set_state(lua_State *L);
/* Processes, for the Lua layer's workers. */
%native(fork) int ubl_fork(lua_State *L);
%native(waitpid) int ubl_waitpid(lua_State *L);
%native(kill) int ubl_kill(lua_State *L);
%native(getpid) int ubl_getpid(lua_State *L);
%native(getppid) int ubl_getppid(lua_State *L);
%native(set_pdeathsig) int ubl_set_pdeathsig(lua_State *L);
%native(pipe) int ubl_pipe(lua_State *L);
%native(fd_read) int ubl_fd_read(lua_State *L);
%native(fd_write) int ubl_fd_write(lua_State *L);
%native(fd_close) int ubl_fd_close(lua_State *L);
%native(sleep) int ubl_sleep(lua_State *L);
%native(ncpus) int ubl_ncpus(lua_State *L);

%init %{
	ubl_init(L);
%}
