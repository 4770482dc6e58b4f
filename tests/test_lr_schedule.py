"""Learning-rate schedules of the training loop: warm-up, then constant, linear or cosine decay to lr_min."""

import json
import math

import pytest
import torch
from diffusekit import build, load_checkpoint, train
from diffusekit.errors import CheckpointError, ConfigError
from diffusekit.recipe import TrainConfig
from diffusekit.training import learning_rate
from hypothesis import given
from hypothesis import strategies as st
from test_training import _data, _recipe


@given(
    st.sampled_from(["linear", "cosine"]),
    st.integers(0, 20),
    st.integers(2, 200),
    st.floats(1e-5, 1.0),
    st.floats(0.0, 1.0),
)
def test_a_decay_starts_at_lr_after_warm_up_ends_at_lr_min_and_never_rises(schedule, warmup, after, lr, ratio):
    total = warmup + after
    cfg = TrainConfig(lr=lr, lr_min=lr * ratio, warmup_steps=warmup, lr_schedule=schedule)
    rates = [learning_rate(cfg, k, total) for k in range(total)]
    assert math.isclose(rates[warmup], lr, rel_tol=1e-12)  # the first step after the warm-up
    assert math.isclose(rates[-1], lr * ratio, rel_tol=1e-9, abs_tol=1e-15)  # the last step
    decay = rates[warmup:]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(decay, decay[1:], strict=False))
    assert all(rates[k] <= rates[k + 1] * (1 + 1e-12) for k in range(max(0, warmup - 1)))  # warm-up rises


def test_linear_decay_is_halfway_at_the_middle_and_cosine_is_too():
    for schedule in ("linear", "cosine"):
        cfg = TrainConfig(lr=1.0, lr_min=0.2, lr_schedule=schedule)
        assert math.isclose(learning_rate(cfg, 50, 101), 0.6)  # step 50 of 0..100
    cosine = TrainConfig(lr=1.0, lr_min=0.0, lr_schedule="cosine")
    assert math.isclose(learning_rate(cosine, 25, 101), 0.5 * (1 + math.cos(math.pi / 4)))
    assert learning_rate(TrainConfig(lr=0.3), 999, 1000) == 0.3  # constant


def test_the_loop_logs_the_scheduled_rates(tmp_path):
    recipe = _recipe(lr_schedule="cosine", lr_min=1e-4, warmup_steps=3, log_every=1)
    out = tmp_path / "m.safetensors"
    train(build(recipe), _data(), out=out, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "m.metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == [learning_rate(recipe.train, k, 12) for k in range(12)]
    assert rows[-1]["lr"] == pytest.approx(1e-4)


def test_a_scheduled_run_resumes_bit_for_bit_and_refuses_another_length(tmp_path):
    recipe = _recipe(lr_schedule="linear", lr_min=1e-4)
    straight, split = tmp_path / "straight.safetensors", tmp_path / "split.safetensors"
    train(build(recipe), _data(), out=straight, progress=False)

    class Stop(Exception):
        pass

    def stop_at_7(record):
        if record["step"] == 6:
            raise Stop

    with pytest.raises(Stop):  # killed after the step-5 checkpoint of a 12-step run
        train(build(recipe), _data(), out=split, progress=False, callback=stop_at_7)
    assert load_checkpoint(split).step == 5
    with pytest.raises(CheckpointError, match="decays its learning rate .* over 12 steps"):
        train(build(recipe), _data(), out=split, resume=True, steps=20, progress=False)
    train(build(recipe), _data(), out=split, resume=True, progress=False)
    a, b = load_checkpoint(straight).tensors, load_checkpoint(split).tensors
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lr_min_above_lr_is_a_config_error():
    with pytest.raises(ConfigError, match="train.lr_min"):
        build(_recipe(lr_schedule="cosine", lr_min=0.5))
