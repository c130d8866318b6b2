"""Never lose a run: interruption, exact resume, atomic checkpoints, the divergence guard."""

import io
import json
import os
import re
import signal
import subprocess
import time

import pytest
import torch

import mlp.training.trainer
from conftest import run_mlp, start_mlp, write_config
from mlp.run.checkpoint import load_checkpoint
from mlp.config import load_config
from mlp.errors import Interrupted
from mlp.commands.evaluate import evaluate_checkpoint
from mlp.training.loop import fit, resume_target

# Dropout, augmentation and a schedule, so that every random stream and every piece of
# optimizer state has to come back for the weights to match.
EXACT = ["train.epochs=3", "train.batch_size=50", "model.dropout=0.2", "data.augment=true",
         "scheduler.name=cosine", "scheduler.warmup_epochs=0.5", "model.width=[48, 32]"]


def _signal_at_step(monkeypatch, step: int, signum: int, times: int = 1):
    """Deliver a real signal to this process as optimizer step ``step`` begins (its batch is then
    in flight; step 0's measurement before any update is no optimizer step and is not counted)."""
    train_step = mlp.training.trainer.Trainer.train_step
    calls = {"n": 0}

    def counted(self, idx):
        calls["n"] += 1
        if calls["n"] == step:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return train_step(self, idx)

    monkeypatch.setattr(mlp.training.trainer.Trainer, "train_step", counted)


def _weights(path):
    return load_checkpoint(path)["model_state"]


