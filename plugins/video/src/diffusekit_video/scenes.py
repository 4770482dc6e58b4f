r"""Short clips the plugin simulates itself: bouncing balls and moving digits (nothing is downloaded).

Both ideas are old test beds for video models: bouncing balls from Sutskever, Hinton & Taylor
(2009), "The Recurrent Temporal Restricted Boltzmann Machine", and moving digits from
Srivastava, Mansimov & Salakhutdinov (2015), "Unsupervised Learning of Video Representations
using LSTMs" (Moving MNIST). Here the digits are scikit-learn's 8×8 ones (UCI optical digits).

Coordinates. Positions are ``(x, y)`` in pixels, ``x`` to the right (columns) and ``y`` down
(rows), with the origin at the top-left corner of the canvas; pixel ``(row i, column j)``
covers ``[j, j+1] × [i, i+1]`` and its centre is ``(j + 0.5, i + 0.5)``. The box of the balls
is the canvas, ``[0, size]²``. Time is in frames: velocities are pixels per frame.

Physics of the balls. Discs of radius :math:`r_k` and mass :math:`m_k \propto r_k^2` (equal
radii: equal masses) move in straight lines between collisions. A wall reflects the normal
velocity component (:math:`v_x \to -v_x` at a vertical wall). Two discs that touch exchange
momentum along the line of centres :math:`n`; with :math:`u = (v_i - v_j)\cdot n`,

.. math:: v_i' = v_i - \frac{2 m_j}{m_i + m_j}\,u\,n, \qquad v_j' = v_j + \frac{2 m_i}{m_i + m_j}\,u\,n,

which conserves total momentum and kinetic energy exactly (the tangential components do not
change). Walls conserve kinetic energy but not momentum.

The simulation is event-driven, hence exact up to rounding: within each frame it finds the next
event of every clip (the earliest time a ball reaches a wall, :math:`(r - p)/v` or
:math:`(\text{size} - r - p)/v`, or two balls touch, the smallest root :math:`\tau \ge 0` of
:math:`|\Delta p + \Delta v\,\tau| = r_i + r_j` with the pair approaching), moves every ball in a
straight line to it, resolves it, and repeats until the frame time is used up. Nothing tunnels,
balls never overlap and never leave the box (beyond float rounding, about 1e-12 px), and no
time step needs tuning. Simultaneous events are resolved one after the other at the same instant.

All randomness comes from one generator (:func:`as_generator`): the same seed gives the same
clip, and a dataset's clips are the successive draws of ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import functools
import math
import random
from typing import Literal, NamedTuple

import attrs
import numpy as np
import torch
from attrs import validators as v
from diffusekit import ConfigError, Data, Dataset
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# randomness


def as_generator(rng: np.random.Generator | random.Random | torch.Generator | int | None) -> np.random.Generator:
    """A numpy generator from ``rng``: a generator is used as is (and advanced), an int seeds a
    new one, a ``random.Random`` or ``torch.Generator`` gives one seeded by a draw from it
    (so successive calls with the same object give different clips), ``None`` seeds 0."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, bool):
        raise TypeError("rng must be a generator or an int seed, not a bool")
    if isinstance(rng, int):
        return np.random.default_rng(rng)
    if isinstance(rng, random.Random):
        return np.random.default_rng(rng.getrandbits(128))
    if isinstance(rng, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=rng)))
    raise TypeError(f"rng must be a numpy/torch/random generator or an int seed, got {type(rng).__name__}")


# ---------------------------------------------------------------------------------------------
# bouncing balls: simulation


class Trajectory(NamedTuple):
    """Simulator states at frame times: ``positions`` and ``velocities`` of shape ``(..., F, K, 2)``
    (float64, pixels and pixels per frame); a ball that is absent is NaN."""

    positions: np.ndarray
    velocities: np.ndarray


