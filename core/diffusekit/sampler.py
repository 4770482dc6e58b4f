"""Time grids, time plans and samplers.

A :class:`TimeGrid` says which times to visit (``steps + 1`` decreasing times ending
at 0) for a given schedule. A :class:`TimePlan` is the sequence of *time states* a
sampler visits: one time per part per entry, each a tensor aligned with its part. An
ordinary grid becomes a plan of scalar times; a diffusion-forcing scheduling matrix is
a plan of ``(B, F)`` times; conditioning on a part is a plan that keeps it at 0.

A :class:`Sampler` is stateless. :meth:`Sampler.step` maps ``(x, t_from)`` to
``(x, t_to)`` and returns any history a multistep method needs as an explicit
``carry``; elements whose time does not change are returned untouched.
:meth:`Sampler.sample` owns the loop, in the spirit of k-diffusion's
``sample_*(model, x, sigmas)`` functions.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import attrs
import torch
from torch import Tensor

from diffusekit.condition import Condition
from diffusekit.denoiser import DenoiserLike
from diffusekit.errors import ShapeError
from diffusekit.schedule import Coefficients, Schedule
from diffusekit.state import (
    Parts,
    PartTimes,
    Shape,
    State,
    Time,
    align_time,
    as_parts,
    batch_size,
    part_shapes,
    part_times,
    restore,
)


class TimeGrid(abc.ABC):
    """Which times a sampler visits: ``steps + 1`` strictly decreasing times, the last exactly 0."""

    steps: int
    supports: ClassVar[frozenset[str]] = frozenset({"gaussian", "categorical"})
    """The schedule families this grid can be computed for."""

    @abc.abstractmethod
    def times(self, schedule: Schedule) -> Tensor:
        """The grid for ``schedule`` as a float64 tensor of shape ``(steps + 1,)``."""

    def plan(self, schedules: Mapping[str, Schedule], shapes: Mapping[str, tuple[int, ...]]) -> TimePlan:
        """The time plan for parts of these shapes (batch first). By default every element of a
        part follows :meth:`times` under its schedule. A scheduling matrix overrides this with
        per-element times: frames of a video at different noise levels (diffusion forcing,
        autoregressive and pyramid schedules), each row still non-increasing and ending at 0."""
        return TimePlan.from_grid(self, schedules)


@attrs.frozen(eq=False)
class TimePlan:
    """A sequence of time states: ``plan[i]`` maps every part to its time tensor."""

    entries: tuple[PartTimes, ...]
    columns: Mapping[str, Tensor] | None = None
    """Per part, all the plan's (scalar) times as one 1-D tensor, when known: saves re-stacking them."""

    @classmethod
    def from_grid(cls, grid: TimeGrid, schedules: Mapping[str, Schedule]) -> TimePlan:
        """The plan that visits ``grid``'s times for every part (each part with its own schedule)."""
        columns = {name: grid.times(schedule) for name, schedule in schedules.items()}
        rows = {name: col.unbind() for name, col in columns.items()}
        return cls(tuple({name: rows[name][i] for name in columns} for i in range(grid.steps + 1)), columns)

    @classmethod
    def from_times(cls, times: Sequence[Time], parts: Sequence[str]) -> TimePlan:
        """A plan from explicit time states (floats, tensors or per-part mappings)."""
        return cls(tuple(part_times(t, parts) for t in times))

    def hold(self, part: str, mask: Tensor | None = None, at: float = 0.0) -> TimePlan:
        """The same plan with ``part`` (or its elements where ``mask`` is true) held at t = ``at``.

        Elements held at 0 are data the sampler never changes: the known pixels of
        inpainting, the given frames of image-to-video, the observed modality of
        conditional UniDiffuser-style generation. Elements held at 1 stay pure noise (the
        prior) while the rest is denoised: the denoiser sees no information about them, so
        the other parts are sampled from their marginal (UniDiffuser's marginal
        generation). ``mask`` is aligned with the leading dimensions of the part, like a
        time tensor.
        """
        if not 0.0 <= at <= 1.0:
            raise ShapeError(f"a part is held at a time in [0, 1], got at = {at:g}")
        entries = []
        for entry in self.entries:
            t = entry[part]
            level = t.new_full((), at)
            held = level if mask is None else torch.where(mask.to(t.device), level, t)
            entries.append({**entry, part: held})
        return TimePlan(tuple(entries))

    def coefficients(self, schedules: Mapping[str, Schedule], like: Parts) -> list[dict[str, Coefficients]]:
        """Every entry's schedule coefficients, computed once for the whole plan.

        Scalar times give records of Python floats (one vectorised schedule call per
        part); per-element times give tensors aligned with the part in ``like``.
        """
        out: list[dict[str, Coefficients]] = [{} for _ in self.entries]
        for name, schedule in schedules.items():
            stacked = self._column(name)
            column = [entry[name] for entry in self.entries]
            if stacked is not None:
                rows = schedule.coefficients(stacked.to(torch.float64)).unbind()
            else:
                rows = [schedule.coefficients(t).align(like[name]) for t in column]
            for record, row in zip(out, rows, strict=True):
                record[name] = row
        return out

    def _column(self, name: str) -> Tensor | None:
        """All times of part ``name`` as a 1-D tensor if every entry is a scalar, else None."""
        if self.columns is not None and name in self.columns:
            return self.columns[name]
        column = [entry[name] for entry in self.entries]
        return torch.stack(column) if all(t.ndim == 0 for t in column) else None

    def check(self) -> None:
        """Raise :class:`ShapeError` unless every time lies in [0, 1] and no element's time
        increases from one entry to the next (held elements keep theirs: equal is allowed).

        :meth:`Sampler.sample` runs this before the first step, and no sampler can opt out: a
        sampler that climbs back up in noise (restart sampling, EDM's churn) does so inside
        one step, with the plan itself non-increasing."""
        if len(self.entries) < 2:
            raise ShapeError("a time plan needs at least two entries (start and end)")
        for name in self.entries[0]:
            column = self._column(name)
            if column is None:
                try:
                    column = torch.stack(torch.broadcast_tensors(*(entry[name] for entry in self.entries)))
                except RuntimeError:
                    raise ShapeError(f"time plan: the times of part {name!r} change shape incompatibly") from None
            outside = ~((column >= 0) & (column <= 1))  # NaN is outside too
            if bool(outside.any()):
                i = int(outside.flatten(1).any(1).nonzero()[0]) if column.ndim > 1 else int(outside.nonzero()[0])
                value = column[i][outside[i]].flatten()[0] if column.ndim > 1 else column[i]
                raise ShapeError(f"time plan: part {name!r} has t = {float(value):g} at entry {i}; times lie in [0, 1]")
            rising = column[1:] > column[:-1]
            if bool(rising.any()):
                i = int(rising.flatten(1).any(1).nonzero()[0]) if column.ndim > 1 else int(rising.nonzero()[0])
                a, b = column[i], column[i + 1]
                if column.ndim > 1:
                    a, b = a[rising[i]].flatten()[0], b[rising[i]].flatten()[0]
                raise ShapeError(
                    f"time plan: part {name!r} goes up from t = {float(a):g} to t = {float(b):g} at entry {i + 1}; "
                    "a plan runs from noise (t = 1) to data (t = 0) and never increases an element's time"
                )

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> PartTimes:
        return self.entries[i]

    @property
    def steps(self) -> int:
        return len(self.entries) - 1


