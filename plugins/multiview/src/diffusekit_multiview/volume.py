r"""A learnable voxel grid of density and colour, rendered by differentiable volume rendering.

The representation is a dense grid over the cube :math:`[-b, b]^3` (DVGO, Sun et al., 2022, "Direct
Voxel Grid Optimization"; Plenoxels, Fridovich-Keil et al., 2022, without the spherical harmonics: the
scenes' shading is fixed in the world, so colour does not depend on the viewing direction). A point's raw
density and colour are interpolated trilinearly from the grid's nodes and then activated ("post-activation",
DVGO, which keeps sharp surfaces at low resolution): :math:`\sigma = s\,\mathrm{softplus}(\cdot)`, with
:math:`s` the number of voxels per unit length so that a raw value sets the optical depth of one voxel's
width whatever the resolution, and :math:`c = \mathrm{sigmoid}(\cdot)`. The density is zero outside the cube.

Rendering is the emission-absorption model (Max, 1995, "Optical models for direct volume rendering") by
the quadrature of NeRF (Mildenhall et al., 2020). Along a ray, :math:`N` samples :math:`t_i` sit at the
midpoints of equal intervals of length :math:`\delta` between the ray's entry into and exit from the
cube, and

.. math::

    \alpha_i = 1 - e^{-\sigma_i \delta}, \qquad
    T_i = \prod_{j<i} (1 - \alpha_j) = e^{-\sum_{j<i} \sigma_j \delta}, \qquad
    C = \sum_{i=1}^{N} T_i\,\alpha_i\,c_i + T_{N+1}\,c_{\mathrm{bg}},

with the pixel's opacity :math:`1 - T_{N+1}`. For a constant density the sum is exact:
:math:`1 - T_{N+1} = 1 - e^{-\sigma L}` with :math:`L` the chord through the cube.

:func:`fit_views` fits a grid to posed images (Adam on the photometric error plus a small total-variation
prior, as in Plenoxels); :func:`to_mesh` extracts a surface by marching cubes (Lorensen and Cline, 1987).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusekit_multiview import cameras

SAMPLES = 64
"""Samples per ray when fitting: about one per voxel along the longest chord of a 32^3 grid."""
CAMERA_RADIUS = 3.0
"""Distance of the turntable's cameras from the origin (as :data:`diffusekit_multiview.scenes.CAMERA_RADIUS`)."""


