r"""Samplers for Gaussian parts, written against the schedule's coefficients only.

Every sampler works for every Gaussian schedule and parameterization, on single- and
multi-part states, with per-element time: the update of each element uses the
coefficients :math:`(\alpha, \sigma, \lambda)` at that element's own ``t_from`` and
``t_to``. Notation: step from time t to s < t, :math:`\hat x_0, \hat\varepsilon` the
denoiser's prediction at :math:`(x_t, t)`, :math:`\tilde\sigma = \sigma/\alpha`.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from attrs import validators as v
from diffusekit import DenoiserLike, GaussianCoefficients, Sampler, Step, align_time
from diffusekit.sampler import keep_unchanged
from torch import Tensor


def coefficients(denoiser: DenoiserLike, part: str, t: Tensor, x: Tensor) -> GaussianCoefficients:
    """The part's schedule coefficients at ``t``, aligned with ``x``."""
    return denoiser.schedules[part].coefficients(t).align(x)


def ddim_update(
    x0: Tensor, eps: Tensor, c_t: GaussianCoefficients, c_s: GaussianCoefficients, eta: float, noise: Tensor | None
) -> Tensor:
    r"""The DDIM update (Song et al., "Denoising Diffusion Implicit Models", 2021, eq. 12).

    :math:`x_s = \alpha_s\hat x_0 + \sigma_s\sqrt{1-\eta^2 h}\,\hat\varepsilon + \eta\sigma_s\sqrt{h}\,z`
    with :math:`h = 1 - e^{\lambda_t-\lambda_s}`. For :math:`\eta = 1` this samples the
    DDPM posterior :math:`q(x_s \mid x_t, \hat x_0)`; for :math:`\eta = 0` it is
    deterministic.
    """
    if eta == 0.0 or noise is None:
        return c_s.alpha * x0 + c_s.sigma * eps
    h = -torch.expm1(c_t.log_snr - c_s.log_snr)
    return c_s.alpha * x0 + c_s.sigma * (torch.sqrt(1.0 - eta * eta * h) * eps + eta * torch.sqrt(h) * noise)


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@attrs.frozen
class DDIM(Sampler):
    r"""DDIM with stochasticity η (Song et al., 2021): η = 0 deterministic, η = 1 is DDPM.

    Order 1, one network evaluation per step. See :func:`ddim_update`.
    """

    eta: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.le(1.0)])

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0.0

    def update(self, denoiser, x, t_from, t_to, *, condition, generator, carry) -> Step:
        pred = denoiser(x, t_from, condition)
        out, denoised = {}, {}
        for p, xp in x.items():
            c_t, c_s = coefficients(denoiser, p, t_from[p], xp), coefficients(denoiser, p, t_to[p], xp)
            x0, eps = pred[p].x0, pred[p].eps
            noise = _noise(xp, generator) if self.eta > 0.0 else None
            out[p], denoised[p] = ddim_update(x0, eps, c_t, c_s, self.eta, noise), x0
        return Step(out, denoised)


@attrs.frozen
class DDPM(Sampler):
    r"""Ancestral sampling from the DDPM posterior (Ho et al., 2020; Kingma et al., 2021, eq. 33).

    :math:`x_s \sim q(x_s \mid x_t, x_0 = \hat x_0) = \mathcal N(\mu, \varsigma^2)` with
    :math:`\mu = \frac{\alpha_{t|s}\sigma_s^2}{\sigma_t^2}x_t + \frac{\alpha_s\sigma_{t|s}^2}{\sigma_t^2}\hat x_0`,
    :math:`\varsigma^2 = \sigma_{t|s}^2\sigma_s^2/\sigma_t^2`, :math:`\alpha_{t|s} = \alpha_t/\alpha_s`,
    :math:`\sigma_{t|s}^2 = \sigma_t^2 - \alpha_{t|s}^2\sigma_s^2`; computed as DDIM with η = 1,
    which is the same distribution. Order 1, one evaluation per step.
    """

    stochastic: ClassVar[bool] = True

    def update(self, denoiser, x, t_from, t_to, *, condition, generator, carry) -> Step:
        pred = denoiser(x, t_from, condition)
        out, denoised = {}, {}
        for p, xp in x.items():
            c_t, c_s = coefficients(denoiser, p, t_from[p], xp), coefficients(denoiser, p, t_to[p], xp)
            x0 = pred[p].x0
            out[p], denoised[p] = ddim_update(x0, pred[p].eps, c_t, c_s, 1.0, _noise(xp, generator)), x0
        return Step(out, denoised)


@attrs.frozen
class Euler(Sampler):
    r"""Euler's method on the probability-flow ODE in EDM variables (Karras et al., 2022, Alg. 1 without the correction).

    :math:`d\tilde x/d\tilde\sigma = \hat\varepsilon`, so
    :math:`x_s = \alpha_s\big(\tilde x_t + (\tilde\sigma_s - \tilde\sigma_t)\hat\varepsilon\big) = \alpha_s\hat x_0 + \sigma_s\hat\varepsilon`:
    algebraically DDIM with η = 0 (Song et al., 2021; Karras et al., 2022, Sec. 4), and
    the same as k-diffusion's ``sample_euler``. Order 1, one evaluation per step.
    """

    def update(self, denoiser, x, t_from, t_to, *, condition, generator, carry) -> Step:
        pred = denoiser(x, t_from, condition)
        out, denoised = {}, {}
        for p, xp in x.items():
            c_s = coefficients(denoiser, p, t_to[p], xp)
            x0 = pred[p].x0
            out[p], denoised[p] = c_s.alpha * x0 + c_s.sigma * pred[p].eps, x0
        return Step(out, denoised)


