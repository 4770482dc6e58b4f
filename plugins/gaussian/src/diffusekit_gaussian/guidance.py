"""Classifier-free guidance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from diffusekit import Condition, DenoiserLike, Guidance, Prediction
from diffusekit.state import Parts, PartTimes, batch_size


@attrs.frozen(eq=False)
class GuidedDenoiser:
    r"""A denoiser evaluated with and without its condition, combined as :math:`D_\varnothing + w(D_c - D_\varnothing)`.

    Both halves run as one batch of ``2B``. The combination is affine in the
    prediction, so it is the same whether taken in ε, x0, v or velocity form.
    """

    inner: DenoiserLike
    scale: float

    @property
    def schedules(self) -> Mapping:
        return self.inner.schedules

    def __call__(
        self, x: Parts, t: PartTimes, condition: Condition | None = None, coef: Mapping[str, Any] | None = None
    ) -> dict[str, Prediction]:
        if condition is None or self.scale == 1.0:
            return self.inner(x, t, condition, coef)
        n = batch_size(x)

        def twice(v: torch.Tensor) -> torch.Tensor:
            return torch.cat([v, v]) if v.ndim and v.shape[0] == n else v

        x2 = {p: torch.cat([v, v]) for p, v in x.items()}
        t2 = {p: twice(v) for p, v in t.items()}
        coef2 = None if coef is None else {p: c.map_tensors(twice) for p, c in coef.items()}
        both = self.inner(x2, t2, condition.cat(condition.null_like()), coef2)
        out = {}
        for p, pred in both.items():
            cond, uncond = pred.take(slice(0, n)), pred.take(slice(n, 2 * n))
            out[p] = cond.with_value(uncond.value + self.scale * (cond.value - uncond.value))
        return out


@attrs.frozen
class ClassifierFreeGuidance(Guidance):
    r"""Classifier-free guidance (Ho & Salimans, 2022): :math:`\tilde D = D_\varnothing + w\,(D_c - D_\varnothing)`.

    ``scale`` is w: 1 is the conditional model unchanged, 0 the unconditional one,
    w > 1 sharpens toward the condition. Needs a network trained with condition
    dropout (``train.condition_dropout``). Two evaluations per step, batched as one.
    """

    scale: float = 2.0

    def wrap(self, denoiser: DenoiserLike) -> GuidedDenoiser:
        return GuidedDenoiser(denoiser, self.scale)

    def neutral(self) -> ClassifierFreeGuidance:
        return attrs.evolve(self, scale=1.0)
