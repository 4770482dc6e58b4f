r"""Pinhole cameras on a sphere around the origin, looking at it: extrinsics, rays, Plücker coordinates.

Conventions (OpenGL's, right-handed). World: :math:`+y` is up. Camera frame: :math:`+x` to the
right, :math:`+y` up, and the camera looks along :math:`-z`. An *extrinsic* matrix is the
world-to-camera rigid transform

.. math:: E = \begin{pmatrix} R & t \\ 0 & 1 \end{pmatrix}, \qquad x_{\mathrm{cam}} = R\,x_{\mathrm{world}} + t,

whose rows of :math:`R` are the camera's right, up and backward axes in world coordinates; the
camera centre is :math:`c = -R^\top t`. Images are ``(H, W)`` with row ``i`` going down and column
``j`` to the right; pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)`` in pixel units, so an
image's centre is ``(W/2, H/2)``. ``fov_deg`` is the vertical field of view; pixels are square.

Rays are written in Plücker coordinates :math:`(d, m = o \times d)` (Plücker, 1865; as camera
conditioning in Sitzmann et al., 2021, "Light Field Networks", and Zhang et al., 2024, "Cameras as
Rays"): the moment :math:`m` is orthogonal to :math:`d` and the same for every point :math:`o` on the
ray, so the pair names the line, not a point on it.

Every function is batched over leading dimensions and works in the dtype of its inputs
(float32 or float64).
"""

from __future__ import annotations

import math

import attrs
import torch
from diffusekit import Embedding
from torch import Tensor

UP = (0.0, 1.0, 0.0)
"""The world's up direction."""


def _unit(v: Tensor) -> Tensor:
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def look_at(
    eye: Tensor,
    target: Tensor | tuple[float, float, float] = (0.0, 0.0, 0.0),
    up: Tensor | tuple[float, float, float] = UP,
) -> Tensor:
    r"""World-to-camera extrinsics ``(..., 4, 4)`` of cameras at ``eye`` ``(..., 3)`` looking at ``target``.

    With :math:`f = (\mathrm{target} - \mathrm{eye}) / \|\cdot\|`, the right axis is
    :math:`r = f \times \mathrm{up} / \|\cdot\|`, the camera's up :math:`u = r \times f`, and
    :math:`R = (r, u, -f)^\top`, :math:`t = -R\,\mathrm{eye}`: a rotation (orthonormal, det +1),
    with the camera looking along its :math:`-z` at the target. Undefined when the viewing
    direction is parallel to ``up``.
    """
    eye = torch.as_tensor(eye)
    target = torch.as_tensor(target, dtype=eye.dtype, device=eye.device).expand_as(eye)
    up = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
    forward = _unit(target - eye)
    right = _unit(torch.linalg.cross(forward, up, dim=-1))
    true_up = torch.linalg.cross(right, forward, dim=-1)
    rotation = torch.stack([right, true_up, -forward], dim=-2)
    translation = -(rotation @ eye[..., None])[..., 0]
    out = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def centres(extrinsics: Tensor) -> Tensor:
    r"""Camera centres ``(..., 3)`` in world coordinates: :math:`c = -R^\top t`."""
    rotation, translation = extrinsics[..., :3, :3], extrinsics[..., :3, 3]
    return -(rotation.transpose(-1, -2) @ translation[..., None])[..., 0]


def on_sphere(azimuth: Tensor, elevation: Tensor, radius: float | Tensor) -> Tensor:
    r"""Points ``(..., 3)`` at ``azimuth`` and ``elevation`` (radians) on a sphere of ``radius``:
    :math:`r\,(\cos\epsilon \sin\alpha,\ \sin\epsilon,\ \cos\epsilon \cos\alpha)` (azimuth about
    :math:`+y`, measured from :math:`+z`; elevation above the :math:`xz` plane)."""
    radius = torch.as_tensor(radius, dtype=azimuth.dtype, device=azimuth.device)[..., None]
    return radius * torch.stack(
        [elevation.cos() * azimuth.sin(), elevation.sin(), elevation.cos() * azimuth.cos()], dim=-1
    )


