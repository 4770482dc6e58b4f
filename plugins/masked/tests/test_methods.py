"""Sudoku grids and puzzles, the text corpus and the two methods (with tiny, untrained networks)."""

import random
from pathlib import Path

import diffusekit as dk
import torch
from diffusekit.recipe import apply_overrides
from diffusekit_masked import sudoku, sudoku_grids, text
from hypothesis import given, settings
from hypothesis import strategies as st


def test_generated_grids_are_valid_distinct_and_puzzles_keep_their_givens():
    rng = random.Random(3)
    grids = [sudoku_grids.random_grid(rng) for _ in range(300)]
    assert all(sudoku_grids.is_valid(g) for g in grids)
    assert len({tuple(g) for g in grids}) == 300
    puzzle = sudoku_grids.puzzle(grids[0], 30, rng)
    assert sum(c >= 0 for c in puzzle) == 30
    assert sudoku_grids.solves(grids[0], puzzle)
    broken = list(grids[0])
    broken[0], broken[1] = broken[1], broken[0]
    assert not sudoku_grids.is_valid(broken) and not sudoku_grids.solves(broken, puzzle)
    changed = list(grids[0])
    assert not sudoku_grids.solves(grids[1], puzzle) or grids[1] == changed


_PEERS = [
    [
        j
        for j in range(81)
        if j != i and (j // 9 == i // 9 or j % 9 == i % 9 or sudoku_grids.BOX[j] == sudoku_grids.BOX[i])
    ]
    for i in range(81)
]


def _brute_force_count(board: list[int], limit: int) -> int:
    """Solutions by plain backtracking in cell order (no bitmasks, no cell choice): an independent oracle."""
    if -1 not in board:
        return 1
    i, found = board.index(-1), 0
    for d in range(9):
        if all(board[j] != d for j in _PEERS[i]):
            board[i] = d
            found += _brute_force_count(board, limit - found)
            board[i] = -1
            if found >= limit:
                break
    return found


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), empty=st.integers(40, 52))
def test_solution_counts_match_brute_force(seed, empty):
    rng = random.Random(seed)
    puzzle = sudoku_grids.puzzle(sudoku_grids.random_grid(rng), 81 - empty, rng)
    assert sudoku_grids.count_solutions(puzzle, 3) == _brute_force_count(list(puzzle), 3)


def test_one_solution_puzzles_have_exactly_their_grid_as_solution():
    rng = random.Random(5)
    for _ in range(20):
        grid = sudoku_grids.random_grid(rng)
        puzzle = sudoku_grids.unique_puzzle(grid, 30, rng)
        assert sum(c >= 0 for c in puzzle) == 30 and sudoku_grids.solves(grid, puzzle)
        assert sudoku_grids.count_solutions(puzzle, 2) == 1
    clash = [0, 0] + [-1] * 79
    assert sudoku_grids.count_solutions(clash) == 0
    assert sudoku_grids.count_solutions([-1] * 81, 4) == 4


def test_the_known_seventeen_given_puzzles_have_one_solution_each():
    for text_ in sudoku_grids.SEVENTEEN:
        (puzzle,) = sudoku_grids.parse(text_)
        assert sum(c >= 0 for c in puzzle) == 17 and sudoku_grids.count_solutions(puzzle, 2) == 1


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_symmetries_map_grids_to_grids_and_keep_givens(seed):
    rng = random.Random(seed)
    grid = sudoku_grids.random_grid(rng)
    cells, digits = sudoku_grids.symmetry(rng)
    assert sorted(cells) == list(range(81)) and sorted(digits) == list(range(9))
    moved = [0] * 81
    for source, target in enumerate(cells):
        moved[target] = digits[grid[source]]
    assert sudoku_grids.is_valid(moved)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), givens=st.integers(17, 20))
