"""How many CPU threads a training uses: one policy for ``mlp train``, the workers of
``mlp compare`` and ``mlp sweep``, and torchrun's processes.

``train.threads: auto`` (the default) means:

- the most it may use: the cores this process may run on (``os.sched_getaffinity``), its share
  of them when ``mlp compare``/``mlp sweep`` run several trainings side by side (their pool
  sets ``MLP_THREAD_SHARE``) or among torchrun's processes on this node, and never more than
  torch's own default (the physical cores).  An ``OMP_NUM_THREADS`` set in the environment
  fixes the count instead (torchrun sets 1 per process; the tests set 1).
- which count, measured while it trains (``ThreadTuner``): a CPU training times its first steps
  with each candidate count (1, the most it may use, and when that is over 2 half of it and one less)
  and keeps the fastest; it measures again after a while (10 s of training at first, then
  longer while the choice holds, at most 160 s) and at once when its steps slow down by more
  than a third: a busy process that appears mid-run is noticed within about a second, one that
  goes away at the next measurement.

OpenMP's wait policy is left as it is.  torch's OpenMP (GNU libgomp) lets a waiting thread spin
before it sleeps: on a quiet machine that makes 2 threads the fastest setting, and beside a busy
process it makes them many times slower than 1 (a spinning thread takes the time slice its
partner needs).  Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) avoids the collapse but costs a
wake-up per parallel region, half the speed of a quiet machine at batch 64; measuring the count
keeps the spin where it helps and drops to 1 thread where it hurts (docs/speed.md has the
numbers).  With the count changing, the order of floating-point sums can change with it (CPU
matrix products split their work by thread), so two runs of one seed can differ in the last bits
of their weights; a fixed ``train.threads: N`` (or ``OMP_NUM_THREADS``) makes a CPU run
repeat bit for bit, and a resumed run end bit-identical to one never stopped.

``train.threads: N`` sets N threads for the whole run.
"""

from __future__ import annotations

import os
import statistics

