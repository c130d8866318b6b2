"""One process per run folder, all-or-nothing epoch files, and stops that end cleanly."""

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch

import mlp.run.durable
import mlp.training.loop
from conftest import run_mlp
from mlp.run.checkpoint import load_checkpoint
from mlp.config import load_config
from mlp.errors import Interrupted, UserError
from mlp.run.folder import RunFolder
from mlp.training.loop import fit, resume_target


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def test_a_second_process_is_refused_while_a_run_folder_is_locked(tiny_config, tmp_path):
    run = fit(load_config(tiny_config, ["train.epochs=1"]), "run", progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with RunFolder(run).locked():  # another process holds it (a lock is per open file: this test is one)
        for args in (["--resume", run, "--set", "train.epochs=2"],
                     ["--config", tiny_config, "--run-dir", run, "--overwrite"]):
            done = run_mlp("train", *args, "--no-progress")
            assert done.returncode == 2, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and "is in use by another mlp process (pid" in lines[0], done.stderr
        with pytest.raises(UserError, match="in use by another mlp process"):
            fit(resume_target(run, ["train.epochs=2"], lock=True), progress=False)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == {k: v for k, v in before.items() if k != ".lock"}  # nothing of the first run changed
    # released: the same resume now runs
    assert _metrics(fit(resume_target(run, ["train.epochs=2"]), progress=False))["status"] == "finished"


def test_a_lock_left_by_a_killed_process_is_taken_over_saying_so(tiny_config, tmp_path):
    run = fit(load_config(tiny_config, ["train.epochs=1"]), "run", progress=False)
    (run / ".lock").write_text("pid 999999 on a-machine")  # written, never released: its holder died
    done = run_mlp("train", "--resume", run, "--set", "train.epochs=2", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "locked by pid 999999 on a-machine, which is no longer running; taking the lock over" in done.stderr
    assert (run / ".lock").read_text() == ""  # released in good order at the end
    assert _metrics(run)["status"] == "finished" and len(_metrics(run)["epochs"]) == 2


def test_a_full_disk_leaves_the_last_finished_epoch_consistent(tiny_config, monkeypatch):
    write = mlp.run.durable.write_temporary
    written = []

    def full_at_epoch_2(path, data):
        written.append(path.name)
        if path.name == "last.pth" and written.count("last.pth") == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(path, data)

    monkeypatch.setattr(mlp.run.durable, "write_temporary", full_at_epoch_2)
    with pytest.raises(UserError) as e:
        fit(load_config(tiny_config, ["train.epochs=3"]), "run", progress=False)
    message = str(e.value)
    assert "\n" not in message and "no space left on the device" in message and "run" in message
    # epoch 2's checkpoint.pth and metrics.json were written before last.pth failed, but replaced nothing
    assert written.count("checkpoint.pth") == 2 and written.count("metrics.json") == 2
    assert load_checkpoint("run/checkpoint.pth")["epoch"] == 1
    assert load_checkpoint("run/last.pth")["epoch"] == 1
    assert len(_metrics(Path("run"))["epochs"]) == 1
    assert not list(Path("run").glob(".*.tmp"))
    monkeypatch.setattr(mlp.run.durable, "write_temporary", write)  # space again: the run resumes
    assert len(_metrics(fit(resume_target("run", []), progress=False))["epochs"]) == 3


def test_a_stop_during_the_final_test_leaves_it_for_the_resume(tiny_config, monkeypatch):
    straight = _metrics(fit(load_config(tiny_config), "straight", progress=False))
    evaluate = mlp.training.loop.evaluate

    def stopped_on_the_test_split(model, split, *args, **kwargs):
        if len(split) == 300:  # the fabricated test split (validation holds 200)
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(model, split, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(mlp.training.loop, "evaluate", stopped_on_the_test_split)
        with pytest.raises(Interrupted) as stopped:
            fit(load_config(tiny_config), "run", progress=False)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert _metrics(stopped.value.run_dir)["status"] == "interrupted"
    resumed = _metrics(fit(resume_target("run", []), progress=False))
    assert resumed["status"] == "finished" and resumed["test"] == straight["test"]


def test_resuming_without_the_best_checkpoint_says_what_to_do(tiny_config, monkeypatch):
    from test_resume import _signal_at_step

    with monkeypatch.context() as m:
        _signal_at_step(m, 20, signal.SIGINT)  # mid-epoch 2 (16 steps an epoch): epoch 1 was the best so far
        with pytest.raises(Interrupted):
            fit(load_config(tiny_config), "run", progress=False)
    os.unlink("run/checkpoint.pth")
    done = run_mlp("train", "--resume", "run", "--no-progress")
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: --resume run: checkpoint.pth (the best epoch so far, 1) is missing; "
                                   "put it back, or start a new run with --config run/config.yaml")


def test_batch_norm_trains_when_the_last_batch_holds_one_image(tiny_config):
    # 1000 training images = 27 batches of 37 + 1: the single image joins the 27th batch,
    # and the one-cycle schedule (which refuses a step past its plan) counts 27 steps an epoch.
    run = fit(load_config(tiny_config, ["model.norm=batch", "train.batch_size=37", "scheduler.name=onecycle"]),
              "run", progress=False)
    metrics = _metrics(run)
    assert metrics["status"] == "finished"
    assert [e["step"] for e in metrics["epochs"]] == [27, 54]
    assert load_checkpoint(run / "last.pth")["resume"]["step"] == 54
    assert torch.isfinite(torch.tensor(metrics["test"]["loss"]))
