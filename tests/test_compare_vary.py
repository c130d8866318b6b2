"""`mlp compare --vary/--seeds` and the config's `compare:` section on the fabricated data; the
dead / saturated / negative-side / collapsed measures on layers set up to show them; the real MNIST
(slow): He vs Glorot in a deep ReLU net, default vs Glorot in a deep tanh net, a collapsed sigmoid net."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REAL_DATA_ROOT, run_mlp, write_config
from mlp.comparison.findings import findings
from mlp.config import load_config
from mlp.data import load_data
from mlp.model import build_model
from mlp.observe.diagnostics import LayerDiagnostics

SMALL = ["--set", "model.depth=2", "--set", "model.width=16", "--set", "train.epochs=1"]


def test_a_grid_from_the_config_section_and_the_command_line_with_seeds(tmp_path, capsys):
    config = write_config(tmp_path / "grid.yaml", {"model": {"width": 16, "activation": "relu", "init": "lecun"},
                                                   "compare": {"vary": {"model.init": ["xavier", "he"]}, "seeds": 2}})
    done = run_mlp("compare", "-c", config, "-a", "relu", "-a", "tanh", "--out", "grid", "--jobs", "1", *SMALL,
                   timeout=900)
    assert done.returncode == 0, done.stderr
    assert "4 conditions (model.activation, model.init) × 2 seeds" in done.stdout
    summary = json.loads((tmp_path / "grid/summary.json").read_text())
    assert summary["varied"] == ["model.activation", "model.init"] and summary["seeds"] == 2
    assert list(summary["runs"]) == ["relu, xavier", "relu, he", "tanh, xavier", "tanh, he"]
    run = summary["runs"]["tanh, he"]
    assert run["settings"] == {"model.activation": "tanh", "model.init": "he"} and run["init"] == "He"
    assert run["run_dirs"] == ["grid/tanh-he-seed0", "grid/tanh-he-seed1"]
    stat = run["test_accuracy"]
    assert stat["min"] <= stat["mean"] <= stat["max"] and set(run["signal"]) == {"init", "first", "epoch 1", "last"}
    for seed in (0, 1):
        saved = yaml.safe_load((tmp_path / f"grid/relu-xavier-seed{seed}/config.yaml").read_text())
        assert saved["seed"] == seed and saved["model"]["init"] == "xavier" and "compare" not in saved
    assert len(list((tmp_path / "grid/relu-he-seed0").glob("events.out.tfevents.*"))) == 1  # a run for TensorBoard
    said = " ".join(summary["findings"])
    assert "within the spread of 2 seeds" in said or "above the whole range" in said
    from mlp.comparison.plan import run_compare

    capsys.readouterr()
    assert run_compare(config, "relu,tanh", SMALL[1::2], Path("grid"), 1) == 0  # the same, in this process
    again = capsys.readouterr().out
    assert "reusing relu-xavier-seed0" in again and "training" not in again


def test_compare_keeps_the_configs_init_and_takes_activation_parameters(tiny_config, tmp_path):
    from mlp.comparison.plan import run_compare

    config = write_config(tmp_path / "glorot.yaml", {"model": {"width": 16, "init": "xavier"}})
    assert run_compare(config, None, SMALL[1::2], Path("cmp"), 1,  # in this process; the trainings are processes
                       vary=["model.activation={name: leaky_relu, negative_slope: 0.2},elu"]) == 0
    summary = json.loads((tmp_path / "cmp/summary.json").read_text())
    assert list(summary["runs"]) == ["leaky_relu(negative_slope=0.2)", "elu"]
    assert summary["equal"]["init"] == "Glorot" and all(r["init"] == "Glorot" for r in summary["runs"].values())
    saved = yaml.safe_load((tmp_path / "cmp/leaky_relu,negative_slope=0.2/config.yaml").read_text())
    assert saved["model"]["activation"] == {"name": "leaky_relu", "negative_slope": 0.2}
    assert saved["model"]["init"] == "xavier"
    assert "init Glorot" in (tmp_path / "cmp/report.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--vary", "model.init=xavier,glorp"], "model.init"),
    (["--vary", "optimizer.lr=0.1,-1"], "optimizer.lr"),
    (["--vary", "model.widht=3,4"], "did you mean 'model.width'"),
    (["--vary", "model.init"], "--vary expects KEY=V1,V2"),
    (["-a", "relu,tanh", "--set", "model.activation.negative_slope=0.1"], "activation 'relu' has no parameter"),
    (["--vary", "model.init=he,kaiming,he"], "is given twice"),
    (["--vary", "seed=1,2", "--seeds", "2"], "use one of them"),
    (["--set", "seed=4", "--seeds", "2"], "--set seed and --seeds both choose the seed"),
])
def test_a_mistake_in_any_value_is_refused_before_the_first_run(tiny_config, tmp_path, args, message):
    done = run_mlp("compare", "-c", tiny_config, "--out", "bad", *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not any((tmp_path / "bad").glob("*/config.yaml"))  # nothing trained


def test_train_reads_a_config_with_a_compare_section_and_activation_parameters_in_either_order(tmp_path):
    config = write_config(tmp_path / "c.yaml", {"compare": {"vary": {"model.init": ["xavier", "kaiming"]},
                                                            "seeds": 3, "claim": None}})
    for sets in (["model.activation.negative_slope=0.1", "model.activation=leaky_relu"],
                 ["model.activation=leaky_relu", "model.activation.negative_slope=0.1"]):
        cfg = load_config(config, sets)
        assert cfg.model.activation == {"name": "leaky_relu", "negative_slope": 0.1}
    done = run_mlp("train", "-c", config, "--set", "train.epochs=1", "--set", "model.init=he")
    assert done.returncode == 0, done.stderr
    assert "init He" in done.stdout
    metrics = json.loads(next(Path("runs").glob("tiny-*/metrics.json")).read_text())
    assert metrics["init"] == "He"
    bad = run_mlp("compare", "-c", write_config(tmp_path / "claim.yaml", {"compare": {"claim": "nonsense"}}),
                  "--out", "x")
    assert bad.returncode == 2 and "compare.claim: unknown claim 'nonsense'" in bad.stderr


# ---------------------------------------------------------------------------------------------
# dead, saturated, negative side, collapsed: layers set up to be each


class _Recorder:
    def __init__(self):
        self.stats = []

    def layer_stats(self, step, metrics):
        self.stats.append((step, metrics))

    def layer_histograms(self, step, layers):
        pass


def _measured(tiny_config, activation, weight, bias):
    """One layer's numbers at step 0 after its weights and biases were set to ``weight`` (a scale
    of the built ones) and ``bias``."""
    cfg = load_config(tiny_config, [f"model.activation={activation}", "model.depth=1", "model.width=64"])
    data = load_data(cfg.data, torch.device("cpu"), cfg.seed)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.input_shape, len(data.classes))
    with torch.no_grad():
        model.hidden0.linear.weight.mul_(weight)
        model.hidden0.linear.bias.fill_(bias)
    recorder = _Recorder()
    diagnostics = LayerDiagnostics(model, cfg.model.activation, cfg.train, recorder, steps_per_epoch=16)
    diagnostics.at_init(model, data.train, data.val, 64, len(data.classes))
    (step, metrics), = recorder.stats
    assert step == 0 and diagnostics.record["init"]["split"] == "validation"
    return {k: v[0] for k, v in metrics.items()}


def test_relu_below_zero_is_dead_but_leaky_relu_is_on_its_negative_side(tiny_config):
    relu = _measured(tiny_config, "relu", 1.0, -1e3)
    assert relu["dead"] == 1.0 and relu["inactive"] == 1.0 and relu["saturated"] == 0.0 and relu["zero_share"] == 1.0
    leaky = _measured(tiny_config, "leaky_relu", 1.0, -1e3)
    assert leaky["negative"] == 1.0 and leaky["dead"] == 0.0 and leaky["inactive"] == 0.0


def test_saturated_and_collapsed_are_seen_where_they_are(tiny_config):
    # Glorot & Bengio's collapsed sigmoid layer: outputs about 0.035 whatever the input (σ' ≈ 0.034)
    collapsed = _measured(tiny_config, "sigmoid", 0.001, -3.3)
    assert collapsed["saturated"] == 1.0 and collapsed["dead"] == 0.0
    assert collapsed["spread"] < 0.005 and 0.03 < collapsed["act_mean"] < 0.04
    healthy = _measured(tiny_config, "tanh", 1.0, 0.0)
    assert healthy["saturated"] < 0.05 and healthy["spread"] > 0.05
    stuck = _measured(tiny_config, "tanh", 0.001, 3.0)  # tanh' (3) = 0.0099: saturated, and no unit varies
    assert stuck["saturated"] == 1.0 and stuck["spread"] < 0.005


def test_other_numbers_give_other_sentences_about_collapse_and_the_negative_side():
    from test_compare import _summary

    summary = _summary()
    assert not any("Collapsed" in s or "negative side" in s for s in findings(summary))
    summary["runs"]["sigmoid"]["collapsed"] = [False, False, True, True]
    summary["runs"]["relu"]["negative_max"] = [0.0, 0.0, 0.97, 0.0]
    said = " ".join(findings(summary))
    assert "Collapsed layers" in said and "sigmoid (layers 3, 4)" in said
    assert "relu: 97% of layer 3's units on the negative side" in said and "pass back only the slope a" in said


# ---------------------------------------------------------------------------------------------
# the real MNIST: what the papers show, as the report tells it (slow: a few minutes on a CPU)


def _real(monkeypatch, tmp_path, config: dict, args: list[str], out: str) -> dict:
    monkeypatch.setenv("MLP_DATA_ROOT", REAL_DATA_ROOT)
    path = write_config(tmp_path / f"{out}.yaml", config)
    done = run_mlp("compare", "-c", path, "--out", out, "--jobs", "2", *args, timeout=1800)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / out / "summary.json").read_text())


DEEP = {"data": {"dataset": "mnist", "val_size": 1000}, "train": {"epochs": 1, "batch_size": 128, "log_every": 50,
                                                               "device": "cpu"},
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}}


@pytest.mark.slow
@pytest.mark.skipif(REAL_DATA_ROOT is None, reason="needs the real MNIST (set MLP_DATA_ROOT)")
def test_on_real_mnist_deep_relu_loses_the_signal_with_glorot_and_keeps_it_with_he(monkeypatch, tmp_path):
    summary = _real(monkeypatch, tmp_path, {**DEEP, "model": {"width": 256, "depth": 10, "activation": "relu"}},
                    ["--vary", "model.init=xavier,he"], "relu")
    glorot, he = summary["runs"]["xavier"]["signal"]["init"], summary["runs"]["he"]["signal"]["init"]
    # Glorot halves the variance per ReLU layer: the signal reaching layer 1 is far below layer 10's
    assert glorot[0] * 3 < glorot[-1] and 1 / 3 <= he[0] / he[-1] <= 3
    said = " ".join(summary["findings"])
    assert "vanishes on its way back to the input at step 0 (before any update) for xavier" in said
    assert "For he (" in said


@pytest.mark.slow
@pytest.mark.skipif(REAL_DATA_ROOT is None, reason="needs the real MNIST (set MLP_DATA_ROOT)")
def test_on_real_mnist_deep_tanh_loses_the_signal_with_the_default_init_and_keeps_it_with_glorot(monkeypatch, tmp_path):
    summary = _real(monkeypatch, tmp_path, {**DEEP, "model": {"width": 256, "depth": 10, "activation": "tanh"}},
                    ["--vary", "model.init=default,xavier"], "tanh")
    default, glorot = summary["runs"]["default"]["signal_ratio"]["init"], summary["runs"]["xavier"]["signal_ratio"]["init"]
    # measured: layer 1 gets 1/190 of layer 10's signal with PyTorch's default (Var = 1/(3 fan_in)), 1/3.9 with
    # Glorot's: ten layers deep, Glorot's init keeps most of it but not all
    assert default < 0.1 and glorot > 30 * default and glorot > 0.1
    said = " ".join(summary["findings"])
    assert "vanishes on its way back to the input at step 0 (before any update) for default" in said
    assert "for xavier" not in said.split("vanishes")[1].split(".")[0]


@pytest.mark.slow
@pytest.mark.skipif(REAL_DATA_ROOT is None, reason="needs the real MNIST (set MLP_DATA_ROOT)")
def test_on_real_mnist_the_collapsed_sigmoid_network_is_reported_saturated(monkeypatch, tmp_path):
    # Glorot & Bengio 2010: 5 × 1000 sigmoid, PyTorch's default init, plain SGD, batch 10
    # (trained on 10,000 images, 1,000 steps: measured 97% of layer 5 saturated, its mean output 0.042,
    # at chance; the whole training split, 5,900 steps: 100% saturated, mean output 0.015)
    config = {"data": {"dataset": "mnist", "val_size": 50000},
              "model": {"width": 1000, "depth": 5, "activation": "sigmoid", "init": "default"},
              "train": {"epochs": 1, "batch_size": 10, "log_every": 200, "device": "cpu"},
              "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.0}}
    summary = _real(monkeypatch, tmp_path, config, ["--vary", "model.init=default"], "sigmoid")
    run = summary["runs"]["default"]
    assert max(run["saturated_max"][-2:]) > 0.5  # the top layers: σ' below 1/5 of its largest on every example
    said = " ".join(summary["findings"])
    assert "Units saturated" in said and "default" in said


def test_a_varied_depth_gets_a_report_with_each_run_at_its_own_depth(tmp_path):
    from mlp.comparison.plan import run_compare

    config = write_config(tmp_path / "depth.yaml", {"model": {"width": 16, "activation": "relu"}})
    assert run_compare(config, None, ["train.epochs=1"], Path("depth"), 1, vary=["model.depth=0,1,3"]) == 0
    summary = json.loads((tmp_path / "depth/summary.json").read_text())
    assert [len(r["signal"].get("init") or []) for r in summary["runs"].values()] == [0, 1, 3]
    said = " ".join(summary["findings"])
    assert "layer 1" not in said or "layer 3" in said  # a signal ratio is only stated for the 3-layer run
    assert (tmp_path / "depth/report.html").stat().st_size > 10_000


def test_a_full_disk_while_the_report_or_a_leaderboard_is_written_is_one_line_and_keeps_the_old(tmp_path,
                                                                                                monkeypatch):
    import errno

    import mlp.run.durable
    from mlp.comparison.plan import run_compare
    from mlp.errors import UserError
    from mlp.sweep.runner import run_sweep

    config = write_config(tmp_path / "one.yaml", {"model": {"width": 16, "depth": 2}, "train": {"epochs": 1}})
    assert run_compare(config, "relu", [], tmp_path / "cmp", 1) == 0  # each trains its run in a process of its own
    assert run_sweep(config, ["model.width=8"], sweep_dir=Path("sw")) == 0
    before = {p: p.read_bytes() for p in [tmp_path / "cmp/summary.json", tmp_path / "cmp/report.html",
                                          tmp_path / "sw/leaderboard.csv", tmp_path / "sw/leaderboard.md"]}

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(mlp.run.durable, "write_temporary", full)
    with pytest.raises(UserError, match=r"cannot write .*summary.json: no space left"):
        run_compare(config, "relu", [], tmp_path / "cmp", 1)  # the run is reused: only the report is written
    with pytest.raises(UserError, match=r"cannot write .*leaderboard.csv: no space left"):
        run_sweep(config, ["model.width=8"], sweep_dir=Path("sw"))
    assert {p: p.read_bytes() for p in before} == before
    assert not [p for p in [*tmp_path.joinpath("cmp").iterdir(), *tmp_path.joinpath("sw").iterdir()]
                if p.name.endswith(".tmp")]
