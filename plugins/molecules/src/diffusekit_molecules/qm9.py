"""QM9: 130,831 small organic molecules with 3-D geometries and quantum-chemical properties.

QM9 (Ramakrishnan, Dral, Rupp and von Lilienfeld, "Quantum chemistry structures and properties
of 134 kilo molecules", Scientific Data 1, 140022, 2014, doi:10.1038/sdata.2014.22) holds every
molecule of GDB-17 with up to nine heavy atoms (C, N, O, F), hydrogens added, relaxed with
B3LYP/6-31G(2df,p): at most 29 atoms. The 3,054 molecules whose relaxed structure failed the
consistency check are not in the copy read here, leaving 130,831.

The data come from the CSV files of the PyPI package ``qm9pack`` (pinned to 1.0.3). Its own
``import qm9pack`` fails on current setuptools (it imports ``pkg_resources``), so the files are
found through :mod:`importlib.metadata` and parsed here; the parsed arrays are cached on first use
in ``~/.cache/diffusekit/qm9/`` (or in ``$DIFFUSEKIT_QM9``).

Conventions of :class:`QM9` (``M`` molecules, padded to :data:`MAX_ATOMS` = 29 atoms):

- ``num_atoms`` ``(M,)`` int64, hydrogens included.
- ``atoms`` ``(M, 29)`` int64: index into :data:`ATOM_TYPES` ``("H", "C", "N", "O", "F")``, padding -1.
- ``pos`` ``(M, 29, 3)`` float32 in Ångström, as relaxed (not centred), padding rows 0.
- ``charges`` ``(M, 29)`` int64 formal charges, padding 0, read from the CSV's SMILES as RDKit
  sanitizes it. That is the GDB-17 SMILES the geometry was generated from, and the coordinates list
  its atoms in its order, each bracket atom's hydrogens right after it (``[NH3+]`` -> N H H H), the
  other hydrogens last: so the SMILES' charge of atom ``i`` is that of coordinate ``i``. This holds
  for all but 6 molecules (e.g. ``dsgdb9nsd_000024``, ``C#CC#N``), none of them charged, and parsing
  checks it. 580 molecules carry charges: 443 zwitterions written so (``[NH3+]CC([O-])=O``) and 137
  more nitro compounds whose SMILES has a pentavalent N (``O=N(=O)C...``), which sanitizing rewrites
  as ``[N+](=O)[O-]``; every net charge is 0. The SMILES states the charges, while bond perception
  (:func:`bonds`) has to guess them from the geometry: on zwitterions it returns other resonance or
  charge-separated forms.
- ``smiles``: the CSV's SMILES (Kekulé form, no stereo).
- ``properties``: float64 arrays in the units of the QM9 paper, see :data:`PROPERTY_UNITS` (energies
  in Hartree: EDM's property tables quote homo, lumo and gap in meV).
- ``index``: the QM9 molecule number (1..133,885, the ``dsgdb9nsd_NNNNNN`` of the original files).

Splits follow EDM (Hoogeboom, Satorras, Vignac and Welling, "Equivariant Diffusion for Molecule
Generation in 3D", ICML 2022): 100,000 train, 17,748 validation, 13,083 test molecules drawn by a
fixed-seed permutation. The permutation is ``numpy.random.default_rng(seed)``, so the sizes are
EDM's but the members are not (EDM used the legacy ``np.random.seed(0)`` on its own ordering).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path

import attrs
import numpy as np
from diffusekit.checkpoint import atomic_write
from diffusekit.errors import DiffusekitError, InputError

from diffusekit_molecules.evaluate import ATOM_TYPES

__all__ = [
    "ATOM_TYPES",
    "DEFAULT_SEED",
    "MAX_ATOMS",
    "NUM_MOLECULES",
    "PROPERTY_UNITS",
    "SPLIT_SIZES",
    "BondPerceptionError",
    "BondTable",
    "QM9",
    "QM9FormatError",
    "atom_count_histogram",
    "bond_matrices",
    "bonds",
    "cache_dir",
    "canonical_smiles",
    "load_qm9",
    "mol_from_xyz",
    "parse_coordinates",
    "parse_qm9_csv",
    "perceive_bonds",
    "qm9_csv_files",
    "split_indices",
]

ATOMIC_NUMBERS: tuple[int, ...] = (1, 6, 7, 8, 9)
MAX_ATOMS = 29
NUM_MOLECULES = 130_831
SPLIT_SIZES: dict[str, int] = {"train": 100_000, "valid": 17_748, "test": 13_083}
DEFAULT_SEED = 0

# property name -> (CSV column, unit); units as in Ramakrishnan et al. 2014, Table 3
PROPERTY_UNITS: dict[str, tuple[str, str]] = {
    "A": ("RotA_GHz", "GHz"),
    "B": ("RotB_GHz", "GHz"),
    "C": ("RotC_GHz", "GHz"),
    "mu": ("Dipole_debye", "D"),
    "alpha": ("Polarizability_bohr3", "bohr^3"),
    "homo": ("HOMO_au", "Ha"),
    "lumo": ("LUMO_au", "Ha"),
    "gap": ("HOMO_LUMO_gap_au", "Ha"),
    "r2": ("R2_bohr2", "bohr^2"),
    "zpve": ("ZPVE_au", "Ha"),
    "U0": ("InternalEnergy_0K_au", "Ha"),
    "U": ("InternalEnergy_298K_au", "Ha"),
    "H": ("Enthalphy_298K_au", "Ha"),  # sic: the CSV's spelling
    "G": ("GibbsFreeEnergy_298K_au", "Ha"),
    "Cv": ("Heatcapacity_Cv_cal_mol_K", "cal/(mol K)"),
}

_CSV_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
_COLUMNS = ("XYZ_file", "Index", "SMILES", "N_atoms", "Stoichiometry", "Elements", "XYZ_Ang")
# bump when the cached arrays change meaning; old caches are then ignored, not misread
_CACHE_FORMAT = 2
_ENV = "DIFFUSEKIT_QM9"


class QM9FormatError(InputError):
    """A row of a QM9 CSV file is malformed; the one-line message names the file, row and molecule."""


class BondPerceptionError(DiffusekitError, ValueError):
    """RDKit could not assign bond orders to a geometry; the message says why."""


# ---------------------------------------------------------------------------------------------
# coordinate strings: "[[x,y,z],[x,y,z],...]" with numbers such as "0.", "1.", "-5.612E-7"

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TRIPLE = rf"\[\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\]"
_COORDS_RE = re.compile(rf"\s*\[\s*(?:{_TRIPLE}(?:\s*,\s*{_TRIPLE})*)?\s*\]\s*")
_NUM_RE = re.compile(_NUM)
_BRACKETS = str.maketrans("[],", "   ")
_ELEMENTS_RE = re.compile(r"\s*\[\s*(?:'([A-Z][a-z]?)'(?:\s*,\s*'([A-Z][a-z]?)')*)?\s*\]\s*")


def _shorten(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _coords_problem(text: str) -> str:
    """Say what is wrong with a coordinate string that failed the grammar (the slow path)."""
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        return f"XYZ_Ang is not a bracketed list of [x,y,z] triples: {_shorten(text)}"
    if body.count("[") != body.count("]"):
        return f"XYZ_Ang has unbalanced brackets: {_shorten(text)}"
    for k, group in enumerate(re.findall(r"\[([^\[\]]*)\]", body[1:-1])):
        parts = [p.strip() for p in group.split(",")]
        for p in parts:
            if not _NUM_RE.fullmatch(p):
                return f"XYZ_Ang atom {k}: {p!r} is not a number"
        if len(parts) != 3:
            return f"XYZ_Ang atom {k} has {len(parts)} coordinates, not 3"
    return f"XYZ_Ang brackets or commas are malformed: {_shorten(text)}"


def parse_coordinates(text: str, num_atoms: int | None = None, *, where: str = "") -> np.ndarray:
    """Parse ``"[[x,y,z],...]"`` (QM9's ``XYZ_Ang`` column) into an ``(n, 3)`` float64 array.

    The column is not JSON (``0.`` and ``1.`` appear, as does ``-5.612E-7``), so it is checked
    against a grammar of bracketed numeric triples before the numbers are read. Raises
    :class:`QM9FormatError` (its message prefixed by ``where``) on anything else, and when
    ``num_atoms`` is given and the count differs.
    """
    prefix = f"{where}: " if where else ""
    if not _COORDS_RE.fullmatch(text):
        raise QM9FormatError(prefix + _coords_problem(text))
    # the grammar admits only numbers between the brackets and commas
    xyz = np.array(text.translate(_BRACKETS).split(), dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(xyz).all():  # e.g. 1e999
        raise QM9FormatError(prefix + "XYZ_Ang holds a non-finite coordinate")
    if num_atoms is not None and len(xyz) != num_atoms:
        raise QM9FormatError(prefix + f"XYZ_Ang has {len(xyz)} atoms but N_atoms says {num_atoms}")
    return xyz


def _parse_elements(text: str, where: str) -> list[str]:
    if not _ELEMENTS_RE.fullmatch(text):
        raise QM9FormatError(f"{where}: Elements is not a list of quoted symbols: {_shorten(text)}")
    return re.findall(r"'([A-Z][a-z]?)'", text)


# ---------------------------------------------------------------------------------------------
# the data


@attrs.frozen(eq=False)
class QM9:
    """Parsed QM9 molecules, padded to :data:`MAX_ATOMS` (conventions in the module docstring)."""

    num_atoms: np.ndarray
    atoms: np.ndarray
    pos: np.ndarray
    charges: np.ndarray
    smiles: list[str]
    index: np.ndarray
    properties: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.num_atoms)

    def molecule(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(atoms (n,), pos (n, 3), charges (n,))`` of molecule ``i``, padding removed."""
        n = int(self.num_atoms[i])
        return self.atoms[i, :n], self.pos[i, :n], self.charges[i, :n]

    def fingerprint(self) -> str:
        """A short hash of the molecules (atoms and positions), naming caches derived from them."""
        h = hashlib.sha1()
        for a in (self.num_atoms, self.atoms, self.pos):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def qm9_csv_files() -> list[Path]:
    """The CSV files of the installed ``qm9pack``, found without importing it (its import is broken)."""
    try:
        dist = metadata.distribution("qm9pack")
    except metadata.PackageNotFoundError as e:
        raise InputError("the QM9 data need the package qm9pack==1.0.3: pip install qm9pack==1.0.3") from e
    paths = [Path(str(dist.locate_file(f"qm9pack/data/{name}"))) for name in _CSV_FILES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"qm9pack {dist.version} lacks {', '.join(missing)} (expected version 1.0.3)")
    return paths


def parse_qm9_csv(paths: Sequence[Path | str]) -> QM9:
    """Parse QM9 CSV files (qm9pack's format) into a :class:`QM9`, checking every row.

    Each row's coordinates must match ``N_atoms``, its ``Elements`` and ``Stoichiometry``; a charged
    SMILES must list the atoms in coordinate order (the correspondence that carries its formal charges
    over to the atoms, see the module docstring).
    """
    import csv

    from rdkit import Chem

    type_of = {s: i for i, s in enumerate(ATOM_TYPES)}
    rows_atoms: list[list[int]] = []
    rows_pos: list[np.ndarray] = []
    rows_charges: list[list[int]] = []
    smiles: list[str] = []
    index: list[int] = []
    props: dict[str, list[float]] = {k: [] for k in PROPERTY_UNITS}
    for path in map(Path, paths):
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise QM9FormatError(f"{path.name}: the file is empty")
            need = list(_COLUMNS) + [col for col, _ in PROPERTY_UNITS.values()]
            lacking = [c for c in need if c not in header]
            if lacking:
                raise QM9FormatError(f"{path.name}: the header lacks the columns {', '.join(lacking)}")
            col = {c: header.index(c) for c in need}
            for r, row in enumerate(reader, start=1):
                name = row[col["XYZ_file"]] if len(row) > col["XYZ_file"] else "?"
                where = f"{path.name} row {r} ({name})"
                if len(row) != len(header):
                    raise QM9FormatError(f"{where}: {len(row)} fields, the header has {len(header)}")
                try:
                    n = int(row[col["N_atoms"]])
                    idx = int(row[col["Index"]])
                except ValueError as e:
                    raise QM9FormatError(f"{where}: N_atoms or Index is not an integer") from e
                if not 1 <= n <= MAX_ATOMS:
                    raise QM9FormatError(f"{where}: N_atoms = {n} is outside 1..{MAX_ATOMS}")
                elements = _parse_elements(row[col["Elements"]], where)
                if len(elements) != n or any(e not in type_of for e in elements):
                    raise QM9FormatError(f"{where}: Elements {elements} do not fit N_atoms = {n} and {ATOM_TYPES}")
                types = [type_of[e] for e in elements]
                stoich = row[col["Stoichiometry"]].strip("[] ").split(",")
                counts = [types.count(t) for t in range(len(ATOM_TYPES))]
                if [s.strip() for s in stoich] != [str(c) for c in counts]:
                    raise QM9FormatError(f"{where}: Stoichiometry {row[col['Stoichiometry']]} disagrees with Elements")
                xyz = parse_coordinates(row[col["XYZ_Ang"]], n, where=where)
                smi = row[col["SMILES"]]
                mol = Chem.MolFromSmiles(smi, sanitize=False)  # sanitized below, after reading the bracket hydrogens
                if mol is None:
                    raise QM9FormatError(f"{where}: RDKit cannot read the SMILES {smi!r}")
                # coordinate order = SMILES order, a bracket atom's hydrogens right after it ([NH3+]),
                # the other hydrogens last; true for all but 6 molecules, none of them charged
                h = [a.GetNumExplicitHs() for a in mol.GetAtoms()]  # bracket hydrogens, as written
                expected = [t for a in mol.GetAtoms() for t in [type_of.get(a.GetSymbol(), -1)] + [0] * h[a.GetIdx()]]
                in_order = expected == types[: len(expected)] and all(t == 0 for t in types[len(expected) :])
                # sanitizing rewrites the pentavalent nitro N of 139 SMILES (O=N(=O)C...) as [N+](=O)[O-]
                try:
                    Chem.SanitizeMol(mol)
                except Exception as e:  # RDKit's own exception types
                    raise QM9FormatError(
                        f"{where}: RDKit rejects the SMILES {smi!r}: {' '.join(str(e).split())}"
                    ) from e
                row_charges = [c for a in mol.GetAtoms() for c in [a.GetFormalCharge()] + [0] * h[a.GetIdx()]]
                if not in_order and any(row_charges):
                    raise QM9FormatError(
                        f"{where}: the charged SMILES {smi!r} does not list the atoms in coordinate order"
                    )
                rows_charges.append(row_charges if in_order else [])
                for key, (column, _) in PROPERTY_UNITS.items():
                    try:
                        props[key].append(float(row[col[column]]))
                    except ValueError as e:
                        raise QM9FormatError(f"{where}: {column} = {row[col[column]]!r} is not a number") from e
                rows_atoms.append(types)
                rows_pos.append(xyz)
                smiles.append(smi)
                index.append(idx)
    m = len(rows_atoms)
    num_atoms = np.array([len(t) for t in rows_atoms], dtype=np.int64)
    atoms = np.full((m, MAX_ATOMS), -1, dtype=np.int64)
    pos = np.zeros((m, MAX_ATOMS, 3), dtype=np.float32)
    charges = np.zeros((m, MAX_ATOMS), dtype=np.int64)
    for i in range(m):
        atoms[i, : num_atoms[i]] = rows_atoms[i]
        pos[i, : num_atoms[i]] = rows_pos[i]
        charges[i, : len(rows_charges[i])] = rows_charges[i]
    return QM9(
        num_atoms=num_atoms,
        atoms=atoms,
        pos=pos,
        charges=charges,
        smiles=smiles,
        index=np.array(index, dtype=np.int64),
        properties={k: np.array(v, dtype=np.float64) for k, v in props.items()},
    )


# ---------------------------------------------------------------------------------------------
# the cache


def cache_dir() -> Path:
    """``$DIFFUSEKIT_QM9`` if set, else ``~/.cache/diffusekit/qm9``."""
    env = os.environ.get(_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diffusekit" / "qm9"


def _recorded_hashes() -> dict[Path, str]:
    """sha256 of qm9pack's installed files, as its wheel's RECORD states them (empty if unknown)."""
    try:
        dist = metadata.distribution("qm9pack")
    except metadata.PackageNotFoundError:
        return {}
    out: dict[Path, str] = {}
    for f in dist.files or ():
        if f.hash is not None and f.hash.mode == "sha256":
            out[Path(str(dist.locate_file(f))).resolve()] = f.hash.value
    return out


def _sources_key(paths: Sequence[Path]) -> str:
    # A file installed from qm9pack's wheel is named by its name, size and recorded content hash, so
    # every virtual environment shares one cache; any other file by its path, size and mtime, so an
    # edited source gets a new cache file instead of a stale one.
    recorded = _recorded_hashes()
    h = hashlib.sha1(f"format={_CACHE_FORMAT}".encode())
    for p in paths:
        st = p.stat()
        digest = recorded.get(p.resolve())
        if digest is not None:
            h.update(f"|{p.name}|{st.st_size}|sha256={digest}".encode())
        else:
            h.update(f"|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` so that readers see either no file or a whole one."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def _to_arrays(data: QM9) -> dict[str, np.ndarray]:
    # compact dtypes on disk (about 60 MB instead of 110); load_qm9 widens them again
    out = {
        "num_atoms": data.num_atoms.astype(np.int8),
        "atoms": data.atoms.astype(np.int8),
        "pos": data.pos,
        "charges": data.charges.astype(np.int8),
        "index": data.index,
        "smiles": np.frombuffer("\n".join(data.smiles).encode(), dtype=np.uint8),
    }
    out.update({f"prop_{k}": v for k, v in data.properties.items()})
    return out


def _from_arrays(z: dict[str, np.ndarray]) -> QM9:
    text = z["smiles"].tobytes().decode()
    return QM9(
        num_atoms=z["num_atoms"].astype(np.int64),
        atoms=z["atoms"].astype(np.int64),
        pos=z["pos"].astype(np.float32),
        charges=z["charges"].astype(np.int64),
        smiles=text.split("\n") if text else [],
        index=z["index"].astype(np.int64),
        properties={k[5:]: z[k].astype(np.float64) for k in z if k.startswith("prop_")},
    )


def load_qm9(sources: Sequence[Path | str] | None = None, *, directory: Path | str | None = None) -> QM9:
    """Load QM9, parsing the CSV files only when no cache of them exists yet.

    ``sources`` defaults to qm9pack's files (:func:`qm9_csv_files`) and ``directory`` to
    :func:`cache_dir`. The cache file is named after the sources' names, sizes and content hashes as
    qm9pack's wheel records them (so every environment with qm9pack 1.0.3 shares one cache), or, for
    files of other origin, after their paths, sizes and modification times.
    """
    paths = [Path(p) for p in sources] if sources is not None else qm9_csv_files()
    target = Path(directory) if directory is not None else cache_dir()
    cached = target / f"qm9-{_sources_key(paths)}.npz"
    if cached.is_file():
        try:
            with np.load(cached) as z:
                return _from_arrays({k: z[k] for k in z.files})
        except (OSError, ValueError, KeyError, EOFError):  # damaged by hand or disk: parse again
            pass
    data = parse_qm9_csv(paths)
    _atomic_savez(cached, _to_arrays(data))
    return data


# ---------------------------------------------------------------------------------------------
# splits and sizes


def split_indices(
    num_molecules: int = NUM_MOLECULES, seed: int = DEFAULT_SEED, sizes: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """EDM's train/valid/test split: disjoint sorted int64 index arrays from one fixed-seed permutation.

    The default sizes (100,000 / 17,748 / 13,083, Hoogeboom et al. 2022) must add up to ``num_molecules``.
    """
    sizes = dict(SPLIT_SIZES if sizes is None else sizes)
    if sum(sizes.values()) != num_molecules:
        raise ValueError(f"split sizes {sizes} add up to {sum(sizes.values())}, not {num_molecules} molecules")
    perm = np.random.default_rng(seed).permutation(num_molecules)
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = np.sort(perm[start : start + size]).astype(np.int64)
        start += size
    return out


def atom_count_histogram(data: QM9, indices: np.ndarray | None = None) -> np.ndarray:
    """Counts of molecules by atom count (hydrogens included), ``(MAX_ATOMS + 1,)`` int64.

    ``indices`` defaults to the training split of :func:`split_indices`; entry ``n`` is how many of
    those molecules have ``n`` atoms (used to draw molecule sizes when sampling).
    """
    if indices is None:
        indices = split_indices(len(data))["train"]
    return np.bincount(data.num_atoms[indices], minlength=MAX_ATOMS + 1).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# bond orders


def _unpad(pos: np.ndarray, atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    atoms = np.asarray(atoms).astype(np.int64).reshape(-1)
    pos = np.asarray(pos, dtype=np.float64).reshape(-1, 3)
    if len(pos) != len(atoms):
        raise ValueError(f"{len(pos)} positions for {len(atoms)} atoms")
    n = int((atoms >= 0).sum())
    if (atoms[:n] < 0).any() or (atoms[n:] >= 0).any():
        raise ValueError("padding (-1) must come after all atoms")
    if (atoms[:n] >= len(ATOM_TYPES)).any():
        raise ValueError(f"atom types must index {ATOM_TYPES}")
    return pos[:n], atoms[:n]


def mol_from_xyz(pos: np.ndarray, atoms: np.ndarray):
    """An RDKit ``Mol`` with the atoms (type indices, padding -1 dropped) and one conformer, no bonds."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    pos, atoms = _unpad(pos, atoms)
    mol = Chem.RWMol()
    for t in atoms:
        atom = Chem.Atom(ATOMIC_NUMBERS[t])
        atom.SetNoImplicit(True)  # every hydrogen is in the geometry: none may be made up to fill valences
        mol.AddAtom(atom)
    conf = Chem.Conformer(len(atoms))
    for i, (x, y, z) in enumerate(pos):
        conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
    mol.AddConformer(conf, assignId=True)
    return mol.GetMol()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence file descriptors 1 and 2: YAeHMOP, RDKit's Hückel code, warns about every O-H bond."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def perceive_bonds(pos: np.ndarray, atoms: np.ndarray, charge: int = 0, *, allow_radicals: bool = False):
    """The RDKit ``Mol`` of :func:`mol_from_xyz` with bonds and formal charges perceived (see :func:`bonds`)."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    mol = Chem.Mol(mol_from_xyz(pos, atoms))
    try:
        # Hückel connectivity is more reliable than covalent radii for strained and conjugated rings
        with _quiet():
            rdDetermineBonds.DetermineBonds(mol, charge=int(charge), useHueckel=True)
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception as e:  # RDKit raises ValueError and its own RuntimeError types
        reason = " ".join(str(e).split()) or type(e).__name__
        raise BondPerceptionError(f"RDKit DetermineBonds failed: {reason}") from e
    # DetermineBonds accepts open shells and skips atoms without neighbours; no QM9 molecule has
    # unpaired electrons, so count them (valence deficit, hydrogens being all explicit) and refuse them
    Chem.AssignRadicals(mol)
    radicals = [a.GetIdx() for a in mol.GetAtoms() if a.GetNumRadicalElectrons()]
    if radicals and not allow_radicals:
        raise BondPerceptionError(f"no closed-shell bond orders: atoms {radicals} keep unpaired electrons")
    return mol


def bonds(
    pos: np.ndarray, atoms: np.ndarray, charge: int = 0, *, allow_radicals: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Bond orders and formal charges of one molecule, perceived from its 3-D geometry by RDKit.

    ``pos`` ``(n, 3)`` in Ångström and ``atoms`` ``(n,)`` type indices (trailing -1 padding is
    dropped); ``charge`` is the molecule's net charge (0 for all of QM9). Uses
    ``rdDetermineBonds.DetermineBonds(useHueckel=True)`` and kekulizes, so orders are 0 (no bond),
    1, 2 or 3. Returns ``(orders (n, n) int64 symmetric, formal_charges (n,) int64)``; raises
    :class:`BondPerceptionError` with RDKit's reason when no consistent assignment is found, or
    when atoms keep unpaired electrons (unless ``allow_radicals``).
    """
    mol = perceive_bonds(pos, atoms, charge, allow_radicals=allow_radicals)
    n = mol.GetNumAtoms()
    orders = np.zeros((n, n), dtype=np.int64)
    for b in mol.GetBonds():
        i, j, order = b.GetBeginAtomIdx(), b.GetEndAtomIdx(), b.GetBondTypeAsDouble()
        if order not in (1.0, 2.0, 3.0):
            raise BondPerceptionError(f"RDKit left a bond of order {order} between atoms {i} and {j}")
        orders[i, j] = orders[j, i] = int(order)
    formal = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=np.int64)
    return orders, formal


def canonical_smiles(smiles_or_mol, *, stereo: bool = False) -> str:
    """RDKit canonical SMILES (hydrogens implicit, stereo dropped unless ``stereo``) of a SMILES or Mol."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles_or_mol) if isinstance(smiles_or_mol, str) else Chem.Mol(smiles_or_mol)
    if mol is None:
        raise ValueError(f"RDKit cannot read the SMILES {smiles_or_mol!r}")
    if not stereo:
        # first: RemoveHs keeps a hydrogen that defines C=N stereo, which would print as [H]N=C
        Chem.RemoveStereochemistry(mol)
    mol = Chem.RemoveHs(mol)
    return Chem.MolToSmiles(mol, isomericSmiles=stereo)


@attrs.frozen(eq=False)
class BondTable:
    """Bond orders of a set of molecules, padded to :data:`MAX_ATOMS`.

    ``indices`` ``(K,)`` molecule indices; ``orders`` ``(K, 29, 29)`` int8 (0 = no bond, and all 0
    where perception failed); ``formal_charges`` ``(K, 29)`` int8 as assigned by the perception;
    ``ok`` ``(K,)`` bool; ``reasons``: per molecule ``""`` or why perception failed.
    """

    indices: np.ndarray
    orders: np.ndarray
    formal_charges: np.ndarray
    ok: np.ndarray
    reasons: list[str]


def bond_matrices(
    data: QM9, indices: Iterable[int], *, directory: Path | str | None = None, use_cache: bool = True
) -> BondTable:
    """:func:`bonds` for molecules ``indices`` of ``data`` (net charge 0), cached on disk.

    Slow (milliseconds per molecule; a progress bar on a terminal from 1,000 molecules): the
    result is stored in ``directory`` (default :func:`cache_dir`) under a name made of the data's
    fingerprint and the indices, and read back on the next call with the same data and indices.
    """
    idx = np.asarray(list(indices), dtype=np.int64)
    key = hashlib.sha1(f"{_CACHE_FORMAT}|{data.fingerprint()}|".encode() + idx.tobytes()).hexdigest()[:16]
    cached = (Path(directory) if directory is not None else cache_dir()) / f"bonds-{key}.npz"
    if use_cache and cached.is_file():
        with np.load(cached) as z:
            text = z["reasons"].tobytes().decode()
            return BondTable(
                indices=z["indices"],
                orders=z["orders"],
                formal_charges=z["formal_charges"],
                ok=z["ok"],
                reasons=text.split("\n") if len(idx) else [],
            )
    k = len(idx)
    orders = np.zeros((k, MAX_ATOMS, MAX_ATOMS), dtype=np.int8)
    formal = np.zeros((k, MAX_ATOMS), dtype=np.int8)
    ok = np.zeros(k, dtype=bool)
    reasons = [""] * k
    rows: Iterable[tuple[int, np.int64]] = enumerate(idx)
    if k >= 1000:  # a whole split takes a core minutes: show it on a terminal (disable=None)
        from tqdm.auto import tqdm

        rows = tqdm(rows, total=k, desc="RDKit bonds, once (cached)", unit="mol", disable=None, mininterval=2)
    for r, i in rows:
        atoms, pos, _ = data.molecule(int(i))
        try:
            o, c = bonds(pos, atoms, charge=0)
        except BondPerceptionError as e:
            reasons[r] = str(e).replace("\n", " ")
            continue
        n = len(atoms)
        orders[r, :n, :n] = o
        formal[r, :n] = c
        ok[r] = True
    table = BondTable(indices=idx, orders=orders, formal_charges=formal, ok=ok, reasons=reasons)
    if use_cache:
        _atomic_savez(
            cached,
            {
                "indices": idx,
                "orders": orders,
                "formal_charges": formal,
                "ok": ok,
                "reasons": np.frombuffer("\n".join(reasons).encode(), dtype=np.uint8),
            },
        )
    return table
