"""Time cost of the per-layer diagnostics: training steps with them on against off.

    MLP_DATA_ROOT=/path/to/data python scripts/bench_diagnostics.py -c configs/mnist.yaml

Blocks of training steps with the hooks attached and without alternate in one process, so a
shared or throttled machine slows both alike; it prints each round's ratios and the medians,
of wall-clock time and of this process's CPU time (steadier on a shared CPU; run it with
``--threads 1`` there, so that no time goes to threads waiting for each other).
The steps are the training loop's own (forward, loss, backward, optimizer step), and the
diagnostics measure and write to TensorBoard on their schedule as in a long run (every
``train.log_every`` steps and at each epoch's end; the blocks follow one step count, after a
warm-up block, so the dense start at steps 1, 2, 4, ..., a one-off cost of a few measurements
per run, is not in the figures).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from mlp.config import load_config
from mlp.data import epoch_batches, load_data
from mlp.device import pick_device
from mlp.observe.diagnostics import LayerDiagnostics
from mlp.model import build_model
from mlp.observe.tensorboard import RunLogger
from mlp.training.optim import build_optimizer

from bench import positive_int, run  # this folder's bench.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default="configs/mnist.yaml")
    parser.add_argument("-s", "--set", dest="overrides", action="append", default=[], help="key=value")
    parser.add_argument("--steps", type=positive_int, default=300, help="training steps per block")
    parser.add_argument("--rounds", type=positive_int, default=5, help="pairs of blocks (on, off)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(args.config, args.overrides + ["train.diagnostics=step"])
    device = pick_device(cfg.train.device)
    torch.manual_seed(cfg.seed)
    data = load_data(cfg.data, device, cfg.seed)
    model = build_model(cfg.model, data.input_shape, len(data.classes)).to(device)
    optimizer = build_optimizer(cfg, model)
    batches = epoch_batches(len(data.train), cfg.train.batch_size, torch.Generator().manual_seed(0), device)
    batches = batches[: len(batches) - 1]  # all of one size
    position = 0

    def block(diagnostics: LayerDiagnostics | None) -> tuple[float, float]:
        nonlocal position
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        for step in range(1, args.steps + 1):
            idx = batches[position % len(batches)]
            position += 1  # the step count of one long run, which the diagnostics' schedule follows
            x, y = data.train.images.index_select(0, idx), data.train.labels.index_select(0, idx)  # as fit does
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if diagnostics is not None:
                diagnostics.after_step(position)  # measures at its scheduled steps, as in fit
            if step % cfg.train.log_every == 0:
                loss.item()  # the loop reads the loss back at every log point either way
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started, time.process_time() - cpu_started

    with tempfile.TemporaryDirectory() as folder:
        logger = RunLogger(folder)
        block(None)  # warm-up
        wall_ratios, cpu_ratios = [], []
        for r in range(args.rounds):
            diagnostics = LayerDiagnostics(model, cfg.model.activation, cfg.train, logger,
                                           steps_per_epoch=len(batches) + 1, start_step=position)
            on, cpu_on = block(diagnostics)
            diagnostics.close()
            off, cpu_off = block(None)
            wall_ratios.append(on / off)
            cpu_ratios.append(cpu_on / cpu_off)
            print(f"round {r + 1}: wall on {on:.2f}s off {off:.2f}s ratio {on / off:.3f}   "
                  f"cpu on {cpu_on:.2f}s off {cpu_off:.2f}s ratio {cpu_on / cpu_off:.3f}", flush=True)
        logger.close()
    print(f"{cfg.name}: {args.steps} steps of batch {cfg.train.batch_size} on {device} "
          f"({torch.get_num_threads()} threads); diagnostics on/off time ratio, median of {args.rounds}: "
          f"wall {statistics.median(wall_ratios):.3f}, cpu {statistics.median(cpu_ratios):.3f}")


if __name__ == "__main__":
    run(main)
