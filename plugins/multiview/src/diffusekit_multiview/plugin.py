"""The ``multiview`` plugin: registers its components through diffusekit's public hooks."""

from __future__ import annotations

from diffusekit import hookimpl

from diffusekit_multiview import scenes


@hookimpl
def register_datasets(register):
    register(scenes.Shapes, name="shapes")
