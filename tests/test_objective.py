"""Training objectives: the loop asks the recipe's objective for the losses; the default is the denoising loss."""

import attrs
import pytest
import torch
from diffusekit import Objective, Progress, build, load_checkpoint, train
from diffusekit.errors import ConfigError
from diffusekit.objective import Denoising
from diffusekit.recipe import ComponentSpec, PartSpec, Recipe, TrainConfig
from diffusekit.testing.oracle import FlowMapOracle, GaussianMixture, OracleDenoiser
from diffusekit.training import batch_losses
from diffusekit_gaussian import VPCosine
from hypothesis import given, settings
from hypothesis import strategies as st
from test_training import _data


def _recipe(objective=None, steps=6):
    return Recipe(
        parts={"x": PartSpec((2,), ComponentSpec("gaussian:vp_cosine"), ComponentSpec("gaussian:eps"))},
        network=ComponentSpec("gaussian:mlp", {"dim": 2, "hidden": 16, "depth": 2, "num_classes": 3}),
        sampler=ComponentSpec("gaussian:ddim"),
        grid=ComponentSpec("gaussian:karras", {"steps": 4}),
        seed=3,
        train=TrainConfig(steps=steps, batch_size=16, lr=1e-2, checkpoint_every=100, log_every=1, objective=objective),
    )


def test_the_denoising_objective_is_the_default_bit_for_bit(tmp_path):
    default, named = tmp_path / "default.safetensors", tmp_path / "named.safetensors"
    train(build(_recipe()), _data(), out=default, progress=False)
    train(build(_recipe(ComponentSpec("core:denoising"))), _data(), out=named, progress=False)
    a, b = load_checkpoint(default).tensors, load_checkpoint(named).tensors
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_unknown_objective_is_a_config_error_naming_its_path():
    with pytest.raises(ConfigError, match=r"train\.objective\.name"):
        build(_recipe(ComponentSpec("core:denoisng")))


@attrs.frozen
class _Recording(Objective):
    seen: list = attrs.field(factory=list, eq=False)
    start: dict | None = attrs.field(default=None, eq=False)

    def losses(self, denoiser, batch, drawn, progress):
        self.seen.append(progress)
        return batch_losses(denoiser, batch, drawn)

    def initial_weights(self, recipe):
        return self.start


def test_the_loop_hands_the_objective_its_progress_and_starts_from_its_weights(tmp_path, monkeypatch):
    pipeline = build(_recipe(steps=5))
    start = {k: torch.full_like(v, 0.25) for k, v in pipeline.network.state_dict().items()}
    recording = _Recording(start=start)
    monkeypatch.setattr("diffusekit.training.objective_of", lambda recipe: recording)
    out = tmp_path / "m.safetensors"
    train(pipeline, _data(), out=out, steps=3, progress=False)
    assert recording.seen == [Progress(0, 3), Progress(1, 3), Progress(2, 3)]
    # three Adam steps of lr 0.01 move each weight by at most ~0.03 from where the objective started it
    weights = load_checkpoint(out).group("model")
    assert all(torch.allclose(w, torch.full_like(w, 0.25), atol=0.05) for w in weights.values())
    # a resumed run keeps its own weights: the objective's are for fresh runs only
    recording.seen.clear()
    recording_resumed = _Recording(start={k: torch.zeros_like(v) for k, v in start.items()})
    monkeypatch.setattr("diffusekit.training.objective_of", lambda recipe: recording_resumed)
    train(build(_recipe(steps=5)), _data(), out=out, resume=True, progress=False)
    assert recording_resumed.seen == [Progress(3, 5), Progress(4, 5)]
    resumed = load_checkpoint(out).group("model")
    assert all(torch.allclose(w, torch.full_like(w, 0.25), atol=0.1) for w in resumed.values())


def _gaussian(mean: float, std: float) -> GaussianMixture:
    d = torch.float64
    return GaussianMixture(torch.ones(1, dtype=d), torch.full((1, 3), mean, dtype=d), torch.full((1, 3), std, dtype=d))


@settings(max_examples=25, deadline=None)
@given(st.floats(-2, 2), st.floats(0.1, 2.0), st.floats(0.01, 0.99), st.integers(0, 2**31 - 1))
def test_the_flow_map_oracle_is_the_exact_ode_map_of_a_gaussian(mean, std, t, seed):
    # For N(m, s^2) the probability-flow ODE keeps the standardised coordinate: x0 = m + s (x_t - a m) / sqrt(a^2 s^2 + sigma^2)
    schedule = VPCosine()
    flow = FlowMapOracle.of(OracleDenoiser.single(_gaussian(mean, std), schedule), steps=192)  # 2nd order: ~1e-4
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    c = schedule.coefficients(torch.tensor(t, dtype=torch.float64))
    exact = mean + std * (x - c.alpha * mean) / torch.sqrt(c.alpha**2 * std**2 + c.sigma**2)
    got = flow(x, torch.tensor(t, dtype=torch.float64)).x0
    torch.testing.assert_close(got, exact, rtol=1e-3, atol=1e-3)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.floats(-50, 50), st.integers(0, 2**31 - 1))
