"""Benchmark 2: per-step overhead of a sampler (everything but the network call).

A trivial network (x -> 0.5 x) on a batch of 4 vectors of 16 float32 values, one torch
thread, 200 steps, for the same solver in diffusekit, k-diffusion and diffusers. Each
run is repeated, the runs of all contenders are interleaved (round-robin) so machine
noise hits them alike, and the median is kept. Overhead per step = (run time - the
network's own time for the same number of calls) / steps.

* diffusekit: ``Denoiser(net, EDM schedule, x0 parameterization)`` and the sampler
  over ``KarrasGrid(steps=200)``;
* k-diffusion: ``sample_*(model, x, get_sigmas_karras(200, ...))`` with
  ``model(x, sigma) = 0.5 x``;
* diffusers: ``set_timesteps(200)`` then ``scale_model_input`` / ``step`` per
  timestep, with ``eps = 0.5 * model_input``.

Run: .venv/bin/python benchmarks/overhead.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from common import environment, import_k_diffusion_sampling
from diffusekit import Denoiser
from diffusekit_gaussian import plugin
from diffusekit_gaussian.grids import KarrasGrid
from diffusekit_gaussian.parameterizations import X0Prediction
from diffusekit_gaussian.schedules import EDM

STEPS = 200


def net(x, noise=None, condition=None):
    return x * 0.5


def contenders():
    ks = import_k_diffusion_sampling()
    import diffusers

    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    denoiser = Denoiser(net, {"x": EDM()}, {"x": X0Prediction()})
    grid = KarrasGrid(steps=STEPS)
    sigmas = ks.get_sigmas_karras(STEPS, 0.002, 80.0)

    def ours(name):
        sampler = plugin.SAMPLERS[name]()
        return lambda: sampler.sample(denoiser, x * 80.0, grid), sampler.evaluations_per_step * STEPS - (
            1 if sampler.evaluations_per_step == 2 else 0
        )

    def kdiff(fn):
        model = lambda xs, sigma, **_: xs * 0.5  # noqa: E731
        calls = 2 * STEPS - 1 if fn is ks.sample_heun else STEPS
        return lambda: fn(model, x * 80.0, sigmas, disable=True), calls

    def diff(cls):
        scheduler = cls(num_train_timesteps=1000)

        def run():
            scheduler.set_timesteps(STEPS)
            sample = x * scheduler.init_noise_sigma
            for t in scheduler.timesteps:
                model_in = scheduler.scale_model_input(sample, t)
                sample = scheduler.step(model_in * 0.5, t, sample).prev_sample
            return sample

        scheduler.set_timesteps(STEPS)
        return run, len(scheduler.timesteps)

    return {
        "Euler": {
            "diffusekit": ours("euler"),
            "k-diffusion": kdiff(ks.sample_euler),
            "diffusers": diff(diffusers.EulerDiscreteScheduler),
        },
        "DPM-Solver++(2M)": {
            "diffusekit": ours("dpmpp_2m"),
            "k-diffusion": kdiff(ks.sample_dpmpp_2m),
            "diffusers": diff(diffusers.DPMSolverMultistepScheduler),
        },
        "UniPC": {"diffusekit": ours("unipc"), "diffusers": diff(diffusers.UniPCMultistepScheduler)},
        "Heun": {
            "diffusekit": ours("heun"),
            "k-diffusion": kdiff(ks.sample_heun),
            "diffusers": diff(diffusers.HeunDiscreteScheduler),
        },
        "LMS (order 4)": {"diffusekit": ours("lms"), "k-diffusion": kdiff(ks.sample_lms)},
        "DEIS": {"diffusekit": ours("deis"), "diffusers": diff(diffusers.DEISMultistepScheduler)},
        "DDIM": {"diffusekit": ours("ddim"), "diffusers": diff(diffusers.DDIMScheduler)},
    }


def network_time(calls: int, repeats: int) -> float:
    x = torch.randn(4, 16)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(calls):
            net(x)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    table = contenders()
    runs = [(solver, who, fn, calls) for solver, row in table.items() for who, (fn, calls) in row.items()]
    for _, _, fn, _ in runs:  # warm-up
        fn()
    samples: dict[tuple[str, str], list[float]] = {(s, w): [] for s, w, _, _ in runs}
    for _ in range(args.repeats):
        for solver, who, fn, _ in runs:
            began = time.perf_counter()
            fn()
            samples[(solver, who)].append(time.perf_counter() - began)
    print(f"<!-- {environment()}; {args.repeats} interleaved repeats, medians -->\n")
    print("| solver | library | µs/step (total) | network µs/step | overhead µs/step | diffusekit / theirs |")
    print("|---|---|---:|---:|---:|---:|")
    for solver, row in table.items():
        overhead = {}
        for who, (_, calls) in row.items():
            total = statistics.median(samples[(solver, who)])
            network = network_time(calls, 5)
            overhead[who] = (total - network) / STEPS
            ratio = "" if who == "diffusekit" else f"{overhead['diffusekit'] / overhead[who]:.2f}"
            print(
                f"| {solver} | {who} | {total / STEPS * 1e6:.1f} | {network / STEPS * 1e6:.1f} | "
                f"{overhead[who] * 1e6:.1f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
