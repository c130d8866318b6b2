"""The run folder against hostile and unlucky cases: links and special files, what --overwrite
deletes, damaged checkpoints, failed writes, another data set on resume, file modes."""

import errno
import json
import os
import pathlib
import shutil
import signal
import socket
from pathlib import Path

import pytest
import torch

import mlp.device
import mlp.model
import mlp.observe.tensorboard
import mlp.run.durable
from conftest import run_mlp
from mlp.config import load_config
from mlp.errors import Interrupted, UserError
from mlp.run.checkpoint import load_checkpoint
from mlp.run.folder import RunFolder
from mlp.training.loop import fit, resume_target
from test_resume import _signal_at_step

ONE = ["train.epochs=1"]


def _one_line(error) -> str:
    message = str(error.value if hasattr(error, "value") else error)
    assert "\n" not in message and "Traceback" not in message, message
    return message


def _stopped_run(tiny_config, monkeypatch, step=20) -> Path:
    with monkeypatch.context() as m:
        _signal_at_step(m, step, signal.SIGINT)  # mid-epoch 2 (16 steps an epoch)
        with pytest.raises(Interrupted):
            fit(load_config(tiny_config), "run", progress=False)
    return Path("run")


def test_a_lock_file_that_is_a_link_or_a_special_file_is_refused_and_nothing_outside_is_touched(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    cases = {"link": outside, "dangling": tmp_path / "nowhere" / "made.txt", "devnull": Path("/dev/null")}
    for name, target in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / ".lock").symlink_to(target)
        with pytest.raises(UserError) as refused:
            RunFolder(folder).locked()
        assert "is a symbolic link, not the lock file mlp makes; remove it" in _one_line(refused)
    assert outside.read_text() == "keep me" and not (tmp_path / "nowhere").exists()
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / ".lock")
    with pytest.raises(UserError) as refused:
        RunFolder(fifo).locked()  # returns at once: a pipe is never waited on
    assert "is a pipe, device or socket, not the lock file mlp makes" in _one_line(refused)


def test_overwrite_and_a_refused_resume_remove_only_what_mlp_wrote(tiny_config, monkeypatch):
    mine = Path("mine")
    mine.mkdir()
    (mine / "config.yaml").write_text("my own notes\n")
    (mine / "metrics.json").write_text('{"mine": true}\n')
    done = run_mlp("train", "--config", tiny_config, "--run-dir", mine, "--overwrite", "--no-progress")
    assert done.returncode == 2 and "holds files no mlp run wrote" in _one_line(done.stderr.strip())
    assert (mine / "config.yaml").read_text() == "my own notes\n" and not (mine / ".lock").exists()
    assert (mine / "metrics.json").read_text() == '{"mine": true}\n'

    run = _stopped_run(tiny_config, monkeypatch)
    (run / ".important.tmp").write_text("a user's file")
    with pytest.raises(UserError):
        resume_target(run, ["optimizer.lr=0.5"])  # refused: lr cannot change
    assert (run / ".important.tmp").read_text() == "a user's file"

    (run / "diagnostics.json").unlink()
    (run / "diagnostics.json").mkdir()  # a folder where mlp writes a file
    with pytest.raises(UserError) as refused:
        RunFolder.create("tiny", run, overwrite=True, runs_root=Path("runs"))
    assert "diagnostics.json is a folder, link or special file, not a file mlp wrote" in _one_line(refused)
    assert (run / "last.pth").is_file() and (run / "metrics.json").is_file()  # nothing removed before the refusal
    os.rmdir(run / "diagnostics.json")


def test_overwrite_clears_the_splits_sub_runs_of_mlp_s_event_files_only(tiny_config):
    theirs = Path("theirs")
    (theirs / "val").mkdir(parents=True)
    (theirs / "val" / "events.out.tfevents.1.host").write_bytes(b"their own")
    done = run_mlp("train", "--config", tiny_config, "--run-dir", theirs, "--overwrite", "--no-progress")
    assert done.returncode == 2 and "holds files no mlp run wrote (val/events.out.tfevents.1.host)" in \
        _one_line(done.stderr.strip())
    assert (theirs / "val" / "events.out.tfevents.1.host").read_bytes() == b"their own"

    sets = ["train.epochs=1", "train.diagnostics=off"]
    run = fit(load_config(tiny_config, sets), "run", progress=False)
    (run / "val" / "notes.txt").write_text("a user's file")
    again = fit(load_config(tiny_config, sets), run, overwrite=True, progress=False)
    assert (again / "val" / "notes.txt").read_text() == "a user's file"  # kept, and its folder with it
    assert [len(list((again / split).glob("events.out.tfevents.*"))) for split in ("train", "val", "test")] == [1, 1, 1]

    shutil.rmtree(run / "test")
    (run / "test").symlink_to(theirs)  # a link where mlp makes a folder: never followed
    with pytest.raises(UserError) as refused:
        RunFolder.create("tiny", run, overwrite=True, runs_root=Path("runs"))
    assert "test is a file or link, not the TensorBoard folder mlp makes" in _one_line(refused)
    assert (run / "last.pth").is_file() and len(list((run / "val").glob("events.out.tfevents.*"))) == 1


