"""Grid sweeps: real trials on the fabricated data, the leaderboard, skipping, failures, bad grids."""

import csv
import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import run_mlp
from mlp.errors import UserError
from mlp.commands.runs import format_runs, list_runs
from mlp.sweep.space import parse_grid
from mlp.sweep.runner import plan_sweep, plan_trials, run_sweep, trial_state

# Plain SGD for one epoch leaves the fabricated data unsolved, so the trials' accuracies differ.
HARD = ["train.epochs=1", "optimizer.name=sgd", "optimizer.momentum=0"]

# The sweeps below run in this process (each trial is still its own `mlp train` process);
# the command line itself is exercised by the bad-grid test.


def test_two_by_two_sweep_leaves_four_runs_and_a_leaderboard_and_runs_lists_them(tiny_config, tmp_path, capsys):
    def sweep_once():
        return run_sweep(tiny_config, ["optimizer.lr=0.001,0.005", "model.width=16,32"], sets=HARD,
                         sweep_dir=Path("sweep"), jobs=2)

    assert sweep_once() == 0
    out = capsys.readouterr().out
    names = {"lr=0.001,width=16", "lr=0.001,width=32", "lr=0.005,width=16", "lr=0.005,width=32"}
    sweep = tmp_path / "sweep"
    assert {p.name for p in sweep.iterdir() if p.is_dir()} == names
    assert (sweep / "optuna-journal.log").is_file()  # the study, next to its trials
    metrics = {name: json.loads((sweep / name / "metrics.json").read_text()) for name in names}
    assert all(m["status"] == "finished" for m in metrics.values())
    assert all((sweep / name / "checkpoint.pth").is_file() for name in names)

    with open(sweep / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["trial"] for r in rows} == names
    assert list(rows[0]) == ["trial", "optimizer.lr", "model.width", "status", "epochs_done", "best_val_acc",
                             "test_acc", "train_time_s", "host"]
    for row in rows:
        m = metrics[row["trial"]]
        assert float(row["best_val_acc"]) == m["best"]["val_accuracy"]
        assert float(row["test_acc"]) == m["test"]["accuracy"]
        assert (row["status"], row["epochs_done"]) == ("finished", "1")
        config = yaml.safe_load((sweep / row["trial"] / "config.yaml").read_text())
        assert (config["optimizer"]["lr"], config["model"]["width"]) == (float(row["optimizer.lr"]),
                                                                          int(row["model.width"]))
    val = [float(r["best_val_acc"]) for r in rows]
    assert val == sorted(val, reverse=True) and len(set(val)) > 1
    markdown = (sweep / "leaderboard.md").read_text().splitlines()
    assert len(markdown) == 2 + 4 and markdown[0].startswith("| trial | optimizer.lr | model.width |")
    assert all(name in out for name in names) and f"{val[0]:.2%}" in out

    listed = run_mlp("runs", "sweep", "--json", "--sort", "best_val_acc")
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert {r["run"] for r in runs} == names and [r["best_val_acc"] for r in runs] == val
    assert {(r["lr"], r["width"]) for r in runs} == {(0.001, 16), (0.001, 32), (0.005, 16), (0.005, 32)}
    assert set(list(rows[0])[3:-1]) <= set(runs[0])  # the leaderboard's columns are named as in `mlp runs --json`
    table = format_runs(list_runs(sweep))
    assert all(name in table for name in names) and "best val acc" in table

    # the same sweep again trains nothing
    stamps = {name: (sweep / name / "checkpoint.pth").stat().st_mtime_ns for name in names}
    assert sweep_once() == 0 and "4 finished before, skipped" in capsys.readouterr().out
    assert stamps == {name: (sweep / name / "checkpoint.pth").stat().st_mtime_ns for name in names}


def test_a_failing_trial_is_reported_the_rest_go_on_and_nothing_is_trained_again(tiny_config, tmp_path, capsys):
    def sweep(*values):
        return run_sweep(tiny_config, [f"data.val_size={','.join(values)}"], sets=["train.epochs=1"],
                         sweep_dir=Path("sweep"))

    assert sweep("5000", "100") == 1
    done = capsys.readouterr()
    assert "trial val_size=5000 failed (exit 2): error: data.val_size is 5000" in done.err
    assert "Traceback" not in done.out + done.err
    trial = tmp_path / "sweep" / "val_size=100"
    assert json.loads((trial / "metrics.json").read_text())["status"] == "finished"
    with open(tmp_path / "sweep" / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["trial"], r["status"]) for r in rows] == [("val_size=100", "finished"), ("val_size=5000", "failed")]

    # the study remembers both: the same sweep again trains nothing and still reports the failure
    assert sweep("5000", "100") == 1
    again = capsys.readouterr()
    assert "1 finished, 1 failed before, skipped" in again.out and "training" not in again.out
    assert (trial / "train.log").read_text().count("$ mlp train") == 1


def test_an_invalid_grid_value_stops_the_sweep_before_any_trial(tiny_config, tmp_path):
    done = run_mlp("sweep", "--config", tiny_config, "--grid", "model.activation=relu,bogus",
                   "--grid", "model.width=16,32", "--sweep-dir", "sweep")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "unknown activation 'bogus'" in done.stderr
    assert "activation=bogus" in done.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("items,message", [
    (["model.width"], "--grid expects KEY=V1,V2"),
    (["model.width=64,,128"], "--grid expects KEY=V1,V2"),
    (["model.width=64,64"], "lists 64 more than once"),
    (["model.width=64", "model.width=128"], "given twice"),
    (["model..width=64"], "not a dotted config key"),
])
def test_grid_syntax_errors(items, message):
    with pytest.raises(UserError, match=message):
        parse_grid(items)


