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


def run_mlp(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "mlp", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
