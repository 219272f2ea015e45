#!/usr/bin/env bash
# demo.sh BUILD_DIR - the C echo server behind a proxy, once per send mode
# (bundle, ring, serial) and per proxy: the C one (examples/proxy), and the
# Python and Lua ones (examples/proxy.py, examples/proxy.lua, with their
# default per-buffer handlers) when BUILD_DIR has the bindings built.
# Loaded by bench/loadgen; prints msgs/s and MB/s per proxy and mode, the
# ratio of bundle and ring to serial, and of each binding to C.
#
# Side by side: the servers of every mode run together (idle ones cost
# nothing) and the load runs in ROUNDS short rounds that alternate between
# the modes; each figure is the median of its rounds.  On a shared 2-core
# machine that keeps a burst of unrelated load from landing on one mode only.
#
# A mode the kernel lacks makes the servers exit 1 with a reason: the reason
# is printed and the mode skipped.  Every server must exit 0 on SIGTERM.
# Exit: 0 all fine, 1 a server or loadgen failed (data errors included).
set -u

usage() { echo "usage: $0 BUILD_DIR" >&2; exit 1; }
[ $# -eq 1 ] || usage
B=$1
ECHO=$B/examples/echo
PROXY=$B/examples/proxy
LOADGEN=$B/bench/loadgen
for bin in "$ECHO" "$PROXY" "$LOADGEN"; do
	[ -x "$bin" ] || { echo "demo: $bin: not built" >&2; exit 1; }
done
SRC=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "$B" && pwd)

# The proxies: C always; Python and Lua when their bindings are built here.
LANGS="c"
declare -A PROXY_CMD
PROXY_CMD[c]=$PROXY
if [ -d "$B/bindings/python/lib/uringbuf" ] && command -v python3 >/dev/null; then
	LANGS+=" py"
	PROXY_CMD[py]="env PYTHONPATH=$B/bindings/python/lib python3 $SRC/examples/proxy.py"
else
	echo "demo: Python proxy skipped: no build in $B/bindings/python (configure --enable-python)" >&2
fi
if [ -f "$B/bindings/lua/uringbuf_core.so" ] && command -v lua5.4 >/dev/null; then
	LANGS+=" lua"
	PROXY_CMD[lua]="env LUA_CPATH=$B/bindings/lua/?.so;; LUA_PATH=$B/bindings/lua/?.lua;; lua5.4 $SRC/examples/proxy.lua"
else
	echo "demo: Lua proxy skipped: no build in $B/bindings/lua (configure --enable-lua)" >&2
fi

MODES="bundle ring serial"
SIZES="64 4096"
CONNS=8
ROUNDS=${DEMO_ROUNDS:-2}
SECONDS_PER_ROUND=${DEMO_SECONDS:-1}
START_TIMEOUT=5   # seconds to wait for "listening on"
STOP_TIMEOUT=5    # seconds to wait for exit after SIGTERM

