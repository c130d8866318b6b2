"""Shared fixtures: small fabricated data sets on disk, a tiny config, ways to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# mlp's thread policy for the test run (docs/speed.md), set before anything imports torch: one
# thread per training, here and in every process a test starts (they inherit this environment),
# and idle OpenMP threads sleep.  The trainings here are tiny, so a second thread gains little,
# and on a busy machine two threads that spin while waiting for each other made them many
# times slower; a fixed count also keeps every run bit for bit repeatable (auto would measure
# and could switch).  OMP_NUM_THREADS=2 make test gives them two.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fakedata import write_cifar, write_mnist
from mlp.training import warmstart, workers

# The real data (CI sets MLP_DATA_ROOT=../shared/data); captured before any test changes it.
# Made absolute here, since every test runs in a folder of its own.
REAL_DATA_ROOT = os.path.abspath(os.environ["MLP_DATA_ROOT"]) if os.environ.get("MLP_DATA_ROOT") else None


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_mnist(root, folder="FashionMNIST")
    write_cifar(root)
    return root


@pytest.fixture(autouse=True)
def _fake_data(fake_root, monkeypatch, tmp_path):
    """Every test reads the fabricated files unless it points MLP_DATA_ROOT elsewhere itself,
    and runs in its own folder so runs/ lands there."""
    monkeypatch.setenv("MLP_DATA_ROOT", str(fake_root))
    monkeypatch.chdir(tmp_path)


TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"dataset": "mnist", "val_size": 200},
    "model": {"width": 64, "activation": "relu"},
    "train": {"epochs": 2, "batch_size": 64, "log_every": 5, "device": "cpu"},
    "optimizer": {"name": "adam", "lr": 0.003},
}


def write_config(path: Path, overrides: dict | None = None) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    return write_config(tmp_path / "tiny.yaml")


# The tests' processes of the command line start warm (mlp.training.warmstart, as compare's and
# sweep's trainings do): forked from a helper that imported torch and mlp once per test process,
# instead of paying ~5 s of imports each.  Each is still a process of its own, with its exit
# code, signals, streams, folder and environment; one whose environment changes a variable read
# at start-up (OMP_NUM_THREADS, PYTHON*, ...) starts as a new interpreter, as does every one
# with MLP_WARM_START=0.  tests/test_warmstart.py checks the warm ones behave as fresh ones do.
PRELOAD = workers.TRAINING_MODULES + ("mlp.commands.evaluate", "mlp.commands.predict", "mlp.commands.runs",
                                      "mlp.comparison.report", "mlp.sweep.study")
_starter: warmstart.Starter | None = None
WARM_SESSION = warmstart.available()  # False under MLP_WARM_START=0: every process starts cold


class _SessionStarter(warmstart.Starter):
    """The helper that compare's and sweep's trainings fork from when a test runs them in this
    process: one for the session, so ``Workers``' close at the end of each run keeps it."""

    def close(self) -> None:
        pass

    def end(self) -> None:
        super().close()


@pytest.fixture(scope="session", autouse=True)
def _warm_starter():
    """Start the helpers at once (on pytest's main thread, which they die with), so that their
    imports overlap the first tests: one for the command line, one for in-process trainings
    (with ``Workers``' own environment: PYTHONUNBUFFERED=1)."""
    global _starter
    _starter = warmstart.Starter(dict(os.environ), PRELOAD)
    trainings = _SessionStarter({**os.environ, "PYTHONUNBUFFERED": "1"},
                                workers.TRAINING_MODULES + ("mlp.sweep.study",))
    made = workers.Starter
    workers.Starter = lambda env, preload=(): trainings if warmstart.available() else made(env, preload)
    yield
    workers.Starter = made
    trainings.end()
    _starter.close()


def start_mlp(*args, env: dict | None = None, **popen) -> subprocess.Popen:
    """``subprocess.Popen([python, -m, mlp, *args], **popen)``, started warm when it can be."""
    env = {**os.environ, **(env or {})}
    if _starter is None:  # not under pytest's session: a new interpreter
        return subprocess.Popen([sys.executable, "-m", "mlp", *map(str, args)], env=env, **popen)
    return _starter.popen(list(map(str, args)), env=env, **popen)


def run_mlp(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command line in a process of its own, as a user would."""
    proc = start_mlp(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
