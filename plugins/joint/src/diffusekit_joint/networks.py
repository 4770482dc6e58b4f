"""``joint:unet`` (an image and its label) and ``joint:world_unet`` (two frames and an action):
one network for several parts, each part at its own time.

The image goes through the Gaussian plugin's U-Net; the embedding that modulates every residual
block is the sum of the image's noise-level embedding, an embedding of the label *token* (a class,
or the mask token 10 when the label is noised away) and an embedding of the label's time, as
UniDiffuser (Bao et al., 2023) feeds each modality's timestep to one transformer. The label's
logits are read off the U-Net's middle features (pooled), so both predictions share one pass.

``joint:world_unet`` does the same for Unified World Models (Zhu et al., 2025): a frame and the
next frame are the U-Net's two channels, the action and the three parts' times are embedded,
and the action is read off the flattened middle features (the policy depends on where the mass
is, which pooling would lose).
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
from diffusekit_joint.world import ACTION, NEXT, NOW


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


class WorldUNetModule(nn.Module):
    """``({"now", "next", "action"}, their noise levels, condition) -> {"now", "next", "action"}``.

    The two frames are the U-Net's two input channels; the embedding is the sum of an
    embedding of each part's noise level and of the (noisy) action; the action's output is
    read off the middle features, flattened (where the mass is matters to the policy)."""

    def __init__(self, spec: WorldUNet) -> None:
        super().__init__()
        self.trunk = UNetModule(spec.trunk())
        self.trunk.embed = nn.Identity()  # replaced by the embeddings below (run() takes the embedding)
        emb = 4 * spec.channels

        def embedding(inputs: int) -> nn.Module:
            return nn.Sequential(nn.Linear(inputs, emb), nn.SiLU(), nn.Linear(emb, emb))

        self.times = nn.ModuleDict(
            {name: nn.Sequential(FourierFeatures(emb), embedding(emb)) for name in (NOW, NEXT, ACTION)}
        )
        self.action_in = embedding(spec.action_dim)
        mid = spec.channels * spec.channel_mult[-1]
        side = spec.size // 2 ** (len(spec.channel_mult) - 1)
        self.action_out = nn.Sequential(
            nn.GroupNorm(min(8, mid), mid),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(mid * side * side, emb),
            nn.SiLU(),
            nn.Linear(emb, spec.action_dim),
        )
        nn.init.zeros_(self.action_out[-1].weight)
        nn.init.zeros_(self.action_out[-1].bias)

    def forward(self, x: Mapping[str, Tensor], noise: Mapping[str, Tensor], condition=None) -> dict[str, Tensor]:
        if not isinstance(x, Mapping) or set(x) != {NOW, NEXT, ACTION}:
            got = sorted(x) if isinstance(x, Mapping) else type(x).__name__
            raise ShapeError(f"the world U-Net takes parts {NOW!r}, {NEXT!r} and {ACTION!r}, got {got}")
        now, after, action = x[NOW], x[NEXT], x[ACTION]
        b = now.shape[0]
        e = self.action_in(action)
        for name, module in self.times.items():
            e = e + module(per_sample(torch.as_tensor(noise[name], device=now.device), b, now.dtype))
        out, mid = self.trunk.run(torch.cat([now, after], 1), e)
        c = now.shape[1]
        return {NOW: out[:, :c], NEXT: out[:, c:], ACTION: self.action_out(mid)}


@attrs.frozen
class WorldUNet(Network):
    """A U-Net over two frames ``now`` and ``next`` ``(channels, size, size)`` and an action vector
    ``action`` ``(action_dim,)``, each part with its own time (Unified World Models)."""

    size: int = attrs.field(default=16, validator=v.ge(4))
    frame_channels: int = attrs.field(default=1, validator=v.ge(1))
    action_dim: int = attrs.field(default=2, validator=v.ge(1))
    channels: int = attrs.field(default=32, validator=v.ge(8))
    channel_mult: tuple[int, ...] = attrs.field(default=(1, 2), validator=v.deep_iterable(v.ge(1), v.min_len(1)))
    num_res_blocks: int = attrs.field(default=2, validator=v.ge(1))
    attention_levels: tuple[int, ...] = (1,)
    dropout: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.lt(1.0)])

    def trunk(self) -> UNet:
        return UNet(
            in_channels=2 * self.frame_channels,
            channels=self.channels,
            channel_mult=self.channel_mult,
            num_res_blocks=self.num_res_blocks,
            attention_levels=self.attention_levels,
            dropout=self.dropout,
        )

    def build(self) -> nn.Module:
        return WorldUNetModule(self)

    def check_parts(self, parts: Mapping[str, PartSpec], schedules: Mapping[str, Schedule]) -> None:
        """Refuse anything but Gaussian parts ``now``, ``next`` (frames of ``size``) and ``action``."""
        if set(parts) != {NOW, NEXT, ACTION}:
            raise ConfigError(
                "parts", f"the world U-Net takes parts {NOW!r}, {NEXT!r} and {ACTION!r}, got {sorted(parts)}"
            )
        frame = (self.frame_channels, self.size, self.size)
        for name, shape in ((NOW, frame), (NEXT, frame), (ACTION, (self.action_dim,))):
            if schedules[name].kind != "gaussian":
                raise ConfigError(f"parts.{name}.schedule", "the world U-Net's parts are Gaussian")
            if tuple(parts[name].shape) != shape:
                raise ConfigError(f"parts.{name}.shape", f"must be {list(shape)}, got {list(parts[name].shape)}")
            if parts[name].time_dims != 1:
                raise ConfigError(f"parts.{name}.time_dims", "must be 1: one time per sample and part")


__all__ = ["JointUNet", "JointUNetModule", "WorldUNet", "WorldUNetModule"]
