"""The Python API: mlp.train, mlp.compare, mlp.load, mlp.evaluate, and the notebook that uses them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import mlp
from conftest import TINY
from mlp.commands.predict import predict_files

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "activations.ipynb"


def test_import_mlp_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", "import mlp, sys; print('torch' in sys.modules, mlp.train)"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("False <function train"), done.stderr


def test_train_load_and_evaluate(tmp_path):
    run = mlp.train(TINY, set=["train.epochs=1"], run_dir="run")  # a dict config
    assert run.dir == Path("run") and run.metrics["status"] == "finished"
    assert mlp.evaluate(run.checkpoint)["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"], rel=1e-6)  # JSON keeps 7 digits

    model = mlp.load(run.checkpoint)  # images in [0, 1]: the same answer as mlp predict
    images = torch.rand(3, 1, 28, 28)
    for i, image in enumerate(images):
        from PIL import Image
        Image.fromarray((image[0] * 255).round().byte().numpy()).save(f"{i}.png")
    predictions, _ = predict_files(run.checkpoint, [Path(f"{i}.png") for i in range(3)], top_k=1)
    with torch.no_grad():
        probs = model((images * 255).round() / 255).softmax(1)
    # predict may invert an image whose border is light; compare only those it took as they are
    same = [(p, q) for p, q in zip(predictions, probs) if not p["inverted"] and p["background_level"] is None]
    assert same and all(p["probability"] == pytest.approx(float(q.max()), abs=1e-5) for p, q in same)
    assert model.classes[0] == "0 - zero" and model.input_shape == [1, 28, 28]

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    again = mlp.train(tmp_path / "tiny.yaml", set=["train.epochs=1"], run_dir="run2")  # a path
    assert again.metrics["epochs"] == [{**e, "train_time_s": a["train_time_s"], "samples_per_s": a["samples_per_s"]}
                                       for e, a in zip(run.metrics["epochs"], again.metrics["epochs"])]


def test_mistakes_raise_user_error_with_the_commands_message():
    with pytest.raises(mlp.UserError, match="unknown key 'model.widht'; did you mean 'model.width'"):
        mlp.train(TINY, set=["model.widht=3"])
    with pytest.raises(mlp.UserError, match="split must be test, val or train"):
        mlp.evaluate("run/checkpoint.pth", split="valid")
    with pytest.raises(mlp.UserError, match="checkpoint not found"):
        mlp.load("missing.pth")
    with pytest.raises(mlp.UserError, match="model.width"):  # every value is checked before the first run
        mlp.compare(TINY, vary={"model.width": [16, -1]})
    with pytest.raises(mlp.UserError, match="vary expects KEY=V1,V2"):
        mlp.compare(TINY, vary=["model.activation"])


def test_the_activations_notebook_runs_end_to_end(tmp_path):
    """Executed as a user would, on the fabricated MNIST, with settings small enough for a test."""
    import nbclient
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    settings = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "name": "nb"}))
    settings.source = ('CONFIG = "tiny.yaml"\nSETTINGS = ["train.epochs=1", "model.depth=3", "model.width=32"]\n'
                       'JOBS = 1')
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on a cell error
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "relu     test accuracy" in text and "sigmoid  test accuracy" in text
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert html and html[0].startswith("<iframe srcdoc=") and "report" in html[0].lower()
    summary = json.loads((tmp_path / "runs" / "nb-compare" / "summary.json").read_text())
    assert set(summary["runs"]) == {"relu", "sigmoid"}