def test_sparse_puzzles_have_their_grid_as_only_solution(seed, givens):
    rng = random.Random(seed)
    puzzle, grid = sudoku_grids.seventeen(givens, rng)
    assert sum(c >= 0 for c in puzzle) == givens and sudoku_grids.is_valid(grid) and sudoku_grids.solves(grid, puzzle)
    assert sudoku_grids.count_solutions(puzzle, 2) == 1
    grid = sudoku_grids.random_grid(rng)
    searched = sudoku_grids.sparse_puzzle(grid, 17, random.Random(seed), tries=3)
    once = sudoku_grids.unique_puzzle(grid, 17, random.Random(seed))  # the search's first step
    assert sum(c >= 0 for c in searched) <= sum(c >= 0 for c in once)
    assert sudoku_grids.solves(grid, searched) and sudoku_grids.count_solutions(searched, 2) == 1


def test_held_out_puzzles_do_not_come_from_the_training_grids():
    train = {tuple(g) for g in sudoku.SudokuGrids(count=2000).load().parts["x"].tolist()}
    puzzles, solutions = sudoku.test_puzzles(200, givens=30)
    assert not train & {tuple(s) for s in solutions.tolist()}
    assert bool(((puzzles == sudoku.MASK).sum(1) == 51).all())
    assert sudoku.solved_fraction(solutions, puzzles) == 1.0
    assert sudoku.solved_fraction(torch.zeros_like(solutions), puzzles) == 0.0


def _tiny(method: str, **extra):
    overrides = {
        "network.d_model": 16,
        "network.layers": 1,
        "network.heads": 2,
        "train.steps": 2,
        "train.batch_size": 4,
    }
    overrides.update(extra)
    return dk.build(apply_overrides(dk.build(method).recipe, overrides))


def test_sudoku_method_solves_with_givens_held(tmp_path):
    pipeline = _tiny("masked:sudoku")
    written = pipeline.method.generate(pipeline, 3, tmp_path)
    report = Path(written[0]).read_text()
    assert report.startswith(("0.0%", "33.3%", "66.7%", "100.0%")) and "puzzle 2" in report
    puzzles, _ = sudoku.test_puzzles(3, 30)
    boards = sudoku.fill(pipeline, puzzles)
    given = puzzles != sudoku.MASK
    assert torch.equal(boards[given], puzzles[given]) and bool((boards < 9).all())


def test_text_corpus_encoding_and_held_out_split():
    assert text.decode(text.encode("To be, or not\tto be")) == "To be, or not to be"
    assert text.encode("é") == text.encode("?")
    train, test = text.Shakespeare().load(), text.Shakespeare(split="test").load()
    assert train.parts["x"].shape[1] == 128 and test.parts["x"].shape[1] == 128
    assert int(train.parts["x"].max()) < text.MASK and len(test) > 0
    held = text.texts("test")
    assert len(held) == 1 and held[0].lstrip().startswith("HAMLET")  # the fixture holds out Hamlet only


def test_bits_per_character_of_an_untrained_model_is_about_log2_of_the_vocabulary():
    pipeline = _tiny("masked:text")
    data = text.Shakespeare(split="test").load()
    bpc = text.bits_per_character(pipeline, dk.Data({"x": data.parts["x"][:16]}), times=4)
    # an untrained SUBS model spreads mass over 96 characters: the ELBO is near log2(96) = 6.6 bits
    assert 5.0 < bpc < 9.0


def test_text_method_writes_samples(tmp_path, capsys):
    pipeline = _tiny("masked:text")
    written = pipeline.method.generate(pipeline, 2, tmp_path)
    content = Path(written[0]).read_text(encoding="utf-8")
    assert content.count("\n\n----\n\n") == 1 and text.MASK_GLYPH not in content  # two samples, none masked
    assert capsys.readouterr().out.strip()


def test_cli_run_sudoku_trains_tiny_and_prints(tmp_path):
    from click.testing import CliRunner
    from diffusekit.cli import cli

    result = CliRunner().invoke(
        cli,
        [
            "run",
            "masked:sudoku",
            "--train",
            "--steps",
            "2",
            "--num",
            "2",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--set",
            "network.d_model=16",
            "--set",
            "network.layers=1",
            "--set",
            "network.heads=2",
            "--set",
            "dataset.count=50",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "held-out one-solution puzzles (30 givens) solved" in result.output
    assert (tmp_path / "sudoku.txt").is_file()
