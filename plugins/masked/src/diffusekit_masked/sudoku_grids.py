"""Sudoku grids and puzzles, generated here (no downloads).

Complete grids come from randomized backtracking with the most-constrained-cell rule
over bitmasks; a puzzle keeps ``givens`` cells of a held-out grid, either at random or,
for :func:`unique_puzzle`, only such that the grid stays the one solution. A board is a list of
81 ints, 0-8 for the digits 1-9 (row-major).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

ALL = (1 << 9) - 1
ROW = [i // 9 for i in range(81)]
COL = [i % 9 for i in range(81)]
BOX = [(i // 27) * 3 + (i % 9) // 3 for i in range(81)]


def _search(
    board: list[int], rows: list[int], cols: list[int], boxes: list[int], rng: random.Random | None, limit: int
) -> int:
    """Backtracking over the most constrained empty cell; counts completions up to ``limit``.

    Digits are tried in random order when ``rng`` is given. On reaching ``limit`` the board
    is left holding the last completion found (what :func:`random_grid` wants).
    """
    best, best_free, best_count = -1, 0, 10
    for i in range(81):
        if board[i] < 0:
            free = ALL & ~(rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]])
            count = bin(free).count("1")
            if count < best_count:
                best, best_free, best_count = i, free, count
                if count <= 1:
                    break
    if best < 0:
        return 1
    digits = [d for d in range(9) if best_free >> d & 1]
    if rng is not None:
        rng.shuffle(digits)
    r, c, b = ROW[best], COL[best], BOX[best]
    found = 0
    for d in digits:
        bit = 1 << d
        board[best] = d
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
        found += _search(board, rows, cols, boxes, rng, limit - found)
        if found >= limit:
            return found
        rows[r] &= ~bit
        cols[c] &= ~bit
        boxes[b] &= ~bit
    board[best] = -1
    return found


def random_grid(rng: random.Random) -> list[int]:
    """A uniformly shuffled valid complete grid."""
    board = [-1] * 81
    _search(board, [0] * 9, [0] * 9, [0] * 9, rng, 1)
    return board


def count_solutions(puzzle: Sequence[int], limit: int = 2) -> int:
    """How many valid grids keep the givens of ``puzzle`` (-1 = empty), counted up to ``limit``."""
    board, rows, cols, boxes = list(puzzle), [0] * 9, [0] * 9, [0] * 9
    for i, v in enumerate(board):
        if v >= 0:
            bit = 1 << v
            if (rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]]) & bit:
                return 0  # the givens already clash
            rows[ROW[i]] |= bit
            cols[COL[i]] |= bit
            boxes[BOX[i]] |= bit
    return _search(board, rows, cols, boxes, None, limit)


def is_valid(board: Sequence[int]) -> bool:
    """Whether a complete board satisfies every row, column and box constraint."""
    if len(board) != 81 or any(not 0 <= v < 9 for v in board):
        return False
    for unit in range(9):
        for index in (ROW, COL, BOX):
            if len({board[i] for i in range(81) if index[i] == unit}) != 9:
                return False
    return True


def solves(board: Sequence[int], puzzle: Sequence[int]) -> bool:
    """A valid complete board that keeps every given of ``puzzle`` (-1 = empty)."""
    return is_valid(board) and all(p < 0 or p == b for p, b in zip(puzzle, board, strict=True))


def puzzle(grid: Sequence[int], givens: int, rng: random.Random) -> list[int]:
    """``grid`` with all but ``givens`` random cells emptied (-1); it may have several solutions."""
    keep = set(rng.sample(range(81), givens))
    return [v if i in keep else -1 for i, v in enumerate(grid)]


def unique_puzzle(grid: Sequence[int], givens: int, rng: random.Random) -> list[int]:
    """A puzzle whose only solution is ``grid``: cells are emptied in random order, each only
    if the solution stays unique, until ``givens`` remain (or no further cell can go, which
    leaves more givens; below about 25 that happens often)."""
    board = list(grid)
    order = list(range(81))
    rng.shuffle(order)
    filled = 81
    for cell in order:
        if filled == givens:
            break
        board[cell] = -1
        if count_solutions(board, 2) == 1:
            filled -= 1
        else:
            board[cell] = grid[cell]
    return board


def _minimise(board: list[int], rng: random.Random) -> list[int]:
    """Empty every given, in random order, whose removal keeps the solution unique."""
    cells = [i for i in range(81) if board[i] >= 0]
    rng.shuffle(cells)
    for cell in cells:
        value, board[cell] = board[cell], -1
        if count_solutions(board, 2) != 1:
            board[cell] = value
    return board


def sparse_puzzle(grid: Sequence[int], givens: int, rng: random.Random, tries: int = 200) -> list[int]:
    """A one-solution puzzle of ``grid`` with as few givens as a local search finds, stopping at
    ``givens``: from a minimal puzzle (:func:`unique_puzzle`), each try swaps a random given for
    a random empty cell and, when the solution stays unique, minimises again; the result is kept
    when it has no more givens than before (so the search also walks along plateaus).

    One pass of :func:`unique_puzzle` ends at 22-27 givens; a few hundred tries reach 20-22 on
    most grids. Fewer is rare: most grids have no puzzle with 17 givens at all (16 never
    suffice: McGuire, Tugemann and Civario, 2012)."""
    board = unique_puzzle(grid, givens, rng)
    count = sum(c >= 0 for c in board)
    for _ in range(tries):
        if count <= givens:
            break
        filled = [i for i in range(81) if board[i] >= 0]
        empty = [i for i in range(81) if board[i] < 0]
        candidate = list(board)
        out, back = rng.choice(filled), rng.choice(empty)
        candidate[out], candidate[back] = -1, grid[back]
        if count_solutions(candidate, 2) != 1:
            continue
        candidate = _minimise(candidate, rng)
        fewer = sum(c >= 0 for c in candidate)
        if fewer <= count:
            board, count = candidate, fewer
    return board


# Puzzles with 17 givens, the fewest that can determine a grid (McGuire, Tugemann and Civario,
# 2012): the first is the brute-force-resistant example of Wikipedia's "Sudoku solving
# algorithms", the others open Gordon Royle's collection of 17-clue puzzles. Each is checked
# to have one solution (tests); :func:`seventeen` varies them by the symmetries of Sudoku.
SEVENTEEN = (
    "..............3.85..1.2.......5.7.....4...1...9.......5......73..2.1........4...9",
    "000000010400000000020000000000050407008000300001090000300400200050100000000806000",
    "000000010400000000020000000000050604008000300001090000300400200050100000000807000",
    "000000012000035000000600070700000300000400800100000000000120000080000040050000600",
    "000000012003600000000007000410020000000500300700000600280000040000300500000000000",
    "000000012008030000000000040120500000000004700060000000507000300000620000000100000",
    "000000012040050000000009000070600400000100000000000050000087500601000300200000000",
    "000000012050400000000000030700600400001000000000080000920000800000510700000003000",
    "000000012300000060000040000900000500000001070020000000000350400001400800060000000",
    "000000012400090000000000050070200000600000400000108000018000000000030700502000000",
    "000000012500008000000700000600120000700000450000030000030000800000500700020000000",
    "000000012700060000000000050080200000600000400000109000019000000000030800502000000",
)


def solution(puzzle: Sequence[int]) -> list[int] | None:
    """A completion of ``puzzle`` (-1 = empty), or ``None`` if it has none."""
    board, rows, cols, boxes = list(puzzle), [0] * 9, [0] * 9, [0] * 9
    for i, v in enumerate(board):
        if v >= 0:
            rows[ROW[i]] |= 1 << v
            cols[COL[i]] |= 1 << v
            boxes[BOX[i]] |= 1 << v
    if clash(board) or not _search(board, rows, cols, boxes, None, 1):
        return None
    return board


def symmetry(rng: random.Random) -> tuple[list[int], list[int]]:
    """A random symmetry of Sudoku: where each cell goes (a permutation of the 81 cells made of
    band, row-in-band, stack and column-in-stack permutations and a transposition) and a
    relabelling of the digits. It maps grids to grids and one-solution puzzles to one-solution
    puzzles with as many givens."""

    def lines() -> list[int]:
        bands = rng.sample(range(3), 3)
        return [3 * b + r for b in bands for r in rng.sample(range(3), 3)]

    rows, cols, flip = lines(), lines(), rng.random() < 0.5
    cells = [(rows[r] * 9 + cols[c]) if not flip else (cols[c] * 9 + rows[r]) for r in range(9) for c in range(9)]
    return cells, rng.sample(range(9), 9)


def seventeen(givens: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """A one-solution puzzle with ``givens`` (17-20) cells and its grid: one of :data:`SEVENTEEN`
    under a random :func:`symmetry`, with ``givens - 17`` random cells of its grid added."""
    index = rng.randrange(len(SEVENTEEN))
    base, grid = parse(SEVENTEEN[index])[0], _seventeen_grid(index)
    cells, digits = symmetry(rng)
    moved_puzzle, moved_grid = [-1] * 81, [-1] * 81
    for source, target in enumerate(cells):
        moved_grid[target] = digits[grid[source]]
        moved_puzzle[target] = digits[base[source]] if base[source] >= 0 else -1
    for cell in rng.sample([i for i in range(81) if moved_puzzle[i] < 0], givens - 17):
        moved_puzzle[cell] = moved_grid[cell]
    return moved_puzzle, moved_grid


_GRIDS: dict[int, list[int]] = {}


def _seventeen_grid(index: int) -> list[int]:
    """The one solution of ``SEVENTEEN[index]`` (computed once; up to a few seconds)."""
    if index not in _GRIDS:
        _GRIDS[index] = solution(parse(SEVENTEEN[index])[0])  # type: ignore[assignment]
    return _GRIDS[index]


EMPTY = "0._*"
IGNORED = "|+-"


def parse(text: str) -> list[list[int]]:
    """Puzzles from text (-1 = empty cell): 81 cells each, digits 1-9 given and ``0 . _ *`` empty,
    spaces and the ``| + -`` of :func:`show` ignored, ``#`` starting a comment. A puzzle ends after
    its 81st cell; blank lines may separate puzzles. Raises ``ValueError`` naming the line of the
    first problem: a stray character, a puzzle cut short, clashing givens."""
    puzzles: list[list[int]] = []
    starts: list[int] = []  # the line each puzzle begins on
    cells: list[int] = []
    first_line = 0
    for number, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0]
        if not body.strip():
            if cells:
                raise ValueError(f"puzzle {len(puzzles) + 1} (from line {first_line}) has {len(cells)} cells, not 81")
            continue
        if not cells:
            first_line = number
        for column, char in enumerate(body, start=1):
            if char.isspace() or char in IGNORED:
                continue
            if char in EMPTY:
                cells.append(-1)
            elif char in "123456789":
                cells.append(int(char) - 1)
            else:
                raise ValueError(f"line {number}, column {column}: {char!r} is not a cell (1-9, or 0 . _ for empty)")
            if len(cells) == 81:
                puzzles.append(cells)
                starts.append(first_line)
                cells = []
                first_line = number
    if cells:
        raise ValueError(f"puzzle {len(puzzles) + 1} (from line {first_line}) has {len(cells)} cells, not 81")
    for index, (board, line) in enumerate(zip(puzzles, starts, strict=True), start=1):
        problem = clash(board)
        if problem:
            raise ValueError(f"puzzle {index} (line {line}): {problem}")
    return puzzles


def clash(board: Sequence[int]) -> str | None:
    """The first pair of equal givens in one row, column or box, in words."""
    for index, unit_name in ((ROW, "row"), (COL, "column"), (BOX, "box")):
        seen: dict[tuple[int, int], int] = {}
        for i, v in enumerate(board):
            if v >= 0:
                if (index[i], v) in seen:
                    return f"two {v + 1}s in {unit_name} {index[i] + 1}"
                seen[index[i], v] = i
    return None


def show(board: Sequence[int]) -> str:
    """A 9×9 text picture (``.`` for an empty or masked cell)."""
    lines = []
    for r in range(9):
        if r and r % 3 == 0:
            lines.append("------+-------+------")
        cells = ["." if not 0 <= board[r * 9 + c] < 9 else str(board[r * 9 + c] + 1) for c in range(9)]
        lines.append(" | ".join(" ".join(cells[k : k + 3]) for k in (0, 3, 6)))
    return "\n".join(lines)
