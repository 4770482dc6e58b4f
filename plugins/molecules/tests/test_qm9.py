"""QM9 data layer: parsing, cache, splits, atom order and RDKit bond perception.

The real data are parsed once (tens of seconds) into the user's cache and read from there by a
module-scoped fixture; only the cache-behaviour tests use a small synthetic CSV in a tmp dir.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from diffusekit_molecules import qm9
from hypothesis import given
from hypothesis import strategies as st
from rdkit import Chem
from rdkit.Chem import rdDetermineBonds


@pytest.fixture(scope="module")
def data() -> qm9.QM9:
    return qm9.load_qm9()


# ------------------------------------------------------------------------------------------ layout


def test_arrays_shapes_dtypes_and_padding(data):
    m = qm9.NUM_MOLECULES
    assert len(data) == m and len(data.smiles) == m
    assert data.num_atoms.shape == (m,) and data.num_atoms.dtype == np.int64
    assert data.atoms.shape == (m, qm9.MAX_ATOMS) and data.atoms.dtype == np.int64
    assert data.pos.shape == (m, qm9.MAX_ATOMS, 3) and data.pos.dtype == np.float32
    assert data.charges.shape == (m, qm9.MAX_ATOMS) and data.charges.dtype == np.int64
    real = np.arange(qm9.MAX_ATOMS)[None, :] < data.num_atoms[:, None]
    assert ((data.atoms >= 0) == real).all()  # -1 exactly on the padding
    assert (data.atoms[~real] == -1).all() and (data.atoms < len(qm9.ATOM_TYPES)).all()
    assert (data.pos[~real] == 0).all() and (data.charges[~real] == 0).all()
    assert data.num_atoms.min() >= 3 and data.num_atoms.max() == qm9.MAX_ATOMS
    assert np.unique(data.index).size == m and data.index.min() == 1 and data.index.max() <= 133_885
    # every molecule is neutral; hydrogens are never charged
    assert (data.charges.sum(1) == 0).all() and (data.charges[data.atoms == 0] == 0).all()
    assert int((data.charges != 0).any(1).sum()) == 443 + 137  # zwitterions + other nitro compounds
    for key in ("alpha", "gap", "homo", "lumo", "mu", "Cv"):
        assert data.properties[key].shape == (m,) and np.isfinite(data.properties[key]).all()
    assert np.allclose(data.properties["gap"], data.properties["lumo"] - data.properties["homo"], atol=2e-4)


def test_first_molecule_is_methane(data):
    atoms, pos, charges = data.molecule(0)
    assert data.smiles[0] == "C" and data.index[0] == 1
    assert [qm9.ATOM_TYPES[a] for a in atoms] == ["C", "H", "H", "H", "H"]
    d = np.linalg.norm(pos[1:] - pos[0], axis=1)
    assert np.allclose(d, 1.09, atol=0.01)  # C-H bond length in Ångström, not Bohr
    assert data.properties["Cv"][0] == pytest.approx(6.469)


# ----------------------------------------------------------------------------- atom order, SMILES


def _smiles_order(smiles: str) -> tuple[list[int], list[int]]:
    """Coordinate position of each SMILES atom under the documented rule, and the SMILES' total degrees."""
    raw = Chem.MolFromSmiles(smiles, sanitize=False)  # bracket hydrogens as written
    positions, k = [], 0
    for a in raw.GetAtoms():
        positions.append(k)
        k += 1 + a.GetNumExplicitHs()
    return positions, [a.GetTotalDegree() for a in Chem.MolFromSmiles(smiles).GetAtoms()]


