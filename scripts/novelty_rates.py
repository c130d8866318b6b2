"""How often `mlp predict`'s novelty check flags real digits and things that are not.

    MLP_DATA_ROOT=/path/to/data python scripts/novelty_rates.py [-c configs/mnist.yaml]

Fits the profile on the training split exactly as `mlp train` does, then prints, for the
held-out digits and for made-up inputs (inverted digits, noise, digits off centre or on a
grey background, transposed or upside down), the share flagged as unlike the training images.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from mlp.config import load_config
from mlp.data import load_data
from mlp.errors import UserError
from mlp.observe.novelty import input_profile, novelty


def cases(data) -> dict[str, torch.Tensor]:
    """Normalised image batches: the real held-out digits, then inputs made from them or from nothing."""
    mean, std = data.mean[0], data.std[0]
    raw = data.test.images * std + mean  # back to 0..1
    g = torch.Generator().manual_seed(0)
    as_input = lambda pixels: (pixels - mean) / std
    out = {"test digits": data.test.images}
    if data.val is not None:
        out["validation digits"] = data.val.images
    out.update({
        "inverted digits": as_input(1 - raw),
        "uniform noise": as_input(torch.rand(1000, *raw.shape[1:], generator=g)),
        "10% salt noise": as_input((torch.rand(1000, *raw.shape[1:], generator=g) < 0.1).float()),
        "digits shifted 6 px": as_input(torch.roll(raw, shifts=(6, 6), dims=(2, 3))),
        "digits on 20% grey": as_input(raw * 0.8 + 0.2),
        "digits on 8% grey": as_input(raw * 0.92 + 0.08),
        "transposed digits": as_input(raw.transpose(2, 3)),
        "upside-down digits": as_input(raw.flip(2)),
    })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default="configs/mnist.yaml")
    args = parser.parse_args()
    try:
        cfg = load_config(args.config, [])
        data = load_data(cfg.data, torch.device("cpu"), cfg.seed)
    except UserError as e:
        sys.exit(f"error: {e}")
    started = time.perf_counter()
    profile = input_profile(data.train.images)
    print(f"profile fitted on {profile['fit_images']} images, calibrated on {profile['calibration_images']} "
          f"in {time.perf_counter() - started:.2f} s")
    for name, images in cases(data).items():
        flagged = (novelty(images, profile) > 1).float().mean().item()
        print(f"{name:<22} {len(images):>6} images  flagged {flagged:7.2%}")


if __name__ == "__main__":
    main()
