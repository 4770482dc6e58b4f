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
from diffusekit.state import DEFAULT_PART, Parts, PartTimes, State, Time, align_time, as_parts, part_times


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
        """The shape of one draw (``means.shape[1:]``)."""
        return tuple(self.means.shape[1:])

    def sample(self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None) -> Tensor:
        """``n`` exact samples (of the given components when ``labels`` is set)."""
        if labels is None:
            labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn((n, *self.event_shape), generator=generator, dtype=self.means.dtype)
        return self.means[labels] + self.stds[labels] * noise

    def mean(self) -> Tensor:
        """The mixture's mean, of shape ``event_shape``."""
        return torch.einsum("k,k...->...", self.weights, self.means)

    def _terms(self, x: Tensor, alpha, sigma) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[int, ...]]:
        """Broadcast float64 ``x``, ``alpha``, ``sigma`` against the components: (x - alpha mu, variance, alpha, s^2, event dims)."""
        alpha, sigma = (torch.as_tensor(v, dtype=torch.float64, device=x.device) for v in (alpha, sigma))
        x, alpha, sigma = (v.to(torch.float64) for v in torch.broadcast_tensors(x, alpha, sigma))
        mu, s2 = self.means[None], (self.stds**2)[None]
        a, sg = alpha[:, None], sigma[:, None]
        var = a * a * s2 + sg * sg
        return x[:, None] - a * mu, var, a, s2, tuple(range(2, x.ndim + 1))

    def log_responsibilities(
        self, x: Tensor, alpha, sigma, labels: Tensor | None = None, log_prior: Tensor | None = None
    ) -> Tensor:
        r""":math:`\log p(k \mid x_t = x)` ``(B, K)``; ``labels`` (-1 = any) restrict the component and
        ``log_prior`` ``(B, K)`` adds per-sample log-evidence for each component (another part's).

        ``x`` is ``(B, *event_shape)``; ``alpha`` and ``sigma`` are floats or tensors that broadcast
        against it. The exact posterior over the components: test a sampler's mode shares, or a
        classifier or label prediction against Bayes' rule, with it."""
        diff, var, _, _, event_dims = self._terms(x, alpha, sigma)
        return self._log_r(diff, var, event_dims, labels, log_prior)

    def _log_r(self, diff, var, event_dims, labels, log_prior) -> Tensor:
        log_r = torch.log(self.weights)[None] - 0.5 * (
            (diff * diff / var + torch.log(2 * math.pi * var)).sum(event_dims)
        )
        if log_prior is not None:
            log_r = log_r + log_prior.to(log_r)
        if labels is not None:
            allowed = (labels[:, None] < 0) | (labels[:, None] == torch.arange(len(self.weights))[None])
            log_r = log_r.masked_fill(~allowed, -math.inf)
        return torch.log_softmax(log_r, dim=1)

    def posterior_mean(
        self, x: Tensor, alpha: Tensor, sigma: Tensor, labels: Tensor | None = None, log_prior: Tensor | None = None
    ) -> Tensor:
        r""":math:`E[x_0 \mid x_t = x]`; ``alpha``, ``sigma`` broadcast against ``x``; ``labels`` and
        ``log_prior`` as in :meth:`log_responsibilities`."""
        diff, var, a, s2, event_dims = self._terms(x, alpha, sigma)
        log_r = self._log_r(diff, var, event_dims, labels, log_prior)
        r = torch.exp(log_r).reshape(*log_r.shape, *([1] * len(event_dims)))
        post = self.means[None] + a * s2 / var * diff
        return (r * post).sum(1).to(x.dtype)


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
        """The oracle of a single part, :data:`~diffusekit.DEFAULT_PART` (``"x"``)."""
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
            out[name] = Prediction("x0", self.estimate(name, xp, times[name], c, labels), xp, c)
        return out[DEFAULT_PART] if isinstance(x, Tensor) else out

    def estimate(self, name: str, x: Tensor, t: Tensor, c: Any, labels: Tensor | None) -> Tensor:
        """The x̂0 of part ``name`` at ``x`` (time ``t``, coefficients ``c``): the posterior mean.

        The one method to override for another exact model (:class:`FlowMapOracle` returns the
        end of the ODE trajectory instead) or for a deliberately wrong one that a test expects a
        contract to catch; ``__call__`` wraps its result in an ``x0`` :class:`Prediction`."""
        return self.mixtures[name].posterior_mean(x, c.alpha, c.sigma, labels)