class VoxelField(torch.nn.Module):
    """A density and colour voxel grid over the cube [-bound, bound]^3 (DVGO / Plenoxels style).

    ``density`` ``(R, R, R)`` and ``colour`` ``(3, R, R, R)`` hold raw values at the grid's nodes,
    indexed ``[x, y, z]``; node ``i`` sits at ``-bound + 2 bound i / (R - 1)``.
    """

    def __init__(self, resolution: int = 32, bound: float = 1.0, init_density: float = -2.0) -> None:
        super().__init__()
        if resolution < 2:
            raise ValueError(f"resolution must be at least 2, got {resolution}")
        self.resolution, self.bound = resolution, float(bound)
        self.scale = (resolution - 1) / (2.0 * bound)  # voxels per unit length
        r = resolution
        self.density = torch.nn.Parameter(torch.full((r, r, r), float(init_density)))
        self.colour = torch.nn.Parameter(torch.zeros(3, r, r, r))  # grey 0.5: no colour preferred

    def sigma(self, raw: Tensor) -> Tensor:
        """Density (per unit length) of raw density values."""
        return self.scale * F.softplus(raw)

    def lookup(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Density ``(M,)`` and colour ``(3, M)`` at points ``(M, 3)`` inside the cube, in units of ``bound``
        (so in [-1, 1]); points outside take the values of the nearest face."""
        # grid_sample reads (x, y, z) as (W, H, D): the [x, y, z] grid goes in as [z, y, x] (a cheap copy of
        # the small grid, where flipping the points would copy the many)
        grid = torch.cat([self.density[None], self.colour]).permute(0, 3, 2, 1)[None]  # (1, 4, R, R, R)
        raw = F.grid_sample(grid, points.reshape(1, -1, 1, 1, 3), padding_mode="border", align_corners=True)
        raw = raw.reshape(4, -1)
        return self.sigma(raw[0]), torch.sigmoid(raw[1:])

    def query(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """points (..., 3) world coords -> (sigma (...), rgb (..., 3)); trilinear (F.grid_sample, align_corners=True); zero density outside the cube."""
        lead = points.shape[:-1]
        points = points.to(self.density.dtype) / self.bound
        sigma, rgb = self.lookup(points.reshape(-1, 3))
        sigma = torch.where((points.abs() <= 1.0).all(-1).reshape(-1), sigma, torch.zeros_like(sigma))
        return sigma.reshape(lead), rgb.T.reshape(*lead, 3)


def _cube_span(origins: Tensor, directions: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """Entry and exit distances of rays through the cube [-bound, bound]^3 (slab method, Kay and Kajiya,
    1986); equal where a ray misses it, so that its samples have zero length."""
    # a zero component would divide 0 by 0 at the slab's face; nudging it keeps the slab infinite
    safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    lo, hi = (-bound - origins) / safe, (bound - origins) / safe
    t_in = torch.minimum(lo, hi).amax(-1).clamp(min=0.0)
    t_out = torch.maximum(lo, hi).amin(-1)
    return t_in, torch.maximum(t_out, t_in)


def _composite(
    field: VoxelField, origins: Tensor, directions: Tensor, samples: int, background: float, jitter: Tensor | None
) -> tuple[Tensor, Tensor]:
    """rgb ``(..., 3)`` and alpha ``(...)`` of rays ``(..., 3)``; ``jitter`` ``(..., samples)`` in [0, 1)
    moves each sample within its interval (stratified sampling, NeRF) instead of the midpoint."""
    t_in, t_out = _cube_span(origins, directions, field.bound)
    delta = (t_out - t_in) / samples  # (...)
    offset = 0.5 if jitter is None else jitter
    steps = torch.arange(samples, dtype=origins.dtype, device=origins.device) + offset
    t = (t_in[..., None] + steps * delta[..., None]) / field.bound  # (..., N), in units of bound
    # every sample lies in the cube (its span), so the grid is read without query's mask
    sigma, rgb = field.lookup(origins[..., None, :] / field.bound + t[..., None] * directions[..., None, :])
    depth = sigma.reshape(t.shape) * delta[..., None]  # optical depth of each interval
    # T_i from the exclusive cumulative sum: exp of a sum is stabler than a product of many (1 - alpha)
    transmittance = torch.exp(-(torch.cumsum(depth, -1) - depth))
    weights = transmittance * -torch.expm1(-depth)
    left = torch.exp(-depth.sum(-1))  # T_{N+1}, the light that reaches the background
    colour = (rgb.reshape(3, *t.shape) * weights).sum(-1)  # (3, ...): channels first, as read from the grid
    colour = colour.movedim(0, -1) + left[..., None] * background
    return colour, 1.0 - left


def render_volume(
    field: VoxelField,
    extrinsics: Tensor,
    size: int = 32,
    fov_deg: float = 45.0,
    samples: int = 64,
    background: float = 1.0,
    radius: float = 3.0,
) -> tuple[Tensor, Tensor]:
    """Emission-absorption volume rendering (Max 1995; NeRF, Mildenhall et al. 2020): extrinsics (..., 4, 4) ->
    rgb (..., 3, S, S) in [0, 1] composited over a `background` grey level, and alpha (..., S, S).

    ``samples`` points per ray, evenly spaced between its entry into and exit from the field's cube (see the
    module docstring); differentiable w.r.t. the field's parameters; in the field's dtype. ``radius``, the
    cameras' distance, is accepted for symmetry with the scenes' settings but not needed: clipping the rays to
    the cube gives their near and far bounds whatever the distance.
    """
    del radius
    dtype = field.density.dtype
    origins, directions = cameras.rays(extrinsics.to(dtype), size, fov_deg)  # (..., S, S, 3)
    rgb, alpha = _composite(field, origins, directions, samples, background, None)
    return rgb.movedim(-1, -3).clamp(0.0, 1.0), alpha


def _total_variation(grid: Tensor) -> Tensor:
    """Mean squared difference between neighbouring nodes along the last three axes."""
    return sum(grid.diff(dim=d).square().mean() for d in (-1, -2, -3))


def fit_views(
    views: Tensor,
    extrinsics: Tensor,
    steps: int = 300,
    lr: float = 0.05,
    resolution: int = 32,
    tv_weight: float = 1e-3,
    fov_deg: float = 45.0,
    progress: bool = False,
    seed: int = 0,
) -> VoxelField:
    """Fit a VoxelField to views (V, 3, S, S) in [0, 1] seen by extrinsics (V, 4, 4): Adam on the photometric MSE plus a small total-variation term; deterministic under `seed`.

    Each step renders every pixel with stratified samples (jittered within their intervals, drawn from a
    generator seeded by ``seed``), which keeps the grid from fitting the aliasing of fixed sample positions.
    The background is taken as white, as in the scenes.
    """
    gen = torch.Generator().manual_seed(seed)
    field = VoxelField(resolution)
    views = views.to(torch.float32)
    origins, directions = cameras.rays(extrinsics.to(torch.float32), views.shape[-1], fov_deg)
    target = views.movedim(-3, -1)  # (V, S, S, 3), like the rays
    optimiser = torch.optim.Adam(field.parameters(), lr=lr)
    for step in range(steps):
        jitter = torch.rand(*origins.shape[:-1], SAMPLES, generator=gen)
        rgb, _ = _composite(field, origins, directions, SAMPLES, 1.0, jitter)
        mse = (rgb - target).square().mean()
        loss = mse + tv_weight * (_total_variation(field.density) + _total_variation(field.colour))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if progress and (step % 50 == 0 or step == steps - 1):
            print(f"fit_views step {step}: mse {mse.item():.5f}, psnr {-10 * math.log10(mse.item()):.2f} dB")
    return field


@torch.no_grad()
def rerender_error(field: VoxelField, views: Tensor, extrinsics: Tensor, fov_deg: float = 45.0) -> Tensor:
    """Per-view PSNR (dB) of the field's renders against the views, shape (V,)."""
    rgb, _ = render_volume(field, extrinsics, views.shape[-1], fov_deg)
    mse = (rgb - views.to(rgb.dtype)).square().flatten(-3).mean(-1)
    return -10.0 * torch.log10(mse.clamp(min=1e-12))


