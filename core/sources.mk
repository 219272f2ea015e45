# core/sources.mk - the one list of the core's sources and the one set of
# warnings they are built with, read by every build of the core:
# core/Makefile.am and tests/Makefile.am (the fuzzer) include it, lua.mk
# includes it, setup.py and configure.ac read the two lines below.  Keep
# each on one line, "NAME = value".
UB_CORE_FILES = loop.c handle.c probe.c pool.c sendq.c conn.c listener.c dgram.c addr.c
UB_CORE_WARN = -Wall -Wextra -Wstrict-prototypes -Wshadow