@attrs.frozen
class Heun(Sampler):
    r"""Heun's 2nd-order method on the probability-flow ODE (Karras et al., 2022, Algorithm 1).

    Euler predictor :math:`\bar x_s = \alpha_s\hat x_0 + \sigma_s\hat\varepsilon_t`, then the
    trapezoidal corrector
    :math:`x_s = \bar x_s + \tfrac{\alpha_s}{2}(\tilde\sigma_s - \tilde\sigma_t)(\hat\varepsilon(\bar x_s, s) - \hat\varepsilon_t)`.
    Where :math:`\sigma_s = 0` (the last step) or :math:`\tilde\sigma_t = \infty`
    (:math:`\alpha_t = 0`, e.g. rectified flow at t = 1) the Euler step is kept, as in EDM.
    Order 2, two evaluations per step (one on the last step).
    """

    evaluations_per_step: ClassVar[int] = 2

    def update(self, denoiser, x, t_from, t_to, *, condition, generator, carry) -> Step:
        pred = denoiser(x, t_from, condition)
        c_t = {p: coefficients(denoiser, p, t_from[p], xp) for p, xp in x.items()}
        c_s = {p: coefficients(denoiser, p, t_to[p], xp) for p, xp in x.items()}
        eps = {p: pred[p].eps for p in x}
        denoised = {p: pred[p].x0 for p in x}
        # elements whose time does not change keep their value (at t = 0, eps itself is 0/0)
        euler = {
            p: keep_unchanged(c_s[p].alpha * denoised[p] + c_s[p].sigma * eps[p], x[p], t_from[p], t_to[p]) for p in x
        }
        if all(bool((c.sigma == 0).all()) for c in c_s.values()):
            return Step(euler, denoised)
        pred2 = denoiser(euler, t_to, condition)
        out = {}
        for p in x:
            slope = c_s[p].sigma_tilde - c_t[p].sigma_tilde
            corrected = euler[p] + 0.5 * c_s[p].alpha * slope * (pred2[p].eps - eps[p])
            keep = (c_s[p].sigma == 0) | ~torch.isfinite(c_t[p].sigma_tilde)
            out[p] = torch.where(keep, euler[p], corrected)
        return Step(out, denoised)


@attrs.frozen
class EulerMaruyama(Sampler):
    r"""Euler–Maruyama on the reverse-time SDE (Song et al., "Score-Based Generative Modeling through SDEs", 2021).

    Forward SDE :math:`dx = f(t)x\,dt + g(t)\,dw` with :math:`f = \dot\alpha/\alpha`,
    :math:`g^2 = 2\sigma\dot\sigma - 2f\sigma^2`; reverse step
    :math:`x_s = x_t - (t-s)\,[f x_t - g^2\nabla\log p_t] + g\sqrt{t-s}\,z` with
    :math:`\nabla\log p_t = -\hat\varepsilon/\sigma_t`. The step to s = 0 returns
    :math:`\hat x_0` (the usual final denoising). Where :math:`\alpha_t = 0` the SDE's
    coefficients are infinite and the step samples :math:`q(x_s \mid x_t, \hat x_0)`
    instead. Strong order 1/2, weak order 1; one evaluation per step.
    """

    stochastic: ClassVar[bool] = True

    def update(self, denoiser, x, t_from, t_to, *, condition, generator, carry) -> Step:
        pred = denoiser(x, t_from, condition)
        out, denoised = {}, {}
        for p, xp in x.items():
            c_t, c_s = coefficients(denoiser, p, t_from[p], xp), coefficients(denoiser, p, t_to[p], xp)
            x0, eps = pred[p].x0, pred[p].eps
            dt = align_time(t_from[p] - t_to[p], xp).to(xp.dtype)
            f = c_t.d_alpha / c_t.alpha
            g2 = 2.0 * c_t.sigma * c_t.d_sigma - 2.0 * f * c_t.sigma**2
            # g^2 * score = -(2 sigma' - 2 f sigma) eps: no division by sigma
            drift = f * xp + (2.0 * c_t.d_sigma - 2.0 * f * c_t.sigma) * eps
            noise = _noise(xp, generator)
            em = xp - dt * drift + torch.sqrt((g2 * dt).clamp(min=0.0)) * noise
            ancestral = ddim_update(x0, eps, c_t, c_s, 1.0, noise)
            step = torch.where(c_t.alpha == 0, ancestral, em)
            out[p], denoised[p] = torch.where(c_s.sigma == 0, x0, step), x0
        return Step(out, denoised)


SAMPLERS: dict[str, type[Sampler]] = {
    "ddpm": DDPM,
    "ddim": DDIM,
    "euler": Euler,
    "heun": Heun,
    "euler_maruyama": EulerMaruyama,
}
