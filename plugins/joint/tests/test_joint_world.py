"""The point-mass world of ``joint:world``: its data, its network, and the four models it is by
the choice of times, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
import torch
from diffusekit import ConfigError, build, train
from diffusekit.testing.cli import run_cli
from diffusekit_joint import methods, world
from diffusekit_joint.world import ACTION, ACTION_SCALE, NEXT, NOW, PointMassWorld
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**16))
def test_the_frames_determine_the_positions_and_the_action(seed):
    found = world.demonstrate(64, torch.Generator().manual_seed(seed))
    start, end = world.centroid(found[NOW]), world.centroid(found[NEXT])
    assert float((start - found["position"]).abs().max()) < 0.15
    assert float((end - start - found["action"]).abs().max()) < 0.3  # inverse dynamics is well posed
    assert float(found["action"].abs().max()) <= ACTION_SCALE


def test_the_demonstrator_steers_toward_the_centre_with_noise():
    found = world.demonstrate(20_000, torch.Generator().manual_seed(0))
    residual = found["action"] - world.mean_action(found["position"])
    assert abs(float(residual.mean())) < 0.02 and 0.45 < float(residual.std()) < 0.65  # clipping trims N(0, 0.6²)
    train_parts, test_parts = PointMassWorld(count=50).load().parts, PointMassWorld(count=50, split="test").load().parts
    assert not torch.equal(train_parts[NOW], test_parts[NOW])
    assert float(train_parts[ACTION].abs().max()) <= 1.0


def test_every_part_and_time_reaches_the_outputs():
    pipe = build(methods.WorldMethod().recipe())
    torch.manual_seed(0)
    with torch.no_grad():
        for p in pipe.network.parameters():
            if not bool(p.any()):
                p.normal_(std=0.1)
    net = pipe.network.eval()
    parts = PointMassWorld(count=4).load().parts
    times = {NOW: 0.3, NEXT: 0.6, ACTION: 0.5}
    base = net(parts, times)
    assert base[NOW].shape == (4, 1, 16, 16) and base[ACTION].shape == (4, 2)
    for name in (NOW, NEXT, ACTION):
        moved = net({**parts, name: parts[name].flip(0)}, times)
        assert not torch.allclose(moved[ACTION], base[ACTION]) and not torch.allclose(moved[NEXT], base[NEXT])
        later = net(parts, {**times, name: 0.9})
        assert not torch.allclose(later[NEXT], base[NEXT])


def test_a_wrong_frame_size_is_a_recipe_error():
    recipe = methods.WorldMethod().recipe()
    wrong = attrs.evolve(recipe.parts[NEXT], shape=(1, 8, 8))
    with pytest.raises(ConfigError, match=r"parts\.next\.shape.*\[1, 16, 16\]"):
        build(attrs.evolve(recipe, parts={**recipe.parts, NEXT: wrong}))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "ck.safetensors"
    recipe = methods.WorldMethod().recipe()
    recipe = attrs.evolve(recipe, dataset=attrs.evolve(recipe.dataset, params={"count": 64}))
    train(build(recipe), out=out, steps=3, progress=False)
    return out


@pytest.mark.parametrize("task", list(methods.WORLD_TASKS))
def test_every_task_runs_from_the_command_line(checkpoint: Path, tmp_path: Path, task: str):
    done = run_cli(
        "sample",
        checkpoint,
        "--num",
        "4",
        "--set",
        f"task={task}",
        "--set",
        "grid.steps=3",
        "--out",
        task,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / task / "transitions.png") as png:
        assert png.size[1] > png.size[0]  # a row per transition
    if task == "joint":
        return
    report = json.loads((tmp_path / task / "report.json").read_text())
    given_parts, kept = methods.WORLD_TASKS[task]
    assert ("action_rmse_px" in report) == (ACTION not in given_parts + kept)
    assert ("next_position_error_px" in report) == (NEXT not in given_parts + kept)
    from safetensors.torch import load_file

    out = load_file(str(tmp_path / task / "samples.safetensors"))
    truth = PointMassWorld(count=4, split="test").load().parts
    for name in given_parts:  # given parts come back exactly
        assert torch.equal(out[name], truth[name])
