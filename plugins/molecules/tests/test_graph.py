"""EQGAT-diff's state: bonds as the upper triangle, charges, the network on it, the qm9-bonds method."""

from __future__ import annotations

import attrs
import numpy as np
import torch
from diffusekit import ComponentSpec, build, train
from diffusekit_molecules import methods, qm9
from diffusekit_molecules.datasets import QM9Dataset
from diffusekit_molecules.networks import EGNNDenoiser, EQGATDenoiser
from diffusekit_molecules.state import (
    BOND_ORDERS,
    MoleculeSize,
    decode_graph,
    encode_graph,
    from_pairs,
    from_subspace,
    graph_padding,
    pair_count,
    to_pairs,
)
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = torch.float64
examples = settings(max_examples=20, deadline=None, derandomize=True)


@examples
@given(st.integers(2, 9), st.integers(1, 3), st.integers(0, 2**16))
def test_pairs_hold_a_symmetric_matrix_whole(n, batch, seed):
    g = torch.Generator().manual_seed(seed)
    pairs = torch.randint(0, 4, (batch, pair_count(n)), generator=g)
    matrix = from_pairs(pairs, n)
    assert torch.equal(matrix, matrix.transpose(1, 2)) and bool((torch.diagonal(matrix, dim1=1, dim2=2) == 0).all())
    assert torch.equal(to_pairs(matrix), pairs)
    assert to_pairs(matrix).shape == (batch, n * (n - 1) // 2)


def graphs(sizes: list[int], width: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    real = torch.arange(width)[None] < torch.tensor(sizes)[:, None]
    atoms = torch.where(real, torch.randint(0, 5, (len(sizes), width), generator=g), -1)
    pos = torch.randn(len(sizes), width, 3, generator=g, dtype=F64) * real[..., None]
    charges = torch.where(real, torch.randint(-1, 2, (len(sizes), width), generator=g), 0)
    orders = torch.triu(torch.randint(0, BOND_ORDERS, (len(sizes), width, width), generator=g), 1)
    orders = (orders + orders.transpose(1, 2)) * (real[:, :, None] & real[:, None, :])
    return atoms, pos, charges, orders


@examples
@given(st.lists(st.integers(1, 7), min_size=1, max_size=3), st.integers(0, 2**16))
def test_graphs_encode_and_decode_with_padding_known(sizes, seed):
    width = 7
    atoms, pos, charges, orders = graphs(sizes, width, seed)
    parts, n = encode_graph(atoms, pos, charges, orders)
    known = graph_padding(n, width)
    for name in ("charges", "bonds"):
        assert bool((parts[name][known[name]] == 0).all())
    # a pair is padding exactly when one of its atoms is
    pair_real = to_pairs((atoms >= 0)[:, :, None] & (atoms >= 0)[:, None, :])
    assert torch.equal(known["bonds"], ~pair_real)
    a, p, c, o = decode_graph(parts, n)
    assert torch.equal(a, atoms) and torch.equal(c, charges) and torch.equal(o, orders)
    mask = atoms >= 0
    centred = pos - (pos * mask[..., None]).sum(1, keepdim=True) / mask.sum(1)[:, None, None]
    assert torch.allclose(p, centred * mask[..., None], atol=1e-9)


def test_the_graph_dataset_holds_rdkits_bonds_and_charges():
    dataset = QM9Dataset(split="valid", limit=12, atoms="graph")
    data = dataset.load()
    raw = qm9.load_qm9()
    table = qm9.bond_matrices(raw, dataset.indices())
    atoms, _, charges, orders = decode_graph(data.parts, data.condition.num_atoms)
    kept = table.ok
    assert torch.equal(orders, torch.from_numpy(table.orders[kept]).long())
    assert torch.equal(charges, torch.from_numpy(table.formal_charges[kept]).long())
    assert torch.equal(atoms, torch.from_numpy(raw.atoms[dataset.indices()[kept]]))


def test_the_shipped_frequencies_match_the_training_data():
    """Shares over 5,000 random molecules of the training split (the shipped ones are the whole
    split's; a sample of 5,000 is within 0.005 of them)."""
    raw = qm9.load_qm9()
    index = np.sort(np.random.default_rng(0).choice(qm9.split_indices()["train"], 5000, replace=False))
    table = qm9.bond_matrices(raw, index)
    atoms = torch.from_numpy(raw.atoms[index])
    parts, n = encode_graph(
        atoms, torch.from_numpy(raw.pos[index]), torch.from_numpy(table.formal_charges), torch.from_numpy(table.orders)
    )
    known = graph_padding(n, qm9.MAX_ATOMS)
    for name, shipped in (
        ("atoms", methods.TRAIN_ATOM_FREQUENCIES),
        ("charges", methods.TRAIN_CHARGE_FREQUENCIES),
        ("bonds", methods.TRAIN_BOND_FREQUENCIES),
    ):
        values = parts[name][~known[name]]
        share = torch.bincount(values, minlength=len(shipped)).double() / values.numel()
        assert np.allclose(share.numpy(), shipped, atol=5e-3), name


def orthogonal(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=F64))
    return q


def graph_module(kind: str, seed: int):
    spec = (EGNNDenoiser if kind == "egnn" else EQGATDenoiser)(width=16, layers=2, charges=3, bonds=BOND_ORDERS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = spec.build().double().eval()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.2 * torch.randn_like(p))
    return m


@examples
@given(st.sampled_from(["egnn", "eqgat"]), st.lists(st.integers(2, 6), min_size=1, max_size=2), st.integers(0, 2**16))
def test_the_graph_network_is_equivariant_symmetric_and_ignores_padding(kind, sizes, seed):
    width = 6
    atoms, pos, charges, orders = graphs(sizes, width, seed)
    parts, n = encode_graph(atoms, pos, charges, orders)
    known = graph_padding(n, width)
    g = torch.Generator().manual_seed(seed + 1)
    t = {k: torch.rand(v.shape[:2], generator=g, dtype=F64) for k, v in parts.items()}
    m = graph_module(kind, seed % 3)
    size = MoleculeSize(n, max_atoms=width)
    with torch.no_grad():
        out = m(parts, t, size)
        q = orthogonal(seed)
        turned = dict(parts, pos=parts["pos"] @ q.T)
        out_turned = m(turned, t, size)
        noisy = {k: v.clone() for k, v in parts.items()}
        noisy["pos"][known["pos"]] = 3.0
        noisy["bonds"][known["bonds"]] = 2
        noisy["charges"][known["charges"]] = 2
        out_noisy = m(noisy, t, size)
    assert out["bonds"].shape == (len(sizes), pair_count(width), BOND_ORDERS)
    assert torch.allclose(out_turned["pos"], out["pos"] @ q.T, atol=1e-8)
    for name in ("atoms", "charges", "bonds"):
        assert torch.allclose(out_turned[name], out[name], atol=1e-8), name
        free = ~known[name]
        assert torch.allclose(out_noisy[name][free], out[name][free], atol=1e-8), name
    assert torch.allclose(from_subspace(out_noisy["pos"]), from_subspace(out["pos"]), atol=1e-8)


def test_the_bonds_method_trains_and_samples_symmetric_graphs():
    method = methods.QM9GraphMethod()
    recipe = method.recipe()
    recipe = attrs.evolve(
        recipe,
        network=ComponentSpec(
            "molecules:eqgat",
            {"width": 16, "vector_width": 4, "edge_width": 4, "layers": 2, "charges": 3, "bonds": BOND_ORDERS},
        ),
        grid=ComponentSpec("uniform", {"steps": 4}),
        dataset=ComponentSpec("molecules:qm9", {"split": "valid", "limit": 16, "atoms": "graph"}),
    )
    recipe = attrs.evolve(recipe, train=attrs.evolve(recipe.train, steps=2, batch_size=4, warmup_steps=0), finetune=[])
    pipeline = build(recipe)
    result = train(pipeline, progress=False)
    assert result.step == 2 and np.isfinite(result.loss)
    atoms, pos, charges, orders = method.sample(pipeline, 5)
    mask = atoms >= 0
    assert torch.equal(mask.sum(1), method.sizes(5, recipe.seed))
    assert torch.equal(orders, orders.transpose(1, 2))
    assert bool((orders[~(mask[:, :, None] & mask[:, None, :])] == 0).all())
    assert bool(((orders >= 0) & (orders < BOND_ORDERS)).all()) and bool(((charges >= -1) & (charges <= 1)).all())
    assert torch.allclose(pos.sum(1), torch.zeros(5, 3), atol=1e-4 * (1 + float(pos.abs().max())))
