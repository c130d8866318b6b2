"""The built-in experiments on the real MNIST: each `mlp compare --config configs/experiments/NAME.yaml`
runs with no other option, and its report's first finding says whether the claim held.

Slow (minutes each) and marked ``experiments`` (``make test-experiments``).  They skip without
the real data, and while ``mlp compare`` has no ``--vary`` (the compare that reads a config's
``compare:`` section).  Where the claim holds on MNIST they assert "supported"; where it does
not (docs/experiments.md says which and why) they assert the verdict that was measured there,
and for ``cost`` only that it was measured: no test may depend on the machine's speed or load.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from conftest import REAL_DATA_ROOT, run_mlp

pytestmark = [pytest.mark.slow, pytest.mark.experiments]

EXPERIMENTS = Path(__file__).resolve().parent.parent / "configs" / "experiments"
VERDICTS = ("supported", "not supported", "within the noise", "within the spread of 2 seeds")  # not "not measured"
# per experiment, the verdict each of its claim's sentences must carry (None: any measured verdict)
EXPECTED = {
    "vanishing-gradients": ["supported", None],  # sigmoid vs ReLU; then tanh, which depends on its init
    "dying-relu": ["supported"],
    "init": ["supported", None],  # ReLU Glorot vs He; then tanh, where Glorot keeps only ~1/4 in 12 layers
    "linear": ["supported"],
    "cost": [None],  # a timing: its verdict depends on the machine, which no test may assert
    "zero-centred": ["supported", "supported", "supported", "supported"],
}


@functools.lru_cache(maxsize=1)
def compare_has_vary() -> bool:
    result = run_mlp("compare", "--help", timeout=120)
    return result.returncode == 0 and "--vary" in result.stdout


def verdict(sentence: str) -> str:
    return sentence.rsplit(": ", 1)[-1].rstrip(".")


def test_every_experiment_has_its_expectation():
    assert sorted(p.stem for p in EXPERIMENTS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.skipif(REAL_DATA_ROOT is None, reason="needs the real MNIST (set MLP_DATA_ROOT)")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_experiment_reports_its_claim(name, tmp_path, monkeypatch):
    if not compare_has_vary():
        pytest.skip("mlp compare has no --vary yet (issue 19), so it cannot read a compare: section")
    monkeypatch.setenv("MLP_DATA_ROOT", REAL_DATA_ROOT)
    out = tmp_path / name
    result = run_mlp("compare", "--config", EXPERIMENTS / f"{name}.yaml", "--out", out, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    claims = [s for s in summary["findings"] if s.startswith("Claim: ")]
    expected = EXPECTED[name]
    assert len(claims) >= len(expected), summary["findings"]
    assert summary["findings"][0] == claims[0]  # the claim comes first
    for sentence, want in zip(claims, expected):
        assert verdict(sentence) == want if want else verdict(sentence) in VERDICTS, sentence
    if name == "cost":
        (written,) = out.rglob("timing.json")
        timing = json.loads(written.read_text())
        assert set(timing["per_step_s"]) == set(summary["runs"])
