"""Data-parallel training across processes launched by torchrun.

torchrun starts one process per GPU (or several on a CPU) and tells each, through the
environment, its ``RANK`` among ``WORLD_SIZE`` processes and its ``LOCAL_RANK`` on this
node.  ``process_group`` joins them (NCCL on CUDA, gloo on the CPU); the training loop
then asks ``rank_and_world_size`` and uses the small collectives below.  Without torchrun
(or with one process) nothing here does anything and training runs as a single process.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable

import torch
import torch.distributed as dist

from mlp.errors import UserError


def launched_world_size() -> int:
    """How many processes torchrun started for this run (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextmanager
def process_group(device_name: str):
    """Join the other ranks for the block when torchrun launched more than one process.

    ``device_name`` is ``train.device``: ``cpu`` uses gloo; ``cuda`` (or ``auto`` on a
    machine with CUDA) uses NCCL and makes ``cuda:LOCAL_RANK`` this process's current device.
    """
    if launched_world_size() == 1:
        yield
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    if device_name == "mps":
        raise UserError("train.device 'mps' cannot train across processes; use cpu or cuda under torchrun")
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if device_name.startswith("cuda:"):
            raise UserError(f"train.device is '{device_name}', but under torchrun each process uses "
                            "cuda:LOCAL_RANK; set train.device to cuda or auto")
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise UserError(f"process {local_rank} on this node needs GPU {local_rank}, but there are "
                            f"{torch.cuda.device_count()}; give torchrun --nproc-per-node at most that many")
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def launched_rank() -> int:
    """This process's rank among those torchrun started (0 without torchrun), before any group is joined."""
    return int(os.environ.get("RANK", "0"))


def rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_batches_split(n_train: int, batch_size: int, world_size: int, per_rank: int = 1) -> None:
    """Every process must get at least ``per_rank`` images of every global batch, the last one included
    (two with batch norm, which cannot train on one)."""
    need = per_rank * world_size
    if batch_size < need:
        raise UserError(f"train.batch_size {batch_size} is the global batch, split over {world_size} processes; "
                        f"set train.batch_size to at least {need} (a multiple of {world_size} splits evenly) "
                        "or launch fewer processes")
    last = n_train % batch_size
    if 0 < last < need:
        raise UserError(f"the last batch of each epoch holds {last} of the {n_train} training images "
                        f"(train.batch_size {batch_size}), too few for {world_size} processes"
                        + (" with batch norm" if per_rank > 1 else "") + "; change "
                        "train.batch_size or data.val_size, or launch fewer processes")


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only and hand its result (or its UserError) to every rank."""
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return fn()
    box: list[Any] = [None]
    if rank == 0:
        try:
            box[0] = ("ok", fn())
        except UserError as e:
            box[0] = ("error", str(e))
    dist.broadcast_object_list(box, src=0)
    outcome, value = box[0]
    if outcome == "error":
        raise UserError(value)
    return value


def sum_over_ranks(device: torch.device, *values):
    """Each value (a number or a one-element tensor) summed over all ranks, in its own type."""
    packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    dist.all_reduce(packed)
    return [total.to(v.dtype) if isinstance(v, torch.Tensor) else type(v)(total.item())
            for v, total in zip(values, packed)]


def average_(tensor: torch.Tensor) -> None:
    """Replace ``tensor`` by its mean over all ranks (gloo has no AVG, so sum and divide)."""
    dist.all_reduce(tensor)
    tensor.div_(dist.get_world_size())


def agree_on_stop(received: int | None, device: torch.device) -> int | None:
    """The stop signal any rank has received (the highest number if several), or None.

    Every rank calls this at the same step, so all of them stop together; a rank that
    stopped alone would leave the others waiting in the next gradient all-reduce.
    """
    flag = torch.tensor([received or 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None
