"""Everything a run writes to TensorBoard, in one place.

TensorBoard's Time Series tab orders tag groups alphabetically and opens the first two, so the
groups are named for that order: ``accuracy`` and ``loss`` first, then ``per_layer`` (the
diagnostics of ``mlp.observe.diagnostics``, one card per metric and hidden layer, layers of one metric
side by side), ``summary`` (the run's diagnostics in two numbers), ``training`` (learning rate,
speed) and last ``visuals``, every image, so that the cards of images come after the charts.  Every tag carries a description (the
(i) beside a card's title), written with its first value; values are written in TensorBoard's
tensor format, the one whose descriptions its default (fast) loader keeps.

- ``loss/step`` every ``train.log_every`` steps, ``training/lr`` with it (x = optimizer step);
- ``accuracy/epoch``, ``loss/epoch`` in the sub-runs ``train/`` and ``val/`` per epoch (x = epoch),
  and in ``test/`` once at the end, drawn flat across the epochs (the same value at the first, best
  and last epoch); ``training/samples_per_s`` per epoch;
- ``per_layer/<metric>/<layer>`` (x = optimizer step, layer 1 next to the input): scalars at the
  diagnostics' measured steps, histograms every ``train.histogram_every`` epochs;
- ``summary/inactive_max``, ``summary/signal_ratio_first|last`` per epoch, also HParams metrics;
- images ``visuals/inputs`` (at the start), ``visuals/misclassified_val``,
  ``visuals/confusion_matrix_test``, ``visuals/per_class_accuracy_test`` (at the end),
  and the model graph (the images and the graph only with ``train.diagnostics`` on).

TensorBoard gives each run one colour, so the splits' numbers are runs of their own, sub-folders
of the run (``<run>/train``, ``<run>/val``, ``<run>/test``, each with its own event file): one chart
per tag overlays them, in three colours named in the run list and the tooltip.  Everything else
is in the run's own folder, which is also the one HParams session (``mlp.observe.hparams``; the
splits' numbers are its metric groups).  A custom-scalars layout (the Custom Scalars tab) puts
the layers of one metric on one chart, and one layer's metric of every run on another.
"""

from __future__ import annotations

import functools
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.compat.proto.types_pb2 import DT_FLOAT
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.util.tensor_util import make_tensor_proto
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import custom_scalars, hparams
from torch.utils.tensorboard.summary import image as image_summary

from mlp.observe.hparams import hparam_summaries, hparam_values
from mlp.run.record import split_event_files

SAMPLE_IMAGES = 64  # in the visuals/inputs grid
_SCALAR = TensorShapeProto()  # a 0-d tensor
_SCALAR_METADATA = scalar_metadata.create_summary_metadata(None, None)
_PER_EPOCH = (" One point per epoch. TensorBoard's defaults bend such a short series: smoothing (0.6) "
              "pulls each point towards the earlier ones, and 'Ignore outliers in chart scaling' sets the "
              "y range from the 5th to the 95th percentile of the points, which leaves the first and last "
              "epochs outside the chart. The image visuals/epochs draws the same numbers as they are "
              "(or set smoothing to 0 and untick that box in Settings).")
_SPLITS = (" One line per split, each a run of its own (its own colour, named in the run list and the tooltip): "
           "<run>/train is counted on the epoch's training images during training (dropout and augmentation on); "
           "<run>/val on the held-out validation images after each epoch (checkpoint.pth keeps the best epoch); "
           "<run>/test is measured once at the end on the best checkpoint, on the test images; it is drawn flat "
           "across the epochs (the same value at the first, best and last epoch) to compare with the val "
           "curve: a reference line, not a curve.")
