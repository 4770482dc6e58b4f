"""The frozen teacher of a distillation objective, and shared helpers of the objectives."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import torch
from diffusekit import ConfigError, DiffusekitError, Objective, Pipeline, load, pretrained
from diffusekit.recipe import Recipe
from torch import Tensor

F64 = torch.float64


def load_teacher(spec: str) -> Pipeline:
    """The teacher named by ``spec``: a checkpoint file, or a method with shipped weights
    (``gaussian:digits``). Its network is put in evaluation mode with gradients off."""
    path = Path(spec)
    try:
        if path.suffix == ".safetensors" or path.exists():
            pipeline = load(path)
        else:
            pipeline = pretrained(spec)
    except DiffusekitError as exc:
        raise ConfigError("train.objective.teacher", f"{spec}: {exc}") from None
    pipeline.network.eval().requires_grad_(False)
    return pipeline


class TeacherCache:
    """One loaded teacher per objective instance (objectives are frozen; the teacher never changes)."""

    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None

    def get(self, spec: str, device: torch.device) -> Pipeline:
        if self.pipeline is None:
            self.pipeline = load_teacher(spec)
        if next(self.pipeline.network.parameters()).device != device:
            self.pipeline.network.to(device)
        return self.pipeline


@attrs.frozen
class TeacherObjective(Objective):
    """An objective with a frozen ``teacher`` (a method with shipped weights or a checkpoint file),
    loaded once; a fresh run's student starts as the teacher when ``init_from_teacher``."""

    teacher: str = "gaussian:digits"
    init_from_teacher: bool = True
    _cache: TeacherCache = attrs.field(init=False, factory=TeacherCache, eq=False, repr=False)

    def teacher_pipeline(self, device: torch.device) -> Pipeline:
        return self._cache.get(self.teacher, device)

    def initial_weights(self, recipe) -> dict[str, Tensor] | None:
        return self.teacher_pipeline(torch.device("cpu")).network.state_dict() if self.init_from_teacher else None


def guided(pipeline: Pipeline) -> Any:
    """The teacher as it samples: its denoiser under its recipe's guidance, if any."""
    return pipeline.denoiser if pipeline.guidance is None else pipeline.guidance.wrap(pipeline.denoiser)


def check_same_parts(recipe: Recipe, teacher: Recipe, name: str) -> None:
    """The student's parts have the teacher's shapes."""
    for part, spec in recipe.parts.items():
        if part not in teacher.parts or tuple(teacher.parts[part].shape) != tuple(spec.shape):
            raise ConfigError(
                "parts", f"{name}: the teacher has parts {dict(teacher.parts)}; the student's {part!r} differs"
            )


def check_boundary(recipe: Recipe, registry: Any, name: str) -> None:
    r"""Every part's parameterization gives :math:`\hat x_0 = x` at t = 0 whatever the network
    outputs: the boundary condition of a consistency model (Song et al., 2023, eq. 3), which
    eps-, v- and EDM-preconditioned outputs satisfy by construction and x0-prediction does not."""
    from diffusekit.recipe import instantiate

    for part, spec in recipe.parts.items():
        schedule = instantiate(registry, "schedule", spec.schedule, f"parts.{part}.schedule")
        param = instantiate(registry, "parameterization", spec.parameterization, f"parts.{part}.parameterization")
        if schedule.kind != "gaussian":
            raise ConfigError(f"parts.{part}.schedule", f"{name} distils Gaussian parts only")
        x = torch.linspace(-2.0, 2.0, 12, dtype=F64).reshape(3, 4)
        prepared = param.prepare(schedule, x, torch.zeros(3, dtype=F64))
        x0 = param.output(torch.full_like(x, 0.7), prepared).x0
        if not torch.allclose(x0, x, atol=1e-9):
            raise ConfigError(
                f"parts.{part}.parameterization",
                f"{spec.parameterization.name} does not give x0 = x at t = 0, the boundary condition {name} needs "
                "(use eps, v or EDM preconditioning)",
            )


def at_sigma(schedule: Any, sigma_tilde: Tensor) -> Tensor:
    r"""The schedule's times at noise levels :math:`\tilde\sigma = \sigma/\alpha` (0 maps to t = 0)."""
    safe = sigma_tilde.clamp(min=1e-30)
    t = schedule.t_from_log_snr(-2.0 * torch.log(safe)).clamp(0.0, 1.0)
    return torch.where(sigma_tilde > 0, t, torch.zeros_like(t))


def top_sigma(schedule: Any, sigma_max: float) -> float:
    r"""``sigma_max``, lowered to what the schedule reaches at t = 1."""
    top = -0.5 * float(schedule.log_snr(torch.tensor(1.0, dtype=F64)))
    return min(sigma_max, math.exp(top) if top < 700 else math.inf)


def karras(sigma_max: float, sigma_min: float, rho: float, positions: Tensor) -> Tensor:
    """Karras et al. (2022) noise levels at ``positions`` in [0, 1] (0: ``sigma_max``, 1: ``sigma_min``)."""
    a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (a + positions * (b - a)) ** rho


def pseudo_huber(a: Tensor, b: Tensor, c: float) -> Tensor:
    r"""Per-sample :math:`\sqrt{\lVert a - b\rVert^2 + c^2} - c` (Song & Dhariwal, iCT, 2023), ``c`` scaled by :math:`\sqrt{d}`."""
    d = a[0].numel()
    scaled = c * math.sqrt(d)
    return torch.sqrt((a - b).flatten(1).square().sum(1) + scaled**2) - scaled
