"""The ``shapes`` dataset: shapes, range, determinism, splits, primitives inside the unit ball, cameras."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch
from diffusekit import Embedding
from diffusekit_multiview import cameras, primitives, scenes
from diffusekit_multiview.render import render
from hypothesis import given, settings
from hypothesis import strategies as st

fast = settings(max_examples=20, deadline=None, derandomize=True)
seeds = st.integers(0, 2**31 - 1)


@pytest.fixture(scope="module")
def batch() -> scenes.SceneBatch:
    return scenes.Shapes(count=6, views=5, size=16, seed=3).generate()


def test_load_gives_views_in_range_with_the_cameras_as_condition():
    dataset = scenes.Shapes(count=4, views=4, size=16, seed=1)
    data = dataset.load()
    x = data.parts["views"]
    assert set(data.parts) == {"views"}
    assert x.shape == (4, 4, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert (x == 1.0).any() and (x < 0.5).any()  # white background and coloured objects
    assert isinstance(data.condition, Embedding)
    assert data.condition.values.shape == (4, 4 * 16)
    generated = dataset.generate()
    torch.testing.assert_close(data.condition.values.reshape(4, 4, 4, 4), generated.extrinsics, rtol=0, atol=0)
    torch.testing.assert_close(x, generated.views * 2 - 1, rtol=0, atol=0)


def test_scene_batch_fields_have_their_shapes(batch):
    assert batch.views.shape == (6, 5, 3, 16, 16)
    assert batch.depth.shape == batch.masks.shape == (6, 5, 16, 16)
    assert batch.masks.dtype == torch.bool
    assert batch.extrinsics.shape == (6, 5, 4, 4)
    assert batch.primitives.kind.shape == (6, scenes.MAX_PRIMITIVES)
    assert batch.shape_class.shape == (6,) and batch.shape_class.dtype == torch.int64
    assert batch.views.min() >= 0 and batch.views.max() <= 1
    assert (batch.depth[~batch.masks] == 0).all() and (batch.depth[batch.masks] > 0).all()


def test_generation_is_deterministic_under_the_seed():
    a = scenes.Shapes(count=3, views=4, size=16, seed=5).generate()
    b = scenes.Shapes(count=3, views=4, size=16, seed=5).generate()
    c = scenes.Shapes(count=3, views=4, size=16, seed=6).generate()
    assert torch.equal(a.views, b.views) and torch.equal(a.extrinsics, b.extrinsics)
    assert torch.equal(a.primitives.centre, b.primitives.centre)
    assert not torch.equal(a.extrinsics, c.extrinsics)


def test_train_and_test_splits_draw_different_scenes():
    train = scenes.Shapes(count=3, views=4, size=16, seed=5, split="train").generate()
    test = scenes.Shapes(count=3, views=4, size=16, seed=5, split="test").generate()
    assert not torch.equal(train.primitives.centre, test.primitives.centre)
    assert not torch.equal(train.extrinsics, test.extrinsics)


def test_a_smaller_dataset_is_a_prefix_of_a_larger_one_with_the_same_seed():
    """Scenes are drawn one after the other, so the first ones do not depend on how many follow."""
    small = scenes.random_primitives(np.random.default_rng([4, 0]), 2)
    large = scenes.random_primitives(np.random.default_rng([4, 0]), 5)
    assert torch.equal(small.centre, large.centre[:2]) and torch.equal(small.kind, large.kind[:2])


@fast
@given(seeds)
def test_scenes_have_one_to_three_primitives_centred_and_filling_the_ball(seed):
    p = scenes.random_primitives(np.random.default_rng(seed), 8)
    counts = p.present.sum(-1)
    assert ((counts >= 1) & (counts <= 3)).all()
    assert p.present[:, 0].all()  # the used slots come first
    assert (p.present[:, 1:] <= p.present[:, :-1]).all()
    radius = primitives.bounding_radius(p.kind, p.size)
    reach = torch.linalg.vector_norm(p.centre, dim=-1) + radius
    # the smallest ball about the origin holding each scene has radius FILL
    torch.testing.assert_close(
        reach.masked_fill(~p.present, 0).amax(-1), torch.full((8,), scenes.FILL), atol=1e-5, rtol=0
    )
    # and the box around the primitives' bounding balls is centred on the origin
    low = (p.centre - radius[..., None]).masked_fill(~p.present[..., None], torch.inf).amin(-2)
    high = (p.centre + radius[..., None]).masked_fill(~p.present[..., None], -torch.inf).amax(-2)
    torch.testing.assert_close(low + high, torch.zeros(8, 3), atol=1e-5, rtol=0)
    r = p.rotation[p.present]
    torch.testing.assert_close(r @ r.transpose(-1, -2), torch.eye(3).expand_as(r), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(len(r)), atol=1e-5, rtol=0)
    palette = torch.tensor(scenes.PALETTE)
    assert ((p.colour[p.present][:, None] == palette).all(-1).any(-1)).all()
    for kind, ranges in scenes.SIZES.items():  # the scale is the scene's, the proportions the primitive's
        sizes = p.size[p.present & (p.kind == kind)]
        lo, hi = torch.tensor(ranges, dtype=torch.float32).T
        used = hi > 0
        assert (sizes[:, used] > 0).all() and (sizes[:, ~used] == 0).all()
        if used.sum() == 2:  # torus and cylinder: the ratio of their two sizes is drawn from SIZES
            ratio = sizes[:, 1] / sizes[:, 0]
            assert ((ratio >= lo[1] / hi[0] - 1e-5) & (ratio <= hi[1] / lo[0] + 1e-5)).all()


def test_the_primitives_are_sampled_over_every_kind_and_count():
    p = scenes.random_primitives(np.random.default_rng(0), 200)
    assert set(p.kind[p.present].tolist()) == set(range(len(primitives.KINDS)))
    assert set(p.present.sum(-1).tolist()) == {1, 2, 3}


def test_the_shape_class_is_the_kind_of_the_largest_primitive(batch):
    p = batch.primitives
    for s in range(len(p.kind)):
        present = p.present[s]
        volumes = primitives.volume(p.kind[s][present], p.size[s][present])
        assert batch.shape_class[s] == p.kind[s][present][volumes.argmax()]


def test_the_shape_class_of_a_known_scene():
    p = scenes.random_primitives(np.random.default_rng(0), 1)
    p = attrs.evolve(
        p,
        kind=torch.tensor([[primitives.SPHERE, primitives.BOX, primitives.TORUS]]),
        size=torch.tensor([[[0.3, 0, 0], [0.2, 0.2, 0.2], [0.4, 0.1, 0]]]),  # volumes 0.113, 0.064, 0.079
        present=torch.tensor([[True, True, True]]),
    )
    assert scenes.shape_classes(p).tolist() == [primitives.SPHERE]
    assert scenes.shape_classes(attrs.evolve(p, present=torch.tensor([[False, True, True]]))).tolist() == [
        primitives.TORUS
    ]


def test_the_cameras_look_at_the_origin_from_their_sphere(batch):
    c = cameras.centres(batch.extrinsics)
    radius = torch.linalg.vector_norm(c, dim=-1)
    torch.testing.assert_close(radius, torch.full_like(radius, scenes.CAMERA_RADIUS))
    elevation = torch.rad2deg(torch.asin(c[..., 1] / radius))
    lo, hi = scenes.ELEVATION_DEG
    assert (elevation >= lo - 1e-3).all() and (elevation <= hi + 1e-3).all()
    pixel, _ = cameras.project(torch.zeros(3), batch.extrinsics, 16, scenes.FOV_DEG)
    torch.testing.assert_close(pixel, torch.full_like(pixel, 8.0), atol=1e-4, rtol=0)


def test_the_views_are_the_scenes_rendered_from_the_cameras(batch):
    for s in (0, 5):
        out = render(batch.primitives.take(s), batch.extrinsics[s], 16, fov_deg=scenes.FOV_DEG)
        torch.testing.assert_close(out.rgb, batch.views[s])
        assert torch.equal(out.mask, batch.masks[s])
    assert batch.masks.any(-1).any(-1).all()  # every view sees something


def test_the_dataset_validates_its_fields():
    with pytest.raises(ValueError):
        scenes.Shapes(views=3)
    with pytest.raises(ValueError):
        scenes.Shapes(views=9)
    with pytest.raises(ValueError):
        scenes.Shapes(split="validation")  # type: ignore[arg-type]


def test_the_plugin_registers_the_dataset():
    from diffusekit_multiview import plugin

    registered = {}
    plugin.register_datasets(lambda cls, name: registered.setdefault(name, cls))
    assert registered == {"shapes": scenes.Shapes}


def test_a_small_dataset_passes_the_dataset_contract():
    from diffusekit.testing.contracts import dataset_contracts

    for _, check in dataset_contracts(scenes.Shapes(count=3, views=4, size=16)).values():
        check()
