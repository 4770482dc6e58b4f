"""The multiview methods: tasks as time plans over the views, cameras that dropout keeps,
outputs a person can look at, inputs a person gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
import trimesh
from diffusekit import ClassLabel, ConditionList, InputError, build, train
from diffusekit.testing.contracts import method_contracts
from diffusekit_multiview import cameras, methods, scenes
from diffusekit_multiview.cameras import Cameras
from diffusekit_multiview.networks import PART
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file


def _tiny(method: methods.ShapesMethod):
    """The method's recipe with a small network and few sampling steps (same parts and tasks)."""
    recipe = method.recipe()
    net = attrs.evolve(recipe.network, params={**recipe.network.params, "channels": 8, "num_res_blocks": 1})
    return attrs.evolve(recipe, network=net, grid=attrs.evolve(recipe.grid, params={"steps": 4}))


def _perturbed(pipeline):
    with torch.no_grad():  # the untrained output layer is zero: make the network do something
        for p in pipeline.network.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    return pipeline


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_dropout_removes_the_class_and_never_the_cameras(num, seed):
    g = torch.Generator().manual_seed(seed)
    cams = Cameras.of(cameras.random_cameras(num * 4, g).unflatten(0, (num, 4)))
    cond = ConditionList((cams, ClassLabel(torch.randint(0, 4, (num,), generator=g), num_classes=4)))
    dropped = cond.dropout(1.0, g)
    assert torch.equal(dropped.items[0].values, cams.values)
    assert (dropped.items[1].labels == -1).all()
    assert torch.equal(cams.extrinsics(), cams.values.unflatten(1, (-1, 4, 4)))


def test_given_views_come_back_bit_identical_and_the_others_are_generated():
    method = methods.NovelViewMethod()
    pipe = _perturbed(build(_tiny(method)))
    truth = method.held_out(3, pipe.recipe)
    views = truth.views * 2 - 1
    cond = ConditionList((Cameras.of(truth.extrinsics), ClassLabel(torch.full((3,), -1), num_classes=4)))
    out = pipe.sample(given={PART: views}, known={PART: method.given_mask(3)}, condition=cond)[PART]
    assert torch.equal(out[:, 0], views[:, 0])
    assert not torch.equal(out[:, 1:], views[:, 1:])
    assert torch.isfinite(out).all()


def test_held_out_scenes_are_test_split_scenes_on_the_orbit():
    method = methods.NovelViewMethod()
    recipe = method.recipe()
    a, b = method.held_out(2, recipe), method.held_out(2, recipe)
    assert torch.equal(a.views, b.views)
    train_scenes = scenes.random_primitives(np.random.default_rng([0, 0]), 2)
    assert not torch.equal(a.primitives.centre, train_scenes.centre)
    centres = cameras.centres(a.extrinsics)
    elevation = torch.rad2deg(torch.asin(centres[..., 1] / centres.norm(dim=-1)))
    torch.testing.assert_close(elevation, torch.full_like(elevation, methods.ELEVATION_DEG), atol=1e-4, rtol=0)


def test_shapes_conditions_cycle_through_the_classes_unless_one_is_asked():
    cond = methods.ShapesMethod().condition(6)
    assert cond.items[1].labels.tolist() == [0, 1, 2, 3, 0, 1]
    assert (methods.ShapesMethod(shape="torus").condition(3).items[1].labels == 2).all()
    assert cond.items[0].extrinsics().shape == (6, methods.VIEWS, 4, 4)


def test_psnr_of_known_errors():
    a = torch.zeros(2, 3, 4, 4)
    assert torch.allclose(methods.psnr(a, a + 0.2), torch.full((2,), 20.0))  # mse (0.1)^2 in [0, 1] units


