"""The voxel field and its volume renderer: gradients against finite differences, empty and opaque
fields, the closed form of a constant-density cube, fitting the sphere tracer's views, meshes and GIFs."""

from __future__ import annotations

import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh
from diffusekit_multiview import cameras, volume
from diffusekit_multiview.primitives import Primitives
from diffusekit_multiview.render import render
from diffusekit_multiview.volume import VoxelField, fit_views, render_volume, rerender_error, to_mesh
from hypothesis import given, settings
from hypothesis import strategies as st

fast = settings(max_examples=10, deadline=None, derandomize=True)
seeds = st.integers(0, 2**31 - 1)
F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a busy machine, the threads' synchronisation on every small op costs more than
    it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_field(seed: int, resolution: int = 4, bound: float = 1.0) -> VoxelField:
    """A float64 field with random raw density and colour."""
    field = VoxelField(resolution, bound).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        field.density.copy_(torch.randn(field.density.shape, generator=gen, dtype=F64) * 2.0)
        field.colour.copy_(torch.randn(field.colour.shape, generator=gen, dtype=F64))
    return field


def sphere_field(radius: float, centre=(0.0, 0.0, 0.0), resolution: int = 32) -> VoxelField:
    """A field whose raw density is 20 (radius - distance to centre), zero on the sphere (the default mesh
    level), and whose colour varies with position."""
    field = VoxelField(resolution)
    nodes = torch.linspace(-1.0, 1.0, resolution)
    grid = torch.stack(torch.meshgrid(nodes, nodes, nodes, indexing="ij"), dim=-1)  # [x, y, z] -> point
    with torch.no_grad():
        field.density.copy_(20.0 * (radius - torch.linalg.vector_norm(grid - torch.tensor(centre), dim=-1)))
        field.colour.copy_(2.0 * grid.movedim(-1, 0))
    return field


def camera(seed: int, views: int = 2, dtype=F64) -> torch.Tensor:
    return cameras.random_cameras(views, torch.Generator().manual_seed(seed), 3.0, (-60.0, 70.0), dtype)


def test_query_reads_the_grid_nodes_and_is_empty_outside():
    field = random_field(0, resolution=5, bound=2.0)
    nodes = torch.linspace(-2.0, 2.0, 5, dtype=F64)
    i, j, k = 1, 4, 2
    sigma, rgb = field.query(torch.stack([nodes[i], nodes[j], nodes[k]])[None])
    assert torch.allclose(sigma[0], field.sigma(field.density[i, j, k]))
    assert torch.allclose(rgb[0], torch.sigmoid(field.colour[:, i, j, k]))
    sigma, _ = field.query(torch.tensor([[2.01, 0.0, 0.0], [0.0, -3.0, 1.0]], dtype=F64))
    assert (sigma == 0).all()


