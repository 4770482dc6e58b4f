r"""Samplers for categorical parts.

* :class:`Ancestral` — the exact reverse step :math:`q(x_s \mid x_t, \hat p)` of any process
  here (D3PM, Austin et al., 2021; MDLM, Sahoo et al., 2024);
* :class:`CachedAncestral` — the same distribution, reusing the last prediction when no
  token changed and the network ignores time (MDLM's ``ddpm_cache``);
* :class:`FirstHitting` — jumps straight to the next time a token unmasks and unmasks
  it (Zheng et al., "Masked Diffusion Models are Secretly Time-Agnostic Masked Models
  and Exploit Inaccurate Categorical Sampling", 2024): the same distribution as the
  step-by-step sampler, one network call per token;
* :class:`OrderedDecoding` and its variants — unmask the schedule's share of masked
  tokens per step in an order chosen by the model: by confidence (MaskGIT, Chang et
  al., 2022; LLaDA's low-confidence remasking, Nie et al., 2025), by the top-2
  probability margin (the adaptive order of Kim et al., "Train for the Worst, Plan for
  the Best", 2025), or at random (vanilla masked-diffusion decoding);
* :class:`SemiAutoregressive` — blocks left to right, diffusion inside each block
  (Arriola et al., BD3-LM, 2025; LLaDA): a per-token time plan run by an inner sampler.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import attrs
import torch
from attrs import validators as v
from diffusekit import Sampler, ShapeError, Step, TimePlan, get_registry, rng
from diffusekit.sampler import StepTimes
from torch import Tensor


def draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One sample per row of ``probs`` (..., K) by inverting the CDF with the given generator."""
    u = rng.rand(probs.shape[:-1], generator=generator, device=probs.device, dtype=probs.dtype)
    cdf = probs.cumsum(-1)
    index = (cdf < (u * cdf[..., -1]).unsqueeze(-1)).sum(-1)
    return index.clamp_max(probs.shape[-1] - 1)


def _absorbing(denoiser, part: str):
    schedule = denoiser.schedules[part]
    if not getattr(schedule, "absorbing", False):
        raise ShapeError(f"this sampler needs an absorbing (mask) process; part {part!r} has {type(schedule).__name__}")
    return schedule


@attrs.frozen
class Ancestral(Sampler):
    r"""Ancestral sampling: :math:`x_s \sim q(x_s \mid x_t, \hat p_\theta(x_0 \mid x_t))` for any process.

    Order 1 in time; one evaluation per step; exact as the steps shrink.
    """

    supports: ClassVar[frozenset[str]] = frozenset({"categorical"})
    stochastic: ClassVar[bool] = True

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        pred = denoiser(x, times.t_from, condition, times.c_from)
        out = {}
        for p, xp in x.items():
            posterior = denoiser.schedules[p].posterior(xp, pred[p].probs, times.c_to[p], times.c_from[p])
            out[p] = draw(posterior, generator)
        return Step(out, pred)


@attrs.frozen(eq=False)
class Cache:
    """The last evaluation of :class:`CachedAncestral`: the input it was made at and its predictions."""

    x: dict[str, Tensor]
    predictions: dict[str, Any]


def _rows(value, rows: Tensor, batch: int):
    """The selected batch rows of a time, coefficient or condition (broadcast ones unchanged)."""
    if isinstance(value, Tensor):
        return value[rows] if value.ndim and value.shape[0] == batch else value
    if hasattr(value, "map_tensors"):
        return value.map_tensors(lambda v: v[rows] if v.ndim and v.shape[0] == batch else v)
    return value.take(rows) if value is not None else None


