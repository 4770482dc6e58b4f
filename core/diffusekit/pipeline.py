"""Pipelines: a recipe built into ready components.

``diffusekit.build(recipe)`` resolves every component through the registry and returns
a :class:`Pipeline`; ``diffusekit.load("model.safetensors")`` does the same from a
checkpoint's recipe and loads its weights.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from diffusekit import distributed
from diffusekit.checkpoint import load_checkpoint
from diffusekit.condition import Condition
from diffusekit.denoiser import Denoiser, DenoiserLike
from diffusekit.errors import CheckpointError, ConfigError, SamplingDiverged, ShapeError
from diffusekit.guidance import Guidance
from diffusekit.known import KeepKnown, Known, complete, known_masks
from diffusekit.method import Method
from diffusekit.plugins import get_registry
from diffusekit.recipe import Recipe, instantiate, load_recipe, recipe_from_dict, validate
from diffusekit.registry import Registry
from diffusekit.rng import RowGenerators
from diffusekit.sampler import Callback, Sampler, TimeGrid, TimePlan
from diffusekit.state import DEFAULT_PART, State, align_time, as_parts

_INIT_LOCK = threading.Lock()


@attrs.frozen(eq=False)
class Pipeline:
    """A denoiser with the sampler, grid and guidance its recipe names.

    Sampling reads the components and never mutates them, so one pipeline can serve
    many threads at once (each with its own ``torch.Generator``).
    """

    recipe: Recipe
    denoiser: DenoiserLike
    """The trained :class:`Denoiser`, or any denoiser (adapted to other schedules, an exact oracle)."""
    sampler: Sampler
    grid: TimeGrid
    guidance: Guidance | None = None
    method: Method | None = None

    @property
    def network(self) -> torch.nn.Module:
        return self.denoiser.network  # type: ignore[attr-defined]

    def sample(
        self,
        num: int | None = None,
        *,
        given: State | None = None,
        known: Known = None,
        marginal: Sequence[str] = (),
        condition: Condition | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        progress: bool = False,
        callback: Callback | None = None,
        device: torch.device | str | None = None,
    ) -> State:
        """Draw ``num`` samples (default ``recipe.sample.num``), in batches of ``recipe.sample.batch_size``.

        Without a ``condition`` the method's default conditions are used. Without a
        ``generator`` every sample draws from its own stream, seeded by ``(seed, its index)``
        (``seed`` defaults to the recipe's; :mod:`diffusekit.rng`). Under ``torchrun`` the
        batches are then dealt to the processes (whole batches: each is computed as one
        process computes it, so the gathered samples are that run's, bit for bit; lower
        ``sample.batch_size`` to spread few samples) and gathered on each
        (:mod:`diffusekit.distributed`); with a ``generator`` every process draws them all
        from that one stream.

        With ``given`` (a state for some or all parts, one row per sample) and ``known``
        (boolean masks aligned with the leading dimensions of the given parts; ``None``: the
        given parts are known entirely) the samples complete the given data: inpainting,
        infilling, puzzles, given frames or views (see :mod:`diffusekit.known`). ``num``
        then defaults to the number of given samples.

        ``marginal`` names parts kept at t = 1 throughout (:meth:`TimePlan.hold` with
        ``at=1``): they stay draws of the prior and tell the network nothing, so the other
        parts are sampled from their marginal distribution (UniDiffuser, Bao et al., 2023);
        what comes back for those parts is prior noise (or mask tokens).
        """
        masks: dict[str, Tensor | None] = {}
        given_parts: dict[str, Tensor] = {}
        if given is not None:
            given_parts = as_parts(given)
            masks = known_masks(given_parts, known, {name: part.shape for name, part in self.recipe.parts.items()})
            rows = next(iter(given_parts.values())).shape[0]
            if num is not None and num != rows:
                raise ConfigError("num", f"{num} samples asked for, but {rows} are given")
            num = rows
        elif known is not None:
            raise ConfigError("known", "a mask of known elements needs the given data (given=...)")
        marginal = (marginal,) if isinstance(marginal, str) else tuple(marginal)
        for name in marginal:
            if name not in self.recipe.parts or name in given_parts:
                why = "it is given" if name in given_parts else f"the parts are {sorted(self.recipe.parts)}"
                raise ConfigError("marginal", f"cannot marginalise part {name!r}: {why}")
        num = self.recipe.sample.num if num is None else num
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ConfigError("num", f"the number of samples must be a positive integer, got {num!r}")
        network = getattr(self.denoiser, "network", None)  # an exact oracle denoiser has none
        network_device = None if network is None else next((p.device for p in network.parameters()), None)
        if device is not None and network_device is not None and torch.device(device) != network_device:
            raise ShapeError(
                f"device: the network is on {network_device}, not {device}; move it first (pipeline.network.to(...))"
            )
        if condition is None and self.method is not None:
            condition = self.method.condition(num, device=device)
        if condition is not None and condition.batch_size != num:
            raise ConfigError("condition", f"has {condition.batch_size} samples, expected {num}")
        seed = self.recipe.seed if seed is None else seed
        size = self.recipe.sample.batch_size
        batches = range(0, num, size)
        if generator is None:  # under torchrun each process takes whole batches: the same computations, bit for bit
            mine = distributed.share(len(batches))
            batches = batches[mine.start : mine.stop]
        chunks: list[dict[str, Tensor]] = []
        for start in batches:
            n = min(size, num - start)
            batch_generator = generator or RowGenerators.for_samples(seed, range(start, start + n), device or "cpu")
            shapes = {name: (n, *part.shape) for name, part in self.recipe.parts.items()}
            denoiser, x, plan = self.denoiser, shapes, self.grid
            rows = slice(start, start + n)
            if given_parts:
                given_rows = {
                    name: value[rows].to(device) if device else value[rows] for name, value in given_parts.items()
                }
                mask_rows = {
                    name: None if m is None else m[rows].to(given_rows[name].device) for name, m in masks.items()
                }
                denoiser, x, plan = self._completion(given_rows, mask_rows, batch_generator, device)
            if marginal:
                plan = plan if isinstance(plan, TimePlan) else plan.plan(self.denoiser.schedules, shapes)
                for name in marginal:
                    plan = plan.hold(name, at=1.0)
            watch = _FirstNonFinite(callback)
            out = self.sampler.sample(
                denoiser,
                x,
                plan,
                condition=None if condition is None else condition.take(rows),
                guidance=None if isinstance(denoiser, KeepKnown) else self.guidance,
                generator=batch_generator,
                callback=watch,
                progress=progress,
                device=device,
            )
            if isinstance(denoiser, KeepKnown):  # replaced parts: exactly the given data where known
                out = {**out, **{p: torch.where(m, denoiser.given[p], out[p]) for p, m in denoiser.known.items()}}  # type: ignore[index]
            watch.check(out, start)  # type: ignore[arg-type]
            chunks.append(out)  # type: ignore[arg-type]
        parts = {name: torch.cat([c[name] for c in chunks]) for name in self.recipe.parts} if chunks else None
        if generator is None:
            parts = distributed.gather_rows(parts)
        assert parts is not None
        return parts[DEFAULT_PART] if list(parts) == [DEFAULT_PART] else parts

    def _completion(
        self, given: dict[str, Tensor], masks: dict[str, Tensor | None], generator: torch.Generator, device: Any
    ) -> tuple[Any, dict[str, Tensor], TimePlan]:
        """The denoiser, starting state and plan that complete ``given`` where ``masks`` say it is known."""
        schedules = self.denoiser.schedules
        n = next(iter(given.values())).shape[0]
        plan = self.grid.plan(schedules, {name: (n, *part.shape) for name, part in self.recipe.parts.items()})
        x = {
            name: schedules[name].prior((n, *part.shape), t=plan[0][name], generator=generator, device=device)
            for name, part in self.recipe.parts.items()
        }
        given = {name: value.to(x[name].dtype) for name, value in given.items()}
        time_dims = {name: part.time_dims for name, part in self.recipe.parts.items()}
        held, replaced = complete(given, masks, time_dims, getattr(self.denoiser, "time_conditioned", True))
        for name, mask in held.items():
            plan = plan.hold(name, mask)
            x[name] = given[name] if mask is None else torch.where(align_time(mask, x[name]), given[name], x[name])
        if not replaced:
            return self.denoiser, x, plan
        # outermost, so that a guided (batched) prediction is replaced too
        guided = self.denoiser if self.guidance is None else self.guidance.wrap(self.denoiser)
        return KeepKnown(guided, given, replaced), x, plan

    def load_weights(self, weights: Mapping[str, Tensor], source: str = "weights") -> None:
        """Load network weights; a mismatch names the missing or unexpected keys."""
        own = self.network.state_dict()
        missing = sorted(set(own) - set(weights))
        unexpected = sorted(set(weights) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"{source} do not fit this network: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        for key, value in weights.items():
            if own[key].shape != value.shape:
                raise CheckpointError(
                    f"{source}: {key} has shape {tuple(value.shape)}, the network expects {tuple(own[key].shape)}"
                )
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                raise CheckpointError(f"{source}: weight {key} holds {bad} non-finite values (NaN or inf)")
        self.network.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})


class _FirstNonFinite:
    """A sampling callback that records, per step and part, whether the state held NaN or inf,
    so a non-finite result can name where it went wrong. The flags stay tensors until the end:
    no step waits on a device synchronisation."""

    def __init__(self, inner: Callback | None) -> None:
        self.inner = inner
        self.flags: list[tuple[int, str, Any, Tensor]] = []

    def __call__(self, info: dict[str, Any]) -> None:
        for name, value in info["x"].items():
            if value.is_floating_point():
                self.flags.append((info["i"], name, info["t"][name], torch.isfinite(value).all().logical_not()))
        if self.inner is not None:
            self.inner(info)

    def check(self, out: Mapping[str, Tensor], start: int) -> None:
        if all(bool(torch.isfinite(v).all()) for v in out.values() if v.is_floating_point()):
            return
        bad = torch.stack([flag for *_, flag in self.flags]).nonzero() if self.flags else None
        if bad is None or not len(bad):  # a sampler that returns without calling back
            raise SamplingDiverged(f"sampling produced non-finite values (NaN or inf) from sample {start} on")
        step, name, t, _ = self.flags[int(bad[0])]
        t_text = f"{float(t):g}" if t.numel() == 1 else f"[{float(t.min()):g}, {float(t.max()):g}]"
        raise SamplingDiverged(
            f"sampling went non-finite (NaN or inf) in part {name!r} at step {step + 1} (t = {t_text}), "
            f"batch starting at sample {start}; check the weights and the sampler's settings"
        )


def resolve_recipe(source: Recipe | str | Path | Mapping[str, Any], registry: Registry | None = None) -> Recipe:
    """A recipe from a Recipe, a dict, a ``.toml``/``.json`` path or a method name."""
    if isinstance(source, Recipe):
        return source
    if isinstance(source, Mapping):
        return recipe_from_dict(source)
    text = str(source)
    if text.endswith((".toml", ".json")) or Path(text).is_file():
        return load_recipe(text)
    registry = registry or get_registry()
    try:
        entry = registry.resolve("method", text)
    except Exception as exc:
        raise ConfigError("", f"{text!r} is neither a recipe file nor a method: {exc}") from None
    return entry.obj().recipe()


def build(source: Recipe | str | Path | Mapping[str, Any], registry: Registry | None = None) -> Pipeline:
    """Build the pipeline a recipe describes (network freshly initialised from ``recipe.seed``;
    the network of the recipe's last training stage, :attr:`~diffusekit.Recipe.final_network`)."""
    registry = registry or get_registry()
    recipe = resolve_recipe(source, registry)
    validate(recipe, registry)
    schedules = {
        name: instantiate(registry, "schedule", part.schedule, f"parts.{name}.schedule")
        for name, part in recipe.parts.items()
    }
    parameterizations = {
        name: instantiate(registry, "parameterization", part.parameterization, f"parts.{name}.parameterization")
        for name, part in recipe.parts.items()
    }
    spec = instantiate(registry, "network", recipe.final_network, "network")
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):  # seeding uses torch's global generator
        torch.manual_seed(recipe.seed)
        network = spec.build()
    network.eval()
    return Pipeline(
        recipe=recipe,
        denoiser=Denoiser(network, schedules, parameterizations),
        sampler=instantiate(registry, "sampler", recipe.sampler, "sampler"),
        grid=instantiate(registry, "grid", recipe.grid, "grid"),
        guidance=None if recipe.guidance is None else instantiate(registry, "guidance", recipe.guidance, "guidance"),
        method=None if recipe.method is None else registry.resolve("method", recipe.method).obj(),
    )


def load(path: str | Path, registry: Registry | None = None, **overrides: Any) -> Pipeline:
    """A pipeline from a checkpoint: its recipe (with ``overrides``) and its sampling weights.

    An override of a Gaussian part's schedule (``**{"parts.x.schedule": "gaussian:edm"}``)
    keeps the weights: the network is used under the new schedule, matched by log-SNR
    (:func:`trained_under`)."""
    from diffusekit.recipe import apply_overrides

    checkpoint = load_checkpoint(path)
    recipe = apply_overrides(checkpoint.recipe, overrides) if overrides else checkpoint.recipe
    return _with_weights(recipe, checkpoint, path, registry)


def _with_weights(recipe: Recipe, checkpoint: Any, path: str | Path, registry: Registry | None) -> Pipeline:
    """``recipe``'s pipeline with ``checkpoint``'s sampling weights (read from ``path``)."""
    pipeline = trained_under(build(recipe, registry), checkpoint.recipe, registry)
    pipeline.load_weights(checkpoint.weights(), source=str(path))
    return pipeline


def trained_under(pipeline: Pipeline, trained: Recipe, registry: Registry | None = None) -> Pipeline:
    """``pipeline`` with a network trained under the schedules of ``trained``, sampling under its own.

    Each part whose schedule differs from the trained one keeps the trained schedule inside
    the denoiser and is matched to the new one by log-SNR (:func:`diffusekit.adapter.adapt`):
    a schedule from any plugin works with weights trained under another. Only Gaussian
    schedules can be matched; otherwise a :class:`ConfigError` names the part.
    """
    from diffusekit.adapter import adapt

    changed = [
        name
        for name, part in pipeline.recipe.parts.items()
        if name in trained.parts and part.schedule != trained.parts[name].schedule
    ]
    if not changed:
        return pipeline
    registry = registry or get_registry()
    denoiser = pipeline.denoiser
    assert isinstance(denoiser, Denoiser)
    originals = {
        name: instantiate(registry, "schedule", trained.parts[name].schedule, f"parts.{name}.schedule")
        for name in changed
    }
    base = Denoiser(denoiser.network, {**denoiser.schedules, **originals}, denoiser.parameterizations)
    return attrs.evolve(pipeline, denoiser=adapt(base, {name: denoiser.schedules[name] for name in changed}))


def pretrained(method: str, registry: Registry | None = None, **overrides: Any) -> Pipeline:
    """The pipeline of ``method`` with the weights it ships (e.g. ``pretrained("gaussian:digits")``):
    the method's recipe as it is now (with ``overrides``), sampling settings included, as
    ``diffusekit run METHOD`` samples. The method contract keeps the recipe's training settings
    those of the weights, so they fit; a checkpoint's own recipe is :func:`load`'s."""
    from diffusekit.recipe import apply_overrides

    registry = registry or get_registry()
    entry = registry.resolve("method", method)
    instance = entry.obj()
    path = instance.weights()
    if path is None:
        raise CheckpointError(
            f"method {entry.qualname} ships no weights; train it with 'diffusekit train {entry.qualname}'"
        )
    recipe = apply_overrides(instance.recipe(), overrides) if overrides else instance.recipe()
    return _with_weights(recipe, load_checkpoint(path), path, registry)
