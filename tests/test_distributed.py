"""Data-parallel training: a real 2-process torchrun launch on the CPU (gloo), and its refusals."""

import json
import socket
import subprocess
import sys

import pytest

from mlp.training import distributed
from mlp.config import load_config
from mlp.errors import UserError
from mlp.commands.evaluate import evaluate_checkpoint
from mlp.training.loop import fit

# 1 epoch of plain SGD leaves validation accuracy well below 100% on the fabricated data, so a
# run that trained on the wrong images or did not average gradients would land far from the
# single-process one.  A global batch of 63 splits 32/31 over two ranks (and the last batch
# of 1000 % 63 = 55 images 28/27), so the unequal-shard weighting is exercised too.
RECIPE = ["train.epochs=1", "train.batch_size=63", "optimizer.name=sgd", "optimizer.lr=0.1",
          "optimizer.momentum=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_torchrun_training_matches_one_process(tiny_config, tmp_path):
    sets = [arg for item in RECIPE for arg in ("--set", item)]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         "-m", "mlp", "train", "--config", str(tiny_config), *sets, "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs  # rank 0 made the folder and told rank 1 its name
    run = runs[0]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    # the splits' sub-runs: rank 0's event file alone in each (rank 1 writes nothing)
    assert [len(list((run / split).glob("events.out.tfevents.*"))) for split in ("train", "val", "test")] == [1, 1, 1]
    assert done.stdout.count("test     accuracy") == 1 and "2 processes" in done.stdout

    ddp = json.loads((run / "metrics.json").read_text())
    single = json.loads((fit(load_config(tiny_config, RECIPE), "single", progress=False)
                         / "metrics.json").read_text())
    assert ddp["status"] == "finished"
    assert 0.3 < single["epochs"][0]["val_accuracy"] < 0.95  # not saturated: the comparison means something
    assert ddp["epochs"][0]["train_loss"] == pytest.approx(single["epochs"][0]["train_loss"], rel=1e-3)
    assert abs(ddp["epochs"][0]["val_accuracy"] - single["epochs"][0]["val_accuracy"]) <= 0.03

    # the checkpoint holds the plain model: what `mlp eval` runs reads it in this single process
    assert evaluate_checkpoint(run / "checkpoint.pth")["accuracy"] == pytest.approx(ddp["test"]["accuracy"], rel=1e-6)


def test_a_config_error_under_torchrun_is_said_once_and_exits_2(tiny_config):
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         "-m", "mlp", "train", "--config", str(tiny_config), "--set", "model.activation=rleu"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    said = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(said) == 1 and "unknown activation 'rleu'" in said[0], done.stderr
    assert "exitcode: 2" in done.stderr  # torchrun's account of the first process to end


@pytest.mark.parametrize("batch_size,message", [
    (2, "train.batch_size 2 is the global batch, split over 3 processes"),
    (333, "last batch of each epoch holds 1 of the 1000 training images"),  # 1000 = 3 * 333 + 1
])
def test_a_world_size_the_batches_cannot_be_split_over_is_refused(tiny_config, tmp_path, monkeypatch,
                                                                   batch_size, message):
    monkeypatch.setattr(distributed, "rank_and_world_size", lambda: (0, 3))
    with pytest.raises(UserError, match=message) as e:
        fit(load_config(tiny_config, [f"train.batch_size={batch_size}"]), "run", progress=False)
    assert "launch fewer processes" in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_batches_that_split_are_accepted():
    distributed.check_batches_split(1000, 64, 8)  # last batch: 1000 % 64 = 40 images, 5 per rank
    distributed.check_batches_split(1000, 8, 8)
