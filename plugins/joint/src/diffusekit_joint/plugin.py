"""The ``joint`` plugin: registers its components through diffusekit's public hooks."""

from __future__ import annotations

from diffusekit import hookimpl

from diffusekit_joint import digits, methods, networks


@hookimpl
def register_datasets(register):
    register(digits.LabelledDigits, name="digits")


@hookimpl
def register_networks(register):
    register(networks.JointUNet, name="unet")


@hookimpl
def register_methods(register):
    register(methods.DigitsMethod, name="digits")