@attrs.frozen
class CachedAncestral(Sampler):
    r"""Ancestral sampling that skips the network for samples that did not change (MDLM's ``ddpm_cache``, Sahoo et al., 2024).

    If the network does not read the time (``time_conditioned`` false), a prediction is
    a function of the tokens only, so a sample whose tokens did not change since the
    last evaluation reuses it: only the changed samples are evaluated (none at all when
    nothing changed). The same distribution as :class:`Ancestral`; when steps
    outnumber tokens, most steps change no token of a given sample.
    """

    supports: ClassVar[frozenset[str]] = frozenset({"categorical"})
    stochastic: ClassVar[bool] = True

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry: Cache | None) -> Step:
        if carry is None or getattr(denoiser, "time_conditioned", True):
            pred = denoiser(x, times.t_from, condition, times.c_from)
        else:
            batch = next(iter(x.values())).shape[0]
            changed = torch.zeros(batch, dtype=torch.bool, device=next(iter(x.values())).device)
            for p, xp in x.items():
                changed |= (carry.x[p] != xp).reshape(batch, -1).any(1)
            pred = carry.predictions
            if bool(changed.any()):
                fresh = denoiser(
                    {p: xp[changed] for p, xp in x.items()},
                    {p: _rows(t, changed, batch) for p, t in times.t_from.items()},
                    _rows(condition, changed, batch),
                    {p: _rows(c, changed, batch) for p, c in times.c_from.items()},
                )
                merged = {}
                for p, old in pred.items():
                    value = old.value.clone()
                    value[changed] = fresh[p].value
                    merged[p] = old.with_value(value)
                pred = merged
        out = {}
        for p, xp in x.items():
            posterior = denoiser.schedules[p].posterior(xp, pred[p].probs, times.c_to[p], times.c_from[p])
            out[p] = draw(posterior, generator)
        return Step(out, pred, Cache(x, pred))  # the input the predictions belong to


def _per_sample(value, x: Tensor, eligible: Tensor) -> Tensor:
    """A time or keep-probability (float, or aligned with ``x``) as one value per sample, ``(B,)``.

    Per-element values are read at the sample's eligible (masked and moving) tokens,
    which share one value in the plans these samplers run.
    """
    value = torch.as_tensor(value, dtype=torch.float64, device=x.device)
    if value.ndim == 0:
        return value.expand(x.shape[0]).clone()
    full = value.reshape(*value.shape, *([1] * (x.ndim - value.ndim))).expand(x.shape)
    picked = torch.where(eligible, full, torch.full_like(full, -torch.inf)).reshape(x.shape[0], -1).amax(1)
    return torch.where(torch.isfinite(picked), picked, full.reshape(x.shape[0], -1)[:, 0])


def _eligible(tokens: Tensor, mask_token: int, fixed) -> Tensor:
    """Masked tokens whose time moves in this step."""
    masked = tokens == mask_token
    if fixed is True:
        return torch.zeros_like(masked)
    if fixed is False:
        return masked
    return masked & ~fixed.expand(tokens.shape)


