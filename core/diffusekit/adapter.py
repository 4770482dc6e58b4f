r"""Schedule adapters: a denoiser trained under one Gaussian schedule, used under another.

If schedule A at time :math:`t'` has the log-SNR of schedule B at time :math:`t`,
:math:`\lambda_A(t') = \lambda_B(t)`, their coefficients differ by one factor,
:math:`(\alpha_A, \sigma_A) = k\,(\alpha_B, \sigma_B)` with
:math:`k = \sqrt{\alpha_A^2+\sigma_A^2}/\sqrt{\alpha_B^2+\sigma_B^2}`. So
:math:`x' = k\,x_t = \alpha_A(t')x_0 + \sigma_A(t')\varepsilon` with the *same* :math:`x_0, \varepsilon`,
and a denoiser of A evaluated at :math:`(x', t')`, :math:`t' = \lambda_A^{-1}(\lambda_B(t))`, gives the
:math:`\hat x_0, \hat\varepsilon` of B at :math:`(x_t, t)`. This is the invariance of the continuous-time
model to its noise schedule given the log-SNR range (Kingma et al., "Variational Diffusion Models", 2021,
Sec. 5); Karras et al. ("Elucidating...", 2022, Sec. 2) write every schedule as a model of
:math:`\tilde x = x/\alpha` at noise level :math:`\tilde\sigma = e^{-\lambda/2}`, the same statement.

Where B is noisier than A ever was (:math:`\lambda_B(t) < \lambda_A(1)`, e.g. a rectified flow at t = 1,
:math:`\alpha = 0`, under a VP model), :math:`t'` is clamped to 1: the model sees :math:`x'` at the scale
it expects at its noisiest level but with less signal, and answers with its :math:`\hat x_0` there (near
the data mean, the exact answer as the SNR goes to 0). A's log-SNR at t = 0 is :math:`+\infty`, so B's
other end needs no clamp. Only the adapted parts change; the others, categorical ones included, pass through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import Tensor

from diffusekit.condition import Condition
from diffusekit.denoiser import DenoiserLike
from diffusekit.errors import ConfigError
from diffusekit.prediction import Prediction
from diffusekit.schedule import GaussianCoefficients, GaussianSchedule, Schedule
from diffusekit.state import DEFAULT_PART, State, Time, align_time, as_parts, part_times


def _v(x: Tensor, pred: Prediction, c: GaussianCoefficients, clean: bool | Tensor) -> Tensor:
    r"""B's :math:`v = \alpha\hat\varepsilon - \sigma\hat x_0` from the inner prediction, well conditioned at both ends.

    A prediction holds one value and derives the other form from :math:`x`: :math:`\hat x_0`
    divides by :math:`\alpha`, :math:`\hat\varepsilon` by :math:`\sigma`. So take the inner
    :math:`\hat\varepsilon` where :math:`\alpha \ge \sigma` (near the data, :math:`\sigma \to 0`) and its
    :math:`\hat x_0` where :math:`\alpha < \sigma` (near the noise, :math:`\alpha \to 0`, and beyond A's
    range, where only the model's :math:`\hat x_0` means anything), each divided by the larger
    coefficient. :math:`v` reads back as exactly that form (its conversions divide by
    :math:`\alpha^2+\sigma^2 > 0`) and holds both choices at once for per-element times. Where the
    inner model's :math:`\sigma` is 0 or negligible (``clean``), :math:`x_t = \alpha x_0` and
    :math:`\varepsilon` is undetermined (0/0, or an overflow): it is taken as 0, so :math:`\hat x_0 = x_t/\alpha`.
    """
    a, s = c.alpha, c.sigma
    n = a * a + s * s
    if isinstance(a, float):  # a scalar time: one form, one division
        if clean:
            return (-s / a) * x  # eps = 0, x0 = x / alpha
        return (n * pred.eps - s * x) / a if a >= s else (a * x - n * pred.x0) / s
    high = a >= s
    eps = torch.where(clean, 0.0, pred.eps)
    from_eps = (n * eps - s * x) / torch.where(high, a, 1.0)
    from_x0 = (a * x - n * pred.x0) / torch.where(high, 1.0, s)
    return torch.where(high, from_eps, from_x0)


@attrs.frozen(eq=False)
class ScheduleAdapter:
    """``inner`` (a :class:`~diffusekit.DenoiserLike`) used under the Gaussian schedules ``targets`` of some parts.

    A denoiser itself: ``schedules`` are the inner ones with ``targets`` in place. Pure and
    stateless (safe to share between threads); build it with :func:`adapt`.
    """

    inner: DenoiserLike
    targets: Mapping[str, GaussianSchedule]

    def __attrs_post_init__(self) -> None:
        for name, target in self.targets.items():
            trained = self.inner.schedules.get(name)
            if trained is None:
                raise ConfigError(
                    f"parts.{name}.schedule",
                    f"the denoiser has no part {name!r} (parts: {sorted(self.inner.schedules)})",
                )
            for what, s in (("was trained under", trained), ("is asked for", target)):
                if not isinstance(s, GaussianSchedule):
                    raise ConfigError(
                        f"parts.{name}.schedule",
                        f"a {getattr(s, 'kind', '?')} schedule ({type(s).__name__}) {what}; "
                        "only Gaussian schedules can be matched by log-SNR",
                    )

    @property
    def schedules(self) -> dict[str, Schedule]:
        return {**self.inner.schedules, **self.targets}

    @property
    def network(self) -> Any:
        """The inner denoiser's network (what a pipeline loads weights into)."""
        return self.inner.network  # type: ignore[attr-defined]

    @property
    def time_conditioned(self) -> bool:
        return bool(getattr(self.inner, "time_conditioned", True))

    def __call__(
        self, x: State, t: Time, condition: Condition | None = None, coef: Mapping[str, Any] | None = None
    ) -> Any:
        """The inner denoiser's predictions, those of the adapted parts expressed under their new schedules."""
        parts = as_parts(x)
        # a sampler's times stay where they are (a scalar plan's on the CPU: no device syncs for its floats)
        times = part_times(t, parts, device=None if isinstance(t, Mapping) else next(iter(parts.values())).device)
        x_in, t_in, c_in, c_out = dict(parts), dict(times), None if coef is None else dict(coef), {}
        clean: dict[str, Any] = {}
        for name, target in self.targets.items():
            xp, tp, trained = parts[name], times[name], self.inner.schedules[name]
            raw = target.coefficients(tp)  # float64, shaped like tp
            floor = trained.log_snr(torch.ones((), dtype=tp.dtype, device=tp.device))
            t_a = trained.t_from_log_snr(raw.log_snr.clamp(min=floor))
            t_a = torch.where(torch.isposinf(raw.log_snr), 0.0, t_a).clamp(0.0, 1.0)  # t = 0 maps to 0 exactly
            c_a = trained.coefficients(t_a)
            k = torch.hypot(c_a.alpha, c_a.sigma) / torch.hypot(raw.alpha, raw.sigma)
            scalar = coef is not None and isinstance(coef[name].alpha, float)
            x_in[name] = xp * (float(k) if scalar else align_time(k, xp).to(xp.dtype))
            t_in[name] = t_a
            c_out[name] = raw.align(xp) if coef is None else coef[name]
            if c_in is not None:
                c_in[name] = c_a.item() if scalar else c_a.align(xp)
            # at sigma' = 0 (t = 0) eps is 0/0, and below sqrt(tiny) the inner's eps = (x' - alpha' x0)/sigma'
            # may overflow while sigma' eps is far below the dtype's resolution of x: x_t = alpha x_0 there
            negligible = c_a.sigma <= torch.finfo(xp.dtype).tiny ** 0.5
            clean[name] = bool(negligible) if scalar else align_time(negligible, xp)
        out = dict(self.inner(x_in, t_in, condition, c_in))
        for name in self.targets:
            out[name] = Prediction("v", _v(parts[name], out[name], c_out[name], clean[name]), parts[name], c_out[name])
        return out[DEFAULT_PART] if isinstance(x, Tensor) else out


def adapt(denoiser: DenoiserLike, schedules: Mapping[str, GaussianSchedule]) -> DenoiserLike:
    """``denoiser`` used under new Gaussian ``schedules`` for some of its parts, matched by log-SNR.

    Parts whose new schedule equals the trained one are left alone; the denoiser itself
    comes back when no part changes. Raises :class:`~diffusekit.ConfigError` for an unknown
    part or a schedule that is not Gaussian.
    """
    if not isinstance(schedules, Mapping):
        raise ConfigError("schedules", f"expected a mapping of part names to schedules, got {type(schedules).__name__}")
    changed = {name: s for name, s in schedules.items() if not _same(denoiser.schedules.get(name), s)}
    return ScheduleAdapter(denoiser, changed) if changed else denoiser


def _same(a: object, b: object) -> bool:
    try:
        return a is b or (type(a) is type(b) and bool(a == b))
    except (TypeError, RuntimeError, ValueError):  # schedules holding tensors compare elementwise
        return False
