"""Sweeps: every combination of some config values, each trained as a normal run, then a leaderboard.

``--grid model.activation=relu,tanh --grid model.width=128,256`` makes four trials.  All of
their configs are validated before the first one starts.  A trial is ``mlp train`` in a
child process writing ``SWEEP_DIR/<trial>/`` (its output goes to ``train.log`` there), so
``tensorboard --logdir SWEEP_DIR`` overlays the trials and a failing trial cannot take the
others down.  Running the same sweep again skips finished (and diverged) trials and resumes
interrupted ones from their ``last.pth``; a trial that failed before its first epoch is started afresh.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from mlp.config import dump_yaml, load_config, parse_override
from mlp import signals
from mlp.errors import UserError
from mlp.runs import COLUMNS, cell, markdown_table, read_run, text_table


@dataclass
class Trial:
    name: str  # the folder name: the swept values, e.g. activation=relu,width=256
    values: dict[str, str]  # grid key → the value as typed
    overrides: list[str]  # the --set items, then this trial's grid items
    config_yaml: str  # the resolved config, to recognise this trial's own earlier run
    run_dir: Path


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["model.width=128,256", ...]`` → ``{"model.width": ["128", "256"], ...}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        values = split_values(text)
        if not sep or not key or not all(values):
            raise UserError(f"--grid expects KEY=V1,V2,... e.g. model.width=128,256 (got '{item}')")
        try:
            parse_override(f"{key}={values[0]}")
        except UserError:
            raise UserError(f"--grid {item}: '{key}' is not a dotted config key like model.width") from None
        if key in grid:
            raise UserError(f"--grid {key} is given twice; list all its values in one --grid {key}=V1,V2,...")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise UserError(f"--grid {key} lists {', '.join(repeated)} more than once")
        grid[key] = values
    return grid


def split_values(text: str) -> list[str]:
    """Split on the commas that are not inside [...], {...} or quotes, so lists can be values."""
    values, current, depth, quote = [], "", 0, None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += ch
    return values + [current.strip()]


def plan_trials(config: Path, grid: dict[str, list[str]], sets: list[str], sweep_dir: Path) -> list[Trial]:
    """One validated trial per combination of grid values; any invalid one stops the sweep here."""
    load_config(config, sets)  # a mistake in the base config or --set is reported once, plainly
    set_keys = {parse_override(item)[0] for item in sets}
    for key in grid:
        if key in set_keys:
            raise UserError(f"{key} is both in --set and in --grid; keep one")
    last_parts = [key.rsplit(".", 1)[-1] for key in grid]
    labels = {key: part if last_parts.count(part) == 1 else key for key, part in zip(grid, last_parts)}
    trials, names = [], {}
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination))
        name = ",".join(f"{labels[k]}={_folder_safe(v)}" for k, v in values.items())
        if len(name.encode()) > 255:  # the longest folder name most file systems take
            raise UserError(f"the trial folder {name[:60]}... would be named by {len(name.encode())} characters, "
                            "more than the 255 a file system allows; shorten the --grid values")
        overrides = [*sets, *(f"{k}={v}" for k, v in values.items())]
        try:
            cfg = load_config(config, overrides)
        except UserError as e:
            raise UserError(f"trial {name}: {e}") from None
        if name in names:
            raise UserError(f"trials {names[name]} and {values} would share the folder {name}; "
                            "make the grid values differ in letters or digits")
        names[name] = values
        trials.append(Trial(name, values, overrides, dump_yaml(cfg), sweep_dir / name))
    return trials


def _folder_safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", value).strip("_") or "_"


DONE = ("finished", "diverged")  # a diverged trial would diverge again the same way: not rerun


def trial_state(trial: Trial) -> str:
    """``finished``, ``diverged``, ``resume`` (last.pth of this config), or ``new`` (nothing worth keeping)."""
    config_file, metrics_file = trial.run_dir / "config.yaml", trial.run_dir / "metrics.json"
    if not config_file.is_file():
        return "new"
    try:
        same = config_file.read_text() == trial.config_yaml
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the run in {trial.run_dir}: {type(e).__name__}: {e}") from None
    if not same:
        raise UserError(f"{trial.run_dir} holds a run with a different config; use another --sweep-dir "
                        "or remove that folder")
    status = metrics.get("status") if isinstance(metrics, dict) else None
    if status in DONE:
        return status
    return "resume" if (trial.run_dir / "last.pth").is_file() else "new"


class _Children:
    """The running trials' processes.  A SIGINT/SIGTERM to the sweep is passed on to each of
    them once per signal (they run in their own sessions, so a terminal's Ctrl-C reaches only
    the sweep): the first makes every trial save last.pth and stop, a second SIGINT quits."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.signum: int | None = None

    def _handle(self, signum, frame):
        self.signum = signum
        with self.lock:
            for proc in self.running:
                proc.send_signal(signum)

    def forwarding_signals(self):
        return signals.handling(self._handle)

    def run(self, trial: Trial, state: str, config: Path, jobs: int, announce: str) -> tuple[int | None, str]:
        """Train one trial to the end; its exit code (None if never started) and last output line.

        With one job at a time the trial's output is shown as it comes; it always goes to train.log.
        """
        command = [sys.executable, "-m", "mlp", "train", "--no-progress"]
        if state == "resume":
            command += ["--resume", str(trial.run_dir)]
        else:
            command += ["--config", str(config), *(a for o in trial.overrides for a in ("--set", o)),
                        "--run-dir", str(trial.run_dir), "--overwrite"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if jobs > 1 and "OMP_NUM_THREADS" not in env:  # share the cores instead of each taking them all
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
        with self.lock:  # a signal arriving now must either prevent this start or reach this child
            if self.signum is not None:
                return None, ""
            _say(announce)
            trial.run_dir.mkdir(parents=True, exist_ok=True)
            log = open(trial.run_dir / "train.log", "a")
            log.write(f"$ mlp {' '.join(command[3:])}\n")
            log.flush()
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=env, start_new_session=True)
            self.running.add(proc)
        last = ""
        with log:
            for line in proc.stdout:
                log.write(line)
                if jobs == 1:
                    sys.stdout.write(line)
                last = line.strip() or last
            code = proc.wait()
        with self.lock:
            self.running.discard(proc)
        return code, last


