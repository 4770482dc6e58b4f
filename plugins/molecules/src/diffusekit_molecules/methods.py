"""Methods of the molecules plugin: end-to-end recipes runnable with ``diffusekit run``.

``molecules:qm9`` is EDM (Hoogeboom et al., 2022, "Equivariant Diffusion for Molecule Generation
in 3D") on QM9 with hydrogens: positions in the zero-centre-of-mass subspace and scaled one-hot
atom types diffused together as two Gaussian parts with one shared time per molecule, an EGNN
denoiser predicting the noise. A molecule's size is drawn from the training split's atom-count
histogram (as EDM does) or given (``--set atoms=N``); the padding beyond it is known (held at
t = 0), so any sampler of the Gaussian plugin runs unchanged.

``run`` writes ``molecules.sdf`` (with bonds from EDM's distance rule, hydrogens explicit), the
same as ``molecules.xyz``, a PNG grid of 2-D depictions and ``report.json``: the stability,
validity and uniqueness of the batch (:func:`diffusekit_molecules.evaluate.evaluate`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import attrs
import torch
from attrs import validators as v
from diffusekit import (
    ComponentSpec,
    ConditionList,
    ConfigError,
    Embedding,
    Method,
    PartSpec,
    Recipe,
    SampleConfig,
    TrainConfig,
    packaged_weights,
)
from diffusekit.checkpoint import atomic_write
from diffusekit.condition import Condition
from diffusekit.state import State

from diffusekit_molecules import evaluate, io
from diffusekit_molecules.evaluate import ATOM_TYPES
from diffusekit_molecules.state import (
    BOND_ORDERS,
    MoleculeSize,
    decode,
    decode_graph,
    graph_padding,
    molecule_size,
    padding,
    pair_count,
)

MAX_ATOMS = 29
"""QM9's largest molecule, hydrogens included: the padded size of the state."""

TRAIN_ATOM_COUNTS = (
    0,
    0,
    0,
    1,
    3,
    4,
    10,
    15,
    46,
    123,
    381,
    789,
    1664,
    3006,
    5201,
    7755,
    10536,
    12991,
    13372,
    13886,
) + (9566, 10059, 3325, 4922, 543, 1477, 42, 260, 0, 23)
"""How many molecules of QM9's training split (:func:`~diffusekit_molecules.qm9.split_indices`)
have ``n`` atoms, ``n = 0 .. 29`` (:func:`~diffusekit_molecules.qm9.atom_count_histogram`; kept here
so sampling needs no QM9 download; a test checks it against the data)."""


def draw_sizes(num: int, generator: torch.Generator, counts=TRAIN_ATOM_COUNTS) -> torch.Tensor:
    """``num`` atom counts drawn from the histogram ``counts`` (index = atom count)."""
    weights = torch.tensor(counts, dtype=torch.float64)
    return torch.multinomial(weights, num, replacement=True, generator=generator)


def qm9_parts(width: int = MAX_ATOMS) -> dict[str, PartSpec]:
    """The molecule state of EDM: ``pos`` (subspace coordinates) and ``atoms`` (scaled one-hot), both
    Gaussian on the cosine schedule with noise prediction and one time per row (padding is held)."""
    gaussian = {
        "schedule": ComponentSpec("gaussian:vp_cosine"),
        "parameterization": ComponentSpec("gaussian:eps"),
        "time_dims": 2,
    }
    return {
        "pos": PartSpec(shape=(width - 1, 3), **gaussian),
        "atoms": PartSpec(shape=(width, len(ATOM_TYPES)), **gaussian),
    }


