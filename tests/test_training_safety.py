"""Training never loses or corrupts data: divergence, overwrites, exports, killed runs, dataset shapes.

The library checks run in-process on a small MLP; the command-line ones run the
``diffusekit`` console script for real on a tiny digits recipe.
"""

from __future__ import annotations

import json
import math
import os
import sys
import uuid
from pathlib import Path

import pytest
import torch
from diffusekit import CheckpointError, ClassLabel, ConfigError, Data, build, load_checkpoint, train
from diffusekit.errors import TrainingDiverged
from diffusekit.recipe import ComponentSpec, PartSpec, Recipe, TrainConfig
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from fakeplugins import assert_one_line_error, digits_recipe, run_cli  # noqa: E402

DIGITS_RECIPE = digits_recipe(method=False, checkpoint_every=1, log_every=1)
"""A digits recipe that trains in seconds and writes a checkpoint and a metrics row every step."""


def _recipe(**train_cfg) -> Recipe:
    cfg = dict(steps=6, batch_size=16, lr=3e-3, ema_decay=0.9, checkpoint_every=1, log_every=1)
    cfg.update(train_cfg)
    return Recipe(
        parts={"x": PartSpec((2,), ComponentSpec("gaussian:vp_cosine"), ComponentSpec("gaussian:eps"))},
        network=ComponentSpec("gaussian:mlp", {"dim": 2, "hidden": 16, "depth": 1, "num_classes": 3}),
        sampler=ComponentSpec("gaussian:ddim"),
        grid=ComponentSpec("gaussian:karras", {"steps": 4}),
        seed=3,
        train=TrainConfig(**cfg),
    )


def _data(n: int = 64) -> Data:
    g = torch.Generator().manual_seed(0)
    return Data({"x": torch.randn(n, 2, generator=g)}, ClassLabel(torch.arange(n) % 3, num_classes=3))


def _metric_steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text(encoding="utf-8").splitlines()]


def _assert_finite(path: Path) -> int:
    """Assert ``path`` is a loadable checkpoint whose floating-point tensors are all finite; return its step."""
    ckpt = load_checkpoint(path)
    for key, value in ckpt.tensors.items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), f"{path}: {key} is not finite"
    return ckpt.step


def _explode_after(pipeline, calls: int, action) -> None:
    """Run ``action(network, output)`` on the network's output from its ``calls + 1``-th training call on."""
    seen = {"n": 0}

    def hook(module, args, output):
        if not module.training:
            return None
        seen["n"] += 1
        return action(module, output) if seen["n"] > calls else None

    pipeline.network.register_forward_hook(hook)


