"""The 8×8 digits of scikit-learn as a two-part state: the image and its label.

``image`` is ``(1, 8, 8)`` in [-1, 1] (a Gaussian part); ``label`` is ``(1,)``, the digit as a
token 0–9 (a categorical part: under an absorbing process the mask token is 10). The 1,797
digits are split once, by a fixed permutation, into :data:`TRAIN_SIZE` training digits and the
rest held out (``split="test"``), on which classification is measured.
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
from attrs import validators as v
from diffusekit import Data, Dataset

IMAGE, LABEL = "image", "label"
CLASSES = 10
SPLIT_SEED = 2024
TRAIN_SIZE = 1_437
"""80% of the 1,797 digits train; the other 360 are held out."""


def load_digits(split: Literal["train", "test", "all"] = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 1, 8, 8) in [-1, 1], labels (N,))`` of one split."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    chosen = {"train": order[:TRAIN_SIZE], "test": order[TRAIN_SIZE:], "all": torch.arange(len(labels))}[split]
    return images[chosen], labels[chosen]


@attrs.frozen
class LabelledDigits(Dataset):
    """Digits with their labels as parts ``image`` and ``label`` (no condition: the label is data)."""

    split: str = attrs.field(default="train", validator=v.in_(("train", "test", "all")))

    def load(self) -> Data:
        images, labels = load_digits(self.split)  # type: ignore[arg-type]
        return Data({IMAGE: images, LABEL: labels[:, None]})


__all__ = ["CLASSES", "IMAGE", "LABEL", "LabelledDigits", "TRAIN_SIZE", "load_digits"]
