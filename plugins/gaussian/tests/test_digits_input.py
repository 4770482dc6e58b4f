"""``diffusekit run gaussian:digits --input IMAGE.png``: a digit with transparent holes, completed by
the shipped model; the opaque pixels come back exactly, malformed images are one-line errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusekit.testing.cli import assert_one_line_error, run_cli
from diffusekit_gaussian.images import read_with_holes
from PIL import Image
from safetensors.torch import load_file
from sklearn.datasets import load_digits


def _digit_with_holes(path: Path, index: int, scale: int, rows: slice) -> np.ndarray:
    """A digit of scikit-learn's set drawn ``scale``× larger, white on black, ``rows`` transparent."""
    grey = (load_digits().images[index] / 16.0 * 255.0).round().astype(np.uint8)
    alpha = np.full_like(grey, 255)
    alpha[rows] = 0
    picture = np.stack([grey, alpha], -1).repeat(scale, 0).repeat(scale, 1)
    Image.fromarray(picture, "LA").save(path)
    return grey


@pytest.mark.parametrize("scale", [1, 4])
def test_images_are_read_at_8x8_with_their_holes(tmp_path, scale):
    grey = _digit_with_holes(tmp_path / "d.png", 5, scale, slice(4, None))
    x, known = read_with_holes(tmp_path / "d.png", size=8)
    assert x.shape == known.shape == (1, 1, 8, 8)
    assert bool(known[..., :4, :].all()) and not bool(known[..., 4:, :].any())
    assert torch.allclose(x[0, 0, :4], torch.from_numpy(grey[:4]).float() / 255.0 * 2 - 1, atol=1e-6)


def test_cli_completes_a_digit_keeping_its_known_pixels(tmp_path):
    _digit_with_holes(tmp_path / "three.png", 3, 4, slice(4, None))
    result = run_cli(
        "run", "gaussian:digits", "--input", "three.png", "--num", "4", "--out", "out", "--no-progress", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    out = load_file(str(tmp_path / "out" / "completions.safetensors"))
    x, known = read_with_holes(tmp_path / "three.png", size=8)
    assert out["x"].shape == (4, 1, 8, 8) and torch.equal(out["known"], known.expand(4, -1, -1, -1))
    assert torch.equal(out["x"][..., :4, :], x[..., :4, :].expand(4, -1, -1, -1))
    assert bool(torch.isfinite(out["x"]).all()) and float(out["x"][..., 4:, :].std()) > 0.1  # something was drawn
    assert (tmp_path / "out" / "completions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_refuses_images_it_cannot_complete(tmp_path):
    Image.new("L", (8, 8)).save(tmp_path / "opaque.png")
    Image.new("LA", (10, 10)).save(tmp_path / "odd.png")
    (tmp_path / "text.png").write_text("not an image", encoding="utf-8")
    cases = {"opaque.png": "no transparent pixels", "odd.png": "10×10 pixels", "text.png": "not an image"}
    for name, words in cases.items():
        message = assert_one_line_error(run_cli("run", "gaussian:digits", "--input", name, cwd=tmp_path))
        assert name in message and words in message, message
    assert not (tmp_path / "outputs").exists()
