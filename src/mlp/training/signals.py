"""How SIGINT and SIGTERM reach a running command.

``handling(handler)`` installs one handler for both signals for the length of a block and puts
the previous handlers back afterwards.  Training installs ``StopRequest`` through it (finish the
step, save, stop); ``mlp compare`` and ``mlp sweep`` install ``Workers.stop`` through it
(training/workers.py), which passes each signal on to their trainings' processes once.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import Callable

from tqdm import tqdm

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def handling(handler: Callable[[int, object], None]):
    """``handler`` receives SIGINT and SIGTERM inside the block; outside the main thread
    (where Python cannot install handlers) the signals are left alone."""
    try:
        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class StopRequest:
    """The first SIGINT/SIGTERM asks the loop to stop after the current step; a second SIGINT quits.

    With several ranks, each may get the signal at a different step, so it is only recorded
    in ``received``; the loop acts on ``signum`` once the ranks have agreed on it (``agree``).
    """

    def __init__(self, world_size: int = 1, announce: bool = True):
        self.signum: int | None = None  # the stop the loop acts on
        self.received: int | None = None  # the signal this process got
        self.world_size, self.announce = world_size, announce

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        if self.world_size == 1:
            self.signum = signum
        if self.announce and self.world_size == 1:
            tqdm.write(f"\n{signal.Signals(signum).name}: saving last.pth after this step "
                       "(Ctrl-C again to quit at once)")
        elif self.announce:
            tqdm.write(f"\n{signal.Signals(signum).name}: all processes save last.pth and stop at the next "
                       "logging step or epoch end")

    def agree(self, device) -> None:
        from mlp.training import distributed

        self.signum = distributed.agree_on_stop(self.received, device)

    def installed(self):
        return handling(self._handle)


def die_with_parent(signum: int) -> bool:
    """Ask Linux to send this process ``signum`` when its parent (the thread that started it)
    dies (PR_SET_PDEATHSIG); whether it could (not elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    ctypes.CDLL(None).prctl(1, signum)  # 1 = PR_SET_PDEATHSIG
    return True


def alive(pid: int) -> bool:
    """Whether a process with this id exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
