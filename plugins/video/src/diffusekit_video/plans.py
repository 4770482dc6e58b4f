r"""Scheduling matrices: which noise level each frame has at each sampling step.

Every frame walks the same ladder of ``steps + 1`` levels, :math:`t_0 = 1 > t_1 > \dots >
t_{steps} = 0` (uniform in t), but frames may start late. With frames grouped into causal
blocks of ``block`` frames and block :math:`j` starting ``lag`` steps after block
:math:`j-1`, frame :math:`f` is at level

.. math:: L(i, f) = \min\big(\mathrm{steps},\ \max(0,\ i - \lfloor f/\mathrm{block} \rfloor\,\mathrm{lag})\big)

at entry :math:`i` of the plan, which has :math:`\mathrm{steps} + (\lceil F/\mathrm{block}\rceil - 1)\,
\mathrm{lag} + 1` entries. Each frame's time never rises and ends at 0, so the plan is an
ordinary per-element :class:`~diffusekit.TimePlan` of ``(B, F)`` times and any sampler runs it.

* ``lag = 0``: the full-sequence schedule (every frame at the same level);
* ``lag = steps``, ``block = 1``: autoregressive (frame k starts when frame k-1 is done);
* ``0 < lag < steps``: the pyramid schedule of Diffusion Forcing (Chen et al., 2024), in
  which later frames are noisier, and with ``block > 1`` the causal-block schedule of
  SkyReels-V2 (2025);
* frames held at t = 0 (given frames: image-to-video, prediction, interpolation) are the
  plan with those frames held (:meth:`~diffusekit.TimePlan.hold`), whatever the matrix.

The frame axis is a part's second dimension (``(B, F, ...)``); a part without one is one
frame.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch
from attrs import validators as v
from diffusekit import Schedule, TimeGrid, TimePlan
from torch import Tensor


def levels(steps: int, frames: int, lag: int, block: int) -> Tensor:
    """The level index ``L(i, f)`` of every plan entry ``i`` and frame ``f``: ``(entries, frames)``."""
    starts = (torch.arange(frames) // block) * lag
    entries = steps + int(starts[-1]) + 1
    return (torch.arange(entries)[:, None] - starts[None, :]).clamp(0, steps)


class Ladder(TimeGrid):
    """Base of the scheduling matrices: every frame walks :meth:`times`, causal blocks of
    ``block`` frames start :meth:`delay` steps apart."""

    supports = frozenset({"gaussian"})
    steps: int
    block: int

    def delay(self) -> int:
        """How many steps each block starts after the one before."""
        raise NotImplementedError

    def times(self, schedule: Schedule) -> Tensor:
        """The ladder every frame walks: ``steps + 1`` times from 1 to 0, uniform in t."""
        return torch.linspace(1.0, 0.0, self.steps + 1, dtype=torch.float64)

    def plan(self, schedules: Mapping[str, Schedule], shapes: Mapping[str, tuple[int, ...]]) -> TimePlan:
        columns = {}
        for name, shape in shapes.items():
            ladder = self.times(schedules[name])
            batch, frames = shape[0], (shape[1] if len(shape) > 1 else 1)  # no frame axis: one frame
            at = ladder[levels(self.steps, frames, self.delay(), self.block)]  # (entries, frames)
            columns[name] = at[:, None, :].expand(-1, batch, -1) if len(shape) > 1 else at[:, :1].expand(-1, batch)
        entries = max(len(c) for c in columns.values())
        # a part with fewer frames is done earlier and waits at t = 0
        padded = {n: torch.cat([c, c[-1:].expand(entries - len(c), *c.shape[1:])]) for n, c in columns.items()}
        return TimePlan(tuple({name: padded[name][i] for name in padded} for i in range(entries)))


@attrs.frozen
class Pyramid(Ladder):
    """Per-frame noise levels: causal blocks of ``block`` frames, each starting ``lag`` steps after the one before.

    ``lag = 0`` is the full-sequence schedule, ``lag = steps`` with ``block = 1`` the
    autoregressive one, anything between the pyramid schedule of Diffusion Forcing
    (Chen et al., 2024) or, with ``block > 1``, SkyReels-V2's causal blocks.
    """

    steps: int = attrs.field(default=16, validator=v.ge(1))
    lag: int = attrs.field(default=4, validator=v.ge(0))
    block: int = attrs.field(default=1, validator=v.ge(1))

    def delay(self) -> int:
        return self.lag


@attrs.frozen
class FullSequence(Ladder):
    """Every frame at the same noise level: a whole clip denoised at once."""

    steps: int = attrs.field(default=16, validator=v.ge(1))
    block: int = attrs.field(default=1, validator=v.ge(1))

    def delay(self) -> int:
        return 0


@attrs.frozen
class Autoregressive(Ladder):
    """Block by block (``block`` frames, default 1): a block starts from noise when the one before is clean."""

    steps: int = attrs.field(default=16, validator=v.ge(1))
    block: int = attrs.field(default=1, validator=v.ge(1))

    def delay(self) -> int:
        return self.steps
