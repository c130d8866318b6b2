"""Unit tests of weight initialisation, layer by layer: ``default`` leaves PyTorch's own, and any
other scheme reaches every linear layer, the output layer included.  (Loose on purpose: which
scale each scheme gives a layer is the business of tests/test_model.py.)"""

import math

import pytest
import torch

from mlp.config import ModelConfig
from mlp.model import build_model


def _linears(model):
    return [model.hidden0.linear, model.hidden1.linear, model.output]


def test_default_keeps_pytorchs_uniform_init_in_every_layer():
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=[400, 300], init="default"), (1, 28, 28), 10)
    for layer in _linears(model):
        fan_in = layer.weight.shape[1]
        bound = 1 / math.sqrt(fan_in)  # PyTorch: weights and biases uniform in ±1/√fan_in
        assert layer.weight.abs().max().item() <= bound
        assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert torch.count_nonzero(layer.bias) == len(layer.bias)


@pytest.mark.parametrize("init", ["auto", "kaiming", "xavier", "orthogonal"])
def test_every_other_scheme_initialises_every_layer(init):
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=[400, 300], init=init, activation="tanh"), (1, 28, 28), 10)
    torch.manual_seed(0)
    default = build_model(ModelConfig(width=[400, 300], init="default", activation="tanh"), (1, 28, 28), 10)
    for layer, untouched in zip(_linears(model), _linears(default)):
        assert torch.count_nonzero(layer.bias) == 0
        assert not torch.allclose(layer.weight, untouched.weight)
        assert layer.weight.std().item() != pytest.approx(untouched.weight.std().item(), rel=0.05)


def test_he_init_scales_each_hidden_layer_by_its_own_fan_in():
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=[400, 300], init="kaiming"), (1, 28, 28), 10)
    for layer in _linears(model)[:2]:
        expected = math.sqrt(2 / layer.weight.shape[1])
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.05)
