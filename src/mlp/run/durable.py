"""Durable writes: a file is written whole beside its place, fsynced, then renamed over it.

``commit`` writes a set of files in the order given, which is the order of their renames: the
run folder puts the epoch's data first and the file that makes them current last (see
docs/run-folder.md).  A file replaced that a reader may still need until the set is complete
(``keep``) is first hard-linked to ``.<name>.previous``, so a crash between two renames can be
rolled back to the old set.

Temporary files are ``.<name>.<random>.tmp`` beside their target, made with ``O_EXCL`` and
``O_NOFOLLOW`` (never through a link), with mode 0666 less the umask, as any file a user's
program makes.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
PREVIOUS_SUFFIX = ".previous"


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def previous_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{PREVIOUS_SUFFIX}")


def write_temporary(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary file beside ``path``, fsynced; its name."""
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(files: dict[Path, bytes], keep: tuple[Path, ...] = ()) -> None:
    """Write ``files`` all or none (every temporary is written and fsynced before the first
    rename, so a failed write replaces nothing), then rename them in order.  Each path in
    ``keep`` that is replaced is hard-linked to its ``previous_name`` first and unlinked once
    every rename is durable."""
    written: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            written.append((write_temporary(path, data), path))
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
    try:
        kept = [_keep_previous(path) for path in keep if path in files]
        for folder in {path.parent for path in kept if path is not None}:
            fsync_folder(folder)  # the copies on the disk before any rename
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
    renamed: list[Path] = []
    try:
        for tmp, path in written:
            os.replace(tmp, path)
            renamed.append(path)
    except BaseException:
        _roll_back(written, renamed, kept)
        raise
    try:
        for folder in {path.parent for path in files}:
            fsync_folder(folder)  # the renames themselves made durable
    except OSError as e:
        e.committed = True  # every file is in place, if perhaps not yet on the disk
        raise
    for previous in kept:
        if previous is not None:
            previous.unlink(missing_ok=True)


def _roll_back(written: list[tuple[Path, Path]], renamed: list[Path], kept: list[Path | None]) -> None:
    """A rename failed: the files renamed before it go back to their previous versions where one was
    kept, and the temporaries not renamed are removed."""
    for path in renamed:
        previous = previous_name(path)
        if previous in kept:
            os.replace(previous, path)
    for tmp, path in written:
        if path not in renamed:
            tmp.unlink(missing_ok=True)


def _keep_previous(path: Path) -> Path | None:
    """Hard-link ``path`` (when it is there) to its previous name; that name, or None."""
    previous = previous_name(path)
    previous.unlink(missing_ok=True)
    try:
        os.link(path, previous, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError:  # a file system without hard links: a copy does the same
        with open(path, "rb") as f:
            os.replace(write_temporary(previous, f.read()), previous)
    return previous


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """One file, replaced whole: a crash at any moment leaves the old file or the new one."""
    commit({Path(path): data})


def json_bytes(obj: Any) -> bytes:
    from mlp.numbers import dumps  # floats to float32's 7 digits, NaN as null (mlp.numbers)

    return (dumps(obj, indent=2) + "\n").encode()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))
