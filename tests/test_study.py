"""Sweeps as Optuna studies: workers sharing a storage, a TPE search with pruning, interrupted
workers, PostgreSQL, and the one-line errors of search spaces and storages."""

from __future__ import annotations

import csv
import glob
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from conftest import run_mlp, start_mlp
from mlp.errors import UserError
from mlp.sweep.space import load_space
from mlp.sweep.study import STALE_AFTER_S, is_abandoned, this_worker
from mlp.sweep.runner import run_sweep

GRID_ITEMS, GRID_SETS = ["optimizer.lr=0.001,0.005", "model.width=16,32"], ["train.epochs=1"]  # as run_sweep takes them
GRID = ["--grid", GRID_ITEMS[0], "--grid", GRID_ITEMS[1], "--set", GRID_SETS[0]]  # the same on the command line
NAMES = {"lr=0.001,width=16", "lr=0.001,width=32", "lr=0.005,width=16", "lr=0.005,width=32"}


def sweep_process(config: Path, *args: str) -> subprocess.Popen:
    return start_mlp("sweep", "--config", config, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def journal_study(path: Path, name: str):
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))


def table_rows(out: str) -> list[str]:
    """The rows of the last leaderboard printed: the lines between its dashes and the next blank line."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("-----"))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line)
    return rows


def wait_for(predicate, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def metrics(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def test_two_workers_on_one_study_file_train_each_grid_trial_exactly_once(tiny_config, tmp_path, capsys):
    workers = [sweep_process(tiny_config, *GRID, "--sweep-dir", "sweep") for _ in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, out + err
        assert "Traceback" not in out + err
    sweep = tmp_path / "sweep"
    assert {p.name for p in sweep.iterdir() if p.is_dir()} == NAMES
    for name in NAMES:
        assert (sweep / name / "train.log").read_text().count("$ mlp train") == 1, name
        assert sum(f"training {name}" in out for out, _ in outputs) == 1, name  # by one worker, not both

    study = journal_study(sweep / "optuna-journal.log", "sweep")
    trials = [t for t in study.trials if t.user_attrs.get("status") != "surplus"]
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:
        name = f"lr={t.params['optimizer.lr']},width={t.params['model.width']}"
        m = metrics(sweep / name)
        assert t.value == m["best"]["val_accuracy"] and t.user_attrs["test_acc"] == m["test"]["accuracy"]
    surplus = [t for t in study.trials if t.user_attrs.get("status") == "surplus"]
    assert all(t.state == optuna.trial.TrialState.FAIL for t in surplus)  # made in a race, never trained

    # each worker's leaderboard lists every trial, whoever trained it; later, all of them finished
    for out, _ in outputs:
        rows = table_rows(out)
        assert len(rows) == 4 and {row.split()[0] for row in rows} == NAMES
    assert run_sweep(tiny_config, GRID_ITEMS, sets=GRID_SETS, sweep_dir=Path("sweep"), leaderboard_only=True) == 0
    shown = capsys.readouterr().out  # in this process: the leaderboard read from the study
    rows = table_rows(shown)
    assert len(rows) == 4 and all(" finished " in row for row in rows)
    assert "4 finished before, skipped" in shown and "training" not in shown


SPACE = """\
optimizer.lr: {float: [1.0e-6, 0.3], log: true}   # plain SGD: the smallest rates learn nothing in 3 epochs
model.width: [16, 32]
"""


def test_a_tpe_search_with_the_median_pruner_stops_lagging_trials(tiny_config, tmp_path, capsys):
    (tmp_path / "space.yaml").write_text(SPACE)
    code = run_sweep(tiny_config, search=Path("space.yaml"), trials=5, sweep_dir=Path("search"), seed=3,
                     sets=["train.epochs=3", "optimizer.name=sgd", "optimizer.momentum=0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "tpe search of 5 trials in search, study 'search' in search/optuna-journal.log, pruner median" in out
    with open(tmp_path / "search" / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["trial"] for r in rows) == [f"trial-00{i}" for i in range(5)]
    assert {r["status"] for r in rows} == {"finished", "pruned"}

    study = journal_study(tmp_path / "search" / "optuna-journal.log", "search")
    assert len(study.trials) == 5
    for trial, row in zip(study.trials, sorted(rows, key=lambda r: r["trial"])):
        run = tmp_path / "search" / f"trial-00{trial.number}"
        m = metrics(run)
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert (config["optimizer"]["lr"], config["model"]["width"]) == (trial.params["optimizer.lr"],
                                                                          trial.params["model.width"])
        assert float(row["optimizer.lr"]) == trial.params["optimizer.lr"]
        # the study heard every epoch's validation accuracy, as metrics.json has it
        assert trial.intermediate_values == {e["epoch"]: e["val_accuracy"] for e in m["epochs"]}
        assert m["status"] == row["status"]
        if row["status"] == "pruned":
            assert trial.state == optuna.trial.TrialState.PRUNED
            assert 2 <= len(m["epochs"]) < 3 and "test" not in m  # never pruned at epoch 1 nor the last
            assert (run / "last.pth").is_file() and (run / "checkpoint.pth").is_file()
            assert f"pruned by the study after epoch {len(m['epochs'])}" in (run / "train.log").read_text()
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == m["best"]["val_accuracy"]
            assert len(m["epochs"]) == 3 and float(row["test_acc"]) == m["test"]["accuracy"]

    listed = run_mlp("runs", "search", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["status"] for r in json.loads(listed.stdout)) == sorted(r["status"] for r in rows)
    assert " pruned " in run_mlp("runs", "search").stdout


def test_a_stopped_then_killed_worker_leaves_a_trial_that_the_next_worker_resumes(tiny_config, tmp_path):
    args = ["--grid", "model.width=16", "--set", "train.epochs=8", "--set", "train.batch_size=16",
            "--sweep-dir", "sweep"]
    run = tmp_path / "sweep" / "width=16"

    # Ctrl-C or SIGTERM: the trial saves last.pth, the worker gives it back to the study
    worker = sweep_process(tiny_config, *args)
    wait_for(lambda: len(metrics(run).get("epochs", [])) >= 1, "the first epoch")
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 128 + signal.SIGTERM, out + err
    assert "sweep stopped by SIGTERM" in err and " interrupted " in table_rows(out)[0]
    first = len(metrics(run)["epochs"])
    assert metrics(run)["status"] == "interrupted" and first < 8

    # kill -9: the trial's process still gets SIGTERM and saves last.pth; nobody gave the trial back
    worker = sweep_process(tiny_config, *args)
    wait_for(lambda: len(metrics(run).get("epochs", [])) > first, "an epoch after the resume")
    worker.kill()
    worker.communicate(timeout=60)
    wait_for(lambda: metrics(run).get("status") == "interrupted", "the orphaned trial to save and stop")
    second = len(metrics(run)["epochs"])
    assert second < 8

    done = run_mlp(*["sweep", "--config", tiny_config, *args])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[1/1] resuming width=16" in done.stdout and " finished " in table_rows(done.stdout)[0]
    m = metrics(run)
    assert m["status"] == "finished" and [e["epoch"] for e in m["epochs"]] == list(range(1, 9))
    log = (run / "train.log").read_text()
    assert log.count("$ mlp train") == 3 and log.count("$ mlp train --no-progress --resume") == 2

    study = journal_study(tmp_path / "sweep" / "optuna-journal.log", "sweep")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    last = study.trials[-1]
    assert last.system_attrs["failed_trial"] == 0 and last.system_attrs["retry_history"] == [0, 1]
    assert last.intermediate_values == {e["epoch"]: e["val_accuracy"] for e in m["epochs"]}
    assert last.value == m["best"]["val_accuracy"]


def test_abandoned_trials_are_those_released_gone_or_silent():
    me, now = this_worker(), time.time()

    def trial(**attrs):
        return SimpleNamespace(system_attrs=attrs)

    elsewhere = {**me, "machine": "another-machine", "pid": 1}
    assert not is_abandoned(trial(), me, now)  # just taken: its worker is still writing who it is
    assert not is_abandoned(trial(**{"mlp:worker": me, "mlp:heartbeat": now}), me, now)
    assert not is_abandoned(trial(**{"mlp:worker": elsewhere, "mlp:heartbeat": now - 10}), me, now)
    assert is_abandoned(trial(**{"mlp:worker": elsewhere, "mlp:heartbeat": now - STALE_AFTER_S - 1}), me, now)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {**me, "pid": int(gone.stdout)}
    assert is_abandoned(trial(**{"mlp:worker": dead, "mlp:heartbeat": now}), me, now)
    assert is_abandoned(trial(**{"mlp:worker": me, "mlp:heartbeat": now, "mlp:released": True}), me, now)


# --- PostgreSQL: a real server in a temporary folder, on a loopback port --------------------------------

def _pg_program(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture
def postgres_url(postgres_server):
    return postgres_server.url


@pytest.fixture
def postgres_server():
    """A PostgreSQL server of this test's own: ``url``, and ``stop()`` to take it down at once."""
    initdb, pg_ctl = _pg_program("initdb"), _pg_program("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl); .ci/run installs it")
    if not any(importlib.util.find_spec(m) for m in ("psycopg", "psycopg2")):
        pytest.skip("no PostgreSQL driver: pip install '.[postgres]'")
    folder = Path(tempfile.mkdtemp(prefix="mlp-postgres-"))
    as_user = {}
    if os.geteuid() == 0:  # the server refuses to run as root
        account = pwd.getpwnam("postgres" if "postgres" in {p.pw_name for p in pwd.getpwall()} else "nobody")
        os.chown(folder, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*command):
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120, **as_user)
        assert done.returncode == 0, done.stdout + done.stderr

    try:
        run(initdb, "-D", str(folder / "data"), "-U", "mlp", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(pg_ctl, "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-w", "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        yield SimpleNamespace(url=f"postgresql://mlp@127.0.0.1:{port}/postgres",
                              stop=lambda: run(pg_ctl, "-D", str(folder / "data"), "-m", "immediate", "-w", "stop"))
    finally:
        if (folder / "data" / "postmaster.pid").exists():
            run(pg_ctl, "-D", str(folder / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_on_two_machines_share_a_postgresql_study(tiny_config, tmp_path, postgres_url, capsys):
    # two sweep folders, as two machines without a shared disk would have
    workers = [sweep_process(tiny_config, *GRID, "--storage", postgres_url, "--study", "shared",
                             "--sweep-dir", f"{machine}/sweep") for machine in ("a", "b")]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, out + err
        assert f"study 'shared' in {postgres_url}" in out
    for name in NAMES:
        logs = [tmp_path / machine / "sweep" / name / "train.log" for machine in ("a", "b")]
        assert sum(log.is_file() for log in logs) == 1, name  # trained on one machine only
        assert next(log for log in logs if log.is_file()).read_text().count("$ mlp train") == 1

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = [t for t in study.trials if t.user_attrs.get("status") != "surplus"]
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert run_sweep(tiny_config, GRID_ITEMS, sets=GRID_SETS, storage=postgres_url, study="shared",
                     sweep_dir=Path("a/sweep"), leaderboard_only=True) == 0
    rows = table_rows(capsys.readouterr().out)  # in this process: the leaderboard read from the database
    assert len(rows) == 4 and all(" finished " in row for row in rows)


def test_a_database_stopped_mid_sweep_is_one_line_and_the_trial_keeps_its_epochs(tiny_config, tmp_path,
                                                                                  postgres_server):
    run = tmp_path / "sweep" / "width=16"
    worker = sweep_process(tiny_config, "--grid", "model.width=16", "--set", "train.epochs=500",
                           "--storage", postgres_server.url, "--sweep-dir", "sweep")
    try:
        wait_for(lambda: len(metrics(run).get("epochs", [])) >= 1, "the first epoch")
        postgres_server.stop()
        out, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 2, out + err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "error: lost the study's storage (StorageInternalError: ")
    assert err.strip().splitlines()[-1].endswith("; run the same command again once it is back")
    assert (run / "last.pth").is_file()  # the run itself resumes once the database is back


# --- a journal after a kill -9 -----------------------------------------------------------------------------

def test_a_journal_lock_left_by_a_killed_process_is_taken_over_with_a_note(tmp_path, capsys):
    from mlp.sweep.storage import STALE_LOCK_S, open_storage

    journal = tmp_path / "optuna-journal.log"
    optuna.create_study(storage=open_storage(str(journal)), study_name="first")
    lock = tmp_path / "optuna-journal.log.lock"
    os.symlink(journal, lock)  # what a worker killed while writing leaves
    left = time.time() - STALE_LOCK_S - 5
    os.utime(lock, (left, left), follow_symlinks=False)
    optuna.create_study(storage=open_storage(str(journal)), study_name="second")
    err = capsys.readouterr().err
    assert f"note: {lock} was left " in err and "by a process killed while it wrote the study's journal" in err
    assert not os.path.lexists(lock)
    assert sorted(optuna.study.get_all_study_names(open_storage(str(journal)))) == ["first", "second"]


def test_a_journal_whose_last_line_was_cut_stays_readable_after_more_writes(tmp_path, capsys):
    from mlp.sweep.storage import open_storage

    journal = tmp_path / "optuna-journal.log"
    study = optuna.create_study(storage=open_storage(str(journal)), study_name="cut")
    study.set_user_attr("kept", 1)
    with open(journal, "ab") as f:
        f.write(b'{"op_code":5,"worker_id":"x","study_id":0,"user_attr":{"lo')  # killed in mid-write
    again = optuna.load_study(storage=open_storage(str(journal)), study_name="cut")
    again.set_user_attr("after", 2)  # the write that used to glue itself to the cut line
    read = optuna.load_study(storage=open_storage(str(journal)), study_name="cut")
    assert read.user_attrs == {"kept": 1, "after": 2}
    assert "note: the last line of" in capsys.readouterr().err


def test_a_damaged_journal_is_refused_in_one_line(tmp_path):
    from mlp.sweep.storage import open_storage

    journal = tmp_path / "optuna-journal.log"
    journal.write_bytes(b'{"op_code":0,"worker_id":"x","study_name":"a","directions":[1]}\n{"op_co\n{}\n')
    with pytest.raises(UserError) as raised:
        open_storage(str(journal))
    message = str(raised.value)
    assert message.startswith(f"--storage {journal}: not a readable Optuna journal file (") and "\n" not in message


# --- mistakes: one line, exit code 2, nothing started ----------------------------------------------------

@pytest.mark.parametrize("text,message", [
    ("- optimizer.lr\n", "expected a mapping of config keys"),
    ("optimizer.lr: {float: [0.1, 0.01]}\n", "optimizer.lr: float needs LOW < HIGH (got [0.1, 0.01])"),
    ("optimizer.lr: {float: [0, 0.1], log: true}\n", "log: true needs LOW > 0"),
    ("optimizer.lr: {float: [1.0e-4, 1.0e-2], log: true, step: 0.001}\n", "give log: true or step, not both"),
    ("model.depth: {int: [1, 2.5]}\n", "int needs [LOW, HIGH], two whole numbers"),
    ("model.width: {choice: []}\n", "choices must be a non-empty list"),
    ("model.width: [16, 16]\n", "lists 16 more than once"),
    ("model.width: {int: [1, 4], choice: [1]}\n", "exactly one of float, int or choice"),
    ("model.width: {int: [1, 4], lg: true}\n", "unknown field lg"),
    ("model..width: [1, 2]\n", "not a dotted config key"),
    ("optimizer.lr: 0.1\n", "give {float: [LOW, HIGH]}"),
    ("optimizer.lr: [0.1\n", "not valid YAML (line"),
])
def test_search_space_mistakes(tmp_path, text, message):
    (tmp_path / "space.yaml").write_text(text)
    with pytest.raises(UserError) as raised:
        load_space(Path("space.yaml"))
    assert str(raised.value).startswith("--search space.yaml: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_search_space_file_reads_ranges_and_choices(tmp_path):
    (tmp_path / "space.yaml").write_text(
        "optimizer.lr: {float: [1.0e-4, 1.0e-2], log: true}\nmodel.depth: {int: [1, 3]}\n"
        "train.label_smoothing: {float: [0, 0.2], step: 0.1}\n"
        "model.activation: [relu, {name: leaky_relu, negative_slope: 0.1}]\n")
    space = load_space(Path("space.yaml"))
    assert [(p.key, p.kind) for p in space.params] == [
        ("optimizer.lr", "float"), ("model.depth", "int"), ("train.label_smoothing", "float"), ("model.activation", "choice")]
    assert space.params[2].low == 0.0 and space.params[2].step == 0.1
    assert space.params[3].choices == ["relu", "{name: leaky_relu, negative_slope: 0.1}"]  # Optuna stores text
    assert space.overrides({"optimizer.lr": 0.00123, "model.depth": 2, "train.label_smoothing": 0.1,
                            "model.activation": space.params[3].choices[1]}) == [
        "optimizer.lr=0.00123", "model.depth=2", "train.label_smoothing=0.1",
        "model.activation={name: leaky_relu, negative_slope: 0.1}"]


@pytest.mark.parametrize("kwargs,message", [
    ({"search": Path("space.yaml")}, "--search needs --trials N"),
    ({"search": Path("space.yaml"), "grid": ["model.width=16,32"], "trials": 2}, "give --grid or --search, not both"),
    ({"grid": ["model.width=16,32"], "trials": 2}, "--trials is for --search"),
    ({"grid": ["model.width=16,32"], "sampler": "random"}, "--sampler and --seed are for --search"),
    ({}, "give --grid KEY=V1,V2"),
    ({"search": Path("space.yaml"), "trials": 2, "sets": ["model.width=8"]},
     "model.width is both in --set and in --search space.yaml; keep one"),
    ({"grid": ["model.width=16"], "sets": ["data.val_size=0"]}, "trial width=16: data.val_size is 0, but a sweep"),
    ({"grid": ["model.width=16"], "storage": "."}, "--storage . is a folder"),
    ({"grid": ["model.width=16"], "storage": "nowhere/study.log"}, "--storage nowhere/study.log: there is no folder nowhere"),
    ({"grid": ["model.width=16"], "storage": "mysql://mlp:secret@127.0.0.1:9/db"},
     "--storage mysql://mlp:***@127.0.0.1:9/db: the database driver MySQLdb is not installed"),
])
def test_sweep_mistakes_stop_it_before_any_trial(tiny_config, tmp_path, kwargs, message):
    (tmp_path / "space.yaml").write_text("model.width: [16, 32]\n")
    with pytest.raises(UserError) as raised:
        run_sweep(tiny_config, sweep_dir=Path("sweep"), **kwargs)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert not (tmp_path / "sweep").exists() or "storage" in kwargs


def test_a_search_value_the_config_refuses_is_one_line_on_the_command_line(tiny_config, tmp_path):
    (tmp_path / "bad.yaml").write_text("model.activation: [relu, bogus]\n")
    done = run_mlp("sweep", "--config", tiny_config.name, "--search", "bad.yaml", "--trials", "2")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: --search bad.yaml: model.activation=bogus: tiny.yaml: model.activation: "
                                  "unknown activation 'bogus'")
    assert not (tmp_path / "runs").exists()


def test_a_study_made_by_another_sweep_is_refused(tiny_config, tmp_path):
    first = run_mlp("sweep", "--config", tiny_config, "--grid", "model.width=16,32", "--sweep-dir", "sweep",
                    "--leaderboard-only")
    assert first.returncode == 0 and len(table_rows(first.stdout)) == 2 and "not started" in first.stdout
    other = run_mlp("sweep", "--config", tiny_config, "--grid", "model.width=16,64", "--sweep-dir", "sweep")
    assert other.returncode == 2
    assert other.stderr == ("error: study 'sweep' in sweep/optuna-journal.log belongs to a different sweep "
                            "(it differs in: space); run the same command as its other workers, or give "
                            "another --study name\n")
    # in this process, what needs no look at the command line's exit code or stderr
    assert run_sweep(tiny_config, ["model.width=16,64"], sweep_dir=Path("sweep"), study="wider",
                     leaderboard_only=True) == 0

    # a search may be extended with more trials, not changed otherwise
    (tmp_path / "space.yaml").write_text("model.width: [16, 32]\n")
    for trials in (2, 4):
        assert run_sweep(tiny_config, search=Path("space.yaml"), trials=trials, sweep_dir=Path("search"),
                         leaderboard_only=True) == 0
    search = ["sweep", "--config", tiny_config, "--search", "space.yaml", "--sweep-dir", "search", "--leaderboard-only"]
    changed = run_mlp(*search, "--trials", "4", "--pruner", "halving")
    assert changed.returncode == 2 and "(it differs in: pruner)" in changed.stderr
