"""Joint multi-modal diffusion benchmarks (the ``joint`` plugin): digits and their labels.

Usage (from ``benchmarks/``)::

    OMP_NUM_THREADS=1 ../.venv/bin/python joint.py classify   # 1: held-out accuracy
    OMP_NUM_THREADS=1 ../.venv/bin/python joint.py quality    # 2: image | label quality

``classify`` scores the 360 held-out digits of ``joint:digits``' split (never trained on):

* label | image by sampling (the image held at t = 0, the label sampled by the recipe's 50
  steps), and the argmax of the label's one-step prediction at image t = 0, label masked;
* the diffusion classifier (Li et al., 2023): per-class denoising errors over a fixed set of
  times with noise shared across classes, at 1 to 50 times per class;
* a plain CNN trained on the same 1,437 digits for the same steps and batch (8,000 × 128).

``quality`` draws 50 digits per class from image | label (the label held at t = 0) and from the
Gaussian plugin's dedicated class-conditional model (``gaussian:digits``, its recipe: Heun, 18
Karras steps, guidance 1.5), plus joint samples (scored against their own sampled labels) and
marginal samples (the label kept at t = 1). Metrics in the feature space of the shipped digit
classifier (``digit_features.py``): FD against all 1,797 real digits, and how often that
classifier reads the label asked for.
"""

from __future__ import annotations

import argparse
import time

import digit_features
import torch
from common import environment
from diffusekit import ClassLabel, pretrained
from diffusekit_joint import classifier
from diffusekit_joint.digits import CLASSES, IMAGE, LABEL, load_digits
from torch import nn

SEED = 0


def plain_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.SiLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(64, CLASSES),
    )


def train_cnn(steps: int, batch: int) -> nn.Module:
    """The baseline: the plain CNN trained on the joint model's training split, AdamW, seeded."""
    torch.manual_seed(SEED)
    images, labels = load_digits("train")
    net = plain_cnn()
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(SEED)
    for _ in range(steps):
        rows = torch.randint(len(images), (batch,), generator=g)
        loss = nn.functional.cross_entropy(net(images[rows]), labels[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net.eval()


def bench_classify(args) -> None:
    pipe = pretrained("joint:digits")
    images, truth = load_digits("test")
    n = len(truth)
    print(f"<!-- {environment()}; joint:digits, {n} held-out digits -->")
    print("| classifier | network evaluations per digit | accuracy % | s |\n|---|---|---|---|")

    def row(name: str, evaluations: str, predicted: torch.Tensor, began: float) -> None:
        accuracy = 100.0 * float((predicted == truth).double().mean())
        print(f"| {name} | {evaluations} | {accuracy:.1f} | {time.perf_counter() - began:.0f} |", flush=True)

    began = time.perf_counter()
    with torch.no_grad():
        out = pipe.sample(given={IMAGE: images}, seed=SEED)
    row(f"label \\| image, sampled ({pipe.grid.steps} steps)", str(pipe.grid.steps), out[LABEL][:, 0], began)
    began = time.perf_counter()
    with torch.no_grad():
        masked = torch.full((n, 1), CLASSES)
        pred = pipe.denoiser({IMAGE: images, LABEL: masked}, {IMAGE: torch.tensor(0.0), LABEL: torch.tensor(1.0)})
    row("label \\| image, one-step prediction (argmax)", "1", pred[LABEL].value[:, 0, :CLASSES].argmax(-1), began)
    for count in args.evaluations:
        began = time.perf_counter()
        predicted = classifier.classify(pipe.denoiser, images, count, seed=SEED)
        row(f"diffusion classifier, {count} times per class", str(count * CLASSES), predicted, began)
    began = time.perf_counter()
    recipe = pipe.recipe.train
    cnn = train_cnn(recipe.steps, recipe.batch_size)
    with torch.no_grad():
        predicted = cnn(images).argmax(1)
    row(f"plain CNN, same data, {recipe.steps} steps of {recipe.batch_size}", "1", predicted, began)


def bench_quality(args) -> None:
    per_class = args.per_class
    num = per_class * CLASSES
    net = digit_features.load()
    real = digit_features.features(net, digit_features.real_digits()[0])
    asked = torch.arange(num) % CLASSES
    print(f"<!-- {environment()}; {per_class} digits per class -->")
    print("| model / task | FD ↓ | classifier reads the label % | s |\n|---|---|---|---|")

    def row(name: str, images: torch.Tensor, labels: torch.Tensor | None, began: float) -> None:
        fd = digit_features.frechet_distance(digit_features.features(net, images), real)
        read = digit_features.logits(net, images).argmax(1)
        agree = "" if labels is None else f"{100.0 * float((read == labels).double().mean()):.1f}"
        print(f"| {name} | {fd:.2f} | {agree} | {time.perf_counter() - began:.0f} |", flush=True)

    joint = pretrained("joint:digits")
    began = time.perf_counter()
    with torch.no_grad():
        out = joint.sample(given={LABEL: asked[:, None]}, seed=SEED)
    row("joint:digits, image \\| label", out[IMAGE], asked, began)
    began = time.perf_counter()
    with torch.no_grad():
        out = joint.sample(num, seed=SEED)
    row("joint:digits, joint (read against its own sampled label)", out[IMAGE], out[LABEL][:, 0], began)
    began = time.perf_counter()
    with torch.no_grad():
        out = joint.sample(num, marginal=[LABEL], seed=SEED)
    row("joint:digits, marginal image (label kept at t = 1)", out[IMAGE], None, began)
    dedicated = pretrained("gaussian:digits")
    began = time.perf_counter()
    with torch.no_grad():
        images = dedicated.sample(num, condition=ClassLabel(asked, num_classes=CLASSES), seed=SEED)
    row("gaussian:digits (dedicated conditional model, guidance 1.5)", images, asked, began)
    test_images, test_labels = load_digits("test")
    row("real held-out digits (360)", test_images, test_labels, time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=("classify", "quality"))
    parser.add_argument("--evaluations", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50])
    parser.add_argument("--per-class", type=int, default=50)
    args = parser.parse_args()
    {"classify": bench_classify, "quality": bench_quality}[args.which](args)


if __name__ == "__main__":
    main()
