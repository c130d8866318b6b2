"""Weights saved by other scripts: a bare state dict, evaluated with the model a config describes.

The classic PyTorch MNIST scripts end with ``torch.save(model.state_dict(), "mnist_model.pth")``:
keys like ``fc1.weight``, ``fc1.bias``, ``fc2.weight``, and no word of the model that made them.
``mlp eval FILE --config CONFIG`` (and ``mlp predict``) build the model the config describes and
copy the file's layers onto it in order: the tensors of each module in the file (its keys up to
the last dot, in the order they were saved) go to the next mlp module that has trainable weights
(a Linear, a norm, a PReLU, a learnable Swish β), and any difference of names or shapes is refused.

Normalisation: such a file does not say how its images were normalised.  mlp uses the
per-channel mean and std of the config's data set's whole training split; for MNIST these are
0.1307 and 0.3081, the constants the classic scripts pass to ``transforms.Normalize``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from mlp.errors import UserError


def adopt_state_dict(state: dict[str, torch.Tensor], path: Path, config_path: Path,
                     data_root: str | None = None) -> dict[str, Any]:
    """An mlp checkpoint (in memory) made of ``state``, the config at ``config_path`` and the
    normalisation of that config's training images."""
    from mlp.config import load_config
    from mlp.data import DATASETS, channel_stats, ensure_files, read_split, resolve_root, to_unit
    from mlp.model import build_model

    cfg = load_config(config_path)
    name = cfg.data.dataset
    if name not in DATASETS:
        raise UserError(f"{config_path}: a bare state dict can be read with a config of {', '.join(DATASETS)}; "
                        f"for data.dataset {name}, train the model with mlp, whose checkpoint carries its classes")
    root = Path(data_root).expanduser() if data_root else resolve_root(cfg.data.root)
    ensure_files(name, root, download=False, for_eval=True)
    images, _, classes = read_split(name, root, train=True)
    mean, std = channel_stats(to_unit(images, torch.device("cpu")))
    input_shape = DATASETS[name].input_shape
    model = build_model(cfg.model, input_shape, len(classes))
    model.load_state_dict(map_layers(state, model, f"{path}", f"the model of {config_path}"))
    return {"format_version": 1, "kind": "imported", "config": cfg.to_dict(), "model_state": model.state_dict(),
            "classes": classes, "input_shape": list(input_shape),
            "normalization": {"mean": mean, "std": std, "from": f"the whole training split of {name}"}}


def map_layers(state: dict[str, torch.Tensor], model: torch.nn.Module, source: str, target: str
               ) -> dict[str, torch.Tensor]:
    """``model``'s state dict with the weights of ``state`` copied in, module by module in order."""
    groups = _modules_in(state)
    targets = [(name, module) for name, module in model.named_modules()
               if any(True for _ in module.parameters(recurse=False))]
    file_layers = _describe(groups)
    conv = next((prefix for prefix, tensors in groups.items() if tensors.get("weight", torch.empty(0)).dim() > 2), None)
    if conv is not None:
        raise UserError(f"{source} holds a convolution layer, {conv} (weight {_shape(groups[conv]['weight'])}), "
                        f"which an MLP does not have; mlp evaluates the weights of multilayer perceptrons")
    if len(groups) != len(targets):
        raise UserError(f"{source} has {len(groups)} layers with weights ({file_layers}) but {target} has "
                        f"{len(targets)} ({_describe(OrderedDict((n, m.state_dict()) for n, m in targets))}); "
                        "set model.width (a list of the hidden widths), model.norm and model.bias to match the file")
    mapped = dict(model.state_dict())
    for (prefix, tensors), (name, module) in zip(groups.items(), targets):
        own = module.state_dict()
        if set(tensors) != set(own):
            raise UserError(f"{source}: {prefix} holds {', '.join(tensors)} where {name} of {target} holds "
                            f"{', '.join(own)}; set model.bias or model.norm to match the file ({file_layers})")
        for leaf, tensor in tensors.items():
            if tensor.shape != own[leaf].shape:
                raise UserError(f"{source}: {prefix}.{leaf} has shape {_shape(tensor)} but {name}.{leaf} of "
                                f"{target} has {_shape(own[leaf])}; the file's layers are {file_layers}")
            mapped[f"{name}.{leaf}"] = tensor
    return mapped


def _modules_in(state: dict[str, torch.Tensor]) -> OrderedDict[str, dict[str, torch.Tensor]]:
    """The tensors of a state dict grouped by module (``fc1.weight`` → module ``fc1``), in order."""
    groups: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
    for key, tensor in state.items():
        prefix, _, leaf = key.rpartition(".")
        groups.setdefault(prefix or "(top)", {})[leaf] = tensor
    return groups


def _describe(groups) -> str:
    """``fc1 784→128, fc2 128→10``; a weight that is not a matrix shows its whole shape."""
    parts = []
    for prefix, tensors in groups.items():
        weight = tensors.get("weight", next(iter(tensors.values()), None))
        if weight is not None and weight.dim() == 2:
            parts.append(f"{prefix} {weight.shape[1]}→{weight.shape[0]}")
        elif weight is not None and weight.dim() > 2:
            parts.append(f"{prefix} {_shape(weight)} (a convolution, which an MLP does not have)")
        else:
            parts.append(f"{prefix} {_shape(weight) if weight is not None else '-'}")
    return ", ".join(parts)


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(map(str, tensor.shape)) or "a scalar"
