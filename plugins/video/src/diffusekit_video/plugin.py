"""The ``video`` plugin: registers its components through diffusekit's public hooks."""

from __future__ import annotations

from diffusekit import hookimpl
from diffusekit_gaussian.history import HistoryGuidance

from diffusekit_video import networks, plans, scenes


@hookimpl
def register_grids(register):
    register(plans.FullSequence, name="full_sequence")
    register(plans.Autoregressive, name="autoregressive")
    register(plans.Pyramid, name="pyramid")


@hookimpl
def register_datasets(register):
    register(scenes.BouncingBalls, name="bouncing_balls")
    register(scenes.MovingDigits, name="moving_digits")


@hookimpl
def register_networks(register):
    register(networks.SpatioTemporalTransformer, name="st_transformer")


@hookimpl
def register_methods(register):
    from diffusekit_video import methods

    register(methods.BouncingMethod, name="bouncing")
    register(methods.MovingDigitsMethod, name="moving-digits")


@hookimpl
def register_guidances(register):
    # history guidance began here and moved to the gaussian plugin (gaussian:history) when the
    # multiview plugin came to use it; this alias keeps recipes and checkpoints that name it working
    register(HistoryGuidance, name="history")
