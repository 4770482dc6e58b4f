"""Sudoku by masked diffusion: learn valid grids, solve puzzles by infilling.

The denoiser is trained on random complete grids (no puzzles needed: masked diffusion
sees every masking pattern). A puzzle is solved by holding its givens at t = 0 and
decoding the empty cells — with the adaptive order of Kim et al. ("Train for the Worst,
Plan for the Best", 2025) the model fills the cells it is surest of first.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from attrs import validators as v
from diffusekit import (
    ComponentSpec,
    Data,
    Dataset,
    InputError,
    Method,
    PartSpec,
    Recipe,
    SampleConfig,
    TimePlan,
    packaged_weights,
)

from diffusekit_masked import sudoku_grids
from diffusekit_masked.networks import transformer_training

MASK = 9
TEST_SEED = 2_026_112_2  # held-out grids come from a generator the training set never uses


@attrs.frozen
class SudokuGrids(Dataset):
    """Random valid complete 9×9 Sudoku grids (cells 0-8 for the digits 1-9), made by randomized backtracking."""

    count: int = attrs.field(default=1000, validator=v.ge(1))
    seed: int = 0

    def load(self) -> Data:
        rng = random.Random(self.seed)
        grids = [sudoku_grids.random_grid(rng) for _ in range(self.count)]
        return Data({"x": torch.tensor(grids, dtype=torch.long)})


def test_puzzles(
    num: int, givens: int, seed: int = TEST_SEED, unique: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` held-out puzzles (mask token for empty cells) and the grids they were cut from.

    ``unique``: each puzzle has its grid as the only solution (cells emptied only while that
    holds); otherwise ``givens`` random cells are kept and any valid completion solves it.
    """
    rng = random.Random(seed)
    grids = [sudoku_grids.random_grid(rng) for _ in range(num)]
    cut = sudoku_grids.unique_puzzle if unique else sudoku_grids.puzzle
    puzzles = [cut(g, givens, rng) for g in grids]
    tokens = torch.tensor([[MASK if c < 0 else c for c in p] for p in puzzles], dtype=torch.long)
    return tokens, torch.tensor(grids, dtype=torch.long)


def fill(
    pipeline: Any, puzzles: torch.Tensor, sampler: Any = None, seed: int = 0, progress: bool = False
) -> torch.Tensor:
    """Fill the masked cells of ``puzzles`` (tokens, :data:`MASK` empty), the givens held at t = 0."""
    sampler = sampler or pipeline.sampler
    given = puzzles != MASK
    plan = TimePlan.from_grid(pipeline.grid, pipeline.denoiser.schedules).hold("x", given)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return sampler.sample(pipeline.denoiser, puzzles, plan, generator=generator, progress=progress)


Puzzle = str | Sequence[int] | Sequence[Sequence[int]]


def encode(puzzles: Puzzle | Sequence[Puzzle]) -> torch.Tensor:
    """Puzzles in the common conventions as the model's tokens (digits 1-9 are tokens 0-8, empty
    cells the mask token): a string of 81 cells (1-9 given, ``0 . _ *`` empty, spaces and
    ``| + -`` ignored), 81 ints or 9 rows of 9 ints (1-9 given, 0 empty), or a list of these.
    Raises ``ValueError`` naming the puzzle and what is wrong (clashing givens included)."""
    listed, single = _as_list(puzzles)
    if not listed:
        raise ValueError("no puzzle given")
    boards = []
    for index, p in enumerate(listed, start=1):
        where = "the puzzle" if single else f"puzzle {index}"
        if isinstance(p, str):
            try:
                parsed = sudoku_grids.parse(p)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if len(parsed) != 1:
                raise ValueError(f"{where}: {len(parsed)} puzzles in one string (81 cells make one)")
            boards.append(parsed[0])
            continue
        cells = [c for row in p for c in row] if len(p) == 9 and all(_is_int_row(r) for r in p) else list(p)
        if len(cells) != 81:
            raise ValueError(f"{where} has {len(cells)} cells, not 81 (or 9 rows of 9)")
        bad = next(
            (i for i, c in enumerate(cells) if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 9), None
        )
        if bad is not None:
            raise ValueError(f"{where}, cell {bad + 1}: {cells[bad]!r} is not 1-9 (given) or 0 (empty)")
        board = [c - 1 for c in cells]
        clash = sudoku_grids.clash(board)
        if clash:
            raise ValueError(f"{where}: {clash}")
        boards.append(board)
    return torch.tensor([[MASK if c < 0 else c for c in b] for b in boards], dtype=torch.long)


