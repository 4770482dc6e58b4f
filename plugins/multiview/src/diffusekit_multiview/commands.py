"""CLI commands the multiview plugin adds (through the public ``register_commands`` hook)."""

from __future__ import annotations

from pathlib import Path

import click


def register(cli: click.Group) -> None:
    @cli.command(name="train-view-features")
    @click.option(
        "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Weights (.safetensors)."
    )
    @click.option("--scenes", "scenes_count", type=click.IntRange(min=1), default=3000, show_default=True)
    @click.option("--steps", type=click.IntRange(min=1), default=3000, show_default=True)
    @click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
    @click.option("--test-scenes", type=click.IntRange(min=1), default=256, show_default=True)
    @click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
    def train_view_features(out, scenes_count, steps, batch_size, test_scenes, seed):
        """Train the small network behind the multi-view perceptual distance (it tells a view's
        largest primitive, its colour and the number of primitives) on single views of training-split
        scenes, print its accuracy on test-split scenes and write it to --out."""
        from diffusekit_multiview import perceptual, scenes

        def log(step, loss):
            click.echo(f"step {step}: loss {loss:.4f}", err=True)

        net = perceptual.train_view_features(
            scenes_count=scenes_count, steps=steps, batch_size=batch_size, seed=seed, log=log
        )
        test = scenes.Shapes(count=test_scenes, views=4, seed=seed, split="test").generate()
        scores = ", ".join(f"{k} {100 * v:.1f}%" for k, v in perceptual.accuracy(net, test).items())
        click.echo(f"accuracy on {test_scenes} test-split scenes x 4 views: {scores}")
        perceptual.save_view_features(net, out)
        click.echo(f"wrote {out}")
