r"""diffusers' discrete noise schedules as continuous diffusekit schedules.

A diffusers scheduler describes the forward process by its betas at the training
timesteps :math:`k = 0, \dots, N-1`: :math:`\bar\alpha_k = \prod_{j \le k}(1-\beta_j)` and
:math:`x_k = \sqrt{\bar\alpha_k}\,x_0 + \sqrt{1-\bar\alpha_k}\,\varepsilon` (Ho et al.,
"Denoising Diffusion Probabilistic Models", 2020). diffusekit's time is continuous, with
:math:`t = 0` the clean data, so timestep :math:`k` sits at :math:`t_k = (k+1)/N` and
:math:`t = 0` adds the point :math:`\bar\alpha = 1` that diffusers' samplers step onto last
(``set_alpha_to_one``, ``final_sigmas_type="zero"``).

Between the training timesteps the EDM noise level :math:`\tilde\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}`
is a monotone cubic Hermite interpolant (Fritsch & Carlson, "Monotone Piecewise Cubic
Interpolation", SIAM J. Numer. Anal., 1980): it passes through every training value, is
continuously differentiable (the ODE solvers' error expansions need a smooth schedule)
and strictly increasing, so the log-SNR :math:`\lambda = -2\log\tilde\sigma` has an exact
inverse. Then :math:`\alpha = (1+\tilde\sigma^2)^{-1/2}` and :math:`\sigma = \tilde\sigma\alpha`
(a variance-preserving schedule). diffusers' Euler-type schedulers interpolate
:math:`\tilde\sigma` linearly at fractional timesteps instead; the two agree at every
training timestep and differ between them by the interpolation error (about 1e-5 relative
for the usual 1000-step schedules).
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
from attrs import validators as v
from diffusekit import GaussianCoefficients, GaussianSchedule
from torch import Tensor

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
# where diffusers' zero-terminal-SNR schedules would have alpha_bar = 0 at the last timestep,
# its samplers use this instead (a finite noise level); so does this schedule
ZERO_SNR_ALPHA_BAR = 2.0**-24


def config_reader(config):
    """``get(key, default)`` on a diffusers scheduler, its config (a FrozenDict) or a plain dict."""
    config = getattr(config, "config", config)
    return config.get if hasattr(config, "get") else lambda key, default=None: getattr(config, key, default)


def _optional_floats(value):
    return None if value is None else tuple(float(b) for b in value)


def betas_for(
    schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float, trained: tuple[float, ...] | None
) -> Tensor:
    """The betas diffusers builds for this configuration, in its arithmetic (float32)."""
    n = num_train_timesteps
    if trained is not None:
        return torch.tensor(trained, dtype=torch.float32)
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    if schedule == "scaled_linear":  # the latent-diffusion schedule
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2

    # squaredcos_cap_v2: Nichol & Dhariwal (2021), alpha_bar(t) = cos^2((t + s)/(1 + s) pi/2), betas capped at 0.999
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)]
    return torch.tensor(betas, dtype=torch.float32)


def zero_terminal_snr(betas: Tensor) -> Tensor:
    r"""Rescale betas so that :math:`\bar\alpha_{N-1} = 0` (Lin et al., "Common Diffusion Noise
    Schedules and Sample Steps Are Flawed", 2024, Alg. 1): shift and scale
    :math:`\sqrt{\bar\alpha}` so its last value is 0 and its first unchanged."""
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))  # in diffusers' order of operations: equal floats
    alpha_bar = root**2
    alphas = torch.cat([alpha_bar[0:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1.0 - alphas


def _pchip_slopes(y: Tensor, h: float) -> Tensor:
    """Fritsch–Carlson derivatives of the monotone cubic through equally spaced points ``y``."""
    delta = (y[1:] - y[:-1]) / h
    m = torch.empty_like(y)
    m[0], m[-1] = delta[0], delta[-1]
    left, right = delta[:-1], delta[1:]
    # the harmonic mean keeps the interpolant monotone (for equal spacing); 0 at a flat spot
    m[1:-1] = torch.where((left > 0) & (right > 0), 2.0 / (1.0 / left + 1.0 / right), torch.zeros_like(left))
    return m


@attrs.frozen
class DiffusersSchedule(GaussianSchedule):
    r"""A diffusers scheduler's noise schedule (``beta_schedule``, ``beta_start``, ``beta_end``,
    ``num_train_timesteps``, ``trained_betas``, ``rescale_betas_zero_snr``) in continuous time.

    Training timestep :math:`k` is :math:`t = (k+1)/N`, with exactly diffusers'
    :math:`\bar\alpha_k`; between timesteps :math:`\tilde\sigma` is a monotone cubic
    interpolant (see the module). Build it from a scheduler with :meth:`from_config`.
    """

    family: ClassVar[str] = "vp"

    num_train_timesteps: int = attrs.field(default=1000, validator=v.ge(2))
    beta_start: float = attrs.field(default=0.0001, validator=v.gt(0.0))
    beta_end: float = attrs.field(default=0.02, validator=v.gt(0.0))
    beta_schedule: str = attrs.field(default="linear", validator=v.in_(BETA_SCHEDULES))
    trained_betas: tuple[float, ...] | None = attrs.field(default=None, converter=_optional_floats)
    rescale_betas_zero_snr: bool = False
    alphas_cumprod: Tensor = attrs.field(init=False, eq=False, repr=False)
    _nodes: Tensor = attrs.field(init=False, eq=False, repr=False)
    _slopes: Tensor = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise ValueError(
                f"trained_betas has {len(self.trained_betas)} values but num_train_timesteps is {self.num_train_timesteps}"
            )
        betas = betas_for(
            self.beta_schedule, self.num_train_timesteps, self.beta_start, self.beta_end, self.trained_betas
        )
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta must lie in (0, 1)")
        if self.rescale_betas_zero_snr:
            betas = zero_terminal_snr(betas)
        alpha_bar = torch.cumprod(1.0 - betas, dim=0)
        if self.rescale_betas_zero_snr:
            alpha_bar[-1] = ZERO_SNR_ALPHA_BAR
        alpha_bar = alpha_bar.to(torch.float64)
        # noise levels at t = 0, 1/N, ..., 1: 0 (the data), then the training timesteps
        sigma_tilde = torch.cat([torch.zeros(1, dtype=torch.float64), ((1.0 - alpha_bar) / alpha_bar).sqrt()])
        if not bool((sigma_tilde[1:] > sigma_tilde[:-1]).all()):
            raise ValueError("alpha_bar must strictly decrease over the training timesteps")
        object.__setattr__(self, "alphas_cumprod", alpha_bar)
        object.__setattr__(self, "_nodes", sigma_tilde)
        object.__setattr__(self, "_slopes", _pchip_slopes(sigma_tilde, 1.0 / self.num_train_timesteps))

    @classmethod
    def from_config(cls, config) -> DiffusersSchedule:
        """The schedule of a diffusers scheduler, its ``config`` or a plain dict of one."""
        get = config_reader(config)
        return cls(
            num_train_timesteps=int(get("num_train_timesteps", 1000)),
            beta_start=float(get("beta_start", 0.0001)),
            beta_end=float(get("beta_end", 0.02)),
            beta_schedule=str(get("beta_schedule", "linear")),
            trained_betas=get("trained_betas", None),
            rescale_betas_zero_snr=bool(get("rescale_betas_zero_snr", False)),
        )

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod) -> DiffusersSchedule:
        r"""The schedule of a table :math:`\bar\alpha_0, \dots, \bar\alpha_{N-1}` (as LDM and k-diffusion
        checkpoints store it): the betas :math:`1 - \bar\alpha_k/\bar\alpha_{k-1}` as ``trained_betas``."""
        table = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if table.numel() < 2 or not bool(((table > 0) & (table < 1)).all()):
            raise ValueError("alphas_cumprod must hold at least 2 values, each in (0, 1)")
        betas = 1.0 - table / torch.cat([torch.ones(1, dtype=torch.float64), table[:-1]])
        return cls(num_train_timesteps=int(table.numel()), trained_betas=betas.tolist())

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """The segment index j and the position u in [0, 1] of each time on it."""
        n = self.num_train_timesteps
        scaled = t.to(torch.float64).clamp(0.0, 1.0) * n
        j = scaled.floor().clamp(max=n - 1)
        return j.long(), scaled - j

    def _hermite(self, j: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """σ̃ and dσ̃/dt on segment j at position u (cubic Hermite form)."""
        h = 1.0 / self.num_train_timesteps
        y0, y1 = self._nodes[j], self._nodes[j + 1]
        m0, m1 = self._slopes[j], self._slopes[j + 1]
        u2, u3 = u * u, u * u * u
        value = (2 * u3 - 3 * u2 + 1) * y0 + (u3 - 2 * u2 + u) * h * m0 + (-2 * u3 + 3 * u2) * y1 + (u3 - u2) * h * m1
        slope = ((6 * u2 - 6 * u) * (y0 - y1)) / h + (3 * u2 - 4 * u + 1) * m0 + (3 * u2 - 2 * u) * m1
        return value, slope

    def coefficients(self, t: Tensor) -> GaussianCoefficients:
        j, u = self._segment(t)
        st, dst = self._hermite(j, u)
        alpha = torch.rsqrt(1.0 + st * st)
        sigma = st * alpha
        a3 = alpha**3
        out = (alpha, sigma, -st * a3 * dst, a3 * dst, -2.0 * torch.log(st))
        dtype = t.dtype if t.is_floating_point() else torch.float64
        return GaussianCoefficients(*(c.to(dtype) for c in out))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        st = torch.exp(-0.5 * log_snr.to(torch.float64))
        n = self.num_train_timesteps
        # the segment whose end values bracket σ̃, then bisection on the monotone cubic
        j = (torch.searchsorted(self._nodes, st.contiguous(), right=True) - 1).clamp(0, n - 1)
        lo, hi = torch.zeros_like(st), torch.ones_like(st)
        for _ in range(60):  # 2^-60 of a segment: below float64 resolution of t
            mid = 0.5 * (lo + hi)
            below = self._hermite(j, mid)[0] < st
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        t = ((j.to(torch.float64) + 0.5 * (lo + hi)) / n).clamp(0.0, 1.0)
        return t.to(log_snr.dtype) if log_snr.is_floating_point() else t
