"""Sweeps: a grid or a search over config values, run as one Optuna study, then a leaderboard.

``--grid model.activation=relu,tanh --grid model.width=128,256`` makes four trials, on
Optuna's grid sampler; ``--search space.yaml --trials 20`` lets a sampler (TPE, or random)
pick 20 trials from ranges and choices.  Every trial config is checked before the first
trial starts.  A trial is ``mlp train`` in a child process writing ``SWEEP_DIR/<trial>/``
(its output goes to ``train.log`` there), so ``tensorboard --logdir SWEEP_DIR`` overlays the
trials and a failing trial cannot take the others down; under the study the child reports
each epoch's validation accuracy and stops early when the pruner says it lags.

The study lives in a storage (by default ``SWEEP_DIR/optuna-journal.log``) that any number of
``mlp sweep`` processes started with the same command share: see mlp/sweep/study.py for how they
split the trials.  The leaderboard is read from the study, so it shows every worker's trials.
"""

from __future__ import annotations

import hashlib
import json
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
    config: Path | None  # None when only the leaderboard is read from the study
    sets: list[str]
    space: Space
    budget: int  # how many trials the study has in all
    sweep_dir: Path
    base_yaml: str  # the config every trial starts from, --set applied
    pruner: str = "none"
    sampler: str | None = None  # None for a grid

    @property
    def definition(self) -> dict[str, Any]:
        """What every worker of the study must agree on (a search may be extended: --trials may grow)."""
        return {"kind": self.space.kind, "space": self.space.definition(), "pruner": self.pruner,
                "sampler": self.sampler, "config": self.base_yaml}

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
            cfg = load_config(self.config, overrides, typed=self.sets)
        except UserError as e:
            raise UserError(f"trial {name}: {e}") from None
        if cfg.data.val_size == 0:
            raise UserError(f"trial {name}: data.val_size is 0, but a sweep ranks trials by validation "
                            "accuracy; give data.val_size > 0")
        return Trial(name, values, overrides, dump_yaml(cfg), self.sweep_dir / name, cfg.train.epochs)


def _folder_safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", value).strip("_") or "_"


def plan_sweep(config: Path, space: Space, trials: int | None, sets: list[str], sweep_dir: Path | None,
               pruner: str | None = None, sampler: str | None = None) -> Plan:
    """Check everything the command says before anything starts; a mistake is one UserError.
    Without ``sweep_dir``, the sweep's folder is ``runs/<config name>-sweep-<digest>``, the digest
    of its definition: the same command finds the same folder, another sweep gets its own."""
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
    plan = Plan(config, list(sets), space, budget, sweep_dir or Path("runs"), dump_yaml(base),
                pruner or ("none" if space.kind == "grid" else "median"),
                None if space.kind == "grid" else sampler or "tpe")
    if sweep_dir is None:
        digest = hashlib.sha256(json.dumps(plan.definition, sort_keys=True).encode()).hexdigest()[:6]
        plan.sweep_dir = Path("runs") / f"{base.name}-sweep-{digest}"
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
        cfg = load_config(plan.config, overrides, typed=plan.sets)
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


def run_sweep(config: Path | None, grid: list[str] = (), search: Path | None = None, trials: int | None = None,
              sets: list[str] = (), sweep_dir: Path | None = None, jobs: int = 1, storage: str | None = None,
              study: str | None = None, pruner: str | None = None, sampler: str | None = None,
              seed: int | None = None, leaderboard_only: bool = False) -> int:
    """What ``mlp sweep`` does; returns the exit code: 0, 1 if a trial failed, 128+N if stopped by signal N.
    ``--leaderboard-only --sweep-dir DIR`` alone reads the sweep from its study."""
    from mlp.sweep.storage import storage_kept

    if leaderboard_only and not grid and search is None:
        with storage_kept():
            return _leaderboard_only(sweep_dir, storage, study)
    if config is None:
        raise UserError("give --config FILE: the config every trial starts from")
    plan = plan_sweep(config, _space(grid, search, sampler, seed), trials, list(sets), sweep_dir, pruner, sampler)
    output_folder(plan.sweep_dir, "--sweep-dir")
    with storage_kept():
        return _sweep(plan, jobs, storage, study, seed, leaderboard_only)


def _sweep(plan: Plan, jobs: int, storage: str | None, study: str | None, seed: int | None,
           leaderboard_only: bool) -> int:
    from mlp.sweep.storage import JOURNAL_NAME
    from mlp.sweep.study import SweepStudy

    storage = storage or str(plan.sweep_dir / JOURNAL_NAME)
    shared = SweepStudy(storage, study or plan.sweep_dir.name, plan.space, plan.budget, plan.definition,
                        plan.pruner, plan.sampler or "tpe", seed)
    before = Counter(row["status"] for row in leaderboard(plan, shared) if row["status"] in (*DONE, "failed"))
    size = f"{plan.budget} trial{'s' if plan.budget != 1 else ''}"
    what = f"grid of {size}" if plan.space.kind == "grid" else f"{plan.sampler} search of {size}"
    print(f"sweep    {what} in {plan.sweep_dir}, study '{shared.name}' in {_shown_storage(storage)}" +
          (f" ({', '.join(f'{n} {state}' for state, n in before.items())} before, skipped)" if before else "") +
          (f", {jobs} at a time" if jobs > 1 and not leaderboard_only else "") +
          (f", pruner {plan.pruner}" if plan.pruner != "none" else ""), flush=True)
    worker = Worker(plan, shared, jobs)
    if not leaderboard_only:
        worker.run()
    rows = leaderboard(plan, shared)
    write_leaderboard(plan, rows)
    print()
    print(text_table(*leaderboard_table(plan, rows)))
    return _closing(plan, rows, worker, storage)


def _leaderboard_only(sweep_dir: Path | None, storage: str | None, study: str | None) -> int:
    """The leaderboard of the sweep in ``sweep_dir`` (or ``storage``), its grid or search read from its study."""
    from mlp.sweep.storage import JOURNAL_NAME
    from mlp.sweep.study import stored_sweep

    if sweep_dir is None:
        raise UserError("--leaderboard-only without --grid or --search needs --sweep-dir DIR: the sweep's folder")
    if storage is None and not (sweep_dir / JOURNAL_NAME).is_file():
        raise UserError(f"--sweep-dir {sweep_dir}: no sweep there (no {JOURNAL_NAME}); give the folder a sweep "
                        "printed, or its --storage")
    storage = storage or str(sweep_dir / JOURNAL_NAME)
    definition, budget = stored_sweep(storage, study or sweep_dir.name)
    space = Space.stored(definition["kind"], definition["space"])
    plan = Plan(None, [], space, budget, sweep_dir, definition["config"], definition["pruner"], definition["sampler"])
    return _sweep(plan, 1, storage, study, None, leaderboard_only=True)


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
    from mlp.sweep.storage import hide_password

    return hide_password(storage) if "://" in storage else storage


def _closing(plan: Plan, rows: list[dict], worker: Worker, storage: str) -> int:
    """The lines under the leaderboard, and the exit code."""
    counts = Counter(row["status"] for row in rows)
    print(f"\nleaderboard.csv and leaderboard.md in {plan.sweep_dir};  tensorboard --logdir {plan.sweep_dir};  "
          f"optuna-dashboard {_shown_storage(storage)}")
    if counts["running"]:
        print(f"{counts['running']} trial(s) still running on other workers; run mlp sweep --leaderboard-only "
              f"--sweep-dir {plan.sweep_dir} later for the final table")
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
