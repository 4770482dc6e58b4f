"""Multi-view benchmarks (the ``multiview`` plugin).

Usage (from ``benchmarks/``)::

    OMP_NUM_THREADS=1 ../.venv/bin/python multiview.py nvs --ablation CK   # 1: novel-view synthesis

``nvs`` renders held-out scenes of the test split (seed ``TRUTH_SEED + SEED``, which neither
training nor the method's own outputs use) from cameras on the 20° orbit, gives the model the
first view and scores the three generated views against the true renders: PSNR and SSIM
(scikit-image; Wang et al., 2004). Baselines: the given view copied to every target camera (the
nearest given view), and the same network trained without cross-view attention (``--ablation``,
a checkpoint of ``multiview:shapes`` with ``--set network.cross_view=false``).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import attrs
import diffusekit as dk
import numpy as np
import torch
from diffusekit import ClassLabel, ConditionList
from diffusekit_multiview import methods, primitives
from diffusekit_multiview.cameras import Cameras
from diffusekit_multiview.networks import PART

SEED = 7


def header(what: str) -> None:
    print(
        f"<!-- {platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}; {what} -->",
        flush=True,
    )


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image of ``(..., 3, S, S)`` images in [-1, 1] (scikit-image, 7×7 windows)."""
    from skimage.metrics import structural_similarity

    x = a.detach().float().flatten(0, -4).permute(0, 2, 3, 1).numpy()
    y = b.detach().float().flatten(0, -4).permute(0, 2, 3, 1).numpy()
    scores = [structural_similarity(p, q, channel_axis=-1, data_range=2.0) for p, q in zip(x, y, strict=True)]
    return torch.tensor(scores).reshape(a.shape[:-3])


def load(path: Path | None) -> dk.Pipeline:
    return dk.load(path) if path is not None else dk.pretrained("multiview:nvs")


def novel_views(pipe: dk.Pipeline, truth, given: int, batch: int) -> torch.Tensor:
    """The views generated for ``truth`` (a SceneBatch) with its first ``given`` views known."""
    views = truth.views * 2.0 - 1.0
    num = len(views)
    known = torch.zeros(num, views.shape[1], dtype=torch.bool)
    known[:, :given] = True
    out = []
    for s in range(0, num, batch):
        sl = slice(s, s + batch)
        cond = ConditionList(
            (
                Cameras.of(truth.extrinsics[sl]),
                ClassLabel(torch.full((len(views[sl]),), -1), num_classes=len(primitives.KINDS)),
            )
        )
        out.append(pipe.sample(given={PART: views[sl]}, known={PART: known[sl]}, condition=cond)[PART])
    return torch.cat(out)


def nearest_given(view: int, given: int) -> int:
    """The given view (``0 .. given-1``) closest in azimuth to ``view`` (views are evenly spaced)."""
    n = methods.VIEWS
    return min(range(given), key=lambda g: min(abs(view - g), n - abs(view - g)))


def bench_nvs(args) -> None:
    method = methods.NovelViewMethod()
    pipes = {"cross-view attention (multiview:nvs)": load(args.checkpoint)}
    if args.ablation is not None:
        pipes["without cross-view attention (ablation)"] = load(args.ablation)
    recipe = attrs.evolve(next(iter(pipes.values())).recipe, seed=SEED)
    truth = method.held_out(args.num, recipe)
    views = truth.views * 2.0 - 1.0
    header(f"nvs, {args.num} held-out scenes, {methods.VIEWS} views on the 20° orbit")
    print("| given views | model | PSNR (dB) | SSIM | s per scene |\n|---|---|---|---|---|")
    for given in args.given:
        target = views[:, given:]
        nearest = torch.stack([views[:, nearest_given(k, given)] for k in range(given, methods.VIEWS)], 1)
        rows = [("copy the nearest given view", nearest, float("nan"))]
        for name, pipe in pipes.items():
            pipe = attrs.evolve(pipe, recipe=attrs.evolve(pipe.recipe, seed=SEED))
            start = time.perf_counter()
            out = novel_views(pipe, truth, given, args.batch)
            rows.append((name, out[:, given:], (time.perf_counter() - start) / args.num))
        for name, got, seconds in rows:
            p = methods.psnr(got, target)
            s = ssim(got, target)
            sem = p.std() / np.sqrt(p.numel())
            spent = "" if np.isnan(seconds) else f"{seconds:.2f}"
            print(f"| {given} | {name} | {float(p.mean()):.2f} ± {float(sem):.2f} | {float(s.mean()):.3f} | {spent} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=("nvs",))
    parser.add_argument("--checkpoint", type=Path, help="a multiview:shapes checkpoint (default: the shipped weights)")
    parser.add_argument("--ablation", type=Path, help="nvs: the same model trained with network.cross_view=false")
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--given", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    {"nvs": bench_nvs}[args.which](args)


if __name__ == "__main__":
    main()
