"""Everything a run writes to TensorBoard, in one place.

Tags group in TensorBoard's sidebar: ``train/...`` and ``val/...`` per epoch (x = epoch),
``step/...`` every ``train.log_every`` steps (x = optimizer step), ``test/...`` once.
"""

from __future__ import annotations

import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class RunLogger:
    def __init__(self, run_dir: Path, purge_step: int | None = None, enabled: bool = True):
        # purge_step: events at or after this step, left by a process that was stopped
        # after its last checkpoint, are dropped, so a resumed run is one unbroken curve.
        # enabled=False (DDP ranks other than 0) writes nothing, not even an empty event file.
        self.writer = None
        if enabled:
            if purge_step is not None:
                _wait_for_a_later_second(Path(run_dir))
            self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)

    def step(self, step: int, loss: float, lr: float) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar("step/loss", loss, step)
        self.writer.add_scalar("step/lr", lr, step)

    def epoch(self, epoch: int, record: dict) -> None:
        if self.writer is None:
            return
        for split in ("train", "val"):
            for metric in ("loss", "accuracy"):
                value = record.get(f"{split}_{metric}")
                if value is not None:
                    self.writer.add_scalar(f"{split}/{metric}", value, epoch)
        self.writer.add_scalar("train/lr", record["lr"], epoch)
        self.writer.add_scalar("train/samples_per_s", record["samples_per_s"], epoch)

    def test(self, epoch: int, result: dict) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar("test/loss", result["loss"], epoch)
        self.writer.add_scalar("test/accuracy", result["accuracy"], epoch)

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()


def _wait_for_a_later_second(run_dir: Path) -> None:
    """TensorBoard reads a run's event files in name order, and a name starts with the second
    it was created in; a resumed run's file must sort after the files already there."""
    seconds = [int(p.name.split(".")[3]) for p in run_dir.glob("events.out.tfevents.*")
               if p.name.split(".")[3].isdigit()]
    while seconds and time.time() < max(seconds) + 1:
        time.sleep(0.05)
