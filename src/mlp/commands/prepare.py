"""Place a digit in its image as MNIST's digits were placed in theirs, for ``mlp predict``.

MNIST's digits were not photographed at 28×28: each was cropped to its ink, scaled so that the
longer side of the ink's box is 20 pixels (keeping the aspect ratio, anti-aliased), and
centred in a 28×28 field by its centre of mass.  A model trained on them has never seen a
digit that is small, large or off-centre, so a photo or a drawing is prepared the same way
before it is classified.  The image here is already grey, light ink on a black background
(mlp.commands.predict inverts and levels it first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# The data sets prepared this way: the box the ink's longer side is scaled to, in the field the
# model reads (MNIST: 20 pixels in 28×28, from the data set's description).
BOXES = {"mnist": 20}
INK = 0.25  # a pixel is ink when it is brighter than this fraction of the brightest pixel
LARGEST = 1024  # an image is first reduced to at most this many pixels a side (a 100-megapixel photo)


@dataclass(frozen=True)
class Placement:
    """Where the ink was and what was done with it, for the notes beside a prediction."""

    ink_box: tuple[int, int]  # the ink's height × width in the image as read (pixels)
    scaled: tuple[int, int]  # its height × width once scaled into the box
    touches_edge: bool  # the ink reaches the image's edge: the digit may be cut off


def centre_digit(pixels: torch.Tensor, field: tuple[int, int], box: int) -> tuple[torch.Tensor, Placement | None]:
    """A uint8 (1, H, W) image of light ink on black, of any size, made (1, *field): cropped to
    the ink, scaled so that its longer side is ``box`` pixels, and shifted so that its centre of
    mass is the field's centre.  An image without ink is resized instead, and Placement is None."""
    grey = pixels[0].numpy().astype(np.float32)
    top = float(grey.max(initial=0.0))
    rows, cols = np.nonzero((grey > INK * top).any(1))[0], np.nonzero((grey > INK * top).any(0))[0]
    if top <= 0 or not len(rows):
        resized = Image.fromarray(grey.astype(np.uint8)).resize(field[::-1], Image.BILINEAR)
        return torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy())[None], None
    crop = grey[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = box / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.clip(np.asarray(Image.fromarray(crop, mode="F").resize(size, Image.LANCZOS)), 0, 255)
    if small.max() > 0:  # thin strokes of a large drawing come out faint: the brightest ink stays as bright
        small = small * (top / small.max())
    placed = np.zeros(field, dtype=np.float32)
    _paste(placed, small, centre_of_mass(small))
    touches = rows[0] == 0 or cols[0] == 0 or rows[-1] == grey.shape[0] - 1 or cols[-1] == grey.shape[1] - 1
    placement = Placement((len(crop), len(crop[0])), (small.shape[0], small.shape[1]), bool(touches))
    return torch.from_numpy(np.clip(np.round(placed), 0, 255).astype(np.uint8))[None], placement


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the brightness-weighted mean position, in pixel indices."""
    total = float(image.sum())
    rows, cols = np.indices(image.shape)
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def _paste(field: np.ndarray, image: np.ndarray, mass: tuple[float, float]) -> None:
    """Add ``image`` into ``field`` shifted by whole pixels so that ``mass`` lands on the field's
    centre; what falls outside the field is dropped."""
    top = round((field.shape[0] - 1) / 2 - mass[0])
    left = round((field.shape[1] - 1) / 2 - mass[1])
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + image.shape[0], field.shape[0]), min(left + image.shape[1], field.shape[1])
    if y1 > y0 and x1 > x0:
        field[y0:y1, x0:x1] = image[y0 - top:y1 - top, x0 - left:x1 - left]


def notes(placement: Placement | None, field: tuple[int, int], box: int) -> list[str]:
    """What the preparation did, said beside the prediction."""
    if placement is None:
        return ["no ink found: the image was only resized"]
    (h, w), (sh, sw) = placement.ink_box, placement.scaled
    said = [f"prepared as MNIST's digits were: cropped to the ink ({h}×{w} px), scaled to {sh}×{sw} "
            f"in a {box}×{box} box, centred by mass in {field[0]}×{field[1]} (--as-is skips this)"]
    if placement.touches_edge:
        said.append("the ink reaches the image's edge: the digit may be cut off")
    return said
