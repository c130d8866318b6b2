"""The training loop: ``fit(config) -> run directory``.

Read top to bottom: pick the device, load the data onto it, build the model and optimizer,
make the run folder, then one loop over epochs and batches.  Every epoch ends with a
validation pass, ``last.pth`` (everything needed to resume exactly), ``checkpoint.pth``
when validation accuracy improved, and ``metrics.json``.  The run closes with the best
checkpoint measured on the test split.
"""

from __future__ import annotations

import itertools
import math
import signal
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mlp import __version__, distributed
from mlp.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from mlp.config import (Config, activation_label, dump_yaml, load_config, parse_override, set_dotted,
                        validate_config)
from mlp.data import DATASETS, augment, epoch_batches, load_data
from mlp.device import pick_device
from mlp.diagnostics import LayerDiagnostics
from mlp.errors import Interrupted, UserError
from mlp.evaluate import evaluate, misclassified
from mlp.model import build_model, count_parameters
from mlp.tensorboard import RunLogger

RUN_FILES = ("config.yaml", "metrics.json", "checkpoint.pth", "last.pth", "diagnostics.json")
# What --set may change when resuming: nothing the saved model, optimizer or data order depends on.
RESUMABLE_CHANGES = ("train.epochs", "train.device", "train.log_every", "train.eval_batch_size",
                     "data.root", "data.download")


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer, fused into one kernel per step where torch has one for the device."""
    o = cfg.optimizer
    if o.name == "sgd":
        cls, kwargs = torch.optim.SGD, dict(momentum=o.momentum, nesterov=o.nesterov)
    else:
        cls, kwargs = (torch.optim.Adam if o.name == "adam" else torch.optim.AdamW), dict(betas=o.betas)
    try:
        return cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device or dtype
        return cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, **kwargs)


def build_scheduler(cfg: Config, optimizer, steps_per_epoch: int):
    """A scheduler stepped once per optimizer step, or None for a constant rate."""
    s, sched = cfg.scheduler, torch.optim.lr_scheduler
    total = cfg.train.epochs * steps_per_epoch
    if s.name == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=s.max_lr or cfg.optimizer.lr, total_steps=total,
                                pct_start=s.pct_start)
    warmup = min(round(s.warmup_epochs * steps_per_epoch), total - 1)
    if s.name == "step":
        main = sched.StepLR(optimizer, step_size=s.step_size * steps_per_epoch, gamma=s.gamma)
    elif s.name == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1), eta_min=s.min_lr)
    else:
        main = None
    if warmup <= 0:
        return main
    ramp = sched.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup)
    return sched.SequentialLR(optimizer, [ramp, main or sched.ConstantLR(optimizer, factor=1.0, total_iters=0)],
                              milestones=[warmup])


def make_run_dir(cfg: Config, run_dir: Path | None, overwrite: bool, runs_root: Path) -> Path:
    """A fresh folder: ``runs/<name>-<time>`` (never reused), or the ``--run-dir`` asked for."""
    if run_dir is None:
        base = Path(runs_root) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = base, 2
        while True:
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                path, n = base.with_name(f"{base.name}-{n}"), n + 1
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise UserError(f"--run-dir {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise UserError(f"--run-dir {path} is not empty; add --overwrite to replace the run in it, "
                            f"or use --resume {path} to continue it")
        for item in path.iterdir():
            if item.name in RUN_FILES or item.name.startswith("events.out.tfevents."):
                item.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


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

    def agree(self, device: torch.device) -> None:
        self.signum = distributed.agree_on_stop(self.received, device)

    @contextmanager
    def installed(self):
        try:
            previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: leave signals alone
            yield self
            return
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def resume_target(path: Path, overrides: list[str]) -> tuple[Config, dict[str, Any], Path]:
    """The config, saved state and run folder of a run to continue (``--resume``)."""
    path = Path(path)
    file = path / "last.pth" if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise UserError(f"--resume {path}: no last.pth in that folder, so there is nothing to resume")
    ckpt = load_checkpoint(file)
    if "resume" not in ckpt:
        raise UserError(f"--resume {file}: this checkpoint has no training state (it is a best-model "
                        f"checkpoint); resume from last.pth in the same run folder")
    saved = validate_config(ckpt["config"], source=f"config in {file}")
    state = ckpt["resume"]
    if "pending" not in state:  # written before 0.1's pending losses: a ring of log_every slots
        state["pending"] = state.pop("window")[:state["step"] % saved.train.log_every]
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
    if cfg.train.epochs < ckpt["resume"]["epoch"]:
        raise UserError(f"--set train.epochs={cfg.train.epochs}: this run has already finished "
                        f"{ckpt['resume']['epoch']} epochs")
    return cfg, ckpt, file.parent


def fit(cfg: Config, run_dir: Path | None = None, *, resume: dict[str, Any] | None = None,
        overwrite: bool = False, runs_root: Path = Path("runs"), progress: bool = True) -> Path:
    rank, world_size = distributed.rank_and_world_size()
    is_main = rank == 0
    progress = progress and is_main
    device = pick_device(cfg.train.device)
    if cfg.train.precision == "fp16" and device.type != "cuda":
        raise UserError(f"train.precision fp16 needs a CUDA device (this run is on {device}); use bf16 or fp32")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on GPUs that have them
    # Rank 0 draws what a single process would; the other ranks get their own dropout and
    # augmentation draws (their initial weights are replaced by rank 0's when DDP wraps the model).
    torch.manual_seed(cfg.seed + 2 * rank)
    data = load_data(cfg.data, device, cfg.seed)
    model = build_model(cfg.model, data.input_shape, len(data.classes)).to(device)
    optimizer = build_optimizer(cfg, model)
    # fp16 needs loss scaling against underflow; bf16 and fp32 do not (the scaler is then a no-op).
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)
    autocast = (lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype else nullcontext
    n_train, batch_size = len(data.train), cfg.train.batch_size
    if world_size > 1:
        distributed.check_batches_split(n_train, batch_size, world_size)
    steps_per_epoch = math.ceil(n_train / batch_size)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    data_rng = torch.Generator().manual_seed(cfg.seed)  # batch order
    augment_rng = torch.Generator(device=device).manual_seed(cfg.seed + 1 + 2 * rank)
    pad_value = (-torch.tensor(data.mean) / torch.tensor(data.std)).to(device)  # a black pixel, normalised
    augment_kind = DATASETS[cfg.data.dataset].augment if cfg.data.augment else None

    # Where the loop starts: from scratch, or exactly where last.pth left off.
    epoch, batch_in_epoch, step = 0, 0, 0
    history: list[dict[str, Any]] = []
    best = {"epoch": None, "val_accuracy": -1.0}
    carried = {"loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0}
    # Every step's loss stays on the device as the 0-d tensor the step made (keeping it costs no
    # kernel); they are stacked and read back once per logging interval and once per epoch.
    pending: list[torch.Tensor] = []  # the losses since the last logging step
    if resume is not None:
        state = resume["resume"]
        model.load_state_dict(resume["model_state"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        epoch, batch_in_epoch, step = state["epoch"], state["batch"], state["step"]
        history, best, carried = state["history"], state["best"], state["accumulated"]
        if not is_main:  # the saved totals so far are all ranks' together: count them once
            carried = {**carried, "loss_sum": 0.0, "correct": 0, "seen": 0}
        pending = list(state["pending"].to(device).unbind())
        torch.set_rng_state(state["rng"]["torch"])
        # A run resumed on another kind of device keeps its data order and weights, but its
        # device random streams (augmentation, CUDA dropout) cannot carry over: they restart seeded.
        if state["rng"].get("device_type", "cpu") == device.type:
            if device.type == "cuda" and state["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
            augment_rng.set_state(state["rng"]["augment"])
        data_rng.set_state(state["rng"]["data_epoch_start"])
        for leftover in run_dir.glob(".*.tmp") if is_main else ():  # a write cut short by a kill -9
            leftover.unlink(missing_ok=True)
    else:
        run_dir = distributed.on_main(lambda: make_run_dir(cfg, run_dir, overwrite, runs_root))
        if is_main:
            (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    # Under DDP, `model` stays the plain module (its state_dict has plain keys, so a checkpoint
    # loads in a single process); `forward` is the wrapper that all-reduces the gradients.
    forward = DistributedDataParallel(model) if world_size > 1 else model
    if cfg.train.compile != "off":  # the compiled module shares its parameters with `model`
        forward = torch.compile(forward, mode=cfg.train.compile)
    n_params = count_parameters(model)
    widths = " → ".join(str(w) for w in [math.prod(data.input_shape), *cfg.model.widths, len(data.classes)])
    if is_main:
        print(f"run      {run_dir}")
        print(f"model    {widths}, {activation_label(cfg.model.activation)}, "
              f"{n_params:,} parameters")
        print(f"data     {data.name}: {n_train} train / {len(data.val) if data.val else 0} val / "
              f"{len(data.test)} test images on {device}"
              + (f", {world_size} processes" if world_size > 1 else ""))
    # On resume, TensorBoard drops whatever the stopped process logged after last.pth's step.
    logger = RunLogger(run_dir, purge_step=step + 1 if resume is not None else None, enabled=is_main)
    if resume is None and is_main:
        logger.start(cfg.to_dict(), model, data.train.images, data.mean, data.std)
    # Only rank 0 writes to TensorBoard, so the other ranks attach no hooks.
    diagnostics = LayerDiagnostics(model, cfg.model.activation, cfg.train, logger, enabled=is_main,
                                   steps_per_epoch=steps_per_epoch, start_step=step, run_dir=run_dir,
                                   grad_scale=scaler.get_scale if scaler.is_enabled() else None)

    def payload(kind: str) -> dict[str, Any]:
        return {"kind": kind, "mlp_version": __version__, "config": cfg.to_dict(),
                "model_state": model.state_dict(), "classes": data.classes,
                "input_shape": list(data.input_shape),
                "normalization": {"mean": data.mean, "std": data.std},
                "epoch": epoch, "step": step, "parameters": n_params}

    def save_last(epoch_start_rng: torch.Tensor, loss_sum, correct, seen, elapsed) -> None:
        if not is_main:
            return
        save_checkpoint(run_dir / "last.pth", {**payload("last"), "resume": {
            "epoch": epoch, "batch": batch_in_epoch, "step": step,
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": {"torch": torch.get_rng_state(), "data_epoch_start": epoch_start_rng, "device_type": device.type,
                    "augment": augment_rng.get_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
            "accumulated": {"loss_sum": float(loss_sum), "correct": int(correct), "seen": seen, "time": elapsed},
            "pending": _stack(pending, device).cpu(),  # the losses since the last logging step
            "history": history, "best": best}})

    def write_metrics(status: str, test: dict | None = None) -> None:
        if not is_main:
            return
        atomic_write_json(run_dir / "metrics.json", {
            "name": cfg.name, "status": status, "device": str(device), "parameters": n_params,
            "epochs": history, "best": best, **({"test": test} if test is not None else {})})

    def interrupted() -> Interrupted:
        """What a stop raises, once last.pth holds the finished work."""
        write_metrics("interrupted")
        return Interrupted(stop.signum, run_dir)

    stop = StopRequest(world_size, announce=is_main)
    try:  # whatever ends the run (a stop, divergence, Ctrl-C twice), the event file is flushed
        with stop.installed():
            while epoch < cfg.train.epochs:
                epoch_start_rng = data_rng.get_state()
                batches = epoch_batches(n_train, batch_size, data_rng, device, rank, world_size)
                # Per-step metrics stay on the device: the losses in `epoch_losses` (and `pending`),
                # each batch's predicted classes in its slot of `predicted`.  They are totalled when
                # the epoch ends (and at logging steps for the progress bar, when it is shown).
                sizes = [len(b) for b in batches]
                first_batch, epoch_losses = batch_in_epoch, []
                predicted = torch.empty(sum(sizes), dtype=torch.long, device=device)
                predicted_slots = predicted.split(sizes)
                sample_at = [0, *itertools.accumulate(sizes)]  # where each batch starts in `predicted`

                def correct_and_seen():
                    """This epoch's correct count (a device tensor) and sample count so far, a resumed
                    epoch's earlier part included."""
                    done = torch.cat(batches[first_batch:batch_in_epoch] or [batches[0][:0]])  # the samples seen
                    correct = carried["correct"] + (
                        predicted[sample_at[first_batch]:sample_at[batch_in_epoch]] == data.train.labels[done]).sum()
                    return correct, carried["seen"] + sample_at[batch_in_epoch] - sample_at[first_batch]

                elapsed = carried["time"]
                model.train()
                bar = tqdm(total=len(batches), initial=batch_in_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                           leave=False, dynamic_ncols=True, disable=not progress)
                started = time.perf_counter()
                for idx in batches[batch_in_epoch:]:
                    x, y = data.train.images.index_select(0, idx), data.train.labels.index_select(0, idx)
                    if augment_kind:
                        x = augment(x, augment_kind, augment_rng, pad_value)
                    with autocast():
                        logits = forward(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.train.label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    if world_size > 1:  # DDP averages the ranks' gradients: weigh each rank's mean by its share
                        global_batch = min(batch_size, n_train - batch_in_epoch * batch_size)
                        scaler.scale(loss * (len(y) * world_size / global_batch)).backward()
                    else:
                        scaler.scale(loss).backward()
                    if cfg.train.grad_clip:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    if scheduler is not None:
                        scheduler.step()
                    epoch_losses.append(loss.detach())
                    pending.append(epoch_losses[-1])
                    torch.argmax(logits, 1, out=predicted_slots[batch_in_epoch])
                    step += 1
                    batch_in_epoch += 1
                    diagnostics.after_step(step)
                    bar.update()
                    if step % cfg.train.log_every == 0:
                        window, first_step = torch.stack(pending), step - len(pending)
                        pending = []
                        if world_size > 1:  # every rank checks, logs and stops on the same numbers
                            distributed.average_(window)
                            stop.agree(device)
                        _check_finite(window, first_step, write_metrics)
                        running = window.mean().item()
                        logger.step(step, running, optimizer.param_groups[0]["lr"])
                        if progress:
                            correct, seen = correct_and_seen()
                            bar.set_postfix(loss=f"{running:.4f}", acc=f"{correct.item() / seen:.2%}")
                    if stop.signum is not None and batch_in_epoch < len(batches):
                        break
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                elapsed += time.perf_counter() - started
                bar.close()
                # The losses are added on the host one step after another, so a resumed epoch sums
                # to the same float as an uninterrupted one.
                loss_sum = carried["loss_sum"]
                for loss_value, size in zip(_stack(epoch_losses, device).tolist(), sizes[first_batch:]):
                    loss_sum += loss_value * size
                correct, seen = correct_and_seen()
                if world_size > 1:
                    loss_sum, correct, seen = distributed.sum_over_ranks(device, loss_sum, correct, seen)
                    stop.agree(device)
                window = _stack(pending, device)  # the losses not yet logged
                if world_size > 1:  # they become the ranks' average, so last.pth holds that
                    distributed.average_(window)
                    pending = list(window.unbind())
                _check_finite(window, step - len(pending), write_metrics)
                if batch_in_epoch < len(batches):  # stopped mid-epoch by a signal
                    save_last(epoch_start_rng, loss_sum, correct.item(), seen, elapsed)
                    raise interrupted()

                record = {"epoch": epoch + 1, "step": step,
                          "train_loss": loss_sum / seen, "train_accuracy": correct.item() / seen}
                if data.val is not None:
                    val = evaluate(model, data.val, len(data.classes), cfg.train.eval_batch_size)
                    record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                record.update(lr=optimizer.param_groups[0]["lr"], train_time_s=round(elapsed, 4),
                              samples_per_s=round(seen / elapsed, 1) if elapsed > 0 else None)
                history.append(record)
                logger.epoch(epoch + 1, record)
                diagnostics.end_epoch(epoch + 1, step)
                improved = data.val is None or record["val_accuracy"] > best["val_accuracy"]
                if improved:
                    best = {"epoch": epoch + 1, "val_accuracy": record.get("val_accuracy"),
                            "val_loss": record.get("val_loss")}
                epoch, batch_in_epoch = epoch + 1, 0
                carried = {"loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0}
                if improved and is_main:
                    save_checkpoint(run_dir / "checkpoint.pth", {**payload("best"), "metrics": record})
                save_last(data_rng.get_state(), 0.0, 0, 0, 0.0)
                write_metrics("running")
                if is_main:
                    print(_summary(record, cfg.train.epochs, improved and data.val is not None), flush=True)
                if stop.signum is not None and epoch < cfg.train.epochs:
                    raise interrupted()

        if not is_main:
            return run_dir
        # The final report: the best checkpoint, measured once on the test split.
        diagnostics.close()
        best_ckpt = load_checkpoint(run_dir / "checkpoint.pth")
        model.load_state_dict(best_ckpt["model_state"])
        test = evaluate(model, data.test, len(data.classes), cfg.train.eval_batch_size)
        test_summary = {"loss": test["loss"], "accuracy": test["accuracy"], "epoch": best["epoch"]}
        save_checkpoint(run_dir / "checkpoint.pth", {**best_ckpt, "test": test_summary})
        write_metrics("finished", test_summary)
        # The figures (matplotlib, a second or two) come with the diagnostics and go with them.
        figures = cfg.train.diagnostics != "off"
        logger.test(best["epoch"], test, data.classes, figures)
        if figures:
            shown, shown_name = (data.val, "val") if data.val is not None else (data.test, "test")
            wrong, predicted = misclassified(model, shown, limit=32, batch_size=cfg.train.eval_batch_size)
            logger.misclassified(shown_name, best["epoch"], shown.images[wrong], predicted,
                                 shown.labels[wrong], data.classes, data.mean, data.std)
        print(f"test     accuracy {test['accuracy']:.2%}  loss {test['loss']:.4f}  "
              f"(best epoch {best['epoch']}, {run_dir / 'checkpoint.pth'})")
        if diagnostics.report():
            print(diagnostics.report())
        print(f"curves   tensorboard --logdir {run_dir.parent}")
        return run_dir
    finally:
        diagnostics.close()
        logger.close()


def _stack(losses: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.stack(losses) if losses else torch.zeros(0, device=device)


def _check_finite(losses: torch.Tensor, first_step: int, write_metrics) -> None:
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return
    bad = int((~finite).nonzero()[0])
    write_metrics("diverged")
    raise UserError(f"training diverged: the loss is {losses[bad].item()} at step {first_step + bad + 1}; "
                    "lower optimizer.lr or set train.grad_clip (last.pth and checkpoint.pth, if any, "
                    "hold the last finished epoch)")


def _summary(record: dict, epochs: int, best: bool) -> str:
    parts = [f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}",
             f"train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.2%}"]
    if "val_accuracy" in record:
        parts.append(f"val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.2%}")
    parts.append(f"lr {record['lr']:.2e}  {record['train_time_s']:.1f}s ({record['samples_per_s']:,.0f}/s)")
    return "  ".join(parts) + ("  *" if best else "")


def train_from_files(config: Path | None, overrides: list[str], run_dir: Path | None = None,
                     resume: Path | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """What ``mlp train`` does: resolve the config (or the run to resume) and fit,
    data-parallel across the processes when torchrun launched several."""
    ckpt = None
    if resume is not None:
        cfg, ckpt, run_dir = resume_target(resume, overrides)
    else:
        cfg = load_config(config, overrides)
    with distributed.process_group(cfg.train.device):
        return fit(cfg, run_dir, resume=ckpt, overwrite=overwrite, progress=progress)
