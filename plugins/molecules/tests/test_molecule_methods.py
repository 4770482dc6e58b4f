"""The `molecules:qm9` method: its size histogram, sampling with padding known, and the CLI writing SDF."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from diffusekit import ComponentSpec, build, get_registry
from diffusekit.testing.contracts import method_contracts
from diffusekit_molecules import io, methods, qm9
from rdkit import Chem

CLI = [sys.executable, "-m", "diffusekit.cli"]


def test_the_shipped_size_histogram_is_the_training_splits():
    data = qm9.load_qm9()
    assert list(methods.TRAIN_ATOM_COUNTS) == qm9.atom_count_histogram(data).tolist()
    assert sum(methods.TRAIN_ATOM_COUNTS) == 100_000


def test_sizes_come_from_the_histogram_and_are_reproducible():
    g = torch.Generator().manual_seed(0)
    sizes = methods.draw_sizes(20_000, g)
    counts = np.bincount(sizes.numpy(), minlength=30)
    never = [n for n, c in enumerate(methods.TRAIN_ATOM_COUNTS) if c == 0]
    assert all(counts[n] == 0 for n in never)
    # the commonest sizes (17-19 atoms: 40% of QM9) come out about as often: binomial sd ~0.35%
    share = counts[17:20].sum() / 20_000
    want = sum(methods.TRAIN_ATOM_COUNTS[17:20]) / 100_000
    assert abs(share - want) < 0.02
    again = methods.draw_sizes(20_000, torch.Generator().manual_seed(0))
    assert torch.equal(sizes, again)
    fixed = methods.QM9Method(atoms=9).sizes(5, seed=0)
    assert fixed.tolist() == [9] * 5


def test_the_method_samples_molecules_of_the_drawn_sizes_centred():
    assert "molecules:qm9" in [e.qualname for e in get_registry().entries("method", plugin="molecules")]
    method = methods.QM9Method()
    recipe = attrs.evolve(
        method.recipe(),
        network=ComponentSpec("molecules:egnn", {"width": 16, "layers": 2}),
        sampler=ComponentSpec("gaussian:ddim"),
    )
    recipe = attrs.evolve(recipe, grid=ComponentSpec("uniform", {"steps": 5}))
    pipeline = build(recipe)
    atoms, pos = method.sample(pipeline, 6)
    sizes = method.sizes(6, recipe.seed)
    assert torch.equal((atoms >= 0).sum(1), sizes)
    assert bool(((atoms >= 0)[:, 1:] <= (atoms >= 0)[:, :-1]).all())  # padding last
    assert torch.allclose(pos.sum(1), torch.zeros(6, 3), atol=1e-4 * (1 + float(pos.abs().max())))
    assert bool((pos[atoms < 0] == 0).all())


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


def test_a_trained_checkpoint_samples_sdf_that_rdkit_reads_back(tmp_path: Path):
    ckpt = tmp_path / "tiny.safetensors"
    small = [
        "--set", "network.width=8", "--set", "network.layers=1",
        "--set", "dataset.split=valid", "--set", "dataset.limit=64",
        "--set", "train.batch_size=8", "--set", "train.warmup_steps=0",
    ]  # fmt: skip
    done = run("train", "molecules:qm9", "--out", str(ckpt), "--steps", "2", "--no-progress", *small)
    assert done.returncode == 0, done.stderr
    # the recipe's three stages: each earlier one's checkpoint kept beside the last, each stage
    # started from the one before
    from diffusekit.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "tiny.stage1.safetensors").step == 2
    second = load_checkpoint(tmp_path / "tiny.stage2.safetensors")
    assert second.metadata["diffusekit.init"] == "tiny.stage1.safetensors (step 2)"
    assert second.recipe.train.lr_schedule == "cosine"
    assert load_checkpoint(ckpt).metadata["diffusekit.init"] == "tiny.stage2.safetensors (step 2)"
    assert load_checkpoint(ckpt).recipe.train.lr == 1e-4
    out = tmp_path / "out"
    done = run("sample", str(ckpt), "--num", "5", "--out", str(out), "--set", "grid.steps=4", "--no-progress")
    assert done.returncode == 0, done.stderr
    for name in ("molecules.sdf", "molecules.xyz", "molecules.png", "report.json"):
        assert (out / name).is_file(), name
    mols = [m for m in Chem.SDMolSupplier(str(out / "molecules.sdf"), sanitize=False, removeHs=False)]
    assert len(mols) == 5 and all(m is not None and m.GetNumConformers() == 1 for m in mols)
    atoms, pos = io.read_xyz(out / "molecules.xyz")
    assert [m.GetNumAtoms() for m in mols] == (atoms >= 0).sum(1).tolist()
    report = json.loads((out / "report.json").read_text())
    assert report["n_molecules"] == 5 and report["n_atoms"] == int((atoms >= 0).sum())
    assert (out / "molecules.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_shipped_atom_frequencies_are_the_training_splits():
    data = qm9.load_qm9()
    atoms = data.atoms[qm9.split_indices()["train"]]
    counts = np.bincount(atoms[atoms >= 0], minlength=5)
    assert np.allclose(methods.TRAIN_ATOM_FREQUENCIES, counts / counts.sum(), atol=1e-4)


def test_categorical_atom_types_train_and_sample_beside_gaussian_positions():
    """EQGAT-style state: categorical atom tokens (marginal prior) with Gaussian subspace positions,
    trained on QM9 and sampled by core:by_kind in one loop."""
    from diffusekit import train
    from diffusekit_molecules.datasets import QM9Dataset

    data = QM9Dataset(split="valid", limit=8, atoms="tokens").load()
    assert data.parts["atoms"].dtype == torch.int64 and data.parts["atoms"].shape == (8, 29)
    method = methods.QM9CategoricalMethod()
    recipe = attrs.evolve(
        method.recipe(),
        network=ComponentSpec("molecules:egnn", {"width": 16, "layers": 2}),
        grid=ComponentSpec("uniform", {"steps": 5}),
        dataset=ComponentSpec("molecules:qm9", {"split": "valid", "limit": 16, "atoms": "tokens"}),
    )
    recipe = attrs.evolve(recipe, train=attrs.evolve(recipe.train, steps=2, batch_size=4, warmup_steps=0), finetune=[])
    pipeline = build(recipe)
    result = train(pipeline, progress=False)
    assert result.step == 2 and np.isfinite(result.loss)
    atoms, pos = method.sample(pipeline, 6)
    sizes = method.sizes(6, recipe.seed)
    assert torch.equal((atoms >= 0).sum(1), sizes)
    assert bool(((atoms >= -1) & (atoms < 5)).all())
    assert torch.allclose(pos.sum(1), torch.zeros(6, 3), atol=1e-4 * (1 + float(pos.abs().max())))


@pytest.mark.parametrize(
    "method",
    [methods.QM9Method(), methods.QM9ConditionalMethod(), methods.QM9GapConditionalMethod()],
    ids=["qm9", "qm9-cond", "qm9-cond-gap"],
)
def test_the_shipped_weights_are_the_recipes_and_small(method):
    from diffusekit.checkpoint import load_checkpoint

    path = method.weights()
    assert path is not None and path.stat().st_size < 5 * 2**20
    checkpoint = load_checkpoint(path)
    recipe = method.recipe()
    method_contracts(method, None)["weights"][1]()  # trained by the recipe, for its steps
    assert set(checkpoint.tensors) == {f"ema.{k}" for k in build(recipe).network.state_dict()}


def test_pretrained_samples_as_the_method_does_now_not_as_its_weights_were_trained(tmp_path: Path, monkeypatch):
    """Weights trained when the recipe sampled with DPM-Solver++(2M), under a recipe that now
    samples with the ancestral sampler: ``pretrained`` (like ``diffusekit run``) uses the
    method's recipe; ``load`` of the weights' file keeps the file's."""
    from diffusekit import load, pretrained
    from diffusekit.checkpoint import load_checkpoint, save_checkpoint

    method = methods.QM9Method()
    shipped = load_checkpoint(method.weights())
    stored = attrs.evolve(shipped.recipe, sampler=ComponentSpec("gaussian:dpmpp_2m"))
    assert stored.sampler != method.recipe().sampler  # the case this test is about
    older = tmp_path / "older.safetensors"
    save_checkpoint(older, {f"ema.{k}": v for k, v in shipped.weights().items()}, stored, step=shipped.step)
    monkeypatch.setattr(methods.QM9Method, "weights", lambda self: older)
    pipe = pretrained("molecules:qm9")
    assert pipe.recipe == method.recipe() and type(pipe.sampler).__name__ == "DDPM"
    assert load(older).recipe.sampler == stored.sampler
    assert type(load(older).sampler).__name__ == "DPMSolverPP2M"
    fewer = pretrained("molecules:qm9", **{"grid.steps": 10})
    assert fewer.recipe.grid.params["steps"] == 10
    weights = pipe.network.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in load(older).network.state_dict().items())


