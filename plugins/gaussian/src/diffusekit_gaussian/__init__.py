"""diffusekit-gaussian: continuous Gaussian diffusion and flow matching for diffusekit."""

from diffusekit_gaussian.adaptive import AdaptiveODE
from diffusekit_gaussian.dpm_solver import DPMSolverPP2M, DPMSolverPP2MSDE, DPMSolverPP2S, DPMSolverPP3M
from diffusekit_gaussian.flow import FlowEuler, FlowHeun, FlowMidpoint
from diffusekit_gaussian.grids import KarrasGrid, LogSNRGrid
from diffusekit_gaussian.guidance import ClassifierFreeGuidance, ClassifierGuidance, ComposableGuidance, ProductGuidance
from diffusekit_gaussian.history import HistoryGuidance
from diffusekit_gaussian.multistep import DEIS, IPNDM, LMS
from diffusekit_gaussian.networks import MLP, UNet
from diffusekit_gaussian.parameterizations import (
    EDMPreconditioning,
    EpsilonPrediction,
    VelocityPrediction,
    VPrediction,
    X0Prediction,
)
from diffusekit_gaussian.samplers import DDIM, DDPM, EDMStochastic, Euler, EulerAncestral, EulerMaruyama, Heun
from diffusekit_gaussian.schedules import EDM, VE, RectifiedFlow, VPCosine, VPLinear
from diffusekit_gaussian.unipc import UniPC

__all__ = [
    "DEIS",
    "IPNDM",
    "LMS",
    "AdaptiveODE",
    "DPMSolverPP2M",
    "DPMSolverPP2MSDE",
    "DPMSolverPP2S",
    "DPMSolverPP3M",
    "EDMStochastic",
    "EulerAncestral",
    "FlowEuler",
    "FlowHeun",
    "FlowMidpoint",
    "UniPC",
    "DDIM",
    "DDPM",
    "EDM",
    "MLP",
    "VE",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "ComposableGuidance",
    "ProductGuidance",
    "EDMPreconditioning",
    "EpsilonPrediction",
    "Euler",
    "EulerMaruyama",
    "Heun",
    "HistoryGuidance",
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
