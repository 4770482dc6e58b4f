r"""Progressive distillation and rectified-flow reflow: students that take fewer, straighter steps.

**Progressive distillation** (Salimans & Ho, ICLR 2022): a student takes one DDIM step where
its teacher takes two. On the grid :math:`t_n = n/N` of the student's :math:`N` steps, from
:math:`x_{hi} = \alpha_{hi}x_0 + \sigma_{hi}\varepsilon` at :math:`t_{hi} = n/N` the teacher's two
DDIM steps land on :math:`x_{lo}` at :math:`t_{lo} = (n-1)/N`; the student's target is the
:math:`\tilde x_0` whose single DDIM step lands there,

.. math:: \tilde x_0 = \frac{x_{lo} - (\sigma_{lo}/\sigma_{hi})\,x_{hi}}{\alpha_{lo} - (\sigma_{lo}/\sigma_{hi})\,\alpha_{hi}},

with the loss :math:`\max(\mathrm{SNR}_{hi}, 1)\,\lVert\hat x_0 - \tilde x_0\rVert^2` ("truncated
SNR" weighting). Each round halves :math:`N`; the next round's teacher is this student.

**Reflow** (Liu et al., "Flow Straight and Fast", ICLR 2023): the teacher's ODE couples each
noise draw :math:`z` with a sample :math:`x_0 = \mathrm{ODE}(z)`, and the student learns the
straight path between them under the rectified-flow schedule, :math:`x_t = (1-t)x_0 + tz`,
with its own parameterization's loss. Straighter paths need fewer steps.
"""

from __future__ import annotations

import attrs
import torch
from attrs import validators as v
from diffusekit import ConfigError, Corrupted, Progress, TimePlan, get_registry
from diffusekit.state import align_time
from torch import Tensor

from diffusekit_distill import teacher as teachers

F64 = torch.float64


def one_step_x0(x_hi: Tensor, x_lo: Tensor, hi, lo) -> Tensor:
    r"""The :math:`\tilde x_0` whose DDIM step from ``x_hi`` (coefficients ``hi``) lands on ``x_lo``
    (coefficients ``lo``): :math:`x_{lo} = \alpha_{lo}\tilde x_0 + \frac{\sigma_{lo}}{\sigma_{hi}}(x_{hi} - \alpha_{hi}\tilde x_0)`, solved for :math:`\tilde x_0`."""
    ratio = lo.sigma / hi.sigma.clamp(min=1e-12)
    return (x_lo - ratio * x_hi) / (lo.alpha - ratio * hi.alpha)


@attrs.frozen
class ProgressiveDistillation(teachers.TeacherObjective):
    """Progressive distillation (Salimans & Ho, 2022): the student's DDIM step on the ``steps``-step
    uniform grid matches two DDIM steps of ``teacher``. The training time drawn by the loop picks
    the student's step :math:`n = \\lceil uN\\rceil`; the noise is the loop's."""

    steps: int = attrs.field(default=8, validator=v.ge(1))

    def check(self, recipe) -> None:
        for part, spec in recipe.parts.items():
            if spec.time_dims != 1:
                raise ConfigError(f"parts.{part}.time_dims", "progressive distillation draws one time per sample")

    def losses(self, denoiser, batch, drawn, progress: Progress) -> dict[str, Tensor]:
        teacher = teachers.guided(self.teacher_pipeline(next(iter(batch.parts.values())).device))
        ddim = get_registry().resolve("sampler", "gaussian:ddim").obj()
        x_hi, t_hi, t_mid, t_lo = {}, {}, {}, {}
        for part, x0 in batch.parts.items():
            n = torch.ceil(drawn.times[part].to(F64) * self.steps).clamp(1, self.steps)
            t_hi[part], t_mid[part], t_lo[part] = n / self.steps, (n - 0.5) / self.steps, (n - 1) / self.steps
            c = denoiser.schedules[part].coefficients(t_hi[part]).align(x0)
            x_hi[part] = (c.alpha * x0 + c.sigma * drawn.corrupted[part].noise).to(x0.dtype)
        with torch.no_grad():
            plan = TimePlan.from_times([t_hi, t_mid, t_lo], list(x_hi))
            x_lo = ddim.sample(teacher, dict(x_hi), plan, condition=drawn.condition)
        predicted = denoiser(x_hi, t_hi, drawn.condition)
        out = {}
        for part, x0 in batch.parts.items():
            schedule = denoiser.schedules[part]
            hi = schedule.coefficients(t_hi[part]).align(x0)
            lo = schedule.coefficients(t_lo[part]).align(x0)
            target = one_step_x0(x_hi[part], x_lo[part], hi, lo)
            weight = (hi.alpha**2 / hi.sigma.clamp(min=1e-12) ** 2).clamp(min=1.0, max=1e4).to(torch.float32)
            error = (predicted[part].x0 - target.to(x0.dtype)).float().square()
            out[part] = (weight * error).mean()
        return out


