"""A bidirectional transformer denoiser for token sequences."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import attrs
import torch
from attrs import validators as v
from diffusekit import ClassLabel, Condition, ConfigError, Network, PartSpec, Schedule, ShapeError, TrainConfig
from diffusekit.state import DEFAULT_PART
from torch import Tensor, nn


class TransformerModule(nn.Module):
    """The module built by :class:`Transformer`: tokens ``(B, *shape)`` -> logits ``(B, *shape, num_classes)``."""

    def __init__(self, spec: Transformer) -> None:
        super().__init__()
        d = spec.d_model
        self.spec = spec
        self.time_conditioned = spec.time_conditioned
        self.tokens = nn.Embedding(spec.num_classes, d)
        if spec.positions == "sudoku":
            self.rows, self.cols, self.boxes = nn.Embedding(9, d), nn.Embedding(9, d), nn.Embedding(9, d)
            cells = torch.arange(81)
            self.register_buffer(
                "cell_rc", torch.stack([cells // 9, cells % 9, (cells // 27) * 3 + (cells % 9) // 3]), persistent=False
            )
        elif spec.positions == "learned":
            self.positions = nn.Parameter(torch.randn(spec.length, d) * 0.02)
        else:  # rotary: angles of each (position, frequency) pair, applied to queries and keys
            head = d // spec.heads
            inv = 10000.0 ** (-torch.arange(0, head, 2, dtype=torch.float64) / head)
            angles = torch.arange(spec.length, dtype=torch.float64)[:, None] * inv
            self.register_buffer("rotary", torch.stack([angles.cos(), angles.sin()]).float(), persistent=False)
        if spec.time_conditioned:
            self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), d // 2)), persistent=False)
            self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.labels = nn.Embedding(spec.num_labels + 1, d) if spec.num_labels else None
        layer = nn.TransformerEncoderLayer(
            d, spec.heads, 4 * d, spec.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, spec.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, spec.num_classes)

    def forward(self, x: Tensor, noise: Tensor, condition: Condition | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.is_floating_point() or x.ndim < 1:
            what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"this transformer takes integer tokens (B, ...), got {what}")
        batch, shape = x.shape[0], x.shape[1:]
        flat = x.reshape(batch, -1)
        length = flat.shape[1]
        if length != self.spec.length:
            raise ShapeError(f"this transformer takes {self.spec.length} tokens per sample, got {length}")
        if bool(((flat < 0) | (flat >= self.spec.num_classes)).any()):  # else an index error (a device assert on GPU)
            low, high = int(flat.min()), int(flat.max())
            raise ShapeError(
                f"this transformer takes tokens 0..{self.spec.num_classes - 1} (num_classes = "
                f"{self.spec.num_classes}), got tokens from {low} to {high}"
            )
        h = self.tokens(flat)
        if self.spec.positions == "sudoku":
            h = h + self.rows(self.cell_rc[0]) + self.cols(self.cell_rc[1]) + self.boxes(self.cell_rc[2])
        elif self.spec.positions == "learned":
            h = h + self.positions
        if self.time_conditioned:  # one time per sample or per token
            t = torch.as_tensor(noise, dtype=h.dtype, device=h.device)
            t = t.reshape(batch, -1) if t.ndim else t.expand(batch).reshape(batch, 1)
            if t.shape[1] not in (1, length):
                raise ShapeError(f"noise level of shape {tuple(noise.shape)} fits neither the batch nor the tokens")
            angles = t.unsqueeze(-1) * self.freqs
            h = h + self.time(torch.cat([torch.sin(angles), torch.cos(angles)], -1))
        if self.labels is not None:
            if condition is None:
                index = torch.full((batch,), self.spec.num_labels, dtype=torch.long, device=h.device)
            elif not isinstance(condition, ClassLabel):
                raise ShapeError(f"this transformer is conditioned on class labels, got {type(condition).__name__}")
            elif condition.num_classes != self.spec.num_labels:  # else the null label lands on a real class
                raise ShapeError(
                    f"this transformer embeds {self.spec.num_labels} labels (num_labels), but the class labels "
                    f"have num_classes = {condition.num_classes}"
                )
            else:
                index = condition.embedding_index()
            h = h + self.labels(index)[:, None]
        for layer in self.encoder.layers:  # pre-norm blocks, written out to put rotary inside attention
            h = h + self.attend(layer, layer.norm1(h))
            h = h + layer.dropout2(layer.linear2(layer.dropout(nn.functional.gelu(layer.linear1(layer.norm2(h))))))
        logits = self.head(self.norm(h))
        return logits.reshape(batch, *shape, -1)

    def attend(self, layer: nn.TransformerEncoderLayer, h: Tensor) -> Tensor:
        attn = layer.self_attn
        batch, length, d = h.shape
        q, k, v = nn.functional.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.reshape(batch, length, attn.num_heads, -1).transpose(1, 2) for z in (q, k, v))
        if self.spec.positions == "rotary":
            q, k = self.rotate(q), self.rotate(k)
        p = attn.dropout if self.training else 0.0
        out = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return layer.dropout1(attn.out_proj(out.transpose(1, 2).reshape(batch, length, d)))

    def rotate(self, z: Tensor) -> Tensor:
        """Rotate each (even, odd) pair of features by its position's angle (RoPE, Su et al., 2021)."""
        cos, sin = self.rotary[0].to(z.dtype), self.rotary[1].to(z.dtype)
        even, odd = z[..., 0::2], z[..., 1::2]
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def _even(instance, attribute: attrs.Attribute, value: int) -> None:
    """attrs validator: the value is even."""
    if value % 2:
        raise ValueError(f"'{attribute.name}' must be even: {value}")


