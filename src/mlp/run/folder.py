"""A run's folder and the files mlp keeps in it, owned by one object.

```
runs/<name>-<time>/
  config.yaml            the resolved config, written when the run starts
  last.pth               the latest state: everything needed to resume exactly
  checkpoint.pth         the best epoch on validation accuracy
  metrics.json           status, per-epoch history, best epoch, final test metrics
  metrics.csv            the same per-epoch history, one row per epoch (spreadsheets, pandas)
  diagnostics.json       per-layer measurements (mlp.observe.diagnostics writes it through write_json)
  events.out.tfevents.*  TensorBoard (mlp.observe.tensorboard.RunLogger writes those)
  .lock                  held by the one process that writes the run
```

One process at a time writes a run: ``RunFolder`` holds an exclusive lock on ``.lock`` from
the moment it opens the folder until the run ends (the operating system drops it when a process
dies, so a killed run never blocks the next one).  Every file is written to a temporary file,
fsynced and renamed; the files that end an epoch are written together, all or none, so a full
disk leaves the previous epoch's set intact and consistent.  A failed write is one line naming
the folder and the cause.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mlp.run.checkpoint import atomic_write_many, checkpoint_bytes, json_bytes, load_checkpoint
from mlp.errors import UserError, first_line
from mlp.files import cause, writing

RUN_FILES = ("config.yaml", "metrics.json", "metrics.csv", "checkpoint.pth", "last.pth", "diagnostics.json")
LOCK_FILE = ".lock"


class RunFolder:
    """The folder of one run.  ``writes=False`` (DDP ranks other than 0) makes every write a no-op."""

    def __init__(self, path: Path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes
        self.facts: dict[str, Any] = {}  # what heads metrics.json: name, device, parameters
        self._lock = None

    @classmethod
    def create(cls, name: str, run_dir: Path | None, overwrite: bool, runs_root: Path) -> RunFolder:
        """A fresh folder, locked: ``runs_root/<name>-<time>`` (never reused), or the ``--run-dir`` asked for."""
        if run_dir is None:
            base = Path(runs_root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
            path, n = base, 2
            while not _made(path):
                path, n = base.with_name(f"{base.name}-{n}"), n + 1
            return cls(path).locked()
        path = Path(run_dir)
        with writing(path, action="create"):  # even asking whether it exists can fail (a name too long)
            if path.exists() and not path.is_dir():
                raise UserError(f"--run-dir {path} is a file, not a folder")
        _made(path, exist_ok=True)
        folder = cls(path).locked()
        if any(item.name != LOCK_FILE for item in path.iterdir()):
            if not overwrite:
                folder.release()
                raise UserError(f"--run-dir {path} is not empty; add --overwrite to replace the run in it, "
                                f"or use --resume {path} to continue it")
            for item in path.iterdir():
                if item.name in RUN_FILES or item.name.startswith("events.out.tfevents."):
                    item.unlink()
        folder.remove_leftovers()
        return folder

    @classmethod
    def existing(cls, path: Path, writes: bool = True) -> RunFolder:
        """The folder of a run to continue, locked (when this process writes it)."""
        folder = cls(path, writes)
        if writes:
            folder.locked().remove_leftovers()
        return folder

    # The lock ------------------------------------------------------------------------------

    def locked(self) -> RunFolder:
        import fcntl

        with writing(self.path / LOCK_FILE):
            lock = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(lock) or "its process id is not recorded"
            lock.close()
            raise UserError(f"{self.path} is in use by another mlp process ({holder}); wait for it to end, "
                            "or give another folder") from None
        stale = _read(lock)
        if stale:  # written by a process that ended without releasing it: killed, or its machine went down
            print(f"note: {self.path} was locked by {stale}, which is no longer running; taking the lock over",
                  file=sys.stderr)
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}")
        lock.flush()
        self._lock = lock
        return self

    def release(self, forget: bool = False) -> None:
        """Drop the lock; ``forget`` also removes the lock file (a folder that turned out to hold no run)."""
        if self._lock is not None:
            self._lock.truncate(0)  # an empty lock file: released in good order
            if forget:
                (self.path / LOCK_FILE).unlink(missing_ok=True)
            self._lock.close()  # closing drops the flock
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # The files -----------------------------------------------------------------------------

    def remove_leftovers(self) -> None:
        """Temporary files of a write cut short by a kill -9."""
        for leftover in self.path.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def write_config(self, text: str) -> None:
        self._write({"config.yaml": text.encode()})

    def save(self, *, last: dict | None = None, best: dict | None = None, metrics: dict | None = None) -> None:
        """Any of last.pth, checkpoint.pth and metrics.json (with metrics.csv), all or none."""
        files = {"last.pth": last, "checkpoint.pth": best}
        blobs = {name: checkpoint_bytes(payload) for name, payload in files.items() if payload is not None}
        if metrics is not None:
            blobs["metrics.json"] = json_bytes({**self.facts, **metrics})
            blobs["metrics.csv"] = csv_bytes(metrics["epochs"])
        self._write(blobs)

    def write_json(self, name: str, data: Any) -> None:
        self._write({name: json_bytes(data)})

    def write_status(self, status: str, history: list[dict], best: dict, test: dict | None = None) -> None:
        """metrics.json: ``running``, ``finished``, ``interrupted``, ``diverged`` or ``failed``."""
        self.save(metrics=metrics_record(status, history, best, test))

    def best_checkpoint(self) -> dict[str, Any]:
        return load_checkpoint(self.path / "checkpoint.pth")

    def _write(self, blobs: dict[str, bytes]) -> None:
        if not self.writes or not blobs:
            return
        try:
            atomic_write_many({self.path / name: data for name, data in blobs.items()})
        except OSError as e:
            raise UserError(f"cannot write {', '.join(blobs)} in {self.path}: {cause(e)}; the files there "
                            "still hold the last finished epoch (free space or fix the folder, then resume)") from None


def metrics_record(status: str, history: list[dict], best: dict, test: dict | None = None) -> dict[str, Any]:
    return {"status": status, "epochs": history, "best": best, **({"test": test} if test is not None else {})}


def csv_bytes(rows: list[dict]) -> bytes:
    """metrics.csv: one row per epoch, a column per key (in the order they first appear)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for row in rows for k in row)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _made(path: Path, exist_ok: bool = False) -> bool:
    """Make ``path`` (and its parents); False if it already exists and ``exist_ok`` is not set.
    A folder that cannot be made is one line naming the path and the cause."""
    with writing(path, action="create"):
        try:
            path.mkdir(parents=True, exist_ok=exist_ok)
        except FileExistsError:
            if exist_ok:
                raise
            return False
    return True


def _read(lock) -> str:
    lock.seek(0)
    return lock.read().strip()


ENDED = ("finished", "pruned", "diverged")  # a run in one of these states is never trained again


def previous_run(path: Path, config_yaml: str, retry_hint: str) -> str:
    """What ``path`` holds of a run of the config ``config_yaml`` (a sweep's trial, a compare's
    run): its status when it ended (``ENDED``), ``resume`` (a last.pth to continue) or ``new``.
    A run of another config there is refused; ``retry_hint`` says what to do instead."""
    config_file, metrics_file = path / "config.yaml", path / "metrics.json"
    if not config_file.is_file():
        return "new"
    try:
        same = config_file.read_text() == config_yaml
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"cannot read the run in {path}: {type(e).__name__}: {first_line(e)}") from None
    if not same:
        raise UserError(f"{path} holds a run with a different config; {retry_hint}")
    status = metrics.get("status") if isinstance(metrics, dict) else None
    if status in ENDED:
        return status
    return "resume" if (path / "last.pth").is_file() else "new"
