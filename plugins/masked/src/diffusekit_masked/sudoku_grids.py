"""Sudoku grids and puzzles, generated here (no downloads).

Complete grids come from randomized backtracking with the most-constrained-cell rule
over bitmasks; a puzzle keeps ``givens`` cells of a held-out grid. A board is a list of
81 ints, 0-8 for the digits 1-9 (row-major).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

ALL = (1 << 9) - 1
ROW = [i // 9 for i in range(81)]
COL = [i % 9 for i in range(81)]
BOX = [(i // 27) * 3 + (i % 9) // 3 for i in range(81)]


def _fill(board: list[int], rows: list[int], cols: list[int], boxes: list[int], rng: random.Random) -> bool:
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
        return True
    digits = [d for d in range(9) if best_free >> d & 1]
    rng.shuffle(digits)
    r, c, b = ROW[best], COL[best], BOX[best]
    for d in digits:
        bit = 1 << d
        board[best] = d
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
        if _fill(board, rows, cols, boxes, rng):
            return True
        rows[r] &= ~bit
        cols[c] &= ~bit
        boxes[b] &= ~bit
    board[best] = -1
    return False


def random_grid(rng: random.Random) -> list[int]:
    """A uniformly shuffled valid complete grid."""
    board = [-1] * 81
    _fill(board, [0] * 9, [0] * 9, [0] * 9, rng)
    return board


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
    """``grid`` with all but ``givens`` random cells emptied (-1)."""
    keep = set(rng.sample(range(81), givens))
    return [v if i in keep else -1 for i, v in enumerate(grid)]


def show(board: Sequence[int]) -> str:
    """A 9×9 text picture (``.`` for an empty or masked cell)."""
    lines = []
    for r in range(9):
        if r and r % 3 == 0:
            lines.append("------+-------+------")
        cells = ["." if not 0 <= board[r * 9 + c] < 9 else str(board[r * 9 + c] + 1) for c in range(9)]
        lines.append(" | ".join(" ".join(cells[k : k + 3]) for k in (0, 3, 6)))
    return "\n".join(lines)
