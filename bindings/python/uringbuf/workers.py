"""serve(..., workers=N): one server process per core.

Each worker is a forked process with its own EventLoop (its own io_uring)
and its own listening socket on the same address, bound with SO_REUSEPORT:
the kernel spreads new connections over the workers' accept queues, so
they share nothing and each runs on a core of its own.  A listening socket
shared by every worker would make them compete for one accept queue (with
multishot accept armed in every ring, each connection wakes one of them at
random and the load follows the wake-ups, not the cores).

The parent binds (without listening) a placeholder socket with SO_REUSEPORT
first, which fixes the port when 0 was asked and reserves it, forks, waits
until every worker listens, then only supervises: WorkerGroup.serve_forever()
waits for SIGINT/SIGTERM, sends SIGTERM to every worker (each closes its
server and loop and exits 0) and waits for all of them.  A worker that dies
on its own is reported (on_worker_exit(pid, description), by default a line
on stderr) and the others serve on (the kernel spreads new connections over
the listeners left); serve_forever() raises WorkerError naming it after the
shutdown, and at once when no worker is left.  The Lua binding's workers
behave the same.  Workers ignore SIGINT (a terminal's Ctrl-C reaches the
whole process group; the parent forwards it as SIGTERM) and stop by
themselves when the parent goes away (they watch getppid()).

Fork before any io_uring exists in the parent: serve(workers=N) refuses a
loop= and must be called before the process makes other uringbuf loops
(a ring does not survive fork usefully).
"""
import errno
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .server import EventLoop, Protocol, _address, _parse_addr

__all__ = ["WorkerGroup", "WorkerError", "start_workers"]

_PARENT_POLL = 0.5   # s between a worker's checks that its parent lives
_START_TIMEOUT = 10  # s for every worker to listen
_WAIT_POLL = 0.05    # s between the parent's checks of its workers


class WorkerError(RuntimeError):
    """A worker failed to start, died on its own, or exited non-zero.
    ``failures`` lists (pid, description)."""

    def __init__(self, message: str,
                 failures: List[Tuple[int, str]]) -> None:
        super().__init__(message)
        self.failures = failures


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return "killed by %s" % name
    return "exit status %d" % os.WEXITSTATUS(status)


def _placeholder(host: Optional[str], port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT, not listening: it
    holds the port (the real one when 0 was asked) and takes no
    connections (only listening sockets join the reuseport group's
    accepting)."""
    addr = _address(host, port, True)
    if isinstance(addr, str):
        raise ValueError("workers > 1 needs a TCP address (SO_REUSEPORT), "
                         "not %r" % addr)
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(addr)
    except BaseException:
        s.close()
        raise
    return s


def _ignore() -> None:
    pass


def _worker(wfd: int, factory: Callable[[], Protocol], host: str, port: int,
            parent: int, kwargs: Dict[str, Any],
            loop_opts: Dict[str, Any]) -> int:
    """The body of a worker process; returns its exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        loop = EventLoop(**loop_opts)
    except BaseException as exc:
        os.write(wfd, ("E%d %s: %s\n" % (os.getpid(), type(exc).__name__,
                                         exc)).encode())
        return 1
    try:
        server = loop.create_server(factory, host, port, reuse_port=True,
                                    **kwargs)
    except BaseException as exc:  # reported to the parent, which raises
        os.write(wfd, ("E%d %s: %s\n" % (os.getpid(), type(exc).__name__,
                                         exc)).encode())
        loop.close()
        return 1

    def on_term(signum: int, frame: Any) -> None:
        # The handler left once the loop closes its own (a second SIGTERM
        # must not kill the worker mid-close: exit 0 is how the parent
        # knows it stopped cleanly).
        if not loop.is_closed():
            loop.call_soon(loop.stop)
    signal.signal(signal.SIGTERM, on_term)
    # Installed on the loop, so serve_forever() leaves them alone: SIGTERM
    # stops, SIGINT does nothing (the parent forwards it as SIGTERM).
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, _ignore)

    def watch() -> None:
        if os.getppid() != parent:
            loop.stop()  # orphaned: the group is gone
        else:
            loop.call_later(_PARENT_POLL, watch)
    loop.call_later(_PARENT_POLL, watch)
    server._owns_loop = True
    os.write(wfd, ("R%d\n" % os.getpid()).encode())
    os.close(wfd)
    server.serve_forever()
    return 0


