"""The run configuration: schema with a default for every field, YAML loading, dotted overrides.

A run is described by one YAML file (``configs/*.yaml``) plus ``--set key.sub=value``
overrides.  Everything is validated here, before any data is loaded, and every mistake
becomes a ``UserError`` that names the field and what would fix it.
"""

from __future__ import annotations

import re
from pathlib import Path
import typing
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from mlp.errors import UserError, did_you_mean

from mlp.yamlfile import parse_yaml, read_yaml
# The run folder is <name>-YYYYmmdd-HHMMSS, plus -N when two start in the same second; most file
# systems allow 255 bytes per name, which leaves this much for the name (at most -999 for N).
MAX_NAME_LENGTH = 255 - len("-20240101-120000") - len("-999")


class _Section(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default), and
    # assignments are validated too, so a config can never hold an invalid value.
    # Infinity and NaN are never a sensible setting.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _not_a_boolean(value):
    # YAML's true/false are Python's bools, which pydantic would otherwise take as 1 and 0.
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


Int = Annotated[int, BeforeValidator(_not_a_boolean)]
Float = Annotated[float, BeforeValidator(_not_a_boolean)]


def _choice(kind: str, value: str, choices) -> str:
    value = value.lower().replace("-", "_")
    if value in choices:
        return value
    hint = did_you_mean(value, choices)
    raise ValueError(f"unknown {kind} '{value}'{'; ' + hint if hint else ''} (choices: {', '.join(sorted(choices))})")


def activation_label(spec: str | dict[str, Any] | None) -> str | None:
    """``relu``, or ``leaky_relu(negative_slope=0.1)`` for an activation with parameters."""
    if isinstance(spec, dict):
        params = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
        return f"{spec.get('name')}({params})" if params else spec.get("name")
    return spec


class DataConfig(_Section):
    dataset: str = Field("mnist", description="mnist, fashion_mnist, kmnist, cifar10, cifar100, or folder "
                                              "(your images under data.root, one sub-folder per class)")
    root: str = Field("data", description="folder holding the data set's files; $MLP_DATA_ROOT overrides it "
                                          "(not for folder)")
    download: bool = Field(True, description="try torchvision's download when the files are missing")
    val_size: Int | Float = Field(5000, ge=0, description="images held out of the training split for validation, "
                                                          "seeded: a number, or a fraction below 1 (folder: 0.1)")
    augment: bool = Field(False, description="batched on the device: crop+flip (CIFAR), small shifts "
                                             "(MNIST-likes, folder)")
    image_size: Int | list[Int] | None = Field(None, description="folder only: the side (or [H, W]) images are "
                                                                 "resized to; default from the images")
    channels: Literal[1, 3] | None = Field(None, description="folder only: 1 grey or 3 RGB; default 1 when every "
                                                             "image is grey")
    test_fraction: Float = Field(0.2, gt=0.0, lt=1.0, description="folder only: the test share when DIR has no "
                                                                   "test/ folder")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from mlp.data import DATASETS

        return _choice("dataset", v, [*DATASETS, "folder"])

    @field_validator("val_size")
    @classmethod
    def _count_or_fraction(cls, v):
        if isinstance(v, float) and v >= 1:
            raise ValueError("a fraction of the training images must be below 1; give a count as a whole number")
        return v

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v):
        sides = [v] if isinstance(v, int) else v
        if sides is not None and (len(sides) not in (1, 2) or any(s < 1 for s in sides)):
            raise ValueError("give one positive side, or [height, width]")
        return sides[0] if isinstance(sides, list) and len(sides) == 1 else v

    @model_validator(mode="after")
    def _folder_validation_share(self):
        if self.dataset == "folder" and "val_size" not in self.model_fields_set:
            object.__setattr__(self, "val_size", 0.1)  # a folder is often a few hundred images, not 60,000
        return self


