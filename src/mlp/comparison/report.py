"""What ``mlp compare`` writes once its runs are done: ``summary.json`` for other tools and
``report.html`` for people, both computed from the runs' own files (``metrics.json``,
``diagnostics.json``, the TensorBoard events for the loss curve).

The report is one self-contained HTML file: the figures are PNGs embedded as base64 data, the
style is inline, there is no script and nothing is fetched, so it opens offline in any browser
and can be mailed or projected.  Every figure gives each activation the same colour (the
colour-blind safe Okabe-Ito set, with one more dark colour for an eighth) and the same marker.
The findings are sentences computed from the numbers of this comparison (``findings``); none is
written in advance.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from pathlib import Path
from typing import Any

from mlp import __version__
from mlp.run.checkpoint import atomic_write_json

PALETTE = {"relu": "#0072B2", "leaky_relu": "#56B4E9", "elu": "#009E73", "selu": "#882255", "gelu": "#CC79A7",
           "silu": "#E69F00", "tanh": "#D55E00", "sigmoid": "#000000"}
SPARE_COLOURS = ["#332288", "#44AA99", "#999933", "#AA4499", "#117733", "#661100", "#6699CC", "#888888"]
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p"]
DPI = 150
VANISHING = 0.1  # a layer-1 signal below a tenth of the last layer's is called vanishing
EVEN = 3.0  # within this factor, the signal is called even across the layers
NOTABLE_INACTIVE = 0.05


def colours(activations: list[str]) -> dict[str, str]:
    spare = iter(SPARE_COLOURS * 4)
    return {a: PALETTE.get(a) or next(spare) for a in activations}


def markers(activations: list[str]) -> dict[str, str]:
    return {a: MARKERS[i % len(MARKERS)] for i, a in enumerate(activations)}


def init_label(activation: str, init: str) -> str:
    """The initialisation a run's hidden layers got, in the words people use."""
    from mlp.model import ACTIVATIONS

    if init != "auto":
        return {"kaiming": "He", "xavier": "Xavier", "orthogonal": "orthogonal", "default": "PyTorch default"}[init]
    gain = ACTIVATIONS[activation].gain
    return "Xavier" if gain in ("sigmoid", "tanh") else ("LeCun" if gain == "linear" else "He")


# ---------------------------------------------------------------------------------------------
# summary.json


def read_json(path: Path) -> dict[str, Any]:
    """A run's metrics.json or diagnostics.json through the run folder's reader: ``{}`` when absent,
    one line (``RunDamaged``) when damaged."""
    from mlp.run.record import RunRecord

    record = RunRecord(Path(path).parent)
    return record.metrics() if Path(path).name == "metrics.json" else record.diagnostics()


