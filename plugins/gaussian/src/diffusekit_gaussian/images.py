"""Writing image batches as PNG grids (Pillow)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import Tensor


def to_uint8(images: Tensor, low: float = -1.0, high: float = 1.0) -> Tensor:
    """``(B, C, H, W)`` floats in ``[low, high]`` as uint8 in ``[0, 255]``."""
    scaled = (images.detach().float().cpu() - low) / (high - low)
    return (scaled.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def grid(images: Tensor, columns: int, scale: int = 4, pad: int = 1) -> Image.Image:
    """Tile uint8 images ``(B, C, H, W)`` (C = 1 or 3) into one picture, each pixel ``scale`` wide."""
    b, c, h, w = images.shape
    rows = -(-b // columns)
    images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    h, w = h * scale, w * scale
    canvas = torch.full((c, rows * (h + pad) + pad, columns * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(b):
        r, k = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        canvas[:, top : top + h, left : left + w] = images[i]
    mode = "L" if c == 1 else "RGB"
    pixels = canvas[0] if c == 1 else canvas.permute(1, 2, 0).contiguous()
    return Image.frombytes(mode, (canvas.shape[2], canvas.shape[1]), pixels.numpy().tobytes())


def save_grid(images: Tensor, path: Path, columns: int, scale: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    grid(images, columns, scale).save(path)
    return path
