"""Sudoku by masked diffusion: learn valid grids, solve puzzles by infilling.

The denoiser is trained on random complete grids (no puzzles needed: masked diffusion
sees every masking pattern). A puzzle is solved by holding its givens at t = 0 and
decoding the empty cells — with the adaptive order of Kim et al. ("Train for the Worst,
Plan for the Best", 2025) the model fills the cells it is surest of first.
"""

from __future__ import annotations

import random
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


def solve(
    pipeline: Any, puzzles: torch.Tensor, sampler: Any = None, seed: int = 0, progress: bool = False
) -> torch.Tensor:
    """Fill the masked cells of ``puzzles``, the givens held at t = 0."""
    sampler = sampler or pipeline.sampler
    given = puzzles != MASK
    plan = TimePlan.from_grid(pipeline.grid, pipeline.denoiser.schedules).hold("x", given)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return sampler.sample(pipeline.denoiser, puzzles, plan, generator=generator, progress=progress)


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
                {"num_classes": 10, "length": 81, "d_model": 128, "layers": 4, "heads": 4, "positions": "sudoku"},
            ),
            sampler=ComponentSpec("masked:adaptive", {"tokens_per_step": 1}),
            grid=ComponentSpec("core:uniform", {"steps": 81}),
            dataset=ComponentSpec("masked:sudoku_grids", {"count": 100_000}),
            method="masked:sudoku",
            seed=0,
            train=transformer_training(steps=16000),
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
        """Solve ``puzzles``, print a few and the share solved, write all to ``sudoku.txt``."""
        num = len(puzzles)
        boards = solve(pipeline, puzzles, progress=progress)
        share = solved_fraction(boards, puzzles)
        blocks = []
        for i, (p, b) in enumerate(zip(puzzles, boards, strict=True)):
            ok = sudoku_grids.solves(b.tolist(), [c if c != MASK else -1 for c in p.tolist()])
            left, right = sudoku_grids.show(p.tolist()).splitlines(), sudoku_grids.show(b.tolist()).splitlines()
            rows = "\n".join(f"{a}    {c}" for a, c in zip(left, right, strict=True))
            blocks.append(f"puzzle {i}: {'solved' if ok else 'NOT solved'}\n{rows}")
        path = out_dir / "sudoku.txt"
        summary = f"{share:.1%} of {num} {what} solved"
        path.write_text(summary + "\n\n" + "\n\n".join(blocks) + "\n", encoding="utf-8")
        print("\n\n".join(blocks[:3]) + f"\n\n{summary}")
        return [path]