DESCRIPTIONS = {
    "accuracy/epoch": "Share of the images classified correctly, after each epoch." + _SPLITS + _PER_EPOCH,
    "loss/epoch": "Mean cross-entropy on the images, after each epoch (training: the mean over the epoch's "
                  "batches)." + _SPLITS + _PER_EPOCH,
    "loss/step": "Mean training cross-entropy over the last train.log_every steps (x = optimizer step).",
    "training/lr": "Learning rate at each logging step (x = optimizer step).",
    "training/samples_per_s": "Training images per second in each epoch, training only (x = epoch).",
    "summary/inactive_max": "The largest share of inactive units any hidden layer has shown so far "
                            "(per_layer/inactive): 0 is healthy, 1 is a layer that passes no gradient.",
    "summary/signal_ratio_first": "Gradient signal at hidden layer 1 divided by the signal at the last hidden "
                                  "layer, at the first measured step: far below 1 means the gradient "
                                  "vanishes on its way back to the input (per_layer/signal).",
    "summary/signal_ratio_last": "The same ratio at the latest measured step.",
    "visuals/inputs": "The first training images, as the network sees them before normalisation.",
    "visuals/epochs": "Accuracy and loss after each epoch, training and validation, drawn as they are (no "
                       "smoothing, no range trimming): the per-epoch charts below show the same numbers.",
    "visuals/misclassified_val": "Validation images the best checkpoint gets wrong, with predicted and "
                                     "true class (misclassified_test when there is no validation split).",
    "visuals/confusion_matrix_test": "Test split: true class (rows) against predicted class (columns).",
    "visuals/per_class_accuracy_test": "Test split: accuracy of each class, on an axis that spans the values; "
                                           "the weakest in orange-red.",
}
# per_layer/<metric>/<layer>; "{i}" is the layer, counted from 1 next to the input
LAYER_DESCRIPTIONS = {
    "signal": "Backpropagated signal reaching hidden layer {i}: root mean square, per example and per unit, "
              "of the gradient of the loss with respect to the layer's pre-activation (the output of "
              "hidden{j}.linear). Compare across layers: a signal that shrinks towards layer 1 is vanishing.",
    "inactive": "Share of hidden layer {i}'s units that were dead or saturated over the interval since the "
                "last measurement (step 0: one batch before any update); docs/diagnostics.md.",
    "dead": "Share of hidden layer {i}'s units whose derivative was exactly 0 on every training example of "
            "the interval (ReLU family: never a positive input).",
    "saturated": "Share of hidden layer {i}'s units whose derivative stayed below 1/5 of the activation's "
                 "largest (and not 0) on every training example of the interval: sigmoid/tanh near an asymptote.",
    "negative": "Leaky ReLU / PReLU: share of hidden layer {i}'s units whose input stayed below 0 on every "
                "example of the interval; they still pass back the slope a of the gradient (not dead).",
    "zero_share": "Share of hidden layer {i}'s outputs that are exactly 0 on the latest training batch.",
    "spread": "How much hidden layer {i}'s units vary across the batch's examples: RMS over units of each "
              "unit's std over the examples, over the output range (bounded activations) or the outputs' RMS. "
              "Below 0.005 the layer is collapsed: every unit gives about the same value for every input.",
    "grad_rms": "Root mean square per element of the gradient of hidden{j}.linear.weight at the measured step "
                "(after clipping when train.grad_clip is set).",
    "update_ratio": "How far the optimizer step moved hidden{j}.linear.weight: norm of the change over the "
                    "norm of the weights. Around 1e-3 is typical; far below, the layer barely learns.",
    "weight_rms": "Root mean square per element of hidden{j}.linear.weight.",
    "act_mean": "Mean of hidden layer {i}'s outputs (after the activation) on the latest training batch.",
    "act_std": "Standard deviation of hidden layer {i}'s outputs on the latest training batch.",
    "prelu_slope": "PReLU's learned slope below zero in hidden layer {i} (the mean when there is one per unit).",
    "swish_beta": "Swish's learned β in hidden layer {i}.",
    "weights": "Histogram of hidden{j}.linear.weight at the end of the epoch.",
    "preactivations": "Histogram of the activation's inputs in hidden layer {i} on the epoch's last training batch.",
    "activations": "Histogram of hidden layer {i}'s outputs on the epoch's last training batch.",
    "weight_grads": "Histogram of the gradient of hidden{j}.linear.weight at the epoch's last step.",
}
LAYOUT_METRICS = ("signal", "inactive", "grad_rms", "update_ratio", "weight_rms", "act_mean", "act_std")



def layer_tag(metric: str, layer: int) -> str:
    """The tag of ``metric`` for hidden layer ``layer`` (0-based) as TensorBoard shows it (1-based)."""
    return f"per_layer/{metric}/{layer + 1}"


def describe(tag: str) -> str:
    if tag.startswith("per_layer/"):
        _, metric, layer = tag.split("/")
        return LAYER_DESCRIPTIONS.get(metric, "").format(i=layer, j=int(layer) - 1)
    return DESCRIPTIONS.get(tag, "")


