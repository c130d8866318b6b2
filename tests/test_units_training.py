"""Unit tests of the training step's arithmetic, the optimizer and schedule it builds, and the
divergence guard: the numbers an end-to-end run cannot tell apart (a dropped weight decay still
learns, a clip that never fires still finishes)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import write_config
from mlp.config import load_config
from mlp.data import normalise
from mlp.errors import Diverged, UserError
from mlp.training.distributed import check_batches_split
from mlp.training.trainer import Trainer, check_finite
from mlp.training.optim import build_optimizer, build_scheduler
from mlp.training.state import EpochTotals, RandomStreams, TrainingState


def _trainer(tmp_path, **sections) -> Trainer:
    overrides = {"model": {"width": 16}, **sections}
    return Trainer(load_config(write_config(tmp_path / "unit.yaml", overrides)), progress=False)


def _smoothed_cross_entropy(logits, labels, smoothing):
    """Label smoothing by hand: (1 - s) · CE(true class) + s · mean over classes of -log p."""
    log_p = logits.log_softmax(1)
    true = -log_p.gather(1, labels[:, None]).squeeze(1)
    return ((1 - smoothing) * true + smoothing * -log_p.mean(1)).mean()


def _hand_sgd(model, batches, lr, momentum, nesterov, weight_decay, clip, smoothing):
    """SGD steps on ``model`` written out: clip the global gradient norm, add weight decay,
    keep a momentum buffer (its first value is the gradient itself), Nesterov's look-ahead."""
    buffers = {}
    norms = []
    for x, y in batches:
        model.zero_grad()
        _smoothed_cross_entropy(model(x), y, smoothing).backward()
        params = [p for p in model.parameters()]
        norm = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
        norms.append(norm.item())
        scale = min(1.0, clip / (norm.item() + 1e-6)) if clip else 1.0
        with torch.no_grad():
            for p in params:
                d = p.grad * scale + weight_decay * p
                buf = buffers[p] = d.clone() if p not in buffers else momentum * buffers[p] + d
                p -= lr * (d + momentum * buf if nesterov else buf)
    return norms


@pytest.mark.parametrize("nesterov", [False, True])
def test_two_sgd_steps_equal_the_update_written_out_by_hand(tmp_path, nesterov):
    lr, momentum, wd, clip, smoothing = 0.3, 0.8, 0.05, 0.2, 0.1
    trainer = _trainer(tmp_path, optimizer={"name": "sgd", "lr": lr, "momentum": momentum, "nesterov": nesterov,
                                            "weight_decay": wd},
                       train={"grad_clip": clip, "label_smoothing": smoothing})
    data = trainer.data.train
    reference = copy.deepcopy(trainer.model)
    batches = [torch.arange(0, 32), torch.arange(32, 64)]
    losses = []
    for idx in batches:
        x, y = data.images[idx], data.labels[idx]
        with torch.no_grad():
            losses.append(_smoothed_cross_entropy(trainer.model(x), y, smoothing).item())
        loss, logits = trainer.train_step(idx)
        assert loss.item() == pytest.approx(losses[-1], rel=1e-5)  # the loss returned is the step's own
        assert logits.shape == (32, 10)
    norms = _hand_sgd(reference, [(data.images[i], data.labels[i]) for i in batches], lr, momentum, nesterov, wd,
                      clip, smoothing)
    assert min(norms) > 2 * clip  # the clip was in force at every step, or the test would not see it
    for (name, mine), theirs in zip(trainer.model.named_parameters(), reference.parameters()):
        assert torch.allclose(mine, theirs, atol=1e-6, rtol=1e-5), name


def test_a_step_without_clipping_or_smoothing_is_plain_sgd(tmp_path):
    trainer = _trainer(tmp_path, optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.0})
    reference = copy.deepcopy(trainer.model)
    idx = torch.arange(10, 60)
    trainer.train_step(idx)
    x, y = trainer.data.train.images[idx], trainer.data.train.labels[idx]
    F.cross_entropy(reference(x), y).backward()
    with torch.no_grad():
        for mine, theirs in zip(trainer.model.parameters(), reference.parameters()):
            assert torch.allclose(mine, theirs - 0.5 * theirs.grad, atol=1e-6)


