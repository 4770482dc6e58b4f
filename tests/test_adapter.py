"""Schedule adapters against exact oracles: a Gaussian-mixture denoiser of schedule A, adapted to
schedule B by matching log-SNR, is the mixture's denoiser of B (predictions and samples)."""

import threading

import pytest
import torch
from diffusekit import ClassLabel, ConfigError, Denoiser, DenoiserLike, TimePlan
from diffusekit.adapter import ScheduleAdapter, adapt
from diffusekit.builtins import UniformGrid
from diffusekit.prediction import from_x0_eps
from diffusekit.testing.categorical import ReferenceAbsorbing, SequenceOracle
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from diffusekit.testing.reference import TrigonometricSchedule
from diffusekit_gaussian import (
    DDIM,
    EDM,
    VE,
    ClassifierFreeGuidance,
    DPMSolverPP2M,
    EpsilonPrediction,
    EulerMaruyama,
    FlowHeun,
    Heun,
    RectifiedFlow,
    VelocityPrediction,
    VPCosine,
    VPLinear,
    VPrediction,
    X0Prediction,
)
from hypothesis import given
from hypothesis import strategies as st

F64 = torch.float64
SCHEDULES = [VPLinear(), VPCosine(), VE(), EDM(), RectifiedFlow(), TrigonometricSchedule()]
NAMES = [type(s).__name__ for s in SCHEDULES]
MIXTURE = GaussianMixture.random((2, 3), 3, generator=torch.Generator().manual_seed(0))


def _floor(schedule) -> float:
    """The lowest log-SNR a model of ``schedule`` saw (at t = 1)."""
    return float(schedule.log_snr(torch.ones((), dtype=F64)))


def _pair(a, b, mixture=MIXTURE):
    """(oracle of A adapted to B, oracle of B); the adapter is built even when A == B."""
    return ScheduleAdapter(OracleDenoiser.single(mixture, a), {"x": b}), OracleDenoiser.single(mixture, b)


def _noisy(schedule, t: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """x_t ~ q(x_t | x0) for mixture samples x0 (t aligned with the leading dims)."""
    g = torch.Generator().manual_seed(seed)
    return schedule.corrupt(MIXTURE.sample(n, g), t, generator=g).x_t


def _assert_same_predictions(got, want, x, c, matched):
    """x0 and the noise component sigma * eps agree to float64 rounding of |x| where the log-SNR is matched
    (and the direct oracle's eps is defined: it is 0/0 at sigma = 0 and overflows at sigma ~ 1e-308)."""
    tol = 1e-10 * (1.0 + float(x.abs().max()))
    for a, b in ((got.x0, want.x0), (c.sigma * got.eps, c.sigma * want.eps)):
        err = torch.where(matched & torch.isfinite(b), (a - b).abs(), 0.0)
        assert float(err.max()) <= tol, float(err.max())


_times = st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1e-12, 1e-6, 1e-3, 0.5, 1 - 1e-6, 1.0]))


@given(
    st.sampled_from(range(len(SCHEDULES))),
    st.sampled_from(range(len(SCHEDULES))),
    st.lists(_times, min_size=8, max_size=8),
    st.sampled_from(["scalar", "sample", "frame"]),
    st.sampled_from(["none", "given"]),
    st.integers(0, 2**16),
)
def test_adapted_oracle_is_the_oracle_of_the_new_schedule(i, j, ts, layout, coef, seed):
    """Per-element (B,) and (B, F) times, scalar 0-d times; coefficients given as samplers give them or not."""
    a, b = SCHEDULES[i], SCHEDULES[j]
    t = torch.tensor(ts, dtype=F64)
    t = {"scalar": t[0], "sample": t[:4], "frame": t.reshape(4, 2)}[layout]
    x = _noisy(b, t, 4, seed)
    adapted, direct = _pair(a, b)
    c = b.coefficients(t)
    given_coef = None
    if coef == "given":
        given_coef = {"x": c.item() if t.ndim == 0 else c.align(x)}
    got = adapted({"x": x}, {"x": t}, None, given_coef)["x"]
    want = direct({"x": x}, {"x": t}, None, given_coef)["x"]
    c = c.align(x)
    # the mixture couples the elements of a sample (its responsibilities): a sample is exact when all are matched
    matched = (c.log_snr >= _floor(a)).expand(x.shape).reshape(len(x), -1).all(1)
    _assert_same_predictions(got, want, x, c, matched.reshape(-1, 1, 1))
    assert torch.isfinite(got.value).all() and torch.isfinite(got.x0).all() and torch.isfinite(got.eps).all()


