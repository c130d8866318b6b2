"""The Python API (``mlp.train``, ``mlp.compare``, ``mlp.load``, ``mlp.evaluate``; docs/python.md).

Each function does what its command does and returns what a notebook wants to look at next.  A
mistake raises ``mlp.UserError`` with the same one-line message the command prints.  Nothing here
imports torch until a function is called, so ``import mlp`` stays instant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlp.errors import UserError


@dataclass
class Run:
    """A finished run: its folder, and its metrics.json (``metrics["test"]["accuracy"]``, ``["epochs"]``)."""

    dir: Path
    metrics: dict[str, Any] = field(repr=False)

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint.pth"


@dataclass
class Comparison:
    """A finished ``mlp compare``: its folder, summary.json as a dict, and the path of report.html.
    Displayed in a notebook, it shows the report inline."""

    dir: Path
    summary: dict[str, Any] = field(repr=False)

    @property
    def report(self) -> Path:
        return self.dir / "report.html"

    def _repr_html_(self) -> str:
        import html

        page = html.escape(self.report.read_text(encoding="utf-8"), quote=True)
        return f'<iframe srcdoc="{page}" style="width: 100%; height: 720px; border: 0"></iframe>'


def _config(config: str | Path | Mapping[str, Any], sets: Iterable[str]):
    """A validated Config from a YAML path or a dict, with ``KEY=VALUE`` overrides applied."""
    import copy

    from mlp.config import load_config, parse_override, set_dotted, validate_config

    if isinstance(config, Mapping):
        raw = copy.deepcopy(dict(config))
        for item in sets:
            set_dotted(raw, *parse_override(item))
        return validate_config(raw, "config")
    return load_config(Path(config), list(sets))


def train(config: str | Path | Mapping[str, Any], *, set: Iterable[str] = (), run_dir: str | Path | None = None
          ) -> Run:
    """Train a config (a YAML path, or a dict of its sections), as ``mlp train`` does."""
    from mlp.training.loop import fit

    path = fit(_config(config, set), Path(run_dir) if run_dir is not None else None)
    return Run(Path(path), json.loads((Path(path) / "metrics.json").read_text()))


def compare(config: str | Path | Mapping[str, Any], *, vary: Iterable[str] | Mapping[str, Iterable] = (),
            seeds: int | None = None, out: str | Path | None = None, set: Iterable[str] = (), jobs: int | None = None
            ) -> Comparison:
    """``mlp compare``: ``vary`` holds ``"KEY=V1,V2"`` strings (or ``{KEY: [V1, V2]}``), any key
    ``--set`` takes, a grid when there are several; ``seeds`` trains each condition with seeds
    0..seeds-1 (default: the config's ``compare:`` section, else one)."""
    from mlp.comparison.plan import run_compare

    varied = [f"{key}={value}" for key, value in _varied(vary).items()]
    if isinstance(config, Mapping):
        config = _written(config, out)
    base = _config(config, set)
    out = Path(out) if out is not None else Path("runs") / f"{base.name}-compare"
    code = run_compare(Path(config), None, list(set), out, jobs, vary=varied, seeds=seeds)
    if code:
        raise UserError(f"compare in {out} did not finish (exit code {code}); the reason is above, and each "
                        "run's train.log is in its folder")
    return Comparison(out, json.loads((out / "summary.json").read_text()))


def _varied(vary) -> dict[str, str]:
    items = vary.items() if isinstance(vary, Mapping) else (str(v).partition("=")[::2] for v in vary)
    varied = {}
    for key, values in items:
        text = values if isinstance(values, str) else ",".join(map(str, values))
        if not key or not text:
            raise UserError(f"vary expects KEY=V1,V2 (e.g. model.activation=relu,tanh), got {key or values!r}")
        varied[key.strip()] = text
    return varied


def _written(config: Mapping[str, Any], out: str | Path | None) -> Path:
    """A dict config saved as YAML where compare's report can name it (beside the runs)."""
    import yaml

    name = _config(config, ()).name
    folder = Path(out) if out is not None else Path("runs") / f"{name}-compare"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "compare-config.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def load(checkpoint: str | Path):
    """The model of a checkpoint as a ``torch.nn.Module`` in eval mode: images (N, C, H, W) in [0, 1]
    in (it normalises them itself), one logit per class out; ``.classes`` names them and
    ``.input_shape`` is (C, H, W)."""
    from mlp.commands.export import normalised_model

    module, meta = normalised_model(checkpoint)
    module.classes, module.input_shape = meta["classes"], meta["input_shape"]
    return module


def evaluate(checkpoint: str | Path, split: str = "test") -> dict[str, Any]:
    """``mlp eval --json``: accuracy, loss, per-class accuracy and the confusion matrix of one split."""
    from mlp.commands.evaluate import evaluate_checkpoint

    if split not in ("test", "val", "train"):
        raise UserError(f"split must be test, val or train, not {split!r}")
    return evaluate_checkpoint(Path(checkpoint), split)
