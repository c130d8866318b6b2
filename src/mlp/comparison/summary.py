"""``summary.json``: what a compare's runs came to, per condition (the varied values), as means and
ranges over the seeds, computed from the runs' own files (``metrics.json``, ``diagnostics.json``,
the TensorBoard events for the loss curve).  Other tools and checks read it; the findings and the
report are made from it alone.

Schema (docs/diagnostics.md, `mlp compare`): ``{"varied": [key, ...], "seeds": N, "equal": {...}, "runs": {label:
{"settings", "run_dirs", "test_accuracy": {"mean", "min", "max"}, "signal": {moment: [per hidden
layer, input side first]}, "weight_grad_rms", "update_ratio", "mean_output", "zero_share",
"inactive_max", "dead_max", "saturated_max", "negative_max", "collapsed", "spread_min", ...}},
"findings": [...]}``, moments ``init`` (step 0), ``first``, ``epoch 1`` and ``last``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from mlp import __version__
from mlp.files import writing
from mlp.run.durable import atomic_write_bytes, atomic_write_json

MOMENTS = ("init", "first", "epoch 1", "last")
PER_LAYER = {"signal": "signal", "weight_grad_rms": "grad_rms", "update_ratio": "update_ratio",
             "mean_output": "act_mean", "zero_share": "zero_share", "spread": "spread", "inactive": "inactive",
             "dead": "dead", "saturated": "saturated", "negative": "negative"}


def read_json(path: Path) -> dict[str, Any]:
    """A run's metrics.json or diagnostics.json through the run folder's reader: ``{}`` when absent,
    one line (``RunDamaged``) when damaged."""
    from mlp.run.record import RunRecord

    record = RunRecord(Path(path).parent)
    return record.metrics() if Path(path).name == "metrics.json" else record.diagnostics()


def moments(record: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    """The measurements that have ``key`` at step 0 (``init``), at the first step after it, at the
    end of epoch 1 and at the end (the last measured at or before each), by those names."""
    from mlp.observe.layer_summary import measured

    items = measured(record, key)
    chosen = {"init": m for m in items if m["step"] == 0}
    trained = [m for m in items if m["step"] > 0]
    if not trained:
        return chosen
    chosen["first"] = trained[0]
    ends = record.get("epoch_ends") or []
    in_first_epoch = [m for m in trained if ends and m["step"] <= ends[0]]
    if in_first_epoch:
        chosen["epoch 1"] = in_first_epoch[-1]
    chosen["last"] = trained[-1]
    return chosen


def loss_curve(run_dir: Path) -> list[list[float]]:
    """``[[step, training loss], ...]`` from the run's TensorBoard events (``loss/step``)."""
    from mlp.run.record import RunRecord

    return RunRecord(run_dir).loss_curve()


def run_summary(run) -> dict[str, Any]:
    """One run's numbers (``run`` is a ``mlp.comparison.plan.Planned``)."""
    from mlp.observe.layer_summary import summarise

    metrics, record = read_json(run.run_dir / "metrics.json"), read_json(run.run_dir / "diagnostics.json")
    epochs, test = metrics.get("epochs") or [], metrics.get("test") or {}
    per_layer = {name: {moment: m[key] for moment, m in moments(record, key).items()}
                 for name, key in PER_LAYER.items()}
    steps = {moment: m["step"] for moment, m in moments(record, "signal").items()}
    return {
        "status": metrics.get("status", "not run"), "run_dir": str(run.run_dir), "seed": run.seed,
        "test_accuracy": test.get("accuracy"), "test_loss": test.get("loss"),
        "final_train_loss": epochs[-1]["train_loss"] if epochs else None,
        "train_time_s": round(sum(e.get("train_time_s") or 0 for e in epochs), 2) if epochs else None,
        "parameters": metrics.get("parameters"), "init_record": record.get("init") or {},
        **per_layer, "steps": steps, **(summarise(record) if record else {}),
        "epochs": [{k: e.get(k) for k in ("epoch", "step", "train_loss", "train_accuracy", "val_loss",
                                          "val_accuracy")} for e in epochs],
        "loss_curve": loss_curve(run.run_dir) if metrics else [],
    }


def spread_of(values: list[float | None]) -> dict[str, float] | None:
    """Mean, smallest and largest of the seeds' values (None when a seed has none)."""
    if not values or any(v is None for v in values):
        return None
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def _mean_layers(rows: list[list[float] | None]) -> list[float] | None:
    if not rows or any(not r for r in rows) or len({len(r) for r in rows}) != 1:
        return None
    return [sum(column) / len(column) for column in zip(*rows)]


def _per_moment(runs: list[dict], key: str) -> dict[str, list[float]]:
    out = {}
    for moment in MOMENTS:
        mean = _mean_layers([r[key].get(moment) for r in runs])
        if mean is not None:
            out[moment] = mean
    return out


