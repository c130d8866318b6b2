"""How unlike the training images an input is, for ``mlp predict``.

A classifier answers for every input, and a ReLU network is most confident far from its
data: a page of noise can come back "8 - eight 99.9%".  The softmax cannot tell, so the check
looks at the input itself, pixel by pixel.  The profile holds each pixel's mean and standard
deviation over the (normalised) training images.  An input's deviation is the mean, over
its pixels, of its squared distance from that pixel's mean in that pixel's standard
deviations; its *novelty* is that deviation divided by the deviation that 99.9% of
training images stay below.  Above 1: fewer than 1 in 1000 training images look this unlike
the rest.  An ink stroke where MNIST's border is always black, a grey background, noise, or
an image with the wrong polarity are each far above 1; a test digit almost never is.

A pixel's standard deviation counts as at least ``STD_FLOOR`` (in units of the normalised
data, whose overall standard deviation is 1), so a pixel that is constant in training (the
MNIST border) makes a large deviation, not an infinite one.  The profile is fitted on the
first ``FIT_IMAGES`` training images when training starts and calibrated on the next
``CALIBRATION_IMAGES``, which it was not fitted on, so the threshold is honest; it is stored
in the checkpoint (two numbers a pixel: 6 kB for MNIST).  Measured on the real MNIST (see
docs/scaling.md): 0.1% of the test digits are flagged; every inverted digit and every noise image is.
"""

from __future__ import annotations

import torch

FIT_IMAGES = 20_000
CALIBRATION_IMAGES = 10_000
STD_FLOOR = 0.2
QUANTILE = 0.999


@torch.no_grad()
def input_profile(images: torch.Tensor) -> dict:
    """Each pixel's mean and standard deviation over normalised (N, C, H, W) training images, and
    the novelty threshold, on the CPU."""
    x = images.detach().flatten(1).float()
    n_fit = min(FIT_IMAGES, max(len(x) // 2, 1))
    fit, calibration = x[:n_fit], x[n_fit:n_fit + CALIBRATION_IMAGES]
    mean = fit.mean(0)
    # the sample standard deviation in two passes over contiguous rows (twice as fast as std(0))
    std = (fit - mean).pow_(2).sum(0).div_(max(len(fit) - 1, 1)).sqrt_() if len(fit) > 1 else torch.zeros_like(mean)
    profile = {"mean": mean.cpu(), "std": std.nan_to_num(0.0).clamp_min(STD_FLOOR).cpu(),
               "quantile": QUANTILE, "fit_images": n_fit, "calibration_images": len(calibration)}
    deviations = _deviation(calibration.cpu(), profile)
    threshold = torch.quantile(deviations.double(), QUANTILE).item() if len(deviations) else float("inf")
    return {**profile, "threshold": max(threshold, 1e-12)}


@torch.no_grad()
def novelty(images: torch.Tensor, profile: dict) -> torch.Tensor:
    """Per image: its deviation over the profile's threshold; above 1 is unlike the training images."""
    return _deviation(images.flatten(1).float().cpu(), profile) / profile["threshold"]


def _deviation(x: torch.Tensor, profile: dict) -> torch.Tensor:
    return ((x - profile["mean"].float()) / profile["std"].float()).pow(2).mean(1)
