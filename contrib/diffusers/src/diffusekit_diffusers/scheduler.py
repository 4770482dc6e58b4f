"""Any one-evaluation diffusekit sampler as a diffusers scheduler.

diffusers' pipelines drive a scheduler through a fixed protocol: ``set_timesteps(n)``,
then for each ``t`` in ``scheduler.timesteps`` they call the model on
``scale_model_input(sample, t)`` and hand its output to ``step(output, t, sample)``.
:class:`DiffusekitScheduler` speaks that protocol and runs a diffusekit sampler
underneath: each ``step`` replays the model output as the sampler's one network
evaluation of that step. The protocol makes the adapter stateful (the step index and a
multistep sampler's history live in it, as in every diffusers scheduler); the sampler it
wraps stays pure. Samplers that evaluate the network more than once per step (Heun,
DPM-Solver++ 2S) need the model inside the step, which the protocol does not give; run
them on :func:`~diffusekit_diffusers.denoiser` instead.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import torch
from diffusekit import Sampler, ShapeError
from diffusekit.plugins import get_registry
from diffusekit.recipe import ComponentSpec, instantiate
from torch import Tensor

from diffusekit_diffusers.grid import DiffusersTimesteps
from diffusekit_diffusers.model import DiffusersPrediction
from diffusekit_diffusers.schedule import DiffusersSchedule


class SchedulerOutput(NamedTuple):
    """What ``step`` returns (the fields diffusers' pipelines read)."""

    prev_sample: Tensor
    pred_original_sample: Tensor


class _Replay:
    """A denoiser that answers the sampler's one evaluation with the model output it was given."""

    def __init__(self, schedule: DiffusersSchedule, parameterization: DiffusersPrediction, output: Tensor) -> None:
        self.schedules = {"x": schedule}
        self.parameterization = parameterization
        self.output = output
        self.calls = 0

    def __call__(self, x, t, condition=None, coef=None):
        self.calls += 1
        if self.calls > 1:
            raise ShapeError("the sampler asked for a second network evaluation within one step")
        prepared = self.parameterization.prepare(
            self.schedules["x"], x["x"], t["x"], None if coef is None else coef["x"]
        )
        return {"x": self.parameterization.output(self.output.to(x["x"].dtype), prepared)}


def _sampler(sampler: Sampler | str) -> Sampler:
    """A sampler instance from an instance or a spec ``NAME`` / ``NAME{json params}``."""
    if isinstance(sampler, Sampler):
        return sampler
    name, brace, params = sampler.partition("{")
    try:
        settings = json.loads(brace + params) if brace else {}
    except json.JSONDecodeError as exc:
        raise ShapeError(f"sampler {sampler!r}: the parameters are not valid JSON ({exc.msg})") from None
    return instantiate(get_registry(), "sampler", ComponentSpec(name, settings), "sampler")


class DiffusekitScheduler:
    """A diffusers-compatible scheduler that steps with a diffusekit sampler.

    Build it from the scheduler a pipeline already has, then put it in the pipeline::

        pipe.scheduler = DiffusekitScheduler.from_scheduler(pipe.scheduler, "gaussian:dpmpp_2m")

    The noise schedule, ``prediction_type`` and ``clip_sample`` come from that scheduler's
    config, and so do the inference timesteps (its own ``set_timesteps``). The sample
    stays in diffusers' variance-preserving form, so ``init_noise_sigma`` is 1 and
    ``scale_model_input`` is the identity. Stochastic samplers draw their noise from the
    ``generator`` the pipeline passes to ``step``.
    """

    order = 1

    def __init__(self, sampler: Sampler | str, source: Any) -> None:
        self.sampler = _sampler(sampler)
        if self.sampler.evaluations_per_step != 1:
            raise ShapeError(
                f"{type(self.sampler).__name__} evaluates the network {self.sampler.evaluations_per_step} times per "
                "step, but a diffusers pipeline calls the model once per timestep; run it with "
                "diffusekit_diffusers.denoiser(model, scheduler) instead"
            )
        self.sampler.check_supports({"x": DiffusersSchedule()})
        self.source = source
        self.config = source.config
        self.schedule = DiffusersSchedule.from_config(source)
        self.parameterization = DiffusersPrediction.from_config(source)
        self.init_noise_sigma = 1.0
        self.timesteps: Tensor | None = None
        self.num_inference_steps: int | None = None
        self._times: Tensor | None = None
        self._index = 0
        self._carry: Any = None

    @classmethod
    def from_scheduler(cls, scheduler: Any, sampler: Sampler | str) -> DiffusekitScheduler:
        """``sampler`` (an instance or a spec such as ``'gaussian:ddim{"eta": 1}'``) on ``scheduler``'s schedule."""
        return cls(sampler, scheduler)

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None, **_: Any) -> None:
        """The inference timesteps of the source scheduler for ``num_inference_steps`` steps."""
        grid = DiffusersTimesteps.from_scheduler(self.source, num_inference_steps)
        ts = grid.diffusers_timesteps(self.schedule.num_train_timesteps)
        self._times = grid.times(self.schedule)
        integer = bool((ts == ts.round()).all())
        self.timesteps = (ts.long() if integer else ts.float()).to(device)
        self.num_inference_steps = grid.steps
        self._index, self._carry = 0, None

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        return sample

    def _position(self, timestep: Any) -> int:
        assert self.timesteps is not None
        if self._index < len(self.timesteps) and float(self.timesteps[self._index]) == float(timestep):
            return self._index
        hits = (self.timesteps.cpu().double() == float(timestep)).nonzero()
        if len(hits) == 0:
            raise ShapeError(f"timestep {float(timestep):g} is not one of this scheduler's timesteps")
        return int(hits[0])

    def step(
        self,
        model_output: Tensor,
        timestep: Any,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        eta: float | None = None,
        **_: Any,
    ) -> SchedulerOutput | tuple[Tensor, Tensor]:
        """Advance ``sample`` from ``timestep`` to the next timestep (the data after the last)."""
        if self._times is None:
            raise ShapeError("call set_timesteps before step")
        if eta:
            raise ShapeError(
                f"eta={eta} is a DDIMScheduler setting; give it to the sampler instead (e.g. 'gaussian:ddim{{\"eta\": {eta}}}')"
            )
        i = self._position(timestep)
        if i != self._index:  # a restart from another position: no history applies
            self._carry = None
        replay = _Replay(self.schedule, self.parameterization, model_output)
        t_from = {"x": self._times[i].to(sample.device)}
        t_to = {"x": self._times[i + 1].to(sample.device)}
        out = self.sampler.step(replay, {"x": sample}, t_from, t_to, generator=generator, carry=self._carry)
        self._index, self._carry = i + 1, out.carry
        result = SchedulerOutput(out.x["x"], out.predictions["x"].x0)
        return result if return_dict else tuple(result)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """The forward process at diffusers timesteps (for img2img-style pipelines)."""
        t = (timesteps.to(torch.float64).cpu() + 1.0) / self.schedule.num_train_timesteps
        c = self.schedule.coefficients(t)
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        alpha = c.alpha.reshape(shape).to(original_samples)
        sigma = c.sigma.reshape(shape).to(original_samples)
        return alpha * original_samples + sigma * noise

    def __len__(self) -> int:
        return self.schedule.num_train_timesteps
