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
    """No thread or wait setting in the environment, and nothing prepared yet."""
    for name in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", *threads.WAIT_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_prepared", {})
    return monkeypatch


def test_auto_takes_the_usable_cores_capped_by_torch_default(clean_env):
    clean_env.setattr(threads, "usable_cores", lambda: 6)
    assert threads.choose("auto", torch_default=8) == (6, "auto: 6 usable cores")
    assert threads.choose("auto", torch_default=4)[0] == 4  # more than torch's own default is not taken
    clean_env.setattr(threads, "usable_cores", lambda: 1)
    assert threads.choose("auto", torch_default=4) == (1, "auto: 1 usable core")


def test_auto_follows_omp_num_threads_and_shares_among_torchrun_processes(clean_env):
    clean_env.setattr(threads, "usable_cores", lambda: 8)
    clean_env.setenv("LOCAL_WORLD_SIZE", "4")
    assert threads.choose("auto", torch_default=8) == (2, "auto: 8 usable cores, 4 processes")
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose("auto", torch_default=8) == (3, "auto: OMP_NUM_THREADS=3")
    assert threads.choose(5, torch_default=8) == (5, "train.threads")  # a fixed count wins over both


def test_prepare_sets_the_passive_wait_for_auto_only_and_never_over_the_user(clean_env):
    env = {}
    threads.prepare(2, env)
    assert env == {}
    threads.prepare("auto", env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for mine in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        env = dict(mine)
        threads.prepare("auto", env)
        assert env == mine


def test_worker_env_shares_the_cores_and_keeps_what_is_set(clean_env):
    clean_env.setattr(threads, "usable_cores", lambda: 8)
    env = threads.worker_env(3, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.worker_env(16, {})["OMP_NUM_THREADS"] == "1"
    mine = {"OMP_NUM_THREADS": "4", "OMP_WAIT_POLICY": "ACTIVE"}
    assert threads.worker_env(2, mine) == mine


def test_the_line_says_how_idle_threads_wait(clean_env):
    import torch

    before = torch.get_num_threads()
    clean_env.setattr(threads, "usable_cores", lambda: 2)
    clean_env.setattr(threads, "_torch_default", 2)
    try:
        threads.prepare("auto")  # torch is already loaded in this process: too late for OpenMP
        assert threads.apply("auto") == (2, "2 (auto: 2 usable cores; idle threads spin a while first: OpenMP's "
                                            "default (torch was loaded before mlp could set OMP_WAIT_POLICY))")
        assert torch.get_num_threads() == 2
        clean_env.setattr(threads, "_prepared", {})
        clean_env.setenv("OMP_WAIT_POLICY", "passive")
        assert threads.apply(2)[1] == "2 (train.threads; idle threads sleep: OMP_WAIT_POLICY=passive)"
        assert threads.apply(1) == (1, "1 (train.threads)")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "true", "many"])
def test_config_refuses_a_bad_thread_setting(tiny_config, value):
    from mlp.errors import UserError

    with pytest.raises(UserError, match="train.threads: .* use auto or a whole number of threads, 1 or more"):
        load_config(tiny_config, [f"train.threads={value}"])
    assert load_config(tiny_config, []).train.threads == "auto"
    assert load_config(tiny_config, ["train.threads=3"]).train.threads == 3


def test_prepare_for_run_reads_the_train_section_without_torch(tmp_path, clean_env):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  threads: 2\n")
    threads.prepare_for_run(config)
    assert "OMP_WAIT_POLICY" not in os.environ
    threads.prepare_for_run(config, ["train.threads=auto"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    clean_env.delenv("OMP_WAIT_POLICY")
    threads.prepare_for_run(tmp_path / "missing.yaml")  # the command reports that; auto meanwhile
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_a_run_prints_and_records_its_threads(tiny_config, tmp_path):
    # without any setting in the environment: the usable cores, and with more than one, idle threads sleep
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    fresh = subprocess.run([sys.executable, "-m", "mlp", "train", "-c", str(tiny_config), "--set", "train.epochs=1",
                            "--run-dir", str(tmp_path / "a"), "--no-progress"], capture_output=True, text=True,
                           timeout=300, env=env)
    assert fresh.returncode == 0, fresh.stderr
    line = re.search(r"^threads  (\d+) \(auto: (\d+) usable cores?(.*)\)$", fresh.stdout, re.M)
    assert line, fresh.stdout
    count = int(line[1])
    assert int(line[2]) == len(os.sched_getaffinity(0)) and 1 <= count <= int(line[2])
    assert line[3] == ("; idle threads sleep: OMP_WAIT_POLICY=PASSIVE" if count > 1 else "")
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["threads"] == count
    # a fixed count wins over the environment's OMP_NUM_THREADS=1 (set by conftest)
    fixed = run_mlp("train", "-c", tiny_config, "--set", "train.epochs=1", "--set", "train.threads=2",
                    "--run-dir", tmp_path / "b", "--no-progress")
    assert fixed.returncode == 0, fixed.stderr
    assert re.search(r"^threads  2 \(train\.threads; idle threads sleep: OMP_WAIT_POLICY=PASSIVE\)$",
                     fixed.stdout, re.M), fixed.stdout
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["threads"] == 2


def test_fit_uses_its_setting_and_gives_the_threads_back(tiny_config, capsys):
    import torch

    from mlp.training.loop import fit

    before = torch.get_num_threads()
    run = fit(load_config(tiny_config, ["train.epochs=1", "train.threads=2"]), "run", progress=False)
    assert json.loads((run / "metrics.json").read_text())["threads"] == 2
    assert "threads  2 (train.threads" in capsys.readouterr().out
    assert torch.get_num_threads() == before
