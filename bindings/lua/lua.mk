# bindings/lua/lua.mk - the Lua 5.4 binding, on its own (no configure);
# bindings/lua/Makefile.am drives it from the Autotools build.
#
#   make -f bindings/lua/lua.mk                build into O (default build/lua,
#                                         relative to the top of the tree)
#   make -f bindings/lua/lua.mk check           run tests/lua/run.lua against O
#   make -f bindings/lua/lua.mk install         uringbuf_core.so -> INSTALL_CMOD,
#                                         uringbuf.lua, uringbuf/server.lua,
#                                         uringbuf/udp.lua,
#                                         uringbuf/luv.lua,
#                                         uringbuf/cqueues.lua -> INSTALL_LMOD
#   make -f bindings/lua/lua.mk doc             the API reference, docs/lua-api/
#                                         (LDoc: Debian lua-ldoc)
#   make -f bindings/lua/lua.mk SANITIZE=1 O=build/lua-asan check-asan
#
# uringbuf_core.so is the SWIG wrapper (../uringbuf.i with uringbuf_lua.i),
# the binding's C runtime and the core's sources, compiled with -fPIC and
# hidden visibility: one file, no liburingbuf.so to find at run time.
# LuaRocks (build type "make") passes CFLAGS, LIBFLAG, LUA_INCDIR,
# INST_LIBDIR and INST_LUADIR; they are honoured here.

HERE := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
TOP := $(abspath $(HERE)/../..)
# The build directory; a relative O is taken from the top of the tree.
O ?= build/lua
override O := $(abspath $(if $(filter /%,$(O)),$(O),$(TOP)/$(O)))

LUA ?= lua5.4
LUA_PC ?= lua5.4
PKG_CONFIG ?= pkg-config
SWIG ?= swig

ifdef LUA_INCDIR
LUA_CFLAGS ?= -I$(LUA_INCDIR)
else
LUA_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags $(LUA_PC))
endif
URING_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags liburing)
URING_LIBS ?= $(shell $(PKG_CONFIG) --libs liburing)

ifdef INST_LIBDIR
INSTALL_CMOD ?= $(INST_LIBDIR)
endif
ifdef INST_LUADIR
INSTALL_LMOD ?= $(INST_LUADIR)
endif
INSTALL_CMOD ?= $(shell $(PKG_CONFIG) --variable=INSTALL_CMOD $(LUA_PC))
INSTALL_LMOD ?= $(shell $(PKG_CONFIG) --variable=INSTALL_LMOD $(LUA_PC))

CFLAGS ?= -O2 -g
LIBFLAG ?= -shared
SAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=all
ifeq ($(SANITIZE),1)
CFLAGS += $(SAN_FLAGS)
LDFLAGS += $(SAN_FLAGS)
endif

# UB_STATIC_BUILD: the core's symbols stay inside the module.
UB_CPPFLAGS = -D_GNU_SOURCE -DUB_STATIC_BUILD -I$(TOP)/core -I$(HERE) \
	$(URING_CFLAGS) $(LUA_CFLAGS)
UB_CFLAGS = -std=gnu11 -fPIC -fvisibility=hidden
# The core's sources and warnings (core/sources.mk); the Autotools build
# passes configure's checked set instead (with -Werror under
# --enable-werror) as UB_WARN.
include $(TOP)/core/sources.mk
UB_WARN ?= $(UB_CORE_WARN)
WARN = $(UB_WARN)
# SWIG's generated code is not ours to clean up.
WRAP_WARN = -Wall -Wno-unused-parameter -Wno-unused-function

