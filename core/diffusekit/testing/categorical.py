r"""Exact fixtures for categorical parts: an absorbing reference schedule and a sequence oracle.

:class:`SequenceOracle` holds a distribution over all :math:`V^L` sequences (e.g. a small
Markov chain) and returns the exact posterior marginals

.. math:: p(x_0^i = v \mid x_t) \propto \sum_{x_0:\,x_0^i = v} p(x_0)\prod_j q(x_t^j \mid x_0^j),

which is the optimal clean-token prediction of any process (per-element time included).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor

from diffusekit.prediction import CategoricalPrediction
from diffusekit.schedule import CategoricalSchedule, Corrupted
from diffusekit.state import DEFAULT_PART, align_time, as_parts, part_times


@attrs.frozen
class ReferenceAbsorbing(CategoricalSchedule):
    r"""Absorbing diffusion with :math:`\alpha_t = 1 - t` over ``num_classes - 1`` real tokens and a mask (the last id)."""

    num_classes: int = 4
    absorbing: ClassVar[bool] = True

    @property
    def mask_token(self) -> int:  # type: ignore[override]
        return self.num_classes - 1

    def keep_probability(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def d_keep_probability(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def time_from_keep(self, alpha: Tensor) -> Tensor:
        return 1.0 - alpha

    def corrupt(self, x0: Tensor, t: Tensor, generator=None) -> Corrupted:
        alpha = align_time(self.keep_probability(torch.as_tensor(t, dtype=torch.float64, device=x0.device)), x0)
        keep = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64) < alpha
        return Corrupted(torch.where(keep, x0, torch.full_like(x0, self.mask_token)))

    def prior(self, shape, *, t=1.0, generator=None, device=None, dtype=torch.float32) -> Tensor:
        return torch.full(tuple(shape), self.mask_token, dtype=torch.long, device=device)

    def likelihood(self, x_t: Tensor, keep_s, keep_t) -> Tensor:
        ratio = torch.as_tensor(keep_t, dtype=torch.float64) / torch.as_tensor(keep_s, dtype=torch.float64).clamp_min(
            1e-300
        )
        ratio = (ratio.unsqueeze(-1) if ratio.ndim else ratio).float()
        onehot = torch.nn.functional.one_hot(x_t, self.num_classes).float()
        is_mask = (x_t == self.mask_token).float().unsqueeze(-1)
        return ratio * onehot + (1.0 - ratio) * is_mask

    def marginal(self, probs_x0: Tensor, keep) -> Tensor:
        keep = torch.as_tensor(keep, dtype=probs_x0.dtype, device=probs_x0.device)
        keep = keep.unsqueeze(-1) if keep.ndim else keep
        mask = torch.zeros(self.num_classes, dtype=probs_x0.dtype, device=probs_x0.device)
        mask[-1] = 1.0
        return keep * probs_x0 + (1.0 - keep) * mask


@attrs.frozen(eq=False)
class SequenceOracle:
    """The exact denoiser of a distribution over short sequences (single part ``"x"``)."""

    sequences: Tensor  # (N, L) clean token ids
    log_probs: Tensor  # (N,)
    schedule: CategoricalSchedule
    time_conditioned: bool = False

    @classmethod
    def markov_chain(cls, schedule: CategoricalSchedule, length: int, vocab: int, seed: int = 0) -> SequenceOracle:
        """A random Markov chain over ``vocab`` real tokens, enumerated over all sequences of ``length``."""
        g = torch.Generator().manual_seed(seed)
        start = torch.softmax(torch.randn(vocab, generator=g, dtype=torch.float64) * 1.5, 0)
        move = torch.softmax(torch.randn(vocab, vocab, generator=g, dtype=torch.float64) * 1.5, 1)
        sequences = torch.tensor(list(itertools.product(range(vocab), repeat=length)), dtype=torch.long)
        log_p = torch.log(start[sequences[:, 0]]) + torch.log(move[sequences[:, :-1], sequences[:, 1:]]).sum(1)
        return cls(sequences, log_p, schedule)

    @property
    def schedules(self) -> Mapping[str, CategoricalSchedule]:
        return {DEFAULT_PART: self.schedule}

    def __call__(self, x, t, condition=None, coef: Mapping[str, Any] | None = None):
        parts = as_parts(x)
        tokens = parts[DEFAULT_PART]
        times = part_times(t, parts, device=tokens.device)
        c = coef[DEFAULT_PART] if coef is not None else self.schedule.coefficients(times[DEFAULT_PART]).align(tokens)
        k = self.schedule.num_classes
        keep = torch.as_tensor(c.keep_probability, dtype=torch.float64)
        keep = keep.expand(tokens.shape) if keep.ndim else keep
        # q(x_t^j | x0^j = v) for every candidate clean token v: (B, L, K)
        onehots = torch.eye(k, dtype=torch.float64)
        if isinstance(keep, Tensor) and keep.ndim:
            q = self.schedule.marginal(onehots[None, None], keep[..., None])  # (B, L, K_x0, K_xt)
        else:
            q = self.schedule.marginal(onehots, float(keep))[None, None].expand(*tokens.shape, k, k)
        rows, inverse = tokens, None
        if not (isinstance(keep, Tensor) and keep.ndim):
            # one noise level for all rows: the posterior depends on the tokens alone, so
            # each distinct row is computed once (most rows agree early in a sampling run)
            rows, inverse = torch.unique(tokens, dim=0, return_inverse=True)
            q = q[: rows.shape[0]]
        q_obs = q.gather(-1, rows[..., None, None].expand(*rows.shape, k, 1)).squeeze(-1)  # (B, L, K_x0)
        seq = self.sequences
        # log weight of each clean sequence for each batch row: (B, N)
        picked = torch.log(q_obs.clamp_min(1e-300))[:, torch.arange(seq.shape[1])[None, :], seq].sum(-1)
        weights = torch.softmax(self.log_probs[None] + picked, dim=1)
        marginals = torch.einsum("bn,nlk->blk", weights, onehots[seq])
        logits = torch.log(marginals.clamp_min(1e-300)).float()
        if inverse is not None:
            logits = logits[inverse]
        pred = CategoricalPrediction(logits, tokens, c)
        return pred if isinstance(x, Tensor) else {DEFAULT_PART: pred}

    def distribution(self) -> Tensor:
        return torch.exp(self.log_probs)

    def empirical(self, samples: Tensor) -> Tensor:
        """The empirical distribution of ``samples`` (B, L) over ``sequences`` (samples outside count nowhere)."""
        vocab = int(self.sequences.max()) + 1
        length = self.sequences.shape[1]
        codes = (samples * (vocab ** torch.arange(length - 1, -1, -1))).sum(1)
        valid = (samples < vocab).all(1)
        counts = torch.bincount(codes[valid], minlength=vocab**length).to(torch.float64)
        return counts / len(samples)