def test_coordinates_follow_smiles_atom_order(data):
    """Each SMILES atom sits at the claimed coordinate index with the same element and degree, so the
    SMILES' formal charges land on the right atoms. Degrees come from the geometry alone (Hückel
    connectivity: covalent radii bond the bridgeheads of bicyclo[1.1.1]pentanes), independent of the parse. All charged molecules plus a random sample of the rest."""
    rng = np.random.default_rng(7)
    charged = np.flatnonzero((data.charges != 0).any(1))
    sample = np.concatenate([charged, rng.choice(len(data), 150, replace=False)])
    out_of_order = {24, 486, 51932, 52466, 59818, 133487}  # the 6 documented exceptions (QM9 numbers)
    for i in sample:
        if int(data.index[i]) in out_of_order:
            continue
        atoms, pos, charges = data.molecule(i)
        geo = qm9.mol_from_xyz(pos, atoms)
        with qm9._quiet():  # YAeHMOP warns about every O-H bond
            rdDetermineBonds.DetermineConnectivity(geo, useHueckel=True, charge=0)
        ref = Chem.MolFromSmiles(data.smiles[i])
        positions, degrees = _smiles_order(data.smiles[i])
        for a, p, deg in zip(ref.GetAtoms(), positions, degrees, strict=True):
            assert qm9.ATOM_TYPES[atoms[p]] == a.GetSymbol(), (data.smiles[i], p)
            assert geo.GetAtomWithIdx(p).GetDegree() == deg, (data.smiles[i], p)
            assert charges[p] == a.GetFormalCharge(), (data.smiles[i], p)


def _skeleton(mol) -> str:
    """Canonical SMILES of the constitution only (all bonds single, no charges): resonance-blind."""
    mol = Chem.RWMol(Chem.RemoveHs(mol))
    for b in mol.GetBonds():
        b.SetBondType(Chem.BondType.SINGLE)
        b.SetIsAromatic(False)
    for a in mol.GetAtoms():
        a.SetFormalCharge(0)
        a.SetIsAromatic(False)
        a.SetNoImplicit(True)
        a.SetNumExplicitHs(0)
    return Chem.MolToSmiles(mol, isomericSmiles=False)


def test_smiles_round_trip_through_coordinates(data):
    """Bonds perceived from the parsed coordinates give back the CSV's molecule.

    Stereo is left out of the comparison: the CSV's SMILES (GDB-17) carry none. Neutral molecules
    must match exactly (canonical SMILES); on a 2,000-molecule sample all did. Zwitterions may come
    back as another resonance or charge-separated form (none of 9 in that sample kept the SMILES'
    charge placement), so for them the constitution and the net charge are compared.
    """
    rng = np.random.default_rng(2024)
    sample = rng.choice(len(data), 50, replace=False)
    sample = np.concatenate([sample, np.flatnonzero((data.charges != 0).any(1))[:5]])
    for i in sample:
        atoms, pos, charges = data.molecule(i)
        mol = qm9.perceive_bonds(pos, atoms)
        ref = Chem.MolFromSmiles(data.smiles[i])
        if charges.any():
            assert _skeleton(mol) == _skeleton(ref), data.smiles[i]
            assert Chem.GetFormalCharge(mol) == 0
        else:
            assert qm9.canonical_smiles(mol) == qm9.canonical_smiles(data.smiles[i]), data.smiles[i]


# ---------------------------------------------------------------------------------- bond orders


def test_bonds_of_benzene_and_pyridine_are_kekulized(data):
    for smiles in ("C1=CC=CC=C1", "C1=CC=NC=C1"):
        i = data.smiles.index(smiles)
        atoms, pos, _ = data.molecule(i)
        orders, formal = qm9.bonds(pos, atoms)
        assert orders.shape == (len(atoms), len(atoms)) and (orders == orders.T).all()
        assert set(np.unique(orders)) <= {0, 1, 2, 3} and (formal == 0).all()
        heavy = atoms > 0
        assert (orders[np.ix_(heavy, heavy)] == 2).sum() == 2 * 3  # three double bonds in the ring
        valence = {0: 1, 1: 4, 2: 3}
        assert [int(v) for v in orders.sum(1)] == [valence[int(a)] for a in atoms]
        # padded input gives the same answer
        padded = qm9.bonds(data.pos[i], data.atoms[i])
        assert (padded[0] == orders).all() and (padded[1] == formal).all()


