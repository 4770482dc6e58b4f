"""The simulated scenes and the tracker: physics, determinism, rendering, tracking, moving digits, splits."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from diffusekit import ConfigError
from diffusekit_video import scenes, tracking
from hypothesis import assume, given
from hypothesis import strategies as st

seeds = st.integers(0, 2**32 - 1)
radii = st.floats(2.0, 5.0)
speeds = st.tuples(st.floats(0.2, 3.0), st.floats(0.0, 2.0)).map(lambda t: (t[0], t[0] + t[1]))


def kinetic_energy(vel: np.ndarray, radius) -> np.ndarray:
    mass = np.broadcast_to(np.asarray(radius, dtype=np.float64) ** 2, vel.shape[:-1])
    return 0.5 * (mass * (vel**2).sum(-1)).sum(-1)


def pair_gaps(pos: np.ndarray, radius) -> np.ndarray:
    """Distance between surfaces of every pair of balls at every frame (negative: overlap)."""
    r = np.broadcast_to(np.asarray(radius, dtype=np.float64), pos.shape[-2:-1])
    i, j = np.triu_indices(pos.shape[-2], 1)
    return np.hypot(*(pos[..., i, :] - pos[..., j, :]).transpose(-1, *range(pos.ndim - 1))) - (r[i] + r[j])


def converging(seed: int, n: int, radius: np.ndarray, size: float = 1000.0, spread: float = 15.0):
    """Balls on a circle around the box centre, aimed near the centre: collisions, no walls."""
    g = np.random.default_rng(seed)
    angle = 2 * np.pi * np.arange(n) / n + g.uniform(-0.3, 0.3, n)
    direction = np.stack([np.cos(angle), np.sin(angle)], -1)
    pos = size / 2 + spread * direction
    vel = -g.uniform(0.5, 2.0, (n, 1)) * direction + g.uniform(-0.2, 0.2, (n, 2))
    return pos, vel


# --- physics ---------------------------------------------------------------------------------


def test_head_on_collision_of_equal_balls_exchanges_their_velocities():
    pos = np.array([[10.0, 16.0], [22.0, 16.0]])
    vel = np.array([[1.0, 0.0], [-0.5, 0.0]])
    out = scenes.continue_simulation((pos, vel), 6, radius=3.0, size=32)
    # contact when the gap of 6 closes at 1.5 px/frame: after 4 frames; then the velocities swap
    np.testing.assert_allclose(out.velocities[-1], [[-0.5, 0.0], [1.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(out.positions[-1], [[13.0, 16.0], [22.0, 16.0]], atol=1e-9)


def test_a_wall_reflects_the_normal_component_only():
    out = scenes.continue_simulation((np.array([[4.0, 16.0]]), np.array([[-1.0, 0.5]])), 2, radius=3.0, size=32)
    np.testing.assert_allclose(out.positions[-1], [[4.0, 17.0]], atol=1e-12)  # to x = 3 and back
    np.testing.assert_allclose(out.velocities[-1], [[1.0, 0.5]], atol=1e-12)


@given(seeds, st.integers(2, 3), st.lists(radii, min_size=3, max_size=3))
def test_collisions_conserve_momentum_and_kinetic_energy(seed, n, radius):
    radius = np.array(radius[:n])
    pos, vel = converging(seed, n, radius)
    out = scenes.continue_simulation((pos, vel), 32, radius=radius, size=1000.0)
    mass = radius[:, None] ** 2
    momentum = (mass * out.velocities).sum(-2)
    np.testing.assert_allclose(momentum, np.broadcast_to((mass * vel).sum(0), momentum.shape), rtol=0, atol=1e-9)
    energy = kinetic_energy(out.velocities, radius)
    np.testing.assert_allclose(energy, kinetic_energy(vel, radius), rtol=1e-9)
    assert pair_gaps(out.positions, radius).min() > -1e-9


def test_converging_balls_do_collide():
    """The setting of the conservation property is not vacuous: velocities change."""
    changed = 0
    for seed in range(20):
        pos, vel = converging(seed, 3, np.full(3, 4.0))
        out = scenes.continue_simulation((pos, vel), 32, radius=4.0, size=1000.0)
        changed += not np.allclose(out.velocities[-1], vel)
    assert changed >= 15


@given(seeds, st.integers(1, 3), radii, speeds)
def test_a_clip_keeps_its_energy_stays_in_the_box_and_balls_never_overlap(seed, n, radius, speed):
    out = scenes.simulate(32, seed, balls=n, radius=radius, speed=speed)
    assert out.positions.shape == out.velocities.shape == (32, n, 2)
    energy = kinetic_energy(out.velocities, radius)
    np.testing.assert_allclose(energy, energy[0], rtol=1e-9)
    assert (out.positions >= radius - 1e-9).all() and (out.positions <= 32 - radius + 1e-9).all()
    if n > 1:
        assert pair_gaps(out.positions, radius).min() > -1e-9


def test_crowded_boxes_do_not_overlap():
    """Three large, fast balls in a small box collide often, also pinned against walls; they never overlap."""
    worst = min(
        pair_gaps(scenes.simulate(64, seed, balls=3, radius=5.0, speed=(2.0, 3.0)).positions, 5.0).min()
        for seed in range(20)
    )
    assert worst > -1e-9


def test_same_seed_same_clip_different_seed_different_clip():
    a, b = scenes.simulate(16, 7), scenes.simulate(16, 7)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.velocities, b.velocities)
    c = scenes.simulate(16, 8)
    assert a.positions.shape != c.positions.shape or not np.allclose(a.positions, c.positions)
    # every kind of generator is a seed
    assert np.array_equal(
        scenes.simulate(8, random.Random(3)).positions, scenes.simulate(8, random.Random(3)).positions
    )
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert np.array_equal(scenes.simulate(8, g1).positions, scenes.simulate(8, g2).positions)


def test_dataset_clips_are_the_successive_simulations_of_its_seed():
    data = scenes.BouncingBalls(count=5, frames=12, seed=4)
    clips = data.generate()
    gen = np.random.default_rng(4)
    for i in range(5):
        alone = scenes.simulate(12, gen)
        k = len(alone.positions[0])
        assert clips.counts[i] == k and np.isnan(clips.positions[i, :, k:]).all()
        np.testing.assert_array_equal(clips.positions[i, :, :k], alone.positions)
        np.testing.assert_array_equal(clips.velocities[i, :, :k], alone.velocities)
        torch.testing.assert_close(clips.frames[i], scenes.render(alone.positions, 3.5))
    again = scenes.BouncingBalls(count=5, frames=12, seed=4).load().parts["x"]
    torch.testing.assert_close(again, clips.frames * 2 - 1, rtol=0, atol=1e-6)
    other = scenes.BouncingBalls(count=5, frames=12, seed=5).load().parts["x"]
    assert not torch.equal(again, other)


@given(seeds, st.integers(0, 14))
def test_continuing_from_frame_k_reproduces_the_rest_of_the_clip(seed, k):
    clip = scenes.simulate(16, seed, radius=4.0)
    rest = scenes.continue_simulation((clip.positions[k], clip.velocities[k]), 15 - k, radius=4.0)
    np.testing.assert_array_equal(rest.positions, clip.positions[k + 1 :])
    np.testing.assert_array_equal(rest.velocities, clip.velocities[k + 1 :])


def test_continuing_a_batch_of_dataset_states():
    clips = scenes.BouncingBalls(count=20, frames=16, seed=1).generate()
    rest = scenes.continue_simulation((clips.positions[:, 3], clips.velocities[:, 3]), 12)
    assert rest.positions.shape == (20, 12, 3, 2)
    np.testing.assert_array_equal(rest.positions, clips.positions[:, 4:])


# --- rendering -------------------------------------------------------------------------------


def dense_render(pos: np.ndarray, radius: float, size: int = 32) -> torch.Tensor:
    """The same coverage rule evaluated on every pixel for every ball: the reference of the windowed renderer."""
    p = torch.as_tensor(pos, dtype=torch.float32)
    c = torch.arange(size) + 0.5
    d = ((c - p[..., 1:2])[..., :, None] ** 2 + (c - p[..., 0:1])[..., None, :] ** 2).sqrt()
    return (math.sqrt(radius**2 - 1 / 12) + 0.5 - d).clamp(0, 1).nan_to_num(0.0).amax(-3)[..., None, :, :]


@given(seeds, st.integers(1, 3), st.floats(2.5, 5.0))
def test_total_intensity_is_the_area_of_the_discs(seed, n, radius):
    gen = np.random.default_rng(seed)
    pos = gen.uniform(radius + 0.5, 32 - radius - 0.5, size=(n, 2))
    assume(n == 1 or pair_gaps(pos, radius).min() > 1.0)
    frame = scenes.render(pos[None], radius)
    assert frame.shape == (1, 1, 32, 32) and frame.dtype == torch.float32
    assert 0.0 <= frame.min() and frame.max() <= 1.0
    assert float(frame.sum()) == pytest.approx(n * math.pi * radius**2, rel=0.02)


@pytest.mark.parametrize("radius", [1.5, 2.0, 3.5, 5.0])
def test_total_intensity_is_the_area_of_the_disc_on_average_over_positions(radius):
    """The grid makes a frame's total fluctuate with the sub-pixel position (2% at r = 2); its mean is exact."""
    pos = np.random.default_rng(0).uniform(radius + 0.5, 32 - radius - 0.5, size=(4000, 1, 2))
    totals = scenes.render(pos, radius).sum((-1, -2, -3)).double()
    assert float(totals.mean()) == pytest.approx(math.pi * radius**2, rel=2e-3)


