r"""History guidance: classifier-free guidance whose condition is the given elements.

A network trained with per-element time and elements held given (``train.hold``: frames of
a video, views of a scene) has seen samples with some elements given and samples without;
the given elements play the role of the condition. The guided prediction of every other
element is

.. math:: \tilde D = D(x \mid \varnothing) + w\,\big(D(x \mid \text{given}) - D(x \mid \varnothing)\big),

where :math:`D(x \mid \varnothing)` sees the given elements replaced by pure noise at t = 1
(Chen et al., 2024, "Diffusion Forcing", §3.3; Song et al., 2025, "History-Guided Video
Diffusion"). The given elements are read off the time plan: along the first axis after the
batch, an element is given where its time is 0 while another element of the same sample is
still noisy, so the guidance needs nothing but the plan. Both evaluations run as one batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import torch
from diffusekit import Guidance
from diffusekit.denoiser import DenoiserLike
from diffusekit.state import align_time

NOISE_SEED = 0
"""The seed of the noise that stands in for the given elements in the unconditional evaluation
(fixed: the guided denoiser is a pure function of its inputs)."""


def stand_in(indices: range, like: torch.Tensor) -> torch.Tensor:
    """Noise for elements ``indices`` (along dimension 1 of ``like``, ``(B, N, *element)``):
    ``(len(indices), *element)``, the same for every sample. Element ``i``'s noise depends on
    ``i`` alone, so a video rollout that caches it computes what a recompute computes."""
    shape = tuple(like.shape[2:])
    out = [
        torch.randn(shape, generator=torch.Generator().manual_seed(NOISE_SEED * 1_000_003 + i), dtype=like.dtype)
        for i in indices
    ]
    return torch.stack(out).to(like.device) if out else like.new_zeros((0, *shape))


def given_elements(t: torch.Tensor) -> torch.Tensor | None:
    """Where ``t`` ``(B, N, ...)`` marks given elements (0 while another element of the sample is
    not), or ``None`` if no sample has any."""
    if t.ndim < 2:
        return None
    rows = t.flatten(1)
    given = (rows == 0) & (rows > 0).any(1, keepdim=True)
    return given.reshape(t.shape) if bool(given.any()) else None


@attrs.frozen
class HistoryGuidance(Guidance):
    """Guidance by the given elements (history guidance; frames or views), ``scale`` w: 1 leaves the model as it is."""

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})

    scale: float = 2.0

    def wrap(self, denoiser: DenoiserLike) -> HistoryGuided:
        return HistoryGuided(denoiser, self.scale)

    def neutral(self) -> HistoryGuidance:
        return attrs.evolve(self, scale=1.0)


@attrs.frozen(eq=False)
class HistoryGuided:
    """The denoiser of :class:`HistoryGuidance`."""

    inner: DenoiserLike
    scale: float

    @property
    def schedules(self) -> Mapping:
        return self.inner.schedules

    def __call__(self, x, t, condition=None, coef: Mapping[str, Any] | None = None):
        masks = {p: given_elements(torch.as_tensor(t[p])) for p in x} if self.scale != 1.0 else {}
        if not any(m is not None for m in masks.values()):
            return self.inner(x, t, condition, coef)
        n = next(iter(x.values())).shape[0]
        both_x, both_t = {}, {}
        for p, value in x.items():
            time = torch.as_tensor(t[p], device=value.device).expand(value.shape[: torch.as_tensor(t[p]).ndim])
            mask = masks.get(p)
            if mask is None:
                both_x[p], both_t[p] = torch.cat([value, value]), torch.cat([time, time])
                continue
            noise = stand_in(range(value.shape[1]), value).expand_as(value)
            absent = torch.where(align_time(mask, value), noise, value)
            both_x[p] = torch.cat([value, absent])
            both_t[p] = torch.cat([time, torch.where(mask, torch.ones_like(time), time)])
        both_c = None if condition is None else condition.cat(condition)
        out = self.inner(both_x, both_t, both_c, None)
        guided = {}
        for p, pred in out.items():
            cond, uncond = pred.take(slice(0, n)), pred.take(slice(n, 2 * n))
            value = uncond.value + self.scale * (cond.value - uncond.value)
            mask = masks.get(p)
            if mask is not None:  # the given elements themselves keep their own prediction
                value = torch.where(align_time(mask, value), cond.value, value)
            guided[p] = cond.with_value(value)
        return guided
