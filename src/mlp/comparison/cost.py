"""What one training step costs with each activation, measured so that the machine's noise
hits every activation alike.

Timing separate trainings cannot rank activations on a shared machine: one run meets a quiet
minute, the next a busy one, and the difference is the load, not the activation.  Here every
network is built in this one process and timed in interleaved rounds: each round times a few
steps (forward, backward, optimizer step) of every network, in an order shuffled per round, on
the same random batch.  Within a round all networks meet nearly the same load, so the ratio of
two networks' times *in the same round* is what the comparison rests on; over the rounds those
ratios give a median and a spread.  A difference is "within the noise" when the middle half of
the ratios (first to third quartile) contains 1.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

ROUNDS = 15  # rounds of interleaved timing
STEPS_PER_ROUND = 10  # steps of each network timed in one round
WARMUP_STEPS = 3  # untimed steps of each network first (allocations, kernel selection)


def measure(configs: dict[str, Any], rounds: int = ROUNDS, steps: int = STEPS_PER_ROUND,
            warmup: int = WARMUP_STEPS, seed: int = 0) -> dict[str, Any]:
    """Seconds per training step of each ``label → mlp.config.Config``'s network, in interleaved rounds.

    Every network gets the same random batch (``train.batch_size`` images of the dataset's
    shape) on its config's device, in fp32 and without ``torch.compile`` (the activation's own
    cost, not a precision's or a compiler's); the output layer has the dataset's class count
    where it is known without reading the data (the MNIST family), else 10, alike for all.
    Returns ``{"device", "batch_size", "rounds", "steps_per_round", "per_step_s": {label: [one
    time per round]}, "median_s": {label: s}}``.
    """
    import torch
    import torch.nn.functional as F

    from mlp.data import DATASETS
    from mlp.device import pick_device
    from mlp.model import build_model
    from mlp.training.optim import build_optimizer

    first = next(iter(configs.values()))
    device = pick_device(first.train.device)
    shape = DATASETS[first.data.dataset].input_shape
    batch = first.train.batch_size
    classes = len(DATASETS[first.data.dataset].classes) or 10
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=generator).to(device)
    y = torch.randint(0, classes, (batch,), generator=generator).to(device)
    nets = {}
    for label, cfg in configs.items():
        torch.manual_seed(seed)
        model = build_model(cfg.model, shape, classes).to(device).train()
        nets[label] = (model, build_optimizer(cfg, model))

    def run(label: str, n: int) -> float:
        model, optimizer = nets[label]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) / n

    for label in nets:
        run(label, warmup)
    order = list(nets)
    shuffle = random.Random(seed)
    per_step: dict[str, list[float]] = {label: [] for label in nets}
    for _ in range(rounds):
        shuffle.shuffle(order)
        for label in order:
            per_step[label].append(run(label, steps))
    return {"device": str(device), "batch_size": batch, "rounds": rounds, "steps_per_round": steps,
            "per_step_s": per_step, "median_s": {k: statistics.median(v) for k, v in per_step.items()}}


def paired_ratios(timing: dict[str, Any], label: str, base: str) -> list[float] | None:
    """``label``'s time over ``base``'s, one ratio per round (both timed in that round), or None."""
    times = timing.get("per_step_s") or {}
    a, b = times.get(label), times.get(base)
    if not a or not b or len(a) != len(b) or any(t <= 0 for t in b):
        return None
    return [x / y for x, y in zip(a, b)]


def ratio_spread(ratios: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) of the per-round ratios."""
    if len(ratios) == 1:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return q1, median, q3
