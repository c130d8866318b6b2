"""The numbers a claim is judged on, read from a compare's summary (summary.json's content) and,
where the summary does not hold them, from the run folders it lists.

Everything here is tolerant: a number that is missing (a run that did not finish, an older run
folder, a depth-0 network with no hidden layer) comes back as None, and the claim it belongs to
is then "not measured"; nothing raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

MOMENTS = ("init", "first", "epoch 1", "last")
SAME_INIT = ({"xavier", "glorot"}, {"kaiming", "he"})  # names of one init, old and new


@dataclass
class Check:
    """One part of a criterion: ``ok`` is True (met), False (failed), None (the seeds disagree
    or the ranges overlap), and ``text`` says what was measured."""

    ok: bool | None
    text: str


def verdict(checks: list[Check | None], seeds: int) -> str:
    """supported / not supported / within the spread of N seeds / not measured."""
    if not checks or any(c is None for c in checks):
        return "not measured"
    if any(c.ok is False for c in checks):
        return "not supported"
    if any(c.ok is None for c in checks):
        return f"within the spread of {seeds} seeds" if seeds > 1 else "not supported"
    return "supported"


def sentence(claim: str, criterion: str, checks: list[Check | None], seeds: int) -> str:
    """``Claim: ... Criterion: ... Measured: ...: <verdict>.`` with what could be measured."""
    present = [c.text for c in checks if c is not None]
    measured = "; ".join(present) or "no numbers for it in these runs"
    missing = " (some of the numbers it needs are missing)" if present and len(present) < len(checks) else ""
    return f"Claim: {claim}. Criterion: {criterion}. Measured: {measured}{missing}: {verdict(checks, seeds)}."


def all_of(values: list[bool]) -> bool | None:
    """True if every seed meets it, False if none does, None if they disagree."""
    if all(values):
        return True
    return False if not any(values) else None


def seeds_of(summary: dict[str, Any]) -> int:
    seeds = summary.get("seeds")
    return seeds if isinstance(seeds, int) and seeds > 0 else 1


# ---------------------------------------------------------------------------------------------
# finding the runs of a condition


def activation_name(value: Any) -> str | None:
    """``leaky_relu`` for ``"leaky_relu"``, ``"Leaky-ReLU"``, ``{name: leaky_relu, ...}`` or the label
    ``"leaky_relu(negative_slope=0.1)"``; None for anything else."""
    if isinstance(value, dict):
        value = value.get("name")
    if not isinstance(value, str):
        return None
    return value.split("(", 1)[0].strip().lower().replace("-", "_")


def same_init(a: Any, b: str) -> bool:
    a = str(a).lower()
    return a == b or any(a in names and b in names for names in SAME_INIT)


def find(summary: dict[str, Any], **want: Callable[[Any], bool]) -> list[tuple[str, dict[str, Any]]]:
    """The runs whose settings pass every test; keys use ``__`` for the dots
    (``model__activation=lambda v: ...``).  A key a run's settings lack fails the test unless
    the test accepts None (a key that was not varied)."""
    found = []
    for label, run in (summary.get("runs") or {}).items():
        settings = run.get("settings") or {}
        if all(test(settings.get(key.replace("__", "."))) for key, test in want.items()):
            found.append((label, run))
    return found


def one(summary: dict[str, Any], **want: Callable[[Any], bool]) -> tuple[str, dict[str, Any]] | None:
    runs = find(summary, **want)
    return runs[0] if runs else None


def is_activation(*names: str) -> Callable[[Any], bool]:
    return lambda v: activation_name(v) in names


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---------------------------------------------------------------------------------------------
# numbers of one run (``run`` is one entry of summary["runs"])


def per_layer(run: dict[str, Any], key: str, moments: tuple[str, ...] = ()) -> tuple[list[float], str] | None:
    """A per-layer list: ``run[key]`` itself, or ``run[key][moment]`` for the first of ``moments``
    it has; with the moment's name ("" for a plain list).  None when absent or empty."""
    value = run.get(key)
    if isinstance(value, dict):
        for moment in moments:
            layers = _floats(value.get(moment))
            if layers:
                return layers, moment
        return None
    layers = _floats(value)
    return (layers, "") if layers else None


def _floats(value: Any) -> list[float] | None:
    if not isinstance(value, list) or not value:
        return None
    numbers = [number(v) for v in value]
    return None if any(n is None for n in numbers) else numbers


def accuracy_range(run: dict[str, Any]) -> tuple[float, float, float] | None:
    """(min, mean, max) of the test accuracy over the seeds."""
    acc = run.get("test_accuracy")
    if isinstance(acc, dict):
        values = [number(acc.get(k)) for k in ("min", "mean", "max")]
        return None if any(v is None for v in values) else tuple(values)
    single = number(acc)
    return (single, single, single) if single is not None else None


def read_json(path: Path) -> dict[str, Any] | None:
    """A run's metrics.json or diagnostics.json through the run folder's reader; None when it is
    absent or damaged (the claim is then "not measured")."""
    from mlp.run.record import RunDamaged, RunRecord

    try:
        record = RunRecord(path.parent)
        data = record.metrics() if path.name == "metrics.json" else record.diagnostics()
    except RunDamaged:
        return None
    return data or None


def run_dirs(run: dict[str, Any]) -> list[Path]:
    return [Path(d) for d in run.get("run_dirs") or [] if isinstance(d, str)]


def per_seed(run: dict[str, Any], read: Callable[[Path], Any]) -> list[Any] | None:
    """``read(run_dir)`` for each of the run's folders (one per seed); None if any gives None."""
    dirs = run_dirs(run)
    values = [read(d) for d in dirs]
    return values if values and all(v is not None for v in values) else None


def first_epoch_loss(run_dir: Path) -> float | None:
    """The mean training loss over the first epoch (metrics.json)."""
    metrics = read_json(run_dir / "metrics.json") or {}
    epochs = metrics.get("epochs")
    return number(epochs[0].get("train_loss")) if isinstance(epochs, list) and epochs and isinstance(
        epochs[0], dict) else None


def dead_per_seed(run_dir: Path) -> list[float] | None:
    """The run's largest dead share of any interval, per layer (diagnostics.json's summary)."""
    summary = (read_json(run_dir / "diagnostics.json") or {}).get("summary") or {}
    for key in ("dead_max", "inactive_max"):
        layers = _floats(summary.get(key))
        if layers:
            return layers
    return None


def above(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool | None:
    """a's range wholly above b's: True; wholly below or equal: False; overlapping: None."""
    if a[0] > b[2]:
        return True
    if a[2] <= b[0]:
        return False
    return None


def percent(x: float) -> str:
    return f"{x:.1%}" if x < 0.1 else f"{x:.0%}"


def span(values: list[float], fmt: Callable[[float], str]) -> str:
    """One value, or "low–high" over seeds."""
    low, high = min(values), max(values)
    return fmt(low) if fmt(low) == fmt(high) else f"{fmt(low)}–{fmt(high)}"