def _writes(method):
    """A failed write of the event file (a full disk, a read-only folder; TensorBoard's writer thread
    reports it at the next call) is one line naming the folder; the run's other files stay as they are."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as e:
            from mlp.errors import UserError
            from mlp.files import cause

            self.writer, self.splits = None, {}  # nothing more is written to them; closing would raise again
            raise UserError(f"cannot write TensorBoard's event file in {self.run_dir}: {cause(e)}; the run's "
                            "checkpoints and metrics.json are as the last finished epoch left them (free space or "
                            "fix the folder, then resume)") from None
    return wrapper


class RunLogger:
    def __init__(self, run_dir: Path, purge_step: int | None = None, enabled: bool = True,
                 purge_epoch: int | None = None):
        # purge_step (optimizer steps, the run's own folder) and purge_epoch (epochs, the train and val
        # sub-runs): events at or after them, left by a process that was stopped after its last
        # checkpoint, are dropped, so a resumed run is one unbroken curve; the test sub-run, written
        # once at the end, is dropped whole.  purge_epoch defaults to the epoch after the finished ones.
        # enabled=False (DDP ranks other than 0) writes nothing, not even an empty event file;
        # those ranks call only step(), epoch() and close(), which then do nothing.
        self.writer = None
        self.splits: dict[str, SummaryWriter] = {}  # the split sub-runs, each opened with its first value
        self.run_dir = Path(run_dir)
        self.described: set[tuple[str, str]] = set()  # (split, tag) whose description is written
        self.epochs: list[dict] = []  # every epoch's record, for the visuals/epochs figure
        self.purges: dict[str, int] | None = None  # a resumed run: each sub-run's purge step
        if enabled and purge_step is not None:  # a resumed run: the epochs before it
            self.epochs = _finished_epochs(Path(run_dir), purge_step)
            if purge_epoch is None:
                purge_epoch = self.epochs[-1]["epoch"] + 1 if self.epochs else 1
            self.purges = {"train": purge_epoch, "val": purge_epoch, "test": 0}
        if enabled:
            if purge_step is not None:
                _wait_for_a_later_second(Path(run_dir))
            self.writer = self._open(self.run_dir, purge_step)

    @_writes
    def _open(self, folder: Path, purge_step: int | None) -> SummaryWriter:
        """A writer of a new event file in ``folder``.  TensorBoard takes a run's first START for its
        beginning and every later one for a restart that drops the steps at and after it: a fresh
        run writes its START at step 0, and a resumed one two at its purge step, so that the purge
        happens on a folder whose first process (an older mlp) wrote none as well."""
        writer = SummaryWriter(str(folder), purge_step=0 if purge_step is None else purge_step)
        if purge_step is not None:
            writer.file_writer.add_event(
                Event(step=purge_step, wall_time=time.time(), session_log=SessionLog(status=SessionLog.START)))
        return writer

    def _split(self, split: str) -> SummaryWriter:
        """The writer of the sub-run ``<run>/<split>``, opened at its first value (a run without a
        validation split has no val sub-run)."""
        if split not in self.splits:
            purge = None if self.purges is None else self.purges[split]
            self.splits[split] = self._open(self.run_dir / split, purge)
        return self.splits[split]

    @_writes
    def start(self, config: dict[str, Any], model: torch.nn.Module, train_images: torch.Tensor,
              mean: list[float], std: list[float]) -> None:
        """Once, when a run begins: hyperparameters, layout, and with the diagnostics on the model graph
        and a grid of input images."""
        from mlp.data import resolve_root

        root = Path(config["data"]["root"]) if config["data"].get("dataset") == "folder" else \
            resolve_root(config["data"]["root"])  # MLP_DATA_ROOT does not replace a folder's root
        data = {**config.get("data", {}), "root": str(root.expanduser().resolve())}
        for summary in hparam_summaries(hparam_values({**config, "data": data})):
            self.writer.file_writer.add_summary(summary)
        self.writer.file_writer.add_summary(custom_scalars(scalars_layout(config["model"]["depth"])))
        # The graph and the input grid come with the diagnostics: the graph's first trace costs
        # about 0.2 s of CPU, and the grid's PNG imports Pillow (about 0.2 s more), each a few
        # percent of the fast recipe, which turns the diagnostics off.
        if config["train"].get("diagnostics", "step") == "off":
            return
        examples = train_images[:SAMPLE_IMAGES]
        with warnings.catch_warnings():  # add_graph traces with torch.jit, which warns it is deprecated
            warnings.simplefilter("ignore", FutureWarning)
            self.writer.add_graph(model, examples[:1])
        from mlp.observe.figures import denormalise

        # add_images tiles the batch into one grid itself (and needs no torchvision import)
        self._image("visuals/inputs", denormalise(examples, mean, std), 0, "NCHW")

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars({tag: value}, step)

    @_writes
    def scalars(self, values: dict[str, float], step: int, split: str | None = None) -> None:
        """Several scalars of one step in one event (one write instead of one per tag), in the run's
        own folder or in the sub-run of ``split``."""
        summary = Summary()
        for tag, value in values.items():
            description = self._description(tag, split or "")
            summary.value.add(tag=tag, tensor=TensorProto(dtype=DT_FLOAT, float_val=[value], tensor_shape=_SCALAR),
                              metadata=scalar_metadata.create_summary_metadata(None, description)
                              if description else _SCALAR_METADATA)
        writer = self.writer if split is None else self._split(split)
        writer.file_writer.add_summary(summary, step)

    def _description(self, tag: str, split: str = "") -> str | None:
        """A tag's description, the first time it is written to a run (TensorBoard keeps the first it sees)."""
        if (split, tag) in self.described:
            return None
        self.described.add((split, tag))
        return describe(tag)

    @_writes
    def step(self, step: int, loss: float, lr: float) -> None:
        if self.writer is None:
            return
        self.scalars({"loss/step": loss, "training/lr": lr}, step)

    @_writes
    def epoch(self, epoch: int, record: dict) -> None:
        if self.writer is None:
            return
        for split in ("train", "val"):
            values = {f"{metric}/epoch": record[f"{split}_{metric}"] for metric in ("accuracy", "loss")
                      if record.get(f"{split}_{metric}") is not None}
            if values:
                self.scalars(values, epoch, split)
        if record.get("samples_per_s") is not None:
            self.scalar("training/samples_per_s", record["samples_per_s"], epoch)
        self.epochs = [r for r in self.epochs if r["epoch"] < epoch] + [record]

    @_writes
    def epoch_curves(self, epoch: int) -> None:
        """The per-epoch accuracy and loss so far as one figure (``visuals/epochs``), exact where
        TensorBoard's chart defaults bend a series of a few points."""
        if self.writer is not None and self.epochs:
            from mlp.observe.figures import epochs_figure

            self._figure("visuals/epochs", epochs_figure(self.epochs), epoch)

    @_writes
    def layer_stats(self, step: int, metrics: dict[str, list[float | None]]) -> None:
        """``metrics``: metric name → one value per hidden layer (None where not measured)."""
        self.scalars({layer_tag(name, i): value for name, values in metrics.items()
                      for i, value in enumerate(values) if value is not None}, step)

    @_writes
    def layer_histograms(self, step: int, layers: list[dict[str, torch.Tensor]]) -> None:
        for i, tensors in enumerate(layers):
            for name, tensor in tensors.items():
                tag = layer_tag(name, i)
                summary = histogram_summary(tag, tensor.detach().float().cpu().numpy(), self._description(tag))
                self.writer.file_writer.add_summary(summary, step)

    @_writes
    def diagnostics_summary(self, epoch: int, summary: dict[str, Any]) -> None:
        """The run's diagnostics in a few numbers, also shown in the HParams table."""
        values = {"summary/inactive_max": summary.get("largest_inactive"),
                  "summary/signal_ratio_first": summary["signal_ratio"]["first"],
                  "summary/signal_ratio_last": summary["signal_ratio"]["last"]}
        for tag, value in values.items():
            if value is not None:
                self.scalar(tag, value, epoch)

    @_writes
    def misclassified(self, split: str, epoch: int, images: torch.Tensor, predicted: torch.Tensor,
                      true: torch.Tensor, classes: list[str], mean: list[float], std: list[float]) -> None:
        from mlp.observe.figures import denormalise, misclassified_figure

        if len(images):
            fig = misclassified_figure(denormalise(images.cpu(), mean, std), predicted.tolist(), true.tolist(), classes)
            self._figure(f"visuals/misclassified_{split}", fig, epoch)

    @_writes
    def test(self, epoch: int, result: dict, classes: list[str], figures: bool = True) -> None:
        """The final numbers (and figures); this also marks the run finished in the HParams tab.  The test
        numbers, measured once (on the best checkpoint, of ``epoch``), are drawn flat across the run's
        epochs: the same value at the first, the best and the last epoch."""
        numbers = {"accuracy/epoch": result["accuracy"], "loss/epoch": result["loss"]}
        epochs = [r["epoch"] for r in self.epochs] + [epoch]
        for x in sorted({min(epochs), epoch, max(epochs)}):
            self.scalars(numbers, x, "test")
        if figures:
            from mlp.observe.figures import confusion_matrix_figure, per_class_accuracy_figure

            self._figure("visuals/confusion_matrix_test", confusion_matrix_figure(result["confusion"], classes),
                         epoch)
            self._figure("visuals/per_class_accuracy_test",
                         per_class_accuracy_figure(result["per_class_accuracy"], classes), epoch)
        _, _, session_end = hparams({}, {})  # status: success
        self.writer.file_writer.add_summary(session_end)

    def _figure(self, tag: str, fig, step: int) -> None:
        from mlp.observe.figures import to_rgb_array

        self._image(tag, to_rgb_array(fig), step, "HWC")

    def _image(self, tag: str, image, step: int, dataformats: str) -> None:
        summary = image_summary(tag, image, dataformats=dataformats)  # a batch (NCHW) is tiled into one grid
        encoded = summary.value[0].image
        content = np.array([str(encoded.width).encode(), str(encoded.height).encode(), encoded.encoded_image_string],
                           dtype=object)
        metadata = image_metadata.create_summary_metadata(None, self._description(tag))
        self.writer.file_writer.add_summary(
            Summary(value=[Summary.Value(tag=tag, metadata=metadata, tensor=make_tensor_proto(content))]), step)

    @_writes
    def close(self) -> None:
        """Flush and close the event files; a second call does nothing."""
        if self.writer is None:
            return
        for writer in self.splits.values():
            writer.close()
        self.writer.close()
        self.writer, self.splits = None, {}


