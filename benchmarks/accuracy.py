"""Benchmark 1: accuracy per NFE on an exact oracle, against k-diffusion and diffusers.

Target: a mixture of 8 diagonal Gaussians in 16 dimensions (closed-form E[x0 | x_t]).
Every sampler starts from the same standard-normal draws z (256 of them) and is
compared with a high-accuracy solution of the probability-flow ODE *from its own
starting point* (adaptive Dormand-Prince 5(4), rtol = atol = 1e-9, down to sigma~ = 1e-5,
then x0): the mean L2 distance of the endpoints is the error.

* diffusekit and k-diffusion run in the EDM setting: x = 80 z at sigma~ = 80; our
  schedule is EDM (alpha = 1, sigma = 80 t^7), k-diffusion's model is the same oracle.
* diffusers schedulers run in their default VP setting (1000 linear betas), driven by
  the oracle converted to epsilon-prediction, starting from z * init_noise_sigma at
  their own first timestep.

Run: .venv/bin/python benchmarks/accuracy.py [--samples 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import numpy as np
import torch
from common import F64, Counting, environment, import_k_diffusion_sampling
from diffusekit import TimePlan
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from diffusekit_gaussian import plugin
from diffusekit_gaussian.adaptive import AdaptiveODE
from diffusekit_gaussian.grid_tables import OPTIMIZED
from diffusekit_gaussian.grids import KarrasGrid, LogSNRGrid, OptimizedGrid
from diffusekit_gaussian.schedules import EDM

NFES = (5, 10, 20, 50)
SIGMA_MAX, SIGMA_MIN = 80.0, 0.002


def mixture() -> GaussianMixture:
    return GaussianMixture.random(
        (16,), 8, generator=torch.Generator().manual_seed(0), spread=1.0, std_range=(0.1, 0.5)
    )


def reference(oracle: OracleDenoiser, x_tilde: torch.Tensor, sigma_start: float) -> torch.Tensor:
    schedule = oracle.schedules["x"]
    t_start = float(schedule.t_from_log_snr(torch.tensor(-2.0 * math.log(sigma_start), dtype=F64)))
    solver = AdaptiveODE(rtol=1e-9, atol=1e-9, sigma_min=1e-5)
    return solver.sample(
        oracle,
        x_tilde * float(schedule.coefficients(torch.tensor(t_start, dtype=F64)).alpha),
        TimePlan.from_times([t_start, 0.0], ["x"]),
    )


def steps_for(nfe: int, per_step: int) -> int:
    """Steps that fit the budget; two-evaluation methods use one evaluation on the last step."""
    return (nfe + 1) // 2 if per_step == 2 else nfe


def ours(oracle, x, ref) -> dict[str, dict[int, tuple[float, int]]]:
    rows = {}
    for name, cls in sorted(plugin.SAMPLERS.items()):
        sampler = cls()
        if sampler.stochastic or getattr(cls, "adaptive", False) or name.startswith("flow_"):
            continue  # stochastic samplers do not solve the ODE; flow solvers are for rectified-flow schedules
        grids = {"karras": KarrasGrid, "log_snr": LogSNRGrid}
        if name in OPTIMIZED:  # fitted on other mixtures (grid_fit.GENERAL_TARGETS), not on this one
            grids["optimized"] = lambda steps, name=name: OptimizedGrid(steps=steps, solver=name)
        for grid_name, grid_cls in grids.items():
            row = {}
            for nfe in NFES:
                counting = Counting(oracle)
                out = sampler.sample(counting, x, grid_cls(steps=steps_for(nfe, sampler.evaluations_per_step)))
                row[nfe] = ((out - ref).norm(dim=1).mean().item(), counting.calls)
            rows[f"{name} / {grid_name}"] = row
    return rows


def k_diffusion(oracle, x, ref) -> dict[str, dict[int, tuple[float, int]]]:
    ks = import_k_diffusion_sampling()
    calls = [0]

    def model(xs, sigma, **_):
        calls[0] += 1
        return oracle(xs, (sigma / SIGMA_MAX) ** (1.0 / 7.0)).x0

    samplers = {
        "euler": (ks.sample_euler, 1, {}),
        "heun": (ks.sample_heun, 2, {}),
        "lms": (ks.sample_lms, 1, {}),
        "dpmpp_2m": (ks.sample_dpmpp_2m, 1, {}),
        "dpmpp_3m_sde (eta=0)": (ks.sample_dpmpp_3m_sde, 1, {"eta": 0.0}),
    }
    grids = {
        "karras": lambda n: ks.get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX, rho=7.0).to(F64),
        "exponential": lambda n: ks.get_sigmas_exponential(n, SIGMA_MIN, SIGMA_MAX).to(F64),
    }
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (fn, per_step, extra) in samplers.items():
            for grid_name, grid in grids.items():
                row = {}
                for nfe in NFES:
                    calls[0] = 0
                    out = fn(model, x.clone(), grid(steps_for(nfe, per_step)), disable=True, **extra)
                    row[nfe] = ((out - ref).norm(dim=1).mean().item(), calls[0])
                rows[f"{name} / {grid_name}"] = row
    return rows


def sigma_of_timestep(t, log_sigmas: np.ndarray) -> float:
    """The VP noise level sqrt((1 - a_bar) / a_bar) at a (possibly fractional) diffusers timestep."""
    return float(np.exp(np.interp(float(t), np.arange(len(log_sigmas)), log_sigmas)))


def diffusers_rows(mix: GaussianMixture, z: torch.Tensor) -> dict[str, dict[int, tuple[float, int]]]:
    import diffusers

    classes = {
        "DPMSolverMultistep": diffusers.DPMSolverMultistepScheduler,
        "UniPCMultistep": diffusers.UniPCMultistepScheduler,
        "DEISMultistep": diffusers.DEISMultistepScheduler,
        "EulerDiscrete": diffusers.EulerDiscreteScheduler,
        "HeunDiscrete": diffusers.HeunDiscreteScheduler,
        "DDIM": diffusers.DDIMScheduler,
    }
    edm = EDM()
    oracle = OracleDenoiser.single(mix, edm)
    # DDIMScheduler clips x0 to [-1, 1] by default (meant for images): off, as for the others
    options = {"DDIM": {"clip_sample": False}}
    rows = {}
    for name, cls in classes.items():
        base = cls(num_train_timesteps=1000, **options.get(name, {}))
        alphas_cumprod = base.alphas_cumprod.to(F64)
        log_sigmas = (0.5 * torch.log((1 - alphas_cumprod) / alphas_cumprod)).numpy()
        row = {}
        for nfe in NFES:
            s = cls(num_train_timesteps=1000, **options.get(name, {}))
            s.set_timesteps(steps_for(nfe, 2 if name == "HeunDiscrete" else 1))
            sample = (z * s.init_noise_sigma).to(F64)
            sig0 = sigma_of_timestep(s.timesteps[0], log_sigmas)
            start_tilde = z * math.sqrt(1.0 + sig0**2)  # the same start in EDM variables
            calls = 0
            for t in s.timesteps:
                model_in = s.scale_model_input(sample, t)
                sig = sigma_of_timestep(t, log_sigmas)
                alpha, sigma = 1.0 / math.sqrt(1.0 + sig**2), sig / math.sqrt(1.0 + sig**2)
                x0 = mix.posterior_mean(model_in, torch.tensor(alpha, dtype=F64), torch.tensor(sigma, dtype=F64))
                eps = (model_in - alpha * x0) / sigma
                calls += 1
                sample = s.step(eps, t, sample).prev_sample
            # at 3 steps diffusers starts above sigma~ = 80: the reference's schedule must reach its start
            reach = oracle if sig0 <= SIGMA_MAX else OracleDenoiser.single(mix, EDM(sigma_max=1.01 * sig0))
            ref = reference(reach, start_tilde, sig0)
            row[nfe] = ((sample - ref).norm(dim=1).mean().item(), calls)
        rows[name] = row
    return rows


def table(title: str, rows: dict[str, dict[int, tuple[float, int]]]) -> str:
    lines = [f"| {title} | " + " | ".join(f"NFE {n}" for n in NFES) + " |", "|---|" + "---:|" * len(NFES)]
    for name, row in rows.items():
        cells = []
        for n in NFES:
            err, calls = row[n]
            cells.append(f"{err:.3g}" + (f" ({calls})" if calls != n else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best(rows: dict[str, dict[int, tuple[float, int]]], nfe: int) -> tuple[str, float]:
    name = min(rows, key=lambda k: rows[k][nfe][0])
    return name, rows[name][nfe][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    began = time.perf_counter()
    mix = mixture()
    oracle = OracleDenoiser.single(mix, EDM(sigma_max=SIGMA_MAX))
    z = torch.randn(args.samples, 16, generator=torch.Generator().manual_seed(1), dtype=F64)
    x = SIGMA_MAX * z
    ref = reference(oracle, x, SIGMA_MAX)
    results = {
        "diffusekit": ours(oracle, x, ref),
        "k-diffusion": k_diffusion(oracle, x, ref),
        "diffusers": diffusers_rows(mix, z),
    }
    print(f"<!-- {environment()}; {time.perf_counter() - began:.0f} s -->\n")
    for title, rows in results.items():
        print(table(title, rows) + "\n")
    print("| NFE | ours best | k-diffusion best | diffusers best | ours / best of theirs |")
    print("|---:|---|---|---|---:|")
    for n in NFES:
        mine, kd, df = best(results["diffusekit"], n), best(results["k-diffusion"], n), best(results["diffusers"], n)
        theirs = min(kd[1], df[1])
        print(
            f"| {n} | {mine[1]:.3g} ({mine[0]}) | {kd[1]:.3g} ({kd[0]}) | {df[1]:.3g} ({df[0]}) | {mine[1] / theirs:.2f} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {k: {r: {str(n): v for n, v in row.items()} for r, row in rows.items()} for k, rows in results.items()},
                f,
            )


if __name__ == "__main__":
    main()
