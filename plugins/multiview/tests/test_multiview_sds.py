"""Score distillation against an oracle: a "model" whose denoised estimate is the true object seen
from the cameras it is given. Distilling from it must recover that object, by both variants."""

from __future__ import annotations

import types

import attrs
import numpy as np
import pytest
import torch
from diffusekit.prediction import Prediction
from diffusekit_gaussian import DDIM, VPCosine
from diffusekit_multiview import scenes, sds, volume
from diffusekit_multiview.networks import PART
from diffusekit_multiview.render import render


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads cost more than they give on a busy machine
    yield
    torch.set_num_threads(before)


@attrs.frozen(eq=False)
class TrueObject:
    """A denoiser-like oracle: x̂0 is the scene rendered from the condition's cameras."""

    scene: object
    size: int
    schedules: dict = attrs.field(factory=lambda: {PART: VPCosine()})
    calls: list = attrs.field(factory=list)

    def __call__(self, x, t, condition=None, coef=None):
        cams = condition.items[0].extrinsics()
        self.calls.append(cams)
        rgb = render(self.scene, cams, self.size, fov_deg=scenes.FOV_DEG).rgb * 2.0 - 1.0
        c = self.schedules[PART].coefficients(torch.as_tensor(t[PART]))
        return {PART: Prediction("x0", rgb, x[PART], c)}


def _oracle_pipeline(seed: int = 3):
    scene = scenes.random_primitives(np.random.default_rng(seed), 1)
    oracle = TrueObject(scene, 32)
    spec = types.SimpleNamespace(size=32)
    return types.SimpleNamespace(
        denoiser=oracle, guidance=None, sampler=DDIM(), network=types.SimpleNamespace(spec=spec)
    )


@pytest.mark.parametrize("variant", sds.VARIANTS)
def test_distilling_an_oracle_recovers_its_object(variant):
    pipe = _oracle_pipeline()
    config = sds.DistillConfig(steps=60, lr=0.1, variant=variant, inversion_steps=2)
    field = sds.distill(pipe, None, config)
    cams = sds.orbit_from(45.0, 4, config.elevation_deg)  # between the azimuths of any one step
    truth = render(pipe.denoiser.scene, cams[None], 32, fov_deg=scenes.FOV_DEG).rgb[0]
    fitted = volume.rerender_error(field, truth, cams)
    start = volume.rerender_error(volume.VoxelField(32, init_density=config.init_density), truth, cams)
    assert (fitted > 20.0).all() and (fitted > start + 8.0).all(), (fitted, start)


def test_refining_a_grid_fitted_to_given_views_keeps_them_and_completes_the_object():
    pipe = _oracle_pipeline()
    config = attrs.evolve(sds.DistillConfig().refining(), steps=40, fit_steps=60, lr=0.05)
    given = sds.orbit_from(0.0, 2, config.elevation_deg)  # two opposite views: the sides are open
    views = render(pipe.denoiser.scene, given[None], 32, fov_deg=scenes.FOV_DEG).rgb[0] * 2.0 - 1.0
    fitted = volume.fit_views((views + 1.0) / 2.0, given, steps=config.fit_steps, seed=config.seed)
    refined = sds.distill(pipe, None, config, start=(views, given))
    sides = sds.orbit_from(90.0, 2, config.elevation_deg)
    truth = render(pipe.denoiser.scene, sides[None], 32, fov_deg=scenes.FOV_DEG).rgb[0]
    before, after = volume.rerender_error(fitted, truth, sides), volume.rerender_error(refined, truth, sides)
    assert (after > before + 4.0).all(), (before, after)  # the prior completed what the views left open
    kept = volume.rerender_error(refined, (views + 1.0) / 2.0, given)
    assert (kept > volume.rerender_error(fitted, (views + 1.0) / 2.0, given) - 1.0).all()  # the given views stay


def test_sds_targets_follow_the_generator_and_inversion_targets_the_render():
    pipe = _oracle_pipeline()
    config = sds.DistillConfig()
    cams = sds.orbit_from(0.0, 4, config.elevation_deg)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    a = sds.target(pipe, x, cams, 0.5, None, "sds", config, torch.Generator().manual_seed(0))
    b = sds.target(pipe, x, cams, 0.5, None, "sds", config, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    # the oracle's estimate does not depend on x_t: both variants pull toward the true views
    c = sds.target(pipe, x, cams, 0.5, None, "inversion", attrs.evolve(config, inversion_steps=2), torch.Generator())
    torch.testing.assert_close(a, c)
    assert all(torch.equal(k[0], cams) for k in pipe.denoiser.calls)  # the cameras rendered are the cameras asked
