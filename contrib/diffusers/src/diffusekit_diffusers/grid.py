"""diffusers' inference timesteps as a diffusekit time grid."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import numpy as np
import torch
from attrs import validators as v
from diffusekit import ShapeError, TimeGrid
from torch import Tensor

SPACINGS = ("leading", "trailing", "linspace")


def _optional_floats(value):
    return None if value is None else tuple(float(t) for t in value)


def spaced_timesteps(steps: int, num_train_timesteps: int, spacing: str, steps_offset: int = 0) -> Tensor:
    """The integer inference timesteps of diffusers' DDIM/DDPM schedulers (``timestep_spacing``),
    largest first: ``leading`` multiples of ⌊N/n⌋ plus ``steps_offset`` (DDIM, Song et al., 2021),
    ``trailing`` counted down from N − 1 (Lin et al., 2024, Table 2), ``linspace`` rounded
    evenly from 0 to N − 1."""
    n, big = steps, num_train_timesteps
    if spacing == "leading":
        ts = (np.arange(0, n) * (big // n)).round()[::-1] + steps_offset
    elif spacing == "trailing":
        ts = np.round(np.arange(big, 0, -big / n)) - 1
    else:
        ts = np.linspace(0, big - 1, n).round()[::-1]
    return torch.tensor(ts.astype(np.int64).astype(np.float64))


@attrs.frozen
class DiffusersTimesteps(TimeGrid):
    """The timesteps a diffusers scheduler visits, then the data (t = 0).

    Timestep k is diffusekit time (k + 1)/N under a
    :class:`~diffusekit_diffusers.DiffusersSchedule` with N training timesteps (N = 1000
    under any other schedule). By default the timesteps are spaced by diffusers' rule
    ``spacing`` (``leading``, the default of DDIM and DDPM; ``trailing``; ``linspace``);
    ``timesteps`` gives them explicitly, possibly fractional (see :meth:`from_scheduler`).
    The last step goes from the smallest timestep to the data, as diffusers' samplers do
    with ``set_alpha_to_one=True`` or ``final_sigmas_type="zero"``.
    """

    steps: int = attrs.field(default=50, validator=v.ge(1))
    spacing: str = attrs.field(default="leading", validator=v.in_(SPACINGS))
    steps_offset: int = attrs.field(default=0, validator=v.ge(0))
    timesteps: tuple[float, ...] | None = attrs.field(default=None, converter=_optional_floats)
    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})

    def __attrs_post_init__(self) -> None:
        if self.timesteps is not None and len(self.timesteps) != self.steps:
            raise ValueError(f"steps is {self.steps} but {len(self.timesteps)} timesteps are given")

    @classmethod
    def from_scheduler(cls, scheduler: Any, steps: int) -> DiffusersTimesteps:
        """The timesteps ``scheduler`` (any diffusers scheduler) visits in ``steps`` steps, read from
        a copy of it; repeated timesteps (Heun's second evaluations) are kept once."""
        copy = type(scheduler).from_config(scheduler.config)
        copy.set_timesteps(steps)
        seen: list[float] = []
        for t in copy.timesteps.tolist():
            if not seen or float(t) != seen[-1]:
                seen.append(float(t))
        return cls(steps=len(seen), timesteps=tuple(seen))

    def diffusers_timesteps(self, num_train_timesteps: int) -> Tensor:
        """The timesteps in diffusers' units (float64, largest first)."""
        if self.timesteps is not None:
            return torch.tensor(self.timesteps, dtype=torch.float64)
        if self.steps > num_train_timesteps:
            raise ShapeError(f"{self.steps} steps is more than the {num_train_timesteps} training timesteps")
        return spaced_timesteps(self.steps, num_train_timesteps, self.spacing, self.steps_offset)

    def times(self, schedule) -> Tensor:
        n = int(getattr(schedule, "num_train_timesteps", 1000))
        ts = self.diffusers_timesteps(n)
        if bool((ts < 0).any()) or bool((ts > n - 1).any()):
            raise ShapeError(f"diffusers timesteps must lie in [0, {n - 1}], got {ts.tolist()}")
        if bool((ts[1:] >= ts[:-1]).any()):
            raise ShapeError(f"{self.steps} {self.spacing} timesteps repeat a timestep: {ts.tolist()}")
        return torch.cat([(ts + 1.0) / n, torch.zeros(1, dtype=torch.float64)])