def _as_list(puzzles: Any) -> tuple[list[Any], bool]:
    """``puzzles`` as a list of puzzles, and whether it was one puzzle."""
    if isinstance(puzzles, str):
        return [puzzles], True
    items = list(puzzles)
    one = bool(items) and (
        not isinstance(items[0], (str, list, tuple)) or (len(items) == 9 and all(map(_is_int_row, items)))
    )
    return ([items] if one else items), one


def _is_int_row(row: Any) -> bool:
    return isinstance(row, (list, tuple)) and len(row) == 9 and all(isinstance(c, int) for c in row)


def decode(boards: torch.Tensor) -> list[str]:
    """Boards of tokens as 81-character strings (``.`` for a cell left masked)."""
    return ["".join("." if not 0 <= c < 9 else str(c + 1) for c in b) for b in boards.tolist()]


def solve(
    puzzles: Puzzle | Sequence[Puzzle], *, pipeline: Any = None, sampler: Any = None, seed: int = 0
) -> str | list[str]:
    """Solve Sudoku puzzles with the shipped model (or ``pipeline``): each answer is an
    81-character string of digits 1-9. A single puzzle gives a single string, a list a list.

    Puzzles may be written in any convention :func:`encode` reads (``"53..7...."``, 81 ints
    with 0 for empty, 9 rows of 9). The default decoding is adaptive order; ``sampler`` (e.g.
    ``diffusekit.build("sampler", "masked:beam")``) takes another. The model is a network, not
    a rule solver: check an answer with :func:`is_solution`."""
    from diffusekit import pretrained

    tokens = encode(puzzles)
    boards = decode(fill(pipeline or pretrained("masked:sudoku"), tokens, sampler=sampler, seed=seed))
    return boards[0] if _as_list(puzzles)[1] else boards


def is_solution(puzzle: Puzzle, answer: str | Sequence[int]) -> bool:
    """Whether ``answer`` (81 digits 1-9, as a string or ints) is a valid grid keeping ``puzzle``'s givens."""
    board = [int(c) - 1 for c in answer] if isinstance(answer, str) else [c - 1 for c in answer]
    return sudoku_grids.solves(board, [c if c != MASK else -1 for c in encode(puzzle)[0].tolist()])


def solved_fraction(boards: torch.Tensor, puzzles: torch.Tensor) -> float:
    """How many boards are valid grids that keep their puzzle's givens."""
    hits = [
        sudoku_grids.solves(b.tolist(), [c if c != MASK else -1 for c in p.tolist()])
        for b, p in zip(boards, puzzles, strict=True)
    ]
    return sum(hits) / len(hits)


