"""A molecule as a diffusion state: positions in the zero-centre-of-mass subspace, atom types, padding.

**Positions.** The positions of a molecule are translation invariant only up to their centre of
mass, so EDM (Hoogeboom et al., 2022, "Equivariant Diffusion for Molecule Generation in 3D",
section 3.2) diffuses them in the linear subspace where the centre of mass is zero: noise there
is a Gaussian projected onto the subspace, and the prior is such a Gaussian, which is invariant
to rotations and reflections. Here the subspace gets coordinates instead: the Helmert
matrix :math:`H` (``(N - 1) × N``; row :math:`k` is :math:`(1, \\dots, 1, -(k+1), 0, \\dots)
/ \\sqrt{(k+1)(k+2)}` with :math:`k + 1` ones) has orthonormal rows orthogonal to
:math:`\\mathbf 1`, so :math:`y = H x` maps centred positions isometrically onto
:math:`\\mathbb R^{(N-1) \\times 3}` and :math:`x = H^\\top y` maps back. An isotropic Gaussian in
:math:`y` is exactly EDM's zero-centre-of-mass Gaussian in :math:`x`
(covariance :math:`H^\\top H = I - \\mathbf 1 \\mathbf 1^\\top / N`): every schedule, sampler and
loss of the Gaussian plugin applies unchanged, and no sampler needs to know about centres of
mass. The part ``pos`` of a state holds :math:`y`.

**Padding.** Molecules of ``n`` atoms are padded to ``N`` (29 for QM9) with atoms at the end.
Row :math:`k` of :math:`H` involves only atoms :math:`0 .. k + 1`, so for a centred molecule
whose padding positions are 0, rows :math:`k \\ge n - 1` of :math:`y` are exactly 0 and
:math:`H^\\top y` is 0 on the padding: the one matrix serves every size. The padding (rows
``k >= n - 1`` of ``pos``, atoms ``i >= n`` of ``atoms``) is *known*: held at t = 0 in training
(:attr:`diffusekit.Data.known`, out of the loss) and given when sampling, so samplers never
move it. The network learns the atom count from the :class:`MoleculeSize` condition.

**Atom types** are EDM's scaled one-hot vectors (``ATOM_SCALE`` = 0.25, EDM's normalisation
of ``h``), diffused as a Gaussian part; the type of a generated atom is the argmax. Or, as in
EQGAT-diff (Le et al., 2024), they are tokens ``(B, N)`` of a categorical part (the masked
plugin's processes, e.g. the marginal prior), sampled beside the positions by ``core:by_kind``.
"""

from __future__ import annotations

import functools

import attrs
import torch
from diffusekit import Condition, ConditionList, ShapeError
from torch import Tensor

ATOM_SCALE = 0.25
"""The one-hot atom types are multiplied by this before diffusion (EDM's normalisation of ``h``)."""


@functools.lru_cache(maxsize=8)
def _helmert(n: int) -> Tensor:
    rows = torch.zeros(n - 1, n, dtype=torch.float64)
    for k in range(n - 1):
        rows[k, : k + 1] = 1.0
        rows[k, k + 1] = -(k + 1)
        rows[k] /= ((k + 1) * (k + 2)) ** 0.5
    return rows


