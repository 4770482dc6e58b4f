"""The bridge's schedule, grid and parameterization against diffusers' own schedulers (the oracle)."""

import diffusers
import pytest
import torch
from diffusekit_diffusers import DiffusersPrediction, DiffusersSchedule, DiffusersTimesteps, spaced_timesteps
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = torch.float64
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
CONFIGS = {
    "linear": {},
    "scaled_linear": SD,
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
    "short": {"num_train_timesteps": 50, "beta_start": 0.001, "beta_end": 0.2},
    "zero_snr": {**SD, "rescale_betas_zero_snr": True},
    "trained": {"num_train_timesteps": 20, "trained_betas": [0.01 + 0.02 * i for i in range(20)]},
}

pytestmark = pytest.mark.diffusekit_plugin("diffusers")


def test_conformance(diffusekit_contract):
    diffusekit_contract.check()


@pytest.mark.parametrize("name", CONFIGS)
def test_alphas_cumprod_are_diffusers(name):
    # EulerDiscreteScheduler is the scheduler that keeps a finite alpha_bar (2^-24) at zero terminal SNR
    reference = diffusers.EulerDiscreteScheduler(**CONFIGS[name])
    schedule = DiffusersSchedule.from_config(reference)
    assert torch.equal(schedule.alphas_cumprod, reference.alphas_cumprod.to(F64))


@pytest.mark.parametrize("name", CONFIGS)
def test_training_timesteps_are_exact(name):
    schedule = DiffusersSchedule.from_config(CONFIGS[name])
    n = schedule.num_train_timesteps
    k = torch.arange(n, dtype=F64)
    c = schedule.coefficients((k + 1) / n)
    torch.testing.assert_close(c.alpha**2, schedule.alphas_cumprod, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(c.sigma**2, 1 - schedule.alphas_cumprod, rtol=1e-12, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 998), st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"]))
def test_noise_level_is_smooth_and_monotone_across_a_training_timestep(k, name):
    # the derivative is continuous at a node: central differences across it match the derivative there
    schedule = DiffusersSchedule.from_config(CONFIGS[name])
    node = torch.tensor(k / 1000, dtype=F64)
    h = 1e-7
    c, up, dn = (schedule.coefficients(node + d) for d in (0.0, h, -h))
    assert float(dn.sigma) < float(c.sigma) < float(up.sigma)
    torch.testing.assert_close(c.d_sigma, (up.sigma - dn.sigma) / (2 * h), rtol=1e-4, atol=0.0)
    # between two nodes the interpolant stays between their values
    mid = schedule.coefficients(node + 0.5e-3)
    assert float(c.sigma) < float(mid.sigma) < float(schedule.coefficients(node + 1e-3).sigma)


def test_from_config_reads_a_scheduler_or_a_dict():
    a = DiffusersSchedule.from_config(diffusers.DDPMScheduler(**SD))
    b = DiffusersSchedule.from_config(dict(SD))
    assert a == b and a.beta_schedule == "scaled_linear"


def test_thresholding_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="dynamic thresholding"):
        DiffusersPrediction.from_config(diffusers.DDPMScheduler(thresholding=True))


def test_prediction_types_map_onto_diffusekit_predictions():
    assert DiffusersPrediction.from_config(diffusers.DDIMScheduler(prediction_type="v_prediction")).prediction == "v"
    assert DiffusersPrediction.from_config({"prediction_type": "sample"}).prediction == "x0"
    clipped = DiffusersPrediction.from_config(diffusers.DDIMScheduler(clip_sample=True, clip_sample_range=2.0))
    assert clipped.clip_sample == 2.0
    assert DiffusersPrediction.from_config(diffusers.DDIMScheduler(clip_sample=False)).clip_sample is None


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 999))
def test_the_model_is_told_the_diffusers_timestep(k):
    p = DiffusersPrediction()
    t = torch.tensor((k + 1) / 1000, dtype=F64)
    assert float(p.noise_level(t, None)) == float(k)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 100), st.sampled_from(["leading", "trailing", "linspace"]), st.sampled_from([0, 1]))
def test_spacing_is_ddims(steps, spacing, offset):
    reference = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=offset)
    reference.set_timesteps(steps)
    ours = spaced_timesteps(steps, 1000, spacing, offset if spacing == "leading" else 0)
    assert ours.tolist() == reference.timesteps.to(F64).tolist()


def test_grid_times_are_the_timesteps_then_the_data():
    times = DiffusersTimesteps(steps=4).times(DiffusersSchedule())
    assert times.tolist() == [751 / 1000, 501 / 1000, 251 / 1000, 1 / 1000, 0.0]


def test_grid_from_a_heun_scheduler_keeps_each_timestep_once():
    grid = DiffusersTimesteps.from_scheduler(diffusers.HeunDiscreteScheduler(), 5)
    assert grid.steps == 5 and len(set(grid.timesteps)) == 5


def test_too_many_steps_is_a_clear_error():
    from diffusekit import ShapeError

    with pytest.raises(ShapeError, match="more than the 50 training timesteps"):
        DiffusersTimesteps(steps=60).times(DiffusersSchedule(num_train_timesteps=50))


def test_a_table_of_alphas_cumprod_is_a_schedule():
    reference = diffusers.DDPMScheduler(**SD).alphas_cumprod.to(F64)
    schedule = DiffusersSchedule.from_alphas_cumprod(reference)
    # the betas pass through float32, as diffusers stores them: equal to float32 precision
    torch.testing.assert_close(schedule.alphas_cumprod, reference, rtol=1e-5, atol=0.0)
    with pytest.raises(ValueError, match="each in"):
        DiffusersSchedule.from_alphas_cumprod([0.9, 1.2])
