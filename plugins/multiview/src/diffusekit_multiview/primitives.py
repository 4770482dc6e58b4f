r"""Solid primitives as signed distance functions, and a scene as their union.

A signed distance function (SDF) :math:`f` gives, at a point, its distance to a surface,
negative inside. Each primitive is written in its own frame (centred at the origin, axis
:math:`y`) with Inigo Quilez's exact formulas ("Distance functions",
https://iquilezles.org/articles/distfunctions/), where :math:`q = |p| - b` acts per coordinate:

- sphere of radius :math:`r`: :math:`f(p) = \|p\| - r`;
- box of half-extents :math:`b`: :math:`f(p) = \|\max(q, 0)\| + \min(\max(q_x, q_y, q_z), 0)`;
- torus in the :math:`xz` plane, radii :math:`R` (of the ring) and :math:`r` (of the tube):
  :math:`f(p) = \|(\|p_{xz}\| - R,\ p_y)\| - r`;
- capped cylinder along :math:`y`, radius :math:`r`, half-height :math:`h`: with
  :math:`d = |(\|p_{xz}\|, p_y)| - (r, h)`, :math:`f(p) = \min(\max(d_1, d_2), 0) + \|\max(d, 0)\|`.

A primitive placed at centre :math:`c` with rotation :math:`Q` (its frame to the world's) has
:math:`f(x) = f_{\mathrm{local}}(Q^\top (x - c))`, still exact since rigid motions preserve
distances. A scene is the union of its primitives, :math:`f = \min_k f_k` (exact outside the
solid, a bound inside), and a point takes the colour of the primitive with the smallest
:math:`f_k` (the closest surface).

Norms are computed as :math:`\sqrt{\|v\|^2 + \epsilon}` with :math:`\epsilon` the dtype's
smallest normal number, so that gradients stay finite at :math:`v = 0` (a box's interior, where
:math:`\max(q, 0) = 0`) and the value moves by at most :math:`\sqrt{\epsilon}` (1e-19 in float32).
"""

from __future__ import annotations

import math

import attrs
import torch
from torch import Tensor

KINDS = ("sphere", "box", "torus", "cylinder")
"""Names of the primitive kinds; a primitive's ``kind`` is an index into this tuple."""
SPHERE, BOX, TORUS, CYLINDER = range(4)

FAR = 1e4
"""The distance reported for an absent primitive: far beyond any scene."""


def _length(v: Tensor) -> Tensor:
    # summed component by component: on CPU a reduction over a last axis of 2 or 3 is several times slower
    total = v[..., 0].square() + torch.finfo(v.dtype).tiny
    for i in range(1, v.shape[-1]):
        total = total + v[..., i].square()
    return total.sqrt()


def sphere(p: Tensor, size: Tensor) -> Tensor:
    """SDF of a sphere of radius ``size[..., 0]`` at local points ``p`` ``(..., 3)``."""
    return _length(p) - size[..., 0]


def box(p: Tensor, size: Tensor) -> Tensor:
    """SDF of a box of half-extents ``size`` ``(..., 3)``."""
    q = p.abs() - size
    return _length(q.clamp(min=0.0)) + q.amax(-1).clamp(max=0.0)


def torus(p: Tensor, size: Tensor) -> Tensor:
    """SDF of a torus around the ``y`` axis with ring radius ``size[..., 0]`` and tube radius ``size[..., 1]``."""
    ring = _length(p[..., 0::2]) - size[..., 0]
    return _length(torch.stack([ring, p[..., 1]], dim=-1)) - size[..., 1]


def cylinder(p: Tensor, size: Tensor) -> Tensor:
    """SDF of a capped cylinder along ``y`` of radius ``size[..., 0]`` and half-height ``size[..., 1]``."""
    d = torch.stack([_length(p[..., 0::2]), p[..., 1]], dim=-1).abs() - size[..., :2]
    return d.amax(-1).clamp(max=0.0) + _length(d.clamp(min=0.0))


SDFS = (sphere, box, torus, cylinder)
"""The local SDFs, in the order of :data:`KINDS`."""


