"""diffusekit-gaussian: continuous Gaussian diffusion and flow matching for diffusekit."""

from diffusekit_gaussian.grids import KarrasGrid, LogSNRGrid
from diffusekit_gaussian.guidance import ClassifierFreeGuidance
from diffusekit_gaussian.networks import MLP, UNet
from diffusekit_gaussian.parameterizations import (
    EDMPreconditioning,
    EpsilonPrediction,
    VelocityPrediction,
    VPrediction,
    X0Prediction,
)
from diffusekit_gaussian.samplers import DDIM, DDPM, Euler, EulerMaruyama, Heun
from diffusekit_gaussian.schedules import EDM, VE, RectifiedFlow, VPCosine, VPLinear

__all__ = [
    "DDIM",
    "DDPM",
    "EDM",
    "MLP",
    "VE",
    "ClassifierFreeGuidance",
    "EDMPreconditioning",
    "EpsilonPrediction",
    "Euler",
    "EulerMaruyama",
    "Heun",
    "KarrasGrid",
    "LogSNRGrid",
    "RectifiedFlow",
    "UNet",
    "VPCosine",
    "VPLinear",
    "VPrediction",
    "VelocityPrediction",
    "X0Prediction",
]
