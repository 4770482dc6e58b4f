"""Quality metrics of generated 3-D molecules: EDM's stability, RDKit validity, uniqueness, novelty.

A molecule is ``atoms`` (n,) integer indices into :data:`ATOM_TYPES` and ``pos`` (n, 3) positions in
Ångström; a batch is ``atoms`` (B, N) with -1 marking padding and ``pos`` (B, N, 3) (padding rows are
ignored, whatever they hold). Models that generate their bonds also pass ``bonds`` (B, N, N) bond
orders (0 none, 1 single, 2 double, 3 triple; 4 aromatic is accepted but kekulized 1/2/3 is
preferred) and optionally ``charges`` (B, N) formal charges.

Sources followed (facts only; the code here is our own):

* Stability from distances follows EDM, Hoogeboom et al. 2022, repository
  ``ehoogeboom/e3_diffusion_for_molecules`` (commit fce07d70), files ``qm9/bond_analyze.py``
  (``get_bond_order``, the tables ``bonds1``/``bonds2``/``bonds3`` of typical bond lengths in pm, which
  cite wiredchemist.com and chemistry-reference.com, ``margin1, margin2, margin3 = 10, 5, 3`` and
  ``allowed_bonds``) and ``qm9/analyze.py`` (``check_stability``). The rule, for every unordered pair
  of atoms at distance ``d`` (converted to pm as ``100 * d``): no bond unless ``d < b1 + 10``; then
  single unless the pair has a double-bond length and ``d < b2 + 5``; then double unless the pair
  has a triple-bond length and ``d < b3 + 3``, in which case triple. All comparisons are strict. An
  atom is stable when the sum of its bond orders is exactly (``==``) its allowed valence (H 1, C 4,
  N 3, O 2, F 1); a molecule is stable when all its atoms are. The pair lookup is symmetric (the
  tables are), so the order of the two atoms does not matter. Below, the tables are restricted to
  the QM9 elements H, C, N, O, F; EDM's QM9 path (``check_exists=False``) has entries for all of
  their pairs.
* Stability from given bonds follows MiDi (``cvignac/MiDi``, commit 775b731c,
  ``midi/analysis/rdkit_functions.py``, ``check_stability`` and ``allowed_bonds``), which EQGAT-diff
  copies unchanged (``tuanle618/eqgat-diff``, ``eqgat_diff/experiments/sampling/utils.py``): an
  atom's valence is the sum of its row of the bond matrix with aromatic (4) counted as 1.5, truncated
  to an integer; the allowed valences depend on the formal charge (a charge missing from the table
  falls back to the neutral entry), see :data:`CHARGED_VALENCES`. Note the table is lenient: a
  neutral C with valence 3 and a neutral N with valence 2 count as stable.
* Validity follows EDM's ``qm9/rdkit_functions.py`` (``BasicMolecularMetrics.compute_validity``,
  ``build_molecule``, ``mol2smiles``): atoms as plain RDKit atoms (RDKit may add implicit hydrogens
  to them), bonds from the same distance rule (or the given bonds), ``Chem.SanitizeMol``; the
  molecule is valid when the sanitization of the whole molecule succeeds; its SMILES is the one of
  its largest fragment. Uniqueness is ``#distinct SMILES / #valid``, novelty is ``#unique SMILES
  not in the training set / #unique`` (both 0.0 when their denominator is 0, as in EDM).

Deliberate differences from EDM, all documented in :func:`evaluate`:

* SMILES are canonical RDKit SMILES of the heavy-atom graph (hydrogens removed with
  ``Chem.RemoveHs``), so that training SMILES written the usual way compare; EDM writes the explicit
  hydrogens (``explicit_h_smiles=True`` reproduces that).
* Among fragments of equal size the one with the smallest SMILES is taken (EDM takes the first by
  atom order, which makes the result depend on the atoms' permutation).
* Distances are computed in float64 (EDM: float32 tensors); results differ only for distances within
  float32 rounding of a threshold.
* A molecule without atoms is neither stable nor valid (EDM would count it as both).

``bond_perception="rdkit"`` replaces EDM's distance rule, for validity and SMILES only, by RDKit's
``rdDetermineBonds.DetermineBonds(mol, charge=0, useHueckel=True)`` (connectivity from an extended
Hückel calculation, then bond orders and formal charges that must give a neutral molecule with
every atom's hydrogens explicit). It is stricter and not comparable with EDM's published numbers.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import attrs
import numpy as np
from diffusekit.errors import ConfigError, InputError, ShapeError
from rdkit import Chem, rdBase
from rdkit.Chem import rdDetermineBonds
from rdkit.Geometry import Point3D

__all__ = [
    "ALLOWED_VALENCE",
    "ATOM_TYPES",
    "BOND_LENGTHS_DOUBLE",
    "BOND_LENGTHS_SINGLE",
    "BOND_LENGTHS_TRIPLE",
    "CHARGED_VALENCES",
    "MARGINS",
    "Report",
    "atom_stability_from_bonds",
    "atom_stability_from_distances",
    "bond_orders_from_distances",
    "build_mol",
    "canonical_smiles",
    "canonical_smiles_set",
    "evaluate",
    "molecule_smiles",
    "split_batch",
]

ATOM_TYPES: tuple[str, ...] = ("H", "C", "N", "O", "F")
"""The element of each atom type index (QM9's order, as in EDM's ``atom_decoder``)."""

# Typical bond lengths in pm, EDM's qm9/bond_analyze.py (bonds1, bonds2, bonds3) restricted to H, C, N, O, F.
BOND_LENGTHS_SINGLE: dict[frozenset[str], int] = {
    frozenset(pair): length
    for pair, length in {
        ("H", "H"): 74,
        ("H", "C"): 109,
        ("H", "N"): 101,
        ("H", "O"): 96,
        ("H", "F"): 92,
        ("C", "C"): 154,
        ("C", "N"): 147,
        ("C", "O"): 143,
        ("C", "F"): 135,
        ("N", "N"): 145,
        ("N", "O"): 140,
        ("N", "F"): 136,
        ("O", "O"): 148,
        ("O", "F"): 142,
        ("F", "F"): 142,
    }.items()
}
BOND_LENGTHS_DOUBLE: dict[frozenset[str], int] = {
    frozenset(pair): length
    for pair, length in {
        ("C", "C"): 134,
        ("C", "N"): 129,
        ("C", "O"): 120,
        ("N", "N"): 125,
        ("N", "O"): 121,
        ("O", "O"): 121,
    }.items()
}
BOND_LENGTHS_TRIPLE: dict[frozenset[str], int] = {
    frozenset(pair): length
    for pair, length in {("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110}.items()
}
MARGINS: tuple[int, int, int] = (10, 5, 3)
"""EDM's margin1, margin2, margin3 in pm, added to the single, double and triple bond lengths."""

