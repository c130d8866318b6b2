"""`mlp predict`: image files of any size and mode, classified by a model trained here."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_mlp
from mlp.checkpoint import load_checkpoint, rebuild_model
from mlp.config import load_config
from mlp.data import load_eval_split, read_split, resolve_root
from mlp.predict import format_predictions, predict_files, read_image
from mlp.train import fit


@pytest.fixture
def trained(tiny_config):
    """A trained model, and fabricated test images it classifies right with the most confidence
    (listed first, so resizing them cannot tip the prediction)."""
    run = fit(load_config(tiny_config, ["train.epochs=4"]), "run", progress=False)
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] > 0.8
    images, labels, classes = read_split("mnist", resolve_root("data"), train=False)
    ckpt = load_checkpoint(run / "checkpoint.pth")
    _, model = rebuild_model(ckpt)
    mean, std = ckpt["normalization"]["mean"][0], ckpt["normalization"]["std"][0]
    with torch.no_grad():
        probs = model.eval()((images.float() / 255 - mean) / std).softmax(1)
    confidence = torch.where(probs.argmax(1) == labels, probs.max(1).values, torch.zeros(len(labels)))
    order = confidence.argsort(descending=True)
    return run / "checkpoint.pth", images[order, 0].numpy(), labels[order].tolist(), classes, order


def test_predict_reads_any_size_and_mode_and_names_unreadable_files(trained, tmp_path):
    checkpoint, images, labels, classes, order = trained
    Image.fromarray(images[0]).save("exact.png")  # 28×28 grey, as trained
    Image.fromarray(images[1]).resize((56, 42)).convert("RGB").save("rgb.png")
    Image.fromarray(images[2]).resize((84, 84)).convert("RGBA").save("rgba.png")
    Image.fromarray(images[3]).save("grey.jpg", quality=95)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    files = ["exact.png", "rgb.png", "broken.png", "rgba.png", "missing.png", "grey.jpg"]

    done = run_mlp("predict", checkpoint, *files, "--json", "--top-k", "2")
    assert done.returncode == 2
    predictions = json.loads(done.stdout)
    assert [p["image"] for p in predictions] == ["exact.png", "rgb.png", "rgba.png", "grey.jpg"]
    for p, label in zip(predictions, [labels[0], labels[1], labels[2], labels[3]]):
        assert (p["index"], p["label"]) == (label, classes[label])
        assert len(p["top_k"]) == 2 and p["top_k"][0]["probability"] >= p["top_k"][1]["probability"]
    errors = done.stderr.splitlines()
    assert len(errors) == 2 and "Traceback" not in done.stderr
    assert errors[0].startswith("error: cannot read image broken.png") and "missing.png" in errors[1]

    # the image went through the training normalisation: the same probabilities as the test split's tensor
    ckpt = load_checkpoint(checkpoint)
    cfg, model = rebuild_model(ckpt)
    norm = ckpt["normalization"]
    test = load_eval_split("mnist", resolve_root("data"), "test", cfg.seed, cfg.data.val_size,
                           norm["mean"], norm["std"], torch.device("cpu"))
    expected = model.eval()(test.images[order[:1]]).softmax(1)[0]
    runner_up = predictions[0]["top_k"][1]  # far from saturated, so it shows any change of input scale
    assert runner_up["probability"] == pytest.approx(expected[runner_up["index"]].item(), rel=1e-3)
    assert predictions[0]["probability"] == pytest.approx(expected[labels[0]].item(), abs=1e-6)


def test_top_k_is_at_most_the_number_of_classes_and_the_table_shows_it(trained):
    checkpoint, images, labels, classes, _ = trained
    Image.fromarray(images[0]).save("digit.png")
    predictions, unreadable = predict_files(checkpoint, ["digit.png"], top_k=20)
    assert unreadable == [] and len(predictions[0]["top_k"]) == 10
    assert sum(r["probability"] for r in predictions[0]["top_k"]) == pytest.approx(1.0, abs=1e-5)
    shown = format_predictions(predictions).splitlines()
    assert shown[0] == "digit.png" and len(shown) == 11 and shown[1].split()[-1].endswith("%")
    assert classes[labels[0]] in shown[1]


def test_grey_images_become_rgb_for_a_colour_model():
    Image.fromarray(np.full((10, 20), 200, dtype=np.uint8)).save("grey.png")
    pixels = read_image("grey.png", [3, 32, 32])
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.uint8 and int(pixels[2, 5, 5]) == 200
