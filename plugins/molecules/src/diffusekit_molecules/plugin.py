"""The ``molecules`` plugin: registers its components through diffusekit's public hooks."""

from __future__ import annotations

from diffusekit import hookimpl

from diffusekit_molecules import datasets, networks, state


@hookimpl
def register_networks(register):
    register(networks.EGNNDenoiser, name="egnn")
    register(networks.EQGATDenoiser, name="eqgat")


@hookimpl
def register_datasets(register):
    register(datasets.QM9Dataset, name="qm9")


@hookimpl
def register_conditions(register):
    register(state.MoleculeSize, name="molecule_size")


@hookimpl
def register_commands(cli):
    from diffusekit_molecules import commands

    commands.register(cli)


@hookimpl
def register_methods(register):
    from diffusekit_molecules import methods

    register(methods.QM9Method, name="qm9")
    register(methods.QM9CategoricalMethod, name="qm9-categorical")
    register(methods.QM9ConditionalMethod, name="qm9-cond")
    register(methods.QM9GapConditionalMethod, name="qm9-cond-gap")
    register(methods.QM9GraphMethod, name="qm9-bonds")
