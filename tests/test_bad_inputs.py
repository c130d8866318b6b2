"""Every user mistake: exit code 2, a short message naming the problem, no traceback, no damage.

The table covers config files, --set overrides, command-line arguments, data files,
checkpoints, resume targets and devices.  Each case runs the real command-line entry
point (in this process, to keep the suite fast; tests/test_cli.py runs fresh processes)
inside a folder that already holds a finished run, and checks afterwards that no file
that was there has changed.
"""

import errno
import hashlib
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from conftest import write_config
from fakedata import write_cifar, write_mnist
from mlp.cli import app
from mlp.config import load_config
from mlp.training.loop import fit


class CreatesAFile:
    """Unpickling this calls open(path, "w"), which would create the file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class RunsACommand:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, path: Path):
        self.command = f"touch '{path}'"

    def __reduce__(self):
        return (os.system, (self.command,))


def _hostile_cifar(root: Path, filename: str, marker: Path) -> None:
    """Fabricated CIFAR-10 files in which ``filename`` is a pickle that runs a command when loaded."""
    folder = write_cifar(root, n_train=200, n_test=50)
    with open(folder / filename, "rb") as f:
        entry = pickle.load(f)
    entry["batch_label" if "data" in entry else "label_names"] = RunsACommand(marker)
    with open(folder / filename, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def _alias_bomb(levels: int = 9) -> str:
    """A few hundred bytes of YAML that name 9**levels strings through aliases."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nmodel: {{width: *a{levels}}}\n"


def _workspace_extras(ws: Path) -> None:
    """The files of the second round of bad inputs: hostile data, configs and foreign weights."""
    for name, filename in (("evil_batch", "data_batch_1"), ("evil_meta", "batches.meta")):
        _hostile_cifar(ws / name, filename, ws / "PWNED_DATA")
    write_config(ws / "cifar.yaml", {"data": {"dataset": "cifar10", "val_size": 100}, "model": {"width": 16}})
    with pytest.MonkeyPatch.context() as m:
        m.setenv("MLP_DATA_ROOT", str(ws / "cifar_data"))
        write_cifar(ws / "cifar_data", n_train=300, n_test=50)
        fit(load_config(ws / "cifar.yaml", ["train.epochs=1"]), ws / "cifar_run", progress=False)
    (ws / "bomb.yaml").write_text(_alias_bomb())
    (ws / "self_alias.yaml").write_text("model: &m {width: *m}\n")
    (ws / "huge.yaml").write_text("# " + "x" * (1024 * 1024 + 10) + "\n")
    (ws / "deep.yaml").write_text("model: " + "[" * 3000 + "]" * 3000 + "\n")
    (ws / "duplicate.yaml").write_text(yaml.safe_dump(TINY_YAML) + "model:\n  width: 32\n")
    write_config(ws / "softplus.yaml", {"model": {"activation": {"name": "softplus", "beta": 0}}})
    write_config(ws / "long_name.yaml", {"name": "n" * 240})
    (ws / "config_dir.yaml").mkdir()
    os.symlink("loop.yaml", ws / "loop.yaml")
    os.symlink("nowhere.yaml", ws / "dangling.yaml")
    os.symlink("loop.pth", ws / "loop.pth")
    (ws / "image.pth").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (ws / "random.pth").write_bytes(bytes((i * 97 + 13) % 256 for i in range(1, 500)))
    header = b'{"fc1.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    (ws / "weights.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    classic = torch.nn.Sequential()
    classic.fc1, classic.fc2 = torch.nn.Linear(784, 64), torch.nn.Linear(64, 10)
    torch.save(classic.state_dict(), ws / "classic.pth")
    write_config(ws / "classic_wide.yaml", {"model": {"width": 128}})
    write_config(ws / "classic_deep.yaml", {"model": {"width": [64, 32]}})
    torch.save({"conv1.weight": torch.zeros(8, 1, 3, 3), "fc1.weight": torch.zeros(10, 8)}, ws / "conv.pth")


