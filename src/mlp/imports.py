"""How mlp's commands import torch quickly.

``import torch`` and ``torch._dynamo`` (which building the first torch optimizer imports) take
seconds of Python on a small CPU, most of the fast recipe's time.  Two things shorten that:

- ``paused_gc``: Python's cyclic garbage collector is paused while they import.  They make about
  500,000 objects that the collector tracks, nearly all of which live as long as the process,
  and it scans them again and again as the heap grows: in a plain ``import torch, torch._dynamo``
  on a 2-core CPU, five full collections and 0.6 s of collecting in all.  When the imports are
  done, what exists is frozen (``gc.freeze``: left out of later collections, so the training's
  collections stay short too) and the collector goes on as before.  The cost: the cycles that
  were already garbage then (about 9,000 objects after those imports; the peak memory of the
  fast recipe grew by 5 MB of its 970) are kept until the process ends.
- ``import_meanwhile``: ``torch._dynamo`` is imported on a thread of its own while the training
  reads its data (file reads and tensor work, which release the GIL).
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def paused_gc(freeze: bool = True) -> Iterator[None]:
    """No cyclic garbage collection inside; at the end, with ``freeze``, what exists is frozen, and
    the collector is back as it was (a pause inside a pause leaves the end to the outer one).
    Freezing is for the process's own entry point (``mlp train``): in a notebook that calls
    ``mlp.train``, the user's objects would be frozen too."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if freeze:
                gc.freeze()
            gc.enable()


def import_meanwhile(module: str, when: bool = True) -> Callable[[], None]:
    """Start importing ``module`` on a thread of its own (when ``when`` and it is not imported yet),
    with the collector paused (``paused_gc``, freezing at the end only in a process that has frozen
    before, as ``mlp train`` has); returns the function that waits for that import to end (call it
    also when what ran meanwhile failed: it resumes the collector).  What this thread does meanwhile must import nothing: two threads importing at once can
    each wait for a module the other holds.  Reading MNIST or CIFAR from files in place imports
    nothing (tests/test_train.py checks it); a download or an image folder imports torchvision, so
    ``Trainer`` passes ``files_in_place``.  A failed import is left to the import that needs the
    module, which raises it there."""
    if not when or module in sys.modules:
        return lambda: None

    def run() -> None:
        try:
            importlib.import_module(module)
        except BaseException:  # noqa: BLE001  raised again where the module is imported for use
            pass

    pause = paused_gc(freeze=gc.get_freeze_count() > 0)
    pause.__enter__()
    thread = threading.Thread(target=run, name=f"import {module}", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        pause.__exit__(None, None, None)

    return wait
