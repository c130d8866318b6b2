"""Bare state dicts from the classic PyTorch scripts, evaluated with the model a config describes."""

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conftest import run_mlp, write_config
from mlp.data import channel_stats, read_split, resolve_root, to_unit


class ClassicNet(nn.Module):
    """As in the classic MNIST scripts: named layers, ReLU in forward, saved with state_dict()."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 48), nn.Linear(48, 24), nn.Linear(24, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


def _normalised(train: bool, stats_from=None):
    """The split's images normalised with the whole training split's statistics (mlp's choice)."""
    images, labels, _ = read_split("mnist", resolve_root("data"), train=train)
    train_images = images if train else read_split("mnist", resolve_root("data"), train=True)[0]
    mean, std = channel_stats(to_unit(train_images, torch.device("cpu")))
    return (to_unit(images, torch.device("cpu")) - mean[0]) / std[0], labels


def _trained_classic(model: nn.Module, steps: int = 60) -> nn.Module:
    torch.manual_seed(0)
    x, y = _normalised(train=True)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for step in range(steps):
        batch = torch.randint(0, len(y), (64,))
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_eval_and_predict_a_classic_scripts_state_dict(tmp_path):
    net = _trained_classic(ClassicNet())
    torch.save(net.state_dict(), "mnist_relu_model.pth")
    config = write_config(tmp_path / "classic.yaml", {"model": {"width": [48, 24], "activation": "relu"}})
    x, y = _normalised(train=False)
    with torch.no_grad():
        logits = net(x)
    expected_correct = int((logits.argmax(1) == y).sum())
    assert expected_correct > 0.5 * len(y)  # the classic model did learn

    result = run_mlp("eval", "mnist_relu_model.pth", "--config", config, "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["correct"] == expected_correct and shown["total"] == len(y)
    assert abs(shown["loss"] - F.cross_entropy(logits, y).item()) < 1e-4

    pixels = read_split("mnist", resolve_root("data"), train=False)[0][:3, 0].numpy()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(f"digit{i}.png")
    predicted = run_mlp("predict", "mnist_relu_model.pth", *[f"digit{i}.png" for i in range(3)],
                        "--config", config, "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert [p["index"] for p in json.loads(predicted.stdout)] == logits[:3].argmax(1).tolist()


def test_a_sequential_with_batch_norm_in_a_training_dict():
    """nn.Sequential keys ("1.weight", "2.running_mean"), batch norm, saved inside a dict with
    the optimizer and epoch as many tutorials do."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    net = _trained_classic(net, steps=20)
    torch.save({"epoch": 3, "model_state_dict": net.state_dict(), "optimizer_state_dict": {}}, "tutorial.pth")
    config = write_config(Path("bn.yaml"), {"model": {"width": 32, "norm": "batch"}})
    x, y = _normalised(train=False)
    with torch.no_grad():
        expected = int((net(x).argmax(1) == y).sum())
    result = run_mlp("eval", "tutorial.pth", "--config", config, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["correct"] == expected
    assert np.isclose(json.loads(result.stdout)["accuracy"], expected / len(y))
