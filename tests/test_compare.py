"""`mlp compare`: real runs on the fabricated data, summary.json, the report (also in a real
browser), findings that follow the numbers, rerunning, resuming, bad input; the real MNIST (slow)."""

import base64
from markupsafe import escape
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import REAL_DATA_ROOT, run_mlp, start_mlp
from mlp.comparison.plan import run_compare
from mlp.comparison.findings import findings
from mlp.comparison.report import render
from mlp.observe.comparison_figures import draw_all

SMALL = ["model.depth=3", "model.width=32", "train.epochs=1"]


def _images(page: str) -> list[Image.Image]:
    sources = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    return [Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))) for s in sources]


def test_compare_trains_each_activation_and_writes_summary_and_report(tiny_config, tmp_path, capsys):
    assert run_compare(tiny_config, "relu,tanh,sigmoid", SMALL, Path("cmp"), jobs=1) == 0
    out = capsys.readouterr().out
    assert "cmp/report.html" in out and "cmp/summary.json" in out and "tensorboard --logdir cmp" in out
    assert "[1/3] training relu" in out and "[3/3] training sigmoid" in out
    assert out.index("report   building it from the 3 runs") < out.index("cmp/report.html")
    summary = json.loads((tmp_path / "cmp/summary.json").read_text())
    assert list(summary["runs"]) == ["relu", "tanh", "sigmoid"] and summary["depth"] == 3
    for name, run in summary["runs"].items():
        assert run["status"] == "finished" and 0.0 <= run["test_accuracy"]["mean"] <= 1.0
        assert {"init", "first", "epoch 1", "last"} <= set(run["signal"]) and all(len(v) == 3 for v in run["signal"].values())
        assert all(s > 0 for s in run["signal"]["first"]) and len(run["inactive_max"]) == 3
        assert run["settings"] == {"model.activation": name} and len(run["run_dirs"]) == 1
        assert Path(run["run_dirs"][0]) == Path("cmp") / name and (tmp_path / run["run_dirs"][0] / "checkpoint.pth").is_file()
        assert len(run["mean_output"]["init"]) == 3 and len(run["zero_share"]["last"]) == 3
        config = yaml.safe_load((tmp_path / run["run_dirs"][0] / "config.yaml").read_text())
        assert config["model"]["activation"] == name and config["model"]["init"] == "auto"
        assert config["seed"] == 0 and config["model"]["depth"] == 3 and config["train"]["diagnostics"] == "step"
    assert [r["init"] for r in summary["runs"].values()] == ["auto: He", "auto: Glorot", "auto: Glorot"]
    assert summary["varied"] == ["model.activation"] and summary["seeds"] == 1 and summary["findings"]
    assert summary["runs"]["sigmoid"]["signal_ratio"]["first"] < summary["runs"]["relu"]["signal_ratio"]["first"]

    page = (tmp_path / "cmp/report.html").read_text()
    assert "<script" not in page and not re.search(r"(src|href)=['\"]?https?:", page)  # nothing fetched
    images = _images(page)
    assert len(images) == 6
    assert all(round(im.info["dpi"][0]) == 150 and im.width >= 1000 for im in images)
    said = findings(summary)
    assert len(said) >= 4 and all(str(escape(sentence)) in page for sentence in said)
    assert all(f"</span>{name}</td>" in page for name in ("relu", "tanh", "sigmoid"))  # the table

    # each run is a normal run: mlp runs lists it with its diagnostics, mlp eval reads it
    listed = json.loads(run_mlp("runs", "cmp", "--json").stdout)
    assert sorted(r["run"] for r in listed) == ["relu", "sigmoid", "tanh"]
    assert all(r["inactive_max"] is not None and r["signal_ratio"] > 0 for r in listed)
    table = run_mlp("runs", "cmp").stdout
    assert "inactive max" in table and "signal 1/L" in table
    evaluated = run_mlp("eval", "cmp/tanh/checkpoint.pth", "--json")
    assert json.loads(evaluated.stdout)["accuracy"] == summary["runs"]["tanh"]["test_accuracy"]["mean"]

    # the same command again reuses the finished runs; an interrupted one is resumed
    checkpoint = tmp_path / "cmp/relu/checkpoint.pth"
    before = checkpoint.stat().st_mtime_ns
    metrics_file = tmp_path / "cmp/tanh/metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics_file.write_text(json.dumps({**metrics, "status": "interrupted"}))
    assert run_compare(tiny_config, "relu,tanh,sigmoid", SMALL, Path("cmp"), jobs=1) == 0
    out = capsys.readouterr().out
    assert "reusing relu, sigmoid" in out and "resuming tanh" in out
    assert checkpoint.stat().st_mtime_ns == before
    assert json.loads(metrics_file.read_text())["status"] == "finished"


