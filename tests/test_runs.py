"""`mlp runs`: run folders found under a folder, read from their files, sorted, printed."""

import json

import pytest
import yaml

from conftest import run_mlp
from mlp.errors import UserError
from mlp.commands.runs import COLUMNS, format_runs, list_runs


def _run(folder, width, lr, val, test, status="finished", activation="relu"):
    folder.mkdir(parents=True)
    config = {"name": folder.name, "data": {"dataset": "mnist"},
              "model": {"width": width, "depth": len(width) if isinstance(width, list) else 1,
                        "activation": activation},
              "train": {"epochs": 3}, "optimizer": {"name": "adam", "lr": lr}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    epochs = [{"epoch": 1, "train_time_s": 1.5, "val_accuracy": val}, {"epoch": 2, "train_time_s": 2.0}]
    metrics = {"status": status, "epochs": epochs, "best": {"epoch": 1, "val_accuracy": val}}
    if test is not None:
        metrics["test"] = {"accuracy": test}
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    _run(root / "a", 512, 0.001, 0.95, 0.94)
    _run(root / "b", [256, 128], 0.01, 0.97, None, status="interrupted",
         activation={"name": "leaky_relu", "negative_slope": 0.1})
    _run(root / "sweep" / "width=64", 64, 0.003, 0.90, 0.91)
    (root / "c").mkdir()
    (root / "c" / "config.yaml").write_text(yaml.safe_dump({"model": {"width": 32}}))  # still in epoch 1
    return root


def test_runs_are_found_read_and_sorted(runs):
    listed = list_runs(runs)
    assert [r["run"] for r in listed] == ["a", "b", "c", "sweep/width=64"]
    a = listed[0]
    assert (a["dataset"], a["activation"], a["width"], a["lr"], a["optimizer"]) == ("mnist", "relu", 512, 0.001, "adam")
    assert (a["epochs_done"], a["epochs"], a["best_val_acc"], a["test_acc"], a["train_time_s"]) == (2, 3, 0.95, 0.94, 3.5)
    assert listed[2]["status"] == "started" and listed[2]["best_val_acc"] is None
    assert [r["run"] for r in list_runs(runs, "best_val_acc")] == ["b", "a", "sweep/width=64", "c"]
    assert [r["run"] for r in list_runs(runs, "test_acc")] == ["a", "sweep/width=64", "b", "c"]
    assert [r["run"] for r in list_runs(runs, "width")] == ["c", "sweep/width=64", "b", "a"]

    table = format_runs(listed).splitlines()
    assert table[0].split()[:3] == ["run", "status", "dataset"]
    row_b = next(line for line in table if line.startswith("b "))
    assert "leaky_relu(negative_slope=0.1)" in row_b and "256-128" in row_b and "97.00%" in row_b
    assert "2/3" in row_b and "3.50s" in row_b


def test_runs_errors(runs, tmp_path):
    with pytest.raises(UserError, match="--sort test_accuracy: no such column; did you mean .test_acc."):
        list_runs(runs, "test_accuracy")
    with pytest.raises(UserError, match="no folder"):
        list_runs(tmp_path / "nowhere")


def test_runs_command(runs):
    shown = run_mlp("runs", "--sort", "test_acc")
    assert shown.returncode == 0 and shown.stdout.splitlines()[2].startswith("a ")
    as_json = json.loads(run_mlp("runs", "runs/sweep", "--json").stdout)
    assert [r["run"] for r in as_json] == ["width=64"] and as_json[0]["test_acc"] == 0.91
    assert run_mlp("runs", "--sort", "bogus").returncode == 2


def test_a_config_yaml_that_is_not_a_run_is_skipped(tmp_path):
    from mlp.commands.runs import list_runs

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "config.yaml").write_text("- a list\n- not a run\n")
    (tmp_path / "odd" / "config.yaml").mkdir(parents=True)  # a folder with that name
    assert list_runs(tmp_path) == []


