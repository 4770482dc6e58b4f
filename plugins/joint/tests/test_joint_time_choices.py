"""Tasks as time choices, on the exact oracle of a labelled Gaussian mixture
(:class:`diffusekit.testing.LabelledMixture`): a part held at t = 0 is unchanged by every
sampler; a part kept at t = 1 is marginalised; joint, conditional and classification runs
have the distributions the mixture says."""

from __future__ import annotations

import pytest
import torch
from diffusekit import TimePlan, get_registry
from diffusekit.builtins import UniformGrid
from diffusekit.by_kind import ByKind
from diffusekit.testing import GaussianMixture, LabelledMixture
from diffusekit_gaussian.schedules import VPCosine
from diffusekit_masked.schedules import Absorbing
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

K = 3
MIXTURE = GaussianMixture(
    torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
    torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=torch.float64),
    torch.tensor([[0.4, 0.3], [0.3, 0.5], [0.5, 0.3]], dtype=torch.float64),
)
ORACLE = LabelledMixture(MIXTURE, {"x": VPCosine(), "label": Absorbing(num_classes=K + 1)})
MASK = K


def _names(kind: str) -> list[str]:
    entries = [e for e in get_registry().entries("sampler") if e.obj is not ByKind]
    return [e.qualname for e in entries if kind in e.obj().supports]  # an instance: supports may depend on settings


GAUSSIAN, CATEGORICAL = _names("gaussian"), _names("categorical")


def _run(plan: TimePlan, start: dict, seed: int, gaussian="gaussian:ddim", categorical="masked:ancestral"):
    sampler = ByKind(gaussian=gaussian, categorical=categorical)
    return sampler.sample(ORACLE, start, plan, generator=torch.Generator().manual_seed(seed))


def _plan(steps: int) -> TimePlan:
    return TimePlan.from_grid(UniformGrid(steps=steps), ORACLE.schedules)


def _start(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 2, generator=g, dtype=torch.float64), "label": torch.full((n, 1), MASK)}


def _component(x: torch.Tensor) -> torch.Tensor:
    """The most likely component of clean data (the Bayes classifier at t = 0)."""
    return MIXTURE.log_responsibilities(x, 1.0, 0.0).argmax(1)


def test_every_sampler_is_exercised():
    assert len(GAUSSIAN) >= 10 and len(CATEGORICAL) >= 3, (GAUSSIAN, CATEGORICAL)


@pytest.mark.parametrize("gaussian", GAUSSIAN)
@settings(max_examples=5, deadline=None, derandomize=True)
@given(steps=st.integers(2, 12), seed=st.integers(0, 2**16))
def test_a_label_held_at_zero_comes_back_unchanged_under_every_gaussian_sampler(gaussian, steps, seed):
    start = _start(8, seed)
    start["label"] = torch.arange(8)[:, None] % K
    out = _run(_plan(steps).hold("label"), start, seed, gaussian=gaussian)
    assert torch.equal(out["label"], start["label"])
    assert bool(torch.isfinite(out["x"]).all())


@pytest.mark.parametrize("categorical", CATEGORICAL)
@settings(max_examples=5, deadline=None, derandomize=True)
@given(steps=st.integers(2, 12), seed=st.integers(0, 2**16))
def test_an_image_held_at_zero_comes_back_unchanged_under_every_categorical_sampler(categorical, steps, seed):
    start = _start(8, seed)
    start["x"] = MIXTURE.sample(8, torch.Generator().manual_seed(seed))
    out = _run(_plan(steps).hold("x"), dict(start), seed, categorical=categorical)
    assert torch.equal(out["x"], start["x"])
    assert bool((out["label"] < K).all())  # every label decided at t = 0


def _frequencies(values: torch.Tensor) -> torch.Tensor:
    return torch.bincount(values, minlength=K).double()


def test_a_label_kept_at_one_gives_the_marginal_of_the_data():
    """Held at t = 1 the label stays masked and tells the oracle nothing: the data's components
    come out in the mixture's proportions (a chi-square test), and the label stays the mask."""
    n = 3000
    out = _run(_plan(30).hold("label", at=1.0), _start(n, 1), seed=1)
    assert bool((out["label"] == MASK).all())
    counts = _frequencies(_component(out["x"]))
    assert chisquare(counts, MIXTURE.weights * n).pvalue > 1e-3, counts


def test_an_image_kept_at_one_gives_the_labels_prior():
    n = 3000
    out = _run(_plan(10).hold("x", at=1.0), _start(n, 2), seed=2)
    assert chisquare(_frequencies(out["label"][:, 0]), MIXTURE.weights * n).pvalue > 1e-3


def test_joint_generation_pairs_each_image_with_its_own_label():
    n = 3000
    out = _run(_plan(30), _start(n, 3), seed=3)
    labels = out["label"][:, 0]
    assert chisquare(_frequencies(labels), MIXTURE.weights * n).pvalue > 1e-3
    assert float((labels == _component(out["x"])).double().mean()) > 0.98


@pytest.mark.parametrize("label", range(K))
def test_a_given_label_draws_from_its_own_component(label):
    start = _start(500, 4 + label)
    start["label"] = torch.full((500, 1), label)
    out = _run(_plan(30).hold("label"), start, seed=4 + label)
    assert float((_component(out["x"]) == label).double().mean()) > 0.98


def test_sampling_the_label_of_given_data_follows_the_bayes_posterior():
    """Label | image: the sampled labels' counts match the summed posteriors p(k | x0)."""
    n = 3000
    g = torch.Generator().manual_seed(5)
    x0 = MIXTURE.sample(n, g) * 1.8  # spread out, so that many points are ambiguous
    start = {"x": x0, "label": torch.full((n, 1), MASK)}
    out = _run(_plan(10).hold("x"), start, seed=5)
    expected = MIXTURE.log_responsibilities(x0, 1.0, 0.0).exp().sum(0)
    assert chisquare(_frequencies(out["label"][:, 0]), expected * n / expected.sum()).pvalue > 1e-3