class ModelConfig(_Section):
    width: Int | list[Int] = Field(512, description="units in every hidden layer, or a list of widths, one a layer")
    depth: Int | None = Field(None, description="number of hidden layers; null: 1, or the length of a width list")
    activation: str | dict[str, Any] = Field(
        "relu", description="a name (relu, gelu, tanh, ...), or {name: leaky_relu, negative_slope: 0.1}")
    dropout: Float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability after each hidden activation")
    norm: Literal["none", "batch", "layer"] = Field(
        "none", description="normalisation after each hidden Linear: none, batch or layer")
    init: Literal["auto", "xavier", "glorot", "kaiming", "he", "lecun", "orthogonal", "default"] = Field(
        "auto", description="weight init: xavier (= glorot, Var 2/(fan_in+fan_out)), kaiming (= he, Var 2/fan_in), "
                            "lecun (Var 1/fan_in), orthogonal, default (PyTorch's), or auto (He for the ReLUs, "
                            "Glorot for sigmoid/tanh, LeCun for SELU); README's init table")
    init_gain: Float = Field(1.0, gt=0.0, description="every initial weight times this; 1 keeps the scheme's own variance")
    bias: bool = Field(True, description="give every Linear layer a bias")
    crop: Int | None = Field(None, ge=1, description="read only the centre crop×crop pixels of each image "
                                                      "(a centre crop before the Flatten); null: the whole image")

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
    epochs: Int = Field(10, ge=1, description="passes over the training split")
    batch_size: Int = Field(64, ge=1, description="training images per optimizer step")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    label_smoothing: Float = Field(0.0, ge=0.0, lt=1.0, description="share of the target spread over the other classes")
    grad_clip: Float | None = Field(None, gt=0.0, description="largest global gradient norm; null: no clipping")
    log_every: Int = Field(100, ge=1, description="steps between train-loss points in TensorBoard")
    eval_batch_size: Int = Field(1024, ge=1, description="images per forward pass when validating and testing")
    # fp16 needs CUDA; auto: bf16 where the hardware multiplies it natively (CUDA compute
    # capability 8.0+, CPUs with AMX or AVX512-BF16), fp32 elsewhere
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32", description="autocast of the forward pass: fp32, bf16, fp16 (CUDA) or auto (bf16 where native)")
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = Field(
        "off", description="torch.compile mode, or off")
    diagnostics: Literal["step", "epoch", "off"] = Field(
        "step", description="per-layer statistics in TensorBoard (dead units, activations, gradients): "
                            "every log_every steps, once an epoch, or off (which also leaves out the figures, the "
                            "model graph and the input grid)")
    histogram_every: Int = Field(1, ge=0, description="epochs between per-layer histograms; 0: none")
    threads: Literal["auto"] | Annotated[Int, Field(ge=1)] = Field(
        "auto", description="CPU threads: auto (OMP_NUM_THREADS if set, else the fastest of 1 to the usable "
                            "cores, measured as it trains; docs/speed.md) or a fixed count (repeats bit for bit)")

    @field_validator("compile", "diagnostics", mode="before")
    @classmethod
    def _yaml_on_off(cls, v, info):
        # YAML reads a bare on/off (or yes/no) as true/false: on is each switch's usual setting
        if not isinstance(v, bool):
            return v
        return ("default" if info.field_name == "compile" else "step") if v else "off"

    @field_validator("threads", mode="before")
    @classmethod
    def _threads_syntax(cls, v):
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"{v!r} is not a thread setting; use auto or a whole number of threads, 1 or more")

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, v: str) -> str:
        v = v.strip().lower()
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            raise ValueError(f"'{v}' is not a device; use auto, cpu, cuda or cuda:N")
        return v


class OptimizerConfig(_Section):
    name: Literal["adam", "adamw", "sgd"] = Field("adam", description="adam, adamw or sgd")
    lr: Float = Field(1e-3, gt=0.0, description="learning rate (the peak, with a scheduler)")
    weight_decay: Float = Field(0.0, ge=0.0, description="L2 penalty (adam, sgd) or decoupled decay (adamw)")
    momentum: Float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    nesterov: bool = Field(False, description="sgd only: Nesterov momentum")
    betas: tuple[Annotated[Float, Field(ge=0.0, lt=1.0)], Annotated[Float, Field(ge=0.0, lt=1.0)]] = Field(
        (0.9, 0.999), description="adam and adamw only: the two moving averages' decay rates, each in [0, 1)")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self):
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("optimizer.nesterov needs optimizer.momentum > 0")
        return self


