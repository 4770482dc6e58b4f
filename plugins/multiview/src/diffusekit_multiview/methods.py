"""Methods of the multiview plugin: end-to-end recipes runnable with ``diffusekit run``.

One set of weights serves both tasks; a task is a time plan over the views (per-view time,
``time_dims = 2``): in ``shapes`` every view is generated, in ``nvs`` the given view is held at
t = 0 (:mod:`diffusekit.known`) while the others are denoised at their cameras. Training holds a
random subset of views given in half the batches (``train.hold``; three quarters in the last
stage), so the one network learns both.

* ``multiview:shapes`` — :data:`VIEWS` views of a new object of a shape class, on an orbit;
* ``multiview:nvs`` — novel views of a held-out rendered scene from one view (its other views
  beside them for comparison), or of a PNG the user gives (``--input``);
* ``multiview:sds`` — a 3-D object (mesh and turntable GIF) distilled from the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import attrs
import numpy as np
import torch
from attrs import validators as v
from diffusekit import (
    ComponentSpec,
    ConditionList,
    InputError,
    Method,
    PartSpec,
    Recipe,
    SampleConfig,
    TrainConfig,
    packaged_weights,
)
from diffusekit.condition import Condition
from diffusekit.state import State
from diffusekit_gaussian.images import save_grid, to_uint8
from safetensors.torch import save_file
from torch import Tensor

from diffusekit_multiview import cameras, perceptual, primitives, scenes
from diffusekit_multiview.networks import PART
from diffusekit_multiview.render import render

VIEWS = 4
"""Views per sample the shipped model is trained and sampled with (MVDream's four)."""
SIZE = 32
"""Pixels per side of a view."""
ELEVATION_DEG = 20.0
"""The elevation of the orbit the methods sample on (inside the training cameras' zone)."""
TRUTH_SEED = 1_000
"""Held-out scenes for ``nvs`` come from the test split with seed ``TRUTH_SEED + recipe.seed``."""


def orbit_cameras(num: int, views: int, generator: torch.Generator) -> Tensor:
    """``(num, views, 4, 4)``: for each sample ``views`` cameras evenly spaced in azimuth on the
    orbit at :data:`ELEVATION_DEG`, starting at a random azimuth."""
    offsets = torch.rand(num, generator=generator, dtype=torch.float64) * 360.0
    return torch.stack([cameras.orbit(views, scenes.CAMERA_RADIUS, ELEVATION_DEG, float(o)) for o in offsets]).reshape(
        num, views, 4, 4
    )


def write_views(
    views: Tensor, out_dir: Path, truth: Tensor | None = None, extra: dict[str, Tensor] | None = None
) -> list[Path]:
    """``samples.safetensors`` (``views`` ``(N, V, 3, S, S)`` in [-1, 1], and ``extra``) and
    ``views.png``: a row per sample, a column per view; with ``truth`` the true views' row above
    each generated one."""
    views = views.detach().float().cpu().clamp(-1.0, 1.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {"views": views.contiguous(), **{k: t.contiguous() for k, t in (extra or {}).items()}}
    rows = views
    if truth is not None:
        truth = truth.float().cpu().clamp(-1.0, 1.0)
        tensors["truth"] = truth.contiguous()
        rows = torch.stack([truth, views], 1).flatten(0, 1)
    save_file(tensors, str(out_dir / "samples.safetensors"))
    v_count = views.shape[1]
    png = save_grid(to_uint8(rows.flatten(0, 1)), out_dir / "views.png", columns=v_count, scale=4)
    return [out_dir / "samples.safetensors", png]


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio (dB) of images in [-1, 1] over the last three dimensions."""
    mse = ((a.float() - b.float()) / 2.0).square().mean((-3, -2, -1))
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


@attrs.frozen
class ShapesMethod(Method):
    """:data:`VIEWS` consistent 32×32 views of a new object of 1–3 coloured primitives
    (:class:`~diffusekit_multiview.scenes.Shapes`) whose largest primitive is of the class
    ``shape`` (sphere, box, torus, cylinder; by default the samples cycle through them), seen
    from an orbit at 20° elevation.

    A multi-view U-Net (``multiview:mv_unet``: 32-64-64 channels, attention across all views at
    8×8 and in the middle, MVDream's 3-D self-attention, Shi et al., 2023; Plücker ray maps as the
    camera code, CAT3D, Gao et al., 2024) trained with v-prediction on the cosine schedule and per-view time (every view its own
    training time; one shared time for 30% of samples; random views held given for half the
    samples, so the same weights do novel-view synthesis). The shape class is dropped for 10% of
    samples (classifier-free guidance, ``guidance.scale``); the cameras never are. Training runs
    in three stages: 3,000 steps at a constant learning rate; 1,500 from their EMA weights with
    the rate decaying to 1e-5 on a cosine (a ``finetune`` stage); then 1,500 more with the same
    rate schedule, views held given in 75% of samples, and the network's ``reference`` input
    turned on (every view also reads the given views at full resolution through a
    zero-initialised convolution, as Zero123 added the input image's channels to a trained
    model; Liu et al., 2023).
    """

    shape: str | None = attrs.field(default=None, validator=v.optional(v.in_(primitives.KINDS)))

    def recipe(self) -> Recipe:
        recipe = Recipe(
            parts={
                PART: PartSpec(
                    shape=(VIEWS, 3, SIZE, SIZE),
                    schedule=ComponentSpec("gaussian:vp_cosine"),
                    parameterization=ComponentSpec("gaussian:v"),
                    time_dims=2,
                )
            },
            network=ComponentSpec(
                "multiview:mv_unet",
                {
                    "size": SIZE,
                    "channels": 32,
                    "channel_mult": [1, 2, 2],
                    "attention_levels": [2],
                    "heads": 4,
                    "views": VIEWS,
                    "camera": "plucker",
                    "num_classes": len(primitives.KINDS),
                },
            ),
            sampler=ComponentSpec("gaussian:ddim"),
            grid=ComponentSpec("uniform", {"steps": 50}),
            guidance=ComponentSpec("gaussian:cfg", {"scale": 2.0}),
            dataset=ComponentSpec("multiview:shapes", {"count": 8000, "views": VIEWS, "size": SIZE, "labels": True}),
            method="multiview:shapes",
            seed=0,
            train=TrainConfig(
                steps=3000,
                batch_size=16,
                lr=5e-4,
                warmup_steps=200,
                ema_decay=0.999,
                grad_clip=1.0,
                condition_dropout=0.1,
                shared_time=0.3,
                hold=0.5,
                checkpoint_every=250,
                keep_checkpoints=3,
                log_every=50,
            ),
            sample=SampleConfig(num=8, batch_size=8),
        )
        # from stage 1's EMA weights the rate falls to 1e-5 on a cosine, with a shorter average
        # (0.995), which suits a run this short (docs/benchmarks.md §10)
        decay = attrs.evolve(
            recipe.train, steps=1500, warmup_steps=100, lr_schedule="cosine", lr_min=1e-5, ema_decay=0.995
        )
        # then the given view as a full-resolution input (Zero123), from stage 2's EMA weights: its
        # convolution starts at zero; views are held given in 3 of 4 batches, with fresh draws
        reference = attrs.evolve(decay, hold=0.75, seed=1, network={"reference": True})
        return attrs.evolve(recipe, finetune=[decay, reference])

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_multiview", "shapes")

    def labels(self, num: int) -> Tensor:
        if self.shape is not None:
            return torch.full((num,), primitives.KINDS.index(self.shape), dtype=torch.int64)
        return torch.arange(num, dtype=torch.int64) % len(primitives.KINDS)

    def condition(self, num: int, *, device: torch.device | str | None = None) -> Condition:
        cond = scenes.scene_condition(orbit_cameras(num, VIEWS, torch.Generator().manual_seed(num)), self.labels(num))
        return cond if device is None else cond.to(device)

    def write_outputs(self, samples: State, condition: Condition | None, out_dir: Path) -> list[Path]:
        views = samples[PART] if isinstance(samples, dict) else samples
        extra = {}
        if isinstance(condition, ConditionList):
            extra = {
                "extrinsics": condition.items[0].values.unflatten(1, (-1, 4, 4)),
                "labels": condition.items[1].labels,
            }
        return write_views(views, out_dir, extra=extra)


@attrs.frozen
class NovelViewMethod(ShapesMethod):
    """Novel views from one view (Zero123's task, Liu et al., 2023, with the given view held at
    t = 0 as in CAT3D): ``multiview:shapes``' weights, the first of :data:`VIEWS` views given and
    the other three generated at cameras 90°, 180° and 270° further round the orbit. The shape
    class is not given (the null label). Sampling is ancestral (DDIM with η = 1; Song et al., 2021)
    and guided by the given view (``gaussian:history``, w = 3: classifier-free guidance whose
    condition is the given view, contrasted with the same view replaced by noise; Song et al., 2025).

    Without ``--input`` the given views are of held-out scenes the plugin renders (the test split),
    and ``views.png`` shows each scene's true views above the generated ones; ``report.json`` gives
    the PSNR and the perceptual distance (:mod:`diffusekit_multiview.perceptual`) of the generated
    views, and both for copying the given view. ``--input FILE.png`` takes a picture of one's own: an object
    on a white background, seen from 20° above, scaled to 32×32.
    """

    input_format: ClassVar[str | None] = "a PNG of an object on white, seen from 20° above (scaled to 32×32)"

    def recipe(self) -> Recipe:
        base = super().recipe()
        # ancestral steps (DDIM with eta = 1): their fresh noise corrects an undertrained network's
        # drift, which a deterministic solver integrates; 0.6 dB and 0.05 closer than eta = 0 (§10.1).
        # Guidance by the given view pushes the others further towards it: 0.3 dB and 0.07 closer
        # perceptually on validation scenes
        sampler = ComponentSpec("gaussian:ddim", {"eta": 1.0})
        guidance = ComponentSpec("gaussian:history", {"scale": 3.0})
        return attrs.evolve(base, sampler=sampler, guidance=guidance, method="multiview:nvs")

    def condition(self, num: int, *, device: torch.device | str | None = None) -> Condition:
        extrinsics = cameras.orbit(VIEWS, scenes.CAMERA_RADIUS, ELEVATION_DEG).expand(num, -1, -1, -1)
        cond = scenes.scene_condition(extrinsics, torch.full((num,), -1))
        return cond if device is None else cond.to(device)

    def held_out(self, num: int, recipe: Recipe) -> scenes.SceneBatch:
        """``num`` test-split scenes rendered on the orbit of :meth:`condition`, each at its own random
        azimuth: the first view is given, the others are the truth."""
        seed = TRUTH_SEED + recipe.seed
        found = scenes.random_primitives(np.random.default_rng([seed, scenes.SPLITS.index("test")]), num)
        extrinsics = orbit_cameras(num, VIEWS, torch.Generator().manual_seed(seed))
        rgb, depth, mask = render(found, extrinsics, SIZE, fov_deg=scenes.FOV_DEG)
        return scenes.SceneBatch(rgb, depth, mask, extrinsics, found, scenes.shape_classes(found))

    def given_mask(self, num: int) -> Tensor:
        known = torch.zeros(num, VIEWS, dtype=torch.bool)
        known[:, 0] = True
        return known

    def generate(self, pipeline, num: int, out_dir: Path, progress: bool = False) -> list[Path]:
        truth = self.held_out(num, pipeline.recipe)
        views = truth.views * 2.0 - 1.0
        cond = scenes.scene_condition(truth.extrinsics, torch.full((num,), -1))
        known = self.given_mask(num)
        out = pipeline.sample(given={PART: views}, known={PART: known}, condition=cond, progress=progress)[PART]
        written = write_views(out, out_dir, truth=views, extra={"extrinsics": truth.extrinsics})
        target, copied = views[:, 1:], views[:, :1].expand_as(views[:, 1:])
        features = perceptual.shipped_view_features()
        report = {
            "scenes": num,
            "psnr_db": float(psnr(out[:, 1:], target).mean()),
            "psnr_db_copying_the_given_view": float(psnr(copied, target).mean()),
            "perceptual_distance": float(perceptual.perceptual_distance(out[:, 1:], target, features).mean()),
            "perceptual_distance_copying_the_given_view": float(
                perceptual.perceptual_distance(copied, target, features).mean()
            ),
        }
        (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        return [*written, out_dir / "report.json"]

    def read_input(self, path: Path, recipe: Recipe) -> tuple[State, dict[str, Tensor]]:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image.load()
                rgba = image.convert("RGBA")
        except (UnidentifiedImageError, OSError) as e:
            raise InputError(f"{path}: not a picture ({e.__class__.__name__}); multiview:nvs takes a PNG") from None
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, rgba).convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).reshape(SIZE, SIZE, 3)
        view = pixels.permute(2, 0, 1).float() / 127.5 - 1.0
        views = torch.zeros(1, VIEWS, 3, SIZE, SIZE)
        views[:, 0] = view
        return {PART: views}, {PART: self.given_mask(1)}


@attrs.frozen
class DistillMethod(ShapesMethod):
    """A 3-D object of the shape class ``shape`` from ``multiview:shapes``' weights: by default
    (``start="views"``) the model generates :data:`VIEWS` views of the class, a density and colour
    voxel grid is fitted to them through the differentiable volume renderer, and score distillation
    refines it with those views kept (:mod:`diffusekit_multiview.sds`, "Reconstruct, then refine").
    ``start="blob"`` distils from DreamFusion's density blob alone, with no generated views.
    Distillation is SDS (``variant="sds"``; Poole et al., 2023; multi-view as in MVDream) or its
    DDIM-inversion variant (``"inversion"``; Lukoianov et al., 2024); ``steps`` counts its steps
    (default: 150 refining, 400 from the blob).

    Writes, per object, ``object_<i>.obj`` (marching cubes, vertex colours), ``turntable_<i>.gif``
    (the object rendered round the orbit) and ``views.png`` (a row of the views the model generated
    for the class above a row of the object's renders at those cameras); ``report.json`` gives
    each object's PSNR against those views. About a minute on 2 CPU cores per object, with a
    progress bar.
    """

    variant: str = attrs.field(default="sds", validator=v.in_(("sds", "inversion")))
    steps: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    start: str = attrs.field(default="views", validator=v.in_(("views", "blob")))

    def recipe(self) -> Recipe:
        base = super().recipe()
        return attrs.evolve(base, method="multiview:sds", sample=SampleConfig(num=1, batch_size=1))

    def distill_config(self, seed: int):
        """The :class:`~diffusekit_multiview.sds.DistillConfig` this method distils with."""
        from diffusekit_multiview import sds

        config = sds.DistillConfig(variant=self.variant, seed=seed)
        config = config.refining() if self.start == "views" else config
        return config if self.steps is None else attrs.evolve(config, steps=self.steps)

    def generate(self, pipeline, num: int, out_dir: Path, progress: bool = False) -> list[Path]:
        from diffusekit_multiview import sds, volume

        out_dir.mkdir(parents=True, exist_ok=True)
        labels = self.labels(num)
        config = self.distill_config(pipeline.recipe.seed)
        written, renders, report = [], [], []
        extrinsics = sds.orbit_from(0.0, VIEWS, ELEVATION_DEG)
        cond = scenes.scene_condition(extrinsics.expand(num, -1, -1, -1), labels)
        generated = pipeline.sample(num, condition=cond, progress=progress)[PART]
        for i, label in enumerate(labels.tolist()):
            start = (generated[i], extrinsics) if self.start == "views" else None
            field = sds.distill(
                pipeline, label, attrs.evolve(config, seed=config.seed + i), progress=progress, start=start
            )
            with torch.no_grad():
                rgb, _ = volume.render_volume(field, extrinsics, SIZE)
            renders.append(rgb * 2.0 - 1.0)
            try:
                written.append(volume.write_mesh(field, out_dir / f"object_{i}.obj"))
            except ValueError as e:  # an empty field: say so, keep the other outputs
                (out_dir / f"object_{i}.txt").write_text(f"no mesh: {e}\n")
            written.append(volume.write_turntable_gif(field, out_dir / f"turntable_{i}.gif"))
            report.append(
                {
                    "shape": primitives.KINDS[label],
                    "psnr_db_vs_generated": float(psnr(renders[-1], generated[i]).mean()),
                }
            )
        written += write_views(torch.stack(renders), out_dir, truth=generated)
        summary = {"variant": self.variant, "start": self.start, "steps": config.steps, "objects": report}
        (out_dir / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
        return [*written, out_dir / "report.json"]


__all__ = ["DistillMethod", "NovelViewMethod", "ShapesMethod", "orbit_cameras", "psnr", "write_views"]