@attrs.frozen
class Transformer(Network):
    """A pre-norm bidirectional transformer (Vaswani et al., 2017; as in MDLM's DiT backbone, without the DiT blocks).

    ``positions`` are learned per index; ``rotary`` (RoPE, Su et al., 2021; MDLM's
    backbone) rotates queries and keys by their index, so attention sees relative offsets
    from the start (with learned absolute positions a small character model stayed at the
    unigram loss for thousands of steps); ``sudoku`` is the sum of row, column and box
    embeddings of a 9×9 grid. ``time_conditioned`` adds an embedding of the noise level
    (per sample or per token); masked-diffusion denoisers work without it (Zheng et al., 2024), which
    lets the cached sampler skip calls. ``num_labels`` > 0 adds class conditioning with
    a null label for classifier-free guidance.
    """

    num_classes: int = attrs.field(default=10, validator=v.ge(2))
    length: int = attrs.field(default=16, validator=v.ge(1))
    d_model: int = attrs.field(default=64, validator=[v.ge(8), _even])  # sines and cosines of the time
    layers: int = attrs.field(default=2, validator=v.ge(1))
    heads: int = attrs.field(default=4, validator=v.ge(1))
    dropout: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.lt(1.0)])
    positions: Literal["learned", "rotary", "sudoku"] = "learned"
    time_conditioned: bool = False
    num_labels: int = attrs.field(default=0, validator=v.ge(0))

    def __attrs_post_init__(self) -> None:
        if self.d_model % self.heads or (self.positions == "rotary" and (self.d_model // self.heads) % 2):
            even = " of even width" if self.positions == "rotary" else ""
            raise ValueError(f"d_model {self.d_model} does not split into {self.heads} heads{even}")
        if self.positions == "sudoku" and self.length != 81:
            raise ValueError(f"positions 'sudoku' are the cells of a 9x9 grid: length must be 81, got {self.length}")

    def build(self) -> nn.Module:
        return TransformerModule(self)

    def check_parts(self, parts: Mapping[str, PartSpec], schedules: Mapping[str, Schedule]) -> None:
        """Refuse parts other than one categorical part ``x`` of ``length`` tokens over ``num_classes`` classes."""
        if list(parts) != [DEFAULT_PART]:
            raise ConfigError("parts", f"the transformer takes one part named {DEFAULT_PART!r}, got {sorted(parts)}")
        schedule = schedules[DEFAULT_PART]
        if schedule.kind != "categorical":
            raise ConfigError(
                f"parts.{DEFAULT_PART}.schedule",
                f"the transformer denoises categorical parts; {type(schedule).__name__} is {schedule.kind}",
            )
        if schedule.num_classes != self.num_classes:
            raise ConfigError(
                "network.num_classes",
                f"is {self.num_classes} but the schedule of part {DEFAULT_PART!r} has {schedule.num_classes} "
                f"classes (parts.{DEFAULT_PART}.schedule)",
            )
        tokens = math.prod(parts[DEFAULT_PART].shape)
        if tokens != self.length:
            raise ConfigError(
                f"parts.{DEFAULT_PART}.shape",
                f"holds {tokens} tokens but network.length is {self.length}",
            )

    def example_input(self, batch: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, self.num_classes, (batch, self.length), generator=generator)


def transformer_training(steps: int) -> TrainConfig:
    """The training set-up the shipped masked methods use for this transformer: Adam at
    10⁻³ after 500 warm-up steps, batches of 32, EMA 0.999, gradients clipped at 1."""
    return TrainConfig(
        steps=steps,
        batch_size=32,
        lr=1e-3,
        warmup_steps=500,
        ema_decay=0.999,
        grad_clip=1.0,
        condition_dropout=0.0,
        checkpoint_every=2000,
        log_every=100,
    )
