"""Joint multi-modal diffusion benchmarks (the ``joint`` plugin): digits and their labels.

Usage (from ``benchmarks/``)::

    OMP_NUM_THREADS=1 ../.venv/bin/python joint.py classify   # 1: held-out accuracy
    OMP_NUM_THREADS=1 ../.venv/bin/python joint.py quality    # 2: image | label quality
    OMP_NUM_THREADS=1 ../.venv/bin/python joint.py world      # 3: one world model, four tasks

``classify`` scores the 360 held-out digits of ``joint:digits``' split (never trained on):

* label | image by sampling (the image held at t = 0, the label sampled by the recipe's 50
  steps), and the argmax of the label's one-step prediction at image t = 0, label masked;
* the diffusion classifier (Li et al., 2023): per-class denoising errors over a fixed set of
  times with noise shared across classes, at 1 to 50 times per class;
* a plain CNN trained on the same 1,437 digits for the same steps and batch (8,000 × 128).

``quality`` draws 50 digits per class from image | label (the label held at t = 0) and from the
Gaussian plugin's dedicated class-conditional model (``gaussian:digits``, its recipe: Heun, 18
Karras steps, guidance 1.5; and without guidance, as the joint model samples), plus joint samples (scored against their own sampled labels) and
marginal samples (the label kept at t = 1). Metrics in the feature space of the shipped digit
classifier (``digit_features.py``): FD against all 1,797 real digits, and how often that
classifier reads the label asked for.

``world`` runs ``joint:world`` on 500 held-out transitions of the point-mass world: the action
error (pixels, root mean square over both axes) of the policy and inverse-dynamics modes beside
regression CNNs trained on the same pairs for the same steps and batch, and beside the
demonstrator's own mean action (the best any point prediction of the policy can do); the
position error of the forward-dynamics and video-prediction modes' next frames beside copying
the frame.
"""

from __future__ import annotations

import argparse
import time

import attrs
import digit_features
import torch
from common import environment
from diffusekit import ClassLabel, load, pretrained
from diffusekit_joint import classifier
from diffusekit_joint.digits import CLASSES, IMAGE, LABEL, load_digits
from torch import nn

SEED = 0


def model(args, method: str):
    """The checkpoint given with ``--checkpoint``, else the method's shipped weights."""
    return pretrained(method) if args.checkpoint is None else load(args.checkpoint)


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
    pipe = model(args, "joint:digits")
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

    joint = model(args, "joint:digits")
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
    for name, pipe in (
        ("guidance 1.5, its recipe", dedicated),
        ("no guidance, as the joint model samples", attrs.evolve(dedicated, guidance=None)),
    ):
        began = time.perf_counter()
        with torch.no_grad():
            images = pipe.sample(num, condition=ClassLabel(asked, num_classes=CLASSES), seed=SEED)
        row(f"gaussian:digits (dedicated conditional model), {name}", images, asked, began)
    test_images, test_labels = load_digits("test")
    row("real held-out digits (360)", test_images, test_labels, time.perf_counter())


def regression_cnn(inputs: int) -> nn.Module:
    """A CNN regressing the action from ``inputs`` stacked frames (flattened: position matters)."""
    return nn.Sequential(
        nn.Conv2d(inputs, 32, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.SiLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.SiLU(),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 128),
        nn.SiLU(),
        nn.Linear(128, 2),
    )


def train_regression(parts: dict, frames: tuple[str, ...], steps: int, batch: int) -> nn.Module:
    """The regression baseline: MSE on the action from the given frames, AdamW, seeded."""
    from diffusekit_joint.world import ACTION

    torch.manual_seed(SEED)
    net = regression_cnn(len(frames))
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(SEED)
    inputs = torch.cat([parts[f] for f in frames], 1)
    for _ in range(steps):
        rows = torch.randint(len(inputs), (batch,), generator=g)
        loss = (net(inputs[rows]) - parts[ACTION][rows]).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net.eval()


def bench_world(args) -> None:
    from diffusekit_joint import methods, world
    from diffusekit_joint.world import ACTION, ACTION_SCALE, NEXT, NOW

    pipe = model(args, "joint:world")
    n = args.transitions
    truth = world.PointMassWorld(count=n, split="test").load().parts
    train_parts = world.PointMassWorld(**pipe.recipe.dataset.params).load().parts
    steps, batch = pipe.recipe.train.steps, pipe.recipe.train.batch_size
    print(f"<!-- {environment()}; joint:world, {n} held-out transitions, {pipe.grid.steps} DDIM steps -->")
    print("| task | model | action error (px) | next-frame position error (px) | s |\n|---|---|---|---|---|")

    def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((a - b) * ACTION_SCALE).square().sum(1).mean().sqrt())

    def position_error(frames: torch.Tensor) -> float:
        return float((world.centroid(frames) - world.centroid(truth[NEXT])).square().sum(1).mean().sqrt())

    def row(task: str, model: str, action: str = "", position: str = "", began: float | None = None) -> None:
        spent = "" if began is None else f"{time.perf_counter() - began:.0f}"
        print(f"| {task} | {model} | {action} | {position} | {spent} |", flush=True)

    for task in ("policy", "inverse", "forward", "predict"):
        given_parts, kept = methods.WORLD_TASKS[task]
        began = time.perf_counter()
        with torch.no_grad():
            out = pipe.sample(given={p: truth[p] for p in given_parts}, marginal=list(kept), seed=SEED)
        if task in ("policy", "inverse"):
            row(task, "joint:world, one sample", f"{rmse(out[ACTION], truth[ACTION]):.3f}", began=began)
        else:
            row(task, "joint:world", position=f"{position_error(out[NEXT]):.3f}", began=began)
        if task == "policy":
            began = time.perf_counter()
            with torch.no_grad():
                draws = [
                    pipe.sample(given={NOW: truth[NOW]}, marginal=[NEXT], seed=SEED + 1 + k)[ACTION]
                    for k in range(args.draws)
                ]
            mean = torch.stack(draws).mean(0)
            row(task, f"joint:world, mean of {args.draws} samples", f"{rmse(mean, truth[ACTION]):.3f}", began=began)
            position = world.centroid(truth[NOW])
            best = world.mean_action(position).clamp(-ACTION_SCALE, ACTION_SCALE) / ACTION_SCALE
            row(task, "the demonstrator's mean action (best point prediction)", f"{rmse(best, truth[ACTION]):.3f}")
        if task in ("policy", "inverse"):
            frames = (NOW,) if task == "policy" else (NOW, NEXT)
            began = time.perf_counter()
            net = train_regression(train_parts, frames, steps, batch)
            with torch.no_grad():
                predicted = net(torch.cat([truth[f] for f in frames], 1))
            row(
                task,
                f"regression CNN, same pairs, {steps} steps of {batch}",
                f"{rmse(predicted, truth[ACTION]):.3f}",
                began=began,
            )
        if task == "forward":
            row(task, "copy the frame", position=f"{position_error(truth[NOW]):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=("classify", "quality", "world"))
    parser.add_argument("--checkpoint", help="a checkpoint to measure instead of the shipped weights")
    parser.add_argument("--evaluations", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50])
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--transitions", type=int, default=500)
    parser.add_argument("--draws", type=int, default=4, help="world: policy samples averaged")
    args = parser.parse_args()
    {"classify": bench_classify, "quality": bench_quality, "world": bench_world}[args.which](args)


if __name__ == "__main__":
    main()
