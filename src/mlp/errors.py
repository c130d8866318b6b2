"""The exception types that reach the command line (a user's mistake, a run that ended early),
and the two ways messages are worded."""

from __future__ import annotations

import difflib


class UserError(Exception):
    """A mistake in what the user typed or pointed at.

    The CLI prints the message as one line on stderr and exits with code 2.
    Anything else that escapes is a bug and keeps its traceback.
    """


class RunEnded(Exception):
    """A training run that ended before its last epoch; ``status`` is what metrics.json records."""

    status = "failed"


class Interrupted(RunEnded):
    """Training stopped on SIGINT or SIGTERM after saving ``last.pth``; exit code 128 + signal."""

    status = "interrupted"

    def __init__(self, signum: int, run_dir):
        import signal

        self.signal_name = signal.Signals(signum).name
        self.run_dir = run_dir
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {self.signal_name}")


class Pruned(RunEnded):
    """A study stopped this trial after an epoch (its validation accuracy lagged); ``last.pth`` and
    ``checkpoint.pth`` hold that epoch.  Raised by a ``fit(on_epoch=...)`` hook."""

    status = "pruned"

    def __init__(self, epoch: int):
        self.epoch = epoch
        super().__init__(f"pruned by the study after epoch {epoch}")


class Diverged(RunEnded, UserError):
    """The loss became NaN or infinite; the files of the last finished epoch stay."""

    status = "diverged"

    def __init__(self, loss: float, step: int):
        super().__init__(f"training diverged: the loss is {loss} at step {step}; lower optimizer.lr or set "
                         "train.grad_clip (last.pth and checkpoint.pth, if any, hold the last finished epoch)")


def first_line(error: BaseException | str, last: bool = False) -> str:
    """The first (or ``last``) non-empty line of an exception's message, or its type's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines:
        return lines[-1] if last else lines[0]
    return type(error).__name__ if isinstance(error, BaseException) else ""


def first_sentence(error: BaseException | str) -> str:
    """The first sentence of an error's first line: torch follows what went wrong with a paragraph
    of general advice ("This is an internal miniz error. If you are seeing this error, ...")."""
    line = first_line(error)
    end = line.find(". ")
    return line[:end] if end > 0 else line.rstrip(".")


def did_you_mean(word: str, choices, prefix: str = "") -> str:
    """``"did you mean 'X'?"`` for the choice closest to ``word`` (``prefix`` + X), or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean '{prefix}{close[0]}'?" if close else ""