def test_compare_trains_in_parallel_processes_from_the_command_line(tiny_config, tmp_path):
    done = run_mlp("compare", "-c", tiny_config, "-a", "gelu,selu", "--out", "par", "--jobs", "2",
                   *[a for s in SMALL for a in ("--set", s)], timeout=600)
    assert done.returncode == 0, done.stderr
    assert "2 at a time" in done.stdout and "par/report.html" in done.stdout
    assert "[1/2] training gelu" in done.stdout and "[2/2] training selu" in done.stdout
    summary = json.loads((tmp_path / "par/summary.json").read_text())
    assert [r["status"] for r in summary["runs"].values()] == ["finished", "finished"]
    assert (tmp_path / "par/gelu/train.log").read_text().count("epoch 1/1") == 1


@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_stops_a_compare_with_its_finished_epochs_saved(tmp_path, jobs):
    import signal
    import time

    from conftest import write_config
    from mlp.comparison.plan import plan

    config = write_config(tmp_path / "long.yaml", {"train": {"epochs": 500}})
    proc = start_mlp("compare", "-c", config, "-a", "relu,tanh,sigmoid", "--out", "cmp", "--jobs", str(jobs),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = ["relu", "tanh"][:jobs]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / "cmp" / a / "last.pth").is_file() for a in started):  # an epoch is done
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C reaches it (the workers have sessions of their own)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "run the same command again to continue" in err
    assert all(f"{a:<11} interrupted: stopped by SIGINT" in out for a in started) and "sigmoid" not in out
    states = [r.state for r in plan(config, ["relu", "tanh", "sigmoid"], [], Path("cmp"))]
    assert states == ["resume"] * jobs + ["new"] * (3 - jobs)  # the next run never started


