"""The perceptual distance between views: a distance's properties for any network, and a shipped
network that has learnt what the scenes show."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusekit import CheckpointError
from diffusekit.testing.cli import run_cli
from diffusekit_multiview import cameras, perceptual, primitives, scenes
from diffusekit_multiview.render import render
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file


def _net(seed: int = 0) -> perceptual.ViewFeatures:
    torch.manual_seed(seed)
    return perceptual.ViewFeatures(widths=(4, 6, 8)).eval()


def _images(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(*shape, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([(2,), (2, 3), (1, 2, 2)]))
def test_the_distance_is_zero_on_equal_images_symmetric_and_bounded(seed, lead):
    net = _net(seed % 7)
    a, b = _images(seed, lead), _images(seed + 1, lead)
    d = perceptual.perceptual_distance(a, b, net)
    assert d.shape == lead
    assert torch.equal(perceptual.perceptual_distance(a, a, net), torch.zeros(lead))
    torch.testing.assert_close(d, perceptual.perceptual_distance(b, a, net))
    # unit vectors are at most 2 apart: a layer adds at most 4 per position
    assert bool((d >= 0).all()) and bool((d <= 4.0 + 1e-5).all())


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31))
def test_each_image_pair_is_scored_alone(seed):
    """A pair's distance does not depend on the other images of the batch."""
    net = _net()
    a, b = _images(seed, (3,)), _images(seed + 1, (3,))
    together = perceptual.perceptual_distance(a, b, net)
    alone = torch.stack([perceptual.perceptual_distance(a[i : i + 1], b[i : i + 1], net)[0] for i in range(3)])
    torch.testing.assert_close(together, alone)


def test_images_of_two_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        perceptual.perceptual_distance(_images(0, (2,)), _images(0, (3,)), _net())


def test_saved_weights_load_back_and_other_files_are_refused(tmp_path):
    net = _net(3)
    path = tmp_path / "features.safetensors"
    perceptual.save_view_features(net, path, half=False)
    back = perceptual.load_view_features(path)
    a, b = _images(0, (2,)), _images(1, (2,))
    assert torch.equal(perceptual.perceptual_distance(a, b, back), perceptual.perceptual_distance(a, b, net))
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not a view feature network"):
        perceptual.load_view_features(other)


def test_the_targets_name_the_largest_primitive_its_colour_and_the_count():
    batch = scenes.Shapes(count=16, views=4, seed=5).generate()
    targets = perceptual.view_targets(batch)
    found = batch.primitives
    for s in range(16):
        present = found.present[s].nonzero()[:, 0].tolist()
        largest = max(present, key=lambda k: float(primitives.volume(found.kind[s, k], found.size[s, k])))
        assert int(targets["kind"][s]) == int(found.kind[s, largest])
        assert scenes.PALETTE[int(targets["colour"][s])] == pytest.approx(found.colour[s, largest].tolist())
        assert int(targets["count"][s]) == len(present) - 1


@pytest.fixture(scope="module")
def shipped():
    return perceptual.shipped_view_features()


def test_the_shipped_network_tells_what_held_out_views_show(shipped):
    """Chance is 25% for the kind, 17% for the colour and 33% for the count; the shipped network
    scored 62.6 / 80.8 / 77.0% on 256 other test-split scenes when it was trained."""
    test = scenes.Shapes(count=64, views=4, seed=123, split="test").generate()
    scores = perceptual.accuracy(shipped, test)
    assert scores["kind"] > 0.4 and scores["colour"] > 0.5 and scores["count"] > 0.5, scores


def test_the_shipped_distance_finds_a_scene_closer_to_itself_than_to_another(shipped):
    """A view is closer to the same scene seen 20° further round than to another scene seen from
    the same camera, for most scenes (the distance follows content, not the camera)."""
    num = 32
    found = scenes.random_primitives(np.random.default_rng([42, 1]), num)
    orbit = cameras.orbit(18, scenes.CAMERA_RADIUS, 20.0)[:2]
    rgb, _, _ = render(found, orbit.expand(num, -1, -1, -1), 32, fov_deg=scenes.FOV_DEG)
    views = rgb * 2.0 - 1.0
    same = perceptual.perceptual_distance(views[:, 0], views[:, 1], shipped)
    other = perceptual.perceptual_distance(views[:, 0], views.roll(1, 0)[:, 0], shipped)
    assert float((same < other).float().mean()) > 0.8


def test_train_view_features_writes_a_network_the_distance_loads(tmp_path):
    out = tmp_path / "features.safetensors"
    result = run_cli(
        "train-view-features", "--scenes", "4", "--steps", "2", "--batch-size", "4", "--test-scenes", "2",
        "--out", out, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "accuracy on 2 test-split scenes" in result.stdout
    net = perceptual.load_view_features(out)
    assert net.widths == perceptual.WIDTHS