def moments(record: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    """The measurements of ``key`` (signal, inactive) at the first step, at the end of epoch 1 and at
    the end of training (the last measured at or before each), by those names."""
    from mlp.observe.diagnostics import measured

    items = measured(record, key)
    if not items:
        return {}
    chosen = {"first": items[0]}
    ends = record.get("epoch_ends") or []
    in_first_epoch = [m for m in items if ends and m["step"] <= ends[0]]
    if in_first_epoch:
        chosen["epoch 1"] = in_first_epoch[-1]
    chosen["last"] = items[-1]
    return chosen


def loss_curve(run_dir: Path) -> list[list[float]]:
    """``[[step, training loss], ...]`` from the run's TensorBoard events (``loss/step``)."""
    from mlp.run.record import RunRecord

    return RunRecord(run_dir).loss_curve()


def run_summary(run) -> dict[str, Any]:
    """One activation's entry in summary.json (``run`` is a ``mlp.comparison.plan.Planned``)."""
    metrics, record = read_json(run.run_dir / "metrics.json"), read_json(run.run_dir / "diagnostics.json")
    from mlp.observe.diagnostics import summarise

    signal, inactive = moments(record, "signal"), moments(record, "inactive")
    epochs = metrics.get("epochs") or []
    test = metrics.get("test") or {}
    diagnosed = summarise(record) if record else {}
    return {
        "status": metrics.get("status", "not run"),
        "run_dir": str(run.run_dir),
        "init": init_label(run.activation, run.config.model.init),
        "test_accuracy": test.get("accuracy"),
        "test_loss": test.get("loss"),
        "best_val_accuracy": (metrics.get("best") or {}).get("val_accuracy"),
        "final_train_loss": epochs[-1]["train_loss"] if epochs else None,
        "train_time_s": round(sum(e.get("train_time_s") or 0 for e in epochs), 2) if epochs else None,
        "parameters": metrics.get("parameters"),
        "signal": {name: m["signal"] for name, m in signal.items()},
        "inactive": {name: m["inactive"] for name, m in inactive.items()},
        "update_ratio": {name: m.get("update_ratio") for name, m in signal.items()},
        "steps": {"signal": {name: m["step"] for name, m in signal.items()},
                  "inactive": {name: m["step"] for name, m in inactive.items()}},
        "inactive_max": diagnosed.get("inactive_max", []),
        "largest_inactive": diagnosed.get("largest_inactive"),
        "signal_ratio": diagnosed.get("signal_ratio", {"first": None, "last": None}),
        "epochs": [{k: e.get(k) for k in ("epoch", "step", "train_loss", "train_accuracy", "val_loss",
                                          "val_accuracy")} for e in epochs],
        "loss_curve": loss_curve(run.run_dir) if metrics else [],
    }


def collect(runs, config: Path, sets: list[str]) -> dict[str, Any]:
    cfg = runs[0].config
    return {
        "mlp_version": __version__,
        "created": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["mlp compare --config", str(config),
                             "--activations", ",".join(r.activation for r in runs),
                             *(f"--set {s}" for s in sets)]),
        "dataset": cfg.data.dataset, "depth": cfg.model.depth, "widths": cfg.model.widths,
        "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size, "optimizer": cfg.optimizer.name,
        "lr": cfg.optimizer.lr, "seed": cfg.seed, "scheduler": cfg.scheduler.name,
        "runs": {r.activation: run_summary(r) for r in runs},
    }


def write_report(out: Path, runs, config: Path, sets: list[str]) -> tuple[Path, Path]:
    summary = collect(runs, config, sets)
    atomic_write_json(out / "summary.json", summary)
    records = {r.activation: read_json(r.run_dir / "diagnostics.json") for r in runs}
    page = render(summary, findings(summary), draw_figures(summary, records))
    report = out / "report.html"
    report.write_text(page, encoding="utf-8")
    return out / "summary.json", report


# ---------------------------------------------------------------------------------------------
# findings


def ratio_text(ratio: float | None, short: bool = False) -> str:
    """0.000627 → "1/1600", 0.0083 → "1/120", 0.62 → "1/1.6", 2.43 → "2.4 times" ("2.4×" when short)."""
    if ratio is None:
        return "–"
    if ratio <= 0:
        return "0"
    if ratio >= 1:
        return f"{ratio:.1f}×" if short else f"{ratio:.1f} times"
    inverse = 1 / ratio
    if inverse >= 100:  # two significant digits
        return f"1/{round(inverse, 1 - int(math.floor(math.log10(inverse)))):.0f}"
    return f"1/{inverse:.0f}" if inverse >= 10 else f"1/{inverse:.1f}"


def _inactive_word(activation: str) -> str:
    from mlp.model import ACTIVATIONS

    family = ACTIVATIONS[activation].family if activation in ACTIVATIONS else ""
    return {"relu": "dead", "saturating": "saturated"}.get(family, "stuck in the flat tail")


def findings(summary: dict[str, Any]) -> list[str]:
    """Plain sentences, each with its number, computed from ``summary`` (summary.json's content)."""
    runs = summary["runs"]
    done = {a: r for a, r in runs.items() if r.get("status") == "finished"}
    sentences = [f"{a} diverged: its loss became infinite or not a number, so it has no result."
                 for a, r in runs.items() if r.get("status") == "diverged"]
    sentences += _accuracy_findings(done)
    sentences += _signal_findings(done, summary["depth"], summary.get("optimizer", ""))
    sentences += _inactive_findings(done)
    sentences += _speed_findings(done)
    return sentences


