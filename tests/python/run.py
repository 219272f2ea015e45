#!/usr/bin/env python3
"""Run the uringbuf Python tests (tests/python/test_*.py, stdlib unittest).

    PYTHONPATH=build/python/lib python3 tests/python/run.py [-v] [-k PATTERN] [MODULE...]

uringbuf must be importable (built with `python3 setup.py build
--build-base build/python --build-lib build/python/lib`, or installed).
Prints one line per test, "SKIP: test: reason" for every skip, and finally
"N passed, N failed, N skipped"; exits 1 if anything failed (or nothing ran).
Every test runs under a watchdog (UB_PY_TEST_TIMEOUT seconds, default 300):
a hung test dumps every thread's stack and exits the run with status 1.
"""
import argparse
import faulthandler
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = float(os.environ.get("UB_PY_TEST_TIMEOUT", "300"))


class Result(unittest.TextTestResult):
    """Counts passes; arms the watchdog around every test."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed = 0
        self.t0 = 0.0

    def startTest(self, test):
        faulthandler.dump_traceback_later(TIMEOUT, exit=True)
        self.t0 = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="only tests whose name contains PATTERN")
    ap.add_argument("modules", nargs="*",
                    help="test modules (default: every test_*.py here)")
    args = ap.parse_args()

    sys.path.insert(0, HERE)
    try:
        import uringbuf
    except ImportError as e:
        print("cannot import uringbuf (%s): build it and set PYTHONPATH, "
              "see tests/python/run.py" % e, file=sys.stderr)
        print("0 passed, 1 failed, 0 skipped")
        return 1
    print("uringbuf %s from %s" % (uringbuf.__version__,
                                   os.path.dirname(uringbuf.__file__)))

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = ["*%s*" % p for p in args.patterns]
    if args.modules:
        suite = unittest.TestSuite(
            loader.loadTestsFromName(m[:-3] if m.endswith(".py") else m)
            for m in args.modules)
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2,
                                     resultclass=Result)
    result = runner.run(suite)

    failed = (len(result.failures) + len(result.errors) +
              len(result.unexpectedSuccesses))
    skipped = len(result.skipped)
    for test, reason in result.skipped:
        print("SKIP: %s: %s" % (test.id(), reason))
    print("%d passed, %d failed, %d skipped" % (result.passed, failed,
                                                skipped))
    return 1 if failed or result.testsRun == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