def test_a_folder_in_the_way_of_metrics_json_is_one_line(tiny_config, monkeypatch):
    run = _stopped_run(tiny_config, monkeypatch)
    (run / "metrics.json").unlink()
    (run / "metrics.json").mkdir()
    with pytest.raises(UserError) as refused:
        fit(resume_target(run, []), progress=False)
    assert "metrics.json there is a folder, not a file; move it away" in _one_line(refused)
    assert load_checkpoint(run / "last.pth")["step"] == 20 and not list(run.glob(".*.tmp"))


def _damaged(ckpt, case):
    c = {**ckpt, "normalization": dict(ckpt["normalization"]), "resume": dict(ckpt["resume"]),
         "model_state": dict(ckpt["model_state"])}
    if case == "classes do not match the output layer":
        c["classes"] = c["classes"][:3]
    elif case == "no normalisation":
        del c["normalization"]
    elif case == "input shape as text":
        c["input_shape"] = "1x28x28"
    elif case == "profile of the wrong size":
        c["input_profile"] = {**c["input_profile"], "mean": torch.zeros(10), "std": torch.ones(10)}
    elif case == "class names as numbers":
        c["classes"] = list(range(10))
    elif case == "format_version as text":
        c["format_version"] = "2"
    elif case == "no streams":
        del c["resume"]["streams"]
    elif case == "a batch past the epoch":
        c["resume"]["batch"] = 999
    elif case == "a weight of the wrong shape":
        key = next(k for k in c["model_state"] if k.endswith("linear.weight"))
        c["model_state"][key] = torch.zeros(3, 3)
    return c


DAMAGE = {  # the case → what the one line says
    "classes do not match the output layer": "3 class names for an output layer of (10, 64) weights",
    "no normalisation": "missing normalization",
    "input shape as text": "input_shape",
    "profile of the wrong size": "input_profile has 10 pixels for images of 784",
    "class names as numbers": "classes.0",
    "format_version as text": "format_version is '2', not a format number mlp writes",
    "no streams": "streams: Field required",
    "a batch past the epoch": "batch 999 of an epoch of 16",
    "a weight of the wrong shape": "does not fit the model its config describes",
}


def test_every_field_of_a_damaged_last_pth_is_checked_before_use(tiny_config, monkeypatch):
    run = _stopped_run(tiny_config, monkeypatch)
    good = load_checkpoint(run / "last.pth")
    for case, said in DAMAGE.items():
        torch.save(_damaged(good, case), run / "last.pth")
        with pytest.raises(UserError) as refused:
            fit(resume_target(run, []), progress=False)
        assert said in _one_line(refused), case
        assert not (run / ".lock").read_text()  # released
    torch.save(_damaged(good, "input shape as text"), "bad.pth")
    shown = run_mlp("eval", "bad.pth")
    assert shown.returncode == 2 and "input_shape" in _one_line(shown.stderr.strip())


def test_a_run_killed_with_its_lock_free_is_listed_as_stopped(tiny_config):
    from mlp.commands.runs import list_runs

    fit(load_config(tiny_config, ONE), "runs/killed", progress=False)
    metrics = json.loads(Path("runs/killed/metrics.json").read_text())
    Path("runs/killed/metrics.json").write_text(json.dumps({**metrics, "status": "running"}))
    Path("runs/killed/.lock").write_text(f"pid {2**22 + 12345} on {socket.gethostname()}")  # no such process
    assert [r["status"] for r in list_runs(Path("runs"))] == ["stopped"]
    Path("runs/killed/.lock").write_text(f"pid {os.getpid()} on {socket.gethostname()}")  # alive
    assert [r["status"] for r in list_runs(Path("runs"))] == ["running"]


