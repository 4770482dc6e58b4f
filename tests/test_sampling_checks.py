"""Sampling refuses what cannot be right and says where a run went wrong.

Plans with times outside [0, 1] or rising times, conditions of another batch size,
wrong dtypes and devices, a non-positive number of samples, non-finite weights, and a
run that turns NaN part-way: each is a one-line :class:`DiffusekitError`.
"""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from diffusekit import CheckpointError, ClassLabel, ConfigError, DiffusekitError, ShapeError, TimePlan, build
from diffusekit.builtins import UniformGrid
from diffusekit.errors import SamplingDiverged
from diffusekit.recipe import apply_overrides
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from diffusekit.testing.reference import TrigonometricSchedule
from diffusekit_gaussian import DDIM
from hypothesis import given
from hypothesis import strategies as st

F64 = torch.float64
ORACLE = OracleDenoiser.single(
    GaussianMixture.random((2,), 2, generator=torch.Generator().manual_seed(0)), TrigonometricSchedule()
)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


@given(
    times=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8).map(lambda ts: sorted(ts, reverse=True)),
    where=st.integers(0, 7),
    bad=st.sampled_from([1.5, -0.25, math.nan, math.inf, 1.0 + 1e-9]),
)
def test_a_plan_with_a_time_outside_zero_one_is_refused(times, where, bad):
    times[where % len(times)] = bad
    with pytest.raises(ShapeError, match=r"t = .* at entry .*times lie in \[0, 1\]") as info:
        DDIM().sample(ORACLE, (3, 2), TimePlan.from_times(times, ["x"]))
    _one_line(info.value)


@given(times=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8, unique=True))
def test_a_plan_is_refused_exactly_when_some_time_rises(times):
    plan = TimePlan.from_times(times, ["x"])
    rises = any(b > a for a, b in zip(times, times[1:], strict=False))
    if rises:
        with pytest.raises(ShapeError, match="goes up from t = "):
            DDIM().sample(ORACLE, (3, 2), plan)
    else:
        assert DDIM().sample(ORACLE, (3, 2), plan, dtype=F64).shape == (3, 2)


def test_a_per_frame_plan_where_one_frame_rises_names_the_entry():
    # entries of (B=1, F=2) times: frame 1 lags frame 0 (a diffusion-forcing staircase)
    falling = torch.tensor([[1.0, 1.0], [0.5, 1.0], [0.0, 0.5], [0.0, 0.0]], dtype=F64)[:, None]
    frames = OracleDenoiser.single(
        GaussianMixture.random((2, 2), 2, generator=torch.Generator().manual_seed(1)), TrigonometricSchedule()
    )
    x = torch.randn(1, 2, 2, dtype=F64)
    DDIM().sample(frames, x, TimePlan.from_times(list(falling), ["x"]))  # frames held at equal times are fine
    rising = falling.clone()
    rising[3, 0, 0] = 0.25  # frame 0 is back at 0.25 after reaching 0
    with pytest.raises(ShapeError, match="goes up from t = 0 to t = 0.25 at entry 3"):
        DDIM().sample(frames, x, TimePlan.from_times(list(rising), ["x"]))


@pytest.mark.parametrize("size", [1, 2, 5])
def test_a_condition_of_another_batch_size_is_refused(size):
    labels = ClassLabel(torch.zeros(size, dtype=torch.long), num_classes=3)
    with pytest.raises(ShapeError, match=f"the condition has {size} samples, the state 4"):
        DDIM().sample(ORACLE, (4, 2), UniformGrid(steps=2), condition=labels)


def test_wrong_dtypes_and_devices_are_one_line_errors():
    grid = UniformGrid(steps=2)
    with pytest.raises(ShapeError, match="floating-point dtype"):
        DDIM().sample(ORACLE, torch.zeros(3, 2, dtype=torch.long), grid)
    with pytest.raises(ShapeError, match="dtype: torch.int64 is not a floating-point dtype"):
        DDIM().sample(ORACLE, (3, 2), grid, dtype=torch.long)
    with pytest.raises(ShapeError, match="'cdua' is not a torch device"):
        DDIM().sample(ORACLE, (3, 2), grid, device="cdua")
    if not torch.cuda.is_available():
        with pytest.raises(ShapeError, match="cuda is not available"):
            DDIM().sample(ORACLE, (3, 2), grid, device="cuda")


@pytest.fixture(scope="module")
def tiny():
    recipe = build("gaussian:digits").recipe
    small = {"network.channels": 8, "network.channel_mult": [1], "network.num_res_blocks": 1, "grid.steps": 4}
    small["network.attention_levels"] = []
    return build(apply_overrides(recipe, small))


@pytest.mark.parametrize("num", [0, -1, 2.5, True])
def test_a_number_of_samples_below_one_is_a_config_error(tiny, num):
    with pytest.raises(ConfigError, match="num: the number of samples must be a positive integer"):
        tiny.sample(num)


def test_a_device_other_than_the_networks_is_refused(tiny):
    with pytest.raises(ShapeError, match="the network is on cpu, not meta"):
        tiny.sample(2, device="meta")


def test_non_finite_weights_are_refused_by_name(tiny):
    weights = {k: v.clone() for k, v in tiny.network.state_dict().items()}
    key = next(k for k, v in weights.items() if v.is_floating_point())
    weights[key].view(-1)[0] = math.nan
    with pytest.raises(CheckpointError, match=f"weight {key} holds 1 non-finite values"):
        tiny.load_weights(weights, source="m.safetensors")


