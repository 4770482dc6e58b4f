"""The video methods: valid recipes, CLI runs that write watchable GIFs for every task with the
given frames kept exactly, and shipped weights (when present) that fit the recipe and sample
clips of the right shape."""

from __future__ import annotations

import diffusekit as dk
import pytest
import torch
from diffusekit.checkpoint import load_checkpoint
from diffusekit.plugins import get_registry
from diffusekit.recipe import validate
from diffusekit.testing.cli import assert_one_line_error, run_cli
from diffusekit.testing.contracts import method_contracts
from diffusekit_video import outputs
from diffusekit_video.methods import FRAMES, BouncingMethod, MovingDigitsMethod
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


METHODS = {"video:bouncing": BouncingMethod, "video:moving-digits": MovingDigitsMethod}


@pytest.fixture(scope="module", params=sorted(METHODS))
def shipped(request):
    path = METHODS[request.param]().weights()
    if path is None:
        pytest.skip(f"{request.param} ships no weights")
    return request.param, path


def test_shipped_weights_are_small_and_match_the_recipe(shipped):
    name, path = shipped
    assert path.stat().st_size < 5 * 2**20
    checkpoint = load_checkpoint(path)
    recipe = METHODS[name]().recipe()
    method_contracts(METHODS[name](), None)["weights"][1]()  # trained by the recipe, for its steps
    assert set(checkpoint.tensors) == {f"ema.{k}" for k in dk.build(recipe).network.state_dict()}


def test_shipped_weights_sample_finite_clips(shipped):
    pipe = dk.pretrained(shipped[0])
    clips = pipe.sample(2, seed=0)
    assert clips.shape == (2, FRAMES, 1, 32, 32) and torch.isfinite(clips).all()
    assert clips.min() > -1.5 and clips.max() < 1.5


def _run(tmp_path, method: str, *sets: str):
    args = [a for s in sets for a in ("--set", s)]
    result = run_cli(
        "run", method, "--train", "--steps", "2", "--num", "2", "--no-progress", *TINY, *args, "--out", "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return load_file(tmp_path / "out" / "samples.safetensors")


def test_given_frames_come_back_bit_identical_for_every_task(tmp_path):
    """Prediction and interpolation from the simulator's clips: the given frames are held at
    t = 0, so they are the simulator's frames exactly; the others are generated."""
    out = _run(tmp_path, "video:bouncing", "task=predict", "context=3")
    assert out["x"].shape == out["truth"].shape == (2, FRAMES, 1, 32, 32)
    assert out["known"].tolist() == [[True] * 3 + [False] * (FRAMES - 3)] * 2
    assert torch.equal(out["x"][:, :3], out["truth"][:, :3]) and not torch.equal(out["x"][:, 3:], out["truth"][:, 3:])
    out = _run(tmp_path, "video:bouncing", "task=interpolate")
    assert torch.equal(out["x"][:, [0, -1]], out["truth"][:, [0, -1]]) and out["known"][:, 1:-1].sum() == 0


def test_causal_model_rolls_out_past_its_window_from_given_frames(tmp_path):
    out = _run(tmp_path, "video:moving-digits", f"length={FRAMES + 5}")
    assert out["x"].shape == (2, FRAMES + 5, 1, 32, 32) and bool(torch.isfinite(out["x"]).all())
    assert torch.equal(out["x"][:, :4], out["truth"][:, :4])  # predicted from 4 given frames by default


@pytest.mark.parametrize(
    ("setting", "words"),
    [("task=fly", "'task' must be in"), ("tsk=i2v", "neither a recipe entry nor a setting"), ("context=0", "context")],
)
def test_a_bad_method_setting_is_a_one_line_error(tmp_path, setting, words):
    result = run_cli("run", "video:bouncing", "--train", "--steps", "1", "--set", setting, cwd=tmp_path)
    assert words in assert_one_line_error(result)
    assert not (tmp_path / "outputs").exists()  # refused before training or writing anything


def test_shipped_bouncing_weights_draw_balls():
    """Unconditional clips from the shipped weights: the tracker finds 1–3 balls in most frames
    (in the simulator's clips, all of them; in noise, dozens of blobs)."""
    if BouncingMethod().weights() is None:
        pytest.skip("video:bouncing ships no weights")
    from diffusekit_video import tracking

    clips = dk.pretrained("video:bouncing").sample(8, seed=123)
    counts = tracking.count_objects(clips.clamp(-1, 1), value_range=(-1.0, 1.0))
    assert ((counts >= 1) & (counts <= 3)).mean() > 0.6


def test_shipped_digits_weights_predict_the_next_frame_better_than_copying_it():
    """From 4 given frames of held-out digits, the first predicted frame is closer to the simulator's
    than the last given frame is (a digit moves up to 3 px a frame)."""
    if MovingDigitsMethod().weights() is None:
        pytest.skip("video:moving-digits ships no weights")
    from diffusekit_video import scenes
    from diffusekit_video.rollout import rollout

    truth = scenes.MovingDigits(count=16, frames=5, seed=4321, split="test", max_speed=3).load().parts["x"]
    moving = (truth[:, 4] != truth[:, 3]).flatten(1).any(1)
    video = rollout(dk.pretrained("video:moving-digits"), 5, context=truth[:, :4], seed=0)
    predicted = (video[moving, 4] - truth[moving, 4]).square().mean()
    copied = (truth[moving, 3] - truth[moving, 4]).square().mean()
    assert predicted < copied
