"""Guidance against exact oracles: class-conditional mixtures and the true classifier."""

import math

import diffusekit as dk
import torch
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from diffusekit_gaussian import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    ComposableGuidance,
    HistoryGuidance,
    KarrasGrid,
    ProductGuidance,
    RectifiedFlow,
    UniPC,
    VPCosine,
)
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = torch.float64


def _setting(k=3, dim=2, seed=3):
    mixture = GaussianMixture.random((dim,), k, generator=torch.Generator().manual_seed(seed))
    oracle = OracleDenoiser.single(mixture, VPCosine())
    x = torch.randn(6, dim, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    return mixture, oracle, x


def _at(oracle, x, t, condition=None):
    return oracle({"x": x}, {"x": torch.tensor(t, dtype=F64)}, condition)["x"]


class Counting:
    """Wraps a denoiser and counts the samples it evaluates."""

    def __init__(self, inner):
        self.inner, self.evaluated = inner, 0

    @property
    def schedules(self):
        return self.inner.schedules

    def __call__(self, x, t, condition=None, coef=None):
        self.evaluated += next(iter(x.values())).shape[0]
        return self.inner(x, t, condition, coef)


def test_guidance_interval_applies_only_inside_the_noise_range():
    _, oracle, x = _setting()
    labels = dk.ClassLabel(torch.tensor([0, 1, 2, 0, 1, 2]), num_classes=3)
    schedule = oracle.schedules["x"]
    t_inside, t_outside = 0.5, 0.98  # sigma~ ~ 1 and ~ 45
    inside_sigma = float(schedule.coefficients(torch.tensor(t_inside, dtype=F64)).sigma_tilde)
    guidance = ClassifierFreeGuidance(scale=3.0, interval=(0.5 * inside_sigma, 2.0 * inside_sigma))
    counting = Counting(oracle)
    guided = guidance.wrap(counting)
    out = guided({"x": x}, {"x": torch.tensor(t_outside, dtype=F64)}, labels)["x"].x0
    assert torch.allclose(out, _at(oracle, x, t_outside, labels).x0) and counting.evaluated == 6  # one pass only
    out = guided({"x": x}, {"x": torch.tensor(t_inside, dtype=F64)}, labels)["x"].x0
    c, u = _at(oracle, x, t_inside, labels).x0, _at(oracle, x, t_inside, labels.null_like()).x0
    assert torch.allclose(out, u + 3.0 * (c - u)) and counting.evaluated == 6 + 12


def test_rescale_restores_the_conditional_spread():
    _, oracle, x = _setting()
    labels = dk.ClassLabel(torch.tensor([0, 1, 2, 0, 1, 2]), num_classes=3)
    t = {"x": torch.tensor(0.6, dtype=F64)}
    plain = ClassifierFreeGuidance(scale=6.0).wrap(oracle)({"x": x}, t, labels)["x"].x0
    full = ClassifierFreeGuidance(scale=6.0, rescale=1.0).wrap(oracle)({"x": x}, t, labels)["x"].x0
    half = ClassifierFreeGuidance(scale=6.0, rescale=0.5).wrap(oracle)({"x": x}, t, labels)["x"].x0
    conditional = _at(oracle, x, 0.6, labels).x0
    assert torch.allclose(full.std(dim=1), conditional.std(dim=1))
    assert torch.allclose(half, 0.5 * full + 0.5 * plain)


def test_composable_guidance_is_a_weighted_sum_with_negation():
    _, oracle, x = _setting(k=4)
    a = dk.ClassLabel(torch.tensor([0] * 6), num_classes=4)
    b = dk.ClassLabel(torch.tensor([2] * 6), num_classes=4)
    t = 0.5
    c1, c2, u = _at(oracle, x, t, a).value, _at(oracle, x, t, b).value, _at(oracle, x, t, a.null_like()).value
    got = (
        ComposableGuidance(weights=(2.0, -1.0))
        .wrap(oracle)({"x": x}, {"x": torch.tensor(t, dtype=F64)}, dk.ConditionList((a, b)))["x"]
        .value
    )
    assert torch.allclose(got, u + 2.0 * (c1 - u) - 1.0 * (c2 - u))


def test_classifier_guidance_with_the_true_classifier_is_the_conditional_model():
    """grad log p(x_t) + grad log p(y | x_t) = grad log p(x_t | y): exact for the mixture."""
    mixture, oracle, x = _setting()
    schedule = oracle.schedules["x"]
    labels = dk.ClassLabel(torch.tensor([0, 1, 2, 2, 1, 0]), num_classes=3)

    def log_prob(parts, t, condition):
        c = schedule.coefficients(t["x"])
        xt = parts["x"]
        var = c.alpha**2 * mixture.stds**2 + c.sigma**2
        comp = -0.5 * ((xt[:, None] - c.alpha * mixture.means) ** 2 / var + torch.log(2 * math.pi * var)).sum(-1)
        log_post = torch.log_softmax(torch.log(mixture.weights) + comp, dim=1)
        return log_post.gather(1, condition.labels[:, None]).squeeze(1)

    class Unconditional:  # the guided model is the unconditional one; only the classifier sees the label
        schedules = oracle.schedules

        def __call__(self, x, t, condition=None, coef=None):
            return oracle(x, t, None, coef)

    for t in (0.3, 0.7):
        guided = ClassifierGuidance(scale=1.0, log_prob=log_prob).wrap(Unconditional())(
            {"x": x}, {"x": torch.tensor(t, dtype=F64)}, labels
        )["x"]
        assert torch.allclose(guided.x0, _at(oracle, x, t, labels).x0, rtol=1e-9, atol=1e-9)
    # and it samples the class: with the exact classifier every sample lands in its class's mode
    out = UniPC().sample(
        ClassifierGuidance(scale=1.0, log_prob=log_prob).wrap(Unconditional()),
        (6, 2),
        KarrasGrid(steps=20),
        condition=labels,
        generator=torch.Generator().manual_seed(0),
        dtype=F64,
    )
    nearest = ((out[:, None] - mixture.means[None]) / mixture.stds[None]).square().sum(-1).argmin(1)
    assert torch.equal(nearest, labels.labels)


def test_product_of_denoisers_sums_weighted_scores():
    mixture, oracle, x = _setting()
    other = OracleDenoiser.single(
        GaussianMixture.random((2,), 2, generator=torch.Generator().manual_seed(9)), VPCosine()
    )
    t = {"x": torch.tensor(0.4, dtype=F64)}
    product = ProductGuidance(weight=0.7, weights=(0.3,), others=(other,)).wrap(oracle)({"x": x}, t)["x"]
    expected = 0.7 * oracle({"x": x}, t)["x"].eps + 0.3 * other({"x": x}, t)["x"].eps
    assert torch.allclose(product.eps, expected)
    same = ProductGuidance(weight=0.5, weights=(0.5,), others=(oracle,)).wrap(oracle)({"x": x}, t)["x"]
    assert torch.allclose(same.x0, oracle({"x": x}, t)["x"].x0)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(scale=st.floats(0.0, 4.0), t=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_history_guidance_contrasts_the_joint_posterior_with_the_marginal(scale, t, seed):
    """Two elements (frames or views) of a mixture, the first given at t = 0: with it, the exact
    denoiser of the second is the joint posterior's; replaced by noise at t = 1 (where rectified
    flow keeps no signal) it is the second element's marginal posterior. History guidance is
    their classifier-free combination, and leaves the given element's own prediction alone."""
    g = torch.Generator().manual_seed(seed)
    mixture = GaussianMixture.random((2, 2), 3, generator=g)
    oracle = OracleDenoiser.single(mixture, RectifiedFlow())
    clean = mixture.sample(4, generator=g)
    x = clean.clone()
    x[:, 1] = (1 - t) * clean[:, 1] + t * torch.randn(4, 2, generator=g, dtype=F64)
    time = torch.tensor([[0.0, t]] * 4, dtype=F64)
    guided = HistoryGuidance(scale).wrap(oracle)({"x": x}, {"x": time})["x"].x0
    joint = oracle({"x": x}, {"x": time})["x"].x0
    second = GaussianMixture(mixture.weights, mixture.means[:, 1], mixture.stds[:, 1])
    marginal = second.posterior_mean(x[:, 1], 1 - t, t)
    assert torch.allclose(guided[:, 1], marginal + scale * (joint[:, 1] - marginal), atol=1e-9)
    assert torch.equal(guided[:, 0], joint[:, 0])
    assert torch.allclose(joint[:, 0], clean[:, 0])  # the given element is known exactly