def test_a_png_is_read_as_the_given_view(tmp_path: Path):
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # transparent: becomes the white background
    image.paste((255, 0, 0, 255), (16, 16, 48, 48))
    path = tmp_path / "object.png"
    image.save(path)
    given, known = methods.NovelViewMethod().read_input(path, methods.NovelViewMethod().recipe())
    views = given[PART]
    assert views.shape == (1, methods.VIEWS, 3, methods.SIZE, methods.SIZE)
    assert known[PART].tolist() == [[True, False, False, False]]
    torch.testing.assert_close(views[0, 0, :, 0, 0], torch.ones(3))  # white corner
    torch.testing.assert_close(views[0, 0, :, 16, 16], torch.tensor([1.0, -1.0, -1.0]))  # red centre
    (tmp_path / "bad.png").write_text("not a picture")
    with pytest.raises(InputError, match="bad.png: not a picture"):
        methods.NovelViewMethod().read_input(tmp_path / "bad.png", methods.NovelViewMethod().recipe())


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cli = [sys.executable, "-c", "from diffusekit.cli import main; main()"]
    return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_both_tasks_write_pictures_from_a_checkpoint(tmp_path: Path):
    method = methods.ShapesMethod()
    recipe = _tiny(method)
    recipe = attrs.evolve(recipe, dataset=attrs.evolve(recipe.dataset, params={**recipe.dataset.params, "count": 16}))
    pipe = build(recipe)
    train(pipe, out=tmp_path / "ck.safetensors", steps=2, progress=False)
    done = _run("sample", "ck.safetensors", "--num", "2", "--out", "shapes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "shapes" / "views.png") as png:
        assert png.size[0] > png.size[1] > 0  # four views across, two samples down
    done = _run("sample", "ck.safetensors", "--num", "2", "--set", "method=multiview:nvs", "--out", "nvs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "nvs" / "report.json").read_text())
    assert report["scenes"] == 2 and report["psnr_db_copying_the_given_view"] > 0
    done = _run(
        "sample",
        "ck.safetensors",
        "--num",
        "1",
        "--set",
        "method=multiview:sds",
        "--set",
        "steps=3",
        "--out",
        "sds",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    made = {p.name for p in (tmp_path / "sds").iterdir()}
    assert {"turntable_0.gif", "views.png", "report.json", "samples.safetensors"} <= made
    assert "object_0.obj" in made or "object_0.txt" in made  # a mesh, or why there is none
    report = json.loads((tmp_path / "sds" / "report.json").read_text())
    assert report["variant"] == "sds" and report["objects"][0]["shape"] == "sphere"
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    done = _run(
        "sample", "ck.safetensors", "--set", "method=multiview:nvs", "--input", "bad.png", "--out", "x", cwd=tmp_path
    )
    assert done.returncode != 0 and "bad.png: not a picture" in done.stderr and "Traceback" not in done.stderr


NVS_FLOOR_DB = 10.0
"""Novel views of the shipped model score above this against the truth; views of noise score ~5 dB."""


def test_the_shipped_weights_are_the_recipes_and_small():
    from diffusekit.checkpoint import load_checkpoint

    method = methods.ShapesMethod()
    path = method.weights()
    assert path is not None and path.stat().st_size < 5 * 2**20
    checkpoint = load_checkpoint(path)
    recipe = method.recipe()
    method_contracts(method, None)["weights"][1]()  # trained by the recipe, for its steps
    assert set(checkpoint.tensors) == {f"ema.{k}" for k in build(recipe).network.state_dict()}


def test_the_three_methods_run_from_the_shipped_weights(tmp_path: Path):
    done = _run("run", "multiview:shapes", "--num", "2", "--set", "grid.steps=10", "--out", "shapes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    views = load_file(str(tmp_path / "shapes" / "samples.safetensors"))["views"]
    # objects on the white background: the corners are background, the centre is not
    assert float(views[..., :4, :4].mean()) > 0.8 and float(views[..., 12:20, 12:20].mean()) < 0.6
    done = _run("run", "multiview:nvs", "--num", "4", "--set", "grid.steps=10", "--out", "nvs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "nvs" / "report.json").read_text())
    assert report["scenes"] == 4 and report["psnr_db"] > NVS_FLOOR_DB
    assert 0 < report["perceptual_distance"] < 4 and 0 < report["perceptual_distance_copying_the_given_view"] < 4
    done = _run("run", "multiview:sds", "--set", "steps=30", "--set", "shape=box", "--out", "sds", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    made = {p.name for p in (tmp_path / "sds").iterdir()}
    assert {"object_0.obj", "turntable_0.gif", "views.png", "report.json"} <= made  # a mesh of generated views
    mesh = trimesh.load(tmp_path / "sds" / "object_0.obj")
    assert len(mesh.faces) > 100 and float(np.abs(mesh.vertices).max()) <= 1.0  # a surface, inside the grid
