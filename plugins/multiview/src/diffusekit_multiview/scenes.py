r"""Scenes the plugin builds and renders itself: 1–3 coloured primitives seen from several cameras.

A scene is drawn as follows (all from one ``numpy.random.Generator``):

- the number of primitives is uniform in {1, 2, 3}; each has a kind uniform in
  :data:`~diffusekit_multiview.primitives.KINDS` and sizes uniform in :data:`SIZES` (per kind);
- a uniformly random rotation (a normalised Gaussian quaternion, uniform on SO(3); Shoemake,
  1992, "Uniform random rotations");
- a centre uniform in the ball of radius :math:`1 - \rho`, with :math:`\rho` the primitive's
  bounding radius, so that every primitive lies inside the unit ball (primitives may overlap:
  the scene is their union);
- a colour drawn from :data:`PALETTE`;

then the scene is normalised as object datasets are for multi-view models (Zero123 and MVDream
centre and scale every Objaverse object): translated so that the centre of the box around its
primitives' bounding balls is the origin, and scaled so that the smallest ball about the origin
holding them has radius :data:`FILL`. Without it an object's depth is ambiguous from one view
and it covers a tenth of the image.

Each scene is seen from ``views`` cameras drawn uniformly on the zone of elevations
:data:`ELEVATION_DEG` of the sphere of radius :data:`CAMERA_RADIUS`, with a vertical field of view
of :data:`FOV_DEG` (a unit ball at that distance fills about 85% of the image height, a
normalised scene at most about 75%), and rendered
by :func:`diffusekit_multiview.render.render`. A scene's *shape class* is the kind of its largest
primitive by volume, for class conditioning.
"""

from __future__ import annotations

from typing import Literal

import attrs
import numpy as np
import torch
from attrs import validators as v
from diffusekit import ClassLabel, ConditionList, Data, Dataset
from torch import Tensor

from diffusekit_multiview import cameras, primitives
from diffusekit_multiview.cameras import Cameras
from diffusekit_multiview.primitives import Primitives
from diffusekit_multiview.render import render

MAX_PRIMITIVES = 3
CAMERA_RADIUS = 3.0
FOV_DEG = 45.0
ELEVATION_DEG = (-20.0, 60.0)
SIZES = {
    primitives.SPHERE: ((0.25, 0.5), (0.0, 0.0), (0.0, 0.0)),  # radius
    primitives.BOX: ((0.15, 0.4), (0.15, 0.4), (0.15, 0.4)),  # half-extents
    primitives.TORUS: ((0.25, 0.4), (0.07, 0.15), (0.0, 0.0)),  # ring radius, tube radius
    primitives.CYLINDER: ((0.15, 0.35), (0.15, 0.4), (0.0, 0.0)),  # radius, half-height
}
"""Ranges ``(lo, hi)`` of the three ``size`` entries of each kind (unused entries are 0)."""
PALETTE = (
    (0.90, 0.20, 0.20),  # red
    (0.20, 0.70, 0.30),  # green
    (0.20, 0.40, 0.90),  # blue
    (0.95, 0.80, 0.20),  # yellow
    (0.60, 0.30, 0.80),  # purple
    (0.95, 0.55, 0.15),  # orange
)
"""The colours a primitive can take (RGB in [0, 1]); all distinct from the white background."""
FILL = 0.9
"""The radius of the ball about the origin that holds every normalised scene exactly."""
SPLITS = ("train", "test")
_CHUNK = 16  # scenes rendered at once: larger batches fall out of the CPU caches (twice slower at 64)


