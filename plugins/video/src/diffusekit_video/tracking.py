r"""A tracker for the plugin's own renders: blobs by threshold and connected components, matched to
the simulator's positions.

Used by the physics-fidelity benchmark: object positions in a generated video are compared with
the simulator continued from the same initial state (:func:`diffusekit_video.scenes.continue_simulation`).

Method, per frame (values in [0, 1], white objects on black):

1. the pixels above ``threshold`` are split into 4-connected components (``scipy.ndimage.label``);
   components of fewer than ``min_area`` pixels are dropped as noise;
2. each remaining component is grown by the pixels within ``grow`` pixels of it (nearest
   component wins, ``scipy.ndimage.distance_transform_edt``), so that it takes in its
   anti-aliased rim, and its position is the intensity-weighted centroid of the grown region.
   On :func:`~diffusekit_video.scenes.render`'s discs the rim is symmetric about the centre, so
   the centroid is unbiased up to grid sampling (about 0.01 px; a disc cut by a wall: a few
   hundredths of a pixel);
3. found blobs are matched one-to-one to the true positions by minimum total distance (the
   Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``).

Positions are ``(x, y)`` in pixels with pixel ``(row i, column j)`` centred at ``(j + 0.5, i + 0.5)``,
the convention of :mod:`diffusekit_video.scenes`.

Balls in contact render as one blob: the tracker then finds fewer blobs than there are balls
and the missing one is charged the penalty of :func:`position_error`. The error of the
simulator's own renders is therefore not zero; measure it as the floor of any comparison.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage, optimize
from torch import Tensor


def _images(frames: np.ndarray | Tensor, value_range: tuple[float, float]) -> np.ndarray:
    """``frames`` ``(..., 1, H, W)`` as float64 ``(N, H, W)`` in [0, 1] (``value_range`` mapped to [0, 1])."""
    if isinstance(frames, Tensor):
        frames = frames.detach().cpu().to(torch.float64).numpy()
    images = np.asarray(frames, dtype=np.float64)
    if images.ndim < 3 or images.shape[-3] != 1:
        raise ValueError(f"frames must have shape (..., 1, H, W), got {images.shape}")
    lo, hi = value_range
    return ((images - lo) / (hi - lo)).reshape(-1, *images.shape[-2:])


def find_blobs(image: np.ndarray, *, threshold: float = 0.5, min_area: int = 4, grow: float = 2.0) -> np.ndarray:
    """Centroids ``(M, 2)`` (``x``, ``y``) of the blobs of one image ``(H, W)`` in [0, 1], sorted by ``y`` then ``x``."""
    image = np.clip(np.asarray(image, dtype=np.float64), 0.0, None)
    labels, n = ndimage.label(image > threshold)
    if n == 0:
        return np.zeros((0, 2))
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    small = areas < min_area
    small[0] = False
    labels[small[labels]] = 0
    ids = np.nonzero(areas >= min_area)[0]
    ids = ids[ids > 0]
    if len(ids) == 0:
        return np.zeros((0, 2))
    distance, (nearest_r, nearest_c) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    grown = np.where(distance <= grow, labels[nearest_r, nearest_c], 0)
    rows_cols = np.asarray(ndimage.center_of_mass(image, grown, ids), dtype=np.float64).reshape(-1, 2)
    centres = rows_cols[:, ::-1] + 0.5  # (row, col) -> (x, y) of pixel centres
    return centres[np.lexsort((centres[:, 0], centres[:, 1]))]


def track(
    frames: np.ndarray | Tensor,
    *,
    threshold: float = 0.5,
    min_area: int = 4,
    grow: float = 2.0,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> list[np.ndarray]:
    """The blobs of every frame of ``frames`` ``(..., 1, H, W)`` (flattened in order): a list of ``(M_f, 2)``
    centroids (:func:`find_blobs`). ``value_range`` is the black and white of the frames: ``(-1, 1)``
    for a model's outputs."""
    return [
        find_blobs(image, threshold=threshold, min_area=min_area, grow=grow) for image in _images(frames, value_range)
    ]


