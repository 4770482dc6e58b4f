"""Every extension point of diffusekit, in one place.

A plugin is a module (found through the ``diffusekit`` entry-point group) that
implements some of these hooks with ``@diffusekit.hookimpl``. Each ``register_*`` hook
receives a ``register(component, name=None)`` callback and may call it any number of
times; the component is a class of the hook's kind and ``name`` (default: the class
name in snake_case) becomes ``plugin:name``. First-party plugins use exactly these hooks.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("diffusekit")
hookimpl = pluggy.HookimplMarker("diffusekit")


@hookspec
def register_schedules(register: Any) -> None:
    """Register :class:`diffusekit.Schedule` subclasses (forward corruption processes)."""


@hookspec
def register_parameterizations(register: Any) -> None:
    """Register :class:`diffusekit.Parameterization` subclasses (what a network predicts)."""


@hookspec
def register_networks(register: Any) -> None:
    """Register :class:`diffusekit.Network` subclasses (architectures that build modules)."""


@hookspec
def register_samplers(register: Any) -> None:
    """Register :class:`diffusekit.Sampler` subclasses."""


@hookspec
def register_grids(register: Any) -> None:
    """Register :class:`diffusekit.TimeGrid` subclasses (which times a sampler visits)."""


@hookspec
def register_conditions(register: Any) -> None:
    """Register :class:`diffusekit.Condition` subclasses (conditioning payloads)."""


@hookspec
def register_guidances(register: Any) -> None:
    """Register :class:`diffusekit.Guidance` subclasses."""


@hookspec
def register_datasets(register: Any) -> None:
    """Register :class:`diffusekit.Dataset` subclasses."""


@hookspec
def register_methods(register: Any) -> None:
    """Register :class:`diffusekit.Method` subclasses (end-to-end recipes for ``diffusekit run``)."""


@hookspec
def register_objectives(register: Any) -> None:
    """Register :class:`diffusekit.Objective` subclasses (training losses: distillation, consistency training)."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``diffusekit`` click group ``cli`` (``@cli.command()``)."""
