"""Oracles and properties of diffusekit_molecules.evaluate (EDM's stability, RDKit validity, uniqueness, novelty)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusekit.errors import ConfigError, DiffusekitError, InputError, ShapeError
from diffusekit_molecules.evaluate import (
    ATOM_TYPES,
    BOND_LENGTHS_DOUBLE,
    BOND_LENGTHS_SINGLE,
    BOND_LENGTHS_TRIPLE,
    MARGINS,
    Report,
    atom_stability_from_bonds,
    atom_stability_from_distances,
    bond_orders_from_distances,
    canonical_smiles_set,
    evaluate,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

H, C, N, O, F = range(5)  # noqa: E741

# ----------------------------------------------------------------------------- ideal geometries (Å)
# bond lengths and angles are standard experimental values (CRC handbook / NIST CCCBDB, rounded)


def _tetrahedral(center: np.ndarray, length: float) -> np.ndarray:
    dirs = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float) / math.sqrt(3)
    return center + length * dirs


def methane(ch: float = 1.087):
    return np.array([C, H, H, H, H]), np.vstack([np.zeros(3), _tetrahedral(np.zeros(3), ch)])


def ethylene(cc: float = 1.339, ch: float = 1.087, hch: float = 117.4):
    half = math.radians(hch / 2)
    x, y = ch * math.cos(half), ch * math.sin(half)
    c1, c2 = np.array([-cc / 2, 0, 0]), np.array([cc / 2, 0, 0])
    hs = [c1 + [-x, y, 0], c1 + [-x, -y, 0], c2 + [x, y, 0], c2 + [x, -y, 0]]
    return np.array([C, C, H, H, H, H]), np.vstack([c1, c2, *hs])


def acetylene(cc: float = 1.203, ch: float = 1.063):
    xs = [-cc / 2, cc / 2, -cc / 2 - ch, cc / 2 + ch]
    return np.array([C, C, H, H]), np.array([[x, 0.0, 0.0] for x in xs])


def water(oh: float = 0.958, angle: float = 104.5):
    half = math.radians(angle / 2)
    pos = [[0, 0, 0], [oh * math.sin(half), oh * math.cos(half), 0], [-oh * math.sin(half), oh * math.cos(half), 0]]
    return np.array([O, H, H]), np.array(pos, dtype=float)


def hcn(ch: float = 1.066, cn: float = 1.156):
    return np.array([H, C, N]), np.array([[-ch, 0, 0], [0, 0, 0], [cn, 0, 0]], dtype=float)


def formaldehyde(co: float = 1.205, ch: float = 1.111, hch: float = 116.1):
    half = math.radians(hch / 2)
    pos = [[0, 0, 0], [co, 0, 0], [-ch * math.cos(half), ch * math.sin(half), 0]]
    pos.append([-ch * math.cos(half), -ch * math.sin(half), 0])
    return np.array([C, O, H, H]), np.array(pos, dtype=float)


def ammonia(nh: float = 1.012, hnh: float = 106.7):
    # three N-H bonds at equal angles hnh around the z axis
    cos_t = math.sqrt((1 + 2 * math.cos(math.radians(hnh))) / 3)  # cos of the angle of N-H to the -z axis
    sin_t = math.sqrt(1 - cos_t**2)
    hs = [
        [nh * sin_t * math.cos(a), nh * sin_t * math.sin(a), -nh * cos_t] for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)
    ]
    return np.array([N, H, H, H]), np.array([[0, 0, 0], *hs], dtype=float)


def hydrogen_fluoride(hf: float = 0.917):
    return np.array([H, F]), np.array([[0, 0, 0], [hf, 0, 0]], dtype=float)


def benzene(sides: tuple[float, float] = (1.397, 1.397), ch: float = 1.087):
    """A hexagon with 120° angles and alternating sides (equal sides: D6h benzene; 1.34/1.46: Kekulé)."""
    carbons, p = [], np.zeros(3)
    for k in range(6):
        carbons.append(p.copy())
        a = math.radians(60 * k)
        p = p + sides[k % 2] * np.array([math.cos(a), math.sin(a), 0.0])
    carbons = np.array(carbons)
    center = carbons.mean(0)
    out = (carbons - center) / np.linalg.norm(carbons - center, axis=1, keepdims=True)
    return np.array([C] * 6 + [H] * 6), np.vstack([carbons, carbons + ch * out])


def kekule_benzene():
    return benzene(sides=(1.34, 1.46))


def carbon_monoxide(co: float = 1.128):
    return np.array([C, O]), np.array([[0, 0, 0], [co, 0, 0]], dtype=float)


STABLE = {
    "methane": (methane, "C"),
    "ethylene": (ethylene, "C=C"),
    "acetylene": (acetylene, "C#C"),
    "water": (water, "O"),
    "HCN": (hcn, "C#N"),
    "formaldehyde": (formaldehyde, "C=O"),
    "ammonia": (ammonia, "N"),
    "HF": (hydrogen_fluoride, "F"),
    "Kekulé benzene": (kekule_benzene, "c1ccccc1"),
}
LIBRARY = [build for build, _ in STABLE.values()] + [benzene, carbon_monoxide]


def batch(*molecules):
    n = max(len(a) for a, _ in molecules)
    atoms = np.full((len(molecules), n), -1)
    pos = np.zeros((len(molecules), n, 3))
    for k, (a, p) in enumerate(molecules):
        atoms[k, : len(a)], pos[k, : len(a)] = a, p
    return atoms, pos


def counts(report: Report) -> dict:
    out = report.as_dict(smiles=True)
    del out["seconds"]
    return out


# ----------------------------------------------------------------------------------------------- oracles


@pytest.mark.parametrize("name", list(STABLE))
def test_ideal_molecules_are_stable_and_valid(name):
    build, smiles = STABLE[name]
    atoms, pos = build()
    report = evaluate(atoms, pos)
    assert (report.n_stable_atoms, report.n_atoms) == (len(atoms), len(atoms))
    assert report.atom_stability == report.mol_stability == report.validity == 1.0
    assert report.smiles == (smiles,)
    assert atom_stability_from_distances(atoms, pos).all()


def test_bond_orders_of_ideal_molecules():
    orders = bond_orders_from_distances(*ethylene())
    assert orders[0, 1] == orders[1, 0] == 2
    assert orders.sum() == 2 * (2 + 4)
    orders = bond_orders_from_distances(*kekule_benzene())
    ring = [orders[k, (k + 1) % 6] for k in range(6)]
    assert ring == [2, 1, 2, 1, 2, 1]
    assert bond_orders_from_distances(*hcn())[1, 2] == 3


def test_regular_benzene_is_unstable_under_edm_but_valid():
    # 139.7 pm is not below C=C's 134 + 5 pm, so EDM's rule sees a ring of single bonds: the six C are unstable
    report = evaluate(*benzene())
    assert (report.n_stable_atoms, report.n_atoms, report.n_stable_molecules) == (6, 12, 0)
    assert report.smiles == ("C1CCCCC1",)  # RDKit fills the carbons with implicit hydrogens, as in EDM
    assert evaluate(*benzene(), bond_perception="rdkit").smiles == ("c1ccccc1",)


def test_missing_hydrogen_gives_exact_counts():
    atoms, pos = methane()
    report = evaluate(atoms[:-1], pos[:-1])
    assert (report.n_atoms, report.n_stable_atoms, report.n_stable_molecules) == (4, 3, 0)
    assert report.atom_stability == 0.75 and report.mol_stability == 0.0
    assert atom_stability_from_distances(atoms[:-1], pos[:-1]).tolist() == [False, True, True, True]
    assert (report.n_valid, report.smiles) == (1, ("C",))  # EDM's validity lets RDKit add the hydrogen
    assert evaluate(atoms[:-1], pos[:-1], bond_perception="rdkit").n_valid == 0  # DetermineBonds does not


def test_carbon_monoxide_is_unstable_and_invalid():
    report = evaluate(*carbon_monoxide())
    assert (report.n_stable_atoms, report.n_valid, report.smiles) == (0, 0, (None,))


def test_batch_counts_uniqueness_and_novelty():
    m_atoms, m_pos = methane()
    atoms, pos = batch(methane(), (m_atoms[::-1], m_pos[::-1] + 3.0), ethylene(), carbon_monoxide(), benzene())
    report = evaluate(torch.as_tensor(atoms), torch.as_tensor(pos, dtype=torch.float32), train_smiles=["C(=C)", "CC"])
    assert report.n_molecules == 5 and report.n_atoms == 5 + 5 + 6 + 2 + 12
    assert report.n_stable_atoms == 5 + 5 + 6 + 0 + 6
    assert report.n_stable_molecules == 3
    assert report.n_valid == 4 and report.validity == 0.8
    assert report.smiles == ("C", "C", "C=C", None, "C1CCCCC1")
    assert report.n_unique == 3 and report.uniqueness == 0.75 and report.valid_unique == 0.6
    assert report.n_novel == 2 and report.novelty == pytest.approx(2 / 3)
    assert evaluate(atoms, pos).novelty is None
    assert evaluate(atoms, pos, train_smiles=canonical_smiles_set(["C"]), canonicalize_train=False).n_novel == 2
    d = report.as_dict()
    assert d["mol_stability"] == 0.6 and d["n_valid"] == 4 and "smiles" not in d
    assert report.as_dict(smiles=True)["smiles"][0] == "C"


def test_explicit_hydrogen_smiles_as_edm():
    assert evaluate(*methane(), explicit_h_smiles=True).smiles == ("[H]C([H])([H])[H]",)
    assert evaluate(*methane(), explicit_h_smiles=True, train_smiles=["[H]C([H])([H])[H]"]).n_novel == 0


def test_largest_fragment_gives_the_smiles():
    (wa, wp), (ea, ep) = water(), ethylene()
    report = evaluate(np.concatenate([wa, ea]), np.vstack([wp, ep + 10.0]))
    assert (report.n_stable_molecules, report.smiles) == (1, ("C=C",))


# ---------------------------------------------------------------------------------------------- margins

# EDM's thresholds (typical length + margin, pm) written out: (single, double, triple), None when absent
THRESHOLDS = {
    ("H", "H"): (84, None, None),
    ("H", "C"): (119, None, None),
    ("H", "N"): (111, None, None),
    ("H", "O"): (106, None, None),
    ("H", "F"): (102, None, None),
    ("C", "C"): (164, 139, 123),
    ("C", "N"): (157, 134, 119),
    ("C", "O"): (153, 125, 116),
    ("C", "F"): (145, None, None),
    ("N", "N"): (155, 130, 113),
    ("N", "O"): (150, 126, None),
    ("N", "F"): (146, None, None),
    ("O", "O"): (158, 126, None),
    ("O", "F"): (152, None, None),
    ("F", "F"): (152, None, None),
}


def test_thresholds_are_edm_tables_plus_margins():
    assert MARGINS == (10, 5, 3)
    for (a, b), (t1, t2, t3) in THRESHOLDS.items():
        pair = frozenset((a, b))
        assert BOND_LENGTHS_SINGLE[pair] + 10 == t1
        assert (BOND_LENGTHS_DOUBLE[pair] + 5 if pair in BOND_LENGTHS_DOUBLE else None) == t2
        assert (BOND_LENGTHS_TRIPLE[pair] + 3 if pair in BOND_LENGTHS_TRIPLE else None) == t3
    assert len(BOND_LENGTHS_SINGLE) == len(THRESHOLDS)


def _order(a: str, b: str, pm: float) -> int:
    atoms = np.array([ATOM_TYPES.index(a), ATOM_TYPES.index(b)])
    return int(bond_orders_from_distances(atoms, np.array([[0.0, 0, 0], [pm / 100, 0, 0]]))[0, 1])


@pytest.mark.parametrize("pair", list(THRESHOLDS), ids="-".join)
def test_margins_flip_the_bond_order(pair):
    thresholds = THRESHOLDS[pair]
    eps = 1e-3  # pm
    for order, t in enumerate(thresholds, start=1):
        if t is None:
            continue
        for a, b in (pair, pair[::-1]):
            assert _order(a, b, t - eps) == order, (a, b, t)
            assert _order(a, b, t + eps) == order - 1, (a, b, t)
            if 100 * math.sqrt((t / 100) ** 2) == t:  # the distance is exactly the threshold: strict "<"
                assert _order(a, b, t) == order - 1, (a, b, t)
    assert _order(*pair, 10_000) == 0


# ------------------------------------------------------------------------------------------ given bonds


def _bonds_from_distances(atoms, pos):
    return bond_orders_from_distances(atoms, pos).astype(np.int64)


def test_given_bonds_of_ideal_molecules():
    for build, smiles in STABLE.values():
        atoms, pos = build()
        report = evaluate(atoms, pos, bonds=_bonds_from_distances(atoms, pos))
        assert report.mol_stability == 1.0 and report.smiles == (smiles,)
        assert report.bonds == "given"


def test_given_aromatic_bonds():
    atoms, pos = benzene()
    bonds = np.zeros((12, 12), dtype=np.int64)
    for k in range(6):
        bonds[k, (k + 1) % 6] = bonds[(k + 1) % 6, k] = 4
        bonds[k, k + 6] = bonds[k + 6, k] = 1
    report = evaluate(atoms, pos, bonds=bonds)
    assert report.mol_stability == 1.0 and report.smiles == ("c1ccccc1",)


def test_charges_follow_midi_valences():
    # ammonium: N with four bonds is stable only with charge +1
    a, p = ammonia()
    atoms = np.append(a, H)
    pos = np.vstack([p, [0, 0, 1.012]])
    bonds = np.zeros((5, 5), dtype=np.int64)
    bonds[0, 1:] = bonds[1:, 0] = 1
    assert atom_stability_from_bonds(atoms, bonds).tolist() == [False] + [True] * 4
    charges = np.array([1, 0, 0, 0, 0])
    assert atom_stability_from_bonds(atoms, bonds, charges).all()
    report = evaluate(atoms, pos, bonds=bonds, charges=charges)
    assert report.mol_stability == 1.0 and report.smiles == ("[NH4+]",)
    assert evaluate(atoms, pos, bonds=bonds).n_valid == 0
    # hydroxide; a charge outside the table (+2 on O) falls back to the neutral valence 2
    oh = np.array([[0, 1], [1, 0]])
    assert atom_stability_from_bonds([O, H], oh, [-1, 0]).all()
    assert atom_stability_from_bonds([O, H], oh, [2, 0]).tolist() == [False, True]
    # MiDi's table is lenient: a neutral carbon with three bonds counts as stable
    ch3 = np.zeros((4, 4), dtype=np.int64)
    ch3[0, 1:] = ch3[1:, 0] = 1
    assert atom_stability_from_bonds([C, H, H, H], ch3).all()
    # a pentavalent carbon is neither stable nor valid
    ch5 = np.zeros((6, 6), dtype=np.int64)
    ch5[0, 1:] = ch5[1:, 0] = 1
    report = evaluate([C] + [H] * 5, np.random.default_rng(0).normal(size=(6, 3)), bonds=ch5)
    assert (report.n_stable_atoms, report.n_valid) == (5, 0)


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"atoms": np.zeros((2, 3), dtype=np.int64), "pos": np.zeros((2, 3, 2))}, ShapeError),
        ({"atoms": np.zeros((2, 3), dtype=np.int64), "pos": np.zeros((2, 4, 3))}, ShapeError),
        ({"atoms": np.zeros((2, 3, 1), dtype=np.int64), "pos": np.zeros((2, 3, 3))}, ShapeError),
        ({"atoms": np.zeros(3), "pos": np.zeros((3, 3))}, ShapeError),
        ({"atoms": np.array([0, 5]), "pos": np.zeros((2, 3))}, InputError),
        ({"atoms": np.array([0, 1]), "pos": np.array([[0, 0, 0], [np.nan, 0, 0]])}, InputError),
        ({"atoms": np.array([0, 1]), "pos": np.zeros((2, 3)), "bonds": np.zeros((2, 3), dtype=int)}, ShapeError),
        ({"atoms": np.array([0, 1]), "pos": np.zeros((2, 3)), "bonds": np.array([[0, 1], [0, 0]])}, InputError),
        ({"atoms": np.array([0, 1]), "pos": np.zeros((2, 3)), "bonds": np.array([[0, 5], [5, 0]])}, InputError),
        ({"atoms": np.array([0, 1]), "pos": np.zeros((2, 3)), "charges": np.zeros(2, dtype=int)}, ConfigError),
        ({"atoms": np.array([0, 1]), "pos": np.zeros((2, 3)), "bond_perception": "xyz2mol"}, ConfigError),
        ({"atoms": np.zeros((0, 3), dtype=np.int64), "pos": np.zeros((0, 3, 3))}, ShapeError),
    ],
)
def test_malformed_inputs_give_one_line_errors(kwargs, error):
    atoms, pos = kwargs.pop("atoms"), kwargs.pop("pos")
    with pytest.raises(error) as info:
        evaluate(atoms, pos, **kwargs)
    assert isinstance(info.value, DiffusekitError) and "\n" not in str(info.value)


def test_empty_molecule_is_neither_stable_nor_valid():
    report = evaluate(np.array([[-1, -1], [C, -1]]), np.zeros((2, 2, 3)))
    assert (report.n_stable_molecules, report.n_valid, report.smiles) == (0, 1, (None, "C"))


# -------------------------------------------------------------------------------------------- properties

_ALL_THRESHOLDS = np.array([t for ts in THRESHOLDS.values() for t in ts if t is not None], dtype=float)


def _clear_of_thresholds(pos: np.ndarray) -> bool:
    """Every pairwise distance at least 1e-4 pm away from any threshold (rounding cannot flip an order)."""
    d = 100 * np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    return bool(np.abs(d[..., None] - _ALL_THRESHOLDS).min() > 1e-4) if len(pos) > 1 else True


@st.composite
def molecules(draw):
    if draw(st.booleans()):
        atoms, pos = draw(st.sampled_from(LIBRARY))()
        noise = draw(st.floats(0.0, 0.08))
        seed = draw(st.integers(0, 2**32 - 1))
        pos = pos + noise * np.random.default_rng(seed).normal(size=pos.shape)
    else:
        n = draw(st.integers(1, 9))
        atoms = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)))
        coords = st.floats(-2.0, 2.0, allow_nan=False, width=64)
        pos = np.array(draw(st.lists(st.tuples(coords, coords, coords), min_size=n, max_size=n)), dtype=float)
    assume(_clear_of_thresholds(pos))
    return atoms, pos


@st.composite
def rigid_motions(draw):
    q = np.array(draw(st.tuples(*[st.floats(-1, 1, allow_nan=False)] * 4)))
    assume(np.linalg.norm(q) > 0.1)
    w, x, y, z = q / np.linalg.norm(q)
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    if draw(st.booleans()):
        rot = rot @ np.diag([-1.0, 1.0, 1.0])  # a reflection
    shift = np.array(draw(st.tuples(*[st.floats(-50, 50, allow_nan=False)] * 3)))
    return rot, shift


@settings(max_examples=150, deadline=None)
@given(molecules(), rigid_motions(), st.randoms(use_true_random=False))
def test_invariant_to_rotation_translation_reflection_permutation(molecule, motion, rnd):
    atoms, pos = molecule
    rot, shift = motion
    perm = list(range(len(atoms)))
    rnd.shuffle(perm)
    moved = (pos @ rot.T + shift)[perm]
    assume(_clear_of_thresholds(moved))
    before, after = evaluate(atoms, pos), evaluate(atoms[perm], moved)
    assert counts(before) == counts(after)
    stable = atom_stability_from_distances(atoms, pos)
    assert atom_stability_from_distances(atoms[perm], moved).tolist() == stable[perm].tolist()


@settings(max_examples=80, deadline=None)
@given(
    st.lists(molecules(), min_size=1, max_size=4),
    st.integers(0, 6),
    st.sampled_from([0.0, 1e9, np.nan, np.inf, -3.3]),
    st.randoms(use_true_random=False),
)
def test_padding_does_not_change_the_result(mols, extra, garbage, rnd):
    reference = evaluate(*batch(*mols))
    n = max(len(a) for a, _ in mols) + extra
    atoms = np.full((len(mols), n), -1)
    pos = np.full((len(mols), n, 3), garbage)
    for k, (a, p) in enumerate(mols):
        slots = sorted(rnd.sample(range(n), len(a)))  # padding anywhere, order of the real atoms kept
        atoms[k, slots], pos[k, slots] = a, p
    assert counts(evaluate(atoms, pos)) == counts(reference)
    summed = sum(evaluate(a, p).n_stable_atoms for a, p in mols)
    assert reference.n_stable_atoms == summed
    # the same with given bonds, garbage in the padded rows and columns of the bond matrix
    bonds = bond_orders_from_distances(atoms, pos).astype(np.int64)
    pad = atoms < 0
    bonds[pad] = 7
    bonds.transpose(0, 2, 1)[pad] = 7
    ref_atoms, ref_pos = batch(*mols)
    ref_bonds = bond_orders_from_distances(ref_atoms, ref_pos)
    assert counts(evaluate(atoms, pos, bonds=bonds)) == counts(evaluate(ref_atoms, ref_pos, bonds=ref_bonds))
