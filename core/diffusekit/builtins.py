"""The built-in plugin ``core``: components that belong to no method.

It is registered through the same hooks as every other plugin (pytest's own features
are plugins in the same way).
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from diffusekit.condition import ClassLabel, ConditionList, Embedding
from diffusekit.hookspecs import hookimpl
from diffusekit.sampler import TimeGrid
from diffusekit.schedule import Schedule


@attrs.frozen
class UniformGrid(TimeGrid):
    r"""Times evenly spaced in t: :math:`t_i = t_{max}(1 - i/N)`, :math:`i = 0..N`."""

    steps: int = attrs.field(default=50, validator=attrs.validators.ge(1))
    t_max: float = attrs.field(default=1.0, validator=[attrs.validators.gt(0.0), attrs.validators.le(1.0)])

    def times(self, schedule: Schedule) -> Tensor:
        return torch.linspace(self.t_max, 0.0, self.steps + 1, dtype=torch.float64)


@hookimpl
def register_grids(register):
    register(UniformGrid, name="uniform")


@hookimpl
def register_samplers(register):
    from diffusekit.by_kind import ByKind

    register(ByKind, name="by_kind")


@hookimpl
def register_objectives(register):
    from diffusekit.objective import Denoising

    register(Denoising, name="denoising")


@hookimpl
def register_conditions(register):
    register(ClassLabel, name="class_label")
    register(Embedding, name="embedding")
    register(ConditionList, name="condition_list")