def initial_state(
    rng: np.random.Generator | random.Random | torch.Generator | int | None,
    *,
    balls: int | tuple[int, int] = (1, 3),
    radius: float = 3.5,
    size: float = 32,
    speed: tuple[float, float] = (1.0, 2.5),
) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities ``(K, 2)`` of a fresh clip.

    The number of balls ``K`` is uniform in ``balls`` (inclusive); centres are uniform in
    ``[r, size - r]²`` with no two discs overlapping (rejection sampling); each speed is uniform
    in ``speed`` and each direction uniform on the circle.
    """
    gen = as_generator(rng)
    lo_n, hi_n = (balls, balls) if isinstance(balls, int) else balls
    n = int(gen.integers(lo_n, hi_n + 1))
    lo, hi = radius, size - radius
    if hi < lo:
        raise ValueError(f"a ball of radius {radius} does not fit in a box of {size}")
    for _ in range(1000):
        pos = np.empty((n, 2))
        placed = 0
        for _ in range(100 * n):
            candidate = gen.uniform(lo, hi, size=2)
            if all(np.hypot(*(candidate - pos[k])) >= 2 * radius for k in range(placed)):
                pos[placed] = candidate
                placed += 1
                if placed == n:
                    break
        if placed == n:
            break
    else:
        raise ValueError(f"could not place {n} balls of radius {radius} in a box of {size} without overlap")
    s = gen.uniform(speed[0], speed[1], size=n)
    angle = gen.uniform(0.0, 2.0 * math.pi, size=n)
    vel = np.stack([s * np.cos(angle), s * np.sin(angle)], axis=-1)
    return pos, vel


def _collide(pos: np.ndarray, vel: np.ndarray, mass: np.ndarray, rows: np.ndarray, i: np.ndarray, j: np.ndarray):
    """Collide, in place, balls ``i[n]`` and ``j[n]`` of clip ``rows[n]`` (touching): exchange of
    momentum along the line of centres, which conserves momentum and kinetic energy."""
    normal = pos[rows, i] - pos[rows, j]
    normal /= np.sqrt(normal[:, 0] * normal[:, 0] + normal[:, 1] * normal[:, 1])[:, None]
    dv = vel[rows, i] - vel[rows, j]
    u = (dv[:, 0] * normal[:, 0] + dv[:, 1] * normal[:, 1])[:, None]
    mi, mj = mass[rows, i][:, None], mass[rows, j][:, None]
    vel[rows, i] -= 2.0 * mj / (mi + mj) * u * normal
    vel[rows, j] += 2.0 * mi / (mi + mj) * u * normal


_MAX_EVENTS = 100_000  # per frame and clip: a guard against a bug, never reached by elastic discs


def _rollout(pos: np.ndarray, vel: np.ndarray, radii: np.ndarray, size: float, n_frames: int) -> Trajectory:
    """States after each of ``n_frames`` frames from ``(pos, vel)`` of shape ``(B, K, 2)``;
    ``radii`` ``(B, K)``; NaN marks an absent ball. Returns ``(B, n_frames, K, 2)``.

    Every clip runs its own event loop (vectorised over the clips that still have frame time
    left), so a clip's result does not depend on the others in the batch.
    """
    pos = np.array(pos, dtype=np.float64)
    vel = np.array(vel, dtype=np.float64)
    b, k = pos.shape[:2]
    radii = np.array(np.broadcast_to(radii, (b, k)), dtype=np.float64)
    mass = radii * radii  # discs of one density
    lo = np.broadcast_to(radii[..., None], pos.shape)
    hi = size - lo
    first, second = (np.array(ix, dtype=np.int64) for ix in np.triu_indices(k, 1))
    reach = radii[:, first] + radii[:, second]
    out_pos = np.empty((b, n_frames, k, 2))
    out_vel = np.empty_like(out_pos)
    with np.errstate(divide="ignore", invalid="ignore"):  # no motion: infinite times; absent balls: NaN
        for f in range(n_frames):
            remaining = np.ones(b)
            active = np.arange(b)
            for _ in range(_MAX_EVENTS):
                if len(active) == 0:
                    break
                p, v = pos[active], vel[active]
                wall = np.where(v > 0, (hi[active] - p) / v, np.where(v < 0, (lo[active] - p) / v, np.inf))
                dp, dv = p[:, first] - p[:, second], v[:, first] - v[:, second]
                approach = dp[..., 0] * dv[..., 0] + dp[..., 1] * dv[..., 1]
                speed2 = dv[..., 0] * dv[..., 0] + dv[..., 1] * dv[..., 1]
                gap = dp[..., 0] * dp[..., 0] + dp[..., 1] * dp[..., 1] - reach[active] ** 2
                disc = approach * approach - speed2 * gap
                contact = np.where(
                    (approach < -1e-12) & (disc >= 0), gap / (np.sqrt(disc) - approach), np.inf
                )  # the smaller root, in the form without cancellation
                times = np.concatenate([wall.reshape(len(active), 2 * k), contact], axis=1)
                times = np.where(np.isnan(times), np.inf, np.maximum(times, 0.0))
                event = times.argmin(1)
                when = times[np.arange(len(active)), event]
                left = remaining[active]
                happens = when <= left
                step = np.minimum(when, left)
                pos[active] += vel[active] * step[:, None, None]
                remaining[active] = np.where(happens, left - step, 0.0)
                rows, event = active[happens], event[happens]
                at_wall = event < 2 * k
                w_rows, ball, axis = rows[at_wall], event[at_wall] // 2, event[at_wall] % 2
                outward = vel[w_rows, ball, axis]
                pos[w_rows, ball, axis] = np.where(outward > 0, hi[w_rows, ball, axis], lo[w_rows, ball, axis])
                vel[w_rows, ball, axis] = -outward
                pair = event[~at_wall] - 2 * k
                _collide(pos, vel, mass, rows[~at_wall], first[pair], second[pair])
                active = active[remaining[active] > 0]
            else:
                raise RuntimeError(f"more than {_MAX_EVENTS} collisions in one frame")
            out_pos[:, f] = pos
            out_vel[:, f] = vel
    return Trajectory(out_pos, out_vel)


def simulate(
    n_frames: int,
    rng: np.random.Generator | random.Random | torch.Generator | int | None = None,
    *,
    balls: int | tuple[int, int] = (1, 3),
    radius: float = 3.5,
    size: float = 32,
    speed: tuple[float, float] = (1.0, 2.5),
) -> Trajectory:
    """One clip of bouncing balls: positions and velocities ``(n_frames, K, 2)`` at frame times.

    Frame 0 is the initial state (:func:`initial_state`); frame ``f`` is ``f`` frame-times later.
    Returns a :class:`Trajectory` (a tuple ``(positions, velocities)``).
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    pos, vel = initial_state(rng, balls=balls, radius=radius, size=size, speed=speed)
    rest = _rollout(pos[None], vel[None], np.full((1, len(pos)), radius), size, n_frames - 1)
    return Trajectory(
        np.concatenate([pos[None], rest.positions[0]]),
        np.concatenate([vel[None], rest.velocities[0]]),
    )


