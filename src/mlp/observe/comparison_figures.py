"""The figures of ``mlp compare``'s report, drawn from summary.json's content (and each
condition's first run's histograms), one colour and marker per condition throughout: the
colour-blind safe Okabe-Ito set, by activation when only the activation varies.

Built on ``mlp.observe.figures`` (one figure helper, one DPI, one drawing of an activation).
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from mlp.observe.figures import DPI, _figure, activation_curve, activations_overview_figure

PALETTE = {"relu": "#0072B2", "leaky_relu": "#56B4E9", "elu": "#009E73", "selu": "#882255", "gelu": "#CC79A7",
           "silu": "#E69F00", "tanh": "#D55E00", "sigmoid": "#000000"}
ORDER = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#882255",
         "#332288", "#44AA99", "#999933", "#AA4499", "#117733", "#661100", "#6699CC", "#888888"]
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p"]
MOMENT_TITLES = {"init": "step 0 (before any update)", "first": "first step", "epoch 1": "end of epoch 1",
                 "last": "end of training"}
RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
      "xtick.labelsize": 10, "ytick.labelsize": 10}


def style(summary: dict[str, Any]) -> dict[str, dict[str, str]]:
    labels = list(summary["runs"])
    by_activation = summary.get("varied") == ["model.activation"] or not summary.get("varied")
    spare = iter(ORDER * 4)
    colours = {a: (PALETTE.get(a) if by_activation else None) or next(spare) for a in labels}
    return {"colours": colours, "markers": {a: MARKERS[i % len(MARKERS)] for i, a in enumerate(labels)}}


def png(fig) -> str:
    """The figure as base64 PNG data, for an <img> in the page."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def draw_all(summary: dict[str, Any], records: dict[str, dict]) -> dict[str, str]:
    """Every figure of the report as base64 PNG, by name."""
    import matplotlib

    s = style(summary)
    with matplotlib.rc_context(RC):
        return {"curves": png(curves_figure(summary, s)),
                "signal": png(signal_figure(summary, s)),
                "updates": png(profile_figure(summary, s, "update_ratio", "update-to-weight ratio ‖ΔW‖/‖W‖ (log)", True)),
                "inactive": png(profile_figure(summary, s, "inactive", "dead or saturated units (%)", False)),
                "distributions": png(distributions_figure(summary, records, s)),
                "activations": png(activations_figure(summary))}


def _legend(fig, summary, s) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=s["colours"][a], marker=s["markers"][a], lw=2, label=a) for a in summary["runs"]]
    title = ", ".join(k.rsplit(".", 1)[-1] for k in summary.get("varied") or []) or None
    fig.legend(handles=handles, loc="outside right upper", frameon=False, title=title)


def curves_figure(summary: dict[str, Any], s: dict):
    """Validation accuracy and training loss against the step, every seed a line; chance dotted."""
    fig = _figure(12, 4.2, layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2, sharex=True)
    for a, run in summary["runs"].items():
        c, m = s["colours"][a], s["markers"][a]
        for epochs in run["epochs"]:
            shown = [e for e in epochs if e.get("val_accuracy") is not None]
            if shown:
                ax_acc.plot([e["step"] for e in shown], [100 * e["val_accuracy"] for e in shown], color=c, marker=m, lw=1.8)
        for curve in run["loss_curves"]:
            if curve:
                steps, losses = zip(*curve)
                ax_loss.plot(steps, losses, color=c, lw=1.4)
    n = summary.get("classes")
    if n:
        ax_acc.axhline(100 / n, color="0.4", ls=":", lw=1.5, label=f"chance, 1/{n}")
        ax_loss.axhline(math.log(n), color="0.4", ls=":", lw=1.5, label=f"chance, ln {n} = {math.log(n):.2f}")
        ax_acc.legend(loc="lower right", frameon=False)
        ax_loss.legend(loc="upper right", frameon=False)
    ax_acc.set(title="validation accuracy after each epoch", xlabel="optimizer step", ylabel="accuracy (%)")
    ax_loss.set(title="training loss (mean over each logging interval)", xlabel="optimizer step",
                ylabel="cross-entropy (log scale)", yscale="log")
    _plain_log_ticks(ax_loss)
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    _legend(fig, summary, s)
    return fig


