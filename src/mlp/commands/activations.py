"""``mlp activations``: every activation and its derivative, as PNGs and in TensorBoard.

With a data set, a batch of its images (normalised as for training) also goes through each
activation, and the images before and after are drawn one above the other, labelled, as
``before_after_<name>.png`` (and all activations in ``before_after.png``) and in TensorBoard.
Every row is drawn on the same intensity scale (the normalised input's range), so what the
activation does to the values shows: ReLU turns the below-average background to a flat grey,
sigmoid squeezes everything into a narrow band.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mlp.errors import UserError
from mlp.files import output_folder
from mlp.model import ACTIVATIONS, make_activation, parse_activation

CURVE_RANGE = (-7.0, 7.0)  # wide enough to show ReLU6 cap at 6 and sigmoid saturating
CURVE_POINTS = 1001
PIXEL_IMAGES = 8  # images per data set row


def draw_activations(out: Path, log_dir: Path, names: list[str] | None = None, dataset: str | None = None,
                     data_root: Path | None = None) -> list[Path]:
    """Write ``<out>/<name>.png`` per activation and ``<out>/overview.png`` (with a data set, also
    ``<out>/before_after_<name>.png`` and ``<out>/before_after.png``); log the same to ``log_dir``."""
    from mlp.observe.figures import activation_curve, activation_figure, activations_overview_figure, to_rgb_array
    from mlp.observe.tensorboard import log_activations

    try:
        chosen = [parse_activation(n)[0] for n in names] if names else list(ACTIVATIONS)
    except ValueError as e:
        raise UserError(f"--activation: {e}") from None
    chosen = list(dict.fromkeys(chosen))  # an alias and its name are the same activation
    images = _sample_images(dataset, data_root) if dataset else None
    output_folder(out, "--out")
    output_folder(log_dir, "--log-dir")

    x = torch.linspace(*CURVE_RANGE, CURVE_POINTS)
    curves, figures, after = {}, {}, {}
    for name in chosen:
        module = make_activation(name, width=1)
        y, slope = activation_curve(module, x)
        curves[name] = (x.numpy(), y, slope)
        figures[name] = to_rgb_array(activation_figure(name, x.numpy(), y, slope))
        if images is not None:
            with torch.no_grad():
                after[name] = module(images)
    figures["overview"] = to_rgb_array(activations_overview_figure(curves))
    pixels = {}
    if images is not None:
        figures.update(_before_after_figures(images, after, dataset))
        pixels = {name: _before_and_after(images, activated) for name, activated in after.items()}
    written = [_save(image, Path(out) / f"{name}.png") for name, image in figures.items()]
    log_activations(log_dir, {k: v for k, v in figures.items() if not k.startswith("before_after")}, pixels, dataset)
    return written


def _save(image, path: Path) -> Path:
    from mlp.observe.figures import save_png

    return save_png(image, path)


def _before_after_figures(images: torch.Tensor, after: dict[str, torch.Tensor], dataset: str) -> dict:
    """``before_after_<name>``: the input row above the activated row; ``before_after``: all of them."""
    from mlp.observe.figures import before_after_figure, to_rgb_array

    low, high = float(images.min()), float(images.max())
    scale = f"one grey scale for every row: {low:.2f} black, {high:.2f} white"
    source = f"{dataset} test images, normalised as for training"
    figures = {}
    for name, activated in after.items():
        rows = {"input": images, f"after {name}": activated}
        figures[f"before_after_{name}"] = to_rgb_array(before_after_figure(
            rows, low, high, f"{name} applied to each pixel of {source}\n({scale})"))
    if len(after) > 1:
        rows = {"input": images, **{name: activated for name, activated in after.items()}}
        figures["before_after"] = to_rgb_array(before_after_figure(
            rows, low, high, f"every activation applied to each pixel of {source}\n({scale})"))
    return figures


def _sample_images(dataset: str, data_root: Path | None) -> torch.Tensor:
    """The first test images of ``dataset`` (in ``data_root``, else $MLP_DATA_ROOT, else ./data),
    normalised with the split's own mean and std."""
    from mlp.config import DataConfig
    from mlp.data import DATASETS, channel_stats, ensure_files, normalise, read_split, resolve_root, to_unit
    from mlp.errors import UserError

    if dataset not in DATASETS:
        raise UserError(f"--dataset {dataset}: choose one of {', '.join(DATASETS)} (a folder of images is a "
                        "training data set, data.dataset: folder in a config)")
    cfg = DataConfig(dataset=dataset)
    root = Path(data_root) if data_root is not None else resolve_root(cfg.root)
    ensure_files(dataset, root, cfg.download, point="give --data-root DIR, the folder that holds {folder}/ (or set $MLP_DATA_ROOT to it)")
    images, _, _ = read_split(dataset, root, train=False)
    mean, std = channel_stats(to_unit(images, torch.device("cpu")))
    return normalise(images[:PIXEL_IMAGES], mean, std, torch.device("cpu"))


def _before_and_after(images: torch.Tensor, activated: torch.Tensor) -> torch.Tensor:
    """One grid for TensorBoard: the images (top row) and the activation applied to each pixel
    (bottom row), both mapped from the input's range to [0, 1]."""
    from mlp.observe.figures import image_grid

    low, high = images.min(), images.max()
    both = torch.cat([images, activated])
    return image_grid(((both - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0), len(images), pad_value=1.0)
