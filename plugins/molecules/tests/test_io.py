"""diffusekit_molecules.io: RDKit conversion, SDF/XYZ round trips, malformed files, PNG grids."""

from __future__ import annotations

import math
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusekit.errors import DiffusekitError, InputError, ShapeError
from diffusekit_molecules.io import depict_grid, read_sdf, read_xyz, to_rdkit, write_sdf, write_xyz
from hypothesis import given, settings
from hypothesis import strategies as st
from rdkit import Chem

H, C, N, O, F = range(5)  # noqa: E741


def methane(ch: float = 1.087):
    d = ch / math.sqrt(3)
    return np.array([C, H, H, H, H]), np.array([[0, 0, 0], [d, d, d], [d, -d, -d], [-d, d, -d], [-d, -d, d]])


def ethylene():
    return np.array([C, C, H, H, H, H]), np.array(
        [[-0.67, 0, 0], [0.67, 0, 0], [-1.24, 0.93, 0], [-1.24, -0.93, 0], [1.24, 0.93, 0], [1.24, -0.93, 0]]
    )


def pentavalent_carbon():
    """C with five H at 1.09 Å (trigonal bipyramid): RDKit cannot sanitize it."""
    r = 1.09
    hs = [[0, 0, r], [0, 0, -r]] + [
        [r * math.cos(a), r * math.sin(a), 0] for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)
    ]
    return np.array([C] + [H] * 5), np.array([[0, 0, 0], *hs])


def one_line_error(info: pytest.ExceptionInfo) -> str:
    assert isinstance(info.value, DiffusekitError)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# --------------------------------------------------------------------------------------------- to_rdkit


def test_to_rdkit_has_conformer_bonds_and_smiles():
    atoms, pos = methane()
    mol = to_rdkit(torch.as_tensor(atoms), torch.as_tensor(pos))
    assert [a.GetSymbol() for a in mol.GetAtoms()] == ["C", "H", "H", "H", "H"]
    assert mol.GetNumBonds() == 4 and mol.GetProp("diffusekit_sanitized") == "1"
    assert np.allclose(mol.GetConformer().GetPositions(), pos) and mol.GetConformer().Is3D()
    assert Chem.MolToSmiles(Chem.RemoveHs(to_rdkit(*ethylene()))) == "C=C"


def test_to_rdkit_drops_padding_and_takes_bonds_and_charges():
    atoms = np.array([N, -1, H, H, H, H])
    pos = np.zeros((6, 3))
    pos[2:] = methane()[1][1:]
    bonds = np.zeros((6, 6), dtype=np.int64)
    bonds[0, 2:] = bonds[2:, 0] = 1
    mol = to_rdkit(atoms, pos, bonds, np.array([1, 0, 0, 0, 0, 0]))
    assert mol.GetNumAtoms() == 5 and mol.GetAtomWithIdx(0).GetFormalCharge() == 1
    assert Chem.MolToSmiles(mol) == "[H][N+]([H])([H])[H]"


def test_to_rdkit_keeps_unsanitizable_molecules_with_the_reason():
    mol = to_rdkit(*pentavalent_carbon())
    assert mol.GetNumAtoms() == 6 and mol.GetNumBonds() == 5
    assert mol.GetProp("diffusekit_sanitized") == "0"
    assert "valence" in mol.GetProp("diffusekit_sanitize_error").lower()


def test_to_rdkit_shape_errors():
    with pytest.raises(ShapeError) as info:
        to_rdkit(np.array([C, H]), np.zeros((2, 2)))
    one_line_error(info)
    with pytest.raises(ShapeError) as info:
        to_rdkit(np.array([[C, H]]), np.zeros((1, 2, 3)))
    one_line_error(info)


# ------------------------------------------------------------------------------------------------- SDF


def test_sdf_writes_unsanitizable_molecules_flagged(tmp_path):
    path = tmp_path / "out.sdf"
    write_sdf(path, [methane(), pentavalent_carbon(), to_rdkit(*ethylene())])
    text = path.read_text()
    assert text.count("$$$$") == 3
    records = text.split("$$$$")
    assert "<diffusekit_sanitized>" in records[0] and "\n1\n" in records[0].split("<diffusekit_sanitized>")[1]
    assert "\n0\n" in records[1].split("<diffusekit_sanitized>")[1] and "<diffusekit_sanitize_error>" in records[1]
    atoms, pos = read_sdf(path)
    assert atoms.tolist() == [[C, H, H, H, H, -1], [C, H, H, H, H, H], [C, C, H, H, H, H]]
    assert np.allclose(pos[1], pentavalent_carbon()[1], atol=1e-4)
    supplier = Chem.SDMolSupplier(str(path), removeHs=False)
    assert supplier[0] is not None and supplier[2] is not None  # valid records read back sanitized


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    path = tmp_path / "out.sdf"
    write_sdf(path, [methane()])
    before = path.read_bytes()
    with pytest.raises(ShapeError):
        write_sdf(path, [methane(), "not a molecule"])
    assert path.read_bytes() == before
    write_sdf(path, [ethylene()])
    write_xyz(tmp_path / "out.xyz", [ethylene()])
    depict_grid(tmp_path / "out.png", [ethylene()])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "out.sdf", "out.xyz"]
    assert read_sdf(path)[0].tolist() == [[C, C, H, H, H, H]]


