"""Exact-oracle and property tests of the Restart sampler.

Every test drives the sampler with ``diffusekit.testing``'s exact Gaussian-mixture
denoiser, so the only errors are the sampler's own (discretisation and Monte Carlo).
"""

from __future__ import annotations

import math

import diffusekit
import pytest
import torch
from diffusekit import TimePlan
from diffusekit.testing import CountingDenoiser, GaussianMixture, OracleDenoiser, TrigonometricSchedule
from diffusekit.testing import strategies as dst
from diffusekit_restart import Restart
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

F64 = torch.float64
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


# -- helpers ---------------------------------------------------------------------------------


def t_of(schedule, sigma_tilde) -> torch.Tensor:
    """Times at which ``schedule`` reaches the EDM levels σ̃ (clamped into [0, 1])."""
    s = torch.as_tensor(sigma_tilde, dtype=F64)
    t = schedule.t_from_log_snr(-2.0 * torch.log(s)).to(F64)
    return torch.where(torch.isnan(t), torch.ones_like(t), t).clamp(0.0, 1.0)


def karras_times(schedule, steps, sigma_min=0.002, sigma_max=80.0, rho=7.0) -> list[float]:
    """Karras et al. (2022, eq. 5) levels mapped to the schedule's time, then t = 0."""
    j = torch.arange(steps, dtype=F64) / max(steps - 1, 1)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    t = t_of(schedule, (hi + j * (lo - hi)) ** rho).tolist()
    out = []
    for ti in t:  # levels above what the schedule reaches all clamp to 1: keep one
        if not out or ti < out[-1]:
            out.append(ti)
    return out + [0.0]


def plan_of(times: list[float]) -> TimePlan:
    return TimePlan.from_times(times, ["x"])


def ref_heun(mixture, schedule, x, t_a, t_b):
    """Karras et al. (2022) Alg. 1, one step, written directly in EDM variables x̃ = x/α, σ̃ = σ/α."""
    ca = schedule.coefficients(torch.as_tensor(t_a, dtype=F64))
    cb = schedule.coefficients(torch.as_tensor(t_b, dtype=F64))
    sa, sb = ca.sigma / ca.alpha, cb.sigma / cb.alpha
    xt = x / ca.alpha
    d = (xt - mixture.posterior_mean(x, ca.alpha, ca.sigma)) / sa
    x_euler = xt + (sb - sa) * d
    if float(sb) == 0.0:
        return cb.alpha * x_euler
    d2 = (x_euler - mixture.posterior_mean(cb.alpha * x_euler, cb.alpha, cb.sigma)) / sb
    return cb.alpha * (xt + (sb - sa) * 0.5 * (d + d2))


def ref_heun_solve(mixture, schedule, x, times):
    for a, b in zip(times[:-1], times[1:], strict=True):
        x = ref_heun(mixture, schedule, x, a, b)
    return x


def mixture(dim=2, components=3, seed=0) -> GaussianMixture:
    return GaussianMixture.random((dim,), components, generator=torch.Generator().manual_seed(seed))


# -- K = 0 is Heun -----------------------------------------------------------------------


@SETTINGS
@given(schedule=dst.gaussian_schedules(), steps=st.integers(2, 12), seed=st.integers(0, 2**16))
def test_without_restarts_it_is_the_heun_ode_solution_on_any_gaussian_schedule(schedule, steps, seed):
    """K = 0 equals Heun on the same grid, written independently in EDM variables, to float64
    rounding, for the kit's reference schedule and every registered Gaussian schedule."""
    mix = mixture(seed=seed % 7)
    oracle = OracleDenoiser.single(mix, schedule)
    times = karras_times(schedule, steps)
    x = schedule.prior((16, 2), t=times[0], generator=torch.Generator().manual_seed(seed), dtype=F64)
    out = Restart(restarts=0).sample(oracle, x.clone(), plan_of(times), dtype=F64)
    ref = ref_heun_solve(mix, schedule, x.clone(), times)
    assert torch.allclose(out, ref, rtol=1e-9, atol=1e-9), (out - ref).abs().max()


def test_an_interval_the_grid_never_reaches_changes_nothing():
    """Restarts only happen on the step that crosses σ̃_min: below the grid's lowest positive
    level (the last step lands on 0, so it crosses) vs. above its highest (never crosses)."""
    schedule = TrigonometricSchedule()
    mix = mixture()
    oracle = OracleDenoiser.single(mix, schedule)
    times = karras_times(schedule, 8, sigma_min=0.05, sigma_max=5.0)
    x = schedule.prior((64, 2), t=times[0], generator=torch.Generator().manual_seed(1), dtype=F64)
    plain = Restart(restarts=0).sample(oracle, x.clone(), plan_of(times), dtype=F64)
    above = Restart(sigma_min=10.0, sigma_max=20.0).sample(
        oracle, x.clone(), plan_of(times), dtype=F64, generator=torch.Generator().manual_seed(2)
    )
    assert torch.equal(plain, above)


def test_heun_agrees_with_the_gaussian_plugin_when_installed():
    """Cross-check against ``gaussian:heun`` (skipped when that plugin is not installed)."""
    try:
        heun = diffusekit.resolve("sampler", "gaussian:heun")()
    except diffusekit.DiffusekitError:
        pytest.skip("gaussian:heun is not installed")
    schedule = TrigonometricSchedule()
    oracle = OracleDenoiser.single(mixture(), schedule)
    grid = diffusekit.resolve("grid", "core:uniform")(steps=15)
    x = schedule.prior((32, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    a = heun.sample(oracle, x.clone(), grid, dtype=F64)
    b = Restart(restarts=0).sample(oracle, x.clone(), grid, dtype=F64)
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_without_restarts_it_converges_at_second_order():
    schedule = TrigonometricSchedule()
    mix = mixture(dim=4, seed=3)
    oracle = OracleDenoiser.single(mix, schedule)
    x = schedule.prior((256, 4), t=t_of(schedule, 80.0).item(), generator=torch.Generator().manual_seed(0), dtype=F64)

    def solve(n):  # uniform in log σ̃ from 80 to 0.002, then 0: a smooth step-size family
        levels = torch.exp(torch.linspace(math.log(80.0), math.log(0.002), n, dtype=F64))
        times = t_of(schedule, levels).tolist() + [0.0]
        return Restart(restarts=0).sample(oracle, x.clone(), plan_of(times), dtype=F64)

    exact = solve(1025)
    e32, e64, e128 = ((solve(n + 1) - exact).abs().mean().item() for n in (32, 64, 128))
    rate = max(math.log2(e32 / e64), math.log2(e64 / e128))
    assert rate > 1.5, (e32, e64, e128)


# -- one restarting step, exactly --------------------------------------------------------


@pytest.mark.parametrize("restarts", [1, 3])
def test_a_restarting_step_is_solve_noise_resolve_exactly(restarts):
    """One step across σ̃_min equals, to rounding: Heun to σ̃_min; K times the forward jump
    x̃ ← x̃ + sqrt(σ̃_max² − σ̃_min²)·ε (ε from the same generator) and Heun back down on the
    ρ-spaced levels; then Heun on to t_to."""
    schedule = TrigonometricSchedule()
    mix = mixture(seed=5)
    oracle = OracleDenoiser.single(mix, schedule)
    sampler = Restart(sigma_min=0.2, sigma_max=1.5, restarts=restarts, restart_steps=4)
    t_from, t_to = t_of(schedule, 0.6).item(), t_of(schedule, 0.05).item()
    x = schedule.corrupt(
        mix.sample(50, torch.Generator().manual_seed(0)).to(F64),
        torch.tensor(t_from, dtype=F64),
        torch.Generator().manual_seed(1),
    ).x_t

    got = sampler.step(
        oracle,
        {"x": x.clone()},
        {"x": torch.tensor(t_from, dtype=F64)},
        {"x": torch.tensor(t_to, dtype=F64)},
        generator=torch.Generator().manual_seed(9),
    ).x["x"]

    inner = t_of(schedule, sampler.restart_levels()).tolist()
    t_lo, t_hi = inner[-1], inner[0]
    c_lo = schedule.coefficients(torch.tensor(t_lo, dtype=F64))
    c_hi = schedule.coefficients(torch.tensor(t_hi, dtype=F64))
    jump = math.sqrt((c_hi.sigma / c_hi.alpha) ** 2 - (c_lo.sigma / c_lo.alpha) ** 2)
    g = torch.Generator().manual_seed(9)
    ref = ref_heun(mix, schedule, x.clone(), t_from, t_lo)
    for _ in range(restarts):
        eps = torch.randn(ref.shape, generator=g, dtype=F64)
        ref = c_hi.alpha * (ref / c_lo.alpha + jump * eps)
        ref = ref_heun_solve(mix, schedule, ref, inner)
    ref = ref_heun(mix, schedule, ref, t_lo, t_to)
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-10), (got - ref).abs().max()


def test_network_evaluations_are_as_documented():
    """N plain Heun steps cost 2N − 1; the restarting step adds 2 (it is split at σ̃_min)
    plus 2·restart_steps per restart."""
    schedule = TrigonometricSchedule()
    oracle = CountingDenoiser(OracleDenoiser.single(mixture(), schedule))
    times = karras_times(schedule, 10, sigma_min=0.01)
    n = len(times) - 1
    sampler = Restart(restarts=3, restart_steps=5)
    sampler.sample(oracle, (8, 2), plan_of(times), dtype=F64, generator=torch.Generator().manual_seed(0))
    assert oracle.calls == 2 * n - 1 + 2 + 2 * 5 * 3


# -- per-element time --------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_rows_that_do_not_cross_the_interval_take_a_plain_heun_step(data):
    """With one time per row, only rows whose own step crosses σ̃_min are restarted; every other
    row equals its plain Heun step taken alone with scalar times."""
    schedule = TrigonometricSchedule()
    mix = mixture(seed=2)
    oracle = OracleDenoiser.single(mix, schedule)
    sampler = Restart(sigma_min=0.3, sigma_max=3.0, restart_steps=3)
    t_min = t_of(schedule, 0.3).item()
    b = 6
    t_from = torch.tensor(data.draw(st.lists(st.floats(0.01, 0.99), min_size=b, max_size=b)), dtype=F64)
    # t_to = 0, or a time not within rounding of 0: Heun's ε̂ at σ ≈ 1e-150 is ill-conditioned
    # (gaussian:heun too; see the README's notes), so such steps are no test of restarts.
    frac = torch.tensor(
        data.draw(st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 1.0)), min_size=b, max_size=b)), dtype=F64
    )
    t_to = t_from * frac
    x = schedule.prior((b, 2), generator=torch.Generator().manual_seed(data.draw(st.integers(0, 99))), dtype=F64)
    out = sampler.step(oracle, {"x": x}, {"x": t_from}, {"x": t_to}, generator=torch.Generator().manual_seed(0)).x["x"]
    assert torch.isfinite(out).all()
    crosses = (t_to <= t_min) & (t_from > t_min)
    for i in range(b):
        if crosses[i]:
            continue
        alone = Restart(restarts=0).step(oracle, {"x": x[i : i + 1]}, {"x": t_from[i]}, {"x": t_to[i]}).x["x"]
        assert torch.allclose(out[i : i + 1], alone, rtol=1e-9, atol=1e-9)


def test_restart_noise_stays_in_its_part():
    """Two parts, one whose step crosses σ̃_min and one held at t = 0 (known data): the held
    part comes back bit for bit, the other is restarted."""
    schedule = TrigonometricSchedule()
    mix = mixture()
    oracle = OracleDenoiser({"a": mix, "b": mix}, {"a": schedule, "b": schedule})
    x = {"a": torch.randn(10, 2, dtype=F64), "b": torch.randn(10, 2, dtype=F64)}
    t_from = {"a": t_of(schedule, 0.5), "b": torch.tensor(0.0, dtype=F64)}
    t_to = {"a": t_of(schedule, 0.05), "b": torch.tensor(0.0, dtype=F64)}
    out = Restart().step(oracle, x, t_from, t_to, generator=torch.Generator().manual_seed(0)).x
    assert torch.equal(out["b"], x["b"])
    assert torch.isfinite(out["a"]).all() and not torch.equal(out["a"], x["a"])


# -- it samples the target -----------------------------------------------------------------


@pytest.mark.parametrize("restarts", [0, 2])
def test_samples_match_the_oracle_mixture(restarts):
    """4000 samples against 40000 exact draws of the mixture: per-coordinate mean and standard
    deviation, and the share of each component (nearest by exact responsibility).

    Tolerances: a mean differs by about sqrt(s²/4000 + s²/40000) ≈ 0.017·s (s ≤ 2.2 here), a
    share by about sqrt(p(1−p)·(1/4000 + 1/40000)) ≤ 0.0083, a standard deviation by about
    s/sqrt(2·4000)·sqrt(1.1)·(kurtosis factor ≤ 2); we allow 5 standard errors plus 0.01 for the
    18-step Heun discretisation (measured ≈ 0.003 on this mixture)."""
    schedule = TrigonometricSchedule()
    mix = mixture(seed=11)
    oracle = OracleDenoiser.single(mix, schedule)
    times = karras_times(schedule, 18)
    n, m = 4000, 40000
    out = Restart(restarts=restarts).sample(
        oracle, (n, 2), plan_of(times), dtype=F64, generator=torch.Generator().manual_seed(restarts)
    )
    truth = mix.sample(m, torch.Generator().manual_seed(123)).to(F64)
    s = truth.std(0)
    se_mean = s * math.sqrt(1 / n + 1 / m)
    se_std = 2 * s * math.sqrt(1.1 / (2 * n))
    assert ((out.mean(0) - truth.mean(0)).abs() < 5 * se_mean + 0.01).all(), (out.mean(0), truth.mean(0))
    assert ((out.std(0) - s).abs() < 5 * se_std + 0.01).all(), (out.std(0), s)

    def shares(y):
        lr = mix.log_responsibilities(y, torch.tensor(1.0, dtype=F64), torch.tensor(0.0, dtype=F64))
        return torch.bincount(lr.argmax(-1), minlength=3).to(F64) / y.shape[0]

    p = shares(truth)
    se_p = torch.sqrt(p * (1 - p) * (1 / n + 1 / m))
    assert ((shares(out) - p).abs() < 5 * se_p + 0.01).all(), (shares(out), p)


# -- settings --------------------------------------------------------------------------------


def test_settings_and_facts():
    assert Restart().stochastic and not Restart(restarts=0).stochastic
    assert Restart.order == 2
    with pytest.raises(ValueError, match="sigma_max"):
        Restart(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError):
        Restart(restart_steps=0)
    assert diffusekit.resolve("sampler", "restart:restart") is Restart


def test_deterministic_restart_free_mode_can_be_inverted():
    """With K = 0 the sampler is a deterministic ODE solver, so diffusekit.invert accepts it."""
    schedule = TrigonometricSchedule()
    oracle = OracleDenoiser.single(mixture(), schedule)
    times = karras_times(schedule, 40, sigma_min=0.05, sigma_max=10.0)
    x = mixture().sample(16, torch.Generator().manual_seed(0)).to(F64)
    x = schedule.corrupt(x, torch.tensor(times[-2], dtype=F64), torch.Generator().manual_seed(1)).x_t
    z = diffusekit.invert(Restart(restarts=0), oracle, x, plan_of(times))
    back = Restart(restarts=0).sample(oracle, z, TimePlan.from_times(times[:-1], ["x"]), dtype=F64)
    assert torch.allclose(back, x, atol=1e-2)  # up to the 40-step discretisation error
    with pytest.raises(diffusekit.DiffusekitError):
        diffusekit.invert(Restart(), oracle, x, plan_of(times))
