"""Contracts every component of a kind must satisfy, checked with Hypothesis.

:func:`contracts_for` lists the contracts of one registered component and
:func:`plugin_contracts` those of every component a plugin registers; each
:class:`Contract` runs with :meth:`Contract.check` and raises ``AssertionError`` with
a message that says what broke. ``diffusekit check PLUGIN`` and the pytest plugin
both run them. Examples per property come from ``DIFFUSEKIT_MAX_EXAMPLES``
(default 20); runs are derandomized, so a failure reproduces.

Those build each component with its defaults. To check other settings, call the function
of the kind on an instance; each returns ``{name: (doc, check)}``::

    for name, (doc, check) in gaussian_sampler_contracts(MySampler(restarts=4)).items():
        check()

The functions are :func:`gaussian_schedule_contracts`, :func:`categorical_schedule_contracts`,
:func:`gaussian_parameterization_contracts`, :func:`categorical_parameterization_contracts`,
:func:`gaussian_sampler_contracts`, :func:`categorical_sampler_contracts`,
:func:`grid_contracts`, :func:`guidance_contracts`, :func:`condition_contracts` (of a class),
:func:`network_contracts`, :func:`method_contracts` and :func:`dataset_contracts`.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import Tensor

from diffusekit.condition import ClassLabel, Condition
from diffusekit.data import Data, Dataset
from diffusekit.errors import ShapeError
from diffusekit.guidance import Guidance
from diffusekit.method import Method
from diffusekit.network import Network
from diffusekit.parameterization import CategoricalParameterization, GaussianParameterization
from diffusekit.recipe import dumps_json, dumps_toml, instantiate, loads_json, loads_toml, spec_of, validate
from diffusekit.registry import Entry, Registry
from diffusekit.sampler import Sampler, Step, TimeGrid, TimePlan
from diffusekit.schedule import CategoricalSchedule, GaussianSchedule, Schedule
from diffusekit.testing import strategies as dst
from diffusekit.testing.categorical import ReferenceAbsorbing, SequenceOracle
from diffusekit.testing.oracle import FlowMapOracle, GaussianMixture, OracleDenoiser
from diffusekit.testing.reference import TrigonometricSchedule

F64 = torch.float64


def max_examples() -> int:
    return int(os.environ.get("DIFFUSEKIT_MAX_EXAMPLES", "20"))


def _settings(examples: int | None = None) -> settings:
    return settings(
        max_examples=examples or max_examples(),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def prop(*strategies: st.SearchStrategy, examples: int | None = None) -> Callable[[Callable], Callable[[], None]]:
    """Turn ``fn(*drawn)`` into a zero-argument Hypothesis property."""

    def wrap(fn: Callable) -> Callable[[], None]:
        return _settings(examples)(given(*strategies)(fn))

    return wrap


@attrs.frozen
class Contract:
    """One property of one component."""

    component: str
    kind: str
    name: str
    doc: str
    fn: Callable[[], None] = attrs.field(eq=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.component}::{self.name}"

    def check(self) -> None:
        self.fn()


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _close(a: torch.Tensor, b: torch.Tensor, what: str, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    if not torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=False):
        err = (a - b).abs().max().item()
        raise AssertionError(f"{what}: max difference {err:.3g} exceeds tolerance (rtol={rtol}, atol={atol})")


def _t(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=F64)


# --- schedules ---------------------------------------------------------------------------------


def gaussian_schedule_contracts(s: GaussianSchedule) -> dict[str, tuple[str, Callable[[], None]]]:
    def endpoints() -> None:
        c0, c1 = s.coefficients(_t(0.0)), s.coefficients(_t(1.0))
        assert float(c0.alpha) == 1.0 and float(c0.sigma) == 0.0, (
            f"t=0 must be clean data (alpha=1, sigma=0), got alpha={float(c0.alpha)!r}, sigma={float(c0.sigma)!r}"
        )
        assert float(c1.sigma) > 0.0, f"t=1 must be noisy (sigma>0), got sigma={float(c1.sigma)!r}"

    @prop(dst.interior_times(1e-4), dst.interior_times(1e-4))
    def monotone(a: float, b: float) -> None:
        assume(abs(a - b) > 1e-6)
        lo, hi = min(a, b), max(a, b)
        l_lo, l_hi = float(s.log_snr(_t(lo))), float(s.log_snr(_t(hi)))
        assert l_lo > l_hi, f"log-SNR must decrease: lambda({lo})={l_lo} <= lambda({hi})={l_hi}"

    def inverse() -> None:
        # the whole open interval, ends included: samplers invert log-SNR near t = 0 (the last
        # steps) and near t = 1 (the first); the error allowed shrinks with the distance to an end
        check_inverse = prop(dst.interior_times(1e-6))(_inverse_at)
        for t in (1e-6, 1e-4, 1e-2, 0.5, 1 - 1e-2, 1 - 1e-4, 1 - 1e-6):
            _inverse_at(t)
        check_inverse()

    def _inverse_at(t: float) -> None:
        back = float(s.t_from_log_snr(s.log_snr(_t(t))))
        tolerance = 1e-6 * min(t, 1.0 - t) + 1e-12
        assert abs(back - t) <= tolerance, f"t_from_log_snr(log_snr({t!r})) = {back!r}, off by {abs(back - t):.3g}"

    @prop(dst.times(min_value=0.02, max_value=0.98))
    def derivatives(t: float) -> None:
        h = 1e-6
        c, up, dn = s.coefficients(_t(t)), s.coefficients(_t(t + h)), s.coefficients(_t(t - h))
        _close(c.d_alpha, (up.alpha - dn.alpha) / (2 * h), f"d_alpha at t={t}", rtol=1e-4, atol=1e-6)
        _close(c.d_sigma, (up.sigma - dn.sigma) / (2 * h), f"d_sigma at t={t}", rtol=1e-4, atol=1e-6)
        _close(c.log_snr, 2.0 * (torch.log(c.alpha) - torch.log(c.sigma)), f"log_snr at t={t}", rtol=1e-8, atol=1e-8)

    identities = {
        "vp": ("alpha^2 + sigma^2", lambda c: c.alpha**2 + c.sigma**2),
        "ve": ("alpha", lambda c: c.alpha),
        "flow": ("alpha + sigma", lambda c: c.alpha + c.sigma),
    }

    def family_identity() -> None:
        # at fixed interior times first: Hypothesis starts from simple values such as t = 0,
        # where every family's identity holds (alpha = 1, sigma = 0), so few examples could miss it
        for t in (0.25, 0.5, 0.75):
            _identity_at(t)
        prop(dst.times())(_identity_at)()

    def _identity_at(t: float) -> None:
        if s.family not in identities:
            raise AssertionError(f"family {s.family!r} is not one of {sorted(identities)} (or None)")
        what, value = identities[s.family]
        got = float(value(s.coefficients(_t(t))))
        assert abs(got - 1.0) < 1e-9, f"a {s.family!r} schedule has {what} = 1, but at t={t!r} it is {got!r}"

    @prop(dst.data_shapes(), st.integers(0, 2**31 - 1))
    def identity_at_zero(shape: tuple[int, ...], seed: int) -> None:
        x0 = torch.randn(shape, generator=_g(seed))
        out = s.corrupt(x0, _t(0.0), _g(seed + 1)).x_t
        assert torch.equal(out, x0), "corrupting at t=0 must return the data unchanged"

    @prop(dst.data_shapes(), dst.interior_times(), st.integers(0, 2**31 - 1), st.data())
    def per_element_time(shape: tuple[int, ...], t: float, seed: int, data: Any) -> None:
        x0 = torch.randn(shape, generator=_g(seed))
        tshape = data.draw(dst.time_shapes(shape))
        a = s.corrupt(x0, _t(t), _g(seed)).x_t
        b = s.corrupt(x0, torch.full(tshape, t, dtype=F64), _g(seed)).x_t
        assert torch.equal(a, b), f"a time tensor of shape {tshape} filled with {t} must equal the scalar time"

    def deterministic() -> None:
        x0 = torch.randn(3, 5, generator=_g(0))
        t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
        assert torch.equal(s.corrupt(x0, t, _g(7)).x_t, s.corrupt(x0, t, _g(7)).x_t), "same generator, different output"

    def marginal() -> None:
        n, value = 40000, 0.7
        x0 = torch.full((n,), value, dtype=F64)
        for t in (0.25, 0.75):
            c = s.coefficients(_t(t))
            xt = s.corrupt(x0, _t(t), _g(3)).x_t
            se = float(c.sigma) / n**0.5
            mean, std = float(xt.mean()), float(xt.std())
            assert abs(mean - value * float(c.alpha)) < 6 * se + 1e-12, (
                f"mean of x_t at t={t} is {mean}, expected {value * float(c.alpha)}"
            )
            assert abs(std - float(c.sigma)) < 6 * se * 0.75 + 1e-12, (
                f"std of x_t at t={t} is {std}, expected {float(c.sigma)}"
            )

    return {
        "endpoints": ("alpha_0 = 1, sigma_0 = 0, sigma_1 > 0", endpoints),
        "monotone_log_snr": ("log-SNR strictly decreases in t", monotone),
        "inverse_log_snr": ("t_from_log_snr inverts log_snr over (0, 1), near both ends too", inverse),
        "derivatives": ("d_alpha, d_sigma match finite differences; log_snr = 2 log(alpha/sigma)", derivatives),
        **(
            {"family_identity": ("the identity of the declared family (vp, ve, flow) holds", family_identity)}
            if s.family is not None
            else {}
        ),
        "identity_at_zero": ("corruption at t = 0 is the identity", identity_at_zero),
        "per_element_time": ("a time tensor equal to a scalar gives the scalar's result", per_element_time),
        "deterministic": ("output is a function of the generator", deterministic),
        "marginal": ("x_t has mean alpha x0 and std sigma", marginal),
    }


def categorical_schedule_contracts(s: CategoricalSchedule) -> dict[str, tuple[str, Callable[[], None]]]:
    k = s.num_classes

    def endpoints() -> None:
        k0, k1 = float(s.keep_probability(_t(0.0))), float(s.keep_probability(_t(1.0)))
        assert k0 == 1.0, f"keep-probability at t=0 must be 1, got {k0}"
        assert 0.0 <= k1 <= 1e-6, f"keep-probability at t=1 must be 0, got {k1}"
        prior = s.prior((64,), generator=_g(0))
        assert prior.dtype == torch.long and bool(((prior >= 0) & (prior < k)).all()), "prior tokens out of range"

    @prop(dst.times(min_value=0.02, max_value=0.98))
    def derivative(t: float) -> None:
        h = 1e-6
        numeric_slope = (s.keep_probability(_t(t + h)) - s.keep_probability(_t(t - h))) / (2 * h)
        _close(s.d_keep_probability(_t(t)), numeric_slope, f"d_keep_probability at t={t}", rtol=1e-4, atol=1e-6)

    def transition(a_s: float, a_t: float) -> Tensor:
        # Q[i, j] = q(x_t = j | x_s = i) from the likelihood of every possible x_t
        return s.likelihood(torch.arange(k), a_s, a_t).T.to(torch.float64)

    @prop(dst.times(), dst.times(), dst.times())
    def kernels_compose(a: float, b: float, c: float) -> None:
        lo, mid, hi = sorted((a, b, c))
        keep = [float(s.keep_probability(_t(v))) for v in (lo, mid, hi)]
        assume(keep[0] > 1e-9 and keep[1] > 1e-9)
        q_sm, q_mt, q_st = transition(keep[0], keep[1]), transition(keep[1], keep[2]), transition(keep[0], keep[2])
        _close(q_sm.sum(1), torch.ones(k, dtype=torch.float64), "rows of Q sum to 1", rtol=1e-6, atol=1e-6)
        assert bool((q_sm >= -1e-12).all()), "Q has negative entries"
        _close(q_sm @ q_mt, q_st, f"Q({lo}->{mid}) Q({mid}->{hi}) = Q({lo}->{hi})", rtol=1e-5, atol=1e-6)
        clean = s.marginal(torch.eye(k, dtype=torch.float64), 1.0)
        _close(
            clean @ transition(1.0, keep[2]),
            s.marginal(torch.eye(k, dtype=torch.float64), keep[2]).to(torch.float64),
            "marginal(x0, alpha_t) = q(x_t | x0)",
            rtol=1e-5,
            atol=1e-6,
        )

    def corruption_follows_marginal() -> None:
        n = 40000
        for t in (0.3, 0.8):
            x0 = torch.full((n,), k // 2 if not s.absorbing else 0, dtype=torch.long)
            xt = s.corrupt(x0, _t(t), _g(4)).x_t
            empirical = torch.bincount(xt, minlength=k).to(torch.float64) / n
            onehot = torch.nn.functional.one_hot(x0[:1], k).to(torch.float64)
            expected = s.marginal(onehot, float(s.keep_probability(_t(t))))[0].to(torch.float64)
            tv = 0.5 * (empirical - expected).abs().sum().item()
            assert tv < 0.02, f"corrupted tokens at t={t} deviate from q(x_t | x0) by TV {tv:.3f}"

    @prop(dst.times(), dst.times())
    def monotone(a: float, b: float) -> None:
        lo, hi = min(a, b), max(a, b)
        k_lo, k_hi = float(s.keep_probability(_t(lo))), float(s.keep_probability(_t(hi)))
        assert 0.0 <= k_hi <= k_lo <= 1.0, (
            f"keep-probability must decrease within [0, 1]: {k_lo} at {lo}, {k_hi} at {hi}"
        )

    @prop(dst.data_shapes(), st.integers(0, 2**31 - 1))
    def identity_at_zero(shape: tuple[int, ...], seed: int) -> None:
        x0 = torch.randint(0, s.num_classes, shape, generator=_g(seed))
        assert torch.equal(s.corrupt(x0, _t(0.0), _g(seed)).x_t, x0), "corrupting at t=0 must return the data unchanged"

    @prop(dst.data_shapes(), dst.interior_times(), st.integers(0, 2**31 - 1), st.data())
    def per_element_time(shape: tuple[int, ...], t: float, seed: int, data: Any) -> None:
        x0 = torch.randint(0, s.num_classes, shape, generator=_g(seed))
        tshape = data.draw(dst.time_shapes(shape))
        a = s.corrupt(x0, _t(t), _g(seed)).x_t
        b = s.corrupt(x0, torch.full(tshape, t, dtype=F64), _g(seed)).x_t
        assert torch.equal(a, b), f"a time tensor of shape {tshape} filled with {t} must equal the scalar time"

    return {
        "endpoints": ("keep-probability is 1 at t = 0 and 0 at t = 1; prior tokens in range", endpoints),
        "derivative": ("d_keep_probability matches finite differences", derivative),
        "kernels_compose": ("transition matrices are row-stochastic and Q(s->t) Q(t->u) = Q(s->u)", kernels_compose),
        "corruption_follows_marginal": ("corrupted tokens are distributed as q(x_t | x0)", corruption_follows_marginal),
        "monotone_keep_probability": ("keep-probability decreases in t", monotone),
        "identity_at_zero": ("corruption at t = 0 is the identity", identity_at_zero),
        "per_element_time": ("a time tensor equal to a scalar gives the scalar's result", per_element_time),
    }


# --- parameterizations -------------------------------------------------------------------------


def gaussian_parameterization_contracts(p: GaussianParameterization) -> dict[str, tuple[str, Callable[[], None]]]:
    schedule = TrigonometricSchedule()

    @prop(dst.data_shapes(), st.integers(0, 2**31 - 1), st.data())
    def round_trip(shape: tuple[int, ...], seed: int, data: Any) -> None:
        g = _g(seed)
        x0, eps = torch.randn(shape, generator=g, dtype=F64), torch.randn(shape, generator=g, dtype=F64)
        t = data.draw(dst.time_tensors(shape, margin=0.02))
        c = schedule.coefficients(t).align(x0)
        x = c.alpha * x0 + c.sigma * eps
        prepared = p.prepare(schedule, x, t)
        raw = p.target(x0, eps, x, prepared.context)
        pred = p.output(raw, prepared)
        _close(pred.x0, x0, "x0 recovered from the exact target", rtol=1e-6, atol=1e-8)
        _close(pred.eps, eps, "eps recovered from the exact target", rtol=1e-6, atol=1e-8)
        from diffusekit.schedule import Corrupted

        loss = p.loss(raw, prepared, x0, Corrupted(x, eps))
        assert float(loss.abs().max()) < 1e-12, "the loss at the exact target must be 0"

    @prop(dst.data_shapes(), dst.interior_times(0.02), st.data())
    def per_element_time(shape: tuple[int, ...], t: float, data: Any) -> None:
        x = torch.randn(shape, generator=_g(1), dtype=F64)
        tshape = data.draw(dst.time_shapes(shape))
        a, b = p.prepare(schedule, x, _t(t)), p.prepare(schedule, x, torch.full(tshape, t, dtype=F64))
        _close(a.x_in, b.x_in, "network input", rtol=0, atol=0)
        _close(torch.broadcast_to(a.noise_level, b.noise_level.shape), b.noise_level, "noise level", rtol=0, atol=0)

    return {
        "round_trip": ("the exact target converts back to (x0, eps) and has zero loss", round_trip),
        "per_element_time": ("a time tensor equal to a scalar gives the scalar's inputs", per_element_time),
    }


# --- samplers ----------------------------------------------------------------------------------


def _oracle(dim: int = 2, components: int = 3, seed: int = 0) -> OracleDenoiser:
    mixture = GaussianMixture.random((dim,), components, generator=_g(seed))
    return OracleDenoiser.single(mixture, TrigonometricSchedule())


def _grid(steps: int) -> TimeGrid:
    from diffusekit.builtins import UniformGrid

    return UniformGrid(steps=steps)


def _check_step_result(sampler: Sampler, x: dict[str, Tensor], out: Any) -> None:
    """``out``, what ``sampler.step`` returned for the state ``x``, is a :class:`Step` holding
    every part of ``x`` with its shape and dtype.

    A sampler's own contract, checked on one step by itself: otherwise a bare tensor returned
    by ``update`` surfaces as an ``AttributeError`` inside ``Sampler.sample``, and a part of
    the wrong shape only where a network fails on it a step later (``sample`` checks shapes,
    ``step``, which users call by hand, does not).
    """
    name = type(sampler).__name__
    assert isinstance(out, Step), (
        f"{name}.update returned a {type(out).__name__}; it must return diffusekit.Step(x, predictions), "
        "x mapping every part to its new value"
    )
    assert isinstance(out.x, Mapping), f"{name}.update returned a Step whose x is a {type(out.x).__name__}, not a dict"

    def form(v: Any) -> str:
        return f"{tuple(v.shape)} {v.dtype}" if isinstance(v, Tensor) else type(v).__name__

    got, given = {p: form(v) for p, v in out.x.items()}, {p: form(v) for p, v in x.items()}
    assert got == given, f"{name}.step returned parts {got}; it was given {given}"


def gaussian_sampler_contracts(sampler: Sampler) -> dict[str, tuple[str, Callable[[], None]]]:
    """The contracts of a sampler of Gaussian parts, driven by the exact :class:`OracleDenoiser`.

    Unless a contract says otherwise: a single part ``"x"`` of shape ``(B, 2)``, a random
    3-component :class:`GaussianMixture`, the kit's :class:`TrigonometricSchedule`, the
    ``core:uniform`` grid, float64 states and a seeded generator. ``returns_step`` uses a
    ``(4, 3, 2)`` part, ``multi_part`` two parts, and ``declared_order`` log-SNR-uniform plans
    from sigma~ = 80 to 0.002 without a generator. ``converges``, ``declared_order`` (not for
    ``adaptive`` solvers) and ``rows_step_independently`` apply only when ``stochastic`` is false.
    """
    stochastic = bool(sampler.stochastic)
    # an adaptive solver's step sizes depend on the whole batch: agreement only to its tolerance
    exact = 1e-9 if not getattr(sampler, "adaptive", False) else 1e-4

    def run(den: Any, x: Any, steps: int, seed: int = 0) -> Any:
        return sampler.sample(den, x, _grid(steps), generator=_g(seed), dtype=F64)

    def returns_step() -> None:
        # one part with several data dimensions: a state flattened to (B, -1) must not pass
        mixture = GaussianMixture.random((3, 2), 3, generator=_g(2))
        den = OracleDenoiser.single(mixture, TrigonometricSchedule())
        x = {"x": torch.randn(4, 3, 2, generator=_g(0), dtype=F64)}
        out = sampler.step(den, x, {"x": _t(0.6)}, {"x": _t(0.3)}, generator=_g(1))
        _check_step_result(sampler, x, out)

    def deterministic() -> None:
        den = _oracle()
        a, b = run(den, (64, 2), 12, seed=5), run(den, (64, 2), 12, seed=5)
        assert torch.equal(a, b), "the same generator must give the same samples"

    @prop(st.integers(1, 6), dst.interior_times(0.05), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
    def per_element_time(batch: int, t: float, frac: float, seed: int) -> None:
        den = _oracle()
        s = t * frac
        x = {"x": torch.randn(batch, 2, generator=_g(seed), dtype=F64)}
        a = sampler.step(den, x, {"x": _t(t)}, {"x": _t(s)}, generator=_g(seed)).x["x"]
        tf, tt = torch.full((batch,), t, dtype=F64), torch.full((batch,), s, dtype=F64)
        b = sampler.step(den, x, {"x": tf}, {"x": tt}, generator=_g(seed)).x["x"]
        _close(a, b, "per-sample times equal to a scalar", rtol=1e-12, atol=1e-12)

    @prop(st.integers(1, 6), dst.interior_times(0.05), st.booleans(), st.integers(0, 2**31 - 1))
    def unchanged_where_time_is_fixed(batch: int, t: float, at_zero: bool, seed: int) -> None:
        # Per-element times inside each sample: the first coordinate is held at t (mid-way) or
        # at 0 (known data: inpainting, a conditioning part), the second moves. The oracle
        # couples the coordinates of a sample, as a network would.
        den = _oracle()
        x = {"x": torch.randn(batch, 2, generator=_g(seed), dtype=F64)}
        fixed = torch.zeros(batch, 2, dtype=torch.bool)
        fixed[:, 0] = True
        hold = 0.0 if at_zero else t
        t_from = torch.where(fixed, hold, t).to(F64)
        t_to = torch.where(fixed, hold, t / 2).to(F64)
        out = sampler.step(den, x, {"x": t_from}, {"x": t_to}, generator=_g(seed)).x["x"]
        assert torch.equal(out[fixed], x["x"][fixed]), "elements whose time does not change must be returned untouched"
        assert bool(torch.isfinite(out).all()), f"non-finite output with elements held at t={hold}"
        assert not torch.equal(out[~fixed], x["x"][~fixed]), "elements whose time changes must move"

    @prop(st.integers(2, 5), st.integers(0, 2**31 - 1))
    def rows_step_independently(batch: int, seed: int) -> None:
        den = _oracle()
        g = _g(seed)
        x = {"x": torch.randn(batch, 2, generator=g, dtype=F64)}
        t_from = 0.1 + 0.85 * torch.rand(batch, generator=g, dtype=F64)
        t_to = t_from * torch.rand(batch, generator=g, dtype=F64)
        out = sampler.step(den, x, {"x": t_from}, {"x": t_to}).x["x"]
        for i in range(batch):
            row = sampler.step(den, {"x": x["x"][i : i + 1]}, {"x": t_from[i]}, {"x": t_to[i]}).x["x"]
            _close(
                out[i : i + 1],
                row,
                f"row {i} stepped within a batch of distinct times vs alone",
                rtol=exact,
                atol=exact,
            )

    def multi_part() -> None:
        mix_a = GaussianMixture.random((2,), 2, generator=_g(1))
        mix_b = GaussianMixture.random((3, 2), 3, generator=_g(2))
        sched = TrigonometricSchedule()
        joint = OracleDenoiser({"a": mix_a, "b": mix_b}, {"a": sched, "b": sched})
        x = {
            "a": torch.randn(16, 2, generator=_g(3), dtype=F64),
            "b": torch.randn(16, 3, 2, generator=_g(4), dtype=F64),
        }
        out = run(joint, x, 10)
        assert set(out) == {"a", "b"} and out["a"].shape == (16, 2) and out["b"].shape == (16, 3, 2)
        assert all(bool(torch.isfinite(v).all()) for v in out.values()), "non-finite samples"
        if not stochastic:
            alone = run(OracleDenoiser.single(mix_a, sched), x["a"], 10)
            _close(out["a"], alone, "a part sampled jointly vs alone (independent parts)", rtol=exact, atol=exact)

    def reproduces_target() -> None:
        den = _oracle(seed=11)
        mixture = den.mixtures["x"]
        if getattr(sampler, "expects", "denoiser") == "consistency":  # it steps a consistency function
            den = FlowMapOracle.of(den)
        n = 4000
        steps = 200 if stochastic else 100
        out = run(den, (n, 2), steps, seed=3)
        assert bool(torch.isfinite(out).all()), "non-finite samples"
        # assign each sample to its most likely component and compare with the weights
        d2 = ((out[:, None, :] - mixture.means[None]) / mixture.stds[None]).square().sum(-1)
        counts = torch.bincount(d2.argmin(1), minlength=len(mixture.weights)).to(F64) / n
        err = (counts - mixture.weights).abs().max().item()
        assert err < 0.04, (
            f"mode proportions {counts.tolist()} differ from the weights {mixture.weights.tolist()} by {err:.3f}"
        )
        true = mixture.sample(200000, _g(9))
        for name, a, b, tol in (("mean", out.mean(0), true.mean(0), 0.1), ("std", out.std(0), true.std(0), 0.1)):
            diff = (a - b).abs().max().item()
            assert diff < tol, f"sample {name} {a.tolist()} differs from the target's {b.tolist()} by {diff:.3f}"

    def converges() -> None:
        den = _oracle(seed=4)
        x = torch.randn(256, 2, generator=_g(8), dtype=F64)
        reference = run(den, x, 512, seed=1)
        coarse = (run(den, x, 8, seed=1) - reference).norm(dim=1).mean().item()
        fine = (run(den, x, 64, seed=1) - reference).norm(dim=1).mean().item()
        assert fine < coarse, (
            f"error against a 512-step solution did not fall with more steps: {coarse:.3g} at 8, {fine:.3g} at 64"
        )

    def declared_order() -> None:
        # A smooth 3-component mixture in 4 dimensions; plans uniform in log-SNR from
        # sigma~ = 80 to 0.002 (stopping there: the last step to t = 0 is singular). The
        # reference is the sampler's own 1024-step solution; the rate is log2 of the error
        # ratio when the steps double, the better of 32->64 and 64->128 (multistep methods
        # settle slowly), and must reach the declared order less 0.5.
        schedule = TrigonometricSchedule()
        mixture = GaussianMixture.random((4,), 3, generator=_g(2), spread=1.0, std_range=(0.6, 1.0))
        den = OracleDenoiser.single(mixture, schedule)
        lo, hi = -2.0 * math.log(80.0), -2.0 * math.log(0.002)

        def plan(n: int) -> TimePlan:
            return TimePlan.from_times(list(schedule.t_from_log_snr(torch.linspace(lo, hi, n + 1, dtype=F64))), ["x"])

        x = 80.0 / math.hypot(1.0, 80.0) * torch.randn(64, 4, generator=_g(1), dtype=F64)  # sigma at sigma~ = 80
        reference = sampler.sample(den, x, plan(1024))
        errors = [(sampler.sample(den, x, plan(n)) - reference).norm(dim=1).mean().item() for n in (32, 64, 128)]
        rate = max(math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False))
        assert rate > sampler.order - 0.5, (
            f"declares order {sampler.order}, but the error falls at rate {rate:.2f} when the steps double "
            f"(errors {[f'{e:.3g}' for e in errors]} at 32, 64, 128 steps)"
        )

    def thread_safe() -> None:
        den = _oracle()
        expected = [run(den, (32, 2), 8, seed=i) for i in range(4)]
        got: list[Any] = [None] * 4
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                got[i] = run(den, (32, 2), 8, seed=i)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, f"sampling raised in a thread: {errors[0]!r}"
        assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True)), (
            "concurrent sampling differs from sequential"
        )

    out = {
        "returns_step": ("a step returns a Step with every part in its shape and dtype", returns_step),
        "deterministic": ("samples are a function of the generator", deterministic),
        "per_element_time": ("per-sample times equal to a scalar give the scalar's step", per_element_time),
        "unchanged_where_time_is_fixed": ("elements with t_from == t_to are untouched", unchanged_where_time_is_fixed),
        "multi_part": ("steps every part of a multi-part state, each as if alone", multi_part),
        "reproduces_target": ("driven by the exact denoiser, samples match a Gaussian mixture", reproduces_target),
        "thread_safe": ("sampling from 4 threads equals sequential sampling", thread_safe),
    }
    if not stochastic:
        out["converges"] = ("endpoint error falls as the number of steps grows", converges)
        if not getattr(sampler, "adaptive", False):  # an adaptive solver's steps are its own
            out["declared_order"] = ("the error falls at least at the declared order", declared_order)
        out["rows_step_independently"] = ("each element steps with its own times, as if alone", rows_step_independently)
    return out


# --- categorical parameterizations and samplers -----------------------------------------------------


def categorical_parameterization_contracts(p: CategoricalParameterization) -> dict[str, tuple[str, Callable[[], None]]]:
    schedule = ReferenceAbsorbing(num_classes=5)

    @prop(st.integers(1, 4), st.integers(1, 6), dst.interior_times(0.02), st.integers(0, 2**31 - 1))
    def distributions(batch: int, length: int, t: float, seed: int) -> None:
        g = _g(seed)
        x0 = torch.randint(0, 4, (batch, length), generator=g)
        xt = schedule.corrupt(x0, _t(t), g).x_t
        raw = torch.randn(batch, length, 5, generator=g)
        prepared = p.prepare(schedule, xt, _t(t))
        probs = p.output(raw, prepared).probs
        assert probs.shape == (batch, length, 5), f"prediction shape {tuple(probs.shape)}"
        _close(probs.sum(-1), torch.ones(batch, length), "probabilities sum to 1", rtol=1e-5, atol=1e-5)
        loss = p.loss(raw, prepared, x0, None)
        assert loss.shape == (batch, length) and bool(torch.isfinite(loss).all()) and bool((loss >= 0).all()), (
            "the loss must be finite and non-negative per token"
        )
        full = p.prepare(schedule, xt, torch.full((batch,), t, dtype=F64))
        _close(p.output(raw, full).probs, probs, "per-sample time equal to a scalar", rtol=1e-6, atol=1e-7)

    return {
        "distributions": ("predictions are distributions over the classes; finite, non-negative loss", distributions)
    }


def categorical_sampler_contracts(sampler: Sampler) -> dict[str, tuple[str, Callable[[], None]]]:
    """The contracts of a sampler of categorical parts, driven by the exact :class:`SequenceOracle`
    of a Markov chain over 4 tokens of 3 values under ``ReferenceAbsorbing(num_classes=4)`` and
    the ``core:uniform`` grid; ``reproduces_target`` applies only when ``stochastic`` is true."""
    schedule = ReferenceAbsorbing(num_classes=4)
    oracle = SequenceOracle.markov_chain(schedule, 4, 3, seed=0)
    stochastic = bool(sampler.stochastic)

    def run(x, steps: int, seed: int) -> Tensor:
        return sampler.sample(oracle, x, _grid(steps), generator=_g(seed))

    def returns_step() -> None:
        x = {"x": schedule.corrupt(torch.randint(0, 3, (4, 4), generator=_g(0)), _t(0.6), _g(1)).x_t}
        _check_step_result(sampler, x, sampler.step(oracle, x, {"x": _t(0.6)}, {"x": _t(0.3)}, generator=_g(2)))

    def deterministic() -> None:
        assert torch.equal(run((64, 4), 8, 3), run((64, 4), 8, 3)), "the same generator must give the same samples"

    def completes() -> None:
        out = run((256, 4), 6, 1)
        assert out.dtype == torch.long and out.shape == (256, 4), f"tokens of shape {tuple(out.shape)} and {out.dtype}"
        assert bool((out < 3).all() & (out >= 0).all()), "sampling to t = 0 must leave only real tokens"

    @prop(st.integers(1, 5), dst.interior_times(0.05), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
    def per_element_time(batch: int, t: float, frac: float, seed: int) -> None:
        x = {"x": schedule.corrupt(torch.randint(0, 3, (batch, 4), generator=_g(seed)), _t(t), _g(seed + 1)).x_t}
        s = t * frac
        a = sampler.step(oracle, x, {"x": _t(t)}, {"x": _t(s)}, generator=_g(seed)).x["x"]
        b = sampler.step(
            oracle,
            x,
            {"x": torch.full((batch,), t, dtype=F64)},
            {"x": torch.full((batch,), s, dtype=F64)},
            generator=_g(seed),
        ).x["x"]
        assert torch.equal(a, b), "per-sample times equal to a scalar must give the scalar's step"

    @prop(st.integers(1, 5), st.integers(0, 2**31 - 1))
    def unchanged_where_time_is_fixed(batch: int, seed: int) -> None:
        # the first two tokens are given (held at t = 0), the rest are masked and move
        given = torch.randint(0, 3, (batch, 2), generator=_g(seed))
        x = {"x": torch.cat([given, torch.full((batch, 2), 3)], dim=1)}
        t_from = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=F64).expand(batch, 4)
        t_to = torch.zeros(batch, 4, dtype=F64)
        out = sampler.step(oracle, x, {"x": t_from}, {"x": t_to}, generator=_g(seed)).x["x"]
        assert torch.equal(out[:, :2], given), "tokens whose time does not change must be returned untouched"
        assert bool((out[:, 2:] < 3).all()), "tokens stepped to t = 0 must be unmasked"

    def reproduces_target() -> None:
        out = run((20000, 4), 64, 7)
        tv = 0.5 * (oracle.empirical(out) - oracle.distribution()).abs().sum().item()
        assert tv < 0.05, f"samples deviate from the exact Markov-chain distribution by TV {tv:.3f}"

    def thread_safe() -> None:
        expected = [run((32, 4), 6, i) for i in range(4)]
        got: list[Any] = [None] * 4

        def work(i: int) -> None:
            got[i] = run((32, 4), 6, i)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True)), "concurrent sampling differs"

    out = {
        "returns_step": ("a step returns a Step with every part in its shape and dtype", returns_step),
        "deterministic": ("samples are a function of the generator", deterministic),
        "completes": ("sampling to t = 0 leaves only real tokens", completes),
        "per_element_time": ("per-sample times equal to a scalar give the scalar's step", per_element_time),
        "unchanged_where_time_is_fixed": ("tokens held at their time are untouched", unchanged_where_time_is_fixed),
        "thread_safe": ("sampling from 4 threads equals sequential sampling", thread_safe),
    }
    if stochastic:
        out["reproduces_target"] = (
            "driven by the exact denoiser, samples follow the exact distribution",
            reproduces_target,
        )
    return out


# --- grids -------------------------------------------------------------------------------------


def grid_contracts(grid: TimeGrid, registry: Registry | None) -> dict[str, tuple[str, Callable[[], None]]]:
    """The grid's times under every schedule it supports: the kit's reference schedule and every
    schedule in ``registry``, whichever plugin registers it. A grid that is valid for the shipped
    schedules but repeats a time under a third-party one (which stops at a lower noise level,
    say) fails here, in the grid's own check, naming that schedule. The smallest, the second
    smallest and the largest step counts are always tried, whatever the number of examples."""
    schedules: list[tuple[str, Schedule]] = []
    if "gaussian" in grid.supports:
        schedules.append(("the reference schedule", TrigonometricSchedule()))
    if registry is not None:
        for entry in registry.entries("schedule"):
            if entry.obj.kind in grid.supports:
                try:
                    schedules.append((f"schedule {entry.qualname}", entry.obj()))
                except Exception:  # not buildable with defaults: the schedule's own check says so
                    continue

    def times_under(steps: int) -> None:
        g = attrs.evolve(grid, steps=steps)
        for name, schedule in schedules:
            t = g.times(schedule)
            where = f"under {name}, {steps} step{'s' if steps > 1 else ''}"
            assert t.shape == (steps + 1,), f"{where}: expected {steps + 1} times, got shape {tuple(t.shape)}"
            assert t.dtype == F64, f"{where}: times must be float64, got {t.dtype}"
            assert float(t[-1]) == 0.0, f"{where}: the last time must be exactly 0, got {float(t[-1])}"
            assert bool((t >= 0).all() and (t <= 1).all()), f"{where}: times must lie in [0, 1]: {t.tolist()}"
            stuck = (t[1:] >= t[:-1]).nonzero()
            if len(stuck):
                i = int(stuck[0])
                raise AssertionError(
                    f"{where}: times must strictly decrease, but t[{i}] = {float(t[i])!r} and "
                    f"t[{i + 1}] = {float(t[i + 1])!r}"
                )

    def valid_times() -> None:
        for steps in (1, 2, 60):
            times_under(steps)
        prop(st.integers(1, 60))(times_under)()

    def plan_under(steps: int, shape: tuple[int, ...]) -> None:
        g = attrs.evolve(grid, steps=steps)
        for name, schedule in schedules:
            plan = g.plan({"x": schedule}, {"x": shape})
            where = f"under {name}, {steps} step{'s' if steps > 1 else ''}, a part of shape {shape}"
            try:
                plan.check()
                last = torch.broadcast_to(plan[-1]["x"], shape[: plan[-1]["x"].ndim])
            except (ShapeError, RuntimeError) as exc:
                raise AssertionError(f"{where}: {exc}") from None
            assert bool((last == 0).all()), f"{where}: the plan must end with every element at t = 0"
            for i, entry in enumerate(plan.entries):
                t = entry["x"]
                fits = t.ndim <= len(shape) and all(a in (1, b) for a, b in zip(t.shape, shape, strict=False))
                assert fits, f"{where}: entry {i} has times of shape {tuple(t.shape)}, not aligned with the part"

    def valid_plan() -> None:
        prop(st.integers(1, 24), st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 2)))(plan_under)()

    return {
        "valid_times": ("steps + 1 strictly decreasing times in [0, 1] ending at 0, for every schedule", valid_times),
        "valid_plan": ("its plan for a part: in [0, 1], never rising, aligned with the part, ending at 0", valid_plan),
    }


# --- guidance, conditions, networks, methods, datasets ----------------------------------------------


def guidance_contracts(guidance: Guidance) -> dict[str, tuple[str, Callable[[], None]]]:
    den = _oracle(dim=3, components=4, seed=2)

    @prop(st.integers(1, 6), dst.interior_times(0.05), st.integers(0, 2**31 - 1))
    def neutral(batch: int, t: float, seed: int) -> None:
        g = _g(seed)
        x = {"x": torch.randn(batch, 3, generator=g, dtype=F64)}
        cond = ClassLabel(torch.randint(-1, 4, (batch,), generator=g), num_classes=4)
        plain = den(x, {"x": _t(t)}, cond)["x"].x0
        once = guidance.neutral().wrap(den)(x, {"x": _t(t)}, cond)["x"].x0
        twice = guidance.neutral().wrap(guidance.neutral().wrap(den))(x, {"x": _t(t)}, cond)["x"].x0
        _close(once, plain, "neutral guidance vs the plain denoiser", rtol=1e-10, atol=1e-10)
        _close(twice, plain, "neutral guidance composed twice vs the plain denoiser", rtol=1e-10, atol=1e-10)

    def keeps_schedules() -> None:
        wrapped = guidance.wrap(den)
        assert dict(wrapped.schedules) == dict(den.schedules), "a guided denoiser must keep the schedules"
        x = {"x": torch.randn(4, 3, generator=_g(0), dtype=F64)}
        out = wrapped(x, {"x": _t(0.5)}, None)
        assert set(out) == {"x"} and out["x"].x0.shape == (4, 3), "a guided denoiser must predict every part"

    return {
        "neutral": ("neutral guidance (alone or composed) equals the plain denoiser", neutral),
        "keeps_schedules": ("the guided denoiser keeps schedules and parts", keeps_schedules),
    }


def condition_contracts(cls: type[Condition]) -> dict[str, tuple[str, Callable[[], None]]]:
    @prop(dst.conditions(cls), st.integers(0, 2**31 - 1))
    def null_and_dropout(cond: Condition, seed: int) -> None:
        n = cond.batch_size
        null = cond.null_like()
        assert null.batch_size == n and bool(null.is_null().all()), "null_like() must be null for every sample"
        assert torch.equal(cond.dropout(0.0, _g(seed)).is_null(), cond.is_null()), "dropout(0) must change nothing"
        assert bool(cond.dropout(1.0, _g(seed)).is_null().all()), "dropout(1) must null every sample"
        a, b = cond.dropout(0.5, _g(seed)).is_null(), cond.dropout(0.5, _g(seed)).is_null()
        assert torch.equal(a, b), "dropout must be a function of the generator"
        assert bool((a | ~cond.is_null()).all()), "dropout must not un-null a null sample"

    @prop(dst.conditions(cls), dst.conditions(cls))
    def batching(a: Condition, b: Condition) -> None:
        both = a.cat(b)
        assert both.batch_size == a.batch_size + b.batch_size, "cat must add batch sizes"
        back = both.take(slice(0, a.batch_size))
        assert torch.equal(back.is_null(), a.is_null()), "take after cat must give back the first batch"
        mask = torch.arange(a.batch_size) % 2 == 0
        mixed = a.where(mask, a.null_like())
        assert torch.equal(mixed.is_null(), mask | a.is_null()), (
            "where(mask, null) must null exactly the masked samples"
        )

    return {
        "null_and_dropout": ("null form, dropout(0), dropout(1), deterministic dropout", null_and_dropout),
        "batching": ("cat, take and where act per sample", batching),
    }


def network_contracts(network: Network) -> dict[str, tuple[str, Callable[[], None]]]:
    def build() -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return network.build().eval()

    def deterministic_init() -> None:
        a, b = build().state_dict(), build().state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "initialisation must follow the seed"

    def forward() -> None:
        x = network.example_input(3, _g(2))
        if x is None:
            return
        module = build()
        with torch.no_grad():
            for p in module.parameters():  # zero-initialised outputs would hide shape bugs
                p.add_(0.01 * torch.randn(p.shape, generator=_g(1)))
            a = module(x, torch.tensor(0.3), None)
            b = module(x, torch.full((3,), 0.3), None)
        assert a.shape[: x.ndim] == x.shape, (
            f"output shape {tuple(a.shape)} does not start with the input's {tuple(x.shape)}"
        )
        assert bool(torch.isfinite(a).all()), "non-finite output"
        _close(a, b, "scalar vs per-sample noise level", rtol=1e-5, atol=1e-6)

    return {
        "deterministic_init": ("build() under a fixed seed gives the same weights", deterministic_init),
        "forward": ("output has the input's shape; a scalar noise level equals a per-sample one", forward),
    }


def method_contracts(method: Method, registry: Registry | None) -> dict[str, tuple[str, Callable[[], None]]]:
    def valid_recipe() -> None:
        recipe = method.recipe()
        if registry is not None:
            validate(recipe, registry)
        assert loads_toml(dumps_toml(recipe)) == recipe, "the recipe must round-trip through TOML"
        assert loads_json(dumps_json(recipe)) == recipe, "the recipe must round-trip through JSON"

    def conditions() -> None:
        cond = method.condition(4)
        assert cond is None or cond.batch_size == 4, "condition(4) must describe 4 samples"

    def weights() -> None:
        path = method.weights()
        if path is None:
            return
        from diffusekit.checkpoint import load_checkpoint
        from diffusekit.training import stages, training_difference

        checkpoint = load_checkpoint(path)
        recipe = method.recipe()
        shipped = checkpoint.recipe
        assert shipped.parts == recipe.parts and shipped.network == recipe.final_network, (
            f"shipped weights {path} were trained with another model than the method's recipe"
        )
        # trained as the recipe's last stage says (bookkeeping such as the planned step count aside),
        # for its steps, so `diffusekit train METHOD` reproduces them
        last = stages(recipe)[-1]
        which = "recipe's" if not recipe.finetune else "recipe's last finetune stage's"
        differs = training_difference(shipped, last)
        assert differs is None, f"shipped weights {path} were trained with another {differs} than the {which}"
        assert checkpoint.step == last.train.steps, (
            f"shipped weights {path} are from step {checkpoint.step}, the {which} trains {last.train.steps} steps"
        )

    return {
        "valid_recipe": ("the recipe is valid and round-trips through TOML and JSON", valid_recipe),
        "conditions": ("condition(num) describes num samples", conditions),
        "weights": ("shipped weights were trained by the method's recipe, for its steps", weights),
    }


def dataset_contracts(dataset: Dataset) -> dict[str, tuple[str, Callable[[], None]]]:
    def loads() -> None:
        data = dataset.load()
        assert isinstance(data, Data), f"load() must return diffusekit.Data, got {type(data).__name__}"
        n = len(data)
        assert n >= 1, "the dataset is empty"
        assert data.condition is None or data.condition.batch_size == n, "one condition per example"
        assert all(bool(torch.isfinite(v.float()).all()) for v in data.parts.values()), "non-finite data"

    return {"loads": ("load() returns finite Data with one condition per example", loads)}


# --- assembly ----------------------------------------------------------------------------------


def _instance(entry: Entry) -> Any:
    try:
        return entry.obj()
    except TypeError as exc:
        raise AssertionError(
            f"{entry.qualname} cannot be built with default parameters ({exc}); give every parameter a default"
        ) from None


def _kind_contracts(entry: Entry, obj: Any, registry: Registry | None) -> dict[str, tuple[str, Callable[[], None]]]:
    if entry.kind == "schedule" and isinstance(obj, GaussianSchedule):
        return gaussian_schedule_contracts(obj)
    if entry.kind == "schedule" and isinstance(obj, CategoricalSchedule):
        return categorical_schedule_contracts(obj)
    if entry.kind == "parameterization" and isinstance(obj, GaussianParameterization):
        return gaussian_parameterization_contracts(obj)
    if entry.kind == "sampler" and "gaussian" in obj.supports:
        return gaussian_sampler_contracts(obj)
    if entry.kind == "sampler" and "categorical" in obj.supports:
        return categorical_sampler_contracts(obj)
    if entry.kind == "parameterization" and isinstance(obj, CategoricalParameterization):
        return categorical_parameterization_contracts(obj)
    if entry.kind == "grid":
        return grid_contracts(obj, registry)
    if entry.kind == "guidance":
        return guidance_contracts(obj)
    if entry.kind == "network":
        return network_contracts(obj)
    if entry.kind == "method":
        return method_contracts(obj, registry)
    if entry.kind == "dataset":
        return dataset_contracts(obj)
    return {}


def contracts_for(entry: Entry, registry: Registry | None = None) -> list[Contract]:
    """The contracts of one registered component."""
    if entry.kind == "condition":
        return [
            Contract(entry.qualname, entry.kind, name, doc, fn)
            for name, (doc, fn) in condition_contracts(entry.obj).items()
        ]
    try:
        obj = _instance(entry)
    except AssertionError as exc:
        message = str(exc)

        def fail() -> None:
            raise AssertionError(message)

        return [Contract(entry.qualname, entry.kind, "defaults", "buildable with default parameters", fail)]
    table = dict(_kind_contracts(entry, obj, registry))
    if registry is not None and entry.kind not in ("method", "dataset"):

        def round_trip() -> None:
            spec = spec_of(registry, obj)
            again = instantiate(registry, entry.kind, spec, entry.kind)
            assert again == obj, f"rebuilding from {spec} gave {again!r}, not {obj!r}"

        table["recipe_round_trip"] = ("rebuilds equal from its recipe spec", round_trip)
    if not table:
        table["generic"] = (f"no contracts are defined for this {entry.kind}", lambda: None)
    return [Contract(entry.qualname, entry.kind, name, doc, fn) for name, (doc, fn) in table.items()]


def plugin_contracts(plugin: str, registry: Registry | None = None) -> list[Contract]:
    """The contracts of every component registered by ``plugin``."""
    if registry is None:
        from diffusekit.plugins import get_registry

        registry = get_registry()
    return [c for entry in registry.entries(plugin=plugin) for c in contracts_for(entry, registry)]
