"""The spatio-temporal transformer: shapes, per-frame time, causality, the KV cache, the network contracts."""

from __future__ import annotations

import pytest
import torch
from diffusekit import ConfigError, PartSpec, ShapeError
from diffusekit.condition import ClassLabel
from diffusekit.recipe import ComponentSpec
from diffusekit.testing.contracts import network_contracts
from diffusekit.testing.reference import TrigonometricSchedule
from diffusekit_video.networks import SpatioTemporalTransformer
from hypothesis import given, settings
from hypothesis import strategies as st

FRAMES = 4  # the attention window of the test models: videos up to 3x longer slide it
examples = settings(max_examples=15, deadline=None, derandomize=True)


def spec(**kw) -> SpatioTemporalTransformer:
    params = dict(channels=1, size=8, patch=4, d_model=16, layers=2, heads=2, frames=FRAMES)
    return SpatioTemporalTransformer(**{**params, **kw})


def model(causal: bool, seed: int = 0, **kw) -> torch.nn.Module:
    """A built module whose zero-initialised gates and output are perturbed (else it outputs 0)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = spec(causal=causal, **kw).build().eval()
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return module


def video(batch: int, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 1, 8, 8, generator=g), torch.rand(batch, frames, generator=g, dtype=torch.float64)


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return torch.allclose(a, b, rtol=tol, atol=tol)


@examples
@given(st.integers(1, 3), st.integers(1, 3 * FRAMES), st.booleans(), st.integers(0, 2**16))
def test_output_has_the_input_shape(batch: int, frames: int, causal: bool, seed: int) -> None:
    x, t = video(batch, frames, seed)
    with torch.no_grad():
        out = model(causal)(x, t, None)
    assert out.shape == x.shape and out.dtype == x.dtype and bool(torch.isfinite(out).all())


def test_untrained_output_is_zero() -> None:
    x, t = video(2, 3, 0)
    assert torch.equal(spec().build()(x, t, None), torch.zeros_like(x))


@examples
@given(st.integers(1, 3), st.integers(1, 2 * FRAMES), st.floats(0.0, 1.0), st.booleans(), st.integers(0, 2**16))
def test_equal_per_frame_time_is_the_scalar_time(batch: int, frames: int, t: float, causal: bool, seed: int) -> None:
    x, _ = video(batch, frames, seed)
    m = model(causal)
    with torch.no_grad():
        scalar = m(x, torch.tensor(t, dtype=torch.float64), None)
        for shape in [(batch,), (batch, frames), (batch, frames, 1, 1, 1), (1, frames), (batch, 1)]:
            out = m(x, torch.full(shape, t, dtype=torch.float64), None)
            assert torch.equal(out, scalar), f"noise level of shape {shape} filled with {t}"


@examples
@given(st.integers(1, 2), st.integers(2, 3 * FRAMES), st.data())
def test_causal_output_ignores_later_frames(batch: int, frames: int, data) -> None:
    refine = data.draw(st.sampled_from([0, 3]), label="refine")  # the conv head sees one frame at a time
    k = data.draw(st.integers(0, frames - 2))
    x, t = video(batch, frames, frames)
    y, s = x.clone(), t.clone()
    y[:, k + 1 :] += torch.randn_like(y[:, k + 1 :])
    s[:, k + 1 :] = torch.rand_like(s[:, k + 1 :])
    m = model(causal=True, refine=refine)
    with torch.no_grad():
        a, b = m(x, t, None), m(y, s, None)
    assert torch.allclose(a[:, : k + 1], b[:, : k + 1], rtol=0, atol=1e-6)
    assert not close(a[:, k + 1 :], b[:, k + 1 :])


@examples
@given(st.integers(2, FRAMES), st.data())
def test_non_causal_output_sees_later_frames(frames: int, data) -> None:
    k = data.draw(st.integers(0, frames - 2))
    x, t = video(1, frames, frames)
    y = x.clone()
    y[:, k + 1] += 1.0
    m = model(causal=False)
    with torch.no_grad():
        assert not close(m(x, t, None)[:, k], m(y, t, None)[:, k])


@examples
@given(st.integers(1, 2), st.integers(1, 3 * FRAMES), st.integers(1, 3), st.integers(0, 2**16), st.sampled_from([0, 3]))
def test_cached_rollout_equals_the_full_causal_forward(
    batch: int, length: int, block: int, seed: int, refine: int
) -> None:
    """Frames generated ``block`` at a time, each block attending to the cache of the earlier
    ones (which slides past ``FRAMES``), give the full forward's output for that block."""
    x, t = video(batch, length, seed)
    m = model(causal=True, seed=seed, refine=refine)
    with torch.no_grad():
        full = m(x, t, None)
        cache = None
        for start in range(0, length, block):
            new = slice(start, min(start + block, length))
            out = m.forward_step(x[:, new], t[:, new], cache)
            again = m.forward_step(x[:, new], t[:, new], cache)  # the cache is not consumed
            assert torch.equal(out, again)
            assert close(out, full[:, new]), f"frames {new}: off by {(out - full[:, new]).abs().max():.3g}"
            cache = m.cache_frames(x[:, new], t[:, new], cache)
            assert cache.length == min(new.stop, FRAMES - 1) and cache.position == new.stop


