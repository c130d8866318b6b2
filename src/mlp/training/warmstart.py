"""``python -m mlp ...`` processes that start warm: forked from a helper that has imported torch.

A fresh ``mlp train`` spends about 5 s of a 2-core CPU before its first step importing torch,
``torch._dynamo`` (which every optimizer pulls in) and mlp itself (docs/speed.md), and ``mlp
compare`` and ``mlp sweep`` start one per training.  A ``Starter`` keeps one helper process
(``python -m mlp.training.warmhelper``) that imports them once and then forks a child per request.
The child runs ``python -m mlp ARGS`` from there as a new interpreter would: its own process id,
arguments, environment, working folder, umask, CPU affinity and niceness (the caller's at the
request), process group and session (the caller's, or a new one), standard streams, exit code or
signal, and the interpreter's own exit (atexit handlers, flushed streams; note that mlp's main
skips the interpreter's teardown once ``torch._dynamo`` is loaded, which in a warm child it
always is).  The helper runs no torch code and starts no thread (a fork copies only the thread
that forks, so a helper with more, or with an OpenMP team, could hand a child locks nobody
releases; tests/test_warmstart.py checks it has one), and a child reseeds NumPy's global random
generator as a new interpreter seeds it (Python's reseeds itself).  What a child still shares
with the helper: its imported modules, its string-hash seed, its resource limits, and its
import-time messages, which went once to the caller's stderr rather than to each child's.

- **Deaths.**  The helper dies with the thread that started it (``PR_SET_PDEATHSIG``, SIGKILL:
  start it on one that outlives it) and a training started by ``Workers`` dies with the helper
  (``follow_parent``: SIGTERM, so it saves last.pth), so a killed ``mlp compare`` still takes its
  trainings with it.  A terminal's Ctrl-C reaches the helper too (it shares the caller's process
  group) and is ignored there.  Should the helper die on its own (the OOM killer, a stray kill),
  the trainings that follow it stop as they would at their caller's death, and are reported
  with exit code ``LOST``; other children of it go on, as a plain child outlives its parent.
- **Exit codes.**  Only a parent can collect a child's exit status, so the helper collects it and
  sends it back over the request's own socket.  Should the helper die first, the caller waits
  for the child to end (a pidfd) and reports ``LOST`` as its exit code.
- **When it starts cold instead** (a plain ``subprocess.Popen``, the same interface): where fork
  or fd passing is missing (not Linux), with ``MLP_WARM_START=0``, when the helper failed to
  start, for a terminal as a standard stream (whether it is one decides buffering and progress
  bars as an interpreter starts), and when the request's environment differs from the helper's
  in a variable read as an interpreter or torch starts (``STARTUP_PREFIXES``).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from mlp.training import signals

ENABLE_ENV = "MLP_WARM_START"  # 0: every process starts cold
# Read once, as an interpreter, libgomp, MKL or torch loads: a request that changes one of these
# cannot be forked from a helper that has loaded them already.
STARTUP_PREFIXES = ("PYTHON", "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "TORCH", "PYTORCH", "CUDA", "NCCL",
                    "LD_", "MALLOC_", "LC_", "LANG", "TYPER", "MPL", "HOME", "XDG_")
# ... except these, which torch reads only when it compiles, and sets itself (to their defaults)
# in a process that has compiled, so that a caller which trained in-process has them.
READ_WHEN_USED = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
LOST = 255  # the exit code reported when the helper died before the child, so its own is unknown
READY = b"ready"
MAX_REQUEST = 1 << 20


def available() -> bool:
    return (sys.platform.startswith("linux") and hasattr(os, "fork") and hasattr(socket, "send_fds")
            and os.environ.get(ENABLE_ENV, "1") != "0")


def startup_env(env: dict[str, str]) -> dict[str, str]:
    """The part of ``env`` a process reads as it starts."""
    return {k: v for k, v in env.items() if k.startswith(STARTUP_PREFIXES) and k not in READ_WHEN_USED}


class Starter:
    """One helper process, started at once (its imports run while the caller goes on), and the
    processes it forks: ``popen(args, ...)`` is ``subprocess.Popen([python, -m, mlp, *args], ...)``
    (``module=`` another module run in place of mlp).

    ``env`` is the environment the helper starts with; a request whose startup variables differ
    from it starts cold.  ``preload`` names the modules the helper imports besides torch,
    ``torch._dynamo`` and ``mlp.cli``."""

    def __init__(self, env: dict[str, str] | None = None, preload: tuple[str, ...] = ()):
        self.env = dict(os.environ if env is None else env)
        self.lock = threading.Lock()
        self.control: socket.socket | None = None
        self.helper: subprocess.Popen | None = None
        self.ready = False
        if not available():
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.helper = subprocess.Popen(
                [sys.executable, "-m", "mlp.training.warmhelper", str(theirs.fileno()), str(os.getpid()),
                 ",".join(preload)],
                env=self.env, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except OSError:
            ours.close()
            return
        finally:
            theirs.close()
        self.control = ours

    def wait_ready(self) -> bool:
        """Wait for the helper's imports; whether requests will be forked."""
        with self.lock:
            return self._wait_ready()

    def _wait_ready(self) -> bool:
        if self.control is None:
            return False
        if not self.ready:
            try:
                self.control.settimeout(120)
                self.ready = self.control.recv(64) == READY
                self.control.settimeout(None)
            except OSError:
                self.ready = False
            if not self.ready:
                self._drop()
        return self.ready

    def _drop(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        self.ready = False

    @property
    def parent_pid(self) -> int:
        """The process id a warm child's parent has (the helper's); the caller's when cold."""
        return self.helper.pid if self.helper is not None and self.control is not None else os.getpid()

    def popen(self, args: list[str], env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None,
              stdin=None, stdout=None, stderr=None, start_new_session: bool = False, text: bool = False,
              parent_env: str | None = None, module: str = "mlp"):
        """Start ``python -m MODULE ARGS``: warm when it can be, else cold (a ``subprocess.Popen``).
        ``parent_env``, if given, names a variable set in the child to its parent's process id."""
        env = dict(os.environ if env is None else env)
        cwd = os.fspath(cwd) if cwd is not None else os.getcwd()
        with self.lock:
            if self._wait_ready() and startup_env(env) == startup_env(self.env) and os.path.isdir(cwd):
                proc = WarmProcess.start(self, module, args, env, cwd, stdin, stdout, stderr, start_new_session,
                                         text, parent_env)
                if proc is not None:
                    return proc
        if parent_env:
            env[parent_env] = str(os.getpid())
        return subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=cwd, stdin=stdin, stdout=stdout,
                                stderr=stderr, start_new_session=start_new_session, text=text)

    def close(self) -> None:
        """No more requests: the helper exits once the children it started have ended."""
        with self.lock:
            self._drop()
        if self.helper is not None:
            self.helper.poll()  # reaped now if it has ended, else by subprocess later

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fd(stream, default: int, opened: list[int], ours: list):
    """The file descriptor a child gets for one standard stream, as subprocess reads its argument;
    ``ours`` gets the read end of a new pipe, ``opened`` what to close once the child has it.
    None when it must start cold (a terminal)."""
    if stream is None:
        fd = default
    elif stream == subprocess.DEVNULL:
        fd = os.open(os.devnull, os.O_RDWR)
        opened.append(fd)
    elif stream == subprocess.PIPE:
        read, write = os.pipe()
        if default == 0:
            read, write = write, read
        ours.append(read)
        opened.append(write)
        return write
    elif isinstance(stream, int):
        fd = stream
    else:
        fd = stream.fileno()
    return None if os.isatty(fd) else fd


