"""Everything a run writes to TensorBoard, in one place.

Tags group in TensorBoard's sidebar: ``train/...`` and ``val/...`` per epoch (x = epoch),
``step/...`` every ``train.log_every`` steps (x = optimizer step), ``test/...`` once.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class RunLogger:
    def __init__(self, run_dir: Path, purge_step: int | None = None, enabled: bool = True):
        # purge_step: on resume, events written after the checkpoint's step are dropped,
        # so a resumed run continues one unbroken curve.
        # enabled=False (DDP ranks other than 0) writes nothing, not even an empty event file.
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step) if enabled else None

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
