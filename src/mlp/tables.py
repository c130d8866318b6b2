"""Tables as the terminal and Markdown show them, and the run-summary columns they show
(``mlp runs`` and a sweep's leaderboard list the same columns the same way)."""

from __future__ import annotations

import re
from typing import Any

# name in --sort and --json → column title in the table
COLUMNS = {
    "run": "run", "status": "status", "dataset": "dataset", "activation": "activation", "width": "width",
    "depth": "depth", "lr": "lr", "optimizer": "optimizer", "epochs_done": "epochs",
    "best_val_acc": "best val acc", "test_acc": "test acc", "train_time_s": "train time",
    "inactive_max": "inactive max", "signal_ratio": "signal 1/L",  # from diagnostics.json, see mlp.observe.diagnostics
}


def cell(run: dict[str, Any], key: str) -> Any:
    """``run[key]`` as the tables show it (the sweep's leaderboard too)."""
    value = run[key]
    if key == "epochs_done" and value is not None:
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


def text_table(header: list[str], rows: list[list[Any]], rule: bool = True, indent: str = "",
               right: bool | None = None) -> str:
    """Columns padded to their widest cell; numbers (and percentages, times) aligned right, or
    every column when ``right``; a line of dashes under the header when ``rule``."""
    cells = [header] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    aligned = [right if right is not None else all(_numeric(row[i]) for row in cells[1:]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, aligned)).rstrip()
             for row in cells]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(indent + line for line in lines)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def line(cells):
        return "| " + " | ".join(("" if c is None else str(c)).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)])


def _numeric(text: str) -> bool:
    return re.fullmatch(r"(-?\d[\d.e+-]*[%s]?|\d+/\d+)?", text) is not None  # "" is an empty number
