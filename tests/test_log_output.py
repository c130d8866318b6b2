"""What training prints when its output goes to a log file rather than a terminal."""

import re

from conftest import run_mlp
from mlp.config import load_config
from mlp.training import progress
from mlp.training.loop import fit
from mlp.training.progress import runs_root_of


def test_a_log_file_gets_lines_not_redraws_and_the_end_names_the_resume_and_the_runs_root(tiny_config):
    done = run_mlp("train", "-c", tiny_config, "--set", "train.epochs=1", "--run-dir", "runs/first")
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr  # captured output is not a terminal: no bar
    epoch = next(line for line in done.stdout.splitlines() if line.startswith("epoch 1/1"))
    assert re.search(r"\(\d{1,3}(,\d{3})* samples/s\)", epoch), epoch
    assert done.stdout.splitlines()[-1] == "curves   tensorboard --logdir runs"
    assert "resumed" not in done.stdout
    resumed = run_mlp("train", "--resume", "runs/first", "--set", "train.epochs=2")
    assert resumed.returncode == 0, resumed.stderr
    steps = 1000 // 64 + 1  # 1200 fabricated training images, 200 of them held out for validation
    assert f"resumed  at epoch 2, step {steps}" in resumed.stdout.splitlines()


def test_the_plain_progress_line_comes_every_so_often(tiny_config, monkeypatch, capsys):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    fit(load_config(tiny_config, ["train.epochs=1"]), "run", progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch 1/1")]
    assert len(lines) == 15  # one a batch but the last (16 batches): the interval is zero here
    assert re.fullmatch(r"epoch 1/1    6% \(1/16 batches\)", lines[0]), lines[0]
    assert re.fullmatch(r"epoch 1/1   \d+% \(\d+/16 batches\)  loss \d\.\d{4}  acc \d+\.\d\d%", lines[-1]), lines[-1]


def test_tensorboard_is_pointed_at_the_runs_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runs_root_of(tmp_path / "runs" / "mnist-sweep" / "trial-3") == runs_root_of(tmp_path / "runs" / "x")
    assert str(runs_root_of(tmp_path / "runs" / "x")) == "runs"
    assert str(runs_root_of(tmp_path / "elsewhere" / "x")) == "elsewhere"
    assert runs_root_of(tmp_path.parent / "x") == tmp_path.parent
