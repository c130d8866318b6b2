"""`mlp predict`: image files of any size and mode, classified by a model trained here."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_mlp, write_config
from mlp.run.checkpoint import load_checkpoint, rebuild_model
from mlp.config import load_config
from mlp.data import load_eval_split, read_split, resolve_root
from mlp.commands.predict import format_predictions, predict_files, read_image
from mlp.training.loop import fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fake_root):
    """A trained model, and fabricated test images it classifies right with the most confidence
    (listed first, so resizing them cannot tip the prediction); trained once, only read."""
    base = tmp_path_factory.mktemp("predict")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLP_DATA_ROOT", str(fake_root))
        run = fit(load_config(write_config(base / "tiny.yaml"), ["train.epochs=4"]), base / "run", progress=False)
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] > 0.8
    images, labels, classes = read_split("mnist", fake_root, train=False)
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


def _write_digits(root, n_train=2000, n_test=200):
    """MNIST files whose images look like MNIST's: a bright pattern per class in the middle of a
    black 28×28 field (the border always black), shifted by up to 2 pixels."""
    from fakedata import _idx

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    shapes = np.random.default_rng(7).random((10, 5, 5)) > 0.5
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 10, n)
        images = np.zeros((n, 28, 28))
        for k, (label, (dy, dx)) in enumerate(zip(labels, rng.integers(-2, 3, (n, 2)))):
            images[k, 4 + dy:24 + dy, 4 + dx:24 + dx] = shapes[label].repeat(4, 0).repeat(4, 1) * 220
        images = np.clip(images + rng.normal(0, 15, images.shape) * (images > 0), 0, 255)
        _idx(raw / f"{prefix}-images-idx3-ubyte", images.astype(np.uint8))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A model trained on light-on-dark 'digits', and test images it gets right (trained once)."""
    root = tmp_path_factory.mktemp("digits")
    _write_digits(root / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLP_DATA_ROOT", str(root / "data"))
        cfg = load_config(write_config(root / "tiny.yaml"), ["train.epochs=3"])
        run = fit(cfg, root / "run", progress=False)
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] > 0.95
    images, labels, classes = read_split("mnist", root / "data", train=False)
    return run / "checkpoint.pth", images[:, 0].numpy(), labels.tolist(), classes


def test_a_dark_digit_on_a_light_background_is_inverted_and_says_so(digits):
    checkpoint, images, labels, classes = digits
    Image.fromarray(images[0]).save("as_trained.png")
    Image.fromarray(255 - images[0]).resize((140, 140)).save("ink_on_paper.png")
    # a drawing app's export: dark strokes where alpha is set, nothing elsewhere
    strokes = np.zeros((28, 28, 4), dtype=np.uint8)
    strokes[..., 3] = images[1]
    Image.fromarray(strokes, mode="RGBA").save("transparent.png")
    done = run_mlp("predict", checkpoint, "as_trained.png", "ink_on_paper.png", "transparent.png", "--json")
    assert done.returncode == 0, done.stderr
    plain, inverted, transparent = json.loads(done.stdout)
    assert plain["index"] == inverted["index"] == labels[0] and transparent["index"] == labels[1]
    assert (plain["inverted"], inverted["inverted"], transparent["inverted"]) == (False, True, True)
    assert inverted["probability"] == pytest.approx(plain["probability"], abs=0.02)
    assert not inverted["unusual"] and not plain["unusual"]
    shown = run_mlp("predict", checkpoint, "ink_on_paper.png").stdout.splitlines()
    assert shown[-2] == "  note: inverted: its background is light and the training images' is dark"
    assert shown[-1].startswith("  note: prepared as MNIST's digits were: cropped to the ink (")
    # --as-is: only resized, so the model sees dark ink on white, unlike anything it was trained on
    (as_is,) = json.loads(run_mlp("predict", checkpoint, "ink_on_paper.png", "--as-is", "--json").stdout)
    assert (as_is["inverted"], as_is["centred"], as_is["prepared"], as_is["unusual"]) == (False, False, False, True)
    assert len(as_is["notes"]) == 1 and as_is["notes"][0].startswith("unlike the training images")


def test_a_photographed_page_is_inverted_and_levelled(digits):
    """Grey paper under uneven light with dark ink, as a phone takes it: once inverted, the
    paper is dark grey, not black, until the levels are stretched."""
    checkpoint, images, labels, _ = digits
    rng = np.random.default_rng(1)
    files = []
    for k in range(5):
        ink = np.asarray(Image.fromarray(images[k]).resize((280, 280), Image.BICUBIC)) / 255.0
        paper = 0.75 + 0.1 * np.linspace(0, 1, 280)[None, :] + rng.normal(0, 0.02, (280, 280))
        page = np.clip((paper * (1 - ink) + 0.1 * ink) * 255, 0, 255).astype(np.uint8)
        Image.fromarray(page).convert("RGB").save(f"page{k}.jpg", quality=85)
        files.append(f"page{k}.jpg")
    predictions, _ = predict_files(checkpoint, files, top_k=1)
    assert [p["index"] for p in predictions] == labels[:5]
    assert all(p["inverted"] and 40 <= p["background_level"] <= 80 and not p["unusual"] for p in predictions)
    assert predictions[0]["notes"][1].startswith("levels stretched: its background (grey ")
    # as trained (black background) an image is left exactly as it is
    Image.fromarray(images[0]).save("as_trained.png")
    (plain,), _ = predict_files(checkpoint, ["as_trained.png"], top_k=1)
    assert plain["background_level"] is None and not plain["inverted"] and plain["centred"]
    assert plain["notes"] == ["prepared as MNIST's digits were: cropped to the ink (20×20 px), scaled to 20×20 in "
                              "a 20×20 box, centred by mass in 28×28 (--as-is skips this)"]


