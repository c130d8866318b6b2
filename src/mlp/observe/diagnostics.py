"""What happens inside each hidden layer while the model trains, in numbers that compare
across layers and across activations.

Per hidden layer ``i`` (counted from 1, next to the input; the module ``hidden<i-1>``):

- **signal**: the backpropagated gradient reaching the layer, as the root mean square over the
  batch's examples and the layer's units of ∂ℓ/∂z, where z is the output of ``hidden<i-1>.linear``
  (the pre-activation) and ℓ each example's own loss.  Per element and per example, so layers of
  different widths and runs with different batch sizes compare.
- **inactive**, **dead**, **saturated**, **negative**: shares of units over the interval (the last
  ``train.log_every`` steps, or the epoch), by the thresholds of ``mlp.observe.units``: dead (the
  derivative exactly 0 on every example), saturated (below a fifth of its largest, not 0),
  inactive = either; negative for leaky ReLU and PReLU (input below 0 throughout: the unit passes
  back its slope of the gradient).  **spread**: how much the units vary across the examples
  (``units.spread``); **zero_share**: the share of outputs exactly 0.
- **grad_rms**, **weight_rms**: root mean square per element of the weight gradient (of the
  batch's mean loss, what the optimizer sees) and of the weights; **update_ratio**:
  ‖W after the step − W before‖ / ‖W before‖; **act_mean**, **act_std** of the layer's outputs.

When: at step 0 (before the first update, ``at_init``), at steps 1, 2, 4, 8, ... below
``train.log_every``, then every ``log_every`` steps, and at each epoch's last step (``step``); or
only at epoch ends (``epoch``).  The shares of units are measured where an interval ends.

Cost (docs/diagnostics.md): a forward hook on each ``hidden<i>.activation`` folds one number per
unit per step into a running statistic on the device; everything else happens only at measured
steps (a gradient hook, a copy of the weights) and comes back to the host in one transfer.  The
hooks skip eval mode.  ``diagnostics.json`` in the run folder keeps it all for compare and runs.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn

from mlp.model import ACTIVATIONS, hidden_layers, parse_activation
from mlp.observe.units import LEAKY, RELU_FAMILY, TAIL_POINTS, TAIL_RANGE, flat_tails, spread
from mlp.observe.layer_summary import format_report, summarise

DISTRIBUTION_BINS = 60
DIAGNOSTICS_FILE = "diagnostics.json"


class Schedule:
    """The steps measured: 1, 2, 4, 8, ... below ``log_every``, every ``log_every``-th step, and
    each epoch's last step (``step`` mode); only epochs' last steps (``epoch`` mode)."""

    def __init__(self, mode: str, log_every: int, steps_per_epoch: int | None):
        self.mode, self.log_every, self.steps_per_epoch = mode, log_every, steps_per_epoch

    def interval_end(self, step: int) -> bool:
        """Whether ``step`` closes an interval of inactivity: every ``log_every``-th step (``step``
        mode) or an epoch's last (``epoch`` mode); the dense start and epoch ends in between are
        measured without closing one, so every inactive share covers the same number of steps."""
        if self.mode == "step":
            return step % self.log_every == 0
        return bool(self.steps_per_epoch) and step % self.steps_per_epoch == 0

    def __contains__(self, step: int) -> bool:
        if self.steps_per_epoch and step % self.steps_per_epoch == 0:
            return True
        if self.mode != "step":
            return False
        return step % self.log_every == 0 or (step < self.log_every and step & (step - 1) == 0)


class LayerStats:
    """One hidden layer: its running inactivity statistic, latest batch and captured gradient."""

    def __init__(self, block: nn.Sequential, output_range: float | None = None):
        self.linear, self.activation = block.linear, block.activation
        self.output_range = output_range  # the activation's, when it is bounded (for the spread)
        self.leaky = isinstance(self.activation, LEAKY)
        self._tails()
        self.learnable = any(True for _ in self.activation.parameters())
        self.kind, self.centre = self._kind()
        self.last_preact: torch.Tensor | None = None
        self.last_act: torch.Tensor | None = None
        self.stat: torch.Tensor | None = None
        if self.kind is not None:
            width = self.linear.weight.shape[0]
            self.stat = torch.empty(width, device=self.linear.weight.device)
            # One tensor for the whole run, at a fixed address: a compiled graph that updates it
            # in place can still be replayed as a CUDA graph (reduce-overhead).
            torch._dynamo.mark_static_address(self.stat)
        self.capture_handle = None
        self.weight_before: torch.Tensor | None = None
        self.signal: torch.Tensor | None = None
        self.reset()

    def _tails(self) -> None:
        """Where the unit is inactive (the saturated tails, which hold the dead ones) and dead; for
        the leaky family the negative side instead (below 0, where it passes back its slope)."""
        if isinstance(self.activation, RELU_FAMILY):
            self.dead = flat_tails(self.activation, 0.0)
        else:  # a smooth activation's derivative reaches 0 only by rounding, far out: saturated, not dead
            self.dead = (torch.tensor([-math.inf]), torch.tensor([math.inf]))
        if self.leaky:
            self.low, self.high = torch.zeros_like(self.dead[0]), torch.full_like(self.dead[1], math.inf)
        else:
            self.low, self.high = flat_tails(self.activation)

    def _kind(self) -> tuple[str | None, float]:
        """Which running statistic tells the units in a flat tail: ``left`` (the largest input),
        ``right`` (the smallest), ``both`` (the smallest distance from the middle), or None."""
        if isinstance(self.activation, nn.PReLU):
            return "left", 0.0  # the slope may shrink into a flat tail while training
        low, high = float(self.low.max()), float(self.high.min())
        if math.isfinite(low) and math.isfinite(high):
            centre = (low + high) / 2
            return "both", 0.0 if abs(centre) < 2 * TAIL_RANGE / TAIL_POINTS else centre
        if math.isfinite(low):
            return "left", 0.0
        if math.isfinite(high):
            return "right", 0.0
        return None, 0.0

    def reset(self) -> None:
        if self.stat is not None:
            self.stat.fill_(math.inf if self.kind in ("right", "both") else -math.inf)
        self.trained = False  # whether a training batch went through since the last reset

    def on_forward(self, module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        if not module.training:
            return
        z = inputs[0].detach()
        self.last_preact, self.last_act = z, output.detach()
        if self.kind == "left":
            torch.maximum(self.stat, z.amax(0), out=self.stat)
        elif self.kind == "right":
            torch.minimum(self.stat, z.amin(0), out=self.stat)
        elif self.kind == "both":
            distance = z.abs() if self.centre == 0.0 else (z - self.centre).abs()
            torch.minimum(self.stat, distance.amin(0), out=self.stat)
        self.trained = True

    def arm(self) -> None:
        """Before a measured step: catch the gradient of the linear output, copy the weights."""
        self.signal = None
        self.weight_before = self.linear.weight.detach().clone()
        if self.capture_handle is None:
            self.capture_handle = self.linear.register_forward_hook(self._on_linear_forward)

    def disarm(self) -> None:
        if self.capture_handle is not None:
            self.capture_handle.remove()
            self.capture_handle = None
        self.weight_before = None

    def _on_linear_forward(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if module.training and output.requires_grad:
            output.register_hook(self._on_gradient)

    def _on_gradient(self, grad: torch.Tensor) -> None:
        # per example: the batch's loss is a mean, so one example's own gradient is batch × this
        grad = grad.detach().float()
        self.signal = grad.pow(2).mean().sqrt() * grad.shape[0]

    def inactive_fraction(self) -> dict[str, torch.Tensor]:
        """The shares of units inactive (dead or saturated), dead, saturated, and for the leaky
        family on the negative side, over the interval."""
        zero = torch.zeros((), device=self.linear.weight.device, dtype=torch.float64)
        if self.kind is None or not self.trained:
            shares = {"inactive": zero, "dead": zero, "saturated": zero}
            return {**shares, "negative": zero} if self.leaky else shares
        if self.learnable:  # a PReLU slope or a learnable Swish β moves the tails
            self._tails()
        tail = self._in_tails(self.low, self.high)
        dead = self._in_tails(*self.dead)
        if self.leaky:  # only a slope of exactly 0 makes the negative side dead
            return {"inactive": (tail & dead).double().mean(), "dead": (tail & dead).double().mean(),
                    "saturated": zero, "negative": tail.double().mean()}
        return {"inactive": tail.double().mean(), "dead": dead.double().mean(),
                "saturated": (tail & ~dead).double().mean()}

    def _in_tails(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        low, high = low.to(self.stat.device), high.to(self.stat.device)
        if self.kind == "left":
            return self.stat <= low
        if self.kind == "right":
            return self.stat >= high
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):  # one tail only of a two-tailed kind
            return torch.zeros_like(self.stat, dtype=torch.bool)
        return self.stat >= (high - low) / 2  # the distance from the middle (both tails share it)

    def measure(self, interval_end: bool) -> dict[str, torch.Tensor]:
        """This step's numbers as 0-d device tensors (nothing is read back here); the inactive share
        only where an interval ends."""
        weight = self.linear.weight.detach()
        stats = self.inactive_fraction() if interval_end else {}
        stats["weight_rms"] = _rms(weight)
        if self.signal is not None:
            stats["signal"] = self.signal
        if self.linear.weight.grad is not None:
            stats["grad_rms"] = _rms(self.linear.weight.grad)  # of the step just taken
        if self.weight_before is not None and self.signal is not None:
            before = self.weight_before.float()
            stats["update_ratio"] = torch.linalg.vector_norm(weight.float() - before) / \
                torch.linalg.vector_norm(before).clamp_min(1e-30)
        if self.last_act is not None:
            act = self.last_act.float()
            stats["act_mean"], stats["act_std"] = act.mean(), act.std()
            stats["zero_share"] = (act == 0).float().mean()
            stats["spread"] = spread(act, self.output_range)
        if isinstance(self.activation, nn.PReLU):
            stats["prelu_slope"] = self.activation.weight.detach().mean()  # the mean when there is one per unit
        elif isinstance(getattr(self.activation, "beta", None), nn.Parameter):
            stats["swish_beta"] = self.activation.beta.detach()
        return stats

    def distribution(self) -> torch.Tensor | None:
        """[low, high, counts...]: a histogram of the latest batch's outputs over their range."""
        if self.last_act is None:
            return None
        act = self.last_act.float().flatten()
        low, high = act.min(), act.max()
        counts = torch.histc(act, DISTRIBUTION_BINS, low.item(), max(high.item(), low.item() + 1e-6))
        return torch.cat([torch.stack([low, high]), counts])

    def histograms(self) -> dict[str, torch.Tensor]:
        weight = self.linear.weight
        tensors = {"weights": weight.detach(), "preactivations": self.last_preact, "activations": self.last_act,
                   "weight_grads": weight.grad}
        return {name: t for name, t in tensors.items() if t is not None}


