"""Where an activation passes back little or no gradient: the thresholds behind the dead,
saturated and negative-side shares, and the collapse of a layer (docs/diagnostics.md).

- **dead**: the derivative is exactly 0 (ReLU below 0, ReLU6 beyond its ends, hardswish below -3).
- **saturated**: the derivative stays below ``SATURATED`` (a fifth) of the activation's largest
  derivative, without being 0: sigmoid and tanh near their asymptotes, the slow negative tails of
  ELU, SELU, GELU, SiLU, softplus, mish.  A fifth, because Glorot & Bengio's collapsed sigmoid layer
  (outputs 0.031 to 0.038, so σ' ≤ 0.037, 15% of its largest 0.25) must count, while a tanh unit only
  counts once its input stays beyond ±1.44 (|tanh| > 0.89) on every example of an interval, which a
  network that trains does not show.
- **negative side** (leaky ReLU, PReLU): the input stayed below 0, so the unit passes back its slope
  a (1% by default) of the gradient: neither dead nor saturated, reported as what it is.
- **collapsed layer**: its units barely vary across the examples (see ``spread``).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

SATURATED = 0.2  # a unit whose derivative stays below this share of the activation's largest is saturated
COLLAPSED = 0.005  # a layer whose spread is below this is collapsed (see spread)
TAIL_RANGE, TAIL_POINTS = 60.0, 24001  # where tails are looked for: [-60, 60] in steps of 0.005
LEAKY = (nn.LeakyReLU, nn.PReLU)
RELU_FAMILY = (nn.ReLU, nn.ReLU6, *LEAKY)  # piecewise linear: a derivative of exactly 0 means dead


def derivative(activation: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid z over [-60, 60] and f'(z) on it, by autograd, in float64."""
    module = copy.deepcopy(activation).cpu().double()
    z = torch.linspace(-TAIL_RANGE, TAIL_RANGE, TAIL_POINTS, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(module(z).sum(), z)
    return z.detach(), slope


def largest_derivative(activation: nn.Module) -> float:
    """max |f'|, computed from the activation itself (sigmoid 0.25, tanh 1, ReLU 1)."""
    return float(derivative(activation)[1].abs().max())


def flat_tails(activation: nn.Module, threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)``: |f'| is at or below ``threshold`` for every input ≤ low and every input ≥ high
    (-inf / +inf where there is no such tail).  ``threshold`` 0 means exactly 0; None means
    SATURATED × the largest derivative.  One value, or one per unit for a per-unit PReLU."""
    if isinstance(activation, nn.PReLU):  # f' is the slope below 0: flat when the slope is
        slope = activation.weight.detach().float().cpu()
        flat = slope.abs() <= (threshold or 0.0)  # the leaky family is never called saturated
        return torch.where(flat, 0.0, -math.inf), torch.full_like(slope, math.inf)
    z, slope = derivative(activation)
    limit = SATURATED * float(slope.abs().max()) if threshold is None else threshold
    steep = (slope.abs() > limit * (1 + 1e-9)).nonzero().flatten()
    if len(steep) == 0:  # flat everywhere: a constant, no tail to speak of
        return torch.tensor([-math.inf]), torch.tensor([math.inf])
    first, last = int(steep[0]), int(steep[-1])
    # rounded, so that a tail ending at 0 ends at 0.0 and not at linspace's -3e-15
    low = round(z[first - 1].item(), 6) if first > 0 else -math.inf
    high = round(z[last + 1].item(), 6) if last < TAIL_POINTS - 1 else math.inf
    return torch.tensor([low]), torch.tensor([high])


def spread(outputs: torch.Tensor, output_range: float | None) -> torch.Tensor:
    """How much a layer's units vary across the batch's examples: the root mean square over the
    units of each unit's standard deviation over the examples, divided by the activation's output
    range (1 for sigmoid, 2 for tanh) or, for an unbounded activation, by the root mean square of
    the outputs.  Near 0, every unit gives nearly the same output whatever the example (a barcode
    in the histogram); below COLLAPSED the layer is called collapsed."""
    outputs = outputs.float().flatten(1)
    if outputs.shape[0] < 2:
        return torch.ones((), device=outputs.device)
    per_unit = outputs.std(0).pow(2).mean().sqrt()
    scale = torch.tensor(output_range, device=outputs.device) if output_range else outputs.pow(2).mean().sqrt()
    return per_unit / scale.clamp_min(1e-30)
