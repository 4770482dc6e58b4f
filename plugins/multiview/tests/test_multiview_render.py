"""The sphere tracer: analytic ray–sphere oracle, gradients against finite differences, rotation
equivariance, unions, and the primitives' distance functions."""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusekit_multiview import cameras, primitives, scenes
from diffusekit_multiview.primitives import Primitives
from diffusekit_multiview.render import LIGHT, render, render_field
from hypothesis import given, settings
from hypothesis import strategies as st

fast = settings(max_examples=20, deadline=None, derandomize=True)
seeds = st.integers(0, 2**31 - 1)
F64 = torch.float64
SIZE, FOV = 24, 45.0


def spheres(centre, radius, colour) -> Primitives:
    """A scene of spheres ``(P,)``, float64."""
    centre = torch.as_tensor(centre, dtype=F64).reshape(-1, 3)
    p = len(centre)
    return Primitives(
        torch.zeros(p, dtype=torch.int64),
        centre,
        torch.nn.functional.pad(torch.as_tensor(radius, dtype=F64).reshape(p, 1), (0, 2)),
        torch.as_tensor(colour, dtype=F64).reshape(p, 3),
        torch.eye(3, dtype=F64).expand(p, 3, 3),
        torch.ones(p, dtype=torch.bool),
    )


def float64(scene: Primitives) -> Primitives:
    return Primitives(
        scene.kind, *(getattr(scene, n).to(F64) for n in ("centre", "size", "colour", "rotation")), scene.present
    )


def camera(seed: int, views: int = 2) -> torch.Tensor:
    return cameras.random_cameras(views, torch.Generator().manual_seed(seed), 3.0, (-60.0, 70.0), F64)


def rotation(seed: int) -> torch.Tensor:
    return torch.as_tensor(scenes._rotation(np.random.default_rng(seed)), dtype=F64)


def analytic_sphere(extrinsics, centre, radius):
    """Exact hit mask, hit distance along each ray, and the pixels within one pixel's width of the silhouette."""
    o, d = cameras.rays(extrinsics, SIZE, FOV)
    oc = o - torch.as_tensor(centre, dtype=F64)
    b = (oc * d).sum(-1)
    miss = (oc.square().sum(-1) - b * b).clamp(min=0).sqrt()  # distance of the ray's line from the centre
    hit = (miss < radius) & (b < 0)
    t = -b - (radius**2 - miss**2).clamp(min=0).sqrt()
    pixel = torch.linalg.vector_norm(oc, dim=-1) * 2 * math.tan(math.radians(FOV) / 2) / SIZE
    return hit, t, (miss - radius).abs() < pixel


def ball(seed: int) -> tuple[list[float], float]:
    g = np.random.default_rng(seed)
    radius = float(g.uniform(0.15, 0.7))
    direction = g.standard_normal(3)
    centre = (1 - radius) * g.uniform() ** (1 / 3) * direction / np.linalg.norm(direction)
    return centre.tolist(), radius


# --- the distance functions --------------------------------------------------------------------


@fast
@given(seeds)
def test_each_sdf_is_zero_on_its_surface_and_the_distance_to_it_outside(seed):
    """Points on each surface (parametrised) have SDF 0; outside, the SDF is the distance to the surface
    (brute force over a dense sample of the surface, up to the sample's spacing)."""
    g = torch.Generator().manual_seed(seed)
    a, b, c = (0.2 + 0.3 * torch.rand(3, generator=g, dtype=F64)).tolist()
    r = 0.05 + 0.1 * torch.rand((), generator=g, dtype=F64).item()
    u, v = torch.meshgrid(
        torch.linspace(0, 2 * math.pi, 241, dtype=F64)[:-1], torch.linspace(-1, 1, 121, dtype=F64), indexing="ij"
    )  # an angle round the y axis, and a parameter in [-1, 1]
    ring = torch.stack([u.cos(), torch.zeros_like(u), u.sin()], -1)  # unit circle in the xz plane
    y = torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    surfaces = {
        primitives.SPHERE: ((a, 0, 0), a * (ring * (1 - v**2).sqrt()[..., None] + y * v[..., None])),
        primitives.TORUS: (
            (a, r, 0),
            ring * (a + r * (math.pi * v).cos())[..., None] + y * (r * (math.pi * v).sin())[..., None],
        ),
        primitives.CYLINDER: (
            (a, b, 0),
            torch.cat(
                [
                    a * ring + y * (b * v)[..., None],  # the side
                    a * ring * ((v + 1) / 2)[..., None] + b * y,  # the caps
                    a * ring * ((v + 1) / 2)[..., None] - b * y,
                ]
            ),
        ),
    }
    box_faces = []
    half = torch.tensor([a, b, c], dtype=F64)
    s = torch.linspace(-1, 1, 121, dtype=F64)
    grid = torch.stack(torch.meshgrid(s, s, indexing="ij"), -1)
    for axis in range(3):
        others = [i for i in range(3) if i != axis]
        for sign in (-1.0, 1.0):
            face = torch.zeros(*grid.shape[:2], 3, dtype=F64)
            face[..., others] = grid * half[others]
            face[..., axis] = sign * half[axis]
            box_faces.append(face)
    surfaces[primitives.BOX] = ((a, b, c), torch.cat(box_faces))
    outside = 1.5 * (torch.rand(64, 3, generator=g, dtype=F64) - 0.5) * 2
    for kind, (size, surface) in surfaces.items():
        sdf = primitives.SDFS[kind]
        size = torch.tensor(size, dtype=F64)
        surface = surface.reshape(-1, 3)
        assert sdf(surface, size).abs().max() < 1e-12
        distance = torch.cdist(outside, surface).amin(-1)
        value = sdf(outside, size)
        far = value > 0.02
        spacing = 2 * math.pi * 0.7 / 120  # the coarsest sample spacing on these surfaces
        assert (value[far] <= distance[far] + 1e-12).all()  # the surface sample is on the surface
        assert (value[far] >= distance[far] - spacing).all()


