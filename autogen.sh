#!/bin/sh
# Generate ./configure and the Makefile.in files from a git checkout.
set -e
cd "$(dirname "$0")"
mkdir -p m4 # libtool's macros go here; git does not keep empty directories
autoreconf -fi
