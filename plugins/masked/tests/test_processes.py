"""Processes, parameterizations and samplers of the masked plugin: Hypothesis properties and exact oracles."""

import math

import diffusekit as dk
import pytest
import torch
from diffusekit.builtins import UniformGrid
from diffusekit.testing import CountingDenoiser
from diffusekit.testing.categorical import SequenceOracle
from diffusekit_masked import (
    SUBS,
    Absorbing,
    AdaptiveDecoding,
    Ancestral,
    CachedAncestral,
    ConfidenceDecoding,
    FirstHitting,
    LogitCFG,
    Marginal,
    MaskAndReplace,
    RandomOrderDecoding,
    SemiAutoregressive,
    Uniform,
    elbo_weight,
)
from hypothesis import assume, given
from hypothesis import strategies as st

F64 = torch.float64
SHAPES = ["log_linear", "linear", "cosine", "polynomial"]
processes = st.one_of(
    st.builds(Absorbing, num_classes=st.integers(2, 6), keep=st.sampled_from(SHAPES), power=st.floats(0.5, 4)),
    st.builds(Uniform, num_classes=st.integers(2, 6), keep=st.sampled_from(SHAPES)),
    st.builds(
        Marginal, frequencies=st.lists(st.floats(0.05, 1.0), min_size=2, max_size=5), keep=st.sampled_from(SHAPES)
    ),
    st.builds(MaskAndReplace, num_classes=st.integers(3, 6), keep=st.sampled_from(SHAPES), replace=st.floats(0.0, 0.9)),
)


def _t(v):
    return torch.tensor(v, dtype=F64)


