"""Figures: confusion matrix, per-class accuracy, misclassified examples, activation curves
(mlp compare's report figures are in ``comparison_figures``, built on these helpers).

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


DPI = 150  # every figure is rendered (and its PNG marked) at this resolution: sharp when projected
FONT = {"text": 11, "small": 10, "title": 12}  # points; nothing smaller than 10
# Okabe-Ito colours: told apart with every common colour-vision deficiency
BLUE, ORANGE, VERMILLION, GREY = "#0072B2", "#E69F00", "#D55E00", "#999999"
DIAGONAL_GREY = "#DDDDDD"  # the confusion matrix's correct cells: counted, not coloured


def _figure(width: float, height: float, layout: str | None = None):
    """A figure at DPI; ``layout="constrained"`` where a layout engine is worth its cost."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def _fonts(ax, title: str | None = None) -> None:
    """Tick labels, axis labels and the title at the sizes above."""
    ax.tick_params(labelsize=FONT["small"])
    ax.xaxis.label.set_fontsize(FONT["text"])
    ax.yaxis.label.set_fontsize(FONT["text"])
    if title is not None:
        ax.set_title(title, fontsize=FONT["title"])


def to_rgb_array(fig) -> np.ndarray:
    """The figure rendered to an (H, W, 3) uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(image: np.ndarray, path: Path) -> Path:
    from matplotlib.image import imsave

    try:
        imsave(path, image, format="png", dpi=DPI)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}; choose a writable folder") from None
    return path


def short_names(classes: list[str]) -> list[str]:
    """MNIST's class names are '0 - zero', ...: the part before ' - ' is enough on an axis."""
    return [c.split(" - ")[0] for c in classes]


def confusion_matrix_figure(confusion: list[list[int]], classes: list[str], title: str = "confusion matrix"):
    """Counts in the cells; the errors coloured by their share of the true class, the correct
    ones (the diagonal) light grey.

    The colour scale spans the errors alone, from 0 to the largest, on a square-root scale: the
    biggest confusion is the darkest cell, and one wrong image in a thousand is still coloured,
    paler.  (With the diagonal on the scale, at 99%, every error would be the same pale tint.)
    Empty cells (no image) stay white and carry no number.
    """
    from matplotlib.colors import ListedColormap, PowerNorm

    matrix = np.asarray(confusion, dtype=np.int64)
    n = len(classes)
    size = min(max(5.0, 0.55 * n + 2.5), 30.0)
    fig = _figure(size * 1.2, size)  # wider than tall: the colour bar takes a strip
    names = short_names(classes)
    rotate = max(map(len, names)) > 2
    fig.subplots_adjust(left=0.2 if rotate else 0.1, bottom=0.2 if rotate else 0.1, right=0.97, top=0.88)
    ax = fig.subplots()
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    errors = np.where(np.eye(n, dtype=bool), 0.0, share)
    norm = PowerNorm(0.5, vmin=0.0, vmax=max(float(errors.max()), 1e-3))
    clear = (0.0, 0.0, 0.0, 0.0)  # masked cells let the axes' white show
    ax.imshow(np.ma.masked_where(~np.eye(n, dtype=bool) | (matrix == 0), np.ones((n, n))),
              cmap=ListedColormap([DIAGONAL_GREY]).with_extremes(bad=clear))
    image = ax.imshow(np.ma.masked_equal(errors, 0.0), cmap=_cmap("viridis_r").with_extremes(bad=clear), norm=norm)
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("errors: share of the true class (square-root scale)", fontsize=FONT["text"])
    bar.ax.tick_params(labelsize=FONT["small"])
    bar.ax.yaxis.set_major_formatter(_percent_formatter())
    ax.set_xticks(range(n), names, rotation=90 if rotate else 0)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (grey: classified correctly)")
    _fonts(ax, f"{title}\n{_worst_confusion(matrix, share, names)}")
    if n <= 20:
        for i, j in zip(*np.nonzero(matrix)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=FONT["small"],
                    color="white" if i != j and norm(errors[i, j]) > 0.55 else "black")
    return fig


def _cmap(name: str):
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad="white")  # masked (empty) cells are white


def _percent_formatter(scale: float = 100):
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v * scale:.3g}%")


def _worst_confusion(matrix: np.ndarray, share: np.ndarray, names: list[str]) -> str:
    """The finding in words: the most frequent error, from the counts shown."""
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    if errors.sum() == 0:
        return "no errors"
    i, j = np.unravel_index(errors.argmax(), errors.shape)
    return (f"most frequent error: true {names[i]} predicted as {names[j]} "
            f"({errors[i, j]} images, {share[i, j]:.1%} of {names[i]}); {errors.sum()} errors in all")


