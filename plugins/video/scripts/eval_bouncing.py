"""Compare clips of a bouncing-balls checkpoint with real clips by blob tracking.

Usage (from the repository root)::

    .venv/bin/python plugins/video/scripts/eval_bouncing.py [CHECKPOINT] [--num 64] [--sheet PATH]

Without CHECKPOINT: the shipped weights of ``video:bouncing``. Prints, for generated and for
real clips (:class:`~diffusekit_video.scenes.BouncingBalls` with another seed):

* ``frames_1_3``: fraction of frames with 1–3 blobs;
* ``constant``: fraction of clips whose blob count is the same in every frame and in 1–3;
* ``step_px``: mean displacement (pixels) of a blob between consecutive frames with equal counts
  (blobs matched by least total distance, :func:`~diffusekit_video.tracking.match`);
* ``jump_frac``: fraction of those displacements above 6 px (a real ball moves at most ~2.5 px).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import diffusekit as dk
import numpy as np
import torch
from diffusekit_video import outputs, tracking
from diffusekit_video.scenes import BouncingBalls


def metrics(clips: torch.Tensor) -> dict[str, float]:
    """The tracking numbers of ``clips`` ``(B, F, 1, H, W)`` in [-1, 1]."""
    counts = tracking.count_objects(clips, value_range=(-1.0, 1.0))  # (B, F)
    in_range = (counts >= 1) & (counts <= 3)
    constant = (counts == counts[:, :1]).all(1) & in_range.all(1)
    steps = []
    for clip in clips:
        blobs = tracking.track(clip, value_range=(-1.0, 1.0))
        for a, b in zip(blobs[:-1], blobs[1:], strict=True):
            if len(a) and len(a) == len(b):
                steps.extend(tracking.match(b, a).distances.tolist())
    steps = np.asarray(steps)
    return {
        "frames_1_3": float(in_range.mean()),
        "constant": float(constant.mean()),
        "step_px": float(steps.mean()) if len(steps) else float("nan"),
        "jump_frac": float((steps > 6.0).mean()) if len(steps) else float("nan"),
        "mean_count": float(counts.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path)
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sheet", type=Path, help="also write a contact sheet of the first 8 clips here")
    args = parser.parse_args()
    pipe = dk.pretrained("video:bouncing") if args.checkpoint is None else dk.load(args.checkpoint)
    start = time.perf_counter()
    clips = pipe.sample(args.num, seed=args.seed).float().clamp(-1, 1)
    elapsed = time.perf_counter() - start
    frames = pipe.recipe.parts["x"].shape[0]
    real = BouncingBalls(count=args.num, frames=frames, seed=12345).load().parts["x"]
    print(f"sampled {args.num} clips in {elapsed:.1f} s")
    for name, value in (("generated", clips), ("real", real)):
        print(name, {k: round(v, 3) for k, v in metrics(value).items()})
    if args.sheet is not None:
        outputs.contact_sheet(clips[:8], args.sheet)
        print("wrote", args.sheet)


if __name__ == "__main__":
    main()
