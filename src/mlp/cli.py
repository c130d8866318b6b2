"""Thin Typer commands: parse the arguments, call one function, turn a UserError into exit code 2.

torch, torchvision and tensorboard are imported inside the commands, so ``mlp --help``
answers at once.  A usage mistake (an unknown command or option, a bad value) is one line
on stderr naming the problem and where the help is, with exit code 2, like a UserError.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import functools
from enum import Enum

import typer
from typer.core import TyperCommand

from mlp import __version__
from mlp.errors import Interrupted, Pruned, UserError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help text: rich formatting costs ~0.3 s per call
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train, evaluate and explain multilayer-perceptron image classifiers.\n\n"
         "Start with: mlp train -c configs/mnist.yaml, then mlp eval runs/<run>/checkpoint.pth; "
         "mlp COMMAND -h shows a command's options and examples.",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mlp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


class PlainCommand(TyperCommand):
    """Arguments shown by their metavar alone: ``mlp predict [OPTIONS] CHECKPOINT IMAGE...``,
    not typer's ``{checkpoint}`` in the usage line and ``<list[Path]>`` in the argument list."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or param.name.upper()
                pieces.append(name if param.required or name.startswith("[") else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        params = self.get_params(ctx)
        arguments = [(p.metavar or p.name.upper(), p.help or "") for p in params if p.param_type_name == "argument"]
        options = [p.get_help_record(ctx) for p in params if p.param_type_name == "option"]
        for title, rows in (("Arguments", arguments), ("Options", [r for r in options if r])):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def command(fn):
    """Register ``fn`` as a command; a UserError becomes one line on stderr and exit code 2.

    The first line of the docstring is the command's line in ``mlp --help``, so it stays short.
    """

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if os.environ.get("RANK", "0") == "0":
                print(f"error: {e}", file=sys.stderr)
            else:  # under torchrun every process meets it: rank 0 says it, and the others give it a
                time.sleep(1)  # moment to, since torchrun stops every process once the first has exited
            raise typer.Exit(2) from None
        except Pruned as e:  # a sweep's trial that its study stopped: a normal end, metrics.json says so
            print(f"{e}; metrics.json says pruned", file=sys.stderr)
            return None
        except Interrupted as e:
            print(f"stopped by {e.signal_name}; last.pth is saved. Resume with:  mlp train --resume {e.run_dir}",
                  file=sys.stderr)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return app.command(fn.__name__.rstrip("_"), cls=PlainCommand)(run)


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
                                      help="Print the resolved config (every key with its value) and exit."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar per epoch."),
) -> None:
    """Train a model from a YAML config.

    Writes a run folder (runs/<name>-<time>/): TensorBoard events, metrics.json, checkpoint.pth
    (the best epoch on validation) and last.pth (to resume). Every config key with its default:
    mlp train -c FILE --print-config.

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
    if config is None and resume is None:
        raise UserError("give --config FILE (see configs/), or --resume RUN_DIR")
    if print_config:
        from mlp.config import dump_yaml, load_config

        if resume is not None:
            from mlp.training.loop import resume_target

            typer.echo(dump_yaml(resume_target(resume, set_, lock=False).config), nl=False)
        else:
            typer.echo(dump_yaml(load_config(config, set_)), nl=False)
        return
    from mlp import threads

    threads.prepare_for_run(config, set_, resume)  # before torch loads: OpenMP reads its wait policy once
    on_epoch = None
    if os.environ.get("MLP_STUDY_TRIAL"):  # started by `mlp sweep`: report each epoch to its study
        from mlp.sweep.study import TRIAL_ENV, epoch_reporter

        on_epoch = epoch_reporter(os.environ[TRIAL_ENV])
    from mlp.training.loop import train_from_files

    train_from_files(config, set_, run_dir=run_dir, resume=resume, overwrite=overwrite, progress=progress,
                     on_epoch=on_epoch)


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
        _validated(TrainConfig, "device", device, "--device")
    if plots is not None:
        from mlp.observe.figures import writable_folder, write_evaluation_plots

        writable_folder(plots, "--plots")
    result = evaluate_checkpoint(checkpoint, split.value, str(data_root) if data_root else None, device, batch_size,
                                 config)
    if plots is not None:
        result["plots"] = [str(p) for p in write_evaluation_plots(result, plots)]
    if as_json:
        typer.echo(json.dumps(result))
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
        dataset = _validated(DataConfig, "dataset", dataset, "--dataset")
    from mlp.commands.activations import draw_activations

    written = draw_activations(out, log_dir, activation, dataset)
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
    config: Path = typer.Option(..., "--config", "-c", metavar="FILE", show_default=False,
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
                                             help="Folder for the trials and leaderboard (default: runs/<config name>-sweep)."),
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
                                          "(every worker's trials) and exit; trains nothing."),
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
                                     "layers, a few minutes on a CPU)."),
    activations: Optional[str] = typer.Option(None, "--activations", "-a", metavar="A,B,...",
                                              help="Comma-separated activations (default: relu,leaky_relu,elu,"
                                                   "selu,gelu,silu,tanh,sigmoid)."),
    set_: List[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                   help="Override a config key in every run (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="DIR",
                                       help="Folder for the runs and the report (default: runs/<config name>-compare)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, metavar="N",
                                       help="Runs to train at the same time, each with its share of the CPU "
                                            "cores (default: one per core, at most 4)."),
) -> None:
    """Train one run per activation and report how they differ.

    Writes report.html (figures and findings, offline) and summary.json. Everything but the activation is equal (seed, data order, widths, recipe; init: auto). Running the
    same command again reuses finished runs and resumes interrupted ones.

    \b
    Example:
      mlp compare --config configs/compare.yaml
    """
    from mlp import threads

    threads.prepare_for_run(config, set_)  # before torch loads, for the runs here and in the workers
    from mlp.comparison.plan import run_compare

    code = run_compare(config, activations, set_, out, jobs)
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
        typer.echo(json.dumps(found, indent=2))
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
) -> None:
    """Classify image files with a trained model.

    Prints the top-k labels with their probabilities. A dark digit on a light background
    (a scan or photo of ink on paper) is inverted to the training images' polarity, a grey
    paper background made black, and an image unlike the training images is flagged: the
    model's answer on it is a guess.
    An image that cannot be read is named on stderr; the others are still classified (exit
    code 2).

    \b
    Example:
      mlp predict runs/mnist-20260101-120000/checkpoint.pth my_seven.jpg scan.png
    """
    from mlp.config import TrainConfig
    from mlp.commands.predict import format_predictions, predict_files

    device = _validated(TrainConfig, "device", device, "--device")
    predictions, unreadable = predict_files(checkpoint, images, top_k, device, config=config,
                                            data_root=str(data_root) if data_root else None)
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
        code = _run_app()
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


def _run_app() -> int:
    """Run the command; a usage mistake is one line (the problem and where the help is), exit code 2."""
    try:
        from typer._click.exceptions import ClickException, UsageError  # recent typer vendors click
    except ImportError:  # pragma: no cover - older typer on top of click
        from click.exceptions import ClickException, UsageError
    try:
        code = app(prog_name="mlp", standalone_mode=False)  # "mlp" in usage lines and completion, also for python -m mlp
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare `mlp`: the help, as click shows it
            e.show()
            return e.exit_code
        where = f"{e.ctx.command_path} -h" if e.ctx is not None else "mlp -h"
        message = " ".join(e.format_message().replace("Value error, ", "").split())
        print(f"error: {message} (see '{where}')", file=sys.stderr)
        return e.exit_code
    except ClickException as e:
        print(f"error: {' '.join(e.format_message().split())}", file=sys.stderr)
        return e.exit_code
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0
