"""The training loop: ``fit(config) -> run folder``.

``fit`` tells a run's story: build the parts (``Trainer``), open the run's folder, restore an
interrupted run's state, train epoch after epoch, then measure the best checkpoint on the test
split (``report_on_test``).  Who owns what:

- ``Trainer``: the parts of one run (device, data, model, optimizer, schedule, logs) and the
  epoch: ``train_step`` is one optimizer step, ``train_epoch`` the batches of an epoch,
  ``end_epoch`` validation and the epoch's files;
- ``TrainingState`` (state.py): where the run is and what it has measured, saved in last.pth
  under its own field names; ``EpochMetrics`` (state.py): one epoch's per-step results;
- ``RunFolder`` (run_folder.py): every file of the run, and the lock;
- ``StopRequest`` (signals.py): SIGINT and SIGTERM.  A stop and a divergence are exceptions
  (``Interrupted``, ``Diverged``) that carry the status metrics.json records.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mlp import __version__, threads
from mlp.training import distributed
from mlp.run.checkpoint import load_checkpoint
from mlp.config import Config, activation_label, dump_yaml, load_config, parse_override, set_dotted, validate_config
from mlp.data import DATASETS, augment, batches_per_epoch, epoch_batches, load_data
from mlp.device import pick_device, resolve_precision
from mlp.observe.diagnostics import LayerDiagnostics
from mlp.errors import Diverged, Interrupted, RunEnded, UserError
from mlp.commands.evaluate import evaluate, misclassified
from mlp.model import build_model, check_memory, count_parameters
from mlp.observe.novelty import input_profile
from mlp.training.optim import build_optimizer, build_scheduler
from mlp.run.folder import RunFolder, metrics_record
from mlp.training.signals import StopRequest
from mlp.training.state import EpochMetrics, EpochTotals, RandomStreams, TrainingState, stack, upgrade_resume_section
from mlp.observe.tensorboard import RunLogger

EpochHook = Callable[[int, dict[str, Any]], None]
# What --set may change when resuming: nothing the saved model, optimizer or data order depends on.
RESUMABLE_CHANGES = ("train.epochs", "train.device", "train.threads", "train.log_every", "train.eval_batch_size",
                     "data.root", "data.download")


@dataclass(frozen=True)
class Resume:
    """An interrupted run to continue: its config, its last.pth and its folder (locked), together."""

    config: Config
    checkpoint: dict[str, Any]
    folder: RunFolder


def fit(start: Config | Resume, run_dir: Path | None = None, *, overwrite: bool = False,
        runs_root: Path = Path("runs"), progress: bool = True, on_epoch: EpochHook | None = None) -> Path:
    """Train a config from scratch (into ``run_dir``, or a new folder under ``runs_root``), or
    continue a run from ``resume_target``; returns the run's folder.  ``on_epoch(epoch, record)``
    is called after each epoch's files are written (a study reports to itself there, and may
    raise ``Pruned``)."""
    resume = start if isinstance(start, Resume) else None
    cfg = resume.config if resume else start
    trainer = Trainer(cfg, progress, on_epoch)
    folder = resume.folder if resume else open_run_folder(cfg, run_dir, overwrite, runs_root)
    with folder:
        if resume:
            trainer.restore(resume.checkpoint)
        else:
            folder.write_config(dump_yaml(cfg))
        trainer.start(folder, resumed=resume is not None)
        stop = StopRequest(trainer.world_size, announce=trainer.is_main)
        try:
            with stop.installed():
                while trainer.state.epoch < cfg.train.epochs:
                    trainer.run_epoch(folder, stop)
                if trainer.is_main:
                    report_on_test(trainer, folder, stop)
        except RunEnded as ended:
            folder.write_status(ended.status, trainer.state.history, trainer.state.best)
            raise
        finally:
            trainer.close()
    return folder.path


class Trainer:
    """The parts of one run and its epochs.  Under DDP every rank has one; rank 0 (``is_main``)
    alone writes files, logs and prints."""

    def __init__(self, cfg: Config, progress: bool = True, on_epoch: EpochHook | None = None):
        self.cfg, self.on_epoch = cfg, on_epoch
        self.rank, self.world_size = distributed.rank_and_world_size()
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self.timings: dict[str, float] = {}  # seconds this process spent in each phase (see timed)
        self.device = self._setup_device()
        self.threads_before = torch.get_num_threads()  # put back by close()
        self.threads, self.threads_line = threads.apply(cfg.train.threads)
        # Rank 0 draws what a single process would; the other ranks get their own dropout draws
        # (their initial weights are replaced by rank 0's when DDP wraps the model).
        torch.manual_seed(cfg.seed + 2 * self.rank)
        with self.timed("data"):
            self.data = load_data(cfg.data, self.device, cfg.seed)
        check_memory(cfg.model, self.data.input_shape, len(self.data.classes), self.device, cfg.optimizer.name)
        with self.timed("build"):  # building the first torch optimizer imports torch._dynamo
            self.model = build_model(cfg.model, self.data.input_shape, len(self.data.classes)).to(self.device)
            self.forward = self.model  # the module a step calls: wrapped by DDP and compiled in start()
            self.parameters = count_parameters(self.model)
            self._setup_optimization()
        # what the training images look like, pixel by pixel: mlp predict's novelty check
        self.input_profile = input_profile(self.data.train.images) if self.is_main else None
        self.state = TrainingState(RandomStreams(cfg.seed, self.rank, self.device))
        # augmentation pads with a black pixel, normalised
        self.pad_value = (-torch.tensor(self.data.mean) / torch.tensor(self.data.std)).to(self.device)
        self.augment_kind = DATASETS[cfg.data.dataset].augment if cfg.data.augment else None
        self.logger: RunLogger | None = None
        self.diagnostics: LayerDiagnostics | None = None

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

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Everything last.pth saved: weights, optimizer, schedule, loss scaler and the training state."""
        resume = checkpoint["resume"]
        self.model.load_state_dict(checkpoint["model_state"])
        self.optimizer.load_state_dict(resume["optimizer"])
        self.scaler.load_state_dict(resume["scaler"])
        if self.scheduler is not None and resume["scheduler"] is not None:
            self.scheduler.load_state_dict(resume["scheduler"])
        self.state.load_state_dict(resume, count_carried=self.is_main)

    def start(self, folder: RunFolder, resumed: bool) -> None:
        """Wrap the model for DDP and compilation, say what runs, open TensorBoard and the diagnostics."""
        cfg, data = self.cfg, self.data
        # Under DDP, `model` stays the plain module (its state_dict has plain keys, so a checkpoint
        # loads in a single process); `forward` is the wrapper that all-reduces the gradients.
        if self.world_size > 1:
            self.forward = DistributedDataParallel(self.model)
        if cfg.train.compile != "off":  # the compiled module shares its parameters with `model`
            self.forward = torch.compile(self.forward, mode=cfg.train.compile)
        folder.facts = {"name": cfg.name, "device": str(self.device), "precision": self.precision,
                        "threads": self.threads, "parameters": self.parameters, "timings": self.timings}
        if self.is_main:
            widths = " → ".join(map(str, [math.prod(data.input_shape), *cfg.model.widths, len(data.classes)]))
            print(f"run      {folder.path}")
            print(f"model    {widths}, {activation_label(cfg.model.activation)}, {self.parameters:,} parameters")
            print(f"data     {data.name}: {len(data.train)} train / {len(data.val) if data.val else 0} val / "
                  f"{len(data.test)} test images on {self.device}"
                  + (f", {self.world_size} processes" if self.world_size > 1 else ""))
            if self.device.type == "cpu":
                print(f"threads  {self.threads_line}")
            if cfg.train.precision == "auto" or self.precision != "fp32":
                print(f"precision {self.precision} ({self.precision_reason})")
        # On resume, TensorBoard drops whatever the stopped process logged after last.pth's step.
        self.logger = RunLogger(folder.path, purge_step=self.state.step + 1 if resumed else None,
                                enabled=self.is_main)
        if not resumed and self.is_main:
            with self.timed("tensorboard"):
                self.logger.start(cfg.to_dict(), self.model, data.train.images, data.mean, data.std)
        # Only rank 0 writes to TensorBoard, so the other ranks attach no hooks.
        scaler = self.scaler
        self.diagnostics = LayerDiagnostics(self.model, cfg.model.activation, cfg.train, self.logger,
                                            enabled=self.is_main, steps_per_epoch=self.steps_per_epoch,
                                            start_step=self.state.step, folder=folder,
                                            grad_scale=scaler.get_scale if scaler.is_enabled() else None)

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
        bar = tqdm(total=len(batches), initial=s.batch, desc=f"epoch {s.epoch + 1}/{self.cfg.train.epochs}",
                   leave=False, dynamic_ncols=True, disable=not self.progress)
        started = time.perf_counter()
        for idx in batches[s.batch:]:
            loss, logits = self.train_step(idx)
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

    def end_interval(self, stop: StopRequest, metrics: EpochMetrics, bar: tqdm) -> None:
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
                   "input_profile": self.input_profile, "epoch": s.epoch, "step": s.step, "parameters": self.parameters, **extra}
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