class StepTimes(NamedTuple):
    """What one step knows about its times: per part the times, the schedule coefficients
    at both ends (see :meth:`TimePlan.coefficients`), which elements stay where they
    are, and the step's position in its plan. (A named tuple: one is made per step.)"""

    t_from: PartTimes
    t_to: PartTimes
    c_from: dict[str, Any]
    c_to: dict[str, Any]
    fixed: dict[str, bool | Tensor]
    """Per part: ``False`` (every element moves), ``True`` (none does) or a mask aligned with the part."""
    index: int = 0
    steps: int = 1

    def dt(self, part: str, like: Tensor) -> float | Tensor:
        """The step in time ``t_to - t_from`` of ``part`` (negative on the way to data), ready for
        arithmetic with the part ``like``: a float when the plan's times are scalars, else a tensor
        aligned with ``like`` (per-sample, per-frame or per-token steps broadcast correctly).

        ``times.t_to[part] - times.t_from[part]`` is *not* aligned: a ``(B,)`` time against
        ``(B, C, H, W)`` data would broadcast along the wrong dimension. The coefficients
        (``c_from``, ``c_to``) are aligned already, so a step in log-SNR is
        ``times.c_to[part].log_snr - times.c_from[part].log_snr``.
        """
        if isinstance(self.c_from[part]._values()[0], float):  # the plan's coefficients are floats
            return float(self.t_to[part]) - float(self.t_from[part])
        return align_time(self.t_to[part] - self.t_from[part], like).to(like.dtype)

    @classmethod
    def between(cls, schedules: Mapping[str, Schedule], x: Parts, t_from: PartTimes, t_to: PartTimes) -> StepTimes:
        """The times of a single step from ``t_from`` to ``t_to``."""
        c_from, c_to = TimePlan((t_from, t_to)).coefficients(schedules, x)
        return cls(t_from, t_to, c_from, c_to, _fixed(x, t_from, t_to))


