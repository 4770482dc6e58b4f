"""Cameras: rigid extrinsics, centres at the eye, the target at the image centre, rays and Plücker coordinates."""

from __future__ import annotations

import math

import pytest
import torch
from diffusekit_multiview import cameras
from hypothesis import given, settings
from hypothesis import strategies as st

fast = settings(max_examples=20, deadline=None, derandomize=True)
seeds = st.integers(0, 2**31 - 1)
sizes = st.tuples(st.integers(2, 24), st.integers(2, 24))
fovs = st.floats(10.0, 120.0)


def random_eyes(seed: int, n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Eyes and targets, float64, with the viewing direction well away from the up axis."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5
    azimuth = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    elevation = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * math.radians(160)
    radius = 1.0 + 4.0 * torch.rand(n, generator=g, dtype=torch.float64)
    return target + cameras.on_sphere(azimuth, elevation, radius), target


@fast
@given(seeds)
def test_extrinsics_are_rigid_with_the_camera_centre_at_the_eye(seed):
    eye, target = random_eyes(seed)
    e = cameras.look_at(eye, target)
    r = e[..., :3, :3]
    torch.testing.assert_close(r @ r.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(r))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(len(r), dtype=torch.float64))
    torch.testing.assert_close(e[..., 3, :], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).expand(len(e), 4))
    torch.testing.assert_close(cameras.centres(e), eye)
    assert (r[..., 0, 1].abs() < 1e-12).all()  # no roll: the right axis is horizontal


@fast
@given(seeds, sizes, fovs)
def test_the_target_projects_to_the_image_centre_in_front_of_the_camera(seed, size, fov):
    eye, target = random_eyes(seed)
    e = cameras.look_at(eye, target)
    pixel, depth = cameras.project(target, e, size, fov)
    h, w = size
    torch.testing.assert_close(pixel, torch.tensor([w / 2, h / 2], dtype=torch.float64).expand_as(pixel))
    torch.testing.assert_close(depth, torch.linalg.vector_norm(target - eye, dim=-1))


def test_a_camera_on_the_z_axis_has_the_world_axes():
    e = cameras.orbit(1, radius=2.5, elevation_deg=0.0, dtype=torch.float64)[0]
    expected = torch.eye(4, dtype=torch.float64)
    expected[2, 3] = -2.5
    torch.testing.assert_close(e, expected)


@fast
@given(seeds, sizes, fovs, st.floats(0.1, 10.0))
def test_rays_are_unit_and_pass_through_their_pixel_centres(seed, size, fov, distance):
    eye, target = random_eyes(seed, 2)
    e = cameras.look_at(eye, target)
    origins, directions = cameras.rays(e, size, fov)
    h, w = size
    assert origins.shape == directions.shape == (2, h, w, 3)
    torch.testing.assert_close(torch.linalg.vector_norm(directions, dim=-1), torch.ones(2, h, w, dtype=torch.float64))
    torch.testing.assert_close(origins, eye[:, None, None, :].expand_as(origins))
    pixel, depth = cameras.project(origins + distance * directions, e[:, None, None], size, fov)
    centres = torch.stack(torch.meshgrid(torch.arange(w) + 0.5, torch.arange(h) + 0.5, indexing="xy"), -1)
    torch.testing.assert_close(pixel, centres.to(torch.float64).expand_as(pixel))
    assert (depth > 0).all()


def test_orbit_views_are_evenly_spaced_at_one_elevation_and_distance():
    e = cameras.orbit(8, radius=3.0, elevation_deg=30.0, azimuth_offset_deg=10.0, dtype=torch.float64)
    c = cameras.centres(e)
    torch.testing.assert_close(torch.linalg.vector_norm(c, dim=-1), torch.full((8,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(c[:, 1], torch.full((8,), 1.5, dtype=torch.float64))
    azimuth = torch.rad2deg(torch.atan2(c[:, 0], c[:, 2])) % 360
    torch.testing.assert_close(azimuth, (10.0 + 45.0 * torch.arange(8, dtype=torch.float64)) % 360)


@fast
@given(seeds, st.floats(-80.0, 80.0), st.floats(0.0, 80.0))
def test_random_cameras_lie_in_their_zone_of_the_sphere(seed, lo, span):
    hi = min(lo + span, 85.0)
    e = cameras.random_cameras(16, torch.Generator().manual_seed(seed), 2.0, (lo, hi), torch.float64)
    c = cameras.centres(e)
    torch.testing.assert_close(torch.linalg.vector_norm(c, dim=-1), torch.full((16,), 2.0, dtype=torch.float64))
    elevation = torch.rad2deg(torch.asin(c[:, 1] / 2.0))
    assert (elevation >= lo - 1e-9).all() and (elevation <= hi + 1e-9).all()
    pixel, _ = cameras.project(torch.zeros(3, dtype=torch.float64), e, 32)
    torch.testing.assert_close(pixel, torch.full((16, 2), 16.0, dtype=torch.float64))


def test_random_cameras_reject_elevations_at_the_poles():
    with pytest.raises(ValueError):
        cameras.random_cameras(4, None, 3.0, (-10.0, 90.0))


@fast
@given(seeds, st.floats(-5.0, 5.0))
def test_the_plucker_moment_is_orthogonal_to_the_direction_and_the_same_along_the_ray(seed, shift):
    e = cameras.look_at(*random_eyes(seed, 2))
    origins, directions = cameras.rays(e, 6, 50.0)
    p = cameras.plucker(origins, directions)
    assert p.shape == (2, 6, 6, 6)
    torch.testing.assert_close(p[..., :3], directions)
    torch.testing.assert_close((p[..., :3] * p[..., 3:]).sum(-1), torch.zeros(2, 6, 6, dtype=torch.float64))
    torch.testing.assert_close(cameras.plucker(origins + shift * directions, directions), p)
    # the moment's norm is the distance of the line from the world origin
    closest = origins - (origins * directions).sum(-1, keepdim=True) * directions
    torch.testing.assert_close(torch.linalg.vector_norm(p[..., 3:], dim=-1), torch.linalg.vector_norm(closest, dim=-1))
