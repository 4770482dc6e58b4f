"""Symmetry, masking and oracle tests of the equivariant denoisers (EGNN and EQGAT-style)."""

from __future__ import annotations

import copy
import functools
import math
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as fn
from diffusekit import ShapeError
from diffusekit_molecules.egnn import EGNN, EQGAT, EGNNConfig, EQGATConfig, edge_mask_of
from hypothesis import given, settings
from hypothesis import strategies as st

F_IN, F_OUT, E_IN, E_OUT = 5, 4, 3, 2

CONFIGS = {
    "egnn": EGNNConfig(
        in_features=F_IN,
        out_features=F_OUT,
        edge_in_features=E_IN,
        edge_out_features=E_OUT,
        width=16,
        layers=2,
        sublayers=2,
        normalization_factor=3.0,
    ),
    "egnn_sin": EGNNConfig(
        in_features=F_IN, out_features=F_OUT, width=16, layers=2, sin_embedding=True, attention=False
    ),
    "eqgat": EQGATConfig(
        in_features=F_IN,
        out_features=F_OUT,
        edge_in_features=E_IN,
        edge_out_features=E_OUT,
        width=16,
        vector_width=6,
        edge_width=5,
        layers=3,
    ),
    "eqgat_noedge": EQGATConfig(in_features=F_IN, out_features=F_OUT, width=16, vector_width=6, edge_width=5, layers=2),
}
NAMES = list(CONFIGS)
PROFILE = settings(max_examples=25, deadline=None)


def has_edges_in(name: str) -> bool:
    return CONFIGS[name].edge_in_features > 0


@functools.cache
def net(name: str) -> torch.nn.Module:
    """A float64 module with every parameter perturbed (the near-zero coordinate head included)."""
    with torch.random.fork_rng():
        torch.manual_seed(NAMES.index(name))
        module = CONFIGS[name].build().double()
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return module.eval()


class Mol(NamedTuple):
    pos: torch.Tensor
    h: torch.Tensor
    mask: torch.Tensor
    edges: torch.Tensor
    seed: int


@st.composite
def molecules(draw) -> Mol:
    """1-3 molecules of 1-8 real atoms at random rows, 0-4 extra padding rows, coordinates of a few Å."""
    b = draw(st.integers(1, 3))
    n_real = [draw(st.integers(1, 8)) for _ in range(b)]
    n = max(n_real) + draw(st.integers(0, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, n, dtype=torch.bool)
    for k, r in enumerate(n_real):
        mask[k, torch.randperm(n, generator=g)[:r]] = True
    pos = 2.0 * torch.randn(b, n, 3, generator=g, dtype=torch.float64)
    h = torch.randn(b, n, F_IN, generator=g, dtype=torch.float64)
    edges = torch.randn(b, n, n, E_IN, generator=g, dtype=torch.float64)
    return Mol(pos, h, mask, edges, seed)


def call(name: str, pos, h, mask, edges):
    return net(name)(pos, h, mask, edges if has_edges_in(name) else None)


def orthogonal(g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.rand((), generator=g) < 0.5:
        q = q @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))  # a reflection
    return q


def close(a: torch.Tensor | None, b: torch.Tensor | None, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    scale = max(1.0, a.abs().max().item() if a.numel() else 1.0)
    return torch.allclose(a, b, rtol=0.0, atol=tol * scale)


@pytest.mark.parametrize("name", NAMES)
@PROFILE
@given(mol=molecules())
def test_e3_equivariance_and_translation_invariance(name, mol):
    g = torch.Generator().manual_seed(mol.seed + 1)
    q = orthogonal(g)
    shift = 5.0 * torch.randn(3, generator=g, dtype=torch.float64)
    pos_out, h_out, edge_out = call(name, mol.pos, mol.h, mol.mask, mol.edges)
    pos_r, h_r, edge_r = call(name, mol.pos @ q.T + shift, mol.h, mol.mask, mol.edges)
    assert close(pos_r, pos_out @ q.T)
    assert close(h_r, h_out)
    assert close(edge_r, edge_out)


@pytest.mark.parametrize("name", NAMES)
@PROFILE
@given(mol=molecules())
def test_permutation_equivariance(name, mol):
    n = mol.mask.shape[1]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(mol.seed + 2))
    pos_out, h_out, edge_out = call(name, mol.pos, mol.h, mol.mask, mol.edges)
    edges_p = mol.edges[:, perm][:, :, perm]
    pos_p, h_p, edge_p = call(name, mol.pos[:, perm], mol.h[:, perm], mol.mask[:, perm], edges_p)
    assert close(pos_p, pos_out[:, perm])
    assert close(h_p, h_out[:, perm])
    assert close(edge_p, None if edge_out is None else edge_out[:, perm][:, :, perm])


