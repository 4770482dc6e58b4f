"""The ``distill`` plugin: registers its components through diffusekit's public hooks."""

from __future__ import annotations

from diffusekit import hookimpl

from diffusekit_distill import consistency, digits, learned, progressive


@hookimpl
def register_samplers(register):
    register(learned.LearnedSolver, name="learned")
    register(consistency.ConsistencySampler, name="consistency")


@hookimpl
def register_grids(register):
    register(consistency.ConsistencyGrid, name="consistency")


@hookimpl
def register_objectives(register):
    register(consistency.ConsistencyDistillation, name="consistency")
    register(consistency.ConsistencyTraining, name="consistency_training")
    register(progressive.ProgressiveDistillation, name="progressive")
    register(progressive.Reflow, name="reflow")


@hookimpl
def register_methods(register):
    register(digits.DistilledDigits, name="digits")


@hookimpl
def register_commands(cli):
    from diffusekit_distill import commands

    commands.register(cli)
