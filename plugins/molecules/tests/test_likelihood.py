"""The negative log-likelihood bound: invariances with an equivariant network, padding, and an exact oracle."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from diffusekit import ComponentSpec, PartSpec, Recipe, build
from diffusekit.recipe import SampleConfig
from diffusekit_molecules.likelihood import nll_bound
from diffusekit_molecules.state import ATOM_SCALE, MoleculeSize, encode, from_subspace, to_subspace
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = torch.float64
examples = settings(max_examples=20, deadline=None, derandomize=True)
WIDTH = 8


def denoiser(width: int = WIDTH):
    gaussian = dict(
        schedule=ComponentSpec("gaussian:vp_cosine"), parameterization=ComponentSpec("gaussian:eps"), time_dims=2
    )
    recipe = Recipe(
        parts={"pos": PartSpec(shape=(width - 1, 3), **gaussian), "atoms": PartSpec(shape=(width, 5), **gaussian)},
        network=ComponentSpec("molecules:egnn", {"width": 16, "layers": 2}),
        sampler=ComponentSpec("gaussian:ddim"),
        grid=ComponentSpec("uniform", {"steps": 4}),
        sample=SampleConfig(num=2, batch_size=2),
    )
    pipeline = build(recipe)
    network = pipeline.network.double()
    with torch.no_grad():  # an untrained network that does not output ~0
        for p in network.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=F64))
    return pipeline.denoiser


DENOISER = denoiser()


def molecules(sizes: list[int], width: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    real = torch.arange(width)[None, :] < torch.tensor(sizes)[:, None]
    atoms = torch.where(real, torch.randint(0, 5, (len(sizes), width), generator=g), -1)
    pos = (1.5 * torch.randn(len(sizes), width, 3, generator=g, dtype=F64)) * real[..., None]
    return atoms, pos


def draws(x: dict, seed: int):
    g = torch.Generator().manual_seed(seed)
    b = x["atoms"].shape[0]
    t = 1e-3 + (1 - 1e-3) * torch.rand(b, generator=g, dtype=F64)
    return t, {k: torch.randn(v.shape, generator=g, dtype=F64) for k, v in x.items()}


def orthogonal(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=F64))
    return q  # a rotation or a reflection


sizes_ = st.lists(st.integers(2, WIDTH), min_size=1, max_size=3)


@examples
@given(sizes_, st.integers(0, 2**16))
def test_the_bound_is_invariant_to_rotations_reflections_and_translations(sizes, seed):
    atoms, pos = molecules(sizes, WIDTH, seed)
    x, n = encode(atoms, pos, 5)
    size = MoleculeSize(n, max_atoms=WIDTH)
    t, noise = draws(x, seed + 1)
    q, shift = orthogonal(seed + 2), torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=F64)
    moved, _ = encode(atoms, (pos @ q.T + shift) * (atoms >= 0)[..., None], 5)
    turned = {"pos": noise["pos"] @ q.T, "atoms": noise["atoms"]}  # the same noise, rotated with the molecule
    with torch.no_grad():
        a = nll_bound(DENOISER, x, size, t=t, noise=noise)
        b = nll_bound(DENOISER, moved, size, t=t, noise=turned)
    for term in ("prior", "diffusion", "reconstruction"):
        assert torch.allclose(getattr(a, term), getattr(b, term), rtol=1e-9, atol=1e-9), term
    assert bool(torch.isfinite(a.total).all())


@examples
@given(st.integers(2, WIDTH), st.integers(0, 2**16))
def test_the_bound_is_invariant_to_permuting_the_atoms(n, seed):
    atoms, pos = molecules([n], WIDTH, seed)
    perm = torch.cat([torch.randperm(n, generator=torch.Generator().manual_seed(seed)), torch.arange(n, WIDTH)])
    x, sizes = encode(atoms, pos, 5)
    size = MoleculeSize(sizes, max_atoms=WIDTH)
    t, noise = draws(x, seed + 1)
    mask = (atoms >= 0)[0]
    x2, _ = encode(atoms[:, perm], pos[:, perm], 5)
    # the same noise, permuted: in positions, then back to subspace coordinates
    noise2 = {
        "pos": to_subspace(from_subspace(noise_free(noise["pos"], n))[:, perm], mask[perm][None]),
        "atoms": noise["atoms"][:, perm],
    }
    with torch.no_grad():
        a = nll_bound(DENOISER, x, size, t=t, noise=noise)
        b = nll_bound(DENOISER, x2, size, t=t, noise=noise2)
    assert torch.allclose(a.total, b.total, rtol=1e-9, atol=1e-9)


def noise_free(noise_pos: torch.Tensor, n: int) -> torch.Tensor:
    """The noise of a molecule of ``n`` atoms with the padding rows zeroed (they are not the molecule's)."""
    return noise_pos * (torch.arange(noise_pos.shape[1]) < n - 1)[None, :, None]


@examples
@given(st.integers(2, 6), st.integers(0, 2**16))
def test_padding_does_not_count(n, seed):
    """The same molecule padded to 6 or to 8 atoms, with other noise on the padding: the same bound."""
    atoms, pos = molecules([n], 6, seed)
    x, sizes = encode(atoms, pos, 5)
    t, noise = draws(x, seed + 1)
    wide_atoms = torch.cat([atoms, torch.full((1, 2), -1)], 1)
    wide_pos = torch.cat([pos, torch.zeros(1, 2, 3, dtype=F64)], 1)
    wide, _ = encode(wide_atoms, wide_pos, 5)
    _, wide_noise = draws(wide, seed + 7)
    wide_noise["pos"][:, :5] = noise["pos"]
    wide_noise["atoms"][:, :6] = noise["atoms"]
    with torch.no_grad():
        a = nll_bound(DENOISER, x, MoleculeSize(sizes, max_atoms=6), t=t, noise=noise)
        b = nll_bound(DENOISER, wide, MoleculeSize(sizes, max_atoms=8), t=t, noise=wide_noise)
    assert torch.allclose(a.total, b.total, rtol=1e-9, atol=1e-9)


class _Oracle:
    """The exact denoiser of a dataset of one molecule ``x``: its noise prediction is exact."""

    def __init__(self, x: dict, schedules) -> None:
        self.x, self.schedules = x, schedules

    def __call__(self, z, times, condition):
        out = {}
        for k, zk in z.items():
            c = self.schedules[k].coefficients(times[k].to(F64))
            a, s = c.alpha[..., None], c.sigma[..., None]
            eps = torch.where(s > 0, (zk - a * self.x[k]) / s.clamp(min=1e-300), 0.0)
            out[k] = SimpleNamespace(eps=eps)
        return out


@examples
@given(st.integers(2, WIDTH), st.integers(0, 2**16))
def test_for_one_molecule_and_its_exact_denoiser_the_bound_is_prior_plus_decoder(n, seed):
    """Oracle: the diffusion term vanishes; the prior is a sum of Gaussian KLs and the decoder terms
    are a Gaussian entropy (positions) and a softmax over Gaussian log-densities (types), computed
    here with torch.distributions."""
    atoms, pos = molecules([n], WIDTH, seed)
    x, sizes = encode(atoms, pos, 5)
    t, noise = draws(x, seed + 1)
    oracle = _Oracle(x, DENOISER.schedules)
    got = nll_bound(oracle, x, MoleculeSize(sizes, max_atoms=WIDTH), t=t, noise=noise)
    assert torch.allclose(got.diffusion, torch.zeros(1, dtype=F64), atol=1e-12)

    normal = torch.distributions.Normal
    one, t0 = torch.ones(1, dtype=F64), torch.full((1,), 1e-3, dtype=F64)
    prior = 0.0
    for k, rows in (("pos", n - 1), ("atoms", n)):
        c = DENOISER.schedules[k].coefficients(one)
        q = normal(c.alpha * x[k][0, :rows], c.sigma.expand_as(x[k][0, :rows]))
        prior += float(torch.distributions.kl_divergence(q, normal(0.0, 1.0)).sum())
    assert math.isclose(float(got.prior), prior, rel_tol=1e-9, abs_tol=1e-9)

    c = DENOISER.schedules["pos"].coefficients(t0)
    want = 3 * (n - 1) * float(normal(0.0, c.sigma / c.alpha).entropy())
    c = DENOISER.schedules["atoms"].coefficients(t0)
    z0 = (c.alpha * x["atoms"][0, :n] + c.sigma * noise["atoms"][0, :n]) / c.alpha
    centres = ATOM_SCALE * torch.eye(5, dtype=F64)
    log_density = normal(centres[None], (c.sigma / c.alpha)).log_prob(z0[:, None, :]).sum(-1)  # (n, 5)
    want -= float(torch.log_softmax(log_density, -1).gather(1, atoms[0, :n, None]).sum())
    assert math.isclose(float(got.reconstruction), want, rel_tol=1e-9, abs_tol=1e-9)


def test_the_bound_is_lower_with_the_exact_denoiser_than_with_an_untrained_one():
    atoms, pos = molecules([6], WIDTH, 0)
    x, sizes = encode(atoms, pos, 5)
    size = MoleculeSize(sizes, max_atoms=WIDTH)
    t, noise = draws(x, 1)
    with torch.no_grad():
        untrained = nll_bound(DENOISER, x, size, t=t, noise=noise)
    exact = nll_bound(_Oracle(x, DENOISER.schedules), x, size, t=t, noise=noise)
    assert float(untrained.diffusion) > 0.0
    assert float(exact.total) < float(untrained.total)
