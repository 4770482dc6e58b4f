"""diffusekit: a plugin-based framework for diffusion models.

The public API is what this module exports; everything else may change.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from diffusekit import numeric
from diffusekit.adapter import ScheduleAdapter, adapt
from diffusekit.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from diffusekit.condition import ClassLabel, Condition, ConditionList, Embedding
from diffusekit.data import Data, Dataset
from diffusekit.denoiser import Denoiser, DenoiserLike
from diffusekit.errors import (
    AmbiguousComponent,
    CheckpointError,
    ComponentNotFound,
    ConfigError,
    DiffusekitError,
    DuplicateComponent,
    InputError,
    SamplingDiverged,
    ShapeError,
    TrainingDiverged,
)
from diffusekit.guidance import Guidance
from diffusekit.hookspecs import hookimpl
from diffusekit.known import read_given
from diffusekit.method import Method, packaged_weights
from diffusekit.network import Network
from diffusekit.objective import Objective, Progress
from diffusekit.parameterization import (
    CategoricalParameterization,
    GaussianParameterization,
    Parameterization,
    Prepared,
)
from diffusekit.pipeline import Pipeline, build, load, pretrained, trained_under
from diffusekit.plugins import get_registry
from diffusekit.prediction import CategoricalPrediction, Prediction
from diffusekit.recipe import ComponentSpec, PartSpec, Recipe, SampleConfig, TrainConfig, load_recipe, save_recipe
from diffusekit.sampler import Sampler, Step, StepTimes, TimeGrid, TimePlan, coefficients_at, hold_fixed, invert
from diffusekit.schedule import (
    CategoricalCoefficients,
    CategoricalSchedule,
    Corrupted,
    GaussianCoefficients,
    GaussianSchedule,
    Schedule,
)
from diffusekit.state import DEFAULT_PART, align_time
from diffusekit.training import train

try:
    __version__ = version("diffusekit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


def resolve(kind: str, name: str) -> type:
    """The registered component class of ``kind`` called ``name`` (``plugin:name`` or a unique bare name)."""
    return get_registry().resolve(kind, name).obj


__all__ = [
    "DEFAULT_PART",
    "AmbiguousComponent",
    "CategoricalCoefficients",
    "CategoricalParameterization",
    "CategoricalPrediction",
    "CategoricalSchedule",
    "Checkpoint",
    "CheckpointError",
    "ClassLabel",
    "ComponentNotFound",
    "ComponentSpec",
    "Condition",
    "ConditionList",
    "ConfigError",
    "Corrupted",
    "Data",
    "Dataset",
    "Denoiser",
    "DenoiserLike",
    "DiffusekitError",
    "DuplicateComponent",
    "Embedding",
    "GaussianCoefficients",
    "GaussianParameterization",
    "GaussianSchedule",
    "Guidance",
    "InputError",
    "Method",
    "Objective",
    "Progress",
    "Network",
    "Parameterization",
    "PartSpec",
    "Pipeline",
    "Prediction",
    "Prepared",
    "Recipe",
    "SampleConfig",
    "Sampler",
    "Schedule",
    "ScheduleAdapter",
    "SamplingDiverged",
    "ShapeError",
    "Step",
    "StepTimes",
    "TimeGrid",
    "TimePlan",
    "TrainConfig",
    "TrainingDiverged",
    "__version__",
    "adapt",
    "align_time",
    "build",
    "get_registry",
    "coefficients_at",
    "hold_fixed",
    "hookimpl",
    "invert",
    "load",
    "load_checkpoint",
    "load_recipe",
    "numeric",
    "packaged_weights",
    "pretrained",
    "read_given",
    "resolve",
    "save_checkpoint",
    "save_recipe",
    "train",
    "trained_under",
]