def coefficients_at(schedule: Schedule, t: Tensor, like: Coefficients, x: Tensor) -> Coefficients:
    """The schedule's coefficients at a time computed during a step (a midpoint, a churned
    level), in the same form as ``like``: floats for a scalar time, else aligned with ``x``.

    ``t`` is a float64 tensor shaped like the step's times (build it from ``times.t_from[p]``
    and ``times.t_to[p]`` so it keeps their shape and device), never a Python float. When
    ``like`` holds floats (a plan of scalar times) ``t`` must hold a single value; otherwise
    it is aligned with the leading dimensions of ``x`` (each dimension 1 or equal) and the
    result is aligned with ``x`` and cast to its dtype."""
    c = schedule.coefficients(t)
    return c.item() if isinstance(like._values()[0], float) else c.align(x)


def _plan_fixed(plan: TimePlan, x: Parts) -> list[dict[str, bool | Tensor]]:
    """:func:`_fixed` for every step of a plan; one comparison per part for scalar times."""
    out: list[dict[str, bool | Tensor]] = [{} for _ in range(plan.steps)]
    for name in x:
        stacked = plan._column(name)
        if stacked is not None:
            flags = (stacked[1:] == stacked[:-1]).tolist()
        else:
            flags = [_fixed({name: x[name]}, plan[i], plan[i + 1])[name] for i in range(plan.steps)]
        for record, flag in zip(out, flags, strict=True):
            record[name] = flag
    return out


def _fixed(x: Parts, t_from: PartTimes, t_to: PartTimes) -> dict[str, bool | Tensor]:
    out: dict[str, bool | Tensor] = {}
    for name, xp in x.items():
        same = t_from[name] == t_to[name]
        if same.ndim == 0:
            out[name] = bool(same)
        elif bool(same.all()):
            out[name] = True
        elif not bool(same.any()):
            out[name] = False
        else:
            out[name] = align_time(same, xp)
    return out


class Step(NamedTuple):
    """The result of one sampler step (a named tuple: one is made per step)."""

    x: Parts
    predictions: dict[str, Any]
    """The denoiser's predictions of the step's first evaluation (at ``t_from``)."""
    carry: Any = None
    """History for multistep methods, handed back on the next step; ``None`` for one-step methods."""

    @property
    def denoised(self) -> dict[str, Tensor]:
        """The clean-data estimate of each part (computed on demand)."""
        return {name: p.x0 for name, p in self.predictions.items()}


Callback = Callable[[dict[str, Any]], None]


