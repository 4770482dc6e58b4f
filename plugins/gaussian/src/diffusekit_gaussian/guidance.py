r"""Guidance for Gaussian denoisers.

Every guidance wraps a denoiser into another denoiser, so they compose. Guidances that
combine several evaluations do so on the prediction's own value: every conversion
between ε, x0, v and velocity is affine at fixed :math:`(x_t, t)`, so a weighted sum
with weights adding up to one is the same in any form. The evaluations of one step run
as a single batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs
import torch
from attrs import validators as v
from diffusekit import Condition, ConditionList, DenoiserLike, Guidance, Prediction, ShapeError
from diffusekit.guidance import evaluate_batched
from diffusekit.state import Parts, PartTimes
from torch import Tensor


def sigma_tilde(inner: DenoiserLike, part: str, x: Tensor, t: Tensor, coef: Mapping[str, Any] | None):
    c = coef[part] if coef is not None else inner.schedules[part].coefficients(t).align(x)
    return c.sigma_tilde


@attrs.frozen(eq=False)
class GuidedDenoiser:
    r"""A denoiser evaluated with and without its condition: :math:`D_\varnothing + w(D_c - D_\varnothing)`.

    ``interval`` limits guidance to noise levels :math:`\tilde\sigma \in (lo, hi]` (w = 1
    elsewhere); ``rescale`` φ > 0 rescales the guided :math:`\hat x_0` to the conditional
    one's standard deviation and mixes: :math:`\phi\,\hat x_0\frac{std(\hat x_0^c)}{std(\hat x_0)} + (1-\phi)\hat x_0`.
    """

    inner: DenoiserLike
    scale: float
    interval: tuple[float, float] | None = None
    rescale: float = 0.0

    @property
    def schedules(self) -> Mapping:
        return self.inner.schedules

    def _scales(self, x: Parts, t: PartTimes, coef) -> dict[str, Any]:
        if self.interval is None:
            return {p: self.scale for p in x}
        lo, hi = self.interval
        out = {}
        for p, xp in x.items():
            sig = sigma_tilde(self.inner, p, xp, t[p], coef)
            inside = (sig > lo) & (sig <= hi)
            if isinstance(inside, Tensor) and (bool(inside.all()) or not bool(inside.any())):
                inside = bool(inside.all())  # one setting for the whole part: no per-element weights
            if isinstance(inside, Tensor):
                out[p] = inside.to(xp.dtype) * (self.scale - 1.0) + 1.0
            else:
                out[p] = self.scale if inside else 1.0
        return out

    def __call__(
        self, x: Parts, t: PartTimes, condition: Condition | None = None, coef: Mapping[str, Any] | None = None
    ) -> dict[str, Prediction]:
        scales = self._scales(x, t, coef)
        if condition is None or all(isinstance(w, float) and w == 1.0 for w in scales.values()):
            return self.inner(x, t, condition, coef)
        cond, uncond = evaluate_batched(self.inner, x, t, coef, [condition, condition.null_like()])
        out = {}
        for p in x:
            guided = cond[p].with_value(uncond[p].value + scales[p] * (cond[p].value - uncond[p].value))
            out[p] = rescaled(guided, cond[p], self.rescale) if self.rescale > 0 else guided
        return out


def rescaled(guided: Prediction, conditional: Prediction, phi: float) -> Prediction:
    """Guidance rescale (Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed", 2024, Sec. 3.4)."""
    x0, ref = guided.x0, conditional.x0
    dims = tuple(range(1, x0.ndim))
    factor = ref.std(dim=dims, keepdim=True) / x0.std(dim=dims, keepdim=True).clamp_min(1e-12)
    return Prediction("x0", phi * factor * x0 + (1.0 - phi) * x0, guided.x, guided.coef)


def _interval(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    lo, hi = (float(v) for v in value)
    if not 0.0 <= lo < hi:
        raise ValueError(f"a guidance interval needs 0 <= lo < hi, got ({lo}, {hi})")
    return (lo, hi)


@attrs.frozen
class ClassifierFreeGuidance(Guidance):
    r"""Classifier-free guidance (Ho & Salimans, 2022): :math:`\tilde D = D_\varnothing + w\,(D_c - D_\varnothing)`.

    ``scale`` is w: 1 is the conditional model unchanged, 0 the unconditional one,
    w > 1 sharpens toward the condition. ``interval = [lo, hi]`` applies it only for
    :math:`\tilde\sigma \in (lo, hi]` (Kynkäänniemi et al., "Applying Guidance in a
    Limited Interval Improves Sample and Distribution Quality", 2024); ``rescale`` φ is
    the guidance rescale of Lin et al. (2024). Needs a network trained with condition
    dropout. Two evaluations per step, batched as one (one outside the interval).
    """

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})  # the schedule families it handles

    scale: float = 2.0
    interval: tuple[float, float] | None = attrs.field(default=None, converter=_interval)
    rescale: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.le(1.0)])

    def wrap(self, denoiser: DenoiserLike) -> GuidedDenoiser:
        return GuidedDenoiser(denoiser, self.scale, self.interval, self.rescale)

    def neutral(self) -> ClassifierFreeGuidance:
        return attrs.evolve(self, scale=1.0, rescale=0.0)


