r"""Gaussian schedules :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`, each with exact endpoints.

Every schedule gives :math:`\alpha_0 = 1, \sigma_0 = 0` (t = 0 is clean data), closed-form
derivatives and a closed-form inverse of the log-SNR :math:`\lambda_t = 2\log(\alpha_t/\sigma_t)`.
They are all the same process up to a change of time and scale (Kingma et al., 2021;
Karras et al., 2022), which is why one sampler works for all of them.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
from attrs import validators as v
from diffusekit import GaussianCoefficients, GaussianSchedule
from torch import Tensor


def _log_snr(log_alpha: Tensor, log_sigma: Tensor) -> Tensor:
    return 2.0 * (log_alpha - log_sigma)


@attrs.frozen
class VPLinear(GaussianSchedule):
    r"""Variance-preserving schedule with linear :math:`\beta(t)` (DDPM; Ho et al., 2020; Song et al., 2021).

    :math:`\log\alpha_t = -\tfrac14 t^2(\beta_{max}-\beta_{min}) - \tfrac12 t\beta_{min}`,
    :math:`\sigma_t = \sqrt{1-\alpha_t^2}`. The defaults match the continuous-time
    limit of DDPM's 1000 steps with :math:`\beta \in [10^{-4}, 0.02]`.
    """

    family: ClassVar[str] = "vp"

    beta_min: float = attrs.field(default=0.1, validator=v.gt(0.0))
    beta_max: float = attrs.field(default=20.0, validator=v.gt(0.0))

    def __attrs_post_init__(self) -> None:
        if self.beta_max < self.beta_min:
            raise ValueError("beta_max must be at least beta_min")

    def coefficients(self, t: Tensor) -> GaussianCoefficients:
        db = self.beta_max - self.beta_min
        log_alpha = -0.25 * t**2 * db - 0.5 * t * self.beta_min
        alpha = torch.exp(log_alpha)
        sigma2 = -torch.expm1(2.0 * log_alpha)
        sigma = torch.sqrt(sigma2)
        d_alpha = -0.5 * (self.beta_min + t * db) * alpha
        d_sigma = -alpha * d_alpha / sigma
        return GaussianCoefficients(alpha, sigma, d_alpha, d_sigma, 2.0 * log_alpha - torch.log(sigma2))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        # log alpha = -softplus(-lambda)/2; solve a t^2 + b t + c = 0 without cancellation
        c = 0.5 * torch.nn.functional.softplus(-log_snr)
        a, b = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min
        return 2.0 * c / (b + torch.sqrt(b * b + 4.0 * a * c))


@attrs.frozen
class VPCosine(GaussianSchedule):
    r"""Cosine schedule (Nichol & Dhariwal, "Improved DDPM", 2021), truncated at a finite log-SNR.

    :math:`\alpha_t = f(\tau)/f(0)`, :math:`f(\tau) = \cos\big(\tfrac{\pi}{2}\tfrac{\tau+s}{1+s}\big)`,
    :math:`\sigma_t = \sqrt{1-\alpha_t^2}`, with :math:`\tau = t\,\tau_{max}` and
    :math:`\tau_{max}` where :math:`\lambda = \lambda_{min}`: the untruncated schedule has
    :math:`\alpha_1 = 0`, where ε-prediction cannot recover :math:`x_0` (DPM-Solver truncates
    it the same way, at T = 0.9946).
    """

    family: ClassVar[str] = "vp"

    s: float = attrs.field(default=0.008, validator=v.ge(0.0))
    logsnr_min: float = attrs.field(default=-15.0, validator=v.lt(0.0))
    tau_max: float = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # computed once: the schedule is immutable
        object.__setattr__(self, "tau_max", float(self._tau(torch.tensor(self.logsnr_min, dtype=torch.float64))))

    @property
    def _theta0(self) -> float:
        return 0.5 * math.pi * self.s / (1.0 + self.s)

    def _tau(self, log_snr: Tensor) -> Tensor:
        alpha = torch.sqrt(torch.sigmoid(log_snr)) * math.cos(self._theta0)
        return (2.0 / math.pi) * (1.0 + self.s) * torch.acos(alpha.clamp(-1.0, 1.0)) - self.s

    def coefficients(self, t: Tensor) -> GaussianCoefficients:
        # With theta = theta0 + delta: alpha = cos(delta) - tan(theta0) sin(delta) and
        # 1 - alpha^2 = sin(delta) sin(2 theta0 + delta) / cos^2(theta0), exact at t = 0
        # and free of cancellation for small t.
        theta0 = self._theta0
        rate = 0.5 * math.pi * self.tau_max / (1.0 + self.s)
        delta = rate * t
        tan0 = math.tan(theta0)
        alpha = torch.cos(delta) - tan0 * torch.sin(delta)
        sigma2 = torch.sin(delta) * torch.sin(2.0 * theta0 + delta) / math.cos(theta0) ** 2
        sigma = torch.sqrt(sigma2)
        d_alpha = -(torch.sin(delta) + tan0 * torch.cos(delta)) * rate
        d_sigma = -alpha * d_alpha / sigma
        return GaussianCoefficients(alpha, sigma, d_alpha, d_sigma, torch.log(alpha**2 / sigma2))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return self._tau(log_snr) / self.tau_max


@attrs.frozen
class VE(GaussianSchedule):
    r"""Variance-exploding schedule (SMLD / score SDE VE; Song & Ermon, 2019; Song et al., 2021).

    :math:`\alpha_t = 1`, :math:`\sigma_t = \sigma_{min}\sqrt{(\sigma_{max}/\sigma_{min})^{2t} - 1}`:
    the exact marginal of the VE SDE with :math:`\sigma(t) = \sigma_{min}(\sigma_{max}/\sigma_{min})^t`,
    started from the data at t = 0.
    """

    family: ClassVar[str] = "ve"

    sigma_min: float = attrs.field(default=0.01, validator=v.gt(0.0))
    sigma_max: float = attrs.field(default=50.0, validator=v.gt(0.0))

    def coefficients(self, t: Tensor) -> GaussianCoefficients:
        log_r = math.log(self.sigma_max / self.sigma_min)
        e = torch.expm1(2.0 * t * log_r)
        sigma = self.sigma_min * torch.sqrt(e)
        d_sigma = self.sigma_min * log_r * (e + 1.0) / torch.sqrt(e)
        one = torch.ones_like(t)
        return GaussianCoefficients(one, sigma, torch.zeros_like(t), d_sigma, -2.0 * torch.log(sigma))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        log_r = math.log(self.sigma_max / self.sigma_min)
        return torch.nn.functional.softplus(-log_snr - 2.0 * math.log(self.sigma_min)) / (2.0 * log_r)


@attrs.frozen
class EDM(GaussianSchedule):
    r"""EDM schedule with Karras' polynomial noise levels (Karras et al., "Elucidating...", 2022).

    :math:`\alpha_t = 1`, :math:`\sigma_t = \sigma_{max}\,t^{\rho}`: the EDM time-step
    discretisation :math:`\sigma_i = (\sigma_{max}^{1/\rho} + \tfrac{i}{N}(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}))^\rho`
    with :math:`\sigma_{min} \to 0`, as a continuous schedule. Uniform training times give
    a median noise level :math:`\sigma_{max}/2^\rho` (0.63 with the defaults), close to
    EDM's log-normal training distribution.
    """

    family: ClassVar[str] = "ve"

    sigma_max: float = attrs.field(default=80.0, validator=v.gt(0.0))
    rho: float = attrs.field(default=7.0, validator=v.gt(0.0))

    def coefficients(self, t: Tensor) -> GaussianCoefficients:
        sigma = self.sigma_max * t**self.rho
        d_sigma = self.sigma_max * self.rho * t ** (self.rho - 1.0)
        return GaussianCoefficients(
            torch.ones_like(t),
            sigma,
            torch.zeros_like(t),
            d_sigma,
            -2.0 * (math.log(self.sigma_max) + self.rho * torch.log(t)),
        )

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return torch.exp((-0.5 * log_snr - math.log(self.sigma_max)) / self.rho)


@attrs.frozen
class RectifiedFlow(GaussianSchedule):
    r"""Rectified flow / conditional flow matching path (Liu et al., 2023; Lipman et al., 2023).

    :math:`\alpha_t = 1 - t`, :math:`\sigma_t = t`; the probability-flow velocity is
    :math:`u = \varepsilon - x_0`. At t = 1, :math:`\alpha = 0`: use the velocity or
    x0 parameterization there, not ε.
    """

    family: ClassVar[str] = "flow"

    def coefficients(self, t: Tensor) -> GaussianCoefficients:
        alpha = 1.0 - t
        return GaussianCoefficients(
            alpha, t, -torch.ones_like(t), torch.ones_like(t), 2.0 * (torch.log(alpha) - torch.log(t))
        )

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return torch.sigmoid(-0.5 * log_snr)