def report_on_test(trainer: Trainer, folder: RunFolder, stop: StopRequest) -> dict[str, Any]:
    """The final report: the best checkpoint, measured once on the test split, into checkpoint.pth,
    metrics.json, TensorBoard and the terminal.  A stop that came meanwhile leaves it for the resume."""
    data, best = trainer.data, trainer.state.best
    with trainer.timed("test"):
        best_checkpoint = folder.best_checkpoint()
        trainer.model.load_state_dict(best_checkpoint["model_state"])
        test = evaluate(trainer.model, data.test, len(data.classes), trainer.cfg.train.eval_batch_size)
    if stop.signum is not None:
        raise Interrupted(stop.signum, folder.path)
    summary = {"loss": test["loss"], "accuracy": test["accuracy"], "epoch": best["epoch"]}
    trainer.diagnostics.close()
    # The figures (matplotlib, a second or two) come with the diagnostics and go with them.
    figures = trainer.cfg.train.diagnostics != "off"
    with trainer.timed("figures"):
        trainer.logger.test(best["epoch"], test, data.classes, figures)
        if figures:
            shown, shown_name = (data.val, "val") if data.val is not None else (data.test, "test")
            wrong, predicted = misclassified(trainer.model, shown, limit=32,
                                             batch_size=trainer.cfg.train.eval_batch_size)
            trainer.logger.misclassified(shown_name, best["epoch"], shown.images[wrong],
                                         predicted, shown.labels[wrong], data.classes, data.mean, data.std)
    with trainer.timed("writing"):
        folder.save(best={**best_checkpoint, "test": summary},
                    metrics=metrics_record("finished", trainer.state.history, best, summary))
    print(f"test     accuracy {test['accuracy']:.2%}  loss {test['loss']:.4f}  "
          f"(best epoch {best['epoch']}, {folder.path / 'checkpoint.pth'})")
    if trainer.diagnostics.report():
        print(trainer.diagnostics.report())
    print(f"curves   tensorboard --logdir {folder.path.parent}")
    return summary


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
    parts.append(f"lr {record['lr']:.2e}  {record['train_time_s']:.1f}s ({record['samples_per_s']:,.0f}/s)")
    return "  ".join(parts) + ("  *" if best else "")


