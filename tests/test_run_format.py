"""The run folder's commit protocol: a crash at any instant of an epoch's writes, then --resume,
ends with the numbers of the weights it names; TensorBoard keeps one curve after a hard kill."""

import json
import os
from pathlib import Path

import pytest
import torch

import mlp.observe.tensorboard
import mlp.run.durable
import mlp.run.folder
import mlp.training.loop
import mlp.training.trainer
from mlp.commands.evaluate import evaluate_checkpoint
from mlp.config import load_config
from mlp.errors import UserError
from mlp.run.checkpoint import load_checkpoint
from mlp.training.loop import fit, resume_target

PRIMITIVES = ("open", "write", "fsync", "replace", "link", "unlink")  # what a durable write calls on os
THREE = ["train.epochs=3"]
TWO = ["train.epochs=2", "train.diagnostics=off"]  # no figures: each crash is a training of its own


def _in_child(work) -> int:
    """``work()`` in a forked process, which ends with os._exit (no cleanup runs, as in a kill -9):
    its exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            work()
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _crash_at(monkeypatch, position: int, which: str):
    """Patch the durable writes so the process dies at the ``position``-th call of an os primitive
    while the files of ``which`` are being written: ``epoch 2`` (checkpoint.pth, metrics.json and
    last.pth) or ``the final report`` (checkpoint.pth with the test result, metrics.json)."""
    save, state = mlp.run.folder.RunFolder.save, {"armed": False, "calls": 0}

    def watched_save(self, **files):
        if which == "epoch 2":
            state["armed"] = files.get("last") is not None and files["last"]["epoch"] == 2
        else:
            state["armed"] = (files.get("metrics") or {}).get("status") == "finished"
        try:
            return save(self, **files)
        finally:
            state["armed"] = False

    def crashing(primitive):
        def call(*args, **kwargs):
            if state["armed"]:
                state["calls"] += 1
                if state["calls"] == position:
                    os._exit(99)
            return primitive(*args, **kwargs)
        return call

    monkeypatch.setattr(mlp.run.folder.RunFolder, "save", watched_save)
    for name in PRIMITIVES:
        monkeypatch.setattr(mlp.run.durable.os, name, crashing(getattr(os, name)))


def _outcome(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {"test": metrics["test"], "best": metrics["best"]["epoch"], "epochs": len(metrics["epochs"])}


@pytest.mark.parametrize("which,least", [("epoch 2", 15), ("the final report", 10)])
def test_a_crash_at_every_write_then_resume_ends_as_the_straight_run(tiny_config, monkeypatch, which, least):
    # Each resume here comes within a second of the crashed process's event file, so it would wait
    # for the next second to name its own (TensorBoard sorts them by name); this test reads no event
    # file (test_a_hard_kill_past_last_pth_leaves_one_tensorboard_curve does), so it skips that wait.
    monkeypatch.setattr(mlp.observe.tensorboard, "_wait_for_a_later_second", lambda run_dir: None)
    straight = fit(load_config(tiny_config, TWO), "straight", progress=False)
    history = json.loads((straight / "metrics.json").read_text())["epochs"]
    assert history[1]["val_accuracy"] > history[0]["val_accuracy"]  # epoch 2 replaces checkpoint.pth
    expected = _outcome(straight)
    crashes = 0
    for position in range(1, 60):
        run = Path(f"crash-{position}")
        with monkeypatch.context() as m:
            _crash_at(m, position, which)
            code = _in_child(lambda: fit(load_config(tiny_config, TWO), run, progress=False))
        if code == 0:
            break  # every call of those writes has had its crash
        assert code == 99, f"position {position}: exit {code}"
        crashes += 1
        resumed = fit(resume_target(run, []), progress=False)
        assert _outcome(resumed) == expected, f"crash at call {position} of {which}'s writes"
        best = load_checkpoint(resumed / "checkpoint.pth")
        assert best["epoch"] == expected["best"] and best["test"]["accuracy"] == expected["test"]["accuracy"]
        measured = evaluate_checkpoint(resumed / "checkpoint.pth", split="test")
        assert measured["accuracy"] == expected["test"]["accuracy"]  # the weights named are the ones measured
        assert not [p.name for p in resumed.iterdir() if p.name.endswith((".tmp", ".previous"))]
    assert crashes >= least  # each file opened, written, fsynced, renamed; the copies kept; the folder synced


def test_files_that_disagree_are_refused_in_one_line(tiny_config):
    run = fit(load_config(tiny_config, THREE), "run", progress=False)
    fit(load_config(tiny_config, ["train.epochs=1"]), "other", progress=False)
    last = load_checkpoint(run / "last.pth")
    last["resume"]["epoch"], last["epoch"] = 2, 2
    last["resume"]["history"] = last["resume"]["history"][:2]
    last["resume"]["best"] = {"epoch": 2, "val_accuracy": 0.9, "val_loss": 0.1}
    torch.save(last, run / "last.pth")
    os.replace("other/checkpoint.pth", run / "checkpoint.pth")  # epoch 1's weights under epoch 2's name
    with pytest.raises(UserError) as refused:
        fit(resume_target(run, []), progress=False)
    message = str(refused.value)
    assert "\n" not in message
    assert "checkpoint.pth holds epoch 1 but last.pth names epoch 2 as the best" in message


@pytest.mark.parametrize("older", [False, True])
def test_a_hard_kill_past_last_pth_leaves_one_tensorboard_curve(tiny_config, monkeypatch, older):
    """``older``: the killed process was of an mlp that wrote no START event."""
    from tbevents import read_events
    from torch.utils.tensorboard import SummaryWriter

    sets = ["train.epochs=3", "train.log_every=1"]
    straight = fit(load_config(tiny_config, sets), "straight", progress=False)
    train_step = mlp.training.trainer.Trainer.train_step
    calls = {"n": 0}

    def dies_at_step_24(self, idx):  # steps 17..23 of epoch 2 are logged; last.pth holds step 16
        calls["n"] += 1
        if calls["n"] == 24:
            os._exit(9)
        return train_step(self, idx)

    step = mlp.observe.tensorboard.RunLogger.step

    def flushed_step(self, *args):  # as TensorBoard's writer does every two minutes of a long run
        step(self, *args)
        self.writer.flush()

    with monkeypatch.context() as m:
        m.setattr(mlp.training.trainer.Trainer, "train_step", dies_at_step_24)
        m.setattr(mlp.observe.tensorboard.RunLogger, "step", flushed_step)
        if older:
            m.setattr(mlp.observe.tensorboard, "SummaryWriter", lambda logdir, purge_step=None: SummaryWriter(logdir))
        assert _in_child(lambda: fit(load_config(tiny_config, sets), "run", progress=False)) == 9
    logged = [e.step for e in read_events("run").Scalars("loss/step")]
    assert logged[-1] == 23 and load_checkpoint("run/last.pth")["step"] == 16  # steps past last.pth were written
    resumed = fit(resume_target("run", []), progress=False)
    steps = [e.step for e in read_events(resumed).Scalars("loss/step")]
    assert steps == list(range(1, 3 * 16 + 1))  # one unbroken curve, no step twice
    values = lambda run: [(e.step, e.value) for e in read_events(run).Scalars("loss/step")]
    assert values(resumed) == values(straight)


@pytest.mark.parametrize("after", ["epoch", "test"])
def test_a_hard_kill_after_a_splits_numbers_leaves_one_curve_per_split(tiny_config, monkeypatch, after):
    """Killed once the numbers of epoch 2 (or the test numbers) are on disk and before the files that
    make them part of the run: the resumed run writes them again, and each split shows them once."""
    from tbevents import read_events

    sets = ["train.epochs=3", "train.diagnostics=off"]
    straight = fit(load_config(tiny_config, sets), "straight", progress=False)
    logger = mlp.observe.tensorboard.RunLogger
    real = getattr(logger, after)

    def written_then_killed(self, epoch, *args, **kwargs):
        real(self, epoch, *args, **kwargs)
        if after == "test" or epoch == 2:
            for writer in [self.writer, *self.splits.values()]:
                writer.flush()
            os._exit(9)

    with monkeypatch.context() as m:
        m.setattr(logger, after, written_then_killed)
        assert _in_child(lambda: fit(load_config(tiny_config, sets), "run", progress=False)) == 9
    split = "val" if after == "epoch" else "test"
    assert len(read_events(f"run/{split}").Scalars("accuracy/epoch")) >= 1  # on disk before the kill
    resumed = fit(resume_target("run", []), progress=False)
    for split in ("train", "val", "test"):
        values = lambda run: [(e.step, e.value) for e in read_events(run / split).Scalars("accuracy/epoch")]
        assert values(resumed) == values(straight), split  # each epoch once (test: 1 and 3), as the straight run
