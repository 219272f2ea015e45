# scripts/common.sh - shared by scripts/demo and scripts/test (source it).
#
#   ub_install_deps           install missing Debian packages (idempotent)
#   ub_build DIR [ARGS...]    out-of-tree build in $UB_ROOT/DIR: configure
#                             with ARGS (e.g. --enable-werror CC=clang), make
#
# shellcheck shell=bash

UB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UB_JOBS=${UB_JOBS:-2}

# Everything a fresh Debian 12 machine needs to build, test and benchmark
# uringbuf, bindings included.
UB_DEPS=(
	build-essential autoconf automake libtool autoconf-archive pkg-config
	liburing-dev clang valgrind socat iperf3
	swig liblua5.4-dev lua5.4 python3-wheel-whl
	# Debian's own python3 needs these to build the extension; a python3
	# of another origin first on PATH (pyenv) brings its own.
	python3 python3-dev python3-setuptools python3-venv
	# Sanitizer and libFuzzer runtimes for clang (the asan and fuzz suites).
	libclang-rt-14-dev
	# The event loops uringbuf joins (tests) and the peers it is measured
	# against (bench/run), plus the plot.
	lua-luv lua-cqueues python3-uvloop gnuplot-nox
	# bench/run's redis group: redis-benchmark through each proxy.
	redis-server redis-tools
	# bench/run's http group: wrk against the httpd examples and peers.
	wrk
	# The man pages' checks render them and look them up once installed.
	groff-base man-db
)

ub_log() {
	printf '==> %s\n' "$*" >&2
}

ub_err() {
	printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2
}

ub_die() {
	ub_err "$@"
	exit 1
}

# Run a command as root: directly when we are root, else through sudo.
ub_as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		ub_die "need root (or sudo) to run: $*"
	fi
}

# Install the missing packages of UB_DEPS.  Silent when nothing is missing.
ub_install_deps() {
	local pkg status missing=()

	command -v dpkg-query >/dev/null 2>&1 ||
		ub_die "dpkg-query not found: this script expects Debian 12"
	for pkg in "${UB_DEPS[@]}"; do
		status=$(dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null) || status=
		case $status in
		*"install ok installed"*) ;;
		*) missing+=("$pkg") ;;
		esac
	done
	[ ${#missing[@]} -eq 0 ] && return 0

	ub_log "installing missing packages: ${missing[*]}"
	ub_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
		ub_die "apt-get update failed"
	ub_as_root env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends "${missing[@]}" ||
		ub_die "apt-get install failed: ${missing[*]}"
}

# Generate ./configure if it is missing or older than configure.ac.
ub_autogen() {
	if [ ! -x "$UB_ROOT/configure" ] ||
	   [ "$UB_ROOT/configure.ac" -nt "$UB_ROOT/configure" ]; then
		ub_log "autogen.sh (autoreconf -fi)"
		if ! sh "$UB_ROOT/autogen.sh"; then
			ub_err "autoreconf failed"
			return 1
		fi
	fi
}

# ub_build DIR [CONFIGURE ARGS...]
# Configure (only when DIR is new or the arguments changed; make reruns
# config.status itself when configure changes) and build with make -j$UB_JOBS.
# DIR is relative to the repository root; keep it build*/ (gitignored).
# Returns non-zero, with a message, if any step fails.
ub_build() {
	local dir=${1:?usage: ub_build DIR [configure args...]}
	shift
	local bdir="$UB_ROOT/$dir" args stamp

	ub_autogen || return 1
	if [ -f "$UB_ROOT/config.status" ]; then
		ub_err "the source tree is configured in place; run 'make distclean' in $UB_ROOT first (builds go in build*/)"
		return 1
	fi
	mkdir -p "$bdir" || return 1

	args=
	[ $# -eq 0 ] || args=$(printf '%q ' "$@")
	stamp="$bdir/.ub-configure-args"
	if [ ! -f "$bdir/config.status" ] || [ ! -f "$bdir/Makefile" ] ||
	   [ "$(cat "$stamp" 2>/dev/null)" != "$args" ]; then
		ub_log "configure $dir: ${args:-(defaults)}"
		rm -f "$stamp"
		if ! (cd "$bdir" && "$UB_ROOT/configure" "$@") >"$bdir/configure.out" 2>&1; then
			tail -n 30 "$bdir/configure.out" >&2
			ub_err "configure failed in $dir (full output: $bdir/configure.out, details: $bdir/config.log)"
			return 1
		fi
		printf '%s' "$args" >"$stamp"
	fi

	ub_log "make -j$UB_JOBS in $dir"
	if ! make --no-print-directory -C "$bdir" -j"$UB_JOBS"; then
		ub_err "build failed in $dir"
		return 1
	fi
}

# How build/ is configured, by scripts/demo and scripts/test alike (so that
# neither reconfigures what the other built): the C library with -Werror,
# and both bindings.
UB_BUILD_ARGS=(--enable-werror --enable-lua --enable-python)
