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
  train/ val/ test/      TensorBoard's per-epoch numbers of each split, one sub-run each (events files only)
  .lock                  held by the one process that writes the run
```

One process at a time writes a run: ``RunFolder`` holds an exclusive lock on ``.lock`` from
the moment it opens the folder until the run ends (the operating system drops it when a process
dies, so a killed run never blocks the next one).  Every file is written to a temporary file,
fsynced and renamed.  The files that end an epoch are one set, renamed checkpoint.pth, then
metrics.json, then last.pth, the record that makes the set current; what a crash between two
renames replaced ahead of last.pth is rolled back (``recover``) before a resume.  The format,
and what a reader may rely on after a crash, is stated in docs/run-folder.md.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import re
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

from mlp.errors import UserError
from mlp.numbers import json_ready
from mlp.files import cause, open_regular, writing
from mlp.run.checkpoint import checkpoint_bytes
from mlp.run.durable import json_bytes
from mlp.run.durable import commit, previous_name
from mlp.run.record import (BEST, CONFIG, LAST, LOCK, METRICS, SPLIT_RUNS, RunDamaged, RunRecord,
                            split_event_files)

METRICS_CSV = "metrics.csv"  # the same per-epoch history as metrics.json, for spreadsheets
RUN_FILES = (CONFIG, METRICS, METRICS_CSV, BEST, LAST, "diagnostics.json")
LOCK_FILE = LOCK
COMMIT_ORDER = (BEST, METRICS, METRICS_CSV, LAST)  # an epoch's files are renamed in this order: last.pth makes them current
KEPT = (BEST, METRICS)  # kept as .<name>.previous until the set is complete, to roll a cut-short set back
# what mlp leaves behind when a write is cut short (today's names and the older mkstemp ones)
_LEFTOVER = re.compile(r"\.(%s)\.[A-Za-z0-9_]{8}\.tmp" % "|".join(map(re.escape, RUN_FILES)))


class RunFolder:
    """The folder of one run.  ``writes=False`` (DDP ranks other than 0) makes every write a no-op."""

    def __init__(self, path: Path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes
        self.facts: dict[str, Any] = {}  # what heads metrics.json: name, device, parameters
        self.epoch_held = 0  # the finished epochs the files in the folder hold
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
        ours = RunRecord(path).has(LOCK_FILE)  # every folder an mlp run wrote has its lock file
        folder = cls(path).locked()
        others = sorted(item.name for item in path.iterdir() if item.name != LOCK_FILE)
        if others and not overwrite:
            folder.release(forget=not ours)
            raise UserError(f"--run-dir {path} is not empty; add --overwrite to replace the run in it, "
                            f"or use --resume {path} to continue it")
        named = [name for name in others if name in RUN_FILES or name.startswith("events.out.tfevents.")] + \
            [item.relative_to(path).as_posix() for item in split_event_files(path)]
        if named and not ours:  # files by mlp's names that no mlp run wrote (it would have left its lock file)
            folder.release(forget=True)
            raise UserError(f"--run-dir {path} holds files no mlp run wrote ({', '.join(named[:3])}"
                            f"{', ...' if len(named) > 3 else ''}); --overwrite replaces only a run of mlp: "
                            "choose an empty folder")
        if others:
            folder.remove_run_files()
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

        file = self.path / LOCK_FILE
        try:
            lock = os.fdopen(open_regular(file, os.O_RDWR | os.O_CREAT), "r+")
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UserError(f"{file} is a symbolic link, not the lock file mlp makes; remove it "
                                "(mlp never follows it)") from None
            if e.errno == errno.EINVAL:
                raise UserError(f"{file} is a pipe, device or socket, not the lock file mlp makes; remove it") from None
            raise UserError(f"cannot create {file}: {cause(e)}") from None
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
        try:
            lock.truncate(0)
            lock.write(f"pid {os.getpid()} on {socket.gethostname()}")
            lock.flush()
        except OSError as e:
            lock.close()
            raise UserError(f"cannot write {file}: {cause(e)}") from None
        self._lock = lock
        return self

    def release(self, forget: bool = False) -> None:
        """Drop the lock; ``forget`` also removes the lock file (a folder that turned out to hold no run)."""
        if self._lock is not None:
            try:
                self._lock.truncate(0)  # an empty lock file: released in good order
                if forget:
                    (self.path / LOCK_FILE).unlink(missing_ok=True)
            except OSError:
                pass  # the lock goes with the descriptor all the same
            self._lock.close()  # closing drops the flock
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # The files -----------------------------------------------------------------------------

    def remove_run_files(self) -> None:
        """The files an earlier run wrote here (``--overwrite``): regular files by mlp's names only, and
        none at all when something by such a name is not a regular file."""
        kept = {previous_name(self.path / name).name for name in KEPT}
        items = [item for item in self.path.iterdir()
                 if item.name in RUN_FILES or item.name in kept or item.name.startswith("events.out.tfevents.")]
        items += split_event_files(self.path)
        splits = [self.path / split for split in SPLIT_RUNS if os.path.lexists(self.path / split)]
        for item in items:
            if not stat.S_ISREG(os.lstat(item).st_mode):
                self.release()
                raise UserError(f"{item} is a folder, link or special file, not a file mlp wrote; move it "
                                "away, then --overwrite")
        for split in splits:
            if not stat.S_ISDIR(os.lstat(split).st_mode):
                self.release()
                raise UserError(f"{split} is a file or link, not the TensorBoard folder mlp makes; move it "
                                "away, then --overwrite")
        for item in items:
            with writing(item, action="remove"):
                item.unlink()
        for split in splits:  # emptied: it goes too (a folder still holding other files stays)
            if not any(split.iterdir()):
                with writing(split, action="remove"):
                    split.rmdir()

    def remove_leftovers(self) -> None:
        """Temporary files of a write cut short by a kill -9 (by mlp's names: no other file is touched)."""
        for item in self.path.iterdir():
            if _LEFTOVER.fullmatch(item.name) and stat.S_ISREG(os.lstat(item).st_mode):
                with writing(item, action="remove"):
                    item.unlink(missing_ok=True)

    def recover(self, last: dict[str, Any]) -> None:
        """Before a resume: roll back what an epoch's set cut short replaced ahead of ``last`` (last.pth,
        which makes a set current), so the folder holds the set last.pth names; then check it does."""
        record = RunRecord(self.path)
        best_epoch = last["resume"]["best"]["epoch"]
        self.epoch_held = last["resume"]["epoch"]
        previous = previous_name(self.path / BEST)
        if record.has(previous.name):
            held = _epoch_or_none(record, BEST)
            if held != best_epoch and _epoch_or_none(record, previous.name) == best_epoch:
                os.replace(previous, self.path / BEST)
                print(f"note: {self.path}: put back the checkpoint.pth of epoch {best_epoch} (the write of epoch "
                      f"{held} was cut short)", file=sys.stderr)
            previous.unlink(missing_ok=True)
        record = RunRecord(self.path)
        record.check_agreement(last)
        previous_name(self.path / METRICS).unlink(missing_ok=True)
        metrics = _metrics_or_none(record)
        history = last["resume"]["history"]
        # metrics.json holds the history as JSON rounds it (mlp.numbers); last.pth holds it exactly
        if metrics is None or metrics.get("epochs") != json_ready(history) or \
                (metrics.get("best") or {}).get("epoch") != best_epoch:
            self.save(metrics={**(metrics or {}), **metrics_record("interrupted", history, last["resume"]["best"])})

    def write_config(self, text: str) -> None:
        self._write({CONFIG: text.encode()})

    def save(self, *, last: dict | None = None, best: dict | None = None, metrics: dict | None = None) -> None:
        """Any of checkpoint.pth, metrics.json (with metrics.csv) and last.pth, all or none, renamed in that order."""
        blobs = {}
        if best is not None:
            blobs[BEST] = checkpoint_bytes(best)
        if metrics is not None:
            blobs[METRICS] = json_bytes({**self.facts, **metrics})
            blobs[METRICS_CSV] = csv_bytes(metrics["epochs"])
        if last is not None:
            blobs[LAST] = checkpoint_bytes(last)
        self._write(blobs, epoch=last["epoch"] if last is not None else None)

    def write_json(self, name: str, data: Any) -> None:
        self._write({name: json_bytes(data)})

    def write_status(self, status: str, history: list[dict], best: dict) -> None:
        """metrics.json of a run that ended early: ``interrupted``, ``diverged``, ``failed`` or ``pruned``."""
        self.save(metrics=metrics_record(status, history, best))

    def best_checkpoint(self, epoch: int | None = None) -> dict[str, Any]:
        """checkpoint.pth, refused (one line) unless it holds ``epoch`` when one is given."""
        ckpt = RunRecord(self.path).checkpoint(BEST)
        if epoch is not None and ckpt.get("epoch") != epoch:
            raise RunDamaged(f"{self.path / BEST} holds epoch {ckpt.get('epoch')}, not the best epoch {epoch} "
                             "this run measured; put back that epoch's checkpoint.pth, or train again")
        return ckpt

    def _write(self, blobs: dict[str, bytes], epoch: int | None = None) -> None:
        if not self.writes or not blobs:
            return
        try:
            commit({self.path / name: data for name, data in blobs.items()},
                   keep=tuple(self.path / name for name in KEPT))
        except OSError as e:
            if getattr(e, "committed", False) and epoch is not None:
                self.epoch_held = epoch
            held = f"epoch {self.epoch_held}" if self.epoch_held else "no finished epoch yet"
            where = Path(e.filename2 or e.filename or "").name if isinstance(e.filename2 or e.filename, str) else ""
            reason = (f"{where} there is a folder, not a file; move it away" if e.errno == errno.EISDIR and where
                      else cause(e))
            raise UserError(f"cannot write {', '.join(blobs)} in {self.path}: {reason}; the files there still "
                            f"hold {held} (free space or fix the folder, then resume)") from None
        if epoch is not None:
            self.epoch_held = epoch


def metrics_record(status: str, history: list[dict], best: dict, test: dict | None = None) -> dict[str, Any]:
    return {"status": status, "epochs": history, "best": best, **({"test": test} if test is not None else {})}


def csv_bytes(rows: list[dict]) -> bytes:
    """metrics.csv: one row per epoch, a column per key (in the order they first appear)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for row in rows for k in row)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(json_ready(rows))  # the numbers as metrics.json holds them
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
    record = RunRecord(path)
    if not record.is_run():
        return "new"
    if record.config_text() != config_yaml:
        raise UserError(f"{path} holds a run with a different config; {retry_hint}")
    status = record.metrics().get("status")
    if status in ENDED:
        return status
    return "resume" if record.has(LAST) else "new"


def _epoch_or_none(record: RunRecord, name: str) -> int | None:
    try:
        return record.checkpoint(name).get("epoch")
    except UserError:
        return None


def _metrics_or_none(record: RunRecord) -> dict[str, Any] | None:
    try:
        return record.metrics() or None
    except UserError:
        return None