@pytest.mark.parametrize("b", SCHEDULES, ids=NAMES)
@pytest.mark.parametrize("a", SCHEDULES, ids=NAMES)
def test_both_ends_give_finite_predictions_and_t0_is_the_identity(a, b):
    adapted, _ = _pair(a, b)
    x = torch.randn(5, 2, 3, dtype=F64)
    for t in (0.0, 1.0, torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5], dtype=F64)):
        pred = adapted(x, t)
        for value in (pred.value, pred.x0, pred.eps, pred.v):
            assert torch.isfinite(value).all(), (t, value)
    assert torch.equal(adapted(x, 0.0).x0, x)  # x_t = x_0 at t = 0, whatever the model


def test_adapting_to_the_same_schedule_is_the_identity():
    oracle = OracleDenoiser.single(MIXTURE, VPCosine())
    assert adapt(oracle, {"x": VPCosine()}) is oracle  # equal schedules: nothing to adapt
    same = ScheduleAdapter(oracle, {"x": VPCosine()})  # forced through the maths
    t = torch.tensor([1e-6, 0.3, 0.7, 1.0], dtype=F64)
    x = _noisy(VPCosine(), t, 4, 1)
    got, want = same(x, t), oracle(x, t)
    assert torch.allclose(got.x0, want.x0, rtol=1e-12, atol=1e-12)
    assert torch.allclose(got.eps, want.eps, rtol=1e-9, atol=1e-9)


def test_categorical_parts_and_targets_are_refused_with_one_line():
    gaussian = OracleDenoiser.single(MIXTURE, VPLinear())
    tokens = SequenceOracle.markov_chain(ReferenceAbsorbing(num_classes=4), length=3, vocab=3)
    cases = [
        (tokens, {"x": VPLinear()}, "categorical schedule (ReferenceAbsorbing) was trained under"),
        (gaussian, {"x": ReferenceAbsorbing()}, "categorical schedule (ReferenceAbsorbing) is asked for"),
        (gaussian, {"y": VPLinear()}, "no part 'y'"),
        (gaussian, [VPLinear()], "expected a mapping"),
    ]
    for denoiser, schedules, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            adapt(denoiser, schedules)
        assert "\n" not in str(err.value)


SAMPLERS = [DDIM(), Heun(), FlowHeun(), DPMSolverPP2M(), EulerMaruyama()]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize(
    ("a", "b"),
    [(VPCosine(), VPLinear()), (RectifiedFlow(), EDM()), (TrigonometricSchedule(), EDM()), (VPLinear(), VE())],
    ids=["cosine-to-linear", "flow-to-edm", "trig-to-edm", "linear-to-ve"],
)
def test_sampling_with_the_adapted_oracle_is_sampling_the_new_schedule(sampler, a, b):
    adapted, direct = _pair(a, b)
    run = {"plan": UniformGrid(steps=12), "dtype": F64}
    got = sampler.sample(adapted, (32, 2, 3), generator=torch.Generator().manual_seed(3), **run)
    want = sampler.sample(direct, (32, 2, 3), generator=torch.Generator().manual_seed(3), **run)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)