# --- the analytic oracle -----------------------------------------------------------------------


@fast
@given(seeds, seeds)
def test_a_sphere_renders_its_exact_intersection_depth_mask_and_shading(scene_seed, camera_seed):
    centre, radius = ball(scene_seed)
    colour = [0.9, 0.5, 0.2]
    e = camera(camera_seed)
    out = render(spheres(centre, radius, colour), e, SIZE, fov_deg=FOV)
    hit, t, band = analytic_sphere(e, centre, radius)
    assert hit[~band].any()  # not vacuous
    assert torch.equal(out.mask[~band], hit[~band])
    inner = hit & ~band
    torch.testing.assert_close(out.depth[inner], t[inner], atol=1e-7, rtol=0)
    assert (out.depth[~out.mask] == 0).all()
    # Lambertian shading with the exact normal
    o, d = cameras.rays(e, SIZE, FOV)
    normal = (o + t[..., None] * d - torch.tensor(centre, dtype=F64)) / radius
    light = torch.tensor(LIGHT, dtype=F64) / torch.linalg.vector_norm(torch.tensor(LIGHT, dtype=F64))
    shade = 0.3 + 0.7 * (normal * light).sum(-1).clamp(min=0)
    expected = torch.tensor(colour, dtype=F64) * shade[..., None]
    torch.testing.assert_close(out.rgb.movedim(-3, -1)[inner], expected[inner], atol=1e-5, rtol=0)
    assert (out.rgb.movedim(-3, -1)[~out.mask] == 1.0).all()  # the white background


# --- gradients ----------------------------------------------------------------------------------


@fast
@given(seeds, seeds)
def test_gradients_in_the_sphere_radius_and_centre_match_finite_differences(scene_seed, camera_seed):
    centre, radius = ball(scene_seed)
    radius = min(radius, 0.6)
    e = camera(camera_seed)
    hit, _, band = analytic_sphere(e, centre, radius)
    inner = hit & ~band  # the pixels whose hit does not change under a small change of the sphere
    g = torch.Generator().manual_seed(camera_seed)
    w_rgb = torch.rand(2, 3, SIZE, SIZE, generator=g, dtype=F64) * inner[:, None]
    w_depth = torch.rand(2, SIZE, SIZE, generator=g, dtype=F64) * inner

    def loss(params):
        scene = spheres(params[:3], params[3], [0.3, 0.6, 0.9])
        out = render(scene, e, SIZE, fov_deg=FOV)
        return (out.rgb * w_rgb).sum() + (out.depth * w_depth).sum()

    params = torch.tensor([*centre, radius], dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(params), params)
    eps = 1e-6
    numeric = torch.stack(
        [
            (loss(params.detach() + eps * step) - loss(params.detach() - eps * step)) / (2 * eps)
            for step in torch.eye(4, dtype=F64)
        ]
    )
    torch.testing.assert_close(grad, numeric, rtol=1e-4, atol=1e-4 * float(numeric.abs().max()))
    assert grad.abs().max() > 0


