"""CLI commands the distill plugin adds (through the public ``register_commands`` hook)."""

from __future__ import annotations

import json
from pathlib import Path

import click


def register(cli: click.Group) -> None:
    @cli.command(name="fit-solver")
    @click.argument("model")
    @click.option("--solver", default="gaussian:ipndm", show_default=True, help="The deterministic solver to fit.")
    @click.option("--nfe", type=click.IntRange(1, 50), required=True, help="Network evaluations per sample.")
    @click.option("--samples", type=click.IntRange(1), default=64, show_default=True, help="Teacher trajectories.")
    @click.option("--iterations", type=click.IntRange(0), default=200, show_default=True, help="Adam iterations.")
    @click.option("--lr", type=float, default=0.05, show_default=True)
    @click.option("--seed", type=int, default=1, show_default=True, help="Seed of the noise draws fitted on.")
    @click.option("--sigma-max", type=float, default=80.0, show_default=True)
    @click.option("--sigma-min", type=float, default=0.002, show_default=True)
    @click.option("--grid-only", is_flag=True, help="Fit the grid only (no decoupled evaluation times).")
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Default: next to MODEL.")
    @click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
    def fit_solver(model, solver, nfe, samples, iterations, lr, seed, sigma_max, sigma_min, grid_only, out, overwrite):
        """Fit a learned solver (LD3) to MODEL (a checkpoint or a method with shipped weights) for NFE
        evaluations, and write a checkpoint that samples with it: MODEL's weights, its recipe with
        sampler distill:learned and the fitted grid (gaussian:tabulated)."""
        import attrs
        import torch
        from diffusekit import ComponentSpec, ConfigError, get_registry
        from diffusekit.checkpoint import save_checkpoint

        from diffusekit_distill import learned, teacher

        entry = get_registry().resolve("sampler", solver)
        base = entry.obj()
        if base.stochastic or "gaussian" not in base.supports or entry.obj is learned.LearnedSolver:
            raise ConfigError("--solver", f"{entry.qualname} is not a deterministic Gaussian solver")
        if not sigma_max > sigma_min > 0:
            raise ConfigError("--sigma-min", f"need 0 < sigma-min < sigma-max, got {sigma_min} and {sigma_max}")
        source = Path(model)
        if out is None:
            stem = source.stem if source.suffix == ".safetensors" else model.replace(":", "-")
            folder = source.parent if source.suffix == ".safetensors" else Path(".")
            out = folder / f"{stem}.{entry.name}-nfe{nfe}.safetensors"
        if out.exists() and not overwrite:
            raise click.ClickException(f"{out} already exists; replace it with --overwrite")
        torch.manual_seed(seed)
        pipeline = teacher.load_teacher(model)
        if len(pipeline.recipe.parts) != 1:
            raise ConfigError("MODEL", "fit-solver fits single-part models")
        steps = (nfe + 1) // 2 if base.evaluations_per_step == 2 else nfe
        target = learned.model_teacher(pipeline, samples, sigma_max, seed)
        result = learned.fit(
            base,
            [target],
            steps,
            sigma_max=sigma_max,
            sigma_min=sigma_min,
            iterations=iterations,
            lr=lr,
            shifts=not grid_only,
        )
        recipe = attrs.evolve(
            pipeline.recipe,
            sampler=ComponentSpec(
                "distill:learned",
                {"solver": entry.qualname, "sigmas": list(result.sigmas), "shifts": list(result.shifts)},
            ),
            grid=ComponentSpec("gaussian:tabulated", {"sigmas": list(result.sigmas)}),
        )
        weights = {f"ema.{k}": v.float() for k, v in pipeline.network.state_dict().items()}
        fitted = {
            "nfe": nfe,
            "solver": entry.qualname,
            "samples": samples,
            "seed": seed,
            "iterations": iterations,
            "error_before": result.before,
            "error_after": result.after,
            "from": str(model),
        }
        save_checkpoint(out, weights, recipe, extra={"diffusekit.fit": json.dumps(fitted)})
        click.echo(
            f"endpoint error {result.before:.4g} ({entry.qualname} on the log-SNR grid) -> {result.after:.4g} fitted"
        )
        click.echo(f"wrote {out}; sample with: diffusekit sample {out}")
