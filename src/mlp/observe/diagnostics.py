"""What happens inside each hidden layer while the model trains, in numbers that compare
across layers and across activations.

Per hidden layer ``i`` (counted from 1, next to the input; the module ``hidden<i-1>``):

- **signal**: the backpropagated gradient reaching the layer, as the root mean square over the
  batch's examples and the layer's units of ∂ℓ/∂z, where z is the output of ``hidden<i-1>.linear``
  (the pre-activation) and ℓ each example's own loss.  Per element and per example, so layers of
  different widths and runs with different batch sizes compare.
- **inactive**: the share of units whose input stayed, on every training example of the
  interval (the last ``train.log_every`` steps, or the epoch), in a flat tail of the activation, where its derivative is at most 0.01 (the unit
  passes back at most 1% of the gradient arriving at its output).  For the ReLU family that is a
  dead unit (never a positive input: relu, relu6's lower side, leaky_relu's default slope of
  0.01, a PReLU slope that shrank to 0.01); for sigmoid, tanh, softsign, relu6 a saturated one
  (stuck near an asymptote); elu, selu, gelu, silu, softplus, mish, hardswish have a flat
  negative tail too.  Activations without a flat tail (identity, PReLU's 0.25) have none.
- **grad_rms**, **weight_rms**: root mean square per element of the weight gradient (of the
  batch's mean loss, what the optimizer sees) and of the weights; **update_ratio**:
  ‖W after the step − W before‖ / ‖W before‖; **act_mean**, **act_std** of the layer's outputs.

When: at steps 1, 2, 4, 8, ... below ``train.log_every``, then every ``log_every`` steps, and at
the last step of every epoch (``train.diagnostics: step``); or only at epoch ends (``epoch``).
The inactive share is measured where an interval ends (every ``log_every`` steps, or each epoch).

Cost: a forward hook on each ``hidden<i>.activation`` folds one number per unit per step into a
running statistic on the device (the largest input, or the smallest distance from the middle of
the activation's flat tails: one or two small reductions), because "inactive over an interval"
needs every batch.  Everything else happens only at the measured steps: the step before one,
a hook on each ``hidden<i>.linear`` catches the gradient of its output in the backward pass, and
the weights are copied to measure the update; the numbers come back to the host in one
transfer.  Under ``torch.compile`` the per-step hook is traced once; the capture hooks exist only
around measured steps, so the graph is not recompiled per step.  The hooks skip eval mode.

Each run also keeps ``diagnostics.json`` in its folder (the measurements, the distribution of
each layer's outputs at the first step and at every epoch end, and a summary), read by
``mlp compare`` and ``mlp runs``.
"""

from __future__ import annotations

import copy
import math
import sys
from typing import Any

import torch
from torch import nn

from mlp.model import hidden_layers

FLAT_SLOPE = 0.01  # a unit whose activation's derivative stays at or below this is inactive
TAIL_RANGE, TAIL_POINTS = 60.0, 24001  # where flat tails are looked for: [-60, 60] in steps of 0.005
DISTRIBUTION_BINS = 60
DIAGNOSTICS_FILE = "diagnostics.json"


