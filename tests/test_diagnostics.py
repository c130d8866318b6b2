"""Per-layer diagnostics, TensorBoard's tags, layout and hparams, figures; `mlp activations`, `mlp eval --plots`."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from conftest import run_mlp
from tbevents import read_events
from mlp.cli import app
from mlp.config import load_config
from mlp.data import load_data
from mlp.observe.diagnostics import LayerDiagnostics, Schedule
from mlp.observe.units import flat_tails
from mlp.commands.evaluate import evaluate
from mlp.model import build_model, hidden_layers
from mlp.observe.hparams import HPARAM_METRICS, MAIN_HPARAMS
from mlp.training.loop import fit

LAYER_SCALARS = ("signal", "grad_rms", "update_ratio", "weight_rms", "act_mean", "act_std")
HISTOGRAMS = ("weights", "preactivations", "activations", "weight_grads")


def _fit(path, overrides=(), run_dir="run"):
    return fit(load_config(path, list(overrides)), run_dir, progress=False)


def _events(run):
    return read_events(run)


def _values(events, tag):
    return [e.value for e in events.Scalars(tag)]


def test_the_schedule_is_dense_at_the_start_then_regular_and_at_every_epoch_end():
    steps = Schedule("step", log_every=10, steps_per_epoch=25)
    assert [s for s in range(1, 61) if s in steps] == [1, 2, 4, 8, 10, 20, 25, 30, 40, 50, 60]
    assert [s for s in range(1, 61) if steps.interval_end(s)] == [10, 20, 30, 40, 50, 60]
    epochs = Schedule("epoch", log_every=10, steps_per_epoch=25)
    assert [s for s in range(1, 61) if s in epochs] == [25, 50]
    assert [s for s in range(1, 61) if epochs.interval_end(s)] == [25, 50]


def test_a_run_logs_every_layer_from_the_first_step_with_descriptions_and_a_layout(tiny_config):
    run = _fit(tiny_config, ["model.depth=2", "train.epochs=1", "optimizer.lr=0.0001"])
    events = _events(run)
    tags = events.Tags()
    for i in (1, 2):  # 16 steps, log_every 5
        for name in LAYER_SCALARS:
            wanted = [0, 1, 2, 4, 5, 10, 15, 16] if name != "update_ratio" else [1, 2, 4, 5, 10, 15, 16]
            assert [e.step for e in events.Scalars(f"per_layer/{name}/{i}")] == wanted  # 0: before any update
        assert [e.step for e in events.Scalars(f"per_layer/inactive/{i}")] == [0, 5, 10, 15]
    assert {f"per_layer/{h}/{i}" for i in (1, 2) for h in HISTOGRAMS} == set(tags["histograms"])
    assert {"visuals/inputs", "visuals/misclassified_val", "visuals/confusion_matrix_test",
            "visuals/per_class_accuracy_test", "visuals/epochs"} == set(tags["images"])
    assert {"loss/step", "training/lr", "training/samples_per_s", "summary/inactive_max",
            "summary/signal_ratio_first"} <= set(tags["scalars"])
    for tag in tags["scalars"] + tags["histograms"] + tags["images"]:
        assert len(events.SummaryMetadata(tag).summary_description) > 30, tag  # what it is, how to read it
    for split in ("train", "val", "test"):  # the splits' sub-runs: the same two tags, each described
        numbers = _events(run / split)
        assert set(numbers.Tags()["scalars"]) == {"accuracy/epoch", "loss/epoch"}
        assert "<run>/test is measured once" in numbers.SummaryMetadata("accuracy/epoch").summary_description
    assert "pre-activation" in events.SummaryMetadata("per_layer/signal/2").summary_description
    assert tags["graph"]
    grid = events.Images("visuals/inputs")[0]
    assert (grid.width, grid.height) == (8 * 28, 8 * 28)  # 64 images of 28 px in an 8×8 grid
    # the custom-scalars layout: every layer of a metric on one chart, each layer across runs on another
    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout.FromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts["signal, every layer"] == [r"^per_layer/signal/\d+$"]
    assert charts["accuracy: train, val and test"] == [r"^accuracy/epoch$"]  # three sub-runs: three colours
    assert charts["inactive, layer 2"] == [r"^per_layer/inactive/2$"]
    # one event file in the run's folder (no sub-run as add_hparams would make), one in each split's
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["test", "train", "val"]
    assert all(len(list(folder.glob("events.out.tfevents.*"))) == 1 for folder in (run, run / "train", run / "val", run / "test"))
    record = json.loads((run / "diagnostics.json").read_text())
    assert [m["step"] for m in record["measurements"]] == [0, 1, 2, 4, 5, 10, 15, 16]
    assert [d["step"] for d in record["distributions"]] == [0, 16] and record["epoch_ends"] == [16]
    assert set(record["init"]) == {"loss", "accuracy", "split"} and record["init"]["split"] == "validation"


def test_epoch_mode_histogram_interval_and_off(tiny_config):
    run = _fit(tiny_config, ["train.diagnostics=epoch", "train.histogram_every=2", "train.epochs=3"], run_dir="epoch")
    events = _events(run)
    assert [e.step for e in events.Scalars("per_layer/inactive/1")] == [0, 16, 32, 48]  # 16 steps an epoch
    assert [e.step for e in events.Scalars("per_layer/signal/1")] == [0, 16, 32, 48]
    assert [e.step for e in events.Histograms("per_layer/weights/1")] == [0, 32]  # step 0, then every 2nd epoch
    assert [e.step for e in events.Images("visuals/epochs")] == [1, 2, 3]  # exact per-epoch curves, each epoch

    run = _fit(tiny_config, ["train.diagnostics=off"], run_dir="off")
    tags = _events(run).Tags()
    assert not [t for t in tags["scalars"] + tags["histograms"] if t.startswith(("per_layer/", "summary/"))]
    # the end-of-run figures, the input grid and the model graph go with the diagnostics; the metrics stay
    assert tags["images"] == [] and "accuracy/epoch" in _events(run / "val").Tags()["scalars"]
    assert not tags["graph"]
    assert not (run / "diagnostics.json").exists()


def test_dead_relu_units_show_after_a_too_high_learning_rate(tiny_config):
    healthy = _events(_fit(tiny_config, ["model.depth=3"], run_dir="healthy"))
    broken = _events(_fit(tiny_config, ["model.depth=3", "optimizer.lr=1.0"], run_dir="broken"))
    for i in (1, 2, 3):
        assert max(_values(healthy, f"per_layer/inactive/{i}")) < 0.05
    assert max(_values(broken, f"per_layer/inactive/{i}")[-1] for i in (1, 2, 3)) > 0.3
    assert max(_values(broken, "summary/inactive_max")) > 0.3


def test_sigmoid_saturation_shows_when_the_learning_rate_is_too_high(tiny_config):
    # A saturated unit is stuck near 0 or 1 for every image of an interval (a unit that is 0 for
    # some images and 1 for others still passes gradient through the ones in between).
    healthy = _events(_fit(tiny_config, ["model.activation=sigmoid"], run_dir="healthy"))
    hot = _events(_fit(tiny_config, ["model.activation=sigmoid", "optimizer.lr=3.0"], run_dir="hot"))
    assert max(_values(healthy, "per_layer/inactive/1")) == 0.0
    assert max(_values(hot, "per_layer/inactive/1")) > 0.1


def test_the_signal_vanishes_towards_the_input_in_a_deep_sigmoid_stack(tiny_config):
    def first_over_last(activation):
        run = _fit(tiny_config, ["model.depth=5", f"model.activation={activation}", "train.epochs=1"],
                   run_dir=activation)
        events = _events(run)
        return _values(events, "per_layer/signal/1")[0] / _values(events, "per_layer/signal/5")[0]

    assert first_over_last("sigmoid") < 0.1
    assert 1 / 3 < first_over_last("relu") < 3


def test_learnable_activation_parameters_are_followed(tiny_config):
    prelu = _events(_fit(tiny_config, ["model.activation=prelu"], run_dir="prelu"))
    slopes = _values(prelu, "per_layer/prelu_slope/1")
    assert slopes[-1] != pytest.approx(0.25, abs=1e-3)  # it starts at 0.25 and trains
    swish = _events(_fit(tiny_config, ["model.activation={name: swish, learnable: true}"], run_dir="swish"))
    assert _values(swish, "per_layer/swish_beta/1")[-1] != pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("activation, low, high", [
    # sigmoid: σ' = σ(1 - σ) ≤ 0.05 beyond ±2.89; tanh: 1 - tanh² ≤ 0.2 beyond ±1.44; elu: eˣ ≤ 0.2 below -1.61
    ("relu", 0.0, None), ("leaky_relu", 0.0, None), ("relu6", 0.0, 6.0), ("sigmoid", -2.89, 2.89),
    ("tanh", -1.44, 1.44), ("softsign", -1.24, 1.24), ("elu", -1.61, None), ("gelu", -0.36, None), ("silu", -0.6, None),
    ("{name: leaky_relu, negative_slope: 0.1}", 0.0, None), ("identity", None, None), ("prelu", None, None),
])
def test_flat_tails_are_where_the_derivative_is_below_a_fifth_of_its_largest(activation, low, high):
    import math
    import yaml

    from mlp.model import make_activation

    found_low, found_high = (float(t.max()) for t in flat_tails(make_activation(yaml.safe_load(activation), 4)))
    assert (found_low == pytest.approx(low, abs=0.02)) if low is not None else found_low == -math.inf
    assert (found_high == pytest.approx(high, abs=0.02)) if high is not None else found_high == math.inf


def _model_and_batch(activation, tiny_config, depth=2):
    cfg = load_config(tiny_config, [f"model.activation={activation}", f"model.depth={depth}", "train.log_every=1"])
    data = load_data(cfg.data, torch.device("cpu"), cfg.seed)
    model = build_model(cfg.model, data.input_shape, len(data.classes))
    return cfg, model, data


class _Recorder:
    def __init__(self):
        self.stats, self.histograms, self.summaries = [], [], []

    def layer_stats(self, step, metrics):
        self.stats.append((step, metrics))

    def layer_histograms(self, step, layers):
        self.histograms.append((step, layers))

    def diagnostics_summary(self, epoch, summary):
        self.summaries.append((epoch, summary))

    def epoch_curves(self, epoch):
        pass


def _diagnostics(model, cfg, recorder, **kwargs):
    return LayerDiagnostics(model, cfg.model.activation, cfg.train, recorder, steps_per_epoch=1000, **kwargs)


def test_signal_grad_rms_and_update_ratio_are_exact(tiny_config):
    cfg, model, data = _model_and_batch("tanh", tiny_config, depth=3)
    cfg.train.log_every = 10
    recorder = _Recorder()
    diagnostics = _diagnostics(model, cfg, recorder)  # armed for step 1
    outputs = []

    def keep(module, inputs, output):
        output.retain_grad()
        outputs.append(output)

    for block in hidden_layers(model):
        block.linear.register_forward_hook(keep)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [b.linear.weight.detach().clone() for b in hidden_layers(model)]
    x, y = data.train.images[:48], data.train.labels[:48]
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    diagnostics.after_step(1)
    (step, metrics), = recorder.stats
    blocks = hidden_layers(model)
    expected_signal = [48 * o.grad.pow(2).mean().sqrt().item() for o in outputs]  # per example: × batch size
    expected_grad = [b.linear.weight.grad.pow(2).mean().sqrt().item() for b in blocks]
    expected_update = [((b.linear.weight - w).norm() / w.norm()).item() for b, w in zip(blocks, before)]
    assert step == 1 and "inactive" not in metrics  # step 1 closes no interval (of 10 steps)
    assert metrics["signal"] == pytest.approx(expected_signal, rel=1e-5)
    assert metrics["grad_rms"] == pytest.approx(expected_grad, rel=1e-5)
    assert metrics["update_ratio"] == pytest.approx(expected_update, rel=1e-4)
    diagnostics.close()


def test_hooks_measure_exactly_and_only_while_training(tiny_config):
    cfg, model, data = _model_and_batch("relu", tiny_config)
    with torch.no_grad():
        model.hidden0.linear.bias.fill_(-1e3)  # every unit of the first layer is dead
    recorder = _Recorder()
    diagnostics = LayerDiagnostics(model, cfg.model.activation, cfg.train, recorder)
    x, y = data.train.images[:64], data.train.labels[:64]
    F.cross_entropy(model(x), y).backward()
    evaluate(model, data.val, len(data.classes))  # eval mode: must not be counted
    diagnostics.after_step(1)
    (step, metrics), = recorder.stats
    assert step == 1 and metrics["inactive"] == [1.0, 1.0] and metrics["act_mean"][0] == 0.0
    assert metrics["grad_rms"][0] == 0.0 and metrics["signal"][0] == 0.0  # nothing flows through
    assert metrics["weight_rms"][0] == pytest.approx(model.hidden0.linear.weight.pow(2).mean().sqrt().item())

    diagnostics.after_step(2)  # no training batch since: nothing to call inactive, no signal caught
    assert recorder.stats[1][1]["inactive"] == [0.0, 0.0] and "signal" not in recorder.stats[1][1]
    diagnostics.close()
    model(x).sum().backward()
    assert len(recorder.stats) == 2  # the hooks are gone


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_unit_alive_in_one_batch_of_an_interval_is_not_inactive(tiny_config, precision):
    """A unit that fires in a single batch of a long interval counts as alive; one that never
    fires is inactive."""
    cfg, model, data = _model_and_batch("relu", tiny_config)
    cfg.train.log_every = 71
    width = model.hidden0.linear.out_features
    recorder = _Recorder()
    diagnostics = _diagnostics(model, cfg, recorder)
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
            diagnostics.after_step(batch + 1)
    step, metrics = recorder.stats[-1]
    assert step == 71 and metrics["inactive"][0] == pytest.approx((width - len(alive_at)) / width)
    assert all("inactive" not in m for _, m in recorder.stats[:-1])  # 1, 2, 4, ..., 64: no interval closed
    diagnostics.close()


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softsign"])
def test_units_saturated_at_either_end_are_inactive(tiny_config, activation):
    cfg, model, data = _model_and_batch(activation, tiny_config)
    recorder = _Recorder()
    diagnostics = _diagnostics(model, cfg, recorder)
    x = data.train.images[:64]
    model(x)
    diagnostics.after_step(1)
    with torch.no_grad():
        model.hidden0.linear.weight.mul_(1e5)  # every unit far out on one side or the other, per image
    model(x)
    diagnostics.after_step(2)
    (_, initial), (_, huge) = recorder.stats
    assert initial["inactive"][0] < 0.05 and huge["inactive"][0] > 0.95
    diagnostics.close()


def test_a_resumed_run_keeps_the_measurements_before_its_step(tiny_config, monkeypatch):
    from test_resume import _signal_at_step

    from mlp.errors import Interrupted
    from mlp.training.loop import resume_target

    with monkeypatch.context() as m:
        _signal_at_step(m, 23, signal.SIGINT)
        with pytest.raises(Interrupted) as stopped:
            _fit(tiny_config, ["train.epochs=2"], run_dir="stopped")
    kept = json.loads((stopped.value.run_dir / "diagnostics.json").read_text())
    assert [m["step"] for m in kept["measurements"]][-2:] == [16, 20]
    folder = fit(resume_target(stopped.value.run_dir, []), progress=False)
    straight = _fit(tiny_config, ["train.epochs=2"], run_dir="straight")
    resumed, whole = (json.loads((f / "diagnostics.json").read_text()) for f in (folder, straight))
    assert [m["step"] for m in resumed["measurements"]] == [m["step"] for m in whole["measurements"]]
    assert resumed["epoch_ends"] == whole["epoch_ends"] == [16, 32]
    assert resumed["summary"]["signal_ratio"] == pytest.approx(whole["summary"]["signal_ratio"])


def test_the_end_of_training_prints_each_layer_and_the_tensorboard_command(tiny_config):
    done = run_mlp("train", "-c", tiny_config, "--set", "model.depth=3", "--set", "train.epochs=1",
                   "--run-dir", "runs/one", "--no-progress")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "inactive" in line and "signal step 0" in line)
    assert [line.split()[0] for line in lines[header + 1:header + 4]] == ["1", "2", "3"]
    assert all(line.split()[1].endswith("%") for line in lines[header + 1:header + 4])
    assert lines[-1].endswith("tensorboard --logdir runs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(logdir, tmp_path, ready):
    """Start TensorBoard on ``logdir``, wait until ``ready(get)`` holds, return what it returned."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"

    def get(path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    log = open(tmp_path / "tensorboard.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                               "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "tensorboard.log").read_text()
            try:
                answer = ready(get)
                if answer:
                    return answer
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "tensorboard did not serve the runs within 120 s"
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_real_tensorboard_serves_one_run_with_everything(tiny_config, tmp_path, fake_root):
    run = _fit(tiny_config, ["model.depth=2", "train.epochs=1", "optimizer.lr=0.0001"], run_dir=tmp_path / "runs" / "tiny")
    test_accuracy = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]

    def everything(get):
        images = get("/data/plugin/images/tags").get("tiny", {})
        scalars = get("/data/plugin/scalars/tags")
        groups = get("/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 10,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"metric": {"group": "test", "tag": "accuracy/epoch"}}, {"hparam": "model.activation"}]})
        if "visuals/misclassified_val" not in images or not groups.get("sessionGroups") or \
                any("loss/epoch" not in scalars.get(f"tiny/{split}", {}) for split in ("train", "val", "test")):
            return None  # the whole event files are not loaded yet
        return (get("/data/runs"), scalars,
                get("/data/plugin/histograms/tags").get("tiny", {}), images,
                get("/data/plugin/hparams/experiment", {"experimentName": ""}), groups,
                get("/data/plugin/custom_scalars/layout"))

    runs, by_run, histograms, images, experiment, groups, layout = _serve(tmp_path / "runs", tmp_path, everything)
    # the splits are runs of their own, so TensorBoard draws each in its own colour, named by its run
    assert sorted(runs) == ["tiny", "tiny/test", "tiny/train", "tiny/val"]
    scalars = by_run["tiny"]
    assert {"loss/step", "per_layer/inactive/1", "per_layer/signal/2", "per_layer/update_ratio/2",
            "summary/signal_ratio_first"} <= set(scalars)
    assert all(set(by_run[f"tiny/{split}"]) == {"accuracy/epoch", "loss/epoch"} for split in ("train", "val", "test"))
    described = [info for tags in by_run.values() for info in tags.values()]
    assert all(info["description"] for info in described)  # every tag of every run says what it is
    assert {f"per_layer/{h}/{i}" for i in (1, 2) for h in HISTOGRAMS} == set(histograms)
    assert {"visuals/inputs", "visuals/misclassified_val", "visuals/confusion_matrix_test",
            "visuals/per_class_accuracy_test", "visuals/epochs"} == set(images)
    assert [c["title"] for c in layout["category"]][0] == "accuracy and loss"
    # HParams: the settings that matter come first (TensorBoard shows the first five), integers as written
    infos = experiment["hparamInfos"]
    assert [h["name"] for h in infos[:5]] == sorted(MAIN_HPARAMS) and all(h.get("differs") for h in infos[:5])
    assert "model.init" in MAIN_HPARAMS and all(h.get("displayName") == h["name"] for h in infos)  # all dotted
    assert [(m["name"].get("group", ""), m["name"]["tag"]) for m in experiment["metricInfos"]] == list(HPARAM_METRICS)
    (group,) = groups["sessionGroups"]
    assert group["name"] == "tiny" and [s["name"] for s in group["sessions"]] == ["tiny"]
    assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
    hparams = group["hparams"]
    assert hparams["model.activation"] == "relu" and hparams["model.width"] == "64"
    assert hparams["data.val_size"] == "200" and hparams["optimizer.lr"] == pytest.approx(0.0001)
    assert hparams["data.root"] == str(fake_root.resolve())  # the folder actually read (MLP_DATA_ROOT)
    metrics = {(m["name"].get("group", ""), m["name"]["tag"]): m["value"] for m in group["metricValues"]}
    assert metrics[("test", "accuracy/epoch")] == pytest.approx(test_accuracy)  # the sub-run, a group of the session
    metrics = {tag: value for (_, tag), value in metrics.items()}
    assert 0.0 <= metrics["summary/inactive_max"] <= 1.0 and metrics["summary/signal_ratio_first"] > 0


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
    (["--out", "taken.txt"], "--out taken.txt is a file, not a folder"),
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
    assert bad.exit_code == 2 and "--plots file/sub: cannot make the folder: a part of the path is a file" in bad.stderr
