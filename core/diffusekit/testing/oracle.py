r"""Exact denoisers: Gaussian mixtures, whose posterior mean is closed-form.

For data :math:`x_0 \sim \sum_k \pi_k \mathcal N(\mu_k, \mathrm{diag}(s_k^2))` and
:math:`x_t = \alpha x_0 + \sigma\varepsilon` (per element :math:`\alpha, \sigma`),

.. math::
    p(x_t) = \sum_k \pi_k \mathcal N(\alpha\mu_k, \alpha^2 s_k^2 + \sigma^2), \qquad
    E[x_0 \mid x_t] = \sum_k r_k(x_t)\Big(\mu_k + \frac{\alpha s_k^2}{\alpha^2 s_k^2 + \sigma^2}(x_t - \alpha\mu_k)\Big),

with responsibilities :math:`r_k \propto \pi_k \mathcal N(x_t; \alpha\mu_k, \alpha^2 s_k^2 + \sigma^2)`.
Because the covariances are diagonal this is exact for per-element time too. Used by
the conformance contracts and the benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import Tensor

from diffusekit.condition import ClassLabel, Condition
from diffusekit.prediction import Prediction
from diffusekit.schedule import GaussianSchedule
from diffusekit.state import DEFAULT_PART, Parts, PartTimes, State, Time, as_parts, part_times


@attrs.frozen(eq=False)
class GaussianMixture:
    """A mixture of diagonal Gaussians over events of shape ``means.shape[1:]``."""

    weights: Tensor
    means: Tensor
    stds: Tensor

    def __attrs_post_init__(self) -> None:
        if self.means.shape != self.stds.shape or self.weights.shape != self.means.shape[:1]:
            raise ValueError("weights (K,), means and stds (K, *event) must agree")

    @classmethod
    def random(
        cls,
        event_shape: tuple[int, ...],
        components: int,
        *,
        generator: torch.Generator,
        spread: float = 2.0,
        std_range: tuple[float, float] = (0.2, 0.6),
    ) -> GaussianMixture:
        """A random mixture with well-separated means (float64)."""
        g = dict(generator=generator, dtype=torch.float64)
        weights = torch.rand(components, **g) + 0.5
        means = spread * torch.randn(components, *event_shape, **g)
        lo, hi = std_range
        stds = lo + (hi - lo) * torch.rand(components, *event_shape, **g)
        return cls(weights / weights.sum(), means, stds)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    def sample(self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None) -> Tensor:
        """``n`` exact samples (of the given components when ``labels`` is set)."""
        if labels is None:
            labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn((n, *self.event_shape), generator=generator, dtype=self.means.dtype)
        return self.means[labels] + self.stds[labels] * noise

    def mean(self) -> Tensor:
        return torch.einsum("k,k...->...", self.weights, self.means)

    def posterior_mean(self, x: Tensor, alpha: Tensor, sigma: Tensor, labels: Tensor | None = None) -> Tensor:
        """:math:`E[x_0 \\mid x_t = x]`; ``alpha``, ``sigma`` broadcast against ``x``; ``labels`` (-1 = any) restrict the component."""
        dtype = x.dtype
        alpha, sigma = (torch.as_tensor(v, dtype=torch.float64, device=x.device) for v in (alpha, sigma))
        x, alpha, sigma = (v.to(torch.float64) for v in torch.broadcast_tensors(x, alpha, sigma))
        mu, s2 = self.means[None], (self.stds**2)[None]
        a, sg = alpha[:, None], sigma[:, None]
        var = a * a * s2 + sg * sg
        diff = x[:, None] - a * mu
        event_dims = tuple(range(2, diff.ndim))
        log_r = torch.log(self.weights)[None] - 0.5 * (
            (diff * diff / var + torch.log(2 * math.pi * var)).sum(event_dims)
        )
        if labels is not None:
            allowed = (labels[:, None] < 0) | (labels[:, None] == torch.arange(len(self.weights))[None])
            log_r = log_r.masked_fill(~allowed, -math.inf)
        r = torch.softmax(log_r, dim=1).reshape(*log_r.shape, *([1] * len(event_dims)))
        post = mu + a * s2 / var * diff
        return (r * post).sum(1).to(dtype)


@attrs.frozen(eq=False)
class OracleDenoiser:
    """The exact denoiser of independent Gaussian-mixture parts (a :class:`~diffusekit.DenoiserLike`).

    A :class:`~diffusekit.ClassLabel` condition restricts each part's mixture to the
    component with that index (the null label leaves the full mixture), so the oracle
    is also an exact class-conditional model.
    """

    mixtures: Mapping[str, GaussianMixture]
    schedules: Mapping[str, GaussianSchedule]

    @classmethod
    def single(cls, mixture: GaussianMixture, schedule: GaussianSchedule) -> OracleDenoiser:
        return cls({DEFAULT_PART: mixture}, {DEFAULT_PART: schedule})

    def __call__(
        self, x: State, t: Time, condition: Condition | None = None, coef: Mapping[str, Any] | None = None
    ) -> dict[str, Prediction] | Prediction:
        parts: Parts = as_parts(x)
        times: PartTimes = part_times(t, parts, device=next(iter(parts.values())).device)
        labels = condition.labels if isinstance(condition, ClassLabel) else None
        out = {}
        for name, xp in parts.items():
            c = coef[name] if coef is not None else self.schedules[name].coefficients(times[name]).align(xp)
            x0 = self.mixtures[name].posterior_mean(xp, c.alpha, c.sigma, labels)
            out[name] = Prediction("x0", x0, xp, c)
        return out[DEFAULT_PART] if isinstance(x, Tensor) else out
