"""The ``gaussian`` plugin: registers its components through diffusekit's public hooks."""

from __future__ import annotations

from diffusekit import hookimpl

from diffusekit_gaussian import (
    adaptive,
    digits,
    dpm_solver,
    flow,
    grids,
    guidance,
    history,
    multistep,
    networks,
    parameterizations,
    samplers,
    schedules,
    unipc,
)


@hookimpl
def register_schedules(register):
    register(schedules.VPLinear, name="vp_linear")
    register(schedules.VPCosine, name="vp_cosine")
    register(schedules.VE, name="ve")
    register(schedules.EDM, name="edm")
    register(schedules.RectifiedFlow, name="rectified_flow")


@hookimpl
def register_parameterizations(register):
    register(parameterizations.EpsilonPrediction, name="eps")
    register(parameterizations.X0Prediction, name="x0")
    register(parameterizations.VPrediction, name="v")
    register(parameterizations.VelocityPrediction, name="velocity")
    register(parameterizations.EDMPreconditioning, name="edm_precond")


SAMPLERS = {
    "ddpm": samplers.DDPM,
    "ddim": samplers.DDIM,
    "euler": samplers.Euler,
    "euler_ancestral": samplers.EulerAncestral,
    "heun": samplers.Heun,
    "edm_stochastic": samplers.EDMStochastic,
    "euler_maruyama": samplers.EulerMaruyama,
    "dpmpp_2m": dpm_solver.DPMSolverPP2M,
    "dpmpp_3m": dpm_solver.DPMSolverPP3M,
    "dpmpp_2s": dpm_solver.DPMSolverPP2S,
    "dpmpp_2m_sde": dpm_solver.DPMSolverPP2MSDE,
    "unipc": unipc.UniPC,
    "deis": multistep.DEIS,
    "ipndm": multistep.IPNDM,
    "lms": multistep.LMS,
    "flow_euler": flow.FlowEuler,
    "flow_heun": flow.FlowHeun,
    "flow_midpoint": flow.FlowMidpoint,
    "adaptive": adaptive.AdaptiveODE,
}


@hookimpl
def register_samplers(register):
    for name, sampler in SAMPLERS.items():
        register(sampler, name=name)


@hookimpl
def register_grids(register):
    register(grids.KarrasGrid, name="karras")
    register(grids.LogSNRGrid, name="log_snr")
    register(grids.ExponentialGrid, name="exponential")
    register(grids.TabulatedGrid, name="tabulated")
    register(grids.OptimizedGrid, name="optimized")


@hookimpl
def register_guidances(register):
    register(guidance.ClassifierFreeGuidance, name="cfg")
    register(guidance.ComposableGuidance, name="composable")
    register(guidance.ClassifierGuidance, name="classifier")
    register(guidance.ProductGuidance, name="product")
    register(history.HistoryGuidance, name="history")


@hookimpl
def register_networks(register):
    register(networks.UNet, name="unet")
    register(networks.MLP, name="mlp")


@hookimpl
def register_datasets(register):
    register(digits.Digits, name="digits")


@hookimpl
def register_commands(cli):
    from diffusekit_gaussian import commands

    commands.register(cli)


@hookimpl
def register_methods(register):
    register(digits.DigitsMethod, name="digits")
