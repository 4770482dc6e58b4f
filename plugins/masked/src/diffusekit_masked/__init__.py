"""diffusekit-masked: masked and discrete diffusion for diffusekit."""

from diffusekit_masked.guidance import LogitCFG
from diffusekit_masked.networks import Transformer
from diffusekit_masked.parameterizations import SUBS, X0Logits, elbo_weight
from diffusekit_masked.samplers import (
    AdaptiveDecoding,
    Ancestral,
    CachedAncestral,
    ConfidenceDecoding,
    FirstHitting,
    OrderedDecoding,
    RandomOrderDecoding,
    SemiAutoregressive,
)
from diffusekit_masked.schedules import Absorbing, Marginal, MaskAndReplace, Uniform
from diffusekit_masked.search import SMC, BeamSearch, PathPlanning, ReMDM

__all__ = [
    "SUBS",
    "Absorbing",
    "SMC",
    "AdaptiveDecoding",
    "Ancestral",
    "BeamSearch",
    "CachedAncestral",
    "ConfidenceDecoding",
    "FirstHitting",
    "LogitCFG",
    "Marginal",
    "MaskAndReplace",
    "OrderedDecoding",
    "PathPlanning",
    "RandomOrderDecoding",
    "ReMDM",
    "SemiAutoregressive",
    "Transformer",
    "Uniform",
    "X0Logits",
    "elbo_weight",
]
