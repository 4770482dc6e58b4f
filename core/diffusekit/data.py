"""Datasets: where training data comes from.

A dataset is a frozen attrs class that loads the whole training set into memory as a
:class:`Data` (the datasets in scope are small; nothing is downloaded at run time).
"""

from __future__ import annotations

import abc

import attrs
import torch
from torch import Tensor

from diffusekit.condition import Condition
from diffusekit.errors import ShapeError
from diffusekit.state import Parts, batch_size


@attrs.frozen(eq=False)
class Data:
    """Training examples: clean parts (batch-first), an optional condition per example, and
    optionally, per part, the elements *known* in every example.

    ``known[name]`` is a boolean mask aligned with the leading dimensions of the part (as a
    sampler's known mask is): its true elements are held given at t = 0 in every training draw
    — exactly their data, out of the loss — as a sampler holds elements it is given. Variable-size
    examples padded to one shape mark their padding so (the atoms a small molecule lacks): the
    padding never enters the loss, and sampling gives it the same way.
    """

    parts: Parts
    condition: Condition | None = None
    known: dict[str, Tensor] = attrs.field(factory=dict)
    sizes: Tensor | None = None
    """Optionally, a size per example ``(N,)`` (atoms, tokens): with ``train.buckets`` each
    training batch is drawn from examples of similar size, so a network that cuts padding
    away (to the batch's largest example) computes less."""

    def __attrs_post_init__(self) -> None:
        for name, mask in self.known.items():
            if name not in self.parts:
                raise ShapeError(f"data: a known mask for part {name!r}, which the data does not have")
            shape = tuple(self.parts[name].shape)
            if mask.dtype != torch.bool or mask.ndim < 1 or tuple(mask.shape) != shape[: mask.ndim]:
                raise ShapeError(
                    f"data: the known mask of part {name!r} must be booleans shaped like the part's leading "
                    f"dimensions {shape}, got {mask.dtype} {tuple(mask.shape)}"
                )
        if self.sizes is not None and (self.sizes.ndim != 1 or len(self.sizes) != batch_size(self.parts)):
            raise ShapeError(
                f"data: sizes must be one per example ({batch_size(self.parts)},), got {tuple(self.sizes.shape)}"
            )

    def __len__(self) -> int:
        return batch_size(self.parts)

    def take(self, index: Tensor) -> Data:
        return Data(
            {name: value[index] for name, value in self.parts.items()},
            None if self.condition is None else self.condition.take(index),
            {name: mask[index] for name, mask in self.known.items()},
            None if self.sizes is None else self.sizes[index],
        )

    def to(self, device: torch.device | str) -> Data:
        return Data(
            {name: value.to(device) for name, value in self.parts.items()},
            None if self.condition is None else self.condition.to(device),
            {name: mask.to(device) for name, mask in self.known.items()},
            None if self.sizes is None else self.sizes.to(device),
        )


class Dataset(abc.ABC):
    """Base class of registered datasets."""

    @abc.abstractmethod
    def load(self) -> Data:
        """The training set."""
