"""Choosing the torch device a command runs on, and what it has: bf16 arithmetic, free memory."""

from __future__ import annotations

import os

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


def resolve_precision(setting: str, device: torch.device) -> tuple[str, str]:
    """``train.precision`` on ``device``: the precision to run in, and why (for ``auto``)."""
    if setting != "auto":
        return setting, "as configured"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return "bf16", f"auto: compute capability {major}.{minor} multiplies bf16 natively"
        return "fp32", f"auto: compute capability {major}.{minor} has no native bf16"
    if device.type == "cpu":
        native = [name for name, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))
                  if getattr(torch.cpu, probe, lambda: False)()]
        if native:
            return "bf16", f"auto: this CPU has {' and '.join(native)}"
        return "fp32", "auto: this CPU has neither AMX nor AVX512-BF16, so bf16 would be emulated"
    return "fp32", f"auto: no bf16 rule for {device.type}"


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` (the machine's available memory for the CPU), or None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:  # Linux: MemAvailable counts the cache it can reclaim
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
