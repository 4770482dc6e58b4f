"""The spatio-temporal transformer: shapes, per-frame time, causality, the KV cache, the network contracts."""

from __future__ import annotations

import pytest
import torch
from diffusekit import ConfigError, PartSpec, ShapeError
from diffusekit.condition import ClassLabel
from diffusekit.recipe import ComponentSpec
from diffusekit.testing.contracts import network_contracts
from diffusekit.testing.reference import TrigonometricSchedule
from diffusekit_video.networks import SpatioTemporalTransformer, neighbourhood
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
    neighbours = data.draw(st.sampled_from([0, 1]), label="neighbours")
    k = data.draw(st.integers(0, frames - 2))
    x, t = video(batch, frames, frames)
    y, s = x.clone(), t.clone()
    y[:, k + 1 :] += torch.randn_like(y[:, k + 1 :])
    s[:, k + 1 :] = torch.rand_like(s[:, k + 1 :])
    m = model(causal=True, refine=refine, neighbours=neighbours)
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
@given(
    st.integers(1, 2),
    st.integers(1, 3 * FRAMES),
    st.integers(1, 3),
    st.integers(0, 2**16),
    st.sampled_from([0, 3]),
    st.sampled_from([0, 1]),
)
def test_cached_rollout_equals_the_full_causal_forward(
    batch: int, length: int, block: int, seed: int, refine: int, neighbours: int
) -> None:
    """Frames generated ``block`` at a time, each block attending to the cache of the earlier
    ones (which slides past ``FRAMES``), give the full forward's output for that block."""
    x, t = video(batch, length, seed)
    m = model(causal=True, seed=seed, refine=refine, neighbours=neighbours)
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
@given(st.integers(FRAMES, 4 * FRAMES), st.integers(0, 2**16), st.sampled_from([0, 1]))
def test_cache_built_at_once_equals_cache_built_frame_by_frame(length: int, seed: int, neighbours: int) -> None:
    x, t = video(2, length + 1, seed)
    m = model(causal=True, seed=seed, neighbours=neighbours)
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


@examples
@given(st.integers(1, 4), st.integers(0, 2), st.integers(1, 3), st.integers(0, 2**16))
def test_neighbourhood_gathers_each_patchs_neighbours_with_zeros_off_the_grid(
    grid: int, radius: int, length: int, seed: int
) -> None:
    z = torch.randn(2, grid * grid, 3, length, 2, generator=torch.Generator().manual_seed(seed))
    side = 2 * radius + 1
    got = neighbourhood(z, grid, radius).reshape(2, grid, grid, 3, side, side, length, 2)
    cells = z.reshape(2, grid, grid, 3, length, 2)
    for row in range(grid):
        for col in range(grid):
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    r, c = row + dy, col + dx
                    want = cells[:, r, c] if 0 <= r < grid and 0 <= c < grid else torch.zeros_like(cells[:, 0, 0])
                    assert torch.equal(got[:, row, col, :, dy + radius, dx + radius], want), (row, col, dy, dx)


@pytest.mark.parametrize("causal", [False, True])
def test_neighbours_masked_to_the_centre_are_the_plain_temporal_attention(causal: bool) -> None:
    """An offset bias of -inf everywhere but the centre leaves each patch attending to itself
    across frames: the network without neighbours, same weights, same output (this pins the
    order of neighbours and frames in the attention mask)."""
    wide = model(causal, seed=3, size=12, neighbours=1)
    plain = spec(causal=causal, size=12).build().eval()
    plain.load_state_dict({k: v for k, v in wide.state_dict().items() if "offset_bias" not in k})
    with torch.no_grad():
        for block in wide.blocks:
            block.offset_bias.fill_(float("-inf"))
            block.offset_bias[:, 4] = 0.0  # the centre of the 3 x 3 neighbourhood
        g = torch.Generator().manual_seed(4)
        x, t = torch.randn(2, 2 * FRAMES, 1, 12, 12, generator=g), torch.rand(2, 2 * FRAMES, generator=g)
        assert close(wide(x, t, None), plain(x, t, None))
        wide.blocks[0].offset_bias[:, 0] = 0.0  # a neighbour let in changes the output
        assert not close(wide(x, t, None), plain(x, t, None))


def test_deterministic_given_the_seed() -> None:
    x, t = video(2, 3, 0)
    a, b, c = model(True, seed=5), model(True, seed=5), model(True, seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    with torch.no_grad():
        assert torch.equal(a(x, t, None), b(x, t, None))
        assert not torch.equal(a(x, t, None), c(x, t, None))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("refine", [0, 3])
@pytest.mark.parametrize("neighbours", [0, 1])
def test_network_contracts(causal: bool, refine: int, neighbours: int) -> None:
    for _doc, check in network_contracts(spec(causal=causal, refine=refine, neighbours=neighbours)).values():
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
    with pytest.raises(ValueError, match="neighbours"):
        spec(neighbours=2)  # a 2 x 2 patch grid has no neighbours two steps away


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
