"""The joint digits model: its data, its network, the diffusion classifier on an exact oracle, and
every task from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusekit import ComponentSpec, ConfigError, PartSpec, build, train
from diffusekit.testing import GaussianMixture, LabelledMixture
from diffusekit.testing.cli import assert_one_line_error, run_cli
from diffusekit_gaussian.schedules import VPCosine
from diffusekit_joint import classifier, methods
from diffusekit_joint.digits import CLASSES, IMAGE, LABEL, TRAIN_SIZE, LabelledDigits, load_digits
from diffusekit_masked.schedules import Absorbing
from PIL import Image


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_splits_are_disjoint_and_cover_the_digits():
    train_x, train_y = load_digits("train")
    test_x, test_y = load_digits("test")
    all_x, _ = load_digits("all")
    assert len(train_x) == TRAIN_SIZE and len(train_x) + len(test_x) == len(all_x) == 1797
    both = torch.cat([train_x, test_x]).flatten(1)
    assert len(torch.unique(both, dim=0)) == len(torch.unique(all_x.flatten(1), dim=0))  # nothing shared or lost
    assert set(test_y.tolist()) == set(range(CLASSES)) and float(train_x.min()) >= -1 and float(train_x.max()) <= 1
    data = LabelledDigits().load()
    assert data.parts[LABEL].shape == (TRAIN_SIZE, 1) and data.condition is None


def _random_output(pipe):
    """Output layers and residual branches start at zero, which hides what reaches what: give
    every zero-initialised weight random values."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in pipe.network.parameters():
            if not bool(p.any()):
                p.normal_(std=0.1)
    return pipe


def test_each_part_and_each_time_reaches_the_other_parts_output():
    pipe = _random_output(build(methods.DigitsMethod().recipe()))
    net = pipe.network.eval()
    image = torch.randn(4, 1, 8, 8)
    tokens = torch.tensor([[0], [3], [9], [CLASSES]])
    base = net({IMAGE: image, LABEL: tokens}, {IMAGE: torch.full((4,), 0.5), LABEL: torch.full((4,), 0.5)})
    assert base[IMAGE].shape == (4, 1, 8, 8) and base[LABEL].shape == (4, 1, CLASSES + 1)
    other_tokens = net({IMAGE: image, LABEL: tokens.roll(1, 0)}, {IMAGE: 0.5, LABEL: 0.5})
    other_time = net({IMAGE: image, LABEL: tokens}, {IMAGE: 0.5, LABEL: 0.9})
    other_image = net({IMAGE: image.flip(-1), LABEL: tokens}, {IMAGE: 0.5, LABEL: 0.5})
    for changed in (other_tokens, other_time):
        assert not torch.allclose(changed[IMAGE], base[IMAGE])  # the label and its time reach the image
    assert not torch.allclose(other_image[LABEL], base[LABEL])  # the image reaches the label


def test_a_label_schedule_without_room_for_the_mask_is_a_recipe_error():
    recipe = methods.DigitsMethod().recipe()
    wrong = PartSpec(
        shape=(1,),
        schedule=ComponentSpec("masked:absorbing", {"num_classes": CLASSES}),
        parameterization=ComponentSpec("masked:x0_logits"),
    )
    import attrs

    with pytest.raises(ConfigError, match=r"parts\.label\.schedule.*num_classes = 11"):
        build(attrs.evolve(recipe, parts={**recipe.parts, LABEL: wrong}))


def test_the_diffusion_classifier_of_the_exact_model_approaches_bayes():
    """With the exact joint denoiser, ranking the classes by their denoising errors approaches
    Bayes' rule as the number of times per class grows (32: within a point of its accuracy)."""
    g = torch.Generator().manual_seed(0)
    mixture = GaussianMixture.random((4,), 3, generator=g, spread=1.0, std_range=(0.4, 0.8))
    oracle = LabelledMixture(mixture, {IMAGE: VPCosine(), LABEL: Absorbing(num_classes=4)}, IMAGE, LABEL)
    labels = torch.multinomial(mixture.weights, 600, replacement=True, generator=g)
    x0 = mixture.sample(600, g, labels)
    posterior = mixture.log_responsibilities(x0, 1.0, 0.0).exp()
    assert float((posterior.max(1).values < 0.9).double().mean()) > 0.03  # some points are ambiguous
    bayes = posterior.argmax(1)
    bayes_accuracy = float((bayes == labels).double().mean())
    errors = classifier.class_errors(oracle, x0, classifier.fixed_times(32), g, classes=3)
    agree = float((errors.argmin(1) == bayes).double().mean())
    accuracy = float((errors.argmin(1) == labels).double().mean())
    assert agree > 0.97 and accuracy > bayes_accuracy - 0.01, (agree, accuracy, bayes_accuracy)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("joint") / "ck.safetensors"
    train(build(methods.DigitsMethod().recipe()), out=out, steps=3, progress=False)
    return out


@pytest.mark.parametrize("task", ["joint", "image", "label", "marginal", "classify"])
def test_every_task_runs_from_the_command_line(checkpoint: Path, tmp_path: Path, task: str):
    done = run_cli(
        "sample",
        checkpoint,
        "--num",
        "10",
        "--set",
        f"task={task}",
        "--set",
        "grid.steps=4",
        "--set",
        "evaluations=2",
        "--out",
        task,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / task / "report.json").read_text())
    assert report["task"] == task and len(report["labels"]) == 10
    with Image.open(tmp_path / task / "grid.png") as png:
        assert png.size[0] > 0
    if task == "image":
        assert report["labels"] == [k % CLASSES for k in range(10)]  # the given labels come back
    if task == "marginal":
        assert report["labels"] == [CLASSES] * 10  # kept at t = 1: still the mask
    if task in ("label", "classify"):
        assert 0.0 <= report["accuracy"] <= 1.0 and report["digits"] == 10
    if task in ("joint", "label"):
        assert all(0 <= k < CLASSES for k in report["labels"])


def test_completion_keeps_the_known_pixels_and_a_given_label(checkpoint: Path, tmp_path: Path):
    image, _ = load_digits("test")
    pixels = ((image[0, 0] + 1.0) * 127.5).round().to(torch.uint8)
    rgba = torch.stack([pixels, pixels, pixels, torch.full_like(pixels, 255)], -1)
    rgba[4:, :, 3] = 0  # the lower half is unknown
    Image.fromarray(rgba.numpy(), "RGBA").save(tmp_path / "half.png")
    done = run_cli(
        "sample",
        checkpoint,
        "--input",
        "half.png",
        "--set",
        "label=7",
        "--set",
        "grid.steps=4",
        "--out",
        "done",
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    from safetensors.torch import load_file

    out = load_file(str(tmp_path / "done" / "samples.safetensors"))
    assert out[LABEL].tolist() == [7]
    known = pixels[:4].float() / 127.5 - 1.0
    torch.testing.assert_close(out[IMAGE][0, 0, :4], known, atol=1e-5, rtol=0)
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    message = assert_one_line_error(run_cli("sample", checkpoint, "--input", "bad.png", "--out", "x", cwd=tmp_path))
    assert "bad.png" in message
    message = assert_one_line_error(run_cli("sample", checkpoint, "--set", "task=complete", "--out", "y", cwd=tmp_path))
    assert "--input" in message
