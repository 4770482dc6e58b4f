"""The core training loop: exact resume, EMA, metrics, per-part time and loss weights."""

import json

import attrs
import torch
from diffusekit import ClassLabel, Data, Denoiser, Pipeline, build, load_checkpoint, train
from diffusekit.recipe import ComponentSpec, PartSpec, Recipe, TrainConfig
from diffusekit.testing.oracle import GaussianMixture
from diffusekit_gaussian import DDIM, EpsilonPrediction, KarrasGrid, VPCosine
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
    train(build(_recipe()), data, out=split, resume=True, progress=False)
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
