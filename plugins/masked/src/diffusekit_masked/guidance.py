"""Classifier-free guidance on logits."""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from diffusekit import Guidance
from diffusekit.guidance import evaluate_batched


@attrs.frozen(eq=False)
class LogitGuided:
    """The denoiser of :class:`LogitCFG`."""

    inner: object
    scale: float

    @property
    def schedules(self) -> Mapping:
        return self.inner.schedules

    @property
    def time_conditioned(self) -> bool:
        return getattr(self.inner, "time_conditioned", True)

    def __call__(self, x, t, condition=None, coef=None):
        if condition is None or self.scale == 1.0:
            return self.inner(x, t, condition, coef)
        cond, uncond = evaluate_batched(self.inner, x, t, coef, [condition, condition.null_like()])
        return {p: cond[p].with_value(uncond[p].value + self.scale * (cond[p].value - uncond[p].value)) for p in x}


@attrs.frozen
class LogitCFG(Guidance):
    r"""Classifier-free guidance on logits (Ho & Salimans, 2022; as in LLaDA, Nie et al., 2025; Schiff et al., 2024).

    :math:`\ell = \ell_\varnothing + w(\ell_c - \ell_\varnothing)`, then the softmax: w = 1 is the
    conditional model, w = 0 the unconditional one. Two evaluations per step, one batch.
    """

    scale: float = 2.0

    def wrap(self, denoiser):
        return LogitGuided(denoiser, self.scale)

    def neutral(self) -> LogitCFG:
        return attrs.evolve(self, scale=1.0)
