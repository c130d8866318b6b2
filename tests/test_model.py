import math

import pytest
import torch

from mlp.config import ModelConfig
from mlp.model import ACTIVATIONS, ALIASES, Swish, build_model, count_parameters, hidden_layers


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS) + sorted(ALIASES))
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_every_activation_and_depth_builds_trains_a_step(activation, depth):
    cfg = ModelConfig(width=32, depth=depth, activation=activation)
    model = build_model(cfg, (1, 28, 28), 10)
    assert len(hidden_layers(model)) == depth
    x = torch.randn(8, 1, 28, 28)
    out = model(x)
    assert out.shape == (8, 10)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_shape_and_parameter_count_of_the_classic_model():
    model = build_model(ModelConfig(), (1, 28, 28), 10)
    assert count_parameters(model) == 784 * 512 + 512 + 512 * 10 + 10
    names = [n for n, _ in model.named_children()]
    assert names == ["flatten", "hidden0", "output"]


def test_list_of_widths_norms_dropout_and_no_bias():
    cfg = ModelConfig(width=[64, 32], activation="tanh", norm="layer", dropout=0.1, bias=False)
    model = build_model(cfg, (3, 32, 32), 100)
    layers = hidden_layers(model)
    assert [h.linear.out_features for h in layers] == [64, 32]
    assert all(isinstance(h.norm, torch.nn.LayerNorm) and isinstance(h.dropout, torch.nn.Dropout) for h in layers)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    batch = build_model(ModelConfig(width=16, norm="batch"), (1, 4, 4), 2)
    assert isinstance(batch.hidden0.norm, torch.nn.BatchNorm1d)


def test_learnable_activation_parameters():
    prelu = build_model(ModelConfig(width=16, activation={"name": "prelu", "per_unit": True}), (1, 4, 4), 2)
    assert prelu.hidden0.activation.weight.shape == (16,)
    swish = build_model(ModelConfig(width=16, activation={"name": "swish", "beta": 2.0, "learnable": True}),
                        (1, 4, 4), 2)
    assert isinstance(swish.hidden0.activation, Swish)
    assert any(n.endswith("activation.beta") for n, _ in swish.named_parameters())
    leaky = build_model(ModelConfig(width=16, activation={"name": "leaky_relu", "negative_slope": 0.2}), (1, 4, 4), 2)
    assert leaky.hidden0.activation.negative_slope == 0.2


@pytest.mark.parametrize("activation,init,expected_std", [
    ("relu", "auto", math.sqrt(2 / 784)),          # He
    ("selu", "auto", math.sqrt(1 / 784)),          # LeCun normal
    ("tanh", "auto", 5 / 3 * math.sqrt(2 / (784 + 1000))),  # Xavier with tanh gain
    ("sigmoid", "xavier", math.sqrt(2 / (784 + 1000))),
    ("relu", "orthogonal", None),
])
def test_weight_init_schemes(activation, init, expected_std):
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=1000, activation=activation, init=init), (1, 28, 28), 10)
    w = model.hidden0.linear.weight
    assert torch.count_nonzero(model.hidden0.linear.bias) == 0
    if expected_std is None:  # 1000×784: orthonormal columns scaled by the ReLU gain, WᵀW = 2·I
        assert torch.allclose(w.T @ w, 2 * torch.eye(784), atol=1e-4)
    else:
        assert abs(w.std().item() - expected_std) / expected_std < 0.02
