"""States and times.

A *state* is one tensor or a mapping of named parts (``{"pos": ..., "atoms": ...}``).
Internally every state is a ``dict[str, Tensor]``; a bare tensor is the single part
:data:`DEFAULT_PART`.

A *time* is a float or a tensor with values in ``[0, 1]`` (0 = clean data, 1 = prior),
given for the whole state or per part. A time tensor is aligned with the *leading*
dimensions of its part: shape ``()`` is one time for everything, ``(B,)`` one per
sample, ``(B, F)`` one per frame of a ``(B, F, C, H, W)`` video, ``(B, L)`` one per
token. :func:`align_time` appends the trailing singleton dimensions, so a time equal
to a scalar everywhere gives exactly the scalar's result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from diffusekit.errors import ShapeError

DEFAULT_PART = "x"
"""Name of the single part of a state given as a bare tensor."""

State = Tensor | Mapping[str, Tensor]
TimeLike = float | Tensor
Time = TimeLike | Mapping[str, TimeLike]
Parts = dict[str, Tensor]
PartTimes = dict[str, Tensor]
Shape = tuple[int, ...] | Mapping[str, tuple[int, ...]]


def as_parts(state: State) -> Parts:
    """The state as a dict of named parts (a bare tensor becomes ``{DEFAULT_PART: x}``)."""
    if isinstance(state, Tensor):
        return {DEFAULT_PART: state}
    if isinstance(state, Mapping):
        for name, value in state.items():
            if not isinstance(value, Tensor):
                raise ShapeError(f"state part {name!r} is a {type(value).__name__}, not a tensor")
        return dict(state)
    raise ShapeError(f"a state is a tensor or a mapping of tensors, got {type(state).__name__}")


def restore(parts: Parts, like: object) -> State:
    """Inverse of :func:`as_parts`: a bare tensor again unless ``like`` (a state or shape) was a mapping."""
    if isinstance(like, Mapping):
        return parts
    return parts[DEFAULT_PART]


def part_shapes(shape: Shape) -> dict[str, tuple[int, ...]]:
    """A shape or a mapping of shapes as ``{part: shape}``."""
    if isinstance(shape, Mapping):
        return {name: tuple(int(n) for n in s) for name, s in shape.items()}
    return {DEFAULT_PART: tuple(int(n) for n in shape)}


def part_times(t: Time, parts: Iterable[str], *, dtype: torch.dtype = torch.float64, device=None) -> PartTimes:
    """The time of every part as a tensor.

    ``t`` is one time for all parts or a mapping with one entry per part.
    """
    names = list(parts)
    if isinstance(t, Mapping):
        missing = [n for n in names if n not in t]
        if missing:
            raise ShapeError(f"no time given for part(s) {', '.join(map(repr, missing))}")
        return {n: _as_time_tensor(t[n], dtype, device) for n in names}
    tt = _as_time_tensor(t, dtype, device)
    return {n: tt for n in names}


def _as_time_tensor(t: TimeLike, dtype: torch.dtype, device) -> Tensor:
    if isinstance(t, Tensor):
        if t.is_floating_point() and t.dtype == dtype and (device is None or t.device == device):
            return t
        return t.to(dtype=dtype, device=device)
    return torch.tensor(float(t), dtype=dtype, device=device)


def align_time(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a time (or any per-element coefficient) to broadcast against ``x``.

    The dimensions of ``t`` match the leading dimensions of ``x`` (each of size 1 or
    equal); trailing singleton dimensions are appended.
    """
    if t.ndim == x.ndim:
        extra = 0
    elif t.ndim > x.ndim:
        raise ShapeError(f"time of shape {tuple(t.shape)} has more dimensions than data of shape {tuple(x.shape)}")
    else:
        extra = x.ndim - t.ndim
    for i, n in enumerate(t.shape):
        if n != 1 and n != x.shape[i]:
            raise ShapeError(
                f"time of shape {tuple(t.shape)} does not fit data of shape {tuple(x.shape)}: "
                "time dimensions must match the leading data dimensions"
            )
    return t.reshape(*t.shape, *([1] * extra)) if extra else t


def batch_size(parts: Parts) -> int:
    """The common leading dimension of all parts."""
    sizes = {name: p.shape[0] if p.ndim else 1 for name, p in parts.items()}
    if len(set(sizes.values())) > 1:
        raise ShapeError(f"parts disagree on the batch size: {sizes}")
    return next(iter(sizes.values()))