def test_run_writes_molecules_from_the_shipped_weights(tmp_path: Path):
    out = tmp_path / "qm9"
    done = run("run", "molecules:qm9", "--num", "6", "--out", str(out), "--set", "grid.steps=20", "--no-progress")
    assert done.returncode == 0, done.stderr
    # the weights are the last of the recipe's stages; the run says how long all of them trained
    stages = [cfg.steps for cfg in methods.QM9Method().recipe().train_stages]
    assert len(stages) > 1 and " + ".join(map(str, stages)) + " steps" in done.stderr
    mols = list(Chem.SDMolSupplier(str(out / "molecules.sdf"), sanitize=False, removeHs=False))
    assert len(mols) == 6 and all(m is not None and m.GetNumConformers() == 1 for m in mols)
    sizes = methods.QM9Method().sizes(6, seed=0)
    assert [m.GetNumAtoms() for m in mols] == sizes.tolist()
    pos = np.concatenate([m.GetConformer().GetPositions() for m in mols])
    assert np.isfinite(pos).all() and np.abs(pos).max() < 50  # molecules, not exploded point clouds
    report = json.loads((out / "report.json").read_text())
    assert report["n_molecules"] == 6


@pytest.mark.parametrize(
    ("method", "name", "value"), [("molecules:qm9-cond", "alpha", 80.0), ("molecules:qm9-cond-gap", "gap", 0.25)]
)
def test_the_conditional_methods_write_molecules_for_the_value_asked(tmp_path: Path, method, name, value):
    out = tmp_path / "cond"
    done = run(
        "run",
        method,
        "--num",
        "4",
        "--out",
        str(out),
        "--set",
        "grid.steps=20",
        "--set",
        f"value={value}",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    mols = list(Chem.SDMolSupplier(str(out / "molecules.sdf"), sanitize=False, removeHs=False))
    assert len(mols) == 4 and all(m is not None and m.GetNumConformers() == 1 for m in mols)
    pos = np.concatenate([m.GetConformer().GetPositions() for m in mols])
    assert np.isfinite(pos).all() and np.abs(pos).max() < 50
    report = json.loads((out / "report.json").read_text())
    assert report["n_molecules"] == 4 and report["property"] == name and report["asked"] == [value] * 4
