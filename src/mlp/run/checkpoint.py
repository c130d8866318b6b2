"""Atomic saving and safe loading of checkpoints (and of the small files beside them).

A checkpoint is a dict of plain data: tensors, numbers, strings, lists and dicts.  It is
loaded with ``torch.load(weights_only=True)``, which never runs code from the file.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from mlp.errors import UserError, first_line, first_sentence
from mlp.files import require_file

# 2: last.pth's "resume" section is the training state under its own field names (mlp.training.state.TrainingState);
# a format-1 last.pth is converted when it is resumed (mlp.training.state.upgrade_resume_section).
FORMAT_VERSION = 2
REQUIRED_KEYS = ("format_version", "config", "model_state", "classes", "input_shape", "normalization")


def checkpoint_bytes(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, "torch_version": str(torch.__version__), **payload}, buffer)
    return buffer.getvalue()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint; every way it can be unusable is a ``UserError``."""
    path = Path(path)
    ckpt = read_torch_file(path)
    weights = bare_state_dict(ckpt)
    if weights is not None:
        raise UserError(f"{path} holds bare weights (a state dict of {', '.join(list(weights)[:3])}, ...) "
                        "without the config that built them; give --config CONFIG describing that model "
                        "(mlp eval and mlp predict take it)")
    return check_checkpoint(ckpt, path)


# Where the training scripts of tutorials keep the model's weights in a dict of their own.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model_state", "model")


def bare_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """The weights of a file that is a bare ``model.state_dict()`` (or a dict holding one under a
    usual key, as ``{"model_state_dict": ..., "epoch": ...}``), else None.  An mlp checkpoint is not one."""
    if not isinstance(obj, dict) or "format_version" in obj:
        return None
    if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return obj
    for key in STATE_DICT_KEYS:
        if key in obj and bare_state_dict(obj[key]) is not None:
            return obj[key]
    return None


def check_checkpoint(ckpt: Any, path: Path) -> dict[str, Any]:
    """``ckpt`` as loaded from ``path``, refused unless it is a complete mlp checkpoint this mlp reads."""
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise UserError(f"{path} is a torch file but not an mlp checkpoint (no format_version)")
    version = ckpt["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path} is not a valid mlp checkpoint (format_version is {version!r}, not a format "
                        "number mlp writes); use a checkpoint mlp train wrote")
    if version > FORMAT_VERSION:
        raise UserError(
            f"{path} was written by a newer mlp (checkpoint format {version}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade mlp to load it"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise UserError(f"{path} is not a complete mlp checkpoint: missing {', '.join(missing)}")
    from mlp.run.schema import check_fields

    check_fields(ckpt, path)
    return ckpt


def read_torch_file(path: Path) -> Any:
    """What ``torch.save`` wrote to ``path``, loaded without running code from it."""
    require_file(path, "checkpoint", "; give the checkpoint file in it (checkpoint.pth or last.pth)")
    with open(path, "rb") as f:
        head = f.read(64)
    kind = _file_kind(path, head)
    if kind == "safetensors":
        raise UserError(f"{path} is a safetensors file (weights without the config that built them); mlp reads "
                        "the checkpoint.pth that mlp train writes, or a torch state dict with --config")
    if kind is not None:
        raise UserError(f"{path} is not an mlp checkpoint: it is {kind}; give the checkpoint.pth (or last.pth) "
                        "that mlp train wrote")
    _check_zip_crcs(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing on them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # the weights-only loader met a class or function it does not allow
            raise UserError(
                f"refusing to load {path}: it holds pickled Python objects, which could run code when "
                "loaded; an mlp checkpoint holds only tensors and plain data"
            ) from None
        raise UserError(f"{path} is not an mlp checkpoint: it is a Python pickle that torch.save did not "
                        "write, or a damaged file") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is truncated or corrupt ({first_sentence(e)}); use another copy") from None


# The first bytes of files people mistake for checkpoints.
_SIGNATURES = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
               b"\x93NUMPY": "a NumPy .npy file", b"\x89HDF": "an HDF5 file", b"%PDF": "a PDF file"}


def _file_kind(path: Path, head: bytes) -> str | None:
    """What a file that is not a torch checkpoint is, from its first bytes, or None when it may be one.

    torch.save writes a zip archive with a data.pkl inside; older torch wrote a bare pickle,
    which starts with the byte 0x80.
    """
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return None  # a damaged torch file, most likely: the CRC check says so
        return None if any(n.endswith("data.pkl") for n in names) else "a zip archive, not a file torch.save wrote"
    if head[0] == 0x80:
        return None
    for signature, kind in _SIGNATURES.items():
        if head.startswith(signature):
            return kind
    if len(head) > 10 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"
    try:
        text = head.decode("utf-8").lstrip()
    except UnicodeDecodeError:  # cut in the middle of a character, or not text at all
        text = head[:-3].decode("utf-8", errors="replace").lstrip() if b"\x00" not in head else None
    if text is None or "\ufffd" in text:
        return "neither a torch file nor text (unknown bytes)"
    return "a JSON file" if text.startswith(("{", "[")) else "a text file"


def _check_zip_crcs(path: Path) -> None:
    """torch.save writes a zip archive with a CRC-32 per member, which torch.load does not check:
    verify them, so that flipped bytes in the weights are caught rather than evaluated."""
    try:
        if not zipfile.is_zipfile(path):
            return  # not a zip at all: torch.load says what it is
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise UserError(f"{path} is truncated or corrupt ({first_sentence(e)}); use another copy") from None
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
        detail = first_line(str(e).strip().split("\n", 1)[-1])  # the line after "Error(s) in loading ..."
        raise UserError(f"{path}: the weights do not match the model its own config describes ({detail})") from None
    return cfg, model


def load_model(path: str | Path, config: str | Path | None = None, data_root: str | None = None):
    """The checkpoint, its config and its model, for ``mlp eval`` and ``mlp predict``.

    ``path`` is an mlp checkpoint, or with ``config`` a bare state dict from another script
    (see mlp.commands.state_dict); the data set's files are then read for the normalisation.
    """
    path = Path(path)
    obj = read_torch_file(path)
    weights = bare_state_dict(obj)
    if weights is None:
        ckpt = check_checkpoint(obj, path)
        if config is not None:
            raise UserError(f"{path} is an mlp checkpoint, which carries the config that built it; drop --config")
    elif config is None:
        ckpt = load_checkpoint(path)  # says that --config is needed
    else:
        from mlp.commands.state_dict import adopt_state_dict

        ckpt = adopt_state_dict(weights, path, Path(config), data_root)
    cfg, model = rebuild_model(ckpt, path)
    return ckpt, cfg, model
