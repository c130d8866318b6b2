"""`data.dataset: folder`: a folder of PNGs and JPEGs trained on, evaluated and predicted, and
each problem a folder can have said in one line."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import mlp.device
import mlp.model
from conftest import run_mlp
from fakedata import write_image_folder
from mlp.commands.evaluate import evaluate_checkpoint
from mlp.commands.predict import predict_files
from mlp.config import load_config
from mlp.errors import UserError
from mlp.data import load_data
from mlp.run.checkpoint import load_checkpoint
from mlp.training.loop import fit

FOLDER = ["name=pics", "data.dataset=folder", "model.width=32", "train.epochs=4", "train.batch_size=16",
          "train.device=cpu", "train.log_every=5", "optimizer.lr=0.003"]


def _config(root, *more):
    return load_config(None, [*FOLDER, f"data.root={root}", *more])


def _sets(*more):
    """``mlp train``'s arguments for the folder config."""
    Path("folder.yaml").write_text("name: pics\n")
    return ["--config", "folder.yaml",
            *[arg for item in [*FOLDER, *more] for arg in ("--set", item)]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained on a folder without test/ (so the test split is split off by hash)."""
    base = tmp_path_factory.mktemp("folder")
    root = write_image_folder(base / "pics")
    run = fit(_config(root), base / "run", progress=False)
    return root, run


def test_a_folder_trains_and_eval_and_predict_use_its_classes(trained, capsys):
    root, run = trained
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["test"]["accuracy"] > 0.9
    ckpt = load_checkpoint(run / "checkpoint.pth")
    assert ckpt["classes"] == ["blue", "green", "red"] and ckpt["input_shape"] == [3, 16, 16]

    result = evaluate_checkpoint(run / "checkpoint.pth")  # the same test images, found again
    assert result["accuracy"] == metrics["test"]["accuracy"] and result["total"] == 32
    val = evaluate_checkpoint(run / "checkpoint.pth", split="val")
    assert val["total"] == 9 and val["accuracy"] == metrics["best"]["val_accuracy"]  # val_size 0.1 of 88

    files = [root / "red" / "003.png", root / "blue" / "007.jpg", root / "green" / "010.png"]
    predictions, unreadable = predict_files(run / "checkpoint.pth", files, top_k=2)
    assert not unreadable and [p["label"] for p in predictions] == ["red", "blue", "green"]


def test_the_test_split_is_the_same_for_every_seed_and_the_choices_are_printed(trained, tmp_path, capsys):
    root, _ = trained
    a = load_data(_config(root).data, torch.device("cpu"), seed=0)
    b = load_data(_config(root).data, torch.device("cpu"), seed=5)
    unit = lambda d: d.test.images * torch.tensor(d.std).view(1, -1, 1, 1) + torch.tensor(d.mean).view(1, -1, 1, 1)
    assert torch.allclose(unit(a), unit(b), atol=1e-5) and len(a.test) == 32  # the same images
    assert not torch.equal(a.val.images, b.val.images)
    assert any("16×16 (the most common size" in n and "RGB" in n for n in a.notes)
    assert any("no test/ folder: 32 of its 120 images" in n for n in a.notes)


def test_train_and_test_folders_mixed_sizes_modes_and_grey(tmp_path):
    write_image_folder(tmp_path / "set" / "train", per_class=20, size=20)
    write_image_folder(tmp_path / "set" / "test", per_class=6, size=20, seed=1)
    Image.open(tmp_path / "set" / "train" / "red" / "000.png").resize((40, 30)).convert("L").save(
        tmp_path / "set" / "train" / "red" / "big.png")
    data = load_data(_config(tmp_path / "set").data, torch.device("cpu"), seed=0)
    assert len(data.test) == 18 and len(data.train) + len(data.val) == 61
    assert data.input_shape == (3, 20, 20) and data.classes == ["blue", "green", "red"]
    assert any("come in 2 sizes (20×20 (60), 40×30 (1))" in n for n in data.notes)
    assert any("come in 2 modes (RGB (60), L (1)); each is made RGB" in n for n in data.notes)
    shutil.rmtree(tmp_path / "set" / "test" / "blue")
    shutil.rmtree(tmp_path / "set" / "test" / "green")  # a test/ with one of the classes is fine
    assert len(load_data(_config(tmp_path / "set").data, torch.device("cpu"), seed=0).test) == 6
    sized = load_data(_config(tmp_path / "set", "data.image_size=[8, 12]", "data.channels=1").data,
                      torch.device("cpu"), seed=0)
    assert sized.input_shape == (1, 8, 12) and sized.train.images.shape[1:] == (1, 8, 12)

    grey = write_image_folder(tmp_path / "grey", per_class=4, size=100)
    for path in grey.rglob("*.*"):
        Image.open(path).convert("L").save(path)
    data = load_data(_config(grey).data, torch.device("cpu"), seed=0)
    assert data.input_shape == (1, 64, 64)  # grey, and the longer side capped
    assert any("the most common size, 100×100, its longer side capped at 64" in n for n in data.notes)


def test_skipped_files_are_named_and_counted(tmp_path):
    root = write_image_folder(tmp_path / "pics", per_class=10)
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "blue" / "notes.txt").write_text("not an image")
    shutil.copy(root / "red" / "000.png", root / "stray.png")
    data = load_data(_config(root).data, torch.device("cpu"), seed=0)
    assert len(data.train) + len(data.val) + len(data.test) == 30
    warnings = [n for n in data.notes if n.startswith("warning:")]
    assert len(warnings) == 3
    assert any("skipped 1 unreadable image files: " in w and "broken.png" in w for w in warnings)
    assert any("skipped 1 files that are not images" in w and "notes.txt" in w for w in warnings)
    assert any("1 files in " in w and "stray.png" in w and "not in a class folder" in w for w in warnings)

    done = run_mlp("train", *_sets(f"data.root={root}", "train.epochs=1"), "--run-dir", tmp_path / "run",
                   "--no-progress")
    assert done.returncode == 0, done.stderr
    assert sum(line.startswith("warning:") for line in done.stderr.splitlines()) == 3


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("no classes", "holds no class folders (it holds 1 files directly"),
    ("one class", "has one class folder (red); a classifier needs at least two"),
    ("empty class", "blue holds no readable training image"),
    ("unknown test class", "has class folders that"),
    ("no test image", "falls in the test split (data.test_fraction 0.01); add images"),
])
def test_a_folder_that_is_no_data_set_is_one_line(tmp_path, case, message):
    root = tmp_path / "pics"
    if case == "no classes":
        root.mkdir()
        Image.new("RGB", (8, 8)).save(root / "a.png")
    elif case == "one class":
        write_image_folder(root, per_class=3, classes=("red",))
    elif case == "empty class":
        write_image_folder(root, per_class=3, classes=("red", "green"))
        (root / "blue").mkdir()
        (root / "blue" / "broken.png").write_bytes(b"nothing")
    elif case == "unknown test class":
        write_image_folder(root / "train", per_class=3, classes=("red", "green"))
        write_image_folder(root / "test", per_class=3, classes=("red", "blue"))
    elif case == "no test image":
        write_image_folder(root, per_class=3, classes=("red", "green"))
    more = ["data.test_fraction=0.01"] if case == "no test image" else []
    done = run_mlp("train", *_sets(f"data.root={root}", *more), "--run-dir", tmp_path / "run")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_a_set_too_large_for_memory_is_refused_before_reading(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "pics", per_class=5)
    monkeypatch.setattr(mlp.device, "free_memory", lambda device: 10_000)
    with pytest.raises(UserError, match=r"15 images of 3×16×16 need 57.6 KB as tensors, more than the "
                                        r"10.0 KB free on cpu; set a smaller data.image_size"):
        load_data(_config(root).data, torch.device("cpu"), seed=0)


def test_val_size_is_a_count_or_a_fraction_and_a_folder_holds_out_a_tenth():
    assert load_config(None, ["data.dataset=folder"]).data.val_size == 0.1
    assert load_config(None, ["data.dataset=folder", "data.val_size=30"]).data.val_size == 30
    assert load_config(None, ["data.val_size=0.25"]).data.val_size == 0.25
    assert load_config(None).data.val_size == 5000
    with pytest.raises(UserError, match="data.val_size: a fraction of the training images must be below 1"):
        load_config(None, ["data.val_size=1.5"])
    with pytest.raises(UserError, match=r"data.image_size: give one positive side, or \[height, width\]"):
        load_config(None, ["data.image_size=[4, 0]"])