CORE_SRCS := $(addprefix $(TOP)/core/,$(UB_CORE_FILES))
CORE_OBJS := $(patsubst $(TOP)/core/%.c,$(O)/core/%.o,$(CORE_SRCS))
HEADERS := $(wildcard $(TOP)/core/*.h) $(HERE)/uringbuf_lua.h
OBJS := $(CORE_OBJS) $(O)/uringbuf_lua.o $(O)/uringbuf_wrap.o

# Pure-Lua modules: uringbuf (the event API), uringbuf.server (the server
# helper, which uringbuf loads), and the event-loop integrations
# uringbuf.udp (datagram endpoints with callbacks, which uringbuf loads too),
# uringbuf.luv and uringbuf.cqueues (each loads its loop library only when
# required, so neither library is a dependency of uringbuf itself).
LMODS = uringbuf.lua uringbuf/server.lua uringbuf/udp.lua uringbuf/luv.lua \
	uringbuf/cqueues.lua

all: $(O)/uringbuf_core.so $(addprefix $(O)/,$(LMODS))

$(O)/uringbuf_wrap.c: $(TOP)/bindings/uringbuf.i $(HERE)/uringbuf_lua.i \
		$(TOP)/core/uringbuf.h
	@mkdir -p $(O)
	$(SWIG) -lua -I$(TOP)/bindings -I$(TOP)/core -o $@ $<

$(O)/uringbuf_wrap.o: $(O)/uringbuf_wrap.c $(HEADERS)
	$(CC) $(UB_CPPFLAGS) $(UB_CFLAGS) $(WRAP_WARN) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(O)/uringbuf_lua.o: $(HERE)/uringbuf_lua.c $(HEADERS)
	@mkdir -p $(O)
	$(CC) $(UB_CPPFLAGS) $(UB_CFLAGS) $(WARN) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(O)/core/%.o: $(TOP)/core/%.c $(HEADERS)
	@mkdir -p $(O)/core
	$(CC) $(UB_CPPFLAGS) $(UB_CFLAGS) $(WARN) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# No -llua: the interpreter that loads the module provides the Lua API.
$(O)/uringbuf_core.so: $(OBJS)
	$(CC) $(LIBFLAG) $(LDFLAGS) -o $@ $(OBJS) $(URING_LIBS)

$(O)/%.lua: $(HERE)/%.lua
	@mkdir -p $(dir $@)
	cp $< $@

# The tests, against the module in O (nothing installed needed).
TEST_ENV = LUA_CPATH='$(O)/?.so;;' LUA_PATH='$(O)/?.lua;;' \
	UB_LUA='$(LUA)'
check: all
	cd $(TOP) && $(TEST_ENV) $(LUA) tests/lua/run.lua $(TESTS)

# ASan must be the first library loaded: preload it into the interpreter.
# Lua's own allocations are not ours to leak-check.
# The runtime of the compiler that built the module: gcc's libasan, or
# clang's own (clang -print-file-name=libasan.so finds gcc's, which does not
# match a clang-built module).
ASAN_LIB = $(shell if $(CC) --version 2>/dev/null | grep -q clang; then \
	$(CC) -print-file-name=libclang_rt.asan-`uname -m`.so; \
	else $(CC) -print-file-name=libasan.so; fi)
check-asan: all
	cd $(TOP) && $(TEST_ENV) LD_PRELOAD='$(ASAN_LIB)' \
		ASAN_OPTIONS=detect_leaks=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(LUA) tests/lua/run.lua $(TESTS)

# The API reference (docs/lua-api/) from the LDoc comments in the modules
# (Debian: lua-ldoc, and lua-markdown for the markdown in them).  Generated
# files are committed; run this after changing a documented function.
LDOC ?= ldoc
doc:
	cd $(HERE) && $(LDOC) -c config.ld -d $(TOP)/docs/lua-api .

install: all
	install -d '$(DESTDIR)$(INSTALL_CMOD)' '$(DESTDIR)$(INSTALL_LMOD)'
	install -m 755 $(O)/uringbuf_core.so '$(DESTDIR)$(INSTALL_CMOD)/uringbuf_core.so'
	install -d '$(DESTDIR)$(INSTALL_LMOD)/uringbuf'
	for f in $(LMODS); do \
		install -m 644 $(HERE)/$$f '$(DESTDIR)$(INSTALL_LMOD)/'$$f || exit 1; \
	done

uninstall:
	rm -f '$(DESTDIR)$(INSTALL_CMOD)/uringbuf_core.so'
	for f in $(LMODS); do rm -f '$(DESTDIR)$(INSTALL_LMOD)/'$$f; done
	-rmdir '$(DESTDIR)$(INSTALL_LMOD)/uringbuf' 2>/dev/null; true

clean:
	rm -f $(OBJS) $(O)/uringbuf_wrap.c $(O)/uringbuf_core.so \
		$(addprefix $(O)/,$(LMODS))
	-rmdir $(O)/core $(O)/uringbuf 2>/dev/null; true

.PHONY: all check check-asan doc install uninstall clean