ALLOWED_VALENCE: dict[str, int] = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}
"""EDM's allowed_bonds for the QM9 elements (no charges)."""

CHARGED_VALENCES: dict[str, dict[int, tuple[int, ...]]] = {
    "H": {0: (1,), 1: (0,), -1: (0,)},
    "C": {0: (3, 4), 1: (3,), -1: (3,)},
    "N": {0: (2, 3), 1: (2, 3, 4), -1: (2,)},
    "O": {0: (2,), 1: (3,), -1: (1,)},
    "F": {0: (1,), -1: (0,)},
}
"""MiDi's allowed_bonds (also EQGAT-diff's) for the QM9 elements: formal charge -> allowed valences;
a charge not listed uses the entry of charge 0."""

_NO_BOND = -np.inf  # a threshold no distance is below


def _threshold_table(lengths: dict[frozenset[str], int], margin: int) -> np.ndarray:
    table = np.full((len(ATOM_TYPES), len(ATOM_TYPES)), _NO_BOND)
    for i, a in enumerate(ATOM_TYPES):
        for j, b in enumerate(ATOM_TYPES):
            length = lengths.get(frozenset((a, b)))
            if length is not None:
                table[i, j] = length + margin
    return table


_T1 = _threshold_table(BOND_LENGTHS_SINGLE, MARGINS[0])
_T2 = _threshold_table(BOND_LENGTHS_DOUBLE, MARGINS[1])
_T3 = _threshold_table(BOND_LENGTHS_TRIPLE, MARGINS[2])
_ALLOWED = np.array([ALLOWED_VALENCE[e] for e in ATOM_TYPES], dtype=np.int64)

# _CHARGED_OK[type, charge + _CHARGE_OFFSET, valence]: whether that valence is stable (MiDi's rule)
_CHARGE_OFFSET = 4
_MAX_VALENCE = 16
_CHARGED_OK = np.zeros((len(ATOM_TYPES), 2 * _CHARGE_OFFSET + 1, _MAX_VALENCE + 1), dtype=bool)
for _t, _e in enumerate(ATOM_TYPES):
    for _c in range(-_CHARGE_OFFSET, _CHARGE_OFFSET + 1):
        for _v in CHARGED_VALENCES[_e].get(_c, CHARGED_VALENCES[_e][0]):
            _CHARGED_OK[_t, _c + _CHARGE_OFFSET, _v] = True

