"""Methods: end-to-end recipes (data, network, defaults) runnable from the CLI.

``diffusekit run METHOD`` builds the method's :meth:`Method.recipe`, loads its shipped
:meth:`Method.weights` when the recipe still matches them (or trains), samples with
:meth:`Method.condition` and writes real outputs with :meth:`Method.write_outputs`.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from diffusekit.condition import Condition
from diffusekit.state import State

if TYPE_CHECKING:
    from diffusekit.recipe import Recipe


def packaged_weights(package: str, name: str) -> Path | None:
    """``<package>/weights/<name>.safetensors`` inside an installed package, if it is there
    (what :meth:`Method.weights` of a plugin that ships weights returns)."""
    from importlib.resources import files

    path = Path(str(files(package) / "weights" / f"{name}.safetensors"))
    return path if path.is_file() else None


class Method(abc.ABC):
    """Base class of registered methods."""

    @abc.abstractmethod
    def recipe(self) -> Recipe:
        """The default recipe of this method."""

    def weights(self) -> Path | None:
        """A shipped safetensors checkpoint trained with :meth:`recipe`, if any."""
        return None

    def condition(self, num: int, *, device: torch.device | str | None = None) -> Condition | None:
        """The conditions to sample ``num`` outputs with (``None``: unconditional)."""
        return None

    @abc.abstractmethod
    def write_outputs(self, samples: State, condition: Condition | None, out_dir: Path) -> list[Path]:
        """Write samples as files people can look at; return their paths."""

    def generate(self, pipeline: Any, num: int, out_dir: Path, progress: bool = False) -> list[Path]:
        """The main job of ``diffusekit run``/``sample``: by default draw ``num`` samples with
        :meth:`condition` and :meth:`write_outputs`; a method may do more (solve puzzles, ...)."""
        condition = self.condition(num)
        samples = pipeline.sample(num, condition=condition, progress=progress)
        return self.write_outputs(samples, condition, out_dir)
