r"""Consistency models: distillation (CD), training (iCT, ECT) and multistep sampling.

A consistency model :math:`f_\theta(x_t, t)` maps every point of a probability-flow ODE
trajectory to the trajectory's origin (Song et al., "Consistency Models", ICML 2023). In
diffusekit it is an ordinary denoiser whose :math:`\hat x_0` is the model: with eps-, v- or
EDM-preconditioned outputs :math:`\hat x_0 = x` at t = 0 whatever the network computes, the
boundary condition :math:`f_\theta(x, 0) = x` (checked for the recipe's parameterizations).

Both objectives compare the model at two neighbouring noise levels
:math:`\tilde\sigma_{n+1} > \tilde\sigma_n` of the same trajectory,

.. math:: L = \mathbb E\; \lambda(\tilde\sigma_{n+1}, \tilde\sigma_n)\,
   d\big(f_\theta(x_{n+1}, t_{n+1}),\ \mathrm{sg}\,f_\theta(\hat x_n, t_n)\big),

with :math:`x_{n+1} = \alpha x_0 + \sigma\varepsilon` and, for **distillation**, :math:`\hat x_n`
one step of a teacher's ODE solver from :math:`x_{n+1}`; for **training**, :math:`\hat x_n =
\alpha_n x_0 + \sigma_n\varepsilon` with the same ε (the one-sample estimate of the score).
Following iCT (Song & Dhariwal, "Improved Techniques for Training Consistency Models",
2023): the target uses the current weights without gradient (no EMA teacher),
:math:`d` is the pseudo-Huber distance and :math:`\lambda = 1/(\tilde\sigma_{n+1} - \tilde\sigma_n)`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
from attrs import validators as v
from diffusekit import ConfigError, Objective, Progress, Sampler, Step, TimeGrid, get_registry
from diffusekit.sampler import StepTimes
from torch import Tensor

from diffusekit_distill import teacher as teachers

F64 = torch.float64


@attrs.frozen
class ConsistencySampler(Sampler):
    r"""Multistep consistency sampling (Song et al., 2023, Algorithm 1): at each time the model's
    :math:`\hat x_0 = f_\theta(x_t, t)` is taken, then noised afresh to the next time,
    :math:`x_s = \alpha_s\hat x_0 + \sigma_s z`; the last step returns :math:`\hat x_0`. One
    evaluation per step; the first alone is one-step generation."""

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})
    stochastic: ClassVar[bool] = True
    expects: ClassVar[str] = "consistency"

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        predictions = denoiser(x, times.t_from, condition, times.c_from)
        out = {}
        for part, xp in x.items():
            x0 = predictions[part].x0
            c = times.c_to[part]
            if isinstance(c.sigma, float) and c.sigma == 0.0:  # the last step: no noise drawn
                out[part] = x0
                continue
            noise = torch.randn(xp.shape, generator=generator, dtype=xp.dtype, device=xp.device)
            if isinstance(c.sigma, float):
                out[part] = c.alpha * x0 + c.sigma * noise
            else:  # per-element times: the elements that reach t = 0 keep the estimate
                out[part] = torch.where(c.sigma == 0, x0, c.alpha * x0 + c.sigma * noise)
        return Step(out, predictions)


@attrs.frozen
class ConsistencyGrid(TimeGrid):
    r"""The noise levels of multistep consistency sampling: the first ``steps`` levels of a Karras
    grid of ``steps + 1`` from ``sigma_max`` to ``sigma_min`` (the last is left out: a consistency
    model at :math:`\tilde\sigma_{min}` is the identity), then t = 0. One step visits
    :math:`\tilde\sigma_{max}` only."""

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})
    steps: int = attrs.field(default=2, validator=v.ge(1))
    sigma_max: float = attrs.field(default=80.0, validator=v.gt(0.0))
    sigma_min: float = attrs.field(default=0.002, validator=v.gt(0.0))
    rho: float = attrs.field(default=7.0, validator=v.gt(0.0))

    def times(self, schedule) -> Tensor:
        top = teachers.top_sigma(schedule, self.sigma_max)
        if not top > self.sigma_min:
            raise ConfigError("grid.sigma_min", f"{self.sigma_min} is not below the top noise level {top:.4g}")
        positions = torch.linspace(0.0, 1.0, self.steps + 1, dtype=F64)[:-1]
        sigmas = teachers.karras(top, self.sigma_min, self.rho, positions)
        t = teachers.at_sigma(schedule, sigmas)
        return torch.cat([t, t.new_zeros(1)])


def _levels(
    n: Tensor, intervals: Tensor | int, sigma_max: float, sigma_min: float, rho: float
) -> tuple[Tensor, Tensor]:
    """The noise levels of interval ``n`` (1 = nearest the data) of a Karras discretisation into ``intervals``."""
    hi = teachers.karras(sigma_max, sigma_min, rho, (intervals - n) / intervals)
    lo = teachers.karras(sigma_max, sigma_min, rho, (intervals - n + 1) / intervals)
    return hi, lo


@attrs.frozen(eq=False)
class _Pair:
    """Both ends of the training pairs of a batch, per part."""

    x_hi: dict[str, Tensor]
    t_hi: dict[str, Tensor]
    t_lo: dict[str, Tensor]
    weight: dict[str, Tensor]


def _consistency_loss(denoiser, pair: _Pair, x_lo: dict[str, Tensor], condition, c: float) -> dict[str, Tensor]:
    """λ-weighted pseudo-Huber distance between the model at the high end and its own stop-gradient at the low end."""
    online = denoiser(pair.x_hi, pair.t_hi, condition)
    with torch.no_grad():
        target = denoiser(x_lo, pair.t_lo, condition)
    out = {}
    for part in pair.x_hi:
        distance = teachers.pseudo_huber(online[part].x0.float(), target[part].x0.float(), c)
        out[part] = (pair.weight[part] * distance).mean()
    return out


def _check_one_time(recipe, name: str) -> None:
    for part, spec in recipe.parts.items():
        if spec.time_dims != 1:
            raise ConfigError(f"parts.{part}.time_dims", f"{name} draws one noise level per sample (time_dims = 1)")


@attrs.frozen
class ConsistencyDistillation(teachers.TeacherObjective):
    r"""Consistency distillation (Song et al., 2023, Algorithm 2, with iCT's loss): the model at
    :math:`\tilde\sigma_{n+1}` matches itself at :math:`\tilde\sigma_n` one ``solver`` step of the
    teacher away, on a Karras discretisation of ``intervals`` intervals. The training time
    :math:`u` drawn by the loop picks the interval :math:`n = \lceil uN\rceil`; the noise is the
    loop's. The student starts as the teacher (``init_from_teacher``)."""

    solver: str = "gaussian:heun"
    intervals: int = attrs.field(default=18, validator=v.ge(1))
    sigma_max: float = attrs.field(default=80.0, validator=v.gt(0.0))
    sigma_min: float = attrs.field(default=0.002, validator=v.gt(0.0))
    rho: float = attrs.field(default=7.0, validator=v.gt(0.0))
    huber_c: float = attrs.field(default=0.00054, validator=v.gt(0.0))

    def check(self, recipe) -> None:
        registry = get_registry()
        teachers.check_boundary(recipe, registry, "distill:consistency")
        _check_one_time(recipe, "distill:consistency")
        try:
            solver = registry.resolve("sampler", self.solver).obj()
        except Exception as exc:  # noqa: BLE001 - one line for the user
            raise ConfigError("train.objective.solver", str(exc)) from None
        if solver.stochastic:
            raise ConfigError(
                "train.objective.solver", f"{self.solver} is stochastic; the teacher's step solves the ODE"
            )

    def losses(self, denoiser, batch, drawn, progress: Progress) -> dict[str, Tensor]:
        teacher = self.teacher_pipeline(next(iter(batch.parts.values())).device)
        solver = get_registry().resolve("sampler", self.solver).obj()
        pair = _pairs(
            denoiser,
            batch,
            drawn,
            lambda part, u: (torch.ceil(u * self.intervals).clamp(1, self.intervals), self.intervals),
            self,
        )
        with torch.no_grad():
            x_lo = solver.step(teachers.guided(teacher), pair.x_hi, pair.t_hi, pair.t_lo, condition=drawn.condition).x
        return _consistency_loss(denoiser, pair, x_lo, drawn.condition, self.huber_c)


def _pairs(denoiser, batch, drawn, interval, settings) -> _Pair:
    """The high-end states, both ends' times and the loss weights of a batch; ``interval(part, u)``
    maps the drawn times to (interval index, interval count)."""
    x_hi, t_hi, t_lo, weight = {}, {}, {}, {}
    for part, x0 in batch.parts.items():
        schedule = denoiser.schedules[part]
        top = teachers.top_sigma(schedule, settings.sigma_max)
        u = drawn.times[part].to(F64)
        n, count = interval(part, u)
        s_hi, s_lo = _levels(n, count, top, settings.sigma_min, settings.rho)
        t_hi[part], t_lo[part] = teachers.at_sigma(schedule, s_hi), teachers.at_sigma(schedule, s_lo)
        c = schedule.coefficients(t_hi[part]).align(x0)
        x_hi[part] = (c.alpha * x0 + c.sigma * drawn.corrupted[part].noise).to(x0.dtype)
        weight[part] = (1.0 / (s_hi - s_lo)).to(torch.float32)
    return _Pair(x_hi, t_hi, t_lo, weight)


def ict_intervals(progress: Progress, s0: int = 10, s1: int = 1280) -> int:
    r"""iCT's discretisation curriculum: :math:`N(k) = \min(s_0 2^{\lfloor k/K'\rfloor}, s_1)` intervals,
    :math:`K' = \lfloor K/(\log_2\lfloor s_1/s_0\rfloor + 1)\rfloor` (Song & Dhariwal, 2023, eq. 9)."""
    stage = max(1, progress.total // (int(math.log2(s1 // s0)) + 1))
    return min(s0 * 2 ** (progress.step // stage), s1)


def lognormal_interval(
    u: Tensor, count: int, sigma_max: float, sigma_min: float, rho: float, mean: float, std: float
) -> Tensor:
    r"""The interval whose probability is the lognormal mass of its noise levels (iCT, eq. 10),
    found by inverting the discrete distribution's CDF at the drawn ``u`` (1 = nearest the data)."""
    n = torch.arange(1, count + 1, dtype=F64)
    hi, lo = _levels(n, count, sigma_max, sigma_min, rho)
    mass = torch.erf((torch.log(hi) - mean) / (math.sqrt(2) * std)) - torch.erf(
        (torch.log(lo) - mean) / (math.sqrt(2) * std)
    )
    cdf = torch.cumsum(mass.clamp(min=0), 0)
    cdf = cdf / cdf[-1]
    return (torch.searchsorted(cdf, u.contiguous()) + 1).clamp(1, count).to(F64)


@attrs.frozen
class ConsistencyTraining(Objective):
    r"""Consistency training without a teacher (iCT: Song & Dhariwal, 2023): the low end is the
    same data under the same noise at the lower level. The number of intervals grows with the
    step, :func:`ict_intervals`, and intervals are drawn by lognormal mass of their noise level
    (``p_mean``, ``p_std``). ``init`` starts the model from a diffusion checkpoint or method
    (as ECT does: Geng et al., "Consistency Models Made Easy", 2024); empty starts afresh."""

    s0: int = attrs.field(default=10, validator=v.ge(1))
    s1: int = attrs.field(default=1280, validator=v.ge(1))
    p_mean: float = -1.1
    p_std: float = attrs.field(default=2.0, validator=v.gt(0.0))
    sigma_max: float = attrs.field(default=80.0, validator=v.gt(0.0))
    sigma_min: float = attrs.field(default=0.002, validator=v.gt(0.0))
    rho: float = attrs.field(default=7.0, validator=v.gt(0.0))
    huber_c: float = attrs.field(default=0.00054, validator=v.gt(0.0))
    init: str = ""
    _cache: teachers.TeacherCache = attrs.field(init=False, factory=teachers.TeacherCache, eq=False, repr=False)

    def check(self, recipe) -> None:
        teachers.check_boundary(recipe, get_registry(), "distill:consistency_training")
        _check_one_time(recipe, "distill:consistency_training")
        if self.s1 < self.s0:
            raise ConfigError("train.objective.s1", f"must be at least s0 = {self.s0}")

    def initial_weights(self, recipe) -> dict[str, Tensor] | None:
        return self._cache.get(self.init, torch.device("cpu")).network.state_dict() if self.init else None

    def losses(self, denoiser, batch, drawn, progress: Progress) -> dict[str, Tensor]:
        count = ict_intervals(progress, self.s0, self.s1)

        def interval(part: str, u: Tensor) -> tuple[Tensor, int]:
            top = teachers.top_sigma(denoiser.schedules[part], self.sigma_max)
            n = lognormal_interval(u, count, top, self.sigma_min, self.rho, self.p_mean, self.p_std)
            return n, count

        pair = _pairs(denoiser, batch, drawn, interval, self)
        x_lo = {}
        for part, x0 in batch.parts.items():
            c = denoiser.schedules[part].coefficients(pair.t_lo[part]).align(x0)
            x_lo[part] = (c.alpha * x0 + c.sigma * drawn.corrupted[part].noise).to(x0.dtype)
        return _consistency_loss(denoiser, pair, x_lo, drawn.condition, self.huber_c)
