"""Networks: a frozen attrs class of hyper-parameters that builds a ``torch.nn.Module``.

The module is called as ``module(x_in, noise_level, condition)`` and returns a tensor
shaped like ``x_in`` (or, for multi-part denoisers, dicts keyed by part; see
:class:`diffusekit.denoiser.Denoiser`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from diffusekit.recipe import PartSpec
    from diffusekit.schedule import Schedule


class Network(abc.ABC):
    """Base class of registered network architectures."""

    @abc.abstractmethod
    def build(self) -> nn.Module:
        """A freshly initialised module (initialisation draws from torch's global generator)."""

    def check_parts(self, parts: Mapping[str, PartSpec], schedules: Mapping[str, Schedule]) -> None:
        """Raise a :class:`~diffusekit.ConfigError` naming the recipe path (``parts.x.shape``,
        ``network.in_channels``) when this network cannot take these parts; called when a recipe
        is validated, so a mismatch is reported before anything is built or trained. By default
        every part is accepted."""
        return None

    def example_shape(self) -> tuple[int, ...] | None:
        """The per-sample input shape of a typical call, for the conformance kit (``None``: not checked)."""
        return None

    def example_input(self, batch: int, generator: torch.Generator) -> Tensor | None:
        """A typical input batch for the conformance kit: Gaussian noise of :meth:`example_shape` by default."""
        shape = self.example_shape()
        return None if shape is None else torch.randn(batch, *shape, generator=generator)


def noise_per_row(
    noise: Tensor | float, batch: int, rows: int, dtype: torch.dtype, device: torch.device | None, what: str = "row"
) -> Tensor:
    """A noise level as ``(batch, rows)``: a scalar, one per sample ``(B,)`` or one per row
    ``(B, rows)`` (frames, views, atoms). Trailing singleton dimensions, as in times aligned with
    the data, are dropped; any other shape is a one-line :class:`~diffusekit.ShapeError` naming
    ``what`` a row is."""
    from diffusekit.errors import ShapeError

    noise = torch.as_tensor(noise, device=device)
    shape = tuple(noise.shape)
    while noise.ndim > 2 and noise.shape[-1] == 1:
        noise = noise.squeeze(-1)
    if noise.ndim == 1:
        noise = noise[:, None]
    if noise.ndim > 2 or (noise.ndim == 2 and (noise.shape[0] not in (1, batch) or noise.shape[1] not in (1, rows))):
        raise ShapeError(
            f"the noise level must be a scalar, one per sample ({batch},) or one per {what} ({batch}, {rows}); "
            f"got shape {shape}"
        )
    return noise.to(dtype).expand(batch, rows)


def modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation ``h (1 + scale) + shift`` (Peebles & Xie, 2023, DiT)."""
    return h * (1 + scale) + shift
