"""The shipped weights of the joint methods: trained by their recipes, small, and working from
the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusekit import build
from diffusekit.checkpoint import load_checkpoint
from diffusekit.testing.cli import run_cli
from diffusekit.testing.contracts import method_contracts
from diffusekit_joint import methods, world
from diffusekit_joint.digits import CLASSES, load_digits


def _run_task(method: str, task: str, num: int, steps: int, cwd: Path) -> Path:
    """``diffusekit run METHOD`` for one task from the shipped weights; the output directory."""
    args = ["--num", str(num), "--set", f"task={task}", "--set", f"grid.steps={steps}", "--out", task]
    done = run_cli("run", method, *args, cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr
    return cwd / task


@pytest.mark.parametrize("method", [methods.DigitsMethod(), methods.WorldMethod()], ids=["digits", "world"])
def test_the_shipped_weights_are_the_recipes_and_small(method):
    path = method.weights()
    assert path is not None and path.stat().st_size < 5 * 2**20
    method_contracts(method, None)["weights"][1]()  # trained by the recipe, for its steps
    checkpoint = load_checkpoint(path)
    assert set(checkpoint.tensors) == {f"ema.{k}" for k in build(method.recipe()).network.state_dict()}
    assert all(t.dtype == torch.float16 for t in checkpoint.tensors.values() if t.is_floating_point())


def test_the_digits_model_reads_held_out_digits_and_pairs_samples_with_labels(tmp_path: Path):
    labelled = _run_task("joint:digits", "label", 50, 10, tmp_path)
    assert json.loads((labelled / "report.json").read_text())["accuracy"] > 0.9  # chance is 0.1
    drawn_dir = _run_task("joint:digits", "image", 20, 10, tmp_path)
    from safetensors.torch import load_file

    drawn = load_file(str(drawn_dir / "samples.safetensors"))
    # an independent reader: the nearest class mean of the training digits (~90% on real held-out digits)
    images, labels = load_digits("train")
    means = torch.stack([images[labels == k].mean(0) for k in range(CLASSES)]).flatten(1)
    read = torch.cdist(drawn["image"].flatten(1), means).argmin(1)
    assert drawn["label"].tolist() == [k % CLASSES for k in range(20)]
    assert float((read == drawn["label"]).double().mean()) > 0.7


def test_the_world_model_is_a_forward_model_and_a_policy(tmp_path: Path):
    """Forward dynamics puts the mass nearer where it went than copying the frame does, and the
    policy's actions point the demonstrator's way (toward the centre)."""
    forward = _run_task("joint:world", "forward", 64, 20, tmp_path)
    report = json.loads((forward / "report.json").read_text())
    assert report["next_position_error_px"] < 0.6 * report["next_position_error_px_copying_the_frame"]
    policy = _run_task("joint:world", "policy", 64, 20, tmp_path)
    from safetensors.torch import load_file

    out = load_file(str(policy / "samples.safetensors"))
    toward = world.mean_action(world.centroid(out[world.NOW]))
    cosine = torch.nn.functional.cosine_similarity(out[world.ACTION], toward, dim=1)
    assert float(cosine.mean()) > 0.5  # the demonstrator's noise leaves its mean cosine near 0.8
