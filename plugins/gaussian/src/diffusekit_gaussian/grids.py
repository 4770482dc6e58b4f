r"""Time grids defined by noise level :math:`\tilde\sigma = \sigma/\alpha = e^{-\lambda/2}`.

A grid is chosen in :math:`\tilde\sigma` and mapped to each schedule's own time through
its inverse log-SNR, so the same grid means the same noise levels for every schedule.
The range is clipped to what the schedule reaches; the last time is always 0.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
from attrs import validators as v
from diffusekit import ConfigError, GaussianSchedule, TimeGrid
from torch import Tensor


def _sigma_range(schedule: GaussianSchedule, sigma_min: float, sigma_max: float) -> tuple[float, float]:
    log_top = -0.5 * float(schedule.log_snr(torch.tensor(1.0, dtype=torch.float64)))
    top = math.exp(log_top) if log_top < 700.0 else math.inf  # math.exp raises past ~709
    hi = min(sigma_max, top)
    if not hi > sigma_min:
        raise ConfigError(
            "grid.sigma_min",
            f"{sigma_min} is not below sigma~ = {hi:.4g}, the top of the grid (the schedule reaches {top:.4g} at t = 1)",
        )
    return sigma_min, hi


def _above_sigma_min(instance, attribute: attrs.Attribute, value: float) -> None:
    """attrs validator of ``sigma_max``: the grid's range is not empty."""
    if not value > instance.sigma_min:
        raise ValueError(f"'{attribute.name}' must be above sigma_min = {instance.sigma_min}: {value}")


def times_from_sigmas(schedule: GaussianSchedule, sigmas: Tensor) -> Tensor:
    """Times at the noise levels ``sigmas`` (decreasing, > 0), followed by t = 0."""
    t = schedule.t_from_log_snr(-2.0 * torch.log(sigmas)).clamp(0.0, 1.0)
    return torch.cat([t, t.new_zeros(1)])


@attrs.frozen
class KarrasGrid(TimeGrid):
    r"""Karras et al. (2022, eq. 5): :math:`\tilde\sigma_i = (\sigma_{max}^{1/\rho} + \tfrac{i}{N-1}(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}))^\rho`, then 0."""

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})
    steps: int = attrs.field(default=18, validator=v.ge(1))
    sigma_min: float = attrs.field(default=0.002, validator=v.gt(0.0))
    sigma_max: float = attrs.field(default=80.0, validator=[v.gt(0.0), _above_sigma_min])
    rho: float = attrs.field(default=7.0, validator=v.gt(0.0))

    def times(self, schedule: GaussianSchedule) -> Tensor:
        lo, hi = _sigma_range(schedule, self.sigma_min, self.sigma_max)
        ramp = torch.linspace(0.0, 1.0, self.steps, dtype=torch.float64)
        try:
            a, b = hi ** (1.0 / self.rho), lo ** (1.0 / self.rho)
        except OverflowError:
            raise ConfigError("grid.rho", f"{self.rho} is too small for noise levels up to {hi:.4g}") from None
        return times_from_sigmas(schedule, (a + ramp * (b - a)) ** self.rho)


@attrs.frozen
class LogSNRGrid(TimeGrid):
    r"""Noise levels evenly spaced in log-SNR λ (Lu et al., DPM-Solver, 2022), then 0.

    Uniform in λ is geometric in :math:`\tilde\sigma = e^{-\lambda/2}`: the same spacing as
    k-diffusion's ``get_sigmas_exponential`` (registered too, as ``exponential``).
    """

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})
    steps: int = attrs.field(default=20, validator=v.ge(1))
    sigma_min: float = attrs.field(default=0.002, validator=v.gt(0.0))
    sigma_max: float = attrs.field(default=80.0, validator=[v.gt(0.0), _above_sigma_min])

    def times(self, schedule: GaussianSchedule) -> Tensor:
        lo, hi = _sigma_range(schedule, self.sigma_min, self.sigma_max)
        log_sigma = torch.linspace(math.log(hi), math.log(lo), self.steps, dtype=torch.float64)
        return times_from_sigmas(schedule, torch.exp(log_sigma))


