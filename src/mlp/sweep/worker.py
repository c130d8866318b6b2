"""This process's share of a sweep's study: take a trial, train it, tell the study how it ended,
until the study has nothing left to take (see mlp/sweep/study.py for how workers split them).

A trial is ``mlp train`` in a process of its own (``mlp.training.workers``: threads, signals
passed on once, death with this process); a stopped trial is given back to the study, and any
worker resumes it later.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from mlp.errors import UserError
from mlp.run.folder import ENDED as DONE, previous_run
from mlp.training.workers import Workers, outcome, say


class Worker:
    """``jobs`` trials at a time, each trained in a child process; ``signum`` is the stop asked for."""

    def __init__(self, plan, study, jobs: int):
        self.plan, self.study, self.jobs = plan, study, jobs
        # With one job, the trial's output is shown as it comes; each trial reports to the study.
        self.workers = Workers(jobs, echo=jobs == 1, preload=("mlp.sweep.study",))
        self.taken: set[int] = set()  # trials another worker took over (this one missed heartbeats)

    @property
    def signum(self) -> int | None:
        return self.workers.signum

    def run(self) -> None:
        """Until the study has nothing left to take, or a stop; a lost storage is raised (the
        trials running then have ended by then: nothing is lost)."""
        done = threading.Event()
        beating = threading.Thread(target=self._heartbeat, args=(done,), daemon=True)
        beating.start()
        try:
            self.workers.run(self._loop)
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
            say(f"trial {name} failed: {reason}", sys.stderr)
            self.study.tell(claim, "failed", {"error": reason})
            return
        self.study.note(claim.trial_id, run=str(trial.run_dir.resolve()), epochs=trial.epochs,
                        host=self.study.me["host"])
        if state in DONE:  # its worker trained it but stopped before telling the study
            self.study.tell(claim, state, summary(trial.run_dir))
            say(f"trial {trial.name}: {state} in {trial.run_dir} already, recorded")
            return
        verb = "resuming" if state == "resume" else "training"
        announce = f"[{claim.origin + 1}/{self.plan.budget}] {verb} {trial.name}"
        code, last = self._train(claim, trial, state, "\n" + announce if self.jobs == 1 else announce)
        if claim.trial_id in self.taken:
            say(f"trial {trial.name} was taken over by another worker (this one missed its heartbeats)", sys.stderr)
            return
        self._tell(claim, trial, code, last)

    def _tell(self, claim, trial, code: int | None, last: str) -> None:
        ran = summary(trial.run_dir)
        ended = outcome(code, ran.get("status"), stopped=self.signum is not None)
        if ended == "interrupted":
            self.study.release(claim)
        elif not self.study.tell(claim, ended, {**ran, **({"error": last} if ended == "failed" else {})}):
            say(f"trial {trial.name} was taken over by another worker; its result is not recorded", sys.stderr)
        elif ended == "failed":
            say(f"trial {trial.name} failed (exit {code}): {last}  [log: {trial.run_dir / 'train.log'}]", sys.stderr)
        elif self.jobs > 1:  # with one job the trial's own output said it
            epochs = f" after epoch {ran.get('epochs_done')}" if ended == "pruned" else ""
            say(f"trial {trial.name} {ended}{epochs}")

    def _train(self, claim, trial, state: str, announce: str) -> tuple[int | None, str]:
        """``mlp train`` for the trial, reporting to the study; its exit code and last output line."""
        from mlp.sweep.study import TRIAL_ENV

        if state == "resume":
            args = ["--resume", str(trial.run_dir)]
        else:
            args = ["--config", str(self.plan.config), *(a for o in trial.overrides for a in ("--set", o)),
                    "--run-dir", str(trial.run_dir), "--overwrite"]
        env = {TRIAL_ENV: self.study.child_env(claim, trial.epochs)}
        return self.workers.train(claim.trial_id, args, trial.run_dir / "train.log", env, announce)

    def _heartbeat(self, done: threading.Event) -> None:
        """Mark this worker's trials alive; stop a trial that another worker took over."""
        from mlp.sweep.study import HEARTBEAT_S

        while not done.wait(HEARTBEAT_S):
            for trial_id, proc in self.workers.running().items():
                try:
                    if self.study.still_mine(trial_id):
                        self.study.beat(trial_id)
                    else:
                        self.taken.add(trial_id)
                        proc.terminate()
                except Exception as e:  # a storage hiccup must not end the heartbeat
                    say(f"heartbeat: cannot reach the study's storage ({type(e).__name__}: {e}); trying again "
                        f"in {HEARTBEAT_S}s", sys.stderr)


def trial_state(trial) -> str:
    """``finished``, ``pruned``, ``diverged``, ``resume`` (last.pth of this config), or ``new``."""
    return previous_run(trial.run_dir, trial.config_yaml, "use another --sweep-dir or remove that folder")


def summary(run_dir: Path) -> dict[str, Any]:
    """What the study keeps of a trial's run (so every worker's leaderboard can show it)."""
    from mlp.commands.runs import read_run

    try:
        run = read_run(run_dir) or {}
    except UserError:
        run = {}
    return {k: run.get(k) for k in ("status", "epochs_done", "best_val_acc", "test_acc", "train_time_s")
            if run.get(k) is not None}