def _rotation(gen: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix from a normalised Gaussian quaternion ``(w, x, y, z)``."""
    w, x, y, z = (q := gen.standard_normal(4)) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _normalise(kind: np.ndarray, centre: np.ndarray, size: np.ndarray, present: np.ndarray) -> None:
    """Centre one scene's primitives (in place) on the box around their bounding balls and scale
    them so that the ball about the origin that holds them has radius :data:`FILL`."""
    reach = primitives.bounding_radius(torch.from_numpy(kind), torch.from_numpy(size)).numpy()[present]
    used = centre[present]
    middle = ((used - reach[:, None]).min(0) + (used + reach[:, None]).max(0)) / 2.0
    scale = FILL / float((np.linalg.norm(used - middle, axis=-1) + reach).max())
    centre[present] = (used - middle) * scale
    size[present] *= scale  # every size entry is a length: the primitives scale with them


def random_primitives(gen: np.random.Generator, count: int) -> Primitives:
    """``count`` random scenes (see the module docstring): :class:`Primitives` of batch ``(count,)``,
    float32, with :data:`MAX_PRIMITIVES` slots each (unused slots not ``present``)."""
    p = MAX_PRIMITIVES
    kind = np.zeros((count, p), dtype=np.int64)
    centre = np.zeros((count, p, 3))
    size = np.zeros((count, p, 3))
    colour = np.zeros((count, p, 3))
    rotation = np.broadcast_to(np.eye(3), (count, p, 3, 3)).copy()
    present = np.zeros((count, p), dtype=bool)
    for s in range(count):
        for k in range(int(gen.integers(1, p + 1))):
            kind[s, k] = gen.integers(len(primitives.KINDS))
            size[s, k] = [gen.uniform(lo, hi) for lo, hi in SIZES[kind[s, k]]]
            reach = float(primitives.bounding_radius(torch.tensor(kind[s, k]), torch.tensor(size[s, k])))
            direction = gen.standard_normal(3)
            direction /= np.linalg.norm(direction)
            centre[s, k] = (1.0 - reach) * gen.uniform() ** (1.0 / 3.0) * direction  # uniform in the ball
            rotation[s, k] = _rotation(gen)
            colour[s, k] = PALETTE[gen.integers(len(PALETTE))]
            present[s, k] = True
        _normalise(kind[s], centre[s], size[s], present[s])
    f = torch.float32
    return Primitives(
        torch.from_numpy(kind),
        torch.from_numpy(centre).to(f),
        torch.from_numpy(size).to(f),
        torch.from_numpy(colour).to(f),
        torch.from_numpy(rotation).to(f),
        torch.from_numpy(present),
    )


def largest_primitive(scenes: Primitives) -> Tensor:
    """The slot ``(...)`` of each scene's largest primitive by volume."""
    return primitives.volume(scenes.kind, scenes.size).masked_fill(~scenes.present, -1.0).argmax(-1)


def shape_classes(scenes: Primitives) -> Tensor:
    """The kind ``(...)`` of each scene's largest primitive by volume."""
    return scenes.kind.gather(-1, largest_primitive(scenes)[..., None])[..., 0]


@attrs.frozen(eq=False)
class SceneBatch:
    """Rendered scenes with everything about them: ``views`` float32 ``(N, V, 3, S, S)`` in [0, 1];
    ``depth`` ``(N, V, S, S)`` (distance along the ray, 0 off the object); ``masks`` bool ``(N, V, S, S)``;
    ``extrinsics`` ``(N, V, 4, 4)`` (world to camera, :mod:`diffusekit_multiview.cameras`); ``primitives``,
    the scenes (:class:`Primitives` of batch ``(N,)``); ``shape_class`` int64 ``(N,)``, the kind of each
    scene's largest primitive."""

    views: Tensor
    depth: Tensor
    masks: Tensor
    extrinsics: Tensor
    primitives: Primitives
    shape_class: Tensor


@attrs.frozen
class Shapes(Dataset):
    """``count`` scenes of 1–3 coloured primitives (sphere, box, torus, capped cylinder), each rendered from
    ``views`` random cameras at ``size``×``size`` (see :mod:`diffusekit_multiview.scenes`).

    :meth:`load` gives ``Data({"views": (count, views, 3, size, size)})`` in [-1, 1] with the cameras as the
    condition, :class:`~diffusekit_multiview.cameras.Cameras` (an :class:`~diffusekit.Embedding` of the
    flattened 4×4 extrinsics of every view ``(count, views·16)`` that dropout never removes; with ``labels``, a :class:`~diffusekit.ConditionList` of it and the
    :class:`~diffusekit.ClassLabel` of the shape class); :meth:`generate` gives a :class:`SceneBatch`. The ``train`` and ``test`` splits
    draw from disjoint streams, ``numpy.random.default_rng([seed, 0])`` and ``([seed, 1])``.
    """

    count: int = attrs.field(default=256, validator=v.ge(1))  # methods name their own training-set size
    views: int = attrs.field(default=6, validator=[v.ge(4), v.le(8)])
    size: int = attrs.field(default=32, validator=v.ge(8))
    seed: int = attrs.field(default=0, validator=v.ge(0))
    split: Literal["train", "test"] = attrs.field(default="train", validator=v.in_(SPLITS))
    labels: bool = False

    def generate(self) -> SceneBatch:
        """The scenes with their cameras, depth, masks and parameters (:class:`SceneBatch`)."""
        gen = np.random.default_rng([self.seed, SPLITS.index(self.split)])
        scenes = random_primitives(gen, self.count)
        camera_gen = torch.Generator().manual_seed(int(gen.integers(2**62)))
        extrinsics = cameras.random_cameras(
            self.count * self.views, camera_gen, CAMERA_RADIUS, ELEVATION_DEG
        ).unflatten(0, (self.count, self.views))
        parts = [
            render(scenes.take(slice(i, i + _CHUNK)), extrinsics[i : i + _CHUNK], self.size, fov_deg=FOV_DEG)
            for i in range(0, self.count, _CHUNK)
        ]
        rgb, depth, mask = (torch.cat(list(field)) for field in zip(*parts, strict=True))
        return SceneBatch(rgb, depth, mask, extrinsics, scenes, shape_classes(scenes))

    def load(self) -> Data:
        batch = self.generate()
        labels = batch.shape_class if self.labels else None
        return Data({"views": batch.views.mul_(2.0).sub_(1.0)}, scene_condition(batch.extrinsics, labels))


def scene_condition(extrinsics: Tensor, shape_class: Tensor | None = None) -> Cameras | ConditionList:
    """The condition of scenes seen by ``extrinsics`` ``(N, V, 4, 4)``: their
    :class:`~diffusekit_multiview.cameras.Cameras`, and with ``shape_class`` ``(N,)`` a list of
    them and the :class:`~diffusekit.ClassLabel` (one of :data:`~diffusekit_multiview.primitives.KINDS`)."""
    cams = Cameras.of(extrinsics)
    if shape_class is None:
        return cams
    return ConditionList((cams, ClassLabel(shape_class, num_classes=len(primitives.KINDS))))
