"""The bouncing-balls method: a valid recipe, a CLI run that writes watchable GIFs, and shipped
weights (when present) that fit the recipe and sample finite clips of the right shape."""

from __future__ import annotations

import diffusekit as dk
import pytest
import torch
from diffusekit.checkpoint import load_checkpoint
from diffusekit.plugins import get_registry
from diffusekit.recipe import validate
from diffusekit.testing.cli import assert_one_line_error, run_cli
from diffusekit_video import outputs
from diffusekit_video.methods import FRAMES, BouncingMethod
from safetensors.torch import load_file

TINY = [
    "--set",
    "network.d_model=16",
    "--set",
    "network.layers=1",
    "--set",
    "network.heads=2",
    "--set",
    "dataset.count=8",
    "--set",
    "train.batch_size=2",
    "--set",
    "grid.steps=2",
]


def test_method_is_registered_and_its_recipe_is_valid():
    registry = get_registry()
    assert isinstance(registry.resolve("method", "video:bouncing").obj(), BouncingMethod)
    recipe = BouncingMethod().recipe()
    validate(recipe, registry)
    assert recipe.method == "video:bouncing"
    part = recipe.parts["x"]
    assert part.shape == (FRAMES, 1, 32, 32) and part.time_dims == 2  # diffusion forcing: a time per frame


def test_network_builds_and_denoises_a_batch_of_clips():
    pipe = dk.build(BouncingMethod().recipe())
    x = torch.randn(2, FRAMES, 1, 32, 32)
    with torch.no_grad():
        out = pipe.network(x, torch.rand(2, FRAMES))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert sum(p.numel() for p in pipe.network.parameters()) < 2_000_000  # trains on 2 CPU cores


def test_write_outputs_writes_gifs_a_contact_sheet_and_the_samples(tmp_path):
    clips = torch.rand(3, 5, 1, 32, 32) * 2 - 1
    written = BouncingMethod().write_outputs(clips, None, tmp_path)
    names = {p.name for p in written}
    assert {"samples.safetensors", "clip_0.gif", "clip_1.gif", "clip_2.gif", "contact_sheet.png"} <= names
    assert all(p.is_file() for p in written)
    assert torch.equal(load_file(tmp_path / "samples.safetensors")["x"], clips)
    assert outputs.read_gif(tmp_path / "clip_1.gif").shape == (5, 128, 128)


def test_cli_trains_briefly_and_writes_one_gif_per_clip(tmp_path):
    result = run_cli(
        "run", "video:bouncing", "--train", "--steps", "2", "--num", "2", "--no-progress", *TINY, "--out", "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    for i in range(2):
        frames = outputs.read_gif(out / f"clip_{i}.gif")
        assert frames.shape == (FRAMES, 128, 128) and frames.dtype == torch.uint8
    assert (out / "contact_sheet.png").is_file()
    assert load_file(out / "samples.safetensors")["x"].shape == (2, FRAMES, 1, 32, 32)


def test_cli_refuses_a_changed_network_for_the_shipped_weights(tmp_path):
    if BouncingMethod().weights() is None:
        pytest.skip("no shipped weights")
    message = assert_one_line_error(run_cli("run", "video:bouncing", "--set", "network.layers=1", cwd=tmp_path))
    assert "network.layers" in message


@pytest.fixture(scope="module")
def shipped():
    path = BouncingMethod().weights()
    if path is None:
        pytest.skip("video:bouncing ships no weights")
    return path


def test_shipped_weights_are_small_and_match_the_recipe(shipped):
    assert shipped.stat().st_size < 5 * 2**20
    checkpoint = load_checkpoint(shipped)
    recipe = BouncingMethod().recipe()
    assert checkpoint.recipe.parts == recipe.parts and checkpoint.recipe.network == recipe.network
    assert set(checkpoint.tensors) == {f"ema.{k}" for k in dk.build(recipe).network.state_dict()}


def test_shipped_weights_sample_finite_clips(shipped):
    pipe = dk.pretrained("video:bouncing")
    clips = pipe.sample(2, seed=0)
    assert clips.shape == (2, FRAMES, 1, 32, 32) and torch.isfinite(clips).all()
    assert clips.min() > -1.5 and clips.max() < 1.5
