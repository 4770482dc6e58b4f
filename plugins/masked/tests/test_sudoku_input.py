"""``diffusekit run masked:sudoku --input FILE``: the user's puzzles, solved by the shipped model;
malformed puzzle files are one-line errors naming the line."""

import random

import pytest
import torch
from diffusekit.testing.cli import assert_one_line_error, run_cli
from diffusekit_masked import sudoku, sudoku_grids
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), givens=st.integers(17, 81), one_line=st.booleans())
def test_puzzles_read_back_from_the_layout_the_method_writes(seed, givens, one_line):
    rng = random.Random(seed)
    puzzles = [sudoku_grids.puzzle(sudoku_grids.random_grid(rng), givens, rng) for _ in range(2)]
    if one_line:
        text = "\n".join("".join("." if c < 0 else str(c + 1) for c in p) for p in puzzles)
    else:
        text = "\n\n".join(sudoku_grids.show(p) for p in puzzles) + "\n# a comment\n"
    assert sudoku_grids.parse(text) == puzzles


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..7\n", "has 80 cells"),
        ("5" + "." * 79 + "x\n", "line 1, column 81: 'x'"),
        ("55" + "." * 79 + "\n", "two 5s in row 1"),
        ("5" + "." * 8 + "5" + "." * 71 + "\n", "two 5s in column 1"),
        ("." * 81 + "\n\n# two\n" + "5" + "." * 9 + "5" + "." * 70 + "\n", r"puzzle 2 \(line 4\): two 5s in box 1"),
    ],
)
def test_malformed_puzzles_are_refused_with_the_place(text, words):
    with pytest.raises(ValueError, match=words):
        sudoku_grids.parse(text)


def test_cli_solves_the_users_puzzles_with_the_shipped_model(tmp_path):
    rng = random.Random(7)
    grids = [sudoku_grids.random_grid(rng) for _ in range(3)]
    puzzles = [sudoku_grids.unique_puzzle(g, 30, rng) for g in grids]
    (tmp_path / "puzzles.txt").write_text("\n\n".join(sudoku_grids.show(p) for p in puzzles), encoding="utf-8")
    result = run_cli("run", "masked:sudoku", "--input", "puzzles.txt", "--out", "out", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "of 3 puzzles solved" in result.stdout
    answers = (tmp_path / "out" / "solutions.txt").read_text(encoding="utf-8").splitlines()
    assert len(answers) == 3 and all(len(a) == 81 and set(a) <= set("123456789") for a in answers)
    assert sum(sudoku.is_solution(p, a) for p, a in zip(_strings(puzzles), answers, strict=True)) >= 2
    with Image.open(tmp_path / "out" / "sudoku.png") as picture:
        assert picture.format == "PNG" and picture.width > picture.height > 9 * 20  # three boards side by side
    report = (tmp_path / "out" / "sudoku.txt").read_text(encoding="utf-8")
    solved = [line for line in report.splitlines() if line.startswith("puzzle ") and line.endswith(": solved")]
    # the shipped model solves ~92% of one-solution 30-given puzzles (docs/benchmarks.md); decoding is deterministic
    assert len(solved) >= 2


def test_cli_refuses_a_malformed_puzzle_file_before_loading_anything(tmp_path):
    (tmp_path / "bad.txt").write_text("1 2 3\n4 5 6\n\n", encoding="utf-8")
    message = assert_one_line_error(run_cli("run", "masked:sudoku", "--input", "bad.txt", cwd=tmp_path))
    assert "bad.txt" in message and "has 6 cells, not 81" in message
    (tmp_path / "none.txt").write_text("# nothing here\n", encoding="utf-8")
    assert "no puzzle" in assert_one_line_error(run_cli("run", "masked:sudoku", "--input", "none.txt", cwd=tmp_path))
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    assert "binary.txt" in assert_one_line_error(run_cli("run", "masked:sudoku", "--input", "binary.txt", cwd=tmp_path))
    assert not (tmp_path / "outputs").exists()


def test_a_method_without_input_says_so(tmp_path):
    (tmp_path / "a.txt").write_text("x", encoding="utf-8")
    message = assert_one_line_error(run_cli("run", "masked:text", "--input", "a.txt", cwd=tmp_path))
    assert "masked:text takes no input" in message


def _strings(puzzles):
    return ["".join("." if c < 0 else str(c + 1) for c in p) for p in puzzles]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), givens=st.integers(17, 81))
def test_every_puzzle_convention_encodes_to_the_same_tokens(seed, givens):
    """81 characters with . or 0 for empty, 81 ints with 0 for empty, 9 rows of 9: the same
    puzzle; digits 1-9 become tokens 0-8 and empty cells the mask token."""
    rng = random.Random(seed)
    board = sudoku_grids.puzzle(sudoku_grids.random_grid(rng), givens, rng)
    ints = [c + 1 for c in board]  # 0 empty
    want = torch.tensor([[sudoku.MASK if c < 0 else c for c in board]])
    for form in (_strings([board])[0], "".join(map(str, ints)), ints, [ints[r * 9 : r * 9 + 9] for r in range(9)]):
        assert torch.equal(sudoku.encode(form), want)
    assert torch.equal(sudoku.encode([ints, _strings([board])[0]]), want.expand(2, 81))


@pytest.mark.parametrize(
    ("puzzles", "words"),
    [
        ([1] * 80, "has 80 cells, not 81"),
        ([0] * 80 + [10], "cell 81: 10 is not 1-9"),
        ([[0] * 81, [0] * 80 + [True]], "puzzle 2, cell 81: True"),
        ([5, 5] + [0] * 79, "two 5s in row 1"),
        (["." * 81, "x" * 81], "puzzle 2: line 1, column 1: 'x'"),
        ([], "no puzzle given"),
    ],
)
def test_malformed_puzzles_passed_to_solve_name_the_puzzle_and_the_cell(puzzles, words):
    with pytest.raises(ValueError, match=words):
        sudoku.solve(puzzles)


def test_solve_takes_the_common_conventions_and_answers_in_kind():
    """One string in, one string out; a list in, a list out. Easy one-solution puzzles (40
    givens) are solved by the shipped model (it solves > 90% at 30 givens)."""
    rng = random.Random(11)
    grids = [sudoku_grids.random_grid(rng) for _ in range(4)]
    puzzles = [sudoku_grids.unique_puzzle(g, 40, rng) for g in grids]
    one = sudoku.solve(_strings(puzzles)[0])
    assert isinstance(one, str) and sudoku.is_solution(_strings(puzzles)[0], one)
    answers = sudoku.solve([[c + 1 for c in p] for p in puzzles])
    assert isinstance(answers, list) and len(answers) == 4
    assert answers == ["".join(str(c + 1) for c in g) for g in grids]  # one solution each: the grid
