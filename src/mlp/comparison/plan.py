"""``mlp compare``: the same config trained once per combination of the values varied (and per
seed), then a report that compares them.

``--vary KEY=V1,V2`` (repeatable: a grid) takes any key ``--set`` takes; ``--activations a,b`` is
``--vary model.activation=a,b``; the config's own ``compare:`` section (``vary``, ``seeds``,
``claim``) comes first and the command line adds to it or replaces a key of it.  Nothing varied at
all: the eight default activations.  Everything else comes from the config as written, with
``--set`` on top; compare itself only turns the per-layer diagnostics on (``train.diagnostics:
step``, said when that changes the config) and, with ``--seeds N``, sets ``seed`` to 0..N-1.
Every run is a normal run folder ``OUT/<varied values>[-seed<k>]/`` (``mlp eval``, ``mlp runs``,
``mlp train --resume`` and TensorBoard read it; its training output goes to ``train.log``
there).  Running the same command again reuses the finished runs and resumes interrupted ones.
Every combination is validated before the first run trains.  Then ``OUT/summary.json`` and
``OUT/report.html`` (``mlp.comparison.summary``, ``mlp.comparison.report``) are written.

With ``--jobs N`` (default: one per CPU core, at most 4), N runs train at the same time, each an
``mlp train`` process with its share of the cores (``mlp.comparison.trainings``); ``--jobs 1``
trains them one after the other the same way.  Ctrl-C (or SIGTERM) makes the running trainings
save ``last.pth`` and stop; they also stop when mlp compare itself is killed.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlp.comparison.trainings import train_all
from mlp.config import Config, activation_label, apply_overrides, dump_yaml, parse_override, set_dotted, validate_config
from mlp.errors import UserError
from mlp.files import output_folder
from mlp.run.folder import previous_run
from mlp.sweep.space import split_values
from mlp.training.workers import say as _say
from mlp.yamlfile import parse_yaml, read_yaml

DEFAULT_ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "gelu", "silu", "tanh", "sigmoid")
FORCED = ("train.diagnostics",)  # compare sets this itself
NAMED = ("model.activation", "model.init", "optimizer.name")  # a label shows these by their value alone


@dataclass
class Planned:
    label: str  # the varied values in words: "relu, he"
    settings: dict[str, Any]  # varied key → its value in this run
    seed: int
    config: Config
    run_dir: Path
    state: str  # finished | diverged | resume | new

    @property
    def activation(self) -> str:  # the run's name in progress lines (train_all's name for it)
        return self.run_dir.name


@dataclass
class Study:
    """What a compare varies, over which seeds, and the claim it checks."""
    vary: dict[str, list[Any]]
    seeds: int = 1
    seeds_given: bool = False  # False: every run keeps the config's own seed
    claim: str | None = None
    sets: list[str] = field(default_factory=list)


def parse_vary(item: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2`` → (KEY, [V1, V2]), each value read as ``--set`` reads it."""
    key, sep, text = item.partition("=")
    values = [v for v in split_values(text) if v] if sep else []  # the same splitting as --grid
    if not sep or not values:
        raise UserError(f"--vary expects KEY=V1,V2,... e.g. model.init=xavier,kaiming (got '{item}')")
    return parse_override(f"{key}=x")[0], [parse_yaml(v, f"--vary {key.strip()}") for v in values]


def parse_activations(texts: list[str] | str | None) -> list[str] | None:
    """``["relu,tanh", "gelu"]`` (repeated -a add up) → the names, in the order given, each once."""
    from mlp.model import parse_activation

    if texts is None or texts == []:
        return None
    names = [part.strip() for text in ([texts] if isinstance(texts, str) else texts)
             for part in text.split(",") if part.strip()]
    if not names:
        raise UserError("--activations expects names separated by commas, e.g. relu,tanh,sigmoid")
    try:
        canonical = [parse_activation(name)[0] for name in names]
    except ValueError as e:
        raise UserError(f"--activations: {e}") from None
    return list(dict.fromkeys(canonical))


def study(raw: dict[str, Any], activations: list[str] | None, vary: list[str], seeds: int | None,
          sets: list[str]) -> Study:
    """The config's ``compare:`` section, then the command line's options on top of it."""
    section = validate_config({"compare": raw.get("compare") or {}}, "compare:").compare
    chosen = dict(section.vary)
    for item in vary:
        key, values = parse_vary(item)
        chosen[key] = values
    if activations:
        chosen["model.activation"] = activations
    if not chosen:
        chosen["model.activation"] = list(DEFAULT_ACTIVATIONS)
    if "model.activation" in chosen:  # labels and folders name the activation first: relu, he
        chosen = {"model.activation": chosen.pop("model.activation"), **chosen}
    for item in sets:
        key = parse_override(item)[0]
        if key in FORCED or any(key == k or key.startswith(k + ".") and k != "model.activation" for k in chosen):
            raise UserError(f"--set {key}: mlp compare sets this itself (it is varied, or compare needs it); "
                            "vary it with --vary or --activations, or leave it out")
    if seeds is not None and seeds < 1:
        raise UserError("--seeds must be at least 1")
    n = seeds if seeds is not None else section.seeds
    if "seed" in chosen and n > 1:
        raise UserError("--vary seed and --seeds both choose the seed; use one of them")
    seeds_given = seeds is not None or "seeds" in (raw.get("compare") or {})
    if seeds_given and any(parse_override(item)[0] == "seed" for item in sets):
        raise UserError("--set seed and --seeds both choose the seed; use one of them")
    return Study(chosen, n, seeds_given, section.claim, list(sets))


