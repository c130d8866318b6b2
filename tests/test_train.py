"""Real (small) trainings on the fabricated data, checked through what a user sees."""

import csv
import json
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import yaml

import mlp.training.trainer
from conftest import run_mlp
from tbevents import read_events
from mlp.run.checkpoint import load_checkpoint
from mlp.config import load_config
from mlp.data import load_data
from mlp.commands.evaluate import evaluate, evaluate_checkpoint
from mlp.model import build_model
from mlp.training.loop import fit


def _fit(path, overrides=(), run_dir="run"):
    return fit(load_config(path, list(overrides)), run_dir, progress=False)


def test_training_writes_a_complete_run_and_learns(tiny_config, tmp_path):
    run = _fit(tiny_config, ["train.epochs=3"])
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(("events", ".lock"))) == \
        ["checkpoint.pth", "config.yaml", "diagnostics.json", "last.pth", "metrics.csv", "metrics.json",
         "test", "train", "val"]  # the last three: TensorBoard's sub-runs, one per split
    metrics = json.loads((run / "metrics.json").read_text())
    history = metrics["epochs"]
    with open(run / "metrics.csv", newline="") as f:  # the same numbers, one row per epoch
        rows = list(csv.DictReader(f))
    assert [{k: float(v) for k, v in row.items()} for row in rows] == history
    assert metrics["status"] == "finished" and len(history) == 3
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 2
    assert metrics["test"]["accuracy"] > 0.9
    assert all(r["train_time_s"] > 0 and r["samples_per_s"] > 0 for r in history)
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["width"] == 64

    events = read_events(run)
    tags = set(events.Tags()["scalars"])
    assert {"loss/step", "training/lr", "training/samples_per_s"} <= tags
    assert not {tag for tag in tags if tag.startswith("accuracy/")}  # in the splits' sub-runs, each its colour
    steps = [e.step for e in events.Scalars("loss/step")]
    assert steps == list(range(5, 3 * 16 + 1, 5))  # 1000 images / 64 = 16 steps an epoch, log_every 5


