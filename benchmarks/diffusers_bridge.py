"""Benchmark 13: the cost of running diffusekit samplers inside diffusers pipelines.

diffusers' pipeline loop (``set_timesteps``, then ``scale_model_input``, the model and
``step`` per timestep) on a small random ``UNet2DModel`` (3×16×16 images, batch 4, one
torch thread), once with diffusers' own scheduler and once with
``DiffusekitScheduler`` wrapping the diffusekit sampler of the same algorithm: DDIM,
DPM-Solver++(2M) and Heun (two evaluations per step, through the bridge's worker
thread). Runs are interleaved (round-robin) and repeated; the median is kept. Also the
scheduler alone: the pipeline's loop with the model replaced by a constant output, so
the times are the schedulers' own per-step overhead.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusers_bridge.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers  # noqa: E402
import torch  # noqa: E402
from common import environment  # noqa: E402
from diffusekit_diffusers import DiffusekitScheduler  # noqa: E402

STEPS = 25
CASES = {
    "DDIM": (lambda: diffusers.DDIMScheduler(clip_sample=False), "gaussian:ddim"),
    "DPM-Solver++(2M)": (diffusers.DPMSolverMultistepScheduler, "gaussian:dpmpp_2m"),
    "Heun": (diffusers.HeunDiscreteScheduler, "gaussian:heun"),
}


class Output:
    def __init__(self, sample):
        self.sample = sample


def free(x, t):
    """A model that costs (almost) nothing: what is left is the scheduler's time."""
    return Output(0.1 * x)


def run(model, scheduler) -> float:
    """The loop of diffusers' pipelines (as DDPMPipeline's, with scale_model_input for Heun)."""
    began = time.perf_counter()
    with torch.no_grad():
        x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
        scheduler.set_timesteps(STEPS)
        for t in scheduler.timesteps:
            x = scheduler.step(model(scheduler.scale_model_input(x, t), t).sample, t, x).prev_sample
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()
    print(f"<!-- {environment()}; {args.repeats} repeats, {STEPS} steps, batch 4 -->\n")
    print("| model | algorithm | evaluations | diffusers (ms) | diffusekit via the bridge (ms) | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for label, model in (("tiny UNet2DModel", unet), ("none (scheduler only)", free)):
        for name, (theirs, ours) in CASES.items():
            times: dict[str, list[float]] = {"diffusers": [], "diffusekit": []}
            reference = theirs()
            for _ in range(args.repeats):
                times["diffusers"].append(run(model, theirs()))
                times["diffusekit"].append(run(model, DiffusekitScheduler.from_scheduler(reference, ours)))
            a, b = (statistics.median(times[k]) * 1e3 for k in ("diffusers", "diffusekit"))
            reference.set_timesteps(STEPS)
            calls = len(reference.timesteps)
            print(f"| {label} | {name} | {calls} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