def test_float32_sampling_matches_to_float32_rounding():
    adapted, direct = _pair(RectifiedFlow(), VPLinear())
    run = {"plan": UniformGrid(steps=12), "dtype": torch.float32}
    got = Heun().sample(adapted, (32, 2, 3), generator=torch.Generator().manual_seed(3), **run)
    want = Heun().sample(direct, (32, 2, 3), generator=torch.Generator().manual_seed(3), **run)
    assert got.dtype == torch.float32 and torch.allclose(got, want, rtol=1e-4, atol=1e-4)


class _OracleNetwork(torch.nn.Module):
    """The mixture's exact denoiser as a network whose output is a prediction of ``kind`` (noise level = t)."""

    def __init__(self, schedule, kind):
        super().__init__()
        self.schedule, self.kind = schedule, kind

    def forward(self, x, t, condition=None):
        c = self.schedule.coefficients(t).align(x)
        x0 = MIXTURE.posterior_mean(x, c.alpha, c.sigma)
        return from_x0_eps(self.kind, x0, (x - c.alpha * x0) / c.sigma, c)


@pytest.mark.parametrize(
    "param", [EpsilonPrediction(), X0Prediction(), VPrediction(), VelocityPrediction()], ids=lambda p: p.prediction
)
def test_a_trained_denoiser_of_any_parameterization_is_adapted(param):
    """A :class:`Denoiser` (network + parameterization) under VP-cosine, used under EDM's schedule."""
    inner = Denoiser(_OracleNetwork(VPCosine(), param.prediction), {"x": VPCosine()}, {"x": param})
    adapted, direct = adapt(inner, {"x": EDM()}), OracleDenoiser.single(MIXTURE, EDM())
    t = torch.tensor([[0.05, 0.3], [0.6, 0.95], [1e-3, 1.0]], dtype=F64)  # per frame, interior and the end
    x = _noisy(EDM(), t, 3, 4)
    c = EDM().coefficients(t).align(x)
    _assert_same_predictions(adapted(x, t), direct(x, t), x, c, torch.tensor(True))
    run = {"plan": UniformGrid(steps=10), "dtype": F64}
    got = DDIM().sample(adapted, (16, 2, 3), generator=torch.Generator().manual_seed(2), **run)
    want = DDIM().sample(direct, (16, 2, 3), generator=torch.Generator().manual_seed(2), **run)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)


def test_per_sample_time_plan_through_sample():
    """Every sample on its own grid: (B,) times per plan entry, as TimePlan gives them to samplers."""
    batch, steps = 6, 10
    power = torch.linspace(1.0, 3.0, batch, dtype=F64)
    entries = [(1.0 - i / steps) ** power for i in range(steps + 1)]
    plan = TimePlan.from_times(entries, ["x"])
    adapted, direct = _pair(VPCosine(), EDM())
    for sampler in (DDIM(), Heun()):
        x1 = EDM().prior((batch, 2, 3), generator=torch.Generator().manual_seed(5), dtype=F64)
        got = sampler.sample(adapted, x1.clone(), plan)
        want = sampler.sample(direct, x1.clone(), plan)
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)


def test_beyond_the_trained_range_the_time_is_clamped():
    """A rectified flow reaches alpha = 0 at t = 1, below any VP model's lowest log-SNR: the model
    answers at its noisiest level, which is exactly the VP posterior mean there, and close to the exact
    answer at alpha = 0 (the data mean)."""
    adapted, direct = _pair(VPCosine(), RectifiedFlow())
    x = torch.randn(8, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(11))
    got, want = adapted(x, 1.0), direct(x, 1.0)
    end = VPCosine().coefficients(torch.tensor(1.0, dtype=F64))  # alpha = 5.5e-4, sigma = 1 - 1.5e-7
    clamped = MIXTURE.posterior_mean(x, end.alpha, end.sigma)
    assert torch.allclose(got.x0, clamped, rtol=1e-12, atol=1e-12)
    assert torch.allclose(want.x0, MIXTURE.mean().expand_as(x), rtol=1e-12, atol=1e-12)
    # to first order the posterior mean leaves the data mean by alpha * Cov(x0) x: small, not zero
    assert float((got.x0 - want.x0).abs().max()) < 50 * float(end.alpha) * float(x.abs().max())
    assert torch.allclose(got.eps, x, rtol=1e-12, atol=1e-12)  # at alpha = 0, x_t is the noise itself
    run = {"plan": UniformGrid(steps=12), "dtype": F64}
    got = DDIM().sample(adapted, (64, 2, 3), generator=torch.Generator().manual_seed(3), **run)
    want = DDIM().sample(direct, (64, 2, 3), generator=torch.Generator().manual_seed(3), **run)
    assert torch.isfinite(got).all() and float((got - want).abs().max()) < 0.05


