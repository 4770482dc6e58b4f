"""The diffusers plugin: registers the bridge's schedule, parameterization and grid, so
recipes can name them and ``diffusekit check diffusers`` runs their contracts."""

from __future__ import annotations

from diffusekit import hookimpl

from diffusekit_diffusers.grid import DiffusersTimesteps
from diffusekit_diffusers.model import DiffusersPrediction
from diffusekit_diffusers.schedule import DiffusersSchedule


@hookimpl
def register_schedules(register):
    register(DiffusersSchedule, name="discrete")


@hookimpl
def register_parameterizations(register):
    register(DiffusersPrediction, name="prediction")


@hookimpl
def register_grids(register):
    register(DiffusersTimesteps, name="timesteps")
