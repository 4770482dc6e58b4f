"""The restart plugin: the Restart sampler and the hook that registers it."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import diffusekit
import torch
from attrs import validators as v
from diffusekit import Step, align_time, coefficients_at, hold_fixed, numeric
from torch import Tensor


def _above_sigma_min(instance: Restart, attribute: attrs.Attribute, value: float) -> None:
    if not value > instance.sigma_min:
        raise ValueError(f"'{attribute.name}' must be greater than sigma_min ({instance.sigma_min}), got {value}")


def _t_of_sigma_tilde(schedule: diffusekit.GaussianSchedule, sigma_tilde: Tensor) -> Tensor:
    """The times (float64) at which the schedule reaches the EDM noise levels σ̃ = e^(−λ/2).

    Levels beyond what the schedule reaches at t = 1 are clamped to t = 1, so the
    restart interval is always inside the schedule's range.
    """
    log_snr = -2.0 * torch.log(sigma_tilde.to(torch.float64))
    t = schedule.t_from_log_snr(log_snr).to(torch.float64)
    t = torch.where(torch.isnan(t), torch.ones_like(t), t)
    return t.clamp(0.0, 1.0)


def _heun(denoiser, x, t_a, t_b, c_a, c_b, hold, condition, pred_a=None):
    """One Heun step (Karras et al., 2022, Alg. 1) of every part from t_a to t_b.

    In EDM variables x̃ = x/α, σ̃ = σ/α the probability-flow ODE is
    dx̃/dσ̃ = (x̃ − x̂0)/σ̃ = ε̂. With Δ = σ̃_b − σ̃_a,

        Euler:  x̃' = x̃_a + Δ·ε̂(x_a, t_a)                      (in x: the DDIM step α_b·x̂0 + σ_b·ε̂)
        Heun:   x̃_b = x̃' + Δ/2·(ε̂(α_b·x̃', t_b) − ε̂(x_a, t_a))

    and x_b = α_b·x̃_b. The trapezoidal correction is dropped (Euler kept) where σ̃_b = 0
    (the step onto the data) and where α_a = 0 (σ̃_a = ∞, a rectified flow at t = 1).
    ``hold`` (per part: a bool or a mask aligned with the part) marks the elements that
    must come back untouched; they are restored before the second evaluation.
    Returns the new parts and the first evaluation's predictions.
    """
    if pred_a is None:
        pred_a = denoiser(x, t_a, condition, c_a)
    euler = {p: hold_fixed(pred_a[p].mix(c_b[p].alpha, c_b[p].sigma), x[p], hold[p]) for p in x}
    second = any(not (hold[p] is True or (isinstance(c_b[p].sigma, float) and c_b[p].sigma == 0.0)) for p in x)
    if not second:
        return euler, pred_a
    pred_b = denoiser(euler, t_b, condition, c_b)
    out = {}
    for p in x:
        ca, cb = c_a[p], c_b[p]
        w = 0.5 * cb.alpha * (cb.sigma_tilde - ca.sigma_tilde)  # α_b·Δ/2
        heun = euler[p] + (pred_b[p].mix(0.0, w) - pred_a[p].mix(0.0, w))
        first_order = (cb.sigma == 0) | (ca.alpha == 0)
        out[p] = hold_fixed(numeric.select(first_order, euler[p], heun), x[p], hold[p])
    return out, pred_a


def _mask(flag: Tensor, like: Any, xp: Tensor) -> bool | Tensor:
    """A per-element flag (time-shaped bool tensor) in the form of ``like``: a Python
    bool when the step's coefficients are floats (scalar times), else aligned with xp."""
    if isinstance(like.alpha, float):
        return bool(flag)
    return align_time(flag.to(xp.device), xp)


