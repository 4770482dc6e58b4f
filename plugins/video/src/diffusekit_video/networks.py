"""A spatio-temporal transformer denoiser for video with per-frame noise levels and a KV cache.

Video ``(B, F, C, H, W)`` is cut into patch tokens ``(B, F, N, D)``. Each block attends
within a frame (over its ``N`` patches), then across frames (over ``F``, one sequence per
patch position), then applies an MLP: factorized space-time attention (Ho et al., 2022,
"Video Diffusion Models"). Every frame has its own noise level (Chen et al., 2024,
"Diffusion Forcing"), embedded and fed to each block by adaptive LayerNorm with
zero-initialised gates (adaLN-Zero; Peebles & Xie, 2023, "DiT").

Temporal positions are rotary (RoPE) in the frame index, so attention sees only offsets
between frames; there is no absolute temporal embedding. Temporal attention is limited to
a window of ``frames`` frames: a frame attends to frames less than ``frames`` apart (and,
with ``causal=True``, only to itself and earlier ones; Gao et al., 2024, "ViD-GPT"). Up to
``frames`` frames this is plain full or causal attention; longer videos see only the
offsets the model was trained on (a sliding window).

**Local space-time attention** (``neighbours = r`` > 0). Attending across frames at one patch
position only, an object that moves into the next patch must be carried there by the spatial
attention of a later layer, which cannot see other frames; small models then let moving
objects fade and reappear. With ``r`` > 0 a patch attends across frames to the ``K = (2r + 1)²``
patches around its position (zero keys and values off the grid), with a learned bias per
head and offset: the local space-time window of video transformers such as the Video Swin
Transformer (Liu et al., 2022), kept factorized. Causality and the KV cache are unchanged:
the cache keeps each position's keys, and the neighbourhood is gathered from them.

**KV cache** (causal only). With causal attention a frame's keys and values in every
layer depend only on that frame and earlier ones, and on their noise levels; a finished
frame (held at, say, t = 0) therefore has fixed keys and values. :meth:`SpatioTemporalModule.cache_frames`
computes them once and :meth:`SpatioTemporalModule.forward_step` reuses them in every
denoising step of the next frames. Keys are stored already rotated by their absolute frame
index; since a rotary score depends only on the difference of the two indices, a stored key
stays valid however far the window has slid, and dropping the oldest frames never forces a
recomputation. The cache keeps the last ``frames - 1`` frames, as many as a new frame can
attend to. The cached result equals the full causal forward over the whole video (the same
windowed attention) up to float rounding. (It does not equal a forward over the last
``frames`` frames alone once frames have been dropped: from the second layer on, a cached
frame's keys carry what it saw of frames older than the window, as in a full forward.)

Cost per generated frame and denoising step, per layer (``N`` patches, width ``D``,
window ``W = min(frames, length)``), in multiply-adds: ``16 N D²`` for projections and MLP,
``2 N² D`` for spatial and ``2 N W K D`` for temporal attention — independent of the rollout
length. Recomputing without the cache runs all ``L`` frames so far at every step:
``L (16 N D² + 2 N² D) + 2 N L² K D`` (the attention is computed densely, then masked), so the
whole rollout is quadratic (cubic in the temporal attention) in its length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v
from diffusekit import Condition, ConfigError, Network, PartSpec, Schedule, ShapeError
from diffusekit.network import modulate, noise_per_row
from diffusekit.state import DEFAULT_PART
from torch import Tensor, nn


@attrs.frozen(eq=False)
class Cache:
    """Keys and values of the temporal attention of finished frames, per layer.

    ``keys[l]`` and ``values[l]`` are ``(B * N, heads, frames_cached, head_dim)``, keys
    already rotated by their frames' absolute indices ``position - frames_cached`` to
    ``position - 1``; ``position`` is the index the next frame gets. Immutable: the same
    cache serves every denoising step of the next frames.
    """

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    position: int
    batch: int
    gathered: tuple[tuple[Tensor, Tensor], ...] = ()
    """With local attention (``neighbours`` > 0), per layer the keys and values of each patch's
    neighbours, ``(B * N, heads, K, frames_cached, head_dim)``: gathered once per cache, not at
    every denoising step."""

    def cat(self, other: Cache) -> Cache:
        """The caches of two batches at the same position as one (both halves of guidance)."""

        def join(a: tuple, b: tuple) -> tuple:
            return tuple(torch.cat(pair) for pair in zip(a, b, strict=True))

        gathered = tuple(
            (torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))
            for a, b in zip(self.gathered, other.gathered, strict=True)
        )
        return Cache(
            join(self.keys, other.keys),
            join(self.values, other.values),
            self.position,
            self.batch + other.batch,
            gathered,
        )

    @property
    def length(self) -> int:
        """The number of frames held."""
        return self.keys[0].shape[2] if self.keys else 0


def rotate(z: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each (even, odd) feature pair of ``z`` (``..., frames, head_dim``) by its frame's angle (RoPE, Su et al., 2021)."""
    even, odd = z[..., 0::2], z[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


class Attention(nn.Module):
    """Multi-head projections; the attention itself is done by the caller."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def project(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(M, L, D)`` -> queries, keys, values ``(M, heads, L, D / heads)``."""
        m, length, d = h.shape
        q, k, val = self.qkv(h).reshape(m, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, val

    def merge(self, o: Tensor) -> Tensor:
        m, _, length, _ = o.shape
        return self.out(o.transpose(1, 2).reshape(m, length, -1))


def neighbourhood(z: Tensor, grid: int, radius: int) -> Tensor:
    """The keys (or values) ``z`` (B, N, heads, L, head_dim) of every patch's ``K = (2 radius + 1)²``
    neighbours on the ``grid × grid`` patch grid, ``(B, N, heads, K * L, head_dim)`` ordered by
    neighbour (row offset, then column offset) then frame; neighbours off the grid are zeros,
    as in a zero-padded convolution."""
    b, n, heads, length, hd = z.shape
    side = 2 * radius + 1
    z = F.pad(z.reshape(b, grid, grid, heads, length, hd), (0, 0, 0, 0, 0, 0, radius, radius, radius, radius))
    shifted = [z[:, dy : dy + grid, dx : dx + grid] for dy in range(side) for dx in range(side)]
    return torch.stack(shifted, dim=4).reshape(b, n, heads, side * side * length, hd)


class Block(nn.Module):
    """Spatial attention, temporal attention, MLP; each pre-normed and modulated by the frame's time (adaLN-Zero).

    With ``radius`` > 0 the temporal attention of a patch reaches the patches within ``radius``
    grid steps of it in the attended frames (with a learned bias per head and neighbour offset),
    so an object that moves to the next patch is one attention hop away. Off the grid the
    neighbours' keys and values are zeros (zero padding)."""

    def __init__(self, d: int, heads: int, dropout: float, grid: int = 1, radius: int = 0) -> None:
        super().__init__()
        self.dropout, self.grid, self.radius = dropout, grid, radius
        side = 2 * radius + 1
        self.offset_bias = nn.Parameter(torch.zeros(heads, side * side)) if radius else None
        self.norms = nn.ModuleList(nn.LayerNorm(d, elementwise_affine=False) for _ in range(3))
        self.spatial, self.temporal = Attention(d, heads), Attention(d, heads)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 9 * d))
        nn.init.zeros_(self.ada[1].weight)  # every block starts as the identity
        nn.init.zeros_(self.ada[1].bias)

    def forward(
        self,
        h: Tensor,
        e: Tensor,
        rope: tuple[Tensor, Tensor],
        mask: Tensor | None,
        past: tuple[Tensor, Tensor] | None,
        gathered: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``h`` (B, F, N, D), ``e`` (B, F, D); ``past`` the cached keys and values of earlier frames
        and ``gathered`` their neighbourhoods (:attr:`Cache.gathered`), if computed.
        Returns the new ``h`` and the keys and values of all frames attended to (past ones first)."""
        b, f, n, d = h.shape
        p = self.dropout if self.training else 0.0
        mods = self.ada(e)[:, :, None].chunk(9, dim=-1)
        a = modulate(self.norms[0](h), mods[0], mods[1]).reshape(b * f, n, d)
        o = F.scaled_dot_product_attention(*self.spatial.project(a), dropout_p=p)
        h = h + mods[2] * self.spatial.merge(o).reshape(b, f, n, d)
        a = modulate(self.norms[1](h), mods[3], mods[4]).transpose(1, 2).reshape(b * n, f, d)
        q, k, val = self.temporal.project(a)
        q, k = rotate(q, *rope), rotate(k, *rope)
        new_k, new_v = k, val
        if past is not None:
            k, val = torch.cat([past[0], k], dim=2), torch.cat([past[1], val], dim=2)
        if self.radius and gathered is not None:
            o = self._local_cached(q, new_k, new_v, gathered, mask, b)
        elif self.radius:
            o = self._local(q, k, val, mask, b, p)
        else:
            o = F.scaled_dot_product_attention(q, k, val, attn_mask=mask, dropout_p=p)
        h = h + mods[5] * self.temporal.merge(o).reshape(b, n, f, d).transpose(1, 2)
        h = h + mods[8] * self.mlp(modulate(self.norms[2](h), mods[6], mods[7]))
        return h, k, val

    def _local(self, q: Tensor, k: Tensor, val: Tensor, mask: Tensor | None, b: int, p: float) -> Tensor:
        """Temporal attention of each patch to its neighbours' keys and values: ``q`` (B * N, heads, F, hd),
        ``k``, ``val`` (B * N, heads, L, hd), ``mask`` (F, L) of the frames each frame may see, or None."""
        n, heads, f, hd = q.shape[0] // b, q.shape[1], q.shape[2], q.shape[3]
        length, side2 = k.shape[2], self.offset_bias.shape[1]
        k, val = (neighbourhood(z.reshape(b, n, heads, length, hd), self.grid, self.radius) for z in (k, val))
        bias = self.offset_bias.to(q.dtype)[:, None, :, None].expand(heads, f, side2, length)
        if mask is not None:
            bias = bias.masked_fill(~mask[None, :, None, :], float("-inf"))
        scores = bias.reshape(heads, f, side2 * length)
        flat = (z.reshape(b * n, heads, side2 * length, hd) for z in (k, val))
        return F.scaled_dot_product_attention(q, *flat, attn_mask=scores, dropout_p=p)

    def _local_cached(
        self, q: Tensor, k: Tensor, val: Tensor, gathered: tuple[Tensor, Tensor], mask: Tensor | None, b: int
    ) -> Tensor:
        """:meth:`_local` for new frames after cached ones whose neighbourhoods are gathered
        already: the new frames' neighbourhoods alone are gathered, and the softmax runs over
        both sets of scores at once (the same attention; no copy of the cached keys)."""
        n, heads, f, hd = q.shape[0] // b, q.shape[1], q.shape[2], q.shape[3]
        side2 = self.offset_bias.shape[1]
        past_k, past_v = gathered  # (B * N, heads, K, P, hd)
        new_k, new_v = (
            neighbourhood(z.reshape(b, n, heads, f, hd), self.grid, self.radius).reshape(b * n, heads, side2, f, hd)
            for z in (k, val)
        )
        past = past_k.shape[3]
        bias = self.offset_bias.to(q.dtype)[:, None, :, None]  # (heads, 1, K, 1)
        scale = hd**-0.5
        scores = [
            torch.einsum("mhfd,mhkld->mhfkl", q, z) * scale + bias[None] for z in (past_k, new_k)
        ]  # (B * N, heads, F, K, frames)
        if mask is not None:
            scores = [
                s_.masked_fill(~m[None, None, :, None, :], float("-inf"))
                for s_, m in zip(scores, (mask[:, :past], mask[:, past:]), strict=True)
            ]
        weights = torch.softmax(torch.cat([z.flatten(-2) for z in scores], -1), -1)
        w_past, w_new = weights[..., : side2 * past], weights[..., side2 * past :]
        return torch.einsum("mhfx,mhxd->mhfd", w_past, past_v.flatten(2, 3)) + torch.einsum(
            "mhfx,mhxd->mhfd", w_new, new_v.flatten(2, 3)
        )


class SpatioTemporalModule(nn.Module):
    """The module built by :class:`SpatioTemporalTransformer`: ``(x (B, F, C, H, W), noise_level, None) -> (B, F, C, H, W)``."""

    def __init__(self, spec: SpatioTemporalTransformer) -> None:
        super().__init__()
        d, self.spec = spec.d_model, spec
        self.patch = nn.Linear(spec.channels * spec.patch**2, d)
        self.positions = nn.Parameter(torch.randn(spec.tokens, d) * 0.02)
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), d // 2)), persistent=False)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        grid = spec.size // spec.patch
        self.blocks = nn.ModuleList(
            Block(d, spec.heads, spec.dropout, grid, spec.neighbours) for _ in range(spec.layers)
        )
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        out = spec.refine or spec.channels
        self.unpatch = nn.Linear(d, out * spec.patch**2)
        self.refine = None
        if spec.refine:  # a per-frame 3x3 conv head on the pixels (U-ViT's final conv): smooth, sharp edges
            self.refine = nn.Sequential(
                nn.Conv2d(out + spec.channels, out, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(out, spec.channels, 3, padding=1),
            )
        for layer in (self.ada[1], self.refine[-1] if self.refine is not None else self.unpatch):
            nn.init.zeros_(layer.weight)  # the untrained network outputs 0
            nn.init.zeros_(layer.bias)
        head = d // spec.heads
        self.register_buffer(
            "inv_freq", 10000.0 ** (-torch.arange(0, head, 2, dtype=torch.float64) / head), persistent=False
        )

    def forward(self, x: Tensor, noise: Tensor, condition: Condition | None = None) -> Tensor:
        return self._run(x, noise, condition, None)[0]

    def cache_frames(self, x: Tensor, noise: Tensor | float = 0.0, cache: Cache | None = None) -> Cache:
        """The cache extended by finished frames ``x`` (B, F, C, H, W) at their noise level (0: clean).

        Without ``cache`` the frames are the first of the video (index 0 on). The oldest frames
        beyond the last ``frames - 1`` are dropped.
        """
        self._need_causal()
        _, kv = self._run(x, noise, None, cache)
        keep = self.spec.frames - 1
        keys = tuple(k[:, :, k.shape[2] - min(keep, k.shape[2]) :] for k, _ in kv)
        values = tuple(val[:, :, val.shape[2] - min(keep, val.shape[2]) :] for _, val in kv)
        position = (0 if cache is None else cache.position) + x.shape[1]
        gathered: tuple[tuple[Tensor, Tensor], ...] = ()
        if self.spec.neighbours:
            b, g, r = x.shape[0], self.spec.size // self.spec.patch, self.spec.neighbours

            def gather(z: Tensor) -> Tensor:
                m, heads, length, hd = z.shape
                out = neighbourhood(z.reshape(b, m // b, heads, length, hd), g, r)
                return out.reshape(m, heads, (2 * r + 1) ** 2, length, hd)

            gathered = tuple((gather(k), gather(val)) for k, val in zip(keys, values, strict=True))
        return Cache(keys, values, position, x.shape[0], gathered)

    def forward_step(self, x: Tensor, noise: Tensor, cache: Cache | None, condition: Condition | None = None) -> Tensor:
        """The output for new frames ``x`` (B, F, C, H, W) following the cached ones, which they
        attend to without being recomputed. ``noise`` is per new frame, per sample or a scalar."""
        self._need_causal()
        return self._run(x, noise, condition, cache)[0]

    def _need_causal(self) -> None:
        if not self.spec.causal:
            raise ConfigError("network.causal", "a KV cache needs causal temporal attention (causal = true)")

    def _run(
        self, x: Tensor, noise: Tensor | float, condition: Condition | None, cache: Cache | None
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        s = self.spec
        if not isinstance(x, Tensor) or x.ndim != 5 or tuple(x.shape[2:]) != (s.channels, s.size, s.size):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"this transformer takes videos (B, F, {s.channels}, {s.size}, {s.size}), got {shape}")
        if condition is not None:
            raise ShapeError(f"this transformer is unconditional (condition None), got {type(condition).__name__}")
        b, f, c, p = x.shape[0], x.shape[1], s.channels, s.patch
        if cache is not None and cache.batch != b:
            raise ShapeError(f"the cache holds {cache.batch} samples, the new frames {b}")
        t = noise_per_row(noise, b, f, x.dtype, x.device, "frame")
        e = self.time(torch.cat([torch.sin(t[..., None] * self.freqs), torch.cos(t[..., None] * self.freqs)], -1))
        g = s.size // p
        h = x.reshape(b, f, c, g, p, g, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, f, g * g, c * p * p)
        h = self.patch(h) + self.positions
        start = 0 if cache is None else cache.position
        past = 0 if cache is None else cache.length
        rope, mask = self._temporal(start, past, f, x.dtype, x.device)
        kv = []
        for i, block in enumerate(self.blocks):
            past = None if cache is None else (cache.keys[i], cache.values[i])
            gathered = cache.gathered[i] if cache is not None and cache.gathered else None
            h, k, val = block(h, e, rope, mask, past, gathered)
            kv.append((k, val))
        shift, scale = self.ada(e)[:, :, None].chunk(2, dim=-1)
        out = self.unpatch(modulate(self.norm(h), shift, scale))
        k = s.refine or c
        out = out.reshape(b, f, g, g, k, p, p).permute(0, 1, 4, 2, 5, 3, 6).reshape(b * f, k, s.size, s.size)
        if self.refine is not None:
            out = self.refine(torch.cat([out, x.reshape(b * f, c, s.size, s.size)], dim=1))
        return out.reshape(x.shape), kv

    def _temporal(
        self, start: int, past: int, new: int, dtype: torch.dtype, device: torch.device
    ) -> tuple[tuple[Tensor, Tensor], Tensor | None]:
        """Rotary angles of frames ``start .. start + new - 1`` and the mask of their attention
        to frames ``start - past .. start + new - 1`` (``None`` where every frame may be seen)."""
        angles = torch.arange(start, start + new, dtype=torch.float64, device=device)[:, None] * self.inv_freq
        rope = (angles.cos().to(dtype), angles.sin().to(dtype))
        queries = torch.arange(start, start + new, device=device)[:, None]
        keys = torch.arange(start - past, start + new, device=device)[None, :]
        offset = queries - keys
        allowed = (offset >= 0) & (offset < self.spec.frames) if self.spec.causal else offset.abs() < self.spec.frames
        return rope, None if bool(allowed.all()) else allowed


def _even(instance, attribute: attrs.Attribute, value: int) -> None:
    if value % 2:
        raise ValueError(f"'{attribute.name}' must be even: {value}")


@attrs.frozen
class SpatioTemporalTransformer(Network):
    """A small video transformer: patch tokens, factorized space/time attention (Ho et al., 2022),
    a per-frame time embedding by adaLN-Zero (Peebles & Xie, 2023; Chen et al., 2024), rotary
    temporal positions, optional causal temporal attention with a KV cache (Gao et al., 2024).

    ``size`` is the height and width of a frame, cut into ``patch`` × ``patch`` patches;
    ``frames`` is the temporal attention window (the clip length the model is trained on):
    longer videos and rollouts attend to at most ``frames`` frames. ``refine`` > 0 unpatchifies
    to that many channels per pixel and adds a per-frame convolutional head (two 3×3 convolutions
    over those channels and the noisy frame; Bao et al., 2023, "All are Worth Words: a ViT
    Backbone for Diffusion Models" (U-ViT) end with such a convolution): without it each patch
    is decoded by one linear map and small models draw blocky edges. The head sees one frame
    at a time, so causality and the KV cache are unaffected. ``neighbours`` > 0 widens the
    temporal attention of a patch to the patches within that many grid steps (local space-time
    attention). See the module docstring for both, the cache and the cost.
    """

    channels: int = attrs.field(default=1, validator=v.ge(1))
    size: int = attrs.field(default=32, validator=v.ge(1))
    patch: int = attrs.field(default=4, validator=v.ge(1))
    d_model: int = attrs.field(default=128, validator=[v.ge(8), _even])  # sines and cosines of the time
    layers: int = attrs.field(default=4, validator=v.ge(1))
    heads: int = attrs.field(default=4, validator=v.ge(1))
    frames: int = attrs.field(default=16, validator=v.ge(1))
    causal: bool = False
    dropout: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.lt(1.0)])
    refine: int = attrs.field(default=0, validator=v.ge(0))
    neighbours: int = attrs.field(default=0, validator=v.ge(0))

    def __attrs_post_init__(self) -> None:
        if self.size % self.patch:
            raise ValueError(f"size {self.size} is not a multiple of patch {self.patch}")
        if self.neighbours >= self.size // self.patch:
            raise ValueError(
                f"neighbours {self.neighbours} must be below the patch grid's side {self.size // self.patch}"
            )
        if self.d_model % self.heads or (self.d_model // self.heads) % 2:
            raise ValueError(f"d_model {self.d_model} does not split into {self.heads} heads of even width (rotary)")

    @property
    def tokens(self) -> int:
        """Patches per frame."""
        return (self.size // self.patch) ** 2

    def build(self) -> SpatioTemporalModule:
        return SpatioTemporalModule(self)

    def check_parts(self, parts: Mapping[str, PartSpec], schedules: Mapping[str, Schedule]) -> None:
        """Refuse parts other than one Gaussian video ``x`` of ``(F, channels, size, size)``, with one time per sample or per frame."""
        if list(parts) != [DEFAULT_PART]:
            raise ConfigError("parts", f"the transformer takes one part named {DEFAULT_PART!r}, got {sorted(parts)}")
        if schedules[DEFAULT_PART].kind != "gaussian":
            raise ConfigError(
                f"parts.{DEFAULT_PART}.schedule",
                f"the transformer denoises Gaussian parts; {type(schedules[DEFAULT_PART]).__name__} is "
                f"{schedules[DEFAULT_PART].kind}",
            )
        part = parts[DEFAULT_PART]
        want = ["F", self.channels, self.size, self.size]
        if len(part.shape) != 4 or list(part.shape[1:]) != want[1:]:
            raise ConfigError(
                f"parts.{DEFAULT_PART}.shape", f"the transformer takes videos {want}, got {list(part.shape)}"
            )
        if part.time_dims not in (1, 2):
            raise ConfigError(
                f"parts.{DEFAULT_PART}.time_dims", f"must be 1 (per sample) or 2 (per frame), got {part.time_dims}"
            )

    def example_shape(self) -> tuple[int, ...]:
        return (min(self.frames, 4), self.channels, self.size, self.size)

    def attention_flops(self, new: int, context: int) -> int:
        """FLOPs of the attention products (scores and weighted values, all layers) of one call
        per sample: ``new`` frames, each attending spatially to its patches and temporally to
        ``context`` frames (with the cache: the cached frames plus the new ones)."""
        n, d, side = self.tokens, self.d_model, 2 * self.neighbours + 1
        return self.layers * 4 * d * (new * n * n + n * new * context * side * side)
