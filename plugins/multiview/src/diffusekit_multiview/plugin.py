"""The ``multiview`` plugin: registers its components through diffusekit's public hooks."""

from __future__ import annotations

from diffusekit import hookimpl

from diffusekit_multiview import cameras, methods, networks, scenes


@hookimpl
def register_datasets(register):
    register(scenes.Shapes, name="shapes")


@hookimpl
def register_networks(register):
    register(networks.MultiViewTransformer, name="mv_transformer")
    register(networks.MultiViewUNet, name="mv_unet")


@hookimpl
def register_methods(register):
    register(methods.ShapesMethod, name="shapes")
    register(methods.NovelViewMethod, name="nvs")
    register(methods.DistillMethod, name="sds")


@hookimpl
def register_conditions(register):
    register(cameras.Cameras, name="cameras")


@hookimpl
def register_commands(cli):
    from diffusekit_multiview import commands

    commands.register(cli)