_BOND_TYPES = {
    1: Chem.BondType.SINGLE,
    2: Chem.BondType.DOUBLE,
    3: Chem.BondType.TRIPLE,
    4: Chem.BondType.AROMATIC,
}
_CHUNK = 2048  # molecules per vectorised block (bounds the memory of the pairwise arrays)


# ----------------------------------------------------------------------------------------------- inputs


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _integers(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ShapeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _as_batch(
    atoms: Any, pos: Any, bonds: Any = None, charges: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validate and return (atoms (B, N), pos (B, N, 3) float64, bonds (B, N, N) | None, charges (B, N) | None)."""
    atoms = _integers(atoms, "atoms")
    pos = _to_numpy(pos)
    single = atoms.ndim == 1
    if atoms.ndim not in (1, 2):
        raise ShapeError(f"atoms must be (n,) or (B, N), got shape {tuple(atoms.shape)}")
    if single:
        atoms = atoms[None]
        pos = pos[None] if pos.ndim == 2 else pos
    b, n = atoms.shape
    if pos.shape != (b, n, 3):
        want = f"({n}, 3)" if single else f"({b}, {n}, 3)"
        raise ShapeError(f"pos must have shape {want} to fit atoms {tuple(atoms.shape[single:])}, got {pos.shape}")
    if not np.issubdtype(pos.dtype, np.floating) and not np.issubdtype(pos.dtype, np.integer):
        raise ShapeError(f"pos must hold numbers, got dtype {pos.dtype}")
    pos = pos.astype(np.float64)
    if atoms.size and (atoms.min() < -1 or atoms.max() >= len(ATOM_TYPES)):
        bad = int(atoms[(atoms < -1) | (atoms >= len(ATOM_TYPES))][0])
        raise InputError(f"atoms holds {bad}; atom types are -1 (padding) or 0..{len(ATOM_TYPES) - 1} {ATOM_TYPES}")
    real = atoms >= 0
    if not np.isfinite(pos[real]).all():
        mol = int(np.nonzero(~np.isfinite(pos).all(-1) & real)[0][0])
        raise InputError(f"pos has a non-finite coordinate at a real atom of molecule {mol}")
    if bonds is not None:
        bonds = _integers(bonds, "bonds")
        if single and bonds.ndim == 2:
            bonds = bonds[None]
        if bonds.shape != (b, n, n):
            raise ShapeError(f"bonds must have shape {(b, n, n)[single:]} to fit atoms, got {bonds.shape[single:]}")
        pair = real[:, :, None] & real[:, None, :]
        bonds = np.where(pair, bonds, 0)
        if bonds.size and (bonds.min() < 0 or bonds.max() > 4):
            raise InputError("bonds must hold bond orders 0 (none), 1, 2, 3 or 4 (aromatic) between real atoms")
        if not (bonds == bonds.transpose(0, 2, 1)).all():
            raise InputError("bonds must be symmetric (bonds[i, j] == bonds[j, i])")
        diag = np.arange(n)
        bonds[:, diag, diag] = 0
    if charges is not None:
        charges = _integers(charges, "charges")
        if single and charges.ndim == 1:
            charges = charges[None]
        if charges.shape != (b, n):
            raise ShapeError(f"charges must have shape {(b, n)[single:]} to fit atoms, got {charges.shape[single:]}")
        charges = np.where(real, charges, 0)
    return atoms, pos, bonds, charges


def split_batch(
    atoms: Any, pos: Any, bonds: Any = None, charges: Any = None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """The molecules of a padded batch (or of one molecule) as (atoms, pos, bonds, charges) without padding."""
    atoms, pos, bonds, charges = _as_batch(atoms, pos, bonds, charges)
    out = []
    for k in range(atoms.shape[0]):
        keep = np.nonzero(atoms[k] >= 0)[0]
        out.append(
            (
                atoms[k, keep],
                pos[k, keep],
                None if bonds is None else bonds[k][np.ix_(keep, keep)],
                None if charges is None else charges[k, keep],
            )
        )
    return out


# -------------------------------------------------------------------------------------------- stability


def _orders_block(atoms: np.ndarray, pos: np.ndarray) -> np.ndarray:
    real = atoms >= 0
    types = np.where(real, atoms, 0)
    pos = np.where(real[..., None], pos, 0.0)
    diff = pos[:, :, None, :] - pos[:, None, :, :]
    dist = 100.0 * np.sqrt(np.einsum("bijk,bijk->bij", diff, diff))  # pm, as EDM's get_bond_order
    ti, tj = types[:, :, None], types[:, None, :]
    single = (dist < _T1[ti, tj]).astype(np.int8)
    double = (dist < _T2[ti, tj]).astype(np.int8)
    triple = (dist < _T3[ti, tj]).astype(np.int8)
    orders = single * (1 + double * (1 + triple))  # nested as EDM's rule: triple needs double needs single
    n = atoms.shape[1]
    orders[:, np.arange(n), np.arange(n)] = 0
    orders *= real[:, :, None] & real[:, None, :]
    return orders.astype(np.int8)


def bond_orders_from_distances(atoms: Any, pos: Any) -> np.ndarray:
    """EDM's bond orders (0-3) of every pair of atoms, (B, N, N) int8 (or (n, n) for one molecule)."""
    single = _to_numpy(atoms).ndim == 1
    atoms, pos, _, _ = _as_batch(atoms, pos)
    n = atoms.shape[1]
    orders = np.zeros((len(atoms), n, n), dtype=np.int8)
    for s in range(0, len(atoms), _CHUNK):
        orders[s : s + _CHUNK] = _orders_block(atoms[s : s + _CHUNK], pos[s : s + _CHUNK])
    return orders[0] if single else orders


def _stable_from_distances(atoms: np.ndarray, pos: np.ndarray) -> np.ndarray:
    out = np.zeros(atoms.shape, dtype=bool)
    for s in range(0, len(atoms), _CHUNK):
        a = atoms[s : s + _CHUNK]
        valence = _orders_block(a, pos[s : s + _CHUNK]).sum(-1, dtype=np.int64)
        out[s : s + _CHUNK] = (a >= 0) & (valence == _ALLOWED[np.where(a >= 0, a, 0)])
    return out


def _stable_from_bonds(atoms: np.ndarray, bonds: np.ndarray, charges: np.ndarray | None) -> np.ndarray:
    real = atoms >= 0
    weights = np.array([0.0, 1.0, 2.0, 3.0, 1.5])
    valence = np.trunc(weights[bonds].sum(-1)).astype(np.int64)
    charge = np.zeros_like(atoms) if charges is None else charges
    # charges beyond the table fall back to the neutral entry, as a charge missing from MiDi's dict does
    charge = np.where(np.abs(charge) > _CHARGE_OFFSET, 0, charge)
    types = np.where(real, atoms, 0)
    ok = _CHARGED_OK[types, charge + _CHARGE_OFFSET, np.minimum(valence, _MAX_VALENCE)]
    return real & ok & (valence <= _MAX_VALENCE)


def atom_stability_from_distances(atoms: Any, pos: Any) -> np.ndarray:
    """Per atom, whether EDM's distance rule gives it its allowed valence: (B, N) bool (False at padding)."""
    single = _to_numpy(atoms).ndim == 1
    atoms, pos, _, _ = _as_batch(atoms, pos)
    stable = _stable_from_distances(atoms, pos)
    return stable[0] if single else stable


def atom_stability_from_bonds(atoms: Any, bonds: Any, charges: Any = None) -> np.ndarray:
    """Per atom, whether the given bonds and charges give an allowed valence (MiDi's rule): (B, N) bool."""
    a = _integers(atoms, "atoms")
    single = a.ndim == 1
    dummy = np.zeros((*a.shape, 3))
    a, _, bonds, charges = _as_batch(a, dummy, bonds, charges)
    stable = _stable_from_bonds(a, bonds, charges)
    return stable[0] if single else stable


# --------------------------------------------------------------------------------------------- validity


def build_mol(
    atoms: np.ndarray,
    orders: np.ndarray | None,
    *,
    pos: np.ndarray | None = None,
    charges: np.ndarray | None = None,
) -> Chem.RWMol:
    """An unsanitized RDKit molecule of one unpadded molecule with the given bond orders (upper triangle
    read) and, when ``pos`` is given, a 3-D conformer. Atoms are plain RDKit atoms, as EDM builds them."""
    mol = Chem.RWMol()
    for k, t in enumerate(atoms.tolist()):
        atom = Chem.Atom(ATOM_TYPES[t])
        if charges is not None and charges[k]:
            atom.SetFormalCharge(int(charges[k]))
        mol.AddAtom(atom)
    if orders is not None:
        ii, jj = np.nonzero(np.triu(orders, 1))
        for i, j in zip(ii.tolist(), jj.tolist(), strict=True):
            mol.AddBond(i, j, _BOND_TYPES[int(orders[i, j])])
    if pos is not None:
        conf = Chem.Conformer(len(atoms))
        for k, (x, y, z) in enumerate(np.asarray(pos, dtype=np.float64).tolist()):
            conf.SetAtomPosition(k, Point3D(x, y, z))
        conf.Set3D(True)
        mol.AddConformer(conf, assignId=True)
    return mol


def _smiles_of(mol: Chem.Mol, explicit_h: bool) -> str:
    if not explicit_h:
        try:
            mol = Chem.RemoveHs(mol)
        except (ValueError, RuntimeError):
            pass
    return Chem.MolToSmiles(mol)


def molecule_smiles(mol: Chem.Mol, *, explicit_h: bool = False) -> str | None:
    """EDM's validity check of one molecule: ``None`` when ``Chem.SanitizeMol`` fails (the molecule is
    sanitized in place), otherwise the canonical SMILES of its largest fragment (ties: smallest SMILES)."""
    if mol.GetNumAtoms() == 0:
        return None
    try:
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError):
        return None
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    if len(frags) == 1:
        return _smiles_of(mol, explicit_h)
    biggest = max(f.GetNumAtoms() for f in frags)
    return min(_smiles_of(f, explicit_h) for f in frags if f.GetNumAtoms() == biggest)


def canonical_smiles(smiles: str, *, explicit_h: bool = False) -> str | None:
    """The canonical form :func:`evaluate` compares with, or ``None`` when RDKit cannot parse ``smiles``."""
    params = Chem.SmilesParserParams()
    params.removeHs = not explicit_h
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles, params)
    return None if mol is None else Chem.MolToSmiles(mol)


