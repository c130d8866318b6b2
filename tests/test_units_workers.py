"""Unit tests of how compare and sweep hand out their runs: a failed run stops ``compare --jobs 1``,
workers get their share of the cores in OMP_NUM_THREADS, and the leaderboard orders ties."""

import os
import signal
import subprocess
from types import SimpleNamespace

import optuna

import mlp.comparison.plan
from mlp.comparison.plan import Planned, train_all
from mlp.sweep.runner import Plan, Worker, leaderboard


def _planned(tmp_path, *names):
    config = SimpleNamespace(to_dict=lambda: {})
    return [Planned(name, config, tmp_path / name, "new") for name in names]


def test_compare_with_one_job_stops_at_the_first_failed_run(tmp_path, monkeypatch):
    trained = []

    def train_one(activation, config, run_dir, state, threads=None):
        trained.append(activation)
        status = "failed" if activation == "tanh" else "finished"
        return {"activation": activation, "status": status, "message": "disk full", "exit_code": 0, "seconds": 1.0}

    monkeypatch.setattr(mlp.comparison.plan, "train_one", train_one)
    results = train_all(_planned(tmp_path, "relu", "tanh", "gelu", "elu"), jobs=1)
    assert trained == ["relu", "tanh"] and [r["status"] for r in results] == ["finished", "failed"]


def test_compare_with_one_job_goes_on_after_a_diverged_run(tmp_path, monkeypatch):
    def train_one(activation, config, run_dir, state, threads=None):
        status = "diverged" if activation == "relu" else "finished"
        return {"activation": activation, "status": status, "message": "nan", "exit_code": 0, "seconds": 1.0}

    monkeypatch.setattr(mlp.comparison.plan, "train_one", train_one)
    results = train_all(_planned(tmp_path, "relu", "tanh"), jobs=1)
    assert [r["status"] for r in results] == ["diverged", "finished"]


def test_a_compare_worker_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "setsid", lambda: None)  # the worker's own session: not this test's process
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    mlp.comparison.plan._worker_start(3)
    assert os.environ["OMP_NUM_THREADS"] == "3"


def test_a_sweep_trial_gets_its_share_of_the_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    envs = []

    class Finished:
        returncode = 0

        def __init__(self, command, env, **kwargs):
            envs.append(env)

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Finished)
    study = SimpleNamespace(child_env=lambda claim, epochs: "{}")
    plan = SimpleNamespace(config=tmp_path / "c.yaml")
    trial = SimpleNamespace(run_dir=tmp_path / "trial", overrides=[], epochs=1)
    for jobs in (4, 1):
        Worker(plan, study, jobs)._train(SimpleNamespace(trial_id=jobs), trial, "new", "go")
    assert envs[0]["OMP_NUM_THREADS"] == "2"  # 8 cores, 4 trials at a time
    assert "OMP_NUM_THREADS" not in envs[1]  # one at a time: torch's own choice


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