class SchedulerConfig(_Section):
    name: Literal["none", "step", "cosine", "onecycle"] = Field(
        "none", description="learning-rate schedule, stepped every batch: none, step, cosine or onecycle")
    warmup_epochs: Float = Field(0.0, ge=0.0, description="linear warm-up before none, step or cosine (epochs)")
    step_size: Int = Field(5, ge=1, description="step: epochs between decays")
    gamma: Float = Field(0.1, gt=0.0, description="step: decay factor")
    min_lr: Float = Field(0.0, ge=0.0, description="cosine: final learning rate")
    max_lr: Float | None = Field(None, gt=0.0, description="onecycle: peak rate; null: optimizer.lr")
    pct_start: Float = Field(0.3, gt=0.0, lt=1.0, description="onecycle: fraction of the steps spent rising")

    @model_validator(mode="after")
    def _warmup_fits(self):
        if self.name == "onecycle" and self.warmup_epochs:
            raise ValueError("scheduler.warmup_epochs does not apply to onecycle (it warms up itself)")
        return self


class CompareConfig(_Section):
    """What ``mlp compare`` varies (``mlp train`` ignores this section)."""
    vary: dict[str, list[Any]] = Field({}, description="config key → the values it takes, e.g. "
                                                        "model.init: [xavier, kaiming] (a grid over the keys)")
    seeds: Int = Field(1, ge=1, le=100, description="each condition trained with seeds 0..seeds-1")
    claim: str | None = Field(None, description="a claim the report judges first (docs/experiments.md)")

    @field_validator("vary")
    @classmethod
    def _values_given(cls, v):
        for key, values in v.items():
            if not values:
                raise ValueError(f"compare.vary.{key} lists no values")
        return v


class Config(_Section):
    name: str = Field("run", description="names the run folder: runs/<name>-YYYYmmdd-HHMMSS")
    seed: Int = Field(0, ge=0, lt=2**32, description="seeds the init, the split and the batch order")  # NumPy's range
    data: DataConfig = Field(DataConfig(), description="the data set")
    model: ModelConfig = Field(ModelConfig(), description="the MLP: Flatten → [Linear → norm → activation → dropout] × depth → Linear")
    train: TrainConfig = Field(TrainConfig(), description="the training loop")
    optimizer: OptimizerConfig = Field(OptimizerConfig(), description="the optimizer")
    scheduler: SchedulerConfig = Field(SchedulerConfig(), description="the learning-rate schedule")
    compare: CompareConfig | None = Field(None, description="mlp compare only: what it varies (mlp train ignores it)")

    @field_validator("name")
    @classmethod
    def _usable_as_folder_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+=,-]*", v):
            raise ValueError("name must be letters, digits and _ . + = , - (it names the run folder)")
        if len(v) > MAX_NAME_LENGTH:
            raise ValueError(f"{len(v)} characters is too long: at most {MAX_NAME_LENGTH} fit in a folder "
                             "name with the run's -YYYYmmdd-HHMMSS (file systems allow 255)")
        return v

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        if data.get("compare") is None:
            data.pop("compare", None)  # a run's config.yaml reads as before
        return data


