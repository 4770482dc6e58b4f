r"""Discrete corruption processes in continuous time t ∈ [0, 1].

Every process keeps a token with probability :math:`\alpha_t` (the *keep-probability*,
one of the shapes below, :math:`\alpha_0 = 1`, :math:`\alpha_1 = 0`) and otherwise
corrupts it:

* ``absorbing`` — to the mask token (MDLM, Sahoo et al., 2024; MD4, Shi et al., 2024);
* ``uniform`` — to a uniformly drawn token (D3PM-uniform, Austin et al., 2021);
* ``marginal`` — to a token drawn from given frequencies (the "marginal prior" of
  EQGAT-diff, Le et al., 2024, following Vignac et al., DiGress, 2023);
* ``mask_and_replace`` — to a uniform token or the mask (VQ-Diffusion, Gu et al.,
  2022): a token is still unmasked with probability :math:`A_t = \alpha_t^{1-r}`.

So :math:`q(x_t \mid x_0) = \alpha_t\delta_{x_0} + (1-\alpha_t)\pi` with the limit π
(mask-and-replace: :math:`\alpha_t\delta_{x_0} + (A_t - \alpha_t)\,u + (1 - A_t)\,\delta_m`), and
the transition from s to t < ... keeps with :math:`\alpha_t/\alpha_s`: the kernels compose,
:math:`Q_{s\to t}Q_{t\to u} = Q_{s\to u}`. Each process gives the two factors of the
reverse step :math:`q(x_s \mid x_t) \propto q(x_t \mid x_s)\sum_{x_0}\hat p(x_0)q(x_s \mid x_0)`
(Austin et al., 2021, eq. 4): :meth:`likelihood` and :meth:`marginal`.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import attrs
import torch
from attrs import validators as v
from diffusekit import CategoricalSchedule, Corrupted, align_time, rng
from torch import Tensor

KeepShape = Literal["log_linear", "linear", "cosine", "polynomial"]


def keep_probability(shape: str, t: Tensor, power: float, rate: float) -> tuple[Tensor, Tensor]:
    r""":math:`(\alpha_t, \dot\alpha_t)` of a keep-probability shape.

    * ``log_linear``: :math:`\alpha = 1 - t` (MDLM's log-linear total noise :math:`\sigma(t) = -\log(1-t)`);
    * ``linear``: total noise linear in t, :math:`\sigma(t) = r t`, :math:`\alpha = e^{-r t}`
      (MDLM's linear schedule with :math:`\sigma_{min} = 0`; :math:`\alpha_1 = e^{-r}`, 2e-9 for r = 20);
    * ``cosine``: :math:`\alpha = \cos(\pi t/2)` (Shi et al., 2024; MaskGIT's schedule);
    * ``polynomial``: :math:`\alpha = 1 - t^p` (Shi et al., 2024).
    """
    if shape == "log_linear":
        return 1.0 - t, -torch.ones_like(t)
    if shape == "linear":
        alpha = torch.exp(-rate * t)
        return alpha, -rate * alpha
    if shape == "cosine":
        return torch.cos(0.5 * math.pi * t).clamp(min=0.0), -0.5 * math.pi * torch.sin(0.5 * math.pi * t)
    if shape == "polynomial":
        return 1.0 - t**power, -power * t ** (power - 1.0)
    raise ValueError(f"unknown keep-probability shape {shape!r}")


def time_from_keep(shape: str, alpha: Tensor, power: float, rate: float) -> Tensor:
    """The inverse of :func:`keep_probability`: the time at which the keep-probability is ``alpha``."""
    alpha = alpha.clamp(0.0, 1.0)
    if shape == "log_linear":
        return 1.0 - alpha
    if shape == "linear":
        return (-torch.log(alpha.clamp_min(1e-300)) / rate).clamp(max=1.0)
    if shape == "cosine":
        return torch.acos(alpha) * (2.0 / math.pi)
    if shape == "polynomial":
        return (1.0 - alpha) ** (1.0 / power)
    raise ValueError(f"unknown keep-probability shape {shape!r}")


def _uniform_tokens(shape, low: int, high: int, generator, device) -> Tensor:
    return rng.randint(low, high, shape, generator=generator, device=device)


@attrs.frozen
class _Discrete(CategoricalSchedule):
    """Shared parts: the keep-probability shape and the fixed-limit reverse step."""

    num_classes: int = attrs.field(default=10, validator=v.ge(2))
    keep: KeepShape = "log_linear"
    power: float = attrs.field(default=2.0, validator=v.gt(0.0))
    rate: float = attrs.field(default=20.0, validator=v.gt(0.0))

    def keep_probability(self, t: Tensor) -> Tensor:
        return keep_probability(self.keep, t, self.power, self.rate)[0]

    def d_keep_probability(self, t: Tensor) -> Tensor:
        return keep_probability(self.keep, t, self.power, self.rate)[1]

    def time_from_keep(self, alpha: Tensor) -> Tensor:
        return time_from_keep(self.keep, alpha, self.power, self.rate)

    def limit(self, device=None) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def _draw_limit(self, shape, generator, device) -> Tensor:
        probs = self.limit(device)
        u = rng.rand(tuple(shape), generator=generator, device=device, dtype=probs.dtype)
        cdf = probs.cumsum(-1)
        return (cdf < (u * cdf[-1]).unsqueeze(-1)).sum(-1).clamp_max(len(probs) - 1)  # inverse CDF, row by row

    def corrupt(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Corrupted:
        alpha = align_time(self.keep_probability(torch.as_tensor(t, dtype=torch.float64, device=x0.device)), x0)
        keep = rng.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64) < alpha
        return Corrupted(torch.where(keep, x0, self._draw_limit(x0.shape, generator, x0.device)))

    def prior(self, shape, *, t=1.0, generator=None, device=None, dtype=torch.float32) -> Tensor:
        return self._draw_limit(tuple(shape), generator, device)

    # -- the reverse step --------------------------------------------------------------------
    def likelihood(self, x_t: Tensor, keep_s, keep_t) -> Tensor:
        r""":math:`q(x_t \mid x_s)` as a function of :math:`x_s`, shape ``(*x_t.shape, K)``."""
        # a 1{x_s = x_t} + (1 - a) pi(x_t), a = alpha_t / alpha_s
        ratio = _ratio(keep_t, keep_s)
        ratio = align_last(ratio) if isinstance(ratio, Tensor) else ratio
        onehot = torch.nn.functional.one_hot(x_t, self.num_classes).float()
        return ratio * onehot + (1.0 - ratio) * self.limit(x_t.device)[x_t].unsqueeze(-1)

    def marginal(self, probs_x0: Tensor, keep) -> Tensor:
        r""":math:`\sum_{x_0}\hat p(x_0)q(x_s \mid x_0) = \alpha_s\hat p + (1-\alpha_s)\pi`."""
        keep = align_last(keep) if isinstance(keep, Tensor) else keep
        return keep * probs_x0 + (1.0 - keep) * self.limit(probs_x0.device)


def _ratio(keep_t, keep_s):
    """:math:`\\alpha_t/\\alpha_s`, 1 where both are 0."""
    if isinstance(keep_t, Tensor) or isinstance(keep_s, Tensor):
        keep_t, keep_s = torch.as_tensor(keep_t, dtype=torch.float64), torch.as_tensor(keep_s, dtype=torch.float64)
        return torch.where(keep_s > 0, keep_t / keep_s.clamp_min(1e-300), torch.ones_like(keep_s)).float()
    return keep_t / keep_s if keep_s > 0 else 1.0


def align_last(value: Tensor) -> Tensor:
    """A per-element coefficient (aligned with the tokens) broadcast over the class axis."""
    return value.unsqueeze(-1).float()


@attrs.frozen
class Absorbing(_Discrete):
    r"""Absorbing-state ("mask") diffusion: corrupted tokens become the mask token :math:`m = K-1` (Austin et al., 2021; MDLM, Sahoo et al., 2024).

    :math:`q(x_t \mid x_0) = \alpha_t\delta_{x_0} + (1-\alpha_t)\delta_m`; the prior is all masks.
    ``num_classes`` counts the mask token.
    """

    absorbing: ClassVar[bool] = True

    @property
    def mask_token(self) -> int:  # type: ignore[override]
        return self.num_classes - 1

    def limit(self, device=None) -> Tensor:
        out = torch.zeros(self.num_classes, device=device)
        out[-1] = 1.0
        return out

    def _draw_limit(self, shape, generator, device) -> Tensor:
        return torch.full(tuple(shape), self.num_classes - 1, dtype=torch.long, device=device)


@attrs.frozen
class Uniform(_Discrete):
    r"""Uniform-noise D3PM (Austin et al., 2021): corrupted tokens are drawn uniformly from the K classes.

    :math:`q(x_t \mid x_0) = \alpha_t\delta_{x_0} + (1-\alpha_t)/K`.
    """

    def limit(self, device=None) -> Tensor:
        return torch.full((self.num_classes,), 1.0 / self.num_classes, device=device)

    def _draw_limit(self, shape, generator, device) -> Tensor:
        return _uniform_tokens(tuple(shape), 0, self.num_classes, generator, device)


def _frequencies(values) -> tuple[float, ...]:
    values = tuple(float(x) for x in values)
    if len(values) < 2 or not all(0 <= x < math.inf for x in values) or not 0 < sum(values) < math.inf:
        raise ValueError(
            f"frequencies must be at least two finite non-negative numbers with a positive sum, got {values}"
        )
    total = sum(values)
    return tuple(x / total for x in values)


@attrs.frozen
class Marginal(_Discrete):
    r"""The marginal-prior kernel (Vignac et al., 2023; EQGAT-diff, Le et al., 2024): corrupt towards the data's token frequencies π.

    :math:`q(x_t \mid x_0) = \alpha_t\delta_{x_0} + (1-\alpha_t)\pi`; ``frequencies`` are normalised.
    ``num_classes`` is their number.
    """

    frequencies: tuple[float, ...] = attrs.field(default=(0.5, 0.3, 0.2), converter=_frequencies)
    num_classes: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "num_classes", len(self.frequencies))

    def limit(self, device=None) -> Tensor:
        return torch.tensor(self.frequencies, device=device)


@attrs.frozen
class MaskAndReplace(_Discrete):
    r"""Mask-and-replace (VQ-Diffusion, Gu et al., 2022): a corrupted token is replaced uniformly or masked.

    With :math:`A_t = \alpha_t^{1-r}` the probability of not being masked:
    :math:`q(x_t \mid x_0) = \alpha_t\delta_{x_0} + (A_t - \alpha_t)\,u + (1-A_t)\delta_m`, u uniform
    over the K − 1 real tokens, m = K − 1 the mask. r = ``replace`` ∈ [0, 1); r = 0 is
    absorbing diffusion. Kept, unmasked and masked probabilities are all
    multiplicative in time, so the kernels compose.
    """

    replace: float = attrs.field(default=0.1, validator=[v.ge(0.0), v.lt(1.0)])

    @property
    def mask_token(self) -> int:  # type: ignore[override]
        return self.num_classes - 1

    def _alive(self, keep):
        if isinstance(keep, Tensor):
            return keep.clamp_min(0.0) ** (1.0 - self.replace)
        return max(keep, 0.0) ** (1.0 - self.replace)

    def corrupt(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Corrupted:
        alpha = align_time(self.keep_probability(torch.as_tensor(t, dtype=torch.float64, device=x0.device)), x0)
        alive = self._alive(alpha)
        u = rng.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
        replaced = _uniform_tokens(x0.shape, 0, self.num_classes - 1, generator, x0.device)
        out = torch.where(u < alpha, x0, torch.where(u < alive, replaced, torch.full_like(x0, self.mask_token)))
        return Corrupted(out)

    def prior(self, shape, *, t=1.0, generator=None, device=None, dtype=torch.float32) -> Tensor:
        return torch.full(tuple(shape), self.mask_token, dtype=torch.long, device=device)

    def likelihood(self, x_t: Tensor, keep_s, keep_t) -> Tensor:
        k = self.num_classes
        a = _ratio(keep_t, keep_s)
        big_a = _ratio(self._alive(keep_t), self._alive(keep_s))
        a, big_a = (align_last(v) if isinstance(v, Tensor) else v for v in (a, big_a))
        real = (x_t != self.mask_token).unsqueeze(-1).float()
        onehot = torch.nn.functional.one_hot(x_t, k).float()
        is_real_s = torch.ones(k, device=x_t.device)
        is_real_s[-1] = 0.0
        # x_t real: a 1{x_s = x_t} + (A - a)/(K-1) for real x_s, 0 for x_s = m; x_t = m: 1 - A for real x_s, 1 for m
        from_real = real * (a * onehot + (big_a - a) / (k - 1) * is_real_s) + (1.0 - real) * (1.0 - big_a) * is_real_s
        from_mask = (1.0 - real) * (1.0 - is_real_s)
        return from_real + from_mask

    def marginal(self, probs_x0: Tensor, keep) -> Tensor:
        k = self.num_classes
        keep_t = align_last(keep) if isinstance(keep, Tensor) else keep
        alive = self._alive(keep_t)
        uniform = torch.full((k,), 1.0 / (k - 1), device=probs_x0.device)
        uniform[-1] = 0.0
        mask = torch.zeros(k, device=probs_x0.device)
        mask[-1] = 1.0
        # a clean token that is the mask stays the mask (its row of Q is the identity's)
        on_mask = probs_x0[..., -1:]
        real = probs_x0.clone()
        real[..., -1] = 0.0
        real_mass = 1.0 - on_mask
        return keep_t * real + (alive - keep_t) * real_mass * uniform + ((1.0 - alive) * real_mass + on_mask) * mask

    def limit(self, device=None) -> Tensor:
        out = torch.zeros(self.num_classes, device=device)
        out[-1] = 1.0
        return out