class Sampler(abc.ABC):
    """A stateless sampler; subclasses are frozen attrs classes whose fields are its settings."""

    supports: ClassVar[frozenset[str]] = frozenset({"gaussian"})
    """The schedule families (:attr:`Schedule.kind`) this sampler can step."""
    stochastic: ClassVar[bool] = False
    """Whether steps draw fresh noise (then they consume the generator). The noise comes only
    from the ``generator`` argument, passed on as given; it is ``None`` when the caller passes
    none, and drawing with ``generator=None`` uses torch's global generator."""
    evaluations_per_step: ClassVar[int] = 1
    """Nominal network evaluations (NFE) of an ordinary step (2 for Heun, whose last step costs 1);
    0 when there is no fixed count. Informational (``diffusekit show``, cost estimates); no
    contract checks it (count calls with :class:`diffusekit.testing.CountingDenoiser`)."""
    order: ClassVar[int] = 1
    """Rate at which the error falls with the step size h (global error O(h^order)), as configured:
    of the ODE solution for a deterministic sampler, the weak order (error in the distribution of
    the samples) for a stochastic one. The ``declared_order`` contract checks it for
    deterministic, non-adaptive samplers."""
    expects: ClassVar[str] = "denoiser"
    """What the model's x̂0 must be: ``"denoiser"`` (the posterior mean E[x0 | x_t]) or
    ``"consistency"`` (the end of the ODE trajectory through x_t, a consistency model's)."""

    @abc.abstractmethod
    def update(
        self,
        denoiser: DenoiserLike,
        x: Parts,
        times: StepTimes,
        *,
        condition: Condition | None,
        generator: torch.Generator | None,
        carry: Any,
    ) -> Step:
        """The step itself; :meth:`step` and :meth:`sample` restore elements whose time does not change.

        ``x`` is always a dict of parts (``{"x": tensor}`` for a single-part model) and the
        returned :class:`Step` holds every part in its shape and dtype; ``times`` gives each
        part's times (float64 tensors shaped like the plan's entries, not aligned with the
        part) and coefficients (floats, or tensors aligned with the part)."""

    def step(
        self,
        denoiser: DenoiserLike,
        x: Parts,
        t_from: PartTimes,
        t_to: PartTimes,
        *,
        condition: Condition | None = None,
        generator: torch.Generator | None = None,
        carry: Any = None,
    ) -> Step:
        """Move ``x`` from ``t_from`` to ``t_to`` (per part, per element); for driving a sampler by hand.

        ``x`` is a dict of parts and ``t_from``, ``t_to`` are dicts of time tensors (0-d, or
        aligned with the leading dimensions of the part); a bare tensor or a float is not
        accepted. The times are not checked (unlike :meth:`sample`'s plan)."""
        times = StepTimes.between(denoiser.schedules, x, t_from, t_to)
        return self._advance(denoiser, x, times, condition, generator, carry)

    def _advance(self, denoiser, x, times, condition, generator, carry) -> Step:
        out = self.update(denoiser, x, times, condition=condition, generator=generator, carry=carry)
        if not any(fixed is not False for fixed in times.fixed.values()):
            return out
        _require_step(self, out, times.index)
        moved = {name: hold_fixed(value, x[name], times.fixed[name]) for name, value in out.x.items()}
        return Step(moved, out.predictions, out.carry)

    def check_supports(self, schedules: Mapping[str, Schedule]) -> None:
        for name, schedule in schedules.items():
            if schedule.kind not in self.supports:
                raise ShapeError(
                    f"{type(self).__name__} steps {'/'.join(sorted(self.supports))} parts, but part "
                    f"{name!r} has a {schedule.kind} schedule ({type(schedule).__name__})"
                )

    def sample(
        self,
        denoiser: DenoiserLike,
        x: State | Shape,
        plan: TimePlan | TimeGrid,
        *,
        condition: Condition | None = None,
        guidance: Any = None,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        progress: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        differentiable: bool = False,
    ) -> State:
        """Run the whole plan and return the final state.

        ``x`` is the starting state or its shape (then it is drawn from each part's
        prior at the plan's first time). ``guidance`` wraps the denoiser
        (:meth:`diffusekit.guidance.Guidance.wrap`). ``callback`` receives
        ``{"i", "t", "x", "denoised", "step"}`` after every step. The schedule coefficients of
        every plan entry are computed once, before the first step. With
        ``differentiable`` the run keeps autograd (e.g. to fit a grid through the sampler;
        give the plan's times a shape such as ``(1,)`` so they stay tensors).
        """
        if guidance is not None:
            denoiser = guidance.wrap(denoiser)
        schedules = denoiser.schedules
        self.check_supports(schedules)
        if isinstance(plan, TimeGrid):
            shapes = {n: tuple(v.shape) for n, v in as_parts(x).items()} if _is_state(x) else part_shapes(x)  # type: ignore[arg-type]
            plan = plan.plan(schedules, shapes)
        plan.check()
        device = _available_device(device)
        if not dtype.is_floating_point:
            raise ShapeError(f"dtype: {dtype} is not a floating-point dtype (Gaussian parts are drawn in it)")
        if _is_state(x):
            parts = as_parts(x)  # type: ignore[arg-type]
        else:
            parts = {
                name: schedules[name].prior(shp, t=plan[0][name], generator=generator, device=device, dtype=dtype)
                for name, shp in part_shapes(x).items()  # type: ignore[arg-type]
            }
        _check_state(parts, schedules, condition)
        coefficients = plan.coefficients(schedules, parts)
        fixed = _plan_fixed(plan, parts)
        indices = range(plan.steps)
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc=type(self).__name__, unit="step", leave=False)
        carry = None
        entries, steps = plan.entries, plan.steps
        holds = [any(flag is not False for flag in f.values()) for f in fixed]
        with torch.enable_grad() if differentiable else torch.no_grad():
            for i in indices:
                times = StepTimes(entries[i], entries[i + 1], coefficients[i], coefficients[i + 1], fixed[i], i, steps)
                if holds[i]:
                    out = self._advance(denoiser, parts, times, condition, generator, carry)
                else:
                    out = self.update(denoiser, parts, times, condition=condition, generator=generator, carry=carry)
                _check_step(self, parts, out, i)
                parts, carry = out.x, out.carry
                if callback is not None:
                    callback({"i": i, "t": plan[i + 1], "x": parts, "denoised": out.denoised, "step": out})
        return restore(parts, x)