def _accuracy_findings(runs: dict[str, Any]) -> list[str]:
    accuracy = {a: r["test_accuracy"] for a, r in runs.items() if r.get("test_accuracy") is not None}
    if len(accuracy) < 2:
        return []
    best, worst = max(accuracy, key=accuracy.get), min(accuracy, key=accuracy.get)
    gap = (accuracy[best] - accuracy[worst]) * 100
    sentences = [f"{best} reaches the highest test accuracy, {accuracy[best]:.2%}; {worst} the lowest, "
                 f"{accuracy[worst]:.2%} ({gap:.1f} points less)."]
    first = {a: r["epochs"][0]["train_loss"] for a, r in runs.items() if r.get("epochs")}
    if len(first) >= 2 and len(next(iter(runs.values()))["epochs"]) > 1:
        quick, slow = min(first, key=first.get), max(first, key=first.get)
        sentences.append(f"After the first epoch {quick} has the lowest training loss ({first[quick]:.3f}) and "
                         f"{slow} the highest ({first[slow]:.3f}).")
    return sentences


def _signal_findings(runs: dict[str, Any], depth: int, optimizer: str) -> list[str]:
    first = {a: r["signal_ratio"]["first"] for a, r in runs.items() if r["signal_ratio"].get("first")}
    if depth < 2 or not first:
        return []
    step = next(iter(runs.values()))["steps"]["signal"].get("first", 1)
    vanishing = sorted((a for a in first if first[a] < VANISHING), key=first.get)
    even = sorted((a for a in first if 1 / EVEN <= first[a] <= EVEN), key=first.get, reverse=True)
    between = [a for a in first if a not in vanishing and a not in even]
    sentences = []
    if len(vanishing) == 1:
        a = vanishing[0]
        sentences.append(f"At step {step} the gradient signal vanishes on its way back to the input for {a}: "
                         f"the signal reaching layer 1 is {ratio_text(first[a])} of that at layer {depth}.")
    elif vanishing:
        listed = _and([f"{a} ({ratio_text(first[a])})" for a in vanishing])
        sentences.append(f"At step {step} the gradient signal vanishes on its way back to the input for {listed}: "
                         f"the signal reaching layer 1 is that fraction of the signal at layer {depth}.")
    if even:
        listed = _and([f"{a} ({ratio_text(first[a])})" for a in even])
        sentences.append(f"For {listed} the signal reaching layer 1 is within {EVEN:g} times of its strength at "
                         f"layer {depth} at step {step}.")
    if between:
        listed = _and([f"{a} ({ratio_text(first[a])})" for a in between])
        sentences.append(f"In between at step {step}: {listed}.")
    for a in vanishing:
        r = runs[a]
        last, updates = r["signal_ratio"].get("last"), (r.get("update_ratio") or {}).get("first")
        text = f"By the end, {a}'s ratio is {ratio_text(last)} (step {r['steps']['signal']['last']})" if last else ""
        if updates and None not in updates and updates[-1] > 0:
            moved = updates[0] / updates[-1]
            text += (f"{'; ' if text else ''}at step {step} its layer-1 weights moved {ratio_text(moved)} as much "
                     f"as layer {depth}'s, relative to their size")
            if optimizer in ("adam", "adamw") and moved > VANISHING:
                text += f" ({optimizer} scales each weight's step by that weight's own gradient history)"
        if text:
            sentences.append(text + ".")
    return sentences


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _inactive_findings(runs: dict[str, Any]) -> list[str]:
    peaks = {a: r["inactive_max"] for a, r in runs.items() if r.get("inactive_max")}
    if not peaks:
        return []
    notable = {a: max(range(len(p)), key=p.__getitem__) for a, p in peaks.items() if max(p) >= NOTABLE_INACTIVE}
    if not notable:
        top = max(max(p) for p in peaks.values())
        return [f"No activation had more than {top:.1%} of any layer's units inactive at a measured step."]
    order = sorted(notable, key=lambda a: -peaks[a][notable[a]])
    listed = "; ".join(f"{a}: {peaks[a][notable[a]]:.0%} of layer {notable[a] + 1}'s units {_inactive_word(a)}"
                       for a in order)
    calm = sorted(set(peaks) - set(notable))
    tail = (f" The others stay below {NOTABLE_INACTIVE:.0%} ({', '.join(calm)})." if calm else "")
    return [f"Inactive units (passing back at most 1% of their gradient over a whole interval), at their "
            f"largest: {listed}.{tail}"]


