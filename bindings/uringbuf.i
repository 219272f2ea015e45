/*
 * uringbuf.i - the one SWIG interface to the uringbuf core, shared by the
 * Python and Lua bindings.
 *
 * What is shared: the module's C API (core/uringbuf.h), its constants, and
 * the rule that objects are opaque handles used through functions, never
 * through struct fields.  What is per language: typemaps (errno to
 * exceptions, buffers as zero-copy views/userdata, event batches) and small
 * helpers, each in its own file included below under #ifdef SWIG<LANG>.
 * Those files run first so that their %ignore/%rename/%typemap lines apply
 * to the header that is %included last.
 */
#if defined(SWIGPYTHON)
%module(package="uringbuf") core
#elif defined(SWIGLUA)
%module uringbuf_core
#else
%module uringbuf
#endif

%{
#include "uringbuf.h"
%}

/* The export macro means nothing to the wrappers. */
#define UB_EXTERN

/* C keeps enum tags apart from functions; SWIG does not (enum ub_buf_state
 * vs ub_buf_state(), enum ub_pool_flags vs ub_pool_flags()), and would drop
 * the functions.  Rename the tags, which no script uses. */
%rename("%s_enum", %$isenum) "";

#if defined(SWIGPYTHON)
%include "python/uringbuf_python.i"
#elif defined(SWIGLUA)
%include "lua/uringbuf_lua.i"
#endif

%include "uringbuf.h"