TMP=$(mktemp -d "${TMPDIR:-/tmp}/uringbuf-demo.XXXXXX") || exit 1
PIDS=()
failed=0

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD... : run CMD in the background, wait for its
# "listening on HOST:PORT" line.  Sets ADDR and PID.
# Returns 0 (listening), 1 (exited 1: reason printed), 2 (other failure).
start() {
	local name=$1 i line rc
	shift
	"$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	PID=$!
	PIDS+=("$PID")
	for ((i = 0; i < START_TIMEOUT * 20; i++)); do
		line=$(grep -m1 '^listening on ' "$TMP/$name.out" 2>/dev/null)
		if [ -n "$line" ]; then
			ADDR=${line#listening on }
			return 0
		fi
		if ! kill -0 "$PID" 2>/dev/null; then
			wait "$PID"
			rc=$?
			forget "$PID"
			if [ "$rc" -eq 1 ]; then
				sed "s/^/  /" "$TMP/$name.err"
				return 1
			fi
			echo "demo: $name exited $rc before listening:" >&2
			sed "s/^/  /" "$TMP/$name.err" >&2
			return 2
		fi
		sleep 0.05
	done
	echo "demo: $name did not print 'listening on' within ${START_TIMEOUT}s" >&2
	return 2
}

forget() {
	local p keep=()
	for p in "${PIDS[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	PIDS=("${keep[@]+"${keep[@]}"}")
}

# stop NAME PID: SIGTERM, wait (bounded), check the exit status is 0.
stop() {
	local name=$1 pid=$2 i rc
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < STOP_TIMEOUT * 20; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "demo: $name ignored SIGTERM for ${STOP_TIMEOUT}s; killing it" >&2
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid"
	rc=$?
	forget "$pid"
	if [ "$rc" -ne 0 ]; then
		echo "demo: $name exited $rc after SIGTERM (want 0):" >&2
		sed "s/^/  /" "$TMP/$name.err" >&2
		failed=1
	fi
}

json_field() { # json_field NAME < json
	sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p"
}

median() { # median of the arguments (numbers)
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
		END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A ECHO_PID PROXY_PID PROXY_ADDR RUNS_MPS RUNS_MBPS ERRS MPS
live=""        # "lang:mode" pairs with a proxy listening
live_modes=""
for mode in $MODES; do
	start "echo-$mode" "$ECHO" --listen 127.0.0.1:0 --mode "$mode"
	rc=$?
	if [ $rc -ne 0 ]; then
		[ $rc -eq 2 ] && failed=1
		echo "demo: mode $mode skipped" >&2
		continue
	fi
	ECHO_PID[$mode]=$PID
	echo_addr=$ADDR
	live_modes+=" $mode"
	for lang in $LANGS; do
		# shellcheck disable=SC2086  # the command is a word list
		start "proxy-$lang-$mode" ${PROXY_CMD[$lang]} --listen 127.0.0.1:0 \
			--to "$echo_addr" --mode "$mode"
		rc=$?
		if [ $rc -ne 0 ]; then
			[ $rc -eq 2 ] && failed=1
			echo "demo: $lang proxy, mode $mode skipped" >&2
			continue
		fi
		PROXY_PID[$lang:$mode]=$PID
		PROXY_ADDR[$lang:$mode]=$ADDR
		live+=" $lang:$mode"
	done
done

total=$(( $(wc -w <<<"$live") * $(wc -w <<<"$SIZES") * ROUNDS * SECONDS_PER_ROUND ))
echo "demo: $(wc -w <<<"$live") proxies, about ${total}s of load" >&2
for ((round = 1; round <= ROUNDS; round++)); do
	for size in $SIZES; do
		for key in $live; do
			out=$("$LOADGEN" --connect "${PROXY_ADDR[$key]}" \
				--conns $CONNS --size "$size" \
				--seconds "$SECONDS_PER_ROUND" --json \
				2>"$TMP/loadgen.err")
			rc=$?
			mps=$(json_field msgs_per_s <<<"$out")
			mbps=$(json_field mb_per_s <<<"$out")
			errs=$(json_field errors <<<"$out")
			ERRS[$key,$size]=$(( ${ERRS[$key,$size]:-0} + ${errs:-1} ))
			if [ $rc -ne 0 ] || [ -z "$mps" ]; then
				failed=1
				echo "demo: loadgen exited $rc ($key, size $size):" >&2
				grep -v '^stream:' "$TMP/loadgen.err" | head -5 |
					sed "s/^/  /" >&2
				continue
			fi
			RUNS_MPS[$key,$size]+=" $mps"
			RUNS_MBPS[$key,$size]+=" $mbps"
		done
	done
done

for key in $live; do
	stop "proxy-${key/:/-}" "${PROXY_PID[$key]}"
done
for mode in $live_modes; do
	stop "echo-$mode" "${ECHO_PID[$mode]}"
done

echo "C echo behind each proxy, loadgen --conns $CONNS, median of $ROUNDS rounds of ${SECONDS_PER_ROUND}s"
printf '%-6s %-8s %6s %12s %10s %7s\n' proxy mode size msgs/s MB/s errors
for lang in $LANGS; do
	for mode in $MODES; do
		key=$lang:$mode
		case " $live " in
		*" $key "*) ;;
		*)	printf '%-6s %-8s %6s %12s %10s %7s\n' "$lang" "$mode" - unavailable - -
			continue ;;
		esac
		for size in $SIZES; do
			# shellcheck disable=SC2086  # the runs are a word list
			mps=$(median ${RUNS_MPS[$key,$size]:-})
			# shellcheck disable=SC2086
			mbps=$(median ${RUNS_MBPS[$key,$size]:-})
			[ -n "$mps" ] && MPS[$key,$size]=$mps
			printf '%-6s %-8s %6s %12.0f %10.2f %7s\n' "$lang" "$mode" \
				"$size" "${mps:-0}" "${mbps:-0}" "${ERRS[$key,$size]:--}"
		done
	done
done

ratio() { # ratio A B LABEL: " LABEL A/Bx", or " LABEL n/a"
	if [ -n "$1" ] && [ -n "$2" ]; then
		awk -v a="$1" -v b="$2" -v m="$3" \
			'BEGIN { printf " %s %.2fx", m, (b > 0 ? a / b : 0) }'
	else
		printf ' %s n/a' "$3"
	fi
}

echo
for lang in $LANGS; do
	for size in $SIZES; do
		line="$lang, size $size: msgs/s relative to serial:"
		for mode in bundle ring; do
			line+=$(ratio "${MPS[$lang:$mode,$size]:-}" \
				"${MPS[$lang:serial,$size]:-}" "$mode")
		done
		echo "$line"
	done
done
for lang in $LANGS; do
	[ "$lang" = c ] && continue
	for size in $SIZES; do
		line="$lang, size $size: msgs/s relative to the C proxy:"
		for mode in $MODES; do
			line+=$(ratio "${MPS[$lang:$mode,$size]:-}" \
				"${MPS[c:$mode,$size]:-}" "$mode")
		done
		echo "$line"
	done
done
exit $failed