def _split_numbers(run, split):
    """``{tag: [(x, value), ...]}`` of the sub-run ``run/split``, which holds one event file."""
    assert len(list((run / split).glob("events.out.tfevents.*"))) == 1
    events = read_events(run / split)
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("best_epoch", [2, 3])
def test_each_split_is_a_sub_run_and_test_is_a_flat_line_across_the_epochs(tiny_config, monkeypatch, best_epoch):
    """TensorBoard colours by run: train, val and test are three runs with the same tags, so one chart
    overlays them in three colours.  Test, measured once, spans the epochs (first, best and last)."""
    if best_epoch == 2:  # validation accuracy 50%, 70%, 60%: the best checkpoint is epoch 2's
        scripted = iter([0.5, 0.7, 0.6])
        evaluate = mlp.training.trainer.evaluate

        def scripted_val(model, split, *args):
            result = evaluate(model, split, *args)
            return {**result, "accuracy": next(scripted)} if len(split) == 200 else result  # the validation split

        monkeypatch.setattr(mlp.training.trainer, "evaluate", scripted_val)
    run = _fit(tiny_config, ["train.epochs=3"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best"]["epoch"] == best_epoch
    history = metrics["epochs"]
    for split in ("train", "val"):
        numbers = _split_numbers(run, split)
        assert set(numbers) == {"accuracy/epoch", "loss/epoch"}
        for metric in ("accuracy", "loss"):
            assert numbers[f"{metric}/epoch"] == [(r["epoch"], pytest.approx(r[f"{split}_{metric}"], rel=1e-6))
                                                  for r in history]
    test = _split_numbers(run, "test")
    assert set(test) == {"accuracy/epoch", "loss/epoch"}
    xs = sorted({1, best_epoch, 3})
    assert test["accuracy/epoch"] == [(x, pytest.approx(metrics["test"]["accuracy"], rel=1e-6)) for x in xs]
    assert test["loss/epoch"] == [(x, pytest.approx(metrics["test"]["loss"], rel=1e-5)) for x in xs]
    description = read_events(run / "test").SummaryMetadata("accuracy/epoch").summary_description
    assert "measured once at the end on the best checkpoint" in description and "drawn flat" in description


def test_checkpoint_is_plain_data_and_eval_reproduces_the_test_accuracy(tiny_config):
    run = _fit(tiny_config)
    raw = torch.load(run / "checkpoint.pth", weights_only=True)
    assert raw["format_version"] == 2 and raw["classes"][0] == "0 - zero"
    assert raw["input_shape"] == [1, 28, 28] and len(raw["normalization"]["mean"]) == 1
    metrics = json.loads((run / "metrics.json").read_text())
    result = evaluate_checkpoint(run / "checkpoint.pth")
    assert result["accuracy"] == pytest.approx(metrics["test"]["accuracy"], rel=1e-6)  # JSON keeps 7 digits
    assert result["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)
    assert sum(map(sum, result["confusion"])) == 300 and len(result["per_class_accuracy"]) == 10
    val = evaluate_checkpoint(run / "checkpoint.pth", split="val")
    assert val["total"] == 200 and val["accuracy"] == metrics["best"]["val_accuracy"]


def test_same_seed_same_metrics_on_cpu(tiny_config):
    a = json.loads((_fit(tiny_config, run_dir="a") / "metrics.json").read_text())
    b = json.loads((_fit(tiny_config, run_dir="b") / "metrics.json").read_text())
    c = json.loads((_fit(tiny_config, ["seed=1"], run_dir="c") / "metrics.json").read_text())
    strip = lambda m: [{k: v for k, v in r.items() if k not in ("train_time_s", "samples_per_s")} for r in m["epochs"]]
    assert strip(a) == strip(b) and a["test"] == b["test"]
    assert strip(a) != strip(c)


def test_epoch_train_loss_and_accuracy_count_every_sample_once(tiny_config):
    """The loop keeps each step's loss and predictions on the device and totals them at the
    epoch's end.  With a learning rate too small to move the weights, those totals must equal
    one pass of the final model over the training split (1000 images: 15 batches of 64 and
    one of 40, so a wrong weighting of the short batch shows)."""
    run = _fit(tiny_config, ["train.epochs=1", "optimizer.name=sgd", "optimizer.lr=1e-12"])
    record = json.loads((run / "metrics.json").read_text())["epochs"][0]
    cfg = load_config(tiny_config)
    data = load_data(cfg.data, torch.device("cpu"), cfg.seed)
    model = build_model(cfg.model, data.input_shape, len(data.classes))
    model.load_state_dict(load_checkpoint(run / "checkpoint.pth")["model_state"])
    full = evaluate(model, data.train, len(data.classes))
    assert len(data.train) == 1000 and record["train_accuracy"] == full["accuracy"]
    assert record["train_loss"] == pytest.approx(full["loss"], rel=1e-5)


@pytest.mark.parametrize("overrides", [
    ["optimizer.name=sgd", "optimizer.lr=0.05", "optimizer.nesterov=true", "scheduler.name=step", "scheduler.step_size=1"],
    ["optimizer.name=adamw", "optimizer.weight_decay=0.01", "scheduler.name=cosine", "scheduler.warmup_epochs=0.5"],
    ["scheduler.name=onecycle", "train.label_smoothing=0.1", "train.grad_clip=1.0"],
    ["model.activation=tanh", "model.norm=batch", "model.dropout=0.2", "data.augment=true", "model.width=[64, 32]"],
    ["data.dataset=cifar10", "data.augment=true", "model.activation={name: prelu, per_unit: true}"],
    ["data.val_size=0", "scheduler.warmup_epochs=1"],
    ["train.precision=bf16"],
])
def test_recipes_train_and_learn(tiny_config, overrides):
    run = _fit(tiny_config, ["train.epochs=3", *overrides])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"][-1]["train_loss"] < metrics["epochs"][0]["train_loss"]
    assert metrics["test"]["accuracy"] > 0.3  # chance is 0.1
    # TensorBoard's split sub-runs: none for a split that is not there (no empty run in its list)
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == \
        (["test", "train"] if "data.val_size=0" in overrides else ["test", "train", "val"])


def test_learning_rate_schedules_follow_the_config(tiny_config):
    run = _fit(tiny_config, ["scheduler.name=step", "scheduler.step_size=1", "scheduler.gamma=0.5", "train.epochs=3"])
    lrs = [r["lr"] for r in json.loads((run / "metrics.json").read_text())["epochs"]]
    assert lrs == pytest.approx([0.0015, 0.00075, 0.000375])
    run = _fit(tiny_config, ["scheduler.name=cosine", "train.epochs=2"], run_dir="cos")
    assert json.loads((run / "metrics.json").read_text())["epochs"][-1]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_cli_train_then_eval(tiny_config, tmp_path):
    done = run_mlp("train", "--config", tiny_config, "--set", "train.epochs=1", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "parameters" in done.stdout and "epoch 1/1" in done.stdout and "test     accuracy" in done.stdout
    run = next((tmp_path / "runs").iterdir())
    assert run.name.startswith("tiny-")
    shown = run_mlp("eval", run / "checkpoint.pth")
    assert shown.returncode == 0 and "per-class accuracy" in shown.stdout and "confusion matrix" in shown.stdout
    as_json = json.loads(run_mlp("eval", run / "checkpoint.pth", "--json", "--batch-size", "7").stdout)
    metrics = json.loads((run / "metrics.json").read_text())
    assert as_json["accuracy"] == metrics["test"]["accuracy"]
    assert f"{metrics['test']['accuracy']:.2%}" in shown.stdout


@pytest.mark.slow
def test_compiled_model_trains_and_saves_plain_weights(tiny_config):
    # torch.compile needs a minute to build its kernels on a small CPU, hence slow.
    from torch._dynamo.utils import counters

    counters.clear()
    run = _fit(tiny_config, ["train.compile=true", "train.epochs=2"])
    # A few graphs (full and short last batch, each with and without the hooks that catch the
    # gradient at measured steps, which split the graph), each compiled once: 8 frames for these
    # 32 steps (11 measured) as for 80 steps (23 measured), not one per step or measured step.
    assert 1 <= counters["frames"]["total"] <= 8
    events = read_events(run)
    inactive = events.Scalars("per_layer/inactive/1")
    assert len(inactive) == 32 // 5 + 1 and all(0.0 <= e.value <= 1.0 for e in inactive)  # + step 0
    assert len(events.Scalars("per_layer/signal/1")) == 12  # steps 0, 1, 2, 4, every 5th, 16 and 32
    ckpt = load_checkpoint(run / "checkpoint.pth")
    assert not any(k.startswith("_orig_mod") for k in ckpt["model_state"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.5
    assert evaluate_checkpoint(run / "checkpoint.pth")["accuracy"] == metrics["test"]["accuracy"]


def test_fp16_is_refused_without_cuda(tiny_config):
    from mlp.errors import UserError

    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        _fit(tiny_config, ["train.precision=fp16"])


def _cpu_has(monkeypatch, amx: bool, avx512_bf16: bool):
    """Patch both of the CPU's bf16 probes, so the test says the same on every processor."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, False, "bf16 (auto: this CPU has AMX)"),
    (False, True, "bf16 (auto: this CPU has AVX512-BF16)"),
    (True, True, "bf16 (auto: this CPU has AMX and AVX512-BF16)"),
    (False, False, "fp32 (auto: this CPU has neither AMX nor AVX512-BF16, so bf16 would be emulated)"),
])
def test_precision_auto_follows_the_cpu_probes(monkeypatch, amx, avx512_bf16, expected):
    from mlp.device import resolve_precision

    _cpu_has(monkeypatch, amx, avx512_bf16)
    precision, why = resolve_precision("auto", torch.device("cpu"))
    assert f"{precision} ({why})" == expected
    assert resolve_precision("bf16", torch.device("cpu")) == ("bf16", "as configured")


def test_precision_auto_runs_bf16_only_where_the_cpu_multiplies_it_natively(tiny_config, monkeypatch, capsys):
    _cpu_has(monkeypatch, amx=True, avx512_bf16=False)
    metrics = json.loads((_fit(tiny_config, ["train.precision=auto", "train.epochs=1"]) / "metrics.json").read_text())
    assert "precision bf16 (auto: this CPU has AMX)" in capsys.readouterr().out
    assert metrics["precision"] == "bf16" and metrics["status"] == "finished"


def test_metrics_record_where_the_time_went(tiny_config):
    metrics = json.loads((_fit(tiny_config, ["train.epochs=1"]) / "metrics.json").read_text())
    timings = metrics["timings"]
    assert {"data", "build", "tensorboard", "train", "validation", "writing", "test", "figures"} <= timings.keys()
    assert timings["train"] >= metrics["epochs"][0]["train_time_s"] > 0


def test_a_cropped_model_trains_and_its_checkpoint_alone_evaluates_predicts_and_exports(tiny_config, tmp_path):
    """model.crop: the run says what the first layer reads, and everything rebuilt from the
    checkpoint (eval, predict, the TorchScript export) crops the same way."""
    from PIL import Image

    from mlp.commands.predict import predict_files
    from mlp.data import read_split, resolve_root
    from mlp.run.checkpoint import rebuild_model

    done = run_mlp("train", "--config", tiny_config, "--set", "model.crop=20", "--set", "train.epochs=1",
                   "--no-progress", "--run-dir", tmp_path / "crop")
    assert done.returncode == 0, done.stderr
    assert "model    400 (the centre 20×20 of 28×28) → 64 → 10, relu" in done.stdout
    checkpoint = tmp_path / "crop" / "checkpoint.pth"
    metrics = json.loads((tmp_path / "crop" / "metrics.json").read_text())
    assert evaluate_checkpoint(checkpoint)["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    ckpt = load_checkpoint(checkpoint)
    assert ckpt["input_shape"] == [1, 28, 28] and ckpt["model_state"]["hidden0.linear.weight"].shape == (64, 400)

    images, _, _ = read_split("mnist", resolve_root("data"), train=False)
    files = []
    for k in range(3):
        Image.fromarray(images[k, 0].numpy()).save(tmp_path / f"{k}.png")
        files.append(tmp_path / f"{k}.png")
    predictions, unreadable = predict_files(checkpoint, files, top_k=10, prepare=False)
    assert unreadable == []
    _, model = rebuild_model(ckpt)
    norm = ckpt["normalization"]
    x = images[:3].float().div(255)
    with torch.no_grad():
        expected = model.eval()((x - norm["mean"][0]) / norm["std"][0]).softmax(1)
    for row, prediction in zip(expected, predictions):
        assert prediction["index"] == int(row.argmax())
        assert prediction["probability"] == pytest.approx(float(row.max()), abs=1e-5)

    exported = run_mlp("export", checkpoint, "--out", tmp_path / "model.pt")
    assert exported.returncode == 0, exported.stderr
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load says it is deprecated
        scripted = torch.jit.load(str(tmp_path / "model.pt"))(x).softmax(1)
    torch.testing.assert_close(scripted, expected, atol=1e-5, rtol=0)


# What Trainer does while a thread imports torch._dynamo (mlp.imports.import_meanwhile),
# run in a new interpreter that has imported what `mlp train` imports before it, with every
# later import recorded: there must be none, or the two threads could wait on each other.
WINDOW = """
import sys
import mlp.cli, mlp.training.loop
from mlp.config import load_config
from mlp.data import files_in_place, load_data
from mlp.observe.novelty import input_profile
from mlp.training.state import data_fingerprint
import torch

cfgs = [load_config(None, [f"data.dataset={name}", "data.val_size=100"]) for name in ("mnist", "cifar10")]
assert all(files_in_place(cfg.data) for cfg in cfgs)
imported = []

class Record:
    def find_spec(self, name, path=None, target=None):
        imported.append(name)

sys.meta_path.insert(0, Record())
for cfg in cfgs:
    data = load_data(cfg.data, torch.device("cpu"), 0)
    input_profile(data.train.images)
    data_fingerprint(data)
print(imported)
"""


def test_reading_mnist_or_cifar_imports_nothing_so_dynamo_can_be_imported_meanwhile():
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(WINDOW)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_files_in_place_only_for_a_named_data_set_with_all_its_files(tmp_path, monkeypatch):
    from mlp.data import files_in_place

    assert files_in_place(load_config(None, []).data)
    assert not files_in_place(load_config(None, ["data.dataset=cifar100"]).data)  # not in the fake root
    assert not files_in_place(load_config(None, ["data.dataset=folder", f"data.root={tmp_path}"]).data)
    monkeypatch.setenv("MLP_DATA_ROOT", str(tmp_path))
    assert not files_in_place(load_config(None, []).data)


def test_import_meanwhile_imports_on_another_thread_and_leaves_errors_to_the_import_that_needs_it(
        tmp_path, monkeypatch):
    from mlp.imports import import_meanwhile

    (tmp_path / "slow_probe.py").write_text("import threading, time\nTHREAD = threading.current_thread().name\n"
                                            "time.sleep(0.2)\n")
    (tmp_path / "broken_probe.py").write_text("raise RuntimeError('broken on purpose')\n")
    (tmp_path / "skipped_probe.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gc

    gc.unfreeze()  # a process that never froze (a notebook): the import pauses the collector, freezes nothing
    wait = import_meanwhile("slow_probe")
    assert not gc.isenabled()
    wait()
    assert sys.modules["slow_probe"].THREAD == "import slow_probe"
    assert gc.isenabled() and gc.get_freeze_count() == 0
    import_meanwhile("skipped_probe", when=False)()
    assert "skipped_probe" not in sys.modules
    import_meanwhile("broken_probe")()  # the thread's failure is not raised here ...
    assert "broken_probe" not in sys.modules
    with pytest.raises(RuntimeError, match="broken on purpose"):  # ... but by the import that needs it
        import broken_probe  # noqa: F401
    for name in ("slow_probe", "broken_probe", "skipped_probe"):
        sys.modules.pop(name, None)


def test_the_pixel_sum_is_a_float64_sum():
    from mlp.training.state import pixel_sum

    images = torch.randn(3000, 1, 28, 28) * 3 + 0.25
    exact = float(images.double().sum())
    assert pixel_sum(images) == pytest.approx(exact, rel=1e-12, abs=1e-9)
    assert pixel_sum(images[:, :, 2:20, 3:]) == pytest.approx(float(images[:, :, 2:20, 3:].double().sum()), rel=1e-12, abs=1e-9)
    assert pixel_sum(images.bfloat16()) == pytest.approx(float(images.bfloat16().double().sum()), rel=1e-12, abs=1e-9)


def test_paused_gc_pauses_the_collector_then_freezes_what_exists_and_resumes():
    import gc

    from mlp.imports import paused_gc

    assert gc.isenabled()
    before = gc.get_freeze_count()
    try:
        with paused_gc():
            assert not gc.isenabled()
            with paused_gc():  # a pause inside a pause: the outer one freezes and resumes
                pass
            assert not gc.isenabled() and gc.get_freeze_count() == before
            made = [[] for _ in range(1000)]
        assert gc.isenabled() and gc.get_freeze_count() >= before + len(made)
        frozen = gc.get_freeze_count()
        gc.disable()
        with paused_gc():
            pass
        assert not gc.isenabled() and gc.get_freeze_count() == frozen  # left as it was: off, nothing more frozen
    finally:
        gc.enable()
        gc.unfreeze()


FAILED_READ = """
import gc, sys
from mlp.config import load_config
from mlp.errors import UserError
from mlp.training.loop import fit

assert "torch._dynamo" not in sys.modules
try:
    fit(load_config(None, ["data.val_size=1000000"]), "run", progress=False)
except UserError as e:
    print("refused:", e)
    print(gc.isenabled(), gc.get_freeze_count(), "torch._dynamo" in sys.modules)  # at once: the import is over
"""


def test_a_read_that_fails_beside_the_import_leaves_the_collector_on_and_nothing_frozen():
    """As in a notebook whose mlp.train fails on its data: a new interpreter, torch imported, not dynamo."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(FAILED_READ)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("refused: data.val_size is 1000000") and lines[-1] == "True 0 True"