def _speed_findings(runs: dict[str, Any]) -> list[str]:
    times = {a: r["train_time_s"] for a, r in runs.items() if r.get("train_time_s")}
    if len(times) < 2:
        return []
    fast, slow = min(times, key=times.get), max(times, key=times.get)
    return [f"Training took {times[fast]:.1f} s ({fast}) to {times[slow]:.1f} s ({slow}) per run, "
            f"training only (a shared machine makes these vary)."]


# ---------------------------------------------------------------------------------------------
# figures


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def draw_figures(summary: dict[str, Any], records: dict[str, dict]) -> dict[str, str]:
    """Each figure as base64 PNG, by name."""
    import matplotlib

    activations = list(summary["runs"])
    style = {"colours": colours(activations), "markers": markers(activations)}
    with matplotlib.rc_context({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
                                "legend.fontsize": 10, "xtick.labelsize": 10, "ytick.labelsize": 10}):
        return {
            "curves": _png(curves_figure(summary, style)),
            "signal": _png(profile_figure(summary, style, "signal")),
            "inactive": _png(profile_figure(summary, style, "inactive")),
            "distributions": _png(distributions_figure(summary, records, style)),
            "activations": _png(activations_figure(activations, style)),
        }


def _legend(fig, summary, style) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=style["colours"][a], marker=style["markers"][a], lw=2, label=a)
               for a in summary["runs"]]
    fig.legend(handles=handles, loc="outside right upper", frameon=False, title="activation")


def curves_figure(summary: dict[str, Any], style: dict):
    fig = _figure(12, 4.2)
    ax_acc, ax_loss = fig.subplots(1, 2, sharex=True)
    for a, run in summary["runs"].items():
        c, m = style["colours"][a], style["markers"][a]
        epochs = [e for e in run["epochs"] if e.get("val_accuracy") is not None]
        if epochs:
            ax_acc.plot([e["step"] for e in epochs], [100 * e["val_accuracy"] for e in epochs], color=c, marker=m, lw=2)
        if run["loss_curve"]:
            steps, losses = zip(*run["loss_curve"])
            ax_loss.plot(steps, losses, color=c, lw=1.6)
    ax_acc.set(title="validation accuracy after each epoch", xlabel="optimizer step", ylabel="accuracy (%)")
    ax_loss.set(title="training loss (mean over each logging interval)", xlabel="optimizer step",
                ylabel="cross-entropy (log scale)", yscale="log")
    _plain_log_ticks(ax_loss)
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    _legend(fig, summary, style)
    return fig


