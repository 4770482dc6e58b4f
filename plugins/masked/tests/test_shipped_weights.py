"""The shipped weights load into their methods' recipes and do what the docs say."""

import diffusekit as dk
import pytest
import torch
from diffusekit.checkpoint import load_checkpoint
from diffusekit_masked import AdaptiveDecoding, RandomOrderDecoding, sudoku
from diffusekit_masked.text import MASK, Shakespeare, bits_per_character


@pytest.mark.parametrize("name", ["masked:sudoku", "masked:text"])
def test_methods_ship_weights_that_match_their_recipes(name):
    method = dk.get_registry().resolve("method", name).obj()
    path = method.weights()
    if path is None:
        pytest.fail(f"{name} ships no weights")
    shipped = load_checkpoint(path).recipe
    assert shipped.parts == method.recipe().parts and shipped.network == method.recipe().network
    assert path.stat().st_size < 8 * 2**20


def test_shipped_sudoku_model_solves_held_out_puzzles_in_adaptive_order_not_in_random_order():
    pipeline = dk.pretrained("masked:sudoku")
    puzzles, _ = sudoku.test_puzzles(40, 30)
    adaptive = sudoku.solved_fraction(sudoku.fill(pipeline, puzzles, AdaptiveDecoding(tokens_per_step=1)), puzzles)
    random = sudoku.solved_fraction(sudoku.fill(pipeline, puzzles, RandomOrderDecoding(tokens_per_step=1)), puzzles)
    assert adaptive >= 0.85  # 96.6% on 500 random-cut puzzles (docs/benchmarks.md)
    assert random <= 0.3  # 5.4% on the same 500


def test_shipped_text_model_uses_context():
    """Held-out ELBO far below the 4.77 bits/char a model that ignores context can reach."""
    pipeline = dk.pretrained("masked:text")
    held_out = Shakespeare(split="test").load()
    subset = dk.Data({"x": held_out.parts["x"][:32]})
    assert bits_per_character(pipeline, subset, times=4) < 3.5
    with torch.no_grad():
        out = pipeline.sampler.sample(pipeline.denoiser, (2, 128), pipeline.grid, generator=torch.Generator())
    assert out.shape == (2, 128) and bool((out < MASK).all())
