"""Conversions between eps, x0, v, score and velocity (Tweedie) as exact round trips."""

import torch
from diffusekit.prediction import PREDICTION_KINDS, Prediction, convert, from_x0_eps
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from diffusekit.testing.reference import TrigonometricSchedule
from diffusekit_gaussian import EDM, VE, RectifiedFlow, VPCosine, VPLinear
from hypothesis import given
from hypothesis import strategies as st

SCHEDULES = [TrigonometricSchedule(), VPLinear(), VPCosine(), VE(), EDM(), RectifiedFlow()]


def _setup(schedule, t, seed, shape=(5, 3)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    c = schedule.coefficients(torch.tensor(t, dtype=torch.float64)).align(x0)
    return x0, eps, c.alpha * x0 + c.sigma * eps, c


@given(
    st.sampled_from(SCHEDULES),
    st.floats(0.02, 0.98),
    st.sampled_from(PREDICTION_KINDS),
    st.sampled_from(PREDICTION_KINDS),
    st.integers(0, 2**31 - 1),
)
def test_every_pair_of_forms_round_trips(schedule, t, source, target, seed):
    x0, eps, x, c = _setup(schedule, t, seed)
    value = from_x0_eps(source, x0, eps, c)
    there = convert(source, value, target, x, c)
    assert torch.allclose(there, from_x0_eps(target, x0, eps, c), rtol=1e-7, atol=1e-7)
    back = convert(target, there, source, x, c)
    assert torch.allclose(back, value, rtol=1e-7, atol=1e-7)


@given(
    st.sampled_from(SCHEDULES),
    st.floats(0.05, 0.95),
    st.sampled_from(PREDICTION_KINDS),
    st.floats(-3, 3),
    st.integers(0, 2**31 - 1),
)
def test_conversions_are_affine_so_guidance_commutes(schedule, t, kind, w, seed):
    x0, eps, x, c = _setup(schedule, t, seed)
    a = from_x0_eps(kind, x0, eps, c)
    b = from_x0_eps(kind, eps, x0, c)  # another prediction of the same form
    mixed = a + w * (b - a)
    lhs = Prediction(kind, mixed, x, c).x0
    rhs = Prediction(kind, a, x, c).x0 + w * (Prediction(kind, b, x, c).x0 - Prediction(kind, a, x, c).x0)
    assert torch.allclose(lhs, rhs, rtol=1e-6, atol=1e-6)


def test_score_is_the_gradient_of_the_noisy_log_density():
    """Tweedie: the oracle's x0 converted to a score equals autograd of log p_t."""
    mixture = GaussianMixture.random((2,), 3, generator=torch.Generator().manual_seed(0))
    for schedule in (TrigonometricSchedule(), VE(), RectifiedFlow()):
        oracle = OracleDenoiser.single(mixture, schedule)
        t = torch.tensor(0.4, dtype=torch.float64)
        c = schedule.coefficients(t)
        x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
        var = c.alpha**2 * mixture.stds**2 + c.sigma**2  # (K, 2)
        comp = -0.5 * ((x[:, None] - c.alpha * mixture.means) ** 2 / var + torch.log(2 * torch.pi * var)).sum(-1)
        log_p = torch.logsumexp(torch.log(mixture.weights) + comp, dim=1)
        (grad,) = torch.autograd.grad(log_p.sum(), x)
        score = oracle(x.detach(), t).score
        assert torch.allclose(score, grad, rtol=1e-8, atol=1e-10)


def test_velocity_is_the_time_derivative_of_the_path():
    """u = d/dt (alpha_t x0 + sigma_t eps) for fixed (x0, eps)."""
    for schedule in SCHEDULES:
        g = torch.Generator().manual_seed(2)
        x0, eps = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
        t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        c = schedule.coefficients(t)
        path = c.alpha * x0 + c.sigma * eps
        numeric = torch.stack([torch.autograd.grad(path[i], t, retain_graph=True)[0] for i in range(4)])
        assert torch.allclose(from_x0_eps("velocity", x0, eps, c).detach(), numeric, rtol=1e-8, atol=1e-10)
