"""``mlp compare``: the same network trained once per activation, then a report that compares them.

Every run gets the same config (seed, so data order and validation split; widths; recipe), with
only ``model.activation`` changed and ``model.init: auto`` (each activation its usual
initialisation: He for the ReLU family, Xavier for sigmoid and tanh, LeCun for SELU) unless
``--set model.init=...`` says otherwise; the per-layer diagnostics are on (``step``).  Each run is
a normal run folder ``OUT/<activation>/`` (``mlp eval``, ``mlp runs``, ``mlp train --resume`` and
TensorBoard read it; its training output goes to ``train.log`` there).  Running the same command
again reuses the finished runs and resumes interrupted ones.  Then ``OUT/summary.json`` and
``OUT/report.html`` (see ``mlp.comparison.report``) are written from the runs' files.

With ``--jobs N`` (default: one per CPU core, at most 4), N runs train at the same time, each an
``mlp train`` process with its share of the cores (``mlp.comparison.trainings``); ``--jobs 1``
trains them one after the other the same way.  Ctrl-C (or SIGTERM) makes the running trainings
save ``last.pth`` and stop; they also stop when mlp compare itself is killed.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mlp.comparison.trainings import train_all
from mlp.config import Config, dump_yaml, load_config, parse_override
from mlp.errors import UserError
from mlp.files import output_folder
from mlp.run.folder import previous_run
from mlp.training.workers import say as _say

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

    _say(f"report   building it from the {len(runs)} runs (figures, findings) ...")
    summary_file, report_file = write_report(out, runs, config, sets)
    _say(f"summary  {summary_file}\nreport   {report_file}\ncurves   tensorboard --logdir {out}")
    return 0
