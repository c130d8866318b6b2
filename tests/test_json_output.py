"""JSON that other tools read: valid whatever the numbers, floats as float32 holds them."""

import json
import math

import torch

from conftest import run_mlp
from mlp.config import load_config
from mlp.numbers import json_ready
from mlp.run.checkpoint import checkpoint_bytes, load_checkpoint
from mlp.training.loop import fit


def _strict(text: str):
    """json.loads, refusing the NaN and Infinity that Python's json reads and JSON does not have."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_floats_keep_seven_significant_digits_and_non_finite_ones_become_null():
    assert json_ready({"loss": 0.5063476943969727, "lr": 3e-05, "n": [1, True, 12345.678901]}) == \
        {"loss": 0.5063477, "lr": 3e-05, "n": [1, True, 12345.68]}
    assert json_ready([math.nan, -math.inf, (0.1 + 0.2,)]) == [None, None, [0.3]]


def test_metrics_json_and_eval_json_are_strict_json(tiny_config, tmp_path):
    run = fit(load_config(tiny_config, ["train.epochs=1"]), tmp_path / "run", progress=False)
    metrics = _strict((run / "metrics.json").read_text())
    loss = metrics["test"]["loss"]
    assert loss == float(f"{loss:.7g}") and len(repr(loss)) <= 10  # not float64's 17 digits
    ckpt = load_checkpoint(run / "checkpoint.pth")
    first = next(k for k in ckpt["model_state"] if k.endswith("weight"))
    ckpt["model_state"][first] = torch.full_like(ckpt["model_state"][first], math.nan)
    (tmp_path / "nan.pth").write_bytes(checkpoint_bytes(ckpt))
    done = run_mlp("eval", tmp_path / "nan.pth", "--json")
    assert done.returncode == 0, done.stderr
    result = _strict(done.stdout)
    assert result["loss"] is None