def test_the_windowed_renderer_equals_the_dense_one():
    gen = np.random.default_rng(0)
    pos = gen.uniform(-8, 40, size=(300, 3, 2))  # also balls cut by the edge and off the canvas
    pos[::5, 2] = np.nan
    torch.testing.assert_close(scenes.render(pos, 3.5), dense_render(pos, 3.5), rtol=0, atol=1e-6)


# --- tracking --------------------------------------------------------------------------------


@given(seeds, st.integers(1, 3), st.floats(2.5, 5.0))
def test_the_tracker_finds_separate_balls_within_half_a_pixel(seed, n, radius):
    pos, _ = scenes.initial_state(seed, balls=n, radius=radius)
    assume(n == 1 or pair_gaps(pos, radius).min() > 2.0)
    frame = scenes.render(pos[None], radius)
    found = tracking.track(frame)[0]
    assert len(found) == n
    paired = tracking.match(found, pos)
    assert len(paired.distances) == n and paired.distances.max() < 0.5
    assert tracking.position_error(frame, pos[None])[0] < 0.5


def test_position_error_charges_the_box_diagonal_per_missed_or_extra_ball():
    pos = np.array([[8.0, 8.0], [24.0, 24.0]])
    frame = scenes.render(pos[None], 3.0)[0]
    diagonal = math.hypot(32, 32)
    assert tracking.position_error(frame[None], pos[None])[0] < 0.05
    # one ball rendered, two expected: one match at ~0 and one miss
    one = scenes.render(pos[None, :1], 3.0)[0]
    assert tracking.position_error(one[None], pos[None])[0] == pytest.approx(diagonal / 2, abs=0.05)
    # two rendered, one expected (the other absent: NaN): one extra blob
    absent = np.array([[8.0, 8.0], [np.nan, np.nan]])
    assert tracking.position_error(frame[None], absent[None])[0] == pytest.approx(diagonal / 2, abs=0.05)
    # nothing rendered, nothing expected
    assert tracking.position_error(torch.zeros(1, 1, 32, 32), np.full((1, 2, 2), np.nan))[0] == 0.0
    # frames in [-1, 1] and a custom penalty; leading dimensions are kept
    errors = tracking.position_error(one[None, None] * 2 - 1, pos[None, None], value_range=(-1, 1), penalty=10.0)
    assert errors.shape == (1, 1) and errors[0, 0] == pytest.approx(5.0, abs=0.05)
    assert tracking.count_objects(torch.stack([frame, one])).tolist() == [2, 1]


