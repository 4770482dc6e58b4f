"""Scheduling matrices are time plans: each frame walks the ladder from noise to data, later
blocks start later, and any sampler runs them; with the exact oracle a frame of a pyramid
plan is what that frame sampled alone gives."""

import pytest
import torch
from diffusekit import TimePlan
from diffusekit.builtins import UniformGrid
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from diffusekit.testing.reference import TrigonometricSchedule
from diffusekit_gaussian import DDIM
from diffusekit_video import Autoregressive, FullSequence, Pyramid
from diffusekit_video.plans import levels
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = torch.float64
SCHEDULE = TrigonometricSchedule()


def _matrix(grid, batch: int, frames: int) -> torch.Tensor:
    """The plan's times as one ``(entries, batch, frames)`` tensor."""
    plan = grid.plan({"x": SCHEDULE}, {"x": (batch, frames, 2)})
    plan.check()
    return torch.stack([entry["x"] for entry in plan.entries])


@settings(max_examples=60, deadline=None)
@given(steps=st.integers(1, 12), frames=st.integers(1, 9), lag=st.integers(0, 14), block=st.integers(1, 4))
def test_every_frame_walks_the_ladder_and_later_blocks_start_later(steps, frames, lag, block):
    m = _matrix(Pyramid(steps=steps, lag=lag, block=block), 2, frames)
    blocks = -(-frames // block)
    assert m.shape == (steps + (blocks - 1) * lag + 1, 2, frames)
    ladder = torch.linspace(1.0, 0.0, steps + 1, dtype=F64)
    for f in range(frames):
        column = m[:, 0, f]
        assert bool((column[1:] <= column[:-1]).all()) and float(column[-1]) == 0.0
        visited = torch.unique_consecutive(column)
        assert torch.equal(visited, ladder)  # every level once, in order
        start = (f // block) * lag
        assert bool((column[: start + 1] == 1.0).all()) and (start + 1 >= len(column) or column[start + 1] < 1.0)
    assert torch.equal(m[:, 0], m[:, 1])  # one schedule for every sample of the batch


@settings(max_examples=30, deadline=None)
@given(steps=st.integers(1, 8), frames=st.integers(2, 8), lag=st.integers(1, 8))
def test_a_frame_lags_the_one_before_by_exactly_the_lag(steps, frames, lag):
    level = levels(steps, frames, lag, 1)
    for f in range(1, frames):
        assert torch.equal(level[lag:, f], level[:-lag, f - 1])


@settings(max_examples=30, deadline=None)
@given(steps=st.integers(1, 8), frames=st.integers(1, 8), block=st.integers(1, 3))
def test_autoregressive_denoises_one_block_at_a_time(steps, frames, block):
    m = _matrix(Autoregressive(steps=steps, block=block), 1, frames)[:, 0]
    for entry in m:
        moving = ((entry > 0) & (entry < 1)).nonzero().flatten()
        assert len(moving) == 0 or len({int(f) // block for f in moving}) == 1
    assert torch.equal(m, _matrix(Pyramid(steps=steps, lag=steps, block=block), 1, frames)[:, 0])


def _mixture(frames: int, seed: int = 0) -> GaussianMixture:
    """Two components, frames independent: each frame can be sampled on its own."""
    g = torch.Generator().manual_seed(seed)
    return GaussianMixture(
        torch.ones(1, dtype=F64),
        torch.randn(1, frames, 2, generator=g, dtype=F64),
        0.5 + torch.rand(1, frames, 2, generator=g, dtype=F64),
    )


def test_a_full_sequence_plan_gives_the_scalar_time_result():
    """Per-frame times equal everywhere are the scalar plan (the scalar plan's coefficients are Python
    floats, the per-frame ones tensors: the same arithmetic up to rounding)."""
    frames, steps = 4, 6
    oracle = OracleDenoiser.single(_mixture(frames), SCHEDULE)
    x1 = torch.randn(3, frames, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    per_frame = DDIM().sample(oracle, x1.clone(), FullSequence(steps=steps))
    scalar = DDIM().sample(oracle, x1.clone(), TimePlan.from_grid(UniformGrid(steps=steps), {"x": SCHEDULE}))
    assert torch.allclose(per_frame, scalar, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grid", [Pyramid(steps=5, lag=2), Autoregressive(steps=4), Pyramid(steps=6, lag=3, block=2)])
def test_each_frame_of_a_scheduling_matrix_is_that_frame_sampled_alone(grid):
    """Frames are independent under this oracle: a frame's path through the matrix is the ladder."""
    frames = 5
    mixture = _mixture(frames, seed=2)
    oracle = OracleDenoiser.single(mixture, SCHEDULE)
    x1 = torch.randn(2, frames, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    out = DDIM().sample(oracle, x1.clone(), grid)
    ladder = list(grid.times(SCHEDULE))
    for f in range(frames):
        single = GaussianMixture(mixture.weights, mixture.means[:, f], mixture.stds[:, f])
        alone = DDIM().sample(
            OracleDenoiser.single(single, SCHEDULE), x1[:, f].clone(), TimePlan.from_times(ladder, ["x"])
        )
        assert torch.allclose(out[:, f], alone, rtol=1e-10, atol=1e-10)


def test_given_frames_held_at_zero_come_back_bit_identical():
    frames = 6
    oracle = OracleDenoiser.single(_mixture(frames), SCHEDULE)
    given = torch.randn(2, frames, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    known = torch.zeros(2, frames, dtype=torch.bool)
    known[:, 0] = True  # image-to-video
    known[1, -1] = True  # and interpolation for the second clip
    plan = Pyramid(steps=5, lag=2).plan({"x": SCHEDULE}, {"x": (2, frames, 2)}).hold("x", known)
    start = torch.where(known[..., None], given, torch.randn(2, frames, 2, dtype=F64))
    out = DDIM().sample(oracle, start, plan)
    assert torch.equal(out[known], given[known]) and not torch.equal(out[~known], given[~known])
