"""Denoiser networks: a small U-Net for images and an MLP for vectors.

Both take ``(x, noise_level, condition)``; the noise level is one number per sample
(or one for the batch) and a :class:`~diffusekit.ClassLabel` condition, if any, is
added to its embedding (the null label has its own learned embedding, for
classifier-free guidance).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v
from diffusekit import ClassLabel, Condition, ConfigError, Network, PartSpec, Schedule, ShapeError
from diffusekit.state import DEFAULT_PART
from torch import Tensor, nn


class FourierFeatures(nn.Module):
    """Sines and cosines of the noise level at geometrically spaced frequencies (1 to 1000)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), dim // 2)), persistent=False)

    def forward(self, noise: Tensor) -> Tensor:
        angles = noise[:, None] * self.freqs[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def per_sample(noise: Tensor, batch: int, dtype: torch.dtype) -> Tensor:
    """The noise level as ``(B,)``; a scalar is broadcast, finer (per-element) levels are refused."""
    if noise.ndim == 0:
        noise = noise.expand(batch)
    elif noise.ndim > 1 and all(n == 1 for n in noise.shape[1:]):
        noise = noise.reshape(-1)
    if noise.shape != (batch,) and noise.shape != (1,):
        raise ShapeError(f"this network takes one noise level per sample, got shape {tuple(noise.shape)}")
    return noise.expand(batch).to(dtype)


class Conditioning(nn.Module):
    """Noise-level embedding plus, for class-conditional models, a label embedding."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fourier = FourierFeatures(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.num_classes = num_classes
        self.labels = nn.Embedding(num_classes + 1, dim) if num_classes else None

    def forward(self, noise: Tensor, condition: Condition | None, batch: int, dtype: torch.dtype) -> Tensor:
        e = self.mlp(self.fourier(per_sample(noise, batch, dtype)))
        if self.labels is not None:
            if condition is None:
                index = torch.full((batch,), self.num_classes, dtype=torch.long, device=e.device)
            else:
                index = label_index(condition, self.num_classes)
            e = e + self.labels(index)
        return e


def label_index(condition: Condition, num_classes: int) -> Tensor:
    """The embedding index of each sample's label (``num_classes`` for the null label).

    A :class:`~diffusekit.ClassLabel` of another number of classes is refused: its null
    label would land on a real class of this network (or off its embedding table).
    """
    if not isinstance(condition, ClassLabel):
        raise ShapeError(f"this network is conditioned on class labels, got {type(condition).__name__}")
    if condition.num_classes != num_classes:
        raise ShapeError(
            f"this network embeds {num_classes} classes, but the class labels have num_classes = "
            f"{condition.num_classes}"
        )
    return condition.embedding_index()


def check_single_part(network: str, parts: Mapping[str, PartSpec], schedules: Mapping[str, Schedule]) -> PartSpec:
    """The one Gaussian part with one noise level per sample that ``network`` denoises, else a ConfigError."""
    if list(parts) != [DEFAULT_PART]:
        raise ConfigError("parts", f"the {network} takes one part named {DEFAULT_PART!r}, got {sorted(parts)}")
    if schedules[DEFAULT_PART].kind != "gaussian":
        raise ConfigError(
            f"parts.{DEFAULT_PART}.schedule",
            f"the {network} denoises Gaussian parts; {type(schedules[DEFAULT_PART]).__name__} is "
            f"{schedules[DEFAULT_PART].kind}",
        )
    part = parts[DEFAULT_PART]
    if part.time_dims != 1:
        raise ConfigError(f"parts.{DEFAULT_PART}.time_dims", f"must be 1: the {network} takes one time per sample")
    return part


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(e)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class SelfAttention(nn.Module):
    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(min(8, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        q, k, val = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, hgt * wid).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), val.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, hgt, wid))


class UNetModule(nn.Module):
    """The module built by :class:`UNet`."""

    def __init__(self, spec: UNet) -> None:
        super().__init__()
        ch, emb = spec.channels, 4 * spec.channels
        self.factor = spec.downsampling
        self.embed = Conditioning(emb, spec.num_classes)
        self.conv_in = nn.Conv2d(spec.in_channels, ch, 3, padding=1)
        widths = [ch * m for m in spec.channel_mult]
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        skips, cur = [ch], ch
        for level, width in enumerate(widths):
            for _ in range(spec.num_res_blocks):
                attn = level in spec.attention_levels
                self.down.append(
                    nn.ModuleList(
                        [ResBlock(cur, width, emb, spec.dropout), SelfAttention(width) if attn else nn.Identity()]
                    )
                )
                cur = width
                skips.append(cur)
            if level < len(widths) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)
        self.mid1 = ResBlock(cur, cur, emb, spec.dropout)
        self.mid_attn = SelfAttention(cur)
        self.mid2 = ResBlock(cur, cur, emb, spec.dropout)
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(spec.num_res_blocks + 1):
                attn = level in spec.attention_levels
                self.up.append(
                    nn.ModuleList(
                        [
                            ResBlock(cur + skips.pop(), width, emb, spec.dropout),
                            SelfAttention(width) if attn else nn.Identity(),
                        ]
                    )
                )
                cur = width
            if level > 0:
                self.up.append(
                    nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cur, cur, 3, padding=1)])
                )
        self.norm_out = nn.GroupNorm(min(8, cur), cur)
        self.conv_out = nn.Conv2d(cur, spec.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, noise: Tensor, condition: Condition | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != self.conv_in.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"the U-Net takes images (B, {self.conv_in.in_channels}, H, W), got {shape}")
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ShapeError(f"the U-Net takes heights and widths divisible by {self.factor}, got {tuple(x.shape)}")
        return self.run(x, self.embed(noise, condition, x.shape[0], x.dtype))[0]

    def run(self, x: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        """The network on images ``x`` with the embedding ``e`` ``(B, 4 channels)`` in place of the
        noise-level and class embedding: ``(output, the middle block's features)``. A model of
        several parts builds its own embedding and reads other outputs off the middle features."""
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            if isinstance(block[0], ResBlock):
                h = block[1](block[0](h, e))
            else:
                h = block[0](h)
            hs.append(h)
        h = mid = self.mid2(self.mid_attn(self.mid1(h, e)), e)
        for block in self.up:
            if isinstance(block[0], ResBlock):
                h = block[1](block[0](torch.cat([h, hs.pop()], dim=1), e))
            else:
                h = block[1](block[0](h))
        return self.conv_out(F.silu(self.norm_out(h))), mid


def _multiple_of(n: int):
    """attrs validator: the value is a multiple of ``n``."""

    def check(instance, attribute: attrs.Attribute, value: int) -> None:
        if value % n:
            raise ValueError(f"'{attribute.name}' must be a multiple of {n}: {value}")

    return check


@attrs.frozen
class UNet(Network):
    """A small U-Net (Ronneberger et al., 2015; Ho et al., 2020): FiLM residual blocks, self-attention at chosen levels.

    Each level halves the resolution; ``channel_mult`` sets its width in units of
    ``channels``. Output blocks start at zero, so the untrained network outputs 0.
    """

    in_channels: int = attrs.field(default=1, validator=v.ge(1))
    channels: int = attrs.field(default=64, validator=[v.ge(8), _multiple_of(8)])  # group norms of 8 groups
    channel_mult: tuple[int, ...] = attrs.field(default=(1, 2), validator=v.deep_iterable(v.ge(1), v.min_len(1)))
    num_res_blocks: int = attrs.field(default=2, validator=v.ge(1))
    attention_levels: tuple[int, ...] = (1,)
    num_classes: int = attrs.field(default=0, validator=v.ge(0))
    dropout: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.lt(1.0)])

    @property
    def downsampling(self) -> int:
        """How many times smaller the lowest level is than the image (heights and widths are multiples of it)."""
        return 2 ** (len(self.channel_mult) - 1)

    def build(self) -> nn.Module:
        return UNetModule(self)

    def check_parts(self, parts: Mapping[str, PartSpec], schedules: Mapping[str, Schedule]) -> None:
        """Refuse parts other than one Gaussian image ``x`` of ``(in_channels, H, W)`` that the levels divide."""
        shape = check_single_part("U-Net", parts, schedules).shape
        path = f"parts.{DEFAULT_PART}.shape"
        if len(shape) != 3:
            raise ConfigError(path, f"the U-Net takes images (channels, height, width), got {list(shape)}")
        if shape[0] != self.in_channels:
            raise ConfigError(path, f"has {shape[0]} channels but network.in_channels is {self.in_channels}")
        if shape[1] % self.downsampling or shape[2] % self.downsampling:
            raise ConfigError(
                path,
                f"height and width must be multiples of {self.downsampling} for the {len(self.channel_mult)} "
                f"levels of network.channel_mult, got {shape[1]}x{shape[2]}",
            )

    def example_shape(self) -> tuple[int, ...]:
        side = 2 ** len(self.channel_mult) * 2
        return (self.in_channels, side, side)


class MLPModule(nn.Module):
    """The module built by :class:`MLP`."""

    def __init__(self, spec: MLP) -> None:
        super().__init__()
        self.embed = Conditioning(spec.hidden, spec.num_classes)
        self.inp = nn.Linear(spec.dim, spec.hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(spec.hidden),
                nn.Linear(spec.hidden, spec.hidden),
                nn.SiLU(),
                nn.Linear(spec.hidden, spec.hidden),
            )
            for _ in range(spec.depth)
        )
        self.out = nn.Linear(spec.hidden, spec.dim)

    def forward(self, x: Tensor, noise: Tensor, condition: Condition | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != self.inp.in_features:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"the MLP takes vectors (B, {self.inp.in_features}), got {shape}")
        e = self.embed(noise, condition, x.shape[0], x.dtype)
        h = self.inp(x) + e
        for block in self.blocks:
            h = h + block(h + e)
        return self.out(h)


@attrs.frozen
class MLP(Network):
    """A residual MLP for vector data ``(B, dim)``, with noise-level and class embeddings added at every block."""

    dim: int = attrs.field(default=2, validator=v.ge(1))
    hidden: int = attrs.field(default=128, validator=[v.ge(2), _multiple_of(2)])  # sines and cosines
    depth: int = attrs.field(default=3, validator=v.ge(1))
    num_classes: int = attrs.field(default=0, validator=v.ge(0))

    def build(self) -> nn.Module:
        return MLPModule(self)

    def check_parts(self, parts: Mapping[str, PartSpec], schedules: Mapping[str, Schedule]) -> None:
        """Refuse parts other than one Gaussian vector ``x`` of ``(dim,)``."""
        shape = check_single_part("MLP", parts, schedules).shape
        if tuple(shape) != (self.dim,):
            raise ConfigError(
                f"parts.{DEFAULT_PART}.shape", f"the MLP takes vectors of network.dim = {self.dim}, got {list(shape)}"
            )

    def example_shape(self) -> tuple[int, ...]:
        return (self.dim,)
