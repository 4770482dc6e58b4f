"""Methods of the video plugin: end-to-end recipes runnable with ``diffusekit run``."""

from __future__ import annotations

from pathlib import Path

import attrs
import torch
from diffusekit import ComponentSpec, Method, PartSpec, Recipe, SampleConfig, TrainConfig, packaged_weights
from diffusekit.condition import Condition
from diffusekit.state import State
from safetensors.torch import save_file

from diffusekit_video import outputs

FRAMES = 16
"""Frames per clip (the network's temporal window and the dataset's clip length)."""


@attrs.frozen
class BouncingMethod(Method):
    """Unconditional 16-frame 32×32 clips of 1–3 bouncing balls (:class:`~diffusekit_video.scenes.BouncingBalls`).

    A small spatio-temporal transformer (patch 4, width 96, 3 layers) trained with diffusion forcing
    (``time_dims = 2``: every frame its own training time) and v-prediction on the cosine schedule;
    sampled with DDIM on the full-sequence scheduling matrix (every frame at the same level).
    Because training sees independent per-frame times, the same weights can run the pyramid and
    autoregressive matrices (``--set grid=video:pyramid``).

    No weights ship yet: ``diffusekit run video:bouncing --train`` trains from scratch, and
    ``plugins/video/scripts/train_bouncing.sh`` trains and exports ``weights/bouncing.safetensors``
    (float16 EMA weights), which :meth:`weights` then returns.
    """

    fps: float = 8.0

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
                {"channels": 1, "size": 32, "patch": 4, "d_model": 96, "layers": 3, "heads": 4, "frames": FRAMES},
            ),
            sampler=ComponentSpec("gaussian:ddim"),
            grid=ComponentSpec("video:full_sequence", {"steps": 20}),
            dataset=ComponentSpec("video:bouncing_balls", {"count": 5000, "frames": FRAMES}),
            method="video:bouncing",
            seed=0,
            train=TrainConfig(
                steps=2000,
                batch_size=16,
                lr=8e-4,
                warmup_steps=100,
                ema_decay=0.995,
                grad_clip=1.0,
                condition_dropout=0.0,
                checkpoint_every=250,
                log_every=50,
            ),
            sample=SampleConfig(num=8, batch_size=8),
        )

    def weights(self) -> Path | None:
        return packaged_weights("diffusekit_video", "bouncing")

    def write_outputs(self, samples: State, condition: Condition | None, out_dir: Path) -> list[Path]:
        """``samples.safetensors``, one looping GIF per clip (``clip_0.gif`` ...), ``contact_sheet.png``
        (a row per clip, a column per frame) and, when imageio-ffmpeg is installed (the ``mp4``
        extra), ``clip_0.mp4``."""
        clips = samples if isinstance(samples, torch.Tensor) else samples["x"]
        clips = clips.detach().float().cpu().clamp(-1.0, 1.0)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [out_dir / "samples.safetensors"]
        save_file({"x": clips.contiguous()}, str(written[0]))
        for i, clip in enumerate(clips):
            written.append(outputs.write_gif(clip, out_dir / f"clip_{i}.gif", fps=self.fps))
        written.append(outputs.contact_sheet(clips, out_dir / "contact_sheet.png"))
        try:
            import imageio_ffmpeg  # noqa: F401 - optional: the plugin's mp4 extra
        except ImportError:
            return written
        if len(clips):
            try:
                written.append(outputs.write_mp4(clips[0], out_dir / "clip_0.mp4", fps=self.fps))
            except Exception:  # an ffmpeg that will not run: the GIFs are the outputs
                pass
        return written
