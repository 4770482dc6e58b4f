"""A small digit classifier whose hidden layer is the feature space of the digits FD.

An MLP 64-128-64-10 trained (seeded, full batch, Adam) on scikit-learn's 8x8 digits
scaled to [-1, 1]; its 64 penultimate ReLU units are the features. The weights ship as
``digit_features.safetensors`` (made by ``python benchmarks/digit_features.py --train``),
so the metric needs nothing downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS = Path(__file__).with_name("digit_features.safetensors")


def model() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def real_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 8.0 - 1.0, torch.tensor(bunch.target)


def train(epochs: int = 400) -> nn.Sequential:
    torch.manual_seed(0)
    net = model()
    x, y = real_digits()
    held = torch.arange(len(x)) % 5 == 0  # report held-out accuracy, then fit on everything
    for mask, label in ((~held, "held-out"), (torch.ones_like(held), "all")):
        torch.manual_seed(0)
        net = model()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
        for _ in range(epochs):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[mask]), y[mask]).backward()
            opt.step()
        if label == "held-out":
            acc = (net(x[held]).argmax(1) == y[held]).float().mean().item()
            print(f"held-out accuracy (trained on 80%): {acc:.3f}")
    return net


def load() -> nn.Sequential:
    net = model()
    net.load_state_dict(load_file(WEIGHTS))
    return net.eval()


def features(net: nn.Sequential, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net[:5](images.float())


def logits(net: nn.Sequential, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(images.float())


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)) (Heusel et al., 2017), in float64."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    # tr((C_a C_b)^(1/2)) = sum of sqrt of the eigenvalues of C_a^(1/2) C_b C_a^(1/2)
    ea, va = torch.linalg.eigh(ca)
    root_a = (va * ea.clamp(min=0).sqrt()) @ va.T
    middle = torch.linalg.eigvalsh(root_a @ cb @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + ca.trace() + cb.trace() - 2 * middle)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true")
    args = parser.parse_args()
    if args.train:
        net = train()
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(WEIGHTS))
        print(f"wrote {WEIGHTS}")
    net = load()
    x, y = real_digits()
    print("training-set accuracy:", (logits(net, x).argmax(1) == y).float().mean().item())
    half = torch.arange(len(x)) % 2 == 0
    print(
        "FD between two halves of the real digits:",
        round(frechet_distance(features(net, x[half]), features(net, x[~half])), 3),
    )