def canonical_smiles_set(smiles: Iterable[str], *, explicit_h: bool = False) -> frozenset[str]:
    """Canonical training SMILES, to compute once and pass to :func:`evaluate` with ``canonicalize_train=False``."""
    out = (canonical_smiles(s, explicit_h=explicit_h) for s in smiles)
    return frozenset(s for s in out if s is not None)


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence file descriptor 2: YAeHMOP (behind ``useHueckel=True``) prints warnings there from C."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _rdkit_perceived(atoms: np.ndarray, pos: np.ndarray) -> Chem.Mol | None:
    mol = build_mol(atoms, None, pos=pos)
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=0, useHueckel=True)
    except (ValueError, RuntimeError):
        return None
    return mol


# ------------------------------------------------------------------------------------------------ report


def _fraction(num: int, den: int) -> float:
    return num / den if den else 0.0


@attrs.frozen
class Report:
    """Counts of one evaluation; the fractions are properties. ``smiles`` holds, per molecule, its SMILES
    or ``None`` when invalid."""

    n_molecules: int
    n_atoms: int
    n_stable_atoms: int
    n_stable_molecules: int
    n_valid: int
    n_unique: int
    n_novel: int | None  # None when no training SMILES were given
    bonds: str  # "distances" (EDM's rule) or "given"
    bond_perception: str  # how validity got its bonds: "edm", "rdkit" or "given"
    seconds: float = attrs.field(eq=False)
    smiles: tuple[str | None, ...] = attrs.field(repr=False, default=())

    @property
    def atom_stability(self) -> float:
        return _fraction(self.n_stable_atoms, self.n_atoms)

    @property
    def mol_stability(self) -> float:
        return _fraction(self.n_stable_molecules, self.n_molecules)

    @property
    def validity(self) -> float:
        return _fraction(self.n_valid, self.n_molecules)

    @property
    def uniqueness(self) -> float:
        """Distinct SMILES among the valid molecules (EDM's definition)."""
        return _fraction(self.n_unique, self.n_valid)

    @property
    def valid_unique(self) -> float:
        """Valid and unique molecules over all molecules (validity x uniqueness)."""
        return _fraction(self.n_unique, self.n_molecules)

    @property
    def novelty(self) -> float | None:
        """Unique valid SMILES not among the training SMILES, over the unique ones (EDM's definition)."""
        return None if self.n_novel is None else _fraction(self.n_novel, self.n_unique)

    def as_dict(self, *, smiles: bool = False) -> dict[str, Any]:
        """JSON-ready numbers (and the SMILES when asked)."""
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in (
                "n_molecules",
                "n_atoms",
                "n_stable_atoms",
                "n_stable_molecules",
                "n_valid",
                "n_unique",
                "n_novel",
                "atom_stability",
                "mol_stability",
                "validity",
                "uniqueness",
                "valid_unique",
                "novelty",
                "bonds",
                "bond_perception",
                "seconds",
            )
        }
        if smiles:
            out["smiles"] = list(self.smiles)
        return out