def _wait_for_a_later_second(run_dir: Path) -> None:
    """TensorBoard reads a run's event files in name order, and a name starts with the second
    it was created in; a resumed run's file must sort after the files already there."""
    files = [*run_dir.glob("events.out.tfevents.*"), *split_event_files(run_dir)]
    seconds = [int(p.name.split(".")[3]) for p in files if p.name.split(".")[3].isdigit()]
    while seconds and time.time() < max(seconds) + 1:
        time.sleep(0.05)


def _finished_epochs(run_dir: Path, purge_step: int) -> list[dict]:
    from mlp.errors import UserError
    from mlp.run.record import RunRecord

    try:
        return [r for r in RunRecord(run_dir).epochs() if r["step"] < purge_step]
    except (UserError, KeyError, TypeError):
        return []


def scalars_layout(depth: int) -> dict[str, dict[str, list]]:
    """The Custom Scalars tab: train, validation and test on one chart (three sub-runs, three colours);
    every layer of one metric on one chart (select one run to read it); one layer's metric across the
    selected runs on one chart."""
    layers = {f"{metric}, every layer": ["Multiline", [rf"^per_layer/{metric}/\d+$"]] for metric in LAYOUT_METRICS}
    across = {f"{metric}, layer {i}": ["Multiline", [rf"^per_layer/{metric}/{i}$"]]
              for metric in LAYOUT_METRICS for i in range(1, depth + 1)}
    return {
        "accuracy and loss": {"accuracy: train, val and test": ["Multiline", [r"^accuracy/epoch$"]],
                              "loss: train, val and test": ["Multiline", [r"^loss/epoch$"]]},
        "per layer: the layers of one run (select one run)": layers,
        "per layer: one layer across runs": across,
    }


def histogram_summary(tag: str, values: np.ndarray, description: str | None, buckets: int = 30) -> Summary:
    """A histogram in TensorBoard's tensor format (left edge, right edge, count per bucket), which,
    unlike the older format, keeps its description in TensorBoard's default loader."""
    values = values[np.isfinite(values)]
    if values.size:
        counts, edges = np.histogram(values, bins=buckets)
    else:
        counts, edges = np.zeros(buckets), np.zeros(buckets + 1)
    table = np.stack([edges[:-1], edges[1:], counts], axis=1).astype(np.float64)
    metadata = histogram_metadata.create_summary_metadata(None, description)
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata, tensor=make_tensor_proto(table))])


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
