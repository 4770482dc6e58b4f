"""Benchmark 5: Sudoku solved by masked diffusion, by decoding order.

One model — the weights ``masked:sudoku`` ships — solves the same held-out puzzles
(grids from a generator seed the training set never uses) with three decoding orders,
one cell per network call. Two kinds of puzzle are cut from the same grids: ``givens``
random cells kept (often several solutions; any valid completion counts), and
one-solution puzzles (cells emptied only while the grid stays the only solution, down to
``givens`` where possible; the setting of the Sudoku literature). Orders:

- ``random``: vanilla masked-diffusion decoding, a uniformly random masked cell, its
  token sampled from the model (temperature 1);
- ``confidence``: the cell whose most likely digit is most likely (MaskGIT, LLaDA);
- ``adaptive``: the cell with the largest top-2 probability margin (Kim et al., "Train
  for the Worst, Plan for the Best", 2025).

A puzzle counts as solved when the board is a valid grid that keeps every given.
Reported with a Wilson 95% interval.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sudoku.py [--puzzles 500] [--givens 30] [--checkpoint FILE] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import diffusekit as dk
import torch
from common import environment
from diffusekit_masked import AdaptiveDecoding, ConfidenceDecoding, RandomOrderDecoding
from diffusekit_masked.sudoku import MASK, solve, solved_fraction, test_puzzles

ORDERS = {
    "random": RandomOrderDecoding(tokens_per_step=1),
    "confidence": ConfidenceDecoding(tokens_per_step=1),
    "adaptive": AdaptiveDecoding(tokens_per_step=1),
}


def wilson(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puzzles", type=int, default=500)
    parser.add_argument("--givens", type=int, default=30)
    parser.add_argument("--checkpoint", type=str, default=None, help="other weights than the shipped ones")
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    print(environment())
    pipeline = dk.load(args.checkpoint) if args.checkpoint else dk.pretrained("masked:sudoku")
    rows = []
    for unique in (False, True):
        puzzles, _ = test_puzzles(args.puzzles, args.givens, unique=unique)
        kind = "one-solution" if unique else "random-cut"
        mean_givens = float((puzzles != MASK).sum(1).double().mean())
        print(f"{args.puzzles} held-out {kind} puzzles, {mean_givens:.1f} givens on average")
        for name, sampler in ORDERS.items():
            start = time.perf_counter()
            boards = solve(pipeline, puzzles, sampler=sampler, seed=0)
            wall = time.perf_counter() - start
            share = solved_fraction(boards, puzzles)
            low, high = wilson(share, args.puzzles)
            rows.append({"puzzles": kind, "givens": mean_givens, "order": name, "solved": share, "ci95": [low, high]})
            rows[-1]["wall_s"] = wall
            print(f"  {name:11s} solved {share:6.1%}  (95% CI {low:.1%}-{high:.1%})  {wall:6.1f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"environment": environment(), "puzzles": args.puzzles, "givens": args.givens, "orders": rows},
                f,
                indent=1,
            )


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
