"""Generated molecules to RDKit, SDF, XYZ and PNG grids, and SDF/XYZ files back to arrays.

A molecule is ``atoms`` (n,) indices into :data:`~diffusekit_molecules.evaluate.ATOM_TYPES` with
``pos`` (n, 3) in Ångström, optionally ``bonds`` (n, n) bond orders and ``charges`` (n,). Without
bonds, the bonds written are the ones of EDM's distance rule (see :mod:`diffusekit_molecules.evaluate`).

Writers take ``molecules`` as any of:

* an iterable of RDKit molecules (with a conformer) and/or tuples ``(atoms, pos)`` /
  ``(atoms, pos, bonds)`` / ``(atoms, pos, bonds, charges)`` (padding -1 entries are dropped);
* one padded batch as a tuple of arrays ``(atoms (B, N), pos (B, N, 3)[, bonds[, charges]])``.

Every write is atomic: the whole file is rendered in memory, written to a temporary file in the
target's directory and renamed over it (:func:`diffusekit.checkpoint.atomic_write`), so a reader
never sees a half-written file.

Molecules RDKit cannot sanitize (a pentavalent carbon, say) are still written, unsanitized, to SDF:
each record carries the property ``diffusekit_sanitized`` (``1`` or ``0``) and, for ``0``,
``diffusekit_sanitize_error`` with RDKit's first line of complaint; their bonds are written as given
(not kekulized).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from diffusekit.checkpoint import atomic_write
from diffusekit.errors import InputError, ShapeError
from rdkit import Chem, rdBase
from rdkit.Chem import rdDepictor
from rdkit.Chem.Draw import rdMolDraw2D

from diffusekit_molecules.evaluate import (
    ATOM_TYPES,
    bond_orders_from_distances,
    build_mol,
    molecule_smiles,
    split_batch,
)

__all__ = ["depict_grid", "read_sdf", "read_xyz", "to_rdkit", "write_sdf", "write_xyz"]

SANITIZED_PROP = "diffusekit_sanitized"
SANITIZE_ERROR_PROP = "diffusekit_sanitize_error"
_TYPE_OF = {symbol: k for k, symbol in enumerate(ATOM_TYPES)}


def to_rdkit(atoms: Any, pos: Any, bonds: Any = None, charges: Any = None, *, sanitize: bool = True) -> Chem.Mol:
    """One molecule as an RDKit ``Mol`` with a 3-D conformer (positions in Ångström).

    Bonds are ``bonds`` when given, else EDM's distance rule. With ``sanitize`` the molecule is
    sanitized when RDKit can; when it cannot, it is returned unsanitized (property cache updated
    leniently) and its property ``diffusekit_sanitized`` is ``"0"`` with the reason in
    ``diffusekit_sanitize_error``; a sanitized one has ``diffusekit_sanitized`` ``"1"``.
    """
    a = np.asarray(atoms.detach().cpu() if hasattr(atoms, "detach") else atoms)
    if a.ndim != 1:
        raise ShapeError(f"to_rdkit takes one molecule: atoms must be (n,), got shape {tuple(a.shape)}")
    ((a, p, b, c),) = split_batch(atoms, pos, bonds, charges)
    orders = bond_orders_from_distances(a, p) if b is None else b
    mol = build_mol(a, orders, pos=p, charges=c).GetMol()
    if sanitize:
        try:
            with rdBase.BlockLogs():
                Chem.SanitizeMol(mol)
            mol.SetProp(SANITIZED_PROP, "1")
        except (ValueError, RuntimeError) as err:
            mol.UpdatePropertyCache(strict=False)
            mol.SetProp(SANITIZED_PROP, "0")
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            mol.SetProp(SANITIZE_ERROR_PROP, reason)
    return mol


def _as_mols(molecules: Any) -> list[Chem.Mol]:
    if isinstance(molecules, tuple) and 2 <= len(molecules) <= 4 and hasattr(molecules[0], "shape"):
        # one padded batch (or one molecule) as a tuple of arrays
        return [to_rdkit(*m) for m in split_batch(*molecules)]
    if isinstance(molecules, (str, bytes, Path)) or not isinstance(molecules, Iterable):
        raise ShapeError(
            "molecules must be an iterable of RDKit Mols or (atoms, pos[, bonds[, charges]]) tuples, "
            f"or one (atoms, pos) batch; got {type(molecules).__name__}"
        )
    out = []
    for k, m in enumerate(molecules):
        if isinstance(m, Chem.Mol):
            out.append(m)
        elif isinstance(m, Sequence) and 2 <= len(m) <= 4:
            out.append(to_rdkit(*m))
        else:
            raise ShapeError(
                f"molecule {k} must be an RDKit Mol or an (atoms, pos[, bonds[, charges]]) tuple, "
                f"got {type(m).__name__}"
            )
    return out


def _is_sanitized(mol: Chem.Mol) -> bool:
    if mol.HasProp(SANITIZED_PROP):
        return mol.GetProp(SANITIZED_PROP) == "1"
    return True  # a Mol made elsewhere: RDKit sanitizes by default


def write_sdf(path: str | Path, molecules: Any) -> None:
    """Write the molecules to one SDF file (RDKit ``SDWriter``), atomically; see the module doc for
    how molecules RDKit cannot sanitize are written."""
    mols = _as_mols(molecules)
    buffer = io.StringIO()
    writer = Chem.SDWriter(buffer)
    for k, mol in enumerate(mols):
        mol = Chem.Mol(mol)
        if not mol.HasProp("_Name"):
            mol.SetProp("_Name", f"diffusekit molecule {k}")
        if not mol.HasProp(SANITIZED_PROP):
            mol.SetProp(SANITIZED_PROP, "1")
        writer.SetKekulize(_is_sanitized(mol))
        writer.write(mol)
    writer.close()
    atomic_write(Path(path), buffer.getvalue().encode())


def write_xyz(path: str | Path, molecules: Any, *, comments: Sequence[str] | None = None, precision: int = 6) -> None:
    """Write the molecules to one multi-molecule XYZ file, atomically: per molecule the atom count,
    a comment line (``comments[k]`` or its index), then ``symbol x y z`` with ``precision`` decimals."""
    mols = _as_mols(molecules)
    if comments is not None and len(comments) != len(mols):
        raise ShapeError(f"comments must hold one line per molecule ({len(mols)}), got {len(comments)}")
    lines: list[str] = []
    for k, mol in enumerate(mols):
        if mol.GetNumConformers() == 0:
            raise ShapeError(f"molecule {k} has no conformer, so no positions to write")
        comment = f"diffusekit molecule {k}" if comments is None else comments[k]
        if "\n" in comment or "\r" in comment:
            raise ShapeError(f"comment {k} must be a single line")
        lines += [str(mol.GetNumAtoms()), comment]
        xyz = mol.GetConformer().GetPositions()
        for atom, (x, y, z) in zip(mol.GetAtoms(), xyz.tolist(), strict=True):
            lines.append(f"{atom.GetSymbol()} {x:.{precision}f} {y:.{precision}f} {z:.{precision}f}")
    atomic_write(Path(path), ("\n".join(lines) + "\n" if lines else "").encode())


def _pad(path: Path, molecules: list[tuple[list[int], list[list[float]]]]) -> tuple[np.ndarray, np.ndarray]:
    n = max((len(a) for a, _ in molecules), default=0)
    atoms = np.full((len(molecules), n), -1, dtype=np.int64)
    pos = np.zeros((len(molecules), n, 3), dtype=np.float64)
    for k, (a, p) in enumerate(molecules):
        atoms[k, : len(a)] = a
        if a:
            pos[k, : len(a)] = p
    return atoms, pos


def _read_bytes(path: str | Path) -> tuple[Path, bytes]:
    path = Path(path)
    try:
        return path, path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None


def _type_of(path: Path, where: str, symbol: str) -> int:
    try:
        return _TYPE_OF[symbol]
    except KeyError:
        raise InputError(f"{path}: {where} has element {symbol!r}, not one of {', '.join(ATOM_TYPES)}") from None


def read_sdf(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The molecules of an SDF file as a padded batch: ``atoms`` (B, N) int64 (-1 padding) and ``pos``
    (B, N, 3) float64 in Ångström (zeros at padding). Hydrogens are kept as written; bonds are not read.
    A record that is not a MOL block raises :class:`~diffusekit.errors.InputError` naming it."""
    path, data = _read_bytes(path)
    supplier = Chem.ForwardSDMolSupplier(io.BytesIO(data), sanitize=False, removeHs=False, strictParsing=True)
    molecules = []
    with rdBase.BlockLogs():
        for k, mol in enumerate(supplier):
            where = f"molecule {k + 1}"
            if mol is None:
                raise InputError(f"{path}: {where} is not a valid MOL block")
            if mol.GetNumAtoms() and mol.GetNumConformers() == 0:
                raise InputError(f"{path}: {where} has no coordinates")
            atoms = [_type_of(path, where, atom.GetSymbol()) for atom in mol.GetAtoms()]
            pos = mol.GetConformer().GetPositions().tolist() if atoms else []
            molecules.append((atoms, pos))
    if not molecules and data.strip():
        raise InputError(f"{path}: not an SDF file (no MOL block found)")
    return _pad(path, molecules)


