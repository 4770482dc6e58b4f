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

from typing import Literal

import attrs
from torch import Tensor

from diffusekit.schedule import GaussianCoefficients

PredictionKind = Literal["x0", "eps", "v", "score", "velocity"]
PREDICTION_KINDS: tuple[str, ...] = ("x0", "eps", "v", "score", "velocity")


def to_x0(kind: str, value: Tensor, x: Tensor, c: GaussianCoefficients) -> Tensor:
    r""":math:`\hat x_0` from a prediction of ``kind``."""
    if kind == "x0":
        return value
    if kind == "eps":
        return (x - c.sigma * value) / c.alpha
    if kind == "v":
        return (c.alpha * x - c.sigma * value) / (c.alpha**2 + c.sigma**2)
    if kind == "score":
        return (x + c.sigma**2 * value) / c.alpha
    if kind == "velocity":
        return (c.d_sigma * x - c.sigma * value) / (c.alpha * c.d_sigma - c.sigma * c.d_alpha)
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTION_KINDS}")


def to_eps(kind: str, value: Tensor, x: Tensor, c: GaussianCoefficients) -> Tensor:
    r""":math:`\hat\varepsilon` from a prediction of ``kind``."""
    if kind == "eps":
        return value
    if kind == "x0":
        return (x - c.alpha * value) / c.sigma
    if kind == "v":
        return (c.sigma * x + c.alpha * value) / (c.alpha**2 + c.sigma**2)
    if kind == "score":
        return -c.sigma * value
    if kind == "velocity":
        return (c.alpha * value - c.d_alpha * x) / (c.alpha * c.d_sigma - c.sigma * c.d_alpha)
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTION_KINDS}")


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


@attrs.frozen(eq=False)
class Prediction:
    """A denoiser's output for one Gaussian part: ``value`` is of ``kind`` at noisy input ``x``.

    ``coef`` are the schedule's coefficients aligned with ``x``. The properties convert
    on demand through :func:`convert`.
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

    def with_value(self, value: Tensor) -> Prediction:
        """The same prediction (kind, input, coefficients) with another value."""
        return attrs.evolve(self, value=value)

    def take(self, index: slice) -> Prediction:
        """Rows ``index`` of a batched prediction."""
        return Prediction(self.kind, self.value[index], self.x[index], self.coef.take(index))
