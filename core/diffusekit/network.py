"""Networks: a frozen attrs class of hyper-parameters that builds a ``torch.nn.Module``.

The module is called as ``module(x_in, noise_level, condition)`` and returns a tensor
shaped like ``x_in`` (or, for multi-part denoisers, dicts keyed by part; see
:class:`diffusekit.denoiser.Denoiser`).
"""

from __future__ import annotations

import abc

from torch import nn


class Network(abc.ABC):
    """Base class of registered network architectures."""

    @abc.abstractmethod
    def build(self) -> nn.Module:
        """A freshly initialised module (initialisation draws from torch's global generator)."""

    def example_shape(self) -> tuple[int, ...] | None:
        """The per-sample input shape of a typical call, for the conformance kit (``None``: not checked)."""
        return None
