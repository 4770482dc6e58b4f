"""A bridge between diffusers and diffusekit (importing it does not import diffusers).

- :func:`denoiser`: a diffusers model (``UNet2DModel``, ``UNet2DConditionModel``,
  ``DiTTransformer2DModel``, ``Transformer2DModel``, ...) with its scheduler's schedule and
  prediction type, as a diffusekit denoiser that every diffusekit sampler can run;
- :class:`DiffusersSchedule`, :class:`DiffusersPrediction`, :class:`DiffusersTimesteps`:
  a diffusers scheduler config as a diffusekit schedule, parameterization and grid;
- :class:`DiffusekitScheduler`: any diffusekit sampler as a diffusers scheduler, for the
  pipelines people already run.
"""

from diffusekit_diffusers.grid import DiffusersTimesteps, spaced_timesteps
from diffusekit_diffusers.model import DiffusersNetwork, DiffusersPrediction, denoiser, model_kwargs
from diffusekit_diffusers.schedule import DiffusersSchedule
from diffusekit_diffusers.scheduler import DiffusekitScheduler, SchedulerOutput

__all__ = [
    "DiffusekitScheduler",
    "DiffusersNetwork",
    "DiffusersPrediction",
    "DiffusersSchedule",
    "DiffusersTimesteps",
    "SchedulerOutput",
    "denoiser",
    "model_kwargs",
    "spaced_timesteps",
]