class WarmProcess:
    """A child of the helper, with the part of ``subprocess.Popen``'s interface that mlp and its
    tests use: ``pid``, ``returncode``, ``poll``, ``wait``, ``communicate``, ``send_signal``,
    ``terminate``, ``kill`` and the ``stdin``/``stdout``/``stderr`` pipes."""

    def __init__(self, args: list[str], pid: int, report: socket.socket, pipes: list, text: bool):
        self.args = args
        self.pid, self.report, self.returncode = pid, report, None
        # Several threads use one process (a signal handler, a log follower, a heartbeat), as
        # with Popen: one collects the exit status at a time, and the pidfd is closed under a lock.
        self._collecting, self._fd_lock = threading.Lock(), threading.Lock()
        try:
            self.pidfd = os.pidfd_open(pid)  # to wait for it should the helper die first
        except (AttributeError, OSError):
            self.pidfd = None
        # Text pipes translate newlines as Popen(text=True)'s do (newline=None: \r\n and \r read as \n).
        self.stdin, self.stdout, self.stderr = (
            None if fd is None else os.fdopen(fd, ("w" if i == 0 else "r") + ("" if text else "b"))
            for i, fd in enumerate(pipes))
        self._readers: list | None = None

    @classmethod
    def start(cls, starter: Starter, module, args, env, cwd, stdin, stdout, stderr, new_session, text, parent_env):
        opened: list[int] = []
        ours: list[list] = [[], [], []]
        try:
            fds = [_fd(stdin, 0, opened, ours[0]), _fd(stdout, 1, opened, ours[1])]
            if stderr == subprocess.STDOUT:
                fds.append(fds[1])
            else:
                fds.append(_fd(stderr, 2, opened, ours[2]))
            if None in fds:  # a terminal (``opened`` is closed below)
                for fd in [fd for pipe in ours for fd in pipe]:
                    os.close(fd)
                return None
            if parent_env:
                env = {**env, parent_env: str(starter.parent_pid)}
            report, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            request = json.dumps({"module": module, "args": list(map(str, args)), "env": env, "cwd": cwd,
                                  "new_session": bool(new_session), "umask": _umask(),
                                  "affinity": sorted(os.sched_getaffinity(0)),
                                  "nice": os.getpriority(os.PRIO_PROCESS, 0)}).encode()
            try:
                socket.send_fds(starter.control, [request], [theirs.fileno(), *fds])
            except OSError as e:  # this one starts cold; if the helper is gone, every later one too
                report.close()
                if isinstance(e, (BrokenPipeError, ConnectionError)):
                    starter._drop()
                for fd in [fd for pipe in ours for fd in pipe]:
                    os.close(fd)
                return None
            finally:
                theirs.close()
        finally:
            for fd in opened:
                os.close(fd)
        reply = report.recv(64)
        if not reply.startswith(b"pid "):
            report.close()
            if reply != b"fail":  # the helper is gone
                starter._drop()
            for fd in [fd for pipe in ours for fd in pipe]:
                os.close(fd)
            return None
        return cls([sys.executable, "-m", module, *map(str, args)], int(reply[4:]), report,
                   [pipe[0] if pipe else None for pipe in ours], text)

    def _collect(self, timeout: float | None) -> bool:
        """Read the exit status if it has come within ``timeout`` seconds; whether it has."""
        if self.returncode is not None:
            return True
        if timeout == 0:
            if not self._collecting.acquire(blocking=False):
                return False  # another thread is collecting it
        else:
            self._collecting.acquire()
        try:
            return self._collect_locked(timeout)
        finally:
            self._collecting.release()

    def _collect_locked(self, timeout: float | None) -> bool:
        if self.returncode is not None:
            return True
        if self.report is not None:
            ready, _, _ = select.select([self.report], [], [], timeout)
            if not ready:
                return False
            reply = self.report.recv(64)
            self.report.close()
            self.report = None
            if reply.startswith(b"exit "):
                self._close_pidfd()
                self.returncode = int(reply[5:])
                return True
            # No status: the helper died first, so wait for the child itself.
        if self.pidfd is not None:
            ready, _, _ = select.select([self.pidfd], [], [], timeout)
            if not ready:
                return False
        else:  # no pidfd: poll whether the process still exists
            deadline = None if timeout is None else time.monotonic() + timeout
            while signals.alive(self.pid):
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
        self._close_pidfd()
        self.returncode = LOST
        return True

    def _close_pidfd(self) -> None:
        with self._fd_lock:
            if self.pidfd is not None:
                os.close(self.pidfd)
                self.pidfd = None

    def __del__(self):
        try:
            self._close_pidfd()
            if self.report is not None:
                self.report.close()
        except (AttributeError, OSError):
            pass

    def poll(self) -> int | None:
        self._collect(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._collect(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, input=None, timeout: float | None = None):
        """Write ``input``, read both output pipes to their end, wait; as ``Popen.communicate``
        (called again after a timeout, it goes on where it stopped)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._readers is None:
            self._readers = []
            for stream in (self.stdout, self.stderr):
                box: list = []
                if stream is not None:
                    reader = threading.Thread(target=lambda s=stream, b=box: b.append(s.read()), daemon=True)
                    reader.start()
                    self._readers.append((reader, box))
                else:
                    self._readers.append((None, box))
            if self.stdin is not None and not self.stdin.closed:
                try:
                    if input:
                        self.stdin.write(input)
                    self.stdin.close()
                except BrokenPipeError:
                    pass  # the child has stopped reading, as Popen.communicate lets it
        for reader, _ in self._readers:
            if reader is not None:
                reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                if reader.is_alive():
                    raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        return tuple(box[0] if reader is not None else None for reader, box in self._readers)

    def send_signal(self, signum: int) -> None:
        """Signal the process, unless it has ended: through its pidfd, which names this process
        and no later one with its pid (the helper reaps it before its exit status reaches us)."""
        with self._fd_lock:
            if self.returncode is not None:
                return
            try:
                if self.pidfd is not None:
                    signal.pidfd_send_signal(self.pidfd, signum)
                else:
                    os.kill(self.pid, signum)
            except ProcessLookupError:
                pass  # it has just ended

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        self.wait()


def _umask() -> int | None:
    """This process's umask, read without changing it (os.umask would, for a moment, in every thread)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):  # older kernels: the helper's own, as at its start
        return None
