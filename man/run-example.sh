#!/bin/sh
# run-example.sh - the EXAMPLE of uringbuf(7), extracted and built by
# `make check` as uringbuf-example, echoes "hello" through a listener and a
# client on one loop over 127.0.0.1.  Exit 0, 1, or 77 when the kernel has no
# usable io_uring (the example says so on stderr).
set -u
out=$(timeout 30 ./uringbuf-example 2>uringbuf-example.err)
rc=$?
err=$(cat uringbuf-example.err)
rm -f uringbuf-example.err
case $err in
"ub_loop_new: Function not implemented"* | "ub_loop_new: Operation not permitted"*)
	echo "SKIP: $err"
	exit 77 ;;
esac
[ -n "$err" ] && echo "stderr: $err"
if [ $rc -ne 0 ] || [ "$out" != hello ]; then
	echo "FAIL: exit $rc, output '$out' (expected 'hello')"
	exit 1
fi
echo "ok: the example echoed '$out'"