def continue_simulation(
    state: tuple[np.ndarray, np.ndarray],
    n_frames: int,
    *,
    radius: float | np.ndarray = 3.5,
    size: float = 32,
) -> Trajectory:
    """The simulator rolled on from ``state = (positions, velocities)`` of shape ``(..., K, 2)``
    (NaN: absent ball) for ``n_frames`` frames: a :class:`Trajectory` of shape ``(..., n_frames, K, 2)``
    holding the frames *after* the state.

    With the ``radius`` and ``size`` of the original simulation, continuing from the
    state at frame ``k`` reproduces frames ``k + 1, ...`` of that simulation bit for bit.
    ``radius`` may be one per ball (broadcast against ``(..., K)``); masses go as radius².
    """
    pos = np.asarray(state[0], dtype=np.float64)
    vel = np.asarray(state[1], dtype=np.float64)
    if pos.shape != vel.shape or pos.ndim < 2 or pos.shape[-1] != 2:
        raise ValueError(
            f"state must be positions and velocities of one shape (..., K, 2), got {pos.shape}, {vel.shape}"
        )
    lead, k = pos.shape[:-2], pos.shape[-2]
    radii = np.broadcast_to(np.asarray(radius, dtype=np.float64), (*lead, k)).reshape(-1, k)
    out = _rollout(pos.reshape(-1, k, 2), vel.reshape(-1, k, 2), radii, size, n_frames)
    shape = (*lead, n_frames, k, 2)
    return Trajectory(out.positions.reshape(shape), out.velocities.reshape(shape))


# ---------------------------------------------------------------------------------------------
# bouncing balls: rendering


