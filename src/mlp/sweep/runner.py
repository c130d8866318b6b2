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

import csv
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlp import threads
from mlp.config import dump_yaml, load_config, parse_override
from mlp.training import signals
from mlp.errors import UserError
from mlp.files import output_folder
from mlp.run.folder import ENDED as DONE, previous_run
from mlp.commands.runs import COLUMNS, cell, markdown_table, read_run, text_table
from mlp.sweep.space import Space, load_space, override_text, parse_grid, shown



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


def trial_state(trial: Trial) -> str:
    """``finished``, ``pruned``, ``diverged``, ``resume`` (last.pth of this config), or ``new``."""
    return previous_run(trial.run_dir, trial.config_yaml, "use another --sweep-dir or remove that folder")


class Worker:
    """This process's share of the study: ``jobs`` threads, each taking a trial, training it in
    a child process and telling the study how it ended, until the study has nothing left to take.

    A SIGINT/SIGTERM to the sweep is passed on to each running trial once per signal (they run
    in their own sessions, so a terminal's Ctrl-C reaches only the sweep): the first makes every
    trial save last.pth and stop, a second SIGINT quits them at once.  Stopped trials are given
    back to the study, and any worker resumes them later.
    """

    def __init__(self, plan: Plan, study, jobs: int):
        self.plan, self.study, self.jobs = plan, study, jobs
        self.lock = threading.Lock()
        self.children: dict[int, subprocess.Popen] = {}  # trial id → its training process
        self.taken: set[int] = set()  # trials another worker took over (this one missed heartbeats)
        self.signum: int | None = None

    def stop(self, signum, frame) -> None:
        self.signum = signum
        with self.lock:
            for proc in self.children.values():
                proc.send_signal(signum)

    def run(self) -> None:
        from mlp.sweep.study import storage_errors

        done = threading.Event()
        beating = threading.Thread(target=self._heartbeat, args=(done,), daemon=True)
        beating.start()
        try:
            with signals.handling(self.stop), ThreadPoolExecutor(self.jobs) as pool:
                for future in [pool.submit(self._loop) for _ in range(self.jobs)]:
                    future.result()
        except storage_errors() as e:  # the trials running then have finished: nothing is lost
            first = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            raise UserError(f"lost the study's storage ({type(e).__name__}: {first}); run the same command "
                            "again once it is back") from None
        finally:
            done.set()
            beating.join()

    def _loop(self) -> None:
        while self.signum is None:
            claim = self.study.claim()
            if claim is None:
                return
            self._run(claim)

    def _run(self, claim) -> None:
        """Train one claimed trial (or record its run folder's outcome) and tell the study."""
        name = self.plan.name(claim.params, claim.origin)
        try:
            trial = self.plan.trial(claim.params, claim.origin)
            state = trial_state(trial)
        except UserError as e:  # a search's values the config refuses, or a folder holding another run
            reason = str(e).removeprefix(f"trial {name}: ")
            _say(f"trial {name} failed: {reason}", sys.stderr)
            self.study.tell(claim, "failed", {"error": reason})
            return
        self.study.note(claim.trial_id, run=str(trial.run_dir.resolve()), epochs=trial.epochs,
                        host=self.study.me["host"])
        if state in DONE:  # its worker trained it but stopped before telling the study
            self.study.tell(claim, state, _summary(trial.run_dir))
            _say(f"trial {trial.name}: {state} in {trial.run_dir} already, recorded")
            return
        verb = "resuming" if state == "resume" else "training"
        announce = f"[{claim.origin + 1}/{self.plan.budget}] {verb} {trial.name}"
        code, last = self._train(claim, trial, state, "\n" + announce if self.jobs == 1 else announce)
        if claim.trial_id in self.taken:
            _say(f"trial {trial.name} was taken over by another worker (this one missed its heartbeats)", sys.stderr)
            return
        summary = _summary(trial.run_dir)
        outcome = _outcome(code, summary.get("status"), stopped=self.signum is not None)
        if outcome == "interrupted":
            self.study.release(claim)
        elif not self.study.tell(claim, outcome, {**summary, **({"error": last} if outcome == "failed" else {})}):
            _say(f"trial {trial.name} was taken over by another worker; its result is not recorded", sys.stderr)
        elif outcome == "failed":
            _say(f"trial {trial.name} failed (exit {code}): {last}  [log: {trial.run_dir / 'train.log'}]", sys.stderr)
        elif self.jobs > 1:  # with one job the trial's own output said it
            epochs = f" after epoch {summary.get('epochs_done')}" if outcome == "pruned" else ""
            _say(f"trial {trial.name} {outcome}{epochs}")

    def _train(self, claim, trial: Trial, state: str, announce: str) -> tuple[int | None, str]:
        """Run ``mlp train`` for the trial; its exit code (None if never started) and last output line.

        With one job at a time the trial's output is shown as it comes; it always goes to train.log.
        """
        command = [sys.executable, "-m", "mlp", "train", "--no-progress"]
        if state == "resume":
            command += ["--resume", str(trial.run_dir)]
        else:
            command += ["--config", str(self.plan.config), *(a for o in trial.overrides for a in ("--set", o)),
                        "--run-dir", str(trial.run_dir), "--overwrite"]
        from mlp.sweep.study import TRIAL_ENV

        env = {**os.environ, "PYTHONUNBUFFERED": "1", TRIAL_ENV: self.study.child_env(claim, trial.epochs)}
        if self.jobs > 1:  # share the cores instead of each taking them all (mlp.threads)
            env = threads.worker_env(self.jobs, env)
        log_file = trial.run_dir / "train.log"
        with self.lock:  # a signal arriving now must either prevent this start or reach this child
            if self.signum is not None:
                return None, ""
            _say(announce)
            trial.run_dir.mkdir(parents=True, exist_ok=True)
            # The child writes its log itself: it outlives this process if need be (see mlp.sweep.study._die_with_parent).
            with open(log_file, "a") as log:
                log.write(f"$ mlp {' '.join(command[3:])}\n")
                log.flush()
                start = log.tell()
                proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self.children[claim.trial_id] = proc
        last = _follow(log_file, start, proc, echo=self.jobs == 1)
        with self.lock:
            del self.children[claim.trial_id]
        return proc.returncode, last

    def _heartbeat(self, done: threading.Event) -> None:
        """Mark this worker's trials alive; stop a trial that another worker took over."""
        from mlp.sweep.study import HEARTBEAT_S

        while not done.wait(HEARTBEAT_S):
            with self.lock:
                held = dict(self.children)
            for trial_id, proc in held.items():
                try:
                    if self.study.still_mine(trial_id):
                        self.study.beat(trial_id)
                    else:
                        self.taken.add(trial_id)
                        proc.terminate()
                except Exception as e:  # a storage hiccup must not end the heartbeat
                    _say(f"heartbeat: cannot reach the study's storage ({type(e).__name__}: {e}); trying again "
                         f"in {HEARTBEAT_S}s", sys.stderr)


