"""The figures as a teacher projects them: readable sizes, errors that show, honest axes."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mlp.cli import app
from mlp.model import ACTIVATIONS, make_activation
from mlp.observe.figures import (DPI, OVERVIEW_Y, activation_curve, activations_overview_figure, break_jumps,
                       confusion_matrix_figure, per_class_accuracy_figure, to_rgb_array)

CLASSES = [f"{i} - {w}" for i, w in enumerate("zero one two three four five six seven eight nine".split())]


def _confusion():
    """About a thousand images a class, mostly right; 17 fours taken for nines, one 3 for a 5."""
    matrix = np.diag([980, 1135, 1032, 1010, 965, 892, 958, 1028, 974, 1009])
    matrix[4, 9], matrix[3, 5] = 17, 1
    return matrix.tolist()


def _texts(fig):
    return [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
            if t.get_text().strip() and t.get_visible()]


def _cell_rgb(fig, i, j):
    """The colour drawn in cell (row i, column j) of the figure's first axes, beside its number."""
    pixels = to_rgb_array(fig)
    x, y = fig.axes[0].transData.transform((j - 0.35, i - 0.35))
    return pixels[pixels.shape[0] - int(round(y)), int(round(x))].astype(int)


def test_confusion_matrix_colours_rare_errors_and_writes_readable_counts():
    fig = confusion_matrix_figure(_confusion(), CLASSES)
    white = np.array([255, 255, 255])
    # one image in a thousand and 17 in a thousand are both coloured, and differently; an empty cell is white
    one, seventeen, empty = _cell_rgb(fig, 3, 5), _cell_rgb(fig, 4, 9), _cell_rgb(fig, 0, 1)
    assert np.abs(one - white).sum() > 60 and np.abs(seventeen - white).sum() > 60
    assert np.abs(one - seventeen).sum() > 60 and (empty == white).all()
    # the biggest confusion stands out: far darker than a single error; the diagonal is a light grey, uncoloured
    assert _luminance(one) - _luminance(seventeen) > 100
    diagonal = _cell_rgb(fig, 4, 4)
    assert diagonal.max() - diagonal.min() < 8 and _luminance(diagonal) > 200
    counts = {t.get_text() for t in fig.axes[0].texts}
    assert {"17", "1", "980"} <= counts and "0" not in counts
    assert all(t.get_fontsize() >= 10 for t in _texts(fig))
    assert "true 4 predicted as 9 (17 images, 1.7% of 4); 18 errors in all" in fig.axes[0].get_title()
    assert fig.dpi >= 150


def test_per_class_accuracy_spans_the_values_so_that_differences_show():
    per_class = [0.99, 0.995, 0.979, 0.97, 0.9685, 0.985, 0.975, 0.9679, 0.972, 0.992]
    fig = per_class_accuracy_figure(per_class, CLASSES)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert 95 <= low < 96.79 and high >= 100 and ax.get_ylabel() == f"accuracy (axis from {low:g}%)"
    # 97.9% and 99.2% are a sixth of the axis apart or more, not 1.3% of it
    (_, y_979), (_, y_992) = ax.transData.transform([(2, 97.9), (9, 99.2)])
    assert (y_992 - y_979) / ax.bbox.height > 1 / 6
    labels = [t.get_text() for t in _texts(fig)]
    assert "96.79" in labels and "96.85" in labels and "99.50" in labels
    assert "lowest: 7 at 96.79% (orange-red)" in ax.get_title()
    assert all(t.get_fontsize() >= 10 for t in _texts(fig))
    # a spread over most of the axis keeps the whole axis
    wide = per_class_accuracy_figure([0.3, 0.9] + [0.8] * 8, CLASSES).axes[0]
    assert wide.get_ylim()[0] == 0 and wide.get_ylabel() == "accuracy"


def _luminance(rgb) -> float:
    return float(np.dot(rgb, [0.299, 0.587, 0.114]))


def test_derivative_lines_break_at_kinks_and_nowhere_else():
    x = torch.linspace(-7, 7, 1001)
    for name, kinks in [("relu", 1), ("relu6", 2), ("hardswish", 2), ("leaky_relu", 1), ("selu", 1),
                        ("sigmoid", 0), ("tanh", 0), ("gelu", 0), ("softsign", 0), ("mish", 0), ("identity", 0)]:
        _, slope = activation_curve(make_activation(name, 1), x)
        bx, by = break_jumps(x.numpy(), slope)
        assert np.isnan(by).sum() == kinks == np.isnan(bx).sum(), name
        steps = np.abs(np.diff(by))
        assert np.nanmax(steps) < 0.05, name  # what is drawn as a line has no jump left


def test_overview_puts_every_activation_on_the_same_axes():
    x = torch.linspace(-7, 7, 1001)
    curves = {n: (x.numpy(), *activation_curve(make_activation(n, 1), x)) for n in ACTIVATIONS}
    fig = activations_overview_figure(curves)
    drawn = [ax for ax in fig.axes if ax.lines]
    assert len(drawn) == len(ACTIVATIONS)
    assert {ax.get_ylim() for ax in drawn} == {OVERVIEW_Y} and len({ax.get_xlim() for ax in drawn}) == 1
    relu = next(ax for ax in drawn if ax.get_title() == "relu")
    assert np.isnan(relu.lines[-1].get_ydata()).sum() == 1  # f' of ReLU: no vertical stroke at 0
    assert all(t.get_fontsize() >= 10 for t in _texts(fig))


def test_activations_with_a_dataset_writes_labelled_before_and_after_pngs(tmp_path):
    done = CliRunner().invoke(app, ["activations", "-a", "relu", "-a", "sigmoid", "--dataset", "mnist",
                                    "--out", "figs", "--log-dir", "tb"])
    assert done.exit_code == 0, done.stderr
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert names == ["before_after.png", "before_after_relu.png", "before_after_sigmoid.png", "overview.png",
                     "relu.png", "sigmoid.png"]
    for name in names:
        with Image.open(tmp_path / "figs" / name) as png:
            assert png.info["dpi"] == pytest.approx((DPI, DPI), abs=0.5)
    with Image.open(tmp_path / "figs" / "before_after_sigmoid.png") as png:
        grey = np.asarray(png.convert("L"))
    assert grey.shape[1] > 1000 and grey.std() > 20  # a real picture, not an empty canvas
    plain = CliRunner().invoke(app, ["activations", "-a", "relu", "--out", "plain", "--log-dir", "tb2"])
    assert plain.exit_code == 0 and sorted(p.name for p in (tmp_path / "plain").iterdir()) == \
        ["overview.png", "relu.png"]
