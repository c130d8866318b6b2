"""The thread policy (mlp.threads): what auto chooses, what the run says, and what child processes get."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import run_mlp
from mlp import threads
from mlp.config import load_config


@pytest.fixture
def clean_env(monkeypatch):
    """No thread or wait setting in the environment."""
    for name in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", threads.SHARE_ENV, *threads.WAIT_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_auto_measures_from_one_to_the_usable_cores_capped_by_torch_default(clean_env):
    clean_env.setattr(threads, "usable_cores", lambda: 6)
    assert threads.choose("auto", torch_default=8) == ([1, 3, 5, 6], "auto: 6 usable cores")
    assert threads.choose("auto", torch_default=4)[0] == [1, 2, 3, 4]  # more than torch's own default is not taken
    clean_env.setattr(threads, "usable_cores", lambda: 2)
    assert threads.choose("auto", torch_default=2) == ([1, 2], "auto: 2 usable cores")
    clean_env.setattr(threads, "usable_cores", lambda: 1)
    assert threads.choose("auto", torch_default=4) == ([1], "auto: 1 usable core")


def test_auto_follows_omp_num_threads_the_pools_share_and_torchrun(clean_env):
    clean_env.setattr(threads, "usable_cores", lambda: 8)
    clean_env.setenv("LOCAL_WORLD_SIZE", "4")
    assert threads.choose("auto", torch_default=8) == ([1, 2], "auto: 8 usable cores, 4 processes")
    clean_env.setenv(threads.SHARE_ENV, "4")  # compare's or sweep's pool: this training's share
    assert threads.choose("auto", torch_default=8) == ([1, 2, 3, 4], "auto: its share of 8 usable cores")
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose("auto", torch_default=8) == ([3], "auto: OMP_NUM_THREADS=3")
    assert threads.choose(5, torch_default=8) == ([5], "train.threads")  # a fixed count wins over both


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "true", "many"])
def test_config_refuses_a_bad_thread_setting(tiny_config, value):
    from mlp.errors import UserError

    with pytest.raises(UserError, match="train.threads: .* use auto or a whole number of threads, 1 or more"):
        load_config(tiny_config, [f"train.threads={value}"])
    assert load_config(tiny_config, []).train.threads == "auto"
    assert load_config(tiny_config, ["train.threads=3"]).train.threads == 3


class Machine:
    """A simulated CPU: each thread count trains at its samples/s, which the test changes."""

    def __init__(self, rates):
        self.rates, self.set_calls = dict(rates), []

    def train(self, tuner, seconds, batch=64):
        """Run ``seconds`` of training steps, telling the tuner each one's time; the steps at each count."""
        elapsed, counts = 0.0, {}
        while elapsed < seconds:
            step = batch / self.rates[tuner.current]
            counts[tuner.current] = counts.get(tuner.current, 0) + 1
            tuner.after_step(step, batch)
            elapsed += step
        return counts


def test_the_tuner_keeps_the_fastest_count_and_follows_a_change_of_load():
    machine = Machine({1: 17_000, 2: 23_000})  # quiet: 2 spinning threads are the fastest
    tuner = threads.ThreadTuner([1, 2], machine.set_calls.append)
    assert tuner.current == 2 and machine.set_calls == [2]
    quiet = machine.train(tuner, 1.0)
    assert tuner.current == 2 and tuner.rates == {1: 17_000, 2: 23_000}
    assert machine.set_calls == [2, 1, 2, 1, 2, 1, 2]  # 2 and 1 timed in turn three times, and 2 kept
    machine.rates = {1: 15_000, 2: 5_000}  # a busy process appears: 2 threads collapse
    slow = machine.train(tuner, 3.0)
    assert tuner.current == 1 and slow[1] > slow[2]  # noticed within about a second
    machine.rates = {1: 17_000, 2: 23_000}  # it goes away: found at the next measurement (10 s on)
    back = machine.train(tuner, 12.0)
    assert back.get(2, 0) > 0 and tuner.current == 2
    # what metrics.json records: the steps the machine ran at each count, counted on the machine's side
    ran = {c: quiet.get(c, 0) + slow.get(c, 0) + back.get(c, 0) for c in (1, 2)}
    assert tuner.record() == {"threads": max(ran, key=ran.get), "thread_steps": {"1": ran[1], "2": ran[2]},
                              "thread_measurements": 3}


def test_the_tuner_waits_longer_while_its_choice_holds_and_ignores_noise():
    machine = Machine({1: 20_000, 2: 21_000})  # 2 is 5% faster: within noise of the other
    tuner = threads.ThreadTuner([1, 2], machine.set_calls.append)
    machine.train(tuner, 100.0)
    assert tuner.current == 2 and tuner.hold > threads.ThreadTuner.FIRST_HOLD_S
    machine.rates = {1: 21_000, 2: 20_000}  # now 1 is 5% faster: not enough to switch
    machine.train(tuner, 200.0)
    assert tuner.current == 2
    measured = tuner.measurements
    assert measured < 10  # 300 s of training: 10, 20, 40, 80, 160 s holds
    machine.rates = {1: 30_000, 2: 20_000}  # clearly faster: switched at the next measurement
    waited = 0
    while tuner.current == 2 and waited < 1000:
        machine.train(tuner, 1.0)
        waited += 1
    assert waited <= threads.ThreadTuner.MAX_HOLD_S + 1 and tuner.measurements == measured + 1