@attrs.frozen
class QM9Method(Method):
    """Unconditional 3-D molecules with hydrogens, EDM's model on QM9 (see the module doc).

    An EGNN (width 128, 9 layers, attention on edges) predicts the noise of both parts; training
    draws one time per molecule for both parts (``shared_time`` = ``shared_parts`` = 1) on the
    100,000 molecules of the training split, each batch of molecules of similar size
    (``buckets`` = 10), in three stages: 7,000 steps at a constant learning rate, then 4,000 from
    their EMA weights with the rate decaying to 1e-5 on a cosine (a ``finetune`` stage), then
    2,500 more from those, the cosine restarted at half the rate (1e-4; a warm restart,
    Loshchilov & Hutter, 2017). Sampling defaults to the ancestral sampler (EDM's) with 100 steps on a
    log-SNR grid from σ̃ = 80 down (at t = 1 the cosine schedule's α is 6e-4, where a noise
    prediction's error in x̂0 is amplified 1,700-fold): on the shipped weights it beats the
    deterministic solvers at equal NFE (docs/benchmarks.md §9.2); EDM samples with 1,000 steps
    (``--set grid.steps=1000``). ``atoms`` > 0 gives
    every molecule that many atoms.

    ``plugins/molecules/scripts/train.sh`` trains and exports ``weights/qm9.safetensors``.
    """

    atoms: int = attrs.field(default=0, validator=[v.ge(0), v.le(MAX_ATOMS)])
    per_row: int = attrs.field(default=4, validator=v.ge(1))

    def recipe(self) -> Recipe:
        recipe = Recipe(
            parts=qm9_parts(),
            network=ComponentSpec("molecules:egnn", {"width": 128, "layers": 9, "attention": True}),
            sampler=ComponentSpec("gaussian:ddpm"),
            grid=ComponentSpec("gaussian:log_snr", {"steps": 100}),
            dataset=ComponentSpec("molecules:qm9", {"split": "train"}),
            method="molecules:qm9",
            seed=0,
            train=TrainConfig(
                steps=7_000,
                batch_size=64,
                lr=2e-4,
                warmup_steps=500,
                ema_decay=0.999,
                grad_clip=1.0,
                condition_dropout=0.0,
                shared_time=1.0,
                shared_parts=1.0,
                buckets=10,  # batches of similar sizes: the network cuts them to their largest molecule
                checkpoint_every=500,
                keep_checkpoints=3,
                log_every=100,
            ),
            sample=SampleConfig(num=16, batch_size=64),
        )
        # annealing: from stage 1's EMA weights, the rate falls to 1e-5 (docs/benchmarks.md §9.2)
        cosine = attrs.evolve(recipe.train, steps=4_000, warmup_steps=200, lr_schedule="cosine", lr_min=1e-5)
        restart = attrs.evolve(cosine, steps=2_500, lr=1e-4, warmup_steps=100)
        return attrs.evolve(recipe, finetune=[cosine, restart])

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_molecules", "qm9")

    def sizes(self, num: int, seed: int) -> torch.Tensor:
        """The atom counts of ``num`` molecules: ``atoms`` if set, else drawn from the training histogram."""
        if self.atoms:
            return torch.full((num,), self.atoms, dtype=torch.int64)
        return draw_sizes(num, torch.Generator().manual_seed(seed))

    def sample(self, pipeline, num: int, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``num`` molecules as atom types ``(num, 29)`` (-1: padding) and centred positions ``(num, 29, 3)``."""
        return self.sample_sizes(pipeline, self.sizes(num, pipeline.recipe.seed), progress)

    def sample_sizes(self, pipeline, sizes: torch.Tensor, progress: bool = False):
        """Molecules of the given atom counts ``(num,)`` (as :meth:`sample`)."""
        return self._sample(pipeline, sizes, MoleculeSize(sizes, max_atoms=MAX_ATOMS), progress)

    _padding = staticmethod(padding)  # the known masks of the state's parts
    _decode = staticmethod(decode)  # the state back to molecules

    def _sample(self, pipeline, sizes: torch.Tensor, condition: Condition, progress: bool):
        """Molecules of ``sizes`` atoms: the padding given (zeros, held at t = 0), the rest sampled."""
        schedules = pipeline.denoiser.schedules
        given = {
            name: torch.zeros(
                len(sizes), *part.shape, dtype=torch.int64 if schedules[name].kind == "categorical" else None
            )
            for name, part in pipeline.recipe.parts.items()
        }
        known = self._padding(sizes, MAX_ATOMS)
        parts = pipeline.sample(given=given, known=known, condition=condition, progress=progress)
        return self._decode(parts, sizes)

    def generate(self, pipeline, num: int, out_dir: Path, progress: bool = False) -> list[Path]:
        atoms, pos = self.sample(pipeline, num, progress=progress)
        return write_molecules(atoms, pos, out_dir, per_row=self.per_row)

    def write_outputs(self, samples: State, condition: Condition | None, out_dir: Path) -> list[Path]:
        sizes = (
            torch.full((len(samples["atoms"]),), MAX_ATOMS)  # type: ignore[index]
            if condition is None
            else molecule_size(condition).num_atoms
        )
        atoms, pos = decode(samples, sizes)  # type: ignore[arg-type]
        return write_molecules(atoms, pos, out_dir, per_row=self.per_row)


TRAIN_ATOM_FREQUENCIES = (0.5124, 0.3528, 0.0559, 0.0777, 0.0013)
"""The shares of H, C, N, O, F among the atoms of QM9's training split (the marginal prior of
the categorical atom types; a test checks them against the data)."""
TRAIN_CHARGE_FREQUENCIES = (0.0002, 0.9996, 0.0002)
"""The shares of formal charges -1, 0, +1 among the atoms of QM9's training split, as RDKit
perceives them from the geometry (:func:`~diffusekit_molecules.qm9.bond_matrices`)."""
TRAIN_BOND_FREQUENCIES = (0.8819, 0.1097, 0.0067, 0.0018)
"""The shares of no bond, single, double and triple bonds among the atom pairs of QM9's training
split (bonds perceived by RDKit)."""


@attrs.frozen
class QM9CategoricalMethod(QM9Method):
    """QM9 with categorical atom types, as EQGAT-diff (Le et al., 2024) diffuses them: positions
    as in ``molecules:qm9``, atom types as tokens corrupted towards their training frequencies
    (the masked plugin's ``masked:marginal`` process) and predicted as logits
    (``masked:x0_logits``); ``core:by_kind`` samples both parts in one loop on one uniform plan,
    DPM-Solver++(2M) for the positions (v-predicted: finite at t = 1, where α = 0) and ancestral
    steps for the types. Same network and training budget as ``molecules:qm9``; no bonds or charges.

    It ships no weights yet: ``diffusekit train molecules:qm9-categorical --out FILE`` trains it.
    """

    def recipe(self) -> Recipe:
        base = super().recipe()
        parts = dict(base.parts)
        # v-prediction: finite where alpha = 0, so the plan (shared with the categorical part) starts at t = 1
        parts["pos"] = attrs.evolve(parts["pos"], parameterization=ComponentSpec("gaussian:v"))
        parts["atoms"] = PartSpec(
            shape=(MAX_ATOMS,),
            schedule=ComponentSpec("masked:marginal", {"frequencies": list(TRAIN_ATOM_FREQUENCIES)}),
            parameterization=ComponentSpec("masked:x0_logits"),
            time_dims=2,
        )
        return attrs.evolve(
            base,
            parts=parts,
            sampler=ComponentSpec("by_kind", {"gaussian": "gaussian:dpmpp_2m", "categorical": "masked:ancestral"}),
            grid=ComponentSpec("uniform", {"steps": 100}),
            dataset=ComponentSpec("molecules:qm9", {"split": "train", "atoms": "tokens"}),
            method="molecules:qm9-categorical",
        )

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_molecules", "qm9_categorical")


@attrs.frozen
class QM9GraphMethod(QM9Method):
    """QM9 as EQGAT-diff models it (Le et al., 2024, "Navigating the Design Space of Equivariant
    Diffusion-Based Generative Models for De Novo 3D Molecule Generation"): positions, and as
    categorical parts atom types, formal charges and bond orders (the upper triangle of the bond
    matrix, so symmetric by construction), each corrupted towards its training frequencies (the
    masked plugin's ``masked:marginal``). The EQGAT-style network reads and predicts bonds as edge
    features; positions are v-predicted (finite where α = 0, so sampling starts at t = 1);
    ``core:by_kind`` samples the four parts in one loop. The loss is EQGAT-diff's: the parts weighted
    3 / 0.4 / 1 / 2 (positions / atoms / charges / bonds) and every element by its part's
    signal-to-noise ratio clipped to [0.05, 1.5] (``core:denoising`` with ``weighting = "snr"``).
    The molecules are written with the bonds and charges the model generated, and scored with them
    (MiDi's charge-aware valences).

    It ships no weights yet: ``diffusekit train molecules:qm9-bonds --out FILE`` trains it.
    """

    def recipe(self) -> Recipe:
        base = super().recipe()

        def categorical(shape: tuple[int, ...], frequencies: tuple[float, ...], weight: float) -> PartSpec:
            schedule = ComponentSpec("masked:marginal", {"frequencies": list(frequencies)})
            return PartSpec(
                shape=shape,
                schedule=schedule,
                parameterization=ComponentSpec("masked:x0_logits"),
                time_dims=2,
                loss_weight=weight,
            )

        # EQGAT-diff's loss: the parts weighted 3 / 0.4 / 1 / 2, and every element by its part's
        # signal-to-noise ratio clipped to [0.05, 1.5] (on the x0 error of the positions)
        pos = attrs.evolve(base.parts["pos"], parameterization=ComponentSpec("gaussian:v"), loss_weight=3.0)
        objective = ComponentSpec("core:denoising", {"weighting": "snr", "snr_min": 0.05, "snr_max": 1.5})
        return attrs.evolve(
            base,
            parts={
                "pos": pos,
                "atoms": categorical((MAX_ATOMS,), TRAIN_ATOM_FREQUENCIES, 0.4),
                "charges": categorical((MAX_ATOMS,), TRAIN_CHARGE_FREQUENCIES, 1.0),
                "bonds": categorical((pair_count(MAX_ATOMS),), TRAIN_BOND_FREQUENCIES, 2.0),
            },
            train=attrs.evolve(base.train, objective=objective),
            network=ComponentSpec(
                "molecules:eqgat",
                {"width": 128, "vector_width": 32, "edge_width": 32, "layers": 6, "charges": 3, "bonds": BOND_ORDERS},
            ),
            # the ancestral sampler for positions: a young model's score drifts less under fresh noise (benchmarks §9.1)
            sampler=ComponentSpec("by_kind", {"gaussian": "gaussian:ddpm", "categorical": "masked:ancestral"}),
            grid=ComponentSpec("uniform", {"steps": 100}),
            dataset=ComponentSpec("molecules:qm9", {"split": "train", "atoms": "graph"}),
            method="molecules:qm9-bonds",
        )

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_molecules", "qm9_bonds")

    _padding = staticmethod(graph_padding)
    _decode = staticmethod(decode_graph)

    def generate(self, pipeline, num: int, out_dir: Path, progress: bool = False) -> list[Path]:
        atoms, pos, charges, bonds = self.sample(pipeline, num, progress=progress)
        return write_molecules(atoms, pos, out_dir, per_row=self.per_row, bonds=bonds, charges=charges)

    def write_outputs(self, samples: State, condition: Condition | None, out_dir: Path) -> list[Path]:
        sizes = molecule_size(condition).num_atoms
        atoms, pos, charges, bonds = decode_graph(samples, sizes)  # type: ignore[arg-type]
        return write_molecules(atoms, pos, out_dir, per_row=self.per_row, bonds=bonds, charges=charges)


@attrs.frozen
class QM9ConditionalMethod(QM9Method):
    """Molecules with a given polarizability α, EDM's conditional experiment (Hoogeboom et al.,
    2022, section 5.3): the ``molecules:qm9`` model with the normalised property as a further
    feature of every atom, trained on the second half of the training split with the property
    dropped for 10% of molecules, so classifier-free guidance (``guidance.scale``; 1 is the plain
    conditional model EDM samples) works through the core.

    ``value`` asks every molecule for that property value (its atom count is drawn from the
    histogram); by default each molecule gets the property and atom count of a molecule of the
    second half (EDM's evaluation draws ``(c, N)`` so). ``molecules:qm9-cond-gap`` is the same
    for the HOMO-LUMO gap. ``report.json`` lists the values asked for.
    """

    PROPERTY: ClassVar[str] = "alpha"
    """The property the model is conditioned on (one of :data:`~diffusekit_molecules.properties.PROPERTIES`)."""
    WEIGHTS: ClassVar[str] = "qm9_cond"
    NAME: ClassVar[str] = "molecules:qm9-cond"

    value: float | None = attrs.field(default=None)

    def recipe(self) -> Recipe:
        base = super().recipe()
        network = ComponentSpec("molecules:egnn", {**base.network.params, "properties": 1})
        return attrs.evolve(
            base,
            network=network,
            guidance=ComponentSpec("gaussian:cfg", {"scale": 1.0}),
            dataset=ComponentSpec("molecules:qm9", {"split": "train", "properties": [self.PROPERTY], "half": "second"}),
            method=self.NAME,
            # one stage: fine-tuned from molecules:qm9's first stage (scripts/train.sh)
            train=attrs.evolve(base.train, condition_dropout=0.1, steps=2_000),
            finetune=[],
        )

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_molecules", self.WEIGHTS)

    @staticmethod
    def property_of(recipe: Recipe) -> str:
        names = list((recipe.dataset.params if recipe.dataset else {}).get("properties", []))
        if len(names) != 1:
            raise ConfigError("dataset.properties", f"a conditional model takes one property, got {names}")
        return names[0]

    def targets(self, num: int, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
        """Atom counts and property values ``(num,)`` to ask for: ``value`` with sizes from the
        histogram, or ``(N, c)`` pairs of molecules of the training split's second half."""
        name = self.property_of(recipe)
        if self.value is not None:
            return self.sizes(num, recipe.seed), torch.full((num,), float(self.value), dtype=torch.float64)
        from diffusekit_molecules import qm9
        from diffusekit_molecules.properties import half_indices

        data = qm9.load_qm9()
        pool = half_indices(qm9.split_indices()["train"], "second")
        rows = torch.randint(0, len(pool), (num,), generator=torch.Generator().manual_seed(recipe.seed))
        chosen = pool[rows.numpy()]
        return torch.from_numpy(data.num_atoms[chosen]).long(), torch.from_numpy(data.properties[name][chosen])

    def sample_conditional(self, pipeline, num: int, progress: bool = False):
        """``(atoms, pos, values)``: molecules and the property values they were asked for."""
        from diffusekit_molecules.properties import normalize

        sizes, values = self.targets(num, pipeline.recipe)
        embedding = Embedding(normalize(self.property_of(pipeline.recipe), values)[:, None])
        condition = ConditionList((MoleculeSize(sizes, max_atoms=MAX_ATOMS), embedding))
        atoms, pos = self._sample(pipeline, sizes, condition, progress)
        return atoms, pos, values

    def generate(self, pipeline, num: int, out_dir: Path, progress: bool = False) -> list[Path]:
        atoms, pos, values = self.sample_conditional(pipeline, num, progress=progress)
        extra = {"property": self.property_of(pipeline.recipe), "asked": values.tolist()}
        return write_molecules(atoms, pos, out_dir, per_row=self.per_row, extra=extra)


@attrs.frozen
class QM9GapConditionalMethod(QM9ConditionalMethod):
    """Molecules with a given HOMO-LUMO gap Δε: ``molecules:qm9-cond`` for EDM's Δε experiment
    (Hoogeboom et al., 2022, Table 3), fine-tuned from ``molecules:qm9`` in the same way; ``value``
    is in Hartree, the unit of the QM9 files (EDM's table quotes meV)."""

    PROPERTY: ClassVar[str] = "gap"
    WEIGHTS: ClassVar[str] = "qm9_cond_gap"
    NAME: ClassVar[str] = "molecules:qm9-cond-gap"


def write_molecules(
    atoms: torch.Tensor,
    pos: torch.Tensor,
    out_dir: Path,
    *,
    per_row: int = 4,
    extra: dict | None = None,
    bonds: torch.Tensor | None = None,
    charges: torch.Tensor | None = None,
) -> list[Path]:
    """``molecules.sdf``, ``molecules.xyz``, ``molecules.png`` (at most 32 depictions) and
    ``report.json`` (the evaluation, with ``extra`` entries). With generated ``bonds`` (B, N, N)
    and ``charges`` (B, N) the molecules are built and scored with them; otherwise bonds come
    from EDM's distance rule."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atoms_np, pos_np = atoms.numpy(), pos.double().numpy()
    if bonds is None:
        report = evaluate.evaluate(atoms_np, pos_np)
        mols = [io.to_rdkit(a[a >= 0], p[a >= 0]) for a, p in zip(atoms_np, pos_np, strict=True)]
    else:
        bonds_np, charges_np = bonds.numpy(), charges.numpy()
        report = evaluate.evaluate(atoms_np, pos_np, bonds=bonds_np, charges=charges_np)
        mols = [
            io.to_rdkit(a[a >= 0], p[a >= 0], b[a >= 0][:, a >= 0], c[a >= 0])
            for a, p, b, c in zip(atoms_np, pos_np, bonds_np, charges_np, strict=True)
        ]
    paths = [out_dir / "molecules.sdf", out_dir / "molecules.xyz", out_dir / "molecules.png", out_dir / "report.json"]
    io.write_sdf(paths[0], mols)
    io.write_xyz(paths[1], mols)
    io.depict_grid(paths[2], mols[:32], per_row=per_row)
    atomic_write(paths[3], (json.dumps({**report.as_dict(), **(extra or {})}, indent=2) + "\n").encode())
    return paths


__all__ = [
    "MAX_ATOMS",
    "TRAIN_ATOM_COUNTS",
    "TRAIN_ATOM_FREQUENCIES",
    "TRAIN_BOND_FREQUENCIES",
    "TRAIN_CHARGE_FREQUENCIES",
    "QM9CategoricalMethod",
    "QM9ConditionalMethod",
    "QM9GapConditionalMethod",
    "QM9Method",
    "draw_sizes",
    "qm9_parts",
    "write_molecules",
]
