"""Samplers against independent formulas and the exact oracle."""

import pytest
import torch
from diffusekit.testing import CountingDenoiser
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from diffusekit_gaussian import (
    DDIM,
    DDPM,
    EDM,
    Euler,
    EulerMaruyama,
    Heun,
    KarrasGrid,
    RectifiedFlow,
    VPCosine,
    VPLinear,
)
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = torch.float64


def _oracle(schedule, seed=0, dim=4, **kwargs):
    mix = GaussianMixture.random((dim,), 3, generator=torch.Generator().manual_seed(seed), **kwargs)
    return OracleDenoiser.single(mix, schedule)


def _step(sampler, den, x, t, s, seed=0):
    return sampler.step(
        den,
        {"x": x},
        {"x": torch.tensor(t, dtype=F64)},
        {"x": torch.tensor(s, dtype=F64)},
        generator=torch.Generator().manual_seed(seed),
    ).x["x"]


@pytest.mark.parametrize("schedule", [VPLinear(), VPCosine(), EDM()])
def test_ddpm_samples_the_posterior_of_kingma_et_al(schedule):
    """q(x_s | x_t, x0): mean a_ts s_s^2/s_t^2 x_t + a_s s_ts^2/s_t^2 x0, var s_ts^2 s_s^2/s_t^2."""
    den = _oracle(schedule)
    x = torch.randn(1, 4, dtype=F64).expand(20000, 4).contiguous()
    t, s = 0.6, 0.3
    ct, cs = schedule.coefficients(torch.tensor(t, dtype=F64)), schedule.coefficients(torch.tensor(s, dtype=F64))
    a_ts = ct.alpha / cs.alpha
    s2_ts = ct.sigma**2 - a_ts**2 * cs.sigma**2
    x0 = den(x[:1], torch.tensor(t, dtype=F64)).x0
    mean = a_ts * cs.sigma**2 / ct.sigma**2 * x[:1] + cs.alpha * s2_ts / ct.sigma**2 * x0
    std = torch.sqrt(s2_ts * cs.sigma**2 / ct.sigma**2)
    out = _step(DDPM(), den, x, t, s)
    assert torch.allclose(out.mean(0), mean[0], atol=5 * float(std) / 20000**0.5)
    assert torch.allclose(out.std(0), std.expand(4), rtol=0.03)


def test_euler_is_the_literal_edm_euler_step():
    """x_s = alpha_s (x_t / alpha_t + (sigma~_s - sigma~_t) eps) (Karras et al., Alg. 1)."""
    schedule = VPLinear()
    den = _oracle(schedule)
    x = torch.randn(8, 4, dtype=F64)
    t, s = 0.7, 0.35
    ct, cs = schedule.coefficients(torch.tensor(t, dtype=F64)), schedule.coefficients(torch.tensor(s, dtype=F64))
    eps = den(x, torch.tensor(t, dtype=F64)).eps
    literal = cs.alpha * (x / ct.alpha + (cs.sigma / cs.alpha - ct.sigma / ct.alpha) * eps)
    assert torch.allclose(_step(Euler(), den, x, t, s), literal, rtol=1e-10, atol=1e-10)
    assert torch.allclose(_step(DDIM(eta=0.0), den, x, t, s), literal, rtol=1e-10, atol=1e-10)


def _endpoint_error(sampler, den, steps, x, reference):
    return (sampler.sample(den, x, KarrasGrid(steps=steps)) - reference).norm(dim=1).mean().item()


@pytest.mark.parametrize("schedule", [VPLinear(), RectifiedFlow()])
def test_convergence_orders_on_the_oracle(schedule):
    """Halving the step size divides the endpoint error by ~2 (Euler) and ~4 (Heun)."""
    den = _oracle(schedule, seed=2, spread=1.0, std_range=(0.6, 1.0))  # smooth target: asymptotic regime early
    x = schedule.prior((64, 4), generator=torch.Generator().manual_seed(3), dtype=F64)
    reference = Heun().sample(den, x, KarrasGrid(steps=400))
    euler = [_endpoint_error(Euler(), den, n, x, reference) for n in (10, 20, 40)]
    heun = [_endpoint_error(Heun(), den, n, x, reference) for n in (20, 40, 80)]
    for a, b in zip(euler, euler[1:], strict=False):
        assert 1.8 < a / b < 2.2, euler
    for a, b in zip(heun, heun[1:], strict=False):
        assert 3.5 < a / b < 5.2, heun


def test_stochastic_samplers_match_a_gaussian_target():
    mix = GaussianMixture(
        torch.ones(1, dtype=F64), torch.tensor([[1.0, -2.0]], dtype=F64), torch.tensor([[0.5, 1.5]], dtype=F64)
    )
    den = OracleDenoiser.single(mix, VPCosine())
    for sampler in (DDPM(), EulerMaruyama(), DDIM(eta=0.5)):
        # the ancestral step plugs in E[x0 | x_t] and so under-disperses on coarse grids: many steps here
        out = sampler.sample(
            den, (20000, 2), KarrasGrid(steps=400), generator=torch.Generator().manual_seed(1), dtype=F64
        )
        assert torch.allclose(out.mean(0), mix.means[0], atol=0.04), type(sampler).__name__
        assert torch.allclose(out.std(0), mix.stds[0], rtol=0.03), type(sampler).__name__


def test_rectified_flow_from_pure_noise_with_every_sampler():
    """alpha = 0 at t = 1: samplers must stay finite and still reach the target."""
    from diffusekit.builtins import UniformGrid

    mix = GaussianMixture(torch.ones(1, dtype=F64), torch.tensor([[2.0]], dtype=F64), torch.tensor([[0.5]], dtype=F64))
    den = OracleDenoiser.single(mix, RectifiedFlow())
    for sampler in (DDPM(), DDIM(), Euler(), Heun(), EulerMaruyama()):
        out = sampler.sample(
            den, (20000, 1), UniformGrid(steps=100), generator=torch.Generator().manual_seed(0), dtype=F64
        )
        assert torch.isfinite(out).all()
        assert abs(out.mean().item() - 2.0) < 0.03 and abs(out.std().item() - 0.5) < 0.03, type(sampler).__name__


@settings(max_examples=30, deadline=None)
@given(
    st.floats(1e-300, 1e-40),
    st.sampled_from([VPLinear(), VPCosine(), EDM(), RectifiedFlow()]),
    st.sampled_from([torch.float64, torch.float32]),
)
def test_heun_onto_a_negligible_noise_level_is_euler_for_scalar_and_per_sample_times(s, schedule, dtype):
    # the corrector would divide rounding error by sigma_s (about 1e141 at t = 2.7e-159, or an
    # overflow in float32); below sqrt(eps) of the start's noise level Heun keeps its Euler step
    den = _oracle(schedule)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=F64).to(dtype)
    counted = CountingDenoiser(den)
    scalar = Heun().step(counted, {"x": x}, {"x": torch.tensor(0.3, dtype=F64)}, {"x": torch.tensor(s, dtype=F64)})
    rows = Heun().step(den, {"x": x}, {"x": torch.full((5,), 0.3, dtype=F64)}, {"x": torch.full((5,), s, dtype=F64)})
    euler = Euler().step(den, {"x": x}, {"x": torch.tensor(0.3, dtype=F64)}, {"x": torch.tensor(s, dtype=F64)})
    assert counted.calls == 1
    torch.testing.assert_close(scalar.x["x"], euler.x["x"], rtol=0, atol=0)
    torch.testing.assert_close(rows.x["x"], scalar.x["x"])
