r"""Parameterizations of categorical denoisers and the continuous-time ELBO.

For absorbing diffusion the negative ELBO of a sequence is (Sahoo et al., MDLM, 2024,
eq. 10; Shi et al., MD4, 2024)

.. math:: -\log p(x_0) \le \int_0^1 \frac{-\dot\alpha_t}{1-\alpha_t}\,
          \mathbb E_{x_t}\Big[\sum_{i: x_t^i = m} -\log p_\theta(x_0^i \mid x_t)\Big]\,dt,

so the per-token weight of the masked cross-entropy is :math:`w(t) = -\dot\alpha_t/(1-\alpha_t)`.
"""

from __future__ import annotations

import attrs
import torch
from diffusekit import CategoricalParameterization, Corrupted, Prepared, numeric
from diffusekit.numeric import Scalar
from torch import Tensor


def elbo_weight(coef) -> Scalar:
    r""":math:`w(t) = -\dot\alpha_t/(1 - \alpha_t)`, the weight of a masked token's cross-entropy in the ELBO."""
    return numeric.div(-coef.d_keep_probability, 1.0 - coef.keep_probability)


@attrs.frozen
class X0Logits(CategoricalParameterization):
    """Plain logits over the clean token; the loss is the cross-entropy of every token (the x0 loss of D3PM, Austin et al., 2021)."""


@attrs.frozen
class SUBS(CategoricalParameterization):
    r"""MDLM's substitution parameterization (Sahoo et al., 2024, Sec. 3.2), for absorbing processes.

    Zero probability on the mask token (its logit is −inf) and carry-over: a token
    already unmasked is predicted as itself. The loss is the continuous-time ELBO:
    :math:`w(t)\cdot(-\log p_\theta(x_0 \mid x_t))` on masked tokens, 0 on the others
    (:func:`elbo_weight`). ``mask_token = -1`` means the last class.
    """

    mask_token: int = -1

    def _mask(self, num_classes: int) -> int:
        return self.mask_token % num_classes

    def transform(self, raw: Tensor, prepared: Prepared) -> Tensor:
        k = raw.shape[-1]
        m = self._mask(k)
        logits = raw.float().clone()
        logits[..., m] = -torch.inf
        x = prepared.x
        carried = torch.full_like(logits, -torch.inf).scatter_(-1, x.clamp(0, k - 1).unsqueeze(-1), 0.0)
        return torch.where((x != m).unsqueeze(-1), carried, logits)

    def loss(self, raw: Tensor, prepared: Prepared, x0: Tensor, corrupted: Corrupted) -> Tensor:
        logits = self.transform(raw, prepared)
        masked = prepared.x == self._mask(raw.shape[-1])
        ce = -torch.log_softmax(logits, dim=-1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
        zero = torch.zeros_like(ce)
        return torch.where(masked, elbo_weight(prepared.context) * torch.where(masked, ce, zero), zero)
