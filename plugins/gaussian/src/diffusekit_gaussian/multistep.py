r"""Linear multistep solvers of the probability-flow ODE in EDM variables.

In :math:`\tilde x = x/\alpha` and :math:`\rho = \tilde\sigma = \sigma/\alpha` the ODE is
:math:`d\tilde x/d\rho = \hat\varepsilon` (Karras et al., 2022), so
:math:`\tilde x_s = \tilde x_t + \int_{\rho_t}^{\rho_s}\hat\varepsilon\,d\rho`. The solvers
replace :math:`\hat\varepsilon` on the step by a combination of the current and earlier
predictions :math:`\hat\varepsilon_j`:

* LMS — the Lagrange polynomial through the :math:`(\rho_j, \hat\varepsilon_j)`, integrated
  exactly (k-diffusion's ``sample_lms``; ρAB-DEIS of Zhang & Chen, 2023);
* DEIS — the Lagrange polynomial in :math:`\log\rho` (the log-ρ exponential integrator of
  Zhang & Chen, "Fast Sampling of Diffusion Models with Exponential Integrator", 2023);
* iPNDM — the fixed Adams–Bashforth weights of the improved PNDM (Zhang & Chen, 2023,
  after Liu et al., "Pseudo Numerical Methods", 2022).

The current point enters through :math:`\tilde x_t = \hat x_0 + \rho_t\hat\varepsilon_0`,
which keeps the update finite where :math:`\alpha_t = 0`. The step to the data
(:math:`\rho_s = 0`) returns :math:`\hat x_0`, and the first steps use the lower orders
their history allows.
"""

from __future__ import annotations

import attrs
import numpy
import torch
from attrs import validators as v
from diffusekit import Sampler, Step, numeric
from diffusekit.numeric import Scalar
from diffusekit.sampler import StepTimes

from diffusekit_gaussian.dpm_solver import History, land_on_data, weighted

# Gauss–Legendre nodes and weights on [0, 1] (exact for polynomials of degree < 24)
_nodes, _weights = numpy.polynomial.legendre.leggauss(12)
_GL_X = [(float(a) + 1.0) / 2.0 for a in _nodes]
_GL_W = [float(w) / 2.0 for w in _weights]


def lagrange_at(nodes: list[Scalar], j: int, point: Scalar) -> Scalar:
    """The j-th Lagrange basis polynomial of ``nodes`` at ``point``."""
    out: Scalar = 1.0
    for m, node in enumerate(nodes):
        if m != j:
            out = out * numeric.div(point - node, nodes[j] - node)
    return out


def lagrange_integrals(nodes: list[Scalar], kernel_rate: Scalar | None = None) -> list[Scalar]:
    r""":math:`\int_0^1 L_j(\tau)\,e^{a\tau}d\tau` for each basis polynomial (``a = kernel_rate``; none: :math:`e^0`).

    The nodes are in the normalised variable τ of the step (0 at t, 1 at s), which
    keeps the sums well conditioned in float32 too.
    """
    out = []
    for j in range(len(nodes)):
        if kernel_rate is None and len(nodes) <= 4:
            out.append(_polynomial_integral(nodes, j))
            continue
        total: Scalar = 0.0
        for x, w in zip(_GL_X, _GL_W, strict=True):
            term = lagrange_at(nodes, j, x) * w
            total = total + (term if kernel_rate is None else term * numeric.exp(kernel_rate * x))
        out.append(total)
    return out


def _polynomial_integral(nodes: list[Scalar], j: int) -> Scalar:
    """:math:`\\int_0^1 L_j` from the polynomial's coefficients (ascending)."""
    coeffs: list[Scalar] = [1.0]
    for m, node in enumerate(nodes):
        if m == j:
            continue
        scale = numeric.div(1.0, nodes[j] - node)
        shifted: list[Scalar] = [0.0] * (len(coeffs) + 1)
        for k, c in enumerate(coeffs):  # multiply by (tau - node) * scale
            shifted[k + 1] = shifted[k + 1] + c * scale
            shifted[k] = shifted[k] - c * node * scale
        coeffs = shifted
    return sum((c / (k + 1) for k, c in enumerate(coeffs)), 0.0)


