r"""Remasking, path-planning and search samplers for absorbing (masked) diffusion.

* :class:`ReMDM` — the remasking reverse step of Wang et al., "Remasking Discrete Diffusion
  Models with Inference-Time Scaling" (2025): decoded tokens may return to the mask, so
  later steps can revise them; ``cap``, ``rescale``, ``conf`` and ``loop`` strategies.
* :class:`PathPlanning` — P2 (Peng et al., "Path Planning for Masked Diffusion Model
  Sampling", 2025): a planner scores every position, the top ones are kept or decoded and
  the rest (decoded ones included) are masked.
* :class:`BeamSearch` and :class:`SMC` — K candidate decodings per sample, scored by the
  log-probability the model gave to each token it decoded (the chain rule along the
  decoding order), kept by beam search or resampled by sequential Monte Carlo.

All are generic: they read nothing but the denoiser's clean-token probabilities, and
they never touch tokens whose time does not move (given tokens, ``TimePlan.hold``).
Everything a later step needs travels in ``Step.carry``; the sampler objects hold only
their settings.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import attrs
import torch
from attrs import validators as v
from diffusekit import Sampler, Step, rng
from diffusekit.sampler import StepTimes, coefficients_at
from torch import Tensor

from diffusekit_masked.samplers import _absorbing, _eligible, _per_sample, _rows, draw

F64 = torch.float64


def _moving(tokens: Tensor, fixed) -> Tensor:
    """Elements whose time changes in this step (the only ones a step may change)."""
    if fixed is True:
        return torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
    if fixed is False:
        return torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device)
    return ~fixed.expand(tokens.shape)


def _keep(coef, like: Tensor) -> Tensor:
    """The keep-probability of a coefficient record as float64, broadcast to ``like``."""
    return torch.as_tensor(coef.keep_probability, dtype=F64, device=like.device).expand(like.shape)


def _unmask_counts(tokens: Tensor, eligible: Tensor, c_from, c_to, tokens_per_step: int) -> tuple[Tensor, Tensor]:
    r"""Per sample: how many masked tokens this step decodes, and how many are masked.

    :math:`k = \mathrm{round}(n(\alpha_s - \alpha_t)/(1 - \alpha_t))` of the n eligible
    masked tokens (the expected share of the exact reverse step), ``tokens_per_step``
    if positive, and all of them when :math:`\alpha_s = 1`.
    """
    batch = tokens.shape[0]
    n = eligible.reshape(batch, -1).sum(1)
    alpha_t = _per_sample(c_from.keep_probability, tokens, eligible)
    alpha_s = _per_sample(c_to.keep_probability, tokens, eligible)
    share = ((alpha_s - alpha_t) / (1.0 - alpha_t).clamp_min(1e-12)).clamp(0.0, 1.0)
    k = torch.round(n.to(F64) * share).long()
    if tokens_per_step:
        k = torch.full_like(k, tokens_per_step)
    return torch.where(alpha_s >= 1.0, n, k.clamp(max=n)), n


def _real_log_probs(prediction, mask_token: int) -> Tensor:
    """Log-probabilities over the real tokens (the mask gets none), float64."""
    logits = prediction.value.to(F64).clone()
    logits[..., mask_token] = -torch.inf
    return torch.log_softmax(logits, -1)


# --- ReMDM ------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class Confidences:
    """The carry of :class:`ReMDM` (``conf``): per part, the tokens it returned and the
    probability the model gave each decoded token when it was decoded (NaN: unknown)."""

    x: dict[str, Tensor]
    psi: dict[str, Tensor]


@attrs.frozen
class ReMDM(Sampler):
    r"""ReMDM remasking sampler (Wang, Schiff, Sahoo & Kuleshov, "Remasking Discrete Diffusion
    Models with Inference-Time Scaling", 2025) for absorbing processes.

    MDLM's reverse step never changes a decoded token. ReMDM uses the posterior of a
    non-Markovian forward process with remasking probability :math:`\sigma_t`,

    .. math::
        q_\sigma(z_s \mid z_t = x) = (1-\sigma_t)\,\delta_x + \sigma_t\,\delta_m,\qquad
        q_\sigma(z_s \mid z_t = m) = \frac{\alpha_s - (1-\sigma_t)\alpha_t}{1-\alpha_t}\,\hat p_\theta(x_0 \mid z_t)
        + \frac{1 - \alpha_s - \sigma_t\alpha_t}{1-\alpha_t}\,\delta_m,

    valid for :math:`0 \le \sigma_t \le \sigma_t^{max} = \min(1, (1-\alpha_s)/\alpha_t)`. For
    every :math:`\sigma_t` a token decoded with probability :math:`\alpha_t` at t is decoded
    with probability :math:`\alpha_t(1-\sigma_t) + (\alpha_s - (1-\sigma_t)\alpha_t) = \alpha_s`
    at s: the marginals :math:`q(z_s \mid x_0)` are MDLM's, so with an exact denoiser and
    small steps the samples follow the data distribution; :math:`\sigma_t = 0` is MDLM.

    ``strategy``:

    * ``cap`` — :math:`\sigma_t = \min(\eta, \sigma_t^{max})`;
    * ``rescale`` — :math:`\sigma_t = \eta\,\sigma_t^{max}`;
    * ``conf`` — :math:`\sigma_t^{(\ell)} = \sigma_t^{max}\,\mathrm{softmax}_\ell(-\psi^{(\ell)})` over
      the decoded (moving) tokens ℓ of a sample, ψ the probability the model gave a token
      when it was decoded (kept in ``Step.carry``; where unknown — the first step, a state
      decoded elsewhere — the current prediction's probability of the token, which is 1
      under carry-over parameterizations); masked tokens unmask as in MDLM (σ = 0). Not
      marginal-preserving: it spends the remasking budget on the least confident tokens;
      ``eta`` is unused;
    * ``loop`` — ReMDM-loop: plan times are warped so that the denoising runs MDLM from
      t = 1 to ``t_on``, holds :math:`\alpha = \alpha(t_{on})` while the plan's time lies in
      [``t_off``, ``t_on``] and remasks there with :math:`\sigma = \min(\eta, \sigma^{max})`
      (with :math:`\alpha_s = \alpha_t`: unmasking probability :math:`\sigma\alpha/(1-\alpha)`,
      a corrector that leaves the marginal at :math:`\alpha` unchanged), then runs MDLM from
      ``t_on`` to 0 over the plan's [0, ``t_off``].

    One network call per step. Per-element times are followed element by element.
    """

    strategy: Literal["cap", "rescale", "conf", "loop"] = "cap"
    eta: float = attrs.field(default=0.02, validator=[v.ge(0.0), v.le(1.0)])
    t_on: float = attrs.field(default=0.55, validator=[v.gt(0.0), v.le(1.0)])
    t_off: float = attrs.field(default=0.05, validator=[v.ge(0.0), v.lt(1.0)])
    supports: ClassVar[frozenset[str]] = frozenset({"categorical"})

    def __attrs_post_init__(self) -> None:
        if self.t_off >= self.t_on:
            raise ValueError(f"t_off ({self.t_off}) must be below t_on ({self.t_on})")

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        # cap, rescale and loop keep MDLM's marginals; conf does not (see the class docstring)
        return self.strategy != "conf"

    def _warp(self, t) -> Tensor:
        """ReMDM-loop's time: [t_on, 1] unchanged, [t_off, t_on] held at t_on, [0, t_off] stretched onto [0, t_on]."""
        t = torch.as_tensor(t, dtype=F64)
        inner = t * (self.t_on / self.t_off) if self.t_off > 0 else torch.zeros_like(t)
        return torch.where(t >= self.t_on, t, torch.where(t <= self.t_off, inner, torch.full_like(t, self.t_on)))

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        t_from, t_to, c_from, c_to = times.t_from, times.t_to, times.c_from, times.c_to
        if self.strategy == "loop":
            t_from = {p: self._warp(t) for p, t in times.t_from.items()}
            t_to = {p: self._warp(t) for p, t in times.t_to.items()}
            schedules = denoiser.schedules
            c_from = {p: coefficients_at(schedules[p], t_from[p], times.c_from[p], x[p]) for p in x}
            c_to = {p: coefficients_at(schedules[p], t_to[p], times.c_to[p], x[p]) for p in x}
        pred = denoiser(x, t_from, condition, c_from)
        out, psi_out = {}, {}
        for p, xp in x.items():
            m = _absorbing(denoiser, p).mask_token
            moving = _moving(xp, times.fixed[p])
            masked = xp == m
            decoded = moving & ~masked
            a_t, a_s = _keep(c_from[p], xp), _keep(c_to[p], xp)
            sigma_max = torch.where(a_t > 0, (1.0 - a_s) / a_t.clamp_min(1e-300), torch.ones_like(a_t)).clamp(0.0, 1.0)
            probs = pred[p].probs
            if self.strategy == "conf":
                sigma = self._confidence_sigma(xp, probs, decoded, moving, sigma_max, carry, p)
                unmask = (a_s - a_t) / (1.0 - a_t).clamp_min(1e-300)  # masked tokens: MDLM's step (σ = 0)
            else:
                sigma = self._sigma(sigma_max, times, p, xp)
                unmask = (a_s - (1.0 - sigma) * a_t) / (1.0 - a_t).clamp_min(1e-300)
            sigma = torch.where(decoded, sigma, torch.zeros_like(sigma))
            unmask = torch.where(a_s >= 1.0, torch.ones_like(unmask), unmask.clamp(0.0, 1.0))
            u = rng.rand(xp.shape, generator=generator, device=xp.device, dtype=F64)
            real = probs.clone()
            real[..., m] = 0.0  # an unmasking step never draws the mask
            value = draw(real, generator)
            new = torch.where(decoded & (u < sigma), torch.full_like(xp, m), xp)
            fresh = moving & masked & (u < unmask)
            new = torch.where(fresh, value, new)
            out[p] = new
            if self.strategy == "conf":
                old = self._known_psi(carry, p, xp)
                picked = real.gather(-1, value.unsqueeze(-1)).squeeze(-1).to(F64)
                psi = torch.where(fresh, picked, torch.where(new == m, torch.full_like(old, torch.nan), old))
                psi_out[p] = psi
        return Step(out, pred, Confidences(out, psi_out) if self.strategy == "conf" else None)

    def _sigma(self, sigma_max: Tensor, times: StepTimes, p: str, xp: Tensor) -> Tensor:
        """σ of the cap, rescale and loop strategies at every element (equal times, equal σ)."""
        if self.strategy == "cap":
            return sigma_max.clamp(max=self.eta)
        if self.strategy == "rescale":
            return self.eta * sigma_max
        # loop: remask only in steps inside [t_off, t_on] of the plan's own time
        raw_from = torch.as_tensor(times.t_from[p], dtype=F64, device=xp.device)
        raw_to = torch.as_tensor(times.t_to[p], dtype=F64, device=xp.device)
        inside = (raw_from <= self.t_on) & (raw_to >= self.t_off)
        inside = inside.reshape(*inside.shape, *([1] * (xp.ndim - inside.ndim))).expand(xp.shape)
        return torch.where(inside, sigma_max.clamp(max=self.eta), torch.zeros_like(sigma_max))

    @staticmethod
    def _known_psi(carry, p: str, xp: Tensor) -> Tensor:
        """The recorded confidences if the carry belongs to these tokens, else all unknown."""
        if isinstance(carry, Confidences) and p in carry.psi and carry.x[p].shape == xp.shape:
            same = carry.x[p] == xp
            return torch.where(same, carry.psi[p], torch.full_like(carry.psi[p], torch.nan))
        return torch.full(xp.shape, torch.nan, dtype=F64, device=xp.device)

    def _confidence_sigma(self, xp, probs, decoded, moving, sigma_max, carry, p) -> Tensor:
        """ReMDM-conf: the sample's budget σ_max spread over its decoded tokens by softmax(−ψ)."""
        psi = self._known_psi(carry, p, xp)
        current = probs.gather(-1, xp.clamp(0, probs.shape[-1] - 1).unsqueeze(-1)).squeeze(-1).to(F64)
        psi = torch.where(torch.isnan(psi), current, psi)
        batch = xp.shape[0]
        logits = torch.where(decoded, -psi, torch.full_like(psi, -torch.inf)).reshape(batch, -1)
        weights = torch.softmax(logits, 1).nan_to_num(0.0).reshape(xp.shape)  # no decoded token: no budget
        budget = _per_sample(sigma_max, xp, moving).reshape(batch, *([1] * (xp.ndim - 1)))
        return budget * weights


# --- P2 path planning -------------------------------------------------------------------------


def _rank(score: Tensor, prefer: Tensor) -> Tensor:
    """Each element's rank by descending ``score`` within its row, ties broken in favour of ``prefer``
    and then by position (two stable sorts)."""
    first = torch.argsort(prefer.to(torch.int8), dim=1, descending=True, stable=True)
    second = torch.argsort(score.gather(1, first), dim=1, descending=True, stable=True)
    order = first.gather(1, second)
    rank = torch.empty_like(order)
    return rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order).contiguous())