def render(
    positions: np.ndarray | Tensor, radius: float | np.ndarray | Tensor = 3.5, size: int = 32, chunk: int = 8192
) -> Tensor:
    r"""White discs on black, anti-aliased: ``positions`` ``(..., K, 2)`` → float32 ``(..., 1, size, size)`` in [0, 1].

    A pixel whose centre is at distance :math:`d` from a ball's centre gets the coverage
    :math:`\mathrm{clamp}(\rho + \tfrac12 - d,\ 0,\ 1)`: a linear edge one pixel wide, which is the
    exact box-filtered coverage of a straight edge along the pixel grid and a close approximation
    for other directions. Over the plane it integrates to :math:`\pi(\rho^2 + 1/12)`, so the edge is
    put at :math:`\rho = \sqrt{r^2 - 1/12}` (0.012 px inside :math:`r` at r = 3.5) and a frame's
    total intensity is the discs' total area :math:`\sum \pi r^2`, as for exact pixel coverage: exactly
    on average over sub-pixel positions, and within 1% for a single position at r >= 2.5 (2.3% at
    r = 2: grid sampling). Overlapping discs take the maximum (their union). ``radius`` (at least
    0.3) broadcasts against ``(..., K)``; NaN positions are not drawn.

    Vectorised with torch over frames and balls, ``chunk`` images at a time: each ball is drawn
    in the window of pixels its edge can reach (9×9 at r = 3.5), not over the whole canvas.
    """
    pos = torch.as_tensor(positions, dtype=torch.float32)
    if pos.ndim < 2 or pos.shape[-1] != 2:
        raise ValueError(f"positions must have shape (..., K, 2), got {tuple(pos.shape)}")
    lead, k = pos.shape[:-2], pos.shape[-2]
    radii = torch.as_tensor(radius, dtype=torch.float32).expand(*lead, k).reshape(-1, k)
    pos = pos.reshape(-1, k, 2)
    absent = pos.isnan().any(-1) | (radii <= 0)
    pos = pos.masked_fill(absent[..., None], 0.0)
    rho = (radii.square() - 1.0 / 12.0).clamp(min=0.0).sqrt()
    edge = (rho + 0.5).masked_fill(absent, 0.0)  # a pixel's coverage is edge - distance, clamped
    out = torch.zeros(len(pos), size, size)
    if k == 0 or len(pos) == 0 or not bool((~absent).any()):
        return out.reshape(*lead, 1, size, size)
    width = int(math.floor(2.0 * float(edge.max()))) + 1  # pixels whose centres are within edge of a centre
    offsets = torch.arange(width)
    for start in range(0, len(pos), chunk):
        keep = ~absent[start : start + chunk]  # (m, K)
        frame = torch.arange(len(keep))[:, None].expand_as(keep)[keep]  # (n,) one entry per ball drawn
        p, e = pos[start : start + chunk][keep], edge[start : start + chunk][keep]  # (n, 2), (n,)
        # the window of each ball: from the first pixel whose centre is within reach
        origin = torch.ceil(p - e[:, None] - 0.5).clamp_(-width, size).long()  # (n, 2)
        cols, rows = (origin[:, 0:1] + offsets), (origin[:, 1:2] + offsets)  # (n, width)
        dx2 = (cols.float() + 0.5 - p[:, 0:1]).square_()
        dy2 = (rows.float() + 0.5 - p[:, 1:2]).square_()
        dist = (dy2[:, :, None] + dx2[:, None, :]).sqrt_()  # (n, width rows, width cols)
        coverage = torch.sub(e[:, None, None], dist, out=dist).clamp_(0.0, 1.0)
        inside_c, inside_r = (cols >= 0) & (cols < size), (rows >= 0) & (rows < size)
        coverage.mul_(inside_r[:, :, None] & inside_c[:, None, :])  # pixels off the canvas: nothing
        rows, cols = rows.clamp_(0, size - 1), cols.clamp_(0, size - 1)
        index = (frame[:, None, None] * size + rows[:, :, None]) * size + cols[:, None, :]
        flat = out[start : start + chunk].view(-1)
        flat.scatter_reduce_(0, index.view(-1), coverage.view(-1), reduce="amax")  # union: the maximum
    return out.reshape(*lead, 1, size, size)


# ---------------------------------------------------------------------------------------------
# moving digits