def test_bonds_reports_failures_with_a_reason():
    line = np.array([[0.0, 0, 0], [0.74, 0, 0], [1.48, 0, 0]])
    with pytest.raises(qm9.BondPerceptionError, match="DetermineBonds"):
        qm9.bonds(line, np.array([0, 0, 0]))  # H3: odd electron count
    with pytest.raises(qm9.BondPerceptionError, match="unpaired"):
        qm9.bonds(np.zeros((1, 3)), np.array([1]))  # a lone carbon
    c2 = np.array([[0.0, 0, 0], [1.25, 0, 0]])
    with pytest.raises(qm9.BondPerceptionError, match=r"atoms \[0, 1\] keep unpaired"):
        qm9.bonds(c2, np.array([1, 1]))
    orders, _ = qm9.bonds(c2, np.array([1, 1]), allow_radicals=True)
    assert orders.shape == (2, 2) and orders[0, 1] > 0
    with pytest.raises(ValueError, match="padding"):
        qm9.bonds(np.zeros((3, 3)), np.array([1, -1, 0]))


def test_bond_matrices_are_cached(data, tmp_path, monkeypatch):
    idx = [0, 3, 208, 1000]
    table = qm9.bond_matrices(data, idx, directory=tmp_path)
    assert table.ok.all() and table.reasons == [""] * 4
    assert table.orders.shape == (4, qm9.MAX_ATOMS, qm9.MAX_ATOMS)
    assert table.orders[1, 0, 1] == 3  # ethyne's C#C
    assert (table.orders[0, 5:] == 0).all()

    def refuse(*args, **kwargs):
        raise AssertionError("bonds() recomputed despite the cache")

    monkeypatch.setattr(qm9, "bonds", refuse)
    again = qm9.bond_matrices(data, idx, directory=tmp_path)
    assert (again.orders == table.orders).all() and (again.formal_charges == table.formal_charges).all()
    assert (again.indices == table.indices).all() and again.reasons == table.reasons
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".npz")] == []


# -------------------------------------------------------------------------- splits and histogram


def test_splits_have_edm_sizes_and_are_disjoint():
    s = qm9.split_indices()
    assert {k: len(v) for k, v in s.items()} == {"train": 100_000, "valid": 17_748, "test": 13_083}
    union = np.concatenate(list(s.values()))
    assert np.array_equal(np.sort(union), np.arange(qm9.NUM_MOLECULES))  # disjoint and covering
    for v in s.values():
        assert v.dtype == np.int64 and (np.diff(v) > 0).all()


def test_splits_are_deterministic_under_the_seed():
    a, b = qm9.split_indices(), qm9.split_indices(seed=qm9.DEFAULT_SEED)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = qm9.split_indices(seed=qm9.DEFAULT_SEED + 1)
    assert not np.array_equal(a["test"], c["test"])
    with pytest.raises(ValueError, match="add up"):
        qm9.split_indices(num_molecules=10)


def test_atom_count_histogram_of_the_training_split(data):
    hist = qm9.atom_count_histogram(data)
    assert hist.shape == (qm9.MAX_ATOMS + 1,) and hist.dtype == np.int64
    assert hist.sum() == 100_000 and hist[:3].sum() == 0 and hist[qm9.MAX_ATOMS] > 0
    train = qm9.split_indices()["train"]
    assert np.array_equal(hist, np.bincount(data.num_atoms[train], minlength=qm9.MAX_ATOMS + 1))


# -------------------------------------------------------------- parsing and cache (synthetic CSV)

_HEADER = [
    "XYZ_file", "Index", "SMILES", "InChi", "N_atoms", "Stoichiometry", "Elements", "XYZ_Ang",
    "Mulliken_pop", "Harmonic_Freq_cmi", "RotA_GHz", "RotB_GHz", "RotC_GHz", "Dipole_debye",
    "Polarizability_bohr3", "HOMO_au", "LUMO_au", "HOMO_LUMO_gap_au", "R2_bohr2", "ZPVE_au",
    "InternalEnergy_0K_au", "InternalEnergy_298K_au", "Enthalphy_298K_au", "GibbsFreeEnergy_298K_au",
    "Heatcapacity_Cv_cal_mol_K",
]  # fmt: skip

_ROWS = [
    # (index, smiles, elements, coordinates); numbers written as in qm9pack ("0.", "1.", "E-6")
    (1, "C", "CHHHH", "[[-0.0126981359,1.0858041578,0.0080009958],[0.002150416,-0.0060313176,0.0019761204],"
     "[1.0117308433,1.4637511618,0.0002765748],[-0.540815069,1.4475266138,-0.8766437152],"
     "[-0.5238136345,1.4379326443,0.9063972942]]"),
    (4, "C#C", "CCHH", "[[0.5995394918,0.,1.],[-0.5995394918,0.,1.],[-1.6616385861,0.,1.],[1.6616385861,-5.612E-7,1.]]"),
    (271, "[NH3+]CC([O-])=O", "NHHHCCOOHH", "[" + ",".join(f"[{k}.5,0.,1.]" for k in range(10)) + "]"),
]  # fmt: skip


