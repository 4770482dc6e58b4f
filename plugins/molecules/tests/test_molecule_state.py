"""The molecule state: Helmert subspace coordinates, padding, the size condition, and the network on it."""

from __future__ import annotations

import attrs
import pytest
import torch
from diffusekit import ComponentSpec, PartSpec, Recipe, ShapeError, build, get_registry
from diffusekit.recipe import SampleConfig, TrainConfig
from diffusekit_molecules.networks import EGNNDenoiser, EQGATDenoiser
from diffusekit_molecules.state import (
    ATOM_SCALE,
    MoleculeSize,
    decode,
    encode,
    from_subspace,
    helmert,
    padding,
    to_subspace,
)
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = torch.float64
examples = settings(max_examples=25, deadline=None, derandomize=True)


def molecules(sizes: list[int], width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random atom types (-1 padding) and positions (padding 0) of molecules of ``sizes`` atoms."""
    g = torch.Generator().manual_seed(seed)
    real = torch.arange(width)[None, :] < torch.tensor(sizes)[:, None]
    atoms = torch.where(real, torch.randint(0, 5, (len(sizes), width), generator=g), -1)
    pos = (3 * torch.randn(len(sizes), width, 3, generator=g, dtype=F64)) * real[..., None]
    return atoms, pos


def test_helmert_rows_are_orthonormal_and_orthogonal_to_ones():
    h = helmert(3)
    want = torch.tensor([[1, -1, 0], [1, 1, -2]], dtype=F64) / torch.tensor([[2**0.5], [6**0.5]], dtype=F64)
    assert torch.allclose(h, want, rtol=0, atol=1e-15)
    for n in (2, 5, 29):
        h = helmert(n)
        assert torch.allclose(h @ h.T, torch.eye(n - 1, dtype=F64), atol=1e-13)
        assert torch.allclose(h @ torch.ones(n, dtype=F64), torch.zeros(n - 1, dtype=F64), atol=1e-13)
        # the projection onto the zero-mean subspace: isotropic noise there is EDM's zero-CoM noise
        assert torch.allclose(h.T @ h, torch.eye(n, dtype=F64) - 1.0 / n, atol=1e-13)
    with pytest.raises(ShapeError, match="empty"):
        helmert(1)


@examples
@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.integers(0, 3), st.integers(0, 2**16))
def test_one_matrix_serves_every_size_and_padding_rows_are_zero(sizes, extra, seed):
    width = max(sizes) + extra + 1
    atoms, pos = molecules(sizes, width, seed)
    mask = atoms >= 0
    y = to_subspace(pos, mask)
    known = padding(mask.sum(1), width)
    assert y.shape == (len(sizes), width - 1, 3)
    assert bool((y[known["pos"]] == 0).all())
    back = from_subspace(y)
    centred = pos - (pos * mask[..., None]).sum(1, keepdim=True) / mask.sum(1)[:, None, None]
    assert torch.allclose(back, centred * mask[..., None], atol=1e-12)
    # each molecule alone, with its own n x n Helmert matrix, has the same coordinates
    for i, n in enumerate(sizes):
        if n > 1:
            own = helmert(n) @ centred[i, :n]
            assert torch.allclose(y[i, : n - 1], own, atol=1e-12)
    # isotropic noise on the free rows is centred noise on the real atoms and 0 on padding
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=F64).masked_fill(
        known["pos"][..., None], 0
    )
    x = from_subspace(noise)
    assert bool((x[~mask] == 0).all())
    assert torch.allclose((x * mask[..., None]).sum(1), torch.zeros(len(sizes), 3, dtype=F64), atol=1e-12)


@examples
@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.integers(0, 2**16))
def test_encode_and_decode_round_trip(sizes, seed):
    atoms, pos = molecules(sizes, 10, seed)
    parts, num_atoms = encode(atoms, pos, 5)
    assert torch.equal(num_atoms, torch.tensor(sizes))
    assert torch.allclose(parts["atoms"].sum(-1), ATOM_SCALE * (atoms >= 0).to(F64))
    back_atoms, back_pos = decode(parts, num_atoms)
    assert torch.equal(back_atoms, atoms)
    mask = atoms >= 0
    centred = pos - (pos * mask[..., None]).sum(1, keepdim=True) / mask.sum(1)[:, None, None]
    assert torch.allclose(back_pos, centred * mask[..., None], atol=1e-12)


def test_encode_refuses_bad_molecules():
    atoms, pos = molecules([3], 4, 0)
    with pytest.raises(ShapeError, match="positions"):
        encode(atoms, pos[:, :3], 5)
    with pytest.raises(ShapeError, match="after the real atoms"):
        encode(torch.tensor([[0, -1, 1, -1]]), pos, 5)
    with pytest.raises(ShapeError, match="sizes must lie"):
        MoleculeSize(torch.tensor([0, 3]), max_atoms=4)


def random_orthogonal(seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    return q if seed % 2 else -q  # odd seeds rotations (det +1 or -1 by QR), even ones reflected


def module(kind: str, seed: int = 0) -> torch.nn.Module:
    spec = (EGNNDenoiser if kind == "egnn" else EQGATDenoiser)(width=16, layers=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = spec.build().double().eval()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.2 * torch.randn_like(p))
    return m


def call(m, y, h, t, sizes, width):
    cond = MoleculeSize(torch.tensor(sizes), max_atoms=width)
    with torch.no_grad():
        return m({"pos": y, "atoms": h}, {"pos": t[:, : width - 1], "atoms": t}, cond)


@examples
@given(st.sampled_from(["egnn", "eqgat"]), st.lists(st.integers(1, 7), min_size=1, max_size=3), st.integers(0, 2**16))
def test_the_network_on_the_state_is_equivariant_and_ignores_padding(kind, sizes, seed):
    width = 8
    atoms, pos = molecules(sizes, width, seed)
    parts, num_atoms = encode(atoms, pos, 5)
    known = padding(num_atoms, width)
    g = torch.Generator().manual_seed(seed + 1)
    t = torch.rand(len(sizes), width, generator=g, dtype=F64)
    m = module(kind, seed % 3)
    out = call(m, parts["pos"], parts["atoms"], t, sizes, width)
    assert bool((out["pos"][known["pos"]] == 0).all()) and bool((out["atoms"][known["atoms"]] == 0).all())
    # rotations and reflections of the positions rotate the position output; atom outputs are invariant
    q = random_orthogonal(seed)
    turned = call(m, parts["pos"] @ q, parts["atoms"], t, sizes, width)
    assert torch.allclose(turned["pos"], out["pos"] @ q, atol=1e-9)
    assert torch.allclose(turned["atoms"], out["atoms"], atol=1e-9)
    # garbage in the padding rows (which samplers never move) changes nothing real
    y, h = parts["pos"].clone(), parts["atoms"].clone()
    y[known["pos"]] = torch.randn(int(known["pos"].sum()), 3, generator=g, dtype=F64)
    h[known["atoms"]] = torch.randn(int(known["atoms"].sum()), 5, generator=g, dtype=F64)
    noisy = call(m, y, h, t.masked_fill(known["atoms"], 0.7), sizes, width)
    free = ~known["pos"]
    assert torch.allclose(noisy["pos"][free], out["pos"][free], atol=1e-12)
    assert torch.allclose(noisy["atoms"][~known["atoms"]], out["atoms"][~known["atoms"]], atol=1e-12)
    # permuting the real atoms of a molecule permutes the outputs (seen in position space)
    i, n = 0, sizes[0]
    perm = torch.cat([torch.randperm(n, generator=g), torch.arange(n, width)])
    moved = encode(atoms[:1, perm], pos[:1, perm], 5)[0]
    again = call(m, moved["pos"], moved["atoms"], t[:1, perm], sizes[:1], width)
    assert torch.allclose(from_subspace(again["pos"])[0], from_subspace(out["pos"][:1])[0, perm], atol=1e-9)
    assert torch.allclose(again["atoms"][0], out["atoms"][i, perm], atol=1e-9)


def tiny_recipe(steps: int = 2) -> Recipe:
    width = 8
    gaussian = dict(
        schedule=ComponentSpec("gaussian:vp_cosine"), parameterization=ComponentSpec("gaussian:v"), time_dims=2
    )
    return Recipe(
        parts={"pos": PartSpec(shape=(width - 1, 3), **gaussian), "atoms": PartSpec(shape=(width, 5), **gaussian)},
        network=ComponentSpec("molecules:egnn", {"width": 16, "layers": 2}),
        sampler=ComponentSpec("gaussian:ddim"),
        grid=ComponentSpec("uniform", {"steps": 6}),
        train=TrainConfig(steps=steps, batch_size=4, shared_time=1.0, shared_parts=1.0),
        sample=SampleConfig(num=4, batch_size=4),
    )


def samplers() -> list[str]:
    names = [entry.qualname for entry in get_registry().entries("sampler", plugin="gaussian")]
    assert len(names) >= 10, names
    return names


@pytest.mark.parametrize("sampler", samplers())
def test_every_sampler_keeps_the_centre_of_mass_at_zero_and_the_padding_still(sampler):
    pipeline = build(attrs.evolve(tiny_recipe(), sampler=ComponentSpec(sampler)))
    with torch.no_grad():
        for p in pipeline.network.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    sizes = torch.tensor([1, 3, 8, 5])
    known = padding(sizes, 8)
    given = {"pos": torch.zeros(4, 7, 3), "atoms": torch.zeros(4, 8, 5)}
    out = pipeline.sample(given=given, known=known, condition=MoleculeSize(sizes, max_atoms=8), seed=0)
    atoms, pos = decode(out, sizes)
    mask = atoms >= 0
    assert bool((out["pos"][known["pos"]] == 0).all()) and bool((out["atoms"][known["atoms"]] == 0).all())
    # zero up to float32 rounding of the positions (an untrained network's are large)
    scale = 1.0 + float(pos.abs().max())
    assert torch.allclose(pos.sum(1), torch.zeros(4, 3), atol=1e-6 * 8 * scale)
    assert bool(torch.isfinite(pos).all()) and bool((pos[~mask] == 0).all())


def test_qm9_loads_as_states_that_decode_to_the_molecules_and_train():
    from diffusekit import train
    from diffusekit_molecules import qm9
    from diffusekit_molecules.datasets import QM9Dataset

    dataset = QM9Dataset(split="valid", limit=16)
    data = dataset.load()
    assert data.parts["pos"].shape == (16, 28, 3) and data.parts["atoms"].shape == (16, 29, 5)
    raw = qm9.load_qm9()
    index = dataset.indices()
    atoms, pos = decode(data.parts, data.condition.num_atoms)
    assert torch.equal(atoms, torch.from_numpy(raw.atoms[index]))
    want = torch.from_numpy(raw.pos[index]).double()
    mask = atoms >= 0
    centred = want - (want * mask[..., None]).sum(1, keepdim=True) / mask.sum(1)[:, None, None]
    assert torch.allclose(pos.double(), centred * mask[..., None], atol=1e-4)
    for name in ("pos", "atoms"):
        assert bool((data.parts[name][data.known[name]] == 0).all())
    gaussian = dict(
        schedule=ComponentSpec("gaussian:vp_cosine"), parameterization=ComponentSpec("gaussian:eps"), time_dims=2
    )
    recipe = attrs.evolve(
        tiny_recipe(),
        parts={"pos": PartSpec(shape=(28, 3), **gaussian), "atoms": PartSpec(shape=(29, 5), **gaussian)},
        dataset=ComponentSpec("molecules:qm9", {"split": "valid", "limit": 16}),
    )
    pipeline = build(recipe)
    before = [p.detach().clone() for p in pipeline.network.parameters()]
    result = train(pipeline, progress=False)
    assert result.step == 2 and torch.isfinite(torch.tensor(result.loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, pipeline.network.parameters(), strict=True))


@examples
@given(st.lists(st.integers(1, 8), min_size=1, max_size=4), st.integers(0, 2**16))
def test_corruption_keeps_the_centre_of_mass_at_zero_and_the_padding_given(sizes, seed):
    """Training's draws (times, noise, held padding): every noisy molecule is centred and its
    padding is exactly the data (zeros), whatever the noise."""
    from diffusekit import Data
    from diffusekit.training import draw_batch

    width = 8
    atoms, pos = molecules(sizes, width, seed)
    parts, num_atoms = encode(atoms, pos.float(), 5)
    data = Data(parts, MoleculeSize(num_atoms, max_atoms=width), known=padding(num_atoms, width))
    pipeline = build(tiny_recipe())
    drawn = draw_batch(pipeline, data, torch.Generator().manual_seed(seed))
    noisy = {k: c.x_t for k, c in drawn.corrupted.items()}
    mask = atoms >= 0
    x = from_subspace(noisy["pos"].double())
    assert torch.allclose(x.sum(1), torch.zeros(len(sizes), 3, dtype=F64), atol=1e-5)
    assert bool((x[~mask] == 0).all())
    for name, known in data.known.items():
        assert bool((noisy[name][known] == 0).all()), name
        assert bool((drawn.times[name][known] == 0).all()), name
