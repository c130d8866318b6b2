"""Unit test of fp16's loss scaling in the diagnostics: the signal is measured on the scaled
gradients, and must come out as if there were no scaling."""

import copy
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from mlp.config import ModelConfig
from mlp.model import build_model
from mlp.observe.diagnostics import LayerDiagnostics, LayerStats


class Silent:
    """A RunLogger that keeps nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _signal_of_one_step(model, x, y, loss_scale, grad_scale):
    train_cfg = SimpleNamespace(diagnostics="step", histogram_every=0, log_every=10)
    diagnostics = LayerDiagnostics(model, "tanh", train_cfg, Silent(), steps_per_epoch=100, grad_scale=grad_scale)
    (F.cross_entropy(model(x), y) * loss_scale).backward()
    diagnostics.after_step(1)
    diagnostics.close()
    (first,) = diagnostics.record["measurements"]
    return first["signal"]


def test_the_signal_is_unscaled_by_the_loss_scale_of_its_step():
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=[32, 16], activation="tanh"), (1, 4, 4), 3)
    x, y = torch.randn(20, 1, 4, 4), torch.randint(0, 3, (20,))
    plain = _signal_of_one_step(copy.deepcopy(model), x, y, 1.0, None)
    scaled = _signal_of_one_step(copy.deepcopy(model), x, y, 1024.0, lambda: 1024.0)
    assert len(plain) == 2 and all(s > 0 for s in plain)
    assert all(abs(a - b) <= 1e-6 * a for a, b in zip(plain, scaled)), (plain, scaled)


def test_a_relu_unit_whose_input_is_exactly_zero_is_inactive():
    """ReLU passes back nothing at 0 (torch's derivative there is 0): such a unit is dead."""
    torch.manual_seed(0)
    block = build_model(ModelConfig(width=4), (1, 2, 2), 2).hidden0
    with torch.no_grad():
        block.linear.weight[:2] = 0.0  # units 0 and 1 always get exactly 0
        block.linear.bias.zero_()
        block.linear.weight[2:] = 1.0  # units 2 and 3 get the (positive) sum of the pixels
    stats = LayerStats(block)
    handle = block.activation.register_forward_hook(stats.on_forward)
    block.train()
    block(torch.rand(8, 4) + 0.1)
    handle.remove()
    shares = stats.inactive_fraction()
    assert shares["inactive"].item() == 0.5 and shares["dead"].item() == 0.5


def test_a_tanh_unit_held_beyond_its_flat_tail_is_inactive():
    """tanh is flat (derivative below a fifth of its largest, 1) beyond about ±1.44: a unit always at
    +2, or always at -2 (beyond the edge, within twice it), is saturated, not dead; one at 0 or at 1 is not."""
    torch.manual_seed(0)
    block = build_model(ModelConfig(width=4, activation="tanh"), (1, 2, 2), 2).hidden0
    with torch.no_grad():
        block.linear.weight.zero_()
        block.linear.bias.copy_(torch.tensor([2.0, -2.0, 0.0, 1.0]))
    stats = LayerStats(block)
    assert 1.40 < float(stats.high.min()) < 1.48
    handle = block.activation.register_forward_hook(stats.on_forward)
    block.train()
    block(torch.rand(8, 4))
    handle.remove()
    shares = stats.inactive_fraction()
    assert shares["inactive"].item() == 0.5 and shares["saturated"].item() == 0.5
    assert shares["dead"].item() == 0.0
