"""CLI commands the molecules plugin adds (through the public ``register_commands`` hook)."""

from __future__ import annotations

import json
from pathlib import Path

import click


def register(cli: click.Group) -> None:
    @cli.command(name="evaluate-molecules")
    @click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
    @click.option(
        "--novelty/--no-novelty",
        default=False,
        show_default=True,
        help="Also count molecules not in QM9's training split (reads and canonicalizes it: about a minute).",
    )
    @click.option(
        "--bond-perception",
        type=click.Choice(["edm", "rdkit"]),
        default="edm",
        show_default=True,
        help="Bonds for validity: EDM's distance rule, or RDKit's DetermineBonds (stricter).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the numbers as one JSON object.")
    def evaluate_molecules(path, novelty, bond_perception, as_json):
        """Atom and molecule stability (EDM's rule), RDKit validity, uniqueness and novelty of the
        molecules in PATH (an .sdf or .xyz file)."""
        from diffusekit import InputError

        from diffusekit_molecules import evaluate, io

        suffix = path.suffix.lower()
        if suffix not in (".sdf", ".xyz"):
            raise InputError(f"{path}: expected an .sdf or .xyz file")
        atoms, pos = io.read_sdf(path) if suffix == ".sdf" else io.read_xyz(path)
        train = None
        if novelty:
            from diffusekit_molecules import qm9

            data = qm9.load_qm9()
            train = evaluate.canonical_smiles_set(data.smiles[i] for i in qm9.split_indices()["train"])
        report = evaluate.evaluate(
            atoms, pos, train_smiles=train, bond_perception=bond_perception, canonicalize_train=False
        )
        numbers = report.as_dict()
        if as_json:
            click.echo(json.dumps(numbers))
            return
        click.echo(f"{report.n_molecules} molecules, {report.n_atoms} atoms ({path})")
        rows = [
            ("atom stability", report.atom_stability, f"{report.n_stable_atoms}/{report.n_atoms}"),
            ("molecule stability", report.mol_stability, f"{report.n_stable_molecules}/{report.n_molecules}"),
            ("validity", report.validity, f"{report.n_valid}/{report.n_molecules}"),
            ("uniqueness", report.uniqueness, f"{report.n_unique}/{report.n_valid}"),
        ]
        if report.novelty is not None:
            rows.append(("novelty", report.novelty, f"{report.n_novel}/{report.n_unique}"))
        for name, value, counts in rows:
            click.echo(f"  {name:<19} {100 * value:6.2f}%  ({counts})")

    @cli.command(name="train-property-regressor")
    @click.argument("property", type=click.Choice(["alpha", "gap", "mu"]))
    @click.option(
        "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Weights (.safetensors)."
    )
    @click.option("--steps", type=click.IntRange(min=1), default=20_000, show_default=True)
    @click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
    @click.option("--width", type=click.IntRange(min=1), default=128, show_default=True)
    @click.option("--layers", type=click.IntRange(min=1), default=6, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    def train_property_regressor(property, out, steps, batch_size, width, layers, seed):
        """Train an EGNN regressor of PROPERTY on the first half of QM9's training split (the half
        the conditional model never sees) and write it to --out; it scores generated molecules."""
        from diffusekit_molecules.properties import train_regressor

        def log(step, loss):
            click.echo(f"step {step}: L1 loss {loss:.4f} (normalised)", err=True)

        regressor = train_regressor(
            property, steps=steps, batch_size=batch_size, width=width, layers=layers, seed=seed, log=log
        )
        regressor.save(out)
        click.echo(f"wrote {out}")
