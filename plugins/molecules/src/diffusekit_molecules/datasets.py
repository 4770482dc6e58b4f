"""The QM9 training set as molecule states (see :mod:`diffusekit_molecules.state`)."""

from __future__ import annotations

import attrs
import numpy as np
import torch
from attrs import validators as v
from diffusekit import Data, Dataset

from diffusekit_molecules import qm9
from diffusekit_molecules.evaluate import ATOM_TYPES
from diffusekit_molecules.state import MoleculeSize, encode, padding


@attrs.frozen
class QM9Dataset(Dataset):
    """QM9 with hydrogens (Ramakrishnan et al., 2014): one split of EDM's sizes (100,000 / 17,748 /
    13,083; :func:`~diffusekit_molecules.qm9.split_indices`), as ``pos`` and ``atoms`` parts with
    padding known and a :class:`~diffusekit_molecules.state.MoleculeSize` condition.
    ``limit`` > 0 keeps the split's first ``limit`` molecules. ``atoms``: ``"onehot"`` (EDM's scaled
    one-hot vectors, a Gaussian part) or ``"tokens"`` (type indices, a categorical part)."""

    split: str = attrs.field(default="train", validator=v.in_(("train", "valid", "test")))
    atoms: str = attrs.field(default="onehot", validator=v.in_(("onehot", "tokens")))
    limit: int = attrs.field(default=0, validator=v.ge(0))
    seed: int = qm9.DEFAULT_SEED

    def indices(self) -> np.ndarray:
        index = qm9.split_indices(seed=self.seed)[self.split]
        return index[: self.limit] if self.limit else index

    def load(self) -> Data:
        data = qm9.load_qm9()
        index = self.indices()
        atoms = torch.from_numpy(data.atoms[index])
        pos = torch.from_numpy(data.pos[index]).float()
        parts, num_atoms = encode(atoms, pos, len(ATOM_TYPES), tokens=self.atoms == "tokens")
        return Data(parts, MoleculeSize(num_atoms, max_atoms=qm9.MAX_ATOMS), known=padding(num_atoms, qm9.MAX_ATOMS))
