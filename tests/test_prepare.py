"""The placement of a digit for `mlp predict` (mlp.commands.prepare), on fabricated images."""

import numpy as np
import torch

from mlp.commands.prepare import centre_digit, centre_of_mass


def _ink_box(image: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(image.any(1))[0], np.nonzero(image.any(0))[0]
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_a_bar_off_centre_is_scaled_into_the_box_keeping_its_aspect_and_centred():
    page = np.zeros((300, 400), dtype=np.uint8)
    page[30:70, 250:330] = 255  # 40 tall, 80 wide, in the top right corner
    placed, placement = centre_digit(torch.from_numpy(page)[None], (28, 28), 20)
    out = placed[0].numpy()
    assert placed.shape == (1, 28, 28) and placed.dtype == torch.uint8
    assert placement.ink_box == (40, 80) and placement.scaled == (10, 20) and not placement.touches_edge
    assert _ink_box(out > 127) == (10, 20)
    row, col = centre_of_mass(out.astype(float))
    assert abs(row - 13.5) <= 0.5 and abs(col - 13.5) <= 0.5
    assert out.max() == 255


def test_the_centre_of_mass_is_centred_not_the_box():
    """An L whose mass sits in its long stroke: centring the box would put the mass off-centre."""
    page = np.zeros((100, 100), dtype=np.uint8)
    page[10:90, 10:20] = 200  # the upright: most of the ink
    page[80:90, 20:50] = 200  # the foot
    out = centre_digit(torch.from_numpy(page)[None], (28, 28), 20)[0][0].numpy().astype(float)
    row, col = centre_of_mass(out)
    assert abs(row - 13.5) <= 0.5 and abs(col - 13.5) <= 0.5
    cols = np.nonzero((out > 100).any(0))[0]
    assert (cols[0] + cols[-1]) / 2 > 14.5  # the box itself sits right of centre


def test_a_small_digit_is_enlarged_and_keeps_its_brightness():
    page = np.zeros((60, 60), dtype=np.uint8)
    page[40:45, 5:8] = 90  # 5 × 3 pixels of faint ink near a corner
    placed, placement = centre_digit(torch.from_numpy(page)[None], (28, 28), 20)
    assert placement.scaled == (20, 12) and _ink_box(placed[0].numpy() > 45) == (20, 12)
    assert int(placed.max()) == 90  # as bright as its brightest ink, not brighter


def test_ink_at_the_edge_is_noted_and_an_empty_image_is_only_resized():
    page = np.zeros((50, 50), dtype=np.uint8)
    page[0:30, 20:30] = 255
    assert centre_digit(torch.from_numpy(page)[None], (28, 28), 20)[1].touches_edge
    empty, placement = centre_digit(torch.zeros(1, 64, 64, dtype=torch.uint8), (28, 28), 20)
    assert placement is None and empty.shape == (1, 28, 28) and int(empty.max()) == 0
