"""Elementwise maths on Python floats or tensors.

Coefficients of a time plan whose times are scalars are Python floats (computed once
per plan), so sampler arithmetic on them costs no tensor dispatch; the same code runs
on tensors when times vary per element. These functions follow torch's semantics for
infinities and zero divisors in both cases.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Scalar = float | Tensor

INF = math.inf


def exp(v: Scalar) -> Scalar:
    if isinstance(v, Tensor):
        return torch.exp(v)
    return math.exp(v) if v < 709.0 else INF


def expm1(v: Scalar) -> Scalar:
    if isinstance(v, Tensor):
        return torch.expm1(v)
    return math.expm1(v) if v < 709.0 else INF


def log(v: Scalar) -> Scalar:
    if isinstance(v, Tensor):
        return torch.log(v)
    return math.log(v) if v > 0 else (-INF if v == 0 else math.nan)


def sqrt(v: Scalar) -> Scalar:
    if isinstance(v, Tensor):
        return torch.sqrt(v)
    return math.sqrt(v) if v >= 0 else math.nan


def div(a: Scalar, b: Scalar) -> Scalar:
    """``a / b`` with IEEE results (±inf, nan) for a zero divisor, also for floats."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return a / b
    if b != 0:
        return a / b
    return math.nan if a == 0 or math.isnan(a) else math.copysign(INF, a)


def isfinite(v: Scalar) -> bool | Tensor:
    return torch.isfinite(v) if isinstance(v, Tensor) else math.isfinite(v)


def select(condition: bool | Tensor, if_true: Tensor, if_false: Tensor) -> Tensor:
    """``torch.where`` that short-cuts a plain bool condition."""
    if isinstance(condition, Tensor):
        return torch.where(condition, if_true, if_false)
    return if_true if condition else if_false


def is_zero(v: Scalar) -> bool | Tensor:
    return v == 0