@attrs.frozen
class FirstHitting(Sampler):
    r"""The first-hitting sampler (Zheng et al., 2024, Alg. 1) for absorbing processes.

    With n tokens masked at time t, the next one unmasks at s with
    :math:`(1-\alpha_s)/(1-\alpha_t) = u^{1/n}`, :math:`u \sim U(0, 1)`; that token is one of
    the n, chosen uniformly, and takes a value from :math:`\hat p_\theta(x_0 \mid x_s)`. Each
    step of a plan runs the jumps that fall inside it: exactly the reverse process, one
    network call per unmasked token whatever the number of steps. Masked tokens of a
    sample share one time.
    """

    supports: ClassVar[frozenset[str]] = frozenset({"categorical"})
    stochastic: ClassVar[bool] = True
    evaluations_per_step: ClassVar[int] = 0

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        (part,) = x  # one categorical part
        schedule = _absorbing(denoiser, part)
        tokens = x[part].clone()
        m = schedule.mask_token
        eligible = _eligible(tokens, m, times.fixed[part])
        t = _per_sample(times.t_from[part], tokens, eligible)
        end = _per_sample(times.t_to[part], tokens, eligible)
        batch = tokens.shape[0]
        flat = tokens.reshape(batch, -1)
        open_ = eligible.reshape(batch, -1)
        pred = None
        while True:
            n = ((flat == m) & open_).sum(1)
            u = rng.rand((batch,), generator=generator, dtype=torch.float64, device=tokens.device)
            alpha_t = schedule.keep_probability(t)
            alpha_s = 1.0 - (1.0 - alpha_t) * u ** (1.0 / n.clamp_min(1).to(torch.float64))
            s = schedule.time_from_keep(alpha_s)
            active = (n > 0) & (s > end)
            if not bool(active.any()):
                break
            t = torch.where(active, s, t)
            pred = denoiser({part: flat.reshape(tokens.shape)}, {part: t}, condition)
            probs = pred[part].probs.reshape(batch, flat.shape[1], -1)
            # one masked position per active sample, uniformly among its masked tokens
            weights = ((flat == m) & open_).to(torch.float64)
            position = draw(weights.clamp_min(0) + (~active)[:, None].to(torch.float64), generator)
            # a jump unmasks: never to the mask itself (SUBS gives it no mass anyway), so every
            # jump unmasks one token and the loop ends
            value = draw(
                probs[torch.arange(batch), position].index_fill(-1, torch.tensor([m], device=probs.device), 0.0),
                generator,
            )
            flat = flat.clone()
            flat[active, position[active]] = value[active]
        out = flat.reshape(tokens.shape)
        return Step({part: out}, pred if pred is not None else {})

    def sample(self, denoiser, x, plan, **kwargs):
        """With scalar times only the plan's ends matter: the jumps are not tied to grid points."""
        from diffusekit.sampler import TimeGrid

        if isinstance(plan, TimeGrid):
            plan = TimePlan.from_grid(plan, denoiser.schedules)
        if all(t.ndim == 0 for entry in (plan[0], plan[-1]) for t in entry.values()) and all(
            t.ndim == 0 for entry in plan.entries for t in entry.values()
        ):
            plan = TimePlan((plan[0], plan[-1]))
        return super().sample(denoiser, x, plan, **kwargs)


@attrs.frozen
class OrderedDecoding(Sampler):
    r"""Parallel decoding in a model-chosen order (absorbing processes).

    Each step unmasks :math:`k = \mathrm{round}(n(\alpha_s - \alpha_t)/(1 - \alpha_t))` of the n
    masked tokens (all at the last step; ``tokens_per_step`` > 0 fixes k instead), the
    ones with the highest score: ``confidence`` — the probability of the chosen token
    (MaskGIT; LLaDA's low-confidence remasking); ``margin`` — the gap between the top
    two probabilities (the adaptive order of Kim et al., 2025); ``random`` — uniformly
    at random (vanilla masked-diffusion decoding). Tokens are the argmax
    (``temperature = 0``) or sampled at ``temperature``.
    """

    order_by: Literal["confidence", "margin", "random"] = "confidence"
    temperature: float = attrs.field(default=0.0, validator=v.ge(0.0))
    tokens_per_step: int = attrs.field(default=0, validator=v.ge(0))
    supports: ClassVar[frozenset[str]] = frozenset({"categorical"})

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.temperature > 0 or self.order_by == "random"

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        if not any(
            bool(_eligible(xp, _absorbing(denoiser, p).mask_token, times.fixed[p]).any()) for p, xp in x.items()
        ):
            return Step(dict(x), {})  # nothing left to decode: no network call
        pred = denoiser(x, times.t_from, condition, times.c_from)
        out = {}
        for p, xp in x.items():
            schedule = _absorbing(denoiser, p)
            m = schedule.mask_token
            probs = pred[p].probs
            if self.temperature > 0:
                choice = draw(torch.softmax(torch.log(probs.clamp_min(1e-30)) / self.temperature, -1), generator)
            else:
                choice = probs.argmax(-1)
            chosen_p = probs.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
            if self.order_by == "margin":
                top2 = probs.topk(2, dim=-1).values
                score = top2[..., 0] - top2[..., 1]
            elif self.order_by == "random":
                score = rng.rand(xp.shape, generator=generator, device=xp.device)
            else:
                score = chosen_p
            eligible = _eligible(xp, m, times.fixed[p])
            batch = xp.shape[0]
            flat_masked = eligible.reshape(batch, -1)
            n = flat_masked.sum(1)
            alpha_t = _per_sample(times.c_from[p].keep_probability, xp, eligible)
            alpha_s = _per_sample(times.c_to[p].keep_probability, xp, eligible)
            share = ((alpha_s - alpha_t) / (1.0 - alpha_t).clamp_min(1e-12)).clamp(0.0, 1.0)
            k = torch.round(n.to(torch.float64) * share).long()
            if self.tokens_per_step:
                k = torch.full_like(k, self.tokens_per_step)
            k = torch.where(alpha_s >= 1.0, n, k.clamp(max=n))  # the last step unmasks everything
            flat_score = score.reshape(batch, -1).float().masked_fill(~flat_masked, -torch.inf)
            rank = flat_score.argsort(dim=1, descending=True).argsort(dim=1)
            pick = (rank < k[:, None]) & flat_masked
            out[p] = torch.where(pick.reshape(xp.shape), choice, xp)
        return Step(out, pred)