def test_under_ddp_each_rank_weighs_its_mean_loss_by_its_share_of_the_global_batch(tmp_path):
    """DDP averages the ranks' gradients; a rank's share of a short last batch is weighed so that
    the average is the gradient of the global batch's mean loss."""
    trainer = _trainer(tmp_path, optimizer={"name": "sgd", "lr": 1.0, "momentum": 0.0})
    n, batch_size = len(trainer.data.train), trainer.cfg.train.batch_size
    last = (n - 1) // batch_size  # the last batch: 1000 - 15 * 64 = 40 images across the ranks
    global_batch = n - last * batch_size
    assert 0 < global_batch < batch_size
    reference = copy.deepcopy(trainer.model)
    trainer.world_size, trainer.state.batch = 3, last
    idx = torch.arange(0, 14)  # rank 0's share of the 40 over three ranks: 14, 13 and 13 images
    trainer.train_step(idx)
    x, y = trainer.data.train.images[idx], trainer.data.train.labels[idx]
    (F.cross_entropy(reference(x), y, reduction="sum") * 3 / global_batch).backward()
    with torch.no_grad():
        for mine, theirs in zip(trainer.model.parameters(), reference.parameters()):
            assert torch.allclose(mine, theirs - theirs.grad, atol=1e-6)


def test_augmentation_pads_with_a_black_pixel_as_normalised(tmp_path):
    trainer = _trainer(tmp_path, data={"dataset": "cifar10", "val_size": 100, "augment": True})
    black = normalise(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), trainer.data.mean, trainer.data.std, "cpu")
    assert torch.allclose(trainer.pad_value, black.flatten()) and trainer.augment_kind == "crop_flip"


def _model():
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))


def _cfg(tmp_path, **sections):
    return load_config(write_config(tmp_path / "opt.yaml", sections))


def test_every_sgd_option_lands_in_the_torch_optimizer(tmp_path):
    cfg = _cfg(tmp_path, optimizer={"name": "sgd", "lr": 0.07, "momentum": 0.6, "nesterov": True,
                                    "weight_decay": 0.002})
    optimizer = build_optimizer(cfg, _model())
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.07, 0.6, True, 0.002)
    assert len(group["params"]) == 4  # every weight and bias
    plain = build_optimizer(_cfg(tmp_path, optimizer={"name": "sgd", "momentum": 0.0}), _model())
    assert plain.param_groups[0]["nesterov"] is False and plain.param_groups[0]["momentum"] == 0.0


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_every_adam_option_lands_in_the_torch_optimizer(tmp_path, name, cls):
    cfg = _cfg(tmp_path, optimizer={"name": name, "lr": 0.004, "betas": [0.8, 0.95], "weight_decay": 0.03})
    optimizer = build_optimizer(cfg, _model())
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert (group["lr"], tuple(group["betas"]), group["weight_decay"]) == (0.004, (0.8, 0.95), 0.03)


def _rates(cfg, steps_per_epoch):
    optimizer = torch.optim.SGD(_model().parameters(), lr=cfg.optimizer.lr)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    rates = []
    for _ in range(cfg.train.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return rates


def test_the_schedules_give_the_rates_they_promise(tmp_path):
    constant = _cfg(tmp_path, optimizer={"name": "sgd", "lr": 0.1})
    assert _rates(constant, 4) == [0.1] * 8
    warm = _rates(_cfg(tmp_path, optimizer={"name": "sgd", "lr": 0.1}, scheduler={"warmup_epochs": 1.0}), 4)
    # a linear ramp over the first epoch's 4 steps, from lr / 4 up to lr, then lr
    assert warm == pytest.approx([0.025, 0.04375, 0.0625, 0.08125, 0.1, 0.1, 0.1, 0.1])
    step = _rates(_cfg(tmp_path, optimizer={"name": "sgd", "lr": 0.1}, train={"epochs": 3},
                       scheduler={"name": "step", "step_size": 1, "gamma": 0.5}), 4)
    assert step == pytest.approx([0.1] * 4 + [0.05] * 4 + [0.025] * 4)
    cosine = _rates(_cfg(tmp_path, optimizer={"name": "sgd", "lr": 0.1}, scheduler={"name": "cosine", "min_lr": 0.01}), 4)
    assert cosine[0] == 0.1 and cosine[4] == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi / 2)) / 2)
    # after a warm-up, the cosine spans the remaining steps: 4 of the 8, from lr down towards 0
    warm_cosine = _rates(_cfg(tmp_path, optimizer={"name": "sgd", "lr": 0.1},
                              scheduler={"name": "cosine", "warmup_epochs": 1.0}), 4)
    assert warm_cosine[4:] == pytest.approx([0.1 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)])
    one = _rates(_cfg(tmp_path, optimizer={"name": "sgd", "lr": 0.1}, scheduler={"name": "onecycle", "max_lr": 0.4,
                                                                                  "pct_start": 0.5}), 4)
    assert max(one) == pytest.approx(0.4) and one.index(max(one)) in (3, 4)