@attrs.frozen
class Reflow(teachers.TeacherObjective):
    """Reflow (Liu et al., 2023): the student, under a rectified-flow schedule, learns the straight
    path from each noise draw to the sample ``teacher``'s ODE solver (``solver`` on the log-SNR grid of
    ``teacher_steps`` steps) makes of it. The loop's noise is the draw; its time the point on the path."""

    solver: str = "gaussian:dpmpp_2m"
    teacher_steps: int = attrs.field(default=10, validator=v.ge(1))

    def check(self, recipe) -> None:
        from diffusekit.recipe import instantiate

        registry = get_registry()
        for part, spec in recipe.parts.items():
            schedule = instantiate(registry, "schedule", spec.schedule, f"parts.{part}.schedule")
            c = schedule.coefficients(torch.tensor([0.25, 0.5], dtype=F64))
            straight = torch.allclose(c.alpha, 1 - c.sigma) and torch.allclose(
                c.sigma, torch.tensor([0.25, 0.5], dtype=F64)
            )
            if not straight:
                raise ConfigError(
                    f"parts.{part}.schedule",
                    f"reflow trains on straight paths: use gaussian:rectified_flow, not {spec.schedule.name}",
                )
        if registry.resolve("sampler", self.solver).obj().stochastic:
            raise ConfigError("train.objective.solver", f"{self.solver} is stochastic; the coupling needs the ODE")

    def couple(self, noise: dict[str, Tensor], condition) -> dict[str, Tensor]:
        """The teacher's ODE samples from ``noise`` (a draw at t = 1 of the teacher's schedule, scaled to it)."""
        from diffusekit_gaussian.grids import LogSNRGrid

        device = next(iter(noise.values())).device
        pipeline = self.teacher_pipeline(device)
        solver = get_registry().resolve("sampler", self.solver).obj()
        start = {}
        for part, z in noise.items():
            c = pipeline.denoiser.schedules[part].coefficients(torch.tensor(1.0, dtype=F64)).item()
            start[part] = z * c.sigma  # x_1 = alpha_1 x0 + sigma_1 z, with alpha_1 ~ 0
        with torch.no_grad():
            out = solver.sample(
                teachers.guided(pipeline), start, LogSNRGrid(steps=self.teacher_steps), condition=condition
            )
        return out if isinstance(out, dict) else {next(iter(noise)): out}

    def losses(self, denoiser, batch, drawn, progress: Progress) -> dict[str, Tensor]:
        noise = {part: drawn.corrupted[part].noise for part in batch.parts}
        x0 = self.couple(noise, drawn.condition)
        corrupted = {}
        for part, z in noise.items():
            t = align_time(drawn.times[part], z).to(z.dtype)
            corrupted[part] = Corrupted((1 - t) * x0[part] + t * z, z)
        prepared = denoiser.prepare({p: c.x_t for p, c in corrupted.items()}, drawn.times)
        raw = denoiser.run_network(prepared, drawn.condition)
        return {
            part: denoiser.parameterizations[part].loss(raw[part], prepared[part], x0[part], corrupted[part]).mean()
            for part in batch.parts
        }
