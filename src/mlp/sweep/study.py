"""The Optuna side of a sweep: the storage, the study, which trial a worker takes next, and the
per-epoch reports a trial's training process sends.

Every ``mlp sweep`` is one Optuna study, maximising validation accuracy.  Any number of worker
processes (``mlp sweep`` started with the same command and storage, on one machine or many)
share it, and the storage alone decides who trains what:

- **New trials.**  While the study has fewer trials than the sweep's size (the grid's size, or
  ``--trials``), a worker asks the study for a new one.  Optuna numbers trials atomically; the
  grid sampler maps trial number *k* to the *k*-th grid point, so no grid point is handed out
  twice.  Two workers asking at the very same moment may make one trial too many: that one is
  told FAIL at once with ``status: surplus``, never trained, and left out of the leaderboard.
- **Interrupted trials are resumed, not restarted.**  A trial stays RUNNING while its worker
  records a heartbeat every ``HEARTBEAT_S`` seconds.  It counts as abandoned when its worker
  released it (the sweep was stopped by Ctrl-C/SIGTERM), when its worker's process is gone
  from this machine, or when its heartbeat is older than ``STALE_AFTER_S``.  Once every new
  trial has been handed out, a worker fails an abandoned trial (an atomic state change: only
  one worker can win it) and queues a copy (Optuna's retry convention: same parameters, the
  reported epochs, ``failed_trial``/``retry_history`` system attributes).  Whoever takes the copy
  trains the same run folder, continuing from its ``last.pth`` (``mlp train --resume``).
- Finished, pruned, diverged and failed trials are never trained again.

Only the names below are Optuna's public API, plus ``FrozenTrial._trial_id``, which Optuna's own
callbacks use too.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mlp.errors import Pruned, UserError
from mlp.sweep.space import Space
from mlp.sweep.storage import hide_password, open_storage, quiet_optuna, storage_kept
from mlp.training import signals

HEARTBEAT_S = 30  # how often a worker marks its trials alive
STALE_AFTER_S = 300  # a trial whose worker (on another machine) has been silent this long is taken over
TRIAL_ENV = "MLP_STUDY_TRIAL"  # how a sweep tells its `mlp train` child which trial it is


def make_sampler(space: Space, sampler: str, seed: int | None):
    optuna = quiet_optuna()
    if space.kind == "grid":
        return _grid_sampler_class()({p.key: p.choices for p in space.params})
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant liar: a running trial counts as a poor one, so workers sampling side by side spread out
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _grid_sampler_class():
    optuna = quiet_optuna()

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler, except that the sweep (not the sampler) decides when the grid is
        done: the stock one calls ``study.stop()``, which only works inside ``study.optimize``."""

        def after_trial(self, study, trial, state, values) -> None:
            pass

    return GridSampler


