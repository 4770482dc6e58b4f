"""A reference Gaussian schedule for the contracts, so the kit depends on no plugin."""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
from torch import Tensor

from diffusekit.schedule import GaussianCoefficients, GaussianSchedule


@attrs.frozen
class TrigonometricSchedule(GaussianSchedule):
    r""":math:`\alpha_t = \cos(\theta_{max} t)`, :math:`\sigma_t = \sin(\theta_{max} t)`, with :math:`\tan\theta_{max} = e^{-\lambda_{min}/2}`.

    The variance-preserving cosine path of Kingma et al. (2021) / Hoogeboom et al.
    (2023), ending at log-SNR ``logsnr_min`` so that :math:`\alpha_1 > 0`.
    """

    family: ClassVar[str] = "vp"
    logsnr_min: float = -10.0

    @property
    def theta_max(self) -> float:
        return math.atan(math.exp(-0.5 * self.logsnr_min))

    def coefficients(self, t: Tensor) -> GaussianCoefficients:
        th = self.theta_max
        alpha, sigma = torch.cos(th * t), torch.sin(th * t)
        return GaussianCoefficients(alpha, sigma, -th * sigma, th * alpha, -2.0 * torch.log(torch.tan(th * t)))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return torch.atan(torch.exp(-0.5 * log_snr)) / self.theta_max
