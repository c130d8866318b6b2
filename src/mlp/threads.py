"""How many CPU threads a training uses, and how idle OpenMP threads wait: one policy for
``mlp train``, the workers of ``mlp compare`` and ``mlp sweep``, and torchrun's processes.

``train.threads: auto`` (the default) means:

- the count: ``OMP_NUM_THREADS`` when it is set (torchrun sets 1 per process, the pools of
  compare and sweep set their share, a user may set it), otherwise the cores this process may
  run on (``os.sched_getaffinity``), shared among torchrun's processes on this node, and never
  more than torch's own default (the physical cores);
- the wait: idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``),
  unless the environment already says otherwise (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``).
  By default torch's OpenMP (GNU libgomp) spins for milliseconds in every wait; with another
  busy process on the cores, a spinning thread takes the time slice its partner needs, and
  training with 2 threads ran at a small fraction of its 1-thread speed (docs/speed.md has
  the measurements).  OpenMP reads the policy once, when torch is first imported, so
  ``prepare`` must run before that: the CLI calls it first thing, and ``worker_env`` hands it
  to child processes.

``train.threads: N`` sets N threads and leaves OpenMP's wait policy as it is.
"""

from __future__ import annotations

import os
import sys

WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_prepared: dict[str, str] = {}  # "wait": "set" (before torch loaded) or "late", for wait_policy()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. under taskset or a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def prepare(setting: int | str = "auto", environ=None) -> None:
    """Before torch is imported: for ``auto``, idle OpenMP threads will sleep (``OMP_WAIT_POLICY=PASSIVE``)
    unless ``environ`` (default ``os.environ``) already sets a wait policy."""
    environ = os.environ if environ is None else environ
    if setting != "auto" or any(name in environ for name in WAIT_VARIABLES):
        return
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if environ is os.environ:
        _prepared["wait"] = "set" if "torch" not in sys.modules else "late"


def prepare_for_run(config=None, overrides=(), resume=None) -> None:
    """``prepare`` with the ``train.threads`` of the run a command is about to train: the config
    with its overrides, or the saved config of the run ``resume`` continues.  Only the train
    section is read here (validating the rest would import torch); when it cannot be read, auto
    (the command itself then reports what is wrong)."""
    from pathlib import Path

    from mlp.config import TrainConfig, parse_override, set_dotted
    from mlp.yamlfile import read_yaml

    if resume is not None:
        folder = Path(resume) if Path(resume).is_dir() else Path(resume).parent
        config = folder / "config.yaml"
    try:
        raw = read_yaml(Path(config)) if config is not None else {}
        for item in overrides:
            set_dotted(raw, *parse_override(item))
        setting = TrainConfig.model_validate(raw.get("train") or {}).threads
    except Exception:  # noqa: BLE001 - any mistake is the command's to report, with its own message
        setting = "auto"
    prepare(setting)


def worker_env(jobs: int, environ=None) -> dict[str, str]:
    """The environment for one of ``jobs`` worker processes training side by side on this machine:
    each gets an equal share of the cores (unless ``OMP_NUM_THREADS`` is already set) and the
    passive wait (unless a wait policy is set)."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("OMP_NUM_THREADS", str(worker_threads(jobs)))
    prepare("auto", env)
    return env


def worker_threads(jobs: int) -> int:
    """Threads for each of ``jobs`` processes sharing this machine's cores."""
    return max(1, usable_cores() // max(1, jobs))


def choose(setting: int | str, torch_default: int) -> tuple[int, str]:
    """The thread count for ``train.threads`` and the reason, in words."""
    if setting != "auto":
        return int(setting), "train.threads"
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given), f"auto: OMP_NUM_THREADS={given}"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # torchrun's processes on this node
    cores = usable_cores()
    count = max(1, min(cores // max(1, local), torch_default))
    share = f", {local} processes" if local > 1 else ""
    return count, f"auto: {cores} usable core{'s' * (cores > 1)}{share}"


def wait_policy() -> str:
    """How idle OpenMP threads of this process wait, in words."""
    late = _prepared.get("wait") == "late"
    for name in WAIT_VARIABLES:
        if name in os.environ and not late:
            value = os.environ[name]
            how = "sleep" if name == "OMP_WAIT_POLICY" and value.upper() == "PASSIVE" else "wait"
            return f"idle threads {how}: {name}={value}"
    why = " (torch was loaded before mlp could set OMP_WAIT_POLICY)" if late else ""
    return f"idle threads spin a while first: OpenMP's default{why}"


def apply(setting: int | str) -> tuple[int, str]:
    """Set torch's intra-op threads for ``train.threads``; the count and the line a run prints,
    e.g. ``2 (auto: 2 usable cores; idle threads sleep (OMP_WAIT_POLICY=PASSIVE))``."""
    import torch

    global _torch_default
    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    count, reason = choose(setting, _torch_default)
    torch.set_num_threads(count)
    return count, f"{count} ({reason}; {wait_policy()})" if count > 1 else f"{count} ({reason})"


_torch_default: int | None = None  # torch's thread count before the first apply()
