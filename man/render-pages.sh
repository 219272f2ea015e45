#!/bin/sh
# render-pages.sh - every man page renders without a single groff warning,
# through groff -ww (all warnings) and, where man-db is installed, through
# `man --warnings -l` at 80 columns as a reader would see it.
# Pages come from $UB_MAN_PAGES (set by man/Makefile.am) or man3/ and man7/.
# Exit 0, 1 (a warning, shown), or 77 (skip: groff is not installed).
set -u
srcdir=${srcdir:-$(dirname "$0")}
cd "$srcdir" || exit 1  # .so requests resolve against man/
if ! command -v groff >/dev/null 2>&1; then
	echo "SKIP: groff is not installed (apt-get install groff-base)"
	exit 77
fi
pages=${UB_MAN_PAGES:-$(ls man3/*.3 man7/*.7)}
have_man=no
command -v man >/dev/null 2>&1 && have_man=yes
[ $have_man = yes ] || echo "note: man-db not installed: groff check only"
fail=0 n=0
for p in $pages; do
	n=$((n + 1))
	out=$(groff -man -ww -z -Tutf8 "$p" 2>&1)
	if [ -n "$out" ]; then
		echo "$p: groff: $out"
		fail=1
	fi
	# Each page must render to text (a .so target that is missing, or a
	# page without a body, renders to nothing).
	if [ "$(groff -man -Tutf8 "$p" 2>/dev/null | grep -c .)" -lt 5 ]; then
		echo "$p: renders to (almost) nothing"
		fail=1
	fi
	if [ $have_man = yes ]; then
		out=$(LC_ALL=C MANWIDTH=80 man --warnings=all -l "$p" 2>&1 >/dev/null)
		if [ -n "$out" ]; then
			echo "$p: man: $out"
			fail=1
		fi
	fi
done
echo "render-pages: $n pages, $([ $fail = 0 ] && echo "no warnings" || echo FAILED)"
exit $fail
