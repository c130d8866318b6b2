"""What training shows as it goes: a tqdm bar on a terminal, a plain line now and then elsewhere;
and the folder the closing ``tensorboard --logdir`` names.

A bar redraws itself with carriage returns several times a second; written to a log file
(``make train > log 2>&1``, a batch job) that is thousands of ``\\r`` updates in one line.  When
the bar's stream (stderr) is not a terminal, a short line is printed instead once every
``PLAIN_EVERY_S`` seconds of the epoch, and none for an epoch shorter than that (its epoch line
says all).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm.auto import tqdm  # a widget in a notebook, text in a terminal

PLAIN_EVERY_S = 10.0


class PlainProgress:
    """tqdm's update/set_postfix/close, as a line on stderr every PLAIN_EVERY_S seconds."""

    def __init__(self, total: int, initial: int, desc: str):
        self.total, self.n, self.desc, self.postfix = total, initial, desc, ""
        self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= PLAIN_EVERY_S and self.n < self.total:
            self.last = now
            print(f"{self.desc}  {self.n / self.total:4.0%} ({self.n:,}/{self.total:,} batches){self.postfix}",
                  file=sys.stderr, flush=True)

    def set_postfix(self, **values: str) -> None:
        self.postfix = "".join(f"  {key} {value}" for key, value in values.items())

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    """A tqdm bar when enabled and stderr is a terminal or a notebook draws it, a PlainProgress when
    enabled and output goes to a file or a pipe."""
    if enabled and not sys.stderr.isatty() and not _in_notebook():
        return PlainProgress(total, initial, desc)
    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, disable=not enabled)


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel, whose output a notebook draws: not merely one that
    imported ipykernel (a process running a notebook through jupyter_client does)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and hasattr(shell, "kernel")


def runs_root_of(run: Path, runs_root: Path = Path("runs")) -> Path:
    """The folder to give TensorBoard: the runs root when the run is (anywhere) under it, as a
    sweep's trials are; else the folder holding the run.  Relative to the working folder when inside it."""
    where = run.resolve()
    if runs_root.resolve() in where.parents:
        return runs_root
    try:
        return where.parent.relative_to(Path.cwd().resolve())
    except ValueError:
        return where.parent