@pytest.mark.parametrize("name", NAMES)
@PROFILE
@given(mol=molecules())
def test_padding_never_reaches_real_atoms(name, mol):
    g = torch.Generator().manual_seed(mol.seed + 3)
    pad = ~mol.mask
    emask = edge_mask_of(mol.mask)
    pos_out, h_out, edge_out = call(name, mol.pos, mol.h, mol.mask, mol.edges)
    # padding outputs are exactly 0; the vector output has zero mean over the real atoms
    assert torch.all(pos_out[pad] == 0) and torch.all(h_out[pad] == 0)
    if edge_out is not None:
        assert torch.all(edge_out[~emask] == 0)
        assert close(edge_out, edge_out.transpose(1, 2))
    assert close(pos_out.sum(1), torch.zeros_like(pos_out[:, 0]))
    # garbage (NaN, inf, huge values) in padding rows and non-edges: real outputs bit-identical
    garbage = torch.tensor([math.nan, math.inf, -math.inf, 1e30], dtype=torch.float64)
    pick = lambda shape: garbage[torch.randint(0, 4, shape, generator=g)]  # noqa: E731
    pos2 = torch.where(pad[..., None], pick(mol.pos.shape), mol.pos)
    h2 = torch.where(pad[..., None], pick(mol.h.shape), mol.h)
    edges2 = torch.where(emask[..., None], mol.edges, pick(mol.edges.shape))
    pos_2, h_2, edge_2 = call(name, pos2, h2, mol.mask, edges2)
    assert torch.equal(pos_2, pos_out) and torch.equal(h_2, h_out)
    assert (edge_2 is None and edge_out is None) or torch.equal(edge_2, edge_out)
    # extra padding rows: real outputs unchanged (up to summation order)
    b, n = mol.mask.shape
    extra = int(torch.randint(1, 4, (), generator=g))
    cat = lambda x, y: torch.cat([x, y], dim=1)  # noqa: E731
    pos3 = cat(mol.pos, torch.randn(b, extra, 3, generator=g, dtype=torch.float64))
    h3 = cat(mol.h, torch.randn(b, extra, F_IN, generator=g, dtype=torch.float64))
    mask3 = cat(mol.mask, torch.zeros(b, extra, dtype=torch.bool))
    edges3 = torch.randn(b, n + extra, n + extra, E_IN, generator=g, dtype=torch.float64)
    edges3[:, :n, :n] = mol.edges
    pos_3, h_3, edge_3 = call(name, pos3, h3, mask3, edges3)
    assert close(pos_3[:, :n], pos_out) and close(h_3[:, :n], h_out)
    assert close(None if edge_3 is None else edge_3[:, :n, :n], edge_out)
    assert torch.all(pos_3[:, n:] == 0) and torch.all(h_3[:, n:] == 0)


