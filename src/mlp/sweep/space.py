"""What a sweep explores: a grid typed on the command line, or a search space read from a YAML file.

A grid (``--grid model.width=128,256``) lists values as they would be typed after ``--set``.
A search space file maps dotted config keys to a range or a list of choices::

    optimizer.lr:     {float: [1.0e-4, 1.0e-2], log: true}   # log-uniform
    train.label_smoothing: {float: [0.0, 0.2], step: 0.05}
    model.depth:      {int: [1, 4]}
    model.width:      [128, 256, 512]                       # choices (same as {choice: [...]})
    model.activation: {choice: [relu, gelu, {name: leaky_relu, negative_slope: 0.1}]}

Each key becomes one parameter of the Optuna study, named by the key.  Optuna stores a choice only
as a plain number, string, true/false or null, so a list or mapping choice is kept as its YAML text.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlp.config import parse_override
from mlp.errors import UserError

FORMAT = ("give {float: [LOW, HIGH]}, {int: [LOW, HIGH]} (optionally with log: true or step: S) "
          "or a list of choices")


@dataclass
class Param:
    """One swept config key: ``kind`` is grid (values as typed), float, int or choice."""
    key: str
    kind: str
    choices: list[Any] = field(default_factory=list)  # grid and choice: the values Optuna stores
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    def suggest(self, trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.key, self.choices)

    def probes(self) -> list[Any]:
        """The values checked against the config before the first trial: both ends, or every choice."""
        return [self.low, self.high] if self.kind in ("float", "int") else list(self.choices)

    def definition(self) -> dict[str, Any]:
        if self.kind in ("float", "int"):
            return {self.kind: [self.low, self.high], "log": self.log, "step": self.step}
        return {self.kind: list(self.choices)}


def override_text(value: Any) -> str:
    """A parameter's value as typed after ``--set KEY=`` (read back as YAML)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def shown(value: Any) -> str:
    """A parameter's value in a table: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else override_text(value)


@dataclass
class Space:
    kind: str  # "grid" or "search"
    params: list[Param]
    source: str  # how the user gave it, for messages: "--grid" or "--search FILE"

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    @property
    def size(self) -> int:
        """How many trials a grid has (a search is as large as --trials says)."""
        return math.prod(len(p.choices) for p in self.params)

    def combinations(self) -> list[dict[str, str]]:
        return [dict(zip(self.keys, values)) for values in itertools.product(*(p.choices for p in self.params))]

    def suggest(self, trial) -> dict[str, Any]:
        return {p.key: p.suggest(trial) for p in self.params}

    def overrides(self, values: dict[str, Any]) -> list[str]:
        return [f"{key}={override_text(values[key])}" for key in self.keys]

    def definition(self) -> dict[str, Any]:
        return {p.key: p.definition() for p in self.params}

    @classmethod
    def stored(cls, kind: str, definition: dict[str, Any]) -> Space:
        """The space a study was made with, from its ``definition()``."""
        params = []
        for key, spec in definition.items():
            param_kind = next(k for k in spec if k not in ("log", "step"))
            if param_kind in ("float", "int"):
                low, high = spec[param_kind]
                params.append(Param(key, param_kind, low=low, high=high, log=spec["log"], step=spec["step"]))
            else:
                params.append(Param(key, param_kind, list(spec[param_kind])))
        return cls(kind, params, "the study")


def parse_grid(items: list[str]) -> Space:
    """``["model.width=128,256", ...]`` → a grid whose parameters hold the values as typed."""
    params: list[Param] = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        values = split_values(text)
        if not sep or not key or not all(values):
            raise UserError(f"--grid expects KEY=V1,V2,... e.g. model.width=128,256 (got '{item}')")
        try:
            parse_override(f"{key}={values[0]}")
        except UserError:
            raise UserError(f"--grid {item}: '{key}' is not a dotted config key like model.width") from None
        if key in (p.key for p in params):
            raise UserError(f"--grid {key} is given twice; list all its values in one --grid {key}=V1,V2,...")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise UserError(f"--grid {key} lists {', '.join(repeated)} more than once")
        params.append(Param(key, "grid", values))
    return Space("grid", params, "--grid")


def split_values(text: str) -> list[str]:
    """Split on the commas that are not inside [...], {...} or quotes, so lists can be values."""
    values, current, depth, quote = [], "", 0, None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += ch
    return values + [current.strip()]


def load_space(path: Path) -> Space:
    """Read and check a search space file; any mistake is one line naming the file and the key."""
    from mlp.yamlfile import MAX_CONFIG_BYTES, parse_yaml
    from mlp.files import file_problem, read_limited

    problem = file_problem(Path(path))
    if problem not in (None, "not found"):  # a pipe or a device is never read (it could block, or never end)
        raise UserError(f"--search {path} {problem}; give a YAML file")
    try:  # parse_yaml refuses an alias bomb in one line, as it does in a config
        raw = parse_yaml(read_limited(Path(path), MAX_CONFIG_BYTES, "--search", "a search space").decode(),
                         f"--search {path}")
    except FileNotFoundError:
        raise UserError(f"--search {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--search {path}: cannot read it: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"--search {path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"--search {path}: expected a mapping of config keys to ranges or choices, "
                        "e.g. optimizer.lr: {float: [1.0e-4, 1.0e-2], log: true}")
    params = []
    for key, spec in raw.items():
        try:
            params.append(_param(str(key), spec))
        except UserError as e:
            raise UserError(f"--search {path}: {key}: {e}") from None
    return Space("search", params, f"--search {path}")


def _param(key: str, spec: Any) -> Param:
    try:
        parse_override(f"{key}=0")
    except UserError:
        raise UserError("not a dotted config key like optimizer.lr") from None
    if isinstance(spec, list):
        spec = {"choice": spec}
    if not isinstance(spec, dict):
        raise UserError(f"{FORMAT} (got {spec!r})")
    kinds = [k for k in ("float", "int", "choice") if k in spec]
    if len(kinds) != 1:
        raise UserError(f"{FORMAT}; exactly one of float, int or choice (got {', '.join(map(str, spec)) or 'none'})")
    kind = kinds[0]
    allowed = {kind} | ({"log", "step"} if kind != "choice" else set())
    unknown = [str(k) for k in spec if k not in allowed]
    if unknown:
        raise UserError(f"unknown field {', '.join(unknown)}; a {kind} takes only {', '.join(sorted(allowed))}")
    if kind == "choice":
        return Param(key, "choice", _choices(spec["choice"]))
    return _range(key, kind, spec)


def _choices(values: Any) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise UserError(f"choices must be a non-empty list (got {values!r})")
    stored = [v if v is None or isinstance(v, (bool, int, float, str)) else override_text(v) for v in values]
    texts = [override_text(v) for v in stored]
    repeated = sorted({t for t in texts if texts.count(t) > 1})
    if repeated:
        raise UserError(f"lists {', '.join(repeated)} more than once")
    return stored


def _range(key: str, kind: str, spec: dict) -> Param:
    bounds, log, step = spec[kind], spec.get("log", False), spec.get("step")
    number = int if kind == "int" else (int, float)
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)):
        raise UserError(f"{kind} needs [LOW, HIGH], two {'whole ' if kind == 'int' else ''}numbers (got {bounds!r})")
    low, high = bounds
    if not low < high:
        raise UserError(f"{kind} needs LOW < HIGH (got [{low}, {high}])")
    if not isinstance(log, bool):
        raise UserError(f"log must be true or false (got {log!r})")
    if log and low <= 0:
        raise UserError(f"log: true needs LOW > 0 (got {low})")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
            raise UserError(f"step must be a positive {'whole ' if kind == 'int' else ''}number (got {step!r})")
        if log:
            raise UserError("give log: true or step, not both")
    if kind == "float":
        low, high, step = float(low), float(high), None if step is None else float(step)
    return Param(key, kind, low=low, high=high, log=log, step=step)