def read_xyz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The molecules of a (multi-molecule) XYZ file as a padded batch, like :func:`read_sdf`."""
    path, data = _read_bytes(path)
    try:
        lines = data.decode().splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not an XYZ file (not text)") from None
    molecules = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():  # blank lines between molecules and at the end
            i += 1
            continue
        try:
            n = int(lines[i].strip())
            if n < 0:
                raise ValueError
        except ValueError:
            raise InputError(f"{path}: line {i + 1} should be an atom count, got {lines[i].strip()[:40]!r}") from None
        if i + 1 + n >= len(lines):
            raise InputError(f"{path}: line {i + 1} announces {n} atoms but the file ends before them")
        atoms, pos = [], []
        for j in range(i + 2, i + 2 + n):
            fields = lines[j].split()
            if len(fields) < 4:
                raise InputError(f"{path}: line {j + 1} should be 'symbol x y z', got {lines[j].strip()[:40]!r}")
            try:
                xyz = [float(v) for v in fields[1:4]]
            except ValueError:
                raise InputError(f"{path}: line {j + 1} has a coordinate that is not a number") from None
            if not all(math.isfinite(v) for v in xyz):
                raise InputError(f"{path}: line {j + 1} has a non-finite coordinate")
            atoms.append(_type_of(path, f"line {j + 1}", fields[0]))
            pos.append(xyz)
        molecules.append((atoms, pos))
        i += 2 + n
    return _pad(path, molecules)


def _legend(mol: Chem.Mol) -> str:
    copy = Chem.Mol(mol)
    with rdBase.BlockLogs():
        smiles = molecule_smiles(copy) if _is_sanitized(mol) else None
    return "invalid" if smiles is None else smiles


def _for_drawing(mol: Chem.Mol) -> Chem.Mol:
    mol = Chem.Mol(mol)
    with rdBase.BlockLogs():
        if _is_sanitized(mol):
            try:
                Chem.SanitizeMol(mol)
                mol = Chem.RemoveHs(mol)
            except (ValueError, RuntimeError):
                mol.UpdatePropertyCache(strict=False)
        else:
            mol.UpdatePropertyCache(strict=False)
        mol.RemoveAllConformers()
        rdDepictor.Compute2DCoords(mol)
        try:
            mol = rdMolDraw2D.PrepareMolForDrawing(mol, kekulize=_is_sanitized(mol))
        except (ValueError, RuntimeError):
            pass
    return mol


def depict_grid(
    path: str | Path,
    molecules: Any,
    *,
    per_row: int = 4,
    size: tuple[int, int] = (300, 300),
    legends: Sequence[str] | None = None,
) -> None:
    """Write a PNG grid of 2-D depictions (RDKit's Cairo drawer, no Pillow needed), atomically.

    Each panel's legend is ``legends[k]`` or, by default, the molecule's SMILES (its largest fragment,
    hydrogens implicit) or ``invalid`` when RDKit cannot sanitize it; valid molecules are drawn without
    their hydrogens, invalid ones as they are.
    """
    mols = _as_mols(molecules)
    if not mols:
        raise ShapeError("depict_grid needs at least one molecule")
    if per_row < 1:
        raise ShapeError(f"per_row must be at least 1, got {per_row}")
    if legends is not None and len(legends) != len(mols):
        raise ShapeError(f"legends must hold one entry per molecule ({len(mols)}), got {len(legends)}")
    legends = [_legend(m) for m in mols] if legends is None else [str(x) for x in legends]
    cols = min(per_row, len(mols))
    rows = -(-len(mols) // cols)
    drawer = rdMolDraw2D.MolDraw2DCairo(cols * size[0], rows * size[1], size[0], size[1])
    drawer.drawOptions().prepareMolsBeforeDrawing = False
    drawer.DrawMolecules([_for_drawing(m) for m in mols], legends=legends)
    drawer.FinishDrawing()
    atomic_write(Path(path), drawer.GetDrawingText())
