r"""Fitting a time grid to a solver and a model: gradient descent on the endpoint error.

In the spirit of Align Your Steps (Sabour et al., 2024) and LD3 (Tong et al., 2025):
for a given solver and number of steps, the interior noise levels are parameters,
:math:`\log\tilde\sigma_k = \log\sigma_{max} + u_k(\log\sigma_{min} - \log\sigma_{max})` with
:math:`u = (0, \mathrm{cumsum}(\mathrm{softmax}(\theta)))`, which keeps them ordered, and
:math:`\theta` minimises the mean distance between the solver's endpoints and reference
solutions of the probability-flow ODE from the same noise, by back-propagating through
the sampler. Initialised at the log-SNR grid (θ = 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import torch
from diffusekit import Sampler, TimePlan
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from torch import Tensor

from diffusekit_gaussian.adaptive import AdaptiveODE
from diffusekit_gaussian.schedules import EDM

F64 = torch.float64


@attrs.frozen(eq=False)
class Target:
    """A denoiser, starting noise at ``sigma_max``, the exact ODE endpoints from it, and the condition."""

    denoiser: object
    x: Tensor
    reference: Tensor
    condition: object = None


def sigmas_from(theta: Tensor, sigma_max: float, sigma_min: float) -> Tensor:
    """Ordered noise levels from unconstrained parameters (``len(theta) + 1`` of them)."""
    u = torch.cat([theta.new_zeros(1), torch.cumsum(torch.softmax(theta, 0), 0)])
    return torch.exp(math.log(sigma_max) + u * (math.log(sigma_min) - math.log(sigma_max)))


def endpoints(sampler: Sampler, target: Target, sigmas: Tensor) -> Tensor:
    r"""The solver's endpoints on the grid ``sigmas`` (then 0), keeping autograd.

    Every solver's step to t = 0 returns :math:`\hat x_0` at the last noise level; it is
    taken directly, since its singular coefficients (h = inf) would poison the gradients.
    """
    schedule = next(iter(target.denoiser.schedules.values()))
    times = [t.reshape(1) for t in schedule.t_from_log_snr(-2.0 * torch.log(sigmas))]
    if len(times) == 1:
        return target.denoiser({"x": target.x}, {"x": times[0]}, target.condition)["x"].x0
    plan = TimePlan.from_times(times, ["x"])
    last = sampler.sample(target.denoiser, target.x, plan, condition=target.condition, differentiable=True)
    return target.denoiser({"x": last}, {"x": times[-1]}, target.condition)["x"].x0


def error(sampler: Sampler, targets: Sequence[Target], sigmas: Tensor) -> Tensor:
    return torch.stack([(endpoints(sampler, tg, sigmas) - tg.reference).norm(dim=1).mean() for tg in targets]).mean()


def fit(
    sampler: Sampler,
    targets: Sequence[Target],
    steps: int,
    *,
    sigma_max: float = 80.0,
    sigma_min: float = 0.002,
    iterations: int = 200,
    lr: float = 0.05,
) -> tuple[tuple[float, ...], float, float]:
    """Fitted noise levels, and the error before (log-SNR grid) and after."""
    theta = torch.zeros(max(steps - 1, 1), dtype=F64, requires_grad=True)
    if steps == 1:
        return (sigma_max,), float("nan"), float("nan")
    optimizer = torch.optim.Adam([theta], lr=lr)
    with torch.no_grad():
        start = float(error(sampler, targets, sigmas_from(theta, sigma_max, sigma_min)))
    best, best_sigmas = start, sigmas_from(theta, sigma_max, sigma_min).detach()
    for _ in range(iterations):
        optimizer.zero_grad()
        sigmas = sigmas_from(theta, sigma_max, sigma_min)
        loss = error(sampler, targets, sigmas)
        if loss.item() < best:  # the grid this loss belongs to, before the update below
            best, best_sigmas = loss.item(), sigmas.detach()
        loss.backward()
        optimizer.step()
    return tuple(best_sigmas.tolist()), start, best


def mixture_targets(
    specs: Sequence[tuple[int, int, int, float, float]], samples: int = 128, sigma_max: float = 80.0
) -> list[Target]:
    """Targets from ``(seed, dims, components, std_lo, std_hi)`` mixtures under the EDM schedule."""
    out = []
    for seed, dims, components, lo, hi in specs:
        mixture = GaussianMixture.random(
            (dims,), components, generator=torch.Generator().manual_seed(seed), spread=1.0, std_range=(lo, hi)
        )
        denoiser = OracleDenoiser.single(mixture, EDM(sigma_max=sigma_max))
        x = sigma_max * torch.randn(samples, dims, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
        reference = AdaptiveODE(rtol=1e-8, atol=1e-8, sigma_min=1e-5).sample(
            denoiser, x, TimePlan.from_times([1.0, 0.0], ["x"])
        )
        out.append(Target(denoiser, x, reference))
    return out


def model_target(pipeline, samples: int, sigma_max: float = 80.0, seed: int = 0) -> Target:
    """A target from a trained pipeline (its method's conditions; guidance applied)."""
    denoiser = pipeline.denoiser if pipeline.guidance is None else pipeline.guidance.wrap(pipeline.denoiser)
    (part,) = pipeline.recipe.parts
    schedule = denoiser.schedules[part]
    t_max = schedule.t_from_log_snr(torch.tensor(-2.0 * math.log(sigma_max), dtype=F64))
    shape = (samples, *pipeline.recipe.parts[part].shape)
    x = schedule.prior(shape, t=t_max, generator=torch.Generator().manual_seed(seed), dtype=F64)
    condition = pipeline.method.condition(samples) if pipeline.method is not None else None
    pipeline.network.to(F64)
    reference = AdaptiveODE(rtol=1e-5, atol=1e-5, sigma_min=1e-4).sample(
        denoiser, x, TimePlan.from_times([t_max, 0.0], [part]), condition=condition
    )
    return Target(denoiser, x, reference, condition)


# The general-purpose targets of OptimizedGrid: a family of mixtures that excludes the
# accuracy benchmark's own (seed 0, 16 dims, 8 components, stds in [0.1, 0.5]).
GENERAL_TARGETS = ((101, 8, 4, 0.05, 0.3), (102, 16, 12, 0.2, 0.8), (103, 32, 6, 0.1, 0.6), (104, 4, 3, 0.3, 1.0))
GENERAL_SOLVERS = ("unipc", "ipndm", "dpmpp_2m", "deis")
GENERAL_STEPS = (5, 10, 20)


def main() -> None:
    import argparse

    from diffusekit_gaussian.plugin import SAMPLERS

    parser = argparse.ArgumentParser(description="Refit the shipped OptimizedGrid tables")
    parser.add_argument("--write", action="store_true", help="rewrite grid_tables.py")
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    targets = mixture_targets(GENERAL_TARGETS)
    tables: dict[str, dict[int, tuple[float, ...]]] = {}
    for solver in GENERAL_SOLVERS:
        for steps in GENERAL_STEPS:
            sigmas, before, after = fit(SAMPLERS[solver](), targets, steps, iterations=args.iterations)
            tables.setdefault(solver, {})[steps] = sigmas
            print(f"{solver} {steps} steps: error {before:.4g} (log-SNR grid) -> {after:.4g}", flush=True)
    if args.write:
        from pathlib import Path

        body = ""
        for solver, by_steps in tables.items():
            body += f"    {solver!r}: {{\n"
            for n, sig in by_steps.items():
                body += f"        {n}: ({', '.join(repr(round(s, 6)) for s in sig)},),\n"
            body += "    },\n"
        Path(__file__).with_name("grid_tables.py").write_text(
            '"""Fitted noise levels of :class:`~diffusekit_gaussian.grids.OptimizedGrid` (sigma~, decreasing), per solver.\n\n'
            "Fitted on the mixtures ``grid_fit.GENERAL_TARGETS`` (not the accuracy benchmark's target) by::\n\n"
            f"    .venv/bin/python -m diffusekit_gaussian.grid_fit --write --iterations {args.iterations}\n"
            '"""\n\nOPTIMIZED: dict[str, dict[int, tuple[float, ...]]] = {\n' + body + "}\n",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