@pytest.mark.parametrize("name", NAMES)
def test_outputs_are_non_trivial(name):
    g = torch.Generator().manual_seed(7)
    b, n = 2, 6
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 4:] = False
    pos = 2.0 * torch.randn(b, n, 3, generator=g, dtype=torch.float64)
    h = torch.randn(b, n, F_IN, generator=g, dtype=torch.float64)
    edges = torch.randn(b, n, n, E_IN, generator=g, dtype=torch.float64)
    pos_out, h_out, edge_out = call(name, pos, h, mask, edges)
    assert pos_out[mask].abs().min() > 1e-4
    assert h_out[mask].std(0).min() > 1e-3  # varies over atoms
    if edge_out is not None:
        assert edge_out[edge_mask_of(mask)].std(0).min() > 1e-3
    # the outputs depend on the positions beyond their centre
    pos_out2, h_out2, _ = call(name, pos * 1.3, h, mask, edges)
    assert (pos_out2 - pos_out).abs().max() > 1e-4 and (h_out2 - h_out).abs().max() > 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_single_atom_and_all_padding_are_finite(name, dtype):
    module = net(name).to(dtype)
    try:
        b, n = 3, 4
        mask = torch.zeros(b, n, dtype=torch.bool)
        mask[0, 2] = True  # one atom
        mask[2, :] = True  # a full molecule; molecule 1 is all padding
        pos = (3.0 * torch.randn(b, n, 3, dtype=dtype)).requires_grad_()
        h = torch.randn(b, n, F_IN, dtype=dtype).requires_grad_()
        edges = torch.randn(b, n, n, E_IN, dtype=dtype) if has_edges_in(name) else None
        pos_out, h_out, edge_out = module(pos, h, mask, edges)
        outs = [pos_out, h_out] + ([edge_out] if edge_out is not None else [])
        assert all(torch.isfinite(o).all() for o in outs)
        assert torch.all(pos_out[0] == 0)  # one atom: zero-mean vector is 0
        assert torch.all(pos_out[1] == 0) and torch.all(h_out[1] == 0)
        sum(o.square().sum() for o in outs).backward()
        grads = [pos.grad, h.grad] + [p.grad for p in module.parameters() if p.grad is not None]
        assert all(torch.isfinite(gr).all() for gr in grads)
    finally:
        module.zero_grad(set_to_none=True)
        module.double()


def test_egnn_oracle_two_atoms():
    """One block, one sub-layer, two atoms (plus a padding row): the EDM equations written out by hand."""
    cfg = EGNNConfig(
        in_features=3, out_features=2, width=4, layers=1, sublayers=1, normalization_factor=2.0, coords_range=7.0
    )
    with torch.random.fork_rng():
        torch.manual_seed(3)
        module = cfg.build().double()
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.5 * torch.randn_like(p))
    g = torch.Generator().manual_seed(11)
    pos = torch.randn(1, 3, 3, generator=g, dtype=torch.float64)
    h = torch.randn(1, 3, 3, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, False, True]])
    pos_out, h_out, edge_out = module(pos, h, mask)
    assert edge_out is None

    block = module.blocks[0]
    gcl = block.gcls[0]
    x = [pos[0, 0], pos[0, 2]]
    h0 = [module.embedding(h[0, 0]), module.embedding(h[0, 2])]
    d2 = ((x[0] - x[1]) ** 2).sum()
    ef = torch.stack([d2, d2])  # squared distance at the block input and at the network input

    def message(i: int, j: int) -> torch.Tensor:
        z = fn.linear(torch.cat([h0[i], h0[j], ef]), gcl.edge_in.weight, gcl.edge_in.bias)
        m = fn.silu(gcl.edge_out(fn.silu(z)))
        return m * torch.sigmoid(gcl.att(m))

    h1 = [h0[i] + gcl.node_mlp(torch.cat([h0[i], message(i, 1 - i) / 2.0])) for i in range(2)]
    new_x = []
    for i in range(2):
        j = 1 - i
        z = fn.linear(torch.cat([h1[i], h1[j], ef]), block.coord_in.weight, block.coord_in.bias)
        w = block.coord_out(fn.silu(block.coord_mid(fn.silu(z))))
        step = (x[i] - x[j]) / (torch.sqrt(d2 + 1e-8) + 1.0) * torch.tanh(w) * 7.0 / 2.0
        new_x.append(x[i] + step)
    vel = torch.stack([new_x[0] - x[0], new_x[1] - x[1]])
    vel = vel - vel.mean(0)
    expected_h = torch.stack([module.embedding_out(h1[0]), module.embedding_out(h1[1])])

    assert vel.abs().max() > 1e-3
    torch.testing.assert_close(pos_out[0, [0, 2]], vel, rtol=0, atol=1e-12)
    torch.testing.assert_close(h_out[0, [0, 2]], expected_h, rtol=0, atol=1e-12)
    assert torch.all(pos_out[0, 1] == 0) and torch.all(h_out[0, 1] == 0)


