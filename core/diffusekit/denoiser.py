"""Denoisers: a network plus, for every part, its schedule and parameterization.

Anything with a ``schedules`` mapping and a ``__call__(x, t, condition=None, coef=None)``
returning one prediction per part is a denoiser for the samplers (:class:`DenoiserLike`;
``coef`` are the schedules' coefficients at ``t`` when the caller has them): the
trained :class:`Denoiser`, a guided denoiser, or the exact Gaussian-mixture oracle of
:mod:`diffusekit.testing`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs
from torch import Tensor, nn

from diffusekit.condition import Condition
from diffusekit.errors import ShapeError
from diffusekit.parameterization import Parameterization, Prepared
from diffusekit.schedule import Schedule
from diffusekit.state import DEFAULT_PART, Parts, PartTimes, State, Time, as_parts, part_times


@runtime_checkable
class DenoiserLike(Protocol):
    """What samplers need: per-part schedules and a prediction per part."""

    schedules: Mapping[str, Schedule]

    def __call__(
        self, x: Parts, t: PartTimes, condition: Condition | None = None, coef: Mapping[str, Any] | None = None
    ) -> dict[str, Any]: ...


@attrs.frozen(eq=False)
class Denoiser:
    """A network with its per-part schedules and parameterizations.

    The network is called once per evaluation, on all parts together:
    ``network(x_in, noise_level, condition)``. For a single-part denoiser (one part
    named ``"x"``) it receives and returns tensors; otherwise dicts keyed by part.
    """

    network: nn.Module
    schedules: Mapping[str, Schedule]
    parameterizations: Mapping[str, Parameterization]

    def __attrs_post_init__(self) -> None:
        if set(self.schedules) != set(self.parameterizations):
            raise ShapeError(
                f"schedules cover parts {sorted(self.schedules)} but parameterizations cover "
                f"{sorted(self.parameterizations)}"
            )

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.schedules)

    @property
    def time_conditioned(self) -> bool:
        """Whether the network reads the noise level (a module may set ``time_conditioned = False``)."""
        return bool(getattr(self.network, "time_conditioned", True))

    def prepare(self, x: Parts, t: PartTimes, coef: Mapping[str, Any] | None = None) -> dict[str, Prepared]:
        if len(x) != len(self.schedules) or any(p not in self.schedules for p in x):
            raise ShapeError(f"the state has parts {sorted(x)}; this denoiser expects {sorted(self.schedules)}")
        if coef is None:
            return {p: self.parameterizations[p].prepare(self.schedules[p], x[p], t[p]) for p in x}
        return {p: self.parameterizations[p].prepare(self.schedules[p], x[p], t[p], coef[p]) for p in x}

    def run_network(self, prepared: Mapping[str, Prepared], condition: Condition | None) -> dict[str, Tensor]:
        if len(prepared) == 1 and DEFAULT_PART in prepared:
            p = prepared[DEFAULT_PART]
            return {DEFAULT_PART: self.network(p.x_in, p.noise_level, condition)}
        out = self.network(
            {k: p.x_in for k, p in prepared.items()},
            {k: p.noise_level for k, p in prepared.items()},
            condition,
        )
        return dict(out)

    def __call__(
        self, x: State, t: Time, condition: Condition | None = None, coef: Mapping[str, Any] | None = None
    ) -> Any:
        """One prediction per part (a bare prediction if ``x`` is a bare tensor).

        ``coef`` (per part) are the schedules' coefficients at ``t`` when the caller has
        them already, as samplers do; otherwise they are computed.
        """
        if isinstance(x, dict) and isinstance(t, dict):  # the samplers' form: no normalising
            if len(x) == 1 and DEFAULT_PART in x and DEFAULT_PART in self.parameterizations:
                # the common single-part case, kept short: it runs once per network evaluation
                param = self.parameterizations[DEFAULT_PART]
                prepared = param.prepare(
                    self.schedules[DEFAULT_PART],
                    x[DEFAULT_PART],
                    t[DEFAULT_PART],
                    None if coef is None else coef[DEFAULT_PART],
                )
                raw = self.network(prepared.x_in, prepared.noise_level, condition)
                return {DEFAULT_PART: param.output(raw, prepared)}
            parts, times = x, t
        else:
            parts = as_parts(x)
            times = part_times(t, parts, device=next(iter(parts.values())).device)
        prepared = self.prepare(parts, times, coef)
        raw = self.run_network(prepared, condition)
        out = {p: self.parameterizations[p].output(raw[p], prepared[p]) for p in parts}
        return out[DEFAULT_PART] if isinstance(x, Tensor) else out
