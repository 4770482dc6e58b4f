r"""An adaptive-step ODE solver for reference solutions: Dormand–Prince 5(4).

The probability-flow ODE is integrated in :math:`u = \log\tilde\sigma` for
:math:`y = \tilde x = x/\alpha`: :math:`dy/du = y - \hat x_0(\alpha y, t(u))`, which is smooth
over the whole noise range (Karras et al., 2022; Lu et al., 2022). Each plan step is
integrated with embedded Runge–Kutta 5(4) steps (Dormand & Prince, 1980), accepted when
the RMS of :math:`err/(atol + rtol\max(|y|, |y_{new}|))` is at most 1. Per-element times are
handled by integrating every element over its own u-interval in a shared normalised
variable. A step to the data stops at ``sigma_min`` and returns :math:`\hat x_0` there.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
from attrs import validators as v
from diffusekit import ConfigError, Sampler, Step
from diffusekit.sampler import StepTimes
from torch import Tensor

from diffusekit_gaussian.samplers import ddim

# Dormand–Prince 5(4) tableau (Dormand & Prince, 1980; also Hairer, Nørsett & Wanner, Table 5.2)
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = _A[6] + (0.0,)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


@attrs.frozen
class AdaptiveODE(Sampler):
    r"""Dormand–Prince 5(4) with error control on the probability-flow ODE, for high-accuracy reference solutions.

    The embedded Runge–Kutta pair of Dormand & Prince ("A family of embedded Runge-Kutta
    formulae", 1980), in :math:`u = \log\tilde\sigma` (see the module docstring).

    ``rtol``/``atol`` bound the local error per accepted substep; the number of network
    evaluations adapts (about 6 per substep). Where :math:`\alpha_t = 0` (the prior of
    rectified flow) the first step is a DDIM step, as the ODE has no finite start there.
    """

    rtol: float = attrs.field(default=1e-6, validator=v.gt(0.0))
    atol: float = attrs.field(default=1e-6, validator=v.gt(0.0))
    sigma_min: float = attrs.field(default=1e-4, validator=v.gt(0.0))
    max_substeps: int = attrs.field(default=10_000, validator=v.ge(1))
    order: ClassVar[int] = 5
    evaluations_per_step: ClassVar[int] = 0
    adaptive: ClassVar[bool] = True

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        pred = denoiser(x, times.t_from, condition, times.c_from)
        starts = {p: _as_tensor(times.c_from[p].alpha, xp) for p, xp in x.items()}
        if any(bool((a == 0).any()) for a in starts.values()):
            return Step({p: ddim(pred[p], times.c_from[p], times.c_to[p], 0.0, None) for p in x}, pred)
        # per element: u from log sigma~_t to log sigma~_s (or log sigma_min when landing on the data)
        u0 = {p: _as_tensor(0.5 * -times.c_from[p].log_snr, xp).to(torch.float64) for p, xp in x.items()}
        span = {}
        for p, xp in x.items():
            end = _as_tensor(0.5 * -times.c_to[p].log_snr, xp).to(torch.float64)
            end = torch.where(torch.isfinite(end), end, torch.full_like(end, math.log(self.sigma_min)))
            moving = (
                ~_as_tensor(times.fixed[p], xp).to(torch.bool)
                if times.fixed[p] is not False
                else torch.ones_like(end, dtype=torch.bool)
            )
            # elements whose time does not change integrate over an empty interval
            span[p] = torch.where(moving & torch.isfinite(u0[p]), end - u0[p], torch.zeros_like(end))
            u0[p] = torch.where(torch.isfinite(u0[p]), u0[p], torch.full_like(u0[p], math.log(self.sigma_min)))
        y = {p: (xp.to(torch.float64) / starts[p].to(torch.float64)) for p, xp in x.items()}

        def velocity(tau: float, state: dict[str, Tensor]) -> dict[str, Tensor]:
            xs, ts, cs = {}, {}, {}
            for p, xp in x.items():
                u = u0[p] + tau * span[p]
                t = denoiser.schedules[p].t_from_log_snr(-2.0 * u)
                c = denoiser.schedules[p].coefficients(t)
                xs[p] = (c.alpha * state[p]).to(xp.dtype)
                ts[p] = _network_time(t, times.t_from[p])
                cs[p] = c.align(xs[p])
            out = denoiser(xs, ts, condition, cs)
            return {p: torch.where(span[p] == 0, 0.0, span[p] * (state[p] - out[p].x0.to(torch.float64))) for p in x}

        tau, dtau, substeps = 0.0, 0.05, 0
        k1 = velocity(0.0, y)
        while tau < 1.0:
            dtau = min(dtau, 1.0 - tau)
            ks = [k1]
            for i in range(1, 7):
                stage = {p: y[p] + dtau * sum(a * k[p] for a, k in zip(_A[i], ks, strict=False)) for p in x}
                ks.append(velocity(tau + _C[i] * dtau, stage))
            y_new = {p: y[p] + dtau * sum(b * k[p] for b, k in zip(_B5, ks, strict=True) if b) for p in x}
            err = {p: dtau * sum((b5 - b4) * k[p] for b5, b4, k in zip(_B5, _B4, ks, strict=True)) for p in x}
            scale = {p: self.atol + self.rtol * torch.maximum(y[p].abs(), y_new[p].abs()) for p in x}
            norm = math.sqrt(sum(float(((err[p] / scale[p]) ** 2).sum()) for p in x) / sum(y[p].numel() for p in x))
            substeps += 1
            if not math.isfinite(norm):  # NaN or inf in the state: no step size helps; hand it on to be reported
                y = y_new
                break
            if substeps > self.max_substeps:
                raise ConfigError("sampler.max_substeps", f"exceeded {self.max_substeps} substeps; loosen rtol/atol")
            if norm <= 1.0:
                tau, y, k1 = tau + dtau, y_new, ks[6]  # first same as last
            dtau *= min(5.0, max(0.2, 0.9 * (norm if norm > 0 else 1e-10) ** -0.2))
        out, t_end, c_end, landing = {}, {}, {}, {}
        for p, xp in x.items():
            t_end[p] = denoiser.schedules[p].t_from_log_snr(-2.0 * (u0[p] + span[p]))
            c_end[p] = denoiser.schedules[p].coefficients(t_end[p])
            out[p] = (c_end[p].alpha * y[p]).to(xp.dtype)
            c_end[p] = c_end[p].align(out[p])
            landing[p] = (_as_tensor(times.c_to[p].sigma, xp) == 0) & (span[p] != 0)
        if any(bool(m.any()) for m in landing.values()):  # one call on every part: the network sees the whole state
            ts = {p: _network_time(t_end[p], times.t_from[p]) for p in x}
            final = denoiser(dict(out), ts, condition, c_end)
            out = {p: torch.where(landing[p], final[p].x0, out[p]) for p in x}
        return Step(out, pred)


def _as_tensor(value, like: Tensor) -> Tensor:
    """A coefficient (float or aligned tensor) as a tensor aligned with ``like``."""
    if isinstance(value, Tensor):
        return value
    return torch.full([1] * like.ndim, value, dtype=torch.float64, device=like.device)


def _network_time(t: Tensor, t_like: Tensor) -> Tensor:
    """A time computed in the aligned shape, reshaped to the plan's time shape for the network."""
    if t_like.ndim == 0:
        return t.reshape(())
    return t.reshape(t_like.shape) if t.numel() == t_like.numel() else t