def test_the_flow_map_oracle_is_the_identity_at_t0(batch, scale, seed):
    mixture = GaussianMixture.random((2,), 3, generator=torch.Generator().manual_seed(seed))
    flow = FlowMapOracle.of(OracleDenoiser.single(mixture, VPCosine()))
    x = scale * torch.randn(batch, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert torch.equal(flow(x, torch.zeros(batch, dtype=torch.float64)).x0, x)


# --- time-dependent weighting (weighting = "snr") -------------------------------------------------------------


def _registered(kind: str, name: str, **params):
    from diffusekit.plugins import get_registry
    from diffusekit.recipe import instantiate

    return instantiate(get_registry(), kind, ComponentSpec(name, params), name)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["gaussian:eps", "gaussian:v", "gaussian:x0", "gaussian:velocity", "gaussian:edm_precond"]),
    st.sampled_from(["gaussian:vp_cosine", "gaussian:rectified_flow", "gaussian:ve"]),
    st.floats(0.02, 0.98),
    st.floats(0.01, 0.5),
    st.floats(1.0, 20.0),
    st.integers(0, 2**31 - 1),
)
def test_snr_weighting_weights_the_squared_error_of_the_implied_x0(param, schedule, t, lo, hi, seed):
    """Oracle: whatever the network predicts, weight x its loss = clip(SNR_t, lo, hi) |x0_hat - x0|^2,
    with x0_hat the prediction's own x0 (Min-SNR / EQGAT-diff weighting)."""
    from diffusekit.objective import signal_to_noise
    from diffusekit.schedule import Corrupted

    parameterization, process = _registered("parameterization", param), _registered("schedule", schedule)
    g = torch.Generator().manual_seed(seed)
    d = torch.float64
    times = torch.full((4,), t, dtype=d)
    x0, eps, raw = (torch.randn(4, 3, generator=g, dtype=d) for _ in range(3))
    c = process.coefficients(times)
    x_t = c.alpha[:, None] * x0 + c.sigma[:, None] * eps
    prepared = parameterization.prepare(process, x_t, times)
    x0_hat = parameterization.output(raw, prepared).x0
    objective = Denoising(weighting="snr", snr_min=lo, snr_max=hi)
    drawn = attrs.make_class("D", ["times"])({"x": times})
    denoiser = attrs.make_class("Dn", ["schedules", "parameterizations"])({"x": process}, {"x": parameterization})
    w = objective.weights(denoiser, drawn)["x"]
    weighted = w[:, None] * parameterization.loss(raw, prepared, x0, Corrupted(x_t, eps))
    snr = torch.exp(process.log_snr(times))
    assert torch.allclose(signal_to_noise(process, times), snr)
    expected = snr.clamp(lo, hi)[:, None] * torch.square(x0_hat - x0)
    assert torch.allclose(weighted, expected, rtol=1e-6, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 1.0), st.sampled_from(["log_linear", "cosine", "linear"]))
def test_snr_weighting_of_a_categorical_part_is_the_clipped_odds_of_keeping_the_token(t, keep):
    process = _registered("schedule", "masked:marginal", frequencies=[0.7, 0.2, 0.1], keep=keep)
    times = torch.tensor([t, 0.0, 1.0], dtype=torch.float64)
    objective = Denoising(weighting="snr", snr_min=0.05, snr_max=1.5)
    drawn = attrs.make_class("D", ["times"])({"x": times})
    denoiser = attrs.make_class("Dn", ["schedules", "parameterizations"])({"x": process}, {"x": None})
    w = objective.weights(denoiser, drawn)["x"]
    alpha = process.keep_probability(times)
    odds = alpha / (1 - alpha)
    assert torch.isfinite(w).all()
    assert w[1] == 1.5 and w[2] == 0.05  # t = 0: infinite odds, clipped; t = 1: none kept, the floor
    if 0.0 < t < 1.0:
        assert torch.isclose(w[0], odds[0].clamp(0.05, 1.5))


def test_snr_weighting_is_zero_not_nan_at_t0():
    """At t = 0 a Gaussian part's x0 weight divides by an infinite scale (v, eps): the weight is 0, never NaN."""
    process, parameterization = (
        _registered("schedule", "gaussian:vp_cosine"),
        _registered("parameterization", "gaussian:v"),
    )
    drawn = attrs.make_class("D", ["times"])({"x": torch.tensor([0.0, 0.5], dtype=torch.float64)})
    denoiser = attrs.make_class("Dn", ["schedules", "parameterizations"])({"x": process}, {"x": parameterization})
    w = Denoising(weighting="snr").weights(denoiser, drawn)["x"]
    assert torch.isfinite(w).all() and w[0] == 0 and w[1] > 0


def test_snr_weighting_trains_and_changes_the_run(tmp_path):
    plain, weighted = tmp_path / "plain.safetensors", tmp_path / "weighted.safetensors"
    train(build(_recipe()), _data(), out=plain, progress=False)
    objective = ComponentSpec("core:denoising", {"weighting": "snr", "snr_min": 0.05, "snr_max": 1.5})
    train(build(_recipe(objective)), _data(), out=weighted, progress=False)
    a, b = load_checkpoint(plain).group("model"), load_checkpoint(weighted).group("model")
    assert all(torch.isfinite(v).all() for v in b.values())
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"weighting": "snr", "snr_max": float("inf")}, "finite"),
        ({"weighting": "snr", "snr_min": 2.0, "snr_max": 1.0}, "snr_min"),
        ({"weighting": "min_snr"}, "weighting"),
    ],
)
def test_bad_weighting_settings_are_config_errors(params, match):
    with pytest.raises(ConfigError, match=match):
        build(_recipe(ComponentSpec("core:denoising", params)))
