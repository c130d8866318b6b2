"""Where a run is, and what it has measured so far: the state that makes an exact resume possible.

``TrainingState`` is everything of a run besides the model, optimizer, scheduler and loss-scaler
states: last.pth's ``resume`` section is ``TrainingState.state_dict()`` (keys = field names)
plus those four.  ``EpochMetrics`` holds one epoch's per-step results on the device until the
epoch ends.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class EpochTotals:
    """Sums over the batches of an epoch done so far (a resumed epoch's earlier part, or all of it)."""

    loss_sum: float = 0.0  # of per-sample losses
    correct: int = 0
    seen: int = 0
    time: float = 0.0  # seconds spent training


class RandomStreams:
    """Every random stream of a run.

    - ``data``: the batch order (a CPU generator).  Each epoch's order is drawn from it when the
      epoch starts; ``data_epoch_start`` is its state before that draw, so a run resumed
      mid-epoch draws the same order again.
    - ``augment``: batched augmentation, on the training device.
    - torch's global generators (CPU, and CUDA's): dropout.
    """

    def __init__(self, seed: int, rank: int, device: torch.device):
        self.device = device
        self.data = torch.Generator().manual_seed(seed)
        # Rank 0 draws what a single process would; the other ranks get their own augmentation.
        self.augment = torch.Generator(device=device).manual_seed(seed + 1 + 2 * rank)
        self.mark_epoch_start()

    def mark_epoch_start(self) -> None:
        self.data_epoch_start = self.data.get_state()

    def state_dict(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {"torch": torch.get_rng_state(), "data_epoch_start": self.data_epoch_start,
                "augment": self.augment.get_state(), "device_type": self.device.type,
                "cuda": torch.cuda.get_rng_state(self.device) if cuda else None}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        torch.set_rng_state(saved["torch"])
        self.data.set_state(saved["data_epoch_start"])
        self.mark_epoch_start()
        # On another kind of device the device-side streams (augmentation, CUDA dropout) cannot
        # carry over: they restart from the seed.  Batch order and weights still do.
        if saved.get("device_type", "cpu") == self.device.type:
            if self.device.type == "cuda" and saved.get("cuda") is not None:
                torch.cuda.set_rng_state(saved["cuda"], self.device)
            self.augment.set_state(saved["augment"])


@dataclass
class TrainingState:
    streams: RandomStreams
    epoch: int = 0  # epochs finished
    batch: int = 0  # batches of the current epoch finished
    step: int = 0  # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per finished epoch
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "val_accuracy": -1.0})
    carried: EpochTotals = field(default_factory=EpochTotals)  # of the current epoch before this process
    # Every step's loss stays on the device as the 0-d tensor the step made (keeping it costs no
    # kernel); they are stacked and read back once per logging interval.
    pending: list[torch.Tensor] = field(default_factory=list)  # the losses since the last logging step

    def state_dict(self) -> dict[str, Any]:
        return {"streams": self.streams.state_dict(), "epoch": self.epoch, "batch": self.batch,
                "step": self.step, "history": self.history, "best": self.best,
                "carried": asdict(self.carried), "pending": stack(self.pending, self.streams.device).cpu()}

    def load_state_dict(self, saved: dict[str, Any], count_carried: bool = True) -> None:
        """``count_carried=False`` (DDP ranks other than 0): the saved epoch totals are all ranks'
        together, and rank 0 carries them; the others start from zero but keep the time."""
        self.streams.load_state_dict(saved["streams"])
        self.epoch, self.batch, self.step = saved["epoch"], saved["batch"], saved["step"]
        self.history, self.best = saved["history"], saved["best"]
        carried = EpochTotals(**saved["carried"])
        self.carried = carried if count_carried else EpochTotals(time=carried.time)
        self.pending = list(saved["pending"].to(self.streams.device).unbind())

    def take_pending(self) -> tuple[torch.Tensor, int]:
        """The losses since the last logging step (emptied here) and the step of the first."""
        window, first = stack(self.pending, self.streams.device), self.step - len(self.pending) + 1
        self.pending = []
        return window, first

    def finish_epoch(self, record: dict[str, Any], improved: bool) -> None:
        self.history.append(record)
        if improved:
            self.best = {"epoch": record["epoch"], "val_accuracy": record.get("val_accuracy"),
                         "val_loss": record.get("val_loss")}
        self.epoch, self.batch, self.carried = self.epoch + 1, 0, EpochTotals()
        self.streams.mark_epoch_start()  # the next epoch's order is drawn from here


def upgrade_resume_section(saved: dict[str, Any], log_every: int) -> dict[str, Any]:
    """A format-1 last.pth's resume section in today's keys (same contents, other names)."""
    saved = dict(saved)
    saved["streams"], saved["carried"] = saved.pop("rng"), saved.pop("accumulated")
    if "window" in saved:  # older still: the logging interval's losses in a ring of log_every slots
        saved["pending"] = saved.pop("window")[:saved["step"] % log_every]
    return saved


