"""CLI commands the gaussian plugin adds (through the public ``register_commands`` hook)."""

from __future__ import annotations

from pathlib import Path

import click


def register(cli: click.Group) -> None:
    @cli.command(name="optimize-grid")
    @click.argument("sampler")
    @click.option("--steps", type=int, required=True, help="Number of steps of the grid.")
    @click.option(
        "--checkpoint", type=click.Path(path_type=Path), help="Fit on this model (else on Gaussian mixtures)."
    )
    @click.option(
        "--mixture",
        "mixtures",
        multiple=True,
        metavar="SEED:DIMS:K:STD_LO:STD_HI",
        help="A Gaussian-mixture target (repeatable; default: the general-purpose family).",
    )
    @click.option("--samples", type=int, default=64, show_default=True, help="Noise draws per target.")
    @click.option("--iterations", type=int, default=200, show_default=True)
    @click.option("--sigma-max", type=float, default=80.0, show_default=True)
    @click.option("--sigma-min", type=float, default=0.002, show_default=True)
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write a [grid] TOML table here.")
    def optimize_grid(sampler, steps, checkpoint, mixtures, samples, iterations, sigma_max, sigma_min, out):
        """Fit the noise levels of a STEPS-step grid to SAMPLER by gradient descent on the ODE endpoint error."""
        import tomli_w
        from diffusekit import ConfigError, get_registry, load

        from diffusekit_gaussian import grid_fit

        solver = get_registry().resolve("sampler", sampler).obj()
        if checkpoint is not None:
            targets = [grid_fit.model_target(load(checkpoint), samples, sigma_max)]
        else:
            specs = []
            for text in mixtures:
                try:
                    seed, dims, k, lo, hi = text.split(":")
                    specs.append((int(seed), int(dims), int(k), float(lo), float(hi)))
                except ValueError:
                    raise ConfigError("--mixture", f"expected SEED:DIMS:K:STD_LO:STD_HI, got {text!r}") from None
            targets = grid_fit.mixture_targets(specs or grid_fit.GENERAL_TARGETS, samples, sigma_max)
        sigmas, before, after = grid_fit.fit(
            solver, targets, steps, sigma_max=sigma_max, sigma_min=sigma_min, iterations=iterations
        )
        spec = {"grid": {"name": "gaussian:tabulated", "steps": steps, "sigmas": [round(s, 6) for s in sigmas]}}
        click.echo(f"endpoint error {before:.4g} on the log-SNR grid -> {after:.4g} fitted")
        if out is not None:
            out.write_text(tomli_w.dumps(spec), encoding="utf-8")
            click.echo(f"wrote {out}")
        click.echo("--set grid=gaussian:tabulated --set 'grid.sigmas=" + str(spec["grid"]["sigmas"]) + "'")