@fast
@given(seeds, seeds)
def test_gradients_in_the_colours_match_finite_differences_for_every_kind(scene_seed, camera_seed):
    scene = float64(scenes.random_primitives(np.random.default_rng(scene_seed), 1).take(0))
    e = camera(camera_seed)
    weights = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(camera_seed), dtype=F64)

    def loss(colour):
        import attrs

        return (render(attrs.evolve(scene, colour=colour), e, SIZE, fov_deg=FOV).rgb * weights).sum()

    colour = scene.colour.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(colour), colour)
    eps = 1e-6
    numeric = torch.zeros_like(grad)
    for index in np.ndindex(*grad.shape):
        step = torch.zeros_like(grad)
        step[index] = eps
        numeric[index] = (loss(scene.colour + step) - loss(scene.colour - step)) / (2 * eps)
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-6)


# --- symmetry and composition --------------------------------------------------------------------


@fast
@given(seeds, seeds, seeds)
def test_rotating_scene_camera_and_light_together_gives_the_same_image(scene_seed, camera_seed, rotation_seed):
    scene = float64(scenes.random_primitives(np.random.default_rng(scene_seed), 1).take(0))
    e = camera(camera_seed)
    q = rotation(rotation_seed)
    q4 = torch.eye(4, dtype=F64)
    q4[:3, :3] = q
    light = torch.tensor(LIGHT, dtype=F64)
    before = render(scene, e, SIZE, fov_deg=FOV, light=light)
    after = render(scene.transformed(q), e @ q4.T, SIZE, fov_deg=FOV, light=q @ light)
    assert before.mask.any()
    assert torch.equal(before.mask, after.mask)
    torch.testing.assert_close(after.depth, before.depth, atol=1e-9, rtol=0)
    torch.testing.assert_close(after.rgb, before.rgb, atol=1e-9, rtol=0)


@fast
@given(seeds, seeds)
def test_a_union_of_two_disjoint_spheres_shows_each_where_it_is_closer(scene_seed, camera_seed):
    g = np.random.default_rng(scene_seed)
    radii = g.uniform(0.15, 0.4, 2)
    axis = g.standard_normal(3)
    axis /= np.linalg.norm(axis)
    gap = g.uniform(0.02, 0.2)
    first = axis * (1 - radii[0])
    second = first - axis * (radii[0] + radii[1] + gap)  # disjoint, both inside the unit ball
    colours = [[0.9, 0.2, 0.2], [0.2, 0.3, 0.9]]
    e = camera(camera_seed)
    both = render(spheres(np.stack([first, second]), radii, colours), e, SIZE, fov_deg=FOV)
    a = render(spheres(first, radii[0], colours[0]), e, SIZE, fov_deg=FOV)
    b = render(spheres(second, radii[1], colours[1]), e, SIZE, fov_deg=FOV)
    band = analytic_sphere(e, first, radii[0])[2] | analytic_sphere(e, second, radii[1])[2]
    a_wins = a.mask & (~b.mask | (a.depth < b.depth))
    assert torch.equal(both.mask[~band], (a.mask | b.mask)[~band])
    expected_rgb = torch.where(a_wins[:, None], a.rgb, b.rgb)
    expected_depth = torch.where(a_wins, a.depth, b.depth)
    keep = ~band
    torch.testing.assert_close(both.depth[keep], expected_depth[keep], atol=1e-7, rtol=0)
    torch.testing.assert_close(both.rgb.movedim(1, -1)[keep], expected_rgb.movedim(1, -1)[keep], atol=1e-7, rtol=0)
    assert (a_wins & ~band).any() or (b.mask & ~a_wins & ~band).any()


def test_render_field_renders_any_callable_field():
    """A field given as a plain function (a sphere of radius 0.5, coloured by position) renders like the primitive."""

    def field(points):
        return torch.linalg.vector_norm(points, dim=-1) - 0.5, torch.full_like(points, 0.5)

    e = cameras.orbit(3, dtype=F64)
    out = render_field(field, e, SIZE, FOV)
    ref = render(spheres([0, 0, 0], 0.5, [0.5, 0.5, 0.5]), e, SIZE, fov_deg=FOV)
    assert torch.equal(out.mask, ref.mask)
    torch.testing.assert_close(out.rgb, ref.rgb, atol=1e-9, rtol=0)


def test_a_batch_of_scenes_renders_each_scene_as_alone():
    batch = scenes.random_primitives(np.random.default_rng(7), 3)
    e = cameras.random_cameras(6, torch.Generator().manual_seed(1)).unflatten(0, (3, 2))
    together = render(batch, e, 16)
    for i in range(3):
        alone = render(batch.take(i), e[i], 16)
        torch.testing.assert_close(together.rgb[i], alone.rgb)
        assert torch.equal(together.mask[i], alone.mask)
