"""Every user mistake: exit code 2, a short message naming the problem, no traceback, no damage.

The table covers config files, --set overrides, command-line arguments, data files,
checkpoints, resume targets and devices.  Each case runs the real command-line entry
point (in this process, to keep the suite fast; tests/test_cli.py runs fresh processes)
inside a folder that already holds a finished run, and checks afterwards that no file
that was there has changed.
"""

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import write_config
from fakedata import write_mnist
from mlp.cli import app
from mlp.config import load_config
from mlp.train import fit


class CreatesAFile:
    """Unpickling this calls open(path, "w"), which would create the file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, fake_root):
    """A folder with configs, a finished run and a set of broken files, made once."""
    ws = tmp_path_factory.mktemp("bad")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("MLP_DATA_ROOT", str(fake_root))
        write_config(ws / "good.yaml")
        fit(load_config(ws / "good.yaml", ["train.epochs=1"]), ws / "run", progress=False)
    (ws / "syntax.yaml").write_text("model:\n  width: [64\n")
    (ws / "list.yaml").write_text("- 1\n- 2\n")
    write_config(ws / "unknown_key.yaml", {"model": {"widht": 64}})
    write_config(ws / "wrong_type.yaml", {"train": {"epochs": "ten"}})
    write_config(ws / "range.yaml", {"optimizer": {"lr": -1}})
    write_config(ws / "bad_activation.yaml", {"model": {"activation": "rleu"}})
    write_config(ws / "bad_dataset.yaml", {"data": {"dataset": "imagenet"}})
    write_config(ws / "bad_optimizer.yaml", {"optimizer": {"name": "lbfgs"}})
    write_config(ws / "cuda.yaml", {"train": {"device": "cuda"}})
    write_config(ws / "val_too_big.yaml", {"data": {"val_size": 100_000}})
    write_config(ws / "offline.yaml", {"data": {"download": False, "dataset": "kmnist"}})
    (ws / "dir.pth").mkdir()
    (ws / "text.pth").write_text("these are not weights\n")
    good = (ws / "run" / "checkpoint.pth").read_bytes()
    (ws / "truncated.pth").write_bytes(good[: len(good) // 2])
    flipped = bytearray(good)
    flipped[len(good) // 3: len(good) // 3 + 64] = b"\xff" * 64
    (ws / "flipped.pth").write_bytes(bytes(flipped))
    torch.save(torch.zeros(3), ws / "tensor.pth")
    ckpt = torch.load(ws / "run" / "checkpoint.pth", weights_only=True)
    torch.save({**ckpt, "format_version": 99}, ws / "newer.pth")
    torch.save({**ckpt, "config": {**ckpt["config"], "model": {**ckpt["config"]["model"], "width": 32}}},
               ws / "mismatch.pth")
    torch.save({**ckpt, "model_state": {**ckpt["model_state"], "extra": CreatesAFile(ws / "PWNED")}}, ws / "malicious.pth")
    torch.save({k: v for k, v in ckpt.items() if k != "classes"}, ws / "incomplete.pth")
    with zipfile.ZipFile(ws / "zip.pth", "w") as z:
        z.writestr("hello.txt", "a zip, not a checkpoint")
    (ws / "norun").mkdir()
    (ws / "notempty").mkdir()
    (ws / "notempty" / "notes.txt").write_text("keep me")
    (ws / "afile").write_text("not a folder")
    broken = ws / "broken_data"
    raw = write_mnist(broken, n_train=400, n_test=20)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x14" + bytes([77] * 20))
    return ws


CASES = [
    # (id, arguments, words the message must contain, extra environment)
    ("config-missing", ["train", "-c", "nope.yaml"], ["config file not found", "nope.yaml"], {}),
    ("config-syntax", ["train", "-c", "syntax.yaml"], ["syntax.yaml", "YAML syntax error"], {}),
    ("config-not-mapping", ["train", "-c", "list.yaml"], ["must be a YAML mapping"], {}),
    ("config-unknown-key", ["train", "-c", "unknown_key.yaml"], ["model.widht", "did you mean 'model.width'"], {}),
    ("config-wrong-type", ["train", "-c", "wrong_type.yaml"], ["train.epochs", "integer"], {}),
    ("config-out-of-range", ["train", "-c", "range.yaml"], ["optimizer.lr", "greater than 0"], {}),
    ("config-activation", ["train", "-c", "bad_activation.yaml"], ["unknown activation 'rleu'", "relu"], {}),
    ("config-dataset", ["train", "-c", "bad_dataset.yaml"], ["unknown dataset 'imagenet'", "cifar10"], {}),
    ("config-optimizer", ["train", "-c", "bad_optimizer.yaml"], ["optimizer.name", "'adam'"], {}),
    ("set-no-equals", ["train", "-c", "good.yaml", "--set", "model.width"], ["--set expects KEY=VALUE"], {}),
    ("set-unknown-key", ["train", "-c", "good.yaml", "--set", "train.epoch=3"], ["did you mean 'train.epochs'"], {}),
    ("set-bad-value", ["train", "-c", "good.yaml", "--set", "model.dropout=2"], ["model.dropout", "less than 1"], {}),
    ("set-activation-param", ["train", "-c", "good.yaml", "--set", "model.activation.alpha=1"],
     ["activation 'relu' has no parameter 'alpha'"], {}),
    ("set-into-a-value", ["train", "-c", "good.yaml", "--set", "seed.x=1"], ["'seed' is a value"], {}),
    ("cli-no-config", ["train"], ["--config"], {}),
    ("cli-resume-and-config", ["train", "--resume", "run", "-c", "good.yaml"], ["--resume", "--config"], {}),
    ("cli-eval-bad-device", ["eval", "run/checkpoint.pth", "--device", "tpu"], ["--device", "'tpu'"], {}),
    ("cli-run-dir-not-empty", ["train", "-c", "good.yaml", "--run-dir", "notempty"], ["not empty", "--overwrite"], {}),
    ("cli-run-dir-is-file", ["train", "-c", "good.yaml", "--run-dir", "afile"], ["is a file"], {}),
    *([("device-cuda-train", ["train", "-c", "cuda.yaml"], ["no CUDA device", "cpu"], {}),
       ("device-cuda-eval", ["eval", "run/checkpoint.pth", "--device", "cuda:0"], ["no CUDA device"], {})]
      if not torch.cuda.is_available() else []),  # with a GPU these are not errors
    ("data-missing", ["train", "-c", "offline.yaml"], ["KMNIST/raw", "train-images-idx3-ubyte", "MLP_DATA_ROOT"], {}),
    ("data-missing-eval", ["eval", "run/checkpoint.pth"], ["MNIST/raw", "missing"], {"MLP_DATA_ROOT": "norun"}),
    ("data-corrupt", ["train", "-c", "good.yaml"], ["labels outside"], {"MLP_DATA_ROOT": "broken_data"}),
    ("data-val-too-big", ["train", "-c", "val_too_big.yaml"], ["data.val_size", "only"], {}),
    ("ckpt-missing", ["eval", "nope.pth"], ["checkpoint not found", "nope.pth"], {}),
    ("ckpt-directory", ["eval", "dir.pth"], ["is a folder"], {}),
    ("ckpt-text", ["eval", "text.pth"], ["text.pth"], {}),
    ("ckpt-truncated", ["eval", "truncated.pth"], ["truncated or corrupt"], {}),
    ("ckpt-flipped-bytes", ["eval", "flipped.pth"], ["flipped.pth"], {}),
    ("ckpt-zip", ["eval", "zip.pth"], ["zip.pth"], {}),
    ("ckpt-plain-tensor", ["eval", "tensor.pth"], ["not an mlp checkpoint"], {}),
    ("ckpt-newer-format", ["eval", "newer.pth"], ["newer mlp", "format 99"], {}),
    ("ckpt-mismatched-weights", ["eval", "mismatch.pth"], ["do not match", "config"], {}),
    ("ckpt-incomplete", ["eval", "incomplete.pth"], ["missing classes"], {}),
    ("ckpt-malicious", ["eval", "malicious.pth"], ["refusing", "pickled Python objects"], {}),
    ("resume-no-last", ["train", "--resume", "norun"], ["no last.pth"], {}),
    ("resume-best-checkpoint", ["train", "--resume", "run/checkpoint.pth"], ["no training state", "last.pth"], {}),
    ("resume-missing", ["train", "--resume", "gone"], ["gone"], {}),
    ("resume-bad-set", ["train", "--resume", "run", "--set", "optimizer.lr=1"], ["cannot change on --resume"], {}),
    ("resume-fewer-epochs", ["train", "--resume", "run", "--set", "train.epochs=0"], ["train.epochs"], {}),
]


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def test_bad_inputs_table(workspace, monkeypatch, capsys):
    assert len(CASES) >= 25
    monkeypatch.chdir(workspace)
    marker = workspace / "PWNED"
    before = _snapshot(workspace)

    def attempt(case):
        name, args, words, env = case
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, str(workspace / value))
            try:
                app(list(args), prog_name="mlp")
                code = 0
            except SystemExit as e:
                code = e.code
            except Exception as e:  # escaped the CLI: a user would see a traceback
                code = f"Traceback: {e!r}"
        return case, code, capsys.readouterr().err

    results = [attempt(case) for case in CASES]
    failures = []
    for (name, args, words, _), code, stderr in results:
        lines = stderr.strip().splitlines()
        problems = []
        if code != 2:
            problems.append(f"exit {code}")
        if "Traceback" in stderr:
            problems.append("traceback")
        if not 1 <= len(lines) <= 3:
            problems.append(f"{len(lines)} lines")
        problems += [f"no '{w}'" for w in words if w not in stderr]
        if problems:
            failures.append(f"{name}: {', '.join(problems)}: {stderr.strip()[-400:]}")
    assert not failures, "\n".join(failures)
    assert not marker.exists(), "loading the malicious checkpoint ran its code"
    after = _snapshot(workspace)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing file was changed"
    new_runs = [p for p in (workspace / "runs").glob("*")] if (workspace / "runs").exists() else []
    finished = [p for p in new_runs if (p / "metrics.json").exists()]
    assert not finished, f"a failed command left a run behind: {finished}"
