"""Hypothesis strategies for diffusekit: times, shapes, multi-part states, schedules, conditions, recipes."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st

from diffusekit.recipe import ComponentSpec, PartSpec, Recipe, SampleConfig, TrainConfig
from diffusekit.registry import Registry
from diffusekit.schedule import GaussianSchedule
from diffusekit.testing.reference import TrigonometricSchedule


def times(*, min_value: float = 0.0, max_value: float = 1.0) -> st.SearchStrategy[float]:
    """Times in ``[min_value, max_value]``."""
    return st.floats(min_value=min_value, max_value=max_value, allow_nan=False)


def interior_times(margin: float = 1e-3) -> st.SearchStrategy[float]:
    """Times strictly inside ``(0, 1)``, at least ``margin`` from the ends."""
    return times(min_value=margin, max_value=1.0 - margin)


def data_shapes(*, min_dims: int = 1, max_dims: int = 4, max_side: int = 4) -> st.SearchStrategy[tuple[int, ...]]:
    """Batch-first data shapes ``(B, ...)``."""
    return st.lists(st.integers(1, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


@st.composite
def time_shapes(draw: Any, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shapes of a time tensor that aligns with the leading dims of ``data_shape``: ``()``, ``(B,)``, ``(B, F)``, ..."""
    ndim = draw(st.integers(0, len(data_shape)))
    return tuple(draw(st.sampled_from([1, n])) if i else n for i, n in enumerate(data_shape[:ndim]))


@st.composite
def time_tensors(draw: Any, data_shape: tuple[int, ...], *, margin: float = 1e-3) -> torch.Tensor:
    """A float64 time tensor for data of ``data_shape`` (per-sample, per-frame, ... or scalar)."""
    shape = draw(time_shapes(data_shape))
    n = 1
    for s in shape:
        n *= s
    values = draw(st.lists(interior_times(margin), min_size=n, max_size=n))
    return torch.tensor(values, dtype=torch.float64).reshape(shape)


@st.composite
def states(draw: Any, *, max_parts: int = 3, batch: int | None = None) -> dict[str, torch.Tensor]:
    """Multi-part states with a common batch size and random per-part shapes (float64)."""
    b = batch or draw(st.integers(1, 4))
    names = draw(
        st.lists(
            st.sampled_from(["x", "pos", "atoms", "video", "action", "label"]),
            min_size=1,
            max_size=max_parts,
            unique=True,
        )
    )
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in names:
        tail = draw(st.lists(st.integers(1, 3), min_size=0, max_size=3))
        out[name] = torch.randn((b, *tail), generator=g, dtype=torch.float64)
    return out


def gaussian_schedules(registry: Registry | None = None) -> st.SearchStrategy[GaussianSchedule]:
    """Every registered Gaussian schedule with default parameters, plus the kit's reference schedule."""
    found: list[GaussianSchedule] = [TrigonometricSchedule()]
    if registry is not None:
        for entry in registry.entries("schedule"):
            if issubclass(entry.obj, GaussianSchedule):
                try:
                    found.append(entry.obj())
                except TypeError:
                    continue
    return st.sampled_from(found)


def conditions(cls: type, *, batch: int | None = None) -> st.SearchStrategy[Any]:
    """Instances of a condition class, built with its ``example`` method."""
    return st.tuples(st.integers(1, 6) if batch is None else st.just(batch), st.integers(0, 2**31 - 1)).map(
        lambda bs: cls.example(bs[0], torch.Generator().manual_seed(bs[1]))
    )


_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.integers(-(2**31), 2**31), st.floats(allow_nan=False), st.booleans(), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)


def component_specs() -> st.SearchStrategy[ComponentSpec]:
    """Component specs with arbitrary JSON/TOML-representable parameters."""
    qual = st.tuples(_names, _names).map(lambda p: f"{p[0]}:{p[1]}")
    params = st.dictionaries(_names.filter(lambda k: k != "name"), _values, max_size=4)
    return st.builds(ComponentSpec, qual, params)


def recipes() -> st.SearchStrategy[Recipe]:
    """Arbitrary well-typed recipes (their component names need not exist)."""
    parts = st.dictionaries(
        _names,
        st.builds(
            PartSpec,
            st.lists(st.integers(1, 64), min_size=1, max_size=4).map(tuple),
            component_specs(),
            component_specs(),
            st.floats(0.0, 10.0),
            st.integers(1, 3),
        ),
        min_size=1,
        max_size=3,
    )
    train = st.builds(
        TrainConfig,
        steps=st.integers(1, 10**6),
        batch_size=st.integers(1, 4096),
        lr=st.floats(1e-6, 1.0),
        ema_decay=st.floats(0.0, 1.0),
        time_distribution=st.sampled_from(["uniform", "logit_normal"]),
        time_loc=st.floats(-3, 3),
        time_scale=st.floats(0.1, 3),
        objective=st.none() | component_specs(),
        seed=st.none() | st.integers(0, 2**63 - 1),
    )
    return st.builds(
        Recipe,
        parts,
        component_specs(),
        component_specs(),
        component_specs(),
        guidance=st.none() | component_specs(),
        dataset=st.none() | component_specs(),
        method=st.none() | _names,
        seed=st.integers(0, 2**63 - 1),
        train=train,
        finetune=st.lists(train, max_size=2),
        sample=st.builds(SampleConfig, st.integers(1, 10**5), st.integers(1, 4096)),
    )
