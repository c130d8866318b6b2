"""The one reader of a run folder (``RunFolder`` in folder.py is the one writer).

Every command that reads a run reads it here: ``mlp runs``, compare's report, a sweep's
leaderboard, ``--resume``, TensorBoard's and the diagnostics' earlier steps.  The policy for a
damaged or foreign folder is one: ``RunDamaged`` (a ``UserError``), one line naming the file,
what is wrong with it and what to do; a command that lists many runs shows the line in an
``unreadable`` row instead.

Only regular files are read, never through a symbolic link and never from a pipe or a device,
and a small file no more than ``SMALL_FILE_LIMIT`` bytes of it.  docs/run-folder.md states
the format and what a reader may rely on after a crash.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

from mlp.errors import UserError, first_line
from mlp.files import read_regular, why_unreadable

SMALL_FILE_LIMIT = 64 * 2**20  # metrics.json of a very long run is a few MB
CONFIG, METRICS, DIAGNOSTICS, BEST, LAST, LOCK = (
    "config.yaml", "metrics.json", "diagnostics.json", "checkpoint.pth", "last.pth", ".lock")
# Sub-folders holding TensorBoard's per-epoch numbers of one split each (TensorBoard shows each as a
# run of its own, in its own colour); they hold event files only.
SPLIT_RUNS = ("train", "val", "test")


def split_event_files(path: Path) -> list[Path]:
    """The event files in the run's split sub-folders (``val/events.out.tfevents.*``; never through a link)."""
    folders = [path / split for split in SPLIT_RUNS]
    return [item for folder in folders if folder.is_dir() and not folder.is_symlink()
            for item in sorted(folder.iterdir()) if item.name.startswith("events.out.tfevents.")]


class RunDamaged(UserError):
    """A run folder whose files cannot be read, hold values of the wrong kind, or disagree."""


