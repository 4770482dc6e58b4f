"""Every deterministic solver converges at its stated order on the exact oracle.

Setting: a smooth 3-component mixture in 4 dimensions, the VP-linear schedule, grids
uniform in log-SNR from sigma~ = 80 to 0.002, 16 to 128 steps. The reference is the
adaptive Dormand–Prince solution to the same sigma~_min (then x0, as every solver's
last step does). Rates are log2 of the error ratio when the steps double, checked on
the finest pair: at least the order minus 0.35 (0.7 for the slowly settling 4th-order
LMS), and not above it by more than 0.75 (a faster rate would mean a wrong order claim).
"""

import math

import pytest
import torch
from diffusekit import TimePlan
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from diffusekit_gaussian import plugin
from diffusekit_gaussian.adaptive import AdaptiveODE
from diffusekit_gaussian.grids import LogSNRGrid
from diffusekit_gaussian.schedules import VPLinear

F64 = torch.float64
DETERMINISTIC = sorted(
    name for name, cls in plugin.SAMPLERS.items() if not cls().stochastic and not getattr(cls, "adaptive", False)
)


@pytest.fixture(scope="module")
def setting():
    mixture = GaussianMixture.random(
        (4,), 3, generator=torch.Generator().manual_seed(2), spread=1.0, std_range=(0.6, 1.0)
    )
    schedule = VPLinear()
    oracle = OracleDenoiser.single(mixture, schedule)
    x = schedule.prior((64, 4), generator=torch.Generator().manual_seed(3), dtype=F64)
    start = float(LogSNRGrid(steps=2).times(schedule)[0])
    reference = AdaptiveODE(rtol=1e-12, atol=1e-12, sigma_min=0.002).sample(
        oracle, x, TimePlan.from_times([start, 0.0], ["x"])
    )
    return oracle, x, reference


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_error_falls_at_the_stated_order(name, setting):
    oracle, x, reference = setting
    sampler = plugin.SAMPLERS[name]()
    errors = [
        (sampler.sample(oracle, x, LogSNRGrid(steps=n)) - reference).norm(dim=1).mean().item()
        for n in (16, 32, 64, 128)
    ]
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    tolerance = 0.7 if name == "lms" else 0.35
    assert sampler.order - tolerance < rates[-1] < sampler.order + 0.75, (name, sampler.order, errors, rates)
    assert all(r > 0.8 for r in rates), rates  # monotone improvement all along


def test_the_published_3m_form_is_second_order(setting):
    from diffusekit_gaussian.dpm_solver import DPMSolverPP3M

    oracle, x, reference = setting
    errors = {}
    for variant in ("taylor", "published"):
        s = DPMSolverPP3M(variant=variant)
        errors[variant] = [
            (s.sample(oracle, x, LogSNRGrid(steps=n)) - reference).norm(dim=1).mean().item() for n in (64, 128)
        ]
    assert abs(math.log2(errors["published"][0] / errors["published"][1]) - 2.0) < 0.35
    assert errors["taylor"][1] < errors["published"][1] / 5


def test_adaptive_solver_meets_its_tolerance(setting):
    oracle, x, reference = setting
    start = float(LogSNRGrid(steps=2).times(oracle.schedules["x"])[0])
    loose = AdaptiveODE(rtol=1e-6, atol=1e-6, sigma_min=0.002).sample(
        oracle, x, TimePlan.from_times([start, 0.0], ["x"])
    )
    error = (loose - reference).abs().max().item()
    assert 1e-12 < error < 1e-4


STOCHASTIC = sorted(name for name, cls in plugin.SAMPLERS.items() if cls().stochastic)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_solvers_converge_weakly_at_their_order(name):
    """The bias of the sample standard deviation on a Gaussian target falls at the weak order."""
    target = GaussianMixture(
        torch.ones(1, dtype=F64), torch.tensor([[0.5]], dtype=F64), torch.tensor([[0.7]], dtype=F64)
    )
    oracle = OracleDenoiser.single(target, VPLinear())
    sampler = plugin.SAMPLERS[name]()
    bias = []
    for n in (16, 32, 64):
        out = sampler.sample(
            oracle, (200_000, 1), LogSNRGrid(steps=n), generator=torch.Generator().manual_seed(0), dtype=F64
        )
        bias.append(abs(out.std().item() - 0.7))
    rate = math.log2(bias[1] / bias[2])
    assert bias[0] > bias[1] > bias[2], bias
    assert sampler.order - 0.5 < rate < sampler.order + 1.0, (name, sampler.order, bias, rate)
