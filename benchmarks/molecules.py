"""Molecules benchmarks: sample quality, samplers at equal stability, the likelihood bound.

* ``quality``  — ``--num`` molecules of the shipped ``molecules:qm9`` model (or ``--checkpoint``)
  with one sampler: atom and molecule stability (EDM's rule), RDKit validity, uniqueness and
  novelty against QM9's training split, molecules per second; with ``--data`` the same numbers
  for ``--num`` molecules of QM9's test split (the evaluator's ceiling).
* ``samplers`` — the same model, the same molecule sizes and seeds, with EDM's ancestral sampler
  at 1,000 steps and the Gaussian plugin's solvers at NFE 50 and 100: stability and molecules
  per second side by side (one run, so the ratios are fair on a shared machine).
* ``nll``      — the negative log-likelihood bound (:mod:`diffusekit_molecules.likelihood`) on
  ``--num`` molecules of the test split, mean and standard error, nats per molecule.

Run from the repository root after ``make test`` (it installs the molecules plugin)::

    .venv/bin/python benchmarks/molecules.py quality --num 1000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import attrs
import torch

sys.path.insert(0, str(Path(__file__).parent))

import diffusekit as dk  # noqa: E402
from common import Counting, environment  # noqa: E402
from diffusekit_molecules import evaluate, likelihood, methods, qm9  # noqa: E402
from diffusekit_molecules.datasets import QM9Dataset  # noqa: E402
from diffusekit_molecules.state import MoleculeSize  # noqa: E402

SAMPLERS = {  # name -> (sampler, grid, grid steps); NFE = steps x evaluations per step
    "ddpm-1000": ("gaussian:ddpm", "gaussian:log_snr", 1000),
    "ddpm-1000-uniform": ("gaussian:ddpm", "uniform", 1000),
    "ddpm-100": ("gaussian:ddpm", "gaussian:log_snr", 100),
    "dpmpp_2m-50": ("gaussian:dpmpp_2m", "gaussian:log_snr", 50),
    "dpmpp_2m-100": ("gaussian:dpmpp_2m", "gaussian:log_snr", 100),
    "unipc-50": ("gaussian:unipc", "gaussian:log_snr", 50),
    "heun-50": ("gaussian:heun", "gaussian:log_snr", 25),
    "ddim-100": ("gaussian:ddim", "gaussian:log_snr", 100),
}


def pipeline(path: Path | None, sampler: str | None = None, grid: str | None = None, steps: int | None = None):
    """The checkpoint's pipeline (default: the shipped weights) with the sampler, grid and steps
    of ``molecules:qm9``'s recipe unless given."""
    default = methods.QM9Method().recipe()
    overrides = {
        "sampler": sampler or default.sampler.name,
        "grid": grid or default.grid.name,
        "grid.steps": steps or default.grid.params["steps"],
    }
    if path is None:
        path = methods.QM9Method().weights()
        if path is None:
            raise SystemExit("molecules:qm9 ships no weights: train them (plugins/molecules/scripts/train.sh)")
    return dk.load(path, **overrides)


def train_smiles() -> frozenset[str]:
    data = qm9.load_qm9()
    return evaluate.canonical_smiles_set(data.smiles[i] for i in qm9.split_indices()["train"])


