"""What the file system says, in words: why a path cannot be read or written.

Every file a user names (a config, a checkpoint, a run folder) is checked here first, so a
folder given as a file, a symbolic link that loops or points nowhere, a pipe, a read-only
folder or a full disk is reported as what it is rather than as "not found" or a traceback.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path

from mlp.errors import UserError

# errno → the cause as a user would say it; anything else falls back to the system's own words
_CAUSES = {
    errno.ENOENT: "no such file or folder",
    errno.ELOOP: "a symbolic link loop (the link leads back to itself)",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENAMETOOLONG: "a name in the path is too long for the file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EISDIR: "it is a folder",
    errno.EEXIST: "something with that name is already there",
}


def cause(error: OSError) -> str:
    """The reason an operating-system call failed, in plain words."""
    return _CAUSES.get(error.errno, (error.strerror or type(error).__name__).lower())


def file_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file (``"not found"``, ``"is a folder"``, ...), or None."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ENOENT and path.is_symlink():
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
        if e.errno == errno.ENOENT:
            return "not found"
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop (the link leads back to itself)"
        return f"cannot be read: {cause(e)}"
    if stat.S_ISDIR(mode):
        return "is a folder"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a device, pipe or socket)"
    if not os.access(path, os.R_OK):
        return "cannot be read: permission denied"
    return None


def require_file(path: Path, what: str, folder_hint: str = "") -> None:
    """Raise a UserError naming the true cause when ``path`` is not a readable file.

    ``what`` names the file's role ("config file", "checkpoint"); ``folder_hint`` is added
    when a folder was given (e.g. "; give the checkpoint.pth in it").
    """
    problem = file_problem(path)
    if problem is None:
        return
    if problem == "not found":
        raise UserError(f"{what} not found: {path}")
    raise UserError(f"{what} {path} {problem}{folder_hint if problem == 'is a folder' else ''}")


def read_limited(path: Path, limit: int, what: str, usual: str) -> bytes:
    """The bytes of a file that must be small, refused without reading it whole when it is not;
    ``usual`` says how large such a file usually is."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{what} {path} is larger than {limit // 1024} KiB, which {usual} never is; "
                        "refusing to read it")
    return data


@contextmanager
def writing(path: Path | None = None, action: str = "write"):
    """Turn a failed write (read-only, full disk, name too long, no permission) into a UserError
    that names the path and the cause.  Also a decorator: ``@writing(action="create")``."""
    try:
        yield
    except OSError as e:
        where = Path(e.filename) if e.filename is not None else path
        reason = cause(e)
        if e.errno == errno.ENOTDIR and where is not None:  # name the file that stands where a folder must
            blocking = next((p for p in where.parents if p.exists() and not p.is_dir()), None)
            reason = f"{blocking} is a file, not a folder" if blocking else reason
        raise UserError(f"cannot {action} {where}: {reason}") from None


def output_folder(path: Path, flag: str) -> None:
    """Make the folder a command writes into (``--out``, ``--sweep-dir``), or say in one line why
    it cannot be used."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot make the folder: {cause(e)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not writable; choose another folder")


def open_regular(path: Path, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
    """A descriptor of ``path`` when it is a regular file, opened without following a link and
    without waiting on a pipe; an ``OSError`` (``ELOOP`` for a link, ``EINVAL`` for a pipe,
    device or socket) otherwise.  ``flags`` may add ``O_RDWR | O_CREAT`` to make it."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        what = "a folder" if stat.S_ISDIR(kind) else "a pipe, device or socket"
        raise OSError(errno.EISDIR if stat.S_ISDIR(kind) else errno.EINVAL, f"it is {what}, not a file", str(path))
    os.set_blocking(fd, True)
    return fd


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (``ValueError`` past it);
    never through a symbolic link, never from a pipe or device (``OSError``)."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"it is larger than {limit // 2**20} MB, more than such a file ever holds")
    return data


def why_unreadable(error: OSError) -> str:
    """``cause`` for a file mlp reads, naming a link or a special file as what it is."""
    if error.errno == errno.ELOOP:
        return "a symbolic link, which mlp does not follow inside a run folder"
    if error.errno in (errno.EINVAL, errno.EISDIR) and error.strerror and error.strerror.startswith("it is"):
        return error.strerror.removeprefix("it is ")
    if error.errno in (errno.EACCES, errno.EPERM):
        return "not readable (permission denied)"
    return f"unreadable ({cause(error)})"


def open_log(path: Path):
    """``path`` opened to append text (a run's train.log), refused in one line when it is a link, a
    pipe or a device: mlp writes only into files it made or that are plain files."""
    try:
        return os.fdopen(open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a")
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EINVAL):
            raise UserError(f"cannot write {path}: it is {why_unreadable(e)}; remove it") from None
        raise UserError(f"cannot write {path}: {cause(e)}") from None
