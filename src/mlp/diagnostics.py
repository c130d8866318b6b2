"""What happens inside each hidden layer while the model trains.

A forward hook on every ``hiddenI.activation`` adds a few reductions per training step to
running sums that stay on the device: which units gave a positive output at least once (ReLU
family), how many outputs sat within ``SATURATION_EPS`` of an asymptote (sigmoid, tanh,
softsign), the sum and sum of squares of the outputs.  Nothing is read back to the host until
an interval ends (every ``train.log_every`` steps, or once per epoch); then every layer's
numbers, with the weight and gradient norms of that moment, come back in one transfer and the
sums start again.  The hooks skip eval mode, so validation and test passes are not counted,
and ``close()`` removes them.
"""

from __future__ import annotations

import torch
from torch import nn

from mlp.model import ACTIVATIONS, Activation, hidden_layers, parse_activation

SATURATION_EPS = 0.01  # an output this close to an asymptote counts as saturated


class LayerStats:
    """Running sums for one hidden layer over the current interval."""

    def __init__(self, block: nn.Sequential, activation: Activation):
        self.block = block
        self.tracks_dead = activation.family == "relu"
        self.asymptotes = activation.asymptotes
        self.last_preact: torch.Tensor | None = None  # the latest training batch, for histograms
        self.last_act: torch.Tensor | None = None
        self.reset()

    def reset(self) -> None:
        weight = self.block.linear.weight
        self.fired = torch.zeros(weight.shape[0], dtype=torch.bool, device=weight.device)  # per unit
        self.moments = torch.zeros(2, dtype=torch.float64, device=weight.device)  # Σ act, Σ act²
        self.saturated = torch.zeros((), dtype=torch.float64, device=weight.device)  # how many outputs
        self.outputs = 0  # activation values summed: samples × units

    def on_forward(self, module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        if not module.training:
            return
        act = output.detach()
        self.last_preact, self.last_act = inputs[0].detach(), act
        if self.tracks_dead:
            self.fired |= act.amax(0) > 0  # amax over the batch is several times faster than any()
        if self.asymptotes is not None:
            low, high = self.asymptotes
            self.saturated += ((act < low + SATURATION_EPS) | (act > high - SATURATION_EPS)).sum()
        self.moments += torch.stack([act.sum(), torch.linalg.vector_norm(act).square()])
        self.outputs += act.numel()

    def summary(self) -> dict[str, torch.Tensor]:
        """This interval's numbers as 0-d device tensors (nothing is read back here)."""
        stats = {}
        weight = self.block.linear.weight
        if self.outputs:
            mean = self.moments[0] / self.outputs
            stats["act_mean"] = mean
            stats["act_std"] = (self.moments[1] / self.outputs - mean.square()).clamp_min(0).sqrt()
            if self.tracks_dead:
                stats["dead_fraction"] = 1.0 - self.fired.double().mean()
            if self.asymptotes is not None:
                stats["saturated_fraction"] = self.saturated / self.outputs
            if weight.grad is not None:
                # The interval's last step: a norm per step would cost a pass over every weight.
                stats["grad_norm"] = torch.linalg.vector_norm(weight.grad)
        stats["weight_norm"] = torch.linalg.vector_norm(weight.detach())
        activation = self.block.activation
        if isinstance(activation, nn.PReLU):
            stats["prelu_slope"] = activation.weight.detach().mean()  # the mean when there is one per unit
        elif isinstance(getattr(activation, "beta", None), nn.Parameter):
            stats["swish_beta"] = activation.beta.detach()
        return stats

    def histograms(self) -> dict[str, torch.Tensor]:
        weight = self.block.linear.weight
        tensors = {"weights": weight.detach(), "preact": self.last_preact, "act": self.last_act,
                   "grad": weight.grad}
        return {name: t for name, t in tensors.items() if t is not None}


class LayerDiagnostics:
    """Hooks on every hidden layer of ``model``; writes through ``logger`` (a ``RunLogger``).

    ``train_cfg.diagnostics``: ``step`` writes the statistics every ``log_every`` steps
    (call ``end_interval``), ``epoch`` once per epoch (``end_epoch``), ``off`` attaches
    nothing.  Histograms are written at the end of every ``histogram_every``-th epoch.
    """

    def __init__(self, model: nn.Sequential, activation_spec, train_cfg, logger):
        self.mode = train_cfg.diagnostics
        self.histogram_every = train_cfg.histogram_every
        self.logger = logger
        self.layers: list[LayerStats] = []
        self.handles = []
        if self.mode == "off":
            return
        activation = ACTIVATIONS[parse_activation(activation_spec)[0]]
        for block in hidden_layers(model):
            layer = LayerStats(block, activation)
            self.layers.append(layer)
            self.handles.append(block.activation.register_forward_hook(layer.on_forward))

    def end_interval(self, step: int) -> None:
        if self.mode == "step":
            self._write_stats(step)

    def end_epoch(self, epoch: int, step: int) -> None:
        if self.mode == "epoch":
            self._write_stats(step)
        if self.layers and self.histogram_every and epoch % self.histogram_every == 0:
            self.logger.layer_histograms(step, [layer.histograms() for layer in self.layers])

    def _write_stats(self, step: int) -> None:
        summaries = [layer.summary() for layer in self.layers]
        flat = [value for summary in summaries for value in summary.values()]
        if not flat:
            return
        values = iter(torch.stack([v.double() for v in flat]).tolist())  # the one read-back
        self.logger.layer_stats(step, [{name: next(values) for name in summary} for summary in summaries])
        for layer in self.layers:
            layer.reset()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