@examples
@given(st.integers(FRAMES, 4 * FRAMES), st.integers(0, 2**16))
def test_cache_built_at_once_equals_cache_built_frame_by_frame(length: int, seed: int) -> None:
    x, t = video(2, length + 1, seed)
    m = model(causal=True, seed=seed)
    with torch.no_grad():
        once = m.cache_frames(x[:, :length], t[:, :length])
        cache = None
        for k in range(length):
            cache = m.cache_frames(x[:, k : k + 1], t[:, k : k + 1], cache)
        a, b = m.forward_step(x[:, length:], t[:, length:], once), m.forward_step(x[:, length:], t[:, length:], cache)
    assert close(a, b)


@examples
@given(st.integers(FRAMES, 4 * FRAMES), st.integers(0, 2**16))
def test_one_layer_cache_equals_a_forward_over_the_window(length: int, seed: int) -> None:
    """With one layer a frame's keys depend on that frame alone: after the window has slid, the
    cached step equals a fresh forward over the last ``FRAMES`` frames, indexed from 0 (rotary
    positions see only offsets, so the cached keys stay valid)."""
    x, t = video(2, length + 1, seed)
    m = model(causal=True, seed=seed, layers=1)
    with torch.no_grad():
        cache = m.cache_frames(x[:, :length], t[:, :length])
        step = m.forward_step(x[:, length:], t[:, length:], cache)
        window = m(x[:, length + 1 - FRAMES :], t[:, length + 1 - FRAMES :], None)[:, -1:]
    assert close(step, window)


def test_deterministic_given_the_seed() -> None:
    x, t = video(2, 3, 0)
    a, b, c = model(True, seed=5), model(True, seed=5), model(True, seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    with torch.no_grad():
        assert torch.equal(a(x, t, None), b(x, t, None))
        assert not torch.equal(a(x, t, None), c(x, t, None))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("refine", [0, 3])
def test_network_contracts(causal: bool, refine: int) -> None:
    for _doc, check in network_contracts(spec(causal=causal, refine=refine)).values():
        check()


def test_untrained_output_with_a_conv_head_is_zero() -> None:
    x, t = video(2, 3, 0)
    assert torch.equal(spec(refine=3).build()(x, t, None), torch.zeros_like(x))


def test_refusals() -> None:
    m = model(causal=False)
    x, t = video(2, 3, 0)
    with pytest.raises(ShapeError, match="videos"):
        m(x[:, :, :, :4], t, None)
    with pytest.raises(ShapeError, match="noise level"):
        m(x, torch.rand(2, 5), None)
    with pytest.raises(ShapeError, match="unconditional"):
        m(x, t, ClassLabel(torch.tensor([0, 1]), num_classes=2))
    with pytest.raises(ConfigError, match="causal"):
        m.cache_frames(x, 0.0)
    causal = model(causal=True)
    with pytest.raises(ShapeError, match="cache"):
        causal.forward_step(x[:1], t[:1], causal.cache_frames(x, 0.0))
    with pytest.raises(ValueError):
        spec(size=10)
    with pytest.raises(ValueError):
        spec(d_model=12, heads=4)  # heads of odd width: no rotary pairs


def part(shape, time_dims: int = 2) -> dict[str, PartSpec]:
    return {"x": PartSpec(shape, ComponentSpec("trig"), ComponentSpec("eps"), time_dims=time_dims)}


def test_check_parts() -> None:
    schedules = {"x": TrigonometricSchedule()}
    spec().check_parts(part((12, 1, 8, 8)), schedules)
    spec().check_parts(part((3, 1, 8, 8), time_dims=1), schedules)
    for bad, where in [
        (part((12, 3, 8, 8)), "shape"),
        (part((1, 8, 8)), "shape"),
        (part((12, 1, 8, 8), time_dims=3), "time_dims"),
    ]:
        with pytest.raises(ConfigError, match=where):
            spec().check_parts(bad, schedules)
