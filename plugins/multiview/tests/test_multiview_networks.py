"""The multi-view networks (transformer and U-Net): shapes, view-permutation equivariance, per-view time, cross-view
attention, cameras, classes, the network contracts, refusals."""

from __future__ import annotations

import pytest
import torch
from diffusekit import ClassLabel, ConditionList, ConfigError, Embedding, PartSpec, ShapeError
from diffusekit.recipe import ComponentSpec
from diffusekit.testing.contracts import network_contracts
from diffusekit.testing.reference import TrigonometricSchedule
from diffusekit.training import widen_into
from diffusekit_multiview import cameras
from diffusekit_multiview.networks import MultiViewTransformer, MultiViewUNet, reference_channels
from hypothesis import given, settings
from hypothesis import strategies as st

SIZE = 8
CLASSES = 3
MODES = ["extrinsics", "plucker", "none"]
examples = settings(max_examples=15, deadline=None, derandomize=True)


ARCHS = ["transformer", "unet"]


def spec(arch: str = "transformer", **kw) -> MultiViewTransformer | MultiViewUNet:
    if arch == "unet":
        params = dict(size=SIZE, channels=8, channel_mult=(1, 2), attention_levels=(1,), num_res_blocks=1, heads=2)
        return MultiViewUNet(**{**params, "views": 3, "num_classes": CLASSES, **kw})
    params = dict(size=SIZE, patch=4, d_model=16, layers=2, heads=2, views=3, refine=4, num_classes=CLASSES)
    return MultiViewTransformer(**{**params, **kw})


def model(seed: int = 0, dtype: torch.dtype = torch.float32, arch: str = "transformer", **kw) -> torch.nn.Module:
    """A built module whose zero-initialised gates and output are perturbed (else it outputs 0)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = spec(arch, **kw).build().eval().to(dtype)
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return module


def scene(batch: int, views: int, seed: int, dtype: torch.dtype = torch.float32):
    """Views, per-view times, cameras ``(B, V, 4, 4)`` and class labels of a random batch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, views, 3, SIZE, SIZE, generator=g, dtype=dtype)
    t = torch.rand(batch, views, generator=g, dtype=dtype)
    extrinsics = cameras.random_cameras(batch * views, g, dtype=dtype).reshape(batch, views, 4, 4)
    labels = torch.randint(0, CLASSES, (batch,), generator=g)
    return x, t, extrinsics, labels


def condition(extrinsics: torch.Tensor, labels: torch.Tensor | None = None):
    cams = Embedding(extrinsics.flatten(1))
    return cams if labels is None else ConditionList((cams, ClassLabel(labels, num_classes=CLASSES)))


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return torch.allclose(a, b, rtol=tol, atol=tol)


