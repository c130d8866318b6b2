"""Classify image files with a trained model, rebuilt from its checkpoint alone.

Each image is turned into what the model was trained on: grey ('L') or RGB to match the
checkpoint's input channels (an alpha channel is dropped), resized to its height × width
(stretched, not cropped), scaled to [0, 1] and normalised with the training mean and std
stored in the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from mlp.checkpoint import load_model
from mlp.data import normalise
from mlp.device import pick_device
from mlp.errors import first_line

# What Pillow raises for a missing, damaged or hostile file (SyntaxError: some broken PNGs).
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def read_image(path: Path, input_shape: list[int]) -> torch.Tensor:
    """uint8 (C, H, W) in the checkpoint's input shape; raises one of UNREADABLE if it cannot."""
    channels, height, width = input_shape
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)  # photos stored sideways come out upright
        image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def predict_files(checkpoint: Path, paths: list[Path], top_k: int, device: str = "cpu",
                  batch_size: int = 1024, config: Path | None = None, data_root: str | None = None
                  ) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Predictions for the readable images, and (path, reason) for each that could not be read.

    With ``config``, ``checkpoint`` is a bare state dict from another script (see mlp.state_dict).
    """
    ckpt, _, model = load_model(checkpoint, config, data_root)
    dev = pick_device(device, "--device")
    model.to(dev).eval()
    classes = ckpt["classes"]
    images, readable, unreadable = [], [], []
    for path in paths:
        try:
            images.append(read_image(path, ckpt["input_shape"]))
            readable.append(path)
        except UNREADABLE as e:
            unreadable.append((path, _reason(e)))
    if not images:
        return [], unreadable
    norm = ckpt["normalization"]
    x = normalise(torch.stack(images), norm["mean"], norm["std"], dev)
    with torch.inference_mode():
        probabilities = torch.cat([model(chunk).softmax(1) for chunk in x.split(batch_size)]).cpu()
    top = probabilities.topk(min(top_k, len(classes)), dim=1)
    predictions = []
    for path, values, indices in zip(readable, top.values.tolist(), top.indices.tolist()):
        ranked = [{"label": classes[i], "index": i, "probability": p} for p, i in zip(values, indices)]
        predictions.append({"image": str(path), **ranked[0], "top_k": ranked})
    return predictions, unreadable


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
    return "\n".join(lines)