def run_sweep(config: Path, grid_items: list[str], sets: list[str], sweep_dir: Path | None, jobs: int) -> int:
    """What ``mlp sweep`` does; returns the exit code: 0, 1 if a trial failed, 128+N if stopped by signal N."""
    grid = parse_grid(grid_items)
    sweep_dir = sweep_dir or Path("runs") / f"{load_config(config, sets).name}-sweep"
    trials = plan_trials(config, grid, sets, sweep_dir)
    states = {t.name: trial_state(t) for t in trials}
    _make_sweep_dir(sweep_dir)
    todo = [t for t in trials if states[t.name] not in DONE]
    done = Counter(state for state in states.values() if state in DONE)
    print(f"sweep    {len(trials)} trials in {sweep_dir}" +
          (f" ({', '.join(f'{n} {state}' for state, n in done.items())} before, skipped)" if done else "") +
          (f", {jobs} at a time" if jobs > 1 and len(todo) > 1 else ""), flush=True)

    outcomes = {t.name: states[t.name] for t in trials if states[t.name] in DONE}
    children = _Children()
    with children.forwarding_signals(), ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {}
        for number, trial in enumerate(todo, 1):
            verb = "resuming" if states[trial.name] == "resume" else "training"
            announce = f"[{number}/{len(todo)}] {verb} {trial.name}"
            if jobs == 1:
                announce = "\n" + announce  # a blank line between one trial's output and the next
            futures[pool.submit(children.run, trial, states[trial.name], config, jobs, announce)] = trial
        for future in as_completed(futures):
            trial = futures[future]
            code, last = future.result()
            outcomes[trial.name] = _outcome(code, stopped=children.signum is not None)
            if outcomes[trial.name] == "failed":
                _say(f"trial {trial.name} failed (exit {code}): {last}  [log: {trial.run_dir / 'train.log'}]",
                     sys.stderr)
            elif jobs > 1 and code is not None:
                _say(f"trial {trial.name} {outcomes[trial.name]}")

    rows = leaderboard(trials, outcomes)
    write_leaderboard(sweep_dir, list(grid), rows)
    print()
    print(text_table(["trial", *grid, *(COLUMNS[k] for k in LEADERBOARD)], [_shown(row) for row in rows]))
    print(f"\nleaderboard.csv and leaderboard.md in {sweep_dir};  tensorboard --logdir {sweep_dir}")
    if children.signum is not None:
        print(f"sweep stopped by {signal.Signals(children.signum).name}; run the same command again to "
              "continue (finished trials are skipped, interrupted ones resume)", file=sys.stderr)
        return 128 + children.signum
    failed = sum(o in ("failed", "diverged") for o in outcomes.values())
    if failed:
        print(f"{failed} of {len(trials)} trials failed", file=sys.stderr)
    return 1 if failed else 0


def _make_sweep_dir(sweep_dir: Path) -> None:
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise UserError(f"--sweep-dir {sweep_dir} is a file, not a folder")
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--sweep-dir {sweep_dir}: cannot make the folder: {e.strerror or e}") from None
    if not os.access(sweep_dir, os.W_OK | os.X_OK):
        raise UserError(f"--sweep-dir {sweep_dir} is not writable; choose another folder")


def _say(text: str, stream=None) -> None:
    """One line in one write, so lines from trials running side by side do not interleave."""
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _outcome(code: int | None, stopped: bool) -> str:
    if code is None:
        return "not run"
    if code == 0:
        return "finished"
    return "interrupted" if stopped else "failed"


# the leaderboard's columns after the trial and its swept values: keys of mlp.runs.COLUMNS, as in `mlp runs --json`
LEADERBOARD = ["status", "best_val_acc", "test_acc", "train_time_s"]


def leaderboard(trials: list[Trial], outcomes: dict[str, str]) -> list[list]:
    """One row per trial: name, swept values, status, then raw numbers; best validation accuracy first."""
    rows = []
    for trial in trials:
        run = read_run(trial.run_dir) or {}
        status = outcomes[trial.name] if outcomes[trial.name] != "not run" else run.get("status", "not run")
        rows.append([trial.name, *trial.values.values(), status,
                     run.get("best_val_acc"), run.get("test_acc"), run.get("train_time_s")])
    # None last; the sort is stable, so equals keep the grid's order
    rows.sort(key=lambda row: (row[-3] is None, -(row[-3] or 0), -(row[-2] or 0)))
    return rows


def write_leaderboard(sweep_dir: Path, keys: list[str], rows: list[list]) -> None:
    with open(sweep_dir / "leaderboard.csv", "w", newline="") as f:
        csv.writer(f).writerows([["trial", *keys, *LEADERBOARD], *rows])
    table = markdown_table(["trial", *keys, *(COLUMNS[k] for k in LEADERBOARD)], [_shown(row) for row in rows])
    (sweep_dir / "leaderboard.md").write_text(table + "\n")


def _shown(row: list) -> list:
    run = dict(zip(LEADERBOARD, row[-len(LEADERBOARD):]))
    return [*row[:-len(LEADERBOARD)], *(cell(run, key) for key in LEADERBOARD)]
