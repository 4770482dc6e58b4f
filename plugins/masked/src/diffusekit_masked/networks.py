"""A bidirectional transformer denoiser for token sequences."""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
from attrs import validators as v
from diffusekit import ClassLabel, Condition, Network, ShapeError
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
        else:
            self.positions = nn.Parameter(torch.randn(spec.length, d) * 0.02)
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
        batch, shape = x.shape[0], x.shape[1:]
        flat = x.reshape(batch, -1)
        length = flat.shape[1]
        if length != self.spec.length:
            raise ShapeError(f"this transformer takes {self.spec.length} tokens per sample, got {length}")
        h = self.tokens(flat)
        if self.spec.positions == "sudoku":
            h = h + self.rows(self.cell_rc[0]) + self.cols(self.cell_rc[1]) + self.boxes(self.cell_rc[2])
        else:
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
            elif isinstance(condition, ClassLabel):
                index = condition.embedding_index()
            else:
                raise TypeError(f"this transformer is conditioned on class labels, got {type(condition).__name__}")
            h = h + self.labels(index)[:, None]
        logits = self.head(self.norm(self.encoder(h)))
        return logits.reshape(batch, *shape, -1)


@attrs.frozen
class Transformer(Network):
    """A pre-norm bidirectional transformer (Vaswani et al., 2017; as in MDLM's DiT backbone, without the DiT blocks).

    ``positions`` are learned per index, or for 9×9 grids the sum of row, column and box
    embeddings. ``time_conditioned`` adds an embedding of the noise level (per sample or
    per token); masked-diffusion denoisers work without it (Zheng et al., 2024), which
    lets the cached sampler skip calls. ``num_labels`` > 0 adds class conditioning with
    a null label for classifier-free guidance.
    """

    num_classes: int = attrs.field(default=10, validator=v.ge(2))
    length: int = attrs.field(default=16, validator=v.ge(1))
    d_model: int = attrs.field(default=64, validator=v.ge(8))
    layers: int = attrs.field(default=2, validator=v.ge(1))
    heads: int = attrs.field(default=4, validator=v.ge(1))
    dropout: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.lt(1.0)])
    positions: Literal["learned", "sudoku"] = "learned"
    time_conditioned: bool = False
    num_labels: int = attrs.field(default=0, validator=v.ge(0))

    def build(self) -> nn.Module:
        return TransformerModule(self)

    def example_input(self, batch: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, self.num_classes, (batch, self.length), generator=generator)
