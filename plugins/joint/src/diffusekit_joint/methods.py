"""``joint:digits``: one model of the digits image and its label, every task a choice of times.

UniDiffuser (Bao et al., 2023) trains one network with an independent time per modality; which
modality is held at t = 0 (given), run from t = 1 (generated) or kept at t = 1 (marginalised)
then selects the task, with no retraining and no extra heads. ``--set task=...``:

==============  ===================================================================
``joint``       image and label both generated (both parts from t = 1)
``image``       image | label: the label given (held at t = 0), digits 0–9 in turn
``label``       label | image: held-out digits given, their labels sampled (classification)
``marginal``    the image alone, the label kept at t = 1 (masked) throughout
``classify``    the diffusion classifier on held-out digits (per-class denoising errors)
``complete``    an image with holes (``--input PNG``, transparent = unknown) completed,
                with its label generated too, or given with ``--set label=N``
==============  ===================================================================
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import torch
from attrs import validators as v
from diffusekit import (
    ComponentSpec,
    InputError,
    Method,
    PartSpec,
    Recipe,
    SampleConfig,
    TrainConfig,
    packaged_weights,
)
from diffusekit.state import State
from diffusekit_gaussian.images import read_with_holes, save_grid, to_uint8
from safetensors.torch import save_file
from torch import Tensor

from diffusekit_joint import classifier, world
from diffusekit_joint.digits import CLASSES, IMAGE, LABEL, load_digits
from diffusekit_joint.world import ACTION, ACTION_SCALE, NEXT, NOW

TASKS = ("joint", "image", "label", "marginal", "classify", "complete")


def write_by_label(images: Tensor, labels: Tensor, out_dir: Path, name: str = "grid.png") -> Path:
    """A PNG with a row per label (0–9, then a row for samples whose label is still masked), each
    sample in the row of its label; empty rows are left out."""
    pixels = to_uint8(images)
    rows = [pixels[labels == k] for k in range(CLASSES + 1)]
    rows = [r for r in rows if len(r)]
    width = max(len(r) for r in rows)
    padded = torch.cat([torch.cat([r, r.new_full((width - len(r), *r.shape[1:]), 255)]) for r in rows])
    return save_grid(padded, out_dir / name, columns=width, scale=4)


@attrs.frozen
class DigitsMethod(Method):
    """Digits and their labels from one joint model (``joint:unet``; the image under the cosine
    schedule with v-prediction, the label under absorbing diffusion with clean-label logits);
    the task is chosen by ``task`` (see the module docstring). Ships EMA weights trained with
    :meth:`recipe` on the training split (1,437 digits; 360 are held out)."""

    input_format = "a PNG of a digit, white on black, 8×8 or a multiple; transparent pixels are filled in"
    task: str = attrs.field(default="joint", validator=v.in_(TASKS))
    label: int | None = attrs.field(default=None, validator=v.optional([v.ge(0), v.lt(CLASSES)]))
    evaluations: int = attrs.field(default=20, validator=v.ge(1))
    """``classify``: times per class of the diffusion classifier."""

    def recipe(self) -> Recipe:
        return Recipe(
            parts={
                IMAGE: PartSpec(
                    shape=(1, 8, 8),
                    schedule=ComponentSpec("gaussian:vp_cosine"),
                    parameterization=ComponentSpec("gaussian:v"),
                ),
                LABEL: PartSpec(
                    shape=(1,),
                    schedule=ComponentSpec("masked:absorbing", {"num_classes": CLASSES + 1}),
                    parameterization=ComponentSpec("masked:x0_logits"),
                ),
            },
            network=ComponentSpec(
                "joint:unet",
                {
                    "channels": 32,
                    "channel_mult": [1, 2],
                    "num_res_blocks": 2,
                    "attention_levels": [1],
                    "num_classes": CLASSES,
                    "dropout": 0.1,
                },
            ),
            sampler=ComponentSpec("by_kind", {"gaussian": "gaussian:ddim", "categorical": "masked:ancestral"}),
            grid=ComponentSpec("uniform", {"steps": 50}),
            dataset=ComponentSpec("joint:digits", {"split": "train"}),
            method="joint:digits",
            seed=0,
            train=TrainConfig(
                steps=8000,
                batch_size=128,
                lr=1e-3,
                warmup_steps=200,
                ema_decay=0.999,
                grad_clip=1.0,
                checkpoint_every=2000,
                log_every=100,
            ),
            sample=SampleConfig(num=100, batch_size=500),
        )

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_joint", "digits")

    def given_labels(self, num: int) -> Tensor:
        if self.label is not None:
            return torch.full((num, 1), self.label, dtype=torch.long)
        return (torch.arange(num) % CLASSES)[:, None]

    def generate(self, pipeline, num: int, out_dir: Path, progress: bool = False) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        report: dict = {"task": self.task}
        if self.task in ("label", "classify"):
            images, truth = load_digits("test")
            images, truth = images[:num], truth[:num]
            if self.task == "label":
                out = pipeline.sample(given={IMAGE: images}, progress=progress)
                labels = out[LABEL][:, 0]
            else:
                labels = classifier.classify(pipeline.denoiser, images, self.evaluations, seed=pipeline.recipe.seed)
                report["evaluations_per_class"] = self.evaluations
            report |= {"digits": len(truth), "accuracy": float((labels == truth).float().mean())}
            out = {IMAGE: images, LABEL: labels[:, None]}
        elif self.task == "image":
            out = pipeline.sample(given={LABEL: self.given_labels(num)}, progress=progress)
        elif self.task == "marginal":
            out = pipeline.sample(num, marginal=[LABEL], progress=progress)
        elif self.task == "joint":
            out = pipeline.sample(num, progress=progress)
        else:
            raise InputError("task=complete completes a picture: give it with --input PNG")
        return self._write(out, report, out_dir)

    def write_outputs(self, samples: State, condition, out_dir: Path) -> list[Path]:
        """``samples.safetensors``, ``grid.png`` (a row per sampled label) and ``report.json``."""
        return self._write(samples, {"task": self.task}, out_dir)

    def _write(self, out: State, report: dict, out_dir: Path) -> list[Path]:
        images, labels = out[IMAGE], out[LABEL][:, 0]
        save_file({IMAGE: images.contiguous(), LABEL: labels.contiguous()}, str(out_dir / "samples.safetensors"))
        report["labels"] = labels.tolist()
        report["counts"] = {str(k): int((labels == k).sum()) for k in range(CLASSES)}
        (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        png = write_by_label(images, labels, out_dir)
        return [out_dir / "samples.safetensors", png, out_dir / "report.json"]

    def read_input(self, path: Path, recipe: Recipe) -> tuple[State, dict]:
        """The digit in a PNG (its opaque pixels known) and, with ``label``, its label."""
        try:
            image, known = read_with_holes(path, size=8)
        except ValueError as exc:
            raise InputError(f"{path}: {exc}") from None
        given: dict[str, Tensor] = {IMAGE: image}
        masks: dict[str, Tensor | None] = {IMAGE: known}
        if self.label is not None:
            given[LABEL], masks[LABEL] = self.given_labels(1), None
        return given, masks

    def complete(self, pipeline, given, known, out_dir: Path, progress: bool = False) -> list[Path]:
        """Complete the picture (and its label, unless given); ``grid.png`` by sampled label."""
        out_dir.mkdir(parents=True, exist_ok=True)
        out = pipeline.sample(given=given, known=known, progress=progress)
        return self._write(out, {"task": "complete", "label_given": self.label is not None}, out_dir)


WORLD_TASKS = {
    # task: (parts given at t = 0, parts kept at t = 1); the rest is generated
    "joint": ((), ()),
    "policy": ((NOW,), (NEXT,)),
    "forward": ((NOW, ACTION), ()),
    "inverse": ((NOW, NEXT), ()),
    "predict": ((NOW,), (ACTION,)),
}


def draw_transitions(now: Tensor, after: Tensor, actions: dict[str, Tensor], path: Path, scale: int = 8) -> Path:
    """A PNG with a row per transition: the frame with each action drawn as an arrow from the mass
    (``actions``: name -> ``(N, 2)`` in pixels; ``demonstrated`` in green, any other in red), then
    the next frame."""
    from PIL import Image, ImageDraw

    red, green = (230, 40, 40), (40, 200, 60)
    start = world.centroid(now)
    rows = []
    for i in range(len(now)):
        tiles = []
        for frame in (now[i], after[i]):
            grey = to_uint8(frame[None])[0, 0].numpy()
            tiles.append(Image.fromarray(grey, "L").convert("RGB").resize((world.SIZE * scale,) * 2, Image.NEAREST))
        pen = ImageDraw.Draw(tiles[0])
        for name, action in actions.items():
            colour = green if name == "demonstrated" else red
            (x0, y0), (dx, dy) = ((start[i] + 0.5) * scale).tolist(), (action[i] * scale).tolist()
            pen.line([(x0, y0), (x0 + dx, y0 + dy)], fill=colour, width=2)
            pen.ellipse([x0 + dx - 3, y0 + dy - 3, x0 + dx + 3, y0 + dy + 3], fill=colour)
        rows.append(tiles)
    side = world.SIZE * scale
    sheet = Image.new("RGB", (2 * side + 4, len(rows) * (side + 4)), (255, 255, 255))
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (c * (side + 4), r * (side + 4)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


@attrs.frozen
class WorldMethod(Method):
    """One model of a frame, an action and the next frame of the point-mass world
    (:mod:`diffusekit_joint.world`), used as four models by the choice of times (Unified World
    Models, Zhu et al., 2025). ``--set task=...`` on held-out transitions:

    ============  ===============================================================
    ``policy``    action | frame, the next frame kept at t = 1
    ``forward``   next frame | frame, action (forward dynamics)
    ``inverse``   action | frame, next frame (inverse dynamics)
    ``predict``   next frame | frame, the action kept at t = 1 (video prediction)
    ``joint``     all three generated
    ============  ===============================================================

    Writes ``transitions.png`` (a row per transition: the frame with the generated action in
    red and the demonstrated one in green, then the next frame), ``samples.safetensors`` and
    ``report.json`` (action error in pixels, next-frame PSNR and the mass's position error,
    beside copying the frame).
    """

    task: str = attrs.field(default="policy", validator=v.in_(tuple(WORLD_TASKS)))

    def recipe(self) -> Recipe:
        gaussian = {
            "schedule": ComponentSpec("gaussian:vp_cosine"),
            "parameterization": ComponentSpec("gaussian:v"),
        }
        frame = (1, world.SIZE, world.SIZE)
        return Recipe(
            parts={
                NOW: PartSpec(shape=frame, **gaussian),
                NEXT: PartSpec(shape=frame, **gaussian),
                ACTION: PartSpec(shape=(2,), **gaussian),
            },
            network=ComponentSpec(
                "joint:world_unet",
                {
                    "size": world.SIZE,
                    "channels": 32,
                    "channel_mult": [1, 2],
                    "num_res_blocks": 2,
                    "attention_levels": [1],
                },
            ),
            sampler=ComponentSpec("gaussian:ddim"),
            grid=ComponentSpec("uniform", {"steps": 50}),
            dataset=ComponentSpec("joint:world", {"count": 20_000}),
            method="joint:world",
            seed=0,
            train=TrainConfig(
                steps=4000,
                batch_size=64,
                lr=1e-3,
                warmup_steps=200,
                ema_decay=0.999,
                grad_clip=1.0,
                checkpoint_every=1000,
                log_every=100,
            ),
            sample=SampleConfig(num=16, batch_size=500),
        )

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_joint", "world")

    def write_outputs(self, samples: State, condition, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in samples.items()}, str(out_dir / "samples.safetensors"))
        png = draw_transitions(
            samples[NOW], samples[NEXT], {"action": samples[ACTION] * ACTION_SCALE}, out_dir / "transitions.png"
        )
        return [out_dir / "samples.safetensors", png]

    def generate(self, pipeline, num: int, out_dir: Path, progress: bool = False) -> list[Path]:
        if self.task == "joint":
            return self.write_outputs(pipeline.sample(num, progress=progress), None, out_dir)
        given_parts, kept = WORLD_TASKS[self.task]
        truth = world.PointMassWorld(count=num, split="test").load().parts
        out = pipeline.sample(given={p: truth[p] for p in given_parts}, marginal=list(kept), progress=progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in out.items()}, str(out_dir / "samples.safetensors"))
        report: dict = {"task": self.task, "transitions": num}
        actions = {}
        if ACTION not in given_parts and ACTION not in kept:
            actions["generated"] = out[ACTION] * ACTION_SCALE
            error = (out[ACTION] - truth[ACTION]) * ACTION_SCALE
            report["action_rmse_px"] = float(error.square().sum(1).mean().sqrt())
        actions["demonstrated"] = truth[ACTION] * ACTION_SCALE
        if NEXT not in given_parts and NEXT not in kept:
            report["next_psnr_db"] = float(_psnr(out[NEXT], truth[NEXT]).mean())
            report["next_psnr_db_copying_the_frame"] = float(_psnr(truth[NOW], truth[NEXT]).mean())
            moved = world.centroid(out[NEXT]) - world.centroid(truth[NEXT])
            report["next_position_error_px"] = float(moved.square().sum(1).mean().sqrt())
            stayed = world.centroid(truth[NOW]) - world.centroid(truth[NEXT])
            report["next_position_error_px_copying_the_frame"] = float(stayed.square().sum(1).mean().sqrt())
        (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        png = draw_transitions(
            truth[NOW], out[NEXT] if NEXT not in kept else truth[NEXT], actions, out_dir / "transitions.png"
        )
        return [out_dir / "samples.safetensors", png, out_dir / "report.json"]


def _psnr(a: Tensor, b: Tensor) -> Tensor:
    """PSNR (dB) per image of frames in [-1, 1]."""
    mse = ((a.float() - b.float()) / 2.0).square().flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


__all__ = ["TASKS", "WORLD_TASKS", "DigitsMethod", "WorldMethod", "draw_transitions", "write_by_label"]
