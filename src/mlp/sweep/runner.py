"""Sweeps: a grid or a search over config values, run as one Optuna study, then a leaderboard.

``--grid model.activation=relu,tanh --grid model.width=128,256`` makes four trials, on
Optuna's grid sampler; ``--search space.yaml --trials 20`` lets a sampler (TPE, or random)
pick 20 trials from ranges and choices.  Every trial config is checked before the first
trial starts.  A trial is ``mlp train`` in a child process writing ``SWEEP_DIR/<trial>/``
(its output goes to ``train.log`` there), so ``tensorboard --logdir SWEEP_DIR`` overlays the
trials and a failing trial cannot take the others down; under the study the child reports
each epoch's validation accuracy and stops early when the pruner says it lags.

The study lives in a storage (by default ``SWEEP_DIR/optuna-journal.log``) that any number of
``mlp sweep`` processes started with the same command share: see mlp/study.py for how they
split the trials.  The leaderboard is read from the study, so it shows every worker's trials.
"""

from __future__ import annotations

import re
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlp.config import dump_yaml, load_config, parse_override
from mlp.errors import UserError
from mlp.files import output_folder
from mlp.run.folder import ENDED as DONE
from mlp.sweep.leaderboard import leaderboard, leaderboard_table, write_leaderboard
from mlp.sweep.space import Space, load_space, override_text, parse_grid, shown
from mlp.sweep.worker import Worker, trial_state
from mlp.tables import text_table


@dataclass
class Trial:
    name: str  # the folder name: the swept values (grid) or the trial number (search)
    values: dict[str, Any]  # key → the value as the study stores it
    overrides: list[str]  # the --set items, then this trial's values
    config_yaml: str  # the resolved config, to recognise this trial's own earlier run
    run_dir: Path
    epochs: int


@dataclass
class Plan:
    """What one `mlp sweep` command describes; the same for every worker that runs it."""
    config: Path
    sets: list[str]
    space: Space
    budget: int  # how many trials the study has in all
    sweep_dir: Path
    base_yaml: str  # the config every trial starts from, --set applied

    @property
    def labels(self) -> dict[str, str]:
        """Column and folder labels: the last part of each key, or the whole key where two would clash."""
        last = [key.rsplit(".", 1)[-1] for key in self.space.keys]
        return {key: part if last.count(part) == 1 else key for key, part in zip(self.space.keys, last)}

    def name(self, values: dict[str, Any], origin: int) -> str:
        if self.space.kind != "grid":
            return f"trial-{origin:03d}"
        name = ",".join(f"{self.labels[k]}={_folder_safe(override_text(values[k]))}" for k in self.space.keys)
        if len(name.encode()) > 255:  # the longest folder name most file systems take
            raise UserError(f"the trial folder {name[:60]}... would be named by {len(name.encode())} characters, "
                            "more than the 255 a file system allows; shorten the --grid values")
        return name

    def trial(self, values: dict[str, Any], origin: int) -> Trial:
        """The run one trial is: its config is built and checked here (a UserError if invalid)."""
        name = self.name(values, origin)
        overrides = [*self.sets, *self.space.overrides(values)]
        try:
            cfg = load_config(self.config, overrides)
        except UserError as e:
            raise UserError(f"trial {name}: {e}") from None
        if cfg.data.val_size == 0:
            raise UserError(f"trial {name}: data.val_size is 0, but a sweep ranks trials by validation "
                            "accuracy; give data.val_size > 0")
        return Trial(name, values, overrides, dump_yaml(cfg), self.sweep_dir / name, cfg.train.epochs)


def _folder_safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", value).strip("_") or "_"


def plan_sweep(config: Path, space: Space, trials: int | None, sets: list[str], sweep_dir: Path | None) -> Plan:
    """Check everything the command says before anything starts; a mistake is one UserError."""
    base = load_config(config, sets)  # a mistake in the base config or --set is reported once, plainly
    set_keys = {parse_override(item)[0] for item in sets}
    for key in space.keys:
        if key in set_keys:
            raise UserError(f"{key} is both in --set and in {space.source}; keep one")
    if space.kind == "grid" and trials is not None:
        raise UserError("--trials is for --search; a grid runs each of its combinations once")
    if space.kind == "search" and trials is None:
        raise UserError("--search needs --trials N: how many trials the study runs in all (shared by its workers)")
    budget = space.size if space.kind == "grid" else trials
    plan = Plan(config, list(sets), space, budget, sweep_dir or Path("runs") / f"{base.name}-sweep", dump_yaml(base))
    if space.kind == "grid":
        plan_trials(plan)
    else:  # a search cannot be listed: check each range's ends and each choice, one key at a time
        for param in space.params:
            for value in param.probes():
                _checked(plan, [*sets, f"{param.key}={override_text(value)}"], f"{param.key}={shown(value)}")
        _checked(plan, [*sets, *(f"{p.key}={override_text(p.probes()[0])}" for p in space.params)], "its lowest values")
    return plan


