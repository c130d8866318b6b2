"""What happens inside each hidden layer while the model trains.

A forward hook on every ``hiddenI.activation`` keeps a reference to the latest training
batch's pre-activations and outputs and, for the ReLU family, folds each unit's largest
output into a running maximum on the device: a unit is dead over an interval if that
maximum never rose above zero.  That is the only per-step work (two small reductions),
because it is the only number that needs every batch.  The hook keeps no Python counters, so
under ``torch.compile`` it is traced into the model's graph once and not recompiled per step.  When an interval ends (every
``train.log_every`` steps, or once per epoch) the rest is measured once: activation mean,
std and saturated fraction on the interval's last batch, weight and gradient norms, the
learnable activation parameters; every layer's numbers come back to the host in one
transfer.  The hooks skip eval mode, so validation and test passes are not counted, and
``close()`` removes them.
"""

from __future__ import annotations

import torch
from torch import nn

from mlp.model import ACTIVATIONS, Activation, hidden_layers, parse_activation

SATURATION_EPS = 0.01  # an output this close to an asymptote counts as saturated


class LayerStats:
    """One hidden layer: the running maximum per unit and the latest training batch."""

    def __init__(self, block: nn.Sequential, activation: Activation):
        self.block = block
        self.tracks_dead = activation.family == "relu"
        self.asymptotes = activation.asymptotes
        self.last_preact: torch.Tensor | None = None
        self.last_act: torch.Tensor | None = None
        self.peak: torch.Tensor | None = None  # per unit, clamped below at 0 (ReLU family only)
        if self.tracks_dead:
            weight = block.linear.weight
            self.peak = torch.zeros(weight.shape[0], device=weight.device)
            # One tensor for the whole run, at a fixed address: a compiled graph that updates it
            # in place can still be replayed as a CUDA graph (reduce-overhead).
            torch._dynamo.mark_static_address(self.peak)
        self.reset()

    def reset(self) -> None:
        if self.peak is not None:
            self.peak.zero_()
        self.trained = False  # whether a training batch went through since the last reset

    def on_forward(self, module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        if not module.training:
            return
        self.last_preact, self.last_act = inputs[0].detach(), output.detach()
        if self.tracks_dead:
            torch.maximum(self.peak, self.last_act.amax(0), out=self.peak)
        self.trained = True

    def summary(self) -> dict[str, torch.Tensor]:
        """This interval's numbers as 0-d device tensors (nothing is read back here)."""
        stats = {}
        weight = self.block.linear.weight
        if self.trained:
            act = self.last_act
            stats["act_mean"], stats["act_std"] = act.mean(), act.std()
            if self.tracks_dead:
                stats["dead_fraction"] = (self.peak <= 0).double().mean()
            if self.asymptotes is not None:
                low, high = self.asymptotes
                saturated = (act < low + SATURATION_EPS) | (act > high - SATURATION_EPS)
                stats["saturated_fraction"] = saturated.double().mean()
            if weight.grad is not None:
                stats["grad_norm"] = torch.linalg.vector_norm(weight.grad)  # of the interval's last step
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
    nothing, and so does ``enabled=False`` (DDP ranks other than 0, which write no logs).
    Histograms are written at the end of every ``histogram_every``-th epoch.
    """

    def __init__(self, model: nn.Sequential, activation_spec, train_cfg, logger, enabled: bool = True):
        self.mode = train_cfg.diagnostics
        self.histogram_every = train_cfg.histogram_every
        self.logger = logger
        self.layers: list[LayerStats] = []
        self.handles = []
        if self.mode == "off" or not enabled:
            self.mode, self.histogram_every = "off", 0
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