def per_class_accuracy_figure(per_class: list[float], classes: list[str], title: str = "per-class accuracy"):
    """A dot per class, labelled with its value, on an axis that spans the values (97.9% and 99.2%
    look alike on 0-100%), so dots rather than bars, whose length would mislead on such an axis;
    the mean over classes dashed, the lowest class in vermilion (orange-red)."""
    n = len(classes)
    fig = _figure(min(max(6.5, 0.45 * n + 1.5), 40.0), 4.2)
    names = short_names(classes)
    rotate = max(map(len, names)) > 2
    fig.subplots_adjust(left=0.13, bottom=0.3 if rotate else 0.14, right=0.98, top=0.86)
    ax = fig.subplots()
    accuracy = np.asarray(per_class) * 100
    worst = int(np.argmin(accuracy))
    colours = [VERMILLION if k == worst else BLUE for k in range(n)]
    ax.vlines(range(n), accuracy_floor(accuracy), accuracy, colors=colours, lw=1.5, alpha=0.35)
    ax.scatter(range(n), accuracy, s=60, c=colours, zorder=3)
    digits = 2 if n <= 12 else 1  # two decimals tell 96.84 from 96.79 where there is room
    if n <= 30:  # beyond that the labels would overlap
        for k, a in enumerate(accuracy):
            ax.annotate(f"{a:.{digits}f}", (k, a), textcoords="offset points", xytext=(0, 7), ha="center",
                        fontsize=FONT["small"], rotation=90 if n > 15 else 0)
    mean = float(accuracy.mean())
    ax.axhline(mean, color=GREY, ls="--", lw=1.2, label=f"mean over classes {mean:.{digits}f}%")
    ax.legend(loc="best", fontsize=FONT["small"], framealpha=0.9)
    ax.set_xticks(range(n), names, rotation=90 if rotate else 0)
    low, high = accuracy_floor(accuracy), 100.0
    ax.set_ylim(low, high + (high - low) * (0.12 if n <= 15 else 0.25))  # room for the labels above
    ax.yaxis.set_major_formatter(_percent_formatter(scale=1))
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy" + ("" if low == 0 else f" (axis from {low:g}%)"))
    ax.grid(axis="y", alpha=0.3)
    _fonts(ax, f"{title}\nlowest: {names[worst]} at {accuracy[worst]:.{digits}f}% (orange-red); highest: "
               f"{names[int(np.argmax(accuracy))]} at {accuracy.max():.{digits}f}%")
    return fig


def accuracy_floor(accuracy: np.ndarray) -> float:
    """The bottom of a per-class axis (in %): below the lowest value by a fifth of the spread up
    to 100%, rounded down to a round number, and 0 when the spread is most of the axis anyway."""
    spread = 100.0 - float(accuracy.min())
    if spread >= 50:
        return 0.0
    step = 10 ** math.floor(math.log10(max(spread, 0.05))) / 2  # 0.5 for a spread of 1-10 points
    return max(0.0, math.floor((float(accuracy.min()) - max(spread / 5, step)) / step) * step)


def denormalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised (N, C, H, W) images back to [0, 1] pixel intensities."""
    shape = (1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(shape)
    return (images * std_t + mean_t).clamp_(0.0, 1.0)


def image_grid(images: torch.Tensor, per_row: int, padding: int = 2, pad_value: float = 0.0) -> torch.Tensor:
    """(N, C, H, W) images in [0, 1] tiled into one (3, H', W') image, ``per_row`` to a row with
    ``padding`` pixels between and around them (plain torch: importing torchvision costs seconds)."""
    n, c, h, w = images.shape
    images = images.expand(n, 3, h, w) if c == 1 else images
    cols = min(per_row, n)
    rows = -(-n // cols)
    grid = torch.full((3, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value,
                      dtype=images.dtype)
    for k in range(n):
        top, left = (k // cols) * (h + padding) + padding, (k % cols) * (w + padding) + padding
        grid[:, top:top + h, left:left + w] = images[k]
    return grid


def misclassified_figure(images: torch.Tensor, predicted: list[int], true: list[int], classes: list[str]):
    """[0, 1] images in one grid, each with its predicted and its true class written above it."""
    cols = min(len(images), 8)
    height, width = images.shape[-2:]
    band, pad = height // 2, 2  # a white band above each image holds its two lines of text
    grid = image_grid(torch.nn.functional.pad(images.cpu(), (0, 0, band, 0), value=1.0), cols, pad, 1.0)
    fig = _figure(1.5 * cols, 1.5 * cols * grid.shape[1] / grid.shape[2])
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.axis("off")
    names = short_names(classes)
    for k, (p, t) in enumerate(zip(predicted, true)):
        row, col = divmod(k, cols)
        ax.text(col * (width + pad) + pad + width / 2, row * (height + band + pad) + pad + band / 2,
                f"pred {names[p]}\ntrue {names[t]}", ha="center", va="center", fontsize=FONT["small"],
                color=VERMILLION)
    return fig


def activation_curve(module: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """f(x) and f'(x) on the points ``x``, the derivative by autograd."""
    x = x.detach().clone().requires_grad_(True)
    y = module(x)
    (slope,) = torch.autograd.grad(y.sum(), x)
    return y.detach().numpy(), slope.numpy()


