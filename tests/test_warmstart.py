"""Warm starts (mlp.training.warmstart): a process forked from the helper behaves as a new
interpreter started with ``python -m MODULE ARGS`` does, and falls back to one where it cannot."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import WARM_SESSION, start_mlp
from mlp.training import warmstart

# A module that reports, as JSON on stdout, what a process started with it has.
PROBE = textwrap.dedent("""
    import atexit, json, os, random, sys
    import numpy

    report = {"argv": sys.argv[1:], "cwd": os.getcwd(), "path0": sys.path[0], "env": os.environ.get("PROBE_VALUE"),
              "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0), "pgid": os.getpgid(0),
              "stdin": sys.stdin.read(), "nice": os.getpriority(os.PRIO_PROCESS, 0),
              "umask": next(line.split()[1] for line in open("/proc/self/status") if line.startswith("Umask:")),
              "affinity": sorted(os.sched_getaffinity(0)),
              "random": random.random(), "numpy_random": numpy.random.random(), "main": __name__,
              "argv0": os.path.basename(sys.argv[0]),
              "buffered": not sys.stdout.write_through}
    print(json.dumps(report))
    print("to stderr", file=sys.stderr)
    atexit.register(lambda: open("atexit.txt", "w").write("ran"))
    how = sys.argv[1] if len(sys.argv) > 1 else "exit 0"
    if how.startswith("exit"):
        sys.exit(int(how.split()[1]))
    if how == "raise":
        raise ValueError("from the probe")
    if how == "interrupt":
        raise KeyboardInterrupt
    if how == "sleep":
        import time
        sys.stdout.flush()
        time.sleep(60)
""")


@pytest.fixture(scope="module")
def starter():
    with pytest.MonkeyPatch.context() as patch:  # these tests are of the warm path, also under MLP_WARM_START=0
        patch.delenv(warmstart.ENABLE_ENV, raising=False)
        with warmstart.Starter(dict(os.environ)) as started:
            yield started


@pytest.fixture(autouse=True)
def _warm(monkeypatch):
    monkeypatch.delenv(warmstart.ENABLE_ENV, raising=False)


@pytest.fixture
def own_starter():
    """A helper of the test's own, for a test that kills it."""
    with warmstart.Starter(dict(os.environ)) as started:
        yield started