@attrs.frozen
class SudokuMethod(Method):
    """Solve 9×9 Sudoku with a masked-diffusion transformer and adaptive-order decoding.

    ``diffusekit run masked:sudoku`` generates held-out puzzles (``sample.num`` of them,
    30 givens, each with one solution), solves them with the shipped weights and prints a
    few with the share solved; ``--set sampler=masked:random_order`` or
    ``masked:confidence`` compares orders. ``unique=False`` keeps ``givens`` random cells
    instead (several solutions may then exist; any valid one counts).
    """

    givens: int = attrs.field(default=30, validator=[v.ge(17), v.le(80)])
    unique: bool = True

    input_format = "puzzles as text: 81 cells each, digits 1-9 given and 0 or . empty (the layout of sudoku.txt works)"

    def recipe(self) -> Recipe:
        return Recipe(
            parts={
                "x": PartSpec(
                    shape=(81,),
                    schedule=ComponentSpec("masked:absorbing", {"num_classes": 10}),
                    parameterization=ComponentSpec("masked:subs"),
                )
            },
            network=ComponentSpec(
                "masked:transformer",
                {"num_classes": 10, "length": 81, "d_model": 128, "layers": 8, "heads": 4, "positions": "sudoku"},
            ),
            sampler=ComponentSpec("masked:adaptive", {"tokens_per_step": 1}),
            grid=ComponentSpec("core:uniform", {"steps": 81}),
            dataset=ComponentSpec("masked:sudoku_grids", {"count": 100_000}),
            method="masked:sudoku",
            seed=2,
            # 8 layers for 8,000 steps with cosine decay beat 4 layers for 16,000 at the same compute
            # (docs/benchmarks.md, section 5.1)
            train=attrs.evolve(transformer_training(steps=8000), lr_schedule="cosine", lr_min=1e-5),
            sample=SampleConfig(num=100, batch_size=500),
        )

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_masked", "sudoku")

    def write_outputs(self, samples, condition, out_dir: Path) -> list[Path]:
        path = out_dir / "grids.txt"
        path.write_text("\n\n".join(sudoku_grids.show(b.tolist()) for b in samples), encoding="utf-8")
        return [path]

    def generate(self, pipeline: Any, num: int, out_dir: Path, progress: bool = False) -> list[Path]:
        puzzles, _ = test_puzzles(num, self.givens, unique=self.unique)
        kind = "one-solution " if self.unique else ""
        return self._report(pipeline, puzzles, out_dir, f"held-out {kind}puzzles ({self.givens} givens)", progress)

    def read_input(self, path: Path, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
        """Puzzles from a text file (:func:`sudoku_grids.parse`); the givens are the known cells."""
        try:
            puzzles = sudoku_grids.parse(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
            raise InputError(f"{path}: {exc}") from None
        if not puzzles:
            raise InputError(f"{path}: no puzzle in it (81 cells each: 1-9 given, 0 or . empty)")
        tokens = torch.tensor([[MASK if c < 0 else c for c in p] for p in puzzles], dtype=torch.long)
        return tokens, tokens != MASK

    def complete(self, pipeline: Any, given: Any, known: Any, out_dir: Path, progress: bool = False) -> list[Path]:
        return self._report(pipeline, given, out_dir, "puzzles", progress)

    def _report(self, pipeline: Any, puzzles: torch.Tensor, out_dir: Path, what: str, progress: bool) -> list[Path]:
        """Solve ``puzzles``; print a few and the share solved; write the report (``sudoku.txt``),
        the answers one per line in the 81-character format (``solutions.txt``) and a picture of
        the first :data:`PICTURED` (``sudoku.png``)."""
        num = len(puzzles)
        boards = fill(pipeline, puzzles, progress=progress)
        share = solved_fraction(boards, puzzles)
        blocks, oks = [], []
        for i, (p, b) in enumerate(zip(puzzles, boards, strict=True)):
            oks.append(sudoku_grids.solves(b.tolist(), [c if c != MASK else -1 for c in p.tolist()]))
            left, right = sudoku_grids.show(p.tolist()).splitlines(), sudoku_grids.show(b.tolist()).splitlines()
            rows = "\n".join(f"{a}    {c}" for a, c in zip(left, right, strict=True))
            blocks.append(f"puzzle {i}: {'solved' if oks[-1] else 'NOT solved'}\n{rows}")
        report = out_dir / "sudoku.txt"
        summary = f"{share:.1%} of {num} {what} solved"
        report.write_text(summary + "\n\n" + "\n\n".join(blocks) + "\n", encoding="utf-8")
        answers = out_dir / "solutions.txt"
        answers.write_text("\n".join(decode(boards)) + "\n", encoding="utf-8")
        picture = out_dir / "sudoku.png"
        draw(puzzles[:PICTURED], boards[:PICTURED], picture)
        print("\n\n".join(blocks[:3]) + f"\n\n{summary}")
        return [report, answers, picture]


PICTURED = 24  # boards in the picture of a run


def draw(puzzles: torch.Tensor, boards: torch.Tensor, path: Path, columns: int = 6) -> None:
    """A PNG of ``boards``: given digits black, filled ones blue, a filled digit that repeats in
    its row, column or box red (so a board that is not solved shows where)."""
    from PIL import Image, ImageDraw, ImageFont

    cell, gap = 24, 12
    side = 9 * cell
    rows = -(-len(boards) // columns)
    width = min(len(boards), columns) * (side + gap) + gap
    image = Image.new("RGB", (width, rows * (side + gap) + gap), "white")
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=cell * 3 // 4)
    for n, (p, b) in enumerate(zip(puzzles.tolist(), boards.tolist(), strict=True)):
        x0, y0 = gap + (n % columns) * (side + gap), gap + (n // columns) * (side + gap)
        for i in range(10):  # thin lines, thick on the box borders
            w = 2 if i % 3 == 0 else 1
            pen.line([(x0 + i * cell, y0), (x0 + i * cell, y0 + side)], fill="black", width=w)
            pen.line([(x0, y0 + i * cell), (x0 + side, y0 + i * cell)], fill="black", width=w)
        wrong = _repeated(b)
        for i, digit in enumerate(b):
            if not 0 <= digit < 9:
                continue
            colour = "black" if p[i] != MASK else ("red" if i in wrong else "royalblue")
            centre = (x0 + (i % 9) * cell + cell / 2, y0 + (i // 9) * cell + cell / 2)
            pen.text(centre, str(digit + 1), fill=colour, font=font, anchor="mm")
    image.save(path)


def _repeated(board: list[int]) -> set[int]:
    """Cells whose digit appears again in their row, column or box."""
    out = set()
    for index in (sudoku_grids.ROW, sudoku_grids.COL, sudoku_grids.BOX):
        for i in range(81):
            for j in range(i + 1, 81):
                if index[i] == index[j] and board[i] == board[j] and 0 <= board[i] < 9:
                    out.update((i, j))
    return out
