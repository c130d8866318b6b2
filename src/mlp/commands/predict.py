"""Classify image files with a trained model, rebuilt from its checkpoint alone.

Each image is turned into what the model was trained on:

1. read at its own bit depth: a 16-bit scan is scaled to 0..255, not clipped (Pillow's own
   conversion to 8 bits saturates everything above 255 to white); a CIELAB TIFF made sRGB;
2. laid over white where it is transparent (a drawing app's PNG: dark strokes on nothing),
   then made grey ('L') or RGB to match the checkpoint's input channels;
3. resized to the model's height × width (stretched, not cropped) -- except for MNIST, step 6;
4. inverted when its polarity is the opposite of the training images': MNIST digits are light
   on a dark background, while ink on paper is dark on light.  The training images' polarity
   is read from their mean brightness (stored in the checkpoint: MNIST's is 0.13, mostly black
   background); the image's from the median of its border, which is its background;
5. levelled: a background that is grey rather than black (photographed paper) is made black
   and the brightest ink white, as MNIST's digits are;
6. for a model trained on MNIST, the digit placed as MNIST's are (mlp.commands.prepare: cropped
   to its ink, scaled into 20×20, centred by mass in 28×28); steps 4 and 5 then work on the
   image at its own size (at most 1024 pixels a side) and this step makes it 28×28;
7. normalised with the training mean and standard deviation.

``--as-is`` (``prepare=False``) skips steps 4 to 6.  The model then answers, and an image unlike every training image is flagged (``novelty``
above 1, see mlp.observe.novelty): the model answers for any input, often with near-certainty, so
its answer on such an image is a guess.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from mlp.run.checkpoint import load_model
from mlp.data import normalise
from mlp.device import pick_device
from mlp.errors import first_line
from mlp.observe.novelty import novelty
from mlp.commands.prepare import BOXES, LARGEST, centre_digit, notes as placement_notes

# What Pillow raises for a missing, damaged or hostile file (SyntaxError: some broken PNGs).
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
# A training set whose mean brightness is below DARK (above LIGHT) has a dark (light) background;
# between the two (natural photos, CIFAR's 0.47) it has none and no image is inverted.
DARK, LIGHT = 0.35, 0.65
LEVEL_TOLERANCE = 8  # a background within this many grey levels of the training one is left alone


def read_image(path: Path, input_shape: list[int], full: bool = False) -> torch.Tensor:
    """uint8 (C, H, W) in the checkpoint's input shape, or with ``full`` grey at the image's own
    size (at most mlp.commands.prepare.LARGEST a side); raises one of UNREADABLE if it cannot."""
    channels, height, width = input_shape
    with warnings.catch_warnings():
        # Pillow warns of an image over 89 megapixels (a phone's photo can be); it refuses one twice as large
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)  # photos stored sideways come out upright
            image = _on_white(_eight_bit(_from_lab(image)))
            image = image.convert("L" if channels == 1 or full else "RGB")
            if full:
                image.thumbnail((LARGEST, LARGEST))
                height, width, channels = image.height, image.width, 1
            else:
                image = image.resize((width, height), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def _from_lab(image: Image.Image) -> Image.Image:
    """A CIELAB image (a TIFF can be one) made sRGB, which Pillow's convert cannot do itself."""
    if image.mode != "LAB":
        return image
    from PIL import ImageCms

    lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
    return ImageCms.applyTransform(image, ImageCms.buildTransform(lab, srgb, "LAB", "RGB"))


def _eight_bit(image: Image.Image) -> Image.Image:
    """Grey images of 16 or 32 bits (modes I;16*, I, F) scaled to 8 bits over their type's range."""
    if not (image.mode.startswith("I") or image.mode == "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("some of its pixels are not numbers (NaN or infinite)")
    if image.mode == "F":
        top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0 if values.max() <= 255 else 65535.0
    else:  # I;16*: 0..65535; mode I holds 16-bit PNGs in older Pillow, so the same unless it is 8-bit
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0.0) > 255 else 255.0
    return Image.fromarray(np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8), mode="L")


