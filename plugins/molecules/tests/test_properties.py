"""Property conditioning: statistics, halves, the conditional network and method, the regressor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from diffusekit import ComponentSpec, ConditionList, ConfigError, Embedding, ShapeError, build
from diffusekit.plugins import get_registry
from diffusekit_molecules import methods, properties, qm9
from diffusekit_molecules.datasets import QM9Dataset
from diffusekit_molecules.properties import Regressor, RegressorModule
from diffusekit_molecules.state import MoleculeSize, encode
from hypothesis import given, settings
from hypothesis import strategies as st

examples = settings(max_examples=15, deadline=None, derandomize=True)


def test_the_shipped_statistics_are_the_training_splits():
    data = qm9.load_qm9()
    train = qm9.split_indices()["train"]
    for name, (mean, mad) in properties.TRAIN_STATS.items():
        values = data.properties[name][train]
        assert mean == pytest.approx(values.mean(), rel=1e-8)
        assert mad == pytest.approx(np.abs(values - values.mean()).mean(), rel=1e-8)


def test_the_halves_split_the_training_split():
    train = qm9.split_indices()["train"]
    first, second = (properties.half_indices(train, h) for h in ("first", "second"))
    assert len(first) == len(second) == 50_000 and not set(first) & set(second)
    assert sorted([*first, *second]) == sorted(train)
    # random halves of a split ordered by size: alike in size (the split's ends would differ by ~2 atoms)
    sizes = qm9.load_qm9().num_atoms
    assert abs(float(sizes[first].mean()) - float(sizes[second].mean())) < 0.1
    with pytest.raises(ConfigError, match="half"):
        properties.half_indices(train, "third")
    with pytest.raises(ConfigError, match="halves are of the training split"):
        QM9Dataset(split="valid", half="first").indices()


def test_a_dataset_with_properties_conditions_on_their_normalised_values():
    dataset = QM9Dataset(split="train", half="second", limit=12, properties=("alpha", "gap"))
    data = dataset.load()
    assert isinstance(data.condition, ConditionList)
    size, embedding = data.condition.items
    assert isinstance(size, MoleculeSize) and isinstance(embedding, Embedding)
    raw = qm9.load_qm9()
    index = dataset.indices()
    for k, name in enumerate(("alpha", "gap")):
        mean, mad = properties.TRAIN_STATS[name]
        want = (raw.properties[name][index] - mean) / mad
        assert np.allclose(embedding.values[:, k].numpy(), want, atol=1e-5)
    # classifier-free dropout nulls the properties, never the sizes
    dropped = data.condition.dropout(1.0, torch.Generator().manual_seed(0))
    assert torch.equal(dropped.items[0].num_atoms, size.num_atoms)
    assert not bool(dropped.items[1].present.any())


def tiny_conditional():
    method = methods.QM9ConditionalMethod(value=80.0)
    recipe = method.recipe()
    recipe = attrs.evolve(
        recipe,
        network=ComponentSpec("molecules:egnn", {"width": 16, "layers": 2, "properties": 1}),
        grid=ComponentSpec("uniform", {"steps": 4}),
        guidance=ComponentSpec("gaussian:cfg", {"scale": 2.0}),
    )
    pipeline = build(recipe)
    with torch.no_grad():
        for p in pipeline.network.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    return method, pipeline


def test_the_conditional_network_reads_the_property_and_its_null():
    _, pipeline = tiny_conditional()
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor([5, 9])
    atoms = torch.where(torch.arange(29)[None] < sizes[:, None], torch.randint(0, 5, (2, 29), generator=g), -1)
    pos = torch.randn(2, 29, 3, generator=g) * (atoms >= 0)[..., None]
    x, _ = encode(atoms, pos, 5)
    t = {k: torch.full(v.shape[:2], 0.5) for k, v in x.items()}
    size = MoleculeSize(sizes, max_atoms=29)

    def run(values, present):
        return pipeline.denoiser(x, t, ConditionList((size, Embedding(values, present))))["pos"].eps

    low, high = run(torch.tensor([[-2.0], [-2.0]]), torch.ones(2, dtype=torch.bool))
    high = run(torch.tensor([[2.0], [2.0]]), torch.ones(2, dtype=torch.bool))
    assert not torch.allclose(low, high)
    null_a = run(torch.tensor([[-2.0], [-2.0]]), torch.zeros(2, dtype=torch.bool))
    null_b = run(torch.tensor([[2.0], [2.0]]), torch.zeros(2, dtype=torch.bool))
    assert torch.equal(null_a, null_b)  # the null condition carries no value
    with pytest.raises(ShapeError, match="1 properties"):
        pipeline.denoiser(x, t, size)


def test_the_conditional_method_asks_for_the_value_and_reports_it(tmp_path: Path):
    method, pipeline = tiny_conditional()
    atoms, pos, values = method.sample_conditional(pipeline, 3)
    assert values.tolist() == [80.0] * 3
    assert torch.equal((atoms >= 0).sum(1), method.sizes(3, pipeline.recipe.seed))
    drawn = methods.QM9ConditionalMethod()
    sizes, values = drawn.targets(500, pipeline.recipe)
    # pairs of the second half: alpha grows with the atom count there
    assert np.corrcoef(sizes.numpy(), values.numpy())[0, 1] > 0.5
    with pytest.raises(ConfigError, match="one property"):
        methods.QM9ConditionalMethod.property_of(attrs.evolve(pipeline.recipe, dataset=None))


def test_the_gap_method_is_the_conditional_method_for_the_gap():
    method = methods.QM9GapConditionalMethod()
    recipe = method.recipe()
    assert recipe.method == "molecules:qm9-cond-gap" and method.property_of(recipe) == "gap"
    # everything but the property is the alpha model's recipe, so both fine-tune the same weights
    alpha = methods.QM9ConditionalMethod().recipe()
    assert attrs.evolve(recipe, dataset=alpha.dataset, method=alpha.method) == alpha
    sizes, values = method.targets(300, recipe)
    data = qm9.load_qm9()
    pool = properties.half_indices(qm9.split_indices()["train"], "second")
    gaps = set(data.properties["gap"][pool].tolist())
    assert all(v in gaps for v in values.tolist())  # gaps of real molecules of the second half, in Hartree
    assert len(set(values.tolist())) > 250 and torch.equal(sizes, method.targets(300, recipe)[0])
    assert get_registry().resolve("method", "molecules:qm9-cond-gap").obj is methods.QM9GapConditionalMethod


def orthogonal(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


REGRESSOR = RegressorModule(16, 2).double()


@examples
@given(st.lists(st.integers(2, 8), min_size=1, max_size=3), st.integers(0, 2**16))
def test_the_regressor_is_invariant_to_rotations_translations_permutations_and_padding(sizes, seed):
    g = torch.Generator().manual_seed(seed)
    width = 8
    real = torch.arange(width)[None] < torch.tensor(sizes)[:, None]
    atoms = torch.where(real, torch.randint(0, 5, (len(sizes), width), generator=g), -1)
    pos = torch.randn(len(sizes), width, 3, generator=g, dtype=torch.float64) * real[..., None]
    with torch.no_grad():
        base = REGRESSOR(atoms, pos)
        moved = REGRESSOR(atoms, (pos @ orthogonal(seed).T + torch.randn(3, generator=g, dtype=torch.float64)))
        n = sizes[0]
        perm = torch.cat([torch.randperm(n, generator=g), torch.arange(n, width)])
        permuted = REGRESSOR(atoms[:1, perm], pos[:1, perm])
        padded = REGRESSOR(
            torch.cat([atoms, torch.full((len(sizes), 3), -1)], 1),
            torch.cat([pos, 50 * torch.ones(len(sizes), 3, 3, dtype=torch.float64)], 1),
        )
    assert torch.allclose(base, moved, atol=1e-9)
    assert torch.allclose(base[:1], permuted, atol=1e-9)
    assert torch.allclose(base, padded, atol=1e-9)


def test_a_regressor_saves_and_loads(tmp_path: Path):
    module = RegressorModule(8, 1)
    regressor = Regressor("gap", module)
    regressor.save(tmp_path / "r.safetensors")
    again = Regressor.load(tmp_path / "r.safetensors")
    atoms = torch.tensor([[1, 0, 0, 0, 0, -1]])
    pos = torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(0)) * (atoms >= 0)[..., None]
    assert again.property == "gap"
    # float16 storage: equal to the float16-rounded module
    module.load_state_dict({k: v.half().float() for k, v in module.state_dict().items()})
    assert torch.allclose(regressor.predict(atoms, pos), again.predict(atoms, pos), atol=1e-6)
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    from diffusekit import CheckpointError

    with pytest.raises(CheckpointError, match="not a property regressor"):
        Regressor.load(tmp_path / "bad.safetensors")


def test_the_regressor_command_trains_and_writes_weights(tmp_path: Path):
    out = tmp_path / "alpha.safetensors"
    cmd = [sys.executable, "-m", "diffusekit.cli", "train-property-regressor", "alpha", "--out", str(out)]
    done = subprocess.run(
        [*cmd, "--steps", "2", "--width", "8", "--layers", "1"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert Regressor.load(out).property == "alpha"
    done = subprocess.run([*cmd[:-3], "charge", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["alpha", "gap"])
def test_the_shipped_regressors_beat_the_atom_count_baseline_on_molecules_they_never_saw(name: str):
    data, split = qm9.load_qm9(), qm9.split_indices()
    rows = np.random.default_rng(3).choice(split["test"], 256, replace=False)  # neither half: the test split
    regressor = Regressor.load(properties.shipped_regressor(name))
    assert regressor.property == name
    predicted = regressor.predict(torch.from_numpy(data.atoms[rows]), torch.from_numpy(data.pos[rows]))
    truth = torch.from_numpy(data.properties[name][rows]).float()
    first = properties.half_indices(split["train"], "first")
    counts, values = data.num_atoms[first], data.properties[name][first]
    by_count = torch.tensor([values[counts == n].mean() for n in data.num_atoms[rows]]).float()
    assert (predicted - truth).abs().mean() < 0.5 * (by_count - truth).abs().mean()


def test_a_property_without_a_shipped_regressor_is_a_clear_error():
    with pytest.raises(ConfigError, match="no mu regressor ships"):
        properties.shipped_regressor("mu")