@pytest.mark.parametrize("stop_step,signum", [(7, signal.SIGINT), (19, signal.SIGTERM), (40, signal.SIGINT)])
def test_interrupted_and_resumed_run_ends_bit_identical(tiny_config, monkeypatch, stop_step, signum):
    # 1000 training images / 50 = 20 steps an epoch (steps 1-20 are epoch 1): the stop at step 7 is early in
    # epoch 1, at 19 one step before its end (the resume trains a single step of it), and at 40 the last
    # step of epoch 2 (that epoch ends and is written before the stop takes effect)
    straight = fit(load_config(tiny_config, EXACT), "straight", progress=False)

    with monkeypatch.context() as m:
        _signal_at_step(m, stop_step, signum)
        with pytest.raises(Interrupted) as stopped:
            fit(load_config(tiny_config, EXACT), "stopped", progress=False)
    assert stopped.value.exit_code == 128 + signum
    state = load_checkpoint(stopped.value.run_dir / "last.pth")["resume"]
    assert state["step"] == stop_step  # the step in flight when the signal came is completed and kept
    assert json.loads((stopped.value.run_dir / "metrics.json").read_text())["status"] == "interrupted"

    folder = fit(resume_target(stopped.value.run_dir, []), progress=False)

    a, b = _weights(straight / "last.pth"), _weights(folder / "last.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma = json.loads((straight / "metrics.json").read_text())
    mb = json.loads((folder / "metrics.json").read_text())
    strip = lambda m: [{k: v for k, v in r.items() if k not in ("train_time_s", "samples_per_s")} for r in m["epochs"]]
    assert strip(ma) == strip(mb) and ma["test"] == mb["test"] and mb["status"] == "finished"
    assert _logged_losses(straight) == _logged_losses(folder)  # the interval cut by the stop included


def _events(run):
    from tbevents import read_events

    return read_events(run)


def _logged_losses(run):
    return [(e.step, e.value) for e in _events(run).Scalars("loss/step")]


@pytest.mark.parametrize("ring", [False, True])
def test_a_format_1_last_pth_resumes_exactly(tiny_config, monkeypatch, ring):
    """Format 1 saved the training state under other names (``rng``, ``accumulated``), and before
    the pending losses, as a ring of log_every slots (``window``)."""
    two = [*EXACT, "train.epochs=2"]  # the resume crosses an epoch's end: the next shuffle's stream comes back too
    straight = fit(load_config(tiny_config, two), "straight", progress=False)
    with monkeypatch.context() as m:
        _signal_at_step(m, 7, signal.SIGINT)
        with pytest.raises(Interrupted) as stopped:
            fit(load_config(tiny_config, two), "stopped", progress=False)
    last = stopped.value.run_dir / "last.pth"
    ckpt = load_checkpoint(last)
    state = ckpt["resume"]
    state["rng"], state["accumulated"] = state.pop("streams"), state.pop("carried")
    if ring:
        pending = state.pop("pending")
        assert len(pending) == 2  # steps 6 and 7 of a log_every=5 run
        state["window"] = torch.full((5,), 1e6)  # slots no step of this interval wrote
        state["window"][:2] = pending
    buffer = io.BytesIO()
    torch.save({**ckpt, "format_version": 1}, buffer)
    last.write_bytes(buffer.getvalue())
    assert load_checkpoint(last)["format_version"] == 1

    folder = fit(resume_target(stopped.value.run_dir, []), progress=False)
    assert _logged_losses(straight) == _logged_losses(folder)
    a, b = _weights(straight / "last.pth"), _weights(folder / "last.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((straight / "metrics.json").read_text())["test"] == \
        json.loads((folder / "metrics.json").read_text())["test"]


def test_a_second_ctrl_c_quits_at_once(tiny_config, monkeypatch):
    with monkeypatch.context() as m:
        _signal_at_step(m, 5, signal.SIGINT, times=2)
        with pytest.raises(KeyboardInterrupt):  # the CLI turns this into exit code 130
            fit(load_config(tiny_config), "run", progress=False)
    assert not os.path.exists("run/last.pth")  # it did not wait to save


def test_resume_continues_the_same_tensorboard_run(tiny_config, monkeypatch):
    with monkeypatch.context() as m:
        _signal_at_step(m, 23, signal.SIGINT)
        with pytest.raises(Interrupted) as stopped:
            fit(load_config(tiny_config, ["train.epochs=3", "train.log_every=1"]), "run", progress=False)
    folder = fit(resume_target(stopped.value.run_dir / "last.pth", []), progress=False)
    events = _events(folder)
    steps = [e.step for e in events.Scalars("loss/step")]
    assert steps == list(range(1, 3 * 16 + 1))  # one unbroken curve, no step twice
    assert [e.step for e in _events(folder / "val").Scalars("accuracy/epoch")] == [1, 2, 3]
    assert [e.step for e in _events(folder / "test").Scalars("accuracy/epoch")] == [1, 3]  # first and last (best)


def test_cli_sigint_saves_prints_resume_command_and_exits_130(tmp_path):
    config = write_config(tmp_path / "long.yaml", {"train": {"epochs": 200, "batch_size": 8}})
    proc = start_mlp("train", "-c", config, "--run-dir", "run", "--no-progress", stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until training is under way
        if line.split()[:2] == ["epoch", "1/200"]:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "mlp train --resume run" in err
    state = load_checkpoint(tmp_path / "run" / "last.pth")["resume"]
    assert state["step"] >= 113  # at least the first epoch (900 images / 8) is kept

    resumed = run_mlp("train", "--resume", "run", "--set", "train.epochs=2", "--no-progress")  # the epoch cut short
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2] and metrics["status"] == "finished"


def test_cli_sigterm_exits_143(tmp_path):
    config = write_config(tmp_path / "long.yaml", {"train": {"epochs": 200, "batch_size": 8}})
    proc = start_mlp("train", "-c", config, "--run-dir", "run", "--no-progress", stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.split()[:2] == ["epoch", "2/200"]:
            break
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err and "SIGTERM" in err
    assert load_checkpoint(tmp_path / "run" / "last.pth")["resume"]["step"] >= 2 * 113


def test_kill_9_at_any_moment_leaves_loadable_checkpoints(tmp_path):
    # Tiny epochs, so checkpoints are being rewritten all the time; kill at several moments.  No
    # diagnostics: their figures would make each epoch mostly drawing, with few writes to land in.
    config = write_config(tmp_path / "fast.yaml", {"data": {"val_size": 900},
                                                   "train": {"epochs": 10_000, "diagnostics": "off"}})
    for delay in (0.3, 0.9, 1.7, 2.6):
        run = tmp_path / f"run{delay}"
        proc = start_mlp("train", "-c", config, "--run-dir", run, "--no-progress", stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
        proc.stdout.readline()
        while not (run / "checkpoint.pth").exists():
            time.sleep(0.02)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        last, best = load_checkpoint(run / "last.pth"), load_checkpoint(run / "checkpoint.pth")
        assert last["resume"]["epoch"] >= 1 and best["epoch"] >= 1
        json.loads((run / "metrics.json").read_text())
        # the resume in this process (the CLI's resume is test_cli_sigint_saves_prints_resume_command_and_exits_130's)
        resumed = fit(resume_target(run, [f"train.epochs={last['resume']['epoch'] + 1}"]), progress=False)
        assert json.loads((resumed / "metrics.json").read_text())["status"] == "finished"


def test_divergence_stops_with_the_step_and_keeps_the_last_good_epoch(tiny_config):
    # SGD at lr 0.05 learns in epoch 1; the step schedule then multiplies lr by 1e8 for epoch 2.
    done = run_mlp("train", "--config", tiny_config, "--run-dir", "run", "--no-progress", "--set", "train.epochs=3",
                   "--set", "optimizer.name=sgd", "--set", "optimizer.lr=0.05", "--set", "scheduler.name=step",
                   "--set", "scheduler.step_size=1", "--set", "scheduler.gamma=1e8")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and "training diverged" in message and "optimizer.lr" in message
    step = int(re.search(r"at step (\d+)", message).group(1))
    assert 16 < step <= 32  # in epoch 2 (16 steps an epoch)
    assert load_checkpoint("run/checkpoint.pth")["epoch"] == 1
    assert load_checkpoint("run/last.pth")["resume"]["step"] == 16
    assert json.loads(open("run/metrics.json").read())["status"] == "diverged"
    assert evaluate_checkpoint("run/checkpoint.pth")["accuracy"] > 0.5  # the kept epoch still works
    # TensorBoard keeps every finite interval before the failing one, and nothing after it.
    logged = [e.step for e in _events("run").Scalars("loss/step")]
    assert logged == list(range(5, -(-step // 5) * 5, 5))  # log_every 5; the interval holding `step` failed


def test_resume_may_change_log_every_and_print_config_shows_the_runs_own(tiny_config, monkeypatch, capsys):
    from mlp.cli import app

    with monkeypatch.context() as m:
        _signal_at_step(m, 7, signal.SIGINT)
        with pytest.raises(Interrupted):
            fit(load_config(tiny_config, ["model.width=48"]), "run", progress=False)
    with pytest.raises(SystemExit) as done:
        app(["train", "--resume", "run", "--set", "train.log_every=3", "--print-config"], prog_name="mlp")
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert "width: 48" in shown and "log_every: 3" in shown and "name: tiny" in shown
    folder = fit(resume_target("run", ["train.log_every=3"]), progress=False)
    assert json.loads((folder / "metrics.json").read_text())["status"] == "finished"
    # The losses of steps 6 and 7 (after the log at step 5) carry over: the first log of the
    # resumed run, at step 9, is the mean of steps 6-9 of the same run logged at every step.
    every_step = dict(_logged_losses(fit(load_config(tiny_config, ["model.width=48", "train.log_every=1"]),
                                         "every_step", progress=False)))
    logged = dict(_logged_losses(folder))
    assert sorted(logged)[:3] == [5, 9, 12]
    assert logged[9] == pytest.approx(sum(every_step[k] for k in range(6, 10)) / 4, rel=1e-6)
