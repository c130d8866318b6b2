"""What runs there are: each run folder's key hyperparameters and final metrics, as a table.

A run folder is any folder holding the ``config.yaml`` that ``mlp train`` writes first;
``metrics.json`` joins it after the first epoch.  Only these two small files are read, so
listing needs no torch.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from mlp.config import activation_label
from mlp.errors import UserError

# name in --sort and --json → column title in the table
COLUMNS = {
    "run": "run", "status": "status", "dataset": "dataset", "activation": "activation", "width": "width",
    "depth": "depth", "lr": "lr", "optimizer": "optimizer", "epochs_done": "epochs",
    "best_val_acc": "best val acc", "test_acc": "test acc", "train_time_s": "train time",
    "inactive_max": "inactive max", "signal_ratio": "signal 1/L",  # from diagnostics.json, see mlp.diagnostics
}
BEST_FIRST = {"best_val_acc", "test_acc"}  # sorted high to low; every other column low to high


def read_run(folder: Path) -> dict[str, Any] | None:
    """One run's summary, or None when ``folder`` holds no run; unreadable files are a UserError."""
    config_file, metrics_file = folder / "config.yaml", folder / "metrics.json"
    if not config_file.is_file():
        return None
    try:
        cfg = yaml.safe_load(config_file.read_text()) or {}
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the run in {folder}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, dict) or not isinstance(metrics, dict):
        return None  # a config.yaml that is not an mlp run's
    data, model, train, optimizer = ({} if cfg.get(k) is None else cfg[k]
                                     for k in ("data", "model", "train", "optimizer"))
    best, test = ({} if metrics.get(k) is None else metrics[k] for k in ("best", "test"))
    epochs = [] if metrics.get("epochs") is None else metrics["epochs"]
    if not isinstance(epochs, list) or not all(
            isinstance(part, dict) for part in (data, model, train, optimizer, best, test, *epochs)):
        return None  # sections that are not mappings (model: resnet50, "best": 5): not an mlp run
    return {
        "run": str(folder),
        "status": metrics.get("status", "started"),
        "dataset": data.get("dataset"),
        "activation": activation_label(model.get("activation")),
        "width": model.get("width"),
        "depth": model.get("depth"),
        "lr": optimizer.get("lr"),
        "optimizer": optimizer.get("name"),
        "epochs_done": len(epochs),
        "epochs": train.get("epochs"),
        "best_val_acc": best.get("val_accuracy"),
        "test_acc": test.get("accuracy"),
        "train_time_s": round(sum(e.get("train_time_s") or 0 for e in epochs), 2) if epochs else None,
        **_diagnostics(folder),
    }


def _diagnostics(folder: Path) -> dict[str, Any]:
    """The largest share of inactive units in any layer, and the first hidden layer's gradient
    signal over the last one's at the first measured step; None where the run has no diagnostics."""
    try:
        summary = json.loads((folder / "diagnostics.json").read_text())["summary"]
        return {"inactive_max": summary["largest_inactive"], "signal_ratio": summary["signal_ratio"]["first"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {"inactive_max": None, "signal_ratio": None}


def list_runs(root: Path, sort: str = "run") -> list[dict[str, Any]]:
    """Every run under ``root`` (sweep trials included), sorted by the column ``sort``."""
    if sort not in COLUMNS:
        close = difflib.get_close_matches(sort, list(COLUMNS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"--sort {sort}: no such column; {hint}choose one of {', '.join(COLUMNS)}")
    if not root.is_dir():
        raise UserError(f"no folder {root}; give the folder that holds the runs: mlp runs DIR")
    runs = []
    for config_file in sorted(root.rglob("config.yaml")):
        run = read_run(config_file.parent)
        if run is not None:
            run["run"] = config_file.parent.relative_to(root).as_posix()
            runs.append(run)

    def key(run):
        value = run[sort]
        if isinstance(value, (int, float)) and sort in BEST_FIRST:
            value = -value
        elif sort == "width" and value is not None:  # one width or a list of widths, compared layer by layer
            value = tuple(value) if isinstance(value, list) else (value,)
        return (value is None, value if value is not None else 0)

    return sorted(runs, key=key)


def format_runs(runs: list[dict[str, Any]]) -> str:
    return text_table(list(COLUMNS.values()), [[cell(run, key) for key in COLUMNS] for run in runs])


def cell(run: dict[str, Any], key: str) -> Any:
    """``run[key]`` as the tables show it (the sweep's leaderboard too)."""
    value = run[key]
    if key == "epochs_done":
        return f"{value}/{run['epochs']}"
    if key in ("best_val_acc", "test_acc"):
        return percent(value)
    if key == "inactive_max":
        return "" if value is None else f"{value:.1%}"
    if key == "signal_ratio":  # 0.0083 as 1/120, 0.62 as 1/1.6
        if value is None or value <= 0 or value >= 1:
            return "" if value is None else f"{value:.2g}"
        return f"1/{1 / value:.0f}" if value < 0.1 else f"1/{1 / value:.1f}"
    if key == "train_time_s":
        return seconds(value)
    if key == "lr" and isinstance(value, (int, float)):
        return f"{value:g}"
    return "-".join(map(str, value)) if key == "width" and isinstance(value, list) else value


def percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{fraction:.2%}"


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}s"


def text_table(header: list[str], rows: list[list[Any]]) -> str:
    """Columns padded to their widest cell; numbers (and percentages, times) aligned right."""
    cells = [header] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    right = [all(_numeric(row[i]) for row in cells[1:]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def line(cells):
        return "| " + " | ".join(("" if c is None else str(c)).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)])


def _numeric(text: str) -> bool:
    return re.fullmatch(r"(-?\d[\d.e+-]*[%s]?|\d+/\d+)?", text) is not None  # "" is an empty number