def _write_csv(path, rows=_ROWS, bad_coords: dict[int, str] | None = None):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(_HEADER)
        for r, (idx, smi, el, xyz) in enumerate(rows, start=1):
            counts = [el.count(s) for s in "HCNOF"]
            elements = "[" + ",".join(f"'{e}'" for e in el) + "]"
            xyz = (bad_coords or {}).get(r, xyz)
            props = [
                1.5,
                2.5,
                3.5,
                0.25,
                13.21,
                -0.3877,
                0.1171,
                0.5048,
                35.36,
                0.0447,
                -40.4,
                -40.4,
                -40.4,
                -40.5,
                6.5,
            ]
            w.writerow([f"dsgdb9nsd_{idx:06d}.xyz", idx, smi, "InChI=", len(el), str(counts).replace(" ", ""),
                        elements, xyz, "[]", "[]", *props])  # fmt: skip
    return path


def test_synthetic_csv_parses_with_charges_and_padding(tmp_path):
    d = qm9.parse_qm9_csv([_write_csv(tmp_path / "a.csv")])
    assert len(d) == 3 and d.smiles == ["C", "C#C", "[NH3+]CC([O-])=O"]
    assert list(d.num_atoms) == [5, 4, 10] and list(d.index) == [1, 4, 271]
    assert d.pos[1, 3, 1] == pytest.approx(-5.612e-7) and d.pos[1, 0, 2] == 1.0
    assert list(d.charges[2, :10]) == [1, 0, 0, 0, 0, 0, -1, 0, 0, 0]  # N+ first, O- at coordinate 6
    assert (d.atoms[1, 4:] == -1).all() and (d.pos[1, 4:] == 0).all()
    assert d.properties["alpha"][0] == 13.21 and d.properties["Cv"][2] == 6.5


def test_cache_is_written_atomically_and_used_on_the_second_load(tmp_path, monkeypatch):
    src = _write_csv(tmp_path / "a.csv")
    cache = tmp_path / "cache"
    monkeypatch.setenv("DIFFUSEKIT_QM9", str(cache))
    assert qm9.cache_dir() == cache
    first = qm9.load_qm9([src])
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith("qm9-") and files[0].endswith(".npz")  # no temp file left

    def refuse(paths):
        raise AssertionError("parsed again despite the cache")

    monkeypatch.setattr(qm9, "parse_qm9_csv", refuse)
    second = qm9.load_qm9([src])
    assert second.smiles == first.smiles
    for name in ("num_atoms", "atoms", "pos", "charges", "index"):
        a, b = getattr(first, name), getattr(second, name)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert all(np.array_equal(first.properties[k], second.properties[k]) for k in first.properties)
    # an edited source is a different cache entry: parsed again
    os.utime(src, ns=(1, 1))
    with pytest.raises(AssertionError, match="parsed again"):
        qm9.load_qm9([src])


def _install_fake_qm9pack(site: Path, csv_src: Path) -> tuple[metadata.Distribution, Path]:
    """A ``qm9pack`` laid out as pip installs a wheel: the data file plus a RECORD with its sha256."""
    data = site / "qm9pack" / "data" / "a.csv"
    data.parent.mkdir(parents=True)
    shutil.copyfile(csv_src, data)
    digest = base64.urlsafe_b64encode(hashlib.sha256(data.read_bytes()).digest()).rstrip(b"=").decode()
    info = site / "qm9pack-1.0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qm9pack\nVersion: 1.0.3\n")
    rel = "qm9pack/data/a.csv"
    (info / "RECORD").write_text(f"{rel},sha256={digest},{data.stat().st_size}\n")
    return metadata.PathDistribution(info), data


