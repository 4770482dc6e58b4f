"""The core training loop: exact resume, EMA, metrics, per-part time and loss weights."""

import json

import attrs
import pytest
import torch
from diffusekit import ClassLabel, Data, Denoiser, Pipeline, build, load_checkpoint, train
from diffusekit.errors import CheckpointError, ConfigError, ShapeError
from diffusekit.recipe import (
    ComponentSpec,
    PartSpec,
    Recipe,
    TrainConfig,
    dumps_json,
    dumps_toml,
    loads_json,
    loads_toml,
)
from diffusekit.testing.oracle import GaussianMixture
from diffusekit.training import (
    T_MIN,
    batch_losses,
    draw_batch,
    draw_rows,
    plan_times,
    sample_times,
    size_buckets,
    stage_file,
    stages,
    widen_into,
)
from diffusekit_gaussian import DDIM, EpsilonPrediction, KarrasGrid, VPCosine
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn


def _recipe(**train):
    cfg = dict(steps=12, batch_size=32, lr=3e-3, ema_decay=0.9, checkpoint_every=5, log_every=2, warmup_steps=3)
    cfg.update(train)
    return Recipe(
        parts={"x": PartSpec((2,), ComponentSpec("gaussian:vp_cosine"), ComponentSpec("gaussian:eps"))},
        network=ComponentSpec("gaussian:mlp", {"dim": 2, "hidden": 32, "depth": 2, "num_classes": 3}),
        sampler=ComponentSpec("gaussian:ddim"),
        grid=ComponentSpec("gaussian:karras", {"steps": 8}),
        seed=5,
        train=TrainConfig(**cfg),
    )


def _data(n=256):
    mix = GaussianMixture.random((2,), 3, generator=torch.Generator().manual_seed(0))
    labels = torch.multinomial(mix.weights, n, replacement=True, generator=torch.Generator().manual_seed(1))
    x = mix.sample(n, torch.Generator().manual_seed(2), labels=labels).float()
    return Data({"x": x}, ClassLabel(labels, num_classes=3))


