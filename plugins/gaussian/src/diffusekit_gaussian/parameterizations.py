r"""Parameterizations of Gaussian denoisers: what the network's output means.

The conversions between the forms live in :mod:`diffusekit.prediction`; these classes
only say which form the network produces and, for EDM, how inputs and outputs are
preconditioned.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from attrs import validators as v
from diffusekit import GaussianCoefficients, GaussianParameterization, numeric
from diffusekit.numeric import Scalar
from torch import Tensor


@attrs.frozen
class EpsilonPrediction(GaussianParameterization):
    r"""The network predicts the noise :math:`\varepsilon` (Ho et al., "DDPM", 2020)."""

    prediction: ClassVar[str] = "eps"


@attrs.frozen
class X0Prediction(GaussianParameterization):
    r"""The network predicts the clean data :math:`x_0`."""

    prediction: ClassVar[str] = "x0"


@attrs.frozen
class VPrediction(GaussianParameterization):
    r"""The network predicts :math:`v = \alpha_t\varepsilon - \sigma_t x_0` (Salimans & Ho, "Progressive Distillation", 2022)."""

    prediction: ClassVar[str] = "v"


@attrs.frozen
class VelocityPrediction(GaussianParameterization):
    r"""The network predicts the flow velocity :math:`u = \dot\alpha_t x_0 + \dot\sigma_t\varepsilon` (flow matching; Lipman et al., 2023)."""

    prediction: ClassVar[str] = "velocity"


@attrs.frozen
class EDMPreconditioning(GaussianParameterization):
    r"""EDM preconditioning (Karras et al., 2022, Table 1), written for any :math:`(\alpha_t, \sigma_t)`.

    In the scaled variables :math:`\tilde x = x/\alpha`, :math:`\tilde\sigma = \sigma/\alpha`:
    :math:`D(\tilde x) = c_{skip}\tilde x + c_{out} F(c_{in}\tilde x, c_{noise})` with
    :math:`c_{skip} = \sigma_d^2/(\tilde\sigma^2+\sigma_d^2)`,
    :math:`c_{out} = \tilde\sigma\sigma_d/\sqrt{\tilde\sigma^2+\sigma_d^2}`,
    :math:`c_{in} = 1/\sqrt{\tilde\sigma^2+\sigma_d^2}`, :math:`c_{noise} = \tfrac14\ln\tilde\sigma`.
    Multiplying through by :math:`\alpha` keeps every coefficient finite where :math:`\alpha = 0`.
    The loss on the raw output is EDM's weighted loss :math:`\lambda(\sigma)\lVert D - x_0\rVert^2`.
    """

    prediction: ClassVar[str] = "x0"
    sigma_data: float = attrs.field(default=0.5, validator=v.gt(0.0))

    def _norm(self, c: GaussianCoefficients) -> Scalar:
        scaled = c.alpha * self.sigma_data
        # products, not ** 2: a Python float overflows to inf like a tensor instead of raising OverflowError
        return numeric.sqrt(c.sigma * c.sigma + scaled * scaled)

    def network_input(self, x: Tensor, c: GaussianCoefficients) -> Tensor:
        return x / self._norm(c)

    def noise_level(self, t: Tensor, c: GaussianCoefficients) -> Tensor:
        # 1/4 ln(sigma~) = -lambda/8, in the shape of t; clamped so the endpoints (lambda = +-inf) stay finite
        if isinstance(c.log_snr, Tensor):
            return (-c.log_snr.clamp(-80.0, 80.0) / 8.0).reshape(t.shape).to(t.dtype)
        return torch.full_like(t, -min(max(c.log_snr, -80.0), 80.0) / 8.0)

    def _skip_out(self, c: GaussianCoefficients) -> tuple[Scalar, Scalar]:
        norm = self._norm(c)
        return self.sigma_data * self.sigma_data * c.alpha / (norm * norm), c.sigma * self.sigma_data / norm

    def output_value(self, raw: Tensor, x: Tensor, c: GaussianCoefficients) -> Tensor:
        skip, out = self._skip_out(c)
        return skip * x + out * raw

    def target(self, x0: Tensor, eps: Tensor, x: Tensor, c: GaussianCoefficients) -> Tensor:
        skip, out = self._skip_out(c)
        return (x0 - skip * x) / out
