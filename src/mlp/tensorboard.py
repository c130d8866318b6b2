"""Everything a run writes to TensorBoard, in one place.

Tags group in TensorBoard's sidebar:

- ``step/loss|lr`` every ``train.log_every`` steps (x = optimizer step);
- ``train/...`` and ``val/...`` per epoch (x = epoch), ``test/...`` once at the end;
- ``layers/<i>/...`` per hidden layer (x = optimizer step): scalars every interval
  (``dead_fraction``, ``saturated_fraction``, ``act_mean``, ``act_std``, ``grad_norm``,
  ``weight_norm``, ``prelu_slope``, ``swish_beta``), histograms (``weights``, ``preact``,
  ``act``, ``grad``) every ``train.histogram_every`` epochs;
- images ``inputs/samples`` (at the start), ``val/misclassified``,
  ``test/confusion_matrix`` and ``test/per_class_accuracy`` (at the end), and the model graph.

The run's hyperparameters go into the run's own folder (not a sub-run, as
``SummaryWriter.add_hparams`` would make), so one training is one run in the HParams,
Scalars and Images tabs alike.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from mlp.config import activation_label

# The scalars the HParams tab shows beside each run's hyperparameters (their last values).
HPARAM_METRICS = ("test/accuracy", "test/loss", "val/accuracy", "val/loss", "train/accuracy", "train/loss")
SAMPLE_IMAGES = 64  # in the inputs/samples grid


class RunLogger:
    def __init__(self, run_dir: Path, purge_step: int | None = None, enabled: bool = True):
        # purge_step: events at or after this step, left by a process that was stopped
        # after its last checkpoint, are dropped, so a resumed run is one unbroken curve.
        # enabled=False (DDP ranks other than 0) writes nothing, not even an empty event file;
        # those ranks call only step(), epoch() and close(), which then do nothing.
        self.writer = None
        if enabled:
            if purge_step is not None:
                _wait_for_a_later_second(Path(run_dir))
            self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)

    def start(self, config: dict[str, Any], model: torch.nn.Module, train_images: torch.Tensor,
              mean: list[float], std: list[float]) -> None:
        """Once, when a run begins: hyperparameters, the model graph, a grid of input images."""
        experiment, session_start, _ = hparams(hparam_values(config), dict.fromkeys(HPARAM_METRICS, 0.0))
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(session_start)
        examples = train_images[:SAMPLE_IMAGES]
        with warnings.catch_warnings():  # add_graph traces with torch.jit, which warns it is deprecated
            warnings.simplefilter("ignore", FutureWarning)
            self.writer.add_graph(model, examples[:1])
        from mlp.plots import denormalise

        # add_images tiles the batch into one grid itself (and needs no torchvision import)
        self.writer.add_images("inputs/samples", denormalise(examples, mean, std), 0)

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

    def layer_stats(self, step: int, layers: list[dict[str, float]]) -> None:
        for i, stats in enumerate(layers):
            for name, value in stats.items():
                self.writer.add_scalar(f"layers/{i}/{name}", value, step)

    def layer_histograms(self, step: int, layers: list[dict[str, torch.Tensor]]) -> None:
        for i, tensors in enumerate(layers):
            for name, tensor in tensors.items():
                self.writer.add_histogram(f"layers/{i}/{name}", tensor.detach().float().cpu(), step)

    def misclassified(self, tag: str, epoch: int, images: torch.Tensor, predicted: torch.Tensor,
                      true: torch.Tensor, classes: list[str], mean: list[float], std: list[float]) -> None:
        from mlp.plots import denormalise, misclassified_figure

        if len(images):
            fig = misclassified_figure(denormalise(images.cpu(), mean, std), predicted.tolist(), true.tolist(), classes)
            self._figure(tag, fig, epoch)

    def test(self, epoch: int, result: dict, classes: list[str], figures: bool = True) -> None:
        """The final numbers (and figures); this also marks the run finished in the HParams tab."""
        self.writer.add_scalar("test/loss", result["loss"], epoch)
        self.writer.add_scalar("test/accuracy", result["accuracy"], epoch)
        if figures:
            from mlp.plots import confusion_matrix_figure, per_class_accuracy_figure

            self._figure("test/confusion_matrix", confusion_matrix_figure(result["confusion"], classes), epoch)
            self._figure("test/per_class_accuracy",
                         per_class_accuracy_figure(result["per_class_accuracy"], classes), epoch)
        _, _, session_end = hparams({}, {})  # status: success
        self.writer.file_writer.add_summary(session_end)

    def _figure(self, tag: str, fig, step: int) -> None:
        from mlp.plots import to_rgb_array

        self.writer.add_image(tag, to_rgb_array(fig), step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the event file; a second call does nothing."""
        if self.writer is None:
            return
        self.writer.close()
        self.writer = None


def _wait_for_a_later_second(run_dir: Path) -> None:
    """TensorBoard reads a run's event files in name order, and a name starts with the second
    it was created in; a resumed run's file must sort after the files already there."""
    seconds = [int(p.name.split(".")[3]) for p in run_dir.glob("events.out.tfevents.*")
               if p.name.split(".")[3].isdigit()]
    while seconds and time.time() < max(seconds) + 1:
        time.sleep(0.05)


def log_activations(log_dir: Path, figures: dict[str, np.ndarray], pixels: dict[str, torch.Tensor],
                    dataset: str | None) -> None:
    """``mlp activations``: ``activations/<name>`` curves and, with a data set, ``pixels/<name>``."""
    with SummaryWriter(str(log_dir)) as writer:
        for name, image in figures.items():
            writer.add_image(f"activations/{name}", image, 0, dataformats="HWC")
        for name, grid in pixels.items():
            writer.add_image(f"pixels/{name}", grid, 0)
        if pixels:
            writer.add_text("pixels/about", f"Top row: {dataset} test images, normalised as for training. "
                            "Bottom row: the same after the activation, on the same intensity scale.", 0)


def hparam_values(config: dict[str, Any]) -> dict[str, Any]:
    """Every config field as ``section.field``: numbers and strings as they are, the rest as text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == "activation" and isinstance(value, dict):  # leaky_relu(negative_slope=0.1)
            flat[key] = activation_label(value)
        elif isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in hparam_values(value).items()})
        elif isinstance(value, bool):
            flat[key] = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            flat[key] = value
        elif value is None:
            flat[key] = "none"  # a text value keeps the column in the table for every run
        else:
            flat[key] = str(value)
    return flat
