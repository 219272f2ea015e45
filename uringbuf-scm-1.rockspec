-- uringbuf-scm-1.rockspec - the Lua binding of uringbuf for LuaRocks.
-- From a checkout:  luarocks --lua-version 5.4 make uringbuf-scm-1.rockspec
-- Builds with bindings/lua/lua.mk (SWIG 4 and liburing >= 2.3 needed).
-- "scm-1" is LuaRocks' name for the development version: it carries no
-- release number.  The release number lives in configure.ac (AC_INIT) only;
-- the module reports it as uringbuf._VERSION, from core/uringbuf.h's
-- UB_VERSION_*, which `make check` keeps equal to configure.ac's.
rockspec_format = "3.0"
package = "uringbuf"
version = "scm-1"
source = {
	-- `luarocks make` in a checkout builds what is there and ignores this.
	url = "git+https://example.invalid/uringbuf.git",
}
description = {
	summary = "io_uring provided-buffer send queues and multishot receive",
	detailed = [[
Servers over io_uring: multishot receive into a shared buffer pool, and a
serialized send queue per connection on a provided-buffer ring (send
bundles on Linux 6.10+, falling back to plain sends).  Received data is a
userdata view of the pool's memory; forwarding it to another connection
never copies.  Event batches, a server helper with callbacks or coroutines,
and core-side zero-copy pipes.
]],
	license = "MIT",
	labels = { "io_uring", "networking", "linux" },
}
supported_platforms = { "linux" }
dependencies = {
	"lua >= 5.4, < 5.5",
}
external_dependencies = {
	LIBURING = { header = "liburing.h", library = "uring" },
}
build = {
	type = "make",
	makefile = "bindings/lua/lua.mk",
	build_target = "all",
	build_variables = {
		CFLAGS = "$(CFLAGS)",
		LIBFLAG = "$(LIBFLAG)",
		LUA_INCDIR = "$(LUA_INCDIR)",
		URING_CFLAGS = "-I$(LIBURING_INCDIR)",
		URING_LIBS = "-L$(LIBURING_LIBDIR) -luring",
	},
	install_target = "install",
	install_variables = {
		INST_LIBDIR = "$(LIBDIR)",
		INST_LUADIR = "$(LUADIR)",
	},
}
test = {
	type = "command",
	command = "make -f bindings/lua/lua.mk check",
}