def condition(planned: list, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One condition (one label) over its seeds."""
    from mlp.model import init_label
    from mlp.observe.units import COLLAPSED

    cfg = planned[0].config
    statuses = [r["status"] for r in runs]
    spread_min = _mean_layers([r.get("spread_min") for r in runs]) or []
    first = runs[0]
    return {
        "settings": planned[0].settings, "run_dirs": [r["run_dir"] for r in runs],
        "seeds": [r["seed"] for r in runs], "statuses": statuses,
        "status": "finished" if all(s == "finished" for s in statuses) else
        ("diverged" if "diverged" in statuses else statuses[0]),
        "activation": cfg.model.activation, "init": init_label(cfg.model),
        **{key: spread_of([r[key] for r in runs]) for key in
           ("test_accuracy", "test_loss", "final_train_loss", "train_time_s")},
        "init_loss": spread_of([r["init_record"].get("loss") for r in runs]),
        "init_accuracy": spread_of([r["init_record"].get("accuracy") for r in runs]),
        "parameters": first["parameters"],
        **{key: _per_moment(runs, key) for key in PER_LAYER},
        **{key: _mean_layers([r.get(key) for r in runs]) or [] for key in
           ("inactive_max", "dead_max", "saturated_max", "negative_max")},
        "spread_min": spread_min, "collapsed": [v < COLLAPSED for v in spread_min],
        "signal_ratio": {m: (v[0] / v[-1] if v[-1] > 0 else None)
                         for m, v in _per_moment(runs, "signal").items()},
        "steps": first["steps"], "epochs": [r["epochs"] for r in runs],
        "loss_curves": [r["loss_curve"] for r in runs],
    }


def equal_settings(cfg, varied: list[str], seeds: list[int]) -> dict[str, Any]:
    """What every run shares, as the report's setup line lists it."""
    from mlp.model import init_label

    o, sch = cfg.optimizer, cfg.scheduler
    optimizer = {"name": o.name, "lr": o.lr, "weight_decay": o.weight_decay}
    optimizer.update({"momentum": o.momentum, "nesterov": o.nesterov} if o.name == "sgd" else {"betas": list(o.betas)})
    equal = {"dataset": cfg.data.dataset, "val_size": cfg.data.val_size, "depth": cfg.model.depth,
             "widths": cfg.model.widths, "activation": cfg.model.activation, "init": init_label(cfg.model),
             "norm": cfg.model.norm, "dropout": cfg.model.dropout, "optimizer": optimizer,
             "scheduler": sch.model_dump(mode="json"), "batch_size": cfg.train.batch_size,
             "epochs": cfg.train.epochs, "precision": cfg.train.precision, "seeds": seeds}
    names = {"model.activation": "activation", "model.init": "init", "model.init_gain": "init",
             "model.depth": "depth", "model.width": "widths", "model.norm": "norm", "model.dropout": "dropout",
             "train.batch_size": "batch_size", "train.epochs": "epochs", "seed": "seeds"}
    for key in varied:
        if key.startswith("optimizer."):
            optimizer.pop(key.split(".", 1)[1], None)
        elif key.startswith("scheduler."):
            equal["scheduler"].pop(key.split(".", 1)[1], None)
        elif key.startswith("model.activation"):
            equal.pop("activation", None)
            equal.pop("init", None) if cfg.model.init == "auto" else None
        elif names.get(key) in equal:
            equal.pop(names[key])
        if key in ("model.depth", "model.width"):
            equal.pop("depth", None), equal.pop("widths", None)
    return equal


def collect(runs, the_study, config: Path) -> dict[str, Any]:
    labels = list(dict.fromkeys(r.label for r in runs))
    per_run = {id(r): run_summary(r) for r in runs}
    cfg = runs[0].config
    command = ["mlp compare --config", str(config),
               *(f"--vary {k}={','.join(_shown(k, v) for v in vs)}" for k, vs in the_study.vary.items()),
               *([f"--seeds {the_study.seeds}"] if the_study.seeds > 1 else []),
               *(f"--set {s}" for s in the_study.sets)]
    return {
        "mlp_version": __version__, "created": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(command),
        "varied": list(the_study.vary), "seeds": the_study.seeds, "claim": the_study.claim,
        "equal": equal_settings(cfg, list(the_study.vary), sorted({r.seed for r in runs})),
        "dataset": cfg.data.dataset, "depth": cfg.model.depth, "widths": cfg.model.widths,
        "classes": _classes(cfg.data.dataset),
        "runs": {label: condition([r for r in runs if r.label == label],
                                  [per_run[id(r)] for r in runs if r.label == label]) for label in labels},
    }


def _shown(key: str, value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def _classes(dataset: str) -> int | None:
    """How many classes the data set has (for the chance lines)."""
    from mlp.data import DATASETS

    info = DATASETS.get(dataset)
    if info is not None and info.classes:
        return len(info.classes)
    digits = "".join(ch for ch in dataset if ch.isdigit())  # cifar10, cifar100
    return int(digits) if digits else None


def write_report(out: Path, runs, the_study, config: Path) -> tuple[Path, Path]:
    """summary.json (with the findings) and report.html in ``out``."""
    from mlp.comparison.findings import findings
    from mlp.comparison.report import render_report

    summary = collect(runs, the_study, config)
    summary["findings"] = findings(summary)
    with writing(out / "summary.json"):  # a full disk or a read-only folder: one line, the old file kept
        atomic_write_json(out / "summary.json", summary)
    first_seed = {}  # each condition's first run's diagnostics.json: its histograms are drawn
    for r in runs:
        if r.label not in first_seed:
            first_seed[r.label] = read_json(r.run_dir / "diagnostics.json")
    report = out / "report.html"
    with writing(report):
        atomic_write_bytes(report, render_report(summary, first_seed).encode("utf-8"))
    return out / "summary.json", report


def chance(summary: dict[str, Any]) -> tuple[float, float] | None:
    """Chance level: the accuracy 1/classes and the loss ln(classes) of a uniform guess."""
    n = summary.get("classes")
    return (1 / n, math.log(n)) if n else None