def _on_white(image: Image.Image) -> Image.Image:
    """Transparent parts become white, as an image viewer shows them."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA", "PA"):
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def training_background(mean: list[float]) -> str | None:
    """'dark' or 'light' when the training images have that background, else None."""
    brightness = float(np.mean(mean))
    return "dark" if brightness < DARK else "light" if brightness > LIGHT else None


def _border(pixels: torch.Tensor) -> torch.Tensor:
    """The outer ring of a (C, H, W) image, 2 pixels wide for 28×28: most of it is background."""
    ring = max(1, min(pixels.shape[-2:]) // 14)
    return torch.cat([pixels[..., :ring, :].flatten(), pixels[..., -ring:, :].flatten(),
                      pixels[..., :, :ring].flatten(), pixels[..., :, -ring:].flatten()]).float()


def match_polarity(pixels: torch.Tensor, background: str | None) -> tuple[torch.Tensor, bool]:
    """The uint8 image inverted when its background (its border's median) is on the other side of
    mid-grey from the training images' background; and whether it was."""
    if background is None:
        return pixels, False
    light = float(_border(pixels).median()) > 127.5
    if light == (background == "light"):
        return pixels, False
    return 255 - pixels, True


def level_background(pixels: torch.Tensor, background: str | None) -> tuple[torch.Tensor, int | None]:
    """Paper in a photo is grey, not white, so once inverted its background is dark grey where the
    training images' is black (MNIST's border is 0).  Stretch the levels so that the background
    (the border's median) becomes the training background and the ink full white.
    Returns the image and the background level it had, or None when it was already within
    LEVEL_TOLERANCE of the training background (and is left as it is)."""
    if background is None:
        return pixels, None
    dark = pixels if background == "dark" else 255 - pixels
    level = int(_border(dark).median())
    top = _ink_level(dark.float().flatten(), level)
    if level <= LEVEL_TOLERANCE or top - level < 32:  # already black, or nothing to stretch
        return pixels, None
    stretched = ((dark.float() - level) * (255.0 / (top - level))).round().clamp(0, 255).to(torch.uint8)
    return (stretched if background == "dark" else 255 - stretched), (level if background == "dark" else 255 - level)


def _ink_level(values: torch.Tensor, level: int) -> int:
    """The ink's brightness: near the top of the pixels brighter than halfway from the background to
    the brightest (a thin stroke on a large page is too few pixels for a quantile of the whole)."""
    ink = values[values > (level + values.max()) / 2]
    return int(torch.quantile(ink, 0.995)) if len(ink) else level


def predict_files(checkpoint: Path, paths: list[Path], top_k: int, device: str = "cpu",
                  batch_size: int = 1024, config: Path | None = None, data_root: str | None = None,
                  prepare: bool = True) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Predictions for the readable images, and (path, reason) for each that could not be read.

    With ``config``, ``checkpoint`` is a bare state dict from another script (see mlp.commands.state_dict).
    Without ``prepare``, each image is only resized to the model's input (``mlp predict --as-is``).
    """
    ckpt, cfg, model = load_model(checkpoint, config, data_root)
    dev = pick_device(device, "--device")
    model.to(dev).eval()
    classes, norm = ckpt["classes"], ckpt["normalization"]
    preparation = Preparation(ckpt, cfg.data.dataset, prepare)
    images, said, readable, unreadable = [], [], [], []
    for path in paths:
        try:
            pixels, steps = preparation.apply(path)
        except UNREADABLE as e:
            unreadable.append((path, _reason(e)))
            continue
        images.append(pixels)
        said.append(steps)
        readable.append(path)
    if not images:
        return [], unreadable
    x = normalise(torch.stack(images), norm["mean"], norm["std"], dev)
    with torch.inference_mode():
        probabilities = torch.cat([model(chunk).softmax(1) for chunk in x.split(batch_size)]).cpu()
    profile = ckpt.get("input_profile")
    scores = novelty(x, profile).tolist() if profile is not None else [None] * len(images)
    top = probabilities.topk(min(top_k, len(classes)), dim=1)
    predictions = []
    for path, values, indices, steps, score in zip(readable, top.values.tolist(), top.indices.tolist(), said, scores):
        ranked = [{"label": classes[i], "index": i, "probability": p} for p, i in zip(values, indices)]
        unusual = None if score is None else score > 1.0
        notes = steps.pop("notes") + _unusual_note(unusual, score)
        predictions.append({"image": str(path), **ranked[0], "top_k": ranked, **steps,
                            "novelty": score, "unusual": unusual, "notes": notes})
    return predictions, unreadable


class Preparation:
    """How an image is made like the training images: polarity, levels, and for MNIST the
    placement of its digit (mlp.commands.prepare); with ``prepare`` off, a resize alone."""

    def __init__(self, ckpt: dict[str, Any], dataset: str, prepare: bool):
        self.shape = ckpt["input_shape"]
        self.prepare = prepare
        self.background = training_background(ckpt["normalization"]["mean"]) if prepare else None
        grey_on_black = self.background == "dark" and self.shape[0] == 1
        self.box = BOXES.get(dataset) if grey_on_black else None

    def apply(self, path: Path) -> tuple[torch.Tensor, dict[str, Any]]:
        """The uint8 image the model reads, and what was done: inverted, background_level, centred, notes."""
        pixels, flipped = match_polarity(read_image(path, self.shape, full=self.box is not None), self.background)
        pixels, level = level_background(pixels, self.background)
        said = _notes(flipped, level, self.background)
        centred = False
        if self.box is not None:
            field = tuple(self.shape[1:])
            pixels, placement = centre_digit(pixels, field, self.box)
            said += placement_notes(placement, field, self.box)
            centred = placement is not None
        return pixels, {"inverted": flipped, "background_level": level, "centred": centred,
                        "prepared": self.prepare, "notes": said}


def _notes(inverted: bool, level: int | None, background: str | None) -> list[str]:
    notes = []
    if inverted:
        other = "light" if background == "dark" else "dark"
        notes.append(f"inverted: its background is {other} and the training images' is {background}")
    if level is not None:
        target = "black" if background == "dark" else "white"
        notes.append(f"levels stretched: its background (grey {level} of 255) made {target}, as in training")
    return notes


def _unusual_note(unusual: bool | None, score: float | None) -> list[str]:
    if not unusual:
        return []
    return [f"unlike the training images (novelty {score:.1f}; 99.9% of them are below 1): this answer is a guess"]


def _reason(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "it is a folder"
    return first_line(error)


def format_predictions(predictions: list[dict[str, Any]]) -> str:
    lines = []
    for prediction in predictions:
        lines.append(prediction["image"])
        name_width = max(len(r["label"]) for r in prediction["top_k"])
        lines += [f"  {r['label']:<{name_width}}  {r['probability']:7.2%}" for r in prediction["top_k"]]
        lines += [f"  note: {note}" for note in prediction.get("notes", [])]
    return "\n".join(lines)
