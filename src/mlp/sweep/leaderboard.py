"""A sweep's leaderboard: one row per trial, read from the study's storage alone (so it shows
every worker's trials), as a table, ``leaderboard.csv`` and ``leaderboard.md``."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from mlp.files import writing
from mlp.sweep.space import shown
from mlp.tables import COLUMNS, cell, markdown_table

# the leaderboard's columns after the trial and its swept values: keys of mlp.commands.runs.COLUMNS, as in `mlp runs --json`
LEADERBOARD = ["status", "epochs_done", "best_val_acc", "test_acc", "train_time_s"]


def leaderboard(plan, study) -> list[dict[str, Any]]:
    """One row per trial of the study (a resumed trial's attempts are one row), read from the
    storage alone; best validation accuracy first.  A grid also lists combinations not started."""
    from mlp.sweep.study import origin

    latest = {}
    for trial in sorted(study.trials(), key=lambda t: t.number):
        if trial.user_attrs.get("status") != "surplus" and set(trial.params) >= set(plan.space.keys):
            latest[origin(trial)] = trial
    now = time.time()
    rows = [_row(plan, trial, study.me, now) for trial in latest.values()]
    if plan.space.kind == "grid":
        seen = {row["trial"] for row in rows}
        rows += [{"trial": plan.name(values, 0), "values": values, "status": "not started"}
                 for values in plan.space.combinations() if plan.name(values, 0) not in seen]
    for row in rows:
        for key in (*LEADERBOARD, "epochs", "host"):
            row.setdefault(key, None)
    # None last; the sort is stable, so equals keep the study's order
    rows.sort(key=lambda r: (r["best_val_acc"] is None, -(r["best_val_acc"] or 0), -(r["test_acc"] or 0)))
    return rows


def _row(plan, trial, me: dict, now: float) -> dict[str, Any]:
    from mlp.sweep.study import is_abandoned, origin
    from optuna.trial import TrialState

    attrs, reported = trial.user_attrs, trial.intermediate_values
    if trial.state == TrialState.RUNNING:
        status = "interrupted" if is_abandoned(trial, me, now) else "running"
    else:
        status = {TrialState.COMPLETE: "finished", TrialState.PRUNED: "pruned",
                  TrialState.WAITING: "queued"}.get(trial.state) or attrs.get("status") or "failed"
    values = {key: trial.params[key] for key in plan.space.keys}
    return {"trial": plan.name(values, origin(trial)), "values": values, "status": status,
            "epochs_done": attrs.get("epochs_done", len(reported)), "epochs": attrs.get("epochs"),
            "best_val_acc": attrs.get("best_val_acc", max(reported.values(), default=None)),
            "test_acc": attrs.get("test_acc"), "train_time_s": attrs.get("train_time_s"),
            "host": attrs.get("host") or trial.system_attrs.get("mlp:worker", {}).get("host")}


def leaderboard_table(plan, rows: list[dict]) -> tuple[list[str], list[list]]:
    """The leaderboard as the text and markdown tables show it; a host column when several ran trials."""
    hosts = len({row["host"] for row in rows if row["host"]}) > 1
    header = ["trial", *plan.space.keys, *(COLUMNS[k] for k in LEADERBOARD), *(["host"] if hosts else [])]
    cells = [[row["trial"], *(shown(v) for v in row["values"].values()),
              *("" if row[k] is None else cell(row, k) for k in LEADERBOARD), *([row["host"]] if hosts else [])]
             for row in rows]
    return header, cells


@writing()
def write_leaderboard(plan, rows: list[dict]) -> None:
    from mlp.run.durable import commit

    table = io.StringIO(newline="")
    csv.writer(table).writerows([["trial", *plan.space.keys, *LEADERBOARD, "host"],
                                 *([row["trial"], *row["values"].values(), *(row[k] for k in LEADERBOARD),
                                    row["host"]] for row in rows)])
    # both or neither, each replaced whole: a full disk keeps the previous leaderboard
    commit({plan.sweep_dir / "leaderboard.csv": table.getvalue().encode(),
            plan.sweep_dir / "leaderboard.md": (markdown_table(*leaderboard_table(plan, rows)) + "\n").encode()})