def test_the_divergence_guard_names_the_first_bad_step():
    check_finite(torch.tensor([1.0, 2.0]), 7)  # finite: nothing happens
    with pytest.raises(Diverged) as bad:
        check_finite(torch.tensor([0.5, 0.4, math.inf, math.nan]), 11)
    assert "the loss is inf at step 13;" in str(bad.value)
    with pytest.raises(Diverged) as first:
        check_finite(torch.tensor([math.nan]), 1)
    assert "the loss is nan at step 1;" in str(first.value)


def test_losses_left_at_an_epochs_end_are_checked_with_their_own_steps(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.state.step = 12  # the pending losses are those of steps 10, 11 and 12
    trainer.state.pending = [torch.tensor(0.3), torch.tensor(math.nan), torch.tensor(0.2)]
    with pytest.raises(Diverged, match="the loss is nan at step 11;"):
        trainer.check_unlogged_losses()


def test_the_pending_losses_start_at_the_step_after_the_last_logged_one():
    state = TrainingState(RandomStreams(0, 0, torch.device("cpu")))
    state.step, state.pending = 12, [torch.tensor(1.0), torch.tensor(2.0)]
    window, first = state.take_pending()
    assert first == 11 and window.tolist() == [1.0, 2.0] and state.pending == []


def test_every_rank_must_get_images_of_every_global_batch():
    check_batches_split(964, 64, 4)  # the last batch holds 4 images: one per rank
    check_batches_split(1000, 4, 4)  # a global batch of one image per rank
    check_batches_split(968, 64, 4, per_rank=2)  # batch norm: two per rank
    with pytest.raises(UserError, match="last batch of each epoch holds 3 of the 963"):
        check_batches_split(963, 64, 4)
    with pytest.raises(UserError, match="set train.batch_size to at least 4"):
        check_batches_split(1000, 3, 4)
    with pytest.raises(UserError, match="holds 4 of the 964 .* too few for 4 processes with batch norm"):
        check_batches_split(964, 64, 4, per_rank=2)
    with pytest.raises(UserError, match="at least 8"):
        check_batches_split(1000, 6, 4, per_rank=2)


def test_finishing_an_epoch_records_it_and_starts_the_next_from_zero():
    state = TrainingState(RandomStreams(0, 0, torch.device("cpu")))
    state.batch, state.carried = 16, EpochTotals(loss_sum=9.5, correct=30, seen=40, time=2.0)  # a resumed epoch
    torch.randperm(10, generator=state.streams.data)  # the epoch's order drawn
    state.finish_epoch({"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.2}, improved=True)
    assert (state.epoch, state.batch, state.carried) == (1, 0, EpochTotals())
    assert state.best == {"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.2}
    assert torch.equal(state.streams.data_epoch_start, state.streams.data.get_state())  # the next order's start
    state.finish_epoch({"epoch": 2, "val_accuracy": 0.4, "val_loss": 1.5}, improved=False)
    assert state.best["epoch"] == 1 and [r["epoch"] for r in state.history] == [1, 2] and state.epoch == 2