@examples
@given(
    st.sampled_from(ARCHS),
    st.integers(1, 3),
    st.integers(1, 5),
    st.sampled_from(MODES),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_output_has_the_input_shape(
    arch: str, batch: int, views: int, camera: str, cross_view: bool, seed: int
) -> None:
    x, t, extrinsics, labels = scene(batch, views, seed)
    with torch.no_grad():
        out = model(arch=arch, camera=camera, cross_view=cross_view)(x, t, condition(extrinsics, labels))
    assert out.shape == x.shape and out.dtype == x.dtype and bool(torch.isfinite(out).all())
    assert out.abs().max() > 1e-3  # randomised weights: not the zero output of the untrained network


@pytest.mark.parametrize("camera", MODES)
@pytest.mark.parametrize("refine", [0, 4])
def test_untrained_output_is_zero(camera: str, refine: int) -> None:
    x, t, extrinsics, labels = scene(2, 3, 0)
    out = spec(camera=camera, refine=refine).build()(x, t, condition(extrinsics, labels))
    assert torch.equal(out, torch.zeros_like(x))
    out = spec("unet", camera=camera).build()(x, t, condition(extrinsics, labels))
    assert torch.equal(out, torch.zeros_like(x))


@examples
@given(
    st.sampled_from(ARCHS),
    st.integers(1, 2),
    st.integers(2, 5),
    st.sampled_from(MODES),
    st.booleans(),
    st.integers(0, 2**16),
    st.data(),
)
def test_permuting_views_with_their_cameras_permutes_the_output(
    arch: str, batch: int, views: int, camera: str, cross_view: bool, seed: int, data
) -> None:
    perm = torch.tensor(data.draw(st.permutations(range(views)), label="permutation"))
    x, t, extrinsics, labels = scene(batch, views, seed, torch.float64)  # float64: sums in another order agree
    m = model(seed, torch.float64, arch, camera=camera, cross_view=cross_view)
    with torch.no_grad():
        out = m(x, t, condition(extrinsics, labels))
        permuted = m(x[:, perm], t[:, perm], condition(extrinsics[:, perm], labels))
    assert torch.allclose(permuted, out[:, perm], rtol=1e-9, atol=1e-10)


@examples
@given(st.sampled_from(ARCHS), st.integers(1, 3), st.integers(1, 5), st.floats(0.0, 1.0), st.integers(0, 2**16))
def test_equal_per_view_time_is_the_scalar_time(arch: str, batch: int, views: int, t: float, seed: int) -> None:
    x, _, extrinsics, labels = scene(batch, views, seed)
    m, cond = model(seed, arch=arch), condition(extrinsics, labels)
    with torch.no_grad():
        scalar = m(x, torch.tensor(t, dtype=torch.float64), cond)
        for shape in [(batch,), (batch, views), (batch, views, 1, 1, 1), (1, views), (batch, 1)]:
            out = m(x, torch.full(shape, t, dtype=torch.float64), cond)
            assert torch.equal(out, scalar), f"noise level of shape {shape} filled with {t}"


@examples
@given(st.sampled_from(ARCHS), st.integers(2, 5), st.sampled_from(MODES), st.integers(0, 2**16), st.data())
def test_views_interact_only_through_cross_view_attention(arch: str, views: int, camera: str, seed: int, data) -> None:
    j = data.draw(st.integers(0, views - 1), label="perturbed view")
    x, t, extrinsics, labels = scene(2, views, seed)
    y, s = x.clone(), t.clone()
    y[:, j] += torch.randn_like(y[:, j])
    s[:, j] = torch.rand_like(s[:, j])
    others = [i for i in range(views) if i != j]
    cond = condition(extrinsics, labels)
    for cross_view in (False, True):
        m = model(seed, arch=arch, camera=camera, cross_view=cross_view)
        with torch.no_grad():
            a, b = m(x, t, cond), m(y, s, cond)
        assert not close(a[:, j], b[:, j])
        if cross_view:
            assert not close(a[:, others], b[:, others])
        else:
            assert torch.allclose(a[:, others], b[:, others], rtol=0, atol=1e-6)


def held(t: torch.Tensor, data, label: str = "held views") -> torch.Tensor:
    """``t`` with a drawn subset of each sample's views at t = 0 (given views)."""
    mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=t.numel(), max_size=t.numel()), label=label))
    return torch.where(mask.reshape(t.shape), torch.zeros_like(t), t)


@examples
@given(st.integers(1, 3), st.integers(1, 5), st.sampled_from(MODES), st.integers(0, 2**16), st.data())
def test_reference_channels_are_the_mean_clean_view_and_a_flag(batch: int, views: int, camera: str, seed: int, data):
    x, t, _, _ = scene(batch, views, seed, torch.float64)
    t = held(t, data)
    out = reference_channels(x, t == 0)
    assert out.shape == (batch, views, 4, SIZE, SIZE)
    for b in range(batch):
        clean = [x[b, i] for i in range(views) if t[b, i] == 0]
        want = torch.zeros(3, SIZE, SIZE, dtype=x.dtype) if not clean else sum(clean) / len(clean)
        for i in range(views):
            assert torch.allclose(out[b, i, :3], want, rtol=1e-12, atol=1e-12)
            assert torch.equal(out[b, i, 3], torch.full((SIZE, SIZE), float(bool(clean)), dtype=x.dtype))


@examples
@given(st.integers(1, 2), st.integers(2, 5), st.sampled_from(MODES), st.booleans(), st.integers(0, 2**16), st.data())
def test_the_reference_path_keeps_view_permutation_equivariance(
    batch: int, views: int, camera: str, cross_view: bool, seed: int, data
) -> None:
    perm = torch.tensor(data.draw(st.permutations(range(views)), label="permutation"))
    x, t, extrinsics, labels = scene(batch, views, seed, torch.float64)
    t = held(t, data)
    m = model(seed, torch.float64, "unet", camera=camera, cross_view=cross_view, reference=True)
    with torch.no_grad():
        out = m(x, t, condition(extrinsics, labels))
        permuted = m(x[:, perm], t[:, perm], condition(extrinsics[:, perm], labels))
    assert torch.allclose(permuted, out[:, perm], rtol=1e-9, atol=1e-10)