def _plain_log_ticks(ax) -> None:
    """Tick labels 0.1, 0.2, 0.5, 1, 2 on a log axis instead of powers of ten."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter(""))


MOMENT_TITLES = {"signal": {"first": "first step", "epoch 1": "end of epoch 1", "last": "end of training"},
                 "inactive": {"first": "first interval", "epoch 1": "last interval of epoch 1",
                              "last": "last interval"}}


def profile_figure(summary: dict[str, Any], style: dict, key: str):
    """Per hidden layer (x) at each moment (a panel), one line per activation."""
    names = [n for n in MOMENT_TITLES[key] if any(n in r[key] for r in summary["runs"].values())]
    fig = _figure(12, 4.2)
    axes = fig.subplots(1, max(len(names), 1), sharey=True, squeeze=False)[0]
    depth = summary["depth"]
    for ax, name in zip(axes, names):
        steps = {r["steps"][key][name] for r in summary["runs"].values() if name in r["steps"][key]}
        for a, run in summary["runs"].items():
            if name in run[key]:
                values = run[key][name]
                values = [100 * v for v in values] if key == "inactive" else values
                ax.plot(range(1, depth + 1), values, color=style["colours"][a], marker=style["markers"][a], lw=2)
        step_text = f"step {steps.pop()}" if len(steps) == 1 else "steps " + ", ".join(map(str, sorted(steps)))
        ax.set(title=f"{MOMENT_TITLES[key][name]} ({step_text})", xlabel="hidden layer (1 = next to the input)",
               xticks=range(1, depth + 1))
        ax.grid(alpha=0.3)
    if key == "signal":
        axes[0].set(yscale="log", ylabel="signal: RMS gradient per example and unit")
    else:
        top = max([v for r in summary["runs"].values() for vs in r[key].values() for v in vs] + [0.05])
        axes[0].set(ylabel="inactive units (%)", ylim=(-1, 100 * top * 1.1 + 1))
    _legend(fig, summary, style)
    return fig


def distributions_figure(summary: dict[str, Any], records: dict[str, dict], style: dict):
    """Small multiples: one row per activation, one column per hidden layer; the outputs' histogram
    at the end (filled) and at the first step (grey line), as shares of the values on a log scale."""
    activations = [a for a in summary["runs"] if (records.get(a) or {}).get("distributions")]
    depth = summary["depth"]
    fig = _figure(max(2.0 * depth + 1.5, 6), 1.35 * max(len(activations), 1) + 1.0)
    axes = fig.subplots(max(len(activations), 1), max(depth, 1), squeeze=False, sharey=True)
    for row, a in zip(axes, activations):
        first, last = records[a]["distributions"][0], records[a]["distributions"][-1]
        low, high = _shown_range([h for d in (first, last) for h in d["layers"]])
        for i, ax in enumerate(row):
            for d, filled in ((first, False), (last, True)):
                _histogram(ax, d["layers"][i], style["colours"][a] if filled else "0.55", filled)
            ax.set_xlim(low, high)
            ax.set_yscale("log")
            ax.set_ylim(1e-4, 1.5)
            ax.tick_params(labelsize=10)
            if i == 0:
                ax.set_ylabel(a, color=style["colours"][a], fontweight="bold")
        for i, ax in enumerate(axes[0]):
            ax.set_title(f"layer {i + 1}")
    fig.supxlabel("output value of the hidden layer (each row its own range)")
    fig.supylabel("share of the outputs (log scale)")
    fig.suptitle("distribution of each layer's outputs: at the end (filled), at the first step (grey line)")
    return fig


def _shown_range(hists: list[dict[str, Any]], share: float = 0.001) -> tuple[float, float]:
    """From where the lowest ``share`` of the values ends to where the highest begins, over ``hists``:
    a few outliers do not stretch the axis."""
    import numpy as np

    lows, highs = [], []
    for hist in hists:
        counts = np.asarray(hist["counts"], dtype=float)
        edges = np.linspace(hist["low"], max(hist["high"], hist["low"] + 1e-6), len(counts) + 1)
        cumulative = np.cumsum(counts) / max(counts.sum(), 1.0)
        lows.append(edges[int(np.searchsorted(cumulative, share))])
        highs.append(edges[min(int(np.searchsorted(cumulative, 1 - share)) + 1, len(counts))])
    low, high = min(lows), max(highs)
    return (low, high) if high > low else (low - 0.5, low + 0.5)


def _histogram(ax, hist: dict[str, Any], colour: str, filled: bool) -> None:
    import numpy as np

    counts = np.asarray(hist["counts"], dtype=float)
    share = counts / max(counts.sum(), 1.0)
    edges = np.linspace(hist["low"], max(hist["high"], hist["low"] + 1e-6), len(counts) + 1)
    if filled:
        ax.stairs(share, edges, fill=True, color=colour, alpha=0.75)
    else:
        ax.stairs(share, edges, color=colour, lw=1.2)


def activations_figure(activations: list[str], style: dict):
    """Each activation f (solid) and its derivative f' (dashed) on shared axes; the flat tails
    (|f'| ≤ 0.01, where a unit counts as inactive) shaded."""
    import numpy as np
    import torch

    from mlp.observe.diagnostics import flat_tails
    from mlp.model import make_activation

    cols = min(4, len(activations))
    rows = math.ceil(len(activations) / cols)
    fig = _figure(3.0 * cols + 0.5, 2.6 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    x = torch.linspace(-6, 6, 2401, dtype=torch.float64, requires_grad=True)
    for ax, a in zip(axes, activations):
        module = make_activation(a, 1)
        y = module.double()(x)
        (slope,) = torch.autograd.grad(y.sum(), x)
        xs, ys, ds = x.detach().numpy(), y.detach().numpy(), slope.numpy().copy()
        ds[1:][np.abs(np.diff(ds)) > 0.25] = np.nan  # no vertical line where the derivative jumps (a kink)
        low, high = flat_tails(module)
        low, high = float(low.max()), float(high.min())
        ax.axvspan(-6, max(low, -6), color="0.88", lw=0)
        ax.axvspan(min(high, 6), 6, color="0.88", lw=0)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.axvline(0, color="0.6", lw=0.8)
        ax.plot(xs, ys, color=style["colours"][a], lw=2.2, label="f(x)")
        ax.plot(xs, ds, color=style["colours"][a], lw=1.6, ls="--", label="f'(x)")
        ax.set_title(a, color=style["colours"][a], fontweight="bold")
        ax.set(xlim=(-6, 6), ylim=(-2, 3))
        ax.grid(alpha=0.3)
    for ax in axes[len(activations):]:
        ax.axis("off")
    axes[0].legend(loc="upper left", frameon=False)
    fig.supxlabel("input x")
    fig.suptitle("activations f(x) (solid) and derivatives f'(x) (dashed); grey: flat tails, |f'(x)| ≤ 0.01")
    return fig


# ---------------------------------------------------------------------------------------------
# html

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; font-size: 17px;
       line-height: 1.5; color: #111; max-width: 1200px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.8em; margin-bottom: 0.2em; } h2 { font-size: 1.35em; margin-top: 1.8em; }
.setup { color: #333; } code { font-size: 0.95em; background: #f2f2f2; padding: 0 0.25em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #333; font-size: 0.95em; }
table { border-collapse: collapse; font-size: 0.95em; } th, td { padding: 0.35em 0.8em; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 50%; margin-right: 0.4em;
          vertical-align: -0.1em; }
ul.findings li { margin-bottom: 0.4em; }
footer { margin-top: 3em; color: #555; font-size: 0.9em; }
"""


def _cell(value, kind: str) -> str:
    if value is None:
        return "<td class='num'>–</td>"
    text = {"percent": lambda v: f"{v:.2%}", "loss": lambda v: f"{v:.4f}", "seconds": lambda v: f"{v:.1f} s",
            "count": lambda v: f"{v:,}", "ratio": lambda v: ratio_text(v, short=True), "share": lambda v: f"{v:.1%}"}[kind](value)
    return f"<td class='num'>{html.escape(text)}</td>"


def table_html(summary: dict[str, Any]) -> str:
    palette = colours(list(summary["runs"]))
    head = ("<tr><th>activation</th><th>init</th><th>status</th><th>test accuracy</th><th>test loss</th>"
            "<th>final train loss</th><th>training time</th><th>parameters</th><th>largest inactive fraction</th>"
            "<th>signal layer 1 / layer L, first step</th><th>… at the end</th></tr>")
    rows = []
    for a, r in summary["runs"].items():
        rows.append(
            f"<tr><td><span class='swatch' style='background:{palette[a]}'></span>{html.escape(a)}</td>"
            f"<td>{html.escape(r['init'])}</td><td>{html.escape(r['status'])}</td>"
            + _cell(r["test_accuracy"], "percent") + _cell(r["test_loss"], "loss")
            + _cell(r["final_train_loss"], "loss") + _cell(r["train_time_s"], "seconds")
            + _cell(r["parameters"], "count") + _cell(r["largest_inactive"], "share")
            + _cell(r["signal_ratio"].get("first"), "ratio") + _cell(r["signal_ratio"].get("last"), "ratio")
            + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _figure_html(images: dict[str, str], name: str, alt: str, caption: str) -> str:
    return (f"<figure><img src='data:image/png;base64,{images[name]}' alt='{html.escape(alt)}'>"
            f"<figcaption>{caption}</figcaption></figure>")


def render(summary: dict[str, Any], sentences: list[str], images: dict[str, str]) -> str:
    widths = summary["widths"]
    shape = f"{summary['depth']} hidden layers of {widths[0]}" if len(set(widths)) == 1 else \
        f"hidden layers {'-'.join(map(str, widths))}"
    title = f"Activations compared: {summary['dataset']}, {shape}"
    L = summary["depth"]
    setup = (f"One run per activation, everything else equal: seed {summary['seed']} (so the same data order "
             f"and validation split), the same widths, {summary['optimizer']} at learning rate {summary['lr']:g}, "
             f"batch {summary['batch_size']}, {summary['epochs']} epoch{'s' * (summary['epochs'] > 1)}; "
             f"each activation with its usual initialisation (column <em>init</em>).")
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class='setup'>{setup}<br>Made by <code>{html.escape(summary['command'])}"
        f"</code></p>",
        "<h2>Findings</h2><ul class='findings'>" + "".join(f"<li>{html.escape(s)}</li>" for s in sentences)
        + "</ul>",
        "<h2>Results</h2>" + table_html(summary),
        "<h2>Training</h2>" + _figure_html(images, "curves", "validation accuracy and training loss against step",
                                           "Validation accuracy after each epoch and the training loss, one line "
                                           "per activation, on shared step axes."),
        "<h2>Gradient signal, layer by layer</h2>" + _figure_html(
            images, "signal", "gradient signal per hidden layer",
            f"How much gradient reaches each hidden layer: the root mean square, per example and per unit, of the "
            f"gradient of the loss with respect to the layer's pre-activation. Read from layer {L} (next to the "
            f"output) back to layer 1: a line that falls towards layer 1 is a vanishing gradient. Log scale, "
            f"shared across the three moments."),
        "<h2>Inactive units, layer by layer</h2>" + _figure_html(
            images, "inactive", "inactive fraction per hidden layer",
            "Share of each layer's units that were inactive over the interval ending at that step: on every "
            "training example their input sat where the activation is flat (derivative at most 0.01), so they "
            "passed back at most 1% of their gradient. For ReLU that is a dead unit, for sigmoid and tanh a "
            "saturated one; the first step's interval is a single batch."),
        "<h2>What each layer outputs</h2>" + _figure_html(
            images, "distributions", "distribution of each layer's outputs",
            "Histograms of each hidden layer's outputs on a training batch, at the end (filled) and at the first "
            "step (grey). A pile at the edges of a bounded activation is saturation; a spike at 0 for ReLU is "
            "the share of outputs switched off."),
        "<h2>The activations</h2>" + _figure_html(
            images, "activations", "each activation and its derivative",
            "Each activation (solid) and its derivative (dashed), on shared axes. The derivative is the factor by "
            "which a unit scales the gradient passing back through it; grey marks where it is at most 0.01."),
        f"<footer>mlp {html.escape(summary['mlp_version'])}, {html.escape(summary['created'])}. Each run is a "
        f"folder beside this report (mlp eval, mlp runs, TensorBoard read it); summary.json holds these numbers. "
        f"Definitions: docs/diagnostics.md.</footer></body></html>",
    ]
    return "\n".join(parts)