def test_installed_qm9pack_files_share_one_cache_across_environments(tmp_path, monkeypatch):
    # Two virtual environments install the same wheel at different paths and times: one cache
    # entry, named by the content hashes the wheel records, serves both.
    src = _write_csv(tmp_path / "a.csv")
    monkeypatch.setenv("DIFFUSEKIT_QM9", str(tmp_path / "cache"))
    dist1, file1 = _install_fake_qm9pack(tmp_path / "venv1", src)
    dist2, file2 = _install_fake_qm9pack(tmp_path / "venv2", src)
    os.utime(file2, ns=(10**18, 10**18))
    monkeypatch.setattr(qm9.metadata, "distribution", lambda name: dist1)
    first = qm9.load_qm9([file1])
    monkeypatch.setattr(qm9.metadata, "distribution", lambda name: dist2)

    def refuse(paths):
        raise AssertionError("parsed again despite the cache")

    monkeypatch.setattr(qm9, "parse_qm9_csv", refuse)
    assert qm9.load_qm9([file2]).smiles == first.smiles
    assert len(list((tmp_path / "cache").iterdir())) == 1
    # a copy outside the installed package is keyed by its path and mtime: a new entry
    with pytest.raises(AssertionError, match="parsed again"):
        qm9.load_qm9([src])


def test_malformed_coordinates_raise_one_line_error_naming_the_row(tmp_path):
    bad = _write_csv(tmp_path / "bad.csv", bad_coords={2: "[[0.59,0.,1.],[-0.59,0.,1.],[-1.66,0.],[1.66,0.,1.]]"})
    with pytest.raises(qm9.QM9FormatError, match=r"bad\.csv row 2 \(dsgdb9nsd_000004\.xyz\).*atom 2") as e:
        qm9.parse_qm9_csv([bad])
    assert "\n" not in str(e.value) and isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[[1.,2.,3.]", "unbalanced"),
        ("1.,2.,3.", "not a bracketed list"),
        ("[[1.,2.,3.],[4.,5.]]", "atom 1 has 2 coordinates"),
        ("[[1.,2.,x]]", "'x' is not a number"),
        ("[[1.,2.,1.5*^-6]]", "is not a number"),
        ("[[nan,1.,2.]]", "is not a number"),
        ("[[1.,2.,3.][4.,5.,6.]]", "malformed"),
        ('["1.","2.","3."]', "malformed"),
        ("[[1e999,0.,0.]]", "non-finite"),
    ],
)
def test_parse_coordinates_rejects_malformed_strings(text, reason):
    with pytest.raises(qm9.QM9FormatError, match=reason) as e:
        qm9.parse_coordinates(text, where="f.csv row 9")
    assert str(e.value).startswith("f.csv row 9: ") and "\n" not in str(e.value)


def test_parse_coordinates_checks_the_atom_count():
    with pytest.raises(qm9.QM9FormatError, match="2 atoms but N_atoms says 3"):
        qm9.parse_coordinates("[[1.,2.,3.],[4.,5.,6.]]", 3)
    assert qm9.parse_coordinates("[]").shape == (0, 3)


_finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
_formats = st.sampled_from(
    [repr, lambda x: f"{x:.10f}".rstrip("0"), lambda x: f"{x:.4E}", lambda x: f"{x:.6e}", lambda x: f"{x:g}"]
)


@given(st.lists(st.tuples(_finite, _finite, _finite), min_size=1, max_size=29), _formats, st.sampled_from(["", " "]))
def test_parse_coordinates_round_trips(triples, fmt, space):
    tokens = [[fmt(v) for v in t] for t in triples]
    text = "[" + f",{space}".join("[" + f",{space}".join(t) + "]" for t in tokens) + "]"
    xyz = qm9.parse_coordinates(text, len(triples))
    assert xyz.shape == (len(triples), 3)
    assert np.array_equal(xyz, np.array([[float(v) for v in t] for t in tokens]))


def test_a_damaged_cache_is_parsed_again(tmp_path):
    src = _write_csv(tmp_path / "a.csv")
    first = qm9.load_qm9([src], directory=tmp_path / "c")
    (cached,) = (tmp_path / "c").iterdir()
    cached.write_bytes(b"not a zip file")
    again = qm9.load_qm9([src], directory=tmp_path / "c")
    assert again.smiles == first.smiles and np.array_equal(again.pos, first.pos)
    assert qm9.load_qm9([src], directory=tmp_path / "c").smiles == first.smiles  # rewritten whole
