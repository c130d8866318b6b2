import pytest
import torch

from mlp.config import ModelConfig
from mlp.errors import UserError
from mlp.model import (ACTIVATIONS, ALIASES, CentreCrop, Swish, build_model, count_parameters, describe_input,
                       hidden_layers, parameter_count)


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


GLOROT = lambda fan_in, fan_out: 2 / (fan_in + fan_out)
HE = lambda fan_in, fan_out: 2 / fan_in


@pytest.mark.parametrize("activation,init,gain,variance", [
    ("relu", "auto", 1.0, HE),
    ("relu", "xavier", 1.0, GLOROT),                       # Glorot & Bengio: no ReLU gain
    ("relu", "glorot", 1.0, GLOROT),
    ("tanh", "auto", 1.0, GLOROT),                         # no tanh gain of 5/3
    ("tanh", "kaiming", 1.0, HE),
    ("sigmoid", "he", 1.0, HE),
    ("leaky_relu", "he", 1.0, lambda i, o: 2 / ((1 + 0.01 ** 2) * i)),
    ({"name": "leaky_relu", "negative_slope": 0.5}, "kaiming", 1.0, lambda i, o: 2 / (1.25 * i)),
    ("selu", "auto", 1.0, lambda i, o: 1 / i),             # LeCun
    ("relu", "lecun", 1.0, lambda i, o: 1 / i),
    ("tanh", "xavier", 5 / 3, lambda i, o: (5 / 3) ** 2 * GLOROT(i, o)),  # a gain only when asked for
    ("relu", "default", 1.0, lambda i, o: 1 / (3 * i)),    # PyTorch's uniform(±1/√fan_in)
])
def test_every_layer_gets_the_variance_of_its_formula(activation, init, gain, variance):
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=1000, depth=2, activation=activation, init=init, init_gain=gain),
                        (1, 28, 28), 10)
    for layer, fan_in in zip(hidden_layers(model), [784, 1000]):
        w = layer.linear.weight
        want = variance(fan_in, 1000)
        assert abs(w.var().item() - want) / want < 0.03, (w.var().item(), want)
        assert init == "default" or torch.count_nonzero(layer.linear.bias) == 0


def test_orthogonal_init_and_auto_records_what_it_picked():
    from mlp.model import init_label

    torch.manual_seed(0)
    model = build_model(ModelConfig(width=1000, activation="relu", init="orthogonal"), (1, 28, 28), 10)
    w = model.hidden0.linear.weight  # 1000×784: orthonormal columns, WᵀW = I (no gain unless asked)
    assert torch.allclose(w.T @ w, torch.eye(784), atol=1e-4)
    assert init_label(ModelConfig(activation="tanh")) == "auto: Glorot"
    assert init_label(ModelConfig(activation="relu", init="he")) == "He"
    assert init_label(ModelConfig(activation="selu")) == "auto: LeCun"
    assert init_label(ModelConfig(init="xavier", init_gain=2.0)) == "Glorot × gain 2"


@pytest.mark.parametrize("height, width, size", [(28, 28, 20), (28, 28, 19), (32, 32, 24), (27, 30, 21), (31, 33, 20), (5, 5, 5)])
def test_the_crop_takes_the_pixels_torchvisions_center_crop_takes(height, width, size):
    from torchvision.transforms.v2.functional import center_crop

    images = torch.arange(2 * 3 * height * width, dtype=torch.float32).reshape(2, 3, height, width)
    assert torch.equal(CentreCrop(size, height, width)(images), center_crop(images, [size, size]))


def test_a_cropped_model_reads_the_centre_alone():
    model = build_model(ModelConfig(width=16, crop=20), (1, 28, 28), 10)
    assert [n for n, _ in model.named_children()] == ["crop", "flatten", "hidden0", "output"]
    assert model.hidden0.linear.in_features == 400
    assert count_parameters(model) == parameter_count(ModelConfig(width=16, crop=20), (1, 28, 28), 10)[0]
    assert describe_input(ModelConfig(crop=20), (1, 28, 28)) == "400 (the centre 20×20 of 28×28)"
    assert describe_input(ModelConfig(), (1, 28, 28)) == "784"
    x = torch.randn(4, 1, 28, 28)
    border, centre = x.clone(), x.clone()
    border[..., :4, :] += 5.0  # the 4 rows above the centre 20×20
    border[..., :, 24:] -= 5.0  # the 4 columns to its right
    centre[..., 4, 4] += 5.0  # the centre's top-left pixel
    with torch.no_grad():
        assert torch.equal(model(border), model(x))
        assert not torch.equal(model(centre), model(x))
    # a crop the size of the image is the whole image; a larger one is refused in one line
    assert build_model(ModelConfig(width=4, crop=28), (1, 28, 28), 10).hidden0.linear.in_features == 784
    with pytest.raises(UserError, match=r"^model.crop is 33 but the images are 32×32; choose a crop of at most 32"):
        build_model(ModelConfig(width=4, crop=33), (3, 32, 32), 10)
    with pytest.raises(ValueError):
        ModelConfig(crop=0)
