"""One sampler for states whose parts have schedules of different kinds.

A molecule's positions are Gaussian and its atom types categorical; an image with its label,
a video with its actions, likewise. :class:`ByKind` steps every part with the sampler named
for its schedule's kind (``gaussian``, ``categorical``), all parts through the same plan and one
network evaluation per step: the network sees every part at once, as it was trained.

Each kind's sampler receives a *view* of the denoiser restricted to its parts. The view's first
call of a step, at the step's start ``(x, t_from)``, is answered from one shared evaluation of all
parts; a further call (a second-order sampler's evaluation at another point) evaluates the
network again with that kind's parts moved and the other parts still at the step's start.
The kinds are stepped in a fixed order (``gaussian``, then ``categorical``) and draw from the
same generator, so a run is reproducible; each kind keeps its own history (``carry``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
from torch import Tensor

from diffusekit.errors import ConfigError, ShapeError
from diffusekit.sampler import Sampler, Step, StepTimes

KINDS = ("gaussian", "categorical")


class _Shared:
    """The step's start and, once computed, the denoiser's predictions there for all parts."""

    def __init__(self, denoiser, x: Mapping[str, Tensor], times: StepTimes, condition) -> None:
        self.denoiser, self.x, self.times, self.condition = denoiser, x, times, condition
        self.predictions: dict[str, Any] | None = None

    def at_start(self) -> dict[str, Any]:
        if self.predictions is None:
            self.predictions = self.denoiser(self.x, self.times.t_from, self.condition, self.times.c_from)
        return self.predictions


class _View:
    """The denoiser as one kind's sampler sees it: only that kind's parts."""

    def __init__(self, shared: _Shared, parts: tuple[str, ...]) -> None:
        self.shared, self.parts = shared, parts
        self.schedules = {p: shared.denoiser.schedules[p] for p in parts}

    def __call__(self, x, t, condition=None, coef=None) -> dict[str, Any]:
        s = self.shared
        if all(x[p] is s.x[p] for p in self.parts) and all(t[p] is s.times.t_from[p] for p in self.parts):
            predictions = s.at_start()
        else:  # another point of the same step: this kind's parts moved, the others at the start
            full_coef = None if coef is None else {**s.times.c_from, **coef}
            predictions = s.denoiser({**s.x, **x}, {**s.times.t_from, **t}, condition, full_coef)
        return {p: predictions[p] for p in self.parts}


def _restrict(times: StepTimes, parts: tuple[str, ...]) -> StepTimes:
    def pick(d: Mapping[str, Any]) -> dict[str, Any]:
        return {p: d[p] for p in parts}

    return StepTimes(
        pick(times.t_from), pick(times.t_to), pick(times.c_from), pick(times.c_to), pick(times.fixed),
        times.index, times.steps,
    )  # fmt: skip


@attrs.frozen
class ByKind(Sampler):
    """Steps each part with the sampler of its schedule's kind, sharing one network evaluation per step.

    ``gaussian`` and ``categorical`` name registered samplers (e.g. ``"gaussian:dpmpp_2m"``,
    ``"masked:ancestral"``); a kind left unnamed is refused when a part of that kind is sampled.
    """

    gaussian: str | None = None
    categorical: str | None = None
    evaluations_per_step: ClassVar[int] = 1

    @property
    def supports(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset(k for k in KINDS if getattr(self, k) is not None)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return any(s.stochastic for s in self.samplers().values())

    @property
    def order(self) -> int:  # type: ignore[override]
        return min((s.order for s in self.samplers().values()), default=1)

    def samplers(self) -> dict[str, Sampler]:
        """The sampler of each named kind, built with its default settings."""
        from diffusekit.plugins import get_registry

        out = {}
        for kind in KINDS:
            name = getattr(self, kind)
            if name is None:
                continue
            sampler = get_registry().resolve("sampler", name).obj()
            if kind not in sampler.supports:
                raise ConfigError(kind, f"{name} steps {'/'.join(sorted(sampler.supports))} parts, not {kind} ones")
            out[kind] = sampler
        return out

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        samplers = self.samplers()
        groups: dict[str, tuple[str, ...]] = {}
        for kind in KINDS:
            parts = tuple(p for p in x if denoiser.schedules[p].kind == kind)
            if parts:
                if kind not in samplers:
                    raise ShapeError(
                        f"part(s) {', '.join(parts)} are {kind}: name a sampler for them (by_kind {kind}=...)"
                    )
                groups[kind] = parts
        shared = _Shared(denoiser, x, times, condition)
        carry = carry or {}
        moved: dict[str, Tensor] = {}
        predictions: dict[str, Any] = {}
        carries: dict[str, Any] = {}
        for kind, parts in groups.items():
            step = samplers[kind].update(
                _View(shared, parts),
                {p: x[p] for p in parts},
                _restrict(times, parts),
                condition=condition,
                generator=generator,
                carry=carry.get(kind),
            )
            moved.update(step.x)
            predictions.update(step.predictions)
            carries[kind] = step.carry
        return Step(moved, predictions, carries)


__all__ = ["ByKind"]
