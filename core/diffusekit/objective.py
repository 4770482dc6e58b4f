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
import math
from typing import TYPE_CHECKING, Literal, NamedTuple

import attrs
import torch
from torch import Tensor

from diffusekit.parameterization import GaussianParameterization, Parameterization
from diffusekit.schedule import CategoricalSchedule, GaussianSchedule, Schedule

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


def signal_to_noise(schedule: Schedule, t: Tensor) -> Tensor:
    r"""A schedule's signal-to-noise ratio at ``t``: :math:`\alpha_t^2/\sigma_t^2 = e^{\lambda_t}` for a
    Gaussian process; for a categorical one, the odds of keeping the clean token,
    :math:`\alpha_t/(1-\alpha_t)`, the ratio EQGAT-diff weights its discrete losses by (Le et al., 2024)."""
    if isinstance(schedule, GaussianSchedule):
        return torch.exp(schedule.log_snr(t))
    if isinstance(schedule, CategoricalSchedule):
        keep = schedule.keep_probability(t)
        return keep / (1.0 - keep)  # +inf at t = 0, clipped by the caller
    raise TypeError(f"{type(schedule).__name__} is neither a Gaussian nor a categorical schedule")


def x0_error_scale(parameterization: Parameterization, schedule: GaussianSchedule, t: Tensor) -> Tensor:
    r"""How a Gaussian parameterization's squared error scales the squared error of the :math:`x_0` it
    implies: its target is affine in :math:`x_0` at fixed :math:`x_t`, with slope :math:`b_t`, so its
    loss is :math:`b_t^2\,\lVert\hat x_0 - x_0\rVert^2`. ``x0``: 1; ``eps``: :math:`\alpha_t^2/\sigma_t^2`;
    ``v``: :math:`(\alpha_t^2+\sigma_t^2)^2/\sigma_t^2` (Salimans & Ho, 2022)."""
    if not isinstance(parameterization, GaussianParameterization):
        raise TypeError(f"{type(parameterization).__name__} is not a Gaussian parameterization")
    c = schedule.coefficients(t)
    x = torch.zeros_like(c.alpha)
    one = torch.ones_like(c.alpha)
    slope = parameterization.target(one, -c.alpha / c.sigma, x, c) - parameterization.target(x, x, x, c)
    return torch.square(slope)


@attrs.frozen
class Denoising(Objective):
    r"""The denoising objective of every diffusion model: each part's parameterization loss
    :math:`\ell_p(f_\theta(x_t, t), x_0)` averaged over the elements not held given (Ho et al.,
    2020; its per-part form is :func:`diffusekit.training.batch_losses`).

    ``weighting = "snr"`` weights each element's loss by its part's signal-to-noise ratio at its
    time, clipped to ``[snr_min, snr_max]`` (:func:`signal_to_noise`). For a Gaussian part the
    weight falls on the squared error of the implied :math:`x_0`, whatever the parameterization
    (:func:`x0_error_scale`). That is Min-SNR weighting (Hang et al., 2023, "Efficient Diffusion
    Training via Min-SNR Weighting Strategy": ``snr_max`` = γ = 5, the default clip ``[0, 5]``) and
    EQGAT-diff's time-dependent weighting of every part (``snr_min`` = 0.05, ``snr_max`` = 1.5). It
    moves the loss's weight from the nearly clean times, where an :math:`x_0` error costs little,
    to the noisy ones that decide the structure.
    """

    weighting: Literal["none", "snr"] = attrs.field(default="none", validator=attrs.validators.in_(("none", "snr")))
    snr_min: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    snr_max: float = attrs.field(default=5.0, validator=attrs.validators.gt(0.0))  # finite: t = 0 has SNR = ∞

    def __attrs_post_init__(self) -> None:
        if not math.isfinite(self.snr_max):
            raise ValueError("snr_max must be finite (the signal-to-noise ratio is infinite at t = 0)")
        if self.snr_min > self.snr_max:
            raise ValueError(f"snr_min ({self.snr_min}) is above snr_max ({self.snr_max})")

    def check(self, recipe: Recipe) -> None:
        from diffusekit.errors import ConfigError
        from diffusekit.plugins import get_registry
        from diffusekit.recipe import instantiate

        if self.weighting == "none":
            return
        for name, part in recipe.parts.items():
            path = f"parts.{name}.schedule"
            schedule = instantiate(get_registry(), "schedule", part.schedule, path)
            if not isinstance(schedule, GaussianSchedule | CategoricalSchedule):
                raise ConfigError(path, f"{part.schedule.name} has no signal-to-noise ratio for weighting = 'snr'")

    def weights(self, denoiser: Denoiser, drawn: Drawn) -> dict[str, Tensor] | None:
        """Each part's per-time loss weights (``None`` without weighting); 0 where undefined (t = 0)."""
        if self.weighting == "none":
            return None
        weights = {}
        for name, t in drawn.times.items():
            schedule = denoiser.schedules[name]
            w = signal_to_noise(schedule, t).clamp(self.snr_min, self.snr_max)
            if isinstance(schedule, GaussianSchedule):
                w = w / x0_error_scale(denoiser.parameterizations[name], schedule, t)
            weights[name] = torch.where(torch.isfinite(w), w, 0.0)
        return weights

    def losses(self, denoiser: Denoiser, batch: Data, drawn: Drawn, progress: Progress) -> dict[str, Tensor]:
        from diffusekit.training import batch_losses

        return batch_losses(denoiser, batch, drawn, self.weights(denoiser, drawn))
