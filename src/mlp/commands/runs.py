"""What runs there are: each run folder's key hyperparameters and final metrics, as a table.

A run folder is any folder holding the ``config.yaml`` that ``mlp train`` writes first;
``metrics.json`` joins it after the first epoch.  Only these two small files are read, so
listing needs no torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mlp.config import activation_label
from mlp.errors import UserError, did_you_mean
from mlp.tables import COLUMNS, cell, text_table

BEST_FIRST = {"best_val_acc", "test_acc"}  # sorted high to low; every other column low to high


class _Damaged(Exception):
    """A run folder whose files cannot be read, or hold values of the wrong type."""


def read_run(folder: Path) -> dict[str, Any] | None:
    """One run's summary, or None when ``folder`` holds no mlp run (no config.yaml, or another
    tool's).  A damaged run is a row with status ``unreadable`` and the reason under ``error``."""
    from mlp.run.record import RunRecord

    if not RunRecord(folder).is_run():
        return None
    try:
        return _summary(folder)
    except _Damaged as e:
        return {**dict.fromkeys(COLUMNS), "run": str(folder), "status": "unreadable", "epochs": None,
                "error": str(e)}


def _summary(folder: Path) -> dict[str, Any] | None:
    """The config decides whether this is an mlp run at all; past that, anything odd is damage."""
    cfg = _read(folder / "config.yaml", {})
    if not isinstance(cfg, dict):
        return None  # a config.yaml that is not an mlp run's
    data, model, train, optimizer = ({} if cfg.get(k) is None else cfg[k]
                                     for k in ("data", "model", "train", "optimizer"))
    if not all(isinstance(part, dict) for part in (data, model, train, optimizer)):
        return None  # sections that are not mappings (model: resnet50): another tool's config
    metrics = _read(folder / "metrics.json", {})
    if not isinstance(metrics, dict):
        raise _Damaged(f"metrics.json holds a {type(metrics).__name__}, not a mapping")
    best, test = ({} if metrics.get(k) is None else metrics[k] for k in ("best", "test"))
    epochs = [] if metrics.get("epochs") is None else metrics["epochs"]
    for key, part in (("best", best), ("test", test), ("epochs", epochs)):
        if not isinstance(part, list if key == "epochs" else dict) or (key == "epochs" and not all(
                isinstance(e, dict) for e in epochs)):
            wanted = "a list of mappings" if key == "epochs" else "a mapping"
            raise _Damaged(f"metrics.json: {key} is {_shown(part)}, not {wanted}")
    times = [_typed(e.get("train_time_s"), "number", "metrics.json", "epochs[].train_time_s") for e in epochs]
    return {
        "run": str(folder),
        "status": _status(folder, _typed(metrics.get("status", "started"), "text", "metrics.json", "status")),
        "dataset": _typed(data.get("dataset"), "text", "config.yaml", "data.dataset"),
        "activation": activation_label(_typed(model.get("activation"), "activation", "config.yaml",
                                              "model.activation")),
        "width": _typed(model.get("width"), "width (a whole number or a list of them)", "config.yaml", "model.width"),
        "depth": _typed(model.get("depth"), "whole number", "config.yaml", "model.depth"),
        "lr": _typed(optimizer.get("lr"), "number", "config.yaml", "optimizer.lr"),
        "optimizer": _typed(optimizer.get("name"), "text", "config.yaml", "optimizer.name"),
        "epochs_done": len(epochs),
        "epochs": _typed(train.get("epochs"), "whole number", "config.yaml", "train.epochs"),
        "best_val_acc": _typed(best.get("val_accuracy"), "number", "metrics.json", "best.val_accuracy"),
        "test_acc": _typed(test.get("accuracy"), "number", "metrics.json", "test.accuracy"),
        "train_time_s": round(sum(t or 0 for t in times), 2) if epochs else None,
        **_diagnostics(folder),
    }


def _status(folder: Path, status: str) -> str:
    """metrics.json's status, but ``stopped`` for a run still ``running`` whose process is gone."""
    from mlp.run.record import RunRecord

    return "stopped" if status in ("running", "started") and not RunRecord(folder).writer_alive() else status


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_KINDS = {  # what each summary field must be; a bool is not a number
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "whole number": _is_int,
    "text": lambda v: isinstance(v, str),
    "activation": lambda v: isinstance(v, str) or (isinstance(v, dict) and isinstance(v.get("name"), str)),
    "width (a whole number or a list of them)": lambda v: _is_int(v) or (isinstance(v, list) and all(map(_is_int, v))),
}


def _typed(value, kind: str, file: str, key: str):
    """``value`` when it is None or a ``kind``; otherwise the run is damaged."""
    if value is None or _KINDS[kind](value):
        return value
    article = "" if kind == "text" else "an " if kind[0] in "aeiou" else "a "
    raise _Damaged(f"{file}: {key} is {_shown(value)}, not {article}{kind}")


def _shown(value: Any) -> str:
    return repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."


def _read(path: Path, missing: Any) -> Any:
    """A run file parsed (YAML for config.yaml, JSON for metrics.json) by the run folder's reader,
    or ``missing`` when absent."""
    from mlp.run.record import RunDamaged, RunRecord

    try:
        value = RunRecord(path.parent).config() if path.suffix == ".yaml" else RunRecord(path.parent).metrics()
    except RunDamaged as e:
        raise _Damaged(str(e)) from None
    return missing if value is None or value == {} else value


def sort_column(name: str) -> str:
    """The column ``--sort`` names, by its key (``test_acc``) or its title in the table's header
    (``'test acc'``, ``epochs``), in any case, with spaces, dashes or underscores."""
    def plain(text: str) -> str:
        return re.sub(r"[\s_-]+", "_", text.strip().lower())

    wanted = plain(name)
    for key, title in COLUMNS.items():
        if wanted in (key, plain(title)):
            return key
    names = list(dict.fromkeys([*COLUMNS.values(), *COLUMNS]))
    hint = did_you_mean(name, names) or did_you_mean(wanted, names)
    hint = hint + " " if hint else ""
    raise UserError(f"--sort {name}: no such column; {hint}choose one of the header's titles: "
                    f"{', '.join(repr(t) if ' ' in t else t for t in COLUMNS.values())}")


def _diagnostics(folder: Path) -> dict[str, Any]:
    """The largest share of inactive units in any layer, and the first hidden layer's gradient
    signal over the last one's at the first measured step; None where the run has no diagnostics."""
    from mlp.run.record import RunDamaged, RunRecord

    try:
        summary = RunRecord(folder).diagnostics().get("summary")
    except RunDamaged as e:
        raise _Damaged(str(e)) from None
    try:
        return {"inactive_max": _typed(summary["largest_inactive"], "number", "diagnostics.json", "largest_inactive"),
                "signal_ratio": _typed(summary["signal_ratio"]["first"], "number", "diagnostics.json",
                                       "signal_ratio.first")}
    except (KeyError, TypeError):
        return {"inactive_max": None, "signal_ratio": None}


def list_runs(root: Path, sort: str = "run") -> list[dict[str, Any]]:
    """Every run under ``root`` (sweep trials included), sorted by the column ``sort``."""
    sort = sort_column(sort)
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
