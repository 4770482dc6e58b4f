"""The ``joint`` plugin: registers its components through diffusekit's public hooks."""

from __future__ import annotations

from diffusekit import hookimpl

from diffusekit_joint import digits, methods, networks, world


@hookimpl
def register_datasets(register):
    register(digits.LabelledDigits, name="digits")
    register(world.PointMassWorld, name="world")


@hookimpl
def register_networks(register):
    register(networks.JointUNet, name="unet")
    register(networks.WorldUNet, name="world_unet")


@hookimpl
def register_methods(register):
    register(methods.DigitsMethod, name="digits")
    register(methods.WorldMethod, name="world")