def test_eqgat_two_atoms_vector_along_bond():
    """Two atoms: every equivariant quantity lies on the bond axis, so pos_out = (+u, -u) along it."""
    module = net("eqgat_noedge")
    pos = torch.tensor([[[0.3, -1.0, 2.0], [1.1, 0.4, 0.5]]], dtype=torch.float64)
    h = torch.randn(1, 2, F_IN, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    pos_out, _, edge_out = module(pos, h, torch.ones(1, 2, dtype=torch.bool))
    assert edge_out is None
    axis = pos[0, 0] - pos[0, 1]
    assert torch.linalg.cross(pos_out[0, 0], axis, dim=0).abs().max() < 1e-12
    torch.testing.assert_close(pos_out[0, 0], -pos_out[0, 1], rtol=0, atol=1e-12)
    assert pos_out.abs().max() > 1e-4


@pytest.mark.parametrize(
    "config",
    [
        EGNNConfig(in_features=9, out_features=6, edge_in_features=4, edge_out_features=4),
        EQGATConfig(in_features=9, out_features=6, edge_in_features=4, edge_out_features=4),
    ],
    ids=["egnn", "eqgat"],
)
def test_float32_close_to_float64_on_29_atoms(config):
    """Default-sized, default-initialised networks on a 29-atom molecule with coordinates of +-5 Å."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m32 = config.build()
    m64 = copy.deepcopy(m32).double()
    g = torch.Generator().manual_seed(1)
    b, n = 2, 29
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 20:] = False
    pos = 10.0 * torch.rand(b, n, 3, generator=g, dtype=torch.float64) - 5.0
    h = torch.randn(b, n, 9, generator=g, dtype=torch.float64)
    edges = torch.randn(b, n, n, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out64 = m64(pos, h, mask, edges)
        out32 = m32(pos.float(), h.float(), mask, edges.float())
        q = orthogonal(g)
        rot32 = m32((pos @ q.T + 3.0).float(), h.float(), mask, edges.float())
    for a, b_ in zip(out32, out64, strict=True):
        assert torch.isfinite(a).all()
        scale = b_.abs().max().item()
        assert scale > 0
        assert (a.double() - b_).abs().max().item() <= 1e-3 * max(scale, 1e-3)
    assert (rot32[0].double() - out32[0].double() @ q.T).abs().max().item() <= 1e-3 * max(
        out32[0].abs().max().item(), 1e-3
    )


def test_shape_errors():
    module = net("egnn")
    pos, h = torch.zeros(1, 3, 3, dtype=torch.float64), torch.zeros(1, 3, F_IN, dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ShapeError):
        module(pos, h, mask, None)  # edge features required
    with pytest.raises(ShapeError):
        net("egnn_sin")(pos, h, mask, torch.zeros(1, 3, 3, E_IN, dtype=torch.float64))
    with pytest.raises(ShapeError):
        module(pos, h, mask.float(), torch.zeros(1, 3, 3, E_IN, dtype=torch.float64))
    with pytest.raises(ValueError):
        EQGATConfig(in_features=0, out_features=1)


def test_build_types():
    assert isinstance(CONFIGS["egnn"].build(), EGNN)
    assert isinstance(CONFIGS["eqgat"].build(), EQGAT)


def test_edge_mask_excludes_self_loops_and_padding():
    mask = torch.tensor([[True, False, True, True]])
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 1], [1, 0, 1, 0]], dtype=torch.bool)
    assert torch.equal(edge_mask_of(mask)[0], expected)