@attrs.frozen
class PathPlanning(Sampler):
    r"""P2 path planning with self-planning (Peng et al., "Path Planning for Masked Diffusion
    Model Sampling", 2025) for absorbing processes.

    Each step the denoiser predicts every position; masked positions propose a token
    :math:`y_i` (the argmax, ``temperature = 0``, or a draw at ``temperature``). A planner
    scores every moving position: a masked one by :math:`\log \hat p_\theta(y_i)` (``order_by =
    "confidence"``) or a uniform random key (``"random"``); a decoded one by
    :math:`\eta\,\log p(x_i)`, the planner's log-probability of its current value. With D
    decoded and n masked moving tokens, the step keeps the :math:`D + k` best-scoring
    positions decoded (k as in :class:`~diffusekit_masked.samplers.OrderedDecoding`:
    :math:`\mathrm{round}(n(\alpha_s-\alpha_t)/(1-\alpha_t))`, ``tokens_per_step``, or all at
    :math:`\alpha_s = 1`) and masks the others — so a decoded token whose score falls below a
    masked position's is revised. The count of decoded tokens follows the schedule exactly
    as without remasking; the last step masks nothing. Ties favour decoded tokens.

    ``eta`` (P2's stochasticity strength) scales decoded tokens' scores: 0 never remasks
    (plain ordered decoding), 1 ranks decoded and masked positions alike, larger values
    remask more readily. ``planner``:

    * ``self`` — :math:`p(x_i)` from the same prediction (P2's self-planning, right for
      networks that predict every position, e.g. BERT-style). Under a carry-over
      parameterization (SUBS, the exact oracle) a decoded token predicts itself with
      probability 1, so nothing is ever remasked;
    * ``leave_one_out`` — :math:`p(x_i \mid z \text{ with } i \text{ masked})`: the model's
      own conditional of each decoded token given the others (one more network call per
      step, with one row per decoded token), the self-planning score for carry-over models.

    With ``order_by = "random"``, ``temperature = 1`` and ``eta = 0`` this is random-order
    decoding: the exact reverse process when one token is decoded per step; only that
    configuration is declared ``stochastic`` (a sampler of the model's distribution).
    Greedy and confidence-planned variants are mode-seeking by design.
    """

    order_by: Literal["confidence", "random"] = "confidence"
    temperature: float = attrs.field(default=0.0, validator=v.ge(0.0))
    eta: float = attrs.field(default=1.0, validator=v.ge(0.0))
    planner: Literal["self", "leave_one_out"] = "leave_one_out"
    tokens_per_step: int = attrs.field(default=0, validator=v.ge(0))
    supports: ClassVar[frozenset[str]] = frozenset({"categorical"})

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.order_by == "random" and self.temperature == 1.0 and self.eta == 0.0

    @property
    def evaluations_per_step(self) -> int:  # type: ignore[override]
        return 2 if self.planner == "leave_one_out" and self.eta > 0 else 1

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        pred = denoiser(x, times.t_from, condition, times.c_from)
        out = {}
        for p, xp in x.items():
            m = _absorbing(denoiser, p).mask_token
            batch = xp.shape[0]
            moving = _moving(xp, times.fixed[p])
            eligible = _eligible(xp, m, times.fixed[p])
            decoded = moving & (xp != m)
            logp = _real_log_probs(pred[p], m)
            if self.temperature > 0:
                proposal = draw(torch.softmax(logp / self.temperature, -1), generator)
            else:
                proposal = logp.argmax(-1)
            if self.order_by == "random":
                masked_score = torch.log(rng.rand(xp.shape, generator=generator, device=xp.device, dtype=F64))
            else:
                masked_score = logp.gather(-1, proposal.unsqueeze(-1)).squeeze(-1)
            score = torch.full(xp.shape, -torch.inf, dtype=F64, device=xp.device)
            score = torch.where(eligible, masked_score, score)
            if self.eta > 0 and bool(decoded.any()):
                current = self._decoded_log_probs(denoiser, x, p, xp, decoded, logp, times, condition, m)
                score = torch.where(decoded, self.eta * current, score)
            else:
                score = torch.where(decoded, torch.zeros_like(score), score)
            k, _ = _unmask_counts(xp, eligible, times.c_from[p], times.c_to[p], self.tokens_per_step)
            target = decoded.reshape(batch, -1).sum(1) + k
            rank = _rank(score.reshape(batch, -1), decoded.reshape(batch, -1)).reshape(xp.shape)
            keep = (rank < target.reshape(batch, *([1] * (xp.ndim - 1)))) & moving
            new = torch.where(eligible & keep, proposal, xp)
            out[p] = torch.where(decoded & ~keep, torch.full_like(xp, m), new)
        return Step(out, pred)

    def _decoded_log_probs(self, denoiser, x, p, xp, decoded, logp, times, condition, m) -> Tensor:
        """The planner's log-probability of every decoded token's current value."""
        if self.planner == "self":
            return logp.gather(-1, xp.clamp(0, logp.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
        batch = xp.shape[0]
        flat = xp.reshape(batch, -1)
        sample, position = decoded.reshape(batch, -1).nonzero(as_tuple=True)
        rows = flat[sample].clone()
        rows[torch.arange(len(sample), device=xp.device), position] = m  # leave this one token out
        parts = {q: (rows.reshape(-1, *xp.shape[1:]) if q == p else xq[sample]) for q, xq in x.items()}
        loo = denoiser(
            parts,
            {q: _rows(t, sample, batch) for q, t in times.t_from.items()},
            _rows(condition, sample, batch),
            {q: _rows(c, sample, batch) for q, c in times.c_from.items()},
        )
        row_logp = _real_log_probs(loo[p], m).reshape(len(sample), flat.shape[1], -1)
        value = flat[sample, position]
        picked = row_logp[torch.arange(len(sample), device=xp.device), position, value]
        out = torch.zeros(batch, flat.shape[1], dtype=F64, device=xp.device)
        out[sample, position] = picked
        return out.reshape(xp.shape)


# --- search over decoding orders --------------------------------------------------------------


@attrs.frozen(eq=False)
class Candidates:
    """The carry of :class:`BeamSearch` and :class:`SMC`: K candidate token arrays per sample
    ``(B, K, ...)``, their path log-probabilities ``score`` and log-weights ``log_weight``
    ``(B, K)``, and the state the step returned (to recognise its own carry)."""

    tokens: Tensor
    score: Tensor
    log_weight: Tensor
    x: Tensor


class _Search(Sampler):
    """Shared machinery: K candidates per sample carried in ``Step.carry``, one network call per
    step on all B·K candidates, tokens decoded one at a time from that call's prediction."""

    supports: ClassVar[frozenset[str]] = frozenset({"categorical"})
    tokens_per_step: int

    @property
    def width(self) -> int:
        raise NotImplementedError

    def _start(self, xp: Tensor, carry) -> Candidates:
        if isinstance(carry, Candidates) and carry.x.shape == xp.shape and torch.equal(carry.x, xp):
            return carry
        width, batch = self.width, xp.shape[0]
        tokens = xp.unsqueeze(1).expand(batch, width, *xp.shape[1:]).clone()
        score = torch.zeros(batch, width, dtype=F64, device=xp.device)
        return Candidates(tokens, score, torch.zeros_like(score), xp)

    def _predict(self, denoiser, part, tokens, times, condition, m) -> Tensor:
        """Log-probabilities over real tokens for every candidate: ``(B, K, N, V)``, from one network
        call per candidate slot on the B samples (so a denoiser that completes the state with other
        parts, as ``core:by_kind`` does, sees the batch it expects); the step's prediction is slot 0's."""
        width = tokens.shape[1]
        preds = [denoiser({part: tokens[:, k]}, times.t_from, condition, times.c_from) for k in range(width)]
        logp = torch.stack([_real_log_probs(pred[part], m) for pred in preds], dim=1)
        return preds[0], logp.reshape(*tokens.shape[:2], -1, logp.shape[-1])

    def update(self, denoiser, x, times: StepTimes, *, condition, generator, carry) -> Step:
        (part,) = x  # one categorical part
        m = _absorbing(denoiser, part).mask_token
        xp = x[part]
        state = self._start(xp, carry)
        eligible = _eligible(xp, m, times.fixed[part])
        k, _ = _unmask_counts(xp, eligible, times.c_from[part], times.c_to[part], self.tokens_per_step)
        if not bool((k > 0).any()):
            return Step(x, {}, state)
        batch, width = state.tokens.shape[:2]
        moving = _moving(xp, times.fixed[part]).reshape(batch, 1, -1)
        pred, logp = self._predict(denoiser, part, state.tokens, times, condition, m)
        tokens = state.tokens.reshape(batch, width, -1)
        score, log_weight = state.score, state.log_weight
        for i in range(int(k.max())):
            active = i < k
            open_ = (tokens == m) & moving
            tokens, score, log_weight, logp = self._extend(tokens, score, log_weight, logp, open_, active, generator)
        tokens = tokens.reshape(state.tokens.shape)
        chosen = self._choose(score, log_weight, generator)
        best = tokens[torch.arange(batch, device=xp.device), chosen]
        return Step({part: best}, pred, Candidates(tokens, score, log_weight, best))


def _codes(tokens: Tensor) -> Tensor:
    """A 62-bit code of every token row (two polynomial hashes modulo 31-bit primes) for deduplication."""
    h1 = torch.zeros(tokens.shape[:-1], dtype=torch.long, device=tokens.device)
    h2 = torch.zeros_like(h1)
    for j in range(tokens.shape[-1]):
        h1 = (h1 * 1_000_003 + tokens[..., j] + 1) % 2_147_483_647
        h2 = (h2 * 999_983 + tokens[..., j] + 1) % 2_147_483_629
    return h1 * 2_147_483_648 + h2


@attrs.frozen
class BeamSearch(_Search):
    r"""Beam search over decoding orders and tokens, scored by the model's own likelihood.

    A candidate's score is the sum of the log-probabilities the model gave the tokens it
    decoded, each read from the prediction of the candidate's state before the token
    (network call) it was decoded in: :math:`\sum_j \log \hat p_\theta(x^{i_j} \mid z_{(j)})`.
    With an exact denoiser and one token per network call this is, by the chain rule,
    :math:`\log p(x^{S})` — the marginal log-probability of the decoded tokens S, whatever
    the order (the full sequence: :math:`\log p(x)`; given tokens: :math:`\log p(x \mid
    \text{given})`). Each decoded token expands every beam by every (masked position, real
    token) pair; the ``beams`` best distinct partial sequences survive (a partial sequence
    reached along several orders is kept once, with its best score). Each step decodes k
    tokens (as :class:`~diffusekit_masked.samplers.OrderedDecoding`: the schedule's share,
    ``tokens_per_step``, or all at the last step) from one network call on all B·K beams:
    with k > 1 the later tokens of a step are scored with the step's prediction (the usual
    factorised approximation). The step returns each sample's best beam.

    Deterministic: a mode-seeking search (``stochastic`` is false). The network sees
    B·``beams`` rows per step; with enough beams to keep every partial sequence (at most
    :math:`\max_d \binom{L}{d} V^d`) and an exact denoiser, it returns the most probable
    sequence (or completion of the given tokens).
    """

    beams: int = attrs.field(default=4, validator=v.ge(1))
    tokens_per_step: int = attrs.field(default=0, validator=v.ge(0))
    stochastic: ClassVar[bool] = False

    @property
    def width(self) -> int:
        return self.beams

    def _start(self, xp: Tensor, carry) -> Candidates:
        state = super()._start(xp, carry)
        if state is carry:
            return state
        score = state.score.clone()
        score[:, 1:] = -torch.inf  # one live beam: the K copies are the same sequence
        return Candidates(state.tokens, score, state.log_weight, state.x)

    def _extend(self, tokens, score, log_weight, logp, open_, active, generator):
        batch, width, length = tokens.shape
        vocab = logp.shape[-1]
        total = score[:, :, None, None] + torch.where(open_.unsqueeze(-1), logp, torch.full_like(logp, -torch.inf))
        flat = total.reshape(batch, -1)
        pool = min(flat.shape[1], width * length)  # a sequence has at most `length` parents: enough distinct ones
        values, index = flat.topk(pool, dim=1)
        parent = index // (length * vocab)
        position = (index // vocab) % length
        value = index % vocab
        rows = torch.arange(batch, device=tokens.device)[:, None]
        candidate = tokens[rows, parent].clone()
        candidate.scatter_(2, position.unsqueeze(-1), value.unsqueeze(-1))
        valid = torch.isfinite(values)
        # a sequence met before in score order is a duplicate: a stable sort by code keeps score
        # order within equal codes (n log n, where comparing all pairs needs pool² memory)
        codes, order = _codes(candidate).sort(dim=1, stable=True)
        repeated = torch.zeros_like(valid)
        repeated[:, 1:] = codes[:, 1:] == codes[:, :-1]
        duplicate = torch.zeros_like(valid).scatter(1, order, repeated)
        first = valid & ~duplicate
        slot = first.long().cumsum(1) - 1
        take = first & (slot < width)
        new_tokens = tokens[:, :1].expand(batch, width, length).clone()  # spare slots: copies of beam 0, dead
        new_score = torch.full((batch, width), -torch.inf, dtype=F64, device=tokens.device)
        new_logp = logp[:, :1].expand_as(logp).clone()
        b, j = take.nonzero(as_tuple=True)
        s = slot[b, j]
        new_tokens[b, s] = candidate[b, j]
        new_score[b, s] = values[b, j]
        new_logp[b, s] = logp[b, parent[b, j]]
        keep = ~active[:, None]
        new_tokens = torch.where(keep[..., None], tokens, new_tokens)
        new_score = torch.where(keep, score, new_score)
        new_logp = torch.where(keep[..., None, None], logp, new_logp)
        return new_tokens, new_score, log_weight, new_logp

    def _choose(self, score, log_weight, generator) -> Tensor:
        return score.argmax(1)


@attrs.frozen
class SMC(_Search):
    r"""Sequential Monte Carlo over decoding orders: ``particles`` decodings per sample, reweighted
    by the model's likelihood and resampled (in the spirit of twisted/SMC sampling for masked
    diffusion, e.g. Zhao et al., "Probabilistic Inference in Language Models via Twisted
    Sequential Monte Carlo", 2024, applied to decoding orders).

    Each particle decodes k tokens per step (as :class:`BeamSearch`), each at a uniformly
    random masked position with a value drawn from the proposal
    :math:`q \propto \hat p_\theta^{1/\tau}` (``temperature`` τ). The target of a path is
    :math:`\prod_j \hat p_\theta(x^{i_j} \mid z_{(j)})^{\lambda}` (``sharpness`` λ), whose
    marginal over sequences is :math:`p(x)^\lambda` for an exact denoiser (chain rule, any
    order); a particle's log-weight grows by :math:`\lambda\log\hat p - \log q` per token. When
    the effective sample size falls below ``ess_threshold``·K the particles are resampled
    multinomially with the generator. A step returns, per sample, a particle drawn by weight
    (``select = "sample"``) or the particle of highest path log-probability (``"best"``).

    With λ = 1 and τ = 1 every weight stays equal: the particles are independent
    random-order decodings and the returned one is a sample of the model's distribution
    (``stochastic``); λ > 1 with τ = 1/λ targets the sharpened :math:`p^\lambda`
    (consistent as K grows). The network sees B·``particles`` rows per step.
    """

    particles: int = attrs.field(default=4, validator=v.ge(1))
    temperature: float = attrs.field(default=1.0, validator=v.gt(0.0))
    sharpness: float = attrs.field(default=1.0, validator=v.gt(0.0))
    ess_threshold: float = attrs.field(default=0.5, validator=[v.ge(0.0), v.le(1.0)])
    select: Literal["sample", "best"] = "sample"
    tokens_per_step: int = attrs.field(default=0, validator=v.ge(0))

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.select == "sample" and self.sharpness == 1.0

    @property
    def width(self) -> int:
        return self.particles

    def _extend(self, tokens, score, log_weight, logp, open_, active, generator):
        batch, width, length = tokens.shape
        position = draw(open_.to(F64) + (~open_.any(-1, keepdim=True)).to(F64), generator)  # (B, K)
        rows = torch.arange(batch, device=tokens.device)[:, None]
        cols = torch.arange(width, device=tokens.device)[None, :]
        here = logp[rows, cols, position]  # (B, K, V)
        proposal = torch.log_softmax(here / self.temperature, -1)
        value = draw(proposal.exp(), generator)
        lp = here.gather(-1, value.unsqueeze(-1)).squeeze(-1)
        lq = proposal.gather(-1, value.unsqueeze(-1)).squeeze(-1)
        live = active[:, None] & open_.any(-1)
        tokens = tokens.clone()
        tokens[rows, cols, position] = torch.where(live, value, tokens[rows, cols, position])
        score = score + torch.where(live, lp, torch.zeros_like(lp))
        log_weight = log_weight + torch.where(live, self.sharpness * lp - lq, torch.zeros_like(lp))
        return self._resample(tokens, score, log_weight, logp, generator)

    def _resample(self, tokens, score, log_weight, logp, generator):
        weights = torch.softmax(log_weight, 1)
        ess = 1.0 / weights.square().sum(1)
        low = ess < self.ess_threshold * tokens.shape[1]
        if not bool(low.any()):
            return tokens, score, log_weight, logp
        batch, width = score.shape
        index = draw(weights.unsqueeze(1).expand(batch, width, width), generator)
        index = torch.where(low[:, None], index, torch.arange(width, device=index.device).expand(batch, width))
        rows = torch.arange(batch, device=tokens.device)[:, None]
        log_weight = torch.where(low[:, None], torch.zeros_like(log_weight), log_weight)
        return tokens[rows, index], score[rows, index], log_weight, logp[rows, index]

    def _choose(self, score, log_weight, generator) -> Tensor:
        if self.select == "best":
            return score.argmax(1)
        return draw(torch.softmax(log_weight, 1), generator)
