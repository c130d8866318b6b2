"""Training speed under each ``train.threads`` setting, on the machine as it is and beside busy
processes: what ``python scripts/bench.py --load N`` runs.

One worker process per setting (``1``, the usable cores, ``auto``), each started with a clean
environment (no OMP_NUM_THREADS, OMP_WAIT_POLICY, GOMP_SPINCOUNT, MKL_NUM_THREADS), so it gets
what a user who sets nothing gets: OpenMP's own wait policy, and for ``auto`` mlp's measuring
(mlp.threads: ``apply``, and the tuner told the time of every step, as mlp's training loop
does).  Each worker trains the classic MNIST MLP (784-512-10 ReLU, mlp's Adam) on random images
of MNIST's shape, on the CPU, in bursts of ``--burst`` seconds when told to.  First with nothing
added ("quiet": the machine's own load, whatever it is; the load average is reported), then
beside N busy processes (pure Python loops, one core each; "loaded"), each condition held for
all its rounds: every worker runs one burst in turn (the order rotates each round).  After each
change of condition every worker first runs one burst that is reported apart
(``first_burst_after_change``: how fast auto notices) and not counted in the medians.  The
loaders end at their deadline even if this process is killed, and are stopped at once on exit
or Ctrl-C.  One JSON object: the median samples/s of each setting in each condition, auto over
the best fixed setting, and the thread count auto was at after each of its bursts.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLEAN = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
SPIN = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"


def worker(setting: str, batch_size: int) -> None:
    """Run in a child: train in bursts, one line of "samples/s threads" per burst asked for on stdin."""
    import torch
    import torch.nn.functional as F

    from mlp import threads
    from mlp.config import load_config
    from mlp.training.optim import build_optimizer

    tuner, line = threads.apply(setting if setting == "auto" else int(setting))
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "mnist.yaml", ["train.device=cpu"])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    optimizer = build_optimizer(cfg, model)
    x, y = torch.randn(10_000, 1, 28, 28), torch.randint(0, 10, (10_000,))
    batches = torch.randperm(len(y)).split(batch_size)

    def step(idx):
        start = time.perf_counter()
        loss = F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tuner.after_step(time.perf_counter() - start, len(idx))

    for idx in batches[:20]:  # warm-up (auto's first measurement goes on into the uncounted first burst)
        step(idx)
    print(f"ready {line}", flush=True)
    done = 0
    for request in sys.stdin:
        seconds, steps, start = float(request), 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step(batches[done % len(batches)])
            done, steps = done + 1, steps + 1
        print(steps * batch_size / (time.perf_counter() - start), tuner.current, flush=True)


def _start_worker(setting: str, batch_size: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    return subprocess.Popen([sys.executable, __file__, "--worker", setting, str(batch_size)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def _start_load(n: int, seconds: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)], stderr=subprocess.DEVNULL)
            for _ in range(n)]


def _stop(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def _burst(proc: subprocess.Popen, seconds: float) -> tuple[float, int]:
    proc.stdin.write(f"{seconds}\n")
    proc.stdin.flush()
    rate, count = proc.stdout.readline().split()
    return float(rate), int(count)


def measure(load: int, rounds: int, burst: float, batch_size: int) -> dict:
    """The medians over ``rounds`` of each setting, quiet and beside ``load`` busy processes."""
    from mlp.threads import usable_cores

    cores = usable_cores()
    settings = ["1", *([str(cores)] if cores > 1 else []), "auto"]
    conditions = ("quiet", "loaded")
    samples = {(s, c): [] for s in settings for c in conditions}
    first, auto_at = {}, {c: [] for c in conditions}
    workers, loaders, lines = {}, [], {}
    load_before = os.getloadavg()
    signal.signal(signal.SIGTERM, _interrupted)  # a kill, like Ctrl-C, stops the workers and loaders first
    try:
        workers = {s: _start_worker(s, batch_size) for s in settings}
        for setting, proc in workers.items():
            ready = proc.stdout.readline()
            if not ready.startswith("ready "):
                sys.exit(f"the {setting} worker did not start (exit code {proc.wait()})")
            lines[setting] = ready[len("ready "):].strip()
        for condition in conditions:
            if condition == "loaded":  # bounded: they stop by themselves soon after the last round
                loaders = _start_load(load, (burst + 1) * len(settings) * (rounds + 1) + 30)
                time.sleep(0.5)
            for setting in settings:  # not counted: the change of condition
                first[f"{setting}/{condition}"] = round(_burst(workers[setting], burst)[0])
            for r in range(rounds):
                for setting in settings[r % len(settings):] + settings[:r % len(settings)]:
                    rate, count = _burst(workers[setting], burst)
                    samples[setting, condition].append(rate)
                    if setting == "auto":
                        auto_at[condition].append(count)
        _stop(loaders)
    finally:
        _stop(loaders)
        _stop(workers.values())
    medians = {s: {c: round(statistics.median(samples[s, c])) for c in conditions} for s in settings}
    fixed = [s for s in settings if s != "auto"]
    best = {c: max(fixed, key=lambda s: medians[s][c]) for c in conditions}
    return {"mode": "threads", "load": load, "rounds": rounds, "burst_s": burst, "batch_size": batch_size,
            "usable_cores": cores, "loadavg_1min_before": round(load_before[0], 2),
            "loadavg_1min_after": round(os.getloadavg()[0], 2), "auto": lines["auto"],
            "samples_per_s": medians,
            "best_fixed": {c: {"setting": best[c], "samples_per_s": medians[best[c]][c]} for c in best},
            "auto_over_best_fixed": {c: round(medians["auto"][c] / medians[best[c]][c], 3) for c in best},
            "auto_threads_after_each_burst": auto_at, "first_burst_after_change": first,
            "each_burst": {f"{s}/{c}": [round(v) for v in samples[s, c]] for s, c in samples}}


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    worker(sys.argv[2], int(sys.argv[3]))