def evaluate(
    atoms: Any,
    pos: Any,
    *,
    bonds: Any = None,
    charges: Any = None,
    train_smiles: Iterable[str] | None = None,
    bond_perception: Literal["edm", "rdkit"] = "edm",
    explicit_h_smiles: bool = False,
    canonicalize_train: bool = True,
) -> Report:
    """Stability, validity, uniqueness and novelty of a batch of generated molecules.

    Args:
        atoms: (B, N) atom type indices into :data:`ATOM_TYPES`, -1 for padding (or (n,) for one molecule);
            numpy arrays, torch tensors or nested lists.
        pos: (B, N, 3) positions in Ångström (padding rows ignored).
        bonds: optional (B, N, N) symmetric bond orders the model generated; then stability uses them
            with ``charges`` (MiDi's charge-aware valences) and validity builds the molecule from them.
        charges: optional (B, N) formal charges, used only with ``bonds``.
        train_smiles: training SMILES for novelty (canonicalized here unless ``canonicalize_train`` is
            False, e.g. a set from :func:`canonical_smiles_set`).
        bond_perception: "edm" (EDM's distance rule) or "rdkit" (``DetermineBonds(useHueckel=True)``,
            stricter; validity and SMILES only, stability stays EDM's). Ignored when ``bonds`` is given.
        explicit_h_smiles: write SMILES with their hydrogen atoms as EDM does (default: heavy-atom
            canonical SMILES, which compare with ordinary training SMILES).
    """
    if bond_perception not in ("edm", "rdkit"):
        raise ConfigError("bond_perception", f"must be 'edm' or 'rdkit', got {bond_perception!r}")
    if charges is not None and bonds is None:
        raise ConfigError("charges", "are only used with bonds; pass bonds too or leave charges out")
    start = time.perf_counter()
    atoms, pos, bonds, charges = _as_batch(atoms, pos, bonds, charges)
    if atoms.shape[0] == 0:
        raise ShapeError("evaluate needs at least one molecule, got an empty batch")
    real = atoms >= 0
    counts = real.sum(1)

    stable = _stable_from_distances(atoms, pos) if bonds is None else _stable_from_bonds(atoms, bonds, charges)
    mol_stable = (stable | ~real).all(1) & (counts > 0)

    smiles: list[str | None] = []
    quiet = _quiet_fd2() if bonds is None and bond_perception == "rdkit" else contextlib.nullcontext()
    with rdBase.BlockLogs(), quiet:
        for k in range(atoms.shape[0]):
            keep = np.nonzero(real[k])[0]
            a = atoms[k, keep]
            if bonds is not None:
                mol = build_mol(a, bonds[k][np.ix_(keep, keep)], charges=None if charges is None else charges[k, keep])
            elif bond_perception == "edm":
                mol = build_mol(a, _orders_block(a[None], pos[k, keep][None])[0])
            else:
                mol = _rdkit_perceived(a, pos[k, keep])
            smiles.append(None if mol is None else molecule_smiles(mol, explicit_h=explicit_h_smiles))

    valid = [s for s in smiles if s is not None]
    unique = set(valid)
    n_novel = None
    if train_smiles is not None:
        train = (
            canonical_smiles_set(train_smiles, explicit_h=explicit_h_smiles)
            if canonicalize_train
            else frozenset(train_smiles)
        )
        n_novel = len(unique - train)
    return Report(
        n_molecules=int(atoms.shape[0]),
        n_atoms=int(counts.sum()),
        n_stable_atoms=int(stable.sum()),
        n_stable_molecules=int(mol_stable.sum()),
        n_valid=len(valid),
        n_unique=len(unique),
        n_novel=n_novel,
        bonds="distances" if bonds is None else "given",
        bond_perception="given" if bonds is not None else bond_perception,
        seconds=time.perf_counter() - start,
        smiles=tuple(smiles),
    )
