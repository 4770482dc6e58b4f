r"""What a denoiser predicts, and the one place its forms are converted into each other.

Given :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`, a network's output can be read as

* ``x0``  — the posterior mean :math:`\hat x_0 = E[x_0 \mid x_t]`;
* ``eps`` — :math:`\hat\varepsilon = (x_t - \alpha_t \hat x_0)/\sigma_t` (Ho et al., 2020);
* ``v``   — :math:`v = \alpha_t\varepsilon - \sigma_t x_0` (Salimans & Ho, 2022);
* ``score`` — :math:`\nabla \log p_t(x_t) = -\hat\varepsilon/\sigma_t` (Tweedie; Song et al., 2021);
* ``velocity`` — the probability-flow velocity :math:`u = \dot\alpha_t \hat x_0 + \dot\sigma_t\hat\varepsilon`
  (Lipman et al., 2023; Liu et al., 2023).

Every conversion goes through the pair :math:`(\hat x_0, \hat\varepsilon)`, which is the
solution of the 2×2 linear system formed by :math:`x_t` and the prediction. All
conversions are affine in the prediction at fixed :math:`(x_t, t)`, so a weighted sum of
predictions (guidance) commutes with them.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from diffusekit import numeric
from diffusekit.numeric import Scalar
from diffusekit.schedule import GaussianCoefficients

PredictionKind = Literal["x0", "eps", "v", "score", "velocity"]
PREDICTION_KINDS: tuple[str, ...] = ("x0", "eps", "v", "score", "velocity")


def affine(kind: str, c: GaussianCoefficients) -> tuple[tuple[Scalar, Scalar], tuple[Scalar, Scalar]]:
    r"""Weights :math:`((a, b), (d, e))` with :math:`\hat x_0 = a x + b\,p` and :math:`\hat\varepsilon = d x + e\,p`
    for a prediction :math:`p` of ``kind`` at noisy input :math:`x` (the inverse of the 2×2 system
    :math:`x = \alpha x_0 + \sigma\varepsilon`, :math:`p = f(x_0, \varepsilon)`).
    """
    alpha, sigma = c.alpha, c.sigma
    if kind == "x0":
        return (0.0, 1.0), (numeric.div(1.0, sigma), numeric.div(-alpha, sigma))
    if kind == "eps":
        return (numeric.div(1.0, alpha), numeric.div(-sigma, alpha)), (0.0, 1.0)
    if kind == "v":
        n = alpha * alpha + sigma * sigma
        return (alpha / n, -sigma / n), (sigma / n, alpha / n)
    if kind == "score":
        return (numeric.div(1.0, alpha), numeric.div(sigma * sigma, alpha)), (0.0, -sigma)
    if kind == "velocity":
        det = alpha * c.d_sigma - sigma * c.d_alpha
        return (numeric.div(c.d_sigma, det), numeric.div(-sigma, det)), (
            numeric.div(-c.d_alpha, det),
            numeric.div(alpha, det),
        )
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTION_KINDS}")


def _scale(w: Scalar, a: Scalar) -> Scalar:
    """``w * a``, but 0 wherever the weight is 0 (also when ``a`` is infinite there)."""
    if isinstance(w, float) or isinstance(w, int):
        return 0.0 if w == 0 else w * a
    return torch.where(w == 0, torch.zeros_like(w), w * a)


def combine(a: Scalar, x: Tensor, b: Scalar, y: Tensor) -> Tensor:
    """``a * x + b * y`` in at most two tensor operations (skipping zero float weights)."""
    if isinstance(a, float) and isinstance(b, float):
        if b == 0.0:
            return x * a
        if a == 0.0:
            return y * b
        if abs(a + b - 1.0) < 1e-12:  # a convex/affine mix (alpha = 1 schedules): one kernel
            return torch.lerp(y, x, a)
        return torch.add(x * a, y, alpha=b)
    return a * x + b * y


def to_x0(kind: str, value: Tensor, x: Tensor, c: GaussianCoefficients) -> Tensor:
    r""":math:`\hat x_0` from a prediction of ``kind``."""
    if kind == "x0":
        return value
    (a, b), _ = affine(kind, c)
    return combine(a, x, b, value)


def to_eps(kind: str, value: Tensor, x: Tensor, c: GaussianCoefficients) -> Tensor:
    r""":math:`\hat\varepsilon` from a prediction of ``kind``."""
    if kind == "eps":
        return value
    _, (d, e) = affine(kind, c)
    return combine(d, x, e, value)


def from_x0_eps(kind: str, x0: Tensor, eps: Tensor, c: GaussianCoefficients) -> Tensor:
    """The prediction of ``kind`` that corresponds to the pair :math:`(x_0, \\varepsilon)`."""
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    if kind == "v":
        return c.alpha * eps - c.sigma * x0
    if kind == "score":
        return -eps / c.sigma
    if kind == "velocity":
        return c.d_alpha * x0 + c.d_sigma * eps
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTION_KINDS}")


def convert(kind: str, value: Tensor, target: str, x: Tensor, c: GaussianCoefficients) -> Tensor:
    """Convert a prediction of ``kind`` into one of ``target`` (identity if equal)."""
    if kind == target:
        return value
    if target == "x0":
        return to_x0(kind, value, x, c)
    if target == "eps":
        return to_eps(kind, value, x, c)
    return from_x0_eps(target, to_x0(kind, value, x, c), to_eps(kind, value, x, c), c)


@attrs.define(eq=False)
class Prediction:
    """A denoiser's output for one Gaussian part: ``value`` is of ``kind`` at noisy input ``x``.

    ``coef`` are the schedule's coefficients at the input's time: Python floats for a
    scalar time, or tensors aligned with ``x``. The properties convert on demand through
    :func:`convert`; :meth:`mix` combines forms without materialising them.
    """

    kind: str
    value: Tensor
    x: Tensor
    coef: GaussianCoefficients

    def as_kind(self, kind: str) -> Tensor:
        return convert(self.kind, self.value, kind, self.x, self.coef)

    @property
    def x0(self) -> Tensor:
        return self.as_kind("x0")

    @property
    def eps(self) -> Tensor:
        return self.as_kind("eps")

    @property
    def v(self) -> Tensor:
        return self.as_kind("v")

    @property
    def score(self) -> Tensor:
        return self.as_kind("score")

    @property
    def velocity(self) -> Tensor:
        return self.as_kind("velocity")

    def mix(self, w_x0: Scalar, w_eps: Scalar, w_x: Scalar = 0.0) -> Tensor:
        r""":math:`w_x x + w_{x_0}\hat x_0 + w_\varepsilon\hat\varepsilon`, with the conversions folded in.

        Every Gaussian sampler update is such a combination (plus history and noise
        terms); with float weights it costs two tensor operations whatever the kind.
        """
        c = self.coef
        weights = c.affine_cache.get(self.kind)
        if weights is None:  # coefficient records live for a whole plan: convert once per kind
            weights = c.affine_cache[self.kind] = affine(self.kind, c)
        (a, b), (d, e) = weights
        if type(w_x0) is float and type(w_eps) is float and type(a) is float and type(d) is float:
            cx, cv = w_x, 0.0
            if w_x0 != 0.0:
                cx, cv = cx + w_x0 * a, cv + w_x0 * b
            if w_eps != 0.0:
                cx, cv = cx + w_eps * d, cv + w_eps * e
        else:
            cx = w_x + _scale(w_x0, a) + _scale(w_eps, d)
            cv = _scale(w_x0, b) + _scale(w_eps, e)
        return combine(cx, self.x, cv, self.value)

    def with_value(self, value: Tensor) -> Prediction:
        """The same prediction (kind, input, coefficients) with another value."""
        return attrs.evolve(self, value=value)

    def take(self, index: slice) -> Prediction:
        """Rows ``index`` of a batched prediction."""
        return Prediction(self.kind, self.value[index], self.x[index], self.coef.take(index))


@attrs.define(eq=False)
class CategoricalPrediction:
    """A denoiser's output for one categorical part: logits over the clean token of every element.

    ``value`` has shape ``(*x.shape, num_classes)``; ``x`` are the current (noisy)
    tokens and ``coef`` the schedule's coefficients there. Guidance combines the
    logits linearly (``with_value``), as for Gaussian predictions.
    """

    value: Tensor
    x: Tensor
    coef: Any

    @property
    def logits(self) -> Tensor:
        return self.value

    @property
    def log_probs(self) -> Tensor:
        return torch.log_softmax(self.value.float(), dim=-1)

    @property
    def probs(self) -> Tensor:
        return torch.softmax(self.value.float(), dim=-1)

    @property
    def x0(self) -> Tensor:
        """The most likely clean token of every element (what progress callbacks show)."""
        return self.value.argmax(-1)

    def with_value(self, value: Tensor) -> CategoricalPrediction:
        return CategoricalPrediction(value, self.x, self.coef)

    def take(self, index: slice) -> CategoricalPrediction:
        return CategoricalPrediction(
            self.value[index], self.x[index], None if self.coef is None else self.coef.take(index)
        )
