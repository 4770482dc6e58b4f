"""Distillation objectives in the core training loop: boundary condition, exact targets, curricula, resumable runs."""

from __future__ import annotations

import pytest
import torch
from diffusekit import ClassLabel, Data, Progress, build, load_checkpoint, train
from diffusekit.errors import ConfigError
from diffusekit.recipe import ComponentSpec, PartSpec, Recipe, TrainConfig
from diffusekit.testing.oracle import GaussianMixture
from diffusekit_distill.consistency import ConsistencyDistillation, ict_intervals, lognormal_interval
from diffusekit_distill.digits import DistilledDigits
from diffusekit_distill.progressive import one_step_x0
from diffusekit_gaussian import VPCosine
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = torch.float64


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.floats(-30, 30), st.integers(0, 9), st.integers(0, 2**31 - 1))
def test_a_consistency_student_is_the_identity_at_t0_for_any_input(batch, scale, label, seed):
    torch.manual_seed(seed)  # any weights: the boundary condition holds by construction
    pipeline = build(DistilledDigits().recipe())
    x = scale * torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    labels = ClassLabel(torch.full((batch,), label), num_classes=10)
    with torch.no_grad():
        out = pipeline.denoiser({"x": x}, {"x": torch.zeros(batch, dtype=F64)}, labels)["x"].x0
    assert torch.equal(out, x)


def _recipe(
    objective: ComponentSpec | None = None,
    parameterization: str = "gaussian:eps",
    schedule="gaussian:vp_cosine",
    steps=6,
):
    return Recipe(
        parts={"x": PartSpec((2,), ComponentSpec(schedule), ComponentSpec(parameterization))},
        network=ComponentSpec("gaussian:mlp", {"dim": 2, "hidden": 32, "depth": 2, "num_classes": 3}),
        sampler=ComponentSpec("gaussian:dpmpp_2m"),
        grid=ComponentSpec("gaussian:karras", {"steps": 8}),
        seed=4,
        train=TrainConfig(steps=steps, batch_size=32, lr=3e-3, checkpoint_every=100, log_every=1, objective=objective),
    )


def _data(n=256) -> Data:
    mix = GaussianMixture.random((2,), 3, generator=torch.Generator().manual_seed(0))
    labels = torch.multinomial(mix.weights, n, replacement=True, generator=torch.Generator().manual_seed(1))
    return Data(
        {"x": mix.sample(n, torch.Generator().manual_seed(2), labels=labels).float()}, ClassLabel(labels, num_classes=3)
    )


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    train(build(_recipe(steps=40)), _data(), out=path, progress=False)
    return path


def test_the_boundary_condition_is_checked_against_the_parameterization(teacher_checkpoint):
    spec = ComponentSpec("distill:consistency", {"teacher": str(teacher_checkpoint)})
    with pytest.raises(ConfigError, match=r"parts\.x\.parameterization.*x0 = x at t = 0"):
        build(_recipe(spec, parameterization="gaussian:x0"))
    build(_recipe(spec))  # eps-prediction satisfies it


def test_reflow_needs_a_straight_schedule(teacher_checkpoint):
    spec = ComponentSpec("distill:reflow", {"teacher": str(teacher_checkpoint)})
    with pytest.raises(ConfigError, match="rectified_flow"):
        build(_recipe(spec))
    build(_recipe(spec, parameterization="gaussian:velocity", schedule="gaussian:rectified_flow"))


@pytest.mark.parametrize(
    "objective,parameterization,schedule",
    [
        ("distill:consistency", "gaussian:eps", "gaussian:vp_cosine"),
        ("distill:consistency_training", "gaussian:eps", "gaussian:vp_cosine"),
        ("distill:progressive", "gaussian:eps", "gaussian:vp_cosine"),
        ("distill:reflow", "gaussian:velocity", "gaussian:rectified_flow"),
    ],
)
def test_each_objective_trains_and_resumes_bit_for_bit(
    objective, parameterization, schedule, teacher_checkpoint, tmp_path
):
    params = {} if objective == "distill:consistency_training" else {"teacher": str(teacher_checkpoint)}
    if objective == "distill:reflow":
        params["teacher_steps"] = 4
    recipe = _recipe(ComponentSpec(objective, params), parameterization, schedule)
    straight, split = tmp_path / "straight.safetensors", tmp_path / "split.safetensors"
    train(build(recipe), _data(), out=straight, progress=False)
    train(build(recipe), _data(), out=split, steps=3, progress=False)
    train(build(recipe), _data(), out=split, resume=True, progress=False)
    a, b = load_checkpoint(straight).tensors, load_checkpoint(split).tensors
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(bool(torch.isfinite(v).all()) for v in a.values() if v.is_floating_point())


def test_a_student_starts_as_its_teacher(teacher_checkpoint):
    objective = ConsistencyDistillation(teacher=str(teacher_checkpoint))
    start = objective.initial_weights(_recipe())
    shipped = load_checkpoint(teacher_checkpoint).weights()
    assert start.keys() == shipped.keys() and all(torch.equal(start[k], shipped[k]) for k in start)
    assert (
        ConsistencyDistillation(teacher=str(teacher_checkpoint), init_from_teacher=False).initial_weights(None) is None
    )


def test_an_unreadable_teacher_is_a_config_error(tmp_path):
    objective = ConsistencyDistillation(teacher=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ConfigError, match="train.objective.teacher"):
        objective.initial_weights(_recipe())


@settings(max_examples=50, deadline=None)
@given(st.floats(0.02, 1.0), st.floats(0.0, 0.98), st.integers(0, 2**31 - 1))
def test_the_progressive_target_is_the_x0_whose_ddim_step_lands_on_the_teacher(t_hi, frac, seed):
    schedule = VPCosine()
    t_lo = t_hi * frac
    g = torch.Generator().manual_seed(seed)
    x_hi, x0 = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64)
    hi = schedule.coefficients(torch.full((4,), t_hi, dtype=F64)).align(x_hi)
    lo = schedule.coefficients(torch.full((4,), t_lo, dtype=F64)).align(x_hi)
    # one DDIM step from x_hi with the estimate x0
    landed = lo.alpha * x0 + lo.sigma / hi.sigma * (x_hi - hi.alpha * x0)
    torch.testing.assert_close(one_step_x0(x_hi, landed, hi, lo), x0, rtol=1e-6, atol=1e-6)


def test_the_ict_curriculum_doubles_from_s0_to_s1():
    counts = [ict_intervals(Progress(k, 7000)) for k in range(0, 7000, 100)]
    assert counts[0] == 10 and counts[-1] == 1280  # 8 stages of 875 steps: 10, 20, ..., 1280
    assert counts[8] == 10 and counts[9] == 20
    assert all(b in (a, 2 * a) for a, b in zip(counts, counts[1:], strict=False))
    assert ict_intervals(Progress(10**6, 7000)) == 1280


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200), st.integers(0, 2**31 - 1))
def test_lognormal_intervals_lie_in_range_and_favour_the_middle(count, seed):
    u = torch.rand(2000, generator=torch.Generator().manual_seed(seed), dtype=F64)
    n = lognormal_interval(u, count, 80.0, 0.002, 7.0, -1.1, 2.0)
    assert bool(((n >= 1) & (n <= count)).all()) and bool((n == n.round()).all())


def test_the_distilled_digits_recipe_is_a_consistency_recipe():
    recipe = DistilledDigits(steps=3).recipe()
    assert recipe.train.objective.name == "distill:consistency" and recipe.guidance is None
    assert recipe.grid.params["steps"] == 3
