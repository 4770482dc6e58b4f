r"""A multi-view transformer denoiser with cross-view attention and camera conditioning.

The views of a scene ``(B, V, 3, S, S)`` are cut into patch tokens ``(B, V, T, D)`` (``T`` patches per
view). Each block applies self-attention, then an MLP. With ``cross_view=True`` the attention runs
over all ``V·T`` tokens of a sample at once, ``(B, V·T, D)``: MVDream's "3-D self-attention" (Shi et
al., 2023, "MVDream: Multi-view Diffusion for 3D Generation"), which inflates a 2-D image model's
self-attention to every view so that the views agree on one object. With ``cross_view=False`` each
view attends only to its own tokens, ``(B·V, T, D)``: the same network with independent views, the
ablation baseline.

**No view order.** Positions are learned *within* a view only (one table of ``T`` embeddings shared
by every view) and nothing depends on a view's index: a view is known by its camera. Permuting the
views together with their cameras and noise levels therefore permutes the output the same way
(view-permutation equivariance), and the model takes any number of views ``V`` ≥ 1 at call time.

**Per-view time.** Each view has its own noise level, ``(B, V)`` (or one per sample, ``(B,)``, or a
scalar), so that given views can be held clean (t = 0) while the others are denoised, as in
image-conditioned novel-view synthesis. Its sinusoidal embedding, through an MLP, modulates every
block of that view's tokens by adaptive LayerNorm with zero-initialised gates (adaLN-Zero; Peebles
& Xie, 2023, "Scalable Diffusion Models with Transformers", DiT), as in the video plugin's
spatio-temporal transformer.

**Cameras** (``camera``), from the :class:`~diffusekit.Embedding` of the flattened 4×4
world-to-camera extrinsics of every view, ``(B, V·16)``, as the ``shapes`` dataset gives them:

- ``"extrinsics"``: MVDream's camera embedding. Each view's flattened matrix goes through a
  2-layer MLP whose output is added to that view's time embedding, so it reaches every block
  through the modulation. A sample without cameras (the null embedding, for classifier-free
  guidance) gets a learned null camera embedding.
- ``"plucker"``: per-pixel rays in Plücker coordinates :math:`(d, o \times d)`, 6 channels
  (:func:`~diffusekit_multiview.cameras.rays`, :func:`~diffusekit_multiview.cameras.plucker`),
  concatenated to the pixels before patchifying: a dense camera code, as in Light Field Networks
  (Sitzmann et al., 2021) and CAT3D (Gao et al., 2024). Rays are computed with the vertical field of
  view ``fov_deg`` (the dataset's :data:`~diffusekit_multiview.scenes.FOV_DEG` by default). A sample
  without cameras gets zero channels (real rays have unit directions, so zero is no ray).
- ``"none"``: cameras are ignored (an unposed baseline).

**Classes** (``num_classes`` > 0): a :class:`~diffusekit.ClassLabel` (the condition itself or an
item of a :class:`~diffusekit.ConditionList`, beside the cameras) is embedded and added to every
view's time embedding; the null label −1 maps to a learned null embedding, so classifier-free
guidance works (Ho & Salimans, 2022).

**Output.** The tokens are unpatchified to ``refine`` channels per pixel and a per-view head of two
3×3 convolutions over those channels and the noisy view (U-ViT's final convolution; Bao et al.,
2023) smooths the patch seams; with ``refine = 0`` each patch is decoded by one linear map. The last
layer is zero-initialised, so the untrained network outputs exactly 0.

Cost per sample and layer (``V`` views of ``T`` patches, width ``D``), in multiply-adds: ``12 V T D²``
for projections and MLP plus ``2 (V T)² D`` for joint attention, or ``2 V T² D`` per view.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v
from diffusekit import (
    ClassLabel,
    Condition,
    ConditionList,
    ConfigError,
    Embedding,
    Network,
    PartSpec,
    Schedule,
    ShapeError,
)
from diffusekit.network import modulate, noise_per_row
from diffusekit.state import DEFAULT_PART
from torch import Tensor, nn

from diffusekit_multiview import cameras, scenes

CHANNELS = 3
"""Colour channels of a view."""
PART = "views"
"""The part name of the ``shapes`` dataset; the network also takes the default part."""
CAMERAS = ("extrinsics", "plucker", "none")


def split_condition(condition: Condition | None) -> tuple[Embedding | None, ClassLabel | None]:
    """The cameras and the class labels in ``condition``: itself or the items of a
    :class:`~diffusekit.ConditionList`, at most one of each; anything else is refused."""
    items = () if condition is None else condition.items if isinstance(condition, ConditionList) else (condition,)
    found: dict[type, Condition] = {}
    for item in items:
        kind = Embedding if isinstance(item, Embedding) else ClassLabel if isinstance(item, ClassLabel) else None
        if kind is None:
            raise ShapeError(
                f"this transformer is conditioned on cameras (Embedding) and class labels (ClassLabel), "
                f"got {type(item).__name__}"
            )
        if kind in found:
            raise ShapeError(f"the condition holds more than one {kind.__name__}; which one is meant is ambiguous")
        found[kind] = item
    return found.get(Embedding), found.get(ClassLabel)  # type: ignore[return-value]


class Block(nn.Module):
    """Self-attention (over all views' tokens, or within each view), then an MLP; each pre-normed
    and modulated by the view's embedding (adaLN-Zero)."""

    def __init__(self, d: int, heads: int, dropout: float, cross_view: bool) -> None:
        super().__init__()
        self.heads, self.dropout, self.cross_view = heads, dropout, cross_view
        self.norms = nn.ModuleList(nn.LayerNorm(d, elementwise_affine=False) for _ in range(2))
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        nn.init.zeros_(self.ada[1].weight)  # every block starts as the identity
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        """``h`` (B, V, T, D), ``e`` (B, V, D)."""
        b, views, t, d = h.shape
        mods = self.ada(e)[:, :, None].chunk(6, dim=-1)
        a = modulate(self.norms[0](h), mods[0], mods[1])
        # one sequence per sample (MVDream's 3-D attention) or per view (the ablation)
        a = a.reshape(b, views * t, d) if self.cross_view else a.reshape(b * views, t, d)
        m, length = a.shape[:2]
        q, k, val = self.qkv(a).reshape(m, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, val, dropout_p=self.dropout if self.training else 0.0)
        o = self.out(o.transpose(1, 2).reshape(m, length, d)).reshape(b, views, t, d)
        h = h + mods[2] * o
        return h + mods[5] * self.mlp(modulate(self.norms[1](h), mods[3], mods[4]))


class ViewsModule(nn.Module):
    """What the multi-view networks share: a part named ``views`` (or a bare tensor) in and out,
    and each view's embedding ``(B, V, D)`` from its time, its camera (``"extrinsics"``) and the
    sample's class; Plücker ray channels (``"plucker"``). ``spec`` has ``size``, ``camera``,
    ``num_classes`` and ``fov_deg``; subclasses implement :meth:`_run`."""

    def __init__(self, spec: Any, d: int) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), d // 2)), persistent=False)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.camera = None
        self.null_camera = None
        if spec.camera == "extrinsics":
            self.camera = nn.Sequential(nn.Linear(16, d), nn.SiLU(), nn.Linear(d, d))
            self.null_camera = nn.Parameter(torch.randn(d) * 0.02)
        self.labels = nn.Embedding(spec.num_classes + 1, d) if spec.num_classes else None  # + the null label

    def forward(self, x: Any, noise: Any, condition: Condition | None = None) -> Any:
        if isinstance(x, Mapping):  # a part named "views" arrives as a dict, from the denoiser
            if len(x) != 1:
                raise ShapeError(f"this network denoises one part, got {sorted(x)}")
            (name,) = x
            level = noise[name] if isinstance(noise, Mapping) else noise
            return {name: self._run(x[name], level, condition)}
        return self._run(x, noise, condition)

    def _run(self, x: Tensor, noise: Tensor | float, condition: Condition | None) -> Tensor:
        raise NotImplementedError

    def _check(self, x: Any, what: str) -> None:
        s = self.spec
        if not isinstance(x, Tensor) or x.ndim != 5 or tuple(x.shape[2:]) != (CHANNELS, s.size, s.size):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"this {what} takes views (B, V, {CHANNELS}, {s.size}, {s.size}), got {shape}")

    def _embed(self, t: Tensor, extrinsics: Embedding | None, label: ClassLabel | None, b: int, views: int) -> Tensor:
        """Each view's embedding ``(B, V, D)``: its time, plus its camera (``"extrinsics"``) and the class."""
        e = self.time(torch.cat([torch.sin(t[..., None] * self.freqs), torch.cos(t[..., None] * self.freqs)], -1))
        matrices, present = self._cameras(extrinsics, b, views, e.dtype, e.device)  # checked in every mode
        if self.camera is not None:
            embedded = self.camera(matrices.flatten(-2))
            e = e + torch.where(present[:, None, None], embedded, self.null_camera.to(e.dtype))
        if label is not None and self.labels is None:
            raise ShapeError("this network has no class embedding (num_classes = 0), got class labels")
        if self.labels is not None:
            if label is None:  # no labels: the unconditional (null) embedding
                index = torch.full((b,), self.spec.num_classes, dtype=torch.long, device=e.device)
            else:
                if label.num_classes != self.spec.num_classes or label.batch_size != b:
                    raise ShapeError(
                        f"this network embeds {self.spec.num_classes} classes for {b} samples, got class "
                        f"labels with num_classes = {label.num_classes} for {label.batch_size}"
                    )
                index = label.embedding_index().to(e.device)
            e = e + self.labels(index)[:, None]
        return e

    def _cameras(
        self, extrinsics: Embedding | None, b: int, views: int, dtype: torch.dtype, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """The world-to-camera matrices ``(B, V, 4, 4)`` and which samples have them ``(B,)``; none
        (all absent, zero matrices) without an :class:`~diffusekit.Embedding`."""
        if extrinsics is None:
            return torch.zeros(b, views, 4, 4, dtype=dtype, device=device), torch.zeros(
                b, dtype=torch.bool, device=device
            )
        values = extrinsics.values
        if values.shape[0] != b or values[0].numel() != views * 16:
            raise ShapeError(
                f"the cameras must be the flattened 4x4 extrinsics of every view, ({b}, {views * 16}) for {views} "
                f"views; got {tuple(values.shape)}"
            )
        present = extrinsics.present.to(device)
        matrices = values.reshape(b, views, 4, 4).to(dtype=dtype, device=device)
        return matrices * present[:, None, None, None], present  # absent cameras are zero whatever they held

    def _plucker(self, extrinsics: Embedding | None, b: int, views: int, x: Tensor) -> Tensor:
        """Per-pixel Plücker rays ``(B, V, 6, S, S)``; zeros for samples without cameras."""
        matrices, present = self._cameras(extrinsics, b, views, x.dtype, x.device)
        if not bool(present.any()):
            return x.new_zeros(b, views, 6, self.spec.size, self.spec.size)
        # absent cameras are zero matrices: their rays are 0 (no rotation, centre at the origin)
        origins, directions = cameras.rays(matrices, self.spec.size, self.spec.fov_deg)
        return cameras.plucker(origins, directions).permute(0, 1, 4, 2, 3)


class MultiViewModule(ViewsModule):
    """The module built by :class:`MultiViewTransformer`:
    ``(x (B, V, 3, S, S), noise_level, condition) -> (B, V, 3, S, S)``.

    ``x`` may also be a one-part dict (the denoiser's form for a part named ``views``), with the
    noise level as a dict of the same key; the output is then a dict too.
    """

    def __init__(self, spec: MultiViewTransformer) -> None:
        d = spec.d_model
        super().__init__(spec, d)
        extra = 6 if spec.camera == "plucker" else 0  # Plücker channels beside the pixels
        self.patch = nn.Linear((CHANNELS + extra) * spec.patch**2, d)
        self.positions = nn.Parameter(torch.randn(spec.tokens, d) * 0.02)  # within a view: no view index
        self.blocks = nn.ModuleList(Block(d, spec.heads, spec.dropout, spec.cross_view) for _ in range(spec.layers))
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        out = spec.refine or CHANNELS
        self.unpatch = nn.Linear(d, out * spec.patch**2)
        self.refine = None
        if spec.refine:  # a per-view 3x3 conv head on the pixels (U-ViT's final conv): no blocky patch seams
            self.refine = nn.Sequential(
                nn.Conv2d(out + CHANNELS, out, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(out, CHANNELS, 3, padding=1),
            )
        for layer in (self.ada[1], self.refine[-1] if self.refine is not None else self.unpatch):
            nn.init.zeros_(layer.weight)  # the untrained network outputs 0
            nn.init.zeros_(layer.bias)

    def _run(self, x: Tensor, noise: Tensor | float, condition: Condition | None) -> Tensor:
        s = self.spec
        self._check(x, "transformer")
        b, views, p, g = x.shape[0], x.shape[1], s.patch, s.size // s.patch
        extrinsics, label = split_condition(condition)
        e = self._embed(noise_per_row(noise, b, views, x.dtype, x.device, "view"), extrinsics, label, b, views)
        pixels = x
        if s.camera == "plucker":
            pixels = torch.cat([x, self._plucker(extrinsics, b, views, x)], dim=2)
        c = pixels.shape[2]
        h = pixels.reshape(b, views, c, g, p, g, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, views, g * g, c * p * p)
        h = self.patch(h) + self.positions
        for block in self.blocks:
            h = block(h, e)
        shift, scale = self.ada(e)[:, :, None].chunk(2, dim=-1)
        out = self.unpatch(modulate(self.norm(h), shift, scale))
        k = s.refine or CHANNELS
        out = out.reshape(b, views, g, g, k, p, p).permute(0, 1, 4, 2, 5, 3, 6).reshape(b * views, k, s.size, s.size)
        if self.refine is not None:
            out = self.refine(torch.cat([out, x.reshape(b * views, CHANNELS, s.size, s.size)], dim=1))
        return out.reshape(x.shape)


def check_views_part(what: str, size: int, parts: Mapping[str, PartSpec], schedules: Mapping[str, Schedule]) -> None:
    """Refuse parts other than one Gaussian part ``views`` (or the default part) of
    ``(V, 3, size, size)``, with one time per sample or per view."""
    names = list(parts)
    if len(names) != 1 or names[0] not in (PART, DEFAULT_PART):
        raise ConfigError("parts", f"the {what} takes one part named {PART!r} or {DEFAULT_PART!r}, got {names}")
    name = names[0]
    if schedules[name].kind != "gaussian":
        raise ConfigError(
            f"parts.{name}.schedule",
            f"the {what} denoises Gaussian parts; {type(schedules[name]).__name__} is {schedules[name].kind}",
        )
    part = parts[name]
    want = ["V", CHANNELS, size, size]
    if len(part.shape) != 4 or list(part.shape[1:]) != want[1:] or part.shape[0] < 1:
        raise ConfigError(f"parts.{name}.shape", f"the {what} takes views {want}, got {list(part.shape)}")
    if part.time_dims not in (1, 2):
        raise ConfigError(f"parts.{name}.time_dims", f"must be 1 (per sample) or 2 (per view), got {part.time_dims}")


def _multiple_of(n: int):
    """attrs validator: the value is a multiple of ``n``."""

    def check(instance, attribute: attrs.Attribute, value: int) -> None:
        if value % n:
            raise ValueError(f"'{attribute.name}' must be a multiple of {n}: {value}")

    return check


def _even(instance, attribute: attrs.Attribute, value: int) -> None:
    if value % 2:
        raise ValueError(f"'{attribute.name}' must be even: {value}")


@attrs.frozen
class MultiViewTransformer(Network):
    """A small multi-view transformer (see :mod:`diffusekit_multiview.networks`): patch tokens with
    positions within a view only, self-attention over the tokens of all views jointly (MVDream's 3-D
    attention; Shi et al., 2023) or, with ``cross_view=False``, within each view; a per-view time
    embedding by adaLN-Zero (Peebles & Xie, 2023); cameras as an embedding of the extrinsics added to
    the time (``camera="extrinsics"``, MVDream), as Plücker ray channels beside the pixels
    (``"plucker"``; Sitzmann et al., 2021; Gao et al., 2024, CAT3D) or not at all (``"none"``);
    ``num_classes`` > 0 adds a class embedding with a learned null label for classifier-free guidance.

    ``size`` is the height and width of a view, cut into ``patch`` × ``patch`` patches; ``views`` is
    only the number of views of :meth:`example_shape` (the module takes any number). ``refine`` > 0
    adds a per-view convolutional head over that many channels and the noisy view; ``fov_deg`` is the
    cameras' vertical field of view for the Plücker rays.
    """

    size: int = attrs.field(default=32, validator=v.ge(1))
    patch: int = attrs.field(default=4, validator=v.ge(1))
    d_model: int = attrs.field(default=96, validator=[v.ge(8), _even])  # sines and cosines of the time
    layers: int = attrs.field(default=4, validator=v.ge(1))
    heads: int = attrs.field(default=4, validator=v.ge(1))
    views: int = attrs.field(default=6, validator=v.ge(1))
    cross_view: bool = True
    camera: Literal["extrinsics", "plucker", "none"] = attrs.field(default="extrinsics", validator=v.in_(CAMERAS))
    num_classes: int = attrs.field(default=0, validator=v.ge(0))
    refine: int = attrs.field(default=32, validator=v.ge(0))
    dropout: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.lt(1.0)])
    fov_deg: float = attrs.field(default=scenes.FOV_DEG, validator=[v.gt(0.0), v.lt(180.0)])

    def __attrs_post_init__(self) -> None:
        if self.size % self.patch:
            raise ValueError(f"size {self.size} is not a multiple of patch {self.patch}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} does not split into {self.heads} heads")

    @property
    def tokens(self) -> int:
        """Patches per view."""
        return (self.size // self.patch) ** 2

    def build(self) -> MultiViewModule:
        return MultiViewModule(self)

    def check_parts(self, parts: Mapping[str, PartSpec], schedules: Mapping[str, Schedule]) -> None:
        check_views_part("transformer", self.size, parts, schedules)

    def example_shape(self) -> tuple[int, ...]:
        return (self.views, CHANNELS, self.size, self.size)


class ViewAttention(nn.Module):
    """Self-attention over the feature maps of all views of a sample jointly, ``(B, V·H·W)`` tokens
    (MVDream's 3-D attention inside a U-Net), or within each view (``cross_view=False``); residual,
    with a zero-initialised output projection."""

    def __init__(self, channels: int, heads: int, cross_view: bool) -> None:
        super().__init__()
        self.heads, self.cross_view = heads, cross_view
        self.norm = nn.GroupNorm(min(8, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor, views: int) -> Tensor:
        """``h`` ``(B·V, C, H, W)``, the views of a sample consecutive."""
        n, c, hgt, wid = h.shape
        group = views if self.cross_view else 1  # feature maps that attend to each other
        qkv = self.qkv(self.norm(h)).reshape(n // group, group, 3, self.heads, c // self.heads, hgt * wid)
        q, k, val = qkv.permute(2, 0, 3, 1, 5, 4).reshape(3, n // group, self.heads, group * hgt * wid, -1).unbind(0)
        o = F.scaled_dot_product_attention(q, k, val)  # (n/group, heads, group·H·W, c/heads)
        o = o.reshape(n // group, self.heads, group, hgt * wid, c // self.heads).permute(0, 2, 1, 4, 3)
        return h + self.proj(o.reshape(n, c, hgt, wid))


class MultiViewUNetModule(ViewsModule):
    """The module built by :class:`MultiViewUNet`: ``(x (B, V, 3, S, S), noise_level, condition)
    -> (B, V, 3, S, S)`` (or one-part dicts, as :class:`MultiViewModule`)."""

    def __init__(self, spec: MultiViewUNet) -> None:
        from diffusekit_gaussian.networks import ResBlock

        ch = spec.channels
        emb = 4 * ch
        super().__init__(spec, emb)
        rays = 6 if spec.camera == "plucker" else 0
        self.conv_in = nn.Conv2d(CHANNELS + rays, ch, 3, padding=1)
        self.conv_reference = None
        if spec.reference:  # zero-initialised: a network widened from one without it computes what that one did
            self.conv_reference = nn.Conv2d(CHANNELS + rays + 1, ch, 3, padding=1)
            nn.init.zeros_(self.conv_reference.weight)
            nn.init.zeros_(self.conv_reference.bias)
        widths = [ch * m for m in spec.channel_mult]

        def attention(level: int, width: int) -> nn.Module:
            if level not in spec.attention_levels:
                return nn.Identity()
            return ViewAttention(width, spec.heads, spec.cross_view)

        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        skips, cur = [ch], ch
        for level, width in enumerate(widths):
            for _ in range(spec.num_res_blocks):
                self.down.append(nn.ModuleList([ResBlock(cur, width, emb, spec.dropout), attention(level, width)]))
                cur = width
                skips.append(cur)
            if level < len(widths) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)
        self.mid = nn.ModuleList(
            [
                ResBlock(cur, cur, emb, spec.dropout),
                ViewAttention(cur, spec.heads, spec.cross_view),
                ResBlock(cur, cur, emb, spec.dropout),
            ]
        )
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(spec.num_res_blocks + 1):
                block = ResBlock(cur + skips.pop(), width, emb, spec.dropout)
                self.up.append(nn.ModuleList([block, attention(level, width)]))
                cur = width
            if level > 0:
                self.up.append(
                    nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cur, cur, 3, padding=1)])
                )
        self.norm_out = nn.GroupNorm(min(8, cur), cur)
        self.conv_out = nn.Conv2d(cur, CHANNELS, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # the untrained network outputs 0
        nn.init.zeros_(self.conv_out.bias)

    def _run(self, x: Tensor, noise: Tensor | float, condition: Condition | None) -> Tensor:
        self._check(x, "U-Net")
        b, views, size = x.shape[0], x.shape[1], self.spec.size
        extrinsics, label = split_condition(condition)
        level = noise_per_row(noise, b, views, x.dtype, x.device, "view")
        e = self._embed(level, extrinsics, label, b, views).reshape(b * views, -1)
        pixels = x
        if self.spec.camera == "plucker":
            pixels = torch.cat([x, self._plucker(extrinsics, b, views, x)], dim=2)
        h = self.conv_in(pixels.reshape(b * views, -1, size, size))
        if self.conv_reference is not None:
            h = h + self.conv_reference(reference_channels(pixels, level == 0).reshape(b * views, -1, size, size))
        hs = [h]

        def apply(pair: nn.ModuleList, h: Tensor) -> Tensor:
            attention = pair[1]
            h = pair[0](h, e)
            return h if isinstance(attention, nn.Identity) else attention(h, views)

        for block in self.down:
            h = apply(block, h) if len(block) == 2 else block[0](h)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, e), views), e)
        for block in self.up:
            if isinstance(block[1], nn.Conv2d):  # upsampling
                h = block[1](block[0](h))
            else:
                h = apply(block, torch.cat([h, hs.pop()], dim=1))
        return self.conv_out(F.silu(self.norm_out(h))).reshape(x.shape)