@given(processes, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_keep_probability_is_monotone_from_one_to_zero(process, a, b):
    assert float(process.keep_probability(_t(0.0))) == 1.0
    assert float(process.keep_probability(_t(1.0))) <= 1e-6
    lo, hi = min(a, b), max(a, b)
    assert float(process.keep_probability(_t(hi))) <= float(process.keep_probability(_t(lo)))


def _q(process, keep_s, keep_t):
    k = process.num_classes
    return process.likelihood(torch.arange(k), keep_s, keep_t).T.to(F64)


@given(processes, st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_kernels_are_row_stochastic_and_compose(process, a, b, c):
    s, t, u = sorted((a, b, c))
    keep = [float(process.keep_probability(_t(v))) for v in (s, t, u)]
    assume(keep[1] > 1e-9)
    q_st, q_tu, q_su = _q(process, keep[0], keep[1]), _q(process, keep[1], keep[2]), _q(process, keep[0], keep[2])
    assert torch.allclose(q_st.sum(1), torch.ones(process.num_classes, dtype=F64), atol=1e-6)
    assert torch.allclose(q_st @ q_tu, q_su, atol=1e-5)


@given(st.sampled_from(SHAPES), st.floats(0.01, 0.99), st.floats(0.5, 4.0))
def test_elbo_weight_matches_the_numerical_derivative(shape, t, power):
    process = Absorbing(num_classes=5, keep=shape, power=power)
    h = 1e-6
    alpha = float(process.keep_probability(_t(t)))
    slope = (float(process.keep_probability(_t(t + h))) - float(process.keep_probability(_t(t - h)))) / (2 * h)
    weight = float(elbo_weight(process.coefficients(_t(t))))
    assert weight == pytest.approx(-slope / (1.0 - alpha), rel=1e-4, abs=1e-6)


def test_time_from_keep_inverts_every_shape():
    for shape in SHAPES:
        process = Absorbing(keep=shape, power=3.0)
        t = torch.linspace(0.0, 0.999, 50, dtype=F64)
        assert torch.allclose(process.time_from_keep(process.keep_probability(t)), t, atol=1e-6), shape


def test_subs_puts_no_mass_on_the_mask_and_carries_unmasked_tokens():
    process = Absorbing(num_classes=5)
    tokens = torch.tensor([[4, 1, 4, 3]])
    prepared = SUBS().prepare(process, tokens, _t(0.5))
    probs = SUBS().output(torch.randn(1, 4, 5), prepared).probs
    assert torch.all(probs[..., 4] == 0)
    assert torch.equal(probs[0, 1], torch.nn.functional.one_hot(torch.tensor(1), 5).float())
    assert torch.equal(probs[0, 3], torch.nn.functional.one_hot(torch.tensor(3), 5).float())
    # the loss is the ELBO-weighted cross-entropy on masked tokens only
    loss = SUBS().loss(torch.zeros(1, 4, 5), prepared, torch.tensor([[0, 1, 2, 3]]), None)
    weight = float(elbo_weight(process.coefficients(_t(0.5))))
    assert loss[0, 1] == 0 and loss[0, 3] == 0
    assert float(loss[0, 0]) == pytest.approx(weight * math.log(4), rel=1e-6)


ABSORBING_SAMPLERS = [
    Ancestral(),
    CachedAncestral(),
    FirstHitting(),
    ConfidenceDecoding(),
    AdaptiveDecoding(),
    RandomOrderDecoding(),
    SemiAutoregressive(block_size=2),
]


@pytest.mark.parametrize("sampler", ABSORBING_SAMPLERS, ids=lambda s: type(s).__name__)
@given(st.integers(0, 2**31 - 1), st.floats(0.1, 1.0), st.floats(0.0, 0.9))
def test_an_unmasked_token_is_never_masked_again(sampler, seed, t, frac):
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 4, 3)
    g = torch.Generator().manual_seed(seed)
    x = process.corrupt(torch.randint(0, 3, (32, 4), generator=g), _t(t), g).x_t
    out = sampler.step(oracle, {"x": x}, {"x": _t(t)}, {"x": _t(t * frac)}, generator=g).x["x"]
    known = x != 3
    assert torch.equal(out[known], x[known])


def test_ancestral_cached_and_first_hitting_agree_in_distribution():
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 4, 3, seed=5)
    target = oracle.distribution()
    grid = UniformGrid(steps=200)
    results = {}
    for sampler in (Ancestral(), CachedAncestral(), FirstHitting()):
        out = sampler.sample(oracle, (30000, 4), grid, generator=torch.Generator().manual_seed(1))
        results[type(sampler).__name__] = oracle.empirical(out)
    for name, empirical in results.items():
        tv = 0.5 * (empirical - target).abs().sum().item()
        assert tv < 0.03, (name, tv)
    # the cache changes the cost, not the draws: identical samples for the same generator
    assert torch.equal(results["Ancestral"], results["CachedAncestral"])


def test_first_hitting_calls_the_network_once_per_token_and_the_cache_skips_unchanged_samples():
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 6, 3)
    grid = UniformGrid(steps=1000)
    calls = {}
    for sampler in (Ancestral(), CachedAncestral(), FirstHitting()):
        counting = CountingDenoiser(oracle)
        sampler.sample(counting, (64, 6), grid, generator=torch.Generator().manual_seed(0))
        calls[type(sampler).__name__] = (counting.calls, counting.rows / 64)
    assert calls["Ancestral"] == (1000, 1000)
    assert calls["FirstHitting"] == (6, 6)
    assert calls["CachedAncestral"][1] < 10  # about one evaluation per unmasking per sample


def test_ordered_decoding_stops_calling_the_network_once_every_token_is_decoded():
    """One token per step on a 20-step grid: 6 masked tokens take 6 calls (2 given take none)."""
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 8, 3)
    x = torch.full((16, 8), 3)
    x[:, :2] = 1
    plan = dk.TimePlan.from_grid(UniformGrid(steps=20), oracle.schedules).hold("x", x != 3)
    for sampler in (ConfidenceDecoding(tokens_per_step=1), AdaptiveDecoding(tokens_per_step=1)):
        counting = CountingDenoiser(oracle)
        out = sampler.sample(counting, x, plan, generator=torch.Generator().manual_seed(0))
        assert bool((out < 3).all()) and torch.equal(out[:, :2], x[:, :2])
        assert counting.calls == 6


