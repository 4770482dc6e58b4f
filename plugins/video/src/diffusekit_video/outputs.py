"""Writing clips people can watch: animated GIF, MP4 and a contact sheet (imageio, Pillow).

A clip is ``(F, C, H, W)`` in [-1, 1] (C = 1 or 3); frames are scaled up by whole pixels so
32×32 clips are visible. MP4 needs the ``mp4`` extra (``imageio-ffmpeg``, whose wheel ships
an ffmpeg binary); GIF and PNG need nothing more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusekit_gaussian.images import save_grid, to_uint8
from torch import Tensor


def frames_uint8(clip: Tensor, scale: int = 4) -> np.ndarray:
    """``(F, H*scale, W*scale)`` grey or ``(F, H*scale, W*scale, 3)`` colour uint8 frames."""
    frames = to_uint8(clip).repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    out = frames.permute(0, 2, 3, 1).numpy()
    return out[..., 0] if out.shape[-1] == 1 else out


def write_gif(clip: Tensor, path: Path, fps: float = 8.0, scale: int = 4) -> Path:
    """An endlessly looping animated GIF."""
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frames_uint8(clip, scale), extension=".gif", duration=1000.0 / fps, loop=0)
    return path


def write_mp4(clip: Tensor, path: Path, fps: float = 8.0, scale: int = 4) -> Path:
    """An H.264 MP4 (sides scaled to a multiple of 16, as the codec wants)."""
    try:
        import imageio_ffmpeg  # noqa: F401 - the ffmpeg binary imageio writes MP4 with
    except ImportError:
        raise RuntimeError("MP4 output needs imageio-ffmpeg: pip install 'diffusekit-video[mp4]'") from None
    import imageio.v3 as iio

    while (clip.shape[-1] * scale) % 16:
        scale += 1
    frames = frames_uint8(clip, scale)
    if frames.ndim == 3:  # grey: the codec takes colour
        frames = np.repeat(frames[..., None], 3, axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frames, extension=".mp4", fps=fps, codec="libx264", plugin="FFMPEG")
    return path


def contact_sheet(clips: Tensor, path: Path, scale: int = 2) -> Path:
    """One row per clip ``(B, F, C, H, W)``, one column per frame, as a PNG."""
    b, f = clips.shape[:2]
    return save_grid(to_uint8(clips.reshape(b * f, *clips.shape[2:])), path, columns=f, scale=scale)


def read_gif(path: Path) -> Tensor:
    """The frames of a GIF as ``(F, H, W)`` uint8 (for checking what was written)."""
    import imageio.v3 as iio

    frames = iio.imread(path, index=None, extension=".gif")
    return torch.from_numpy(np.asarray(frames)[..., 0] if np.asarray(frames).ndim == 4 else np.asarray(frames))
