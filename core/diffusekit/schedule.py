r"""Schedules: the forward corruption :math:`q(x_t \mid x_0)` of one part of a state.

A schedule is a pure function of time: it holds only its hyper-parameters, so one
instance can be shared between threads, parts and processes. Time is a tensor
aligned with the leading dimensions of the data (see :mod:`diffusekit.state`).

Two families share this interface:

* :class:`GaussianSchedule` — :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`,
  :math:`\varepsilon \sim \mathcal N(0, I)`, with log signal-to-noise ratio
  :math:`\lambda_t = \log(\alpha_t^2 / \sigma_t^2)` strictly decreasing in t
  (Kingma et al., "Variational Diffusion Models", 2021).
* :class:`CategoricalSchedule` — each token is kept with probability
  :math:`\alpha_t` and otherwise replaced by a draw from the schedule's limit
  distribution (Austin et al., "Structured Denoising Diffusion Models in Discrete
  State-Spaces", 2021).
"""

from __future__ import annotations

import abc
from typing import ClassVar, TypeVar

import attrs
import torch
from torch import Tensor

from diffusekit import numeric, rng
from diffusekit.numeric import Scalar
from diffusekit.state import align_time

C = TypeVar("C", bound="Coefficients")


@attrs.frozen(eq=False)
class Corrupted:
    """A sample of :math:`q(x_t \\mid x_0)` and the noise that produced it (``None`` if discrete)."""

    x_t: Tensor
    noise: Tensor | None = None


