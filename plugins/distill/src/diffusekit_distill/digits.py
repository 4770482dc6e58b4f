"""``distill:digits``: class-conditional 8×8 digits in 1–4 network evaluations, distilled from ``gaussian:digits``."""

from __future__ import annotations

from pathlib import Path

import attrs
from attrs import validators as v
from diffusekit import ComponentSpec, Recipe, TrainConfig, packaged_weights
from diffusekit_gaussian.digits import DigitsMethod


@attrs.frozen
class DistilledDigits(DigitsMethod):
    """A consistency model of the digits: the ``gaussian:digits`` U-Net distilled (consistency
    distillation with a Heun teacher step, iCT's loss) from that method's guided sampler,
    sampled in ``steps`` evaluations by multistep consistency sampling. Ships EMA weights
    trained with :meth:`recipe` from the shipped teacher; ``--train`` distils afresh."""

    steps: int = attrs.field(default=2, validator=[v.ge(1), v.le(8)])
    """Network evaluations per sample (1: one-step generation)."""

    def recipe(self) -> Recipe:
        teacher = super().recipe()
        return attrs.evolve(
            teacher,
            sampler=ComponentSpec("distill:consistency"),
            grid=ComponentSpec("distill:consistency", {"steps": self.steps}),
            guidance=None,  # the student learned the guided teacher: guiding again would double it
            method="distill:digits",
            train=TrainConfig(
                steps=10000,
                batch_size=128,
                lr=2e-4,
                ema_decay=0.999,
                grad_clip=1.0,
                condition_dropout=0.1,
                checkpoint_every=1000,
                log_every=50,
                objective=ComponentSpec("distill:consistency", {"teacher": "gaussian:digits"}),
            ),
        )

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_distill", "digits")