def test_a_16_bit_image_is_scaled_not_clipped(digits):
    checkpoint, images, labels, _ = digits
    Image.fromarray(images[2]).save("eight_bit.png")
    Image.fromarray(images[2].astype(np.uint16) * 257).save("sixteen_bit.png")  # the same picture, 0..65535
    with Image.open("sixteen_bit.png") as png:
        assert png.mode.startswith("I")
    assert torch.equal(read_image("sixteen_bit.png", [1, 28, 28]), read_image("eight_bit.png", [1, 28, 28]))
    (eight, sixteen), _ = predict_files(checkpoint, ["eight_bit.png", "sixteen_bit.png"], top_k=3)
    assert sixteen["index"] == labels[2] and sixteen["top_k"] == eight["top_k"]


def test_an_input_unlike_the_training_images_is_flagged(digits):
    checkpoint, images, labels, _ = digits
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save("noise.png")
    Image.fromarray(np.roll(images[3], (9, 9), axis=(0, 1))).save("off_centre.png")  # ink on the border
    for k in range(20):
        Image.fromarray(images[k]).save(f"digit{k}.png")
    files = ["noise.png", "off_centre.png", *[f"digit{k}.png" for k in range(20)]]
    predictions, _ = predict_files(checkpoint, files, top_k=1, prepare=False)
    assert [p["unusual"] for p in predictions] == [True, True] + [False] * 20
    assert predictions[0]["novelty"] > 3 and all(p["novelty"] < 1 for p in predictions[2:])
    shown = run_mlp("predict", checkpoint, "noise.png", "--as-is").stdout.splitlines()
    assert shown[-1].startswith("  note: unlike the training images (novelty ") and "a guess" in shown[-1]
    # prepared, a digit in the corner of a larger image is centred: read right, and not unlike the training images
    corner = np.zeros((60, 60), dtype=np.uint8)
    corner[1:29, 31:59] = images[3]
    Image.fromarray(corner).save("corner.png")
    (centred, *prepared), _ = predict_files(checkpoint, ["corner.png", *files[2:]], top_k=1)
    assert centred["index"] == labels[3] and not centred["unusual"] and centred["centred"]
    assert [p["index"] for p in prepared] == labels[:20] and not any(p["unusual"] for p in prepared)


def test_a_checkpoint_without_the_profile_still_predicts(digits, tmp_path):
    from mlp.run.checkpoint import checkpoint_bytes
    from mlp.run.durable import atomic_write_bytes

    checkpoint, images, labels, _ = digits
    old = {k: v for k, v in load_checkpoint(checkpoint).items() if k != "input_profile"}
    atomic_write_bytes(tmp_path / "old.pth", checkpoint_bytes(old))
    Image.fromarray(images[0]).save("digit.png")
    (prediction,), _ = predict_files(tmp_path / "old.pth", ["digit.png"], top_k=1)
    assert prediction["index"] == labels[0] and prediction["novelty"] is None and prediction["unusual"] is None


def test_polarity_is_read_from_the_training_mean():
    from mlp.commands.predict import training_background

    assert training_background([0.1307]) == "dark" and training_background([0.49, 0.48, 0.45]) is None
    assert training_background([0.9]) == "light"


def test_lab_nan_and_very_large_images_are_each_read_or_named_in_one_line(digits, monkeypatch):
    checkpoint, images, labels, _ = digits
    lab = np.zeros((28, 28, 3), dtype=np.uint8)
    lab[..., 0] = images[4]  # lightness; a and b neutral
    Image.fromarray(lab, mode="LAB").save("lab.tif")
    nan = images[5].astype(np.float32) / 255
    nan[3, 3] = np.nan
    Image.fromarray(nan, mode="F").save("nan.tif")
    done = run_mlp("predict", checkpoint, "lab.tif", "nan.tif", "--json")  # LAB: made sRGB, then grey
    assert done.returncode == 2 and json.loads(done.stdout)[0]["index"] == labels[4]
    assert done.stderr.splitlines() == ["error: cannot read image nan.tif: some of its pixels are not numbers "
                                        "(NaN or infinite)"], done.stderr
    # over Pillow's warning size (89 megapixels by default, shrunk here) the image is read without a word
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    Image.fromarray(images[6]).resize((30, 30)).save("big.png")  # 900 pixels: warned of, not refused
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (big,), unreadable = predict_files(checkpoint, ["big.png"], top_k=1)
    assert unreadable == [] and big["index"] == labels[6]
