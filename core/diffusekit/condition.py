"""Conditions: typed, batch-first conditioning payloads with a null form.

A condition is a frozen attrs class whose tensor fields have the batch as their first
dimension. Each defines its *null* form (what an unconditional model sees); from that
the base class derives per-sample selection, random dropout for classifier-free
training (Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022) and batching.
"""

from __future__ import annotations

import abc
from typing import TypeVar

import attrs
import torch
from torch import Tensor

from diffusekit.errors import ShapeError

C = TypeVar("C", bound="Condition")


class Condition(abc.ABC):
    """Base class of conditioning payloads (subclasses are ``attrs.frozen(eq=False)``)."""

    @abc.abstractmethod
    def null_like(self: C) -> C:
        """The null (unconditional) form, same batch size."""

    @abc.abstractmethod
    def is_null(self) -> Tensor:
        """Boolean ``(B,)``: which samples carry the null condition."""

    @classmethod
    def example(cls: type[C], batch_size: int, generator: torch.Generator) -> C:
        """A random instance for the conformance kit; subclasses override it."""
        raise NotImplementedError(f"{cls.__name__} does not define example(); the conformance kit needs one")

    def _tensor_fields(self) -> list[str]:
        return [f.name for f in attrs.fields(type(self)) if isinstance(getattr(self, f.name), Tensor)]

    @property
    def batch_size(self) -> int:
        return int(getattr(self, self._tensor_fields()[0]).shape[0])

    def _map(self: C, fn) -> C:
        return attrs.evolve(self, **{name: fn(name, getattr(self, name)) for name in self._tensor_fields()})

    def where(self: C, mask: Tensor, other: C) -> C:
        """Per sample: ``other`` where ``mask`` is true, else ``self``."""
        if type(other) is not type(self):
            raise TypeError(f"cannot mix {type(self).__name__} with {type(other).__name__}")

        def pick(name: str, value: Tensor) -> Tensor:
            m = mask.reshape(-1, *([1] * (value.ndim - 1)))
            return torch.where(m, getattr(other, name), value)

        return self._map(pick)

    def dropout(self: C, p: float, generator: torch.Generator | None = None) -> C:
        """Replace each sample's condition by the null form with probability ``p``."""
        if p <= 0.0:
            return self
        device = getattr(self, self._tensor_fields()[0]).device
        drop = torch.rand((self.batch_size,), generator=generator, device=device) < p
        return self.where(drop, self.null_like())

    def cat(self: C, other: C) -> C:
        """The batch of ``self`` followed by the batch of ``other``."""
        if type(other) is not type(self):
            raise TypeError(f"cannot concatenate {type(self).__name__} with {type(other).__name__}")
        return self._map(lambda name, value: torch.cat([value, getattr(other, name)]))

    def take(self: C, index: slice | Tensor) -> C:
        """The samples selected by ``index``."""
        return self._map(lambda name, value: value[index])

    def to(self: C, device: torch.device | str) -> C:
        return self._map(lambda name, value: value.to(device))


@attrs.frozen(eq=False)
class ClassLabel(Condition):
    """An integer class label per sample; ``-1`` is the null label.

    Networks embed labels ``0..num_classes-1`` and map the null label to a learned
    unconditional embedding (index ``num_classes``).
    """

    labels: Tensor
    num_classes: int = attrs.field(default=10, kw_only=True)

    NULL = -1

    def __attrs_post_init__(self) -> None:
        if self.labels.ndim != 1 or self.labels.dtype not in (torch.int64, torch.int32):
            raise ShapeError(
                f"class labels must be a 1-D integer tensor, got {tuple(self.labels.shape)} {self.labels.dtype}"
            )
        bad = (self.labels >= self.num_classes) | (self.labels < self.NULL)
        if bool(bad.any()):
            raise ShapeError(
                f"class labels must lie in [-1, {self.num_classes - 1}], got {self.labels[bad][:3].tolist()}"
            )

    @classmethod
    def example(cls, batch_size: int, generator: torch.Generator) -> ClassLabel:
        return cls(torch.randint(-1, 10, (batch_size,), generator=generator), num_classes=10)

    def null_like(self) -> ClassLabel:
        return attrs.evolve(self, labels=torch.full_like(self.labels, self.NULL))

    def is_null(self) -> Tensor:
        return self.labels == self.NULL

    def embedding_index(self) -> Tensor:
        """Labels with the null label mapped to ``num_classes`` (for ``nn.Embedding(num_classes + 1, d)``)."""
        return torch.where(self.is_null(), torch.full_like(self.labels, self.num_classes), self.labels)


@attrs.frozen(eq=False)
class Embedding(Condition):
    """A real vector per sample ``(B, D)`` (text or image embedding, molecular properties).

    ``present`` marks samples that carry one; the null form has ``present`` false and
    zero values.
    """

    values: Tensor
    present: Tensor = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if self.values.ndim < 2:
            raise ShapeError(f"embeddings must be (batch, features...), got {tuple(self.values.shape)}")
        if self.present is None:
            object.__setattr__(
                self, "present", torch.ones(self.values.shape[0], dtype=torch.bool, device=self.values.device)
            )

    @classmethod
    def example(cls, batch_size: int, generator: torch.Generator) -> Embedding:
        return cls(torch.randn(batch_size, 4, generator=generator), torch.rand(batch_size, generator=generator) < 0.8)

    def null_like(self) -> Embedding:
        return Embedding(torch.zeros_like(self.values), torch.zeros_like(self.present))

    def is_null(self) -> Tensor:
        return ~self.present


@attrs.frozen(eq=False)
class ConditionList(Condition):
    """Several conditions per sample, each with its own null form, for composable guidance.

    One guidance term per item, e.g. "a red cube" AND NOT "on a table".
    """

    items: tuple[Condition, ...]

    def __attrs_post_init__(self) -> None:
        if not self.items:
            raise ShapeError("a condition list needs at least one condition")
        sizes = {c.batch_size for c in self.items}
        if len(sizes) != 1:
            raise ShapeError(f"the conditions of a list disagree on the batch size: {sorted(sizes)}")

    @classmethod
    def example(cls, batch_size: int, generator: torch.Generator) -> ConditionList:
        return cls((ClassLabel.example(batch_size, generator), ClassLabel.example(batch_size, generator)))

    @property
    def batch_size(self) -> int:
        return self.items[0].batch_size

    def null_like(self) -> ConditionList:
        return ConditionList(tuple(c.null_like() for c in self.items))

    def is_null(self) -> Tensor:
        out = self.items[0].is_null()
        for c in self.items[1:]:
            out = out & c.is_null()
        return out

    def where(self, mask: Tensor, other: ConditionList) -> ConditionList:
        return ConditionList(tuple(a.where(mask, b) for a, b in zip(self.items, other.items, strict=True)))

    def dropout(self, p: float, generator: torch.Generator | None = None) -> ConditionList:
        if p <= 0.0:
            return self
        device = self.items[0].is_null().device
        drop = torch.rand((self.batch_size,), generator=generator, device=device) < p
        return self.where(drop, self.null_like())

    def cat(self, other: ConditionList) -> ConditionList:
        return ConditionList(tuple(a.cat(b) for a, b in zip(self.items, other.items, strict=True)))

    def take(self, index: slice | Tensor) -> ConditionList:
        return ConditionList(tuple(c.take(index) for c in self.items))

    def to(self, device: torch.device | str) -> ConditionList:
        return ConditionList(tuple(c.to(device) for c in self.items))
