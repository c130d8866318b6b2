"""The activation registry and the MLP builder.

The model is [centre crop?] → Flatten → [Linear → norm? → activation → dropout?] × depth → Linear,
built as nested ``nn.Sequential`` so every piece has a readable name in the state dict and in
TensorBoard: ``hidden0.linear``, ``hidden0.activation``, ..., ``output``.  ``model.crop`` puts a
``CentreCrop`` (no weights) first: the model then reads only the centre crop × crop pixels.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from mlp.errors import UserError, did_you_mean


class Swish(nn.Module):
    """x · sigmoid(β·x); β = 1 is SiLU.  With ``learnable`` β is trained (one per layer)."""

    def __init__(self, beta: float = 1.0, learnable: bool = False):
        super().__init__()
        beta_t = torch.tensor(float(beta))
        if learnable:
            self.beta = nn.Parameter(beta_t)
        else:
            self.register_buffer("beta", beta_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)

    def extra_repr(self) -> str:
        return f"beta={self.beta.item():.3g}, learnable={isinstance(self.beta, nn.Parameter)}"


class CentreCrop(nn.Module):
    """The centre ``size`` × ``size`` pixels of images (N, C, height, width), placed as torchvision's
    ``center_crop`` places them: ``round((height - size) / 2)`` rows above, likewise columns to the
    left.  The offsets are fixed for the images' size when the model is built (so tracing, export
    and compilation see plain slices)."""

    def __init__(self, size: int, height: int, width: int):
        super().__init__()
        self.size, self.height, self.width = size, height, width
        self.top, self.left = (int(round((n - size) / 2.0)) for n in (height, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.top:self.top + self.size, self.left:self.left + self.size]

    def extra_repr(self) -> str:
        return f"size={self.size}, of {self.height}×{self.width}"


def model_input_shape(model_cfg, input_shape) -> tuple[int, ...]:
    """What the first Linear layer reads: the images' (C, H, W), or (C, crop, crop) with ``model.crop``;
    a crop larger than the images is refused."""
    crop = getattr(model_cfg, "crop", None)
    if crop is None:
        return tuple(input_shape)
    channels, height, width = input_shape
    if crop > min(height, width):
        raise UserError(f"model.crop is {crop} but the images are {height}×{width}; "
                        f"choose a crop of at most {min(height, width)}, or null for the whole image")
    return channels, crop, crop


def describe_input(model_cfg, input_shape) -> str:
    """``784`` or, with a crop, ``400 (the centre 20×20 of 28×28)``: what the first layer reads."""
    read = model_input_shape(model_cfg, input_shape)
    text = str(math.prod(read))
    if tuple(read) != tuple(input_shape):
        text += f" (the centre {read[1]}×{read[2]} of {input_shape[1]}×{input_shape[2]})"
    return text


@dataclass(frozen=True)
class Activation:
    build: Callable[..., nn.Module]  # build(width, **params)
    params: dict[str, Any] = field(default_factory=dict)  # accepted parameters and their defaults
    gain: str = "relu"  # the nonlinearity name torch.nn.init uses for this one's weight scale
    family: str = "relu"  # relu (units can die) | saturating (sigmoid-like) | smooth | self_normalising
    asymptotes: tuple[float, float] | None = None  # saturating only: the values it approaches, low and high
    positive: tuple[str, ...] = ()  # parameters that must be > 0 (a scale it divides by, a threshold)


def _swish(width, beta, learnable):
    return nn.SiLU() if beta == 1.0 and not learnable else Swish(beta, learnable)


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(lambda w: nn.ReLU()),
    "relu6": Activation(lambda w: nn.ReLU6()),
    "leaky_relu": Activation(lambda w, negative_slope: nn.LeakyReLU(negative_slope),
                             {"negative_slope": 0.01}, gain="leaky_relu"),
    "prelu": Activation(lambda w, per_unit, init: nn.PReLU(w if per_unit else 1, init),
                        {"per_unit": False, "init": 0.25}, gain="leaky_relu"),
    "elu": Activation(lambda w, alpha: nn.ELU(alpha), {"alpha": 1.0}, family="smooth"),
    "celu": Activation(lambda w, alpha: nn.CELU(alpha), {"alpha": 1.0}, family="smooth", positive=("alpha",)),
    "selu": Activation(lambda w: nn.SELU(), gain="linear", family="self_normalising"),
    "sigmoid": Activation(lambda w: nn.Sigmoid(), gain="sigmoid", family="saturating", asymptotes=(0.0, 1.0)),
    "tanh": Activation(lambda w: nn.Tanh(), gain="tanh", family="saturating", asymptotes=(-1.0, 1.0)),
    "softsign": Activation(lambda w: nn.Softsign(), gain="tanh", family="saturating", asymptotes=(-1.0, 1.0)),
    "silu": Activation(_swish, {"beta": 1.0, "learnable": False}, family="smooth", positive=("beta",)),
    "gelu": Activation(lambda w, approximate: nn.GELU(approximate), {"approximate": "none"}, family="smooth"),
    "softplus": Activation(lambda w, beta, threshold: nn.Softplus(beta, threshold),
                           {"beta": 1.0, "threshold": 20.0}, family="smooth", positive=("beta", "threshold")),
    "mish": Activation(lambda w: nn.Mish(), family="smooth"),
    "hardswish": Activation(lambda w: nn.Hardswish(), family="smooth"),
    "identity": Activation(lambda w: nn.Identity(), gain="linear", family="linear"),
}
ALIASES = {"swish": "silu", "linear": "identity", "leakyrelu": "leaky_relu"}
_CHOICES = {"approximate": ("none", "tanh")}


def parse_activation(spec: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``"relu"`` or ``{name: leaky_relu, negative_slope: 0.1}`` → (canonical name, given params)."""
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
        name, params = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    else:
        raise ValueError("an activation is a name, or a mapping with a 'name' key and its parameters")
    name = name.strip().lower().replace("-", "_")
    name = ALIASES.get(name, name)
    if name not in ACTIVATIONS:
        choices = sorted(ACTIVATIONS) + sorted(ALIASES)
        hint = did_you_mean(name, choices)
        raise ValueError(f"unknown activation '{name}'{'; ' + hint if hint else ''} (choices: {', '.join(choices)})")
    accepted = ACTIVATIONS[name].params
    for key, value in params.items():
        if key not in accepted:
            takes = ", ".join(accepted) if accepted else "no parameters"
            raise ValueError(f"activation '{name}' has no parameter '{key}' (it takes {takes})")
        default = accepted[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = value in _CHOICES.get(key, ())
        positive = key in ACTIVATIONS[name].positive
        if ok and positive and value <= 0:
            ok = False
        if not ok:
            want = "true or false" if isinstance(default, bool) else (
                ("a number > 0" if positive else "a finite number") if isinstance(default, float)
                else " or ".join(_CHOICES[key]))
            raise ValueError(f"activation '{name}': {key} must be {want} (got {value!r})")
    return name, {k: float(v) if isinstance(accepted[k], float) else v for k, v in params.items()}


def make_activation(spec, width: int) -> nn.Module:
    name, params = parse_activation(spec)
    act = ACTIVATIONS[name]
    return act.build(width, **{**act.params, **params})


def build_model(model_cfg, input_shape, num_classes: int) -> nn.Sequential:
    """[centre crop?] → Flatten → [Linear → norm? → activation → dropout?] × depth → Linear, initialised.

    A model whose weights alone would not fit in this machine's free memory is refused first.
    """
    check_memory(model_cfg, input_shape, num_classes, torch.device("cpu"))
    model = _layers(model_cfg, input_shape, num_classes)
    init_weights(model, model_cfg)
    return model


def _layers(model_cfg, input_shape, num_classes: int) -> nn.Sequential:
    read = model_input_shape(model_cfg, input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if tuple(read) != tuple(input_shape):
        layers["crop"] = CentreCrop(read[1], *input_shape[1:])
    layers["flatten"] = nn.Flatten()
    in_features = math.prod(read)
    for i, width in enumerate(model_cfg.widths):
        block: OrderedDict[str, nn.Module] = OrderedDict(linear=nn.Linear(in_features, width, bias=model_cfg.bias))
        if model_cfg.norm == "batch":
            block["norm"] = nn.BatchNorm1d(width)
        elif model_cfg.norm == "layer":
            block["norm"] = nn.LayerNorm(width)
        block["activation"] = make_activation(model_cfg.activation, width)
        if model_cfg.dropout > 0:
            block["dropout"] = nn.Dropout(model_cfg.dropout)
        layers[f"hidden{i}"] = nn.Sequential(block)
        in_features = width
    layers["output"] = nn.Linear(in_features, num_classes, bias=model_cfg.bias)
    return nn.Sequential(layers)


def hidden_layers(model: nn.Sequential) -> list[nn.Sequential]:
    return [m for name, m in model.named_children() if name.startswith("hidden")]


INIT_ALIASES = {"glorot": "xavier", "he": "kaiming"}
INIT_CHOICES = ("auto", "xavier", "glorot", "kaiming", "he", "lecun", "orthogonal", "default")
# What each scheme draws, in the words people use and as the variance of a weight (times gain²)
INIT_RULES = {
    "xavier": ("Glorot", "Var = 2/(fan_in + fan_out)"),
    "kaiming": ("He", "Var = 2/((1 + a²)·fan_in), a the leaky slope (0 for ReLU)"),
    "lecun": ("LeCun", "Var = 1/fan_in"),
    "orthogonal": ("orthogonal", "orthonormal rows or columns"),
    "default": ("PyTorch default", "uniform, Var = 1/(3·fan_in)"),
}


def init_scheme(model_cfg) -> str:
    """The scheme the hidden layers get: the one named (aliases resolved), or for ``auto`` the
    usual one for the activation: Glorot for sigmoid-like ones, LeCun for SELU and identity, He else."""
    init = INIT_ALIASES.get(model_cfg.init, model_cfg.init)
    if init != "auto":
        return init
    act = ACTIVATIONS[parse_activation(model_cfg.activation)[0]]
    return "xavier" if act.family == "saturating" else ("lecun" if act.gain == "linear" else "kaiming")


def init_label(model_cfg) -> str:
    """``He``, ``Glorot``, ... for the hidden layers' scheme; ``auto: He`` when auto picked it;
    with the gain when it is not 1."""
    name = INIT_RULES[init_scheme(model_cfg)][0]
    gain = getattr(model_cfg, "init_gain", 1.0)
    name = f"{name} × gain {gain:g}" if gain != 1.0 else name
    return f"auto: {name}" if model_cfg.init == "auto" else name


def init_weights(model: nn.Sequential, model_cfg) -> None:
    """Every linear layer by ``init_scheme`` (see INIT_RULES), its weights times ``model.init_gain``,
    biases zero (``default`` keeps PyTorch's biases).  Under ``auto`` the output layer, which has no
    activation after it, gets LeCun's scale; a named scheme applies to every layer, as in its paper."""
    scheme = init_scheme(model_cfg)
    name, params = parse_activation(model_cfg.activation)
    merged = {**ACTIVATIONS[name].params, **params}
    slope = merged.get("negative_slope", merged.get("init", 0.0)) if ACTIVATIONS[name].gain == "leaky_relu" else 0.0
    gain = getattr(model_cfg, "init_gain", 1.0)
    for layer in [h.linear for h in hidden_layers(model)] + [model.output]:
        rule = "lecun" if (layer is model.output and model_cfg.init == "auto") else scheme
        with torch.no_grad():
            if rule == "kaiming":
                nn.init.kaiming_normal_(layer.weight, a=slope, nonlinearity="leaky_relu")
            elif rule == "lecun":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="linear")
            elif rule == "xavier":
                nn.init.xavier_normal_(layer.weight)
            elif rule == "orthogonal":
                nn.init.orthogonal_(layer.weight)
            if gain != 1.0:
                layer.weight.mul_(gain)
        if layer.bias is not None and rule != "default":
            nn.init.zeros_(layer.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_count(model_cfg, input_shape, num_classes: int) -> tuple[int, int]:
    """The parameters ``build_model`` would make, and the numbers it keeps besides (batch norm's
    running statistics), counted on the same layers made on the meta device, which holds no data."""
    with torch.device("meta"):
        model = _layers(model_cfg, input_shape, num_classes)
    return count_parameters(model), sum(b.numel() for b in model.buffers() if b.is_floating_point())


# Float32 copies of every weight that training keeps: the weights, their gradients, the optimizer's state.
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 1}


def check_memory(model_cfg, input_shape, num_classes: int, device: torch.device, optimizer: str | None = None,
                 batch: int = 0) -> None:
    """Refuse a model that cannot fit in ``device``'s free memory, before anything is allocated:
    its weights, or with ``optimizer`` also the gradients and the optimizer's state, and with
    ``batch`` the activations of a batch of that many images (kept for the backward pass)."""
    n, kept = parameter_count(model_cfg, input_shape, num_classes)
    copies = 1 if optimizer is None else 2 + OPTIMIZER_SLOTS.get(optimizer, 2)
    # per image: the input, and per unit its pre- and post-activation, a norm's and dropout's copy, and
    # the gradients of two of them in the backward pass; float32
    activations = 4 * batch * (2 * math.prod(input_shape) + 6 * sum(model_cfg.widths) + 3 * num_classes)
    from mlp.device import free_memory

    needed, free = 4 * (n * copies + kept) + activations, free_memory(device)
    if free is None or needed <= free:
        return
    from mlp.errors import UserError

    purpose = "its weights" if optimizer is None else f"training it with {optimizer} (weights, gradients, state)"
    if batch:
        purpose += f" and a batch of {batch} images' activations ({_bytes(activations)})"
    raise UserError(f"the model (model.width {model_cfg.width}, depth {model_cfg.depth}) has {n:,} parameters: "
                    f"{_bytes(needed)} for {purpose}, more than the {_bytes(free)} free on {device}; choose a "
                    f"smaller model.width or model.depth{' or train.batch_size' if batch else ''}")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