@attrs.frozen
class Restart(diffusekit.Sampler):
    r"""Restart sampling (Xu et al., 2023): Heun ODE steps plus K noise-and-re-solve loops over [σ̃_min, σ̃_max].

    Y. Xu, M. Deng, X. Cheng, Y. Tian, Z. Liu, T. Jaakkola, "Restart Sampling for
    Improving Generative Processes", NeurIPS 2023 (arXiv:2306.14878).

    Between restarts the sampler solves the probability-flow ODE in EDM variables
    :math:`\tilde x = x/\alpha_t`, :math:`\tilde\sigma = \sigma_t/\alpha_t`,
    :math:`d\tilde x/d\tilde\sigma = (\tilde x - \hat x_0)/\tilde\sigma`, with Heun's
    second-order method (Karras et al., 2022, Alg. 1) on the plan's grid. On the
    step that reaches the lower end of the restart interval
    (:math:`\tilde\sigma_{to} \le \tilde\sigma_{min} < \tilde\sigma_{from}`) it

    1. solves from :math:`\tilde\sigma_{from}` down to :math:`\tilde\sigma_{min}`;
    2. ``restarts`` (K) times: adds fresh forward noise to jump back up,
       :math:`\tilde x \leftarrow \tilde x + \sqrt{\tilde\sigma_{max}^2 - \tilde\sigma_{min}^2}\,\varepsilon`,
       :math:`\varepsilon \sim N(0, I)` (the forward process from
       :math:`\tilde\sigma_{min}` to :math:`\tilde\sigma_{max}`), and solves back down
       with ``restart_steps`` Heun steps on Karras' ρ-spaced levels
       :math:`\tilde\sigma_j = (\tilde\sigma_{max}^{1/\rho} + \tfrac{j}{M}(\tilde\sigma_{min}^{1/\rho} - \tilde\sigma_{max}^{1/\rho}))^\rho`;
    3. finishes the step from :math:`\tilde\sigma_{min}` to :math:`\tilde\sigma_{to}`.

    The forward noise contracts the accumulated error of the ODE (in total variation)
    while the ODE steps add little discretisation error, which is why Restart beats
    both pure ODE and SDE samplers at equal cost (the paper's Theorem 2).

    The noise levels are σ̃ = σ/α read from whatever Gaussian schedule the part uses
    (its α and σ, mapped to times with ``t_from_log_snr``), so VP, VE, EDM and flow
    schedules all work; a level beyond what the schedule reaches is clamped to t = 1.
    Each part and each element follows its own times: only elements whose own step
    crosses σ̃_min are restarted, the others are held. The number of main steps comes
    from the grid (e.g. ``gaussian:karras`` with ``steps=18``), not from the sampler.
    Defaults are the paper's Stable Diffusion setting (one interval [0.1, 2], K = 2,
    as in the authors' reference implementation). With ``restarts = 0`` it is exactly
    Heun on the plan's grid (order 2, deterministic). Evaluations: 2 per step (1 on the
    step onto the data), plus about 2·(restart_steps + 1)·K on the restarting step.
    """

    sigma_min: float = attrs.field(default=0.1, validator=v.gt(0.0))
    sigma_max: float = attrs.field(default=2.0, validator=[v.gt(0.0), _above_sigma_min])
    restarts: int = attrs.field(default=2, validator=v.ge(0))
    restart_steps: int = attrs.field(default=10, validator=v.ge(1))
    rho: float = attrs.field(default=7.0, validator=v.gt(0.0))

    order: ClassVar[int] = 2
    evaluations_per_step: ClassVar[int] = 2

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        """Fresh noise is drawn exactly when at least one restart is made."""
        return self.restarts > 0

    def restart_levels(self) -> Tensor:
        """The ``restart_steps + 1`` noise levels σ̃ of one restart's ODE solve, σ̃_max to σ̃_min."""
        j = torch.arange(self.restart_steps + 1, dtype=torch.float64) / self.restart_steps
        hi, lo = self.sigma_max ** (1.0 / self.rho), self.sigma_min ** (1.0 / self.rho)
        return (hi + j * (lo - hi)) ** self.rho

    def update(self, denoiser, x, times, *, condition, generator, carry) -> Step:
        schedules = denoiser.schedules
        if self.restarts == 0:
            out, pred = _heun(denoiser, x, times.t_from, times.t_to, times.c_from, times.c_to, times.fixed, condition)
            return Step(out, pred)

        # Per part: the restart interval in the part's own time, and which elements cross σ̃_min.
        levels = self.restart_levels()
        inner_t, crossing = {}, {}
        for p in x:
            tj = _t_of_sigma_tilde(schedules[p], levels)
            tf, tt = times.t_from[p], times.t_to[p]
            t_min = tj[-1]
            inner_t[p] = tj
            crossing[p] = (tt <= t_min) & (tf > t_min)
        if not any(bool(crossing[p].any()) for p in x):
            out, pred = _heun(denoiser, x, times.t_from, times.t_to, times.c_from, times.c_to, times.fixed, condition)
            return Step(out, pred)

        def at(p: str, t_p: Tensor) -> tuple[Tensor, Any]:
            """Time t_p where the element crosses σ̃_min, its own t_to elsewhere, with coefficients."""
            t = torch.where(crossing[p], t_p.to(times.t_to[p].device), times.t_to[p])
            return t, coefficients_at(schedules[p], t, times.c_from[p], x[p])

        # 1. From t_from down to σ̃_min (non-crossing elements go to their t_to and stay there).
        t_mid, c_mid = {}, {}
        for p in x:
            t_mid[p], c_mid[p] = at(p, inner_t[p][-1])
        state, pred = _heun(denoiser, x, times.t_from, t_mid, times.c_from, c_mid, times.fixed, condition)

        # 2. K restarts: forward noise from σ̃_min up to σ̃_max, then Heun back down.
        held = {p: _mask(~crossing[p], times.c_from[p], x[p]) for p in x}
        inner = [{p: at(p, inner_t[p][j]) for p in x} for j in range(self.restart_steps + 1)]
        for _ in range(self.restarts):
            top = {p: inner[0][p][1] for p in x}
            noised = {}
            for p, xp in state.items():
                eps = torch.randn(xp.shape, generator=generator, dtype=xp.dtype, device=xp.device)
                lo, hi = c_mid[p], top[p]
                amp = numeric.sqrt(hi.sigma_tilde**2 - lo.sigma_tilde**2)
                moved = numeric.div(hi.alpha, lo.alpha) * xp + (hi.alpha * amp) * eps  # α_max·(x̃ + amp·ε)
                noised[p] = hold_fixed(moved, xp, held[p])
            state = noised
            for j in range(self.restart_steps):
                a, b = inner[j], inner[j + 1]
                state, _ = _heun(
                    denoiser,
                    state,
                    {p: a[p][0] for p in x},
                    {p: b[p][0] for p in x},
                    {p: a[p][1] for p in x},
                    {p: b[p][1] for p in x},
                    held,
                    condition,
                )

        # 3. From σ̃_min on to t_to (nothing left to do where t_to is σ̃_min itself).
        still = {p: _mask(t_mid[p] == times.t_to[p], times.c_from[p], x[p]) for p in x}
        if not all(still[p] is True for p in x):
            state, _ = _heun(denoiser, state, t_mid, times.t_to, c_mid, times.c_to, still, condition)
        return Step(state, pred)


@diffusekit.hookimpl
def register_samplers(register):
    register(Restart, name="restart")