class RunRecord:
    """What the folder ``path`` holds of a run, read on demand; nothing is cached but the small files."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._parsed: dict[str, Any] = {}

    def has(self, name: str) -> bool:
        """Whether ``name`` is there as a regular file (a link or a pipe by that name is not)."""
        try:
            return stat.S_ISREG(os.lstat(self.path / name).st_mode)
        except OSError:
            return False

    def is_run(self) -> bool:
        return self.has(CONFIG)

    def _small(self, name: str) -> Any:
        """``name`` parsed (YAML or JSON), None when it is absent; damage is ``RunDamaged``."""
        if name in self._parsed:
            return self._parsed[name]
        file = self.path / name
        try:
            text = read_regular(file, SMALL_FILE_LIMIT).decode()
            value = _parse_yaml(text, name) if name.endswith(".yaml") else json.loads(text)
        except FileNotFoundError:
            value = None
        except OSError as e:
            raise RunDamaged(f"{file} is {why_unreadable(e)}") from None
        except (UnicodeDecodeError, ValueError, UserError, RecursionError) as e:
            raise RunDamaged(f"{file} is damaged ({type(e).__name__}: {first_line(e)}); "
                             "restore it, or remove the run") from None
        self._parsed[name] = value
        return value

    def _mapping(self, name: str) -> dict[str, Any]:
        value = self._small(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise RunDamaged(f"{self.path / name} holds a {type(value).__name__}, not a mapping; "
                             "it is not a file mlp wrote")
        return value

    def config_text(self) -> str | None:
        """config.yaml as written, or None when absent."""
        try:
            return read_regular(self.path / CONFIG, SMALL_FILE_LIMIT).decode()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RunDamaged(f"{self.path / CONFIG} is {why_unreadable(e)}") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise RunDamaged(f"{self.path / CONFIG} is damaged ({first_line(e)})") from None

    def config(self) -> Any:
        """config.yaml parsed (None when absent; whatever YAML it holds, which may be another tool's)."""
        return self._small(CONFIG)

    def metrics(self) -> dict[str, Any]:
        """metrics.json, ``{}`` before the first epoch ends."""
        return self._mapping(METRICS)

    def diagnostics(self) -> dict[str, Any]:
        """diagnostics.json, ``{}`` when the run has none."""
        return self._mapping(DIAGNOSTICS)

    def epochs(self) -> list[dict[str, Any]]:
        epochs = self.metrics().get("epochs") or []
        if not isinstance(epochs, list) or not all(isinstance(e, dict) for e in epochs):
            raise RunDamaged(f"{self.path / METRICS}: epochs is not a list of mappings")
        return epochs

    def status(self) -> str:
        """metrics.json's status; ``started`` before it exists; a ``running`` (or started) run whose
        process is gone (killed, its machine down) is ``stopped``."""
        status = self.metrics().get("status", "started")
        if status in ("running", "started") and not self.writer_alive():
            return "stopped"
        return status

    def writer_alive(self) -> bool:
        """Whether the process named in ``.lock`` may still be writing the run: False when the lock
        was released (empty), or names a process of this machine that is gone; True when unsure."""
        try:
            holder = read_regular(self.path / LOCK, 4096).decode(errors="replace").split()
        except (OSError, ValueError):
            return True  # no lock file (a run of an older mlp) or not one mlp made: nothing to tell
        if not holder:
            return False  # released in good order
        if len(holder) != 4 or holder[0] != "pid" or not holder[1].isdigit():
            return True
        if holder[3] != socket.gethostname():
            return True  # another machine's process: it may be running
        try:
            os.kill(int(holder[1]), 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True

    def loss_curve(self) -> list[list[float]]:
        """``[[step, training loss], ...]`` from the run's TensorBoard events (``loss/step``)."""
        from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
        from tensorboard.util.tensor_util import make_ndarray

        events = EventAccumulator(str(self.path), size_guidance={"tensors": 0}).Reload()
        try:
            return [[e.step, float(make_ndarray(e.tensor_proto))] for e in events.Tensors("loss/step")]
        except KeyError:
            return []

    # The checkpoints (torch) -----------------------------------------------------------------

    def checkpoint(self, name: str) -> dict[str, Any]:
        """checkpoint.pth or last.pth, loaded safely and checked against its schema."""
        from mlp.run.checkpoint import load_checkpoint

        file = self.path / name
        if not self.has(name):
            try:
                os.lstat(file)
            except FileNotFoundError:
                raise RunDamaged(f"{file} is missing") from None
            raise RunDamaged(f"{file} is a link or a special file, not a checkpoint mlp wrote; remove it")
        return load_checkpoint(file)

    def check_agreement(self, last: dict[str, Any]) -> None:
        """Refuse a folder whose checkpoint.pth is not the best epoch that ``last`` (last.pth) names."""
        best_epoch = last["resume"]["best"]["epoch"]
        if best_epoch is None:
            return
        fresh = (f"start a new run with --config {self.path / CONFIG}" if self.has(CONFIG) else
                 "start a new run with the config it was trained with")
        if not os.path.lexists(self.path / BEST):
            raise RunDamaged(f"--resume {self.path}: checkpoint.pth (the best epoch so far, {best_epoch}) is "
                             f"missing; put it back, or {fresh}")
        best = self.checkpoint(BEST)
        held = best.get("epoch", (best.get("metrics") or {}).get("epoch"))
        if held is not None and held != best_epoch:  # (a checkpoint that names no epoch cannot be checked)
            raise RunDamaged(
                f"{self.path}: checkpoint.pth holds epoch {held} but last.pth names epoch {best_epoch} as the best "
                "(the files disagree: a write was cut short, or a file was copied in); put back the checkpoint.pth "
                f"of epoch {best_epoch}, or {fresh}")


def _parse_yaml(text: str, name: str) -> Any:
    """Safe YAML (mlp.config's loader); its errors as ``ValueError``."""
    import yaml

    from mlp.yamlfile import parse_yaml

    try:
        return parse_yaml(text, name)
    except yaml.YAMLError as e:
        raise ValueError(first_line(e)) from None