@torch.no_grad()
def to_mesh(field: VoxelField, level: float | None = None):
    """trimesh.Trimesh by marching cubes (skimage.measure.marching_cubes) on the density grid, vertices in world
    coordinates, vertex colours from the colour field; a ValueError if the grid holds no surface at that level.

    ``level`` is a density (per unit length); by default the density at which one voxel's width absorbs half
    the light, :math:`\\ln 2` per voxel. The grid is padded with a layer of zero density (the density outside
    the cube) so that a surface touching the cube's faces is closed there.
    """
    import trimesh
    from skimage.measure import marching_cubes

    level = math.log(2.0) * field.scale if level is None else float(level)
    sigma = F.pad(field.sigma(field.density.detach().double()), (1, 1) * 3).cpu().numpy()
    if not sigma.min() < level < sigma.max():
        raise ValueError(
            f"no surface at density level {level:.4g}: the grid's density spans [{sigma.min():.4g}, "
            f"{sigma.max():.4g}] (an empty or unfitted field?); pass a level inside that range"
        )
    spacing = 2.0 * field.bound / (field.resolution - 1)
    # "ascent": the density grows into the solid, and the faces should wind with their normals pointing out
    verts, faces, _, _ = marching_cubes(sigma, level, spacing=(spacing,) * 3, gradient_direction="ascent")
    verts = verts - field.bound - spacing  # index 1 of the padded grid is the cube's face at -bound
    _, rgb = field.query(torch.as_tensor(verts, dtype=field.density.dtype, device=field.density.device))
    colours = (rgb.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()
    return trimesh.Trimesh(verts, faces, vertex_colors=colours, process=False)


def write_mesh(field: VoxelField, path: Path) -> Path:
    """Write :func:`to_mesh`'s mesh to ``path``, ``.obj`` or ``.ply`` by its suffix (trimesh's export)."""
    path = Path(path)
    if path.suffix.lower() not in (".obj", ".ply"):
        raise ValueError(f"mesh path must end in .obj or .ply, got {path.name!r}")
    to_mesh(field).export(path)
    return path


@torch.no_grad()
def turntable(
    field: VoxelField, views: int = 24, elevation_deg: float = 20.0, size: int = 64, fov_deg: float = 45.0
) -> Tensor:
    """Renders ``(views, 3, size, size)`` in [0, 1] from cameras evenly spaced in azimuth at ``elevation_deg``,
    :data:`CAMERA_RADIUS` from the origin, over a white background."""
    extrinsics = cameras.orbit(views, CAMERA_RADIUS, elevation_deg, dtype=field.density.dtype)
    return render_volume(field, extrinsics.to(field.density.device), size, fov_deg)[0]


def write_turntable_gif(field: VoxelField, path: Path, views: int = 24, size: int = 64, fps: float = 12.0) -> Path:
    """Write :func:`turntable`'s frames to ``path`` as a looping GIF (imageio.v3) at ``fps`` frames a second.

    Pillow's GIF writer merges identical consecutive frames, so a turntable of a field that looks the same from
    every azimuth (an empty field, a uniformly coloured sphere) may hold fewer than ``views`` frames.
    """
    import imageio.v3 as iio

    path = Path(path)
    frames = (turntable(field, views, size=size).movedim(-3, -1) * 255.0).round().to(torch.uint8).cpu().numpy()
    iio.imwrite(path, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    return path