TINY_YAML = {"name": "tiny", "data": {"dataset": "mnist", "val_size": 200}, "model": {"width": 64},
             "train": {"epochs": 1, "device": "cpu"}}


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
    _workspace_extras(ws)
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
    ("ckpt-truncated", ["eval", "truncated.pth"], ["truncated or corrupt", "!If you are seeing"], {}),
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
    # Data files never run code (a word starting with ! must not be in the message).
    ("cifar-batch-runs-code-train", ["train", "-c", "cifar.yaml"], ["refusing", "data_batch_1", "os"],
     {"MLP_DATA_ROOT": "evil_batch"}),
    ("cifar-batch-runs-code-eval", ["eval", "cifar_run/checkpoint.pth", "--split", "train"],
     ["refusing", "data_batch_1"], {"MLP_DATA_ROOT": "evil_batch"}),
    ("cifar-meta-runs-code-train", ["train", "-c", "cifar.yaml"], ["refusing", "batches.meta"],
     {"MLP_DATA_ROOT": "evil_meta"}),
    ("cifar-meta-runs-code-eval", ["eval", "cifar_run/checkpoint.pth"], ["refusing", "batches.meta"],
     {"MLP_DATA_ROOT": "evil_meta"}),
    ("cifar-meta-runs-code-activations", ["activations", "--dataset", "cifar10", "--out", "acts"],
     ["refusing", "batches.meta"], {"MLP_DATA_ROOT": "evil_meta"}),
    # Configs are checked up front.
    ("config-alias-bomb", ["train", "-c", "bomb.yaml"], ["bomb.yaml", "aliases", "refusing", "!lol"], {}),
    ("config-alias-cycle", ["train", "-c", "self_alias.yaml"], ["refers to itself"], {}),
    ("config-huge-file", ["train", "-c", "huge.yaml"], ["huge.yaml", "larger than"], {}),
    ("config-deep-nesting", ["train", "-c", "deep.yaml"], ["nested too deeply"], {}),
    ("config-duplicate-key", ["train", "-c", "duplicate.yaml"], ["key 'model' is given twice", "line"], {}),
    ("set-bool-as-int", ["train", "-c", "good.yaml", "--set", "train.batch_size=true"],
     ["train.batch_size", "not true"], {}),
    ("set-bool-in-width-list", ["train", "-c", "good.yaml", "--set", "model.width=[64,false]"],
     ["model.width", "not false"], {}),
    ("set-beta-one", ["train", "-c", "good.yaml", "--set", "optimizer.betas=[0.9,1.0]"],
     ["optimizer.betas", "less than 1"], {}),
    ("set-beta-negative", ["train", "-c", "good.yaml", "--set", "optimizer.betas=[-0.1,0.999]"],
     ["optimizer.betas", "greater than or equal to 0"], {}),
    ("set-infinite-lr", ["train", "-c", "good.yaml", "--set", "optimizer.lr=.inf"], ["optimizer.lr", "finite"], {}),
    ("set-nan-clip", ["train", "-c", "good.yaml", "--set", "train.grad_clip=.nan"], ["train.grad_clip", "finite"], {}),
    ("set-seed-too-big", ["train", "-c", "good.yaml", "--set", "seed=18446744073709551616"], ["seed", "less than"], {}),
    ("set-seed-negative", ["train", "-c", "good.yaml", "--set", "seed=-1"], ["seed", "greater than"], {}),
    ("config-softplus-beta-zero", ["train", "-c", "softplus.yaml"], ["softplus", "beta must be a number > 0"], {}),
    ("set-celu-alpha-zero", ["train", "-c", "good.yaml", "--set", "model.activation={name: celu, alpha: 0}"],
     ["celu", "alpha must be a number > 0"], {}),
    ("config-name-too-long", ["train", "-c", "long_name.yaml"], ["name", "too long", "255"], {}),
    ("set-name-with-slash", ["train", "-c", "good.yaml", "--set", "name=../../x"], ["name must be letters"], {}),
    ("sweep-grid-value-too-long", ["sweep", "-c", "good.yaml", "--grid", "model.width=[" + ",".join(["64"] * 90) + "],32"],
     ["trial folder", "255"], {}),
    # Messages name the true cause.
    ("config-is-folder", ["train", "-c", "config_dir.yaml"], ["config_dir.yaml is a folder", "!not found"], {}),
    ("config-link-loop", ["train", "-c", "loop.yaml"], ["symbolic link loop", "!not found"], {}),
    ("config-dangling-link", ["train", "-c", "dangling.yaml"], ["nowhere.yaml", "does not exist"], {}),
    ("ckpt-link-loop", ["eval", "loop.pth"], ["symbolic link loop", "!not found"], {}),
    ("ckpt-png", ["eval", "image.pth"], ["not an mlp checkpoint", "PNG image", "!pickled"], {}),
    ("ckpt-random-bytes", ["eval", "random.pth"], ["not an mlp checkpoint", "unknown bytes", "!pickled"], {}),
    ("ckpt-yaml", ["eval", "good.yaml"], ["not an mlp checkpoint", "text file", "!pickled"], {}),
    ("ckpt-metrics-json", ["eval", "run/metrics.json"], ["not an mlp checkpoint", "JSON", "!pickled"], {}),
    ("ckpt-safetensors", ["eval", "weights.safetensors"], ["weights.safetensors is a safetensors file (weights"], {}),
    ("set-typo-blames-the-set", ["train", "-c", "good.yaml", "--set", "model.widht=3"],
     ["--set model.widht=3: unknown key", "!good.yaml"], {}),
    ("set-negative-epochs-blames-the-set", ["train", "-c", "good.yaml", "--set", "train.epochs=-1"],
     ["--set train.epochs=-1: train.epochs", "!good.yaml"], {}),
    ("data-missing-activations-names-data-root", ["activations", "--dataset", "mnist", "--out", "acts"],
     ["--data-root", "MLP_DATA_ROOT", "!data.root"], {"MLP_DATA_ROOT": "norun"}),
    ("search-alias-bomb", ["sweep", "-c", "good.yaml", "--search", "bomb.yaml"], ["--search", "aliases", "refusing"], {}),
    ("study-trial-env-garbage", ["train", "-c", "good.yaml"], ["MLP_STUDY_TRIAL", "not a trial", "unset"],
     {"MLP_STUDY_TRIAL": "garbage"}),
    ("data-missing-eval-names-data-root", ["eval", "run/checkpoint.pth"], ["--data-root", "!data.download"],
     {"MLP_DATA_ROOT": "norun"}),
    # The bare state dicts of the classic scripts.
    ("state-dict-needs-config", ["eval", "classic.pth"], ["bare weights", "--config"], {}),
    ("state-dict-predict-needs-config", ["predict", "classic.pth", "good.yaml"], ["bare weights", "--config"], {}),
    ("state-dict-wrong-width", ["eval", "classic.pth", "--config", "classic_wide.yaml"],
     ["fc1.weight has shape 64×784", "128×784", "fc1 784→64, fc2 64→10"], {}),
    ("state-dict-wrong-depth", ["eval", "classic.pth", "--config", "classic_deep.yaml"],
     ["2 layers", "has 3", "model.width"], {}),
    ("state-dict-convolutions", ["eval", "conv.pth", "--config", "good.yaml"], ["holds a convolution layer, conv1"], {}),
    ("mlp-checkpoint-with-config", ["eval", "run/checkpoint.pth", "--config", "good.yaml"], ["drop --config"], {}),
    # Out of memory, out of folder.
    ("model-too-large", ["train", "-c", "good.yaml", "--set", "model.width=1000000000"],
     ["parameters", "TB", "model.width"], {}),
    ("run-dir-name-too-long", ["train", "-c", "good.yaml", "--run-dir", "r" * 300], ["too long for the file system"], {}),
    ("run-dir-under-a-file", ["train", "-c", "good.yaml", "--run-dir", "afile/run"], ["afile is a file"], {}),
]


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def test_bad_inputs_table(workspace, monkeypatch, capsys):
    assert len(CASES) >= 80
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
        problems += [f"no '{w}'" for w in words if not w.startswith("!") and w not in stderr]
        problems += [f"'{w[1:]}'" for w in words if w.startswith("!") and w[1:] in stderr]
        if problems:
            failures.append(f"{name}: {', '.join(problems)}: {stderr.strip()[-400:]}")
    assert not failures, "\n".join(failures)
    assert not marker.exists(), "loading the malicious checkpoint ran its code"
    assert not (workspace / "PWNED_DATA").exists(), "reading a hostile CIFAR file ran its code"
    after = _snapshot(workspace)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing file was changed"
    new_runs = [p for p in (workspace / "runs").glob("*")] if (workspace / "runs").exists() else []
    finished = [p for p in new_runs if (p / "metrics.json").exists()]
    assert not finished, f"a failed command left a run behind: {finished}"


def _one_line_exit_2(args, capsys) -> str:
    try:
        app(list(args), prog_name="mlp")
        code = 0
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (code, err)
    return err


def test_runs_folder_that_cannot_be_made(tiny_config, capsys):
    """A working folder where runs/ is a file: one line naming the path, and the file untouched."""
    Path("runs").write_text("not a folder")
    err = _one_line_exit_2(["train", "-c", str(tiny_config), "--no-progress"], capsys)
    assert "cannot create runs/tiny-" in err and "runs is a file, not a folder" in err
    assert Path("runs").read_text() == "not a folder"


def test_read_only_folder(tiny_config, capsys, monkeypatch):
    """The tests run as root, for whom nothing is read-only: the file system's answer is simulated."""
    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(os, "mkdir", read_only)
    err = _one_line_exit_2(["train", "-c", str(tiny_config), "--no-progress"], capsys)
    assert "cannot create runs" in err and "the file system is read-only" in err