def test_cached_sampler_never_reuses_a_time_conditioned_prediction():
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 3, 3)
    oracle = SequenceOracle(oracle.sequences, oracle.log_probs, process, time_conditioned=True)
    counting = CountingDenoiser(oracle)
    counting.time_conditioned = True
    CachedAncestral().sample(counting, (8, 3), UniformGrid(steps=50), generator=torch.Generator().manual_seed(0))
    assert counting.calls == 50


def _conditional_oracle():
    """Two Markov chains, chosen by a class label; the null label is their even mixture."""
    process = Absorbing(num_classes=4)
    chains = [SequenceOracle.markov_chain(process, 3, 3, seed=s) for s in (1, 2)]

    class Conditional:
        schedules = chains[0].schedules
        time_conditioned = False

        def __call__(self, x, t, condition=None, coef=None):
            labels = condition.labels if condition is not None else torch.full((x["x"].shape[0],), -1)
            mixed = torch.logsumexp(torch.stack([chains[0].log_probs, chains[1].log_probs]), 0) - math.log(2)
            outs = [c(x, t, None, coef)["x"].value for c in chains]
            neutral = SequenceOracle(chains[0].sequences, mixed, process)(x, t, None, coef)["x"].value
            value = torch.where(
                (labels == 0)[:, None, None], outs[0], torch.where((labels == 1)[:, None, None], outs[1], neutral)
            )
            return {"x": dk.CategoricalPrediction(value, x["x"], None)}

    return Conditional()


def test_logit_cfg_weight_one_is_conditional_and_zero_unconditional():
    oracle = _conditional_oracle()
    x = {"x": torch.tensor([[3, 3, 1], [0, 3, 3]])}
    t = {"x": _t(0.6)}
    labels = dk.ClassLabel(torch.tensor([0, 1]), num_classes=2)
    conditional = oracle(x, t, labels)["x"].value
    unconditional = oracle(x, t, labels.null_like())["x"].value
    assert torch.allclose(LogitCFG(1.0).wrap(oracle)(x, t, labels)["x"].value, conditional)
    assert torch.allclose(LogitCFG(0.0).wrap(oracle)(x, t, labels)["x"].value, unconditional)
    three = LogitCFG(3.0).wrap(oracle)(x, t, labels)["x"].value
    finite = torch.isfinite(conditional) & torch.isfinite(unconditional)
    assert torch.allclose(three[finite], (unconditional + 3.0 * (conditional - unconditional))[finite])


def test_inpainting_keeps_given_tokens_and_fills_the_rest():
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 4, 3)
    given = torch.tensor([True, False, True, False]).expand(64, 4)
    x = torch.where(given, torch.tensor([2, 3, 0, 3]), torch.tensor(3))
    plan = dk.TimePlan.from_grid(UniformGrid(steps=20), oracle.schedules).hold("x", given)
    for sampler in (Ancestral(), FirstHitting(), ConfidenceDecoding(), AdaptiveDecoding()):
        out = sampler.sample(oracle, x, plan, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out[given], x[given]) and bool((out < 3).all()), type(sampler).__name__


def test_semi_autoregressive_fills_blocks_left_to_right():
    process = Absorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(process, 4, 3)
    states = []
    SemiAutoregressive(block_size=2, inner="masked:confidence").sample(
        oracle,
        (8, 4),
        UniformGrid(steps=2),
        generator=torch.Generator().manual_seed(0),
        callback=lambda info: states.append(info["x"]["x"].clone()),
    )
    for state in states:
        first_open = bool((state[:, :2] == 3).any())
        second_started = bool((state[:, 2:] != 3).any())
        assert not (first_open and second_started), "the second block moved before the first was complete"
    assert len(states) == 4 and bool((states[-1] < 3).all())