class _GaussianAndTokens:
    """A two-part denoiser: a Gaussian-mixture part "x" and a categorical sequence part "tok"."""

    def __init__(self, schedule):
        self.gaussian = OracleDenoiser.single(MIXTURE, schedule)
        self.tokens = SequenceOracle.markov_chain(ReferenceAbsorbing(num_classes=4), length=3, vocab=3)
        self.schedules = {"x": schedule, "tok": self.tokens.schedule}

    def __call__(self, x, t, condition=None, coef=None):
        pick = {} if coef is None else {"x": {"x": coef["x"]}, "tok": {"x": coef["tok"]}}
        out = self.gaussian({"x": x["x"]}, {"x": t["x"]}, condition, pick.get("x"))
        return {**out, "tok": self.tokens({"x": x["tok"]}, {"x": t["tok"]}, None, pick.get("tok"))["x"]}


def test_only_adapted_parts_change_and_the_condition_reaches_the_model():
    inner = _GaussianAndTokens(VPLinear())
    adapted = adapt(inner, {"x": EDM()})
    assert isinstance(adapted, DenoiserLike)
    assert adapted.schedules == {"x": EDM(), "tok": inner.tokens.schedule}
    t = {"x": torch.tensor([0.2, 0.5, 0.9], dtype=F64), "tok": torch.tensor(0.5, dtype=F64)}
    state = {"x": _noisy(EDM(), t["x"], 3, 2), "tok": torch.tensor([[3, 0, 3], [1, 3, 2], [3, 3, 3]])}
    label = ClassLabel(torch.tensor([0, 2, -1]), num_classes=3)
    got = adapted(state, t, label)
    want_x = OracleDenoiser.single(MIXTURE, EDM())(state["x"], t["x"], label)
    assert torch.equal(got["tok"].logits, inner(state, t)["tok"].logits)
    c = EDM().coefficients(t["x"]).align(state["x"])
    _assert_same_predictions(got["x"], want_x, state["x"], c, torch.tensor(True))
    unconditional = adapted(state, t)["x"].x0
    assert not torch.allclose(got["x"].x0, unconditional)  # the labels were used


def test_guidance_wraps_an_adapted_denoiser():
    adapted, direct = _pair(VPCosine(), EDM())
    label = ClassLabel(torch.tensor([0, 1, 2, -1] * 4), num_classes=3)
    run = {"plan": UniformGrid(steps=8), "dtype": F64, "condition": label}
    cfg = ClassifierFreeGuidance(scale=2.5)
    got = DDIM().sample(cfg.wrap(adapted), (16, 2, 3), generator=torch.Generator().manual_seed(1), **run)
    want = DDIM().sample(cfg.wrap(direct), (16, 2, 3), generator=torch.Generator().manual_seed(1), **run)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)


def test_one_adapter_serves_threads_at_once():
    adapted, _ = _pair(VPLinear(), RectifiedFlow())
    x = torch.randn(64, 2, 3, dtype=F64)
    t = torch.rand(64, dtype=F64)
    expected = adapted(x, t).x0
    results = [None] * 8

    def work(k):
        results[k] = adapted(x, t).x0

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(torch.equal(r, expected) for r in results)
