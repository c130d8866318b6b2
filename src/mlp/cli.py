"""Thin Typer commands: parse the arguments, call one function (a UserError becomes one line
and exit code 2, see mlp/app.py, which also holds ``main``).

torch, torchvision and tensorboard are imported inside the commands, so ``mlp --help``
answers at once.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from mlp import numbers
from mlp.app import app, command, main, validated  # noqa: F401  (main: the `mlp` entry point)
from mlp.errors import UserError


class SplitName(str, Enum):
    test = "test"
    val = "val"
    train = "train"


@command
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", metavar="FILE",
                                          help="YAML config file, e.g. configs/mnist.yaml."),
    set_: List[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                   help="Override a config key: --set model.width=256 (repeatable; "
                                        "--print-config lists the keys)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", metavar="DIR",
                                           help="Write the run here instead of runs/<name>-<time>/."),
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="RUN",
                                          help="Continue a run: its folder or its last.pth."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in a non-empty --run-dir."),
    print_config: bool = typer.Option(False, "--print-config",
                                      help="Print the resolved config (every key with its value) and exit; "
                                           "without --config, the defaults with each key's meaning."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar per epoch."),
) -> None:
    """Train a model from a YAML config.

    Writes a run folder (runs/<name>-<time>/): TensorBoard events, metrics.json, checkpoint.pth
    (the best epoch on validation) and last.pth (to resume). Every config key with its default
    and its meaning: mlp train --print-config.

    \b
    Examples:
      mlp train -c configs/mnist.yaml
      mlp train -c configs/mnist.yaml --set model.activation=tanh --set train.epochs=3
      mlp train -c configs/mnist.yaml --print-config
      mlp train --resume runs/mnist-20260101-120000
    """
    if resume is not None and (config is not None or run_dir is not None or overwrite):
        raise UserError("--resume continues a run with its own config and folder; "
                        "drop --config/--run-dir/--overwrite (use --set to change a field)")
    if print_config:
        typer.echo(_config_text(config, set_, resume), nl=False)
        return
    if config is None and resume is None:
        raise UserError("give --config FILE (see configs/), or --resume RUN_DIR")
    from mlp.training.workers import follow_parent

    follow_parent()  # started by mlp sweep or mlp compare: stop when it dies
    on_epoch = None
    if os.environ.get("MLP_STUDY_TRIAL"):  # started by `mlp sweep`: report each epoch to its study
        from mlp.sweep.study import TRIAL_ENV, epoch_reporter

        on_epoch = epoch_reporter(os.environ[TRIAL_ENV])
    from mlp.imports import paused_gc

    with paused_gc():  # torch's import (mlp.imports)
        from mlp.training.loop import train_from_files
    train_from_files(config, set_, run_dir=run_dir, resume=resume, overwrite=overwrite, progress=progress,
                     on_epoch=on_epoch)



def _config_text(config: Optional[Path], sets: List[str], resume: Optional[Path]) -> str:
    """What --print-config prints: without --config, the defaults with each key's meaning; else the
    resolved config (of the run --resume continues, with its --set changes)."""
    from mlp.config import commented_yaml, dump_yaml, load_config

    if config is None and resume is None:
        return commented_yaml(load_config(None, sets))
    if resume is not None:
        from mlp.training.loop import resume_target

        return dump_yaml(resume_target(resume, sets, lock=False).config)
    return dump_yaml(load_config(config, sets))

@command
def eval_(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", show_default=False,
                                      help="A checkpoint.pth (or last.pth) written by mlp train, or with "
                                           "--config a bare state dict saved by another script."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", metavar="FILE",
                                          help="For a bare state dict (torch.save(model.state_dict(), ...)): "
                                               "the config describing its model and data set."),
    split: SplitName = typer.Option(SplitName.test, "--split", metavar="SPLIT",
                                    help="Which split to measure: test, val or train."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", metavar="DIR",
                                             help="Folder holding the data set (default: the run's, or $MLP_DATA_ROOT)."),
    device: Optional[str] = typer.Option(None, "--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, metavar="N", help="Images per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    plots: Optional[Path] = typer.Option(None, "--plots", metavar="DIR",
                                         help="Also write the confusion matrix and per-class accuracy as PNG "
                                              "files into this folder."),
) -> None:
    """Measure a trained model: accuracy, loss, per-class results.

    The model is rebuilt from the checkpoint alone (its config, class names and normalisation
    are inside it).

    \b
    Examples:
      mlp eval runs/mnist-20260101-120000/checkpoint.pth
      mlp eval runs/mnist-20260101-120000/checkpoint.pth --split val --plots figures/
    """
    from mlp.config import TrainConfig
    from mlp.commands.evaluate import evaluate_checkpoint, format_report

    if device is not None:
        validated(TrainConfig, "device", device, "--device")
    if plots is not None:
        from mlp.files import output_folder
        from mlp.observe.figures import write_evaluation_plots

        output_folder(plots, "--plots")
    result = evaluate_checkpoint(checkpoint, split.value, str(data_root) if data_root else None, device, batch_size,
                                 config)
    if plots is not None:
        result["plots"] = [str(p) for p in write_evaluation_plots(result, plots)]
    if as_json:
        typer.echo(numbers.dumps(result))
    else:
        typer.echo(format_report(result, result["classes"], f"{result['dataset']} {split.value} split, {checkpoint}"))
        if "normalization" in result:
            norm = result["normalization"]
            typer.echo(f"\nnormalised with mean {', '.join(f'{m:.4f}' for m in norm['mean'])} and std "
                       f"{', '.join(f'{s:.4f}' for s in norm['std'])}, those of {norm['from']} (a bare state "
                       "dict does not say how its images were normalised)")
        if plots is not None:
            typer.echo("\nplots     " + "  ".join(result["plots"]))


@command
def activations(
    out: Path = typer.Option(Path("activations"), "--out", metavar="DIR", help="Folder for the PNG files."),
    dataset: Optional[str] = typer.Option(None, "--dataset", metavar="NAME",
                                          help="Also show real images before and after each activation: "
                                               "mnist, fashion_mnist, kmnist, cifar10 or cifar100."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", metavar="DIR",
                                             help="With --dataset: the folder holding it (default: "
                                                  "$MLP_DATA_ROOT, else ./data; downloaded when missing)."),
    log_dir: Path = typer.Option(Path("runs-activations"), "--log-dir", metavar="DIR",
                                 help="TensorBoard folder for the same figures (kept apart from the "
                                      "training runs under runs/)."),
    activation: List[str] = typer.Option([], "--activation", "-a", metavar="NAME",
                                         help="Only this activation (repeatable); default: every supported one."),
) -> None:
    """Draw activations and their derivatives (PNGs, TensorBoard).

    One PNG per activation and an overview with all of them on shared axes; with --dataset,
    also real images before and after each activation (before_after_<name>.png).

    \b
    Examples:
      mlp activations
      mlp activations -a relu -a sigmoid -a tanh --dataset mnist --out figures/
    """
    from mlp.config import DataConfig

    if dataset is not None:
        dataset = validated(DataConfig, "dataset", dataset, "--dataset")
    from mlp.commands.activations import draw_activations

    written = draw_activations(out, log_dir, activation, dataset, data_root)
    typer.echo(f"wrote {len(written)} figures to {out}/ (overview: {out / 'overview.png'})")
    typer.echo(f"TensorBoard: tensorboard --logdir {log_dir}")


class PrunerName(str, Enum):
    none = "none"
    median = "median"
    halving = "halving"


class SamplerName(str, Enum):
    tpe = "tpe"
    random = "random"


@command
def sweep(
    config: Optional[Path] = typer.Option(None, "--config", "-c", metavar="FILE", show_default=False,
                                          help="The YAML config every trial starts from."),
    grid: List[str] = typer.Option([], "--grid", "-g", metavar="KEY=V1,V2,...", show_default=False,
                                   help="Values to try: --grid model.width=128,256 (repeatable; all combinations run)."),
    search: Optional[Path] = typer.Option(None, "--search", metavar="SPACE.yaml",
                                          help="Search instead: a YAML file of ranges and choices per config key "
                                               "(see docs/scaling.md)."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", min=1, metavar="N",
                                         help="How many trials a --search runs in all, over all its workers."),
    set_: List[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                   help="Override a config key in every trial (repeatable)."),
    sweep_dir: Optional[Path] = typer.Option(None, "--sweep-dir", metavar="DIR",
                                             help="Folder for the trials and leaderboard (default: runs/<config name>-sweep-<digest>, "
                                                  "one per sweep)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, metavar="N", help="Trials this process trains at the same time."),
    storage: Optional[str] = typer.Option(None, "--storage", metavar="URL",
                                          help="Where the study lives, shared by every worker given the same one: "
                                               "a database URL (postgresql://user@host/db) or a journal file "
                                               "(default: SWEEP_DIR/optuna-journal.log)."),
    study: Optional[str] = typer.Option(None, "--study", metavar="NAME",
                                        help="The study's name in the storage (default: the sweep folder's name)."),
    pruner: Optional[PrunerName] = typer.Option(None, "--pruner", metavar="PRUNER",
                                                help="Stop trials whose validation accuracy lags: none, median or "
                                                     "halving (default: median for --search, none for --grid)."),
    sampler: Optional[SamplerName] = typer.Option(None, "--sampler", metavar="SAMPLER",
                                                  help="How --search picks values: tpe (default, learns from "
                                                       "finished trials) or random."),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="N",
                                       help="Seed the --search sampler (repeatable with one worker)."),
    leaderboard_only: bool = typer.Option(False, "--leaderboard-only", help="Print the study's leaderboard "
                                          "(every worker's trials) and exit; trains nothing. With --sweep-dir "
                                          "alone, the sweep is read from its study."),
) -> None:
    """Train a grid or a search of configs, then rank the runs.

    The sweep is one Optuna study; each trial is a run in the sweep folder, and the sweep ends
    with a leaderboard (table, CSV and Markdown). Several processes started with the same
    command and --storage share the study. Running the same command again skips finished
    trials and resumes interrupted ones.

    \b
    Examples:
      mlp sweep -c configs/mnist.yaml --grid model.activation=relu,tanh,sigmoid --grid model.depth=1,3
      mlp sweep -c configs/mnist.yaml --search space.yaml --trials 20 --jobs 2
    """
    from mlp.sweep.runner import run_sweep

    code = run_sweep(config, grid, search, trials, set_, sweep_dir, jobs, storage, study,
                     pruner.value if pruner else None, sampler.value if sampler else None, seed, leaderboard_only)
    if code:
        raise typer.Exit(code)


@command
def compare(
    config: Path = typer.Option(..., "--config", "-c", metavar="FILE", show_default=False,
                                help="The YAML config every run starts from (configs/compare.yaml: six hidden "
                                     "layers, a few minutes on a CPU); its compare: section (vary, seeds, claim) "
                                     "is read too."),
    vary: List[str] = typer.Option([], "--vary", "-v", metavar="KEY=V1,V2",
                                   help="Train one run per value of a config key (any key --set takes); "
                                        "repeat for a grid, e.g. --vary model.init=xavier,kaiming."),
    activations: List[str] = typer.Option([], "--activations", "-a", metavar="A,B,...",
                                          help="Shorthand for --vary model.activation=A,B; repeating -a adds "
                                               "activations (default, when nothing is varied: relu,leaky_relu,"
                                               "elu,selu,gelu,silu,tanh,sigmoid)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", metavar="N", min=1,
                                        help="Train every condition with seeds 0..N-1 (default: the config's "
                                             "compare.seeds, else once with its own seed)."),
    set_: List[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                   help="Override a config key in every run (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="DIR",
                                       help="Folder for the runs and the report (default: runs/<config name>-compare)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, metavar="N",
                                       help="Runs to train at the same time, each with its share of the CPU "
                                            "cores (default: one per core, at most 4)."),
) -> None:
    """Train a run per value varied and seed, then compare them.

    Writes report.html (figures and findings, offline) and summary.json. Everything not varied
    comes from the config as written (and --set); compare only turns the per-layer diagnostics on.
    Running the same command again reuses finished runs and resumes interrupted ones.

    \b
    Examples:
      mlp compare --config configs/compare.yaml
      mlp compare -c configs/compare.yaml --vary model.init=xavier,kaiming -a relu,tanh --seeds 3
    """
    from mlp.comparison.plan import run_compare

    code = run_compare(config, activations, set_, out, jobs, vary=vary, seeds=seeds)
    if code:
        raise typer.Exit(code)


@command
def runs(
    folder: Path = typer.Argument(Path("runs"), metavar="DIR",
                                  help="Where to look for runs (searched recursively).  [default: runs]",
                                  show_default=False),
    sort: str = typer.Option("run", "--sort", metavar="COLUMN",
                             help="Column to sort by, named as in the table's header ('test acc' or test_acc, "
                                  "'best val acc', epochs, lr, ...); accuracies sort best first."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list instead of a table."),
) -> None:
    """List runs with their settings and final metrics.

    Reads each run folder's config.yaml and metrics.json (no torch needed). A run whose files
    are damaged is listed with status "unreadable", and why is said on stderr.

    \b
    Examples:
      mlp runs
      mlp runs runs/mnist-sweep --sort 'test acc'
    """
    from mlp.commands.runs import format_runs, list_runs

    found = list_runs(folder, sort)
    for run in found:  # a damaged run is a row marked unreadable; why, is said here
        if run.get("error"):
            print(f"note: {folder / run['run']} is unreadable: {run['error']}", file=sys.stderr)
    if as_json:
        typer.echo(numbers.dumps(found, indent=2))
    elif found:
        typer.echo(format_runs(found))
    else:
        typer.echo(f"no runs under {folder}")


@command
def predict(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", show_default=False,
                                      help="A checkpoint.pth written by mlp train, or with --config a bare "
                                           "state dict saved by another script."),
    images: List[Path] = typer.Argument(..., metavar="IMAGE...", show_default=False,
                                        help="Image files (PNG, JPEG, ...), any size or mode, 8 or 16 bits."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", metavar="FILE",
                                          help="For a bare state dict: the config describing its model and data "
                                               "set (whose training images set the normalisation)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", metavar="DIR",
                                             help="With --config: the folder holding the data set."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, metavar="K", help="How many labels to show per image."),
    device: str = typer.Option("cpu", "--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list with an object per image."),
    as_is: bool = typer.Option(False, "--as-is", help="Only resize each image to the model's input: no "
                                                      "inversion, levelling, cropping or centring."),
) -> None:
    """Classify image files with a trained model.

    Prints the top-k labels with their probabilities. Each image is prepared as the training
    images were: a dark digit on a light background (ink on paper) is inverted to their
    polarity, a grey paper background made black, and for MNIST the digit is cropped to its
    ink, scaled into 20×20 and centred by mass in 28×28; the notes say what was done. An
    image still unlike the training images is flagged: the model's answer on it is a guess.
    An image that cannot be read is named on stderr; the others are still classified (exit
    code 2).

    \b
    Example:
      mlp predict runs/mnist-20260101-120000/checkpoint.pth my_seven.jpg scan.png
    """
    from mlp.config import TrainConfig
    from mlp.commands.predict import format_predictions, predict_files

    device = validated(TrainConfig, "device", device, "--device")
    predictions, unreadable = predict_files(checkpoint, images, top_k, device, config=config,
                                            data_root=str(data_root) if data_root else None, prepare=not as_is)
    if as_json:
        typer.echo(numbers.dumps(predictions, indent=2))
    elif predictions:
        typer.echo(format_predictions(predictions))
    for path, reason in unreadable:
        print(f"error: cannot read image {path}: {reason}", file=sys.stderr)
    if unreadable:
        raise typer.Exit(2)


class ExportFormat(str, Enum):
    torchscript = "torchscript"
    onnx = "onnx"


@command
def export(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", show_default=False,
                                      help="A checkpoint.pth written by mlp train."),
    fmt: ExportFormat = typer.Option(ExportFormat.torchscript, "--format", "-f", metavar="FORMAT",
                                     help="torchscript (torch.jit.load) or onnx (onnxruntime; pip install -e '.[export]')."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE",
                                       help="The file to write (default: beside the checkpoint, .pt or .onnx)."),
) -> None:
    """Write a model as TorchScript or ONNX, to run without mlp.

    The file takes float images (N, C, H, W) in [0, 1], normalises them itself and returns one
    logit per class; the class names are inside it (docs/python.md shows how to read them).

    \b
    Examples:
      mlp export runs/mnist-20260101-120000/checkpoint.pth
      mlp export runs/mnist-20260101-120000/checkpoint.pth --format onnx --out mnist.onnx
    """
    from mlp.commands.export import export as write_export

    typer.echo(f"wrote {write_export(checkpoint, fmt.value, out)}")