class WorkerGroup:
    """What serve(..., workers=N) returns in the parent: N worker
    processes, each serving the same address."""

    def __init__(self, address: str, pids: List[int],
                 on_worker_exit: Optional[Callable[[int, str], Any]] = None
                 ) -> None:
        self._address = address
        self._pids = list(pids)
        self._status: Dict[int, int] = {}
        self._stopping = False
        self._failures: List[Tuple[int, str]] = []
        self._on_exit = on_worker_exit or _report_exit
        self._signals: List[int] = []
        self._old: Dict[int, Any] = {}

    def _catch(self) -> None:
        """Catch SIGINT/SIGTERM from now until close() (main thread only):
        one that comes before serve_forever() runs still stops the group,
        instead of killing the parent and orphaning the workers."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: Any) -> None:
            self._signals.append(signum)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, handler)

    def _release(self) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)
        self._old.clear()

    @property
    def address(self) -> str:
        """Where every worker listens, "HOST:PORT" (the real port)."""
        return self._address

    @property
    def sockname(self) -> Any:
        """address in socket module form."""
        return _parse_addr(self._address)

    @property
    def pids(self) -> List[int]:
        """The worker processes' pids."""
        return list(self._pids)

    def is_serving(self) -> bool:
        """True until the group stopped."""
        return not self._stopping and len(self._status) < len(self._pids)

    def _reap(self) -> None:
        for pid in self._pids:
            if pid in self._status:
                continue
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                got, status = pid, 0  # reaped elsewhere: nothing to say
            if got:
                self._status[pid] = status
                if not self._stopping:
                    what = "died on its own: " + _describe(status)
                    self._failures.append((pid, what))
                    self._on_exit(pid, what)

    def _signal_all(self, sig: int) -> None:
        for pid in self._pids:
            if pid not in self._status:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def close(self, timeout: float = 30.0) -> None:
        """Stop every worker (SIGTERM: each closes its server and loop and
        exits 0) and wait for them; SIGKILL after timeout seconds.  Raises
        WorkerError if any worker failed."""
        self._stopping = True
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while len(self._status) < len(self._pids):
            self._reap()
            if len(self._status) == len(self._pids):
                break
            if time.monotonic() >= deadline:
                self._signal_all(signal.SIGKILL)
                for pid in self._pids:
                    if pid not in self._status:
                        self._failures.append((pid, "killed after %g s "
                                               "(did not stop)" % timeout))
                        try:
                            self._status[pid] = os.waitpid(pid, 0)[1]
                        except ChildProcessError:
                            self._status[pid] = 0
                break
            time.sleep(_WAIT_POLL)
        for pid in self._pids:
            status = self._status.get(pid, 0)
            if status and not any(p == pid for p, _ in self._failures):
                self._failures.append((pid, _describe(status)))
        self._release()
        if self._failures:
            failures, self._failures = self._failures, []
            raise WorkerError("worker(s) failed: " + "; ".join(
                "%d %s" % f for f in failures), failures)

    def serve_forever(self, timeout: float = 30.0) -> None:
        """Serve until SIGINT/SIGTERM (caught from serve() on, so one that
        came before this call counts), then stop every worker (as close()).
        A worker that dies on its own is reported (on_worker_exit) and the
        others serve on; WorkerError names it after the shutdown, and comes
        at once when no worker is left.  Main thread only."""
        while not self._signals:
            self._reap()
            if len(self._status) == len(self._pids):
                break
            time.sleep(_WAIT_POLL)
        self.close(timeout)


def _report_exit(pid: int, what: str) -> None:
    """The default on_worker_exit: one line on stderr (as the Lua
    binding's default)."""
    print("uringbuf: worker %d %s" % (pid, what), file=sys.stderr,
          flush=True)


def start_workers(n: int, factory: Callable[[], Protocol],
                  host: Optional[str], port: Optional[int],
                  kwargs: Dict[str, Any],
                  loop_opts: Optional[Dict[str, Any]] = None,
                  on_worker_exit: Optional[Callable[[int, str], Any]] = None
                  ) -> WorkerGroup:
    """Fork n workers serving host:port (see the module's docstring)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError("workers must be an int >= 1, not %r" % (n,))
    for key in ("loop", "sock"):
        if kwargs.pop(key, None) is not None:
            raise ValueError("workers > 1 and %s= are exclusive" % key)
    kwargs.pop("reuse_port", None)  # what every worker's listener uses
    if port is None:
        raise ValueError("workers > 1 needs host and port, not a full "
                         "address string")
    hold = _placeholder(host, port)
    try:
        bound = hold.getsockname()
        host, port = bound[0], bound[1]
        rfd, wfd = os.pipe()
        pids: List[int] = []
        try:
            parent = os.getpid()
            for _ in range(n):
                pid = os.fork()
                if pid == 0:  # the worker: never returns into the caller
                    status = 1
                    try:
                        os.close(rfd)
                        hold.close()
                        status = _worker(wfd, factory, host, port, parent,
                                         kwargs, loop_opts or {})
                    except BaseException:
                        import traceback
                        traceback.print_exc()
                    finally:
                        os._exit(status)
                pids.append(pid)
            os.close(wfd)
            wfd = -1
            group = WorkerGroup("[%s]:%d" % (host, port) if ":" in host
                                else "%s:%d" % (host, port), pids,
                                on_worker_exit)
            group._catch()
            _await_ready(rfd, group, n)
            return group
        finally:
            if wfd >= 0:
                os.close(wfd)
            os.close(rfd)
    finally:
        hold.close()


def _await_ready(rfd: int, group: WorkerGroup, n: int) -> None:
    """Wait until n workers said R (listening); any E, an early EOF or the
    timeout stops the group and raises WorkerError."""
    deadline = time.monotonic() + _START_TIMEOUT
    data = b""
    ready = 0
    errors: List[Tuple[int, str]] = []
    os.set_blocking(rfd, False)
    while ready + len(errors) < n and time.monotonic() < deadline:
        try:
            chunk = os.read(rfd, 4096)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            raise
        if not chunk:
            break  # every worker closed its end (some exited early)
        data += chunk
        while b"\n" in data:
            line, data = data.split(b"\n", 1)
            text = line.decode(errors="replace")
            if text.startswith("R"):
                ready += 1
            elif text.startswith("E"):
                pid, _, msg = text[1:].partition(" ")
                errors.append((int(pid), msg))
    if ready == n:
        return
    if not errors:
        errors.append((0, "%d of %d workers listening after %g s"
                       % (ready, n, _START_TIMEOUT)))
    try:
        group.close(5.0)
    except WorkerError as e:
        errors.extend(f for f in e.failures if f not in errors)
    raise WorkerError("workers failed to start: " + "; ".join(
        "%d %s" % f for f in errors), errors)
