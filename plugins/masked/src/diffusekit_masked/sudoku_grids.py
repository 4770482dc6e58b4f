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


EMPTY = "0._*"
IGNORED = "|+-"


def parse(text: str) -> list[list[int]]:
    """Puzzles from text (-1 = empty cell): 81 cells each, digits 1-9 given and ``0 . _ *`` empty,
    spaces and the ``| + -`` of :func:`show` ignored, ``#`` starting a comment. A puzzle ends after
    its 81st cell; blank lines may separate puzzles. Raises ``ValueError`` naming the line of the
    first problem: a stray character, a puzzle cut short, clashing givens."""
    puzzles: list[list[int]] = []
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
                cells = []
                first_line = number
    if cells:
        raise ValueError(f"puzzle {len(puzzles) + 1} (from line {first_line}) has {len(cells)} cells, not 81")
    for index, board in enumerate(puzzles, start=1):
        clash = _clash(board)
        if clash:
            raise ValueError(f"puzzle {index}: {clash}")
    return puzzles


def _clash(board: Sequence[int]) -> str | None:
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
