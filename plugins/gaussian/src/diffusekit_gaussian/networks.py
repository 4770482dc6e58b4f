"""Denoiser networks: a small U-Net for images and an MLP for vectors.

Both take ``(x, noise_level, condition)``; the noise level is one number per sample
(or one for the batch) and a :class:`~diffusekit.ClassLabel` condition, if any, is
added to its embedding (the null label has its own learned embedding, for
classifier-free guidance).
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v
from diffusekit import ClassLabel, Condition, Network, ShapeError
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
            elif isinstance(condition, ClassLabel):
                index = condition.embedding_index()
            else:
                raise TypeError(f"this network is conditioned on class labels, got {type(condition).__name__}")
            e = e + self.labels(index)
        return e


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
        if x.ndim != 4:
            raise ShapeError(f"the U-Net takes images (B, C, H, W), got shape {tuple(x.shape)}")
        e = self.embed(noise, condition, x.shape[0], x.dtype)
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            if isinstance(block[0], ResBlock):
                h = block[1](block[0](h, e))
            else:
                h = block[0](h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, e)), e)
        for block in self.up:
            if isinstance(block[0], ResBlock):
                h = block[1](block[0](torch.cat([h, hs.pop()], dim=1), e))
            else:
                h = block[1](block[0](h))
        return self.conv_out(F.silu(self.norm_out(h)))


@attrs.frozen
class UNet(Network):
    """A small U-Net (Ronneberger et al., 2015; Ho et al., 2020): FiLM residual blocks, self-attention at chosen levels.

    Each level halves the resolution; ``channel_mult`` sets its width in units of
    ``channels``. Output blocks start at zero, so the untrained network outputs 0.
    """

    in_channels: int = attrs.field(default=1, validator=v.ge(1))
    channels: int = attrs.field(default=64, validator=v.ge(8))
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = attrs.field(default=2, validator=v.ge(1))
    attention_levels: tuple[int, ...] = (1,)
    num_classes: int = attrs.field(default=0, validator=v.ge(0))
    dropout: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.lt(1.0)])

    def build(self) -> nn.Module:
        return UNetModule(self)

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
        if x.ndim != 2:
            raise ShapeError(f"the MLP takes vectors (B, D), got shape {tuple(x.shape)}")
        e = self.embed(noise, condition, x.shape[0], x.dtype)
        h = self.inp(x) + e
        for block in self.blocks:
            h = h + block(h + e)
        return self.out(h)


@attrs.frozen
class MLP(Network):
    """A residual MLP for vector data ``(B, dim)``, with noise-level and class embeddings added at every block."""

    dim: int = attrs.field(default=2, validator=v.ge(1))
    hidden: int = attrs.field(default=128, validator=v.ge(2))
    depth: int = attrs.field(default=3, validator=v.ge(1))
    num_classes: int = attrs.field(default=0, validator=v.ge(0))

    def build(self) -> nn.Module:
        return MLPModule(self)

    def example_shape(self) -> tuple[int, ...]:
        return (self.dim,)
