r"""Parameterizations: how a network's raw input and output relate to the state.

A parameterization decides what the network sees (input scaling, noise-level
embedding input) and what its output means (a :class:`~diffusekit.prediction.Prediction`),
and it defines the regression target used for training. It is a frozen attrs class:
no state, safe to share.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from diffusekit.prediction import CategoricalPrediction, Prediction, from_x0_eps
from diffusekit.schedule import Coefficients, Corrupted, GaussianCoefficients, GaussianSchedule, Schedule


class Prepared(NamedTuple):
    """Network inputs for one part, plus what :meth:`Parameterization.output` needs."""

    x_in: Tensor
    noise_level: Tensor
    x: Tensor
    context: Any = None


class Parameterization(abc.ABC):
    """Maps (state, time) to network inputs and network outputs to predictions."""

    kind: ClassVar[str]
    """The schedule family this parameterization works with."""

    @abc.abstractmethod
    def prepare(self, schedule: Schedule, x: Tensor, t: Tensor, coef: Coefficients | None = None) -> Prepared:
        """Network inputs for part ``x`` at time ``t`` (``t`` not yet aligned with ``x``).

        ``coef`` are the schedule's coefficients at ``t`` when the caller already has
        them (aligned with ``x``, or floats); otherwise they are computed.
        """

    @abc.abstractmethod
    def output(self, raw: Tensor, prepared: Prepared) -> Any:
        """The prediction that the network output ``raw`` stands for."""

    @abc.abstractmethod
    def loss(self, raw: Tensor, prepared: Prepared, x0: Tensor, corrupted: Corrupted) -> Tensor:
        """Per-element training loss of output ``raw`` for clean data ``x0``."""


class GaussianParameterization(Parameterization):
    r"""A parameterization for Gaussian parts whose network output is a prediction of kind :attr:`prediction`.

    Subclasses override :meth:`network_input`, :meth:`noise_level` and :meth:`output_value`
    for preconditioning; the default is the identity on inputs, the time ``t`` as noise
    level, and the raw output taken as is. The loss is the squared error to
    :meth:`target`, the value of the raw output that reproduces :math:`(x_0, \varepsilon)`.
    """

    kind: ClassVar[str] = "gaussian"
    prediction: ClassVar[str]

    def network_input(self, x: Tensor, c: GaussianCoefficients) -> Tensor:
        return x

    def noise_level(self, t: Tensor, c: GaussianCoefficients) -> Tensor:
        """What the network is told about the noise: the time ``t`` itself, in its own shape."""
        return t

    def output_value(self, raw: Tensor, x: Tensor, c: GaussianCoefficients) -> Tensor:
        return raw

    def target(self, x0: Tensor, eps: Tensor, x: Tensor, c: GaussianCoefficients) -> Tensor:
        return from_x0_eps(self.prediction, x0, eps, c)

    def prepare(self, schedule: Schedule, x: Tensor, t: Tensor, coef: Coefficients | None = None) -> Prepared:
        if coef is None:
            if not isinstance(schedule, GaussianSchedule):
                raise TypeError(f"{type(self).__name__} needs a Gaussian schedule, got {type(schedule).__name__}")
            coef = schedule.coefficients(t).align(x)
        return Prepared(self.network_input(x, coef), self.noise_level(t, coef), x, coef)

    def output(self, raw: Tensor, prepared: Prepared) -> Prediction:
        c = prepared.context
        return Prediction(self.prediction, self.output_value(raw, prepared.x, c), prepared.x, c)

    def loss(self, raw: Tensor, prepared: Prepared, x0: Tensor, corrupted: Corrupted) -> Tensor:
        assert corrupted.noise is not None
        target = self.target(x0, corrupted.noise, prepared.x, prepared.context)
        return torch.square(raw - target)


class CategoricalParameterization(Parameterization):
    r"""A parameterization for categorical parts: the network maps tokens to logits over the clean token.

    The network sees the tokens themselves and the time; :meth:`transform` turns its
    raw logits into the prediction's logits (identity here; MDLM's SUBS overrides it),
    and the default loss is the cross-entropy of the clean tokens, :math:`-\log p_\theta(x_0 \mid x_t)`.
    """

    kind: ClassVar[str] = "categorical"

    def transform(self, raw: Tensor, prepared: Prepared) -> Tensor:
        return raw

    def prepare(self, schedule: Schedule, x: Tensor, t: Tensor, coef: Coefficients | None = None) -> Prepared:
        if coef is None:
            coef = schedule.coefficients(t).align(x)
        return Prepared(x, t, x, coef)

    def output(self, raw: Tensor, prepared: Prepared) -> CategoricalPrediction:
        return CategoricalPrediction(self.transform(raw, prepared), prepared.x, prepared.context)

    def loss(self, raw: Tensor, prepared: Prepared, x0: Tensor, corrupted: Corrupted) -> Tensor:
        logits = self.transform(raw, prepared).float()
        return -torch.log_softmax(logits, dim=-1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