def orbit(
    num_views: int,
    radius: float = 3.0,
    elevation_deg: float = 20.0,
    azimuth_offset_deg: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Extrinsics ``(num_views, 4, 4)`` of cameras evenly spaced in azimuth on a circle of latitude
    ``elevation_deg`` (in (-90, 90)) of a sphere of ``radius``, looking at the origin; view ``k`` is at
    azimuth ``azimuth_offset_deg + 360 k / num_views``. At azimuth and elevation 0 the camera sits on
    :math:`+z` with the world's axes (``R = I``)."""
    if not -90.0 < elevation_deg < 90.0:
        raise ValueError(f"elevation must be in (-90, 90) degrees, got {elevation_deg}")
    azimuth = torch.deg2rad(azimuth_offset_deg + 360.0 * torch.arange(num_views, dtype=dtype) / num_views)
    elevation = torch.full_like(azimuth, math.radians(elevation_deg))
    return look_at(on_sphere(azimuth, elevation, radius))


def random_cameras(
    num_views: int,
    generator: torch.Generator | None = None,
    radius: float = 3.0,
    elevation_deg: tuple[float, float] = (-20.0, 60.0),
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Extrinsics ``(num_views, 4, 4)`` of cameras drawn uniformly (by area) on the zone of the sphere of
    ``radius`` between the latitudes ``elevation_deg`` (within (-90, 90)), looking at the origin.

    Azimuth is uniform in :math:`[0, 2\pi)` and :math:`\sin\epsilon` uniform in
    :math:`[\sin\epsilon_0, \sin\epsilon_1]`: Archimedes' hat-box theorem makes that uniform on the zone.
    """
    lo, hi = elevation_deg
    if not -90.0 < lo <= hi < 90.0:
        raise ValueError(f"elevation_deg must be (lo, hi) with -90 < lo <= hi < 90, got {elevation_deg}")
    u = torch.rand(2, num_views, generator=generator, dtype=torch.float64)
    azimuth = 2.0 * math.pi * u[0]
    sin_lo, sin_hi = math.sin(math.radians(lo)), math.sin(math.radians(hi))
    elevation = torch.asin(sin_lo + (sin_hi - sin_lo) * u[1])
    return look_at(on_sphere(azimuth, elevation, radius)).to(dtype)


def rays(extrinsics: Tensor, size: int | tuple[int, int] = 32, fov_deg: float = 45.0) -> tuple[Tensor, Tensor]:
    r"""Rays through the pixel centres of pinhole cameras: ``(origins, directions)``, each ``(..., H, W, 3)``
    in world coordinates, directions of unit length.

    In the camera frame, pixel ``(i, j)`` looks along
    :math:`(a\,\tau\,(2(j + \frac12)/W - 1),\ \tau\,(1 - 2(i + \frac12)/H),\ -1)` with
    :math:`\tau = \tan(\mathrm{fov}/2)` and :math:`a = W/H`; in the world, :math:`d = R^\top d_{\mathrm{cam}}`
    and every origin is the camera centre.
    """
    h, w = _size(size)
    dtype, device = extrinsics.dtype, extrinsics.device
    tau = math.tan(math.radians(fov_deg) / 2.0)
    x = (2.0 * (torch.arange(w, dtype=dtype, device=device) + 0.5) / w - 1.0) * tau * (w / h)
    y = (1.0 - 2.0 * (torch.arange(h, dtype=dtype, device=device) + 0.5) / h) * tau
    local = torch.stack(
        [x.expand(h, w), y[:, None].expand(h, w), torch.full((h, w), -1.0, dtype=dtype, device=device)], dim=-1
    )
    local = _unit(local)
    rotation = extrinsics[..., None, None, :3, :3]  # (..., 1, 1, 3, 3)
    directions = (rotation.transpose(-1, -2) @ local[..., None])[..., 0]
    origins = centres(extrinsics)[..., None, None, :].expand_as(directions)
    return origins, directions


def project(
    points: Tensor, extrinsics: Tensor, size: int | tuple[int, int] = 32, fov_deg: float = 45.0
) -> tuple[Tensor, Tensor]:
    r"""Pixel coordinates ``(..., 2)`` as ``(column, row)`` of world ``points`` ``(..., 3)`` seen by the camera
    ``extrinsics`` ``(..., 4, 4)`` (the inverse of :func:`rays`), and their depth :math:`-z_{\mathrm{cam}}`
    ``(...)`` (positive in front of the camera)."""
    h, w = _size(size)
    tau = math.tan(math.radians(fov_deg) / 2.0)
    cam = (extrinsics[..., :3, :3] @ points[..., None])[..., 0] + extrinsics[..., :3, 3]
    depth = -cam[..., 2]
    column = (cam[..., 0] / (depth * tau * (w / h)) + 1.0) * w / 2.0
    row = (1.0 - cam[..., 1] / (depth * tau)) * h / 2.0
    return torch.stack([column, row], dim=-1), depth


def plucker(origins: Tensor, directions: Tensor) -> Tensor:
    r"""Plücker coordinates ``(..., 6)`` of rays: :math:`(d, o \times d)` (``directions`` as given)."""
    return torch.cat([directions, torch.linalg.cross(origins, directions, dim=-1)], dim=-1)


@attrs.frozen(eq=False)
class Cameras(Embedding):
    """The cameras of every view of a sample as a condition: the flattened 4×4 extrinsics,
    ``values`` ``(B, V·16)``.

    A structural condition, like the views' positions in a video: it says where each view
    was taken rather than steering what is seen. Its null form is itself, so
    classifier-free dropout never removes it and guidance keeps it in the unconditional
    branch (MVDream drops the text, never the cameras; Shi et al., 2023); in a
    :class:`~diffusekit.ConditionList` the list is null exactly when its other items are.
    """

    @classmethod
    def of(cls, extrinsics: Tensor) -> Cameras:
        """From extrinsics ``(B, V, 4, 4)``."""
        return cls(extrinsics.flatten(1))

    @classmethod
    def example(cls, batch_size: int, generator: torch.Generator) -> Cameras:
        return cls.of(random_cameras(batch_size * 2, generator).unflatten(0, (batch_size, 2)))

    def extrinsics(self) -> Tensor:
        """``(B, V, 4, 4)``."""
        return self.values.unflatten(1, (-1, 4, 4))

    def null_like(self) -> Cameras:
        return self

    def is_null(self) -> Tensor:
        return torch.ones(self.batch_size, dtype=torch.bool, device=self.values.device)
