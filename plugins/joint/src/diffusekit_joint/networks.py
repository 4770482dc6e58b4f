"""``joint:unet``: one network for an image and its label, each part at its own time.

The image goes through the Gaussian plugin's U-Net; the embedding that modulates every residual
block is the sum of the image's noise-level embedding, an embedding of the label *token* (a class,
or the mask token 10 when the label is noised away) and an embedding of the label's time, as
UniDiffuser (Bao et al., 2023) feeds each modality's timestep to one transformer. The label's
logits are read off the U-Net's middle features (pooled), so both predictions share one pass.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch
from attrs import validators as v
from diffusekit import ConfigError, Network, PartSpec, Schedule, ShapeError
from diffusekit_gaussian.networks import FourierFeatures, UNet, UNetModule, per_sample
from torch import Tensor, nn

from diffusekit_joint.digits import IMAGE, LABEL


class JointUNetModule(nn.Module):
    """``({"image", "label"}, {"image", "label"} noise levels, condition) -> {"image", "label"}``:
    the image's raw output (as the U-Net gives it) and the label's raw logits ``(B, 1, classes + 1)``."""

    def __init__(self, spec: JointUNet) -> None:
        super().__init__()
        self.classes = spec.num_classes
        self.trunk = UNetModule(spec.trunk())  # its class table has a row per class and one for the mask
        emb = 4 * spec.channels
        self.label_time = nn.Sequential(FourierFeatures(emb), nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        mid = spec.channels * spec.channel_mult[-1]
        self.head = nn.Sequential(
            nn.GroupNorm(min(8, mid), mid),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(mid, emb),
            nn.SiLU(),
            nn.Linear(emb, spec.num_classes + 1),
        )

    def forward(self, x: Mapping[str, Tensor], noise: Mapping[str, Tensor], condition=None) -> dict[str, Tensor]:
        if not isinstance(x, Mapping) or set(x) != {IMAGE, LABEL}:
            got = sorted(x) if isinstance(x, Mapping) else type(x).__name__
            raise ShapeError(f"the joint U-Net takes parts {IMAGE!r} and {LABEL!r}, got {got}")
        image, tokens = x[IMAGE], x[LABEL]
        b = image.shape[0]
        if tokens.shape != (b, 1) or tokens.is_floating_point():
            raise ShapeError(f"the joint U-Net takes one label token per sample ({b}, 1), got {tuple(tokens.shape)}")
        if bool(((tokens < 0) | (tokens > self.classes)).any()):
            raise ShapeError(f"label tokens lie in 0..{self.classes} ({self.classes} is the mask)")
        embed = self.trunk.embed
        e = embed.mlp(embed.fourier(per_sample(torch.as_tensor(noise[IMAGE]), b, image.dtype)))
        e = e + embed.labels(tokens[:, 0])
        e = e + self.label_time(per_sample(torch.as_tensor(noise[LABEL], device=image.device), b, image.dtype))
        out, mid = self.trunk.run(image, e)
        return {IMAGE: out, LABEL: self.head(mid)[:, None, :]}


@attrs.frozen
class JointUNet(Network):
    """A U-Net (the Gaussian plugin's ``gaussian:unet`` blocks) over an image part ``image``
    ``(in_channels, H, W)`` and a label part ``label`` ``(1,)`` of ``num_classes`` classes plus a
    mask token, each with one time per sample."""

    in_channels: int = attrs.field(default=1, validator=v.ge(1))
    channels: int = attrs.field(default=32, validator=v.ge(8))
    channel_mult: tuple[int, ...] = attrs.field(default=(1, 2), validator=v.deep_iterable(v.ge(1), v.min_len(1)))
    num_res_blocks: int = attrs.field(default=2, validator=v.ge(1))
    attention_levels: tuple[int, ...] = (1,)
    num_classes: int = attrs.field(default=10, validator=v.ge(2))
    dropout: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.lt(1.0)])

    def trunk(self) -> UNet:
        return UNet(
            in_channels=self.in_channels,
            channels=self.channels,
            channel_mult=self.channel_mult,
            num_res_blocks=self.num_res_blocks,
            attention_levels=self.attention_levels,
            num_classes=self.num_classes,
            dropout=self.dropout,
        )

    def build(self) -> nn.Module:
        return JointUNetModule(self)

    def check_parts(self, parts: Mapping[str, PartSpec], schedules: Mapping[str, Schedule]) -> None:
        """Refuse anything but a Gaussian image part and a categorical label part of ``num_classes`` + 1 tokens."""
        if set(parts) != {IMAGE, LABEL}:
            raise ConfigError("parts", f"the joint U-Net takes parts {IMAGE!r} and {LABEL!r}, got {sorted(parts)}")
        if schedules[IMAGE].kind != "gaussian" or schedules[LABEL].kind != "categorical":
            raise ConfigError("parts", f"{IMAGE!r} must be Gaussian and {LABEL!r} categorical")
        shape = tuple(parts[IMAGE].shape)
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ConfigError(f"parts.{IMAGE}.shape", f"must be ({self.in_channels}, H, W), got {list(shape)}")
        factor = 2 ** (len(self.channel_mult) - 1)
        if shape[1] % factor or shape[2] % factor:
            raise ConfigError(f"parts.{IMAGE}.shape", f"height and width must be multiples of {factor}")
        if tuple(parts[LABEL].shape) != (1,):
            raise ConfigError(
                f"parts.{LABEL}.shape", f"must be [1] (one label per sample), got {list(parts[LABEL].shape)}"
            )
        classes = getattr(schedules[LABEL], "num_classes", None)
        if classes != self.num_classes + 1:
            raise ConfigError(
                f"parts.{LABEL}.schedule",
                f"needs num_classes = {self.num_classes + 1} (the classes and the mask token), got {classes}",
            )
        for name in (IMAGE, LABEL):
            if parts[name].time_dims != 1:
                raise ConfigError(f"parts.{name}.time_dims", "must be 1: the joint U-Net takes one time per sample")


__all__ = ["JointUNet", "JointUNetModule"]