def value_label(key: str, value: Any) -> str:
    shown = activation_label(value) if key == "model.activation" else (
        "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else str(value))
    return shown if key in NAMED else f"{key.rsplit('.', 1)[-1]}={shown}"


def _slug(text: str) -> str:
    text = text.replace("(", ",").replace(")", "").replace(", ", "-").replace("[", "").replace("]", "")
    return re.sub(r"[^A-Za-z0-9_.+=,-]", "_", text.replace(" ", ""))


def plan(config: Path, the_study: Study | list[str], sets: list[str], out: Path) -> list[Planned]:
    """One validated config per combination of the varied values and seed, and what its folder holds.
    (``the_study`` may be a list of activations, as before.)"""
    if not isinstance(the_study, Study):
        the_study = Study({"model.activation": list(the_study)})
    raw = read_yaml(Path(config))
    raw.pop("compare", None)
    keys = list(the_study.vary)
    planned, seen = [], {}
    for values in itertools.product(*(the_study.vary[k] for k in keys)):
        settings, labels = {}, []
        for key, value in zip(keys, values):
            cfg = _config(raw, {key: value}, sets, None, f"--vary {key}={value_label(key, value)}")
            settings[key] = _canonical(cfg, key, value)
            labels.append(value_label(key, settings[key]))
        label = ", ".join(labels)
        if label in seen:
            raise UserError(f"--vary: '{label}' is given twice; list each value once")
        seen[label] = True
        for seed in range(the_study.seeds):
            cfg = _config(raw, settings, sets, seed if the_study.seeds_given else None, f"--vary {label}")
            name = _slug("-".join(labels)) + (f"-seed{seed}" if the_study.seeds > 1 else "")
            run_dir = out / name
            state = previous_run(run_dir, dump_yaml(cfg), "choose another --out, or remove that folder to train it again")
            planned.append(Planned(label, settings, cfg.seed, cfg, run_dir, state))
    return planned


def _config(raw: dict[str, Any], settings: dict[str, Any], sets: list[str], seed: int | None, source: str) -> Config:
    cfg = copy.deepcopy(raw)
    for key, value in settings.items():
        set_dotted(cfg, key, copy.deepcopy(value))
    apply_overrides(cfg, sets)
    set_dotted(cfg, "train.diagnostics", "step")
    if seed is not None:
        cfg["seed"] = seed
    return validate_config(cfg, source)


def _canonical(cfg: Config, key: str, value: Any) -> Any:
    """The value as the validated config holds it (``Leaky-ReLU`` → ``leaky_relu``)."""
    node: Any = cfg.to_dict()
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if node is not None else value


def run_compare(config: Path, activations, sets: list[str], out: Path | None, jobs: int | None = None,
                vary: list[str] = (), seeds: int | None = None) -> int:
    """What ``mlp compare`` does; the exit code (0, 1 if a run failed, 128+N if stopped by signal N).

    ``jobs`` defaults to one run per CPU core (at most 4), each with one thread: on a shared
    machine, two threads of one process waiting for each other can make a training many times
    slower (measured: 14 minutes one at a time with two threads, 71 s two at a time with one)."""
    jobs = jobs or max(1, min(os.cpu_count() or 1, 4))
    raw = read_yaml(Path(config))
    the_study = study(raw, parse_activations(activations), list(vary), seeds, list(sets))
    if the_study.claim is not None:
        from mlp.comparison.claims import KNOWN_CLAIMS

        if the_study.claim not in KNOWN_CLAIMS:
            known = ", ".join(KNOWN_CLAIMS) or "none yet"
            raise UserError(f"compare.claim: unknown claim '{the_study.claim}' (known: {known})")
    without = {k: v for k, v in raw.items() if k != "compare"}
    base = validate_config(apply_sets(without, sets), str(config))
    out = Path(out) if out is not None else Path("runs") / f"{base.name}-compare"
    output_folder(out, "--out")
    runs = plan(config, the_study, sets, out)
    _say_plan(base, the_study, runs, out)
    todo = [r for r in runs if r.state not in ("finished", "diverged")]
    results = train_all(todo, jobs) if todo else []
    stopped = next((r for r in results if r["status"] == "interrupted"), None)
    if stopped is not None:
        print("compare stopped; the finished runs are kept and the interrupted ones saved last.pth: "
              "run the same command again to continue", file=sys.stderr)
        return stopped["exit_code"] or 130
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        for r in failed:
            print(f"error: {r['activation']}: {r['message']}", file=sys.stderr)
        return 1
    from mlp.comparison.summary import write_report

    _say(f"report   building it from the {len(runs)} runs (figures, findings) ...")
    summary_file, report_file = write_report(out, runs, the_study, config)
    _say(f"summary  {summary_file}\nreport   {report_file}\ncurves   tensorboard --logdir {out}")
    return 0


def apply_sets(raw: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    apply_overrides(raw, sets)
    return raw


def _say_plan(base: Config, the_study: Study, runs: list[Planned], out: Path) -> None:
    widths = base.model.widths
    shape = f"of {widths[0]}" if len(set(widths)) == 1 else "-".join(map(str, widths))
    reused = [r.run_dir.name for r in runs if r.state in ("finished", "diverged")]
    conditions = len(dict.fromkeys(r.label for r in runs))
    varied = ", ".join(the_study.vary)
    seeds = f" × {the_study.seeds} seeds" if the_study.seeds > 1 else ""
    _say(f"compare  {conditions} conditions ({varied}){seeds}, {base.model.depth} hidden layers {shape}, "
         f"{base.data.dataset}, {base.train.epochs} epoch{'s' * (base.train.epochs > 1)} each, in {out}"
         + (f" (reusing {', '.join(reused)})" if reused else ""))
    if base.train.diagnostics != "step":
        _say(f"note     compare sets train.diagnostics: step (the config says {base.train.diagnostics})")
