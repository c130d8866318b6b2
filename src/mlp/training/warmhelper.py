"""The warm-start helper (``python -m mlp.training.warmhelper FD CALLER MODULES``): imports torch,
``torch._dynamo``, mlp's command line and MODULES once, then forks a child per request that comes
over the socket FD, which runs ``python -m MODULE ARGS`` as a new interpreter would.  The caller's
side, and what a child does and does not share with a new interpreter: mlp.training.warmstart."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys

from mlp.training import signals
from mlp.training.warmstart import MAX_REQUEST, READY


def _serve(control: socket.socket):
    """Fork a child per request until the control socket closes; returns the request in a child,
    never in the helper (which exits)."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    # The helper shares the caller's process group (so that a child does, as a plain child
    # would): a terminal's Ctrl-C reaches it too, and must not end it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reports: dict[int, socket.socket] = {}  # child's pid → the socket its exit status goes to
    control.sendall(READY)
    while True:
        if control is None and not reports:
            sys.exit(0)
        ready, _, _ = select.select([wake_r] if control is None else [control, wake_r], [], [])
        if wake_r in ready:
            _drain(wake_r)
        _reap(reports)
        if control is None or control not in ready:
            continue
        try:
            message, fds, _, _ = socket.recv_fds(control, MAX_REQUEST, 4)
        except OSError:
            message, fds = b"", []
        if not message:  # no more requests: exit once the children still running have ended
            control.close()
            control = None
            continue
        if len(fds) != 4:  # not a request of ours
            for fd in fds:
                os.close(fd)
            continue
        report = socket.socket(fileno=fds[0])
        streams = fds[1:]
        try:
            pid = os.fork()
        except OSError:  # e.g. out of memory: this one starts cold
            for fd in set(streams):
                os.close(fd)
            _send(report, b"fail")
            report.close()
            continue
        if pid == 0:
            _leave_helper([control, report, *reports.values()], [wake_r, wake_w], streams)
            return json.loads(message)
        for fd in set(streams):
            os.close(fd)
        reports[pid] = report
        _send(report, b"pid %d" % pid)


def _leave_helper(sockets: list[socket.socket], pipe: list[int], streams: list[int]) -> None:
    """In a child just forked: the signal handling a new interpreter has, none of the helper's
    sockets and pipes, and the request's standard streams."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as it starts
    for sock in sockets:
        sock.close()
    for fd in pipe:
        os.close(fd)
    for target, fd in enumerate(streams):
        os.dup2(fd, target)  # inheritable, as a child's standard streams are
    for fd in set(streams):
        if fd > 2:
            os.close(fd)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _reap(reports: dict[int, socket.socket]) -> None:
    """Collect every child that has ended and send each its exit status."""
    while reports:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        report = reports.pop(pid, None)
        if report is not None:
            _send(report, b"exit %d" % os.waitstatus_to_exitcode(status))
            report.close()


def _send(report: socket.socket, message: bytes) -> None:
    try:
        report.send(message)
    except OSError:
        pass  # the caller is gone


def _become(request: dict) -> None:
    """In a forked child: take the request's session, folder, environment and arguments, as
    ``python -m MODULE ARGS`` started there would have them, and run it."""
    import runpy

    if request["new_session"]:
        os.setsid()
    # What the caller has now, not what it had when the helper started.
    if request["umask"] is not None:
        os.umask(request["umask"])
    try:
        os.sched_setaffinity(0, request["affinity"])
        os.setpriority(os.PRIO_PROCESS, 0, request["nice"])
    except OSError:  # a nicer helper than its caller cannot be made less nice without privilege
        pass
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = os.getcwd()  # as `python -m` puts it
    if "numpy" in sys.modules:  # as a new interpreter seeds it (Python's random reseeds itself in a child)
        sys.modules["numpy"].random.seed()
    try:  # in top and ps -o comm: "mlp train" rather than the helper's python (15 bytes at most)
        import ctypes

        ctypes.CDLL(None).prctl(15, " ".join([request["module"], *request["args"][:1]]).encode()[:15])  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
    sys.argv = [request["module"], *request["args"]]  # run_module sets argv[0] to the module's file
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


def _helper(fd: int, caller: int, preload: str) -> None:
    import importlib

    control = socket.socket(fileno=fd)
    signals.die_with_parent(signal.SIGKILL)
    if os.getppid() != caller:  # it died before the kernel was told
        sys.exit(0)
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401
    import mlp.cli  # noqa: F401

    for name in filter(None, preload.split(",")):
        importlib.import_module(name)
    request = _serve(control)
    _become(request)


if __name__ == "__main__":
    _helper(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