@examples
@given(st.integers(2, 5), st.sampled_from(MODES), st.integers(0, 2**16), st.data())
def test_without_cross_view_attention_the_reference_path_carries_only_clean_views(
    views: int, camera: str, seed: int, data
) -> None:
    j = data.draw(st.integers(0, views - 1), label="perturbed view")
    x, t, extrinsics, labels = scene(2, views, seed)
    others = [i for i in range(views) if i != j]
    y = x.clone()
    y[:, j] += torch.randn_like(y[:, j])
    m, cond = model(seed, arch="unet", camera=camera, cross_view=False, reference=True), condition(extrinsics, labels)
    given = t.clone()
    given[:, j] = 0.0  # view j given: the others read it
    with torch.no_grad():
        assert not close(m(x, given, cond)[:, others], m(y, given, cond)[:, others])
        assert torch.allclose(m(x, t, cond)[:, others], m(y, t, cond)[:, others], rtol=0, atol=1e-6)  # j noisy


@examples
@given(st.integers(1, 3), st.integers(1, 4), st.sampled_from(MODES), st.integers(0, 2**16), st.data())
def test_turning_the_reference_path_on_starts_from_the_same_function(
    batch: int, views: int, camera: str, seed: int, data
) -> None:
    x, t, extrinsics, labels = scene(batch, views, seed)
    t, cond = held(t, data), condition(extrinsics, labels)
    before = model(seed, arch="unet", camera=camera)
    after = spec("unet", camera=camera, reference=True).build().eval()
    notes = widen_into(after, before.state_dict(), "stage 1")
    assert notes and all("conv_reference" in note and "new" in note for note in notes)
    with torch.no_grad():
        assert torch.equal(after(x, t, cond), before(x, t, cond))


@examples
@given(
    st.sampled_from(ARCHS), st.integers(1, 5), st.sampled_from(MODES), st.booleans(), st.integers(0, 2**16), st.data()
)
def test_a_views_camera_changes_its_output_unless_cameras_are_ignored(
    arch: str, views: int, camera: str, cross_view: bool, seed: int, data
) -> None:
    j = data.draw(st.integers(0, views - 1), label="moved camera")
    x, t, extrinsics, labels = scene(2, views, seed)
    moved = extrinsics.clone()
    moved[:, j] = cameras.random_cameras(2, torch.Generator().manual_seed(seed + 1))
    m = model(seed, arch=arch, camera=camera, cross_view=cross_view)
    with torch.no_grad():
        a, b = m(x, t, condition(extrinsics, labels)), m(x, t, condition(moved, labels))
    if camera == "none":
        assert torch.equal(a, b)
    else:
        assert not close(a[:, j], b[:, j])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("camera", MODES)
def test_null_cameras_differ_from_real_ones(camera: str, arch: str) -> None:
    x, t, extrinsics, labels = scene(2, 3, 0)
    m, cams = model(arch=arch, camera=camera), Embedding(extrinsics.flatten(1))
    with torch.no_grad():
        real, null, none = m(x, t, cams), m(x, t, cams.null_like()), m(x, t, None)
    assert torch.equal(null, none)  # no condition is the null condition
    assert torch.equal(real, null) == (camera == "none")


@examples
@given(st.sampled_from(ARCHS), st.integers(1, 3), st.integers(1, 4), st.sampled_from(MODES), st.integers(0, 2**16))
def test_the_null_label_differs_from_a_real_one(arch: str, batch: int, views: int, camera: str, seed: int) -> None:
    x, t, extrinsics, labels = scene(batch, views, seed)
    m = model(seed, arch=arch, camera=camera)
    real = condition(extrinsics, labels)
    with torch.no_grad():
        a = m(x, t, real)
        b = m(x, t, ConditionList((real.items[0], real.items[1].null_like())))
        alone = m(x, t, ClassLabel(labels, num_classes=CLASSES))  # labels without cameras
        unlabelled = m(x, t, real.items[0])  # cameras without labels: the null label
    for i in range(batch):
        assert not close(a[i], b[i])
    assert torch.equal(unlabelled, b)
    assert torch.equal(alone, a) == (camera == "none")


