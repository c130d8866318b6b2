"""How ``mlp compare`` trains its runs: each an ``mlp train`` process (``mlp.training.workers``),
``jobs`` at a time, each with its share of the cores, its output in ``train.log`` in its folder.

A run that fails (other than by diverging: that is a finding) stops the next ones from
starting, since the same config would fail them too; a stop (Ctrl-C, SIGTERM) does as well.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlp.config import dump_yaml
from mlp.training.workers import Workers, outcome, say


def train_all(todo: list, jobs: int) -> list[dict[str, Any]]:
    """Train the planned runs ``todo`` (``mlp.comparison.plan.Planned``), ``jobs`` at a time;
    what became of each, in the order they ended (an ``interrupted`` one if a stop came)."""
    workers = Workers(min(jobs, len(todo)))
    if workers.jobs > 1:
        threads = workers.threads
        each = f"{threads} thread{'s' * (threads > 1)}" if workers.fixed or threads == 1 else f"up to {threads} threads"
        say(f"training {len(todo)} runs, {workers.jobs} at a time ({each} each); "
            f"logs in {todo[0].run_dir.parent}/<run>/train.log")
    queue, results, lock = list(enumerate(todo, 1)), [], threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                if not queue or workers.signum is not None or any(r["status"] == "failed" for r in results):
                    return
                number, run = queue.pop(0)
            result = _train(workers, run, f"[{number}/{len(todo)}] {_verb(run)} {run.activation:<11} "
                                              f"log: {run.run_dir / 'train.log'}")
            with lock:
                results.append(result)
            say(_outcome(result))

    workers.run(loop)
    if workers.signum is not None and not any(r["status"] == "interrupted" for r in results):
        results.append({"activation": "", "status": "interrupted", "message": "", "exit_code": 128 + workers.signum,
                        "seconds": 0.0})
    return results


def _train(workers: Workers, run, announce: str) -> dict[str, Any]:
    """One run trained (or resumed) in its own process; what became of it, as a dict."""
    from mlp.commands.runs import read_run

    started = time.perf_counter()
    with _config_file(run) as config:
        if run.state == "resume":
            args = ["--resume", str(run.run_dir)]
        else:
            args = ["--config", str(config), "--run-dir", str(run.run_dir), "--overwrite"]
        code, last = workers.train(run.activation, args, run.run_dir / "train.log", announce=announce)
    status = (read_run(run.run_dir) or {}).get("status")
    ended = outcome(code, status, stopped=workers.signum is not None)
    signum = code - 128 if code is not None and code > 128 else workers.signum or signal.SIGINT
    if ended == "interrupted":
        message = f"stopped by {signal.Signals(signum).name}"
    else:
        message = "" if ended == "finished" else last.removeprefix("error: ")
    return {"activation": run.activation, "status": ended, "message": message,
            "exit_code": 128 + signum if ended == "interrupted" else 0, "seconds": time.perf_counter() - started}


@contextmanager
def _config_file(run):
    """The run's resolved config (as the run will record it) in a temporary file for the
    training to read; not in the run's folder, which only mlp train writes."""
    handle, name = tempfile.mkstemp(prefix=f"mlp-compare-{run.activation}-", suffix=".yaml")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(dump_yaml(run.config))
        yield Path(name)
    finally:
        os.unlink(name)


def _verb(run) -> str:
    return "resuming" if run.state == "resume" else "training"


def _outcome(result: dict[str, Any]) -> str:
    name, status = result["activation"], result["status"]
    if status == "finished":
        return f"      {name:<11} finished in {result['seconds']:.1f} s"
    return f"      {name:<11} {status}: {result['message']}"