def make_pruner(name: str, budget: int):
    """``median``: stop a trial whose best accuracy so far is below the median of earlier trials at
    the same epoch, once a quarter of the trials (at most 5) finished and from epoch 2 on.
    ``halving``: Optuna's successive halving (rungs at epochs 1, 4, 16, ... keep the best quarter)."""
    optuna = quiet_optuna()
    if name == "median":  # the warm-up counts epochs from 1: 2 means "never at epoch 1"
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(1, budget // 4)), n_warmup_steps=2)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def this_worker() -> dict[str, Any]:
    """Who holds a trial: the host to show, and the machine and process to check for liveness."""
    machine = socket.gethostname()
    try:  # the kernel's boot and the process namespace: containers sharing a hostname stay apart
        machine = Path("/proc/sys/kernel/random/boot_id").read_text().strip() + ":" + os.readlink("/proc/self/ns/pid")
    except OSError:
        pass
    return {"host": socket.gethostname(), "machine": machine, "pid": os.getpid()}


def is_abandoned(trial, me: dict[str, Any], now: float) -> bool:
    """Whether a RUNNING trial's worker let it go: released on a stop, gone, or silent too long."""
    attrs = trial.system_attrs
    if attrs.get("mlp:released"):
        return True
    worker, beat = attrs.get("mlp:worker"), attrs.get("mlp:heartbeat")
    if worker is None or beat is None:  # just taken: its worker is writing these now
        return False
    if worker.get("machine") == me["machine"] and not signals.alive(worker.get("pid", -1)):
        return True
    return now - beat > STALE_AFTER_S


def is_retry(trial) -> bool:
    return "failed_trial" in trial.system_attrs


def origin(trial) -> int:
    """The number of the first trial of a retry series: it names the series' run folder."""
    return trial.system_attrs.get("failed_trial", trial.number)


@dataclass
class Claim:
    """A trial this worker took: train ``params`` and tell the study by ``number``."""
    number: int
    trial_id: int
    origin: int
    params: dict[str, Any]


class SweepStudy:
    """One sweep's Optuna study, as a worker sees it."""

    def __init__(self, storage_spec: str, name: str, space: Space, budget: int, definition: dict[str, Any],
                 pruner: str, sampler: str = "tpe", seed: int | None = None):
        self.spec, self.name, self.space, self.budget, self.pruner = storage_spec, name, space, budget, pruner
        self.storage = open_storage(storage_spec)
        self.study = _create_or_load(self.storage, name, make_sampler(space, sampler, seed),
                                     make_pruner(pruner, budget), definition, storage_spec)
        self.me = this_worker()
        self.lock = threading.Lock()  # one claim at a time in this process

    def trials(self) -> list:
        return self.study.get_trials(deepcopy=False)

    def claim(self) -> Claim | None:
        """The next trial for this worker: a new one while the sweep has room, then an abandoned
        one to resume; None when there is nothing left to take."""
        with self.lock:
            trials = self.trials()
            if sum(not is_retry(t) for t in trials) < self.budget:
                claim = self._take()
                if claim is not None:
                    return claim
            return self._resume()

    def _resume(self) -> Claim | None:
        optuna, now = quiet_optuna(), time.time()
        for trial in self.trials():
            if trial.state == optuna.trial.TrialState.RUNNING and is_abandoned(trial, self.me, now):
                self._requeue(trial)
        waiting = any(t.state == optuna.trial.TrialState.WAITING for t in self.trials())
        return self._take() if waiting else None

    def _take(self) -> Claim | None:
        """Ask the study for a trial (a queued one first, as Optuna does); a new trial beyond the
        sweep's size (two workers asked at once) is told FAIL as surplus and not trained."""
        trial = self.study.ask()
        if not is_retry(self.storage.get_trial(trial._trial_id)):
            earlier = sum(not is_retry(t) for t in self.trials() if t.number < trial.number)
            if earlier >= self.budget:
                self.storage.set_trial_user_attr(trial._trial_id, "status", "surplus")
                self.study.tell(trial, state=quiet_optuna().trial.TrialState.FAIL)
                return None
        params = self.space.suggest(trial)  # a retry gets its stored values back
        self.beat(trial._trial_id, first=True)
        frozen = self.storage.get_trial(trial._trial_id)
        return Claim(trial.number, trial._trial_id, origin(frozen), params)

    def _requeue(self, trial) -> None:
        """Fail an abandoned trial (only one worker wins that) and queue a copy of it to resume."""
        optuna = quiet_optuna()
        try:
            self.storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # another worker was faster
        system = {k: v for k, v in trial.system_attrs.items() if not k.startswith("mlp:")}
        system["failed_trial"] = origin(trial)
        system["retry_history"] = [*system.get("retry_history", []), trial.number]
        self.study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={k: v for k, v in trial.user_attrs.items() if k in ("epochs", "run")},
            system_attrs=system, intermediate_values=trial.intermediate_values))

    def beat(self, trial_id: int, first: bool = False) -> None:
        if first:
            self.storage.set_trial_system_attr(trial_id, "mlp:worker", self.me)
        self.storage.set_trial_system_attr(trial_id, "mlp:heartbeat", time.time())

    def still_mine(self, trial_id: int) -> bool:
        trial = self.storage.get_trial(trial_id)
        return trial.state == quiet_optuna().trial.TrialState.RUNNING and trial.system_attrs.get("mlp:worker") == self.me

    def note(self, trial_id: int, **attrs: Any) -> None:
        """Set user attributes (what the leaderboard shows) on a trial that is still running."""
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, value)

    def release(self, claim: Claim) -> None:
        """Give back an interrupted trial: any worker resumes it once the new trials are handed out."""
        self.note(claim.trial_id, status="interrupted")
        self.storage.set_trial_system_attr(claim.trial_id, "mlp:released", True)

    def tell(self, claim: Claim, outcome: str, summary: dict[str, Any]) -> bool:
        """Record how a trial ended; False if another worker took it over meanwhile."""
        optuna = quiet_optuna()
        states = optuna.trial.TrialState
        state = {"finished": states.COMPLETE, "pruned": states.PRUNED}.get(outcome, states.FAIL)
        value = summary.get("best_val_acc") if state == states.COMPLETE else None
        if state == states.COMPLETE and value is None:
            state, outcome = states.FAIL, "failed"
        try:
            self.note(claim.trial_id, **{**summary, "status": outcome})
            self.study.tell(claim.number, value, state=state)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
            return False
        return True

    def child_env(self, claim: Claim, epochs: int) -> str:
        """What the trial's `mlp train` needs to report its epochs to this study."""
        spec = self.spec if "://" in self.spec else str(Path(self.spec).resolve())
        return json.dumps({"storage": spec, "study": self.name, "trial_id": claim.trial_id, "number": claim.number,
                           "pruner": self.pruner, "budget": self.budget, "epochs": epochs})


