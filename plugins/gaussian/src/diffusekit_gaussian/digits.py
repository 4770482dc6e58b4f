"""Class-conditional generation of the 8×8 handwritten digits bundled with scikit-learn."""

from __future__ import annotations

from pathlib import Path

import attrs
import torch
from diffusekit import (
    ClassLabel,
    ComponentSpec,
    Data,
    Dataset,
    InputError,
    Method,
    PartSpec,
    Recipe,
    SampleConfig,
    TrainConfig,
    packaged_weights,
)
from diffusekit.state import State
from safetensors.torch import save_file

from diffusekit_gaussian.images import read_with_holes, save_grid, to_uint8


@attrs.frozen
class Digits(Dataset):
    """The 1,797 8×8 handwritten digits of scikit-learn (UCI optical digits), scaled from 0..16 to [-1, 1], with class labels."""

    def load(self) -> Data:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
        return Data({"x": images}, ClassLabel(torch.tensor(bunch.target, dtype=torch.long), num_classes=10))


@attrs.frozen
class DigitsMethod(Method):
    """Class-conditional 8×8 digits: a small U-Net with v-prediction on the cosine schedule, Heun sampling and classifier-free guidance.

    Ships EMA weights trained with :meth:`recipe` (``weights/digits.safetensors``);
    ``diffusekit run gaussian:digits --train`` trains from scratch instead.
    """

    input_format = "a PNG of a digit, white on black, 8×8 or a multiple; transparent pixels are filled in"

    def recipe(self) -> Recipe:
        return Recipe(
            parts={
                "x": PartSpec(
                    shape=(1, 8, 8),
                    schedule=ComponentSpec("gaussian:vp_cosine"),
                    parameterization=ComponentSpec("gaussian:v"),
                )
            },
            network=ComponentSpec(
                "gaussian:unet",
                {
                    "in_channels": 1,
                    "channels": 32,
                    "channel_mult": [1, 2],
                    "num_res_blocks": 2,
                    "attention_levels": [1],
                    "num_classes": 10,
                    "dropout": 0.1,
                },
            ),
            sampler=ComponentSpec("gaussian:heun"),
            grid=ComponentSpec("gaussian:karras", {"steps": 18}),
            guidance=ComponentSpec("gaussian:cfg", {"scale": 1.5}),
            dataset=ComponentSpec("gaussian:digits"),
            method="gaussian:digits",
            seed=0,
            train=TrainConfig(
                steps=8000,
                batch_size=128,
                lr=1e-3,
                warmup_steps=200,
                ema_decay=0.999,
                grad_clip=1.0,
                condition_dropout=0.1,
                checkpoint_every=2000,
                log_every=100,
            ),
            sample=SampleConfig(num=100, batch_size=500),
        )

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_gaussian", "digits")

    def condition(self, num: int, *, device: torch.device | str | None = None) -> ClassLabel:
        """Labels 0, 1, ..., 9, 0, 1, ...: ``num / 10`` samples of each digit."""
        return ClassLabel(torch.arange(num, device=device) % 10, num_classes=10)

    def write_outputs(self, samples: State, condition: ClassLabel | None, out_dir: Path) -> list[Path]:
        """One PNG grid per digit (``digit_0.png`` ...) and ``grid.png`` with a row per digit."""
        assert isinstance(samples, torch.Tensor)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file({"x": samples.contiguous()}, str(out_dir / "samples.safetensors"))
        images = to_uint8(samples)
        labels = condition.labels.cpu() if condition is not None else torch.zeros(len(images), dtype=torch.long)
        written = [out_dir / "samples.safetensors"]
        per_class = []
        for digit in range(10):
            chosen = images[labels == digit]
            if len(chosen):
                written.append(save_grid(chosen, out_dir / f"digit_{digit}.png", columns=min(10, len(chosen)), scale=4))
                per_class.append(chosen)
        width = max(len(c) for c in per_class)
        rows = torch.cat([torch.cat([c, c.new_full((width - len(c), *c.shape[1:]), 255)]) for c in per_class])
        written.append(save_grid(rows, out_dir / "grid.png", columns=width, scale=4))
        return written

    def read_input(self, path: Path, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
        """The digit in a PNG and its opaque pixels (:func:`images.read_with_holes`)."""
        try:
            return read_with_holes(path, size=8)
        except ValueError as exc:
            raise InputError(f"{path}: {exc}") from None

    def complete(self, pipeline, given, known, out_dir: Path, progress: bool = False) -> list[Path]:
        """Inpaint with the null label (the digit is not given), write ``completions.png``: the input,
        its holes in grey, then every completion."""
        null = ClassLabel(torch.full((len(given),), -1, dtype=torch.long), num_classes=10)
        samples = pipeline.sample(given=given, known=known, condition=null, progress=progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = out_dir / "completions.safetensors"
        save_file({"x": samples.contiguous(), "known": known.contiguous()}, str(tensors))
        shown = to_uint8(torch.where(known[:1], given[:1], torch.zeros_like(given[:1])))
        shown[~known[:1]] = 128  # the holes, in grey
        picture = save_grid(
            torch.cat([shown, to_uint8(samples)]),
            out_dir / "completions.png",
            columns=min(11, len(samples) + 1),
            scale=4,
        )
        return [tensors, picture]
