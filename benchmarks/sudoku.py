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
import random
import sys
import time
from pathlib import Path

import diffusekit as dk
import torch
from common import Counting, environment
from diffusekit_masked import AdaptiveDecoding, ConfidenceDecoding, RandomOrderDecoding, sudoku_grids
from diffusekit_masked.sudoku import MASK, TEST_SEED, fill, solved_fraction, test_puzzles

# the per-givens table: one-solution puzzles, by how many cells are given
BINS = ((17, 20), (21, 23), (24, 26), (27, 29), (30, 32))
QUICKEST_FIRST = ((30, 32), (27, 29), (24, 26), (17, 20), (21, 23))
POOL = Path(__file__).with_name("sudoku_puzzles.txt")

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
            boards = fill(pipeline, puzzles, sampler=sampler, seed=0)
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


def sampler_from(spec: str):
    """``[LABEL=]NAME[{json parameters}]``, e.g. ``beam8=masked:beam{"beams": 8}`` -> (label, sampler)."""
    label, _, rest = spec.rpartition("=") if "=" in spec.split("{", 1)[0] else ("", "", spec)
    name, brace, params = rest.partition("{")
    sampler = dk.get_registry().resolve("sampler", name).obj(**(json.loads(brace + params) if brace else {}))
    return label or rest, sampler


def by_givens(pool: Path, specs: list[str], per_bin: int, checkpoint: str | None, out: str | None, bins=BINS) -> None:
    """The per-givens table: each sampler solves the same held-out one-solution puzzles of every
    bin (the first ``per_bin`` of ``pool`` in each); solved share with a Wilson 95% interval and
    network calls per puzzle (each call on one board counts once)."""
    print(environment())
    pipeline = dk.load(checkpoint) if checkpoint else dk.pretrained("masked:sudoku")
    puzzles = sudoku_grids.parse(pool.read_text(encoding="utf-8"))
    rows = []
    for lo, hi in bins:
        chosen = [p for p in puzzles if lo <= sum(c >= 0 for c in p) <= hi][:per_bin]
        tokens = torch.tensor([[MASK if c < 0 else c for c in p] for p in chosen], dtype=torch.long)
        for spec in specs:
            label, sampler = sampler_from(spec)
            counting = Counting(pipeline.denoiser)
            start = time.perf_counter()
            boards = sampler.sample(
                counting,
                tokens,
                dk.TimePlan.from_grid(pipeline.grid, pipeline.denoiser.schedules).hold("x", tokens != MASK),
                generator=torch.Generator().manual_seed(0),
            )
            wall = time.perf_counter() - start
            share = solved_fraction(boards, tokens)
            low, high = wilson(share, len(chosen))
            calls = counting.rows / len(chosen)
            rows.append(
                {"givens": [lo, hi], "puzzles": len(chosen), "sampler": label, "solved": share, "ci95": [low, high]}
            )
            rows[-1] |= {"calls_per_puzzle": calls, "wall_s": wall}
            print(
                f"{lo}-{hi} givens ({len(chosen)}): {label:24s} solved {share:6.1%} ({low:.1%}-{high:.1%})  "
                f"{calls:6.0f} calls/puzzle  {wall:6.1f} s",
                flush=True,
            )
    if out:
        Path(out).write_text(json.dumps({"environment": environment(), "rows": rows}, indent=1), encoding="utf-8")


def make_puzzles(out: Path, per_bin: int, seed: int, minutes: float, tries: int) -> None:
    """Held-out one-solution puzzles for every bin of :data:`BINS`, appended to ``out`` as they
    are found (81 characters a line, ``.`` empty). Grids come from ``seed`` (neither the
    training seed nor the test seed). Bins from 24 givens up cut a grid down to a random
    target in the bin (:func:`sudoku_grids.unique_puzzle`); 17-20 givens are known 17-given
    puzzles under random symmetries with random cells of their grid added
    (:func:`sudoku_grids.seventeen`: random grids almost never have one-solution puzzles that
    sparse); 21-23 take what the local search of :func:`sudoku_grids.sparse_puzzle` reaches
    within ``tries``. Until ``per_bin`` are found in each bin or ``minutes`` have passed."""
    have = {b: 0 for b in BINS}
    if out.exists():
        for p in sudoku_grids.parse(out.read_text(encoding="utf-8")):
            b = _bin(sum(c >= 0 for c in p))
            if b:
                have[b] += 1
    rng = random.Random(seed)
    deadline = time.monotonic() + 60 * minutes
    with out.open("a", encoding="utf-8") as f:
        if not out.stat().st_size:
            f.write(
                f"# held-out one-solution puzzles: python sudoku.py puzzles --seed {seed} (grids never trained on)\n"
            )
        while time.monotonic() < deadline and any(n < per_bin for n in have.values()):
            grid = sudoku_grids.random_grid(rng)
            low = next(b for b in QUICKEST_FIRST if have[b] < per_bin)
            if low[0] >= 24:
                puzzle = sudoku_grids.unique_puzzle(grid, rng.randint(*low), rng)
            elif low == (17, 20):
                puzzle, _ = sudoku_grids.seventeen(rng.randint(*low), rng)
            else:
                puzzle = sudoku_grids.sparse_puzzle(grid, low[0], rng, tries=tries)
            b = _bin(sum(c >= 0 for c in puzzle))
            if b is None or have[b] >= per_bin:
                continue
            have[b] += 1
            f.write("".join("." if c < 0 else str(c + 1) for c in puzzle) + "\n")
            f.flush()
            print(" ".join(f"{lo}-{hi}:{have[(lo, hi)]}" for lo, hi in BINS), flush=True)


def _bin(givens: int) -> tuple[int, int] | None:
    return next((b for b in BINS if b[0] <= givens <= b[1]), None)


if __name__ == "__main__":
    if sys.argv[1:2] == ["puzzles"]:
        parser = argparse.ArgumentParser(description="held-out puzzles for the per-givens table")
        parser.add_argument("--out", type=Path, default=POOL)
        parser.add_argument("--per-bin", type=int, default=200)
        parser.add_argument("--seed", type=int, default=TEST_SEED + 1)
        parser.add_argument("--minutes", type=float, default=60.0)
        parser.add_argument("--tries", type=int, default=200)
        a = parser.parse_args(sys.argv[2:])
        make_puzzles(a.out, a.per_bin, a.seed, a.minutes, a.tries)
        sys.exit(0)
    if sys.argv[1:2] == ["givens"]:
        parser = argparse.ArgumentParser(description="solved share by number of givens, per sampler")
        parser.add_argument("--pool", type=Path, default=POOL)
        parser.add_argument("--sampler", action="append", dest="samplers", help="[LABEL=]NAME[{json}] (repeatable)")
        parser.add_argument("--per-bin", type=int, default=200)
        parser.add_argument("--checkpoint", default=None)
        parser.add_argument("--json", default=None)
        parser.add_argument("--bins", nargs="*", default=None, help="e.g. 24-26 (default: all)")
        a = parser.parse_args(sys.argv[2:])
        torch.set_grad_enabled(False)
        bins = tuple(tuple(map(int, b.split("-"))) for b in a.bins) if a.bins else BINS
        default = ['adaptive=masked:adaptive{"tokens_per_step": 1}']
        by_givens(a.pool, a.samplers or default, a.per_bin, a.checkpoint, a.json, bins)
        sys.exit(0)
    torch.set_grad_enabled(False)
    main()
