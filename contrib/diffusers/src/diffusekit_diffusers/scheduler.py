"""Any diffusekit sampler as a diffusers scheduler.

diffusers' pipelines drive a scheduler through a fixed protocol: ``set_timesteps(n)``,
then for each ``t`` in ``scheduler.timesteps`` they call the model on
``scale_model_input(sample, t)`` and hand its output to ``step(output, t, sample)``.
:class:`DiffusekitScheduler` speaks that protocol and runs a diffusekit sampler
underneath. For a sampler with one network evaluation per step, each ``step`` replays
the model output as that evaluation. A sampler with several (Heun, DPM-Solver++ 2S,
Restart) runs its whole plan on a worker thread that pauses at every evaluation:
``timesteps`` lists every evaluation (found by a dry run of the plan, as diffusers'
own Heun scheduler lists each timestep twice), ``step`` hands the model output to the
paused sampler and returns the state it asks the model about next as ``prev_sample``.
The protocol makes the adapter stateful (the step index and a multistep sampler's
history live in it, as in every diffusers scheduler); the sampler it wraps stays pure.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, NamedTuple

import torch
from diffusekit import Sampler, ShapeError, StepTimes, TimePlan
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
        self._run: _Run | None = None  # first: __del__ runs even when a check below refuses
        self.sampler = _sampler(sampler)
        if self.sampler.evaluations_per_step < 1:
            raise ShapeError(
                f"{type(self.sampler).__name__} chooses its evaluations as it goes, but a diffusers pipeline needs "
                "them all in scheduler.timesteps before it starts; run it with "
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
        self._plan: TimePlan | None = None
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
        # the plan's coefficients once, as Sampler.sample computes them (floats: scalar times)
        plan = TimePlan(tuple({"x": t} for t in grid.times(self.schedule).unbind()))
        self._coefficients = plan.coefficients({"x": self.schedule}, {"x": torch.zeros(1, dtype=torch.float64)})
        self._plan = plan
        if self.sampler.evaluations_per_step > 1:
            ts = self.parameterization.noise_level(self._evaluation_times(), None)
        integer = bool((ts == ts.round()).all())
        self.timesteps = (ts.long() if integer else ts.float()).to(device)
        self.num_inference_steps = grid.steps
        self._index, self._carry = 0, None
        self._stop()

    def _evaluation_times(self) -> Tensor:
        """The time of every network evaluation of the plan, from a dry run on a zero state
        (the times of these samplers depend on the plan only, not on the state)."""
        record = _Recorder(self.schedule, self.parameterization)
        x, carry = {"x": torch.zeros(1, 1, dtype=torch.float64)}, None
        g = torch.Generator().manual_seed(0)
        for i in range(self._plan.steps):
            out = self.sampler.update(record, x, self._step_times(i), condition=None, generator=g, carry=carry)
            x, carry = out.x, out.carry
        return torch.tensor(record.times, dtype=torch.float64)

    def _step_times(self, i: int) -> StepTimes:
        """Step i of the plan, with its precomputed coefficients (no element is held)."""
        plan, c = self._plan, self._coefficients
        return StepTimes(plan[i], plan[i + 1], c[i], c[i + 1], {"x": False}, i, plan.steps)

    def _stop(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self._run = None

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
        use_clipped_model_output: bool | None = None,
        **_: Any,
    ) -> SchedulerOutput | tuple[Tensor, Tensor]:
        """Advance ``sample`` from ``timestep`` to the next timestep (the data after the last)."""
        if self._plan is None:
            raise ShapeError("call set_timesteps before step")
        if eta:
            raise ShapeError(
                f"eta={eta} is a DDIMScheduler setting; give it to the sampler instead (e.g. 'gaussian:ddim{{\"eta\": {eta}}}')"
            )
        if use_clipped_model_output is False and self.parameterization.clip_sample is not None:
            raise ShapeError(
                "with clip_sample, diffusekit derives the noise from the clipped x0 "
                "(use_clipped_model_output=True); it cannot mix a clipped x0 with the unclipped noise"
            )
        if self.sampler.evaluations_per_step > 1:
            return self._relay(model_output, timestep, sample, generator, return_dict)
        i = self._position(timestep)
        if i != self._index:  # a restart from another position: no history applies
            self._carry = None
        replay = _Replay(self.schedule, self.parameterization, model_output)
        times = self._step_times(i)
        out = self.sampler.update(replay, {"x": sample}, times, condition=None, generator=generator, carry=self._carry)
        self._index, self._carry = i + 1, out.carry
        result = SchedulerOutput(out.x["x"], out.predictions["x"].x0)
        return result if return_dict else tuple(result)

    def _relay(self, model_output, timestep, sample, generator, return_dict):
        """Hand the model output to the sampler running on the worker; return what it asks about next."""
        i = self._position(timestep)
        if i != self._index:
            raise ShapeError(
                f"{type(self.sampler).__name__} runs its evaluations in order; step was called at timestep "
                f"{float(timestep):g}, evaluation {i}, but evaluation {self._index} comes next"
            )
        if self._run is None:
            self._run = _Run(self, sample, generator)
            self._run.expect()
        x, x0 = self._run.answer(model_output)
        self._index += 1
        if self._index == len(self.timesteps):
            self._run = None
        result = SchedulerOutput(x, x0)
        return result if return_dict else tuple(result)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """The forward process at diffusers timesteps (for img2img-style pipelines)."""
        t = (timesteps.to(torch.float64).cpu() + 1.0) / self.schedule.num_train_timesteps
        c = self.schedule.coefficients(t)
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        alpha = c.alpha.reshape(shape).to(original_samples)
        sigma = c.sigma.reshape(shape).to(original_samples)
        return alpha * original_samples + sigma * noise

    def __del__(self) -> None:  # a pipeline dropped half-way: end its worker
        self._stop()

    def __len__(self) -> int:
        return self.schedule.num_train_timesteps


class _Recorder:
    """A denoiser that notes the time of every evaluation and predicts zeros."""

    def __init__(self, schedule: DiffusersSchedule, parameterization: DiffusersPrediction) -> None:
        self.schedules = {"x": schedule}
        self.parameterization = parameterization
        self.times: list[float] = []

    def __call__(self, x, t, condition=None, coef=None):
        self.times.append(float(t["x"].reshape(-1)[0]))
        prepared = self.parameterization.prepare(
            self.schedules["x"], x["x"], t["x"], None if coef is None else coef["x"]
        )
        return {"x": self.parameterization.output(torch.zeros_like(x["x"]), prepared)}


class _Cancelled(Exception):
    """Ends a worker whose pipeline stopped early (or set new timesteps)."""


class _Run:
    """A sampler's whole plan on a worker thread, paused at every network evaluation.

    The worker posts ``("eval", x)`` when the sampler calls the network at state x and
    waits for the model's output; at the end it posts ``("done", x)``.
    """

    def __init__(self, scheduler: DiffusekitScheduler, sample: Tensor, generator: torch.Generator | None) -> None:
        self.schedule, self.parameterization = scheduler.schedule, scheduler.parameterization
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.x0: Tensor | None = None
        steps = [scheduler._step_times(i) for i in range(scheduler._plan.steps)]
        args = (scheduler.sampler, steps, sample, generator)
        self.thread = threading.Thread(target=self._work, args=args, daemon=True, name="diffusekit-sampler")
        self.thread.start()

    def __call__(self, x, t, condition=None, coef=None):  # the denoiser the sampler sees
        self.outbox.put(("eval", x["x"]))
        output = self.inbox.get()
        if output is None:
            raise _Cancelled
        prepared = self.parameterization.prepare(self.schedule, x["x"], t["x"], None if coef is None else coef["x"])
        pred = self.parameterization.output(output.to(x["x"].dtype), prepared)
        self.x0 = pred.x0
        return {"x": pred}

    @property
    def schedules(self):
        return {"x": self.schedule}

    def _work(self, sampler: Sampler, steps: list[StepTimes], x: Tensor, generator) -> None:
        try:
            state, carry = {"x": x}, None
            with torch.no_grad():
                for times in steps:
                    out = sampler.update(self, state, times, condition=None, generator=generator, carry=carry)
                    state, carry = out.x, out.carry
            self.outbox.put(("done", state["x"]))
        except _Cancelled:
            return
        except BaseException as exc:  # handed to the pipeline's thread, which raises it
            self.outbox.put(("error", exc))

    def _next(self) -> Tensor:
        kind, value = self.outbox.get()
        if kind != "eval":  # the worker is finishing: let it end before torch is torn down
            self.thread.join()
        if kind == "error":
            raise value
        return value

    def expect(self) -> None:
        """Wait for the sampler's first evaluation (at the pipeline's sample)."""
        self._next()

    def answer(self, output: Tensor) -> tuple[Tensor, Tensor]:
        """Deliver one model output; the state of the next evaluation (or the result) and x̂0."""
        self.inbox.put(output)
        x = self._next()
        assert self.x0 is not None
        return x, self.x0

    def cancel(self) -> None:
        """End a worker waiting for a model output that will not come."""
        self.inbox.put(None)
        if self.thread is not threading.current_thread():  # __del__ may run on any thread
            self.thread.join()