@attrs.frozen(eq=False)
class FlowMapOracle(OracleDenoiser):
    r"""The exact consistency function of Gaussian-mixture parts (``FlowMapOracle.of(oracle)``): its :math:`\hat x_0(x_t, t)` is
    the end of the probability-flow ODE trajectory through :math:`(x_t, t)` (Song et al.,
    "Consistency Models", 2023), not the posterior mean. A consistency sampler driven by it
    samples the mixture exactly.

    The ODE is solved per element with ``steps`` second-order exponential-integrator steps
    (DPM-Solver-2, midpoint in :math:`\lambda = \log(\alpha/\sigma)`; Lu et al., 2022) evenly
    spaced in λ up to :math:`\tilde\sigma = 10^{-4}`, then the posterior mean there.
    """

    steps: int = 48
    sigma_end: float = 1e-4

    @classmethod
    def of(cls, oracle: OracleDenoiser, steps: int = 48) -> FlowMapOracle:
        """The flow map of ``oracle``'s mixtures under its schedules."""
        return cls(oracle.mixtures, oracle.schedules, steps)

    def estimate(self, name: str, xp: Tensor, t: Tensor, c: Any, labels: Tensor | None) -> Tensor:
        schedule, mixture = self.schedules[name], self.mixtures[name]
        t = torch.as_tensor(t, dtype=torch.float64, device=xp.device)
        lam0 = 0.5 * schedule.log_snr(t)
        lam1 = torch.full_like(lam0, -math.log(self.sigma_end))
        start = torch.minimum(lam0, lam1)

        def coefficients(lam: Tensor):
            return schedule.coefficients(schedule.t_from_log_snr(2.0 * lam)).align(xp)

        x = xp.to(torch.float64)
        for k in range(self.steps):
            a = start + (lam1 - start) * (k / self.steps)
            b = start + (lam1 - start) * ((k + 1) / self.steps)
            m = 0.5 * (a + b)
            ca, cm, cb = coefficients(a), coefficients(m), coefficients(b)
            d_a = mixture.posterior_mean(x, ca.alpha, ca.sigma, labels)
            h_half, h = align_time(m - a, x), align_time(b - a, x)
            x_mid = cm.sigma / ca.sigma * x + cm.alpha * -torch.expm1(-h_half) * d_a
            d_m = mixture.posterior_mean(x_mid, cm.alpha, cm.sigma, labels)
            x = cb.sigma / ca.sigma * x + cb.alpha * -torch.expm1(-h) * d_m
        last = coefficients(lam1)
        end = mixture.posterior_mean(x, last.alpha, last.sigma, labels)
        at_zero = align_time(t == 0, xp)  # the boundary condition: f(x, 0) = x
        return torch.where(at_zero, xp.to(torch.float64), end).to(xp.dtype)


@attrs.frozen(eq=False)
class LabelledMixture:
    r"""The exact denoiser of a two-part state: a label :math:`y \sim \pi` (categorical part
    ``label_part``, shape ``(1,)``, its ``K`` classes the mixture's components) and data
    :math:`x \mid y = k \sim \mathcal N(\mu_k, \mathrm{diag}(s_k^2))` (Gaussian part ``data_part``),
    each part at its own time (UniDiffuser's joint model, Bao et al., 2023).

    With :math:`q(y_t \mid y_0 = k)` the label schedule's forward kernel, the posterior over the
    clean label is

    .. math:: p(y_0 = k \mid x_t, y_t) \propto \pi_k\,\mathcal N(x_t; \alpha\mu_k, \alpha^2 s_k^2 + \sigma^2)\,q(y_t \mid k),

    which is the label's prediction, and :math:`E[x_0 \mid x_t, y_t]` is the mixture's posterior
    mean under these responsibilities. A label at t = 0 is the conditional model of :math:`x`, an
    absorbing label at t = 1 (masked: :math:`q` is the same for every class) the marginal one; data
    at t = 0 makes the label's prediction the Bayes classifier :math:`p(y \mid x_0)`. Per-element
    times on ``x`` are exact (diagonal covariances).
    """

    mixture: GaussianMixture
    schedules: Mapping[str, Any]
    """``{data_part: a Gaussian schedule, label_part: a categorical schedule of K classes (+ a mask, if absorbing)}``."""
    data_part: str = "x"
    label_part: str = "label"

    def label_likelihood(self, tokens: Tensor, coef: Any) -> Tensor:
        r""":math:`\log q(y_t \mid y_0 = k)` ``(B, K)`` for label tokens ``(B, 1)``."""
        schedule = self.schedules[self.label_part]
        k = len(self.mixture.weights)
        keep = torch.as_tensor(coef.keep_probability, dtype=torch.float64).reshape(-1, 1)  # (B or 1, 1)
        onehots = torch.eye(schedule.num_classes, dtype=torch.float64)[:k]  # clean labels: the real classes
        q = schedule.marginal(onehots[None], keep).to(torch.float64)  # (B or 1, K, classes): q(y_t | y_0 = k)
        picked = q.expand(len(tokens), -1, -1).gather(-1, tokens[:, :1, None].expand(-1, k, 1)).squeeze(-1)
        return torch.log(picked.clamp_min(1e-300))

    def __call__(self, x: State, t: Time, condition: Condition | None = None, coef: Mapping[str, Any] | None = None):
        from diffusekit.prediction import CategoricalPrediction

        data, label = self.data_part, self.label_part
        parts: Parts = as_parts(x)
        times: PartTimes = part_times(t, parts, device=parts[data].device)
        c = {
            name: coef[name] if coef is not None else self.schedules[name].coefficients(times[name]).align(parts[name])
            for name in (data, label)
        }
        tokens = parts[label]
        evidence = self.label_likelihood(tokens, c[label])
        x0 = self.mixture.posterior_mean(parts[data], c[data].alpha, c[data].sigma, log_prior=evidence)
        log_r = self.mixture.log_responsibilities(parts[data], c[data].alpha, c[data].sigma, log_prior=evidence)
        classes = self.schedules[label].num_classes
        logits = torch.full((len(tokens), 1, classes), math.log(1e-300), dtype=torch.float64)
        logits[:, 0, : log_r.shape[1]] = log_r.clamp_min(math.log(1e-300))
        return {
            data: Prediction("x0", x0, parts[data], c[data]),
            label: CategoricalPrediction(logits.float(), tokens, c[label]),
        }