def test_another_tools_config_is_skipped_and_a_damaged_run_is_marked(runs):
    """A config whose sections are not mappings is another tool's: skipped.  An mlp run whose
    metrics.json has the wrong shape is listed as unreadable, and why is said on stderr."""
    (runs / "resnet").mkdir()
    (runs / "resnet" / "config.yaml").write_text("model: resnet50\ntrain: {epochs: 3}\n")
    _run(runs / "odd_best", 32, 0.1, 0.5, None)
    metrics = json.loads((runs / "odd_best" / "metrics.json").read_text())
    (runs / "odd_best" / "metrics.json").write_text(json.dumps({**metrics, "best": 5}))
    _run(runs / "odd_epochs", 32, 0.1, 0.5, None)
    (runs / "odd_epochs" / "metrics.json").write_text(json.dumps({**metrics, "epochs": "many"}))
    listed = {r["run"]: r["status"] for r in list_runs(runs)}
    assert listed == {"a": "finished", "b": "interrupted", "c": "started", "odd_best": "unreadable",
                      "odd_epochs": "unreadable", "sweep/width=64": "finished"}
    shown = run_mlp("runs")
    assert shown.returncode == 0, shown.stderr
    assert [line.split()[0] for line in shown.stdout.splitlines()[2:]] == [
        "a", "b", "c", "odd_best", "odd_epochs", "sweep/width=64"]
    assert "metrics.json: best is 5, not a mapping" in shown.stderr


# Damage that used to end `mlp runs` with a traceback or hide every other run.
DAMAGE = {
    "metrics.json": ['{"status": "finished", "best": {"val_accuracy": "high"}}',  # a string for a number
                     '{"epochs": [{"train_time_s": "1.5s"}]}',  # summed as a time
                     '{"status": ["finished"]}',  # sorted and shown as text
                     '{"test": {"accuracy": true}}',  # a bool is not a number
                     '{"status": "finished", "epochs": [',  # cut short
                     '[1, 2, 3]',  # not a mapping
                     '\udcff'],  # not UTF-8 (written as bytes below)
    "config.yaml": ["model: {width: [64, x]}\n", "model: {width: 64, width: 32}\n", "optimizer: {lr: fast}\n",
                    "model: {activation: [relu]}\n", "train: {epochs: 2.5}\n", "model: {width: [64\n",
                    "a: &a [*a, *a]\nmodel: {width: *a}\n"],
}


def test_damaged_runs_are_listed_as_unreadable_and_the_others_still_show(runs):
    damaged = []
    for file, contents in DAMAGE.items():
        for i, text in enumerate(contents):
            folder = runs / "damaged" / f"{file.split('.')[0]}{i}"
            _run(folder, 32, 0.1, 0.5, 0.4)
            data = text.encode("utf-8", "surrogateescape")
            (folder / file).write_bytes(data)
            damaged.append(f"damaged/{folder.name}")
    for sort in ("run", "status", "best_val_acc", "test_acc", "width", "lr", "activation", "train_time_s", "epochs_done"):
        listed = {r["run"]: r["status"] for r in list_runs(runs, sort)}
        assert {run: listed[run] for run in damaged} == dict.fromkeys(damaged, "unreadable"), sort
        assert listed["a"] == "finished" and listed["sweep/width=64"] == "finished"
    shown = run_mlp("runs", "--sort", "test_acc")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    rows = {line.split()[0]: line.split()[1] for line in shown.stdout.splitlines()[2:]}
    assert rows["a"] == "finished" and all(rows[run] == "unreadable" for run in damaged)
    notes = shown.stderr.strip().splitlines()
    assert len(notes) == len(damaged) and all(" is unreadable: " in note for note in notes)
    assert any("best.val_accuracy is 'high', not a number" in note for note in notes)
    assert any("key 'width' is given twice" in note for note in notes)
    as_json = json.loads(run_mlp("runs", "--json").stdout)
    assert sum(1 for r in as_json if r["status"] == "unreadable" and r["error"]) == len(damaged)


def test_sort_accepts_the_titles_the_header_shows(runs):
    header = format_runs(list_runs(runs)).splitlines()[0]
    for key, title in COLUMNS.items():
        assert title in header
        assert list_runs(runs, title) == list_runs(runs, key), title
    assert [r["run"] for r in list_runs(runs, "Test Acc")] == ["a", "sweep/width=64", "b", "c"]
    assert [r["run"] for r in list_runs(runs, "best-val-acc")] == ["b", "a", "sweep/width=64", "c"]
    with pytest.raises(UserError, match="choose one of the header's titles: run, .*'test acc'"):
        list_runs(runs, "colour")
    shown = run_mlp("runs", "--sort", "test acc")
    assert shown.returncode == 0 and shown.stdout.splitlines()[2].startswith("a ")