def _create_or_load(storage, name: str, sampler, pruner, definition: dict[str, Any], where: str):
    """Make the study, or join it when another worker made it; a study made by a different sweep
    (another grid, space, size, pruner or config) is refused."""
    optuna = quiet_optuna()
    definition = json.loads(json.dumps(definition))  # as the storage gives it back
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                    sampler=sampler, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if len(study.directions) != 1 or study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"study '{name}' in {where} minimises something; give another --study name")
    stored = study.user_attrs.get("mlp_sweep")
    if stored is None:
        study.set_user_attr("mlp_sweep", definition)
    elif stored != definition:
        differ = ", ".join(k for k in definition if stored.get(k) != definition[k]) or "its format"
        raise UserError(f"study '{name}' in {where} belongs to a different sweep (it differs in: {differ}); "
                        "run the same command as its other workers, or give another --study name")
    return study


def stored_sweep(storage_spec: str, name: str) -> tuple[dict[str, Any], int]:
    """An existing sweep's definition (as ``_create_or_load`` stored it) and how many trials it has."""
    optuna = quiet_optuna()
    storage, where = open_storage(storage_spec), hide_password(storage_spec) if "://" in storage_spec else storage_spec
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.study.get_all_study_names(storage)
        hint = f"; it holds {', '.join(map(repr, names))}: give one with --study" if names else ""
        raise UserError(f"no study '{name}' in {where}{hint}") from None
    definition = study.user_attrs.get("mlp_sweep")
    if not isinstance(definition, dict) or not {"kind", "space", "config", "pruner", "sampler"} <= set(definition):
        raise UserError(f"study '{name}' in {where} was not made by mlp sweep")
    if definition["kind"] == "grid":
        budget = Space.stored("grid", definition["space"]).size
    else:
        budget = sum(not is_retry(t) and t.user_attrs.get("status") != "surplus" for t in study.get_trials(deepcopy=False))
    return definition, budget


def epoch_reporter(text: str) -> Callable[[int, dict[str, Any]], None]:
    """In a trial's `mlp train` process: report each epoch's validation accuracy to the study
    and raise Pruned when the study's pruner says the trial lags (never after the last epoch)."""
    spec = _trial_spec(text)
    optuna = quiet_optuna()
    try:
        study = optuna.load_study(study_name=spec["study"], storage=open_storage(spec["storage"]),
                                  sampler=optuna.samplers.RandomSampler(),  # nothing is sampled here
                                  pruner=make_pruner(spec["pruner"], spec["budget"]))
    except (KeyError, ValueError, TypeError, UserError) as e:
        raise UserError(f"${TRIAL_ENV} names study '{spec['study']}', which cannot be opened ({e}); "
                        f"unset {TRIAL_ENV} to train outside a sweep") from None
    trial = optuna.trial.Trial(study, spec["trial_id"])

    def on_epoch(epoch: int, record: dict[str, Any]) -> None:
        try:
            with storage_kept():  # the epoch's files are written: a resume continues from them
                trial.report(record["val_accuracy"], epoch)
                prune = epoch < spec["epochs"] and trial.should_prune()
        except optuna.exceptions.UpdateFinishedTrialError:
            raise UserError(f"trial {spec['number']} of study '{spec['study']}' was taken over by another "
                            "worker (this one missed its heartbeats); stopping") from None
        if prune:
            raise Pruned(epoch)

    return on_epoch


# What child_env writes, field by field: anything else in $MLP_STUDY_TRIAL was not set by mlp sweep.
_TRIAL_FIELDS = {"storage": str, "study": str, "trial_id": int, "number": int, "pruner": str, "budget": int,
                 "epochs": int}


def _trial_spec(text: str) -> dict[str, Any]:
    """$MLP_STUDY_TRIAL read back; a UserError when it is not what mlp sweep sets."""
    try:
        spec = json.loads(text)
    except ValueError:
        spec = None
    wrong = not isinstance(spec, dict) or any(
        not isinstance(spec.get(k), t) or isinstance(spec.get(k), bool) for k, t in _TRIAL_FIELDS.items())
    unset = f"unset {TRIAL_ENV} to train on your own"
    if wrong:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise UserError(f"${TRIAL_ENV} is set to {shown!r}, which is not a trial that mlp sweep started "
                        f"(it sets this for its own `mlp train` children); {unset}")
    if "://" not in spec["storage"] and not Path(spec["storage"]).is_file():
        raise UserError(f"${TRIAL_ENV} names the study journal {spec['storage']}, which does not exist; {unset}")
    return spec

