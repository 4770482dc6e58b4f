"""Registered molecule denoisers: EGNN and the EQGAT-style network on the molecule state.

The state (:mod:`diffusekit_molecules.state`) has two Gaussian parts: ``pos``, positions in
zero-centre-of-mass subspace coordinates ``(N - 1, 3)``, and ``atoms``, scaled one-hot types
``(N, types)``, each with one time per row (padding is held at t = 0). A call maps ``pos``
back to centred positions, appends each atom's noise level to its features (EDM feeds the
time to the network this way), runs the equivariant network of :mod:`diffusekit_molecules.egnn`
with the atom mask of the :class:`~diffusekit_molecules.state.MoleculeSize` condition, and
maps its equivariant output back to subspace coordinates. The output for ``pos`` therefore
rotates with the input and the output for ``atoms`` is invariant; padding never reaches
a real atom.

Atom types may instead be tokens of a categorical part ``(N,)`` (one-hot features in,
logits out). EQGAT-diff's state adds categorical ``charges`` ``(N,)`` (one-hot atom features
in, logits out beside the types) and ``bonds``: the upper triangle ``(N (N - 1) / 2,)`` of the
bond-order matrix, mirrored into one-hot edge features with the bonds' noise level and read
back from the network's symmetric edge head as logits (``charges`` and ``bonds`` > 0 give
their numbers of classes).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch
import torch.nn.functional as fn
from attrs import validators as v
from diffusekit import Condition, ConditionList, ConfigError, Embedding, Network, PartSpec, Schedule, ShapeError
from diffusekit.network import noise_per_row
from torch import Tensor, nn

from diffusekit_molecules import egnn
from diffusekit_molecules.state import from_pairs, from_subspace, molecule_size, pair_count, to_pairs, to_subspace


class MoleculeModule(nn.Module):
    """``({"pos", "atoms"}, {"pos", "atoms"} noise levels, condition) -> {"pos", "atoms"}``.

    The condition is a :class:`~diffusekit_molecules.state.MoleculeSize`, or a
    :class:`~diffusekit.ConditionList` of one and, when the network takes ``properties``, an
    :class:`~diffusekit.Embedding` of that many (normalised) molecular properties: every atom
    then also reads the properties and whether they are given (0 for the null condition, as
    classifier-free guidance needs).
    """

    def __init__(self, core: nn.Module, atom_types: int, properties: int = 0, charges: int = 0, bonds: int = 0) -> None:
        super().__init__()
        self.core, self.atom_types, self.properties = core, atom_types, properties
        self.charges, self.bonds = charges, bonds

    def _property_features(self, condition: Condition | None, b: int, n: int, like: Tensor) -> list[Tensor]:
        if not self.properties:
            return []
        items = condition.items if isinstance(condition, ConditionList) else (condition,)
        found = [c for c in items if isinstance(c, Embedding)]
        if not found or found[0].values.shape != (b, self.properties):
            got = "none" if not found else f"{tuple(found[0].values.shape)}"
            raise ShapeError(
                f"this molecule network takes {self.properties} properties per molecule (an Embedding), got {got}"
            )
        present = found[0].present.to(like.dtype)[:, None]
        values = found[0].values.to(like.dtype) * present
        return [torch.cat([values, present], -1)[:, None, :].expand(b, n, self.properties + 1)]

    def forward(self, x: Mapping[str, Tensor], noise: Mapping[str, Tensor], condition: Condition | None) -> dict:
        y, h = x["pos"], x["atoms"]
        if not h.is_floating_point():  # tokens of a categorical part: one-hot features
            h = fn.one_hot(h, self.atom_types).to(y.dtype)
        b, n = h.shape[0], h.shape[1]
        if y.ndim != 3 or tuple(y.shape) != (b, n - 1, 3):
            raise ShapeError(
                f"molecule parts: pos ({b}, {n - 1}, 3) expected beside atoms {tuple(h.shape)}, got {tuple(y.shape)}"
            )
        size = molecule_size(condition)
        if size.max_atoms != n or size.batch_size != b:
            raise ShapeError(
                f"the MoleculeSize condition is for {size.batch_size} x {size.max_atoms} atoms, the state {b} x {n}"
            )
        mask = size.mask().to(h.device)
        level = noise_per_row(noise["atoms"], b, n, h.dtype, h.device, "atom")
        # Rows of H beyond the largest molecule are 0 for every molecule and H restricted to the first
        # m atoms is H of size m, so the batch is cut to its largest molecule (exact; padding is cheap).
        m = max(int(size.num_atoms.max()), 2) if b else n
        extra = self._property_features(condition, b, m, h)
        if self.charges:  # formal charges: one-hot features beside the types
            extra.append(fn.one_hot(x["charges"][:, :m], self.charges).to(h.dtype))
        edges = None
        if self.bonds:  # bond orders: one-hot edge features and the bonds' noise level
            orders = from_pairs(x["bonds"], n)[:, :m, :m]
            bond_level = from_pairs(noise_per_row(noise["bonds"], b, pair_count(n), h.dtype, h.device, "atom pair"), n)[
                :, :m, :m, None
            ]
            edges = torch.cat([fn.one_hot(orders, self.bonds).to(h.dtype), bond_level], -1)
        h_in = torch.cat([h[:, :m], level[:, :m, None], *extra], -1)
        pos_out, h_out, edge_out = self.core(from_subspace(y[:, : m - 1]), h_in, mask[:, :m], edges)
        # pos_out has zero mean over the real atoms and is 0 on padding: its subspace coordinates are exact
        pos_out = to_subspace(pos_out, mask[:, :m])
        out = {
            "pos": fn.pad(pos_out, (0, 0, 0, n - m)),
            "atoms": fn.pad(h_out[..., : self.atom_types], (0, 0, 0, n - m)),
        }
        if self.charges:
            out["charges"] = fn.pad(h_out[..., self.atom_types :], (0, 0, 0, n - m))
        if self.bonds:
            out["bonds"] = to_pairs(fn.pad(edge_out, (0, 0, 0, n - m, 0, n - m)))
        return out


class _MoleculeNetwork(Network):
    """What both registered networks share: the parts they take and how they are built."""

    atom_types: int
    properties: int
    charges: int
    bonds: int

    def _config(self) -> egnn.EGNNConfig | egnn.EQGATConfig:
        raise NotImplementedError

    def build(self) -> MoleculeModule:
        return MoleculeModule(self._config().build(), self.atom_types, self.properties, self.charges, self.bonds)

    def _in_features(self) -> int:
        return self.atom_types + 1 + (self.properties + 1 if self.properties else 0) + self.charges

    def _edges(self) -> dict[str, int]:
        return {"edge_in_features": self.bonds + 1 if self.bonds else 0, "edge_out_features": self.bonds}

    def check_parts(self, parts: Mapping[str, PartSpec], schedules: Mapping[str, Schedule]) -> None:
        """Refuse anything but a Gaussian ``pos`` ``(N - 1, 3)`` and ``atoms`` either Gaussian
        ``(N, atom_types)`` or categorical ``(N,)`` over ``atom_types`` classes, one time per row."""
        want = ["atoms", "pos"] + (["charges"] if self.charges else []) + (["bonds"] if self.bonds else [])
        if sorted(parts) != sorted(want):
            raise ConfigError("parts", f"this molecule network takes the parts {sorted(want)}, got {sorted(parts)}")
        for name, classes in (("charges", self.charges), ("bonds", self.bonds)):
            if classes and schedules[name].kind != "categorical":
                raise ConfigError(
                    f"parts.{name}.schedule", f"must be categorical, got {type(schedules[name]).__name__}"
                )
            if classes and getattr(schedules[name], "num_classes", None) != classes:
                got = getattr(schedules[name], "num_classes", None)
                raise ConfigError(f"network.{name}", f"must be the {name} process's {got} classes, got {classes}")
        atoms, pos = parts["atoms"].shape, parts["pos"].shape
        if schedules["atoms"].kind == "categorical":
            if len(atoms) != 1:
                raise ConfigError("parts.atoms.shape", f"categorical atom types must be [N], got {list(atoms)}")
            classes = getattr(schedules["atoms"], "num_classes", None)
            if classes != self.atom_types:
                raise ConfigError(
                    "network.atom_types", f"must be the atom process's {classes} classes, got {self.atom_types}"
                )
        elif len(atoms) != 2 or atoms[1] != self.atom_types:
            raise ConfigError("parts.atoms.shape", f"must be [N, {self.atom_types}] (atom_types), got {list(atoms)}")
        if list(pos) != [atoms[0] - 1, 3]:
            raise ConfigError("parts.pos.shape", f"must be [{atoms[0] - 1}, 3] (N - 1 subspace rows), got {list(pos)}")
        if self.charges and list(parts["charges"].shape) != [atoms[0]]:
            raise ConfigError(
                "parts.charges.shape", f"must be [{atoms[0]}] (one per atom), got {list(parts['charges'].shape)}"
            )
        if self.bonds and list(parts["bonds"].shape) != [pair_count(atoms[0])]:
            got = list(parts["bonds"].shape)
            raise ConfigError(
                "parts.bonds.shape",
                f"must be [{pair_count(atoms[0])}] (the pairs i < j of {atoms[0]} atoms), got {got}",
            )
        if schedules["pos"].kind != "gaussian":
            raise ConfigError("parts.pos.schedule", f"must be Gaussian, got {type(schedules['pos']).__name__}")
        for name in parts:
            if parts[name].time_dims != 2:
                raise ConfigError(f"parts.{name}.time_dims", "must be 2: one time per row, so padding can be held")


@attrs.frozen
class EGNNDenoiser(_MoleculeNetwork):
    """EGNN (Satorras et al., 2021) as EDM uses it (Hoogeboom et al., 2022); see :class:`~diffusekit_molecules.egnn.EGNN`."""

    atom_types: int = attrs.field(default=5, validator=v.ge(1))
    width: int = attrs.field(default=128, validator=v.ge(1))
    layers: int = attrs.field(default=6, validator=v.ge(1))
    sublayers: int = attrs.field(default=1, validator=v.ge(1))
    attention: bool = True
    coords_range: float = attrs.field(default=15.0, validator=v.gt(0.0))
    normalization_factor: float = attrs.field(default=1.0, validator=v.gt(0.0))
    properties: int = attrs.field(default=0, validator=v.ge(0))
    charges: int = attrs.field(default=0, validator=v.ge(0))
    bonds: int = attrs.field(default=0, validator=v.ge(0))

    def _config(self) -> egnn.EGNNConfig:
        return egnn.EGNNConfig(
            in_features=self._in_features(),
            out_features=self.atom_types + self.charges,
            **self._edges(),
            width=self.width,
            layers=self.layers,
            sublayers=self.sublayers,
            attention=self.attention,
            coords_range=self.coords_range,
            normalization_factor=self.normalization_factor,
        )


@attrs.frozen
class EQGATDenoiser(_MoleculeNetwork):
    """The EQGAT-style attention network (Le et al., 2024); see :class:`~diffusekit_molecules.egnn.EQGAT`."""

    atom_types: int = attrs.field(default=5, validator=v.ge(1))
    width: int = attrs.field(default=128, validator=v.ge(1))
    vector_width: int = attrs.field(default=32, validator=v.ge(1))
    edge_width: int = attrs.field(default=32, validator=v.ge(1))
    layers: int = attrs.field(default=6, validator=v.ge(1))
    properties: int = attrs.field(default=0, validator=v.ge(0))
    charges: int = attrs.field(default=0, validator=v.ge(0))
    bonds: int = attrs.field(default=0, validator=v.ge(0))

    def _config(self) -> egnn.EQGATConfig:
        return egnn.EQGATConfig(
            in_features=self._in_features(),
            out_features=self.atom_types + self.charges,
            **self._edges(),
            width=self.width,
            vector_width=self.vector_width,
            edge_width=self.edge_width,
            layers=self.layers,
        )
