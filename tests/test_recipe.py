"""The classic recipe keeps its promise on the real MNIST (slow: about 25 s a seed on a quiet 2-core CPU)."""

import json
from pathlib import Path

import pytest

from conftest import REAL_DATA_ROOT
from mlp.config import load_config
from mlp.commands.evaluate import evaluate_checkpoint
from mlp.training.loop import fit

CONFIG = Path(__file__).parents[1] / "configs" / "mnist.yaml"


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA_ROOT, reason="set MLP_DATA_ROOT to a folder with MNIST/raw/")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classic_recipe_reaches_98_percent_for_each_seed(seed, monkeypatch):
    """configs/mnist.yaml as `make train` runs it (784-512-10 ReLU, Adam 1e-3, batch 64, 10
    epochs, cosine decay), with the checkpoint chosen on validation alone.  Measured: 98.48%,
    98.35% and 98.42% for seeds 0, 1 and 2, so each has a margin of 35 test images or more."""
    monkeypatch.setenv("MLP_DATA_ROOT", REAL_DATA_ROOT)
    cfg = load_config(CONFIG, [f"seed={seed}"])
    assert (cfg.model.widths, cfg.optimizer.name, cfg.optimizer.lr, cfg.train.batch_size, cfg.train.epochs) == \
        ([512], "adam", 0.001, 64, 10)
    run = fit(cfg, "run", progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    val = [epoch["val_accuracy"] for epoch in metrics["epochs"]]
    assert len(val) == 10 and metrics["best"]["epoch"] == val.index(max(val)) + 1  # chosen on validation
    assert metrics["test"]["accuracy"] >= 0.98, metrics["test"]
    assert evaluate_checkpoint(run / "checkpoint.pth")["total"] == 10_000


FAST = Path(__file__).parents[1] / "configs" / "mnist-fast.yaml"


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA_ROOT, reason="set MLP_DATA_ROOT to a folder with MNIST/raw/")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fast_recipe_reaches_98_percent_for_each_seed(seed, monkeypatch):
    """configs/mnist-fast.yaml (the centre 20×20 pixels, 400-512-10 ReLU, 3 epochs of 512, one
    cycle to 0.008, the last epoch kept).  Measured for seeds 0-5 (2 threads): 98.15-98.27% in bf16
    (AVX512-BF16), 98.11-98.33% in fp32, so the lowest has a margin of 11 test images."""
    monkeypatch.setenv("MLP_DATA_ROOT", REAL_DATA_ROOT)
    cfg = load_config(FAST, [f"seed={seed}"])
    assert (cfg.model.crop, cfg.model.widths, cfg.train.epochs, cfg.train.batch_size, cfg.data.val_size) == \
        (20, [512], 3, 512, 0)
    run = fit(cfg, "run", progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    print(f"seed {seed}: {metrics['test']['accuracy']:.2%} ({metrics['precision']})")
    assert metrics["test"]["accuracy"] >= 0.98, metrics["test"]