JUMP = 0.05  # a step in f' between neighbouring points larger than this is a kink of f, not a slope


def break_jumps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` with a NaN between neighbours where ``y`` jumps, so a line stops there
    instead of drawing a vertical stroke (ReLU's f' steps from 0 to 1 at its kink).

    On the drawn grid (1001 points over 14 units) the smooth derivatives change by at most
    0.012 from one point to the next (GELU's, at 0), far below JUMP."""
    jumps = np.nonzero(np.abs(np.diff(y)) > JUMP)[0] + 1
    return np.insert(x.astype(float), jumps, np.nan), np.insert(y.astype(float), jumps, np.nan)


def _draw_activation(ax, name: str, x: np.ndarray, y: np.ndarray, slope: np.ndarray, legend: bool) -> None:
    ax.axhline(0, color=GREY, lw=0.8)
    ax.axvline(0, color=GREY, lw=0.8)
    ax.plot(x, y, lw=2.2, color=BLUE, label="f(x)")
    ax.plot(*break_jumps(x, slope), lw=1.8, ls="--", color=ORANGE, label="f'(x)")
    ax.grid(alpha=0.3)
    _fonts(ax, name)
    if legend:
        ax.legend(loc="upper left", fontsize=FONT["small"], framealpha=0.9)


def activation_figure(name: str, x: np.ndarray, y: np.ndarray, slope: np.ndarray):
    fig = _figure(5.5, 4.0)
    fig.subplots_adjust(left=0.13, right=0.96, bottom=0.14, top=0.9)
    ax = fig.subplots()
    _draw_activation(ax, name, x, y, slope, legend=True)
    ax.set_xlabel("x (the unit's input)")
    ax.set_ylabel("f(x), f'(x)")
    _fonts(ax)
    return fig


OVERVIEW_Y = (-2.2, 7.2)  # the same y range in every panel: identity leaves it below, every other stays in


def activations_overview_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """One panel per activation, f (solid) and f' (dashed), every panel on the same x and y axes,
    so a derivative that stays far below 1 (sigmoid's peaks at 0.25) shows as the small thing it is."""
    cols = min(4, max(len(curves), 1))
    rows = math.ceil(len(curves) / cols)
    width, height = 3.6 * cols + 0.6, 2.9 * rows + {1: 1.6, 2: 1.2}.get(cols, 0.9)
    fig = _figure(width, height)
    fig.subplots_adjust(left=0.55 / width, right=1 - 0.1 / width, bottom=0.45 / height,
                        top=1 - (0.75 if cols > 2 else 1.15) / height,
                        wspace=0.12, hspace=0.35)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)).ravel()
    for ax in axes[len(curves):]:
        ax.axis("off")
    for i, (ax, (name, (x, y, slope))) in enumerate(zip(axes, curves.items())):
        _draw_activation(ax, name, x, y, slope, legend=i == 0)
        ax.tick_params(labelbottom=True)
    axes[0].set_ylim(*OVERVIEW_Y)
    parts = ("activations f(x) (solid) and their derivatives f'(x) (dashed), all on the same axes",
             "f' is how much gradient a unit passes back")
    if cols > 2:
        title = "; ".join(parts)
    else:  # a narrow figure: the title in lines that fit it
        import textwrap

        title = "\n".join(textwrap.wrap("; ".join(parts), 48 if cols == 1 else 90))
    fig.suptitle(title, fontsize=FONT["title"] if cols > 1 else FONT["small"])
    return fig


def before_after_figure(rows: dict[str, torch.Tensor], low: float, high: float, title: str):
    """Rows of images (C, H, W), each row labelled on its left with its name and value range;
    every row on one intensity scale, ``low`` black and ``high`` white (a grey colour bar shows it
    for one-channel images).  The rows are one mosaic in one axes: an axes per image costs seconds."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows.values())
    channels, height, width = next(iter(rows.values())).shape[1:]
    pad = max(2, height // 10)
    mosaic = np.full((n_rows * (height + pad) - pad, n_cols * (width + pad) - pad, channels), np.nan)
    for r, images in enumerate(rows.values()):
        for c, pixels in enumerate(images.float().cpu().numpy()):
            top, left = r * (height + pad), c * (width + pad)
            mosaic[top:top + height, left:left + width] = pixels.transpose(1, 2, 0)
    cell = 1.0  # inches per image
    fig_w, fig_h = n_cols * cell + 2.6, n_rows * cell * (height + pad) / (width + pad) + 1.0
    fig = _figure(fig_w, fig_h)
    ax = fig.add_axes((2.0 / fig_w, 0.15 / fig_h, n_cols * cell / fig_w, 1 - 1.0 / fig_h))
    if channels == 1:
        image = ax.imshow(mosaic[..., 0], cmap=_cmap("gray"), vmin=low, vmax=high, interpolation="nearest")
        bar_h = min(1.6, fig_h - 1.3) / fig_h
        cax = fig.add_axes(((2.1 + n_cols * cell) / fig_w, 1 - 0.85 / fig_h - bar_h, 0.12 / fig_w, bar_h))
        bar = fig.colorbar(image, cax=cax)
        bar.ax.tick_params(labelsize=FONT["small"])
    else:
        scaled = np.clip((mosaic - low) / max(high - low, 1e-6), 0.0, 1.0)
        ax.imshow(np.where(np.isnan(mosaic), 1.0, scaled), interpolation="nearest")
    ax.axis("off")
    for r, (label, images) in enumerate(rows.items()):
        ax.text(-pad * 2, r * (height + pad) + height / 2,
                f"{label}\n{_value(float(images.min()))} to {_value(float(images.max()))}",
                ha="right", va="center", fontsize=FONT["text"])
    fig.suptitle(title, fontsize=FONT["title"], y=1 - 0.12 / fig_h, va="top")
    return fig


def _value(v: float) -> str:
    """Two decimals, three for a small value that would round to a misleading -0.00."""
    return f"{v:.3f}" if 0 < abs(v) < 0.005 else f"{v:.2f}"


def write_evaluation_plots(result: dict, folder: Path) -> list[Path]:
    """``mlp eval --plots``: the confusion matrix and per-class accuracy of one split as PNGs."""
    title = f"{result['dataset']} {result['split']}"
    figures = {
        "confusion_matrix": confusion_matrix_figure(result["confusion"], result["classes"], f"{title}: confusion matrix"),
        "per_class_accuracy": per_class_accuracy_figure(result["per_class_accuracy"], result["classes"],
                                                        f"{title}: per-class accuracy"),
    }
    return [save_png(to_rgb_array(fig), Path(folder) / f"{result['split']}_{name}.png") for name, fig in figures.items()]


def epochs_figure(epochs: list[dict]):
    """Accuracy (left) and loss (right) after each epoch, training and validation, every point marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=100, layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2, sharex=True)
    x = [r["epoch"] for r in epochs]
    for split, colour in (("train", "#0072B2"), ("val", "#D55E00")):
        for ax, metric, scale in ((ax_acc, "accuracy", 100), (ax_loss, "loss", 1)):
            points = [(e, r[f"{split}_{metric}"] * scale) for e, r in zip(x, epochs)
                      if r.get(f"{split}_{metric}") is not None]
            if points:
                ax.plot(*zip(*points), marker="o", color=colour, lw=2, label=split)
                ax.annotate(f"{points[-1][1]:.2f}%" if metric == "accuracy" else f"{points[-1][1]:.4f}",
                            points[-1], textcoords="offset points", xytext=(4, 4), color=colour, fontsize=10)
    ax_acc.set(title="accuracy after each epoch", xlabel="epoch", ylabel="accuracy (%)")
    ax_loss.set(title="loss after each epoch", xlabel="epoch", ylabel="cross-entropy")
    for ax in (ax_acc, ax_loss):
        ax.margins(x=0.2, y=0.12)  # room for the last values' labels
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig
