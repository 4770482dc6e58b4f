"""Learned solvers (LD3): the grid's shape, the reduction to the base solver, deterministic fitting, and a real gain."""

from __future__ import annotations

import math

import pytest
import torch
from diffusekit import TimePlan
from diffusekit.errors import ConfigError
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from diffusekit_distill import learned
from diffusekit_distill.learned import LearnedSolver, Retimed, grid_sigmas, interpolate, theta_of
from diffusekit_gaussian import plugin
from diffusekit_gaussian.adaptive import AdaptiveODE
from diffusekit_gaussian.grids import TabulatedGrid
from diffusekit_gaussian.schedules import EDM, VPCosine
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = torch.float64


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=1, max_size=9), st.sampled_from([EDM(), VPCosine()]))
def test_a_learned_grid_is_strictly_decreasing_and_ends_at_zero(theta, schedule):
    sigmas = grid_sigmas(torch.tensor(theta, dtype=F64), 80.0, 0.002)
    assert len(sigmas) == len(theta) + 1
    assert math.isclose(sigmas[0].item(), 80.0) and math.isclose(sigmas[-1].item(), 0.002, rel_tol=1e-9)
    assert bool((sigmas[1:] < sigmas[:-1]).all())  # even where a softmax underflows (the steps' floor)
    times = TabulatedGrid(sigmas=tuple(sigmas.tolist())).times(schedule)
    assert times[-1] == 0.0 and bool((times[1:] < times[:-1]).all())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.01, 5.0), min_size=2, max_size=8))
def test_theta_of_inverts_the_grid(steps):
    sigmas = torch.exp(-torch.cumsum(torch.tensor([0.0, *steps], dtype=F64), 0)) * 80.0
    torch.testing.assert_close(grid_sigmas(theta_of(sigmas.tolist()), sigmas[0].item(), sigmas[-1].item()), sigmas)


def test_interpolation_is_exact_at_the_knots_and_constant_beyond():
    knots = torch.log(torch.tensor([80.0, 5.0, 0.1], dtype=F64))
    values = torch.tensor([0.3, -0.2, 0.05], dtype=F64)
    assert torch.equal(interpolate(knots, knots, values), values)
    outside = torch.log(torch.tensor([500.0, 0.001], dtype=F64))
    assert interpolate(outside, knots, values).tolist() == [0.3, 0.05]
    middle = 0.5 * (knots[0] + knots[1])
    assert math.isclose(interpolate(middle.reshape(1), knots, values).item(), 0.05)


def _oracle(seed: int = 0) -> OracleDenoiser:
    mixture = GaussianMixture.random((4,), 3, generator=torch.Generator().manual_seed(seed), spread=1.0)
    return OracleDenoiser.single(mixture, EDM())


@pytest.mark.parametrize("solver", ["ipndm", "dpmpp_2m", "heun", "unipc"])
def test_without_offsets_the_learned_solver_is_its_base_solver_bit_for_bit(solver):
    den = _oracle()
    x = 80.0 * torch.randn(32, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    grid = TabulatedGrid(sigmas=(80.0, 9.0, 1.2, 0.1, 0.002))
    base = plugin.SAMPLERS[solver]().sample(den, x, grid)
    zero = LearnedSolver(solver=f"gaussian:{solver}", sigmas=grid.sigmas, shifts=(0.0,) * 5)
    assert torch.equal(zero.sample(den, x, grid), base)
    # and with offsets of zero through the retimed evaluation itself (the path fitting takes), to rounding
    knots = torch.log(torch.tensor(grid.sigmas, dtype=F64))
    retimed = Retimed(den, knots, torch.zeros(5, dtype=F64))
    torch.testing.assert_close(plugin.SAMPLERS[solver]().sample(retimed, x, grid), base, rtol=1e-9, atol=1e-9)


def test_offsets_move_the_evaluation_not_the_solver_coefficients():
    den = _oracle()
    x = 3.0 * torch.randn(8, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    schedule = den.schedules["x"]
    t = schedule.t_from_log_snr(torch.tensor(-2.0 * math.log(2.0), dtype=F64))
    shifted = Retimed(den, torch.log(torch.tensor([2.0], dtype=F64)), torch.tensor([math.log(1.5)], dtype=F64))
    out = shifted({"x": x}, {"x": t})["x"]
    t_eval = schedule.t_from_log_snr(torch.tensor(-2.0 * math.log(3.0), dtype=F64))
    torch.testing.assert_close(out.x0, den(x, t_eval).x0)  # the network saw sigma~ = 3
    assert out.coef.sigma == pytest.approx(schedule.coefficients(t).sigma.item())  # the solver keeps sigma~ = 2


def _teacher(seed: int, samples: int = 48) -> learned.Teacher:
    den = _oracle()
    x = 80.0 * torch.randn(samples, 4, generator=torch.Generator().manual_seed(seed), dtype=F64)
    reference = AdaptiveODE(rtol=1e-8, atol=1e-8, sigma_min=1e-5).sample(den, x, TimePlan.from_times([1.0, 0.0], ["x"]))
    return learned.Teacher(den, x, reference)


def test_fitting_is_deterministic_and_beats_the_base_solver_on_other_draws():
    train, held_out = _teacher(seed=10), _teacher(seed=11)
    solver = plugin.SAMPLERS["ipndm"]()
    a = learned.fit(solver, [train], 4, iterations=40)
    b = learned.fit(solver, [train], 4, iterations=40)
    assert a == b
    assert a.after < a.before
    grid = TabulatedGrid(sigmas=a.sigmas)
    log_snr = TabulatedGrid(sigmas=tuple(torch.exp(torch.linspace(math.log(80), math.log(0.002), 4)).tolist()))
    fitted = (a.sampler("gaussian:ipndm").sample(held_out.denoiser, held_out.x, grid) - held_out.reference).norm(dim=1)
    plain = (solver.sample(held_out.denoiser, held_out.x, log_snr) - held_out.reference).norm(dim=1)
    assert fitted.mean() < 0.8 * plain.mean()


def test_a_learned_solver_refuses_mismatched_or_unordered_tables():
    with pytest.raises(ValueError, match="one shift per noise level"):
        LearnedSolver(sigmas=(80.0, 1.0), shifts=(0.0,))
    with pytest.raises(ValueError, match="strictly decreasing"):
        LearnedSolver(sigmas=(1.0, 80.0), shifts=(0.0, 0.0))
    with pytest.raises(ValueError, match="deterministic"):
        LearnedSolver(solver="gaussian:euler_ancestral")
    with pytest.raises(ConfigError, match="steps"):
        learned.fit(plugin.SAMPLERS["ipndm"](), [], 0)
