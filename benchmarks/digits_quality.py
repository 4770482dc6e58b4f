"""Benchmark 3: sample quality of the digits method per solver and NFE.

The shipped ``gaussian:digits`` weights (classifier-free guidance 1.5) sample 500 digits
(50 per class, fixed seed) with each solver on the Karras grid and, where fitted
tables exist, the optimized grid. Metrics, in the feature space of the shipped digit
classifier (``digit_features.py``, 98.3% held-out accuracy):

* FD: Fréchet distance between the samples' features and all 1,797 real digits' (two
  halves of the real data are at 1.27 of each other: the floor at this sample size);
* accuracy: how often the classifier reads the digit that was asked for.

Run: .venv/bin/python benchmarks/digits_quality.py [--samples 500]
"""

from __future__ import annotations

import argparse
import time

import digit_features
import torch
from common import Counting, environment
from diffusekit import ClassLabel, pretrained
from diffusekit_gaussian import plugin
from diffusekit_gaussian.grid_tables import OPTIMIZED
from diffusekit_gaussian.grids import KarrasGrid, OptimizedGrid

NFES = (5, 10, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    began = time.perf_counter()
    pipe = pretrained("gaussian:digits")
    net = digit_features.load()
    real_x, _ = digit_features.real_digits()
    real = digit_features.features(net, real_x)
    labels = ClassLabel(torch.arange(args.samples) % 10, num_classes=10)
    guided = pipe.guidance.wrap(pipe.denoiser)
    rows = []
    for name, cls in sorted(plugin.SAMPLERS.items()):
        if getattr(cls, "adaptive", False):
            continue
        sampler = cls()
        grids = {"karras": KarrasGrid}
        if name in OPTIMIZED:
            grids["optimized"] = lambda steps, name=name: OptimizedGrid(steps=steps, solver=name)
        for grid_name, grid in grids.items():
            cells = []
            for nfe in NFES:
                steps = (nfe + 1) // 2 if sampler.evaluations_per_step == 2 else nfe
                counting = Counting(guided)
                with torch.no_grad():
                    images = sampler.sample(
                        counting,
                        (args.samples, 1, 8, 8),
                        grid(steps),
                        condition=labels,
                        generator=torch.Generator().manual_seed(0),
                    )
                fd = digit_features.frechet_distance(digit_features.features(net, images), real)
                acc = (digit_features.logits(net, images).argmax(1) == labels.labels).float().mean().item()
                cells.append(f"{fd:.2f} / {acc:.0%}" + (f" ({counting.calls})" if counting.calls != nfe else ""))
            rows.append(f"| {name} / {grid_name} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    print(f"\n<!-- {environment()}; {time.perf_counter() - began:.0f} s -->\n")
    print("| solver / grid | " + " | ".join(f"NFE {n}: FD / accuracy" for n in NFES) + " |")
    print("|---|" + "---:|" * len(NFES))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