@attrs.frozen
class ExponentialGrid(LogSNRGrid):
    r"""k-diffusion's exponential grid: :math:`\tilde\sigma` geometric from ``sigma_max`` to ``sigma_min``, then 0 (the log-SNR grid under its k-diffusion name)."""


def _decreasing(values: tuple[float, ...]) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    decreasing = all(b < a for a, b in zip(values, values[1:], strict=False))
    if len(values) < 2 or not decreasing or values[-1] <= 0 or not math.isfinite(values[0]):
        raise ValueError(f"sigmas must be at least two strictly decreasing positive finite values, got {values}")
    return values


def resample(log_sigmas: Tensor, steps: int) -> Tensor:
    """A log-sigma curve over [0, 1] (equally spaced samples) resampled at ``steps`` points (Align Your Steps, Sec. 3.3)."""
    if steps == len(log_sigmas):
        return log_sigmas
    positions = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    table = torch.linspace(0.0, 1.0, len(log_sigmas), dtype=torch.float64)
    index = torch.searchsorted(table, positions).clamp(1, len(table) - 1)
    lo, hi = table[index - 1], table[index]
    w = (positions - lo) / (hi - lo)
    return log_sigmas[index - 1] * (1 - w) + log_sigmas[index] * w


@attrs.frozen
class TabulatedGrid(TimeGrid):
    r"""Explicit noise levels :math:`\tilde\sigma_0 > \dots > \tilde\sigma_{n-1}`, then 0 (for fitted grids).

    With ``steps`` different from the table's length the curve :math:`\log\tilde\sigma` is
    interpolated linearly in the step position, as Align Your Steps does; the range is
    rescaled into what the schedule reaches.
    """

    sigmas: tuple[float, ...] = attrs.field(default=(80.0, 0.002), converter=_decreasing)
    steps: int = attrs.field(default=0, validator=v.ge(0))
    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})

    def __attrs_post_init__(self) -> None:
        if self.steps == 0:  # default: the table's own length
            object.__setattr__(self, "steps", len(self.sigmas))

    def times(self, schedule: GaussianSchedule) -> Tensor:
        log_sigmas = resample(torch.log(torch.tensor(self.sigmas, dtype=torch.float64)), self.steps)
        lo, hi = _sigma_range(schedule, self.sigmas[-1], self.sigmas[0])
        top, bottom = log_sigmas[0], log_sigmas[-1]
        if self.steps > 1:  # map the table's range onto the reachable one
            log_sigmas = math.log(lo) + (log_sigmas - bottom) * (math.log(hi) - math.log(lo)) / (top - bottom)
        else:
            log_sigmas = torch.full_like(log_sigmas, math.log(hi))
        return times_from_sigmas(schedule, torch.exp(log_sigmas))


@attrs.frozen
class OptimizedGrid(TimeGrid):
    r"""A general-purpose fitted grid (in the spirit of Align Your Steps, Sabour et al., 2024; LD3, Tong et al., 2025).

    Noise levels from :math:`\tilde\sigma = 80` to 0.002 whose interior points minimise the
    ODE endpoint error of ``solver`` on a family of Gaussian-mixture targets that
    excludes the accuracy benchmark's own (``grid_fit.py``; ``grid_tables.py`` names the
    command). Tables exist for 5, 10 and 20 steps; other counts use the nearest table's
    curve, resampled.
    """

    steps: int = attrs.field(default=10, validator=v.ge(1))
    solver: str = attrs.field(default="unipc")
    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})

    @solver.validator
    def _known(self, attribute, value) -> None:
        from diffusekit_gaussian.grid_tables import OPTIMIZED

        if value not in OPTIMIZED:
            raise ValueError(f"no fitted tables for solver {value!r} (fitted: {', '.join(OPTIMIZED)})")

    def times(self, schedule: GaussianSchedule) -> Tensor:
        from diffusekit_gaussian.grid_tables import OPTIMIZED

        tables = OPTIMIZED[self.solver]
        nearest = min(tables, key=lambda n: (abs(n - self.steps), n))
        return TabulatedGrid(sigmas=tables[nearest], steps=self.steps).times(schedule)