class _NaNAfter(torch.nn.Module):
    """Predicts zeros for ``calls`` evaluations, then NaN (a model that breaks part-way)."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, noise, condition):
        self.calls -= 1
        return torch.zeros_like(x) if self.calls >= 0 else torch.full_like(x, math.nan)


def test_sampling_that_turns_nan_names_the_step(tiny):
    # DDIM evaluates once per step: evaluations 1 and 2 are fine, step 3 is the first to go NaN
    denoiser = attrs.evolve(tiny.denoiser, network=_NaNAfter(2))
    broken = attrs.evolve(tiny, denoiser=denoiser, sampler=DDIM(), guidance=None, method=None)
    with pytest.raises(SamplingDiverged, match=r"in part 'x' at step 3 \(t = .*\), batch starting at sample 0"):
        broken.sample(3)
    assert isinstance(SamplingDiverged("x"), DiffusekitError)


@attrs.frozen
class _Collapsing(DDIM):
    """A broken sampler: its steps average over the batch (a 'batch collapse')."""

    def update(self, denoiser, x, times, *, condition, generator, carry):
        out = super().update(denoiser, x, times, condition=condition, generator=generator, carry=carry)
        return out._replace(x={name: v.mean(0) for name, v in out.x.items()})


@attrs.frozen
class _Widening(DDIM):
    """A broken sampler: its steps return float64 for a float32 state."""

    def update(self, denoiser, x, times, *, condition, generator, carry):
        out = super().update(denoiser, x, times, condition=condition, generator=generator, carry=carry)
        return out._replace(x={name: v.double() for name, v in out.x.items()})


def test_a_step_that_changes_a_parts_shape_or_dtype_names_the_sampler():
    grid = UniformGrid(steps=3)
    with pytest.raises(ShapeError, match=r"_Collapsing returned part 'x' as \(2,\) torch.float64 from step 1"):
        _Collapsing().sample(ORACLE, (3, 2), grid, dtype=F64)
    with pytest.raises(ShapeError, match=r"_Widening returned part 'x' as \(3, 2\) torch.float64 from step 1"):
        _Widening().sample(ORACLE, (3, 2), grid)


@attrs.frozen
class _Bare(DDIM):
    """A broken sampler: its steps return the new state as a bare tensor, not a Step."""

    def update(self, denoiser, x, times, *, condition, generator, carry):
        return super().update(denoiser, x, times, condition=condition, generator=generator, carry=carry).x["x"]


def test_a_step_that_is_not_a_step_names_the_sampler():
    grid = UniformGrid(steps=3)
    message = r"_Bare.update returned a Tensor from step 1; it must return diffusekit.Step\(x, predictions\)"
    with pytest.raises(ShapeError, match=message):
        _Bare().sample(ORACLE, (3, 2), grid)
    held = TimePlan.from_grid(grid, ORACLE.schedules).hold("x", torch.tensor([True, False, False]))
    with pytest.raises(ShapeError, match=message):  # the path that restores held elements
        _Bare().sample(ORACLE, torch.zeros(3, 2), held)


def test_step_times_dt_is_a_float_for_scalar_plans_and_aligned_otherwise():
    from diffusekit import StepTimes
    from diffusekit.testing.categorical import ReferenceAbsorbing

    schedules = {"img": TrigonometricSchedule(), "tok": ReferenceAbsorbing(num_classes=4)}
    x = {"img": torch.zeros(3, 2, 4, 4, dtype=F64), "tok": torch.zeros(3, 5, dtype=torch.long)}
    scalar = StepTimes.between(schedules, x, {"img": _t(0.75), "tok": _t(0.75)}, {"img": _t(0.5), "tok": _t(0.5)})
    assert scalar.dt("img", x["img"]) == -0.25 and isinstance(scalar.dt("tok", x["tok"]), float)
    t_from = torch.tensor([0.9, 0.6, 0.3], dtype=F64)
    per_sample = StepTimes.between(
        schedules,
        x,
        {"img": t_from, "tok": t_from[:, None].expand(3, 5)},
        {"img": t_from / 3, "tok": t_from[:, None].expand(3, 5) / 3},
    )
    dt = per_sample.dt("img", x["img"])
    assert dt.shape == (3, 1, 1, 1) and torch.allclose(dt.flatten(), -2 * t_from / 3)
    assert per_sample.dt("tok", x["tok"].double()).shape == (3, 5)


def _t(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=F64)


def test_holding_outside_zero_to_one_and_marginalising_what_cannot_be_are_one_line_errors(tiny):
    plan = TimePlan.from_grid(UniformGrid(steps=4), ORACLE.schedules)
    with pytest.raises(ShapeError, match=r"held at a time in \[0, 1\], got at = 1.5"):
        plan.hold("x", at=1.5)
    held = plan.hold("x", mask=torch.tensor([True, False]), at=1.0)
    assert [e["x"].tolist() for e in held.entries][-1] == [1.0, 0.0]  # held elements stay at 1, the others move
    with pytest.raises(ConfigError, match=r"marginal.*'y'.*the parts are \['x'\]"):
        tiny.sample(2, marginal=["y"])
    with pytest.raises(ConfigError, match=r"marginal.*'x': it is given"):
        tiny.sample(given=torch.zeros(2, 1, 8, 8), marginal="x")
