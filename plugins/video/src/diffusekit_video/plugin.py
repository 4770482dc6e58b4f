"""The ``video`` plugin: registers its components through diffusekit's public hooks."""

from __future__ import annotations

from diffusekit import hookimpl

from diffusekit_video import plans


@hookimpl
def register_grids(register):
    register(plans.FullSequence, name="full_sequence")
    register(plans.Autoregressive, name="autoregressive")
    register(plans.Pyramid, name="pyramid")
