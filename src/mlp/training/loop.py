"""The training loop: ``fit(config) -> run folder``.

``fit`` tells a run's story: build the parts (``Trainer``), open the run's folder, restore an
interrupted run's state, train epoch after epoch, then measure the best checkpoint on the test
split (``report_on_test``).  Who owns what:

- ``Trainer`` (trainer.py): the parts of one run (device, data, model, optimizer, schedule, logs)
  and the epoch: ``train_step`` is one optimizer step, ``train_epoch`` the batches of an epoch,
  ``end_epoch`` validation and the epoch's files;
- ``TrainingState`` (state.py): where the run is and what it has measured, saved in last.pth
  under its own field names; ``EpochMetrics`` (state.py): one epoch's per-step results;
- ``RunFolder`` (run/folder.py): every file of the run, and the lock; ``RunRecord`` (run/record.py) reads them;
- ``StopRequest`` (signals.py): SIGINT and SIGTERM.  A stop and a divergence are exceptions
  (``Interrupted``, ``Diverged``) that carry the status metrics.json records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlp.training import distributed
from mlp.training.progress import runs_root_of
from mlp.run.checkpoint import load_checkpoint
from mlp.config import Config, dump_yaml, load_config, parse_override, set_dotted, validate_config
from mlp.errors import Interrupted, RunEnded, UserError
from mlp.commands.evaluate import evaluate, misclassified
from mlp.run.folder import RunFolder, metrics_record
from mlp.run.record import RunRecord
from mlp.run.schema import check_resume_section
from mlp.training.signals import StopRequest
from mlp.training.state import upgrade_resume_section
from mlp.training.trainer import EpochHook, Trainer

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
            trainer.restore(resume.checkpoint, folder.path / "last.pth")
            if cfg.to_dict() != resume.checkpoint["config"]:  # the --set changes a resume may make
                folder.write_config(dump_yaml(cfg))
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


def report_on_test(trainer: Trainer, folder: RunFolder, stop: StopRequest) -> dict[str, Any]:
    """The final report: the best checkpoint, measured once on the test split, into checkpoint.pth,
    metrics.json, TensorBoard and the terminal.  A stop that came meanwhile leaves it for the resume."""
    data, best = trainer.data, trainer.state.best
    with trainer.timed("test"):
        best_checkpoint = folder.best_checkpoint(best["epoch"])
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
    if trainer.tuner.summary():
        print(f"threads  {trainer.tuner.summary()}")
    if trainer.resumed_at is not None:
        print(f"resumed  at epoch {trainer.resumed_at[0]}, step {trainer.resumed_at[1]}")
    print(f"curves   tensorboard --logdir {runs_root_of(folder.path)}")
    return summary


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
    and config with the allowed ``--set`` changes applied.  A write cut short is rolled back first,
    and a folder whose files disagree is refused."""
    path = Path(path)
    file = path / "last.pth" if path.is_dir() else path
    if path.is_dir() and not RunRecord(path).has("last.pth"):
        what = "its last.pth is a link or a special file" if os.path.lexists(file) else "no last.pth in that folder"
        raise UserError(f"--resume {path}: {what}, so there is nothing to resume")
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
        check_resume_section(ckpt, file)
        cfg = _changed_on_resume(saved, overrides, file, ckpt["resume"]["epoch"])
        if folder.writes:  # the process that writes the folder checks it (the other DDP ranks wait for it)
            folder.recover(ckpt)
        return Resume(cfg, ckpt, folder)
    except BaseException:
        folder.release(forget=not RunRecord(folder.path).is_run())  # no lock file left in a non-run folder
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