def reference_channels(pixels: Tensor, clean: Tensor) -> Tensor:
    """Zero123's conditioning input for every view (Liu et al., 2023, "Zero-1-to-3"): the
    sample's clean views, ``pixels`` ``(B, V, C, S, S)`` (colours and any ray channels) where
    ``clean`` ``(B, V)``, averaged, then a channel of ones; all zeros for a sample with no clean
    view. ``(B, V, C + 1, S, S)``, the same for every view of a sample. A mean, so permuting the
    views permutes nothing here."""
    weights = clean.to(pixels.dtype)
    count = weights.sum(1)
    mean = torch.einsum("bv,bvchw->bchw", weights, pixels) / count.clamp_min(1.0)[:, None, None, None]
    flag = (count > 0).to(pixels.dtype)[:, None, None, None].expand(-1, 1, *pixels.shape[-2:])
    return torch.cat([mean, flag], 1)[:, None].expand(-1, pixels.shape[1], -1, -1, -1)


@attrs.frozen
class MultiViewUNet(Network):
    """A multi-view U-Net, MVDream's architecture at small scale (Shi et al., 2023): every view goes
    through one 2-D U-Net (FiLM residual blocks, Ho et al., 2020) with its own time embedding, and at
    the levels in ``attention_levels`` and the middle, self-attention runs over the feature maps of
    all views of a sample jointly (``cross_view=False``: within each view, the ablation). Cameras,
    classes and per-view time enter as in :class:`MultiViewTransformer`: the embedding of each view
    (time, plus extrinsics through an MLP, plus class) modulates its residual blocks, and Plücker rays
    (``camera="plucker"``) are 6 channels beside the pixels. Nothing depends on a view's index, so
    permuting the views with their cameras permutes the outputs.

    With ``reference=True`` every view also reads, beside its own pixels, the mean of the sample's
    clean views (those at noise level 0: the given views a time plan holds at t = 0, for
    parameterizations whose noise level is the time) with their ray channels and a flag, through a
    zero-initialised convolution added to the input convolution's output (:func:`reference_channels`;
    Zero123's concatenated input image, Liu et al., 2023). Cross-view attention lets a generated view
    read a given one only at the attention levels' resolution; this path gives it the given view at
    full resolution from the first layer. Its convolution starts at zero, so a fine-tuning stage that
    turns it on (:func:`diffusekit.training.widen_into`) starts from exactly what the network computed
    without it.

    Convolutions denoise pixels locally from the first steps of training, where a patch transformer
    of the same cost first has to learn to undo the noise inside every patch; on 32×32 views and CPU
    budgets that makes this the network the shipped model uses.
    """

    size: int = attrs.field(default=32, validator=v.ge(1))
    channels: int = attrs.field(default=32, validator=[v.ge(8), _multiple_of(8)])  # group norms of 8 groups
    channel_mult: tuple[int, ...] = attrs.field(default=(1, 2, 2), validator=v.deep_iterable(v.ge(1), v.min_len(1)))
    num_res_blocks: int = attrs.field(default=2, validator=v.ge(1))
    attention_levels: tuple[int, ...] = (2,)
    heads: int = attrs.field(default=4, validator=v.ge(1))
    views: int = attrs.field(default=4, validator=v.ge(1))
    cross_view: bool = True
    camera: Literal["extrinsics", "plucker", "none"] = attrs.field(default="plucker", validator=v.in_(CAMERAS))
    num_classes: int = attrs.field(default=0, validator=v.ge(0))
    dropout: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.lt(1.0)])
    fov_deg: float = attrs.field(default=scenes.FOV_DEG, validator=[v.gt(0.0), v.lt(180.0)])
    reference: bool = False

    def __attrs_post_init__(self) -> None:
        factor = 2 ** (len(self.channel_mult) - 1)
        if self.size % factor:
            raise ValueError(f"size {self.size} is not a multiple of {factor} ({len(self.channel_mult)} levels)")
        for m in self.channel_mult:
            if self.channels * m % self.heads:
                raise ValueError(f"{self.channels * m} channels do not split into {self.heads} heads")

    def build(self) -> MultiViewUNetModule:
        return MultiViewUNetModule(self)

    def check_parts(self, parts: Mapping[str, PartSpec], schedules: Mapping[str, Schedule]) -> None:
        check_views_part("U-Net", self.size, parts, schedules)

    def example_shape(self) -> tuple[int, ...]:
        return (self.views, CHANNELS, self.size, self.size)
