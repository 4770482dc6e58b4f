"""The QM9 training set as molecule states (see :mod:`diffusekit_molecules.state`)."""

from __future__ import annotations

import attrs
import numpy as np
import torch
from attrs import validators as v
from diffusekit import Condition, ConditionList, ConfigError, Data, Dataset, Embedding

from diffusekit_molecules import qm9
from diffusekit_molecules.evaluate import ATOM_TYPES
from diffusekit_molecules.properties import HALVES, PROPERTIES, half_indices, normalize
from diffusekit_molecules.state import MoleculeSize, encode, encode_graph, graph_padding, padding


@attrs.frozen
class QM9Dataset(Dataset):
    """QM9 with hydrogens (Ramakrishnan et al., 2014): one split of EDM's sizes (100,000 / 17,748 /
    13,083; :func:`~diffusekit_molecules.qm9.split_indices`), as ``pos`` and ``atoms`` parts with
    padding known and a :class:`~diffusekit_molecules.state.MoleculeSize` condition.
    ``limit`` > 0 keeps the split's first ``limit`` molecules. ``atoms``: ``"onehot"`` (EDM's scaled
    one-hot vectors, a Gaussian part), ``"tokens"`` (type indices, a categorical part) or ``"graph"``
    (tokens, plus the categorical parts ``charges`` and ``bonds`` of EQGAT-diff: formal charges
    and bond orders perceived by RDKit, :func:`~diffusekit_molecules.qm9.bond_matrices`, cached;
    the few molecules whose perception fails are left out).
    ``properties`` (of :data:`~diffusekit_molecules.properties.PROPERTIES`) add an
    :class:`~diffusekit.Embedding` of them, normalised, to the condition; ``half`` keeps the first
    or second half of the training split (EDM's conditional experiment: regressor and model
    learn on different halves)."""

    split: str = attrs.field(default="train", validator=v.in_(("train", "valid", "test")))
    atoms: str = attrs.field(default="onehot", validator=v.in_(("onehot", "tokens", "graph")))
    properties: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=v.deep_iterable(v.in_(PROPERTIES)))
    half: str = attrs.field(default="all", validator=v.in_(HALVES))
    limit: int = attrs.field(default=0, validator=v.ge(0))
    seed: int = qm9.DEFAULT_SEED

    def indices(self) -> np.ndarray:
        index = qm9.split_indices(seed=self.seed)[self.split]
        if self.half != "all":
            if self.split != "train":
                raise ConfigError("half", f"halves are of the training split, not of {self.split!r}")
            index = half_indices(index, self.half)
        return index[: self.limit] if self.limit else index

    def load(self) -> Data:
        data = qm9.load_qm9()
        index = self.indices()
        atoms = torch.from_numpy(data.atoms[index])
        pos = torch.from_numpy(data.pos[index]).float()
        if self.atoms == "graph":
            table = qm9.bond_matrices(data, index)
            index, atoms, pos = index[table.ok], atoms[table.ok], pos[table.ok]
            charges, orders = (torch.from_numpy(a[table.ok]).long() for a in (table.formal_charges, table.orders))
            parts, num_atoms = encode_graph(atoms, pos, charges, orders)
            known = graph_padding(num_atoms, qm9.MAX_ATOMS)
        else:
            parts, num_atoms = encode(atoms, pos, len(ATOM_TYPES), tokens=self.atoms == "tokens")
            known = padding(num_atoms, qm9.MAX_ATOMS)
        condition: Condition = MoleculeSize(num_atoms, max_atoms=qm9.MAX_ATOMS)
        if self.properties:
            values = torch.stack([normalize(p, data.properties[p][index]) for p in self.properties], 1)
            condition = ConditionList((condition, Embedding(values)))
        return Data(parts, condition, known=known, sizes=num_atoms)
