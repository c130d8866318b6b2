"""Where a sweep's study lives: a journal file (the default, ``SWEEP_DIR/optuna-journal.log``)
or a database (PostgreSQL for workers on several machines, SQLite), opened with mistakes and
lost connections as one line, and a journal kept readable after a process was killed while
writing it (a lock it left is taken over, a half-written last line cut off)."""

from __future__ import annotations

import os
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from mlp.errors import UserError, first_line

JOURNAL_NAME = "optuna-journal.log"  # the default storage, a file in the sweep folder
STALE_LOCK_S = 10  # a journal lock older than this was left by a killed process (a write takes milliseconds)


def quiet_optuna():
    """Import optuna with its per-trial log lines and experimental-feature warnings off."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_storage(spec: str):
    """A database URL (``postgresql://user@host/db``, ``sqlite:///file.db``) or a journal file path."""
    optuna = quiet_optuna()
    if "://" not in spec:
        path = Path(spec)
        if path.is_dir():
            raise UserError(f"--storage {spec} is a folder; give a file for the study's journal, "
                            f"e.g. {path / JOURNAL_NAME}, or a database URL")
        if not path.parent.is_dir():
            raise UserError(f"--storage {spec}: there is no folder {path.parent}")
        from optuna.storages.journal import JournalFileBackend

        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=journal_lock(str(path))))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise UserError(f"--storage {spec}: not a readable Optuna journal file ({first_line(e)}); restore it "
                            "from a copy, or start the sweep afresh with another --sweep-dir or --storage") from None
    import sqlalchemy

    shown = hide_password(spec)
    try:
        return _rdb_storage(_with_postgres_driver(spec))
    except ImportError as e:
        missing = getattr(e.__cause__ or e.__context__, "name", None) or e.name or "for it"
        hint = "pip install 'psycopg[binary]' (mlp's postgres extra)" if spec.startswith("postgresql") else "install it"
        raise UserError(f"--storage {shown}: the database driver {missing} is not installed; {hint}") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as e:
        first = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise UserError(f"--storage {shown}: cannot open the database: {first}") from None


def _rdb_storage(url: str):
    """Optuna's database storage.  Workers starting together on a fresh database all try to make
    its tables, and all but one fail on a duplicate name: those try again once the tables exist."""
    import random

    import sqlalchemy

    optuna = quiet_optuna()
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.5 + random.random())


def storage_errors() -> tuple[type[Exception], ...]:
    """What a storage raises when it cannot be reached (a database gone, a file system full)."""
    import sqlalchemy

    optuna = quiet_optuna()
    return (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
            optuna.exceptions.StorageInternalError)


@contextmanager
def storage_kept():
    """A storage lost while the sweep runs (a database server stopped, a file system gone) is one
    line: nothing is lost, since every trial's run folder holds its epochs."""
    try:
        yield
    except storage_errors() as e:
        cause = e.__cause__ or getattr(e, "orig", None) or e
        raise UserError(f"lost the study's storage ({type(e).__name__}: {first_line(cause)}); run the same "
                        "command again once it is back") from None


def journal_lock(path: str):
    """Optuna's lock on a journal file, which also takes over a lock left by a process killed
    while it wrote (saying so), and cuts off a last line such a process left half written."""
    from optuna.storages.journal import JournalFileSymlinkLock

    class JournalLock(JournalFileSymlinkLock):
        def acquire(self) -> bool:
            _break_stale_lock(path + ".lock", self)
            super().acquire()
            _cut_partial_line(path)
            return True

    return JournalLock(path, grace_period=STALE_LOCK_S)


def _break_stale_lock(lock_file: str, lock) -> None:
    """A journal's lock is held for one write of a few lines; one older than STALE_LOCK_S was
    left by a process that died while writing."""
    try:
        age = time.time() - os.lstat(lock_file).st_mtime
    except FileNotFoundError:
        return
    if age <= STALE_LOCK_S:
        return
    print(f"note: {lock_file} was left {age:.0f} s ago by a process killed while it wrote the study's "
          "journal; taking it over", file=sys.stderr)
    try:
        lock.release()
    except RuntimeError:
        pass  # another worker took it over first


def _cut_partial_line(path: str) -> None:
    """With the lock held: a journal whose last line has no line end was cut by a kill while
    being written; that line was never complete, so no reader took it in.  It goes, before
    the next write would glue itself to it and make the journal unreadable."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        end = size
        while end > 0:  # back to the last line end
            start = max(0, end - 65536)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())
    print(f"note: the last line of {path} was cut off (a process killed while writing it); removed it "
          f"({size - end} bytes)", file=sys.stderr)


def _with_postgres_driver(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy 2.0 and psycopg (3) to 2.1: use whichever is
    installed (``mlp[postgres]`` brings psycopg), so the plain URL works with either."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module, dialect in (("psycopg", "postgresql+psycopg://"), ("psycopg2", "postgresql+psycopg2://")):
        if importlib.util.find_spec(module) is not None:
            return dialect + url.removeprefix("postgresql://")
    return url


def hide_password(url: str) -> str:
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: show the scheme only
        return url.split("://", 1)[0] + "://..."
