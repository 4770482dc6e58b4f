"""Benchmark 12: few-step generation — learned solvers on the exact oracle, distilled digits students.

``oracle``: learned solvers (LD3: a grid and decoupled evaluation times) at NFE 3, 4 and 5 on
the accuracy benchmark's mixture and protocol (benchmark 1), fitted (a) on *other noise draws*
of the same model (seed 12345, 128 draws; the evaluation uses seed 1's 256) and (b) on *other
mixtures* (the general-purpose family of ``grid_fit.GENERAL_TARGETS``); against the best of
diffusers and k-diffusion at the same NFE.

``digits``: digit-feature FD and classifier accuracy (benchmark 3's protocol: 500 samples, 50
per digit; each number the mean over 5 sample sets, seeds 0-4) of distilled students at NFE 1, 2 and 4, beside the teacher ``gaussian:digits``
with its best solvers at NFE 5, 10 and 20; and each student's training cost.

Run: cd benchmarks && OMP_NUM_THREADS=1 ../.venv/bin/python distill.py oracle
     cd benchmarks && ../.venv/bin/python distill.py digits --student NAME=CKPT ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import F64, environment

NFES = (3, 4, 5)
# UniPC is left out: its step to t = 0 is not the last estimate (its corrector), which fitting assumes
SOLVERS = ("ipndm", "dpmpp_2m", "deis")


def oracle(args) -> None:
    import accuracy
    from diffusekit.testing.oracle import OracleDenoiser
    from diffusekit_distill import learned
    from diffusekit_gaussian import grid_fit, plugin
    from diffusekit_gaussian.grids import TabulatedGrid
    from diffusekit_gaussian.schedules import EDM

    accuracy.NFES = NFES
    began = time.perf_counter()
    mix = accuracy.mixture()
    den = OracleDenoiser.single(mix, EDM(sigma_max=accuracy.SIGMA_MAX))
    z = torch.randn(args.samples, 16, generator=torch.Generator().manual_seed(1), dtype=F64)
    x = accuracy.SIGMA_MAX * z
    ref = accuracy.reference(den, x, accuracy.SIGMA_MAX)
    fit_x = accuracy.SIGMA_MAX * torch.randn(128, 16, generator=torch.Generator().manual_seed(12345), dtype=F64)
    same_model = [learned.Teacher(den, fit_x, accuracy.reference(den, fit_x, accuracy.SIGMA_MAX))]
    others = grid_fit.mixture_targets(grid_fit.GENERAL_TARGETS)
    rows: dict[str, dict[int, tuple[float, int]]] = {}
    for solver in SOLVERS:
        base = plugin.SAMPLERS[solver]()
        for label, teachers in (("this model, other draws", same_model), ("other mixtures", others)):
            for shifts in (False, True):
                row = {}
                for nfe in NFES:
                    fitted = learned.fit(base, teachers, nfe, iterations=args.iterations, shifts=shifts)
                    out = fitted.sampler(f"gaussian:{solver}").sample(den, x, TabulatedGrid(sigmas=fitted.sigmas))
                    row[nfe] = ((out - ref).norm(dim=1).mean().item(), nfe)
                what = "grid + evaluation times" if shifts else "grid only"
                rows[f"{solver} / {what} / fitted on {label}"] = row
                print(f"{solver} {what} {label}: " + ", ".join(f"{r[0]:.3g}" for r in row.values()), flush=True)
    theirs = {"k-diffusion": accuracy.k_diffusion(den, x, ref), "diffusers": accuracy.diffusers_rows(mix, z)}
    ours = accuracy.ours(den, x, ref)
    print(f"\n<!-- {environment()}; {time.perf_counter() - began:.0f} s -->\n")
    header = "| " + " | ".join(["learned solver"] + [f"NFE {n}" for n in NFES]) + " |"
    print(header + "\n|---|" + "---:|" * len(NFES))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[n][0]:.3g}" for n in NFES) + " |")
    print(
        "\n| NFE | learned (this model) | learned (other mixtures) | ours, no learning | k-diffusion best | diffusers best | ratio | ratio (other mixtures) |"
    )
    print("|---:|---|---|---|---|---|---:|---:|")
    summary = {}
    for n in NFES:
        mine = min((r for r in rows if "this model" in r), key=lambda r: rows[r][n][0])
        other = min((r for r in rows if "other mixtures" in r), key=lambda r: rows[r][n][0])
        plain = accuracy.best(ours, n)
        kd, df = accuracy.best(theirs["k-diffusion"], n), accuracy.best(theirs["diffusers"], n)
        best = min(kd[1], df[1])
        summary[n] = {"learned": rows[mine][n][0], "other": rows[other][n][0], "theirs": best}
        print(
            f"| {n} | {rows[mine][n][0]:.3g} ({mine.split(' / fitted')[0]}) | {rows[other][n][0]:.3g} "
            f"({other.split(' / fitted')[0]}) | {plain[1]:.3g} ({plain[0]}) | {kd[1]:.3g} ({kd[0]}) | "
            f"{df[1]:.3g} ({df[0]}) | {rows[mine][n][0] / best:.2f} | {rows[other][n][0] / best:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}), encoding="utf-8")


def _quality(pipe_denoiser, sampler, grid, labels, net, real, seeds: int):
    """FD and accuracy, each the mean over ``seeds`` sample sets (seeds 0, 1, ...), the FD's standard
    deviation over them, and the NFE: at 500 samples one set's FD varies by about ±0.3."""
    import statistics

    import digit_features
    from common import Counting

    fds, accs = [], []
    for seed in range(seeds):
        counting = Counting(pipe_denoiser)
        with torch.no_grad():
            images = sampler.sample(
                counting,
                (len(labels.labels), 1, 8, 8),
                grid,
                condition=labels,
                generator=torch.Generator().manual_seed(seed),
            )
        fds.append(digit_features.frechet_distance(digit_features.features(net, images), real))
        accs.append((digit_features.logits(net, images).argmax(1) == labels.labels).float().mean().item())
    spread = statistics.stdev(fds) if len(fds) > 1 else 0.0
    return statistics.mean(fds), spread, statistics.mean(accs), counting.calls


