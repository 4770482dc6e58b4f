r"""A variational bound on the negative log-likelihood of molecules (nats per molecule).

For a Gaussian diffusion :math:`z_t = \alpha_t x + \sigma_t \varepsilon` with log-SNR
:math:`\lambda_t`, continuous time gives (Kingma et al., 2021, "Variational Diffusion Models",
eq. 17; EDM's appendix uses its discrete form)

.. math::

    -\log p(x) \le \underbrace{\mathrm{KL}\big(q(z_1 \mid x)\,\|\,\mathcal N(0, I)\big)}_{\text{prior}}
    + \underbrace{\tfrac12 \int_{t_0}^{1} -\lambda'_t\, \lVert \varepsilon - \hat\varepsilon(z_t, t)\rVert^2 \, dt}_{\text{diffusion}}
    + \underbrace{\mathbb E\big[-\log p(x \mid z_{t_0})\big]}_{\text{reconstruction}} .

The diffusion term is estimated with one time :math:`t \sim U(t_0, 1)` per molecule, shared by
both parts as in training. The sums run over a molecule's own dimensions only: the
:math:`3(n - 1)` subspace coordinates of its positions (EDM's zero-centre-of-mass correction,
automatic in subspace coordinates) and its :math:`n` atom-type vectors; padding is known and
contributes nothing. Positions are continuous, decoded by :math:`\mathcal N(x; z_{t_0}/\alpha_{t_0},
\sigma_{t_0}^2/\alpha_{t_0}^2)` (a density, in nats per Ångström³); atom types are discrete,
decoded by a softmax over the types of :math:`-\lVert z_{t_0}/\alpha_{t_0} - s\,e_k\rVert^2 /
(2\sigma_{t_0}^2/\alpha_{t_0}^2)`. Every term is invariant to rotations and reflections of the
positions when the denoiser is equivariant, and to translations by construction.
"""

from __future__ import annotations

import math

import attrs
import torch
from diffusekit import ShapeError
from torch import Tensor

from diffusekit_molecules.state import ATOM_SCALE, MoleculeSize, padding


@attrs.frozen
class Bound:
    """The bound per molecule ``(B,)`` (``total``) and its terms, in nats."""

    prior: Tensor
    diffusion: Tensor
    reconstruction: Tensor

    @property
    def total(self) -> Tensor:
        return self.prior + self.diffusion + self.reconstruction


def _coefficients(schedule, t: Tensor):
    c = schedule.coefficients(t)
    return c.alpha, c.sigma, 2.0 * (c.d_alpha / c.alpha - c.d_sigma / c.sigma)


def nll_bound(
    denoiser,
    x: dict[str, Tensor],
    size: MoleculeSize,
    *,
    t: Tensor | None = None,
    noise: dict[str, Tensor] | None = None,
    generator: torch.Generator | None = None,
    t0: float = 1e-3,
) -> Bound:
    """One-sample estimate of the bound for molecules ``x`` (``pos`` ``(B, N - 1, 3)``, ``atoms``
    ``(B, N, types)`` as :func:`~diffusekit_molecules.state.encode` makes them) of sizes ``size``.

    ``t`` ``(B,)`` in ``[t0, 1]`` and ``noise`` (per part, the shapes of ``x``) are drawn from
    ``generator`` unless given; given the same ones, rotated data with rotated position noise
    gives the same bound (the property the tests check).
    """
    if sorted(x) != ["atoms", "pos"]:
        raise ShapeError(f"the bound is for molecule states with parts 'pos' and 'atoms', got {sorted(x)}")
    pos, atoms = x["pos"], x["atoms"]
    b, n, types = atoms.shape
    if tuple(pos.shape) != (b, n - 1, 3) or size.batch_size != b or size.max_atoms != n:
        raise ShapeError(f"pos {tuple(pos.shape)}, atoms {tuple(atoms.shape)} and {size.batch_size} sizes do not fit")
    dtype, device = pos.dtype, pos.device
    if t is None:
        t = t0 + (1.0 - t0) * torch.rand(b, generator=generator, dtype=torch.float64).to(device)
    if noise is None:
        noise = {k: torch.randn(v.shape, generator=generator, dtype=v.dtype).to(device) for k, v in x.items()}
    known = padding(size.num_atoms.to(device), n)
    free = {k: (~m)[..., None].to(dtype) for k, m in known.items()}
    noise = {k: noise[k] * free[k] for k in x}

    schedules = denoiser.schedules
    t = t.to(torch.float64)
    coef = {k: _coefficients(schedules[k], t) for k in x}
    times = {k: torch.where(known[k], 0.0, t.to(dtype)[:, None]) for k in x}
    z = {
        k: torch.where(
            known[k][..., None],
            x[k],
            coef[k][0].to(dtype)[:, None, None] * x[k] + coef[k][1].to(dtype)[:, None, None] * noise[k],
        )
        for k in x
    }
    predicted = denoiser(z, times, size)
    diffusion = torch.zeros(b, dtype=torch.float64, device=device)
    for k in x:
        err = ((noise[k] - predicted[k].eps * free[k]) ** 2).sum((1, 2)).double()
        diffusion = diffusion + 0.5 * (1.0 - t0) * (-coef[k][2]) * err

    one = torch.ones(b, dtype=torch.float64, device=device)
    prior = torch.zeros(b, dtype=torch.float64, device=device)
    for k in x:
        alpha1, sigma1, _ = _coefficients(schedules[k], one)
        dims = free[k].sum((1, 2)).double() * x[k].shape[-1]
        sq = (x[k].double() ** 2).sum((1, 2))
        prior = prior + 0.5 * (alpha1**2 * sq + dims * (sigma1**2 - 1.0 - torch.log(sigma1**2)))

    start = torch.full((b,), t0, dtype=torch.float64, device=device)
    reconstruction = torch.zeros(b, dtype=torch.float64, device=device)
    # positions: E[-log N(x; z/alpha, (sigma/alpha)^2)] in closed form, the error being -(sigma/alpha) eps
    alpha0, sigma0, _ = _coefficients(schedules["pos"], start)
    dims = free["pos"].sum((1, 2)).double() * 3
    var = (sigma0 / alpha0) ** 2
    reconstruction = reconstruction + 0.5 * dims * (torch.log(2 * math.pi * var) + 1.0)
    # atom types: a softmax decoder over the types at z_{t0} = alpha x + sigma eps
    alpha0, sigma0, _ = _coefficients(schedules["atoms"], start)
    estimate = (alpha0[:, None, None] * atoms.double() + sigma0[:, None, None] * noise["atoms"].double()) / alpha0[
        :, None, None
    ]
    centres = ATOM_SCALE * torch.eye(types, dtype=torch.float64, device=device)
    logits = -((estimate[:, :, None, :] - centres) ** 2).sum(-1) / (2 * ((sigma0 / alpha0) ** 2)[:, None, None])
    log_p = torch.log_softmax(logits, -1)
    true = atoms.argmax(-1)
    picked = log_p.gather(-1, true[..., None])[..., 0]
    reconstruction = reconstruction - (picked * free["atoms"][..., 0].double()).sum(1)
    return Bound(prior=prior, diffusion=diffusion, reconstruction=reconstruction)


__all__ = ["Bound", "nll_bound"]
