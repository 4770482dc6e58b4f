"""The digits method: shipped weights exist, are small, and give recognisable, varied digits."""

import diffusekit as dk
import numpy as np
import pytest
import torch
from diffusekit.checkpoint import load_checkpoint
from diffusekit_gaussian.digits import DigitsMethod
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression


@pytest.fixture(scope="module")
def classifier():
    """A digit classifier fit on the real data (92% on the last 397 digits when fit on the rest)."""
    bunch = load_digits()
    x = bunch.images.reshape(len(bunch.images), -1) / 8.0 - 1.0
    return LogisticRegression(max_iter=2000).fit(x, bunch.target)


@pytest.fixture(scope="module")
def samples():
    pipe = dk.pretrained("gaussian:digits")
    labels = dk.ClassLabel(torch.arange(200) % 10, num_classes=10)
    return pipe.sample(200, condition=labels, seed=123), labels.labels


def test_shipped_weights_are_small_and_match_the_recipe():
    path = DigitsMethod().weights()
    assert path is not None and path.suffix == ".safetensors"
    assert path.stat().st_size < 5 * 2**20
    shipped = load_checkpoint(path)
    recipe = DigitsMethod().recipe()
    assert shipped.recipe.parts == recipe.parts and shipped.recipe.network == recipe.network
    assert set(shipped.tensors) == {f"ema.{k}" for k in dk.build(recipe).network.state_dict()}


def test_samples_are_recognisable_as_the_requested_digit(samples, classifier):
    images, labels = samples
    predicted = classifier.predict(images.reshape(len(images), -1).numpy())
    accuracy = float(np.mean(predicted == labels.numpy()))
    assert accuracy >= 0.9, accuracy


def test_samples_are_varied_and_in_range(samples):
    images, labels = samples
    assert images.shape == (200, 1, 8, 8) and torch.isfinite(images).all()
    assert images.min() > -1.5 and images.max() < 1.5
    real = torch.tensor(load_digits().images, dtype=torch.float32) / 8.0 - 1.0
    real_labels = torch.tensor(load_digits().target)
    for digit in range(10):
        ours = images[labels == digit].reshape(-1, 64)
        theirs = real[real_labels == digit].reshape(-1, 64)
        # within-class spread comparable to the data's: no collapse onto one template
        assert torch.pdist(ours).mean() > 0.5 * torch.pdist(theirs).mean(), digit