def _cell(fd: float, spread: float, acc: float) -> str:
    return f"{fd:.2f} ± {spread:.2f} / {acc:.0%}"


def _training_minutes(checkpoint: Path) -> str:
    """CPU minutes of the run (and of the runs its teacher chain came from), from the metrics files."""
    metrics = checkpoint.with_suffix(".metrics.jsonl")
    if not metrics.is_file():
        return "?"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return f"{rows[-1]['elapsed_s'] / 60:.0f} ({rows[-1]['step']} steps)" if rows else "?"


def digits(args) -> None:
    import digit_features
    from diffusekit import ClassLabel, load, pretrained
    from diffusekit_gaussian import plugin
    from diffusekit_gaussian.grids import KarrasGrid

    began = time.perf_counter()
    net = digit_features.load()
    real_x, _ = digit_features.real_digits()
    real = digit_features.features(net, real_x)
    labels = ClassLabel(torch.arange(args.samples) % 10, num_classes=10)
    lines = []
    if not args.no_teacher:
        teacher = pretrained("gaussian:digits")
        guided = teacher.guidance.wrap(teacher.denoiser)
        for solver in ("dpmpp_2m", "unipc", "ipndm", "dpmpp_2m_sde"):
            cells = []
            for nfe in (5, 10, 20):
                fd, spread, acc, _ = _quality(
                    guided, plugin.SAMPLERS[solver](), KarrasGrid(steps=nfe), labels, net, real, args.seeds
                )
                cells.append(_cell(fd, spread, acc))
            lines.append(
                f"| teacher, {solver} / karras | NFE 5, 10, 20 | " + " | ".join(cells) + " | (trained 8000 steps) |"
            )
            print(lines[-1], flush=True)
    for spec in args.student:
        name, path = spec.split("=", 1)
        path, _, own = path.partition("@")  # NAME=CHECKPOINT@1,2: this student at its own NFEs
        pipe = load(path)
        den = pipe.denoiser if pipe.guidance is None else pipe.guidance.wrap(pipe.denoiser)
        sampler = pipe.sampler
        cells = []
        nfes = [int(n) for n in (own.split(",") if own else args.nfe)]
        for nfe in nfes:
            grid = _grid_with_steps(pipe.grid, nfe)
            fd, spread, acc, calls = _quality(den, sampler, grid, labels, net, real, args.seeds)
            cells.append(_cell(fd, spread, acc) + (f" ({calls})" if calls != nfe else ""))
        lines.append(
            f"| {name} | NFE {', '.join(map(str, nfes))} | "
            + " | ".join(cells)
            + f" | {_training_minutes(Path(path))} |"
        )
        print(lines[-1], flush=True)
    print(f"\n<!-- {environment()}; {time.perf_counter() - began:.0f} s -->\n")
    print("| model | NFE | FD ± sd / accuracy | | | | training (wall min) |\n|---|---|---:|---:|---:|---:|---|")
    print("\n".join(lines))


def _grid_with_steps(grid, steps: int):
    import attrs

    return attrs.evolve(grid, steps=steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    o = sub.add_parser("oracle")
    o.add_argument("--samples", type=int, default=256)
    o.add_argument("--iterations", type=int, default=300)
    o.add_argument("--json")
    d = sub.add_parser("digits")
    d.add_argument("--samples", type=int, default=500)
    d.add_argument("--student", action="append", default=[], metavar="NAME=CHECKPOINT[@NFE,...]")
    d.add_argument("--nfe", nargs="+", default=["1", "2", "4"])
    d.add_argument("--no-teacher", action="store_true")
    d.add_argument("--seeds", type=int, default=5, help="sample sets per cell (FD and accuracy are their means)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    {"oracle": oracle, "digits": digits}[args.command](args)


if __name__ == "__main__":
    main()