def count_objects(
    frames: np.ndarray | Tensor,
    *,
    threshold: float = 0.5,
    min_area: int = 4,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """The number of blobs in each frame of ``frames`` ``(..., 1, H, W)``: an int array of shape ``(...)``."""
    images = _images(frames, value_range)
    counts = np.empty(len(images), dtype=np.int64)
    for i, image in enumerate(images):
        labels, n = ndimage.label(image > threshold)
        counts[i] = int((np.bincount(labels.ravel(), minlength=n + 1)[1:] >= min_area).sum())
    return counts.reshape(np.shape(frames)[:-3])


class Match(NamedTuple):
    """A one-to-one matching of found blobs to true positions: ``found[i]`` goes with ``truth[j]`` for
    ``(i, j)`` in ``zip(found_index, truth_index)`` at ``distances``; the rest are unmatched."""

    found_index: np.ndarray
    truth_index: np.ndarray
    distances: np.ndarray


def match(found: np.ndarray, truth: np.ndarray) -> Match:
    """The matching of ``found`` ``(M, 2)`` to ``truth`` ``(K, 2)`` of least total distance with
    ``min(M, K)`` pairs (Hungarian algorithm). Rows of ``truth`` with a NaN (absent balls) are ignored;
    indices refer to the rows given."""
    found = np.asarray(found, dtype=np.float64).reshape(-1, 2)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 2)
    present = np.nonzero(~np.isnan(truth).any(-1))[0]
    if len(found) == 0 or len(present) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Match(empty, empty, np.zeros(0))
    cost = np.hypot(*(found[:, None, :] - truth[None, present, :]).transpose(2, 0, 1))
    rows, cols = optimize.linear_sum_assignment(cost)
    return Match(rows.astype(np.int64), present[cols].astype(np.int64), cost[rows, cols])


def position_error(
    frames: np.ndarray | Tensor,
    true_positions: np.ndarray | Tensor,
    *,
    threshold: float = 0.5,
    min_area: int = 4,
    grow: float = 2.0,
    penalty: float | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    r"""Mean tracking error in pixels of each frame: ``frames`` ``(..., 1, H, W)`` against ``true_positions``
    ``(..., K, 2)`` (same leading shape; NaN rows: absent balls) → float array ``(...)``.

    Rule: with :math:`M` blobs found, :math:`K` balls present and the :func:`match` of
    :math:`\min(M, K)` pairs at distances :math:`d_i`, the error is

    .. math:: \frac{\sum_i d_i + \text{penalty}\cdot |M - K|}{\max(M, K)}

    (0 when both are 0): every missed ball and every extra blob counts as one object off by
    ``penalty``, by default the box diagonal :math:`\sqrt{H^2 + W^2}` (45.3 px at 32×32), no less than
    any distance inside the frame, so that matching as many pairs as possible is never worse.
    """
    images = _images(frames, value_range)
    truth = true_positions.detach().cpu().numpy() if isinstance(true_positions, Tensor) else true_positions
    truth = np.asarray(truth, dtype=np.float64)
    lead = np.shape(frames)[:-3]
    if truth.shape[:-2] != tuple(lead) or truth.shape[-1] != 2:
        raise ValueError(f"true_positions must have shape {(*lead, 'K', 2)}, got {truth.shape}")
    truth = truth.reshape(len(images), -1, 2)
    if penalty is None:
        penalty = math.hypot(*images.shape[-2:])
    errors = np.empty(len(images))
    for f, image in enumerate(images):
        found = find_blobs(image, threshold=threshold, min_area=min_area, grow=grow)
        present = int((~np.isnan(truth[f]).any(-1)).sum())
        paired = match(found, truth[f])
        total = max(len(found), present)
        unmatched = abs(len(found) - present)
        errors[f] = (paired.distances.sum() + penalty * unmatched) / total if total else 0.0
    return errors.reshape(lead)
