r"""Training objectives: what the core training loop minimises on each batch.

The loop (:func:`diffusekit.training.train`) draws a batch, its times and corruptions
from generators seeded by ``(seed, step)``, and asks the recipe's objective
(``train.objective``; by default :class:`Denoising`) for the per-part losses of that
batch. Distillation (consistency models, progressive distillation, reflow) is an
objective, not a second loop: it gets the same resumable, distributed, checkpointed
training for free.

An objective is a frozen attrs class, like every component: its fields are its
settings. It may hold a frozen teacher (loaded once, never trained); it holds no step
state, which it receives as :class:`Progress`.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, NamedTuple

import attrs
from torch import Tensor

if TYPE_CHECKING:
    from diffusekit.data import Data
    from diffusekit.denoiser import Denoiser
    from diffusekit.recipe import Recipe
    from diffusekit.training import Drawn


class Progress(NamedTuple):
    """Where the run is: the step being taken (0-based) and the run's total steps."""

    step: int
    total: int


class Objective(abc.ABC):
    """The per-part losses of one training batch."""

    @abc.abstractmethod
    def losses(self, denoiser: Denoiser, batch: Data, drawn: Drawn, progress: Progress) -> dict[str, Tensor]:
        """Per-part mean losses (before the recipe's per-part weights) of ``batch`` under ``drawn``.

        ``denoiser`` is the one being trained (its network may be wrapped for several
        processes). Anything random must come from ``drawn`` (times, noise), so a run
        resumed or spread over processes computes what one uninterrupted process does.
        """

    def check(self, recipe: Recipe) -> None:  # noqa: B027 - optional hook, nothing to check by default
        """Raise a :class:`~diffusekit.errors.ConfigError` if the objective cannot train ``recipe``."""

    def initial_weights(self, recipe: Recipe) -> dict[str, Tensor] | None:
        """Weights a fresh run starts from (a student starts as its teacher), or ``None``: fresh initialisation."""
        return None


@attrs.frozen
class Denoising(Objective):
    r"""The denoising objective of every diffusion model: each part's parameterization loss
    :math:`\ell_p(f_\theta(x_t, t), x_0)` averaged over the elements not held given (Ho et al.,
    2020; its per-part form is :func:`diffusekit.training.batch_losses`)."""

    def losses(self, denoiser: Denoiser, batch: Data, drawn: Drawn, progress: Progress) -> dict[str, Tensor]:
        from diffusekit.training import batch_losses

        return batch_losses(denoiser, batch, drawn)