def helmert(n: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """The ``(n - 1, n)`` Helmert matrix: orthonormal rows, each orthogonal to the all-ones vector."""
    if n < 2:
        raise ShapeError(f"the zero-centre subspace of {n} atom(s) is empty: pad to at least 2 atoms")
    return _helmert(n).to(dtype=dtype, device=device)


def centre(pos: Tensor, mask: Tensor) -> Tensor:
    """``pos`` (B, N, 3) with each molecule's centre of mass over its real atoms (``mask`` (B, N)) removed; padding 0."""
    m = mask[..., None].to(pos.dtype)
    mean = (pos * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
    return (pos - mean) * m


def to_subspace(pos: Tensor, mask: Tensor) -> Tensor:
    """Subspace coordinates ``(B, N - 1, 3)`` of positions ``(B, N, 3)`` (centred over the real atoms
    first); the rows of the padding are exactly 0 (not merely 0 up to rounding)."""
    y = torch.einsum("kn,bnd->bkd", helmert(pos.shape[1], pos.dtype, pos.device), centre(pos, mask))
    return y * (torch.arange(y.shape[1], device=y.device)[None, :] < mask.sum(1)[:, None] - 1)[..., None]


def from_subspace(y: Tensor) -> Tensor:
    """Centred positions ``(B, N, 3)`` of subspace coordinates ``(B, N - 1, 3)``."""
    return torch.einsum("kn,bkd->bnd", helmert(y.shape[1] + 1, y.dtype, y.device), y)


def padding(num_atoms: Tensor, max_atoms: int) -> dict[str, Tensor]:
    """The known (padding) masks of the parts of molecules of ``num_atoms`` atoms padded to ``max_atoms``:
    ``pos`` rows ``k >= n - 1`` of ``(B, max_atoms - 1)``, ``atoms`` ``i >= n`` of ``(B, max_atoms)``."""
    index = torch.arange(max_atoms, device=num_atoms.device)
    atoms = index[None, :] >= num_atoms[:, None]
    return {"pos": index[None, : max_atoms - 1] >= num_atoms[:, None] - 1, "atoms": atoms}


def encode(atoms: Tensor, pos: Tensor, num_types: int, *, tokens: bool = False) -> tuple[dict[str, Tensor], Tensor]:
    """The state parts of molecules ``atoms`` (B, N) type indices (-1: padding) at ``pos`` (B, N, 3):
    ``pos`` (B, N - 1, 3) subspace coordinates and ``atoms`` (B, N, num_types) scaled one-hot (with
    ``tokens``: the type indices (B, N) for a categorical part, padding 0); and the atom counts."""
    if atoms.ndim != 2 or pos.shape != (*atoms.shape, 3):
        raise ShapeError(
            f"molecules: atoms (B, N) and positions (B, N, 3) expected, got {tuple(atoms.shape)} and {tuple(pos.shape)}"
        )
    mask = atoms >= 0
    num_atoms = mask.sum(1)
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ShapeError("molecules: padding atoms (-1) must come after the real atoms")
    if tokens:
        return {"pos": to_subspace(pos, mask), "atoms": atoms.clamp(min=0)}, num_atoms
    onehot = torch.nn.functional.one_hot(atoms.clamp(min=0), num_types).to(pos.dtype) * mask[..., None]
    return {"pos": to_subspace(pos, mask), "atoms": ATOM_SCALE * onehot}, num_atoms


def decode(parts: dict[str, Tensor], num_atoms: Tensor) -> tuple[Tensor, Tensor]:
    """Atom types ``(B, N)`` (argmax of the one-hot, or the tokens of a categorical part; -1 on
    padding) and centred positions ``(B, N, 3)``."""
    h = parts["atoms"]
    mask = torch.arange(h.shape[1], device=num_atoms.device)[None, :] < num_atoms[:, None]
    atoms = torch.where(mask, h if h.ndim == 2 else h.argmax(-1), -1)
    return atoms, from_subspace(parts["pos"]) * mask[..., None]


@attrs.frozen(eq=False)
class MoleculeSize(Condition):
    """The number of atoms of each molecule, ``(B,)`` int64, for a state padded to ``max_atoms``.

    A structural condition: it describes the state (which rows are atoms) rather than steering
    it, so it carries no guidance information. It is null by definition (its null form is
    itself): classifier-free dropout never removes it, guidance passes it unchanged to the
    unconditional branch, and in a :class:`~diffusekit.ConditionList` the list is null exactly
    when its other items are.
    """

    num_atoms: Tensor
    max_atoms: int = attrs.field(default=29, kw_only=True)

    def __attrs_post_init__(self) -> None:
        n = self.num_atoms
        if n.ndim != 1 or n.dtype not in (torch.int64, torch.int32):
            raise ShapeError(f"molecule sizes must be a 1-D integer tensor, got {tuple(n.shape)} {n.dtype}")
        if n.numel() and (int(n.min()) < 1 or int(n.max()) > self.max_atoms):
            raise ShapeError(
                f"molecule sizes must lie in [1, {self.max_atoms}], got {n.min().item()}..{n.max().item()}"
            )

    @classmethod
    def example(cls, batch_size: int, generator: torch.Generator) -> MoleculeSize:
        return cls(torch.randint(1, 30, (batch_size,), generator=generator), max_atoms=29)

    def null_like(self) -> MoleculeSize:
        return self

    def is_null(self) -> Tensor:
        return torch.ones(self.num_atoms.shape, dtype=torch.bool, device=self.num_atoms.device)

    def mask(self) -> Tensor:
        """``(B, max_atoms)``: True for real atoms."""
        index = torch.arange(self.max_atoms, device=self.num_atoms.device)
        return index[None, :] < self.num_atoms[:, None]


def molecule_size(condition: Condition | None) -> MoleculeSize:
    """The :class:`MoleculeSize` in ``condition`` (itself or an item of a :class:`~diffusekit.ConditionList`)."""
    items = condition.items if isinstance(condition, ConditionList) else (condition,)
    for item in items:
        if isinstance(item, MoleculeSize):
            return item
    found = "None" if condition is None else type(condition).__name__
    raise ShapeError(f"a molecule network needs the molecules' sizes (a MoleculeSize condition), got {found}")


# --- bonds and charges (EQGAT-diff's state) ---------------------------------------------------

BOND_ORDERS = 4
"""Bond classes of the ``bonds`` part: 0 (no bond), single, double, triple (kekulized)."""

CHARGES = (-1, 0, 1)
"""Formal charges of the ``charges`` part; class ``k`` is charge ``CHARGES[k]``."""


@functools.lru_cache(maxsize=8)
def _pairs(n: int) -> tuple[Tensor, Tensor]:
    i, j = torch.triu_indices(n, n, offset=1)
    return i, j


def pair_count(n: int) -> int:
    """The number of atom pairs ``i < j`` of ``n`` atoms: the length of the ``bonds`` part."""
    return n * (n - 1) // 2


def to_pairs(matrix: Tensor) -> Tensor:
    """The upper triangle ``i < j`` of ``(B, N, N, ...)`` as ``(B, N (N - 1) / 2, ...)``, row by row.

    A bond matrix is symmetric, so the triangle holds it whole: as a part of its own it is
    symmetric by construction, whatever a sampler draws for each pair."""
    i, j = _pairs(matrix.shape[1])
    return matrix[:, i.to(matrix.device), j.to(matrix.device)]


def from_pairs(pairs: Tensor, n: int) -> Tensor:
    """The symmetric ``(B, n, n, ...)`` matrix of upper-triangle values (0 on the diagonal)."""
    i, j = (z.to(pairs.device) for z in _pairs(n))
    out = pairs.new_zeros(pairs.shape[0], n, n, *pairs.shape[2:])
    out[:, i, j] = pairs
    out[:, j, i] = pairs
    return out


def graph_padding(num_atoms: Tensor, max_atoms: int) -> dict[str, Tensor]:
    """:func:`padding` with the ``charges`` (as ``atoms``) and ``bonds`` parts: a pair is padding
    when either of its atoms is."""
    known = padding(num_atoms, max_atoms)
    _, j = _pairs(max_atoms)
    known["charges"] = known["atoms"]
    known["bonds"] = j.to(num_atoms.device)[None, :] >= num_atoms[:, None]
    return known


def encode_graph(atoms: Tensor, pos: Tensor, charges: Tensor, orders: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """EQGAT-diff's state of molecules: ``pos`` subspace coordinates, and as tokens ``atoms``
    (types), ``charges`` (indices into :data:`CHARGES`) and ``bonds`` (the upper triangle of
    the bond orders ``(B, N, N)``); padding tokens are 0 (no bond, for pairs). And the atom counts."""
    parts, num_atoms = encode(atoms, pos, 0, tokens=True)
    mask = atoms >= 0
    lookup = {c: k for k, c in enumerate(CHARGES)}
    if bool(((charges < min(CHARGES)) | (charges > max(CHARGES)))[mask].any()):
        raise ShapeError(f"formal charges must be among {CHARGES}")
    if bool(((orders < 0) | (orders >= BOND_ORDERS)).any()):
        raise ShapeError(f"bond orders must lie in 0..{BOND_ORDERS - 1}")
    parts["charges"] = torch.where(mask, charges.long() + lookup[0], 0)
    pair_mask = mask[:, :, None] & mask[:, None, :]
    parts["bonds"] = to_pairs(torch.where(pair_mask, orders.long(), 0))
    return parts, num_atoms


def decode_graph(parts: dict[str, Tensor], num_atoms: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Atom types ``(B, N)`` (-1 padding), centred positions ``(B, N, 3)``, formal charges ``(B, N)``
    and symmetric bond orders ``(B, N, N)`` of EQGAT-diff's state (padding 0)."""
    atoms, pos = decode(parts, num_atoms)
    mask = atoms >= 0
    charges = torch.where(mask, parts["charges"] - CHARGES.index(0), 0)
    orders = from_pairs(parts["bonds"], atoms.shape[1]) * (mask[:, :, None] & mask[:, None, :])
    return atoms, pos, charges, orders
