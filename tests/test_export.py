"""`mlp export`: TorchScript and ONNX files that normalise their own input and answer as `mlp predict` does."""

import errno
import json
import os

import numpy as np
import pytest
import torch

import mlp.run.checkpoint
import mlp.run.durable
from conftest import run_mlp
from fakedata import write_image_folder
from mlp.commands.export import export
from mlp.commands.predict import predict_files, read_image
from mlp.config import load_config
from mlp.errors import UserError
from mlp.training.loop import fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    root = write_image_folder(base / "pics", per_class=12)
    cfg = load_config(None, ["name=pics", "data.dataset=folder", f"data.root={root}", "model.width=[32, 16]",
                             "model.activation=gelu", "train.epochs=2", "train.batch_size=8", "train.device=cpu"])
    run = fit(cfg, base / "run", progress=False)
    files = [root / "red" / "001.png", root / "green" / "007.jpg", root / "blue" / "004.png"]
    return run / "checkpoint.pth", files


def _predicted(checkpoint, files):
    """`mlp predict`'s probability of every class, per image (in class-index order), from the
    function it calls, in this process."""
    predictions, unreadable = predict_files(checkpoint, files, top_k=3)
    assert unreadable == []
    rows = []
    for prediction in predictions:
        probs = dict((r["index"], r["probability"]) for r in prediction["top_k"])
        rows.append([probs[i] for i in range(3)])
    return np.array(rows)


def _pixels(files):
    return torch.stack([read_image(f, [3, 16, 16]) for f in files]).float() / 255  # in [0, 1], as a user has them


def test_torchscript_and_onnx_answer_as_predict_does(trained, tmp_path):
    checkpoint, files = trained
    expected = _predicted(checkpoint, files)
    x = _pixels(files)

    done = run_mlp("export", checkpoint, "--out", tmp_path / "model.pt")
    assert done.returncode == 0 and done.stdout.strip() == f"wrote {tmp_path / 'model.pt'}", done.stderr
    extra = {"mlp.json": ""}
    scripted = torch.jit.load(str(tmp_path / "model.pt"), _extra_files=extra)
    meta = json.loads(extra["mlp.json"])
    assert meta["classes"] == ["blue", "green", "red"] and meta["input_shape"] == [3, 16, 16]
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).softmax(1).numpy(), expected, atol=1e-4)

    import onnx
    import onnxruntime

    done = run_mlp("export", checkpoint, "--format", "onnx", "--out", tmp_path / "model.onnx")
    assert done.returncode == 0, done.stderr
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(props["classes"]) == ["blue", "green", "red"] and "[0, 1]" in props["input"]
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(torch.from_numpy(logits).softmax(1).numpy(), expected, atol=1e-4)
    assert session.run(None, {"images": x[:1].numpy()})[0].shape == (1, 3)  # any batch size


def test_a_failed_write_is_one_line_and_leaves_no_file(trained, tmp_path, monkeypatch):
    checkpoint, _ = trained
    (tmp_path / "afile").write_text("")
    done = run_mlp("export", checkpoint, "--out", tmp_path / "afile" / "model.pt")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "cannot write" in done.stderr and "afile is a file, not a folder" in done.stderr

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(mlp.run.durable, "atomic_write_bytes", full)
    with pytest.raises(UserError, match="cannot write .*model.pt: no space left on the device"):
        export(checkpoint, "torchscript", tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()