def draw(pipe: dk.Pipeline, num: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """``num`` molecules in batches of ``batch``, each batch seeded by its first index (the same
    sizes and noise for every sampler); with the seconds taken and the network evaluations per batch."""
    method = methods.QM9Method()
    counting = Counting(pipe.denoiser)
    atoms, pos, batches = [], [], 0
    start = time.perf_counter()
    for s in range(0, num, batch):
        sub = attrs.evolve(pipe, denoiser=counting, recipe=attrs.evolve(pipe.recipe, seed=pipe.recipe.seed + s))
        a, p = method.sample(sub, min(batch, num - s))
        atoms.append(a)
        pos.append(p)
        batches += 1
    return torch.cat(atoms), torch.cat(pos), time.perf_counter() - start, counting.calls / batches


def report_row(name: str, report: evaluate.Report, seconds: float | None, nfe: int | str) -> str:
    rate = "" if seconds is None else f"{report.n_molecules / seconds:.2f}"
    novelty = "" if report.novelty is None else f"{100 * report.novelty:.1f}"
    return (
        f"| {name} | {nfe} | {100 * report.atom_stability:.2f} | {100 * report.mol_stability:.1f} | "
        f"{100 * report.validity:.1f} | {100 * report.uniqueness:.1f} | {novelty} | {rate} |"
    )


HEADER = (
    "| model / sampler | NFE | atom stability % | molecule stability % | validity % | uniqueness % | "
    "novelty % | molecules/s |\n|---|---|---|---|---|---|---|---|"
)


def bench_quality(args) -> None:
    print(HEADER)
    known = train_smiles()
    if args.data:
        index = QM9Dataset(split="test").indices()[: args.num]
        data = qm9.load_qm9()
        report = evaluate.evaluate(data.atoms[index], data.pos[index], train_smiles=known, canonicalize_train=False)
        print(report_row("QM9 test split (data)", report, None, "-"), flush=True)
    pipe = pipeline(args.checkpoint, args.sampler, args.grid, args.steps)
    atoms, pos, seconds, nfe = draw(pipe, args.num, args.batch)
    report = evaluate.evaluate(atoms.numpy(), pos.double().numpy(), train_smiles=known, canonicalize_train=False)
    name = f"{pipe.recipe.sampler.name}, {pipe.recipe.grid.name} grid, {pipe.recipe.grid.params.get('steps')} steps"
    print(report_row(name, report, seconds, f"{nfe:.0f}"), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")


def bench_samplers(args) -> None:
    print(HEADER)
    for name in args.which_samplers.split(","):
        sampler, grid, steps = SAMPLERS[name]
        pipe = pipeline(args.checkpoint, sampler, grid, steps)
        num = args.num_ddpm if steps >= 1000 else args.num
        atoms, pos, seconds, nfe = draw(pipe, num, args.batch)
        report = evaluate.evaluate(atoms.numpy(), pos.double().numpy())
        print(report_row(f"{name} ({num} molecules)", report, seconds, f"{nfe:.0f}"), flush=True)


def bench_nll(args) -> None:
    pipe = pipeline(args.checkpoint)
    data = QM9Dataset(split="test").load()
    x = {k: v[: args.num] for k, v in data.parts.items()}
    sizes = data.condition.num_atoms[: args.num]
    g = torch.Generator().manual_seed(0)
    totals, terms = [], {"prior": [], "diffusion": [], "reconstruction": []}
    with torch.no_grad():
        for s in range(0, args.num, args.batch):
            rows = slice(s, s + args.batch)
            for _ in range(args.repeats):
                b = likelihood.nll_bound(
                    pipe.denoiser,
                    {k: v[rows] for k, v in x.items()},
                    MoleculeSize(sizes[rows], max_atoms=methods.MAX_ATOMS),
                    generator=g,
                )
                totals.append(b.total)
                for k in terms:
                    terms[k].append(getattr(b, k))
    total = torch.cat(totals)
    sem = float(total.std()) / math.sqrt(len(total))
    print(
        f"NLL bound on {args.num} QM9 test molecules x {args.repeats} draws: {float(total.mean()):.1f} ± {sem:.1f} nats"
    )
    for k, v in terms.items():
        print(f"  {k}: {float(torch.cat(v).mean()):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("quality", "samplers", "nll"))
    parser.add_argument("--checkpoint", type=Path, help="a molecules:qm9 checkpoint (default: the shipped weights)")
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--num-ddpm", type=int, default=128, help="molecules for the 1,000-step sampler")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sampler", help="quality: a sampler (default: the recipe's)")
    parser.add_argument("--grid", help="quality: a grid (default: the recipe's)")
    parser.add_argument("--steps", type=int, help="quality: grid steps (default: the recipe's)")
    parser.add_argument("--data", action="store_true", help="quality: also evaluate QM9's test split")
    parser.add_argument("--json", type=Path, help="quality: write the report here")
    parser.add_argument("--which-samplers", default=",".join(SAMPLERS))
    parser.add_argument("--repeats", type=int, default=4, help="nll: draws of (t, noise) per molecule")
    args = parser.parse_args()
    print(f"<!-- {environment()} -->\n")
    start = time.perf_counter()
    {"quality": bench_quality, "samplers": bench_samplers, "nll": bench_nll}[args.which](args)
    print(f"\n<!-- {time.perf_counter() - start:.0f} s -->")


if __name__ == "__main__":
    main()
