"""The ``multiview`` plugin: registers its components through diffusekit's public hooks."""

from __future__ import annotations

from diffusekit import hookimpl

from diffusekit_multiview import networks, scenes


@hookimpl
def register_datasets(register):
    register(scenes.Shapes, name="shapes")


@hookimpl
def register_networks(register):
    register(networks.MultiViewTransformer, name="mv_transformer")
