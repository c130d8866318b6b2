"""The command line as a user meets it: help, exit codes, one-line errors."""

import re
import subprocess
import sys

from conftest import run_mlp
from mlp import __version__


def test_help_and_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "mlp", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "train" in done.stdout and "eval" in done.stdout
    # --help must not pay for torch: the CLI module keeps heavy imports inside commands
    probe = "import sys, mlp.cli; print(any(m in sys.modules for m in ('torch', 'torchvision', 'tensorboard')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


def test_print_config_shows_the_resolved_config(tiny_config):
    done = run_mlp("train", "--config", tiny_config, "--print-config", "--set", "model.activation=swish")
    assert done.returncode == 0
    assert "activation: silu" in done.stdout and "depth: 1" in done.stdout and "lr: 0.003" in done.stdout


def test_print_config_without_a_config_is_the_defaults_with_each_key_explained():
    import yaml

    from mlp.config import Config, load_config, validate_config

    done = run_mlp("train", "--print-config")
    assert done.returncode == 0, done.stderr
    assert validate_config(yaml.safe_load(done.stdout)) == load_config(None)
    keys = [line for line in done.stdout.splitlines() if line.strip() and not line.startswith("#")]
    commented = [re.fullmatch(r"( *)([a-z_]+):.*?  # (\S.*)", line) for line in keys]
    assert all(commented), [line for line, match in zip(keys, commented) if not match]
    top = [m.group(2) for m in commented if not m.group(1)]
    assert top == [name for name in Config.model_fields if name != "compare"]  # compare: unset, shown commented out
    nested = [m.group(2) for m in commented if m.group(1)]
    sections = [Config.model_fields[name].annotation for name in top if name not in ("name", "seed")]
    assert nested == [key for section in sections for key in section.model_fields]
    from mlp.config import CompareConfig

    shown = [re.fullmatch(r"#   ([a-z_]+): .*  # \S.*", line) for line in done.stdout.splitlines() if line.startswith("#   ")]
    assert "# compare:" in done.stdout and [m.group(1) for m in shown if m] == list(CompareConfig.model_fields)


def test_usage_errors_exit_2(tiny_config):
    for args in (["train"], ["train", "--set", "model.width=8"], ["eval"], ["train", "--config", tiny_config, "--bogus"],
                 ["eval", "x.pth", "--split", "everything"]):
        done = run_mlp(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_a_user_error_in_a_real_process_is_one_line_and_exit_2(tmp_path):
    done = run_mlp("train", "--config", tmp_path / "missing.yaml")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: config file not found: {tmp_path / 'missing.yaml'}"]
    (tmp_path / "x.pth").write_text("not a checkpoint")
    done = run_mlp("eval", tmp_path / "x.pth")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


COMMANDS = ["train", "eval", "activations", "sweep", "compare", "runs", "predict"]


def test_help_follows_the_conventions():
    top = run_mlp("-h")
    assert top.returncode == 0 and top.stdout == run_mlp("--help").stdout
    for flag in ("--version", "--install-completion", "--show-completion", "-h, --help"):
        assert flag in top.stdout
    listed = top.stdout[top.stdout.index("Commands:"):].splitlines()[1:]
    assert [line.split()[0] for line in listed if line.strip()][:len(COMMANDS)] == COMMANDS
    assert not [line for line in listed if line.rstrip().endswith("...")]  # no description cut short
    version = run_mlp("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"mlp {__version__}"
    for name in COMMANDS:
        shown = run_mlp(name, "-h")
        assert shown.returncode == 0, name
        assert shown.stdout.startswith(f"Usage: mlp {name} [OPTIONS]"), name
        assert "Example" in shown.stdout and f"\n    mlp {name} " in shown.stdout, name
        assert not re.search(r"<[a-z]+\[|[{}]|<path>|<str>|<int", shown.stdout), (name, shown.stdout)
    assert "--print-config" in run_mlp("train", "-h").stdout.split("Options:")[0]  # in the description
    assert "Usage: mlp predict [OPTIONS] CHECKPOINT IMAGE..." in run_mlp("predict", "-h").stdout


def test_a_usage_mistake_is_one_line():
    for args, message in [(["bogus"], "error: No such command 'bogus'. (see 'mlp -h')"),
                          (["tran"], "Did you mean 'train'?"),
                          (["train", "--sett", "x"], "No such option: --sett (Possible options: --set) (see 'mlp train -h')"),
                          (["eval"], "Missing argument 'CHECKPOINT'"),
                          (["predict", "-k", "0", "a.pth", "b.png"], "'--top-k'")]:
        done = run_mlp(*args)
        assert done.returncode == 2 and done.stdout == "", args
        assert len(done.stderr.splitlines()) == 1 and message in done.stderr, (args, done.stderr)


def test_shell_completion_completes_commands_and_options():
    # --show-completion names the shell it was started from (found among the parent processes),
    # so start it from bash; the trailing `true` keeps bash from replacing itself with python
    script = subprocess.run(["bash", "-c", f"'{sys.executable}' -m mlp --show-completion; true"],
                            capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "_MLP_COMPLETE=complete_bash" in script.stdout, script.stderr
    for words, cword, expected in [("mlp tr", "1", "train"), ("mlp train --pr", "2", "--print-config")]:
        done = run_mlp(env={"_MLP_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword})
        assert expected in done.stdout.split(), (words, done.stdout)