def test_a_resume_that_extends_the_epochs_says_so_in_config_yaml(tiny_config):
    run = fit(load_config(tiny_config, ONE), "run", progress=False)
    fit(resume_target(run, ["train.epochs=2"]), progress=False)
    from mlp.commands.runs import read_run

    assert "epochs: 2" in (run / "config.yaml").read_text()
    assert read_run(run)["epochs_done"] == 2 and read_run(run)["epochs"] == 2


def test_a_failed_epoch_write_names_the_epoch_the_files_hold(tiny_config, monkeypatch):
    replace = os.replace

    def last_pth_of_epoch_2_fails(src, dst):
        if str(dst).endswith("last.pth") and Path("run/metrics.json").exists() and \
                len(json.loads(Path("run/metrics.json").read_text())["epochs"]) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(dst))
        return replace(src, dst)

    monkeypatch.setattr(mlp.run.durable.os, "replace", last_pth_of_epoch_2_fails)
    with pytest.raises(UserError) as failed:
        fit(load_config(tiny_config, ["train.epochs=3"]), "run", progress=False)
    monkeypatch.setattr(mlp.run.durable.os, "replace", replace)
    assert "the files there still hold epoch 1" in _one_line(failed)
    assert load_checkpoint("run/last.pth")["epoch"] == 1 and load_checkpoint("run/checkpoint.pth")["epoch"] == 1
    assert len(json.loads(Path("run/metrics.json").read_text())["epochs"]) == 1  # rolled back with the rest
    assert not [p.name for p in Path("run").iterdir() if p.name.endswith((".tmp", ".previous"))]


def test_resuming_on_another_data_set_is_refused(tiny_config, monkeypatch, fake_root, tmp_path):
    run = _stopped_run(tiny_config, monkeypatch)
    other = tmp_path / "other"
    shutil.copytree(fake_root, other)
    images = other / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    data[16:16 + 784 * 50] = bytes(255 - b for b in data[16:16 + 784 * 50])  # 50 images of another data set
    images.write_bytes(bytes(data))
    monkeypatch.delenv("MLP_DATA_ROOT")  # which would win over data.root
    with pytest.raises(UserError) as refused:
        fit(resume_target(run, [f"data.root={other}"]), progress=False)
    assert "holds other data than this run trained on" in _one_line(refused)
    same = tmp_path / "same"
    shutil.copytree(fake_root, same)  # another copy of the same files is the same data
    assert json.loads((fit(resume_target(run, [f"data.root={same}"]), progress=False) / "metrics.json")
                      .read_text())["status"] == "finished"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_run_files_honour_the_umask(tiny_config, umask):
    old = os.umask(umask)
    try:
        run = fit(load_config(tiny_config, ONE), "run", progress=False)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir() if p.is_file() and not p.name.startswith("events")}
    assert set(modes) >= {"config.yaml", "metrics.json", "checkpoint.pth", "last.pth", "diagnostics.json", ".lock"}
    assert set(modes.values()) == {0o666 & ~umask}, modes
    # TensorBoard's split sub-runs: folders and their event files, as TensorBoard's writer makes them
    splits = [run / split for split in ("train", "val", "test")]
    assert {p.stat().st_mode & 0o777 for p in splits} == {0o777 & ~umask}
    events = [p for folder in [run, *splits] for p in folder.glob("events.out.tfevents.*")]
    assert len(events) == 4 and {p.stat().st_mode & 0o777 for p in events} == {0o666 & ~umask}


def _fails_with(errnum):
    def fail(*args, **kwargs):
        raise OSError(errnum, os.strerror(errnum), str(args[0]) if args else None)
    return fail