DIGIT_SIZE = 16
"""Side of a digit on the canvas: the 8×8 digits upscaled ×2."""
TEST_START = 1438
"""Digits ``TEST_START:`` (the last 359 of 1,797, 20%, every class 33–37 times) are the test split;
the first 1,438 are the train split."""


@functools.cache
def _all_digits() -> tuple[Tensor, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # 0..16 -> [0, 1]
    big = torch.nn.functional.interpolate(small, scale_factor=2, mode="bilinear", align_corners=False)
    return big[:, 0].contiguous(), bunch.target.copy()


def digit_images(split: Literal["train", "test", "all"] = "train") -> tuple[Tensor, np.ndarray, np.ndarray]:
    """The scikit-learn 8×8 digits of ``split``, upscaled to 16×16 in [0, 1]: ``(images (M, 16, 16),
    labels (M,), indices (M,))``, indices into ``sklearn.datasets.load_digits()``.

    Upscaling is bilinear: each 8×8 pixel is already the ink count of a 4×4 block of the original
    32×32 bitmaps, a low-pass sample of the strokes, and bilinear interpolation reconstructs the
    smooth strokes, where nearest-neighbour would add 2-pixel block edges that are not in the
    handwriting and that a model would have to learn for nothing. Values stay in [0, 1]
    (interpolation is a convex combination).
    """
    images, labels = _all_digits()
    index = {
        "train": np.arange(TEST_START),
        "test": np.arange(TEST_START, len(images)),
        "all": np.arange(len(images)),
    }[split]
    return images[index], labels[index], index


class DigitClips(NamedTuple):
    """Moving-digit clips: ``frames`` float32 ``(..., F, 1, S, S)`` in [0, 1]; ``positions`` and
    ``velocities`` int64 ``(..., F, D, 2)``, the top-left corner ``(x, y)`` of each 16×16 digit box
    and its velocity (pixels per frame) at each frame; ``digits`` ``(..., D)``, indices into
    ``sklearn.datasets.load_digits()``; ``labels`` ``(..., D)``, their classes."""

    frames: Tensor
    positions: np.ndarray
    velocities: np.ndarray
    digits: np.ndarray
    labels: np.ndarray


def _digit_start(gen: np.random.Generator, pool: np.ndarray, digits: int, size: int, max_speed: int):
    """Digit indices ``(D,)``, positions and velocities ``(D, 2)`` of one clip."""
    chosen = pool[gen.integers(0, len(pool), size=digits)]
    pos = gen.integers(0, size - DIGIT_SIZE + 1, size=(digits, 2))
    vel = np.empty((digits, 2), dtype=np.int64)
    for d in range(digits):
        vel[d] = 0
        while not vel[d].any():
            vel[d] = gen.integers(-max_speed, max_speed + 1, size=2)
    return chosen, pos, vel


def _digit_rollout(pos: np.ndarray, vel: np.ndarray, n_frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer constant-velocity motion with mirror bounces in ``[0, size - 16]``: ``(..., F, D, 2)``, frame 0 = start."""
    hi = size - DIGIT_SIZE
    pos, vel = pos.copy(), vel.copy()
    out_pos = np.empty((*pos.shape[:-2], n_frames, *pos.shape[-2:]), dtype=np.int64)
    out_vel = np.empty_like(out_pos)
    for f in range(n_frames):
        if f:
            pos += vel
            over, under = pos > hi, pos < 0
            pos[over] = 2 * hi - pos[over]
            pos[under] = -pos[under]
            vel[over | under] *= -1
        out_pos[..., f, :, :] = pos
        out_vel[..., f, :, :] = vel
    return out_pos, out_vel


def _paste_digits(images: Tensor, positions: np.ndarray, size: int, chunk: int = 1024) -> Tensor:
    """Frames ``(N, F, 1, size, size)``: digit ``images`` ``(N, D, 16, 16)`` at ``positions`` ``(N, F, D, 2)``
    on black; overlapping digits take the maximum."""
    n, f, d = positions.shape[:3]
    out = torch.zeros(n, f, size, size)
    flat = out.view(-1)
    offsets = torch.arange(DIGIT_SIZE)
    pos = torch.as_tensor(positions)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        frame = torch.arange(start * f, stop * f).view(stop - start, f, 1)  # global frame number
        for k in range(d):
            x = pos[start:stop, :, k, 0:1] + offsets  # (m, F, 16)
            y = pos[start:stop, :, k, 1:2] + offsets
            index = (frame[..., None] * size + y[..., :, None]) * size + x[..., None, :]  # (m, F, 16, 16)
            values = images[start:stop, k, None].expand(-1, f, -1, -1)
            flat.scatter_reduce_(0, index.reshape(-1), values.reshape(-1), reduce="amax")
    return out[:, :, None]


def _moving_digit_clips(
    gen: np.random.Generator, count: int, n_frames: int, digits: int, size: int, max_speed: int, split: str
) -> DigitClips:
    if size < DIGIT_SIZE:
        raise ValueError(f"the canvas must be at least {DIGIT_SIZE} pixels, got {size}")
    if not 1 <= max_speed <= size - DIGIT_SIZE:
        raise ValueError(f"max_speed must be in [1, size - {DIGIT_SIZE}], got {max_speed}")
    images, _, pool = digit_images(split)  # type: ignore[arg-type]
    all_images, all_labels = _all_digits()
    chosen = np.empty((count, digits), dtype=np.int64)
    pos0 = np.empty((count, digits, 2), dtype=np.int64)
    vel0 = np.empty_like(pos0)
    for c in range(count):
        chosen[c], pos0[c], vel0[c] = _digit_start(gen, pool, digits, size, max_speed)
    positions, velocities = _digit_rollout(pos0, vel0, n_frames, size)
    frames = _paste_digits(all_images[torch.as_tensor(chosen)], positions, size)
    return DigitClips(frames, positions, velocities, chosen, all_labels[chosen])


def moving_digits(
    n_frames: int,
    rng: np.random.Generator | random.Random | torch.Generator | int | None = None,
    *,
    digits: int = 1,
    size: int = 32,
    max_speed: int = 3,
    split: Literal["train", "test", "all"] = "train",
) -> DigitClips:
    """One clip of ``digits`` scikit-learn digits (upscaled to 16×16, :func:`digit_images`) moving on a
    ``size``×``size`` canvas: a :class:`DigitClips` without the batch axis.

    Each digit starts at a uniform integer position with its box inside the canvas and moves with a
    constant integer velocity, each component uniform in ``[-max_speed, max_speed]`` (not both 0).
    A box that would leave the canvas is mirrored back at the wall and that velocity component
    flips, so the box always lies inside the canvas and, between bounces, moves by exactly the
    velocity each frame (integer steps: the digit's pixels are the same in every frame).
    """
    out = _moving_digit_clips(as_generator(rng), 1, n_frames, digits, size, max_speed, split)
    return DigitClips(*(value[0] for value in out))


# ---------------------------------------------------------------------------------------------
# registered datasets


def _int_range(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    lo, hi = (value, value) if isinstance(value, int) else value
    return (int(lo), int(hi))


def _float_range(value: tuple[float, float] | list[float]) -> tuple[float, float]:
    lo, hi = value
    return (float(lo), float(hi))


def _ordered(minimum: float):
    def check(instance, attribute, value) -> None:
        lo, hi = value
        if not minimum <= lo <= hi:
            raise ValueError(f"{attribute.name} must be (lo, hi) with {minimum} <= lo <= hi, got {value}")

    return check


class BallClips(NamedTuple):
    """Bouncing-ball clips: ``frames`` float32 ``(N, F, 1, S, S)`` in [0, 1]; ``positions`` and
    ``velocities`` float64 ``(N, F, K, 2)`` with ``K`` the most balls a clip can have (absent balls
    are NaN); ``counts`` ``(N,)``, the number of balls of each clip; ``radius``, of every ball."""

    frames: Tensor
    positions: np.ndarray
    velocities: np.ndarray
    counts: np.ndarray
    radius: float


@attrs.frozen
class BouncingBalls(Dataset):
    """Bouncing balls (after Sutskever et al., 2009): ``count`` clips of ``frames`` frames, ``size``×``size``,
    of 1–3 white discs (``balls``, inclusive, drawn per clip) of ``radius`` pixels bouncing elastically
    off the walls and each other, starting with speeds in ``speed`` pixels per frame.

    :meth:`load` gives ``Data({"x": (count, frames, 1, size, size)})`` in [-1, 1]; :meth:`generate`
    gives the frames in [0, 1] with the simulator state of every frame. Clip ``i`` is the ``i``-th call
    of :func:`simulate` on ``numpy.random.default_rng(seed)``, rendered by :func:`render`.
    """

    count: int = attrs.field(default=5000, validator=v.ge(1))
    frames: int = attrs.field(default=16, validator=v.ge(1))
    size: int = attrs.field(default=32, validator=v.ge(4))
    balls: tuple[int, int] = attrs.field(default=(1, 3), converter=_int_range, validator=_ordered(1))
    radius: float = attrs.field(default=3.5, validator=v.gt(0.0))
    speed: tuple[float, float] = attrs.field(default=(1.0, 2.5), converter=_float_range, validator=_ordered(0.0))
    seed: int = attrs.field(default=0, validator=v.ge(0))

    def __attrs_post_init__(self) -> None:
        if 2 * self.radius > self.size:
            raise ConfigError("dataset.radius", f"a ball of radius {self.radius} does not fit in {self.size} pixels")
        free = (self.size - 2 * self.radius) ** 2
        if self.balls[1] * math.pi * self.radius**2 > 0.5 * free:
            raise ConfigError(
                "dataset.balls", f"{self.balls[1]} balls of radius {self.radius} crowd a {self.size}² box"
            )

    def generate(self) -> BallClips:
        """The clips with their simulator states (:class:`BallClips`)."""
        gen = np.random.default_rng(self.seed)
        k = self.balls[1]
        pos = np.full((self.count, k, 2), np.nan)
        vel = np.full((self.count, k, 2), np.nan)
        counts = np.empty(self.count, dtype=np.int64)
        for c in range(self.count):
            p, q = initial_state(gen, balls=self.balls, radius=self.radius, size=self.size, speed=self.speed)
            pos[c, : len(p)], vel[c, : len(q)], counts[c] = p, q, len(p)
        rest = _rollout(pos, vel, np.full((self.count, k), self.radius), self.size, self.frames - 1)
        positions = np.concatenate([pos[:, None], rest.positions], axis=1)
        velocities = np.concatenate([vel[:, None], rest.velocities], axis=1)
        return BallClips(render(positions, self.radius, self.size), positions, velocities, counts, self.radius)

    def load(self) -> Data:
        return Data({"x": self.generate().frames.mul_(2.0).sub_(1.0)})


@attrs.frozen
class MovingDigits(Dataset):
    """Moving digits (after Srivastava et al., 2015): ``count`` clips of ``frames`` frames, ``size``×``size``,
    of ``digits`` (1 or 2) scikit-learn digits upscaled to 16×16 moving with constant integer
    velocity (components up to ``max_speed``) and bouncing off the walls; see :func:`moving_digits`.

    ``split="test"`` draws only the held-out digits (the last 359 of scikit-learn's 1,797,
    :data:`TEST_START`), ``"train"`` only the others. :meth:`load` gives ``Data({"x": (count, frames,
    1, size, size)})`` in [-1, 1]; :meth:`generate` the frames in [0, 1] with positions and digits.
    """

    count: int = attrs.field(default=5000, validator=v.ge(1))
    frames: int = attrs.field(default=16, validator=v.ge(1))
    size: int = attrs.field(default=32, validator=v.ge(DIGIT_SIZE))
    digits: int = attrs.field(default=1, validator=[v.ge(1), v.le(2)])
    max_speed: int = attrs.field(default=3, validator=v.ge(1))
    seed: int = attrs.field(default=0, validator=v.ge(0))
    split: Literal["train", "test"] = attrs.field(default="train", validator=v.in_(("train", "test")))

    def __attrs_post_init__(self) -> None:
        if self.max_speed > self.size - DIGIT_SIZE:
            raise ConfigError(
                "dataset.max_speed",
                f"must be at most size - {DIGIT_SIZE} = {self.size - DIGIT_SIZE}, got {self.max_speed}",
            )

    def generate(self) -> DigitClips:
        """The clips with their positions, velocities and digits (:class:`DigitClips`)."""
        gen = np.random.default_rng(self.seed)
        return _moving_digit_clips(gen, self.count, self.frames, self.digits, self.size, self.max_speed, self.split)

    def load(self) -> Data:
        return Data({"x": self.generate().frames.mul_(2.0).sub_(1.0)})
