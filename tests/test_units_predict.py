"""Unit tests of how predict reads an image (the EXIF orientation, a palette's transparent colour)
and of the novelty threshold's calibration."""

import numpy as np
import pytest
import torch
from PIL import Image

from mlp.commands.predict import read_image
from mlp.observe.novelty import QUANTILE, input_profile, novelty


def _corner_image() -> Image.Image:
    """28×28 grey, black, with a white block in the top-left corner only."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[:6, :10] = 255
    return Image.fromarray(pixels, mode="L")


@pytest.mark.parametrize("orientation,turned", [(1, None), (3, Image.Transpose.ROTATE_180),
                                                (6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90)])
def test_a_photo_stored_sideways_is_read_upright(tmp_path, orientation, turned):
    image = _corner_image()
    exif = Image.Exif()
    exif[0x0112] = orientation  # the EXIF Orientation tag: how a viewer must turn the stored pixels
    image.save(tmp_path / "photo.png", exif=exif)
    upright = image if turned is None else image.transpose(turned)
    read = read_image(tmp_path / "photo.png", [1, 28, 28])
    assert torch.equal(read[0], torch.from_numpy(np.asarray(upright).copy()))


def test_the_transparent_colour_of_a_palette_image_becomes_white(tmp_path):
    pixels = np.zeros((28, 28), dtype=np.uint8)  # palette index 0 (black) everywhere ...
    pixels[10:18, 12:16] = 1  # ... but a stroke of index 1 (dark grey)
    image = Image.fromarray(pixels, mode="P")
    image.putpalette([0, 0, 0, 60, 60, 60] + [0, 0, 0] * 254)
    image.save(tmp_path / "drawing.png", transparency=0)  # black is the transparent colour
    read = read_image(tmp_path / "drawing.png", [1, 28, 28])[0]
    assert read[0, 0] == 255 and read[14, 13] == 60  # the background as a viewer shows it, the stroke kept


def test_the_novelty_threshold_is_the_calibration_images_999th_permille():
    torch.manual_seed(0)
    images = torch.randn(3000, 1, 8, 8)
    profile = input_profile(images)
    fit = profile["fit_images"]
    assert fit == 1500 and profile["calibration_images"] == 1500
    held_out = novelty(images[fit:], profile)
    assert torch.quantile(held_out.double(), QUANTILE).item() == pytest.approx(1.0, rel=1e-6)
    assert 0 < (held_out > 1).sum().item() <= 2  # 0.1% of 1500 images are above 1
    assert (novelty(images[:fit] + 3.0, profile) > 1).all()  # shifted three standard deviations: all unusual


def test_a_pixel_constant_in_training_makes_a_large_novelty_not_an_infinite_one():
    torch.manual_seed(0)
    images = torch.randn(400, 1, 4, 4)
    images[:, 0, 0, 0] = -0.4  # the border of MNIST: the same in every training image
    profile = input_profile(images)
    odd = images[:5].clone()
    odd[:, 0, 0, 0] = 2.0  # ink where training never had any
    scores = novelty(odd, profile)
    assert torch.isfinite(scores).all() and (scores > 1).all()
    assert profile["std"].min().item() == pytest.approx(0.2)  # the floor a pixel's spread is given