@pytest.fixture(scope="module")
def digits_recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "digits.toml"
    path.write_text(DIGITS_RECIPE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory, digits_recipe) -> Path:
    """A 3-step training checkpoint of :data:`DIGITS_RECIPE` (trained once per module and worker)."""
    folder = tmp_path_factory.mktemp("trained")
    result = run_cli("train", digits_recipe, "--out", folder / "m.safetensors", "--no-progress", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "m.safetensors"


# --- divergence --------------------------------------------------------------------------------------


def test_a_nan_loss_stops_training_at_that_step_and_keeps_the_last_good_checkpoint(tmp_path):
    pipeline = build(_recipe())
    _explode_after(pipeline, 3, lambda module, output: output * float("nan"))
    out = tmp_path / "m.safetensors"
    with pytest.raises(TrainingDiverged, match="at step 4: the loss is nan") as caught:
        train(pipeline, _data(), out=out, progress=False)
    assert caught.value.step == 4
    assert "(step 3) is kept" in str(caught.value) and "\n" not in str(caught.value)
    assert _assert_finite(out) == 3
    assert _metric_steps(tmp_path / "m.metrics.jsonl") == [1, 2, 3]  # no row for the diverged step


def test_non_finite_weights_are_never_written_over_a_finite_checkpoint(tmp_path):
    """A weight can overflow while the loss stays finite; the check before writing catches it."""
    pipeline = build(_recipe())
    pipeline.network.register_parameter("unused", nn.Parameter(torch.zeros(3)))  # no gradient: the loss ignores it

    def poison(module, output):
        module.unused.data.fill_(math.inf)
        return None

    _explode_after(pipeline, 2, poison)
    out = tmp_path / "m.safetensors"
    with pytest.raises(TrainingDiverged, match=r"at step 3: model\.unused and 1 more tensors are not finite"):
        train(pipeline, _data(), out=out, progress=False)
    assert _assert_finite(out) == 2


def test_divergence_before_any_checkpoint_writes_none(tmp_path):
    pipeline = build(_recipe(checkpoint_every=100))
    _explode_after(pipeline, 0, lambda module, output: output * float("inf"))
    out = tmp_path / "m.safetensors"
    with pytest.raises(TrainingDiverged, match="at step 1: .*no checkpoint of this run was written"):
        train(pipeline, _data(), out=out, progress=False)
    assert not out.exists()


def test_cli_diverging_run_is_a_one_line_error_and_keeps_the_last_good_checkpoint(tmp_path, digits_recipe):
    out = tmp_path / "m.safetensors"
    result = run_cli(
        "train", digits_recipe, "--out", out, "--set", "train.lr=1e12", "--steps", "20", "--no-progress", cwd=tmp_path
    )
    message = assert_one_line_error(result)
    assert "diverged at step" in message and "train.lr" in message
    step = _assert_finite(out)
    assert 1 <= step < 20 and f"at step {step + 1}:" in message and f"(step {step}) is kept" in message
    assert max(_metric_steps(tmp_path / "m.metrics.jsonl")) == step


# --- refusing to lose a checkpoint ----------------------------------------------------------------


def test_train_refuses_an_existing_checkpoint_before_training(tmp_path):
    out = tmp_path / "m.safetensors"
    train(build(_recipe(steps=2)), _data(), out=out, progress=False)
    before = out.read_bytes()
    records = []
    with pytest.raises(
        CheckpointError, match="already exists; continue it with --resume or replace it with --overwrite"
    ):
        train(build(_recipe(steps=2)), _data(), out=out, progress=False, callback=records.append)
    assert records == [] and out.read_bytes() == before
    with pytest.raises(ConfigError, match="exclude each other"):
        train(build(_recipe(steps=2)), _data(), out=out, resume=True, overwrite=True, progress=False)
    train(build(_recipe(steps=4, lr=1e-2)), _data(), out=out, overwrite=True, progress=False)
    assert load_checkpoint(out).recipe.train.lr == 1e-2
    assert _metric_steps(tmp_path / "m.metrics.jsonl") == [1, 2, 3, 4]  # the replaced run's rows are gone


def test_cli_train_refuses_to_overwrite_without_resume_or_overwrite(tmp_path, digits_recipe, digits_checkpoint):
    out = tmp_path / "m.safetensors"
    out.write_bytes(digits_checkpoint.read_bytes())
    (tmp_path / "m.metrics.jsonl").write_bytes(digits_checkpoint.with_suffix(".metrics.jsonl").read_bytes())
    before = out.read_bytes()
    message = assert_one_line_error(run_cli("train", digits_recipe, "--out", out, "--no-progress", cwd=tmp_path))
    assert "m.safetensors already exists" in message and "--resume" in message and "--overwrite" in message
    assert out.read_bytes() == before

    message = assert_one_line_error(
        run_cli("train", digits_recipe, "--out", out, "--resume", "--overwrite", "--no-progress", cwd=tmp_path)
    )
    assert "--resume and --overwrite" in message
    assert out.read_bytes() == before

    result = run_cli("train", digits_recipe, "--out", out, "--overwrite", "--steps", "2", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(out).step == 2
    assert _metric_steps(tmp_path / "m.metrics.jsonl") == [1, 2]


@pytest.mark.parametrize(("command", "steps"), [("train", "0"), ("train", "-1"), ("run", "0")])
def test_cli_steps_must_be_at_least_one(tmp_path, digits_recipe, command, steps):
    out = tmp_path / "m.safetensors" if command == "train" else tmp_path / "run"
    message = assert_one_line_error(
        run_cli(command, digits_recipe, "--out", out, "--steps", steps, "--no-progress", cwd=tmp_path)
    )
    assert "--steps" in message and "at least 1" in message and steps in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("steps", [0, -1, 2.5, True])
def test_train_function_checks_steps(tmp_path, steps):
    with pytest.raises(ConfigError, match="^steps: "):
        train(build(_recipe()), _data(), out=tmp_path / "m.safetensors", steps=steps, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_train_refuses_a_folder_or_a_pickle_name_as_out(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        train(build(_recipe()), _data(), out=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="safetensors"):
        train(build(_recipe()), _data(), out=tmp_path / "m.pt", progress=False)


# --- export ----------------------------------------------------------------------------------------


def test_cli_export_refuses_to_write_over_its_own_checkpoint(tmp_path, digits_checkpoint):
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(digits_checkpoint.read_bytes())
    before = ckpt.read_bytes()
    (tmp_path / "sub").mkdir()
    os.link(ckpt, tmp_path / "hard.safetensors")
    for target in (tmp_path / "sub" / ".." / "m.safetensors", "hard.safetensors"):  # the same file by path, by inode
        message = assert_one_line_error(run_cli("export", "m.safetensors", "--out", target, cwd=tmp_path))
        assert "--out" in message and "optimizer state" in message
    assert ckpt.read_bytes() == before


def test_resuming_an_exported_checkpoint_says_it_holds_sampling_weights_only(
    tmp_path, digits_recipe, digits_checkpoint
):
    exported = tmp_path / "e.safetensors"
    result = run_cli("export", digits_checkpoint, "--out", exported, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    message = assert_one_line_error(
        run_cli("train", digits_recipe, "--out", exported, "--resume", "--steps", "5", "--no-progress", cwd=tmp_path)
    )
    assert "exported checkpoint holds sampling weights only" in message and "cannot be resumed" in message
    assert load_checkpoint(exported).step == 3


# --- what a killed run leaves behind ------------------------------------------------------------


def test_resume_removes_orphan_temporary_files_and_metric_rows_past_the_checkpoint(tmp_path):
    out = tmp_path / "m.safetensors"
    metrics = tmp_path / "m.metrics.jsonl"
    train(build(_recipe(steps=4)), _data(), out=out, progress=False)
    # what a run killed while writing step 6 leaves: rows of steps 5 and 6 (the last one torn), and temporary files
    with metrics.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + '{"step": 6, "lo')
    orphans = [
        tmp_path / f".m.safetensors.{uuid.uuid4().hex}.tmp",
        tmp_path / f".m.metrics.jsonl.{uuid.uuid4().hex}.tmp",
    ]
    others = [tmp_path / f".other.safetensors.{uuid.uuid4().hex}.tmp", tmp_path / ".m.safetensors.notours.tmp"]
    for path in orphans + others:
        path.write_bytes(b"partial")
    train(build(_recipe(steps=4)), _data(), out=out, resume=True, steps=7, progress=False)
    assert _metric_steps(metrics) == [1, 2, 3, 4, 5, 6, 7]
    assert not any(p.exists() for p in orphans)
    assert all(p.exists() for p in others), "only the temporary files of this checkpoint are removed"


# --- keeping earlier checkpoints ------------------------------------------------------------------


def test_keep_checkpoints_keeps_the_last_k_beside_the_latest(tmp_path):
    out = tmp_path / "m.safetensors"
    recipe = _recipe(steps=10, checkpoint_every=2, keep_checkpoints=2)
    train(build(recipe), _data(), out=out, progress=False)
    kept = sorted(p.name for p in tmp_path.glob("m.step*.safetensors"))
    assert kept == ["m.step6.safetensors", "m.step8.safetensors"]
    assert [_assert_finite(tmp_path / name) for name in kept] == [6, 8] and _assert_finite(out) == 10

    train(build(recipe), _data(), out=out, resume=True, steps=14, progress=False)
    assert sorted(p.name for p in tmp_path.glob("m.step*.safetensors")) == [
        "m.step10.safetensors",
        "m.step12.safetensors",
    ]
    assert _assert_finite(tmp_path / "m.step10.safetensors") == 10

    out.unlink()  # the latest is gone but earlier ones remain: still refused without --overwrite
    with pytest.raises(CheckpointError, match=r"m\.step10\.safetensors already exists"):
        train(build(recipe), _data(), out=out, progress=False)
    train(build(recipe), _data(), out=out, overwrite=True, steps=4, progress=False)
    assert sorted(p.name for p in tmp_path.glob("m.step*.safetensors")) == ["m.step2.safetensors"]


def test_keep_checkpoints_must_not_be_negative(tmp_path):
    with pytest.raises(ConfigError, match="train.keep_checkpoints"):
        train(build(_recipe(keep_checkpoints=-1)), _data(), out=tmp_path / "m.safetensors", progress=False)


# --- the dataset must fit the recipe --------------------------------------------------------------


def test_cli_part_shape_must_match_the_dataset(tmp_path, digits_recipe):
    out = tmp_path / "m.safetensors"
    message = assert_one_line_error(
        run_cli("train", digits_recipe, "--out", out, "--set", "parts.x.shape=[1,4,4]", "--no-progress", cwd=tmp_path)
    )
    assert message.startswith("parts.x.shape: ") and "[1, 4, 4]" in message and "[1, 8, 8]" in message
    assert not out.exists()


def test_dataset_must_have_exactly_the_recipe_parts(tmp_path):
    data = _data()
    extra = Data({"x": data.parts["x"], "y": torch.zeros(len(data), 3)}, data.condition)
    with pytest.raises(ConfigError, match=r"^parts: .*\['x'\].*\['x', 'y'\]"):
        train(build(_recipe()), extra, out=tmp_path / "m.safetensors", progress=False)
    with pytest.raises(ConfigError, match=r"^parts\.x\.shape: .*\[2\].*\[3\]"):
        train(build(_recipe()), Data({"x": torch.zeros(8, 3)}), progress=False)
    assert list(tmp_path.iterdir()) == []