@attrs.frozen
class ConfidenceDecoding(OrderedDecoding):
    """Confidence-ordered parallel decoding (MaskGIT, Chang et al., 2022; LLaDA low-confidence remasking, Nie et al., 2025)."""

    order_by: Literal["confidence", "margin", "random"] = "confidence"


@attrs.frozen
class AdaptiveDecoding(OrderedDecoding):
    """Adaptive order: unmask where the top-2 probability margin is largest (Kim et al., "Train for the Worst, Plan for the Best", 2025)."""

    order_by: Literal["confidence", "margin", "random"] = "margin"


@attrs.frozen
class RandomOrderDecoding(OrderedDecoding):
    """Vanilla masked-diffusion decoding: the schedule's share of tokens per step, at random positions (e.g. Sahoo et al., 2024)."""

    order_by: Literal["confidence", "margin", "random"] = "random"
    temperature: float = attrs.field(default=1.0, validator=v.ge(0.0))


@attrs.frozen
class SemiAutoregressive(Sampler):
    r"""Semi-autoregressive block decoding (Arriola et al., BD3-LM, 2025; Nie et al., LLaDA, 2025).

    The last dimension is cut into blocks of ``block_size`` tokens; block b is held at
    t = 1 until blocks before it are done, then follows the plan (one plan per block),
    run by the ``inner`` sampler. A time plan with per-token times — no new sampler
    maths.
    """

    block_size: int = attrs.field(default=16, validator=v.ge(1))
    inner: str = "masked:confidence"
    supports: ClassVar[frozenset[str]] = frozenset({"categorical"})

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return bool(self._inner().stochastic)

    def _inner(self) -> Sampler:
        return get_registry().resolve("sampler", self.inner).obj()

    def update(self, denoiser, x, times, *, condition, generator, carry) -> Step:
        return self._inner().update(denoiser, x, times, condition=condition, generator=generator, carry=carry)

    def block_plan(self, plan: TimePlan, shapes: dict[str, tuple[int, ...]]) -> TimePlan:
        """The per-token plan: ``plan`` run once per block, the blocks left to right."""
        entries = []
        for name, shape in shapes.items():
            length = shape[-1]
            blocks = -(-length // self.block_size)
            block_of = torch.arange(length) // self.block_size
            for b in range(blocks):
                for i in range(0 if b == 0 else 1, plan.steps + 1):  # a block's first entry is the last one's end
                    t = plan[i][name]
                    row = torch.where(block_of < b, torch.zeros(()), torch.where(block_of == b, t, torch.ones(())))
                    entries.append({name: row.to(torch.float64).reshape(*([1] * (len(shape) - 1)), length)})
        return TimePlan(tuple(entries))

    def sample(self, denoiser, x, plan, **kwargs):
        from diffusekit.sampler import TimeGrid
        from diffusekit.state import as_parts, part_shapes

        if isinstance(plan, TimeGrid):
            plan = TimePlan.from_grid(plan, denoiser.schedules)
        shapes = (
            {k: tuple(v.shape) for k, v in as_parts(x).items()}
            if isinstance(x, (Tensor, dict))
            and (isinstance(x, Tensor) or all(isinstance(v, Tensor) for v in x.values()))
            else part_shapes(x)
        )
        return self._inner().sample(denoiser, x, self.block_plan(plan, shapes), **kwargs)