class EpochMetrics:
    """One epoch's per-step results, kept on the device: each step's loss (the tensor the step
    made) and each batch's predicted classes in its slot of one buffer.  They are totalled when
    the epoch ends, and for the progress bar when it is shown.

    ``batches`` are the epoch's index tensors; a resumed epoch starts at ``first`` with the
    totals ``carried`` over from before the stop.
    """

    def __init__(self, batches: list[torch.Tensor], first: int, carried: EpochTotals, labels: torch.Tensor):
        self.batches, self.first, self.carried, self.labels = batches, first, carried, labels
        self.sizes = [len(b) for b in batches]
        self.predicted = torch.empty(sum(self.sizes), dtype=torch.long, device=labels.device)
        self.slots = self.predicted.split(self.sizes)
        self.starts = [0, *itertools.accumulate(self.sizes)]  # where each batch begins in `predicted`
        self.losses: list[torch.Tensor] = []

    def record(self, batch: int, loss: torch.Tensor, logits: torch.Tensor) -> None:
        self.losses.append(loss)
        torch.argmax(logits, 1, out=self.slots[batch])

    def correct_and_seen(self, done: int) -> tuple[torch.Tensor, int]:
        """Correct predictions (a device tensor) and samples over batches ``first..done``, plus carried."""
        samples = torch.cat(self.batches[self.first:done] or [self.batches[0][:0]])
        predicted = self.predicted[self.starts[self.first]:self.starts[done]]
        correct = self.carried.correct + (predicted == self.labels[samples]).sum()
        return correct, self.carried.seen + self.starts[done] - self.starts[self.first]

    def totals(self, done: int, elapsed: float) -> EpochTotals:
        """Read back once.  The losses are added on the host one step after another, so a resumed
        epoch sums to the same float as an uninterrupted one."""
        loss_sum = self.carried.loss_sum
        for value, size in zip(stack(self.losses, self.labels.device).tolist(), self.sizes[self.first:done]):
            loss_sum += value * size
        correct, seen = self.correct_and_seen(done)
        return EpochTotals(loss_sum, int(correct.item()), seen, self.carried.time + elapsed)


def stack(losses: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.stack(losses) if losses else torch.zeros(0, device=device)


def data_fingerprint(data) -> dict[str, list[float]]:
    """What identifies the data a run trains on, cheaply: per split its shape, the sum of its labels
    and of its pixels (which any other data set, or another copy's damaged bytes, changes)."""
    splits = {"train": data.train, "val": data.val, "test": data.test}
    return {name: [*split.images.shape, int(split.labels.sum().item()), pixel_sum(split.images)]
            for name, split in splits.items() if split is not None}


def pixel_sum(images: torch.Tensor) -> float:
    """The sum of every pixel, accumulated in float64.  On the CPU numpy's sum does it (about 5× as
    fast as torch's float64 sum there, which took 0.2 s of the fast recipe's 60,000 images); the
    two differ in the last bits alone, far inside what ``same_data`` tolerates."""
    if images.device.type == "cpu" and images.dtype in (torch.float32, torch.float64):
        return float(images.detach().numpy().sum(dtype=np.float64))
    return float(images.sum(dtype=torch.float64).item())


def same_data(saved: dict[str, list[float]], now: dict[str, list[float]]) -> str | None:
    """None when the two fingerprints are of the same data; else the split that differs."""
    for name in sorted(set(saved) | set(now)):
        a, b = saved.get(name), now.get(name)
        if a is None or b is None or a[:-1] != b[:-1] or abs(a[-1] - b[-1]) > 1e-6 * max(1.0, abs(a[-1])):
            return name
    return None


def check_restorable(ckpt: dict[str, Any], fingerprint: dict[str, list[float]], steps_per_epoch: int, where: str,
                     root: str) -> None:
    """Refuse a last.pth of other data than ``fingerprint``'s (when it records its own), or whose
    batch index lies past an epoch of ``steps_per_epoch``."""
    from mlp.errors import UserError

    saved = ckpt.get("data_fingerprint")
    differs = same_data(saved, fingerprint) if saved is not None else None
    if differs is not None:
        raise UserError(f"{where}: data.root {root} holds other data than this run trained on (its {differs} "
                        "split differs); resume with the run's own data, or start a new run")
    if ckpt["resume"]["batch"] >= steps_per_epoch:
        raise UserError(f"{where}: its training state is damaged (batch {ckpt['resume']['batch']} of an epoch of "
                        f"{steps_per_epoch}); resume from another copy, or start a new run")
