"""What a run's diagnostics.json comes to: the measurements of one kind, the per-layer summary
(largest inactive, dead, saturated shares, smallest spread, the signal ratio) and the table the
end of training prints.  Read by the training's own diagnostics and by mlp compare's summary."""

from __future__ import annotations

from typing import Any


def measured(record: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The measurements that have ``key`` (signal, inactive, ...) for every layer, in step order."""
    return [m for m in record.get("measurements") or [] if m.get(key) and None not in m[key]]


def summarise(record: dict[str, Any]) -> dict[str, Any]:
    """What a run's diagnostics come to: per layer the largest inactive, dead, saturated and
    negative-side share of any interval and the smallest spread, and the signal of layer 1 over
    that of the last hidden layer at the first and the latest measurement."""
    with_signal = measured(record, "signal")

    def per_layer(key, pick):
        rows = [m[key] for m in measured(record, key)]
        return [pick(column) for column in zip(*rows)]

    def ratio(m):
        first, last = m["signal"][0], m["signal"][-1]
        return first / last if last > 0 else None

    inactive_max = per_layer("inactive", max)
    return {
        "inactive_max": inactive_max,
        "dead_max": per_layer("dead", max),
        "saturated_max": per_layer("saturated", max),
        "negative_max": per_layer("negative", max),
        "spread_min": per_layer("spread", min),
        "largest_inactive": max(inactive_max) if inactive_max else None,
        "signal_ratio": {"first": ratio(with_signal[0]) if with_signal else None,
                         "last": ratio(with_signal[-1]) if with_signal else None},
        "signal_steps": {"first": with_signal[0]["step"] if with_signal else None,
                         "last": with_signal[-1]["step"] if with_signal else None},
    }


def format_report(record: dict[str, Any]) -> str:
    """Per hidden layer: the inactive share in the last interval and at its largest, the signal at
    the first and at the last measured step."""
    signals, inactive = measured(record, "signal"), measured(record, "inactive")
    if not signals:
        return ""
    first, last = signals[0], signals[-1]
    depth = len(first["signal"])
    now = inactive[-1]["inactive"] if inactive else [None] * depth
    peaks = summarise(record)["inactive_max"] or [None] * depth
    share = lambda v: "-" if v is None else f"{v:.1%}"
    header = ["layer", "inactive", "at most", f"signal step {first['step']}", f"signal step {last['step']}"]
    rows = [[str(i), share(a), share(b), f"{s0:.2e}", f"{s1:.2e}"]
            for i, (a, b, s0, s1) in enumerate(zip(now, peaks, first["signal"], last["signal"]), 1)]
    from mlp.tables import text_table

    return ("layers   per hidden layer, 1 next to the input (docs/diagnostics.md: how to read them)\n"
            + text_table(header, rows, rule=False, indent="         ", right=True))
