r"""UniPC: a unified predictor-corrector framework (Zhao et al., "UniPC", NeurIPS 2023).

Data-prediction form with :math:`\lambda = \log(\alpha/\sigma)`. From a base point
:math:`(x, \lambda_0)` with prediction :math:`m_0` and earlier predictions :math:`m_{-k}` at
:math:`\lambda_{-k}`, step :math:`h = \lambda_s - \lambda_0`, :math:`r_k = (\lambda_{-k} - \lambda_0)/h`,
:math:`D_k = (m_{-k} - m_0)/r_k`:

.. math:: x_s = \frac{\sigma_s}{\sigma_0}x - \alpha_s\varphi_1(h)m_0 - \alpha_s B(h)\sum_k \rho_k D_k,
   \qquad \varphi_1 = e^{-h} - 1,

with :math:`B(h) = -h` (B1) or :math:`e^{-h} - 1` (B2) and :math:`\rho` solving the order
conditions :math:`R\rho = b` (Zhao et al., Alg. 1–2, Thm. 3.1). The predictor UniP uses
the earlier predictions; the corrector UniC, applied when the next evaluation arrives,
adds :math:`D_t = m_t - m_0` for the new point, raising the order by one at no extra
network evaluation.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
from attrs import validators as v
from diffusekit import Sampler, Step, numeric
from diffusekit.numeric import Scalar
from diffusekit.sampler import StepTimes
from torch import Tensor

from diffusekit_gaussian.dpm_solver import History, land_on_data, weighted
from diffusekit_gaussian.samplers import half_log_snr


def solve(matrix: list[list[Scalar]], rhs: list[Scalar]) -> list[Scalar]:
    """Cramer's rule for the 1×1 to 3×3 systems of UniPC (floats or elementwise tensors)."""
    n = len(rhs)
    if n == 1:
        return [numeric.div(rhs[0], matrix[0][0])]
    if n == 2:
        (a, b), (c, d) = matrix
        det = a * d - b * c
        return [numeric.div(rhs[0] * d - b * rhs[1], det), numeric.div(a * rhs[1] - rhs[0] * c, det)]
    if n == 3:

        def det3(m: list[list[Scalar]]) -> Scalar:
            return (
                m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
            )

        det = det3(matrix)
        out = []
        for j in range(3):
            replaced = [[rhs[i] if k == j else matrix[i][k] for k in range(3)] for i in range(3)]
            out.append(numeric.div(det3(replaced), det))
        return out
    raise ValueError(f"UniPC solves systems up to 3×3, got {n}")


def order_conditions(
    h: Scalar, rks: list[Scalar], variant: str
) -> tuple[list[list[Scalar]], list[Scalar], Scalar, Scalar]:
    """``R``, ``b``, ``phi_1`` and ``B(h)`` of UniPC for nodes ``rks`` (the last is 1, the new point)."""
    hh = -h
    phi_1 = numeric.expm1(hh)
    phi_k = numeric.div(phi_1, hh) - 1.0
    b_h = hh if variant == "bh1" else numeric.expm1(hh)
    factorial = 1.0
    rows, b = [], []
    for i in range(1, len(rks) + 1):
        rows.append([rk ** (i - 1) for rk in rks])
        b.append(numeric.div(phi_k * factorial, b_h))
        factorial *= i + 1
        phi_k = numeric.div(phi_k, hh) - 1.0 / factorial
    return rows, b, phi_1, b_h


def unipc_update(
    x: Tensor, c0, cs, m0: Tensor, lam0: Scalar, earlier: list[tuple[Scalar, Tensor]], new: Tensor | None, variant: str
) -> Tensor:
    """One UniP (``new is None``) or UniC (``new`` = prediction at the target) update of one part."""
    h = half_log_snr(cs) - lam0
    rks = [numeric.div(lam - lam0, h) for lam, _ in earlier]
    nodes = rks + [1.0]
    rows, b, phi_1, b_h = order_conditions(h, nodes, variant)
    if new is None:  # predictor: the earlier points only
        k = len(rks)
        rhos = [0.5] if k == 1 else solve([row[:k] for row in rows[:k]], b[:k]) if k else []
    else:  # corrector: earlier points and the new one
        k = len(nodes)
        rhos = [0.5] if k == 1 else solve([row[:k] for row in rows[:k]], b[:k])
    scale = -cs.alpha * b_h
    terms: list[tuple[Scalar, Tensor]] = [(numeric.div(cs.sigma, c0.sigma), x), (-cs.alpha * phi_1, m0)]
    weight_m0 = 0.0
    for rho, rk, (_, m) in zip(rhos, rks, earlier, strict=False):
        w = scale * numeric.div(rho, rk)
        terms.append((w, m))
        weight_m0 = weight_m0 - w
    if new is not None:
        w = scale * rhos[-1]
        terms.append((w, new))
        weight_m0 = weight_m0 - w
    terms.append((weight_m0, m0))
    return weighted(terms)


@attrs.frozen(eq=False)
class UniPCState:
    """What UniPC carries between steps: the previous base point and its predictions."""

    x: dict[str, Tensor]
    lam: dict[str, Scalar]
    coef: dict[str, Any]
    history: History
    order: int


@attrs.frozen
class UniPC(Sampler):
    r"""UniPC (Zhao et al., 2023): predictor UniP-p with corrector UniC-p (order p + 1).

    ``solver_order`` is the predictor's order (1–3); ``variant`` chooses B(h) (``bh2``, the
    paper's recommendation for few steps, or ``bh1``). As in the paper's code, the order
    is lowered for the first steps (not enough history) and, on plans of fewer than 15
    steps, for the last ones. One evaluation per step.
    """

    solver_order: int = attrs.field(default=2, validator=[v.ge(1), v.le(3)])
    variant: Literal["bh1", "bh2"] = "bh2"
    corrector: bool = True
    lower_order_final: bool = True

    @property
    def order(self) -> int:  # type: ignore[override]
        return self.solver_order + (1 if self.corrector else 0)

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry: UniPCState | None) -> Step:
        pred = denoiser(x, times.t_from, condition, times.c_from)
        m = {p: pred[p].x0 for p in x}
        lam = {p: half_log_snr(times.c_from[p]) for p in x}
        base = dict(x)
        if carry is not None and self.corrector:
            for p in x:
                earlier = [carry.history.entries[k][p] for k in range(1, min(carry.order, len(carry.history.entries)))]
                _, m_prev = carry.history.entries[0][p]
                corrected = unipc_update(
                    carry.x[p], carry.coef[p], times.c_from[p], m_prev, carry.lam[p], earlier, m[p], self.variant
                )
                base[p] = (
                    corrected if isinstance(lam[p], float) else torch.where(torch.isfinite(corrected), corrected, x[p])
                )
        history = (carry.history if carry is not None else History()).push({p: (lam[p], m[p]) for p in x}, 3)
        order = min(self.solver_order, len(history.entries))
        if self.lower_order_final and times.steps < 15:
            order = min(order, times.steps - times.index)
        out = {}
        for p in x:
            earlier = [history.entries[k][p] for k in range(1, order)]
            result = unipc_update(base[p], times.c_from[p], times.c_to[p], m[p], lam[p], earlier, None, self.variant)
            out[p] = land_on_data(times.c_to[p], m[p], result)
        return Step(out, pred, UniPCState(base, lam, dict(times.c_from), history, order))
