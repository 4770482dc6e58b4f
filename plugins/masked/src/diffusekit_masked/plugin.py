"""The ``masked`` plugin: registers its components through diffusekit's public hooks."""

from __future__ import annotations

from diffusekit import hookimpl

from diffusekit_masked import guidance, networks, parameterizations, samplers, schedules, search, sudoku, text

SAMPLERS = {
    "ancestral": samplers.Ancestral,
    "cached": samplers.CachedAncestral,
    "first_hitting": samplers.FirstHitting,
    "confidence": samplers.ConfidenceDecoding,
    "adaptive": samplers.AdaptiveDecoding,
    "random_order": samplers.RandomOrderDecoding,
    "semi_ar": samplers.SemiAutoregressive,
    "remdm": search.ReMDM,
    "p2": search.PathPlanning,
    "beam": search.BeamSearch,
    "smc": search.SMC,
}


@hookimpl
def register_schedules(register):
    register(schedules.Absorbing, name="absorbing")
    register(schedules.Uniform, name="uniform")
    register(schedules.Marginal, name="marginal")
    register(schedules.MaskAndReplace, name="mask_and_replace")


@hookimpl
def register_parameterizations(register):
    register(parameterizations.SUBS, name="subs")
    register(parameterizations.X0Logits, name="x0_logits")


@hookimpl
def register_samplers(register):
    for name, sampler in SAMPLERS.items():
        register(sampler, name=name)


@hookimpl
def register_guidances(register):
    register(guidance.LogitCFG, name="cfg")


@hookimpl
def register_networks(register):
    register(networks.Transformer, name="transformer")


@hookimpl
def register_datasets(register):
    register(sudoku.SudokuGrids, name="sudoku_grids")
    register(text.Shakespeare, name="shakespeare")


@hookimpl
def register_methods(register):
    register(sudoku.SudokuMethod, name="sudoku")
    register(text.TextMethod, name="text")
