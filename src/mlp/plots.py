"""Figures: confusion matrix, per-class accuracy, misclassified examples, activation curves.

Every function returns a matplotlib ``Figure`` built without pyplot (no global state, no
window, the Agg canvas), so the same figure can be saved as a PNG or turned into an image
for TensorBoard.  matplotlib is imported inside the functions: it is slow to import.  The
margins are fixed rather than computed by a layout engine, which costs seconds per figure.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from mlp.errors import UserError


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def to_rgb_array(fig) -> np.ndarray:
    """The figure rendered to an (H, W, 3) uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(image: np.ndarray, path: Path) -> Path:
    from matplotlib.image import imsave

    try:
        imsave(path, image, format="png")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}; choose a writable folder") from None
    return path


def writable_folder(path: Path, flag: str) -> Path:
    """Create ``path`` if needed and check that files can be written there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".mlp-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{flag} {path} is not a writable folder ({e.strerror or e}); choose another") from None
    return path


def short_names(classes: list[str]) -> list[str]:
    """MNIST's class names are '0 - zero', ...: the part before ' - ' is enough on an axis."""
    return [c.split(" - ")[0] for c in classes]


def confusion_matrix_figure(confusion: list[list[int]], classes: list[str], title: str = "confusion matrix"):
    matrix = np.asarray(confusion, dtype=np.int64)
    n = len(classes)
    size = min(max(4.0, 0.45 * n + 2.0), 30.0)
    fig = _figure(size * 1.15, size)  # wider than tall: the colour bar takes a strip
    names = short_names(classes)
    rotate = max(map(len, names)) > 2
    fig.subplots_adjust(left=0.22 if rotate else 0.12, bottom=0.22 if rotate else 0.1, right=0.98, top=0.93)
    ax = fig.subplots()
    # Colour by the fraction of each true class, so rare classes are as visible as common ones.
    row_share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    image = ax.imshow(row_share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    ax.set_xticks(range(n), names, rotation=90 if rotate else 0)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if row_share[i, j] > 0.5 else "black")
    return fig


def per_class_accuracy_figure(per_class: list[float], classes: list[str], title: str = "per-class accuracy"):
    n = len(classes)
    fig = _figure(min(max(6.0, 0.4 * n + 1.5), 40.0), 3.5)
    names = short_names(classes)
    rotate = max(map(len, names)) > 2
    fig.subplots_adjust(left=0.1, bottom=0.3 if rotate else 0.12, right=0.98, top=0.9)
    ax = fig.subplots()
    accuracy = np.asarray(per_class) * 100
    bars = ax.bar(range(n), accuracy, color="tab:blue")
    worst = int(np.argmin(accuracy))
    bars[worst].set_color("tab:red")
    ax.set_xticks(range(n), names, rotation=90 if rotate else 0)
    ax.set_ylim(max(0.0, float(accuracy.min()) - 5.0), 100.0)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{title} (lowest in red: {names[worst]}, {accuracy[worst]:.1f}%)")
    ax.grid(axis="y", alpha=0.3)
    return fig


def denormalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised (N, C, H, W) images back to [0, 1] pixel intensities."""
    shape = (1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(shape)
    return (images * std_t + mean_t).clamp_(0.0, 1.0)


def misclassified_figure(images: torch.Tensor, predicted: list[int], true: list[int], classes: list[str]):
    """[0, 1] images in one grid, each with its predicted and its true class written above it."""
    from torchvision.utils import make_grid

    cols = min(len(images), 8)
    rows = math.ceil(len(images) / cols)
    height, width = images.shape[-2:]
    band, pad = height // 2, 2  # a white band above each image holds its two lines of text
    grid = make_grid(torch.nn.functional.pad(images.cpu(), (0, 0, band, 0), value=1.0),
                     nrow=cols, padding=pad, pad_value=1.0)
    fig = _figure(1.25 * cols, 1.25 * cols * grid.shape[1] / grid.shape[2])
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.axis("off")
    names = short_names(classes)
    for k, (p, t) in enumerate(zip(predicted, true)):
        row, col = divmod(k, cols)
        ax.text(col * (width + pad) + pad + width / 2, row * (height + band + pad) + pad + band / 2,
                f"pred {names[p]}\ntrue {names[t]}", ha="center", va="center", fontsize=7, color="tab:red")
    return fig


def activation_curve(module: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """f(x) and f'(x) on the points ``x``, the derivative by autograd."""
    x = x.detach().clone().requires_grad_(True)
    y = module(x)
    (slope,) = torch.autograd.grad(y.sum(), x)
    return y.detach().numpy(), slope.numpy()


def _draw_activation(ax, name: str, x: np.ndarray, y: np.ndarray, slope: np.ndarray, legend: bool) -> None:
    ax.axhline(0, color="0.7", lw=0.8)
    ax.axvline(0, color="0.7", lw=0.8)
    ax.plot(x, y, lw=2, label="f(x)")
    ax.plot(x, slope, lw=1.5, ls="--", label="f'(x)")
    ax.set_title(name)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc="upper left", fontsize=8)


def activation_figure(name: str, x: np.ndarray, y: np.ndarray, slope: np.ndarray):
    fig = _figure(5.0, 3.6)
    fig.subplots_adjust(left=0.12, right=0.96, bottom=0.14, top=0.9)
    ax = fig.subplots()
    _draw_activation(ax, name, x, y, slope, legend=True)
    ax.set_xlabel("x")
    return fig


def activations_overview_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """One small panel per activation: f (solid) and f' (dashed) on the same x range."""
    cols = 4
    rows = math.ceil(len(curves) / cols)
    fig = _figure(3.2 * cols, 2.6 * rows)
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.04, top=0.92, wspace=0.25, hspace=0.4)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[len(curves):]:
        ax.axis("off")
    for i, (ax, (name, (x, y, slope))) in enumerate(zip(axes, curves.items())):
        _draw_activation(ax, name, x, y, slope, legend=i == 0)
    fig.suptitle("activations f(x) and their derivatives f'(x)")
    return fig


def write_evaluation_plots(result: dict, folder: Path) -> list[Path]:
    """``mlp eval --plots``: the confusion matrix and per-class accuracy of one split as PNGs."""
    title = f"{result['dataset']} {result['split']}"
    figures = {
        "confusion_matrix": confusion_matrix_figure(result["confusion"], result["classes"], f"{title}: confusion matrix"),
        "per_class_accuracy": per_class_accuracy_figure(result["per_class_accuracy"], result["classes"],
                                                        f"{title}: per-class accuracy"),
    }
    return [save_png(to_rgb_array(fig), Path(folder) / f"{result['split']}_{name}.png") for name, fig in figures.items()]