def volume(kind: Tensor, size: Tensor) -> Tensor:
    r"""Volume of primitives: :math:`\frac43\pi r^3`, :math:`8 b_x b_y b_z`, :math:`2\pi^2 R r^2`, :math:`2\pi r^2 h`."""
    a, b, c = size.unbind(-1)
    values = torch.stack(
        [4.0 / 3.0 * math.pi * a**3, 8.0 * a * b * c, 2.0 * math.pi**2 * a * b**2, 2 * math.pi * a**2 * b]
    )
    return values.gather(0, kind[None]).squeeze(0)


def bounding_radius(kind: Tensor, size: Tensor) -> Tensor:
    r"""Radius of the smallest ball about the centre that holds a primitive: :math:`r`, :math:`\|b\|`,
    :math:`R + r`, :math:`\sqrt{r^2 + h^2}`."""
    a, b, _ = size.unbind(-1)
    values = torch.stack([a, torch.linalg.vector_norm(size, dim=-1), a + b, torch.hypot(a, b)])
    return values.gather(0, kind[None]).squeeze(0)


@attrs.frozen(eq=False)
class Primitives:
    """Scenes of up to ``P`` coloured primitives each, batched over leading dimensions ``(...)``.

    ``kind`` int64 ``(..., P)`` indexes :data:`KINDS`; ``centre``, ``size`` and ``colour`` (RGB in
    [0, 1]) are ``(..., P, 3)``; ``rotation`` ``(..., P, 3, 3)`` maps a primitive's frame to the
    world's; ``present`` bool ``(..., P)`` marks the slots in use (a scene with fewer primitives pads).
    ``size`` means, per kind: sphere ``(r, -, -)``, box ``(b_x, b_y, b_z)``, torus ``(R, r, -)``,
    cylinder ``(r, h, -)``; unused entries are ignored.

    Calling it on points ``(..., M, 3)`` gives the union's field: SDF ``(..., M)`` and colour ``(..., M, 3)``,
    the field :func:`diffusekit_multiview.render.render_field` renders.
    """

    kind: Tensor
    centre: Tensor
    size: Tensor
    colour: Tensor
    rotation: Tensor
    present: Tensor

    def distances(self, points: Tensor) -> Tensor:
        """SDF of every primitive at ``points`` ``(..., M, 3)``: ``(..., M, P)``, :data:`FAR` where absent."""
        # Q^T (x - c) for all P primitives as one affine map (..., M, 3) -> (..., M, P·3): a matmul
        q = self.rotation
        linear = q.transpose(-3, -2).flatten(-2)  # (..., 3, P·3): [j, p·3 + k] = Q_p[j, k]
        shift = (self.centre[..., None, :] @ q)[..., 0, :].flatten(-2)  # (..., P·3): (Q_p^T c_p)_k
        local = (points @ linear - shift[..., None, :]).unflatten(-1, (-1, 3))  # (..., M, P, 3)
        size = self.size[..., None, :, :]
        kind = self.kind[..., None, :]
        out = torch.full_like(local[..., 0], FAR)
        for index, sdf in enumerate(SDFS):
            if bool((self.kind == index).any()):  # a kind no scene has costs nothing
                out = torch.where(kind == index, sdf(local, size), out)
        return torch.where(self.present[..., None, :], out, FAR)

    def __call__(self, points: Tensor) -> tuple[Tensor, Tensor]:
        per_primitive = self.distances(points)
        sdf, closest = per_primitive.min(-1)
        index = closest[..., None].expand(*closest.shape, 3)
        colour = self.colour.gather(-2, index)  # (..., M, 3): the closest primitive's
        return sdf, colour

    def transformed(self, rotation: Tensor) -> Primitives:
        """The scenes rotated about the origin by ``rotation`` ``(3, 3)`` (or ``(..., 3, 3)``, one per scene)."""
        q = rotation[..., None, :, :]
        return attrs.evolve(self, centre=(q @ self.centre[..., None])[..., 0], rotation=q @ self.rotation)

    def take(self, index) -> Primitives:
        """The scenes at ``index`` of the leading dimension."""
        return Primitives(*(getattr(self, f.name)[index] for f in attrs.fields(Primitives)))