SHARE_ENV = "MLP_THREAD_SHARE"  # set by the worker pools: the most threads each training may use
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. under taskset or a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def positive_env(name: str) -> int | None:
    """The environment variable ``name`` as a whole number above 0, or None (unset, empty, 0, text)."""
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def worker_threads(jobs: int) -> int:
    """The most threads each of ``jobs`` processes sharing this machine's cores may use."""
    return max(1, usable_cores() // max(1, jobs))


def choose(setting: int | str, torch_default: int) -> tuple[list[int], str]:
    """The thread counts ``train.threads`` allows (one for a fixed count, the candidates that
    auto measures otherwise) and the reason, in words."""
    if setting != "auto":
        return [int(setting)], "train.threads"
    given = positive_env("OMP_NUM_THREADS")
    if given:
        return [given], f"auto: OMP_NUM_THREADS={given}"
    share = positive_env(SHARE_ENV)
    local = positive_env("LOCAL_WORLD_SIZE") or 1  # torchrun's processes on this node
    cores = usable_cores()
    most = max(1, min(share or cores // local, torch_default))
    if share:
        why = f"auto: its share of {cores} usable core{'s' * (cores > 1)}"
    else:
        why = f"auto: {cores} usable core{'s' * (cores > 1)}" + (f", {local} processes" if local > 1 else "")
    return candidates(most), why


def candidates(most: int) -> list[int]:
    """The counts auto measures when it may use up to ``most``: 1, most, and on bigger machines
    half of it and one less (a busy process on one core of many)."""
    return sorted({1, most, max(1, most // 2), max(1, most - 1)} if most > 2 else {1, most})


def wait_policy() -> str:
    """How idle OpenMP threads of this process wait, in words."""
    for name in WAIT_VARIABLES:
        if name in os.environ:
            value = os.environ[name]
            how = "sleep" if name == "OMP_WAIT_POLICY" and value.upper() == "PASSIVE" else "wait"
            return f"idle threads {how}: {name}={value}"
    return "idle threads spin a while first: OpenMP's default"


def apply(setting: int | str, measure: bool = True) -> tuple[ThreadTuner, str]:
    """Set torch's intra-op threads for ``train.threads``: the tuner that keeps choosing them
    (``measure=False``, e.g. on a GPU: the most allowed, fixed) and the line a run prints, e.g.
    ``1/2, the fastest measured as it trains (auto: 2 usable cores; idle threads spin a while first: ...)``."""
    import torch

    global _torch_default
    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    counts, reason = choose(setting, _torch_default)
    tuner = ThreadTuner(counts if measure else counts[-1:], torch.set_num_threads)
    if len(tuner.candidates) > 1:
        what = f"{'/'.join(map(str, tuner.candidates))}, the fastest measured as it trains"
    else:
        what = str(tuner.current)
    return tuner, f"{what} ({reason}; {wait_policy()})" if tuner.candidates[-1] > 1 else f"{what} ({reason})"


_torch_default: int | None = None  # torch's thread count before the first apply()


class ThreadTuner:
    """Chooses among ``candidates`` thread counts by timing training steps (``after_step``).

    A measurement times the candidates in slices, interleaved (the count in use first, then the
    others from the most threads down, three times over: A B A B A B), so that a change of load
    during it falls on every count alike; a slice is a tenth of a second of steps and at least 2
    (the step right after a switch is not counted).  A count already under half the median speed
    of another is not timed any further.  Each count's rate is the median samples/s of its timed
    steps; the fastest is kept (the count in use unless another is more than 10% faster).  The
    next measurement comes after ``hold`` seconds of training (10 s, doubled each time the choice
    stays, up to 160 s), or at once when the median rate over a second of steps falls below two
    thirds of what the chosen count measured.  With one candidate it only counts steps."""

    SLICE_S, SLICES, FIRST_HOLD_S, MAX_HOLD_S, CHECK_S = 0.1, 3, 10.0, 160.0, 1.0
    SLOWER, MARGIN, HOPELESS = 2 / 3, 1.1, 0.5

    def __init__(self, candidates: list[int], set_threads):
        self.candidates, self.set_threads = sorted(set(candidates)), set_threads
        self.steps = {c: 0 for c in self.candidates}  # training steps run at each count
        self.measurements = 0
        self.rates: dict[int, float] = {}  # samples/s each count measured, the last time
        self.hold = self.FIRST_HOLD_S
        self._queue: list[int] = []  # the slices still to time in this measurement, by count
        self._pooled: dict[int, list[float]] = {}  # this measurement's timed steps, by count
        self._timed: list[float] = []  # samples/s of each timed step (of a slice, or of a check window)
        self._spent, self._held, self._skip = 0.0, 0.0, 0
        self._chosen: int | None = None
        self.current = self.candidates[-1]
        self.set_threads(self.current)
        if len(self.candidates) > 1:
            self._measure(skip=3)  # the first steps of a run are slower: allocations, caches

    def after_step(self, seconds: float, samples: int) -> None:
        """One training step of ``samples`` samples took ``seconds`` at the current count."""
        self.steps[self.current] += 1
        if len(self.candidates) == 1 or seconds <= 0:
            return
        if self._skip:
            self._skip -= 1
            return
        self._timed.append(samples / seconds)
        self._spent += seconds
        if self._queue:
            if self._spent >= self.SLICE_S and len(self._timed) >= 2:
                self._end_slice()
            return
        self._held += seconds
        if self._spent >= self.CHECK_S and len(self._timed) >= 3:
            slower = statistics.median(self._timed) < self.SLOWER * self.rates[self.current]
            self._timed, self._spent = [], 0.0
            if slower:
                self.hold = self.FIRST_HOLD_S
                self._measure()
            elif self._held >= self.hold:
                self._measure()

    def _measure(self, skip: int = 1) -> None:
        order = [self.current, *(c for c in sorted(self.candidates, reverse=True) if c != self.current)]
        self._queue, self._pooled = order * self.SLICES, {c: [] for c in order}
        self._switch(self._queue[0], skip, force=True)

    def _end_slice(self) -> None:
        count = self._queue.pop(0)
        self._pooled[count] += self._timed
        rates = {c: statistics.median(steps) for c, steps in self._pooled.items() if steps}
        hopeless = rates[count] < self.HOPELESS * max(rates.values())
        if hopeless:  # far slower than another count: not timed any longer
            self._queue = [c for c in self._queue if c != count]
        if self._queue:
            self._switch(self._queue[0])
        else:
            self.rates.update(rates)
            self._choose(rates)

    def _switch(self, count: int, skip: int = 1, force: bool = False) -> None:
        if count != self.current:
            self.set_threads(count)
            self.current = count
        elif not force:
            skip = 0  # the same count goes on: its next step is like the others
        self._timed, self._spent, self._skip = [], 0.0, skip

    def _choose(self, rates: dict[int, float]) -> None:
        self.measurements += 1  # finished ones
        best = max(rates, key=lambda c: rates[c])
        if self._chosen in rates and rates[best] < self.MARGIN * rates[self._chosen]:
            best = self._chosen  # within a tenth of the count it runs at: noise, keep it
        kept = best == self._chosen
        self.hold = min(2 * self.hold, self.MAX_HOLD_S) if kept else self.FIRST_HOLD_S
        self._chosen = best
        self._switch(best, skip=0)
        self._held = 0.0

    def most_used(self) -> int:
        return max(self.candidates, key=lambda c: (self.steps[c], c))

    def record(self) -> dict:
        """What metrics.json keeps: the count most steps ran at, and with auto's measuring the
        steps at each count and the number of finished measurements (of this process: a resumed
        run counts its own)."""
        facts: dict = {"threads": self.most_used()}
        if len(self.candidates) > 1:
            facts["thread_steps"] = {str(c): n for c, n in self.steps.items()}
            facts["thread_measurements"] = self.measurements
        return facts

    def summary(self) -> str | None:
        """The end-of-run line's words, with auto's measuring: e.g. ``2 for 97% of 3,516 steps, 1 for 3%
        (4 measurements)``; None for a fixed count."""
        total = sum(self.steps.values())
        if len(self.candidates) == 1 or total == 0:
            return None
        used = sorted((c for c in self.candidates if self.steps[c]), key=lambda c: -self.steps[c])
        shares = [f"{c} for {_share(self.steps[c] / total)}" + (f" of {total:,} step{'s' * (total != 1)}" if i == 0 else "")
                  for i, c in enumerate(used)]
        n = self.measurements
        done = f"{n} measurement{'s' * (n != 1)}" if n else "the run ended before its first measurement did"
        return f"{', '.join(shares)} ({done}{', one cut short' if n and self._queue else ''})"


def _share(fraction: float) -> str:
    return "<1%" if 0 < fraction < 0.005 else f"{fraction:.0%}"
