"""Training throughput of mlp beside the plain PyTorch pipeline it replaces, in one process.

    python scripts/bench.py [--device cpu|cuda|auto] [--epochs N] [--batch-size B] [--set KEY=VALUE ...]
    python scripts/bench.py --time-to-accuracy 0.98
    python scripts/bench.py --load N [--rounds R] [--burst S] [--batch-size B]

Three measurements on the same machine, data (MNIST from MLP_DATA_ROOT or ./data), model
(784-512-10 ReLU) and recipe (Adam, lr 0.001, cross-entropy):

  a  plain:   torchvision MNIST + ToTensor/Normalize, DataLoader(shuffle, 2 workers)
  b  mlp:     mlp's own training loop (fit) with the default logging and diagnostics
  c  limit:   forward, backward and optimizer step over the same images as device tensors, nothing else

It prints one JSON line: the median samples/s of each over --rounds rounds and the ratios b/a
and b/c of the medians.  A shared machine (a VM whose neighbours take CPU time) makes any one
measurement noisy, so every round measures a, c, b, c in turn: a busy spell hits all three, and
c is taken on both sides of b.  Beside the ratio of medians it prints the median of the
per-round ratios b/c (each b against the mean of the two c around it), which pairs
measurements taken seconds apart.  Throughput is training
samples over the time spent in the training loop of each epoch (for b, the train_time_s that
mlp records; the wall time of the whole fit(), with data loading, validation, checkpoints and
the final test, is printed beside as mlp_fit_wall_s).  With --time-to-accuracy it instead times, from process start to exit,
`mlp train --config configs/mnist-fast.yaml`, and the plain pipeline until its test accuracy
reaches the target.  With --load N it instead measures each train.threads setting (1, the
usable cores, auto) on the machine as it is and beside N busy processes (scripts/bench_threads.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


# What --set may change for mlp's run (b): how it runs the shared recipe, not the recipe.
BENCH_SETTABLE = ("train.precision", "train.compile", "train.diagnostics", "train.log_every",
                  "train.histogram_every", "train.eval_batch_size")


def classic_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))


def plain_loaders(root: Path, batch_size: int):
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = datasets.MNIST(str(root), train=True, transform=tf)
    test = datasets.MNIST(str(root), train=False, transform=tf)
    return (torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=2),
            torch.utils.data.DataLoader(test, batch_size=1000, num_workers=2))


def plain_epoch(model, optimizer, loader, device) -> tuple[int, float]:
    model.train()
    seen, start = 0, time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        seen += len(y)
    _sync(device)
    return seen, time.perf_counter() - start


@torch.no_grad()
def plain_accuracy(model, loader, device) -> float:
    model.eval()
    correct = sum((model(x.to(device)).argmax(1) == y.to(device)).sum().item() for x, y in loader)
    return correct / len(loader.dataset)


def bench_plain(root, device, epochs, batch_size) -> float:
    torch.manual_seed(0)
    train, _ = plain_loaders(root, batch_size)
    model = classic_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen = elapsed = 0.0
    for _ in range(epochs):
        n, t = plain_epoch(model, optimizer, train, device)
        seen, elapsed = seen + n, elapsed + t
    return seen / elapsed


def bench_mlp(device, epochs, batch_size, overrides=()) -> tuple[float, float]:
    """mlp's loop through fit(): samples/s over its recorded train_time_s, and fit's whole wall time."""
    from mlp.config import load_config
    from mlp.training.loop import fit

    cfg = load_config(ROOT / "configs" / "mnist.yaml",
                      [f"train.epochs={epochs}", f"train.batch_size={batch_size}", f"train.device={device}",
                       *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON line
            run = fit(cfg, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - start
        history = json.loads((run / "metrics.json").read_text())["epochs"]
    seen = sum(r["samples_per_s"] * r["train_time_s"] for r in history)
    return seen / sum(r["train_time_s"] for r in history), wall


def bench_limit(data, cfg, device, epochs, batch_size) -> float:
    """The arithmetic alone: the same steps over the same normalised images already on the device
    (``data``, loaded once by main), with mlp's optimizer for ``cfg`` (the configured Adam, fused
    where torch has a fused kernel), and nothing else."""
    from mlp.training.optim import build_optimizer

    x, y, n = data.train.images, data.train.labels, len(data.train)
    torch.manual_seed(0)
    model = classic_model().to(device)
    optimizer = build_optimizer(cfg, model)

    def step(idx):
        loss = F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for idx in torch.randperm(n, device=device)[: 20 * batch_size].split(batch_size):  # warm-up
        step(idx)
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(n, device=device).split(batch_size):
            step(idx)
    _sync(device)
    return epochs * n / (time.perf_counter() - start)


def time_to_accuracy(root, device, target, max_epochs=30) -> dict:
    # mlp: the whole process, start to exit, as a user runs it
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mlp", "train", "--config", str(ROOT / "configs" / "mnist-fast.yaml"),
                               "--run-dir", str(Path(tmp) / "run"), "--no-progress", "--set", f"train.device={device}"],
                              capture_output=True, text=True)
        mlp_wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"mlp train failed:\n{done.stderr}")
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
        mlp_acc = metrics["test"]["accuracy"]
    # where the fast recipe's time went: fit's phases as it recorded them, and the rest of the
    # process (interpreter start, imports of torch and mlp, exit)
    phases = dict(metrics["timings"])
    phases["imports_and_exit"] = round(mlp_wall - sum(phases.values()), 2)
    # plain: from the start of data loading, test accuracy checked after every epoch (not timed)
    torch.manual_seed(0)
    start = time.perf_counter()
    train, test = plain_loaders(root, 64)
    model = classic_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    plain_time, plain_acc, epochs = None, 0.0, 0
    checking = 0.0
    while epochs < max_epochs:
        plain_epoch(model, optimizer, train, device)
        epochs += 1
        t = time.perf_counter()
        plain_acc = plain_accuracy(model, test, device)
        checking += time.perf_counter() - t
        if plain_acc >= target:
            plain_time = time.perf_counter() - start - checking
            break
    return {"target": target, "mlp_fast_wall_s": round(mlp_wall, 2), "mlp_fast_test_accuracy": mlp_acc,
            "mlp_fast_precision": metrics["precision"], "mlp_fast_phases_s": phases,
            "plain_s": round(plain_time, 2) if plain_time else None, "plain_epochs": epochs,
            "plain_test_accuracy": plain_acc,
            "speedup": round(plain_time / mlp_wall, 2) if plain_time else None}


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive; give 1 or more")
    return value


def accuracy_target(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is outside (0, 1]; give a test accuracy such as 0.98")
    return value


def main() -> None:
    from mlp.device import pick_device

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                        help="auto: cuda where there is one, else cpu")
    parser.add_argument("--epochs", type=positive_int, default=1)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--rounds", type=positive_int, default=3, help="measure a, b, c in turn this many times")
    parser.add_argument("--time-to-accuracy", type=accuracy_target, default=None, metavar="ACC",
                        help="a test accuracy in (0, 1]")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for mlp's run (b) only, e.g. train.precision=bf16 or "
                             "train.compile=reduce-overhead; repeatable")
    parser.add_argument("--load", type=positive_int, default=None, metavar="N",
                        help="measure the thread settings quiet and beside N busy processes")
    parser.add_argument("--burst", type=float, default=2.0, metavar="S", help="with --load: seconds per measurement")
    args = parser.parse_args()
    if args.load is not None:
        sys.path.insert(0, str(ROOT / "scripts"))
        from bench_threads import measure

        print(json.dumps(measure(args.load, args.rounds, args.burst, args.batch_size)))
        return
    from mlp.config import load_config
    from mlp.data import ensure_files, load_data, resolve_root

    # No CUDA here for --device cuda: one line now, not a traceback from inside .to("cuda").
    device = pick_device(args.device, "--device").type

    # a, b and c share the model, recipe, data, batch size and device: --set may change only how
    # mlp runs that recipe.  A bad one fails now, not after round one's a.
    for item in args.set:
        if item.split("=")[0].strip() not in BENCH_SETTABLE:
            parser.error(f"--set {item}: only {', '.join(BENCH_SETTABLE)} can change here "
                         "(the three loops share everything else)")
    if args.set and args.time_to_accuracy is not None:
        parser.error("--set applies to the throughput measurement, not to --time-to-accuracy "
                     "(which runs configs/mnist-fast.yaml as it is)")
    cfg = load_config(ROOT / "configs" / "mnist.yaml", [*args.set, f"train.device={device}"])
    if cfg.train.precision == "fp16" and device != "cuda":
        parser.error("--set train.precision=fp16 needs --device cuda")

    root = resolve_root(os.environ.get("MLP_DATA_ROOT", "data"))
    ensure_files("mnist", root, download=False)
    info = {"device": device, "threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.time_to_accuracy is not None:
        print(json.dumps({**info, **time_to_accuracy(root, device, args.time_to_accuracy)}))
        return
    # c's images, read and normalised once (as fit does); --set changes only train.*, not data or optimizer
    data = load_data(cfg.data, torch.device(device), cfg.seed)
    # The machine may be shared (a VM's CPU time can be taken by its neighbours), so the three
    # are measured in turn, round after round, and the medians are compared.
    rounds = {"plain": [], "mlp": [], "limit": [], "fit_wall": [], "paired": []}
    for _ in range(args.rounds):
        rounds["plain"].append(bench_plain(root, device, args.epochs, args.batch_size))
        before = bench_limit(data, cfg, device, args.epochs, args.batch_size)
        b, wall = bench_mlp(device, args.epochs, args.batch_size, args.set)
        after = bench_limit(data, cfg, device, args.epochs, args.batch_size)
        rounds["mlp"].append(b)
        rounds["fit_wall"].append(wall)
        rounds["limit"] += [before, after]
        rounds["paired"].append(b / ((before + after) / 2))
    a, b, c = (statistics.median(rounds[k]) for k in ("plain", "mlp", "limit"))
    print(json.dumps({**info, "epochs": args.epochs, "batch_size": args.batch_size, "rounds": args.rounds,
                      "mlp_overrides": args.set,
                      "plain_samples_per_s": round(a), "mlp_samples_per_s": round(b), "limit_samples_per_s": round(c),
                      "mlp_over_plain": round(b / a, 2), "mlp_over_limit": round(b / c, 3),
                      "mlp_over_limit_paired": round(statistics.median(rounds["paired"]), 3),
                      "mlp_fit_wall_s": round(statistics.median(rounds["fit_wall"]), 2),
                      "each_round": {k: [round(v) for v in rounds[k]] for k in ("plain", "mlp", "limit")}}))


def run(entry) -> None:
    """Run a benchmark's ``main``; a user error (bad --set, missing data) is one line and exit 2."""
    from mlp.errors import UserError

    try:
        entry()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C or a kill: the busy processes and workers are already stopped
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run(main)
