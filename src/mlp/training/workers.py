"""Many trainings at once, each an ``mlp train`` process of its own: how ``mlp sweep`` and
``mlp compare`` run their runs.

- **Threads.**  Each training may use ``worker_threads(jobs)`` intra-op threads (its share of the
  cores, passed as ``MLP_THREAD_SHARE``, within which ``train.threads: auto`` measures; an
  ``OMP_NUM_THREADS`` the user set passes on and wins), whether one or several run side by side.
- **Signals.**  The trainings run in sessions of their own, so a terminal's Ctrl-C reaches only
  the parent, which passes each SIGINT/SIGTERM on once (``Workers.stop``): the first makes every
  training save last.pth and stop, a second SIGINT quits them at once.  No training starts
  after a stop.
- **Start.**  Each training is forked from a helper process that has imported torch, its
  compiler stack and mlp once (``mlp.training.warmstart``), so it skips the ~5 s every fresh
  interpreter spends importing them; where that cannot be done it starts as a new interpreter.
- **The parent's death.**  A training dies with the process that started it, even when that one
  is killed by SIGKILL or SIGHUP (``follow_parent``): it gets SIGTERM, saves last.pth and stops,
  so the same command run again finds the folders free and resumes them.  A warm training's
  parent is the helper, which dies with this process.
- **How it ended.**  ``outcome`` turns a training's exit code and the status its metrics.json
  records into finished, pruned, diverged, interrupted or failed; the last line of its log
  (``train.log`` in its folder) says why it failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Hashable

from mlp import threads
from mlp.files import open_log
from mlp.training import signals, warmstart
from mlp.training.warmstart import Starter  # named here, so that the tests can hand every run one helper

PARENT_ENV = "MLP_PARENT_PID"  # set in a training started here: the process it dies with
# What a training imports beyond torch and mlp.cli: the warm-start helper imports them once.
TRAINING_MODULES = ("mlp.training.loop", "mlp.observe.figures", "matplotlib.figure",
                    "matplotlib.backends.backend_agg", "matplotlib.colors", "matplotlib.ticker")


def explicit_threads() -> int | None:
    """The ``OMP_NUM_THREADS`` the user set, if any: every training then uses that many."""
    return threads.positive_env("OMP_NUM_THREADS")


def worker_threads(jobs: int) -> int:
    """The most intra-op threads each of ``jobs`` trainings running side by side may use (the
    one place that decides it): an ``OMP_NUM_THREADS`` the user set, or an equal share of the
    cores, within which each training's ``train.threads: auto`` measures (mlp.threads)."""
    return explicit_threads() or threads.worker_threads(jobs)  # the usable cores (affinity), shared equally


def outcome(code: int | None, status: str | None, stopped: bool) -> str:
    """How a training ended, from its exit code (None: never started) and metrics.json's status."""
    if code is None:
        return "interrupted"  # never started: a stop came first
    if code == 0:
        return status if status in ("finished", "pruned") else "failed"
    if stopped and (code < 0 or code >= 128):
        return "interrupted"
    return "diverged" if status == "diverged" else "failed"


class Workers:
    """Up to ``jobs`` ``mlp train`` processes at a time, started by ``train`` from the threads
    that ``run`` starts; ``signum`` is the stop asked for, if any."""

    def __init__(self, jobs: int, echo: bool = False, preload: tuple[str, ...] = ()):
        self.jobs, self.echo = jobs, echo  # echo: show a training's output as it comes (one job)
        # The trainings are forked from a helper that imports torch and mlp once (started by the
        # first of run and train: mlp.training.warmstart); ``preload`` names more modules they import.
        self.preload = TRAINING_MODULES + preload
        self.starter: Starter | None = None
        self.threads = worker_threads(jobs)  # the most each training may use (auto measures within it)
        self.fixed = explicit_threads() is not None
        self.lock = threading.Lock()
        self.children: dict[Hashable, subprocess.Popen | warmstart.WarmProcess] = {}  # key → its training
        self.signum: int | None = None

    def stop(self, signum, frame) -> None:
        """The handler for SIGINT/SIGTERM: pass the signal on to each training, once."""
        self.signum = signum
        with self.lock:
            for proc in self.children.values():
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass  # it has just ended

    def run(self, loop: Callable[[], None]) -> None:
        """Run ``loop`` in ``jobs`` threads, with the signals passed on, until every one returns;
        the first exception one raised is raised here."""
        self._start()  # on this thread, which the helper dies with: one that outlives the run
        try:
            with signals.handling(self.stop), ThreadPoolExecutor(self.jobs) as pool:
                for future in [pool.submit(loop) for _ in range(self.jobs)]:
                    future.result()
        finally:
            self.starter.close()
            self.starter = None

    def _start(self) -> Starter:
        with self.lock:
            if self.starter is None:
                self.starter = Starter({**os.environ, "PYTHONUNBUFFERED": "1"}, self.preload)
            return self.starter

    def running(self) -> dict[Hashable, subprocess.Popen | warmstart.WarmProcess]:
        with self.lock:
            return dict(self.children)

    def train(self, key: Hashable, args: list[str], log_file: Path, env: dict[str, str] | None = None,
              announce: str | None = None) -> tuple[int | None, str]:
        """``mlp train --no-progress ARGS``, its output appended to ``log_file``; its exit code
        (None if a stop came first and it never started) and the last line it wrote."""
        command = ["train", "--no-progress", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if not self.fixed:  # an OMP_NUM_THREADS the user set passes on as it is; else each its share
            env[threads.SHARE_ENV] = str(self.threads)
        starter = self._start()
        starter.wait_ready()  # the helper's imports, waited for here, not while a signal waits for the lock
        with self.lock:  # a signal arriving now must either prevent this start or reach this child
            if self.signum is not None:
                return None, ""
            if announce:
                say(announce)
            log_file.parent.mkdir(parents=True, exist_ok=True)
            # The child writes its log itself, so what it says while it stops is kept even after
            # this process is gone.
            with open_log(log_file) as log:
                log.write(f"$ mlp {' '.join(command)}\n")
                log.flush()
                start = log.tell()
                # The training's parent (this process, or the warm-start helper) goes in PARENT_ENV.
                proc = starter.popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True, parent_env=PARENT_ENV)
            self.children[key] = proc
        try:
            last = _follow(log_file, start, proc, self.echo)
        finally:
            with self.lock:
                del self.children[key]
        return proc.returncode, last


def _follow(log_file: Path, start: int, proc, echo: bool) -> str:
    """Wait for the training's process, showing its log as it grows when ``echo``; its last line."""
    tail = ""
    with open(log_file, errors="replace") as log:
        log.seek(start)
        while True:
            done = proc.poll() is not None  # checked before reading, so the last lines are read
            chunk = log.read()
            if echo and chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            tail = (tail + chunk)[-4000:]
            if done:
                break
            if not chunk:
                time.sleep(0.1)
    return next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), "")


def follow_parent() -> None:
    """In a training that ``Workers`` started: get SIGTERM (save last.pth and stop) when the
    process that started it dies, however it dies.  Linux says so itself (PR_SET_PDEATHSIG);
    elsewhere a thread watches the parent's process id."""
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit():
        return
    parent_pid = int(parent)
    if not signals.die_with_parent(signal.SIGTERM):
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # the parent was gone before the kernel was told to watch it
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def say(text: str, stream=None) -> None:
    """One line in one write, so lines from trainings running side by side do not interleave."""
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()