def test_grid_values_may_be_lists_and_mappings_and_names_stay_apart(tiny_config, tmp_path):
    grid = parse_grid(["model.width=[64, 32],16", "model.activation=relu,{name: leaky_relu, negative_slope: 0.2}",
                       "optimizer.name=adam,sgd", "scheduler.name=none,cosine"])
    choices = {p.key: p.choices for p in grid.params}
    assert choices["model.width"] == ["[64, 32]", "16"]
    assert choices["model.activation"] == ["relu", "{name: leaky_relu, negative_slope: 0.2}"]
    trials = plan_trials(plan_sweep(tiny_config, grid, None, [], tmp_path / "sweep"))
    assert len(trials) == 16
    names = {t.name for t in trials}
    assert "width=64_32,activation=name_leaky_relu_negative_slope_0.2,optimizer.name=sgd,scheduler.name=cosine" in names
    assert len(names) == 16


def test_a_trial_folder_holding_another_config_is_refused(tiny_config, tmp_path):
    folder = tmp_path / "sweep" / "width=32"  # the second trial's folder
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("name: other\n")
    with pytest.raises(UserError, match="holds a run with a different config"):
        run_sweep(tiny_config, ["model.width=16,32"], sweep_dir=tmp_path / "sweep")
    # refused before any trial ran: the first trial's folder was not even made
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["width=32"]


def test_a_key_in_both_set_and_grid_is_refused(tiny_config, tmp_path):
    with pytest.raises(UserError, match="model.width is both in --set and in --grid"):
        plan_sweep(tiny_config, parse_grid(["model.width=16,32"]), None, ["model.width=8"], tmp_path)


def test_a_diverged_trial_found_in_its_folder_is_recorded_not_resumed(tiny_config, tmp_path, capsys):
    # as if its worker had trained it and died before telling the study
    [trial] = plan_trials(plan_sweep(tiny_config, parse_grid(["model.width=16"]), None, [], Path("sweep")))
    trial.run_dir.mkdir(parents=True)
    (trial.run_dir / "config.yaml").write_text(trial.config_yaml)
    (trial.run_dir / "last.pth").write_bytes(b"")  # never read: the trial is not resumed
    epochs = [{"epoch": 1, "train_time_s": 0.5, "val_accuracy": 0.25}]
    (trial.run_dir / "metrics.json").write_text(json.dumps({"status": "diverged", "epochs": epochs,
                                                            "best": {"epoch": 1, "val_accuracy": 0.25}}))
    assert trial_state(trial) == "diverged"
    assert run_sweep(tiny_config, ["model.width=16"], sweep_dir=Path("sweep")) == 1
    out = capsys.readouterr().out
    assert "width=16: diverged in sweep/width=16 already, recorded" in out
    assert "resuming" not in out and "training" not in out
    assert not (trial.run_dir / "train.log").exists()
    with open(tmp_path / "sweep" / "leaderboard.csv", newline="") as f:
        [row] = list(csv.DictReader(f))
    assert (row["trial"], row["status"], row["best_val_acc"]) == ("width=16", "diverged", "0.25")


def test_a_sweep_dir_that_is_a_file_or_cannot_be_made_is_a_user_error(tiny_config, tmp_path, monkeypatch):
    (tmp_path / "taken").write_text("a file\n")
    done = run_mlp("sweep", "--config", tiny_config, "--grid", "model.width=16,32", "--sweep-dir", "taken")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == "error: --sweep-dir taken is a file, not a folder\n"

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(UserError, match="--sweep-dir locked/sweep: cannot make the folder: permission denied"):
        run_sweep(tiny_config, ["model.width=16"], sweep_dir=Path("locked/sweep"))


def test_an_unwritable_sweep_dir_is_a_user_error(tiny_config, tmp_path, monkeypatch):
    # The permission check is patched rather than made with chmod, which root (CI) ignores.
    (tmp_path / "sweep").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path).name == "sweep"
                        else real_access(path, mode, **kw))
    with pytest.raises(UserError, match="--sweep-dir sweep is not writable"):
        run_sweep(tiny_config, ["model.width=16"], sweep_dir=Path("sweep"))


def test_each_sweep_gets_a_folder_of_its_own_and_its_leaderboard_reads_from_the_folder(tiny_config, tmp_path, capsys):
    one = ["train.epochs=1", "model.depth=1"]
    assert run_sweep(tiny_config, ["model.width=16"], sets=one) == 0
    assert run_sweep(tiny_config, ["model.width=32"], sets=one) == 0
    folders = sorted(p for p in (tmp_path / "runs").iterdir())
    assert len(folders) == 2 and all(p.name.startswith("tiny-sweep-") for p in folders)
    trials = [{row["trial"] for row in csv.DictReader(open(p / "leaderboard.csv"))} for p in folders]
    assert sorted(map(sorted, trials)) == [["width=16"], ["width=32"]]  # neither overwrote the other
    capsys.readouterr()

    assert run_sweep(tiny_config, ["model.width=16"], sets=one) == 0  # the same command finds its folder again
    assert "(1 finished before, skipped)" in capsys.readouterr().out
    assert len(list((tmp_path / "runs").iterdir())) == 2

    folder = next(p for p, names in zip(folders, trials) if names == {"width=32"})
    shown = run_mlp("sweep", "--leaderboard-only", "--sweep-dir", folder)
    assert shown.returncode == 0, shown.stderr
    assert f"grid of 1 trial in {folder}" in shown.stdout and "width=32" in shown.stdout
    assert " finished " in shown.stdout and "width=16" not in shown.stdout
    none = run_mlp("sweep", "--leaderboard-only", "--sweep-dir", "nowhere")
    assert none.returncode == 2 and none.stderr.startswith("error: --sweep-dir nowhere: no sweep there")
