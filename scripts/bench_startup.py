"""The fast recipe from process start to exit, beside the import floor, measured in turn.

    python scripts/bench_startup.py [--rounds R] [--config configs/mnist-fast.yaml]

Each round runs, one after the other, ``python -c "import torch, torch._dynamo"`` (the floor:
every torch optimizer imports torch._dynamo when it is built, so no training process starts
faster), the same with Python's garbage collector paused (as ``mlp train`` imports them,
mlp/imports.py: the floor of a process that imports as mlp does) and ``mlp train -c
configs/mnist-fast.yaml`` into a temporary folder, all with the
environment cleaned of thread settings (OMP_NUM_THREADS, OMP_WAIT_POLICY, ...), as a user who
sets nothing runs them.  It prints one JSON line: the median wall time of each, their ratio
(and the median of the per-round ratios, which pair runs seconds apart), the same for CPU time
(user + system, which a busy machine inflates less than wall time), its ratio to the paused floor,
each run's test accuracy, and where mlp's time went: its phases as metrics.json records them
(data, while a thread imports torch._dynamo; build, the rest of that import and the model;
tensorboard, train, writing, test, figures) and the time outside them (Python's start, importing
torch and mlp, the config, the run folder, exit).  On a shared machine the
ratio is the figure to read; the load average is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLEAN = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
FLOOR = [sys.executable, "-c", "import torch, torch._dynamo"]
# The same imports with Python's garbage collector paused, as `mlp train` imports them (mlp/imports.py)
FLOOR_PAUSED = [sys.executable, "-c", "import gc; gc.disable(); import torch, torch._dynamo"]


def timed(command: list[str], env: dict) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall and CPU seconds (user + system) of one child process, and its result."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit code {done.returncode}):\n{done.stderr}")
    return wall, cpu, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist-fast.yaml"))
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    runs: dict[str, list] = {"floor_wall": [], "floor_cpu": [], "paused_wall": [], "mlp_wall": [], "mlp_cpu": [],
                             "accuracy": [], "phases": []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            wall, cpu, _ = timed(FLOOR, env)
            runs["floor_wall"].append(wall)
            runs["floor_cpu"].append(cpu)
            runs["paused_wall"].append(timed(FLOOR_PAUSED, env)[0])
            run_dir = Path(tmp) / f"run{r}"
            wall, cpu, done = timed([sys.executable, "-m", "mlp", "train", "-c", args.config, "--run-dir",
                                     str(run_dir), "--no-progress"], env)
            runs["mlp_wall"].append(wall)
            runs["mlp_cpu"].append(cpu)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            runs["accuracy"].append(metrics["test"]["accuracy"])
            runs["phases"].append(metrics["timings"])
            threads_line = next((line for line in done.stdout.splitlines() if line.startswith("threads")), "")
    med = {k: statistics.median(runs[k]) for k in ("floor_wall", "floor_cpu", "paused_wall", "mlp_wall", "mlp_cpu")}
    phases = {name: round(statistics.median(p.get(name, 0.0) for p in runs["phases"]), 2)
              for name in runs["phases"][0]}
    # the rest of the process: Python's start, importing torch and mlp, the config, the run folder, exit
    outside = statistics.median(m - sum(p.values()) for m, p in zip(runs["mlp_wall"], runs["phases"]))
    print(json.dumps({
        "rounds": args.rounds, "config": args.config, "threads": threads_line,
        "loadavg_1min_before": round(load_before, 2), "loadavg_1min_after": round(os.getloadavg()[0], 2),
        "floor_wall_s": round(med["floor_wall"], 2), "mlp_wall_s": round(med["mlp_wall"], 2),
        "wall_ratio": round(med["mlp_wall"] / med["floor_wall"], 3),
        "wall_ratio_paired": round(statistics.median(m / f for m, f in zip(runs["mlp_wall"], runs["floor_wall"])), 3),
        "floor_paused_gc_wall_s": round(med["paused_wall"], 2),
        "wall_ratio_to_paused_gc_floor": round(med["mlp_wall"] / med["paused_wall"], 3),
        "wall_ratio_to_paused_gc_floor_paired": round(
            statistics.median(m / f for m, f in zip(runs["mlp_wall"], runs["paused_wall"])), 3),
        "floor_cpu_s": round(med["floor_cpu"], 2), "mlp_cpu_s": round(med["mlp_cpu"], 2),
        "cpu_ratio": round(med["mlp_cpu"] / med["floor_cpu"], 3),
        "test_accuracy": runs["accuracy"], "mlp_phases_s": phases, "mlp_outside_phases_s": round(outside, 2),
        "each_round": {k: [round(v, 2) for v in runs[k]]
                       for k in ("floor_wall", "paused_wall", "mlp_wall", "floor_cpu", "mlp_cpu")},
    }))


if __name__ == "__main__":
    main()