class Schedule(abc.ABC):
    """The forward corruption of one part. Subclasses are frozen attrs classes."""

    kind: ClassVar[str]
    """Family of the schedule (``"gaussian"``, ``"categorical"``); samplers declare which they support."""

    @abc.abstractmethod
    def coefficients(self, t: Tensor) -> Coefficients:
        """The schedule's coefficients at ``t`` (same shape as ``t``)."""

    @abc.abstractmethod
    def corrupt(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Corrupted:
        """Draw :math:`x_t \\sim q(x_t \\mid x_0)`; ``t`` is aligned with the leading dims of ``x0``."""

    @abc.abstractmethod
    def prior(
        self,
        shape: tuple[int, ...],
        *,
        t: Tensor | float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """A sample of the distribution sampling starts from, at time ``t`` (normally 1)."""


class Coefficients:
    """Base of a schedule's coefficients at some times.

    Every field is a Python float (the times of a plan entry are scalars; computed once
    per plan) or a tensor (per-element times). The methods act on all fields alike.
    """

    def _values(self) -> tuple:
        return tuple(getattr(self, f.name) for f in attrs.fields(type(self)) if f.init)

    def map_tensors(self: C, fn) -> C:
        """The same record with ``fn`` applied to its tensor fields (floats are kept)."""
        return type(self)(*(fn(v) if isinstance(v, Tensor) else v for v in self._values()))

    def align(self: C, x: Tensor) -> C:
        """Reshaped to broadcast against ``x`` (see :func:`~diffusekit.state.align_time`), in its dtype if it
        is floating point (token tensors are integers: their coefficients stay float64)."""
        if x.is_floating_point():
            return self.map_tensors(lambda v: align_time(v, x).to(x.dtype))
        return self.map_tensors(lambda v: align_time(v, x))

    def take(self: C, index: slice) -> C:
        """Rows ``index`` of fields with a batch dimension; broadcast fields and floats unchanged."""
        return self.map_tensors(lambda v: v[index] if v.ndim and v.shape[0] != 1 else v)

    def item(self: C) -> C:
        """The record of a single (0-d) time as Python floats."""
        return type(self)(*(float(v) for v in self._values()))

    def unbind(self: C) -> list[C]:
        """Records of Python floats, one per entry of 1-D fields (coefficients of stacked scalar times)."""
        columns = [v.tolist() for v in self._values()]
        return [type(self)(*row) for row in zip(*columns, strict=True)]


@attrs.define(eq=False)  # not frozen: a plan builds hundreds of these, and frozen init is slower; treat as values
class GaussianCoefficients(Coefficients):
    r"""The coefficients of a Gaussian schedule: :math:`\alpha_t, \sigma_t`, their time
    derivatives :math:`\dot\alpha_t, \dot\sigma_t` and the log-SNR
    :math:`\lambda_t = 2\log(\alpha_t/\sigma_t)`, as floats or same-shaped tensors.
    """

    alpha: Scalar
    sigma: Scalar
    d_alpha: Scalar
    d_sigma: Scalar
    log_snr: Scalar
    affine_cache: dict = attrs.field(factory=dict, init=False, repr=False)
    """Conversion weights per prediction kind (:func:`diffusekit.prediction.affine`), filled on first use."""

    @property
    def sigma_tilde(self) -> Scalar:
        r"""The EDM noise level :math:`\tilde\sigma_t = \sigma_t/\alpha_t = e^{-\lambda_t/2}` (Karras et al., 2022)."""
        return numeric.exp(-0.5 * self.log_snr)


class GaussianSchedule(Schedule):
    r"""A Gaussian forward process :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`.

    Contract (checked by :mod:`diffusekit.testing`): :math:`\alpha_0 = 1`,
    :math:`\sigma_0 = 0` (corruption at t = 0 is the identity), :math:`\sigma_1 > 0`,
    :math:`\lambda_t` strictly decreasing, :meth:`t_from_log_snr` inverts
    :meth:`log_snr`, and the derivatives are those of :math:`\alpha, \sigma`.
    """

    kind: ClassVar[str] = "gaussian"
    family: ClassVar[str | None] = None
    r"""Which identity the coefficients obey, checked by the conformance kit: ``"vp"``
    (variance preserving, :math:`\alpha_t^2 + \sigma_t^2 = 1`), ``"ve"`` (variance exploding,
    :math:`\alpha_t = 1`), ``"flow"`` (a linear interpolant, :math:`\alpha_t + \sigma_t = 1`), or
    ``None`` (none of these)."""

    @abc.abstractmethod
    def coefficients(self, t: Tensor) -> GaussianCoefficients:
        """:math:`\\alpha_t, \\sigma_t, \\dot\\alpha_t, \\dot\\sigma_t, \\lambda_t` at ``t`` (same shape as ``t``)."""

    @abc.abstractmethod
    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """The inverse of :math:`t \\mapsto \\lambda_t`."""

    def log_snr(self, t: Tensor) -> Tensor:
        r""":math:`\lambda_t = \log(\alpha_t^2/\sigma_t^2)`."""
        return self.coefficients(t).log_snr

    def corrupt(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Corrupted:
        c = self.coefficients(torch.as_tensor(t, dtype=torch.float64, device=x0.device)).align(x0)
        noise = rng.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return Corrupted(c.alpha * x0 + c.sigma * noise, noise)

    def prior(
        self,
        shape: tuple[int, ...],
        *,
        t: Tensor | float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        r""":math:`\sigma_t\,\varepsilon`: the marginal at ``t`` when :math:`\alpha_t x_0` is negligible."""
        noise = rng.randn(shape, generator=generator, device=device, dtype=dtype)
        t = torch.as_tensor(t, dtype=torch.float64, device=noise.device)
        sigma = self.coefficients(t).sigma
        return align_time(sigma, noise).to(dtype) * noise


class CategoricalSchedule(Schedule):
    r"""A categorical forward process over ``num_classes`` token values (a mask token included, if any).

    Each element keeps its value with probability :math:`\alpha_t` (the
    keep-probability: 1 at t = 0, 0 at t = 1, decreasing) and is otherwise corrupted
    towards the process's limit (a mask token for absorbing diffusion, uniform noise
    for D3PM-uniform, ...; Austin et al., 2021; Shi et al., 2024). Tokens are integer
    tensors; ``corrupt`` and ``prior`` return them whatever ``dtype`` is asked for.
    """

    kind: ClassVar[str] = "categorical"
    num_classes: int

    @abc.abstractmethod
    def keep_probability(self, t: Tensor) -> Tensor:
        """:math:`\\alpha_t`, same shape as ``t``."""

    @abc.abstractmethod
    def d_keep_probability(self, t: Tensor) -> Tensor:
        """:math:`\\dot\\alpha_t = d\\alpha_t/dt` (at most 0), same shape as ``t``."""

    absorbing: ClassVar[bool] = False
    """Whether corrupted tokens become a mask token that never changes again (then ``mask_token`` is its id)."""
    mask_token: ClassVar[int | None] = None

    def coefficients(self, t: Tensor) -> CategoricalCoefficients:
        return CategoricalCoefficients(self.keep_probability(t), self.d_keep_probability(t))

    @abc.abstractmethod
    def likelihood(self, x_t: Tensor, keep_s: Scalar, keep_t: Scalar) -> Tensor:
        r""":math:`q(x_t \mid x_s)` as a function of :math:`x_s`: shape ``(*x_t.shape, K)`` (keep-probabilities at s and t)."""

    @abc.abstractmethod
    def marginal(self, probs_x0: Tensor, keep: Scalar) -> Tensor:
        r""":math:`\sum_{x_0}\hat p(x_0)\,q(x_s \mid x_0)` for clean-token probabilities ``(..., K)`` at keep-probability α_s."""

    def posterior(
        self, x_t: Tensor, probs_x0: Tensor, c_s: CategoricalCoefficients, c_t: CategoricalCoefficients
    ) -> Tensor:
        r"""The reverse step :math:`q(x_s \mid x_t) \propto q(x_t \mid x_s)\sum_{x_0}\hat p(x_0)q(x_s \mid x_0)` (Austin et al., 2021, eq. 4)."""
        joint = self.likelihood(x_t, c_s.keep_probability, c_t.keep_probability) * self.marginal(
            probs_x0, c_s.keep_probability
        )
        return joint / joint.sum(-1, keepdim=True).clamp_min(1e-30)

    def time_from_keep(self, alpha: Tensor) -> Tensor:
        """The time at which the keep-probability is ``alpha`` (needed by first-hitting samplers)."""
        raise NotImplementedError(f"{type(self).__name__} does not invert its keep-probability")


@attrs.define(eq=False)
class CategoricalCoefficients(Coefficients):
    """The coefficients of a categorical schedule: the keep-probability :math:`\\alpha_t` and its derivative."""

    keep_probability: Scalar
    d_keep_probability: Scalar
