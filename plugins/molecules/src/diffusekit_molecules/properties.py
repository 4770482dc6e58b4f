"""Molecular properties for conditioning, and a regressor that measures them on generated molecules.

EDM's conditional experiment (Hoogeboom et al., 2022, section 5.3, after Satorras et al., 2021):
QM9's training split is cut in halves; a property regressor (an EGNN) learns on the first half,
the conditional generative model on the second; generated molecules are scored by the
regressor's mean absolute error to the property they were asked for. A property enters the
model normalised, :math:`(c - \\mu) / \\mathrm{MAD}` with the training split's mean and mean
absolute deviation (EDM's normalisation).
"""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import numpy as np
import torch
from attrs import validators as v
from diffusekit import ConfigError
from torch import Tensor, nn

from diffusekit_molecules import egnn
from diffusekit_molecules.evaluate import ATOM_TYPES
from diffusekit_molecules.qm9 import MAX_ATOMS

PROPERTIES = ("alpha", "gap", "mu")
"""Properties a conditional model can take: polarizability α (Bohr³), HOMO–LUMO gap (Hartree;
EDM's tables quote meV) and dipole moment μ (Debye)."""

TRAIN_STATS = {
    "alpha": (75.3015652, 6.294463082336),
    "gap": (0.252115095, 0.0394517781491),
    "mu": (2.670528524, 1.16795916196896),
}
"""Mean and mean absolute deviation of each property over QM9's training split (a test checks
them against the data), so sampling needs no QM9 download."""

HALVES = ("all", "first", "second")


def check_property(name: str) -> str:
    if name not in PROPERTIES:
        raise ConfigError("property", f"must be one of {', '.join(PROPERTIES)}, got {name!r}")
    return name


def normalize(name: str, values: Tensor | np.ndarray) -> Tensor:
    mean, mad = TRAIN_STATS[check_property(name)]
    return (torch.as_tensor(values, dtype=torch.float32) - mean) / mad


def denormalize(name: str, values: Tensor) -> Tensor:
    mean, mad = TRAIN_STATS[check_property(name)]
    return values * mad + mean


HALF_SEED = 1
"""Seed of the permutation that cuts the training split into halves."""


def half_indices(train: np.ndarray, half: str) -> np.ndarray:
    """The training split's ``first`` half (the regressor's), ``second`` half (the conditional
    model's) or ``all`` of it, sorted. The halves are random (a permutation seeded by
    :data:`HALF_SEED`), not the split's first and last indices: QM9 is ordered by size, so those
    would give the regressor the smaller molecules and the model the larger ones."""
    if half not in HALVES:
        raise ConfigError("half", f"must be one of {', '.join(HALVES)}, got {half!r}")
    if half == "all":
        return train
    order = np.random.default_rng(HALF_SEED).permutation(len(train))
    middle = len(train) // 2
    return np.sort(train[order[:middle] if half == "first" else order[middle:]])


class RegressorModule(nn.Module):
    """An invariant EGNN: per-atom features after message passing, summed over real atoms, then an MLP."""

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.width, self.layers = width, layers
        self.net = egnn.EGNNConfig(
            in_features=len(ATOM_TYPES), out_features=width, width=width, layers=layers, attention=True
        ).build()
        self.head = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, atoms: Tensor, pos: Tensor) -> Tensor:
        """``atoms`` (B, N) types (-1 padding), ``pos`` (B, N, 3) -> the normalised property ``(B,)``."""
        mask = atoms >= 0
        h = nn.functional.one_hot(atoms.clamp(min=0), len(ATOM_TYPES)).to(pos.dtype) * mask[..., None]
        _, features, _ = self.net(pos, h, mask)
        pooled = (features * mask[..., None]).sum(1) / math.sqrt(MAX_ATOMS)  # a sum: the properties are extensive
        return self.head(pooled)[:, 0]


@attrs.frozen
class Regressor:
    """A trained property regressor: ``predict(atoms, pos)`` in the property's own units."""

    property: str = attrs.field(validator=v.in_(PROPERTIES))
    module: RegressorModule

    def predict(self, atoms: Tensor, pos: Tensor, batch: int = 256) -> Tensor:
        out = []
        self.module.eval()
        with torch.no_grad():
            for s in range(0, len(atoms), batch):
                out.append(self.module(atoms[s : s + batch], pos[s : s + batch].float()))
        return denormalize(self.property, torch.cat(out).double())

    def save(self, path: Path) -> None:
        """Float16 safetensors, atomically, with the property and size in the metadata."""
        from diffusekit.checkpoint import atomic_write
        from safetensors.torch import save

        tensors = {k: t.detach().half().contiguous() for k, t in self.module.state_dict().items()}
        meta = {"property": self.property, "width": str(self.module.width), "layers": str(self.module.layers)}
        atomic_write(Path(path), save(tensors, metadata=meta))

    @classmethod
    def load(cls, path: Path) -> Regressor:
        from diffusekit import CheckpointError
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
            module = RegressorModule(int(meta["width"]), int(meta["layers"]))
            module.load_state_dict(tensors)
        except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as exc:
            raise CheckpointError(f"{path}: not a property regressor ({type(exc).__name__}: {exc})") from None
        return cls(meta["property"], module)


def shipped_regressor(name: str) -> Path:
    """The regressor of ``name`` shipped with the plugin (``weights/<name>_regressor.safetensors``), which
    ``diffusekit train-property-regressor`` made; α and the gap ship."""
    from diffusekit import packaged_weights

    path = packaged_weights("diffusekit_molecules", f"{check_property(name)}_regressor")
    if path is None:
        raise ConfigError(
            "property", f"no {name} regressor ships; train one: diffusekit train-property-regressor {name}"
        )
    return path


def train_regressor(
    property: str,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 5e-4,
    width: int = 128,
    layers: int = 6,
    seed: int = 0,
    log=None,
) -> Regressor:
    """Fit a regressor of ``property`` on the first half of the training split (L1 loss on the
    normalised property, Adam with cosine decay; random rotations as augmentation are not needed:
    the EGNN is invariant)."""
    from diffusekit_molecules import qm9

    data = qm9.load_qm9()
    index = half_indices(qm9.split_indices()["train"], "first")
    atoms = torch.from_numpy(data.atoms[index])
    pos = torch.from_numpy(data.pos[index]).float()
    target = normalize(property, data.properties[check_property(property)][index])
    torch.manual_seed(seed)
    module = RegressorModule(width, layers)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        rows = torch.randint(0, len(index), (batch_size,), generator=g)
        n = int((atoms[rows] >= 0).sum(1).max())
        loss = (module(atoms[rows, :n], pos[rows, :n]) - target[rows]).abs().mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        sched.step()
        if log is not None and (step % 100 == 0 or step == steps):
            log(step, loss.item())
    return Regressor(property, module)


__all__ = [
    "PROPERTIES",
    "shipped_regressor",
    "TRAIN_STATS",
    "Regressor",
    "RegressorModule",
    "denormalize",
    "half_indices",
    "normalize",
    "train_regressor",
]