@attrs.frozen(eq=False)
class ComposedDenoiser:
    """The denoiser of :class:`ComposableGuidance`."""

    inner: DenoiserLike
    weights: tuple[float, ...]

    @property
    def schedules(self) -> Mapping:
        return self.inner.schedules

    def __call__(self, x, t, condition=None, coef=None):
        if not self.weights or condition is None:  # neutral: the plain denoiser
            return self.inner(x, t, condition, coef)
        items = condition.items if isinstance(condition, ConditionList) else (condition,)
        if len(items) == 1 and self.weights == (1.0,):
            return self.inner(x, t, items[0], coef)
        if len(items) != len(self.weights):
            raise ShapeError(
                f"composable guidance has {len(self.weights)} weights but the condition has {len(items)} items"
            )
        evaluations = evaluate_batched(self.inner, x, t, coef, [*items, items[0].null_like()])
        uncond = evaluations[-1]
        out = {}
        for p in x:
            value = uncond[p].value
            for w, ev in zip(self.weights, evaluations[:-1], strict=True):
                value = value + w * (ev[p].value - uncond[p].value)
            out[p] = uncond[p].with_value(value)
        return out


@attrs.frozen
class ComposableGuidance(Guidance):
    r"""Composable diffusion (Liu et al., "Compositional Visual Generation with Composable Diffusion Models", 2022).

    :math:`\tilde D = D_\varnothing + \sum_i w_i (D_{c_i} - D_\varnothing)` for a
    :class:`~diffusekit.ConditionList` :math:`(c_1, \dots, c_k)`: positive weights are
    AND, negative weights NOT. k + 1 evaluations per step, batched as one. No weights
    (the neutral setting) leave the denoiser unchanged.
    """

    weights: tuple[float, ...] = (1.0,)

    def wrap(self, denoiser: DenoiserLike) -> ComposedDenoiser:
        return ComposedDenoiser(denoiser, tuple(float(w) for w in self.weights))

    def neutral(self) -> ComposableGuidance:
        return attrs.evolve(self, weights=())


@attrs.frozen(eq=False)
class ClassifierGuidedDenoiser:
    """The denoiser of :class:`ClassifierGuidance`."""

    inner: DenoiserLike
    scale: float
    log_prob: Callable[..., Tensor] | None

    @property
    def schedules(self) -> Mapping:
        return self.inner.schedules

    def __call__(self, x, t, condition=None, coef=None):
        preds = self.inner(x, t, condition, coef)
        if self.log_prob is None or self.scale == 0.0:
            return preds
        with torch.enable_grad():
            leaves = {p: v.detach().requires_grad_(True) for p, v in x.items()}
            total = self.log_prob(leaves, t, condition).sum()
            grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        out = {}
        for (p, grad), pred in zip(zip(leaves, grads, strict=True), preds.values(), strict=True):
            if grad is None:
                out[p] = pred
                continue
            # score + w grad log p(y | x_t)  <=>  eps - w sigma grad
            out[p] = Prediction("eps", pred.eps - (self.scale * pred.coef.sigma) * grad, pred.x, pred.coef)
        return out


@attrs.frozen
class ClassifierGuidance(Guidance):
    r"""Classifier guidance (Dhariwal & Nichol, "Diffusion Models Beat GANs", 2021).

    :math:`\nabla\log p(x_t \mid y) = \nabla\log p(x_t) + w\,\nabla\log p_\phi(y \mid x_t, t)`, i.e.
    :math:`\hat\varepsilon \leftarrow \hat\varepsilon - w\,\sigma_t\nabla_{x_t}\log p_\phi(y \mid x_t, t)`.
    ``log_prob(x, t, condition)`` is any differentiable function of the state (dict of
    parts), the times and the condition returning one log-probability per sample; it is
    set from Python (it is not a recipe parameter).
    """

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})  # the schedule families it handles

    scale: float = 1.0
    log_prob: Callable[..., Tensor] | None = attrs.field(default=None, eq=False, repr=False)

    def wrap(self, denoiser: DenoiserLike) -> ClassifierGuidedDenoiser:
        return ClassifierGuidedDenoiser(denoiser, self.scale, self.log_prob)

    def neutral(self) -> ClassifierGuidance:
        return attrs.evolve(self, scale=0.0)


@attrs.frozen(eq=False)
class ProductDenoiser:
    """The denoiser of :class:`ProductGuidance`."""

    inner: DenoiserLike
    weight: float
    others: tuple[DenoiserLike, ...]
    weights: tuple[float, ...]

    @property
    def schedules(self) -> Mapping:
        return self.inner.schedules

    def __call__(self, x, t, condition=None, coef=None):
        preds = self.inner(x, t, condition, coef)
        if not self.others and self.weight == 1.0:
            return preds
        eps = {p: self.weight * pred.eps for p, pred in preds.items()}
        for other, w in zip(self.others, self.weights, strict=True):
            for p, pred in other(x, t, condition, coef).items():
                eps[p] = eps[p] + w * pred.eps
        return {p: Prediction("eps", eps[p], pred.x, pred.coef) for p, pred in preds.items()}


@attrs.frozen
class ProductGuidance(Guidance):
    r"""A weighted product of denoisers: :math:`\nabla\log\prod_i p_i^{w_i} = \sum_i w_i\nabla\log p_i`, i.e. :math:`\hat\varepsilon = \sum_i w_i\hat\varepsilon_i`.

    The wrapped denoiser has weight ``weight``; ``others`` (set from Python) are further
    denoisers over the same parts and schedules with ``weights``. Weights summing to 1
    compose experts (Hinton, 2002; Du et al., "Reduce, Reuse, Recycle", 2023); the
    product of the noisy marginals is only an approximation of the noisy product.
    """

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})  # the schedule families it handles

    weight: float = 1.0
    weights: tuple[float, ...] = ()
    others: tuple[Any, ...] = attrs.field(default=(), eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if len(self.others) != len(self.weights):
            raise ValueError(f"{len(self.others)} other denoisers but {len(self.weights)} weights")

    def wrap(self, denoiser: DenoiserLike) -> ProductDenoiser:
        return ProductDenoiser(denoiser, self.weight, tuple(self.others), tuple(float(w) for w in self.weights))

    def neutral(self) -> ProductGuidance:
        return ProductGuidance()
