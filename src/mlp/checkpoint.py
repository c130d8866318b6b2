"""Atomic saving and safe loading of checkpoints (and of the small files beside them).

A checkpoint is a dict of plain data: tensors, numbers, strings, lists and dicts.  It is
loaded with ``torch.load(weights_only=True)``, which never runs code from the file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from mlp.errors import UserError

# 2: last.pth's "resume" section is the training state under its own field names (mlp.train.TrainingState);
# a format-1 last.pth is converted when it is resumed (mlp.train.upgrade_resume_section).
FORMAT_VERSION = 2
REQUIRED_KEYS = ("format_version", "config", "model_state", "classes", "input_shape", "normalization")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync it, then rename over ``path``.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    atomic_write_many({Path(path): data})


def atomic_write_many(files: dict[Path, bytes]) -> None:
    """Several files, all or none: every one is written to its temporary file and fsynced before
    the first rename, so a full disk (or any failed write) leaves all the old files in place."""
    written: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            written.append((_write_temporary(path, data), path))
    except BaseException:
        for tmp, _ in written:
            Path(tmp).unlink(missing_ok=True)
        raise
    for tmp, path in written:
        os.replace(tmp, path)
    for folder in {path.parent for path in files}:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the renames themselves durable
        finally:
            os.close(dir_fd)


def _write_temporary(path: Path, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def checkpoint_bytes(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, "torch_version": str(torch.__version__), **payload}, buffer)
    return buffer.getvalue()


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(path, checkpoint_bytes(payload))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint; every way it can be unusable is a ``UserError``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give the checkpoint file in it (checkpoint.pth or last.pth)")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    _check_zip_crcs(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            raise UserError(
                f"refusing to load {path}: it holds pickled Python objects, which could run code when "
                "loaded; an mlp checkpoint holds only tensors and plain data"
            ) from None
        raise UserError(f"{path} is not a checkpoint (unreadable as a torch file: {e})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is truncated or corrupt ({first}); use another copy") from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise UserError(f"{path} is a torch file but not an mlp checkpoint (no format_version)")
    version = ckpt["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(
            f"{path} was written by a newer mlp (checkpoint format {version}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade mlp to load it"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise UserError(f"{path} is not a complete mlp checkpoint: missing {', '.join(missing)}")
    return ckpt


def _check_zip_crcs(path: Path) -> None:
    """torch.save writes a zip archive with a CRC-32 per member, which torch.load does not check:
    verify them, so that flipped bytes in the weights are caught rather than evaluated."""
    try:
        if not zipfile.is_zipfile(path):
            return  # not a zip at all: torch.load says what it is
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise UserError(f"{path} is truncated or corrupt ({e}); use another copy") from None
    if damaged is not None:
        raise UserError(f"{path} is corrupt: '{damaged}' inside it fails its checksum; use another copy")


def rebuild_model(ckpt: dict[str, Any], path: str | Path = "checkpoint"):
    """The validated config and the model with its trained weights, from a checkpoint alone."""
    from mlp.config import validate_config
    from mlp.model import build_model

    cfg = validate_config(ckpt["config"], source=f"config in {path}")
    model = build_model(cfg.model, tuple(ckpt["input_shape"]), len(ckpt["classes"]))
    try:
        model.load_state_dict(ckpt["model_state"])
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else "")
        raise UserError(f"{path}: the weights do not match the model its own config describes ({detail})") from None
    return cfg, model