def _state(path):
    c = load_checkpoint(path)
    return {k: v for k, v in c.tensors.items()}, c.step


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    data = _data()
    straight = tmp_path / "straight.safetensors"
    train(build(_recipe()), data, out=straight, progress=False)
    split = tmp_path / "split.safetensors"
    train(build(_recipe()), data, out=split, steps=7, progress=False)
    assert load_checkpoint(split).step == 7
    assert load_checkpoint(split).recipe.train.steps == 7  # the run's length, not the recipe's 12
    train(build(_recipe()), data, out=split, resume=True, progress=False)
    assert load_checkpoint(split).recipe.train.steps == 12
    a, step_a = _state(straight)
    b, step_b = _state(split)
    assert step_a == step_b == 12
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = [json.loads(line) for line in (tmp_path / "split.metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6, 7, 8, 10, 12]


def test_resume_refuses_another_recipe(tmp_path):
    import pytest
    from diffusekit import CheckpointError

    out = tmp_path / "m.safetensors"
    train(build(_recipe()), _data(), out=out, steps=2, progress=False)
    with pytest.raises(CheckpointError, match=r"different recipe \(train.lr differs\)"):
        train(build(_recipe(lr=0.1)), _data(), out=out, resume=True, progress=False)


def test_resume_accepts_other_bookkeeping_and_sampling_settings(tmp_path):
    data = _data()
    straight = tmp_path / "straight.safetensors"
    train(build(_recipe()), data, out=straight, progress=False)
    split = tmp_path / "split.safetensors"
    train(build(_recipe(steps=7)), data, out=split, progress=False)
    later = attrs.evolve(
        _recipe(steps=12, checkpoint_every=3, log_every=1, keep_checkpoints=1),
        sampler=ComponentSpec("gaussian:heun"),
        grid=ComponentSpec("gaussian:karras", {"steps": 3}),
    )
    train(build(later), data, out=split, resume=True, progress=False)
    a, b = _state(straight)[0], _state(split)[0]
    assert all(torch.equal(a[key], b[key]) for key in a)  # the same computation: only what is written differs
    assert load_checkpoint(split).recipe == later


def test_training_lowers_the_loss_and_the_pipeline_samples_with_ema_weights():
    pipeline = build(_recipe(steps=300, ema_decay=0.5, log_every=1))
    records = []
    train(pipeline, _data(1024), progress=False, callback=records.append)
    first = sum(r["loss"] for r in records[:20]) / 20
    last = sum(r["loss"] for r in records[-20:]) / 20
    assert last < 0.8 * first, (first, last)
    assert records[-1]["lr"] == 3e-3 and all(r["grad_norm"] >= 0 for r in records)
    samples = pipeline.sample(30, condition=ClassLabel(torch.arange(30) % 3, num_classes=3))
    assert samples.shape == (30, 2) and torch.isfinite(samples).all()


class _RecordingNet(nn.Module):
    """A two-part network that records the noise-level shapes it is given."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, x, noise, condition):
        self.seen.append({k: tuple(v.shape) for k, v in noise.items()})
        return {k: self.scale * v for k, v in x.items()}


def test_time_dims_give_per_frame_times_and_loss_weights_apply():
    net = _RecordingNet()
    schedules = {"video": VPCosine(), "action": VPCosine()}
    params = {"video": EpsilonPrediction(), "action": EpsilonPrediction()}
    recipe = Recipe(
        parts={
            "video": PartSpec((4, 3), ComponentSpec("gaussian:vp_cosine"), ComponentSpec("gaussian:eps"), 1.0, 2),
            "action": PartSpec((2,), ComponentSpec("gaussian:vp_cosine"), ComponentSpec("gaussian:eps"), 0.0, 1),
        },
        network=ComponentSpec("test"),
        sampler=ComponentSpec("gaussian:ddim"),
        grid=ComponentSpec("gaussian:karras"),
        train=TrainConfig(steps=3, batch_size=8, log_every=1, condition_dropout=0.0),
    )
    pipeline = Pipeline(recipe, Denoiser(net, schedules, params), DDIM(), KarrasGrid())
    data = Data({"video": torch.randn(16, 4, 3), "action": torch.randn(16, 2)})
    records = []
    train(pipeline, data, progress=False, callback=records.append)
    assert net.seen[0] == {"video": (8, 4), "action": (8,)}  # one time per frame, one per sample
    # the action part has weight 0: the total loss is the video loss alone
    assert all(abs(r["loss"] - r["loss.video"]) < 1e-6 for r in records)
    assert all(r["loss.action"] > 0 for r in records)


def test_network_dropout_is_reproducible():
    recipe = _recipe(steps=4)
    recipe = attrs.evolve(
        recipe,
        network=ComponentSpec(
            "gaussian:unet",
            {
                "channels": 8,
                "channel_mult": [1],
                "num_res_blocks": 1,
                "attention_levels": [],
                "dropout": 0.5,
                "num_classes": 3,
            },
        ),
        parts={"x": PartSpec((1, 4, 4), ComponentSpec("gaussian:vp_cosine"), ComponentSpec("gaussian:v"))},
    )
    data = Data({"x": torch.randn(32, 1, 4, 4)}, ClassLabel(torch.arange(32) % 3, num_classes=3))
    a, b = build(recipe), build(recipe)
    train(a, data, progress=False)
    train(b, data, progress=False)
    for (k, va), vb in zip(a.network.state_dict().items(), b.network.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


# --- training time plans: shared times (FVDM) and held elements (given frames, tokens) -----------


_shapes = st.tuples(st.integers(1, 6), st.integers(1, 7)) | st.tuples(
    st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)
)
_rates = st.floats(0.0, 1.0)


@settings(max_examples=60, deadline=None)
@given(shape=_shapes, seed=st.integers(0, 2**31))
def test_without_shared_or_held_times_each_element_draws_its_own(shape, seed):
    cfg = TrainConfig()
    t, held = plan_times(cfg, shape, torch.Generator().manual_seed(seed))
    assert held is None
    assert torch.equal(t, sample_times(cfg, shape, torch.Generator().manual_seed(seed)))


@settings(max_examples=60, deadline=None)
@given(shape=_shapes, shared=_rates, hold=_rates, seed=st.integers(0, 2**31))
def test_planned_times_are_shared_or_held_as_configured(shape, shared, hold, seed):
    t, held = plan_times(TrainConfig(shared_time=shared, hold=hold), shape, torch.Generator().manual_seed(seed))
    assert t.shape == shape
    held = torch.zeros(shape, dtype=torch.bool) if held is None else held
    assert bool((t[held] == 0).all()) and bool((t[~held] >= T_MIN).all()) and bool((t <= 1).all())
    rows = held.flatten(1)
    assert not bool(rows.all(1).any())  # never every element held
    if shared == 1.0 and len(shape) > 1:  # every sample one time, where not held
        flat = t.flatten(1)
        free = ~rows
        assert all(flat[i][free[i]].unique().numel() <= 1 for i in range(shape[0]))
    if hold == 0.0:
        assert not held.any()


def test_always_shared_times_and_always_held_elements():
    g = torch.Generator().manual_seed(0)
    t, held = plan_times(TrainConfig(shared_time=1.0), (500, 5), g)
    assert held is None and torch.equal(t, t[:, :1].expand(-1, 5))
    t, held = plan_times(TrainConfig(hold=1.0), (2000, 4), g)
    count = held.sum(1)
    # a uniform rate r: P(k of 4 held) = 1/5 for every k; the rows with all 4 hold only their first
    assert bool((count < 4).all()) and 0.15 < (count == 0).float().mean() < 0.25
    assert 0.3 < (count == 1).float().mean() < 0.5 and bool(held[count == 1][:, 0].float().mean() > 0.5)


def test_held_elements_are_the_data_and_out_of_the_loss():
    """An exact oracle: the loss is each sample's mean squared error over its elements that are not held."""

    class Half(nn.Module):
        def forward(self, x, noise, condition):
            return 0.5 * x

    net = Half()
    recipe = Recipe(
        parts={"x": PartSpec((5, 3), ComponentSpec("gaussian:vp_cosine"), ComponentSpec("gaussian:eps"), 1.0, 2)},
        network=ComponentSpec("test"),
        sampler=ComponentSpec("gaussian:ddim"),
        grid=ComponentSpec("gaussian:karras"),
        train=TrainConfig(hold=1.0, condition_dropout=0.0),
    )
    pipeline = Pipeline(recipe, Denoiser(net, {"x": VPCosine()}, {"x": EpsilonPrediction()}), DDIM(), KarrasGrid())
    batch = Data({"x": torch.randn(64, 5, 3)})
    drawn = draw_batch(pipeline, batch, torch.Generator().manual_seed(3))
    held = drawn.held["x"]
    assert held.any() and (~held).any()
    x_t = drawn.corrupted["x"].x_t
    assert torch.equal(x_t[held], batch.parts["x"][held]) and bool((drawn.times["x"][held] == 0).all())
    loss = batch_losses(pipeline.denoiser, batch, drawn)["x"]
    error = (0.5 * x_t - drawn.corrupted["x"].noise).square().mean(-1)  # (64, 5): per frame
    free = (~held).float()
    want = ((error * free).sum(1) / free.sum(1)).mean()
    assert torch.allclose(loss, want.to(loss.dtype), rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(shape=_shapes, shared=_rates, hold=_rates, seed=st.integers(0, 2**31), data=st.data())
def test_data_known_elements_are_always_held_and_the_random_hold_takes_only_free_ones(shape, shared, hold, seed, data):
    dims = data.draw(st.integers(1, len(shape)), label="known dims")
    g = torch.Generator().manual_seed(seed)
    known = torch.rand(shape[:dims], generator=g) < data.draw(_rates, label="known rate")
    cfg = TrainConfig(shared_time=shared, hold=hold)
    t, held = plan_times(cfg, shape, torch.Generator().manual_seed(seed), known)
    full = known.reshape(*known.shape, *([1] * (len(shape) - dims))).expand(shape)
    assert held is not None and bool(held[full].all()) and bool((t[held] == 0).all())
    assert bool((t[~held] >= T_MIN).all())
    if len(shape) > 1:
        free, randomly = (~full).flatten(1), (held & ~full).flatten(1)
        # never every free element of a sample held at random, nor the only free one
        assert not bool((randomly.any(1) & (randomly == free).all(1)).any())
    if hold == 0.0 or len(shape) < 2:
        assert torch.equal(held, full)


@settings(max_examples=30, deadline=None)
@given(shape=_shapes, shared=_rates, hold=_rates, seed=st.integers(0, 2**31))
def test_no_known_element_plans_what_no_known_mask_plans(shape, shared, hold, seed):
    cfg = TrainConfig(shared_time=shared, hold=hold)
    t, held = plan_times(cfg, shape, torch.Generator().manual_seed(seed))
    u, kept = plan_times(cfg, shape, torch.Generator().manual_seed(seed), torch.zeros(shape[:1], dtype=torch.bool))
    assert torch.equal(t, u)
    assert torch.equal(torch.zeros(shape, dtype=torch.bool) if held is None else held, kept)


def _half_pipeline(time_dims: int, **train) -> Pipeline:
    class Half(nn.Module):
        def forward(self, x, noise, condition):
            return 0.5 * x

    recipe = Recipe(
        parts={
            "x": PartSpec((5, 3), ComponentSpec("gaussian:vp_cosine"), ComponentSpec("gaussian:eps"), 1.0, time_dims)
        },
        network=ComponentSpec("test"),
        sampler=ComponentSpec("gaussian:ddim"),
        grid=ComponentSpec("gaussian:karras"),
        train=TrainConfig(condition_dropout=0.0, **train),
    )
    return Pipeline(recipe, Denoiser(Half(), {"x": VPCosine()}, {"x": EpsilonPrediction()}), DDIM(), KarrasGrid())


def test_padding_known_in_the_data_is_held_and_out_of_the_loss():
    """An exact oracle: with padding marked known (rows of different lengths, one all padding),
    each sample's loss is its mean squared error over its real elements; an all-padding sample adds 0."""
    pipeline = _half_pipeline(2, shared_time=1.0)
    lengths = torch.tensor([5, 3, 1, 0] * 8)
    padding = torch.arange(5)[None, :] >= lengths[:, None]
    batch = Data({"x": torch.randn(32, 5, 3).masked_fill(padding[..., None], 0.0)}, known={"x": padding})
    drawn = draw_batch(pipeline, batch, torch.Generator().manual_seed(3))
    assert torch.equal(drawn.held["x"], padding)
    x_t, times = drawn.corrupted["x"].x_t, drawn.times["x"]
    assert torch.equal(x_t[padding], batch.parts["x"][padding]) and bool((times[padding] == 0).all())
    real = ~padding
    assert all(times[i][real[i]].unique().numel() <= 1 for i in range(32))  # one time per molecule
    loss = batch_losses(pipeline.denoiser, batch, drawn)["x"]
    error = (0.5 * x_t - drawn.corrupted["x"].noise).square().mean(-1)
    per_sample = (error * real).sum(1) / real.sum(1).clamp(min=1)
    assert torch.allclose(loss, per_sample.mean().to(loss.dtype), rtol=1e-6)
    halves = [
        batch_losses(pipeline.denoiser, batch.take(torch.arange(a, a + 16)), drawn.take(slice(a, a + 16)))
        for a in (0, 16)
    ]
    assert torch.allclose(loss, 0.5 * (halves[0]["x"] + halves[1]["x"]), rtol=1e-6)  # micro-batches sum to it


def test_known_masks_are_checked():
    x = torch.randn(4, 5, 3)
    with pytest.raises(ShapeError, match="part 'y'"):
        Data({"x": x}, known={"y": torch.zeros(4, dtype=torch.bool)})
    with pytest.raises(ShapeError, match="booleans shaped like"):
        Data({"x": x}, known={"x": torch.zeros(4, 6, dtype=torch.bool)})
    with pytest.raises(ShapeError, match="booleans shaped like"):
        Data({"x": x}, known={"x": torch.zeros(4, 5)})
    data = Data({"x": x}, known={"x": torch.zeros(4, 5, dtype=torch.bool)})
    assert torch.equal(data.take(torch.tensor([2, 0])).known["x"], torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ShapeError, match="one time per 1 leading"):
        draw_batch(_half_pipeline(1), data, torch.Generator().manual_seed(0))


def _two_part_pipeline(**train) -> Pipeline:
    class Half(nn.Module):
        def forward(self, x, noise, condition):
            return {name: 0.5 * value for name, value in x.items()}

    part = PartSpec((5, 3), ComponentSpec("gaussian:vp_cosine"), ComponentSpec("gaussian:eps"), 1.0, 2)
    recipe = Recipe(
        parts={"pos": part, "atoms": attrs.evolve(part, shape=(5, 2), time_dims=1)},
        network=ComponentSpec("test"),
        sampler=ComponentSpec("gaussian:ddim"),
        grid=ComponentSpec("gaussian:karras"),
        train=TrainConfig(condition_dropout=0.0, **train),
    )
    schedules, params = {n: VPCosine() for n in recipe.parts}, {n: EpsilonPrediction() for n in recipe.parts}
    return Pipeline(recipe, Denoiser(Half(), schedules, params), DDIM(), KarrasGrid())


@settings(max_examples=20, deadline=None)
@given(shared=_rates, seed=st.integers(0, 2**31))
def test_parts_share_one_time_per_sample_as_configured(shared, seed):
    pipeline = _two_part_pipeline(shared_parts=shared, hold=0.5)
    padding = torch.arange(5)[None, :] >= torch.randint(1, 6, (64, 1), generator=torch.Generator().manual_seed(seed))
    batch = Data({"pos": torch.randn(64, 5, 3), "atoms": torch.randn(64, 5, 2)}, known={"pos": padding})
    drawn = draw_batch(pipeline, batch, torch.Generator().manual_seed(seed))
    pos, atoms, held = drawn.times["pos"], drawn.times["atoms"], drawn.held["pos"]
    assert bool((pos[held] == 0).all()) and bool(held[padding].all())
    free = ~held
    tied = torch.tensor([bool((pos[i][free[i]] == atoms[i]).all()) for i in range(64)])
    if shared == 1.0:
        assert bool(tied.all())
    if shared == 0.0:  # independent uniform draws: equal only by chance (probability 0)
        assert not bool(tied.any())


# --- batches by size ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.integers(1, 60), st.integers(1, 8), st.integers(1, 9), st.integers(0, 2**16))
def test_bucketed_batches_hold_examples_of_one_bucket(n, buckets, batch, seed):
    sizes = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))
    data = Data({"x": torch.zeros(n, 2)}, sizes=sizes)
    groups = size_buckets(data, buckets)
    assert sorted(torch.cat(groups).tolist()) == list(range(n))  # every example in exactly one bucket
    assert max(map(len, groups)) - min(map(len, groups)) <= 1
    for low, high in zip(groups, groups[1:], strict=False):
        assert int(sizes[low].max()) <= int(sizes[high].min())  # buckets follow the sizes
    rows = draw_rows(n, batch, torch.Generator().manual_seed(seed), groups)
    assert rows.shape == (batch,) and any(set(rows.tolist()) <= set(g.tolist()) for g in groups)


def test_bucketed_batches_draw_every_example_equally_often():
    """Buckets of unequal count (10 examples into 3 buckets: 4, 3, 3) are drawn in proportion to
    their count, so each example's share of 30,000 draws is 1/10 (binomial sd 0.0017)."""
    data = Data({"x": torch.zeros(10, 2)}, sizes=torch.arange(10).flip(0))
    groups = size_buckets(data, 3)
    g = torch.Generator().manual_seed(0)
    rows = torch.cat([draw_rows(10, 10, g, groups) for _ in range(3000)])
    share = torch.bincount(rows, minlength=10).double() / len(rows)
    assert torch.allclose(share, torch.full((10,), 0.1, dtype=torch.float64), atol=0.008)


def test_without_buckets_batches_are_the_plain_uniform_draw():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(draw_rows(50, 16, g1), torch.randint(50, (16,), generator=g2))
    assert size_buckets(Data({"x": torch.zeros(4, 2)}), 4) is None


def test_buckets_train_and_need_sizes():
    data = _data()
    sized = attrs.evolve(data, sizes=data.parts["x"][:, 0])
    result = train(build(_recipe(buckets=4, steps=3)), sized, progress=False)
    assert result.step == 3
    with pytest.raises(ConfigError, match="train.buckets"):
        train(build(_recipe(buckets=4, steps=3)), data, progress=False)
    with pytest.raises(ShapeError, match="sizes"):
        Data({"x": torch.zeros(4, 2)}, sizes=torch.zeros(3))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_widened_inputs_start_out_computing_what_the_checkpoint_did(old, new, seed):
    g = torch.Generator().manual_seed(seed)
    small, wide = nn.Linear(old, 3), nn.Linear(old + new, 3)
    notes = widen_into(wide, small.state_dict(), "ck")
    assert notes == [f"weight: {old} -> {old + new} input features, the new ones start at zero"]
    x = torch.randn(5, old + new, generator=g)
    torch.testing.assert_close(wide(x), small(x[:, :old]), rtol=0, atol=1e-6)


def test_widening_refuses_other_shape_changes_and_unknown_weights():
    with pytest.raises(CheckpointError, match="only a layer's input features may grow"):
        widen_into(nn.Linear(3, 4), nn.Linear(3, 5).state_dict(), "ck")
    with pytest.raises(CheckpointError, match="only a layer's input features may grow"):
        widen_into(nn.Linear(3, 4), nn.Linear(5, 4).state_dict(), "ck")
    with pytest.raises(CheckpointError, match="extra is not a weight of this network"):
        widen_into(nn.Linear(3, 4), {**nn.Linear(3, 4).state_dict(), "extra": torch.zeros(1)}, "ck")
    assert widen_into(nn.Linear(3, 4), {"weight": torch.zeros(4, 3)}, "ck") == ["bias: new, freshly initialised"]


def test_a_run_started_from_a_checkpoint_starts_from_its_sampling_weights(tmp_path):
    data = _data()
    first = tmp_path / "first.safetensors"
    train(build(_recipe()), data, out=first, progress=False)
    # a learning rate so small that one Adam step leaves the weights where they started
    tuned = tmp_path / "tuned.safetensors"
    train(build(_recipe(lr=1e-12, warmup_steps=0)), data, out=tuned, init=first, steps=1, progress=False)
    start, after = load_checkpoint(first), load_checkpoint(tuned)
    assert after.metadata["diffusekit.init"] == "first.safetensors (step 12)"
    for name, value in start.weights().items():
        torch.testing.assert_close(after.group("model")[name], value, rtol=0, atol=1e-9)
    with pytest.raises(ConfigError, match="resume and init exclude each other"):
        train(build(_recipe()), data, out=tuned, init=first, resume=True, progress=False)


def _staged(**train):
    recipe = _recipe(**train)
    stage = attrs.evolve(recipe.train, steps=6, lr=1e-3, warmup_steps=1, lr_schedule="cosine", lr_min=1e-4)
    return attrs.evolve(recipe, finetune=[stage])


def _same_checkpoints(a, b):
    (ta, step_a), (tb, step_b) = _state(a), _state(b)
    assert step_a == step_b and ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def test_a_finetune_stage_computes_what_a_run_from_the_stage_befores_weights_does(tmp_path):
    data = _data()
    staged = tmp_path / "staged.safetensors"
    rows = []
    train(build(_staged()), data, out=staged, progress=False, callback=rows.append)
    # the oracle: the first stage's recipe, then the second's started from its checkpoint (--init)
    first, second = stages(_staged())
    assert first.train == _recipe().train and second.train.lr_schedule == "cosine" and not second.finetune
    alone = tmp_path / "first.safetensors"
    train(build(first), data, out=alone, progress=False)
    tuned = tmp_path / "tuned.safetensors"
    train(build(second), data, out=tuned, init=alone, progress=False)
    _same_checkpoints(stage_file(staged, 1, 2), alone)
    _same_checkpoints(staged, tuned)
    ckpt = load_checkpoint(staged)
    assert ckpt.step == 6 and ckpt.recipe == attrs.evolve(second, train=attrs.evolve(second.train, steps=6))
    assert ckpt.metadata["diffusekit.init"] == "staged.stage1.safetensors (step 12)"
    assert [(r["stage"], r["step"]) for r in rows] == [(1, 2), (1, 4), (1, 6), (1, 8), (1, 10), (1, 12)] + [
        (2, 2),
        (2, 4),
        (2, 6),
    ]
    logged = (tmp_path / "staged.stage1.metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == [2, 4, 6, 8, 10, 12]
    # in memory, the stages chain the same way
    pipeline = build(_staged())
    train(pipeline, data, progress=False)
    for name, value in load_checkpoint(staged).weights().items():
        assert torch.equal(pipeline.network.state_dict()[name], value), name


def _widening():
    """Two stages, the second adding a block to the MLP (new weights, freshly initialised)."""
    recipe = _staged()
    return attrs.evolve(recipe, finetune=[attrs.evolve(recipe.finetune[0], network={"depth": 3})])


def test_a_stage_that_changes_the_network_trains_it_from_the_stage_befores_weights(tmp_path):
    recipe, data = _widening(), _data()
    first, second = stages(recipe)
    assert first.network == recipe.network and first.network.params["depth"] == 2
    assert second.network.params == {**recipe.network.params, "depth": 3} and second.train.network is None
    assert recipe.final_network == second.network
    staged = tmp_path / "staged.safetensors"
    train(build(recipe), data, out=staged, progress=False)
    # the oracle: the first stage alone, then the second's recipe started from its checkpoint
    alone, tuned = tmp_path / "first.safetensors", tmp_path / "tuned.safetensors"
    train(build(first), data, out=alone, progress=False)
    train(build(second), data, out=tuned, init=alone, progress=False)
    _same_checkpoints(stage_file(staged, 1, 2), alone)
    _same_checkpoints(staged, tuned)
    assert len(load_checkpoint(alone).weights()) < len(load_checkpoint(staged).weights())  # the new block's
    assert load_checkpoint(staged).recipe.network == second.network
    # sampling builds the last stage's network, so the staged run's weights load into it
    pipeline = build(recipe)
    assert len(pipeline.network.blocks) == 3 and len(build(first).network.blocks) == 2
    pipeline.load_weights(load_checkpoint(staged).weights(), source="staged")
    # in memory the stages chain the same way, ending in the given pipeline's network
    pipeline = build(recipe)
    train(pipeline, data, progress=False)
    for name, value in load_checkpoint(staged).weights().items():
        assert torch.equal(pipeline.network.state_dict()[name], value), name


def test_a_stages_network_round_trips_and_a_later_stage_can_go_back():
    recipe = _widening()
    back = attrs.evolve(recipe, finetune=[*recipe.finetune, attrs.evolve(recipe.finetune[0], network=None)])
    for r in (recipe, back):
        assert loads_toml(dumps_toml(r)) == r and loads_json(dumps_json(r)) == r
    assert "depth = 3" in dumps_toml(recipe).split("[[finetune]]")[1]
    assert [s.network.params["depth"] for s in stages(back)] == [2, 3, 2] and back.final_network == back.network
    assert attrs.evolve(recipe.train, network={}).network is None  # TOML's empty table is none


def test_a_stages_network_is_validated_where_it_is_set():
    recipe = attrs.evolve(_staged(), finetune=[attrs.evolve(_staged().finetune[0], network={"depth": 0})])
    with pytest.raises(ConfigError, match=r"finetune\[0\]\.network"):
        build(recipe)
    recipe = attrs.evolve(_staged(), finetune=[attrs.evolve(_staged().finetune[0], network={"width": 3})])
    with pytest.raises(ConfigError, match=r"finetune\[0\]\.network.*width"):
        build(recipe)


def test_a_staged_run_resumes_the_latest_stage_it_reached(tmp_path):
    data = _data()
    straight = tmp_path / "straight.safetensors"
    train(build(_staged()), data, out=straight, progress=False)
    split = tmp_path / "split.safetensors"
    # killed in the first stage at step 7: its checkpoint is the first stage's file
    first = stage_file(split, 1, 2)
    train(build(stages(_staged())[0]), data, out=first, steps=7, progress=False)
    train(build(_staged()), data, out=split, resume=True, progress=False)
    _same_checkpoints(split, straight)
    # both stages done: resuming the last again changes nothing
    train(build(_staged()), data, out=split, resume=True, progress=False)
    _same_checkpoints(split, straight)
    with pytest.raises(CheckpointError, match=r"split.stage1.safetensors already exists; continue it with --resume"):
        train(build(_staged()), data, out=split, progress=False)
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*none.safetensors or of its earlier stages"):
        train(build(_staged()), data, out=tmp_path / "none.safetensors", resume=True, progress=False)
    with pytest.raises(CheckpointError, match=r"different recipe \(train.lr differs\)"):
        train(build(_staged(lr=0.1)), data, out=split, resume=True, progress=False)


def test_a_fresh_staged_run_over_an_old_one_leaves_none_of_the_old_stages(tmp_path):
    data = _data()
    out = tmp_path / "m.safetensors"
    train(build(_staged()), data, out=out, steps=2, progress=False)
    # replaced, then killed during the first stage: the old second stage must not be resumed later
    train(build(stages(_staged())[0]), data, out=stage_file(out, 1, 2), steps=1, overwrite=True, progress=False)
    out.unlink()
    train(build(_staged()), data, out=out, steps=2, overwrite=True, progress=False)
    assert load_checkpoint(out).metadata["diffusekit.init"] == "m.stage1.safetensors (step 2)"
    assert load_checkpoint(out).step == 2


def test_a_stage_with_its_own_seed_draws_what_the_recipe_with_that_seed_draws(tmp_path):
    """``train.seed`` seeds a run's draws (batches, times, noise) and nothing else: from the same
    starting weights it computes what the recipe with that seed computes, and other batches than
    the recipe's own seed."""
    data = _data()
    start = tmp_path / "start.safetensors"
    train(build(_recipe(steps=2)), data, out=start, progress=False)
    runs = {}
    for name, recipe in {
        "own": attrs.evolve(_recipe(), train=attrs.evolve(_recipe().train, seed=11)),
        "recipe": attrs.evolve(_recipe(), seed=11),
        "plain": _recipe(),
    }.items():
        runs[name] = tmp_path / f"{name}.safetensors"
        train(build(recipe), data, out=runs[name], init=start, progress=False)
    _same_checkpoints(runs["own"], runs["recipe"])
    own, plain = load_checkpoint(runs["own"]).weights(), load_checkpoint(runs["plain"]).weights()
    assert any(not torch.equal(own[k], plain[k]) for k in own)
