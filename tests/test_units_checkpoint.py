"""Unit tests of what the run folder promises about its files: durable writes (every file and
the folder fsynced, in that order around the renames), no temporary file left behind,
``--overwrite`` starting clean, and checkpoint.pth holding the best epoch and nothing else."""

import errno
import json
import os
import stat

import pytest
import torch

import mlp.training.trainer
from mlp.commands.evaluate import evaluate_checkpoint
from mlp.config import load_config
from mlp.errors import UserError
from mlp.run.checkpoint import checkpoint_bytes, load_checkpoint
from mlp.run.durable import commit
from mlp.run.folder import RunFolder, previous_run
from mlp.training.loop import fit


@pytest.fixture
def calls(monkeypatch):
    """Every fsync (of a file or of a folder) and every rename, in order."""
    seen = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd):
        info = os.fstat(fd)  # a file's size says whether its data reached the system before the fsync
        seen.append("folder" if stat.S_ISDIR(info.st_mode) else f"file of {info.st_size} bytes")
        return fsync(fd)

    def spy_replace(src, dst, *args, **kwargs):
        seen.append("rename")
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    return seen


def test_every_file_is_fsynced_before_the_first_rename_and_the_folder_after_the_last(tmp_path, calls):
    commit({tmp_path / "a.pth": b"a" * 100, tmp_path / "b.json": b"{}"})
    assert (tmp_path / "a.pth").read_bytes() == b"a" * 100 and (tmp_path / "b.json").read_bytes() == b"{}"
    first_rename, last_rename = calls.index("rename"), len(calls) - 1 - calls[::-1].index("rename")
    assert calls.count("rename") == 2
    # both files' data, whole, on the disk before either replaces the old one
    assert {"file of 100 bytes", "file of 2 bytes"} <= set(calls[:first_rename])
    assert "folder" in calls[last_rename:]  # the renames themselves made durable
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_leaves_the_old_files_and_no_temporary_file(tmp_path, monkeypatch):
    (tmp_path / "a.pth").write_bytes(b"old a")
    (tmp_path / "b.json").write_bytes(b"old b")
    fsync, count = os.fsync, []

    def full_on_the_second(fd):
        count.append(fd)
        if len(count) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", full_on_the_second)
    with pytest.raises(OSError):
        commit({tmp_path / "a.pth": b"new a", tmp_path / "b.json": b"new b"})
    assert (tmp_path / "a.pth").read_bytes() == b"old a" and (tmp_path / "b.json").read_bytes() == b"old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth", "b.json"]