def test_a_one_part_dict_is_denoised_as_the_bare_part() -> None:
    """The denoiser passes a part named ``views`` as a dict, with its noise level."""
    x, t, extrinsics, labels = scene(2, 3, 0)
    m, cond = model(), condition(extrinsics, labels)
    with torch.no_grad():
        out = m({"views": x}, {"views": t}, cond)
        assert list(out) == ["views"] and torch.equal(out["views"], m(x, t, cond))


def test_deterministic_given_the_seed() -> None:
    x, t, extrinsics, labels = scene(2, 3, 0)
    a, b, c = model(seed=5), model(seed=5), model(seed=6)
    cond = condition(extrinsics, labels)
    with torch.no_grad():
        assert torch.equal(a(x, t, cond), b(x, t, cond))
        assert not torch.equal(a(x, t, cond), c(x, t, cond))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"camera": "plucker", "cross_view": False, "refine": 0, "num_classes": 0},
        {"camera": "none", "views": 1},
        {"arch": "unet"},
        {"arch": "unet", "camera": "extrinsics", "cross_view": False, "num_classes": 0},
        {"arch": "unet", "reference": True},
    ],
)
def test_network_contracts(kw: dict) -> None:
    for _doc, check in network_contracts(spec(**kw)).values():
        check()


def refused(error: type[Exception], match: str, fn, *args) -> None:
    """``fn(*args)`` raises ``error`` with a one-line message matching ``match``."""
    with pytest.raises(error, match=match) as info:
        fn(*args)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("arch", ARCHS)
def test_refusals(arch: str) -> None:
    m = model(arch=arch)
    x, t, extrinsics, labels = scene(2, 3, 0)
    cond = condition(extrinsics, labels)
    refused(ShapeError, "views", m, x[:, :, :, :4], t, cond)
    refused(ShapeError, "views", m, x[:, 0], t, cond)
    refused(ShapeError, "noise level", m, x, torch.rand(2, 5), cond)
    refused(ShapeError, "extrinsics", m, x[:, :2], t[:, :2], cond)  # cameras of 3 views for 2
    refused(ShapeError, "extrinsics", m, x[:1], t[:1], cond)  # cameras of 2 samples for 1
    wrong = ConditionList((cond.items[0], ClassLabel(labels, num_classes=CLASSES + 1)))
    refused(ShapeError, "classes", m, x, t, wrong)
    refused(ShapeError, "num_classes = 0", model(arch=arch, num_classes=0), x, t, cond)
    refused(ShapeError, "more than one", m, x, t, ConditionList((cond.items[0], cond.items[0])))
    refused(ShapeError, "one part", m, {"views": x, "x": x}, t, cond)
    for bad in [dict(size=10), dict(d_model=18, heads=4), dict(d_model=15, heads=3), dict(camera="rays")]:
        with pytest.raises(ValueError):
            spec(**bad)
    for bad in [dict(size=10, channel_mult=(1, 2, 2)), dict(channels=12), dict(heads=3), dict(camera="rays")]:
        with pytest.raises(ValueError):
            spec("unet", **bad)


def part(shape, time_dims: int = 2, name: str = "views") -> dict[str, PartSpec]:
    return {name: PartSpec(shape, ComponentSpec("trig"), ComponentSpec("eps"), time_dims=time_dims)}


@pytest.mark.parametrize("arch", ARCHS)
def test_check_parts(arch: str) -> None:
    spec(arch).check_parts(part((6, 3, 8, 8)), {"views": TrigonometricSchedule()})
    spec(arch).check_parts(part((1, 3, 8, 8), time_dims=1, name="x"), {"x": TrigonometricSchedule()})
    two = {**part((6, 3, 8, 8)), **part((6, 3, 8, 8), name="x")}
    for bad, where in [
        (part((6, 3, 8, 8), name="images"), "parts"),
        (two, "parts"),
        (part((6, 1, 8, 8)), "shape"),
        (part((6, 3, 16, 16)), "shape"),
        (part((3, 8, 8)), "shape"),
        (part((6, 3, 8, 8), time_dims=3), "time_dims"),
    ]:
        refused(ConfigError, where, spec(arch).check_parts, bad, {name: TrigonometricSchedule() for name in bad})
    refused(ConfigError, "schedule", spec(arch).check_parts, part((6, 3, 8, 8)), {"views": Categorical()})


class Categorical:
    """A stand-in for a categorical schedule (only its kind is read)."""

    kind = "categorical"