def _follow(log_file: Path, start: int, proc: subprocess.Popen, echo: bool) -> str:
    """Wait for the trial's process, showing its log as it grows when ``echo``; its last line."""
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


def _summary(run_dir: Path) -> dict[str, Any]:
    """What the study keeps of a trial's run (so every worker's leaderboard can show it)."""
    try:
        run = read_run(run_dir) or {}
    except UserError:
        run = {}
    return {k: run.get(k) for k in ("status", "epochs_done", "best_val_acc", "test_acc", "train_time_s")
            if run.get(k) is not None}


def _outcome(code: int | None, status: str | None, stopped: bool) -> str:
    if code is None:
        return "interrupted"  # never started: the sweep was being stopped
    if code == 0:
        return status if status in ("finished", "pruned") else "failed"
    if stopped and (code < 0 or code >= 128):
        return "interrupted"
    return "diverged" if status == "diverged" else "failed"


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
    print(text_table(*_table(plan, rows)))
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


def _say(text: str, stream=None) -> None:
    """One line in one write, so lines from trials running side by side do not interleave."""
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


# the leaderboard's columns after the trial and its swept values: keys of mlp.commands.runs.COLUMNS, as in `mlp runs --json`
LEADERBOARD = ["status", "epochs_done", "best_val_acc", "test_acc", "train_time_s"]


