"""Rollouts beyond the training window: given frames kept exactly, reproducible chunks, and the
cached causal rollout computing what the recomputing one computes."""

from __future__ import annotations

import attrs
import diffusekit as dk
import pytest
import torch
from diffusekit.recipe import ComponentSpec
from diffusekit_video.methods import BouncingMethod
from diffusekit_video.rollout import CachedFrames, rollout, with_frames
from hypothesis import given, settings
from hypothesis import strategies as st

WINDOW = 4


def tiny(causal: bool) -> dk.Pipeline:
    """The bouncing recipe shrunk (8×8 frames, a 4-frame window), its weights perturbed from zero."""
    recipe = BouncingMethod().recipe()
    params = dict(channels=1, size=8, patch=4, d_model=16, layers=1, heads=2, frames=WINDOW, causal=causal, refine=2)
    recipe = attrs.evolve(
        recipe,
        parts={"x": attrs.evolve(recipe.parts["x"], shape=(WINDOW, 1, 8, 8))},
        network=ComponentSpec("video:st_transformer", params),
        grid=ComponentSpec("video:full_sequence", {"steps": 3}),
        method=None,
    )
    pipe = dk.build(recipe)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in pipe.network.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return pipe


@settings(max_examples=12, deadline=None, derandomize=True)
@given(causal=st.booleans(), given_frames=st.integers(0, 3), extra=st.integers(1, 2 * WINDOW), chunk=st.integers(1, 3))
def test_rollout_keeps_the_given_frames_and_is_reproducible(causal, given_frames, extra, chunk):
    pipe = tiny(causal)
    context = torch.rand(2, given_frames, 1, 8, 8) * 2 - 1
    length = given_frames + extra
    kwargs = dict(context=context if given_frames else None, num=2, chunk=chunk, seed=3)
    video = rollout(pipe, length, **kwargs)
    assert video.shape == (2, length, 1, 8, 8) and bool(torch.isfinite(video).all())
    assert torch.equal(video[:, :given_frames], context)
    assert torch.equal(video, rollout(pipe, length, **kwargs))
    assert not torch.equal(video[:, given_frames:], rollout(pipe, length, **{**kwargs, "seed": 4})[:, given_frames:])


def test_cached_frames_network_is_the_causal_forward_on_the_new_frames():
    """What the sampler sees through the cache is the full causal forward's output for the new frames."""
    pipe = tiny(causal=True)
    module = pipe.network
    g = torch.Generator().manual_seed(0)
    video, t = torch.randn(2, 7, 1, 8, 8, generator=g), torch.rand(2, 7, generator=g)
    t[:, :5] = 0.0  # five finished frames, two being denoised
    with torch.no_grad():
        full = module(video, t)
        cached = CachedFrames(module, module.cache_frames(video[:, :5]))(video[:, 5:], t[:, 5:])
    assert torch.allclose(cached, full[:, 5:], atol=1e-5)


def test_a_bidirectional_window_cannot_generate_a_whole_window_per_chunk():
    with pytest.raises(ValueError, match="window"):
        rollout(tiny(causal=False), 9, num=1, chunk=WINDOW)


def test_with_frames_changes_only_the_frame_count():
    pipe = tiny(causal=False)
    view = with_frames(pipe, 9)
    assert view.recipe.parts["x"].shape == (9, 1, 8, 8) and view.network is pipe.network
    assert view.sample(1, seed=0).shape == (1, 9, 1, 8, 8)


def test_a_cached_rollout_takes_more_videos_than_a_sampling_batch():
    """The cache holds every video, so the chunk is sampled as one batch whatever sample.batch_size says."""
    pipe = tiny(causal=True)
    small = attrs.evolve(pipe, recipe=attrs.evolve(pipe.recipe, sample=attrs.evolve(pipe.recipe.sample, batch_size=3)))
    context = torch.rand(7, 2, 1, 8, 8) * 2 - 1
    assert torch.equal(rollout(small, 5, context=context, seed=1), rollout(pipe, 5, context=context, seed=1))
