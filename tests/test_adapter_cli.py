"""A schedule from a third-party plugin, used with the shipped digits weights from the CLI and from
Python: the network is matched to it by log-SNR and the digits stay recognisable."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from fakeplugins import assert_one_line_error, env_with, run_cli, write_distribution  # noqa: E402

# a VP schedule whose log-SNR falls linearly in t (Kingma et al., 2021, the "fixed" VDM schedule)
LOGLINEAR = '''
import attrs
import torch
import diffusekit


@attrs.frozen
class LogLinear(diffusekit.GaussianSchedule):
    """log-SNR linear in t, from 10 to -10, on a variance-preserving path."""

    family = "vp"
    high: float = 10.0
    low: float = -10.0

    def coefficients(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        lam = torch.where(t == 0, torch.full_like(t, float("inf")), self.high + (self.low - self.high) * t)
        alpha2 = torch.sigmoid(lam)
        alpha, sigma = alpha2.sqrt(), torch.sigmoid(-lam).sqrt()
        d_lam = self.low - self.high
        # d alpha / dt = alpha sigma^2 dlam / 2; d sigma / dt = -sigma alpha^2 dlam / 2
        return diffusekit.GaussianCoefficients(
            alpha, sigma, 0.5 * alpha * sigma**2 * d_lam, -0.5 * sigma * alpha2 * d_lam, lam
        )

    def t_from_log_snr(self, log_snr):
        return ((log_snr - self.high) / (self.low - self.high)).clamp(0.0, 1.0)


@diffusekit.hookimpl
def register_schedules(register):
    register(LogLinear, name="loglinear")
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    write_distribution(site, dist="fake-loglin", module="dkfake_loglin", source=LOGLINEAR)
    return site


def _accuracy(images: torch.Tensor, labels: np.ndarray) -> float:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    bunch = load_digits()
    classifier = LogisticRegression(max_iter=2000).fit(
        bunch.images.reshape(len(bunch.images), -1) / 8.0 - 1.0, bunch.target
    )
    return float(np.mean(classifier.predict(images.reshape(len(images), -1).numpy()) == labels))


def test_run_samples_under_a_third_party_schedule_with_the_shipped_weights(tmp_path, site):
    from safetensors.torch import load_file

    env = env_with(site)
    args = ("run", "gaussian:digits", "--set", "parts.x.schedule=loglin:loglinear", "--num", "50", "--out", "o")
    result = run_cli(*args, "--no-progress", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "sampling under loglin:loglinear with weights trained under gaussian:vp_cosine, matched by log-SNR" in (
        result.stderr
    )
    assert "training" not in result.stderr
    samples = load_file(str(tmp_path / "o" / "samples.safetensors"))["x"]
    # the shipped model's own samples are 99.8% recognisable (500 drawn); matched, the schedule changes nothing
    assert _accuracy(samples, np.arange(50) % 10) >= 0.9


def test_load_matches_an_overridden_schedule_and_refuses_a_categorical_one(tmp_path):
    import diffusekit as dk
    from diffusekit_gaussian.digits import DigitsMethod

    path = DigitsMethod().weights()
    labels = dk.ClassLabel(torch.arange(10), num_classes=10)
    trained = dk.load(path).sample(10, condition=labels, seed=1)
    edm = dk.load(path, **{"parts.x.schedule": "gaussian:edm"})
    assert isinstance(edm.denoiser, dk.ScheduleAdapter)
    # the Karras grid visits the same noise levels under both schedules: the same samples, up to float32
    assert torch.allclose(edm.sample(10, condition=labels, seed=1), trained, atol=1e-3)
    message = assert_one_line_error(
        run_cli("run", "masked:sudoku", "--set", "parts.x.schedule=masked:uniform", "--num", "1", cwd=tmp_path)
    )
    assert message.startswith("parts.x.schedule:") and "only Gaussian schedules" in message and "--train" in message