def leaderboard(plan: Plan, study) -> list[dict[str, Any]]:
    """One row per trial of the study (a resumed trial's attempts are one row), read from the
    storage alone; best validation accuracy first.  A grid also lists combinations not started."""
    from mlp.sweep.study import origin

    latest = {}
    for trial in sorted(study.trials(), key=lambda t: t.number):
        if trial.user_attrs.get("status") != "surplus" and set(trial.params) >= set(plan.space.keys):
            latest[origin(trial)] = trial
    now = time.time()
    rows = [_row(plan, trial, study.me, now) for trial in latest.values()]
    if plan.space.kind == "grid":
        seen = {row["trial"] for row in rows}
        rows += [{"trial": plan.name(values, 0), "values": values, "status": "not started"}
                 for values in plan.space.combinations() if plan.name(values, 0) not in seen]
    for row in rows:
        for key in (*LEADERBOARD, "epochs", "host"):
            row.setdefault(key, None)
    # None last; the sort is stable, so equals keep the study's order
    rows.sort(key=lambda r: (r["best_val_acc"] is None, -(r["best_val_acc"] or 0), -(r["test_acc"] or 0)))
    return rows


def _row(plan: Plan, trial, me: dict, now: float) -> dict[str, Any]:
    from mlp.sweep.study import is_abandoned, origin
    from optuna.trial import TrialState

    attrs, reported = trial.user_attrs, trial.intermediate_values
    if trial.state == TrialState.RUNNING:
        status = "interrupted" if is_abandoned(trial, me, now) else "running"
    else:
        status = {TrialState.COMPLETE: "finished", TrialState.PRUNED: "pruned",
                  TrialState.WAITING: "queued"}.get(trial.state) or attrs.get("status") or "failed"
    values = {key: trial.params[key] for key in plan.space.keys}
    return {"trial": plan.name(values, origin(trial)), "values": values, "status": status,
            "epochs_done": attrs.get("epochs_done", len(reported)), "epochs": attrs.get("epochs"),
            "best_val_acc": attrs.get("best_val_acc", max(reported.values(), default=None)),
            "test_acc": attrs.get("test_acc"), "train_time_s": attrs.get("train_time_s"),
            "host": attrs.get("host") or trial.system_attrs.get("mlp:worker", {}).get("host")}


def _table(plan: Plan, rows: list[dict]) -> tuple[list[str], list[list]]:
    """The leaderboard as the text and markdown tables show it; a host column when several ran trials."""
    hosts = len({row["host"] for row in rows if row["host"]}) > 1
    header = ["trial", *plan.space.keys, *(COLUMNS[k] for k in LEADERBOARD), *(["host"] if hosts else [])]
    cells = [[row["trial"], *(shown(v) for v in row["values"].values()),
              *("" if row[k] is None else cell(row, k) for k in LEADERBOARD), *([row["host"]] if hosts else [])]
             for row in rows]
    return header, cells


def write_leaderboard(plan: Plan, rows: list[dict]) -> None:
    with open(plan.sweep_dir / "leaderboard.csv", "w", newline="") as f:
        csv.writer(f).writerows([["trial", *plan.space.keys, *LEADERBOARD, "host"],
                                 *([row["trial"], *row["values"].values(), *(row[k] for k in LEADERBOARD),
                                    row["host"]] for row in rows)])
    (plan.sweep_dir / "leaderboard.md").write_text(markdown_table(*_table(plan, rows)) + "\n")
