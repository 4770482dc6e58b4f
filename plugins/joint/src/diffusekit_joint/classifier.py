r"""The diffusion classifier (Li et al., 2023, "Your Diffusion Model is Secretly a Zero-Shot
Classifier"; Clark & Jaini, 2023).

A conditional diffusion model gives a lower bound on :math:`\log p(x \mid y)`; up to terms the
same for every class it is :math:`-\mathbb E_{t,\varepsilon}\lVert\hat\varepsilon(x_t, t, y) -
\varepsilon\rVert^2`, so by Bayes' rule with a uniform prior the class with the smallest expected
denoising error is the most likely. The expectation is a Monte-Carlo average over ``(t, ε)``
pairs; the paper's variance reduction is used: the **same** pairs for every class (the class
comparison is then paired, and most of the Monte-Carlo error cancels) and a **fixed, evenly
spaced set of times** instead of random ones.

For the joint model the class is the label part held at t = 0: the conditional model is the
joint model at that choice of times.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffusekit_joint.digits import CLASSES, IMAGE, LABEL


def fixed_times(count: int, low: float = 0.02, high: float = 0.98) -> Tensor:
    """``count`` evenly spaced times in ``[low, high]`` (the midpoints of ``count`` equal cells)."""
    return low + (high - low) * (torch.arange(count, dtype=torch.float64) + 0.5) / count


@torch.no_grad()
def class_errors(
    denoiser,
    images: Tensor,
    times: Tensor,
    generator: torch.Generator,
    classes: int = CLASSES,
    parts: tuple[str, str] = (IMAGE, LABEL),
) -> Tensor:
    r"""``(B, classes)``: for each image and class, :math:`\frac1T\sum_t\lVert\hat\varepsilon(x_t, t, y)
    - \varepsilon\rVert^2` over the ``times`` ``(T,)``, one noise draw per (image, time) shared by
    all classes. ``denoiser`` is a joint denoiser of the Gaussian part ``parts[0]`` and the label
    part ``parts[1]`` (``(B, 1)`` tokens)."""
    data, label = parts
    b = len(images)
    schedule = denoiser.schedules[data]
    labels = torch.arange(classes).repeat(b)[:, None]  # (B * K, 1): every class for every image
    total = images.new_zeros(b, classes, dtype=torch.float64)
    for t in times.tolist():
        noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
        c = schedule.coefficients(torch.tensor(t, dtype=torch.float64))
        x_t = float(c.alpha) * images + float(c.sigma) * noise
        x_t, eps = (v.repeat_interleave(classes, 0) for v in (x_t, noise))
        tt = torch.tensor(t, dtype=torch.float64)
        pred = denoiser({data: x_t, label: labels}, {data: tt, label: torch.tensor(0.0, dtype=torch.float64)})
        err = (pred[data].eps.to(torch.float64) - eps.to(torch.float64)).square().flatten(1).mean(1)
        total += err.reshape(b, classes)
    return total / len(times)


def classify(denoiser, images: Tensor, evaluations: int, seed: int = 0) -> Tensor:
    """The predicted class of each image ``(B,)``, from ``evaluations`` times per class."""
    g = torch.Generator().manual_seed(seed)
    return class_errors(denoiser, images, fixed_times(evaluations), g).argmin(1)


__all__ = ["class_errors", "classify", "fixed_times"]
