"""Thin Typer commands: parse the arguments, call one function, turn a UserError into exit code 2.

torch, torchvision and tensorboard are imported inside the commands, so ``mlp --help``
answers at once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import functools
from enum import Enum

import typer

from mlp.errors import Interrupted, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help text: rich formatting costs ~0.3 s per call
    help="Train, evaluate and explain multilayer-perceptron image classifiers.",
)


def command(fn):
    """Register ``fn`` as a command; a UserError becomes one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(2) from None
        except Interrupted as e:
            print(f"stopped by {e.signal_name}; last.pth is saved. Resume with:  mlp train --resume {e.run_dir}",
                  file=sys.stderr)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return app.command(fn.__name__.rstrip("_"))(run)


class SplitName(str, Enum):
    test = "test"
    val = "val"
    train = "train"


@command
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file (configs/*.yaml)."),
    set_: List[str] = typer.Option([], "--set", "-s", help="Override a field: --set model.width=256 (repeatable)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Write the run here instead of runs/<name>-<time>/."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a run: its folder or its last.pth."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in a non-empty --run-dir."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar per epoch."),
) -> None:
    """Train a model; writes TensorBoard events, metrics.json and checkpoints to its run folder."""
    if resume is not None and (config is not None or run_dir is not None or overwrite):
        raise UserError("--resume continues a run with its own config and folder; "
                        "drop --config/--run-dir/--overwrite (use --set to change a field)")
    if config is None and resume is None:
        raise UserError("give --config FILE (see configs/), or --resume RUN_DIR")
    if print_config:
        from mlp.config import dump_yaml, load_config

        if resume is not None:
            from mlp.train import resume_target

            typer.echo(dump_yaml(resume_target(resume, set_)[0]), nl=False)
        else:
            typer.echo(dump_yaml(load_config(config, set_)), nl=False)
        return
    from mlp.train import train_from_files

    train_from_files(config, set_, run_dir=run_dir, resume=resume, overwrite=overwrite, progress=progress)


@command
def eval_(
    checkpoint: Path = typer.Argument(..., help="A checkpoint.pth (or last.pth) written by mlp train."),
    split: SplitName = typer.Option(SplitName.test, "--split", help="Which split to measure."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the data set."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Also write the confusion matrix and per-class "
                                         "accuracy as PNG files into this folder."),
) -> None:
    """Rebuild a model from its checkpoint alone and report loss, accuracy and per-class results."""
    from mlp.config import TrainConfig
    from mlp.evaluate import evaluate_checkpoint, format_report

    if device is not None:
        _validated(TrainConfig, "device", device, "--device")
    if plots is not None:
        from mlp.plots import writable_folder, write_evaluation_plots

        writable_folder(plots, "--plots")
    result = evaluate_checkpoint(checkpoint, split.value, str(data_root) if data_root else None, device, batch_size)
    if plots is not None:
        result["plots"] = [str(p) for p in write_evaluation_plots(result, plots)]
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(format_report(result, result["classes"], f"{result['dataset']} {split.value} split, {checkpoint}"))
        if plots is not None:
            typer.echo("\nplots     " + "  ".join(result["plots"]))


@command
def activations(
    out: Path = typer.Option(Path("activations"), "--out", help="Folder for the PNG files."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Also show real images before and after each "
                                          "activation: mnist, fashion_mnist, kmnist, cifar10 or cifar100."),
    log_dir: Path = typer.Option(Path("runs/activations"), "--log-dir", help="TensorBoard folder for the same figures."),
    activation: List[str] = typer.Option([], "--activation", "-a", help="Only this activation (repeatable); "
                                         "default: every supported one."),
) -> None:
    """Draw every activation and its derivative (one PNG each and an overview), also in TensorBoard."""
    from mlp.config import DataConfig

    if dataset is not None:
        dataset = _validated(DataConfig, "dataset", dataset, "--dataset")
    from mlp.activations import draw_activations

    written = draw_activations(out, log_dir, activation, dataset)
    typer.echo(f"wrote {len(written)} figures to {out}/ (overview: {out / 'overview.png'})")
    typer.echo(f"TensorBoard: tensorboard --logdir {log_dir}")


@command
def sweep(
    config: Path = typer.Option(..., "--config", "-c", help="The YAML config every trial starts from."),
    grid: List[str] = typer.Option(..., "--grid", "-g",
                                   help="Values to try: --grid model.width=128,256 (repeatable; all combinations run)."),
    set_: List[str] = typer.Option([], "--set", "-s", help="Override a field in every trial (repeatable)."),
    sweep_dir: Optional[Path] = typer.Option(None, "--sweep-dir",
                                             help="Folder for the trials and leaderboard (default: runs/<config name>-sweep)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Trials to train at the same time."),
) -> None:
    """Train every combination of --grid values; each is a run in the sweep folder; ends with a leaderboard.

    Running the same sweep again skips finished trials and resumes interrupted ones.
    """
    from mlp.sweep import run_sweep

    code = run_sweep(config, grid, set_, sweep_dir, jobs)
    if code:
        raise typer.Exit(code)


@command
def compare(
    config: Path = typer.Option(..., "--config", "-c", help="The YAML config every run starts from "
                                "(configs/compare.yaml: six hidden layers, a few minutes on a CPU)."),
    activations: Optional[str] = typer.Option(None, "--activations", "-a", help="Comma-separated activations "
                                              "(default: relu,leaky_relu,elu,selu,gelu,silu,tanh,sigmoid)."),
    set_: List[str] = typer.Option([], "--set", "-s", help="Override a field in every run (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the runs and the report "
                                       "(default: runs/<config name>-compare)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Runs to train at the same time, each "
                                       "with its share of the CPU cores (default: one per core, at most 4)."),
) -> None:
    """Train the same network once per activation and write report.html and summary.json comparing them.

    Everything but the activation is equal (seed, data order, widths, recipe; init: auto). Running the
    same command again reuses finished runs and resumes interrupted ones.

    \b
    Example:
      mlp compare --config configs/compare.yaml
    """
    from mlp.compare import run_compare

    code = run_compare(config, activations, set_, out, jobs)
    if code:
        raise typer.Exit(code)


@command
def runs(
    folder: Path = typer.Argument(Path("runs"), help="Where to look for runs (searched recursively)."),
    sort: str = typer.Option("run", "--sort", help="Column to sort by (accuracies sort best first)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list instead of a table."),
) -> None:
    """List runs with their key hyperparameters and final metrics, read from each run's files."""
    from mlp.runs import format_runs, list_runs

    found = list_runs(folder, sort)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
    elif found:
        typer.echo(format_runs(found))
    else:
        typer.echo(f"no runs under {folder}")


@command
def predict(
    checkpoint: Path = typer.Argument(..., help="A checkpoint.pth written by mlp train."),
    images: List[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...), any size or mode."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="How many labels to show per image."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list with an object per image."),
) -> None:
    """Classify image files with a trained model; prints the top-k labels and their probabilities.

    An image that cannot be read is named on stderr; the others are still classified (exit code 2).
    """
    from mlp.config import TrainConfig
    from mlp.predict import format_predictions, predict_files

    predictions, unreadable = predict_files(checkpoint, images, top_k, _validated(TrainConfig, "device", device, "--device"))
    if as_json:
        typer.echo(json.dumps(predictions, indent=2))
    elif predictions:
        typer.echo(format_predictions(predictions))
    for path, reason in unreadable:
        print(f"error: cannot read image {path}: {reason}", file=sys.stderr)
    if unreadable:
        raise typer.Exit(2)


def _validated(section, field: str, value, flag: str):
    from pydantic import ValidationError

    try:
        return getattr(section.model_validate({field: value}), field)
    except ValidationError as e:
        raise UserError(f"{flag}: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def main() -> None:
    try:
        app()
        code = 0
    except SystemExit as e:
        code = e.code
    if "torch._dynamo" not in sys.modules:
        sys.exit(code)
    # Every torch optimizer step imports torch's compiler stack, and the interpreter then takes
    # well over a second to tear it down at exit.  By now every file is written, fsynced and
    # closed, so skip that teardown: flush what was printed and leave.
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