def test_the_tracker_follows_a_simulated_clip():
    clips = scenes.BouncingBalls(count=50, frames=16, seed=2).generate()
    errors = tracking.position_error(clips.frames, clips.positions)
    assert errors.shape == (50, 16)
    assert np.median(errors) < 0.05 and (errors < 0.5).mean() > 0.9  # the rest: balls in contact, one blob


# --- moving digits ---------------------------------------------------------------------------


def bounding_box(image: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = torch.nonzero(image[0] > 0, as_tuple=True)
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


@given(seeds, st.integers(1, 5))
def test_a_digit_moves_by_its_velocity_and_stays_on_the_canvas(seed, max_speed):
    clip = scenes.moving_digits(20, seed, max_speed=max_speed)
    assert clip.frames.shape == (20, 1, 32, 32) and 0 <= clip.frames.min() and clip.frames.max() <= 1
    boxes = np.array([bounding_box(f) for f in clip.frames])
    # the box of the ink is the digit box shifted by a fixed offset: the digit moves rigidly with the positions
    np.testing.assert_array_equal(
        boxes[:, :2] - clip.positions[:, 0], np.broadcast_to(boxes[0, :2] - clip.positions[0, 0], (20, 2))
    )
    np.testing.assert_array_equal(boxes[:, 2:] - boxes[:, :2], np.broadcast_to(boxes[0, 2:] - boxes[0, :2], (20, 2)))
    assert (boxes >= 0).all() and (boxes <= 31).all()
    pos, vel = clip.positions[:, 0], clip.velocities[:, 0]
    assert ((pos >= 0) & (pos <= 16)).all() and (np.abs(vel) <= max_speed).all() and vel[0].any()
    for f in range(19):
        step = pos[f + 1] - pos[f]
        for axis in range(2):
            if 0 <= pos[f, axis] + vel[f, axis] <= 16:  # no bounce: a step of exactly the velocity
                assert step[axis] == vel[f, axis] and vel[f + 1, axis] == vel[f, axis]
            else:  # bounce: mirrored at the wall, the component flips
                wall = 0 if pos[f, axis] + vel[f, axis] < 0 else 16
                assert pos[f + 1, axis] == 2 * wall - (pos[f, axis] + vel[f, axis])
                assert vel[f + 1, axis] == -vel[f, axis]
    image = scenes.digit_images("all")[0][clip.digits[0]]
    x, y = clip.positions[5, 0]
    torch.testing.assert_close(clip.frames[5, 0, y : y + 16, x : x + 16], image)


def test_test_digits_are_disjoint_from_train_digits():
    _, _, train = scenes.digit_images("train")
    _, test_labels, test = scenes.digit_images("test")
    assert len(train) + len(test) == 1797 and not set(train) & set(test)
    assert set(test_labels.tolist()) == set(range(10))
    train_clips = scenes.MovingDigits(count=300, digits=2, split="train").generate()
    test_clips = scenes.MovingDigits(count=300, digits=2, split="test").generate()
    assert set(train_clips.digits.ravel()) <= set(train)
    assert set(test_clips.digits.ravel()) <= set(test)
    # the frames really show the chosen digits: the ink of a two-digit frame is the union of both
    images = scenes.digit_images("all")[0]
    frame, (a, b), (pa, pb) = test_clips.frames[0, 0, 0], test_clips.digits[0], test_clips.positions[0, 0]
    expected = torch.zeros(32, 32)
    expected[pa[1] : pa[1] + 16, pa[0] : pa[0] + 16] = images[a]
    region = expected[pb[1] : pb[1] + 16, pb[0] : pb[0] + 16]
    expected[pb[1] : pb[1] + 16, pb[0] : pb[0] + 16] = torch.maximum(region, images[b])
    torch.testing.assert_close(frame, expected)


def test_digit_images_are_the_sklearn_digits_upscaled():
    from sklearn.datasets import load_digits

    images, labels, index = scenes.digit_images("all")
    small = torch.tensor(load_digits().images, dtype=torch.float32) / 16
    assert images.shape == (1797, 16, 16) and 0 <= images.min() and images.max() <= 1
    # bilinear x2, then 2x2 averaging, is the separable [1/8, 3/4, 1/8] blur of the original (edges replicated)
    pooled = torch.nn.functional.avg_pool2d(images[:, None], 2)
    padded = torch.nn.functional.pad(small[:, None], (1, 1, 1, 1), mode="replicate")
    kernel = torch.tensor([0.125, 0.75, 0.125])
    blurred = torch.nn.functional.conv2d(padded, (kernel[:, None] * kernel[None, :])[None, None])
    torch.testing.assert_close(pooled, blurred, rtol=0, atol=1e-6)
    assert np.array_equal(labels, load_digits().target) and np.array_equal(index, np.arange(1797))


# --- the registered datasets -----------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset",
    [
        scenes.BouncingBalls(count=8, frames=16),
        scenes.BouncingBalls(count=4, frames=32, balls=(3, 3), speed=[2, 3]),
        scenes.MovingDigits(count=8, frames=16),
        scenes.MovingDigits(count=4, frames=24, digits=2, split="test"),
    ],
)
def test_load_gives_float_clips_in_minus_one_to_one(dataset):
    x = dataset.load().parts["x"]
    assert x.shape == (dataset.count, dataset.frames, 1, 32, 32) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: scenes.BouncingBalls(count=0),
        lambda: scenes.BouncingBalls(balls=(2, 1)),
        lambda: scenes.BouncingBalls(balls=(0, 2)),
        lambda: scenes.BouncingBalls(speed=(2.0, 1.0)),
        lambda: scenes.BouncingBalls(radius=20.0),
        lambda: scenes.BouncingBalls(balls=(1, 12), radius=5.0),
        lambda: scenes.MovingDigits(digits=3),
        lambda: scenes.MovingDigits(split="valid"),
        lambda: scenes.MovingDigits(size=12),
        lambda: scenes.MovingDigits(max_speed=17),
        lambda: scenes.MovingDigits(seed=-1),
    ],
)
def test_invalid_settings_are_refused(make):
    with pytest.raises((ValueError, ConfigError)):
        make()