def invert(
    sampler: Sampler,
    denoiser: DenoiserLike,
    x: State,
    plan: TimePlan | TimeGrid,
    *,
    condition: Condition | None = None,
    guidance: Any = None,
    refine: int = 0,
) -> State:
    r"""Encode data into the noise a deterministic sampler would decode it from (DDIM inversion / DPM-Encoder).

    The plan is walked backwards: the state ``x`` is taken at the plan's last *positive*
    time (the final step to t = 0, which takes :math:`\hat x_0`, is not invertible) and
    moved up to the first time with the sampler's own update (Song et al., 2021, Sec. 4.3;
    Wu & De la Torre, "CycleDiffusion", 2023). Decoding the result with
    ``TimePlan(plan.entries[:-1])`` returns ``x`` up to the discretisation error.

    With ``refine = k`` (one-step samplers only) each backward step is corrected by k
    fixed-point iterations so that the *forward* step maps it back exactly:
    :math:`x_{hi} \leftarrow x_{hi} - \frac{\sigma_{hi}}{\sigma_{lo}}\big(F(x_{hi}) - x_{lo}\big)`,
    where :math:`F` is the sampler's forward step and :math:`\sigma_{lo}/\sigma_{hi}` its
    leading linear coefficient (exact inversion in the spirit of Pan et al., 2023).
    """
    if getattr(sampler, "stochastic", False):
        raise ShapeError(f"{type(sampler).__name__} is stochastic; only deterministic samplers can be inverted")
    if guidance is not None:
        denoiser = guidance.wrap(denoiser)
    schedules = denoiser.schedules
    if isinstance(plan, TimeGrid):
        plan = TimePlan.from_grid(plan, schedules)
    parts = as_parts(x)
    backward = TimePlan(tuple(reversed(plan.entries[:-1])))
    coefficients = backward.coefficients(schedules, parts)
    fixed = _plan_fixed(backward, parts)
    carry = None
    with torch.no_grad():
        for i in range(backward.steps):
            up = StepTimes(
                backward[i], backward[i + 1], coefficients[i], coefficients[i + 1], fixed[i], i, backward.steps
            )
            out = sampler._advance(denoiser, parts, up, condition, None, carry)
            guess, carry = out.x, out.carry
            if refine:
                if carry is not None:
                    raise ShapeError(f"refine needs a one-step sampler; {type(sampler).__name__} carries history")
                guess = _refine(sampler, denoiser, guess, parts, up, condition, refine)
            parts = guess
    return restore(parts, x)


def _refine(sampler, denoiser, guess: Parts, target: Parts, up: StepTimes, condition, iterations: int) -> Parts:
    """Damped fixed-point iterations that make the forward step map ``guess`` onto ``target``.

    The plain iteration contracts only where the denoiser's Jacobian (the posterior
    covariance over sigma^2, by Tweedie) is small. Each sample keeps its own damping,
    halved whenever its forward residual would grow, so no sample diverges; near the
    mode boundaries of a sharp target a few samples can still stall short of exactness.
    """
    down = StepTimes(up.t_to, up.t_from, up.c_to, up.c_from, up.fixed, 0, 1)
    gain = {p: up.c_to[p].sigma / up.c_from[p].sigma for p in target}
    batch = next(iter(target.values())).shape[0]

    def residual(x: Parts) -> tuple[Parts, Tensor]:
        forward = sampler._advance(denoiser, x, down, condition, None, None).x
        diff = {p: forward[p] - target[p] for p in target}
        per_sample = sum(d.double().reshape(batch, -1).square().sum(1) for d in diff.values())
        return diff, per_sample

    diff, norm = residual(guess)
    damping = torch.ones(batch, dtype=torch.float64, device=norm.device)
    for _ in range(iterations):
        trial = {p: guess[p] - align_time(damping, guess[p]).to(guess[p].dtype) * (gain[p] * diff[p]) for p in target}
        trial_diff, trial_norm = residual(trial)
        better = trial_norm < norm
        guess = {p: torch.where(align_time(better, guess[p]), trial[p], guess[p]) for p in target}
        diff = {p: torch.where(align_time(better, diff[p]), trial_diff[p], diff[p]) for p in target}
        norm = torch.where(better, trial_norm, norm)
        damping = torch.where(better, (damping * 1.5).clamp(max=1.0), damping * 0.5)
    return guess


