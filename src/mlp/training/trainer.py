"""One run's parts and its epochs: the ``Trainer`` that ``fit`` (loop.py) drives.

``train_step`` is one optimizer step, ``train_epoch`` the batches of an epoch, ``end_epoch``
validation and the epoch's files; ``checkpoint`` is what last.pth and checkpoint.pth hold.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from mlp import __version__, threads
from mlp.imports import import_meanwhile
from mlp.training import distributed
from mlp.training.progress import progress_bar
from mlp.config import Config, activation_label
from mlp.data import augment, augment_kind, batches_per_epoch, epoch_batches, files_in_place, load_data
from mlp.device import pick_device, resolve_precision
from mlp.observe.diagnostics import LayerDiagnostics
from mlp.errors import Diverged, Interrupted, UserError, first_line
from mlp.commands.evaluate import evaluate
from mlp.model import build_model, check_memory, count_parameters, describe_input, init_label
from mlp.observe.novelty import input_profile
from mlp.training.optim import build_optimizer, build_scheduler
from mlp.run.folder import RunFolder, metrics_record
from mlp.training.signals import StopRequest
from mlp.training.state import (EpochMetrics, EpochTotals, RandomStreams, TrainingState, check_restorable,
                                data_fingerprint, stack)
from mlp.observe.tensorboard import RunLogger

EpochHook = Callable[[int, dict[str, Any]], None]

class Trainer:
    """The parts of one run and its epochs.  Under DDP every rank has one; rank 0 (``is_main``)
    alone writes files, logs and prints."""

    def __init__(self, cfg: Config, progress: bool = True, on_epoch: EpochHook | None = None):
        self.cfg, self.on_epoch = cfg, on_epoch
        self.rank, self.world_size = distributed.rank_and_world_size()
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self.timings: dict[str, float] = {}  # seconds this process spent in each phase (see timed)
        self.facts: dict[str, Any] = {}  # what heads metrics.json (start() fills it)
        self.device = self._setup_device()
        self.threads_before = torch.get_num_threads()  # put back by close()
        # on a CPU, auto measures which thread count trains fastest as it goes (mlp.threads)
        self.tuner, self.threads_line = threads.apply(cfg.train.threads, measure=self.device.type == "cpu")
        # Rank 0 draws what a single process would; the other ranks get their own dropout draws
        # (their initial weights are replaced by rank 0's when DDP wraps the model).
        torch.manual_seed(cfg.seed + 2 * self.rank)
        # Building the first torch optimizer imports torch._dynamo (about 1.5 s of Python).  A thread
        # imports it while this one reads the data, whose file reads and tensor work release the GIL.
        imported = import_meanwhile("torch._dynamo", when=files_in_place(cfg.data))
        try:
            with self.timed("data"):
                self.data = load_data(cfg.data, self.device, cfg.seed)
                # what the training images look like, pixel by pixel: mlp predict's novelty check
                self.input_profile = input_profile(self.data.train.images) if self.is_main else None
                self.fingerprint = data_fingerprint(self.data)  # a resume must train on the same data
        except BaseException:
            imported()  # the collector back on, also in a notebook whose mlp.train failed here
            raise
        with self.timed("build"):  # holds the rest of the torch._dynamo import
            imported()
            check_memory(cfg.model, self.data.input_shape, len(self.data.classes), self.device, cfg.optimizer.name,
                         batch=max(min(cfg.train.batch_size, len(self.data.train)), cfg.train.eval_batch_size // 2))
            self.model = build_model(cfg.model, self.data.input_shape, len(self.data.classes)).to(self.device)
            self.forward = self.model  # the module a step calls: wrapped by DDP and compiled in start()
            self.parameters = count_parameters(self.model)
            self._setup_optimization()
        self.state = TrainingState(RandomStreams(cfg.seed, self.rank, self.device))
        # augmentation pads with a black pixel, normalised
        self.pad_value = (-torch.tensor(self.data.mean) / torch.tensor(self.data.std)).to(self.device)
        self.augment_kind = augment_kind(cfg.data.dataset) if cfg.data.augment else None
        self.logger: RunLogger | None = None
        self.diagnostics: LayerDiagnostics | None = None
        self.resumed_at: tuple[int, int] | None = None

    @contextmanager
    def timed(self, phase: str):
        """Add the block's wall time to ``timings[phase]`` (metrics.json records them)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0.0) + time.perf_counter() - start, 4)

    def _setup_device(self) -> torch.device:
        device = pick_device(self.cfg.train.device)
        self.precision, self.precision_reason = resolve_precision(self.cfg.train.precision, device)
        if self.precision == "fp16" and device.type != "cuda":
            raise UserError(f"train.precision fp16 needs a CUDA device (this run is on {device}); use bf16 or fp32")
        if device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 matmuls on GPUs that have them
        return device

    def _setup_optimization(self) -> None:
        cfg, n_train = self.cfg, len(self.data.train)
        # Batch norm cannot train on a batch of one image: a last batch of one joins the one before
        # (a single process), or the batches must give every rank two (DDP, which weighs by share).
        batch_norm = cfg.model.norm == "batch"
        self.min_last_batch = 2 if batch_norm and self.world_size == 1 else 1
        if self.world_size > 1:
            distributed.check_batches_split(n_train, cfg.train.batch_size, self.world_size,
                                            per_rank=2 if batch_norm else 1)
        self.optimizer = build_optimizer(cfg, self.model)
        self.steps_per_epoch = batches_per_epoch(n_train, cfg.train.batch_size, self.min_last_batch)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.steps_per_epoch)
        # fp16 needs loss scaling against underflow; bf16 and fp32 do not (the scaler is then a no-op).
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=dtype)) if dtype else nullcontext

    def restore(self, checkpoint: dict[str, Any], source: Path) -> None:
        """Everything last.pth saved: weights, optimizer, schedule, loss scaler and the training state."""
        resume, where = checkpoint["resume"], f"--resume {source}"
        check_restorable(checkpoint, self.fingerprint, self.steps_per_epoch, where, self.cfg.data.root)
        try:
            self.model.load_state_dict(checkpoint["model_state"])
            self.optimizer.load_state_dict(resume["optimizer"])
            self.scaler.load_state_dict(resume["scaler"])
            if self.scheduler is not None and resume["scheduler"] is not None:
                self.scheduler.load_state_dict(resume["scheduler"])
            self.state.load_state_dict(resume, count_carried=self.is_main)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            detail = first_line(str(e).strip().split("\n", 1)[-1])
            raise UserError(f"{where}: its state does not fit the model its config describes ({detail}); "
                            "resume from another copy, or start a new run") from None
        # said at the end: the epoch it went on with (1-based) and the steps already done
        self.resumed_at = (min(self.state.epoch + 1, self.cfg.train.epochs), self.state.step)

    def start(self, folder: RunFolder, resumed: bool) -> None:
        """Wrap the model for DDP and compilation, say what runs, open TensorBoard and the diagnostics."""
        cfg, data = self.cfg, self.data
        # Under DDP, `model` stays the plain module (its state_dict has plain keys, so a checkpoint
        # loads in a single process); `forward` is the wrapper that all-reduces the gradients.
        if self.world_size > 1:
            self.forward = DistributedDataParallel(self.model)
        if cfg.train.compile != "off":  # the compiled module shares its parameters with `model`
            self.forward = torch.compile(self.forward, mode=cfg.train.compile)
        self.facts = folder.facts = {"name": cfg.name, "device": str(self.device), "precision": self.precision,
                                     **self.tuner.record(), "parameters": self.parameters,
                                     "init": init_label(cfg.model), "timings": self.timings}
        if self.is_main:
            widths = " → ".join(map(str, [describe_input(cfg.model, data.input_shape), *cfg.model.widths,
                                          len(data.classes)]))
            print(f"run      {folder.path}")
            print(f"model    {widths}, {activation_label(cfg.model.activation)}, init {init_label(cfg.model)}, "
                  f"{self.parameters:,} parameters")
            print(f"data     {data.name}: {len(data.train)} train / {len(data.val) if data.val else 0} val / "
                  f"{len(data.test)} test images on {self.device}"
                  + (f", {self.world_size} processes" if self.world_size > 1 else ""))
            for note in data.notes:  # what reading an image folder chose and skipped
                print(note, file=sys.stderr if note.startswith("warning:") else sys.stdout)
            if cfg.train.precision == "auto" or self.precision != "fp32":
                print(f"precision {self.precision} ({self.precision_reason})")
            if self.device.type == "cpu":
                print(f"threads  {self.threads_line}")
        # On resume, TensorBoard drops whatever the stopped process logged after last.pth's step and epoch.
        self.logger = RunLogger(folder.path, purge_step=self.state.step + 1 if resumed else None,
                                enabled=self.is_main, purge_epoch=self.state.epoch + 1 if resumed else None)
        if not resumed and self.is_main:
            with self.timed("tensorboard"):
                self.logger.start(cfg.to_dict(), self.model, data.train.images, data.mean, data.std)
        # Only rank 0 writes to TensorBoard, so the other ranks attach no hooks.
        scaler = self.scaler
        self.diagnostics = LayerDiagnostics(self.model, cfg.model.activation, cfg.train, self.logger,
                                            enabled=self.is_main, steps_per_epoch=self.steps_per_epoch,
                                            start_step=self.state.step, folder=folder,
                                            grad_scale=scaler.get_scale if scaler.is_enabled() else None)
        if not resumed and self.is_main and self.state.step == 0:
            self.diagnostics.at_init(self.model, data.train, data.val, cfg.train.batch_size, len(data.classes))

    def run_epoch(self, folder: RunFolder, stop: StopRequest) -> None:
        """Train one epoch (or the rest of a resumed one) and end it; a stop saves last.pth and raises."""
        with self.timed("train"):
            totals, finished = self.train_epoch(stop)
        if not finished:  # stopped mid-epoch by a signal
            self.state.carried = totals
            if self.is_main:
                folder.save(last=self.checkpoint("last"))
            raise Interrupted(stop.signum, folder.path)
        record = self.end_epoch(totals, folder)
        if self.on_epoch is not None and self.is_main:
            self.on_epoch(self.state.epoch, record)
        if stop.signum is not None and self.state.epoch < self.cfg.train.epochs:
            raise Interrupted(stop.signum, folder.path)

    def train_epoch(self, stop: StopRequest) -> tuple[EpochTotals, bool]:
        """The epoch's batches from where the state stands; its totals over all ranks, and whether
        it reached its last batch."""
        s, n_train = self.state, len(self.data.train)
        batches = epoch_batches(n_train, self.cfg.train.batch_size, s.streams.data, self.device, self.rank,
                                self.world_size, self.min_last_batch)
        metrics = EpochMetrics(batches, s.batch, s.carried, self.data.train.labels)
        self.model.train()
        bar = progress_bar(len(batches), s.batch, f"epoch {s.epoch + 1}/{self.cfg.train.epochs}", self.progress)
        started = time.perf_counter()
        for idx in batches[s.batch:]:
            step_start = time.perf_counter()
            loss, logits = self.train_step(idx)
            self.tuner.after_step(time.perf_counter() - step_start, len(idx))
            metrics.record(s.batch, loss, logits)
            s.pending.append(loss)
            s.step, s.batch = s.step + 1, s.batch + 1
            self.diagnostics.after_step(s.step)
            bar.update()
            if s.step % self.cfg.train.log_every == 0:
                self.end_interval(stop, metrics, bar)
            if stop.signum is not None and s.batch < len(batches):
                break
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        totals = metrics.totals(s.batch, time.perf_counter() - started)
        self.facts.update(self.tuner.record())  # metrics.json's threads, as of this epoch
        bar.close()
        if self.world_size > 1:
            totals.loss_sum, totals.correct, totals.seen = distributed.sum_over_ranks(
                self.device, totals.loss_sum, totals.correct, totals.seen)
            stop.agree(self.device)
        self.check_unlogged_losses()
        return totals, s.batch == len(batches)

    def train_step(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on the training images at ``idx``: the loss (a 0-d device tensor) and logits."""
        x, y = self.data.train.images.index_select(0, idx), self.data.train.labels.index_select(0, idx)
        if self.augment_kind:
            x = augment(x, self.augment_kind, self.state.streams.augment, self.pad_value)
        with self.autocast():
            logits = self.forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.train.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        if self.world_size > 1:  # DDP averages the ranks' gradients: weigh each rank's mean by its share
            batch_size = self.cfg.train.batch_size
            global_batch = min(batch_size, len(self.data.train) - self.state.batch * batch_size)
            self.scaler.scale(loss * (len(y) * self.world_size / global_batch)).backward()
        else:
            self.scaler.scale(loss).backward()
        if self.cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach(), logits

    def end_interval(self, stop: StopRequest, metrics: EpochMetrics, bar) -> None:
        """Every ``log_every`` steps: the interval's losses and diagnostics go to TensorBoard."""
        window, first = self.state.take_pending()
        if self.world_size > 1:  # every rank checks, logs and stops on the same numbers
            distributed.average_(window)
            stop.agree(self.device)
        check_finite(window, first)
        running = window.mean().item()
        self.logger.step(self.state.step, running, self.optimizer.param_groups[0]["lr"])
        if self.progress:
            correct, seen = metrics.correct_and_seen(self.state.batch)
            bar.set_postfix(loss=f"{running:.4f}", acc=f"{correct.item() / seen:.2%}")

    def check_unlogged_losses(self) -> None:
        """At an epoch's end (or a stop), the losses since the last logging step must be finite too.
        Under DDP they become the ranks' average, which last.pth then holds."""
        s = self.state
        window = stack(s.pending, self.device)
        if self.world_size > 1:
            distributed.average_(window)
            s.pending = list(window.unbind())
        check_finite(window, s.step - len(s.pending) + 1)

    def end_epoch(self, totals: EpochTotals, folder: RunFolder) -> dict[str, Any]:
        """Validate, record the epoch, write its files (all or none) and print its line."""
        s, data = self.state, self.data
        record = {"epoch": s.epoch + 1, "step": s.step, "train_loss": totals.loss_sum / totals.seen,
                  "train_accuracy": totals.correct / totals.seen}
        if data.val is not None:
            with self.timed("validation"):
                val = evaluate(self.model, data.val, len(data.classes), self.cfg.train.eval_batch_size)
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        record.update(lr=self.optimizer.param_groups[0]["lr"], train_time_s=round(totals.time, 4),
                      samples_per_s=round(totals.seen / totals.time, 1) if totals.time > 0 else None)
        improved = data.val is None or record["val_accuracy"] > s.best["val_accuracy"]
        s.finish_epoch(record, improved)
        self.logger.epoch(record["epoch"], record)
        self.diagnostics.end_epoch(record["epoch"], s.step)
        if self.is_main:
            with self.timed("writing"):
                folder.save(last=self.checkpoint("last"),
                            best=self.checkpoint("best", metrics=record) if improved else None,
                            metrics=metrics_record("running", s.history, s.best))
            print(epoch_line(record, self.cfg.train.epochs, improved and data.val is not None), flush=True)
            if improved and data.val is not None and len(s.history) == 1:  # the first epoch's star, once
                print("(* = best validation accuracy so far, saved to checkpoint.pth)", flush=True)
        return record

    def checkpoint(self, kind: str, **extra) -> dict[str, Any]:
        """What checkpoint.pth (``best``) or last.pth (``last``, with the resume section) holds now."""
        s, data = self.state, self.data
        payload = {"kind": kind, "mlp_version": __version__, "config": self.cfg.to_dict(),
                   "model_state": self.model.state_dict(), "classes": data.classes,
                   "input_shape": list(data.input_shape), "normalization": {"mean": data.mean, "std": data.std},
                   "input_profile": self.input_profile, "data_fingerprint": self.fingerprint,
                   "epoch": s.epoch, "step": s.step, "parameters": self.parameters, **extra}
        if kind == "last":
            payload["resume"] = {**s.state_dict(), "optimizer": self.optimizer.state_dict(),
                                 "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                                 "scaler": self.scaler.state_dict()}
        return payload

    def close(self) -> None:
        """Whatever ended the run (a stop, divergence, Ctrl-C twice), the hooks go and the event file is flushed."""
        if self.diagnostics is not None:
            self.diagnostics.close()
        if self.logger is not None:
            self.logger.close()
        torch.set_num_threads(self.threads_before)


def check_finite(losses: torch.Tensor, first_step: int) -> None:
    """``losses`` are those of steps ``first_step, first_step + 1, ...``; the first bad one ends the run."""
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return
    bad = int((~finite).nonzero()[0])
    raise Diverged(losses[bad].item(), first_step + bad)


def epoch_line(record: dict, epochs: int, best: bool) -> str:
    parts = [f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}",
             f"train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.2%}"]
    if "val_accuracy" in record:
        parts.append(f"val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.2%}")
    parts.append(f"lr {record['lr']:.2e}  {record['train_time_s']:.1f}s ({record['samples_per_s']:,.0f} samples/s)")
    return "  ".join(parts) + ("  *" if best else "")
