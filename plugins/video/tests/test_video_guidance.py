"""History guidance: the guided prediction is the classifier-free combination of the model with
and without the given frames, it leaves the given frames and unguided clips alone, and a cached
causal rollout computes what the recompute computes."""

from __future__ import annotations

import attrs
import diffusekit as dk
import torch
from diffusekit_gaussian.history import HistoryGuidance, given_elements, stand_in
from diffusekit_video.rollout import CachedFrames, with_frames
from hypothesis import given, settings
from hypothesis import strategies as st
from test_video_rollout import tiny

examples = settings(max_examples=10, deadline=None, derandomize=True)


def _clip(seed: int, frames: int, held: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, frames, 1, 8, 8, generator=g)
    t = torch.rand(2, frames, generator=g, dtype=torch.float64) * 0.9 + 0.05
    t[:, :held] = 0.0
    return x, t


def test_given_frames_are_read_off_the_time():
    t = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.0], [0.3, 0.0, 0.3]])
    assert given_elements(t).tolist() == [[True, True, False], [False, False, False], [False, True, False]]
    assert given_elements(torch.full((2, 3), 0.4)) is None and given_elements(torch.zeros(4)) is None


@examples
@given(scale=st.floats(0.0, 4.0), held=st.integers(1, 3), seed=st.integers(0, 2**16), causal=st.booleans())
def test_guided_prediction_is_the_classifier_free_combination(scale, held, seed, causal):
    pipe = tiny(causal)
    x, t = _clip(seed, 4, held)
    guided = HistoryGuidance(scale).wrap(pipe.denoiser)({"x": x}, {"x": t})["x"]
    cond = pipe.denoiser({"x": x}, {"x": t})["x"]
    absent_x = torch.cat([stand_in(range(held), x).expand(2, -1, -1, -1, -1), x[:, held:]], 1)
    absent_t = torch.cat([torch.ones_like(t[:, :held]), t[:, held:]], 1)
    uncond = pipe.denoiser({"x": absent_x}, {"x": absent_t})["x"]
    want = uncond.x0[:, held:] + scale * (cond.x0[:, held:] - uncond.x0[:, held:])
    assert torch.allclose(guided.x0[:, held:], want, atol=1e-5)  # x0 is affine in the value at fixed x, t
    assert torch.equal(guided.value[:, :held], cond.value[:, :held])


def test_neutral_and_unconditional_clips_are_left_alone():
    pipe = tiny(causal=False)
    x, t = _clip(0, 4, 2)
    plain = pipe.denoiser({"x": x}, {"x": t})["x"].value
    assert torch.equal(HistoryGuidance(3.0).neutral().wrap(pipe.denoiser)({"x": x}, {"x": t})["x"].value, plain)
    t[:, :2] = 0.5  # nothing given
    out = HistoryGuidance(3.0).wrap(pipe.denoiser)({"x": x}, {"x": t})["x"].value
    assert torch.equal(out, pipe.denoiser({"x": x}, {"x": t})["x"].value)


@examples
@given(scale=st.floats(0.5, 3.0), held=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_cached_guided_frames_equal_the_guided_recompute(scale, held, seed):
    """The new frame through the two caches (history, history as noise) is the guided prediction
    of the full causal forward over the whole video, the history held at t = 0."""
    pipe = tiny(causal=True)
    module = pipe.network
    x, t = _clip(seed, held + 1, held)
    with torch.no_grad():
        full = HistoryGuidance(scale).wrap(pipe.denoiser)({"x": x}, {"x": t})["x"].x0[:, held:]
        cache = module.cache_frames(x[:, :held])
        absent = module.cache_frames(stand_in(range(held), x).expand(2, -1, -1, -1, -1), 1.0)
        view = attrs.evolve(with_frames(pipe, 1, CachedFrames(module, cache, absent, scale)), guidance=None)
        cached = view.denoiser({"x": x[:, held:]}, {"x": t[:, held:]})["x"].x0
    assert torch.allclose(cached, full, atol=1e-5), (cached - full).abs().max()


def test_video_history_is_an_alias_that_old_recipes_and_the_cli_still_know(tmp_path):
    """History guidance moved to the gaussian plugin; checkpoints whose recipe names
    ``video:history`` (the shipped weights were saved so) still load with it."""
    from diffusekit.checkpoint import load_checkpoint
    from diffusekit.testing.cli import run_cli
    from diffusekit_video.methods import BouncingMethod

    path = BouncingMethod().weights()
    assert load_checkpoint(path).recipe.guidance.name == "video:history"
    pipe = dk.load(path)
    assert isinstance(pipe.guidance, HistoryGuidance) and pipe.guidance.scale == 2.0
    listed = run_cli("list", "guidance", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert any(
        line.split() == ["video:history", "alias", "of", "gaussian:history"] for line in listed.stdout.splitlines()
    )
