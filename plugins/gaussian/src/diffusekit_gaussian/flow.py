r"""Flow-matching ODE solvers in the schedule's own time t.

The probability-flow velocity :math:`u(x, t) = \dot\alpha_t\hat x_0 + \dot\sigma_t\hat\varepsilon`
(the flow-matching target of Lipman et al., 2023; Liu et al., 2023) is integrated in t
with the classical one- and two-stage Runge–Kutta methods. For rectified flow
(:math:`\alpha = 1 - t, \sigma = t`) Euler here equals Euler in σ̃ and DDIM; for curved
schedules they differ. The corrector stage is skipped where it would evaluate the
velocity at t = 0, where :math:`\dot\sigma` may be infinite (VP) or
:math:`\hat\varepsilon` undefined.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from diffusekit import Sampler, Step, numeric
from diffusekit.sampler import StepTimes, coefficients_at, hold_fixed

from diffusekit_gaussian.samplers import reaches_data


def _euler(pred, c, dt) -> torch.Tensor:
    """:math:`x + \\Delta t\\,u` with :math:`u = \\dot\\alpha\\hat x_0 + \\dot\\sigma\\hat\\varepsilon` folded into the prediction."""
    return pred.mix(dt * c.d_alpha, dt * c.d_sigma, 1.0)


@attrs.frozen
class FlowEuler(Sampler):
    r"""Euler in t on the flow ODE: :math:`x_s = x_t + (s - t)\,u(x_t, t)` (the sampler of Lipman et al., 2023 and Liu et al., 2023). Order 1, one evaluation per step."""

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        pred = denoiser(x, times.t_from, condition, times.c_from)
        return Step({p: _euler(pred[p], times.c_from[p], times.dt(p, xp)) for p, xp in x.items()}, pred)


@attrs.frozen
class FlowHeun(Sampler):
    r"""Heun in t: :math:`\bar x = x_t + (s-t)u_t`, :math:`x_s = x_t + \tfrac{s-t}{2}(u_t + u(\bar x, s))` (flow matching: Lipman et al., 2023). Order 2, two evaluations per step."""

    order: ClassVar[int] = 2
    evaluations_per_step: ClassVar[int] = 2

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        pred = denoiser(x, times.t_from, condition, times.c_from)
        dts = {p: times.dt(p, xp) for p, xp in x.items()}
        first = {p: hold_fixed(_euler(pred[p], times.c_from[p], dts[p]), xp, times.fixed[p]) for p, xp in x.items()}
        if all(reaches_data(times.c_to[p]) for p in x):
            return Step(first, pred)
        pred2 = denoiser(first, times.t_to, condition, times.c_to)
        out = {}
        for p in x:
            half = 0.5 * dts[p]
            c_t, c_s = times.c_from[p], times.c_to[p]
            corrected = (
                first[p]
                + pred2[p].mix(half * c_s.d_alpha, half * c_s.d_sigma)
                - pred[p].mix(half * c_t.d_alpha, half * c_t.d_sigma)
            )
            out[p] = numeric.select(c_s.sigma == 0, first[p], corrected)
        return Step(out, pred)


@attrs.frozen
class FlowMidpoint(Sampler):
    r"""The explicit midpoint rule in t: :math:`x_s = x_t + (s - t)\,u\big(x_t + \tfrac{s-t}{2}u_t, \tfrac{t+s}{2}\big)` (as in Lipman et al., "Flow Matching Guide and Code", 2024). Order 2, two evaluations per step."""

    order: ClassVar[int] = 2
    evaluations_per_step: ClassVar[int] = 2

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        pred = denoiser(x, times.t_from, condition, times.c_from)
        mid, t_mid, c_mid = {}, {}, {}
        for p, xp in x.items():
            t_mid[p] = 0.5 * (times.t_from[p] + times.t_to[p])
            c_mid[p] = coefficients_at(denoiser.schedules[p], t_mid[p], times.c_from[p], xp)
            mid[p] = hold_fixed(_euler(pred[p], times.c_from[p], 0.5 * times.dt(p, xp)), xp, times.fixed[p])
        pred_mid = denoiser(mid, t_mid, condition, c_mid)
        out = {}
        for p, xp in x.items():
            dt = times.dt(p, xp)
            out[p] = xp + pred_mid[p].mix(dt * c_mid[p].d_alpha, dt * c_mid[p].d_sigma)
        return Step(out, pred)
