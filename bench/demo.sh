#!/usr/bin/env bash
# demo.sh BUILD_DIR - the C echo server behind the C proxy, once per send mode
# (bundle, ring, serial), loaded by bench/loadgen; prints msgs/s and MB/s per
# mode and the ratio of bundle and ring to serial, measured side by side.
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

MODES="bundle ring serial"
SIZES="64 4096"
CONNS=8
ROUNDS=${DEMO_ROUNDS:-3}
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
live=""
for mode in $MODES; do
	start "echo-$mode" "$ECHO" --listen 127.0.0.1:0 --mode "$mode"
	rc=$?
	if [ $rc -ne 0 ]; then
		[ $rc -eq 2 ] && failed=1
		echo "demo: mode $mode skipped" >&2
		continue
	fi
	ECHO_PID[$mode]=$PID
	start "proxy-$mode" "$PROXY" --listen 127.0.0.1:0 --to "$ADDR" \
		--mode "$mode"
	rc=$?
	if [ $rc -ne 0 ]; then
		[ $rc -eq 2 ] && failed=1
		echo "demo: mode $mode skipped" >&2
		stop "echo-$mode" "${ECHO_PID[$mode]}"
		continue
	fi
	PROXY_PID[$mode]=$PID
	PROXY_ADDR[$mode]=$ADDR
	live+=" $mode"
done

for ((round = 1; round <= ROUNDS; round++)); do
	for size in $SIZES; do
		for mode in $live; do
			out=$("$LOADGEN" --connect "${PROXY_ADDR[$mode]}" \
				--conns $CONNS --size "$size" \
				--seconds "$SECONDS_PER_ROUND" --json \
				2>"$TMP/loadgen.err")
			rc=$?
			mps=$(json_field msgs_per_s <<<"$out")
			mbps=$(json_field mb_per_s <<<"$out")
			errs=$(json_field errors <<<"$out")
			ERRS[$mode,$size]=$(( ${ERRS[$mode,$size]:-0} + ${errs:-1} ))
			if [ $rc -ne 0 ] || [ -z "$mps" ]; then
				failed=1
				echo "demo: loadgen exited $rc (mode $mode, size $size):" >&2
				grep -v '^stream:' "$TMP/loadgen.err" | head -5 |
					sed "s/^/  /" >&2
				continue
			fi
			RUNS_MPS[$mode,$size]+=" $mps"
			RUNS_MBPS[$mode,$size]+=" $mbps"
		done
	done
done

for mode in $live; do
	stop "proxy-$mode" "${PROXY_PID[$mode]}"
	stop "echo-$mode" "${ECHO_PID[$mode]}"
done

echo "echo behind proxy, loadgen --conns $CONNS, median of $ROUNDS rounds of ${SECONDS_PER_ROUND}s"
printf '%-8s %6s %12s %10s %7s\n' mode size msgs/s MB/s errors
for mode in $MODES; do
	case " $live " in
	*" $mode "*) ;;
	*)	printf '%-8s %6s %12s %10s %7s\n' "$mode" - unavailable - -
		continue ;;
	esac
	for size in $SIZES; do
		# shellcheck disable=SC2086  # the runs are a word list
		mps=$(median ${RUNS_MPS[$mode,$size]:-})
		# shellcheck disable=SC2086
		mbps=$(median ${RUNS_MBPS[$mode,$size]:-})
		[ -n "$mps" ] && MPS[$mode,$size]=$mps
		printf '%-8s %6s %12.0f %10.2f %7s\n' "$mode" "$size" \
			"${mps:-0}" "${mbps:-0}" "${ERRS[$mode,$size]:--}"
	done
done

echo
for size in $SIZES; do
	base=${MPS[serial,$size]:-}
	line="size $size: msgs/s relative to serial:"
	for mode in bundle ring; do
		v=${MPS[$mode,$size]:-}
		if [ -n "$base" ] && [ -n "$v" ]; then
			line+=$(awk -v a="$v" -v b="$base" -v m="$mode" \
				'BEGIN { printf " %s %.2fx", m, (b > 0 ? a / b : 0) }')
		else
			line+=" $mode n/a"
		fi
	done
	echo "$line"
done
exit $failed
