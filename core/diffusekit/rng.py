"""Random streams per sample: a sample's draws do not depend on the batch it is drawn in.

:class:`RowGenerators` is a :class:`torch.Generator` that also holds one generator per
row of the batch, seeded by ``(seed, index of the sample)``. Drawing through
:func:`randn`, :func:`rand` and :func:`randint` takes row ``i`` of every draw from
row ``i``'s own stream, so sample 17 of seed 0 is the same whether it is drawn in a
batch of 500, alone, or on another process of a ``torchrun`` job. That is what lets
sampling be split across processes and gathered bit for bit (see
:mod:`diffusekit.distributed`).

A sampler that draws with plain ``torch.randn(..., generator=g)`` still works with a
:class:`RowGenerators` (it is a generator: one stream for the whole batch, seeded by
the first sample), reproducibly, but then its samples depend on the split.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio): spreads (seed, index) pairs apart


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` under ``seed`` (a fixed function of the two)."""
    return (seed * _MIX + index * 1_000_003 + 1) % (2**63 - 1)


class RowGenerators(torch.Generator):
    """A generator with one random stream per row of a batch (see the module docstring)."""

    rows: tuple[torch.Generator, ...]

    def __new__(cls, seeds: Sequence[int], device: torch.device | str | None = None) -> RowGenerators:
        device = torch.device(device or "cpu")
        self = super().__new__(cls, device)
        self.manual_seed(seeds[0] if len(seeds) else 0)
        self.rows = tuple(torch.Generator(device).manual_seed(int(s)) for s in seeds)
        return self

    def __init__(self, seeds: Sequence[int], device: torch.device | str | None = None) -> None:
        pass  # built in __new__: torch.Generator's own __init__ takes only a device

    @classmethod
    def for_samples(cls, seed: int, indices: range, device: torch.device | str | None = None) -> RowGenerators:
        """The streams of samples ``indices`` (e.g. ``range(100, 150)``) under ``seed``."""
        return cls([sample_seed(seed, i) for i in indices], device)

    def __len__(self) -> int:
        return len(self.rows)

    def __reduce__(self):  # pragma: no cover - generators are not sent between processes
        raise TypeError("RowGenerators cannot be pickled; make them where they are used")


def _draw(sample: Callable[..., Tensor], shape: Sequence[int], generator: torch.Generator | None, **kw: Any) -> Tensor:
    """``sample(shape)``, with row ``i`` from stream ``i`` when ``generator`` holds one per row."""
    if isinstance(generator, RowGenerators) and len(shape) and shape[0] == len(generator):
        return torch.stack([sample(tuple(shape[1:]), generator=g, **kw) for g in generator.rows])
    return sample(tuple(shape), generator=generator, **kw)


def randn(
    shape: Sequence[int], *, generator: torch.Generator | None = None, device=None, dtype: torch.dtype | None = None
) -> Tensor:
    """``torch.randn(shape)``, row ``i`` from stream ``i`` of a :class:`RowGenerators`."""
    return _draw(torch.randn, shape, generator, device=device, dtype=dtype)


def rand(
    shape: Sequence[int], *, generator: torch.Generator | None = None, device=None, dtype: torch.dtype | None = None
) -> Tensor:
    """``torch.rand(shape)``, row ``i`` from stream ``i`` of a :class:`RowGenerators`."""
    return _draw(torch.rand, shape, generator, device=device, dtype=dtype)


def randint(
    low: int, high: int, shape: Sequence[int], *, generator: torch.Generator | None = None, device=None
) -> Tensor:
    """``torch.randint(low, high, shape)``, row ``i`` from stream ``i`` of a :class:`RowGenerators`."""
    return _draw(functools.partial(torch.randint, low, high), shape, generator, device=device)
