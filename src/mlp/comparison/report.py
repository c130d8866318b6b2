"""``report.html``: one self-contained page made from summary.json's content, through the Jinja2
template ``templates/report.html.j2`` (autoescaped).  The figures are PNGs embedded as base64
data, the style is inline, there is no script and nothing is fetched, so it opens offline in any
browser and can be mailed or projected.  The findings come from ``mlp.comparison.findings``.
"""

from __future__ import annotations

from typing import Any

from mlp.comparison.findings import fraction


def setup_line(summary: dict[str, Any]) -> str:
    """Everything the runs share, in words: nothing that ran goes unsaid."""
    e = summary["equal"]
    parts = [f"{e['dataset']} (validation split of {e['val_size']})"]
    if "widths" in e:
        w = e["widths"]
        parts.append(f"{e['depth']} hidden layers of {w[0]}" if len(set(w)) == 1 else f"hidden layers {'-'.join(map(str, w))}")
    for key, words in (("activation", "activation"), ("init", "init"), ("norm", "norm"), ("dropout", "dropout")):
        if key in e:
            value = e[key]
            if key == "activation":
                from mlp.config import activation_label

                value = activation_label(value)
            parts.append(f"{words} {value}")
    o = e["optimizer"]
    opt = " ".join(str(o[k]) for k in ("name",) if k in o)
    shown = lambda v: ("on" if v else "off") if isinstance(v, bool) else (f"{v:g}" if isinstance(v, float) else
                                                                        ", ".join(map(str, v)) if isinstance(v, list) else v)
    details = [f"{k.replace('_', ' ')} {shown(v)}" for k, v in o.items() if k != "name"]
    parts.append(f"optimizer {opt or '(varied)'}" + (f" ({', '.join(details)})" if details else ""))
    sch = e["scheduler"]
    parts.append("schedule " + (sch.get("name", "varied") if sch.get("name") in (None, "none") else
                                ", ".join(f"{k} {v}" for k, v in sch.items())))
    for key, words in (("batch_size", "batch"), ("epochs", "epochs"), ("precision", "precision")):
        if key in e:
            parts.append(f"{words} {e[key]}")
    seeds = e.get("seeds") or []
    if seeds:
        parts.append(f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}")
    return "; ".join(parts)


def _spread(stat, kind: str) -> str:
    if stat is None:
        return "–"
    show = {"percent": lambda v: f"{v:.2%}", "loss": lambda v: f"{v:.4f}", "seconds": lambda v: f"{v:.1f} s"}[kind]
    if stat["min"] == stat["max"]:
        return show(stat["mean"])
    return f"{show(stat['mean'])} ({show(stat['min']).rstrip('% s')}–{show(stat['max'])})"


def table(summary: dict[str, Any]) -> dict[str, Any]:
    """The results table: one column per varied key, then the numbers (means, ranges over seeds)."""
    from mlp.comparison.plan import value_label
    from mlp.observe.comparison_figures import style

    colours = style(summary)["colours"]
    depth = summary["depth"]
    head = [*summary["varied"], "init", "status", "test accuracy", "test loss", "loss at step 0", "train loss",
            "time", "params", "most dead", "most saturated", "signal, step 0", "signal, end"]
    rows = []
    for label, r in summary["runs"].items():
        dead, sat = r.get("dead_max") or [0], r.get("saturated_max") or [0]
        ratio = r.get("signal_ratio") or {}
        rows.append({"colour": colours[label], "cells": [
            *(value_label(k, r["settings"].get(k)).split("=", 1)[-1] for k in summary["varied"]),
            r["init"], r["status"], _spread(r["test_accuracy"], "percent"), _spread(r["test_loss"], "loss"),
            _spread(r.get("init_loss"), "loss"), _spread(r["final_train_loss"], "loss"),
            _spread(r["train_time_s"], "seconds"), f"{r['parameters']:,}" if r.get("parameters") else "–",
            f"{max(dead):.1%}", f"{max(sat):.1%}",
            _ratio_cell(ratio.get("init"), depth), _ratio_cell(ratio.get("last"), depth)]})
    return {"head": head, "rows": rows, "varied": len(summary["varied"])}


def _ratio_cell(ratio, depth: int) -> str:
    """1/x: layer 1 gets that fraction of layer L's signal; "L: 1/x" where layer L gets less."""
    if not ratio:
        return "–"
    return fraction(ratio) if ratio <= 1 else f"{depth}: {fraction(ratio)}"


def render(summary: dict[str, Any], sentences: list[str], images: dict[str, str]) -> str:
    """The page, from the summary, the findings and the figures (base64 PNGs by name)."""
    import jinja2

    from mlp.observe.units import COLLAPSED, SATURATED

    env = jinja2.Environment(loader=jinja2.PackageLoader("mlp.comparison", "templates"),
                             autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                             trim_blocks=True, lstrip_blocks=True)
    widths = summary["widths"]
    shape = f"{summary['depth']} hidden layers of {widths[0]}" if len(set(widths)) == 1 else \
        f"hidden layers {'-'.join(map(str, widths))}"
    varied = ", ".join(k.rsplit(".", 1)[-1] for k in summary["varied"])
    return env.get_template("report.html.j2").render(
        title=f"{varied.capitalize() or 'Runs'} compared: {summary['dataset']}, {shape}",
        summary=summary, setup=setup_line(summary), sentences=sentences, images=images, table=table(summary),
        depth=summary["depth"], seeds=summary.get("seeds", 1), classes=summary.get("classes"),
        saturated=fraction(SATURATED), collapsed=f"{COLLAPSED:.1%}")


def render_report(summary: dict[str, Any], records: dict[str, dict]) -> str:
    from mlp.observe.comparison_figures import draw_all

    return render(summary, summary["findings"], draw_all(summary, records))
