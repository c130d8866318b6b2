"""The run configuration: schema with a default for every field, YAML loading, dotted overrides.

A run is described by one YAML file (``configs/*.yaml``) plus ``--set key.sub=value``
overrides.  Everything is validated here, before any data is loaded, and every mistake
becomes a ``UserError`` that names the field and what would fix it.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlp.errors import UserError


class _Section(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default), and
    # assignments are validated too, so a config can never hold an invalid value.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _choice(kind: str, value: str, choices) -> str:
    value = value.lower().replace("-", "_")
    if value in choices:
        return value
    close = difflib.get_close_matches(value, list(choices), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"unknown {kind} '{value}'{hint} (choices: {', '.join(sorted(choices))})")


def activation_label(spec: str | dict[str, Any] | None) -> str | None:
    """``relu``, or ``leaky_relu(negative_slope=0.1)`` for an activation with parameters."""
    if isinstance(spec, dict):
        params = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
        return f"{spec.get('name')}({params})" if params else spec.get("name")
    return spec


class DataConfig(_Section):
    dataset: str = "mnist"
    root: str = "data"  # the environment variable MLP_DATA_ROOT overrides this
    download: bool = True  # try torchvision's download when the files are missing
    val_size: int = Field(5000, ge=0)  # images held out of the training split, seeded
    augment: bool = False  # batched on the device: crop+flip (CIFAR), small shifts (MNIST-likes)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from mlp.data import DATASETS

        return _choice("dataset", v, DATASETS)


class ModelConfig(_Section):
    width: int | list[int] = 512  # one width for every hidden layer, or a list of widths
    depth: int | None = None  # number of hidden layers; defaults to 1, or len(width) for a list
    activation: str | dict[str, Any] = "relu"  # a name, or {name: leaky_relu, negative_slope: 0.1}
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    norm: Literal["none", "batch", "layer"] = "none"
    init: Literal["auto", "kaiming", "xavier", "orthogonal", "default"] = "auto"
    bias: bool = True

    @field_validator("width")
    @classmethod
    def _positive_widths(cls, v):
        widths = v if isinstance(v, list) else [v]
        if not widths or any(w < 1 for w in widths):
            raise ValueError("every hidden width must be a positive integer")
        return v

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, v):
        from mlp.model import parse_activation

        name, params = parse_activation(v)  # raises ValueError with the choices
        return name if not params else {"name": name, **params}

    @model_validator(mode="after")
    def _resolve_depth(self):
        if isinstance(self.width, list):
            if self.depth is None:
                object.__setattr__(self, "depth", len(self.width))
            elif self.depth != len(self.width):
                raise ValueError(
                    f"model.depth is {self.depth} but model.width lists {len(self.width)} widths; "
                    "give one width with a depth, or a list of widths alone"
                )
        elif self.depth is None:
            object.__setattr__(self, "depth", 1)
        if self.depth < 0:
            raise ValueError("model.depth must be >= 0")
        return self

    @property
    def widths(self) -> list[int]:
        return list(self.width) if isinstance(self.width, list) else [self.width] * self.depth


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(None, gt=0.0)  # max global gradient norm; null = off
    log_every: int = Field(100, ge=1)  # steps between train-loss points in TensorBoard
    eval_batch_size: int = Field(1024, ge=1)
    # autocast for the forward pass; fp16 needs CUDA; auto: bf16 where the hardware multiplies it
    # natively (CUDA compute capability 8.0+, CPUs with AMX or AVX512-BF16), fp32 elsewhere
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"  # torch.compile mode

    # Per-hidden-layer statistics in TensorBoard (dead/saturated units, activation mean/std,
    # gradient and weight norms): every log_every steps, once per epoch, or off.
    diagnostics: Literal["step", "epoch", "off"] = "step"
    histogram_every: int = Field(1, ge=0)  # epochs between per-layer histograms; 0 = none

    @field_validator("compile", "diagnostics", mode="before")
    @classmethod
    def _yaml_on_off(cls, v, info):
        # YAML reads a bare on/off (or yes/no) as true/false: on is each switch's usual setting
        if not isinstance(v, bool):
            return v
        return ("default" if info.field_name == "compile" else "step") if v else "off"

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, v: str) -> str:
        v = v.strip().lower()
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            raise ValueError(f"'{v}' is not a device; use auto, cpu, cuda or cuda:N")
        return v


class OptimizerConfig(_Section):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # SGD only
    nesterov: bool = False  # SGD only
    betas: tuple[float, float] = (0.9, 0.999)  # Adam / AdamW only

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self):
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("optimizer.nesterov needs optimizer.momentum > 0")
        return self


class SchedulerConfig(_Section):
    name: Literal["none", "step", "cosine", "onecycle"] = "none"
    warmup_epochs: float = Field(0.0, ge=0.0)  # linear warm-up before none/step/cosine
    step_size: int = Field(5, ge=1)  # step: epochs between decays
    gamma: float = Field(0.1, gt=0.0)  # step: decay factor
    min_lr: float = Field(0.0, ge=0.0)  # cosine: final learning rate
    max_lr: float | None = Field(None, gt=0.0)  # onecycle: peak (default: optimizer.lr)
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)  # onecycle: fraction spent rising

    @model_validator(mode="after")
    def _warmup_fits(self):
        if self.name == "onecycle" and self.warmup_epochs:
            raise ValueError("scheduler.warmup_epochs does not apply to onecycle (it warms up itself)")
        return self


class Config(_Section):
    name: str = "run"
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()

    @field_validator("name")
    @classmethod
    def _usable_as_folder_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+=,-]*", v):
            raise ValueError("name must be letters, digits and _ . + = , - (it names the run folder)")
        return v

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        return data


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML file (or start from defaults), apply ``key.sub=value`` overrides, validate."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        raw = read_yaml(path)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return validate_config(raw, source)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}:{line}: YAML syntax error: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read config file {path}: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config must be a YAML mapping of sections (data:, model:, ...)")
    return raw


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise UserError(f"--set expects KEY=VALUE with a dotted key, e.g. model.width=256 (got '{item}')")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # not YAML: take the text as a string
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str) and part == "activation":
            child = node[part] = {"name": child}  # model.activation.negative_slope=0.2 on a named one
        elif not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise UserError(f"--set {key}: '{prefix}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def validate_config(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise UserError(f"{source}: {_describe(e)}") from None


def _describe(error: ValidationError) -> str:
    """The first validation problem as one line that names the field and the fix."""
    err = error.errors()[0]
    loc = [str(p) for p in err["loc"]]
    # Pydantic adds the union branch it tried ("int", "list[int]") to the location; drop it.
    loc = [p for p in loc if p not in ("int", "list[int]", "str", "dict[str,any]", "float", "none")]
    field = ".".join(loc) or "config"
    kind = err["type"]
    if kind == "extra_forbidden":
        section = _section_at(loc[:-1])
        valid = list(section.model_fields) if section else []
        close = difflib.get_close_matches(loc[-1], valid, n=1)
        hint = f"did you mean '{'.'.join(loc[:-1] + [close[0]])}'?" if close else ""
        return f"unknown key '{field}'; {hint + ' ' if hint else ''}valid keys here: {', '.join(valid)}"
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = "" if isinstance(given, dict) or kind in ("value_error",) else f" (got {given!r})"
    if msg.startswith(field + "."):  # a check across fields already names them
        return f"{msg}{shown}"
    return f"{field}: {msg}{shown}"


def _section_at(loc: list[str]):
    section: type[BaseModel] | None = Config
    for part in loc:
        field = section.model_fields.get(part) if section else None
        ann = getattr(field, "annotation", None)
        section = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return section


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