def test_a_count_far_slower_than_the_one_in_use_is_dropped_after_two_steps():
    machine = Machine({1: 20_000, 2: 500})  # 2 threads collapsed beside a busy process
    tuner = threads.ThreadTuner([1, 2], machine.set_calls.append)
    machine.train(tuner, 2.0)  # the first measurement starts with 2 threads, then finds 1 far faster
    assert tuner.current == 1 and tuner.measurements == 1
    before = tuner.steps[2]
    machine.train(tuner, threads.ThreadTuner.FIRST_HOLD_S + 1)  # the second measurement, the count in use first
    assert tuner.measurements == 2 and tuner.current == 1
    assert tuner.steps[2] - before == 3  # the step after the switch, and two timed ones


def test_the_end_line_says_what_ran_and_what_was_measured():
    machine = Machine({1: 17_000, 2: 23_000})
    tuner = threads.ThreadTuner([1, 2], machine.set_calls.append)
    tuner.after_step(0.003, 64)
    assert tuner.summary() == "2 for 100% of 1 step (the run ended before its first measurement did)"
    machine.train(tuner, 60.0)  # measurements at the start, 10 s and 30 s on: 1 thread only while measured
    total = sum(tuner.steps.values())
    assert tuner.measurements == 3 and 0.005 < tuner.steps[1] / total < 0.02
    assert tuner.summary() == f"2 for 99% of {total:,} steps, 1 for 1% (3 measurements)"
    assert threads._share(0.004) == "<1%" and threads._share(0.0) == "0%"  # a count that ran, however little, shows


def test_a_fixed_count_is_never_changed():
    machine = Machine({3: 10_000})
    tuner = threads.ThreadTuner([3], machine.set_calls.append)
    machine.train(tuner, 30.0)
    assert machine.set_calls == [3] and tuner.record() == {"threads": 3} and tuner.summary() is None


def test_a_run_prints_and_records_its_threads(tiny_config, tmp_path):
    # without any setting in the environment: auto measures 1 to the usable cores
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    fresh = subprocess.run([sys.executable, "-m", "mlp", "train", "-c", str(tiny_config), "--set", "train.epochs=1",
                            "--run-dir", str(tmp_path / "a"), "--no-progress"], capture_output=True, text=True,
                           timeout=300, env=env)
    assert fresh.returncode == 0, fresh.stderr
    cores = len(os.sched_getaffinity(0))
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    if min(cores, torch_default_threads()) > 1:
        assert re.search(rf"^threads  1/.*{min(cores, torch_default_threads())}, the fastest measured as it trains "
                         rf"\(auto: {cores} usable cores; idle threads spin a while first: OpenMP's default\)$",
                         fresh.stdout, re.M), fresh.stdout
        steps = metrics["epochs"][-1]["step"]
        assert sum(metrics["thread_steps"].values()) == steps
        done = metrics["thread_measurements"]  # a tiny run may end before its first measurement does
        said = rf"{done} measurements?" if done else "the run ended before its first measurement did"
        assert re.search(rf"^threads  \d+ for (\d+|<1)% of {steps} steps.* \({said}.*\)$", fresh.stdout, re.M), \
            fresh.stdout
    else:  # one core, or torch's default of one thread
        assert re.search(r"^threads  1 \(auto: \d+ usable cores?\)$", fresh.stdout, re.M), fresh.stdout
    # a fixed count wins over the environment's OMP_NUM_THREADS=1 (set by conftest)
    fixed = run_mlp("train", "-c", tiny_config, "--set", "train.epochs=1", "--set", "train.threads=2",
                    "--run-dir", tmp_path / "b", "--no-progress")
    assert fixed.returncode == 0, fixed.stderr
    assert re.search(r"^threads  2 \(train\.threads; idle threads sleep: OMP_WAIT_POLICY=PASSIVE\)$",  # conftest's
                     fixed.stdout, re.M), fixed.stdout
    record = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert record["threads"] == 2 and "thread_steps" not in record


def torch_default_threads() -> int:
    """torch's own default in a fresh process (its physical cores)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                         capture_output=True, text=True, timeout=120)
    return int(out.stdout)


def test_fit_uses_its_setting_and_gives_the_threads_back(tiny_config, capsys):
    import torch

    from mlp.training.loop import fit

    before = torch.get_num_threads()
    run = fit(load_config(tiny_config, ["train.epochs=1", "train.threads=2"]), "run", progress=False)
    assert json.loads((run / "metrics.json").read_text())["threads"] == 2
    assert "threads  2 (train.threads" in capsys.readouterr().out
    assert torch.get_num_threads() == before
