"""The Gaussian-mixture oracle against independent computations."""

import math

import torch
from diffusekit import ClassLabel
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from diffusekit.testing.reference import TrigonometricSchedule
from hypothesis import given
from hypothesis import strategies as st


def _mixture(seed=0, shape=(3,), k=4):
    return GaussianMixture.random(shape, k, generator=torch.Generator().manual_seed(seed))


def test_single_gaussian_posterior_is_the_wiener_filter():
    mu, s = torch.tensor([[1.5, -0.5]], dtype=torch.float64), torch.tensor([[0.7, 0.2]], dtype=torch.float64)
    mix = GaussianMixture(torch.ones(1, dtype=torch.float64), mu, s)
    x = torch.randn(10, 2, dtype=torch.float64)
    alpha, sigma = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)
    # E[x0|x] = mu + Cov(x0, x) Var(x)^-1 (x - E x), with Cov = alpha s^2, Var = alpha^2 s^2 + sigma^2
    expected = mu + alpha * s**2 / (alpha**2 * s**2 + sigma**2) * (x - alpha * mu)
    assert torch.allclose(mix.posterior_mean(x, alpha, sigma), expected, rtol=1e-12)


def test_posterior_mean_matches_monte_carlo():
    """Average x0 over samples whose x_t falls near a point approaches E[x0 | x_t]."""
    mix = _mixture(seed=3, shape=(1,), k=3)
    g = torch.Generator().manual_seed(4)
    n = 400_000
    x0 = mix.sample(n, g)
    alpha, sigma = 0.7, 0.7
    xt = alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    for point in (-1.0, 0.0, 1.0):
        near = (xt[:, 0] - point).abs() < 0.02
        mc = x0[near].mean()
        exact = mix.posterior_mean(
            torch.tensor([[point]], dtype=torch.float64), torch.tensor(alpha), torch.tensor(sigma)
        )
        assert near.sum() > 1000
        assert abs(float(mc) - float(exact)) < 0.03


@given(st.integers(0, 2**31 - 1), st.integers(1, 5))
def test_per_element_time_equals_row_by_row(seed, batch):
    mix = _mixture(seed % 7)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(batch, 3, generator=g, dtype=torch.float64)
    oracle = OracleDenoiser.single(mix, TrigonometricSchedule())
    together = oracle(x, t).x0
    for i in range(batch):
        alone = oracle(x[i : i + 1], t[i : i + 1]).x0  # one row at its own per-element times
        assert torch.allclose(together[i], alone[0], rtol=1e-12, atol=1e-12)


def test_class_label_restricts_to_one_component():
    mix = _mixture(seed=5, shape=(2,), k=3)
    oracle = OracleDenoiser.single(mix, TrigonometricSchedule())
    x = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor(0.5, dtype=torch.float64)
    c = TrigonometricSchedule().coefficients(t)
    labels = ClassLabel(torch.tensor([0, 2, -1]), num_classes=3)
    got = oracle(x, t, labels).x0
    for row, k in ((0, 0), (1, 2)):
        single = GaussianMixture(torch.ones(1, dtype=torch.float64), mix.means[k : k + 1], mix.stds[k : k + 1])
        assert torch.allclose(got[row], single.posterior_mean(x[row : row + 1], c.alpha, c.sigma)[0], rtol=1e-12)
    assert torch.allclose(got[2], oracle(x[2:], t).x0[0], rtol=1e-12)


def test_endpoints_of_the_noise_range():
    mix = _mixture(seed=1)
    x = torch.randn(4, 3, dtype=torch.float64)
    one, zero = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    # no noise: the posterior mean is the point itself; no signal: it is the data mean
    assert torch.allclose(mix.posterior_mean(x, one, zero), x, rtol=1e-12)
    assert torch.allclose(mix.posterior_mean(x, zero, one), mix.mean().expand(4, 3), rtol=1e-12)
    assert math.isclose(float(mix.weights.sum()), 1.0)


def _labelled(seed: int, k: int = 3):
    from diffusekit.testing.categorical import ReferenceAbsorbing
    from diffusekit.testing.oracle import LabelledMixture

    mixture = _mixture(seed=seed, shape=(2,), k=k)
    schedules = {"x": TrigonometricSchedule(), "label": ReferenceAbsorbing(num_classes=k + 1)}
    return LabelledMixture(mixture, schedules), mixture


@given(st.integers(0, 50), st.floats(0.05, 0.95), st.floats(0.05, 0.95))
def test_the_labelled_mixture_is_the_conditional_and_the_marginal_oracle(seed, t_x, t_label):
    """A given label (an unmasked token) gives the class-conditional oracle; a masked label the
    unconditional one; in between, the label's prediction is Bayes' rule on the data's evidence."""
    joint, mixture = _labelled(seed)
    single = OracleDenoiser({"x": mixture}, {"x": joint.schedules["x"]})
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    classes = torch.tensor([0, 1, 2, 0, 1, 2])
    given_label = joint({"x": x, "label": classes[:, None]}, {"x": t_x, "label": t_label})
    cond = single({"x": x}, {"x": t_x}, ClassLabel(classes, num_classes=3))["x"]
    torch.testing.assert_close(given_label["x"].x0, cond.x0)
    assert (given_label["label"].probs[:, 0].argmax(-1) == classes).all()  # an unmasked token is its class
    masked = joint({"x": x, "label": torch.full((6, 1), 3)}, {"x": t_x, "label": t_label})
    torch.testing.assert_close(masked["x"].x0, single({"x": x}, {"x": t_x})["x"].x0)
    # the masked label's prediction: p(k | x_t) by Bayes' rule, computed here from the densities
    c = joint.schedules["x"].coefficients(torch.tensor(t_x, dtype=torch.float64))
    var = c.alpha**2 * mixture.stds**2 + c.sigma**2
    log_lik = -0.5 * (((x[:, None] - c.alpha * mixture.means[None]) ** 2 / var + torch.log(2 * math.pi * var)).sum(-1))
    bayes = torch.softmax(torch.log(mixture.weights) + log_lik, -1)
    torch.testing.assert_close(masked["label"].probs[:, 0, :3].double(), bayes, atol=1e-5, rtol=1e-4)
    assert float(masked["label"].probs[:, 0, 3].max()) < 1e-6  # never the mask
