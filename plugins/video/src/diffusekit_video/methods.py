"""Methods of the video plugin: end-to-end recipes runnable with ``diffusekit run``.

One set of diffusion-forcing weights serves every task; a task only says which frames are
given (held at t = 0, :mod:`diffusekit.known`) and how long the video is
(:func:`~diffusekit_video.rollout.rollout`):

* ``generate`` — nothing given;
* ``i2v`` — the first frame given (image to video);
* ``interpolate`` — the first and the last frame given;
* ``predict`` — the first ``context`` frames given.

Given frames come from the plugin's own simulator, continued from states the model never
trained on (a seed of their own; held-out digits), and the outputs show the simulator's
clip beside the generated one. ``--input FILE.safetensors`` gives frames of one's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import attrs
import torch
from attrs import validators as v
from diffusekit import ComponentSpec, ConfigError, Method, PartSpec, Recipe, SampleConfig, TrainConfig, packaged_weights
from diffusekit.condition import Condition
from diffusekit.state import State
from safetensors.torch import save_file

from diffusekit_video import outputs, scenes
from diffusekit_video.rollout import rollout, with_frames

FRAMES = 16
"""Frames per clip (the network's temporal window and the dataset's clip length)."""

TASKS = ("generate", "i2v", "interpolate", "predict")

TRUTH_SEED = 1_000
"""Simulations the tasks are given frames of use seed ``TRUTH_SEED + recipe.seed``; training uses seed 0."""


@attrs.frozen
class BouncingMethod(Method):
    """16-frame 32×32 clips of 1–3 bouncing balls (:class:`~diffusekit_video.scenes.BouncingBalls`):
    unconditional, image-to-video, interpolation or prediction (``task``), one set of weights.

    A small spatio-temporal transformer (patch 4, width 96, 3 layers, a per-frame conv head,
    temporal attention over each patch's 3×3 neighbourhood) trained with diffusion forcing
    (``time_dims = 2``: every frame its own training time; a shared time for 30% of clips,
    random frames held given for 50%) and v-prediction on the
    cosine schedule; sampled with DDIM on the full-sequence scheduling matrix, with history
    guidance (scale 2) where frames are given. Because training
    sees independent per-frame times, the same weights run the pyramid and autoregressive
    matrices (``--set grid=video:pyramid``). ``length`` beyond 16 frames slides the window.

    ``plugins/video/scripts/train.sh`` trains and exports ``weights/bouncing.safetensors``
    (float16 EMA weights).
    """

    task: str = attrs.field(default="generate", validator=v.in_(TASKS))
    context: int = attrs.field(default=4, validator=v.ge(1))
    length: int = attrs.field(default=FRAMES, validator=v.ge(1))
    fps: float = attrs.field(default=8.0, validator=v.gt(0.0))

    input_format: ClassVar[str | None] = (
        "a safetensors file: 'x' (N, F, 1, 32, 32) in [-1, 1] and 'x.known' (N, F) booleans, the given frames"
    )

    def recipe(self) -> Recipe:
        return Recipe(
            parts={
                "x": PartSpec(
                    shape=(FRAMES, 1, 32, 32),
                    schedule=ComponentSpec("gaussian:vp_cosine"),
                    parameterization=ComponentSpec("gaussian:v"),
                    time_dims=2,
                )
            },
            network=ComponentSpec(
                "video:st_transformer",
                {
                    "channels": 1,
                    "size": 32,
                    "patch": 4,
                    "d_model": 96,
                    "layers": 3,
                    "heads": 4,
                    "frames": FRAMES,
                    "refine": 16,
                    "neighbours": 1,
                },
            ),
            sampler=ComponentSpec("gaussian:ddim"),
            grid=ComponentSpec("video:full_sequence", {"steps": 20}),
            guidance=ComponentSpec("gaussian:history", {"scale": 2.0}),  # acts only where frames are given
            dataset=ComponentSpec("video:bouncing_balls", {"count": 5000, "frames": FRAMES}),
            method="video:bouncing",
            seed=0,
            train=TrainConfig(
                steps=8500,
                batch_size=8,
                lr=6e-4,
                warmup_steps=200,
                ema_decay=0.999,
                grad_clip=1.0,
                condition_dropout=0.0,
                shared_time=0.3,
                hold=0.5,
                checkpoint_every=250,
                keep_checkpoints=4,
                log_every=50,
            ),
            sample=SampleConfig(num=8, batch_size=8),
        )

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_video", "bouncing")

    def truth(self, num: int, recipe: Recipe) -> torch.Tensor:
        """``num`` clips of ``length`` frames from the simulator, in [-1, 1], on states the
        training data never had (seed ``TRUTH_SEED + recipe.seed``)."""
        params = {**recipe.dataset.params, "count": num, "frames": self.length, "seed": TRUTH_SEED + recipe.seed}
        return scenes.BouncingBalls(**params).load().parts["x"]

    def given(self) -> torch.Tensor:
        """The mask of the task's given frames, ``(length,)``."""
        known = torch.zeros(self.length, dtype=torch.bool)
        if self.task == "i2v":
            known[0] = True
        elif self.task == "interpolate":
            known[[0, -1]] = True
        elif self.task == "predict":
            if self.context >= self.length:
                raise ConfigError("context", f"{self.context} given frames leave none of {self.length} to predict")
            known[: self.context] = True
        return known

    def generate(self, pipeline, num: int, out_dir: Path, progress: bool = False) -> list[Path]:
        """Clips of ``length`` frames for the ``task``; with given frames, the simulator's clips beside them."""
        if self.task == "generate":
            return self._write(rollout(pipeline, self.length, num=num), out_dir)
        truth, known = self.truth(num, pipeline.recipe), self.given()
        window = pipeline.network.spec.frames
        if self.task == "interpolate":
            if self.length > window or pipeline.network.spec.causal:
                raise ConfigError(
                    "task", f"interpolate needs a bidirectional model and length <= {window}, got length {self.length}"
                )
            clips = with_frames(pipeline, self.length).sample(given=truth, known=known.expand(num, -1).clone())
        else:
            clips = rollout(pipeline, self.length, context=truth[:, : int(known.sum())])
        return self._write(clips, out_dir, truth, known)

    def write_outputs(self, samples: State, condition: Condition | None, out_dir: Path) -> list[Path]:
        return self._write(samples if isinstance(samples, torch.Tensor) else samples["x"], out_dir)

    def _write(
        self, clips: torch.Tensor, out_dir: Path, truth: torch.Tensor | None = None, known: torch.Tensor | None = None
    ) -> list[Path]:
        """``samples.safetensors`` (``x``; with given frames also ``truth`` and ``known``), one
        looping GIF per clip (``clip_0.gif`` ...; with given frames the simulator's clip on the
        left, the generated one on the right), ``contact_sheet.png`` (a row per clip, a column
        per frame; the simulator's row above each generated one) and, when imageio-ffmpeg is
        installed (the ``mp4`` extra), ``clip_0.mp4``."""
        clips = clips.detach().float().cpu().clamp(-1.0, 1.0)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [out_dir / "samples.safetensors"]
        tensors = {"x": clips.contiguous()}
        shown, rows = clips, clips
        if truth is not None and known is not None:
            truth = truth.float().cpu().clamp(-1.0, 1.0)
            tensors.update(truth=truth.contiguous(), known=known.expand(len(clips), -1).contiguous())
            shown = torch.cat([truth, torch.ones_like(truth[..., :1]), clips], dim=-1)  # a white line between
            rows = torch.stack([truth, clips], dim=1).flatten(0, 1)
        save_file(tensors, str(written[0]))
        for i, clip in enumerate(shown):
            written.append(outputs.write_gif(clip, out_dir / f"clip_{i}.gif", fps=self.fps))
        written.append(outputs.contact_sheet(rows, out_dir / "contact_sheet.png"))
        try:
            import imageio_ffmpeg  # noqa: F401 - optional: the plugin's mp4 extra
        except ImportError:
            return written
        if len(shown):
            try:
                written.append(outputs.write_mp4(shown[0], out_dir / "clip_0.mp4", fps=self.fps))
            except Exception:  # an ffmpeg that will not run: the GIFs are the outputs
                pass
        return written


@attrs.frozen
class MovingDigitsMethod(BouncingMethod):
    """16-frame 32×32 clips of a scikit-learn digit moving and bouncing (:class:`~diffusekit_video.scenes.MovingDigits`),
    predicted from given frames and rolled out beyond the training length.

    The transformer is causal in time (a frame sees itself and earlier ones; Gao et al., 2024,
    "ViD-GPT") so a rollout caches the keys and values of finished frames, trained with
    diffusion forcing and held context frames like :class:`BouncingMethod`.
    """

    def recipe(self) -> Recipe:
        base = super().recipe()
        network = attrs.evolve(base.network, params={**base.network.params, "causal": True})
        dataset = ComponentSpec("video:moving_digits", {"count": 5000, "frames": FRAMES, "digits": 1})
        return attrs.evolve(base, network=network, dataset=dataset, method="video:moving-digits")

    task: str = attrs.field(default="predict", validator=v.in_(TASKS))
    context: int = attrs.field(default=4, validator=v.ge(1))
    length: int = attrs.field(default=2 * FRAMES, validator=v.ge(1))
    fps: float = attrs.field(default=8.0, validator=v.gt(0.0))

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_video", "moving_digits")

    def truth(self, num: int, recipe: Recipe) -> torch.Tensor:
        """``num`` clips of ``length`` frames of held-out digits (the test split), in [-1, 1]."""
        params = {**recipe.dataset.params, "count": num, "frames": self.length, "seed": TRUTH_SEED + recipe.seed}
        return scenes.MovingDigits(**{**params, "split": "test"}).load().parts["x"]
