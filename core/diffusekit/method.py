"""Methods: end-to-end recipes (data, network, defaults) runnable from the CLI.

``diffusekit run METHOD`` builds the method's :meth:`Method.recipe`, loads its shipped
:meth:`Method.weights` when the recipe still matches them (or trains), samples with
:meth:`Method.condition` and writes real outputs with :meth:`Method.write_outputs`.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from diffusekit.condition import Condition
from diffusekit.errors import InputError
from diffusekit.known import Known, read_given
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

    input_format: ClassVar[str | None] = None
    """What ``diffusekit run METHOD --input FILE`` takes, in a few words (shown in ``show`` and in
    errors); ``None``: the method takes no input. A method that sets it reads the file with
    :meth:`read_input` and completes it with :meth:`complete`."""

    prompt_format: ClassVar[str | None] = None
    """What ``diffusekit run METHOD --prompt TEXT`` takes, in a few words; ``None``: no prompt. A
    method that sets it turns the text into given data with :meth:`read_prompt` and completes
    it with :meth:`complete`, as for ``--input``."""

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

    def read_input(self, path: Path, recipe: Recipe) -> tuple[State, Known]:
        """The given data and known mask in ``path`` (see :mod:`diffusekit.known`); a malformed file is
        a one-line :class:`~diffusekit.InputError` naming what is wrong where. By default the
        safetensors format of :func:`~diffusekit.read_given`; methods read their own formats
        (a puzzle as text, an image with transparent pixels to fill)."""
        return read_given(path, {name: part.shape for name, part in recipe.parts.items()})

    def read_prompt(self, text: str, recipe: Recipe) -> tuple[State, Known]:
        """The given data and known mask that ``text`` describes (one sample); a prompt the method
        cannot take is a one-line :class:`~diffusekit.InputError` naming what is wrong where."""
        raise InputError(f"method {recipe.method} takes no prompt")

    def complete(self, pipeline: Any, given: State, known: Known, out_dir: Path, progress: bool = False) -> list[Path]:
        """The main job of ``diffusekit run --input``: complete the given data (one sample per given
        row) with :meth:`condition` and :meth:`write_outputs`; a method may do more (check a puzzle)."""
        rows = next(iter(given.values())).shape[0] if isinstance(given, dict) else given.shape[0]
        condition = self.condition(rows)
        samples = pipeline.sample(given=given, known=known, condition=condition, progress=progress)
        return self.write_outputs(samples, condition, out_dir)
