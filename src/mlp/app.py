"""The Typer app and how every command behaves: a UserError is one line on stderr and exit code
2, a usage mistake one line naming the problem and where the help is, a stopped run its exit
code; help lists arguments by their names.  The commands themselves are in cli.py."""

from __future__ import annotations

import functools
import os
import sys
import time

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


def validated(section, field: str, value, flag: str):
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
        code = app(prog_name="mlp", standalone_mode=False)  # "mlp" in usage lines and completion, also for python -m mlp
    except typer.TyperException as e:  # typer's errors: a usage mistake (it has a ctx) or another click error
        if not hasattr(e, "ctx"):
            print(f"error: {' '.join(e.format_message().split())}", file=sys.stderr)
            return e.exit_code
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare `mlp`: the help, as typer shows it
            e.show()
            return e.exit_code
        where = f"{e.ctx.command_path} -h" if e.ctx is not None else "mlp -h"
        message = " ".join(e.format_message().replace("Value error, ", "").split())
        print(f"error: {message} (see '{where}')", file=sys.stderr)
        return e.exit_code
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0
