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


def read_with_holes(path: Path, size: int, low: float = -1.0, high: float = 1.0) -> tuple[Tensor, Tensor]:
    """A grey image ``(1, 1, size, size)`` in ``[low, high]`` and its known mask from a PNG whose
    transparent pixels (alpha below one half) are the ones to fill in. The picture may be
    ``size`` or a whole multiple of it on each side (e.g. a grid cell drawn 4× larger): it is
    reduced by averaging blocks, and a block is known when most of it is opaque. Raises
    ``ValueError`` saying what is wrong."""
    try:
        with Image.open(path) as image:
            image.load()
            picture = image.convert("LA")
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not an image Pillow can read ({exc})") from None
    width, height = picture.size
    if width != height or width % size:
        raise ValueError(f"is {width}×{height} pixels; expected {size}×{size} or a whole multiple of it")
    factor = width // size
    pixels = torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8).reshape(height, width, 2).float()
    blocks = torch.nn.functional.avg_pool2d(pixels.permute(2, 0, 1).unsqueeze(0), factor)  # (1, 2, size, size)
    grey, alpha = blocks[:, :1] / 255.0, blocks[:, 1:] / 255.0
    known = alpha >= 0.5
    if bool(known.all()):
        raise ValueError("has no transparent pixels: make the pixels to fill in transparent (alpha 0)")
    if not bool(known.any()):
        raise ValueError("is transparent everywhere: nothing is given to complete")
    return low + (high - low) * grey, known
