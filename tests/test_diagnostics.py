"""Activation diagnostics, hparams and figures in TensorBoard; `mlp activations`; `mlp eval --plots`."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from mlp.cli import app
from mlp.config import load_config
from mlp.data import load_data
from mlp.diagnostics import LayerDiagnostics
from mlp.evaluate import evaluate
from mlp.model import build_model
from mlp.tensorboard import HPARAM_METRICS
from mlp.train import fit

LAYER_SCALARS = ("act_mean", "act_std", "grad_norm", "weight_norm")
HISTOGRAMS = ("weights", "preact", "act", "grad")


def _fit(path, overrides=(), run_dir="run"):
    return fit(load_config(path, list(overrides)), run_dir, progress=False)


def _events(run):
    return EventAccumulator(str(run), size_guidance={"scalars": 0, "histograms": 0, "images": 0}).Reload()


def _values(events, tag):
    return [e.value for e in events.Scalars(tag)]


def test_a_run_logs_layer_statistics_histograms_images_and_graph(tiny_config):
    # lr 1e-4 for one epoch leaves mistakes to show in val/misclassified
    run = _fit(tiny_config, ["model.depth=2", "train.epochs=1", "optimizer.lr=0.0001"])
    events = _events(run)
    tags = events.Tags()
    step_logs = [e.step for e in events.Scalars("step/loss")]
    for i in (0, 1):
        for name in (*LAYER_SCALARS, "dead_fraction"):
            assert [e.step for e in events.Scalars(f"layers/{i}/{name}")] == step_logs
        assert f"layers/{i}/saturated_fraction" not in tags["scalars"]  # ReLU does not saturate
    assert {f"layers/{i}/{h}" for i in (0, 1) for h in HISTOGRAMS} == set(tags["histograms"])
    assert {"inputs/samples", "val/misclassified", "test/confusion_matrix", "test/per_class_accuracy"} \
        == set(tags["images"])
    assert tags["graph"]
    grid = events.Images("inputs/samples")[0]
    assert (grid.width, grid.height) == (8 * 28, 8 * 28)  # 64 images of 28 px in an 8×8 grid
    assert all(v > 0.0 for v in _values(events, "layers/0/act_mean"))
    # one training is one run: a single event file, no sub-run folder as add_hparams would make
    assert [p.name for p in run.iterdir() if p.is_dir()] == []
    assert len(list(run.glob("events.out.tfevents.*"))) == 1


def test_epoch_mode_histogram_interval_and_off(tiny_config):
    run = _fit(tiny_config, ["train.diagnostics=epoch", "train.histogram_every=2", "train.epochs=3"], run_dir="epoch")
    events = _events(run)
    assert [e.step for e in events.Scalars("layers/0/dead_fraction")] == [16, 32, 48]  # 16 steps an epoch
    assert [e.step for e in events.Histograms("layers/0/weights")] == [32]

    run = _fit(tiny_config, ["train.diagnostics=off"], run_dir="off")
    tags = _events(run).Tags()
    assert not [t for t in tags["scalars"] + tags["histograms"] if t.startswith("layers/")]
    # the end-of-run figures go with the diagnostics; the input grid and the metrics stay
    assert tags["images"] == ["inputs/samples"] and "val/accuracy" in tags["scalars"]


def test_dead_relu_units_show_after_a_too_high_learning_rate(tiny_config):
    healthy = _events(_fit(tiny_config, ["model.depth=3"], run_dir="healthy"))
    broken = _events(_fit(tiny_config, ["model.depth=3", "optimizer.lr=1.0"], run_dir="broken"))
    for i in range(3):
        assert max(_values(healthy, f"layers/{i}/dead_fraction")) < 0.05
    assert max(_values(broken, f"layers/{i}/dead_fraction")[-1] for i in range(3)) > 0.3


def test_sigmoid_saturation_shows_when_the_learning_rate_is_too_high(tiny_config):
    healthy = _events(_fit(tiny_config, ["model.activation=sigmoid"], run_dir="healthy"))
    hot = _events(_fit(tiny_config, ["model.activation=sigmoid", "optimizer.lr=0.3"], run_dir="hot"))
    assert _values(healthy, "layers/0/saturated_fraction")[0] < 0.05
    assert min(_values(hot, "layers/0/saturated_fraction")[1:]) > 0.9
    assert "layers/0/dead_fraction" not in healthy.Tags()["scalars"]


def test_gradients_vanish_towards_the_input_in_a_deep_sigmoid_stack(tiny_config):
    def first_over_last(activation):
        run = _fit(tiny_config, ["model.depth=5", f"model.activation={activation}", "train.epochs=1"],
                   run_dir=activation)
        events = _events(run)
        return _values(events, "layers/0/grad_norm")[0] / _values(events, "layers/4/grad_norm")[0]

    assert first_over_last("sigmoid") < 0.1
    assert first_over_last("relu") > 0.5


def test_learnable_activation_parameters_are_followed(tiny_config):
    prelu = _events(_fit(tiny_config, ["model.activation=prelu"], run_dir="prelu"))
    slopes = _values(prelu, "layers/0/prelu_slope")
    assert slopes[-1] != pytest.approx(0.25, abs=1e-3)  # it starts at 0.25 and trains
    swish = _events(_fit(tiny_config, ["model.activation={name: swish, learnable: true}"], run_dir="swish"))
    assert _values(swish, "layers/0/swish_beta")[-1] != pytest.approx(1.0, abs=1e-3)
    assert "layers/0/dead_fraction" not in swish.Tags()["scalars"]


def _model_and_batch(activation, tiny_config):
    cfg = load_config(tiny_config, [f"model.activation={activation}", "model.depth=2"])
    data = load_data(cfg.data, torch.device("cpu"), cfg.seed)
    model = build_model(cfg.model, data.input_shape, len(data.classes))
    return cfg, model, data


class _Recorder:
    def __init__(self):
        self.stats, self.histograms = [], []

    def layer_stats(self, step, layers):
        self.stats.append((step, layers))

    def layer_histograms(self, step, layers):
        self.histograms.append((step, layers))


def test_hooks_measure_exactly_and_only_while_training(tiny_config):
    cfg, model, data = _model_and_batch("relu", tiny_config)
    with torch.no_grad():
        model.hidden0.linear.bias.fill_(-1e3)  # every unit of the first layer is dead
    recorder = _Recorder()
    diagnostics = LayerDiagnostics(model, cfg.model.activation, cfg.train, recorder)
    x, y = data.train.images[:64], data.train.labels[:64]
    torch.nn.functional.cross_entropy(model(x), y).backward()
    evaluate(model, data.val, len(data.classes))  # eval mode: must not be counted
    diagnostics.end_interval(1)
    (step, (first, second)), = recorder.stats
    assert step == 1 and first["dead_fraction"] == 1.0 and first["act_mean"] == 0.0
    assert first["grad_norm"] == 0.0 and second["dead_fraction"] == 1.0  # nothing flows through
    assert first["weight_norm"] == pytest.approx(model.hidden0.linear.weight.norm().item())

    diagnostics.end_interval(2)  # no training step since: only the weights are there to report
    assert set(recorder.stats[1][1][0]) == {"weight_norm"}
    diagnostics.close()
    model(x).sum().backward()
    diagnostics.end_interval(3)
    assert set(recorder.stats[2][1][0]) == {"weight_norm"}  # the hooks are gone


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_unit_alive_in_one_batch_of_an_interval_is_not_dead(tiny_config, precision):
    """A unit that fires in a single batch of a long interval counts as alive; one that never
    fires is dead."""
    cfg, model, data = _model_and_batch("relu", tiny_config)
    width = model.hidden0.linear.out_features
    recorder = _Recorder()
    diagnostics = LayerDiagnostics(model, cfg.model.activation, cfg.train, recorder)
    x = data.train.images[:8]
    alive_at = {0: 3, 1: 37, 2: 65}  # unit -> the only batch it fires in
    with torch.no_grad():
        for batch in range(71):
            model.hidden0.linear.weight.zero_()
            model.hidden0.linear.bias.fill_(-1.0)  # every unit dead ...
            for unit, at in alive_at.items():
                if batch == at:
                    model.hidden0.linear.bias[unit] = 1.0  # ... but this one, in this batch
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                model(x)
    diagnostics.end_interval(1)
    first = recorder.stats[0][1][0]
    assert first["dead_fraction"] == pytest.approx((width - len(alive_at)) / width)
    with torch.no_grad():
        model(x)  # a fresh interval: the last weights leave every unit dead
    diagnostics.end_interval(2)
    assert recorder.stats[1][1][0]["dead_fraction"] == 1.0
    diagnostics.close()


def test_saturation_of_a_sigmoid_layer_with_huge_weights(tiny_config):
    cfg, model, data = _model_and_batch("sigmoid", tiny_config)
    recorder = _Recorder()
    diagnostics = LayerDiagnostics(model, cfg.model.activation, cfg.train, recorder)
    x = data.train.images[:64]
    model(x)
    diagnostics.end_interval(1)
    with torch.no_grad():
        model.hidden0.linear.weight.mul_(100)
    model(x)
    diagnostics.end_interval(2)
    (_, (xavier, _)), (_, (huge, _)) = recorder.stats
    assert xavier["saturated_fraction"] < 0.05 and huge["saturated_fraction"] > 0.95
    assert "dead_fraction" not in huge
    diagnostics.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_tensorboard_serves_one_run_with_everything(tiny_config, tmp_path):
    run = _fit(tiny_config, ["model.depth=2", "train.epochs=1", "optimizer.lr=0.0001"], run_dir=tmp_path / "runs" / "tiny")
    test_accuracy = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"

    def get(path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def everything():
        runs = get("/data/runs")
        scalars = get("/data/plugin/scalars/tags").get("tiny", {})
        histograms = get("/data/plugin/histograms/tags").get("tiny", {})
        images = get("/data/plugin/images/tags").get("tiny", {})
        experiment = get("/data/plugin/hparams/experiment", {"experimentName": ""})
        groups = get("/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 10,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"metric": {"tag": "test/accuracy"}}, {"hparam": "model.activation"}]})
        return runs, scalars, histograms, images, experiment, groups

    log = open(tmp_path / "tensorboard.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path / "runs"),
                               "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "tensorboard.log").read_text()
            try:
                runs, scalars, histograms, images, experiment, groups = everything()
                if "val/misclassified" in images and groups.get("sessionGroups"):
                    break  # the whole event file is loaded
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "tensorboard did not serve the run within 120 s"
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

    assert runs == ["tiny"]
    assert {"step/loss", "train/accuracy", "val/accuracy", "test/accuracy", "layers/0/dead_fraction",
            "layers/1/grad_norm", "layers/1/weight_norm", "layers/0/act_std"} <= set(scalars)
    assert {f"layers/{i}/{h}" for i in (0, 1) for h in HISTOGRAMS} == set(histograms)
    assert {"inputs/samples", "val/misclassified", "test/confusion_matrix", "test/per_class_accuracy"} == set(images)
    hparam_names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"model.activation", "model.width", "model.depth", "optimizer.lr", "optimizer.name",
            "train.batch_size", "data.dataset"} <= hparam_names
    assert [m["name"]["tag"] for m in experiment["metricInfos"]] == list(HPARAM_METRICS)
    (group,) = groups["sessionGroups"]
    assert group["name"] == "tiny" and [s["name"] for s in group["sessions"]] == ["tiny"]
    assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
    assert group["hparams"]["model.activation"] == "relu" and group["hparams"]["model.width"] == 64
    assert group["hparams"]["optimizer.lr"] == pytest.approx(0.0001)
    metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    assert metrics["test/accuracy"] == pytest.approx(test_accuracy)


def test_activations_command_draws_every_activation(tmp_path):
    from mlp.model import ACTIVATIONS

    done = CliRunner().invoke(app, ["activations", "--out", "figures", "--dataset", "mnist", "--log-dir", "tb"])
    assert done.exit_code == 0, done.stderr
    pngs = {p.name for p in (tmp_path / "figures").iterdir()}
    assert pngs == {f"{name}.png" for name in ACTIVATIONS} | {f"before_after_{name}.png" for name in ACTIVATIONS} \
        | {"overview.png", "before_after.png"}
    assert all((tmp_path / "figures" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    images = set(_events(tmp_path / "tb").Tags()["images"])
    assert images == {f"activations/{n}" for n in [*ACTIVATIONS, "overview"]} | {f"pixels/{n}" for n in ACTIVATIONS}
    assert "overview.png" in done.stdout


def test_activations_command_can_draw_a_chosen_few_without_data(tmp_path):
    done = CliRunner().invoke(app, ["activations", "-a", "swish", "-a", "tanh", "--out", "few", "--log-dir", "tb"])
    assert done.exit_code == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "few").iterdir()) == ["overview.png", "silu.png", "tanh.png"]
    assert not [t for t in _events(tmp_path / "tb").Tags()["images"] if t.startswith("pixels/")]


@pytest.mark.parametrize("args, message", [
    (["--activation", "relu7"], "unknown activation 'relu7'"),
    (["--dataset", "mnsit"], "did you mean 'mnist'"),
    (["--out", "taken.txt"], "--out taken.txt is not a writable folder"),
])
def test_activations_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "taken.txt").write_text("a file, not a folder")
    done = CliRunner().invoke(app, ["activations", "--log-dir", "tb", *args])
    assert done.exit_code == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_eval_plots_writes_confusion_matrix_and_per_class_accuracy(tiny_config, tmp_path):
    run = _fit(tiny_config, ["train.epochs=1"])
    done = CliRunner().invoke(app, ["eval", str(run / "checkpoint.pth"), "--split", "val", "--plots", "plots", "--json"])
    assert done.exit_code == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["plots"] == ["plots/val_confusion_matrix.png", "plots/val_per_class_accuracy.png"]
    for path in result["plots"]:
        assert (tmp_path / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "file").write_text("")
    bad = CliRunner().invoke(app, ["eval", str(run / "checkpoint.pth"), "--plots", "file/sub"])
    assert bad.exit_code == 2 and "--plots file/sub is not a writable folder" in bad.stderr
