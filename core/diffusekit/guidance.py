"""Guidance: turns a denoiser into a guided denoiser.

``guidance.wrap(denoiser)`` returns another denoiser (same ``schedules``, same call
signature), so guidances compose by wrapping: ``g2.wrap(g1.wrap(d))``. A guidance is
a frozen attrs class; :meth:`Guidance.neutral` returns the setting that leaves the
denoiser unchanged (the conformance kit checks that it does).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from diffusekit.condition import Condition
from diffusekit.denoiser import DenoiserLike
from diffusekit.state import Parts, PartTimes, batch_size


class Guidance(abc.ABC):
    """Base class of guidances."""

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian", "categorical"})
    """The schedule families whose parts this guidance can combine (recipes are checked against it)."""

    @abc.abstractmethod
    def wrap(self, denoiser: DenoiserLike) -> DenoiserLike:
        """The guided denoiser."""

    @abc.abstractmethod
    def neutral(self) -> Guidance:
        """The same guidance with the setting under which it changes nothing."""


def evaluate_batched(
    inner: DenoiserLike, x: Parts, t: PartTimes, coef: Mapping[str, Any] | None, conditions: Sequence[Condition]
) -> list[dict[str, Any]]:
    """The denoiser under each condition, as one batch of ``len(conditions) * B``."""
    n, k = batch_size(x), len(conditions)

    def repeat(value: Tensor) -> Tensor:
        return torch.cat([value] * k) if value.ndim and value.shape[0] == n else value

    joint = conditions[0]
    for c in conditions[1:]:
        joint = joint.cat(c)
    out = inner(
        {p: repeat(v) for p, v in x.items()},
        {p: repeat(v) for p, v in t.items()},
        joint,
        None if coef is None else {p: c.map_tensors(repeat) for p, c in coef.items()},
    )
    return [{p: pred.take(slice(i * n, (i + 1) * n)) for p, pred in out.items()} for i in range(k)]
