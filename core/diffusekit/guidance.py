"""Guidance: turns a denoiser into a guided denoiser.

``guidance.wrap(denoiser)`` returns another denoiser (same ``schedules``, same call
signature), so guidances compose by wrapping: ``g2.wrap(g1.wrap(d))``. A guidance is
a frozen attrs class; :meth:`Guidance.neutral` returns the setting that leaves the
denoiser unchanged (the conformance kit checks that it does).
"""

from __future__ import annotations

import abc

from diffusekit.denoiser import DenoiserLike


class Guidance(abc.ABC):
    """Base class of guidances."""

    @abc.abstractmethod
    def wrap(self, denoiser: DenoiserLike) -> DenoiserLike:
        """The guided denoiser."""

    @abc.abstractmethod
    def neutral(self) -> Guidance:
        """The same guidance with the setting under which it changes nothing."""
