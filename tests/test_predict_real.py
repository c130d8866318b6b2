"""`mlp predict` on digits as people give them: dark ink, off-centre, small or large, on white
or grey paper, read by a model trained on the real MNIST (slow: needs MLP_DATA_ROOT)."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from conftest import REAL_DATA_ROOT, write_config
from mlp.config import load_config
from mlp.data import read_split
from mlp.commands.predict import predict_files
from mlp.training.loop import fit

pytestmark = pytest.mark.slow

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory):
    if REAL_DATA_ROOT is None:
        pytest.skip("needs the real MNIST: set MLP_DATA_ROOT")
    root = tmp_path_factory.mktemp("real")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLP_DATA_ROOT", REAL_DATA_ROOT)
        cfg = load_config(write_config(root / "mnist.yaml", {"model": {"width": 256}}),
                          ["train.epochs=1", "data.val_size=5000", "train.log_every=100"])
        run = fit(cfg, root / "run", progress=False)
        images, labels, _ = read_split("mnist", REAL_DATA_ROOT, train=False)
    return run / "checkpoint.pth", images[:, 0].numpy(), labels.tolist()


def _on_paper(ink: np.ndarray, size: int, canvas: tuple[int, int], at: tuple[int, int], paper: float,
              rng) -> Image.Image:
    """``ink`` (0 paper .. 255 ink) scaled to ``size`` pixels and laid on paper of brightness
    ``paper`` (0..1) at ``at``, dark ink, with the paper's uneven light and a little noise."""
    big = np.asarray(Image.fromarray(ink).resize((size, size), Image.BICUBIC), dtype=np.float64) / 255
    layer = np.zeros(canvas)
    layer[at[0]:at[0] + size, at[1]:at[1] + size] = big
    light = paper - 0.06 * np.linspace(0, 1, canvas[1])[None, :] + rng.normal(0, 0.015, canvas)
    return Image.fromarray(np.clip((light * (1 - layer) + 0.08 * layer) * 255, 0, 255).astype(np.uint8))


PLACES = [  # (digit size in pixels, where its top-left corner is) on a 300 × 400 page
    (60, (20, 30)), (90, (180, 290)), (120, (10, 250)), (160, (120, 20)), (220, (60, 160)),
    (70, (200, 40)), (100, (30, 120)), (140, (150, 240)), (180, (100, 200)), (250, (40, 10)),
]


def _first_read_right(checkpoint, images, labels) -> list[int]:
    """Per class, the first test digit the model reads right as it is, 28×28: what is tested here
    is the preparation of the page, not the model."""
    from mlp.data import normalise
    from mlp.run.checkpoint import load_checkpoint, rebuild_model

    ckpt = load_checkpoint(checkpoint)
    _, model = rebuild_model(ckpt)
    norm = ckpt["normalization"]
    with torch.no_grad():
        x = normalise(torch.from_numpy(images[:500, None]), norm["mean"], norm["std"], torch.device("cpu"))
        read = model.eval()(x).argmax(1).tolist()
    return [next(k for k in range(500) if labels[k] == digit == read[k]) for digit in range(10)]


def _score(checkpoint, files, labels, prepare=True) -> tuple[int, list[dict]]:
    predictions, unreadable = predict_files(checkpoint, files, top_k=1, prepare=prepare)
    assert unreadable == []
    return sum(p["index"] == label for p, label in zip(predictions, labels)), predictions


def test_mnist_digits_off_centre_on_white_and_grey_paper_are_read(mnist_model, tmp_path):
    checkpoint, images, labels = mnist_model
    rng = np.random.default_rng(0)
    picks = _first_read_right(checkpoint, images, labels)
    files = []
    for k, (index, (size, at)) in enumerate(zip(picks, PLACES)):
        paper = 0.97 if k % 2 else 0.7  # white, or grey paper in dim light
        _on_paper(images[index], size, (300, 400), at, paper, rng).save(tmp_path / f"digit{k}.jpg", quality=90)
        files.append(tmp_path / f"digit{k}.jpg")
    right, predictions = _score(checkpoint, files, list(range(10)))
    assert right >= 9, [(p["label"], p["notes"][-2:]) for p in predictions]
    assert all(p["inverted"] and p["centred"] for p in predictions)
    as_is, _ = _score(checkpoint, files, list(range(10)), prepare=False)
    assert as_is <= 3  # without the preparation the same model reads them no better than chance


def test_digits_drawn_with_a_font_are_read(mnist_model, tmp_path):
    checkpoint, _, _ = mnist_model
    font = ImageFont.truetype(FONT, 160)
    files = []
    for digit, (size, at) in zip(range(10), PLACES):
        page = Image.new("L", (400, 300), 255 if digit % 2 else 180)
        ImageDraw.Draw(page).text((at[1], at[0]), str(digit), fill=20, font=font.font_variant(size=size))
        page.save(tmp_path / f"drawn{digit}.png")
        files.append(tmp_path / f"drawn{digit}.png")
    right, predictions = _score(checkpoint, files, list(range(10)))
    assert right >= 9, [(p["label"], p["notes"][-2:]) for p in predictions]
