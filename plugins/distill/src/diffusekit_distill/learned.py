r"""Learned solvers: a time grid and decoupled evaluation times fitted to one model and one NFE.

LD3 (Tong et al., "Learning to Discretize Denoising Diffusion ODEs", ICLR 2025) fits, for a
given solver and number of steps :math:`N`, the noise levels
:math:`\tilde\sigma_0 > \dots > \tilde\sigma_{N-1}` the solver steps between *and*, separately,
the noise levels :math:`\tilde s_i` at which the network is evaluated while the solver's own
coefficients stay those of :math:`\tilde\sigma_i`: the step from :math:`\tilde\sigma_i` uses
:math:`\hat x_0(x_{\sigma_i}, \tilde s_i)` where a plain solver uses
:math:`\hat x_0(x_{\sigma_i}, \tilde\sigma_i)`. The decoupling lets the few evaluations
absorb part of the discretisation error. Both sets are fitted by gradient descent through
the solver on the distance between its endpoints and teacher solutions of the
probability-flow ODE from the same noise (about a hundred draws, disjoint from any
evaluation's).

Parameters (:math:`2N - 1` numbers; :math:`N` = NFE for one-evaluation solvers):

* the grid, :math:`\log\tilde\sigma_k = \log\tilde\sigma_{max} + u_k(\log\tilde\sigma_{min} -
  \log\tilde\sigma_{max})` with :math:`u = (0, \mathrm{cumsum}\,\mathrm{softmax}\,\theta)`:
  strictly decreasing for any :math:`\theta`, then :math:`t = 0`;
* the evaluation offsets :math:`\delta_i = \log\tilde s_i - \log\tilde\sigma_i`, 0 at the start.

With :math:`\theta` at the base grid and :math:`\delta = 0` the learned solver *is* its base
solver on that grid (tested bit for bit). :class:`LearnedSolver` applies fitted offsets
to any deterministic Gaussian solver: at the fitted noise levels exactly, elsewhere
interpolated linearly in :math:`\log\tilde\sigma`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import torch
from diffusekit import ConfigError, GaussianSchedule, Prediction, Sampler, Step, TimePlan, get_registry
from diffusekit.sampler import StepTimes
from diffusekit_gaussian.grid_fit import Target as Teacher
from diffusekit_gaussian.grid_fit import model_target as model_teacher
from torch import Tensor

F64 = torch.float64

__all__ = ["Fit", "LearnedSolver", "Retimed", "Teacher", "fit", "grid_sigmas", "model_teacher", "theta_of"]


def _floats(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


MIN_STEP = 1e-3
"""The smallest step of a learned grid, as a fraction of its log noise range divided by the number of
steps: neighbouring levels stay distinct times under every schedule (a softmax alone can underflow)."""


def _increments(theta: Tensor) -> Tensor:
    floor = MIN_STEP / len(theta)
    return floor + (1.0 - floor * len(theta)) * torch.softmax(theta, 0)


def grid_sigmas(theta: Tensor, sigma_max: float, sigma_min: float) -> Tensor:
    r"""``len(theta) + 1`` noise levels from ``sigma_max`` down to ``sigma_min``, strictly decreasing for any θ:
    :math:`\log\tilde\sigma_k = \log\tilde\sigma_{max} + u_k(\log\tilde\sigma_{min} - \log\tilde\sigma_{max})`, :math:`u` the
    cumulative sum of increments :math:`\epsilon + (1 - n\epsilon)\,\mathrm{softmax}(\theta)` (``MIN_STEP``)."""
    u = torch.cat([theta.new_zeros(1), torch.cumsum(_increments(theta), 0)])
    return torch.exp(math.log(sigma_max) + u * (math.log(sigma_min) - math.log(sigma_max)))


def theta_of(sigmas: Sequence[float]) -> Tensor:
    """The θ whose :func:`grid_sigmas` are ``sigmas`` (strictly decreasing, positive; increments below the
    floor are raised to it)."""
    log = torch.log(torch.tensor(_floats(sigmas), dtype=F64))
    steps = log[:-1] - log[1:]
    fractions = steps / steps.sum()
    floor = MIN_STEP / len(steps)
    return torch.log(((fractions - floor) / (1.0 - floor * len(steps))).clamp(min=1e-12))


def interpolate(log_sigma: Tensor, knots: Tensor, values: Tensor) -> Tensor:
    """Piecewise-linear interpolation of ``values`` at ``knots`` (decreasing log noise levels),
    constant beyond the ends; exact at the knots."""
    if len(knots) == 1:
        return values[0].expand_as(log_sigma).to(log_sigma.dtype)
    ascending_knots, ascending_values = knots.flip(0), values.flip(0)
    inside = log_sigma.clamp(ascending_knots[0], ascending_knots[-1])
    index = torch.searchsorted(ascending_knots.detach(), inside.detach().contiguous()).clamp(1, len(knots) - 1)
    lo, hi = ascending_knots[index - 1], ascending_knots[index]
    w = (inside - lo) / (hi - lo)
    return (ascending_values[index - 1] * (1 - w) + ascending_values[index] * w).to(log_sigma.dtype)


@attrs.frozen(eq=False)
class Retimed:
    r"""A denoiser evaluated at shifted noise levels: at :math:`\tilde\sigma` the network sees
    :math:`\tilde s = \tilde\sigma e^{\delta(\log\tilde\sigma)}`, and its :math:`\hat x_0` is handed
    back as a prediction *at* :math:`\tilde\sigma` (the solver's coefficients are untouched).
    ``knots`` and ``shifts`` may carry autograd (fitting)."""

    denoiser: Any
    knots: Tensor  # log noise levels, decreasing
    shifts: Tensor

    @property
    def schedules(self) -> Mapping[str, Any]:
        return self.denoiser.schedules

    def __call__(self, x, t, condition=None, coef=None):
        out = {}
        shifted_t = {}
        for part in x:
            schedule = self.denoiser.schedules[part]
            tp = torch.as_tensor(t[part], dtype=F64)
            log_sigma = -0.5 * schedule.log_snr(tp)
            delta = interpolate(log_sigma, self.knots, self.shifts)
            shifted_t[part] = schedule.t_from_log_snr(-2.0 * (log_sigma + delta)).clamp(0.0, 1.0)
        raw = self.denoiser(x, shifted_t, condition)
        for part, xp in x.items():
            c = coef[part] if coef is not None else _coefficients(self.denoiser.schedules[part], t[part], xp)
            out[part] = Prediction("x0", raw[part].x0, xp, c)
        return out


def _coefficients(schedule: GaussianSchedule, t: Tensor, x: Tensor):
    c = schedule.coefficients(torch.as_tensor(t, dtype=F64))
    return c.item() if c.alpha.ndim == 0 and not c.alpha.requires_grad else c.align(x)


@attrs.frozen
class LearnedSolver(Sampler):
    r"""A base solver with fitted evaluation times (LD3, Tong et al., 2025): at noise level
    :math:`\tilde\sigma_i` the network is evaluated at :math:`\tilde\sigma_i e^{\delta_i}`.

    ``sigmas`` are the noise levels the offsets ``shifts`` were fitted at (the fitted grid,
    ``gaussian:tabulated`` with the same ``sigmas``); between them the offset is interpolated
    linearly in :math:`\log\tilde\sigma`. Without offsets (the default) it is the base solver.
    Fit with ``diffusekit fit-solver``.
    """

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})
    solver: str = "gaussian:ipndm"
    sigmas: tuple[float, ...] = attrs.field(default=(), converter=_floats)
    shifts: tuple[float, ...] = attrs.field(default=(), converter=_floats)
    # resolved once (not per step): the base solver and the offsets as tensors; immutable, so shared safely
    _base: Sampler = attrs.field(init=False, eq=False, repr=False)
    _table: tuple[Tensor, Tensor] | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if len(self.sigmas) != len(self.shifts):
            raise ValueError(f"{len(self.sigmas)} sigmas but {len(self.shifts)} shifts: give one shift per noise level")
        if any(b >= a for a, b in zip(self.sigmas, self.sigmas[1:], strict=False)) or any(s <= 0 for s in self.sigmas):
            raise ValueError(f"sigmas must be strictly decreasing and positive, got {self.sigmas}")
        if not all(math.isfinite(s) for s in self.shifts):
            raise ValueError(f"shifts must be finite, got {self.shifts}")
        try:
            entry = get_registry().resolve("sampler", self.solver)
        except Exception as exc:  # noqa: BLE001 - reported as the parameter's error
            raise ValueError(str(exc)) from None
        if entry.obj is LearnedSolver:
            raise ValueError("the base solver of a learned solver cannot be another learned solver")
        base = entry.obj()
        if base.stochastic or "gaussian" not in base.supports:
            raise ValueError(f"{self.solver} is not a deterministic Gaussian solver")
        object.__setattr__(self, "_base", base)
        table = None
        if any(self.shifts):
            table = (torch.log(torch.tensor(self.sigmas, dtype=F64)), torch.tensor(self.shifts, dtype=F64))
        object.__setattr__(self, "_table", table)

    @property
    def base(self) -> Sampler:
        """The base solver, built with its default settings."""
        return self._base

    @property
    def order(self) -> int:  # type: ignore[override]
        return self.base.order

    @property
    def evaluations_per_step(self) -> int:  # type: ignore[override]
        return self.base.evaluations_per_step

    def retime(self, denoiser):
        """``denoiser`` evaluated at the fitted noise levels (itself when no offset is set)."""
        return denoiser if self._table is None else Retimed(denoiser, *self._table)

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        return self.base.update(self.retime(denoiser), x, times, condition=condition, generator=generator, carry=carry)


# --- fitting -----------------------------------------------------------------------------
# The teacher trajectories are the gaussian plugin's grid-fitting targets: ``Teacher`` (a denoiser, the
# starting noise and the ODE endpoints from it) and ``model_teacher(pipeline, samples, sigma_max, seed)``.


@attrs.frozen
class Fit:
    """A fitted solver: its noise levels, the evaluation offsets, and the endpoint error before and after."""

    sigmas: tuple[float, ...]
    shifts: tuple[float, ...]
    before: float
    after: float

    def sampler(self, solver: str) -> LearnedSolver:
        return LearnedSolver(solver=solver, sigmas=self.sigmas, shifts=self.shifts)


def endpoints(solver: Sampler, teacher: Teacher, sigmas: Tensor, shifts: Tensor) -> Tensor:
    r"""The solver's endpoints on the grid ``sigmas`` (then 0) with evaluation offsets ``shifts``, keeping autograd.

    The step to t = 0 of every solver returns :math:`\hat x_0` at the last noise level; it is
    taken directly, since its singular coefficients would poison the gradients.
    """
    denoiser = Retimed(teacher.denoiser, torch.log(sigmas), shifts)
    (part,) = denoiser.schedules
    schedule = denoiser.schedules[part]
    times = [t.reshape(1) for t in schedule.t_from_log_snr(-2.0 * torch.log(sigmas))]
    x = teacher.x
    if len(times) > 1:
        plan = TimePlan.from_times(times, [part])
        x = solver.sample(denoiser, x, plan, condition=teacher.condition, differentiable=True)
    return denoiser({part: x}, {part: times[-1]}, teacher.condition)[part].x0


def error(solver: Sampler, teachers: Sequence[Teacher], sigmas: Tensor, shifts: Tensor) -> Tensor:
    """Mean L2 distance between the endpoints and the teachers' references, averaged over teachers."""
    return torch.stack(
        [(endpoints(solver, tg, sigmas, shifts) - tg.reference).flatten(1).norm(dim=1).mean() for tg in teachers]
    ).mean()


def fit(
    solver: Sampler,
    teachers: Sequence[Teacher],
    steps: int,
    *,
    start: Sequence[float] | None = None,
    sigma_max: float = 80.0,
    sigma_min: float = 0.002,
    iterations: int = 300,
    lr: float = 0.05,
    shifts: bool = True,
) -> Fit:
    """Fit a ``steps``-level grid (and, with ``shifts``, the evaluation offsets) to ``solver`` on ``teachers``.

    ``start`` is the initial grid (default: even in log-SNR from ``sigma_max`` to ``sigma_min``).
    Adam on the mean endpoint error; the parameters of the lowest error seen are returned.
    Everything is deterministic: the same teachers give the same fit.
    """
    if steps < 1:
        raise ConfigError("steps", f"must be at least 1, got {steps}")
    if start is None:
        start = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=F64)).tolist()
    if len(start) != steps:
        raise ConfigError("start", f"has {len(start)} noise levels, not {steps}")
    sigma_max, sigma_min = float(start[0]), float(start[-1])
    theta = (theta_of(start) if steps > 1 else torch.zeros(0, dtype=F64)).requires_grad_(steps > 1)
    delta = torch.zeros(steps, dtype=F64, requires_grad=shifts)
    params = [p for p in (theta, delta) if p.requires_grad]

    def current() -> Tensor:
        return grid_sigmas(theta, sigma_max, sigma_min) if steps > 1 else torch.tensor([sigma_max], dtype=F64)

    with torch.no_grad():
        before = float(error(solver, teachers, current(), delta))
    best = (before, current().detach().clone(), delta.detach().clone())
    if not params:
        return Fit(tuple(best[1].tolist()), tuple(best[2].tolist()), before, before)
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(iterations):
        optimizer.zero_grad()
        sigmas = current()
        loss = error(solver, teachers, sigmas, delta)
        if not math.isfinite(loss.item()):
            break
        if loss.item() < best[0]:  # the parameters this loss belongs to, before the update below
            best = (loss.item(), sigmas.detach().clone(), delta.detach().clone())
        loss.backward()
        optimizer.step()
    return Fit(tuple(best[1].tolist()), tuple(best[2].tolist()), before, best[0])