def test_temporary_files_of_a_killed_write_are_removed_when_the_run_is_opened_again(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    for name in (".last.pth.k2j3x9a0.tmp", ".metrics.json.a1b2c3d4.tmp"):
        (run / name).write_bytes(b"half written")
    with RunFolder.existing(run):
        assert sorted(p.name for p in run.iterdir()) == [".lock", "config.yaml"]


def test_overwrite_starts_the_run_folder_clean(tiny_config, tmp_path):
    cfg = load_config(tiny_config, ["train.epochs=1", "train.diagnostics=off"])
    run = fit(cfg, tmp_path / "run", progress=False)
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    (run / ".last.pth.0f9e8d7c.tmp").write_bytes(b"half written")
    again = fit(load_config(tiny_config, ["train.epochs=2", "train.diagnostics=off"]), run, overwrite=True,
                progress=False)
    for folder in (again, again / "train", again / "val", again / "test"):  # the run's and its splits' sub-runs
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1, folder  # one curve: the old run's are gone
    assert not list(again.glob(".*.tmp"))
    assert len(json.loads((again / "metrics.json").read_text())["epochs"]) == 2


def test_checkpoint_pth_holds_the_best_epoch_not_a_tie_or_a_later_worse_one(tiny_config, tmp_path, monkeypatch):
    """Validation accuracy is scripted 50%, 70%, 70%, 60%: epoch 2 is the best, epoch 3 only ties it."""
    scripted = iter([0.5, 0.7, 0.7, 0.6])
    real = mlp.training.trainer.evaluate

    def evaluate(model, split, num_classes, batch_size=1024):
        result = real(model, split, num_classes, batch_size)
        return {**result, "accuracy": next(scripted)} if len(split) == 200 else result  # the validation split

    monkeypatch.setattr(mlp.training.trainer, "evaluate", evaluate)
    saved = {}

    def keep_epoch_weights(epoch, record):
        saved[epoch] = load_checkpoint(tmp_path / "run" / "last.pth")["model_state"]

    cfg = load_config(tiny_config, ["train.epochs=4", "train.diagnostics=off"])
    run = fit(cfg, tmp_path / "run", progress=False, on_epoch=keep_epoch_weights)
    best = load_checkpoint(run / "checkpoint.pth")
    metrics = json.loads((run / "metrics.json").read_text())
    assert (best["epoch"], best["step"]) == (2, 32)
    assert all(torch.equal(best["model_state"][k], saved[2][k]) for k in saved[2])
    assert not all(torch.equal(best["model_state"][k], saved[3][k]) for k in saved[3])
    assert metrics["best"]["epoch"] == 2 and metrics["best"]["val_accuracy"] == 0.7
    assert metrics["test"]["epoch"] == 2 and best["test"]["epoch"] == 2
    assert [e["val_accuracy"] for e in metrics["epochs"]] == [0.5, 0.7, 0.7, 0.6]
    # the test accuracy reported is that of the weights checkpoint.pth holds
    measured = evaluate_checkpoint(run / "checkpoint.pth", device="cpu")
    assert measured["accuracy"] == metrics["test"]["accuracy"] == best["test"]["accuracy"]


class NotPlainData:
    """A class a checkpoint must never make the loader import and build."""


def _payload():
    return {"config": {}, "model_state": {"w": torch.ones(1000)}, "classes": ["a"], "input_shape": [1, 1, 1],
            "normalization": {"mean": [0.0], "std": [1.0]}}


def test_a_checkpoint_with_a_flipped_byte_in_its_weights_is_refused(tmp_path):
    data = bytearray(checkpoint_bytes(_payload()))
    at = data.find(b"\x00\x00\x80\x3f" * 4)  # inside the weights: 1.0 as float32, again and again
    assert at > 0
    data[at + 2] ^= 0x01
    (tmp_path / "flipped.pth").write_bytes(bytes(data))
    with pytest.raises(UserError, match="fails its checksum"):
        load_checkpoint(tmp_path / "flipped.pth")
    (tmp_path / "good.pth").write_bytes(checkpoint_bytes(_payload()))
    assert torch.equal(load_checkpoint(tmp_path / "good.pth")["model_state"]["w"], torch.ones(1000))


def test_a_checkpoint_holding_a_python_object_is_refused_unbuilt(tmp_path):
    torch.save({**_payload(), "format_version": 2, "extra": NotPlainData()}, tmp_path / "object.pth")
    with pytest.raises(UserError, match="refusing to load .* pickled Python objects"):
        load_checkpoint(tmp_path / "object.pth")


def test_a_checkpoint_of_a_newer_format_or_missing_a_part_is_refused(tmp_path):
    (tmp_path / "newer.pth").write_bytes(checkpoint_bytes({**_payload(), "format_version": 3}))
    with pytest.raises(UserError, match="newer mlp .*format 3; this one reads up to 2"):
        load_checkpoint(tmp_path / "newer.pth")
    (tmp_path / "same.pth").write_bytes(checkpoint_bytes(_payload()))  # this mlp's own format loads
    assert load_checkpoint(tmp_path / "same.pth")["format_version"] == 2
    partial = {k: v for k, v in _payload().items() if k != "classes"}
    (tmp_path / "partial.pth").write_bytes(checkpoint_bytes(partial))
    with pytest.raises(UserError, match="missing classes"):
        load_checkpoint(tmp_path / "partial.pth")


def test_what_a_folder_holds_of_a_run_decides_whether_it_is_resumed(tmp_path):
    run = tmp_path / "trial"
    assert previous_run(run, "name: a\n", "retry") == "new"
    run.mkdir()
    (run / "config.yaml").write_text("name: a\n")
    assert previous_run(run, "name: a\n", "retry") == "new"  # started, but no epoch saved
    (run / "last.pth").write_bytes(b"state")
    assert previous_run(run, "name: a\n", "retry") == "resume"
    for status in ("finished", "pruned", "diverged"):
        (run / "metrics.json").write_text(json.dumps({"status": status}))
        assert previous_run(run, "name: a\n", "retry") == status
    (run / "metrics.json").write_text(json.dumps({"status": "interrupted"}))
    assert previous_run(run, "name: a\n", "retry") == "resume"
    with pytest.raises(UserError, match="holds a run with a different config; retry"):
        previous_run(run, "name: b\n", "retry")