def _require_step(sampler: Sampler, out: object, i: int) -> None:
    if not isinstance(out, Step):
        raise ShapeError(
            f"{type(sampler).__name__}.update returned a {type(out).__name__} from step {i + 1}; "
            "it must return diffusekit.Step(x, predictions)"
        )


def _check_step(sampler: Sampler, before: Parts, out: Step, i: int) -> None:
    """A step returns a :class:`Step` with every part in its shape and dtype (else the sampler is at
    fault, not the network that would fail on its output one step later)."""
    _require_step(sampler, out, i)
    after = out.x
    if not isinstance(after, Mapping) or after.keys() != before.keys():
        if not isinstance(after, Mapping):
            raise ShapeError(
                f"{type(sampler).__name__} returned Step.x as a {type(after).__name__} from step {i + 1}; "
                "it is a dict of parts like the state it was given"
            )
        raise ShapeError(
            f"{type(sampler).__name__} returned parts {sorted(after)} from step {i + 1}; it was given {sorted(before)}"
        )
    for name, value in after.items():
        old = before[name]
        if not isinstance(value, Tensor) or value.shape != old.shape or value.dtype != old.dtype:
            got = f"{tuple(value.shape)} {value.dtype}" if isinstance(value, Tensor) else type(value).__name__
            raise ShapeError(
                f"{type(sampler).__name__} returned part {name!r} as {got} from step {i + 1}; "
                f"it was given {tuple(old.shape)} {old.dtype}"
            )


def _available_device(device: torch.device | str | None) -> torch.device | None:
    """``device`` as a torch device, or a one-line error when it is malformed or not on this machine."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ShapeError(f"device: {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from None
    backend = getattr(torch, device.type, None)
    if device.type != "cpu" and not (hasattr(backend, "is_available") and backend.is_available()):
        raise ShapeError(f"device: {device.type} is not available on this machine")
    return device


def _check_state(parts: Parts, schedules: Mapping[str, Schedule], condition: Condition | None) -> None:
    """The state fits the denoiser: the same parts, one batch size and device, the dtypes its schedules
    need (floating point for Gaussian parts, integers for categorical ones), and a condition per sample."""
    if set(parts) != set(schedules):
        raise ShapeError(f"the state has parts {sorted(parts)}; the denoiser expects {sorted(schedules)}")
    for name, value in parts.items():
        kind = schedules[name].kind
        if kind == "gaussian" and not value.is_floating_point():
            raise ShapeError(f"part {name!r} is {value.dtype}; a Gaussian part needs a floating-point dtype")
        if kind == "categorical" and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
            raise ShapeError(f"part {name!r} is {value.dtype}; a categorical part holds integer tokens")
    devices = {name: value.device for name, value in parts.items()}
    if len(set(devices.values())) > 1:
        raise ShapeError(f"the parts are on different devices: {devices}")
    size = batch_size(parts)
    if condition is not None and condition.batch_size != size:
        raise ShapeError(f"the condition has {condition.batch_size} samples, the state {size}: give one per sample")


def _is_state(x: object) -> bool:
    """A tensor or a mapping of tensors (as opposed to a shape or a mapping of shapes)."""
    if isinstance(x, Tensor):
        return True
    return isinstance(x, Mapping) and bool(x) and all(isinstance(v, Tensor) for v in x.values())


def hold_fixed(new: Tensor, old: Tensor, fixed: bool | Tensor) -> Tensor:
    """``old`` where the time does not change (``fixed``: a bool or a mask), ``new`` elsewhere."""
    if fixed is False:
        return new
    if fixed is True:
        return old
    return torch.where(fixed, old, new)
