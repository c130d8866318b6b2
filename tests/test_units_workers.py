"""Unit tests of how compare and sweep hand out their runs: a failed run stops ``compare --jobs 1``,
workers get their share of the cores in MLP_THREAD_SHARE, and the leaderboard orders ties."""

import subprocess
from types import SimpleNamespace

import optuna

import mlp.commands.runs
import mlp.threads
from mlp.comparison.plan import Planned
from mlp.comparison.trainings import train_all
from mlp.sweep.leaderboard import leaderboard
from mlp.sweep.runner import Plan
from mlp.sweep.worker import Worker
from mlp.training import warmstart
from mlp.training.workers import Workers


def _planned(tmp_path, *names):
    config = SimpleNamespace(to_dict=lambda: {})
    return [Planned(name, {}, 0, config, tmp_path / name, "new") for name in names]


def _stub_trainings(monkeypatch, statuses, trained):
    """Workers.train stubbed: a run named in ``statuses`` ends that way (its exit code and the
    status its metrics.json records), any other finishes; ``trained`` gets each run's name."""
    ends = {"finished": (0, "finished"), "failed": (1, None), "diverged": (3, "diverged")}

    def train(self, key, args, log_file, env=None, announce=None):
        trained.append(key)
        code, _ = ends[statuses.get(key, "finished")]
        return code, "error: disk full"

    def read_run(folder):
        return {"status": ends[statuses.get(folder.name, "finished")][1]}

    monkeypatch.setattr(Workers, "train", train)
    monkeypatch.setattr(mlp.commands.runs, "read_run", read_run)


def test_compare_with_one_job_stops_at_the_first_failed_run(tmp_path, monkeypatch):
    trained = []
    _stub_trainings(monkeypatch, {"tanh": "failed"}, trained)
    results = train_all(_planned(tmp_path, "relu", "tanh", "gelu", "elu"), jobs=1)
    assert trained == ["relu", "tanh"] and [r["status"] for r in results] == ["finished", "failed"]
    assert results[1]["message"] == "disk full"


def test_compare_with_one_job_goes_on_after_a_diverged_run(tmp_path, monkeypatch):
    trained = []
    _stub_trainings(monkeypatch, {"relu": "diverged"}, trained)
    results = train_all(_planned(tmp_path, "relu", "tanh"), jobs=1)
    assert trained == ["relu", "tanh"] and [r["status"] for r in results] == ["diverged", "finished"]


class _Finished:
    """A training process that has already ended well; keeps the environment it was given."""

    envs = []
    returncode = 0

    def __init__(self, command, env, **kwargs):
        self.envs.append(env)

    def poll(self):
        return 0


def _child_envs(monkeypatch, cores):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(mlp.threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(warmstart, "available", lambda: False)  # every training a new interpreter's Popen
    monkeypatch.setattr(subprocess, "Popen", _Finished)
    _Finished.envs = []
    return _Finished.envs


def test_a_compare_worker_gets_its_share_of_the_cores(tmp_path, monkeypatch):
    envs = _child_envs(monkeypatch, 6)
    for jobs in (3, 1):
        assert Workers(jobs).train("run", [], tmp_path / f"{jobs}.log") == (0, "")
    # 6 cores: 3 runs at a time, or one; auto measures within that share
    assert [env[mlp.threads.SHARE_ENV] for env in envs] == ["2", "6"]
    assert not any("OMP_NUM_THREADS" in env for env in envs)
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # the user's own setting wins, and fixes the count
    Workers(3).train("run", [], tmp_path / "set.log")
    assert envs[-1]["OMP_NUM_THREADS"] == "5" and mlp.threads.SHARE_ENV not in envs[-1]


def test_a_sweep_trial_gets_its_share_of_the_cores(tmp_path, monkeypatch):
    envs = _child_envs(monkeypatch, 8)
    study = SimpleNamespace(child_env=lambda claim, epochs: "{}")
    plan = SimpleNamespace(config=tmp_path / "c.yaml")
    trial = SimpleNamespace(run_dir=tmp_path / "trial", overrides=[], epochs=1)
    for jobs in (4, 1):
        Worker(plan, study, jobs)._train(SimpleNamespace(trial_id=jobs), trial, "new", "go")
    assert envs[0][mlp.threads.SHARE_ENV] == "2"  # 8 cores, 4 trials at a time
    assert envs[1][mlp.threads.SHARE_ENV] == "8"  # one at a time: all of them


def test_the_leaderboard_breaks_a_validation_tie_by_test_accuracy(tmp_path):
    def trial(number, lr, val, test):
        done = val is not None  # else a trial that failed before its first epoch
        t = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.FAIL,
                                      params={"optimizer.lr": lr},
                                      distributions={"optimizer.lr": optuna.distributions.FloatDistribution(0, 1)},
                                      value=val, user_attrs={"best_val_acc": val, "test_acc": test} if done else {})
        t.number = number
        return t

    trials = [trial(0, 0.1, 0.80, 0.70), trial(1, 0.2, 0.90, 0.81), trial(5, 0.6, None, None),
              trial(2, 0.3, 0.90, 0.85), trial(3, 0.4, 0.95, 0.60), trial(4, 0.5, 0.80, 0.70)]
    space = SimpleNamespace(kind="search", keys=["optimizer.lr"])
    plan = Plan(config=tmp_path / "c.yaml", sets=[], space=space, budget=5, sweep_dir=tmp_path, base_yaml="")
    rows = leaderboard(plan, SimpleNamespace(trials=lambda: trials, me={}))
    # best validation first; a tie goes to the better test accuracy, a full tie keeps the study's order;
    # a trial without a result comes last
    assert [row["trial"] for row in rows] == ["trial-003", "trial-002", "trial-001", "trial-000", "trial-004",
                                              "trial-005"]
    assert rows[-1]["status"] == "failed" and rows[-1]["best_val_acc"] is None