def _checked(plan: Plan, overrides: list[str], what: str) -> None:
    try:
        cfg = load_config(plan.config, overrides)
    except UserError as e:
        raise UserError(f"{plan.space.source}: {what}: {e}") from None
    if cfg.data.val_size == 0:
        raise UserError("data.val_size is 0, but a sweep ranks trials by validation accuracy; give data.val_size > 0")


def plan_trials(plan: Plan) -> list[Trial]:
    """A grid's trials, each config validated and each folder checked, in the grid's order."""
    trials, names = [], {}
    for values in plan.space.combinations():
        trial = plan.trial(values, 0)
        if trial.name in names:
            raise UserError(f"trials {names[trial.name]} and {values} would share the folder {trial.name}; "
                            "make the grid values differ in letters or digits")
        names[trial.name] = values
        trial_state(trial)  # a folder holding another config is refused before anything starts
        trials.append(trial)
    return trials


def run_sweep(config: Path, grid: list[str] = (), search: Path | None = None, trials: int | None = None,
              sets: list[str] = (), sweep_dir: Path | None = None, jobs: int = 1, storage: str | None = None,
              study: str | None = None, pruner: str | None = None, sampler: str | None = None,
              seed: int | None = None, leaderboard_only: bool = False) -> int:
    """What ``mlp sweep`` does; returns the exit code: 0, 1 if a trial failed, 128+N if stopped by signal N."""
    space = _space(grid, search, sampler, seed)
    plan = plan_sweep(config, space, trials, list(sets), sweep_dir)
    output_folder(plan.sweep_dir, "--sweep-dir")
    from mlp.sweep.study import JOURNAL_NAME, SweepStudy

    storage = storage or str(plan.sweep_dir / JOURNAL_NAME)
    pruner = pruner or ("none" if space.kind == "grid" else "median")
    sampler = None if space.kind == "grid" else sampler or "tpe"
    # what every worker of the study must agree on (a search may be extended: --trials may grow)
    definition = {"kind": space.kind, "space": space.definition(), "pruner": pruner, "sampler": sampler,
                  "config": plan.base_yaml}
    shared = SweepStudy(storage, study or plan.sweep_dir.name, space, plan.budget, definition, pruner,
                        sampler or "tpe", seed)
    before = Counter(row["status"] for row in leaderboard(plan, shared) if row["status"] in (*DONE, "failed"))
    size = f"{plan.budget} trial{'s' if plan.budget != 1 else ''}"
    what = f"grid of {size}" if space.kind == "grid" else f"{sampler} search of {size}"
    print(f"sweep    {what} in {plan.sweep_dir}, study '{shared.name}' in {_shown_storage(storage)}" +
          (f" ({', '.join(f'{n} {state}' for state, n in before.items())} before, skipped)" if before else "") +
          (f", {jobs} at a time" if jobs > 1 and not leaderboard_only else "") +
          (f", pruner {pruner}" if pruner != "none" else ""), flush=True)
    worker = Worker(plan, shared, jobs)
    if not leaderboard_only:
        worker.run()
    rows = leaderboard(plan, shared)
    write_leaderboard(plan, rows)
    print()
    print(text_table(*leaderboard_table(plan, rows)))
    return _closing(plan, rows, worker, storage)


def _space(grid: list[str], search: Path | None, sampler: str | None, seed: int | None) -> Space:
    if grid and search is not None:
        raise UserError("give --grid or --search, not both")
    if search is not None:
        return load_space(search)
    if not grid:
        raise UserError("give --grid KEY=V1,V2 (every combination) or --search SPACE.yaml --trials N")
    if sampler is not None or seed is not None:
        raise UserError("--sampler and --seed are for --search; a grid runs each combination once")
    return parse_grid(grid)


def _shown_storage(storage: str) -> str:
    from mlp.sweep.study import _hide_password

    return _hide_password(storage) if "://" in storage else storage


def _closing(plan: Plan, rows: list[dict], worker: Worker, storage: str) -> int:
    """The lines under the leaderboard, and the exit code."""
    counts = Counter(row["status"] for row in rows)
    print(f"\nleaderboard.csv and leaderboard.md in {plan.sweep_dir};  tensorboard --logdir {plan.sweep_dir};  "
          f"optuna-dashboard {_shown_storage(storage)}")
    if counts["running"]:
        print(f"{counts['running']} trial(s) still running on other workers; run the same command with "
              "--leaderboard-only later for the final table")
    left = counts["interrupted"] + counts["queued"] + counts["not started"]
    if worker.signum is not None:
        print(f"sweep stopped by {signal.Signals(worker.signum).name}; run the same command again to continue "
              "(finished trials are kept, interrupted ones resume)", file=sys.stderr)
        return 128 + worker.signum
    if left:
        print(f"{left} trial(s) not done; run the same command again to train or resume them", file=sys.stderr)
    failed = counts["failed"] + counts["diverged"]
    if failed:
        print(f"{failed} of {len(rows)} trials failed", file=sys.stderr)
    return 1 if failed else 0
