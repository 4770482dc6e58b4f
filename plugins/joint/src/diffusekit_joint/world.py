r"""A point-mass world for Unified World Models: a frame, an action, the next frame.

UWM (Zhu et al., 2025, "Unified World Models: Coupling Video and Action Diffusion for
Pretraining on Large Robotic Datasets") diffuses video and actions in one network with a
timestep each, so that one model is a policy, a forward and an inverse dynamics model and a
video predictor, by the choice of timesteps. This world is the smallest that has all four:

* a point mass at :math:`p \in [3, 12]^2` (pixels) drawn as a Gaussian blob (standard deviation
  :data:`BLOB` px) on a :data:`SIZE` × :data:`SIZE` frame, in [-1, 1];
* a demonstrator that steers toward the centre :math:`c`: :math:`a = \mathrm{clip}(0.4\,(c - p)
  + \mathcal N(0, 0.6^2), -2, 2)` per axis — the policy is a distribution that depends on
  where the mass is;
* the next position :math:`p' = p + a` (inside the frame, so the frames determine the action).

The state has three Gaussian parts: ``now`` and ``next`` ``(1, 16, 16)`` frames and ``action``
``(2,)``, the action divided by :data:`ACTION_SCALE` (so in [-1, 1]).
"""

from __future__ import annotations

import attrs
import torch
from attrs import validators as v
from diffusekit import Data, Dataset
from torch import Tensor

NOW, NEXT, ACTION = "now", "next", "action"
SIZE = 16
BLOB = 1.2
ACTION_SCALE = 2.0
CENTRE = (SIZE - 1) / 2.0
GAIN, NOISE = 0.4, 0.6
LOW, HIGH = 3.0, 12.0


def render(positions: Tensor) -> Tensor:
    """Frames ``(N, 1, SIZE, SIZE)`` in [-1, 1] of point masses at ``positions`` ``(N, 2)`` (x, y in pixels)."""
    axis = torch.arange(SIZE, dtype=torch.float32)
    dx = axis[None, None, :] - positions[:, 0, None, None].float()
    dy = axis[None, :, None] - positions[:, 1, None, None].float()
    blob = torch.exp(-(dx.square() + dy.square()) / (2 * BLOB**2))
    return (2.0 * blob - 1.0)[:, None]


def mean_action(positions: Tensor) -> Tensor:
    """The demonstrator's action before its noise and clipping, ``(N, 2)`` in pixels."""
    return GAIN * (CENTRE - positions)


def demonstrate(count: int, generator: torch.Generator) -> dict[str, Tensor]:
    """``count`` transitions: positions, actions (pixels) and the two frames."""
    p = LOW + (HIGH - LOW) * torch.rand(count, 2, generator=generator)
    a = (mean_action(p) + NOISE * torch.randn(count, 2, generator=generator)).clamp(-ACTION_SCALE, ACTION_SCALE)
    return {"position": p, "action": a, NOW: render(p), NEXT: render(p + a)}


def centroid(frames: Tensor) -> Tensor:
    """The position ``(N, 2)`` of the mass in frames ``(N, 1, S, S)``: the weighted mean of the pixels above the background."""
    weight = ((frames[:, 0] + 1.0) / 2.0).clamp_min(0.0)
    weight = weight * (weight > 0.1)
    axis = torch.arange(frames.shape[-1], dtype=weight.dtype)
    total = weight.sum((-1, -2)).clamp_min(1e-6)
    return (
        torch.stack([(weight * axis[None, None, :]).sum((-1, -2)), (weight * axis[None, :, None]).sum((-1, -2))], 1)
        / total[:, None]
    )


@attrs.frozen
class PointMassWorld(Dataset):
    """``count`` demonstrated transitions (seeded; ``split="test"`` draws a disjoint stream)."""

    count: int = attrs.field(default=20_000, validator=v.ge(1))
    split: str = attrs.field(default="train", validator=v.in_(("train", "test")))

    def load(self) -> Data:
        g = torch.Generator().manual_seed(11 if self.split == "train" else 12)
        found = demonstrate(self.count, g)
        return Data({NOW: found[NOW], NEXT: found[NEXT], ACTION: found["action"] / ACTION_SCALE})


__all__ = ["ACTION", "NEXT", "NOW", "PointMassWorld", "centroid", "demonstrate", "mean_action", "render"]
