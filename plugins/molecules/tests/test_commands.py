"""`diffusekit evaluate-molecules`, run as a user runs it: a real subprocess of the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from diffusekit_molecules import io

CLI = [sys.executable, "-m", "diffusekit.cli"]

# ideal geometries (Å): methane (C-H 1.09, tetrahedral), water (O-H 0.96, 104.5°)
_T = 1.09 / 3**0.5
METHANE = (
    np.array([1, 0, 0, 0, 0]),
    np.array([[0, 0, 0], [_T, _T, _T], [_T, -_T, -_T], [-_T, _T, -_T], [-_T, -_T, _T]]),
)
_A = np.radians(104.5 / 2)
WATER = (
    np.array([3, 0, 0]),
    np.array([[0, 0, 0], [0.96 * np.sin(_A), 0.96 * np.cos(_A), 0], [-0.96 * np.sin(_A), 0.96 * np.cos(_A), 0]]),
)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_evaluate_molecules_reports_stability_and_validity(tmp_path: Path):
    # methane missing one hydrogen: its carbon is unstable (3 of 4 atoms stable), still valid for RDKit
    broken = (METHANE[0][:4], METHANE[1][:4])
    sdf = tmp_path / "mols.sdf"
    io.write_sdf(sdf, [METHANE, WATER, broken])
    done = run("evaluate-molecules", str(sdf), "--json")
    assert done.returncode == 0, done.stderr
    numbers = json.loads(done.stdout)
    assert (numbers["n_molecules"], numbers["n_atoms"], numbers["n_stable_atoms"]) == (3, 12, 11)
    # RDKit fills the missing hydrogen implicitly: the broken methane is valid and its SMILES is methane's
    assert numbers["n_stable_molecules"] == 2 and numbers["n_valid"] == 3 and numbers["n_unique"] == 2
    xyz = tmp_path / "mols.xyz"
    io.write_xyz(xyz, [METHANE, WATER])
    done = run("evaluate-molecules", str(xyz))
    assert done.returncode == 0, done.stderr
    assert "molecule stability  100.00%  (2/2)" in done.stdout


def test_bad_files_are_one_line_errors(tmp_path: Path):
    bad = tmp_path / "bad.sdf"
    bad.write_text("this is not a molecule\n")
    for args in (["evaluate-molecules", str(bad)], ["evaluate-molecules", str(tmp_path / "none.xyz")]):
        done = run(*args)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    wrong = tmp_path / "mols.pdb"
    wrong.write_text("")
    done = run("evaluate-molecules", str(wrong))
    assert done.returncode != 0 and ".sdf or .xyz" in done.stderr
