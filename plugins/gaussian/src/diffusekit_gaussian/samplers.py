r"""One-step samplers for Gaussian parts, written against the schedule's coefficients only.

Every sampler works for every Gaussian schedule and parameterization, on single- and
multi-part states, with per-element time: the update of each element uses the
coefficients :math:`(\alpha, \sigma, \lambda)` at that element's own ``t_from`` and
``t_to``, computed once per plan (floats when the times are scalars). Notation: a step
goes from time t to s; :math:`\hat x_0, \hat\varepsilon` is the denoiser's prediction at
:math:`(x_t, t)`; :math:`\tilde\sigma = \sigma/\alpha = e^{-\lambda/2}` (EDM's noise level).
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
from attrs import validators as v
from diffusekit import GaussianCoefficients, Prediction, Sampler, Step, numeric, rng
from diffusekit.numeric import Scalar
from diffusekit.sampler import StepTimes, coefficients_at, hold_fixed
from torch import Tensor


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return rng.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def half_log_snr(c: GaussianCoefficients) -> Scalar:
    r""":math:`\log(\alpha/\sigma)`, the time variable of DPM-Solver and UniPC (Lu et al., 2022)."""
    return 0.5 * c.log_snr


def reaches_data(c: GaussianCoefficients) -> bool:
    """Whether every element of this part lands on the data (sigma = 0): the last step of a plan."""
    return bool((c.sigma == 0).all()) if isinstance(c.sigma, Tensor) else c.sigma == 0


def ddim(
    pred: Prediction, c_t: GaussianCoefficients, c_s: GaussianCoefficients, eta: float, noise: Tensor | None
) -> Tensor:
    r"""The DDIM update (Song et al., "Denoising Diffusion Implicit Models", 2021, eq. 12).

    :math:`x_s = \alpha_s\hat x_0 + \sigma_s\sqrt{1-\eta^2 h}\,\hat\varepsilon + \eta\sigma_s\sqrt{h}\,z`
    with :math:`h = 1 - e^{\lambda_t-\lambda_s}`. For :math:`\eta = 1` this samples the
    DDPM posterior :math:`q(x_s \mid x_t, \hat x_0)`; for :math:`\eta = 0` it is
    deterministic and equals an Euler step of the probability-flow ODE in
    :math:`(\tilde x, \tilde\sigma)`.
    """
    if eta == 0.0 or noise is None:
        return pred.mix(c_s.alpha, c_s.sigma)
    h = -numeric.expm1(c_t.log_snr - c_s.log_snr)
    return (
        pred.mix(c_s.alpha, c_s.sigma * numeric.sqrt(1.0 - eta * eta * h)) + (eta * c_s.sigma * numeric.sqrt(h)) * noise
    )


@attrs.frozen
class DDIM(Sampler):
    r"""DDIM with stochasticity η (Song et al., 2021): η = 0 deterministic, η = 1 is DDPM.

    Order 1, one network evaluation per step. See :func:`ddim`.
    """

    eta: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.le(1.0)])

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0.0

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        pred = denoiser(x, times.t_from, condition, times.c_from)
        out = {}
        for p, xp in x.items():
            noise = noise_like(xp, generator) if self.eta > 0.0 else None
            out[p] = ddim(pred[p], times.c_from[p], times.c_to[p], self.eta, noise)
        return Step(out, pred)


@attrs.frozen
class EulerAncestral(DDIM):
    r"""Euler ancestral (k-diffusion's ``sample_euler_ancestral``, after Karras et al., 2022), η = 1 by default.

    An Euler step in :math:`\tilde\sigma` down to :math:`\tilde\sigma_{down}` followed by
    fresh noise :math:`\tilde\sigma_{up}`, with
    :math:`\tilde\sigma_{up} = \eta\,\tilde\sigma_s\sqrt{1 - \tilde\sigma_s^2/\tilde\sigma_t^2}`,
    :math:`\tilde\sigma_{down} = \sqrt{\tilde\sigma_s^2 - \tilde\sigma_{up}^2}`. Expanding
    both gives exactly the DDIM(η) update, which is what runs. Order 1, one evaluation.
    """

    eta: float = attrs.field(default=1.0, validator=[v.ge(0.0), v.le(1.0)])


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

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        pred = denoiser(x, times.t_from, condition, times.c_from)
        out = {p: ddim(pred[p], times.c_from[p], times.c_to[p], 1.0, noise_like(xp, generator)) for p, xp in x.items()}
        return Step(out, pred)


@attrs.frozen
class Euler(Sampler):
    r"""Euler's method on the probability-flow ODE in EDM variables (Karras et al., 2022, Alg. 1 without the correction).

    :math:`d\tilde x/d\tilde\sigma = \hat\varepsilon`, so
    :math:`x_s = \alpha_s\big(\tilde x_t + (\tilde\sigma_s - \tilde\sigma_t)\hat\varepsilon\big) = \alpha_s\hat x_0 + \sigma_s\hat\varepsilon`:
    algebraically DDIM with η = 0 (Song et al., 2021; Karras et al., 2022, Sec. 4), and
    the same as k-diffusion's ``sample_euler``. Order 1, one evaluation per step.
    """

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        pred = denoiser(x, times.t_from, condition, times.c_from)
        return Step({p: pred[p].mix(times.c_to[p].alpha, times.c_to[p].sigma) for p in x}, pred)


def _keep_euler(c_t: GaussianCoefficients, c_s: GaussianCoefficients, dtype: torch.dtype) -> bool | Tensor:
    """Where Heun's step keeps its Euler predictor (see :func:`heun_step`): per element, or one bool."""
    tiny = math.sqrt(torch.finfo(dtype).eps) if dtype.is_floating_point else 0.0
    if isinstance(c_s.sigma, Tensor) or isinstance(c_t.sigma, Tensor):
        st, ss = c_t.sigma_tilde, c_s.sigma_tilde
        return (c_s.sigma == 0) | ~numeric.isfinite(st) | (ss < tiny * st)
    return c_s.sigma == 0 or not math.isfinite(c_t.sigma_tilde) or c_s.sigma_tilde < tiny * c_t.sigma_tilde


def heun_step(denoiser, x, pred, t_to, c_from, c_to, fixed, condition) -> dict[str, Tensor]:
    r"""Heun's trapezoidal step from predictions ``pred`` at ``c_from`` to ``c_to`` (Karras et al., 2022, Alg. 1).

    Euler predictor :math:`\bar x_s = \alpha_s\hat x_0 + \sigma_s\hat\varepsilon_t`, corrector
    :math:`x_s = \bar x_s + \tfrac{\alpha_s}{2}(\tilde\sigma_s - \tilde\sigma_t)(\hat\varepsilon(\bar x_s, s) - \hat\varepsilon_t)`.
    The Euler step is kept where :math:`\sigma_s = 0` (EDM's last step),
    :math:`\tilde\sigma_t = \infty` (:math:`\alpha_t = 0`: the trapezoid is undefined), and
    where :math:`\tilde\sigma_s < \sqrt{\epsilon}\,\tilde\sigma_t` (ε the machine epsilon of
    the data's dtype): the corrector's :math:`\hat\varepsilon(\bar x_s, s)` divides the rounding
    error of :math:`\bar x_s - \alpha_s\hat x_0` by :math:`\sigma_s`, so a step onto a
    negligible noise level is ill-conditioned, and such a step is the last step onto the data
    in all but name.
    """
    # elements whose time does not change keep their value (at t = 0, eps itself is 0/0)
    euler = {p: hold_fixed(pred[p].mix(c_to[p].alpha, c_to[p].sigma), xp, fixed[p]) for p, xp in x.items()}
    keeps = {p: _keep_euler(c_from[p], c_to[p], xp.dtype) for p, xp in x.items()}
    if all(keep is True or (isinstance(keep, Tensor) and bool(keep.all())) for keep in keeps.values()):
        return euler
    pred2 = denoiser(euler, t_to, condition, c_to)
    out = {}
    for p in x:
        ct, cs = c_from[p], c_to[p]
        k = 0.5 * cs.alpha * (cs.sigma_tilde - ct.sigma_tilde)
        keep = keeps[p]
        if keep is True:
            out[p] = euler[p]
            continue
        corrected = euler[p] + pred2[p].mix(0.0, k) - pred[p].mix(0.0, k)
        out[p] = numeric.select(keep, euler[p], corrected)
    return out


@attrs.frozen
class Heun(Sampler):
    r"""Heun's 2nd-order method on the probability-flow ODE (Karras et al., 2022, Algorithm 1).

    See :func:`heun_step`. Order 2, two evaluations per step (one on the last step).
    """

    evaluations_per_step: ClassVar[int] = 2
    order: ClassVar[int] = 2

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        pred = denoiser(x, times.t_from, condition, times.c_from)
        out = heun_step(denoiser, x, pred, times.t_to, times.c_from, times.c_to, times.fixed, condition)
        return Step(out, pred)


@attrs.frozen
class EDMStochastic(Sampler):
    r"""The EDM stochastic sampler (Karras et al., 2022, Algorithm 2).

    Before each Heun step, noise is added to raise the level from :math:`\tilde\sigma_t`
    to :math:`\hat\sigma = \tilde\sigma_t(1 + \gamma)`, :math:`\hat x = \tilde x_t + \sqrt{\hat\sigma^2 - \tilde\sigma_t^2}\,S_{noise}\,z`,
    with :math:`\gamma = \min(S_{churn}/N, \sqrt2 - 1)` where
    :math:`S_{tmin} \le \tilde\sigma_t \le S_{tmax}` (N = steps in the plan) and 0 elsewhere;
    with ``s_churn = 0`` it is :class:`Heun`. Defaults are the paper's ImageNet-64 values.
    Two evaluations per step.
    """

    s_churn: float = attrs.field(default=40.0, validator=v.ge(0.0))
    s_tmin: float = attrs.field(default=0.05, validator=v.ge(0.0))
    s_tmax: float = attrs.field(default=50.0, validator=v.ge(0.0))
    s_noise: float = attrs.field(default=1.003, validator=v.ge(0.0))
    evaluations_per_step: ClassVar[int] = 2

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.s_churn > 0.0

    @property
    def order(self) -> int:  # type: ignore[override]
        """2 without churn (Heun); the injected noise makes it weakly first order."""
        return 1 if self.stochastic else 2

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        gamma_max = min(self.s_churn / max(times.steps, 1), math.sqrt(2.0) - 1.0)
        x_hat, t_hat, c_hat = dict(x), dict(times.t_from), dict(times.c_from)
        for p, xp in x.items():
            c = times.c_from[p]
            sig = c.sigma_tilde
            in_range = (sig >= self.s_tmin) & (sig <= self.s_tmax)
            gamma = (
                in_range.to(sig.dtype) * gamma_max if isinstance(in_range, Tensor) else (gamma_max if in_range else 0.0)
            )
            if not isinstance(gamma, Tensor) and gamma == 0.0:
                continue
            schedule = denoiser.schedules[p]
            sig_hat = sig * (1.0 + gamma)
            t_new = time_at_sigma_tilde(schedule, sig_hat, times.t_from[p])
            c_new = coefficients_at(schedule, t_new, c, xp)
            extra = self.s_noise * numeric.sqrt(sig_hat * sig_hat - sig * sig)
            churned = numeric.div(c_new.alpha, c.alpha) * xp + (c_new.alpha * extra) * noise_like(xp, generator)
            x_hat[p] = numeric.select(gamma > 0, churned, xp)
            t_hat[p], c_hat[p] = t_new, c_new
        pred = denoiser(x_hat, t_hat, condition, c_hat)
        out = heun_step(denoiser, x_hat, pred, times.t_to, c_hat, times.c_to, times.fixed, condition)
        return Step(out, pred)


def time_at_sigma_tilde(schedule, sigma_tilde: Scalar, t_like: Tensor) -> Tensor:
    r"""The time at which the schedule reaches :math:`\tilde\sigma`, in the shape of ``t_like``."""
    log_snr = -2.0 * torch.log(torch.as_tensor(sigma_tilde, dtype=torch.float64, device=t_like.device))
    t = schedule.t_from_log_snr(log_snr)
    return t.reshape(t_like.shape) if t.numel() == t_like.numel() else t


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

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        pred = denoiser(x, times.t_from, condition, times.c_from)
        out = {}
        for p, xp in x.items():
            c_t, c_s = times.c_from[p], times.c_to[p]
            noise = noise_like(xp, generator)
            dt = -times.dt(p, xp)
            f = numeric.div(c_t.d_alpha, c_t.alpha)
            g2 = 2.0 * c_t.sigma * c_t.d_sigma - 2.0 * f * c_t.sigma**2
            # x - dt (f x + (2 sigma' - 2 f sigma) eps): g^2 * score folded in, no division by sigma
            em = pred[p].mix(0.0, -dt * (2.0 * c_t.d_sigma - 2.0 * f * c_t.sigma), 1.0 - dt * f)
            em = em + numeric.sqrt(g2 * dt if isinstance(g2, float) else (g2 * dt).clamp(min=0.0)) * noise
            at_prior = c_t.alpha == 0
            if at_prior is True or isinstance(at_prior, Tensor):
                em = numeric.select(at_prior, ddim(pred[p], c_t, c_s, 1.0, noise), em)
            done = c_s.sigma == 0
            out[p] = numeric.select(done, pred[p].x0, em) if (done is not False) else em
        return Step(out, pred)