@pytest.fixture
def probe_dir(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    return tmp_path


def _run(starter, how, probe_dir, **kwargs):
    env = {**os.environ, "PROBE_VALUE": "42", **kwargs.pop("env", {})}
    proc = starter.popen([how], env=env, cwd=probe_dir, module="probe", stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    out, err = proc.communicate(input="from stdin", timeout=120)
    return proc, out, err


def _cold(how, probe_dir):
    return subprocess.run([sys.executable, "-m", "probe", how], cwd=probe_dir, input="from stdin", text=True,
                          capture_output=True, env={**os.environ, "PROBE_VALUE": "42"}, timeout=120)


@pytest.mark.parametrize("how, code", [("exit 0", 0), ("exit 3", 3), ("raise", 1),
                                       ("interrupt", -signal.SIGINT)])
def test_a_warm_process_has_what_a_new_interpreter_has(starter, probe_dir, how, code):
    proc, out, err = _run(starter, how, probe_dir)
    assert (probe_dir / "atexit.txt").read_text() == "ran"  # the interpreter's own exit ran
    (probe_dir / "atexit.txt").unlink()
    cold = _cold(how, probe_dir)
    assert isinstance(proc, warmstart.WarmProcess)
    assert proc.returncode == cold.returncode == code
    warm_report, cold_report = json.loads(out), json.loads(cold.stdout)
    for key in ("argv", "cwd", "path0", "env", "stdin", "main", "argv0", "buffered", "sid", "pgid", "nice", "umask",
                "affinity"):
        assert warm_report[key] == cold_report[key], key
    assert warm_report["pid"] == proc.pid and warm_report["ppid"] == starter.parent_pid != os.getpid()
    assert err.splitlines()[0] == cold.stderr.splitlines()[0] == "to stderr"
    assert ("ValueError: from the probe" in err) == ("ValueError: from the probe" in cold.stderr) == (how == "raise")


def test_warm_processes_reseed_random_and_take_a_session_when_asked(starter, probe_dir):
    first = json.loads(_run(starter, "exit 0", probe_dir)[1])
    second, out, _ = _run(starter, "exit 0", probe_dir, start_new_session=True)
    report = json.loads(out)
    assert first["random"] != report["random"] and first["numpy_random"] != report["numpy_random"]
    assert report["sid"] == report["pgid"] == second.pid  # a session of its own, as asked
    assert (first["sid"], first["pgid"]) == (os.getsid(0), os.getpgid(0))  # else the caller's, as a plain child


def test_the_callers_umask_and_niceness_at_the_request_reach_the_process(starter, probe_dir):
    before = os.umask(0o027)
    try:
        report = json.loads(_run(starter, "exit 0", probe_dir)[1])
    finally:
        os.umask(before)
    assert report["umask"] == "0027"
    assert report["nice"] == os.getpriority(os.PRIO_PROCESS, 0)


def test_a_signal_after_the_end_is_harmless_and_large_input_does_not_block(starter, probe_dir):
    proc = starter.popen(["exit 0"], cwd=probe_dir, module="probe", stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert select.select([proc.pidfd], [], [], 60)[0]  # it has ended (its pidfd is readable then) ...
    time.sleep(0.5)  # ... and the helper has reaped it; its status need not have been read yet
    proc.kill()  # as Popen: no error for a process that has ended
    assert proc.wait(timeout=30) == 0
    proc.kill()
    # 200 kB each way, more than a pipe holds: the output is read while the input is written
    proc = starter.popen(["exit 0"], cwd=probe_dir, module="probe", stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, _ = proc.communicate(input="x" * 200_000, timeout=60)
    assert len(json.loads(out.splitlines()[0])["stdin"]) == 200_000


def test_ctrl_c_at_the_callers_process_group_leaves_the_helper(starter, probe_dir):
    os.kill(starter.helper.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends the whole group
    time.sleep(0.3)
    proc, out, _ = _run(starter, "exit 0", probe_dir)
    assert isinstance(proc, warmstart.WarmProcess) and proc.returncode == 0
    sleeper = starter.popen(["sleep"], cwd=probe_dir, module="probe", stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    json.loads(sleeper.stdout.readline())
    sleeper.send_signal(signal.SIGINT)  # the child has Python's own SIGINT handling back
    _, err = sleeper.communicate(timeout=30)
    assert sleeper.returncode == -signal.SIGINT and "KeyboardInterrupt" in err


def test_signals_and_timeouts_reach_a_warm_process(starter, probe_dir):
    proc = starter.popen(["sleep"], cwd=probe_dir, module="probe", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    json.loads(proc.stdout.readline())  # it has started
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.2)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    proc.communicate()


def test_a_changed_startup_variable_or_a_switch_starts_cold(starter, probe_dir, monkeypatch):
    # OMP_NUM_THREADS is read as libgomp loads, which the helper has done with its own value.
    proc, out, _ = _run(starter, "exit 0", probe_dir, env={"OMP_NUM_THREADS": "3"})
    assert isinstance(proc, subprocess.Popen) and json.loads(out)["ppid"] == os.getpid()
    proc, out, _ = _run(starter, "exit 0", probe_dir, env={"TORCHINDUCTOR_CACHE_DIR": "/tmp/x"})
    assert isinstance(proc, warmstart.WarmProcess)  # read when torch compiles: forked
    monkeypatch.setenv(warmstart.ENABLE_ENV, "0")
    with warmstart.Starter(dict(os.environ)) as off:
        proc, _, _ = _run(off, "exit 0", probe_dir)
        assert isinstance(proc, subprocess.Popen) and off.parent_pid == os.getpid()


def test_a_child_outlives_its_helper_and_its_end_is_still_seen(own_starter, probe_dir):
    starter = own_starter
    proc = starter.popen(["sleep"], cwd=probe_dir, module="probe", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    json.loads(proc.stdout.readline())
    os.kill(starter.helper.pid, signal.SIGKILL)
    starter.helper.wait()
    time.sleep(0.2)
    assert proc.poll() is None  # still running, as a plain child whose parent died would be
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == warmstart.LOST  # its own code went with the helper
    proc.communicate()
    # the helper is gone: the next process starts cold, and still starts
    after, out, _ = _run(starter, "exit 0", probe_dir)
    assert isinstance(after, subprocess.Popen) and after.returncode == 0


def test_the_helper_dies_with_the_process_that_started_it(probe_dir):
    # ... at once, even while a child it started runs (a training started by Workers then gets
    # SIGTERM, as it follows its parent, the helper); without a child it would also end on the
    # closed socket.
    script = textwrap.dedent("""
        import os, subprocess, sys, time
        from mlp.training import warmstart
        starter = warmstart.Starter(dict(os.environ))
        child = starter.popen(["sleep"], module="probe", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        print(starter.helper.pid, child.pid, flush=True)
        time.sleep(60)
    """)
    caller = subprocess.Popen([sys.executable, "-c", script], cwd=probe_dir, stdout=subprocess.PIPE, text=True)
    helper, child = map(int, caller.stdout.readline().split())
    assert _alive(helper) and _alive(child)
    caller.kill()
    caller.wait()
    deadline = time.monotonic() + 30
    while _alive(helper):
        assert time.monotonic() < deadline, "the helper outlived its caller"
        time.sleep(0.1)
    assert _alive(child)  # a plain child of the helper (no follow_parent) outlives it, as any child would
    os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_command_line_answers_the_same_warm_and_cold(tmp_path):
    proc = start_mlp("train", "--config", tmp_path / "missing.yaml", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)
    # the tests' command-line processes do start warm (unless the whole run was made cold)
    assert isinstance(proc, warmstart.WarmProcess) or not WARM_SESSION
    out, err = proc.communicate(timeout=120)
    warm = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    cold = subprocess.run([sys.executable, "-m", "mlp", "train", "--config", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert warm.returncode == cold.returncode == 2
    assert warm.stderr == cold.stderr and warm.stderr.startswith("error: ") and warm.stdout == cold.stdout


def test_the_helper_holds_one_thread_after_a_trainings_imports(monkeypatch):
    # A fork copies only the thread that forks: a helper with a thread of its own (or an OpenMP
    # team, which a parallel region during the imports would leave) could hand its children
    # locks that no thread will release.  Without OMP_NUM_THREADS, a team would have 2+ threads.
    from mlp.training.workers import TRAINING_MODULES

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with warmstart.Starter(dict(os.environ), TRAINING_MODULES + ("mlp.sweep.study",)) as starter:
        proc = starter.popen(["--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.communicate(timeout=120)[0].startswith("mlp ") and isinstance(proc, warmstart.WarmProcess)
        assert os.listdir(f"/proc/{starter.helper.pid}/task") == [str(starter.helper.pid)]