def load_config(path: str | Path | None, overrides: list[str] = (), typed: list[str] | None = None) -> Config:
    """Read a YAML file (or start from defaults), apply ``key.sub=value`` overrides, validate.
    A mistake is blamed on the ``--set`` that made it when that override is among ``typed`` (the
    ones the user typed as --set; default: all), else on the file (a sweep names its own values)."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        raw = read_yaml(path)
    given = apply_overrides(raw, overrides)
    if typed is not None:
        given = {key: item for key, item in given.items() if item in typed}
    return validate_config(raw, source, given)


def apply_overrides(raw: dict[str, Any], overrides) -> dict[str, str]:
    """``key.sub=value`` items into ``raw``; a whole ``model.activation`` first, so that
    ``model.activation.negative_slope=0.1`` applies to the activation named, in either order.
    Each key set, with the ``--set`` item that set it (a mistake is blamed on that item)."""
    parsed = [(item, *parse_override(item)) for item in overrides]
    given: dict[str, str] = {}
    for item, key, value in sorted(parsed, key=lambda t: t[1].startswith("model.activation.")):
        set_dotted(raw, key, value)
        given[key] = item
    return given


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise UserError(f"--set expects KEY=VALUE with a dotted key, e.g. model.width=256 (got '{item}')")
    try:
        value = parse_yaml(text, f"--set {key}") if text.strip() else ""
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


def validate_config(raw: dict[str, Any], source: str = "config", overrides: dict[str, str] | None = None) -> Config:
    """The validated config; a mistake is a UserError blamed on ``source`` (the file), or on the
    ``--set`` in ``overrides`` (key → the item as typed) that the faulty field came from."""
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise UserError(f"{_blame(_faulty(e)[0], source, overrides or {})}: {_describe(e)}") from None


def _blame(field: str, source: str, overrides: dict[str, str]) -> str:
    """``--set KEY=VALUE`` when the faulty field is (within) one that --set gave; the file and the
    --set when the field is a section a --set wrote into (a check across its fields); else the file."""
    for key, item in overrides.items():
        if field == key or field.startswith(key + "."):
            return f"--set {item}"
    inside = [item for key, item in overrides.items() if key.startswith(field + ".")]
    if inside and field:
        return f"{source} with --set {' --set '.join(inside)}"
    return source


def _faulty(error: ValidationError) -> tuple[str, dict]:
    """The dotted name of the field the first problem is in, and that problem."""
    # A value that fits no branch of a union (width: one int or a list of ints) gets one error
    # per branch; the deepest names the element at fault ([64, true] → the true, not "not an int").
    err = max(error.errors(), key=lambda e: len(e["loc"]))
    # Pydantic adds the union branch it tried ("int", "list[...]") to the location; drop it.
    loc = [p for p in err["loc"] if isinstance(p, int) or not ("[" in p or p in _BRANCH_NAMES)]
    return ".".join(str(p) for p in loc), {**err, "loc": loc}


def _describe(error: ValidationError) -> str:
    """The first validation problem as one line that names the field and the fix."""
    field, err = _faulty(error)
    loc, field = err["loc"], field or "config"
    kind = err["type"]
    if kind == "extra_forbidden":
        loc = [str(p) for p in loc]
        section = _section_at(loc[:-1])
        valid = list(section.model_fields) if section else []
        hint = did_you_mean(loc[-1], valid, prefix="".join(p + "." for p in loc[:-1]))
        return f"unknown key '{field}'; {hint + ' ' if hint else ''}valid keys here: {', '.join(valid)}"
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = "" if isinstance(given, dict) or kind in ("value_error",) else f" (got {_short(given)})"
    if msg.startswith(field + "."):  # a check across fields already names them
        return f"{msg}{shown}"
    return f"{field}: {msg}{shown}"


_BRANCH_NAMES = ("int", "str", "float", "none", "bool")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _section_at(loc: list[str]):
    section: type[BaseModel] | None = Config
    for part in loc:
        field = section.model_fields.get(part) if section else None
        ann = getattr(field, "annotation", None)
        section = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return section


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


TEMPLATE_HEADER = """\
# An mlp config: every key, with its value and what it means (`mlp train --print-config`).
# Save it as a file, change what you like, and train with `mlp train --config FILE`;
# a key left out keeps the value shown here.
"""


def commented_yaml(cfg: Config) -> str:
    """``cfg`` as YAML with each key's description (its Field's) as a comment beside it."""
    lines = [TEMPLATE_HEADER.rstrip("\n")]
    values = cfg.to_dict()
    for name, field in Config.model_fields.items():
        section = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) \
            else None
        if name not in values:  # an optional section, unset by default (compare): shown commented out
            section = next(t for t in typing.get_args(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel))
            defaults = section().model_dump()
            lines += ["", f"# {name}:{_comment(field)}"]
            lines += [f"#   {key}: {_flow(defaults[key])}{_comment(sub)}" for key, sub in section.model_fields.items()]
            continue
        if section is None:
            lines.append(f"{name}: {_flow(values[name])}{_comment(field)}")
            continue
        lines += ["", f"{name}:{_comment(field)}"]
        lines += [f"  {key}: {_flow(values[name][key])}{_comment(sub)}" for key, sub in section.model_fields.items()]
    return "\n".join(lines) + "\n"


def _comment(field) -> str:
    return f"  # {field.description}" if field.description else ""


def _flow(value: Any) -> str:
    """One value as YAML on one line: null, [0.9, 0.999], {name: elu, alpha: 0.5}, a quoted string."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).removesuffix("\n...\n").strip()
