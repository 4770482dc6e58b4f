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
from diffusekit import GaussianSchedule, TimeGrid
from torch import Tensor


def _sigma_range(schedule: GaussianSchedule, sigma_min: float, sigma_max: float) -> tuple[float, float]:
    top = math.exp(-0.5 * float(schedule.log_snr(torch.tensor(1.0, dtype=torch.float64))))
    hi = min(sigma_max, top)
    if not hi > sigma_min:
        raise ValueError(f"the schedule reaches sigma~ = {top:.4g} at t = 1, below the grid's sigma_min = {sigma_min}")
    return sigma_min, hi


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
    sigma_max: float = attrs.field(default=80.0, validator=v.gt(0.0))
    rho: float = attrs.field(default=7.0, validator=v.gt(0.0))

    def times(self, schedule: GaussianSchedule) -> Tensor:
        lo, hi = _sigma_range(schedule, self.sigma_min, self.sigma_max)
        ramp = torch.linspace(0.0, 1.0, self.steps, dtype=torch.float64)
        a, b = hi ** (1.0 / self.rho), lo ** (1.0 / self.rho)
        return times_from_sigmas(schedule, (a + ramp * (b - a)) ** self.rho)


@attrs.frozen
class LogSNRGrid(TimeGrid):
    r"""Noise levels evenly spaced in log-SNR (equivalently geometric in :math:`\tilde\sigma`; Lu et al., DPM-Solver, 2022), then 0."""

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})
    steps: int = attrs.field(default=20, validator=v.ge(1))
    sigma_min: float = attrs.field(default=0.002, validator=v.gt(0.0))
    sigma_max: float = attrs.field(default=80.0, validator=v.gt(0.0))

    def times(self, schedule: GaussianSchedule) -> Tensor:
        lo, hi = _sigma_range(schedule, self.sigma_min, self.sigma_max)
        log_sigma = torch.linspace(math.log(hi), math.log(lo), self.steps, dtype=torch.float64)
        return times_from_sigmas(schedule, torch.exp(log_sigma))
