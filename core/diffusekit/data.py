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
from diffusekit.state import Parts, batch_size


@attrs.frozen(eq=False)
class Data:
    """Training examples: clean parts (batch-first) and an optional condition per example."""

    parts: Parts
    condition: Condition | None = None

    def __len__(self) -> int:
        return batch_size(self.parts)

    def take(self, index: Tensor) -> Data:
        return Data(
            {name: value[index] for name, value in self.parts.items()},
            None if self.condition is None else self.condition.take(index),
        )

    def to(self, device: torch.device | str) -> Data:
        return Data(
            {name: value.to(device) for name, value in self.parts.items()},
            None if self.condition is None else self.condition.to(device),
        )


class Dataset(abc.ABC):
    """Base class of registered datasets."""

    @abc.abstractmethod
    def load(self) -> Data:
        """The training set."""
