"""The shipped student: trained by its recipe, small, and drawing the requested digits in one or two
evaluations from the command line; `fit-solver` writes a checkpoint that samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusekit import build
from diffusekit.checkpoint import load_checkpoint
from diffusekit.testing.cli import assert_one_line_error, run_cli
from diffusekit.testing.contracts import method_contracts
from diffusekit_distill.digits import DistilledDigits
from safetensors.torch import load_file


def _nearest_class_mean_accuracy(samples: torch.Tensor, labels: torch.Tensor) -> float:
    """How often a sample is nearest the mean of the real digits of its requested class (the real digits
    themselves score 0.90 under this classifier; noise or the wrong digit scores about 0.1)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    real = torch.tensor(bunch.images, dtype=torch.float32).reshape(-1, 64) / 8.0 - 1.0
    target = torch.tensor(bunch.target)
    means = torch.stack([real[target == k].mean(0) for k in range(10)])
    return float((torch.cdist(samples.reshape(len(samples), 64), means).argmin(1) == labels).float().mean())


def test_the_shipped_student_is_its_recipe_and_small():
    method = DistilledDigits()
    path = method.weights()
    assert path is not None and path.stat().st_size < 3 * 2**20
    method_contracts(method, None)["weights"][1]()  # trained by the recipe, for its steps
    checkpoint = load_checkpoint(path)
    assert set(checkpoint.tensors) == {f"ema.{k}" for k in build(method.recipe()).network.state_dict()}
    assert checkpoint.recipe.train.objective.name == "distill:consistency"


@pytest.mark.parametrize("steps", [1, 2])
def test_the_student_draws_the_requested_digits_in_few_evaluations(steps, tmp_path: Path):
    done = run_cli(
        "run", "distill:digits", "--num", "100", "--set", f"steps={steps}", "--out", "out", cwd=tmp_path, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "grid.png").stat().st_size > 0
    samples = load_file(str(tmp_path / "out" / "samples.safetensors"))["x"]
    assert samples.shape == (100, 1, 8, 8) and bool(torch.isfinite(samples).all())
    assert _nearest_class_mean_accuracy(samples, torch.arange(100) % 10) > 0.8


def test_fit_solver_writes_a_checkpoint_that_samples_with_the_learned_solver(tmp_path: Path):
    args = [
        "fit-solver",
        "gaussian:digits",
        "--nfe",
        "3",
        "--samples",
        "8",
        "--iterations",
        "3",
        "--out",
        "ld3.safetensors",
    ]
    done = run_cli(*args, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    checkpoint = load_checkpoint(tmp_path / "ld3.safetensors")
    assert checkpoint.recipe.sampler.name == "distill:learned" and checkpoint.recipe.grid.name == "gaussian:tabulated"
    fitted = json.loads(checkpoint.metadata["diffusekit.fit"])
    assert fitted["nfe"] == 3 and fitted["error_after"] <= fitted["error_before"]
    assert len(checkpoint.recipe.sampler.params["shifts"]) == 3
    sampled = run_cli("sample", "ld3.safetensors", "--num", "20", "--out", "samples", cwd=tmp_path, timeout=600)
    assert sampled.returncode == 0, sampled.stderr
    again = run_cli(*args, cwd=tmp_path, timeout=600)  # never overwrites silently
    assert "already exists" in assert_one_line_error(again)


def test_fit_solver_refuses_a_stochastic_solver_in_one_line(tmp_path: Path):
    done = run_cli("fit-solver", "gaussian:digits", "--nfe", "3", "--solver", "gaussian:euler_ancestral", cwd=tmp_path)
    assert "not a deterministic Gaussian solver" in assert_one_line_error(done)