def _eps_update(pred, c_t, c_s, current_weight: Scalar, earlier: list[tuple[Scalar, torch.Tensor]]) -> torch.Tensor:
    """:math:`\\alpha_s(\\hat x_0 + (\\rho_t + w_0)\\hat\\varepsilon_0 + \\sum_j w_j\\hat\\varepsilon_j)`.

    Alone, the current point has :math:`\\rho_t + w_0 = \\rho_s` exactly (first order, also
    where :math:`\\rho_t = \\infty`).
    """
    coefficient = c_s.sigma_tilde if not earlier else c_t.sigma_tilde + current_weight
    head = pred.mix(c_s.alpha, c_s.alpha * coefficient)
    return weighted([(1.0, head)] + [(c_s.alpha * w, eps) for w, eps in earlier]) if earlier else head


class _EpsMultistep(Sampler):
    """Shared loop: history of (rho, eps) per part, newest first; subclasses give ``solver_order`` and ``weights``."""

    solver_order: int

    def weights(self, rho: list[Scalar], c_t, c_s) -> list[Scalar]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def order(self) -> int:  # type: ignore[override]
        return self.solver_order

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        history = carry or History()
        pred = denoiser(x, times.t_from, condition, times.c_from)
        out, entry = {}, {}
        for p in x:
            c_t, c_s, pr = times.c_from[p], times.c_to[p], pred[p]
            eps = pr.eps
            rho_t = c_t.sigma_tilde
            entry[p] = (rho_t, eps)
            order = min(self.solver_order, 1 + len(history.entries))
            earlier = [history.entries[k][p] for k in range(order - 1)]
            w = self.weights([rho_t] + [r for r, _ in earlier], c_t, c_s)
            result = _eps_update(pr, c_t, c_s, w[0], list(zip(w[1:], [e for _, e in earlier], strict=True)))
            out[p] = land_on_data(c_s, pr.x0, result)
        return Step(out, pred, history.push(entry, self.solver_order - 1))


@attrs.frozen
class LMS(_EpsMultistep):
    r"""Linear multistep (k-diffusion's ``sample_lms``; ρAB-DEIS of Zhang & Chen, 2023): Lagrange polynomial of :math:`\hat\varepsilon` in ρ, integrated exactly.

    Order ``solver_order`` (1–4), one evaluation per step.
    """

    solver_order: int = attrs.field(default=4, validator=[v.ge(1), v.le(4)])

    def weights(self, rho, c_t, c_s):
        step = c_s.sigma_tilde - c_t.sigma_tilde
        nodes = [numeric.div(r - rho[0], step) for r in rho]
        return [step * w for w in lagrange_integrals(nodes)]


@attrs.frozen
class DEIS(_EpsMultistep):
    r"""DEIS (Zhang & Chen, 2023) with the polynomial in :math:`u = \log\rho` (diffusers' ``logrho``).

    :math:`w_j = \int_{u_t}^{u_s} L_j(u)e^u du`, by Gauss–Legendre quadrature in the
    step's normalised variable. Order ``solver_order`` (1–3), one evaluation per step.
    """

    solver_order: int = attrs.field(default=3, validator=[v.ge(1), v.le(3)])

    def weights(self, rho, c_t, c_s):
        u = [numeric.log(r) for r in rho]
        du = 0.5 * (c_t.log_snr - c_s.log_snr)  # log rho_s - log rho_t
        nodes = [numeric.div(ui - u[0], du) for ui in u]
        return [du * rho[0] * w for w in lagrange_integrals(nodes, kernel_rate=du)]


_AB = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@attrs.frozen
class IPNDM(_EpsMultistep):
    r"""iPNDM (Zhang & Chen, 2023, App. D.3): Adams–Bashforth weights of order ``solver_order`` on :math:`\hat\varepsilon`, warming up from order 1.

    :math:`\tilde x_s = \tilde x_t + (\rho_s - \rho_t)\sum_j c_j\hat\varepsilon_j` with the
    constant-step coefficients (e.g. 55/24, −59/24, 37/24, −9/24). The weights ignore the
    ratios of unequal steps, so on the usual grids (Karras, log-SNR) it converges at
    order 2 (measured), though it is very accurate at small NFE. One evaluation per step.
    """

    solver_order: int = attrs.field(default=4, validator=[v.ge(1), v.le(4)])

    @property
    def order(self) -> int:  # type: ignore[override]
        return min(self.solver_order, 2)

    def weights(self, rho, c_t, c_s):
        step = c_s.sigma_tilde - c_t.sigma_tilde
        return [step * c for c in _AB[len(rho)]]
