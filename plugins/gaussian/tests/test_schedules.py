"""Schedules against the formulas of the papers they cite (independent forms)."""

import math

import pytest
import torch
from diffusekit_gaussian import EDM, VE, KarrasGrid, LogSNRGrid, RectifiedFlow, VPCosine, VPLinear

F64 = torch.float64


def test_vp_linear_is_the_limit_of_ddpm_betas():
    """DDPM (Ho et al.): beta_i linear in [1e-4, 0.02] over 1000 steps; alpha_bar_i = prod(1 - beta)."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 1001, dtype=F64) / 1000
    alpha = VPLinear().coefficients(t).alpha
    assert torch.allclose(alpha**2, alpha_bar, rtol=2e-2, atol=1e-4)


def test_vp_cosine_follows_nichol_and_dhariwal():
    s = VPCosine()
    f = lambda tau: math.cos((tau + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0.1, 0.4, 0.8):
        tau = t * s.tau_max
        alpha_bar = f(tau) / f(0.0)
        assert float(s.coefficients(torch.tensor(t, dtype=F64)).alpha) ** 2 == pytest.approx(alpha_bar, rel=1e-10)
    # truncated where log-SNR reaches logsnr_min, close to DPM-Solver's T = 0.9946
    assert float(s.log_snr(torch.tensor(1.0, dtype=F64))) == pytest.approx(-15.0, abs=1e-8)
    assert 0.99 < s.tau_max < 1.0


def test_ve_is_the_marginal_of_the_ve_sde():
    """Song et al. 2021: Var[x_t | x_0] = sigma(t)^2 - sigma(0)^2 with sigma(t) = sigma_min (sigma_max/sigma_min)^t."""
    s = VE(sigma_min=0.01, sigma_max=50.0)
    t = torch.tensor([0.2, 0.5, 1.0], dtype=F64)
    geometric = 0.01 * (50.0 / 0.01) ** t
    assert torch.allclose(s.coefficients(t).sigma ** 2, geometric**2 - 0.01**2, rtol=1e-12)


def test_karras_grid_on_the_edm_schedule_is_karras_eq_5():
    n, rho, smin, smax = 10, 7.0, 0.002, 80.0
    i = torch.arange(n, dtype=F64)
    karras = (smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    for schedule in (EDM(), VPCosine(), RectifiedFlow()):
        t = KarrasGrid(steps=n).times(schedule)
        sigma_tilde = torch.exp(-0.5 * schedule.log_snr(t[:-1]))
        assert torch.allclose(sigma_tilde, karras, rtol=1e-9)
        assert float(t[-1]) == 0.0


def test_log_snr_grid_is_geometric_in_sigma():
    t = LogSNRGrid(steps=6).times(VPLinear())
    sigma = torch.exp(-0.5 * VPLinear().log_snr(t[:-1]))
    ratios = sigma[1:] / sigma[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-9)


def test_edm_and_rectified_flow_closed_forms():
    t = torch.tensor([0.25, 0.5], dtype=F64)
    edm = EDM().coefficients(t)
    assert torch.allclose(edm.sigma, 80 * t**7) and torch.equal(edm.alpha, torch.ones_like(t))
    rf = RectifiedFlow().coefficients(t)
    assert torch.allclose(rf.alpha, 1 - t) and torch.allclose(rf.sigma, t)
    assert float(RectifiedFlow().log_snr(torch.tensor(1.0, dtype=F64))) == -math.inf


def test_grids_refuse_a_schedule_that_never_gets_noisy_enough():
    with pytest.raises(ValueError, match="sigma_min"):
        KarrasGrid(sigma_min=100.0, sigma_max=200.0).times(VE(sigma_max=50.0))