def open_run_folder(cfg: Config, run_dir: Path | None, overwrite: bool, runs_root: Path) -> RunFolder:
    """A new run's folder, made and locked by rank 0; the other ranks get its path and write nothing."""
    made: list[RunFolder] = []

    def make() -> Path:
        made.append(RunFolder.create(cfg.name, run_dir, overwrite, runs_root))
        return made[0].path

    path = distributed.on_main(make)
    return made[0] if made else RunFolder(path, writes=False)


def resume_target(path: Path, overrides: list[str], lock: bool = True) -> Resume:
    """The run to continue (``--resume``): its folder (locked unless ``lock`` is false), last.pth
    and config with the allowed ``--set`` changes applied."""
    path = Path(path)
    file = path / "last.pth" if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise UserError(f"--resume {path}: no last.pth in that folder, so there is nothing to resume")
    if not file.is_file():
        load_checkpoint(file)  # raises the message that says what is wrong with the path
    folder = RunFolder.existing(file.parent, writes=lock and distributed.launched_rank() == 0)
    try:
        ckpt = load_checkpoint(file)  # read with the lock held: no other process is writing it
        if "resume" not in ckpt:
            raise UserError(f"--resume {file}: this checkpoint has no training state (it is a best-model "
                            f"checkpoint); resume from last.pth in the same run folder")
        saved = validate_config(ckpt["config"], source=f"config in {file}")
        if ckpt["format_version"] == 1:
            ckpt["resume"] = upgrade_resume_section(ckpt["resume"], saved.train.log_every)
        cfg = _changed_on_resume(saved, overrides, file, ckpt["resume"]["epoch"])
        best_epoch = ckpt["resume"]["best"]["epoch"]
        if best_epoch is not None and not (folder.path / "checkpoint.pth").is_file():
            raise UserError(f"--resume {folder.path}: checkpoint.pth (the best epoch so far, {best_epoch}) is "
                            "missing; put it back, or start a new run with --config "
                            f"{folder.path / 'config.yaml'}")
        return Resume(cfg, ckpt, folder)
    except BaseException:
        folder.release(forget=not (folder.path / "config.yaml").is_file())  # no lock file left in a non-run folder
        raise


def _changed_on_resume(saved: Config, overrides: list[str], file: Path, epochs_done: int) -> Config:
    raw = saved.to_dict()
    for item in overrides:
        key, value = parse_override(item)
        if key not in RESUMABLE_CHANGES:
            raise UserError(f"--set {key}: cannot change on --resume (the saved state depends on it); "
                            f"only {', '.join(RESUMABLE_CHANGES)} can; start a new run for other changes")
        set_dotted(raw, key, value)
    cfg = validate_config(raw, source=f"--resume {file} with --set")
    if cfg.train.epochs != saved.train.epochs and cfg.scheduler.name in ("cosine", "onecycle"):
        raise UserError(f"--set train.epochs: the {cfg.scheduler.name} schedule of this run was planned for "
                        f"{saved.train.epochs} epochs and cannot be stretched; start a new run")
    if cfg.train.epochs < epochs_done:
        raise UserError(f"--set train.epochs={cfg.train.epochs}: this run has already finished {epochs_done} epochs")
    return cfg


def train_from_files(config: Path | None, overrides: list[str], run_dir: Path | None = None,
                     resume: Path | None = None, overwrite: bool = False, progress: bool = True,
                     on_epoch: EpochHook | None = None) -> Path:
    """What ``mlp train`` does: resolve the config (or the run to resume) and fit,
    data-parallel across the processes when torchrun launched several."""
    start = resume_target(resume, overrides) if resume is not None else load_config(config, overrides)
    cfg = start.config if isinstance(start, Resume) else start
    with distributed.process_group(cfg.train.device):
        return fit(start, run_dir, overwrite=overwrite, progress=progress, on_epoch=on_epoch)
