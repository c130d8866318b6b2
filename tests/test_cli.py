"""The command line as a user meets it: help, exit codes, one-line errors."""

import json
import subprocess
import sys

from conftest import run_mlp


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


def test_usage_errors_exit_2(tiny_config):
    for args in (["train"], ["eval"], ["train", "--config", tiny_config, "--bogus"],
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