def _plain_log_ticks(ax) -> None:
    """Tick labels 0.1, 0.2, 0.5, 1, 2 on a log axis instead of powers of ten."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter(""))


def _deepest(summary: dict[str, Any]) -> int:
    """The most hidden layers any run has (the config's depth, unless model.depth varies)."""
    lengths = [len(v) for r in summary["runs"].values() for v in (r.get("signal") or {}).values() if v]
    return max(lengths + [summary["depth"] or 1])


def _moments(summary, key) -> list[str]:
    return [m for m in MOMENT_TITLES if any(m in r[key] for r in summary["runs"].values())]


def signal_figure(summary: dict[str, Any], s: dict):
    """Top row: the signal per hidden layer at each moment; bottom row: the weight-gradient RMS."""
    names = _moments(summary, "signal")
    fig = _figure(3.2 * max(len(names), 1) + 2.5, 7.0, layout="constrained")
    axes = fig.subplots(2, max(len(names), 1), sharey="row", squeeze=False)
    depth = _deepest(summary)
    for col, name in enumerate(names):
        for row, key in enumerate(("signal", "weight_grad_rms")):
            ax = axes[row][col]
            for a, run in summary["runs"].items():
                values = run[key].get(name)
                if values and min(values) > 0:  # each run its own depth (model.depth may vary)
                    ax.plot(range(1, len(values) + 1), values, color=s["colours"][a], marker=s["markers"][a], lw=2)
            ax.set(xticks=range(1, depth + 1), yscale="log")
            ax.grid(alpha=0.3)
        axes[0][col].set_title(MOMENT_TITLES[name])
        axes[1][col].set_xlabel("hidden layer (1 = next to the input)")
    axes[0][0].set_ylabel("signal: RMS of ∂ℓ/∂z\nper example and unit (log)")
    axes[1][0].set_ylabel("weight gradient RMS\nper weight (log)")
    _legend(fig, summary, s)
    return fig


def profile_figure(summary: dict[str, Any], s: dict, key: str, ylabel: str, log: bool):
    names = [n for n in _moments(summary, key) if not (key == "update_ratio" and n == "init")]
    fig = _figure(3.2 * max(len(names), 1) + 2.5, 4.0, layout="constrained")
    axes = fig.subplots(1, max(len(names), 1), sharey=True, squeeze=False)[0]
    depth = _deepest(summary)
    for ax, name in zip(axes, names):
        for a, run in summary["runs"].items():
            values = run[key].get(name)
            if values and (not log or min(values) > 0):
                shown = values if log else [100 * v for v in values]
                ax.plot(range(1, len(shown) + 1), shown, color=s["colours"][a], marker=s["markers"][a], lw=2)
        ax.set(title=MOMENT_TITLES[name], xticks=range(1, depth + 1))
        ax.grid(alpha=0.3)
    fig.supxlabel("hidden layer (1 = next to the input)")  # once: a label per narrow panel overlaps
    if log:
        axes[0].set(yscale="log", ylabel=ylabel)
    else:
        top = max([v for r in summary["runs"].values() for vs in r[key].values() for v in vs] + [0.05])
        axes[0].set(ylabel=ylabel, ylim=(-1, 100 * top * 1.1 + 1))
    _legend(fig, summary, s)
    return fig


def distributions_figure(summary: dict[str, Any], records: dict[str, dict], s: dict):
    """One row per condition (its first run), one column per hidden layer: the outputs' histogram at
    the end (filled) and at step 0 (grey line), each panel on its own range (written under it), so a
    layer collapsed into a narrow band is as visible as a wide one."""
    labels = [a for a in summary["runs"] if (records.get(a) or {}).get("distributions")
              and records[a]["distributions"][0]["layers"]]
    depth = max([len(records[a]["distributions"][0]["layers"]) for a in labels] + [1])
    fig = _figure(max(2.1 * depth + 1.5, 6), 1.6 * max(len(labels), 1) + 1.2, layout="constrained")
    axes = fig.subplots(max(len(labels), 1), max(depth, 1), squeeze=False)
    for row, a in zip(axes, labels):
        first, last = records[a]["distributions"][0], records[a]["distributions"][-1]
        for i, ax in enumerate(row):
            if i >= len(first["layers"]):  # a shallower run (model.depth varied): no such layer
                ax.axis("off")
                continue
            low = min(first["layers"][i]["low"], last["layers"][i]["low"])
            high = max(first["layers"][i]["high"], last["layers"][i]["high"])
            for d, filled in ((first, False), (last, True)):
                _histogram(ax, d["layers"][i], s["colours"][a] if filled else "0.55", filled)
            ax.set_xlim(low, high if high > low else low + 1e-6)
            ax.set_yscale("log")
            ax.set_ylim(1e-4, 1.5)
            ax.set_xticks([low, high])
            ax.set_xticklabels([f"{low:.3g}", f"{high:.3g}"], fontsize=9)
            ax.tick_params(labelsize=9)
            if i == 0:
                ax.set_ylabel(a, color=s["colours"][a], fontweight="bold")
            else:
                ax.set_yticklabels([])
            note = _collapsed_note(summary["runs"][a].get("spread") or {}, i)
            if note:
                ax.text(0.5, 0.95, note, transform=ax.transAxes, ha="center", va="top", fontsize=9,
                        color="#D55E00", fontweight="bold")
    for i, ax in enumerate(axes[0]):
        ax.set_title(f"layer {i + 1}")
    fig.supxlabel("output value of the hidden layer (each panel its own range, its ends written below it)")
    fig.supylabel("share of the outputs (log scale)")
    fig.suptitle("distribution of each layer's outputs: at the end (filled), at step 0 (grey line)")
    return fig


def _collapsed_note(spread: dict[str, list[float]], layer: int) -> str:
    """"collapsed at step 0" / "at the end" / "at both" where the layer's spread is below COLLAPSED."""
    from mlp.observe.units import COLLAPSED

    when = [name for moment, name in (("init", "step 0"), ("last", "the end"))
            if spread.get(moment) and spread[moment][layer] < COLLAPSED]
    return f"collapsed at {' and '.join(when)}" if when else ""


def _histogram(ax, hist: dict[str, Any], colour: str, filled: bool) -> None:
    import numpy as np

    counts = np.asarray(hist["counts"], dtype=float)
    share = counts / max(counts.sum(), 1.0)
    edges = np.linspace(hist["low"], max(hist["high"], hist["low"] + 1e-6), len(counts) + 1)
    if filled:
        ax.stairs(share, edges, fill=True, color=colour, alpha=0.75)
    else:
        ax.stairs(share, edges, color=colour, lw=1.2)


def activations_figure(summary: dict[str, Any]):
    """The activations of the conditions, each with its derivative: the one drawing of them
    (``mlp activations`` draws the same)."""
    import torch

    from mlp.config import activation_label
    from mlp.model import make_activation

    x = torch.linspace(-7.0, 7.0, 1001)
    curves = {}
    for run in summary["runs"].values():
        name = activation_label(run["activation"])
        if name not in curves:
            y, slope = activation_curve(make_activation(run["activation"], 1), x)
            curves[name] = (x.numpy(), y, slope)
    return activations_overview_figure(curves)