@fast
@given(seeds)
def test_gradients_match_central_differences(seed):
    field = random_field(seed)
    extrinsics = camera(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    w_rgb, w_alpha = torch.randn(2, 3, 4, 4, generator=gen, dtype=F64), torch.randn(2, 4, 4, generator=gen, dtype=F64)

    def loss() -> torch.Tensor:
        rgb, alpha = render_volume(field, extrinsics, size=4, samples=8, background=0.7)
        return (rgb * w_rgb).sum() + (alpha * w_alpha).sum()

    loss().backward()
    params = list(field.parameters())
    eps = 1e-6
    for _ in range(3):  # directional derivatives along random directions of all the parameters
        direction = [torch.randn(p.shape, generator=gen, dtype=F64) for p in params]
        analytic = sum((p.grad * v).sum() for p, v in zip(params, direction, strict=True))
        with torch.no_grad():
            for p, v in zip(params, direction, strict=True):
                p.add_(eps * v)
            plus = loss()
            for p, v in zip(params, direction, strict=True):
                p.sub_(2 * eps * v)
            minus = loss()
            for p, v in zip(params, direction, strict=True):
                p.add_(eps * v)
        assert float(analytic) == pytest.approx(float((plus - minus) / (2 * eps)), rel=1e-5, abs=1e-7)


@fast
@given(seeds, st.floats(0.0, 1.0))
def test_empty_field_renders_the_background(seed, background):
    field = VoxelField(8, init_density=-1e4)
    rgb, alpha = render_volume(field, camera(seed, 3, torch.float32), size=12, background=background)
    assert rgb.shape == (3, 3, 12, 12) and alpha.shape == (3, 12, 12)
    assert (alpha == 0).all()
    assert (rgb == torch.tensor(background, dtype=torch.float32).clamp(0, 1)).all()


@fast
@given(seeds)
def test_dense_field_is_opaque_where_rays_meet_it(seed):
    field = VoxelField(8, init_density=1e3).double()
    extrinsics = camera(seed, 2)
    rgb, alpha = render_volume(field, extrinsics, size=16, background=1.0)
    origins, directions = cameras.rays(extrinsics, 16)
    # distance of each ray's line from the origin: the unit ball is inside the cube, the cube inside sqrt(3)
    miss = torch.linalg.vector_norm(torch.linalg.cross(origins, directions, dim=-1), dim=-1)
    assert (miss < 0.99).any() and (alpha[miss < 0.99] > 1 - 1e-9).all()
    assert (alpha[miss > math.sqrt(3.0)] == 0).all()
    assert torch.allclose(rgb.movedim(-3, -1)[miss < 0.99], torch.tensor(0.5, dtype=F64))  # sigmoid(0)


@fast
@given(st.floats(0.0, 360.0), st.floats(-80.0, 80.0), st.floats(-3.0, 3.0), st.floats(0.3, 1.5), st.integers(4, 64))
def test_constant_cube_matches_the_closed_form(azimuth, elevation, raw, bound, samples):
    field = VoxelField(3, bound=bound, init_density=raw).double()
    with torch.no_grad():
        field.colour.fill_(1.0)
    extrinsics = cameras.orbit(1, 3.0, elevation, azimuth, dtype=F64)
    with torch.no_grad():
        rgb, alpha = render_volume(field, extrinsics, size=5, samples=samples, background=0.25)
        sigma = field.query(torch.zeros(3, dtype=F64))[0]
    _, directions = cameras.rays(extrinsics, 5)
    d = directions[0, 2, 2]  # the middle pixel's ray goes through the cube's centre
    chord = 2.0 * bound / d.abs().max()
    expected = 1.0 - torch.exp(-sigma * chord)
    assert float(alpha[0, 2, 2]) == pytest.approx(float(expected), rel=1e-9, abs=1e-12)
    colour = torch.sigmoid(torch.tensor(1.0, dtype=F64))
    assert torch.allclose(rgb[0, :, 2, 2], colour * expected + 0.25 * (1 - expected))


def sphere_scene() -> Primitives:
    """An orange sphere of radius 0.5, slightly off the origin."""
    return Primitives(
        torch.zeros(1, dtype=torch.int64),
        torch.tensor([[0.1, 0.0, -0.05]]),
        torch.tensor([[0.5, 0.0, 0.0]]),
        torch.tensor([[0.95, 0.55, 0.15]]),
        torch.eye(3)[None],
        torch.ones(1, dtype=torch.bool),
    )


@pytest.fixture(scope="module")
def fitted():
    """The sphere scene seen by the sphere tracer from 6 cameras at 32x32, and a field fitted to those views."""
    extrinsics = cameras.random_cameras(6, torch.Generator().manual_seed(3), 3.0, (-20.0, 60.0))
    views = render(sphere_scene(), extrinsics, 32, fov_deg=45.0).rgb
    return views, extrinsics, fit_views(views, extrinsics, steps=60, lr=0.1, seed=0)


def test_fit_reproduces_the_views(fitted):
    views, extrinsics, field = fitted
    psnr = rerender_error(field, views, extrinsics)
    untrained = rerender_error(VoxelField(), views, extrinsics)
    assert psnr.shape == (6,)
    assert (psnr > 22.0).all(), psnr
    assert (psnr > untrained + 10.0).all(), (psnr, untrained)


def test_fit_is_deterministic_under_its_seed():
    extrinsics = camera(0, 2, torch.float32)
    views = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a, b, c = (fit_views(views, extrinsics, steps=3, resolution=8, seed=s).density for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mesh_of_a_fitted_sphere_lies_on_it(fitted):
    mesh = to_mesh(fitted[2])
    radius = np.linalg.norm(mesh.vertices - np.array([0.1, 0.0, -0.05]), axis=-1)
    assert len(mesh.vertices) > 100
    assert abs(np.median(radius) - 0.5) < 0.08, np.median(radius)
    assert np.mean(np.abs(radius - 0.5) < 0.15) > 0.9


def test_mesh_of_a_built_sphere():
    centre = (0.2, -0.1, 0.0)
    field = sphere_field(0.6, centre)
    mesh = to_mesh(field)
    radius = np.linalg.norm(mesh.vertices - np.array(centre), axis=-1)
    assert np.abs(radius - 0.6).max() < 0.01
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * 0.6**3, rel=0.03)  # positive: normals point out
    _, rgb = field.query(torch.as_tensor(mesh.vertices, dtype=torch.float32))
    assert np.abs(mesh.visual.vertex_colors[:, :3] / 255.0 - rgb.detach().numpy()).max() < 0.5 / 255 + 1e-6


def test_mesh_closes_at_the_cube_faces():
    mesh = to_mesh(VoxelField(8, init_density=5.0))  # dense everywhere: the surface is the cube itself
    assert mesh.is_watertight
    assert np.abs(mesh.vertices).max() <= 1.0 + 2.0 / 7 + 1e-9


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_write_mesh_round_trips(tmp_path, suffix):
    field = sphere_field(0.5)
    path = volume.write_mesh(field, tmp_path / f"sphere{suffix}")
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.vertices) == len(to_mesh(field).vertices)


def test_write_mesh_rejects_other_formats(tmp_path):
    with pytest.raises(ValueError, match=r"\.obj or \.ply"):
        volume.write_mesh(sphere_field(0.5), tmp_path / "sphere.stl")


def test_empty_field_has_no_mesh():
    with pytest.raises(ValueError, match="no surface"):
        to_mesh(VoxelField(8, init_density=-1e4))


def test_turntable_gif_has_the_asked_frames(tmp_path):
    field = sphere_field(0.4, (0.4, 0.1, 0.0), resolution=16)  # off-centre: every frame differs
    frames = volume.turntable(field, views=5, size=16)
    assert frames.shape == (5, 3, 16, 16) and frames.min() >= 0 and frames.max() <= 1
    path = volume.write_turntable_gif(field, tmp_path / "turn.gif", views=5, size=16, fps=10.0)
    read = iio.imread(path, index=None)
    assert read.shape[:3] == (5, 16, 16)
