"""``mlp compare``: the same network trained once per activation, then a report that compares them.

Every run gets the same config (seed, so data order and validation split; widths; recipe), with
only ``model.activation`` changed and ``model.init: auto`` (each activation its usual
initialisation: He for the ReLU family, Xavier for sigmoid and tanh, LeCun for SELU) unless
``--set model.init=...`` says otherwise; the per-layer diagnostics are on (``step``).  Each run is
a normal run folder ``OUT/<activation>/`` (``mlp eval``, ``mlp runs``, ``mlp train --resume`` and
TensorBoard read it; its training output goes to ``train.log`` there).  Running the same command
again reuses the finished runs and resumes interrupted ones.  Then ``OUT/summary.json`` and
``OUT/report.html`` (see ``mlp.comparison.report``) are written from the runs' files.

With ``--jobs N`` (default: one per CPU core, at most 4), N runs train at the same time in worker
processes, each with its share of the cores; ``--jobs 1`` trains here, one run after the other.  Ctrl-C (or SIGTERM) makes the running trainings save ``last.pth`` and stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from mlp.threads import prepare, worker_threads
from mlp.training import signals
from mlp.config import Config, dump_yaml, load_config, parse_override
from mlp.errors import UserError
from mlp.files import output_folder
from mlp.run.folder import previous_run

DEFAULT_ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "gelu", "silu", "tanh", "sigmoid")
FORCED = ("model.activation", "train.diagnostics")  # compare sets these itself


@dataclass
class Planned:
    activation: str
    config: Config
    run_dir: Path
    state: str  # finished | diverged | resume | new


def parse_activations(text: str | None) -> list[str]:
    """``"relu,tanh"`` → canonical names, in the order given, each once."""
    from mlp.model import parse_activation

    if text is None:
        return list(DEFAULT_ACTIVATIONS)
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError("--activations expects names separated by commas, e.g. relu,tanh,sigmoid")
    try:
        canonical = [parse_activation(name)[0] for name in names]
    except ValueError as e:
        raise UserError(f"--activations: {e}") from None
    return list(dict.fromkeys(canonical))


def plan(config: Path, activations: list[str], sets: list[str], out: Path) -> list[Planned]:
    """One validated config per activation, and what is already in its folder."""
    for item in sets:
        key = parse_override(item)[0]
        if key in FORCED or key.startswith("model.activation."):
            raise UserError(f"--set {key}: mlp compare sets this itself; choose activations with --activations")
    user_init = any(parse_override(item)[0] == "model.init" for item in sets)
    planned = []
    for name in activations:
        overrides = [*sets, f"model.activation={name}", "train.diagnostics=step"]
        cfg = load_config(config, overrides if user_init else [*overrides, "model.init=auto"])
        run_dir = out / name
        planned.append(Planned(name, cfg, run_dir, previous_run(run_dir, dump_yaml(cfg), "choose another --out, or remove that folder to train it again")))
    return planned


def train_one(activation: str, config: dict[str, Any], run_dir: str, state: str,
              threads: int | None = None) -> dict[str, Any]:
    """Train (or resume) one run, its output in ``train.log``; what became of it, as a dict."""
    import torch

    from mlp.config import validate_config
    from mlp.errors import Diverged, Interrupted
    from mlp.training.loop import fit, resume_target

    if threads:
        torch.set_num_threads(threads)
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    started, code = time.perf_counter(), 0
    with open(folder / "train.log", "a") as log, contextlib.redirect_stdout(log):
        try:
            if state == "resume":
                fit(resume_target(folder, []), progress=False)
            else:
                fit(validate_config(config), folder, overwrite=True, progress=False)
            status, message = "finished", ""
        except Interrupted as e:
            status, message, code = "interrupted", f"stopped by {e.signal_name}", e.exit_code
        except UserError as e:
            status, message = ("diverged" if isinstance(e, Diverged) else "failed"), str(e)
            print(f"error: {e}")
    return {"activation": activation, "status": status, "message": message, "exit_code": code,
            "seconds": time.perf_counter() - started}


def _worker_start(threads: int) -> None:
    # A session of its own: a terminal's Ctrl-C reaches only mlp compare, which passes each
    # signal on once.  Idle workers ignore them; a training installs its own handler (save
    # last.pth and stop; a second Ctrl-C quits at once).
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


class _Stop:
    """mlp compare's handler while workers train: each SIGINT/SIGTERM is passed on to them, and
    no further run starts; a second Ctrl-C also quits here at once."""

    def __init__(self):
        self.signum: int | None = None
        self.pool: ProcessPoolExecutor | None = None

    def __call__(self, signum, frame):
        again = self.signum is not None and signum == signal.SIGINT
        self.signum = signum
        workers = getattr(self.pool, "_processes", None) or {}  # the executor's pid → process
        for pid in list(workers):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass  # already gone
        if again:
            raise KeyboardInterrupt


def train_all(todo: list[Planned], jobs: int) -> list[dict[str, Any]]:
    """Train the runs ``todo``: here, one after the other, or in ``jobs`` worker processes."""
    results = []
    if jobs == 1 or len(todo) <= 1:
        for number, run in enumerate(todo, 1):
            _say(f"[{number}/{len(todo)}] {_verb(run)} {run.activation:<11} log: {run.run_dir / 'train.log'}")
            results.append(train_one(run.activation, run.config.to_dict(), str(run.run_dir), run.state))
            _say(_outcome(results[-1]))
            if results[-1]["status"] in ("interrupted", "failed"):  # a failure other than divergence repeats
                break
        return results
    jobs = min(jobs, len(todo))
    threads = worker_threads(jobs)
    prepare(todo[0].config.train.threads)  # the workers inherit this process's environment
    stop = _Stop()
    with signals.handling(stop):
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_worker_start,
                                 initargs=(threads,)) as pool:
            stop.pool = pool
            _say(f"training {len(todo)} runs, {jobs} at a time ({threads} thread{'s' * (threads > 1)} each); "
                 f"logs in {todo[0].run_dir.parent}/<activation>/train.log")
            _in_workers(pool, list(todo), jobs, threads, stop, results)
    if stop.signum is not None and not any(r["status"] == "interrupted" for r in results):
        results.append({"activation": "", "status": "interrupted", "message": "", "exit_code": 128 + stop.signum,
                        "seconds": 0.0})
    return results


def _in_workers(pool, queue: list[Planned], jobs: int, threads: int, stop: "_Stop", results: list) -> None:
    """Keep ``jobs`` trainings going until ``queue`` is empty, a stop is asked for, or one fails.
    (Runs are handed to the pool one at a time: one already handed over cannot be taken back.)"""
    pending = {}
    while pending or queue:
        while queue and len(pending) < jobs and stop.signum is None and \
                not any(r["status"] == "failed" for r in results):
            run = queue.pop(0)
            pending[pool.submit(train_one, run.activation, run.config.to_dict(), str(run.run_dir),
                                run.state, threads)] = run
        if not pending:
            return
        done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        for future in done:
            pending.pop(future)
            results.append(future.result())
            _say(_outcome(results[-1]))


def _verb(run: Planned) -> str:
    return "resuming" if run.state == "resume" else "training"


def _outcome(result: dict[str, Any]) -> str:
    name, status = result["activation"], result["status"]
    if status == "finished":
        return f"      {name:<11} finished in {result['seconds']:.1f} s"
    return f"      {name:<11} {status}: {result['message']}"


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_compare(config: Path, activations: str | None, sets: list[str], out: Path | None,
                jobs: int | None = None) -> int:
    """What ``mlp compare`` does; the exit code (0, 1 if a run failed, 128+N if stopped by signal N).

    ``jobs`` defaults to one run per CPU core (at most 4), each with one thread: on a shared
    machine, two threads of one process waiting for each other can make a training many times
    slower (measured: 14 minutes one at a time with two threads, 71 s two at a time with one)."""
    jobs = jobs or max(1, min(os.cpu_count() or 1, 4))
    names = parse_activations(activations)
    base = load_config(config, sets)
    out = Path(out) if out is not None else Path("runs") / f"{base.name}-compare"
    output_folder(out, "--out")
    runs = plan(config, names, sets, out)
    reused = [r.activation for r in runs if r.state in ("finished", "diverged")]
    widths = base.model.widths
    shape = f"of {widths[0]}" if len(set(widths)) == 1 else "-".join(map(str, widths))
    _say(f"compare  {len(runs)} activations, {base.model.depth} hidden layers {shape}, {base.data.dataset}, "
         f"{base.train.epochs} "
         f"epoch{'s' * (base.train.epochs > 1)} each, in {out}"
         + (f" (reusing {', '.join(reused)})" if reused else ""))
    todo = [r for r in runs if r.state not in ("finished", "diverged")]
    results = train_all(todo, jobs) if todo else []
    stopped = next((r for r in results if r["status"] == "interrupted"), None)
    if stopped is not None:
        print("compare stopped; the finished runs are kept and the interrupted ones saved last.pth: "
              "run the same command again to continue", file=sys.stderr)
        return stopped["exit_code"] or 130
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        for r in failed:
            print(f"error: {r['activation']}: {r['message']}", file=sys.stderr)
        return 1
    from mlp.comparison.report import write_report

    summary_file, report_file = write_report(out, runs, config, sets)
    _say(f"summary  {summary_file}\nreport   {report_file}\ncurves   tensorboard --logdir {out}")
    return 0
