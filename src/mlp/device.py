"""Choosing the torch device a command runs on."""

from __future__ import annotations

import torch

from mlp.errors import UserError


def pick_device(name: str, setting: str = "train.device") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"{setting} is '{name}' but this machine has no CUDA device; use auto or cpu")
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise UserError(f"{setting} is '{name}' but there are only {torch.cuda.device_count()} CUDA devices")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{setting} is 'mps' but MPS is not available here; use auto or cpu")
    return torch.device(name)