def test_a_padded_batch_is_accepted_as_molecules(tmp_path):
    atoms = np.array([[C, H, H, H, H, -1], [C, C, H, H, H, H]])
    pos = np.zeros((2, 6, 3))
    pos[0, :5], pos[1] = methane()[1], ethylene()[1]
    write_sdf(tmp_path / "b.sdf", (atoms, pos))
    write_xyz(tmp_path / "b.xyz", (torch.as_tensor(atoms), torch.as_tensor(pos)))
    for read, name in ((read_sdf, "b.sdf"), (read_xyz, "b.xyz")):
        back_atoms, back_pos = read(tmp_path / name)
        assert back_atoms.tolist() == atoms.tolist()
        assert np.allclose(back_pos[atoms >= 0], pos[atoms >= 0], atol=1e-4)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("hello world\n", "not a valid MOL block"),
        ("", None),  # an empty file holds no molecules
        ("\n     RDKit          3D\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\n    0.0000    0.0\n", "not a valid"),
        (
            "\n     RDKit          3D\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n"
            "    0.0000    0.0000    0.0000 Cl  0  0  0  0  0  0  0  0  0  0  0  0\nM  END\n$$$$\n",
            "element 'Cl'",
        ),
    ],
    ids=["garbage", "empty", "truncated", "foreign-element"],
)
def test_malformed_sdf_gives_one_line_error(tmp_path, content, expected):
    path = tmp_path / "bad.sdf"
    path.write_text(content)
    if expected is None:
        atoms, pos = read_sdf(path)
        assert atoms.shape == (0, 0) and pos.shape == (0, 0, 3)
        return
    with pytest.raises(InputError) as info:
        read_sdf(path)
    message = one_line_error(info)
    assert str(path) in message and expected in message


def test_truncated_real_sdf_names_the_broken_record(tmp_path):
    path = tmp_path / "cut.sdf"
    write_sdf(path, [methane(), ethylene()])
    text = path.read_text()
    path.write_text(text[: text.index("$$$$") + 5 + 120])  # the second record cut inside its atom block
    with pytest.raises(InputError) as info:
        read_sdf(path)
    assert "molecule 2" in one_line_error(info)


def test_missing_file_gives_one_line_error(tmp_path):
    for read in (read_sdf, read_xyz):
        with pytest.raises(InputError) as info:
            read(tmp_path / "nope.sdf")
        assert "nope.sdf" in one_line_error(info)


# ------------------------------------------------------------------------------------------------- XYZ


def test_xyz_format_and_comments(tmp_path):
    path = tmp_path / "m.xyz"
    write_xyz(path, [methane()], comments=["methane"], precision=3)
    lines = path.read_text().splitlines()
    assert lines[:3] == ["5", "methane", "C 0.000 0.000 0.000"]
    assert len(lines) == 7


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("x\n\nC 0 0 0\n", "line 1 should be an atom count"),
        ("2\n\nC 0 0 0\n", "announces 2 atoms"),
        ("1\ncomment\nC 0 zero 0\n", "line 3 has a coordinate"),
        ("1\ncomment\nC 0 0\n", "line 3 should be 'symbol x y z'"),
        ("1\ncomment\nXe 0 0 0\n", "element 'Xe'"),
        ("1\ncomment\nC nan 0 0\n", "non-finite"),
    ],
)
def test_malformed_xyz_gives_one_line_error(tmp_path, content, expected):
    path = tmp_path / "bad.xyz"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        read_xyz(path)
    message = one_line_error(info)
    assert str(path) in message and expected in message


# ------------------------------------------------------------------------------------------ round trips

coordinate = st.floats(-99.0, 99.0, allow_nan=False, allow_infinity=False)


@st.composite
def molecule_lists(draw):
    out = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 12))
        atoms = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)))
        pos = np.array(draw(st.lists(st.tuples(coordinate, coordinate, coordinate), min_size=n, max_size=n)))
        out.append((atoms, pos))
    return out


def _check_round_trip(mols, atoms, pos, tolerance):
    assert atoms.shape[0] == len(mols)
    for k, (a, p) in enumerate(mols):
        assert atoms[k, : len(a)].tolist() == a.tolist()
        assert (atoms[k, len(a) :] == -1).all()
        assert np.abs(pos[k, : len(a)] - p).max() <= tolerance


@settings(max_examples=60, deadline=None)
@given(molecule_lists())
def test_sdf_round_trip(mols):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mols.sdf"
        write_sdf(path, mols)
        atoms, pos = read_sdf(path)
    _check_round_trip(mols, atoms, pos, 0.5e-4 + 1e-9)  # MOL blocks keep 4 decimals


@settings(max_examples=60, deadline=None)
@given(molecule_lists(), st.integers(3, 8))
def test_xyz_round_trip(mols, precision):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mols.xyz"
        write_xyz(path, mols, precision=precision)
        atoms, pos = read_xyz(path)
    _check_round_trip(mols, atoms, pos, 0.5 * 10.0**-precision + 1e-9)


# ----------------------------------------------------------------------------------------------- grids


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_depict_grid_writes_a_png(tmp_path):
    path = tmp_path / "grid.png"
    depict_grid(path, [methane(), ethylene(), pentavalent_carbon()], per_row=2, size=(200, 150))
    assert _png_size(path) == (400, 300)
    depict_grid(path, [ethylene()], legends=["ethylene"])
    assert _png_size(path) == (300, 300)
    with pytest.raises(ShapeError) as info:
        depict_grid(path, [])
    one_line_error(info)
    with pytest.raises(ShapeError):
        depict_grid(path, [ethylene()], legends=["a", "b"])