def test_every_failed_write_is_one_line_and_keeps_what_was_there(tiny_config, monkeypatch):
    cfg = load_config(tiny_config, ONE)
    with monkeypatch.context() as m:  # the run folder itself
        m.setattr(pathlib.Path, "mkdir", _fails_with(errno.EROFS))
        with pytest.raises(UserError) as e:
            fit(cfg, progress=False)
        assert "the file system is read-only" in _one_line(e)
    Path("full").mkdir()
    with monkeypatch.context() as m:  # the lock
        m.setattr(mlp.run.folder, "open_regular", _fails_with(errno.ENOSPC))
        with pytest.raises(UserError) as e:
            fit(cfg, "full", progress=False)
        assert "cannot create full/.lock: no space left on the device" in _one_line(e)
    with monkeypatch.context() as m:  # config.yaml
        m.setattr(mlp.run.durable, "write_temporary", _fails_with(errno.ENOSPC))
        with pytest.raises(UserError) as e:
            fit(cfg, "full", progress=False)
        assert "cannot write config.yaml in full: no space left on the device" in _one_line(e)
    assert not [p for p in Path("full").iterdir() if p.name != ".lock"]
    run = fit(cfg, "run", progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    with monkeypatch.context() as m:  # TensorBoard's event file, on a resume
        m.setattr(mlp.observe.tensorboard, "SummaryWriter", _fails_with(errno.ENOSPC))
        with pytest.raises(UserError) as e:
            fit(resume_target(run, ["train.epochs=2"]), progress=False)
        assert "cannot write TensorBoard's event file in run: no space left on the device" in _one_line(e)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert after.keys() == before.keys() and all(after[k] == before[k] for k in before if k != "config.yaml")


def test_data_without_read_permission_is_not_called_damaged(tiny_config, monkeypatch):
    read = pathlib.Path.read_bytes

    def denied(self):
        if self.name.startswith("train-images"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return read(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    with pytest.raises(UserError) as e:
        fit(load_config(tiny_config, ONE), "run", progress=False)
    message = _one_line(e)
    assert "train-images" in message and "not readable (permission denied)" in message
    assert "damaged" not in message and "replace" not in message


def test_a_batch_whose_activations_do_not_fit_is_refused_up_front(tiny_config, monkeypatch):
    weights = 4 * 4 * mlp.model.parameter_count(load_config(tiny_config).model, (1, 28, 28), 10)[0]
    monkeypatch.setattr(mlp.device, "free_memory", lambda device: weights + 1000)  # the weights fit, a batch not
    with pytest.raises(UserError) as e:
        fit(load_config(tiny_config, ONE), "run", progress=False)
    assert "images' activations" in _one_line(e) and "train.batch_size" in str(e.value)
    assert not Path("run").exists()


def test_a_copied_last_pth_is_not_told_of_a_config_yaml_that_is_not_there(tiny_config, monkeypatch):
    run = _stopped_run(tiny_config, monkeypatch)
    Path("copy").mkdir()
    shutil.copy(run / "last.pth", "copy/last.pth")
    with pytest.raises(UserError) as e:
        resume_target(Path("copy"), [])
    message = _one_line(e)
    assert "checkpoint.pth (the best epoch so far, 1) is missing" in message and "config.yaml" not in message


def test_runs_lists_a_run_whose_files_are_links_or_pipes_as_unreadable_without_waiting(tiny_config, tmp_path):
    from mlp.commands.runs import list_runs

    outside = tmp_path / "outside.json"
    outside.write_text('{"status": "finished", "test": {"accuracy": 1.0}}')
    for name, make in (("pipe", os.mkfifo), ("link", lambda p: p.symlink_to(outside))):
        run = fit(load_config(tiny_config, ONE), f"runs/{name}", progress=False)
        target = run / ("diagnostics.json" if name == "pipe" else "metrics.json")
        target.unlink()
        make(target)
    rows = {r["run"]: r for r in list_runs(Path("runs"))}
    assert rows["pipe"]["status"] == rows["link"]["status"] == "unreadable"
    assert "diagnostics.json is a pipe, device or socket, not a file" in rows["pipe"]["error"]
    assert "metrics.json is a symbolic link, which mlp does not follow" in rows["link"]["error"]


def test_a_search_space_that_is_a_pipe_or_a_device_is_refused_without_reading_it(tmp_path):
    from mlp.sweep.space import load_space

    os.mkfifo(tmp_path / "space.yaml")
    for path in (tmp_path / "space.yaml", Path("/dev/zero")):
        with pytest.raises(UserError) as refused:
            load_space(path)
        assert "is not a regular file (a device, pipe or socket)" in _one_line(refused)


def test_a_train_log_that_is_a_link_is_never_appended_to(tmp_path):
    from mlp.files import open_log

    outside = tmp_path / "outside.txt"
    outside.write_text("keep me\n")
    (tmp_path / "train.log").symlink_to(outside)
    with pytest.raises(UserError) as refused:
        open_log(tmp_path / "train.log")
    assert "is a symbolic link" in _one_line(refused) and outside.read_text() == "keep me\n"
    with open_log(tmp_path / "fresh.log") as log:  # a plain file is made, and appended to
        log.write("one\n")
    with open_log(tmp_path / "fresh.log") as log:
        log.write("two\n")
    assert (tmp_path / "fresh.log").read_text() == "one\ntwo\n"
