"""Build the uringbuf Python binding: the C core (core/*.c) and the SWIG
wrapper of bindings/uringbuf.i in one extension module, uringbuf._core,
with the pure-Python package from bindings/python/uringbuf.

    pip install .                                   # online (PyPI)
    pip install --no-build-isolation .              # offline: needs setuptools
                                                    # and wheel installed
    python3 setup.py build_ext --inplace            # into the source tree
    python3 setup.py build --build-base build/python --build-lib build/python/lib
                                                    # for tests: PYTHONPATH=build/python/lib
    python3 setup.py sdist                          # uringbuf-VERSION.tar.gz in dist/

Nothing is written into the source tree unless asked for (--inplace, sdist's
dist/): scratch goes to --build-base, egg-info to build/python (created only
when egg_info runs), so `make distcheck` can build from a read-only tree.

The version is configure.ac's (AC_INIT), the one place it is kept; setup.py
refuses to run if core/uringbuf.h's UB_VERSION_* disagree with it.

Needs swig (4.x; $SWIG overrides), a C compiler and liburing (headers and
library).  Extra compiler flags come from CFLAGS/LDFLAGS as usual (an ASan
build: CFLAGS="-fsanitize=address -fno-omit-frame-pointer" LDFLAGS=...).
"""
import glob
import os
import re
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.egg_info import egg_info

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_DIR = os.path.join("bindings", "python", "uringbuf")
INTERFACE = os.path.join("bindings", "uringbuf.i")
SWIG_INPUTS = [INTERFACE, os.path.join("core", "uringbuf.h")] + sorted(
    glob.glob(os.path.join("bindings", "python", "*.i")))


def read_core_mk(name):
    """A "NAME = value" line of core/sources.mk: the one list of the core's
    sources and warnings that every build of the core uses."""
    with open(os.path.join(HERE, "core", "sources.mk"), encoding="utf-8") as f:
        m = re.search(r"^%s\s*=\s*(.*)$" % name, f.read(), re.M)
    if not m:
        raise SystemExit("uringbuf: no %s in core/sources.mk" % name)
    return m.group(1).split()


CORE_SOURCES = [os.path.join("core", f) for f in read_core_mk("UB_CORE_FILES")]
# The core is built with its warnings (the Autotools build passes
# configure's checked set, -Werror included under --enable-werror, as
# UB_WARN); the SWIG wrapper, generated code, is not.
CORE_WARN = os.environ.get("UB_WARN", "").split() or read_core_mk("UB_CORE_WARN")
BUILD_BASE = os.path.join("build", "python")


def read_version():
    """The version in configure.ac's AC_INIT, checked against the header."""
    with open(os.path.join(HERE, "configure.ac"), encoding="utf-8") as f:
        m = re.search(r"^AC_INIT\(\[[^]]*\],\s*\[([0-9][^]]*)\]", f.read(),
                      re.M)
    if not m:
        raise SystemExit("uringbuf: no version in configure.ac's AC_INIT")
    version = m.group(1)
    with open(os.path.join(HERE, "core", "uringbuf.h"), encoding="utf-8") as f:
        parts = dict(re.findall(r"^#define UB_VERSION_([A-Z]+)\s+(\d+)",
                                f.read(), re.M))
    header = "%s.%s.%s" % (parts.get("MAJOR"), parts.get("MINOR"),
                           parts.get("PATCH"))
    if header != version:
        raise SystemExit("uringbuf: core/uringbuf.h says version %s but "
                         "configure.ac says %s" % (header, version))
    return version


class EggInfo(egg_info):
    """egg-info beside the build's scratch: in the build base (build/python,
    or wherever --build-base points; setuptools' build runs egg_info too),
    unless --egg-base says otherwise (pip does).  The directory is made here,
    on demand, so that `setup.py build --build-base X` writes into X only and
    the source tree may be read-only."""

    def finalize_options(self):
        if not self.egg_base:
            self.egg_base = self.distribution.get_command_obj("build").build_base
        os.makedirs(self.egg_base, exist_ok=True)
        super().finalize_options()


class BuildExt(build_ext):
    """build_ext that runs SWIG first: the wrapper goes to build_temp and the
    generated shim (uringbuf/core.py) next to the extension module, so it
    lands in the build (or, with --inplace, the source) package."""

    def copy_extensions_to_source(self):
        # --inplace: setuptools builds in build_lib and copies the extension
        # into the source package; the shim must follow it.
        super().copy_extensions_to_source()
        for ext in self.extensions:
            if ext.name == "uringbuf._core":
                src = os.path.join(self.build_lib, "uringbuf", "core.py")
                dst = os.path.join(PKG_DIR, "core.py")
                self.copy_file(src, dst, level=self.verbose)

    def build_extension(self, ext):
        if ext.name == "uringbuf._core":
            wrap = self._swig(ext)
            # The core first, on its own, with its warnings.
            ext.extra_objects = self.compiler.compile(
                CORE_SOURCES, output_dir=self.build_temp,
                macros=ext.define_macros, include_dirs=ext.include_dirs,
                debug=self.debug,
                extra_postargs=ext.extra_compile_args + CORE_WARN,
                depends=ext.depends)
            ext.sources = [wrap]
        super().build_extension(ext)

    def _swig(self, ext):
        swig = shutil.which(os.environ.get("SWIG", "swig"))
        if not swig:
            raise SystemExit(
                "uringbuf: swig not found (install it, e.g. apt-get install "
                "swig, or set SWIG=/path/to/swig)")
        outdir = os.path.dirname(self.get_ext_fullpath(ext.name))
        tmp = os.path.join(self.build_temp, "swig")
        wrap = os.path.join(tmp, "uringbuf_wrap.c")
        shim = os.path.join(outdir, "core.py")
        os.makedirs(tmp, exist_ok=True)
        os.makedirs(outdir, exist_ok=True)
        newest = max(os.path.getmtime(os.path.join(HERE, p)) for p in SWIG_INPUTS)
        if (self.force or not os.path.exists(wrap) or not os.path.exists(shim)
                or os.path.getmtime(wrap) < newest):
            cmd = [swig, "-python", "-builtin", "-Wall",
                   "-I" + os.path.join(HERE, "core"),
                   "-I" + os.path.join(HERE, "bindings"),
                   "-outdir", outdir, "-o", wrap,
                   os.path.join(HERE, INTERFACE)]
            self.announce(" ".join(cmd), level=2)
            subprocess.check_call(cmd)
        return wrap


core_ext = Extension(
    "uringbuf._core",
    sources=CORE_SOURCES,  # BuildExt: compiled apart, plus the SWIG wrapper
    depends=SWIG_INPUTS + sorted(glob.glob(os.path.join("core", "*.h"))),
    include_dirs=["core"],
    define_macros=[("_GNU_SOURCE", None), ("UB_STATIC_BUILD", None)],
    extra_compile_args=["-std=gnu11", "-fvisibility=hidden"],
    libraries=["uring"],
)

setup(
    version=read_version(),
    packages=["uringbuf"],
    package_dir={"uringbuf": PKG_DIR},
    package_data={"uringbuf": ["py.typed", "*.pyi"]},
    ext_modules=[core_ext],
    cmdclass={"build_ext": BuildExt, "egg_info": EggInfo},
    # Keep setuptools' scratch (and egg-info, see EggInfo) out of the source
    # tree and of the autotools build/ directories.
    options={"build": {"build_base": BUILD_BASE}},
)