def flat_tails(activation: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)``: the activation is flat (|f'| ≤ 0.01) for inputs ≤ low and for inputs ≥ high;
    -inf / +inf where it has no such tail.  One value, or one per unit for a per-unit PReLU."""
    if isinstance(activation, nn.PReLU):  # f' is the slope below 0: flat when the slope is
        slope = activation.weight.detach().float().cpu()
        return torch.where(slope.abs() <= FLAT_SLOPE, 0.0, -math.inf), torch.full_like(slope, math.inf)
    module = copy.deepcopy(activation).cpu().double()
    z = torch.linspace(-TAIL_RANGE, TAIL_RANGE, TAIL_POINTS, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(module(z).sum(), z)
    steep = (slope.abs() > FLAT_SLOPE * (1 + 1e-9)).nonzero().flatten()
    if len(steep) == 0:  # flat everywhere: a constant, no tail to speak of
        return torch.tensor([-math.inf]), torch.tensor([math.inf])
    first, last = int(steep[0]), int(steep[-1])
    # rounded, so that a tail ending at 0 ends at 0.0 and not at linspace's -3e-15
    low = round(z[first - 1].item(), 6) if first > 0 else -math.inf
    high = round(z[last + 1].item(), 6) if last < TAIL_POINTS - 1 else math.inf
    return torch.tensor([low]), torch.tensor([high])


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

    def __init__(self, block: nn.Sequential):
        self.linear, self.activation = block.linear, block.activation
        self.low, self.high = flat_tails(self.activation)
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

    def inactive_fraction(self) -> torch.Tensor:
        if self.kind is None or not self.trained:
            return torch.zeros((), device=self.linear.weight.device)
        if self.learnable:  # a PReLU slope or a learnable Swish β moves the tails
            self.low, self.high = flat_tails(self.activation)
        low, high = self.low.to(self.stat.device), self.high.to(self.stat.device)
        if self.kind == "left":
            inactive = self.stat <= low
        elif self.kind == "right":
            inactive = self.stat >= high
        else:
            inactive = self.stat >= (high - low) / 2
        return inactive.double().mean()

    def measure(self, interval_end: bool) -> dict[str, torch.Tensor]:
        """This step's numbers as 0-d device tensors (nothing is read back here); the inactive share
        only where an interval ends."""
        weight = self.linear.weight.detach()
        stats = {"inactive": self.inactive_fraction()} if interval_end else {}
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
            stats["act_mean"], stats["act_std"] = self.last_act.float().mean(), self.last_act.float().std()
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
        for block in hidden_layers(model):
            layer = LayerStats(block)
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

    def _measure(self, step: int) -> None:
        interval_end = self.schedule.interval_end(step)
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


def measured(record: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The measurements that have ``key`` (signal, inactive, ...) for every layer, in step order."""
    return [m for m in record.get("measurements") or [] if m.get(key) and None not in m[key]]


def summarise(record: dict[str, Any]) -> dict[str, Any]:
    """What a run's diagnostics come to: per layer the largest inactive share of any interval, and
    the signal of layer 1 over that of the last hidden layer at the first and the latest measurement."""
    with_inactive, with_signal = measured(record, "inactive"), measured(record, "signal")
    inactive_max = [max(column) for column in zip(*(m["inactive"] for m in with_inactive))]

    def ratio(m):
        first, last = m["signal"][0], m["signal"][-1]
        return first / last if last > 0 else None

    return {
        "inactive_max": inactive_max,
        "largest_inactive": max(inactive_max) if inactive_max else None,
        "signal_ratio": {"first": ratio(with_signal[0]) if with_signal else None,
                         "last": ratio(with_signal[-1]) if with_signal else None},
        "signal_steps": {"first": with_signal[0]["step"] if with_signal else None,
                         "last": with_signal[-1]["step"] if with_signal else None},
    }


def format_report(record: dict[str, Any]) -> str:
    """Per hidden layer: the inactive share in the last interval and at its largest, the signal at
    the first and at the last measured step."""
    signals, inactive = measured(record, "signal"), measured(record, "inactive")
    if not signals:
        return ""
    first, last = signals[0], signals[-1]
    depth = len(first["signal"])
    now = inactive[-1]["inactive"] if inactive else [None] * depth
    peaks = summarise(record)["inactive_max"] or [None] * depth
    share = lambda v: "-" if v is None else f"{v:.1%}"
    header = ["layer", "inactive", "at most", f"signal step {first['step']}", f"signal step {last['step']}"]
    rows = [[str(i), share(a), share(b), f"{s0:.2e}", f"{s1:.2e}"]
            for i, (a, b, s0, s1) in enumerate(zip(now, peaks, first["signal"], last["signal"]), 1)]
    from mlp.tables import text_table

    return ("layers   per hidden layer, 1 next to the input (docs/diagnostics.md: how to read them)\n"
            + text_table(header, rows, rule=False, indent="         ", right=True))