def _rms(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float().pow(2).mean().sqrt()


class LayerDiagnostics:
    """Hooks on every hidden layer of ``model``; writes through ``logger`` (a ``RunLogger``) and,
    with ``folder`` (a RunFolder), to ``diagnostics.json`` in it.

    The training loop calls ``after_step(step)`` after every optimizer step (it measures at the
    scheduled steps and prepares the next), and ``end_epoch(epoch, step)`` after each epoch.
    ``train_cfg.diagnostics``: ``step``, ``epoch``, or ``off`` (attaches nothing, nor does
    ``enabled=False``: DDP ranks other than 0, which write no logs).  ``start_step`` is where a
    resumed run continues; ``grad_scale`` (a callable) undoes fp16 loss scaling in the signal.
    Histograms are written at the end of every ``histogram_every``-th epoch.
    """

    def __init__(self, model: nn.Sequential, activation_spec, train_cfg, logger, enabled: bool = True, *,
                 steps_per_epoch: int | None = None, start_step: int = 0, folder=None, grad_scale=None):
        self.mode = train_cfg.diagnostics if enabled else "off"
        self.histogram_every = train_cfg.histogram_every
        self.logger, self.grad_scale = logger, grad_scale
        self.schedule = Schedule(self.mode, train_cfg.log_every, steps_per_epoch)
        self.folder = folder if self.mode != "off" else None  # the RunFolder that keeps diagnostics.json
        self.file = folder.path / DIAGNOSTICS_FILE if self.folder is not None else None
        self.layers: list[LayerStats] = []
        self.handles = []
        self.record = {"activation": str(activation_spec), "measurements": [], "distributions": [],
                       "epoch_ends": []}
        if self.mode == "off":
            self.histogram_every = 0
            return
        asymptotes = ACTIVATIONS[parse_activation(activation_spec)[0]].asymptotes
        output_range = asymptotes[1] - asymptotes[0] if asymptotes else None
        for block in hidden_layers(model):
            layer = LayerStats(block, output_range)
            self.layers.append(layer)
            self.handles.append(block.activation.register_forward_hook(layer.on_forward))
        self.record["widths"] = [layer.linear.weight.shape[0] for layer in self.layers]
        if start_step > 0 and self.file is not None:
            self._load_earlier(start_step)
        if start_step + 1 in self.schedule:
            self._arm()

    def after_step(self, step: int) -> None:
        """Called after every optimizer step: measures if ``step`` is scheduled, arms the next."""
        if not self.layers:
            return
        if step in self.schedule:
            self._measure(step)
        if step + 1 in self.schedule:
            self._arm()

    def at_init(self, model: nn.Module, train, val, batch_size: int, num_classes: int) -> None:
        """Step 0, before the first update: the loss and accuracy (on the validation split, or the
        training split without one), and every layer's numbers and histograms on the first
        ``batch_size`` training images, from a backward pass whose gradients are then dropped.
        The random streams and batch norm's running statistics are left as they were."""
        if not self.layers:
            return
        import torch.nn.functional as F

        from mlp.commands.evaluate import evaluate

        split = val if val is not None and len(val) else train
        result = evaluate(model, split, num_classes)
        device = train.images.device
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        grad_scale, self.grad_scale = self.grad_scale, None  # this loss is not scaled
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            self._arm()
            for layer in self.layers:
                layer.weight_before = None  # nothing moves at step 0
            x, y = train.images[:batch_size], train.labels[:batch_size]
            F.cross_entropy(model(x).float(), y).backward()
            self.record["init"] = {"loss": result["loss"], "accuracy": result["accuracy"],
                                   "split": "validation" if split is val else "training"}
            self._measure(0, interval_end=True)
            self.logger.layer_histograms(0, [layer.histograms() for layer in self.layers])
        self.grad_scale = grad_scale
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.zero_grad(set_to_none=True)
        for layer in self.layers:
            layer.reset()
        if 1 in self.schedule:
            self._arm()

    def end_epoch(self, epoch: int, step: int) -> None:
        if not self.layers:
            return
        self.record["epoch_ends"] = [s for s in self.record["epoch_ends"] if s < step] + [step]
        self._record_distribution(step)
        if self.histogram_every and epoch % self.histogram_every == 0:
            self.logger.layer_histograms(step, [layer.histograms() for layer in self.layers])
        self.logger.diagnostics_summary(epoch, summarise(self.record))
        self.logger.epoch_curves(epoch)  # a figure: it comes and goes with the diagnostics, as the others do
        self.save()

    def _arm(self) -> None:
        for layer in self.layers:
            layer.arm()

    def _measure(self, step: int, interval_end: bool | None = None) -> None:
        interval_end = self.schedule.interval_end(step) if interval_end is None else interval_end
        per_layer = [layer.measure(interval_end) for layer in self.layers]
        flat = [value for stats in per_layer for value in stats.values()]
        values = iter(torch.stack([v.double() for v in flat]).tolist())  # the one read-back
        per_layer = [{name: next(values) for name in stats} for stats in per_layer]
        scale = self.grad_scale() if self.grad_scale is not None else 1.0
        for stats in per_layer:
            if "signal" in stats:
                stats["signal"] /= scale
        by_metric = {name: [stats.get(name) for stats in per_layer]
                     for name in dict.fromkeys(n for stats in per_layer for n in stats)}
        self.logger.layer_stats(step, by_metric)
        self.record["measurements"].append({"step": step, **by_metric})
        if not any(m["step"] < step for m in self.record["measurements"]):
            self._record_distribution(step)  # how the outputs start out
        for layer in self.layers:
            if interval_end:
                layer.reset()
            layer.disarm()

    def _record_distribution(self, step: int) -> None:
        rows = [layer.distribution() for layer in self.layers]
        if any(row is None for row in rows) or any(d["step"] == step for d in self.record["distributions"]):
            return
        read = torch.stack(rows).tolist()
        self.record["distributions"].append(
            {"step": step, "layers": [{"low": r[0], "high": r[1], "counts": r[2:]} for r in read]})

    def _load_earlier(self, start_step: int) -> None:
        """A resumed run keeps what was measured up to the step it resumes from."""
        from mlp.errors import UserError
        from mlp.run.record import RunRecord

        try:
            earlier = RunRecord(self.file.parent).diagnostics()
            if not earlier:
                return
            keep = lambda items: [item for item in items if item["step"] <= start_step]
            self.record["measurements"] = keep(earlier["measurements"])
            self.record["distributions"] = keep(earlier["distributions"])
            self.record["epoch_ends"] = [s for s in earlier["epoch_ends"] if s <= start_step]
            if "init" in earlier:
                self.record["init"] = earlier["init"]
        except (UserError, KeyError, TypeError) as e:
            reason = str(e) if isinstance(e, UserError) else f"{self.file}: {type(e).__name__}"
            print(f"warning: {reason}; its earlier measurements are left out", file=sys.stderr)

    def save(self) -> None:
        if self.folder is None or not self.layers:
            return
        self.folder.write_json(DIAGNOSTICS_FILE, {**self.record, "summary": summarise(self.record)})

    def report(self) -> str:
        """A few lines for the terminal: each layer's inactive share and signal."""
        return format_report(self.record) if self.layers else ""

    def close(self) -> None:
        """Remove the hooks and write ``diagnostics.json`` once more; a second call does nothing."""
        if not self.handles:
            return
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        for layer in self.layers:
            layer.disarm()
        self.save()