def _lock_free(run_dir: Path) -> bool:
    """Whether no process holds the run's lock any more (a process that ended, even unreaped, does not)."""
    import fcntl

    with open(run_dir / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


@pytest.mark.parametrize("signum, jobs", [("SIGKILL", 2), ("SIGHUP", 1)])
def test_a_compare_killed_hard_takes_its_trainings_with_it_and_the_same_command_goes_on(tmp_path, signum, jobs):
    import signal
    import sys
    import time

    from conftest import write_config

    config = write_config(tmp_path / "long.yaml", {"train": {"epochs": 500}})
    command = [sys.executable, "-m", "mlp", "compare", "-c", str(config), "-a", "relu,tanh", "--out", "cmp",
               "--jobs", str(jobs)]
    started = [tmp_path / "cmp" / a for a in ["relu", "tanh"][:jobs]]

    def wait(condition, what):
        deadline = time.monotonic() + 120
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)

    def epochs(run):
        try:
            return len(json.loads((run / "metrics.json").read_text())["epochs"])
        except (OSError, ValueError, KeyError):
            return 0

    proc = start_mlp(*command[3:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait(lambda: all(epochs(run) >= 1 for run in started), "an epoch of each run")
        proc.send_signal(getattr(signal, signum))
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -getattr(signal, signum)
    # its trainings got SIGTERM: each saved last.pth, said so in metrics.json and let go of its folder
    wait(lambda: all(_lock_free(run) for run in started), "the trainings to end")
    statuses = {run.name: json.loads((run / "metrics.json").read_text())["status"] for run in started}
    assert set(statuses.values()) == {"interrupted"}, (statuses, {run.name: (run / "train.log").read_text()[-600:]
                                                                 for run in started})
    before = epochs(started[0])

    again = start_mlp(*command[3:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait(lambda: epochs(started[0]) > before, "an epoch after the resume")
        again.send_signal(signal.SIGINT)
        out, err = again.communicate(timeout=120)
    finally:
        again.kill()
    assert again.returncode == 130, out + err
    assert "resuming relu" in out and "in use by another mlp process" not in out + err


@pytest.mark.parametrize("args, message", [
    (["-a", "relu,relu7"], "--activations: unknown activation 'relu7'"),
    (["-a", ","], "--activations expects names"),
    (["--set", "model.activation=tanh"], "mlp compare sets this itself"),
    (["--set", "model.widht=3"], "did you mean 'model.width'"),
])
def test_compare_bad_input_is_one_line_and_exit_2(tiny_config, args, message):
    done = run_mlp("compare", "-c", tiny_config, "--out", "bad", *args)
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_compare_refuses_a_folder_holding_other_runs(tiny_config, tmp_path):
    assert run_compare(tiny_config, "relu", SMALL, Path("cmp"), jobs=1) == 0
    done = run_mlp("compare", "-c", tiny_config, "-a", "relu", "--out", "cmp", "--set", "model.depth=2")
    assert done.returncode == 2 and "cmp/relu holds a run with a different config" in done.stderr


# ---------------------------------------------------------------------------------------------
# the report from fabricated numbers: findings follow them, the page renders


def _summary(ratios=None, accuracy=None, inactive=None, depth=4, seeds=1, spread=0.0):
    """A summary.json's content for relu, tanh and sigmoid, from the numbers given (``spread``: each
    condition's accuracy range over the seeds is its mean ± this)."""
    ratios = ratios or {"relu": 0.8, "tanh": 0.3, "sigmoid": 1 / 120}
    accuracy = accuracy or {"relu": 0.97, "tanh": 0.95, "sigmoid": 0.62}
    inactive = inactive or {"relu": [0.0, 0.12, 0.0, 0.01], "tanh": [0.0] * depth, "sigmoid": [0.0] * depth}
    runs = {}
    for i, a in enumerate(ratios):
        last_layer = 0.05
        signal = [last_layer * ratios[a] ** ((depth - 1 - k) / (depth - 1)) for k in range(depth)]
        moments = lambda v: {"init": v, "first": v, "epoch 1": v, "last": v}
        stat = lambda v, d=0.0: {"mean": v, "min": v - d, "max": v + d}
        dead = inactive[a] if a == "relu" else [0.0] * depth
        saturated = inactive[a] if a != "relu" else [0.0] * depth
        runs[a] = {
            "settings": {"model.activation": a}, "run_dirs": [f"cmp/{a}"], "seeds": list(range(seeds)),
            "status": "finished", "activation": a, "init": "auto: He" if a == "relu" else "auto: Glorot",
            "test_accuracy": stat(accuracy[a], spread), "test_loss": stat(0.1 + i),
            "final_train_loss": stat(0.1 * (i + 1)), "train_time_s": stat(10.0 + i), "parameters": 1234,
            "init_loss": stat(2.3 + i), "init_accuracy": stat(0.1),
            "signal": moments(signal), "weight_grad_rms": moments([s / 10 for s in signal]),
            "update_ratio": moments([1e-3] * depth), "mean_output": moments([0.1] * depth),
            "zero_share": moments([0.0] * depth), "spread": moments([0.3] * depth),
            "inactive": moments(inactive[a]), "dead": moments(dead), "saturated": moments(saturated), "negative": {},
            "inactive_max": inactive[a], "dead_max": dead, "saturated_max": saturated, "negative_max": [],
            "spread_min": [0.3] * depth, "collapsed": [False] * depth,
            "signal_ratio": {"init": ratios[a], "first": ratios[a], "last": ratios[a] * 2},
            "steps": {"init": 0, "first": 1, "epoch 1": 50, "last": 100},
            "epochs": [[{"epoch": e, "step": 50 * e, "train_loss": 1.0 / e + i, "train_accuracy": 0.9,
                         "val_loss": 0.5, "val_accuracy": accuracy[a] - 0.02 / e} for e in (1, 2)]],
            "loss_curves": [[[s, 2.0 / s ** 0.5 + i] for s in range(10, 101, 10)]],
        }
    return {"mlp_version": "0", "created": "now", "command": "mlp compare --config c.yaml", "dataset": "mnist",
            "depth": depth, "widths": [32] * depth, "classes": 10, "varied": ["model.activation"], "seeds": seeds,
            "claim": None, "equal": {"dataset": "mnist", "val_size": 5000, "depth": depth, "widths": [32] * depth,
                                     "norm": "none", "dropout": 0.0,
                                     "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False},
                                     "scheduler": {"name": "none"}, "batch_size": 64, "epochs": 2,
                                     "precision": "fp32", "seeds": list(range(seeds))},
            "runs": runs}


def test_findings_are_computed_from_the_numbers():
    said = " ".join(findings(_summary()))
    assert "relu reaches the highest test accuracy, 97.00%; sigmoid the lowest, 62.00% (35.0 points less)" in said
    assert "vanishes on its way back to the input at step 0 (before any update) for sigmoid (1/120): the signal " \
           "reaching layer 1 (next to the input) is that fraction of the signal at layer 4" in said
    assert "relu (layer 1 is 1/1.2 of layer 4)" in said and "tanh (layer 1 is 1/3.3 of layer 4)" in said
    assert "relu: 12% of layer 2's units dead" in said
    assert "One seed per condition: the differences below are not tested" in said

    other = " ".join(findings(_summary(ratios={"relu": 0.05, "tanh": 1.0, "sigmoid": 1 / 2000},
                                       accuracy={"relu": 0.90, "tanh": 0.96, "sigmoid": 0.11},
                                       inactive={"relu": [0.0] * 4, "tanh": [0.0, 0.0, 0.4, 0.0],
                                                 "sigmoid": [0.0] * 4})))
    assert "tanh reaches the highest test accuracy, 96.00%; sigmoid the lowest, 11.00%" in other
    assert "for sigmoid (1/2000) and relu (1/20)" in other
    assert "tanh: 40% of layer 3's units saturated" in other and "relu: 12%" not in other
    calm = " ".join(findings(_summary(inactive={a: [0.0, 0.01, 0.0, 0.0] for a in ("relu", "tanh", "sigmoid")})))
    assert "No condition had more than 1.0% of any layer's units dead or saturated" in calm


def test_with_seeds_a_ranking_needs_ranges_that_do_not_overlap():
    apart = " ".join(findings(_summary(seeds=3, spread=0.005)))
    assert "relu reaches the highest mean test accuracy over 3 seeds" in apart
    assert "above the whole range of tanh and sigmoid" in apart and "not tested" not in apart
    close = " ".join(findings(_summary(seeds=3, spread=0.02)))
    assert "tanh is within the spread of 3 seeds" in close and "above the whole range of sigmoid" in close


def test_a_steady_shrink_per_layer_is_compared_with_the_largest_derivative():
    said = " ".join(findings(_summary(ratios={"relu": 0.8, "tanh": 0.3, "sigmoid": 1 / 64})))
    # 1/64 over three steps from layer 4 to layer 1: 1/4 per layer, sigmoid's largest derivative
    assert "For sigmoid the signal shrinks by a steady factor toward the input at step 0" in said
    assert "each layer passes back about 1/4 of the signal reaching it" in said
    assert "about the same as sigmoid's largest derivative, 1/4 (computed from the activation)" in said
    steeper = " ".join(findings(_summary(ratios={"relu": 0.8, "tanh": 0.3, "sigmoid": 1 / 1000})))
    assert "about 1/10 of the signal" in steeper and "smaller than sigmoid's largest derivative, 1/4" in steeper


def _records(summary):
    hist = {"low": 0.0, "high": 1.0, "counts": [5.0] * 20 + [100.0] + [1.0] * 39}
    return {a: {"distributions": [{"step": 1, "layers": [hist] * summary["depth"]},
                                  {"step": 100, "layers": [hist] * summary["depth"]}]} for a in summary["runs"]}


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_the_report_renders_with_every_image_in_a_real_browser(tmp_path):
    summary = _summary()
    page = render(summary, findings(summary), draw_all(summary, _records(summary)))
    # a copy with a check appended: the report itself has no script
    check = ("<script>addEventListener('load', () => { const shown = [...document.images].filter("
             "i => i.complete && i.naturalWidth > 0); document.body.dataset.images = "
             "document.images.length + '/' + shown.length + '/' + Math.min(...shown.map(i => i.naturalWidth)); });"
             "</script>")
    (tmp_path / "checked.html").write_text(page.replace("</body>", check + "</body>"))
    browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    dom = subprocess.run([*browser, "--dump-dom", (tmp_path / "checked.html").as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    found = re.search(r'data-images="(\d+)/(\d+)/(\d+)"', dom)
    assert found, dom[:500]
    total, shown, narrowest = map(int, found.groups())
    assert total == shown == 6 and narrowest >= 1200
    assert "<h1>Activation compared: mnist, 4 hidden layers of 32</h1>" in dom
    (tmp_path / "report.html").write_text(page)
    subprocess.run([*browser, "--window-size=1300,3000", f"--screenshot={tmp_path / 'shot.png'}",
                    (tmp_path / "report.html").as_uri()], capture_output=True, timeout=120)
    shot = Image.open(tmp_path / "shot.png").convert("L")
    assert shot.size == (1300, 3000) and min(shot.getextrema()) < 50  # text and figures drawn, not blank


@pytest.mark.slow
@pytest.mark.skipif(REAL_DATA_ROOT is None, reason="needs the real MNIST (set MLP_DATA_ROOT)")
def test_on_real_mnist_sigmoid_signal_vanishes_and_relu_signal_does_not(monkeypatch, tmp_path):
    monkeypatch.setenv("MLP_DATA_ROOT", REAL_DATA_ROOT)
    config = Path(__file__).parent.parent / "configs" / "compare.yaml"
    done = run_mlp("compare", "-c", config, "-a", "relu,sigmoid", "--out", "real", "--jobs", "2",
                   "--set", "train.epochs=1", timeout=1200)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "real/summary.json").read_text())
    relu, sigmoid = summary["runs"]["relu"], summary["runs"]["sigmoid"]
    assert relu["init"] == "auto: He" and sigmoid["init"] == "auto: Glorot" and summary["depth"] == 6
    assert sigmoid["signal"]["init"][0] * 10 <= sigmoid["signal"]["init"][-1]
    assert 1 / 3 <= relu["signal"]["init"][0] / relu["signal"]["init"][-1] <= 3
    page = (tmp_path / "real/report.html").read_text()
    said = findings(summary)
    vanishing = [s for s in said if "vanishes on its way back to the input" in s]
    assert len(vanishing) == 1 and re.search(r"for sigmoid \(1/\d+\): .* the signal at layer 6", vanishing[0])
    even = [s for s in said if "within a factor of 3" in s]
    assert len(even) == 1 and re.match(r"For relu \(layer \d is 1/\d\.\d of layer \d\) the signal", even[0])
    steady = [s for s in said if s.startswith("For sigmoid the signal shrinks by a steady factor")]
    assert len(steady) == 1 and "sigmoid's largest derivative, 1/4" in steady[0]
    assert all(str(escape(sentence)) in page for sentence in said)
