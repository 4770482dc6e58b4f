"""Clips are written as GIF, MP4 and a contact sheet that read back as the frames written."""

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from diffusekit_video.outputs import contact_sheet, frames_uint8, read_gif, write_gif, write_mp4
from PIL import Image


def _clip(frames: int = 6) -> torch.Tensor:
    """A bright square moving right on black: each frame differs from the one before."""
    clip = -torch.ones(frames, 1, 32, 32)
    for f in range(frames):
        clip[f, 0, 10:18, 2 + 3 * f : 10 + 3 * f] = 1.0
    return clip


def test_a_gif_holds_every_frame_exactly(tmp_path):
    clip = _clip()
    back = read_gif(write_gif(clip, tmp_path / "clip.gif", fps=10, scale=3))
    assert back.shape == (6, 96, 96)
    assert torch.equal(back, torch.from_numpy(frames_uint8(clip, 3)))


def test_an_mp4_holds_every_frame_close_to_what_was_written(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="MP4 is the plugin's mp4 extra (make test installs it)")
    clip = _clip()
    frames = np.stack(list(iio.imiter(write_mp4(clip, tmp_path / "clip.mp4", fps=10), plugin="FFMPEG")))
    assert frames.shape == (6, 128, 128, 3)  # 32 px × 4, a multiple of 16
    want = frames_uint8(clip, 4).astype(float)
    assert np.abs(frames[..., 0].astype(float) - want).mean() < 8  # lossy H.264, but the same pictures
    centres = [np.argwhere(f[..., 0] > 128)[:, 1].mean() for f in frames]
    assert all(b > a for a, b in zip(centres, centres[1:], strict=False))  # the square moves right


def test_a_contact_sheet_has_a_row_per_clip_and_a_column_per_frame(tmp_path):
    clips = torch.stack([_clip(), -_clip()])
    with Image.open(contact_sheet(clips, tmp_path / "sheet.png", scale=2)) as sheet:
        assert sheet.size == (6 * 65 + 1, 2 * 65 + 1)  # 32 px × 2 + 1 px of padding per cell
