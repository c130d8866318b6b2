"""The optimizer and the learning-rate schedule a config asks for.

They live apart from the training loop so that benchmarks and other tools build exactly what
``mlp train`` builds without importing the loop.
"""

from __future__ import annotations

import torch

from mlp.config import Config


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer, fused into one kernel per step where torch has one for the device."""
    o = cfg.optimizer
    if o.name == "sgd":
        cls, kwargs = torch.optim.SGD, dict(momentum=o.momentum, nesterov=o.nesterov)
    else:
        cls, kwargs = (torch.optim.Adam if o.name == "adam" else torch.optim.AdamW), dict(betas=o.betas)
    try:
        return cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device or dtype
        return cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, **kwargs)


def build_scheduler(cfg: Config, optimizer, steps_per_epoch: int):
    """A scheduler stepped once per optimizer step, or None for a constant rate."""
    s, sched = cfg.scheduler, torch.optim.lr_scheduler
    total = cfg.train.epochs * steps_per_epoch
    if s.name == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=s.max_lr or cfg.optimizer.lr, total_steps=total,
                                pct_start=s.pct_start)
    warmup = min(round(s.warmup_epochs * steps_per_epoch), total - 1)
    if s.name == "step":
        main = sched.StepLR(optimizer, step_size=s.step_size * steps_per_epoch, gamma=s.gamma)
    elif s.name == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1), eta_min=s.min_lr)
    else:
        main = None
    if warmup <= 0:
        return main
    ramp = sched.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup)
    return sched.SequentialLR(optimizer, [ramp, main or sched.ConstantLR(optimizer, factor=1.0, total_iters=0)],
                              milestones=[warmup])
