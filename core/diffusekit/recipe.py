"""Recipes: components named by registry name plus parameters, as plain data.

A :class:`Recipe` is frozen attrs data that cattrs (un)structures to and from TOML and
JSON with exact round-trips. Components appear as tables with a ``name`` key and their
parameters::

    [sampler]
    name = "gaussian:heun"

    [grid]
    name = "gaussian:karras"
    steps = 18

Every error names the offending path: ``grid.steps: expected int, got 'ten'``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
import tomli_w
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from diffusekit.errors import ComponentNotFound, ConfigError, DiffusekitError
from diffusekit.registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


ALLOW_INF = "diffusekit.allow_inf"
"""Field metadata of a float parameter for which ±inf means something (``grad_clip = inf``:
no clipping). Recipes give every other float parameter a finite value; NaN is never accepted."""


def finite(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    """attrs validator: ``value`` is a finite number (NaN passes comparisons such as ``v.ge(0)``)."""
    if not math.isfinite(value):
        raise ConfigError(attribute.name, f"must be a finite number, got {value!r}")


@attrs.frozen
class ComponentSpec:
    """A component by registry name (``plugin:name`` or a unique bare name) and parameters."""

    name: str
    params: dict[str, Any] = attrs.field(factory=dict)


# the default objective, spelt out: how a later training stage says it drops the stage before's
# objective (TOML has no null)
DENOISING = ComponentSpec("core:denoising")


def _plain_denoising(spec: ComponentSpec | None) -> ComponentSpec | None:
    """``None`` for the default objective however it is named, so recipes that differ only in
    spelling it out compare equal."""
    if spec is not None and spec.name in {DENOISING.name, "denoising"} and not spec.params:
        return None
    return spec


def _no_empty(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """``None`` for no network parameters however it is spelt (``{}`` in TOML, which has no null)."""
    return params or None


@attrs.frozen
class PartSpec:
    """One part of the state: its per-sample shape, schedule and parameterization.

    ``time_dims`` is how many leading dimensions (batch included) carry their own
    training time: 1 = one time per sample, 2 = one per frame or token.
    """

    shape: tuple[int, ...]
    schedule: ComponentSpec
    parameterization: ComponentSpec
    loss_weight: float = attrs.field(default=1.0, validator=finite)
    time_dims: int = 1


@attrs.frozen
class TrainConfig:
    """Settings of the core training loop (:func:`diffusekit.training.train`)."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = attrs.field(default=1e-3, validator=finite)
    warmup_steps: int = 0
    # the decay of the learning rate after the warm-up, to lr_min at the last step
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    lr_min: float = attrs.field(default=0.0, validator=finite)
    ema_decay: float = attrs.field(default=0.999, validator=finite)
    grad_clip: float = attrs.field(default=1.0, metadata={ALLOW_INF: True})
    condition_dropout: float = attrs.field(default=0.1, validator=finite)
    time_distribution: Literal["uniform", "logit_normal"] = "uniform"
    time_loc: float = attrs.field(default=0.0, validator=finite)
    time_scale: float = attrs.field(default=1.0, validator=finite)
    # parts with several times per sample (time_dims > 1): the probability that a sample's times
    # are one shared time instead of independent ones (FVDM's probabilistic timestep sampling)
    shared_time: float = attrs.field(
        default=0.0, validator=[finite, attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    # states with several parts: the probability that all of a sample's parts share one time
    # (every free element of every part), as when the parts are sampled together on one grid
    shared_parts: float = attrs.field(
        default=0.0, validator=[finite, attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    # the probability that a sample holds a random subset of its time elements (frames, tokens)
    # given at t = 0, as sampling with given elements does; held elements are out of the loss
    hold: float = attrs.field(default=0.0, validator=[finite, attrs.validators.ge(0.0), attrs.validators.le(1.0)])
    # data with a size per example (Data.sizes): each batch is drawn from one of this many buckets
    # of examples sorted by size (equal counts), so batches hold examples of similar size (0: off)
    buckets: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    checkpoint_every: int = 1000
    log_every: int = 50
    # earlier checkpoints kept beside the latest, as FILE.step<N>.safetensors (0: only the latest)
    keep_checkpoints: int = 0
    # the most samples one process puts through the network at once; a larger share of the batch
    # accumulates gradients over several micro-batches (0: the whole share at once)
    micro_batch_size: int = 0
    # the network's forward pass under autocast: "bf16" (CPU or GPU), "fp16" (GPU, with a gradient scaler)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False  # torch.compile the network for training
    shard: bool = False  # with several processes: FSDP (fully sharded parameters, gradients, optimizer state), not DDP
    # the loss each step minimises (a registered objective); none: the denoising loss (core:denoising)
    objective: ComponentSpec | None = attrs.field(default=None, converter=_plain_denoising)
    # the seed of this stage's draws (batches, times, noise, dropout); none: the recipe's seed.
    # A later stage that repeats the one before's settings draws fresh batches only with its own.
    seed: int | None = None
    # parameters this stage sets on the recipe's network, e.g. a later stage that turns on a
    # new input path (its weights start as the network initialises them: diffusekit.training.
    # widen_into); none: the recipe's network as it is. The last stage's network is the one sampled.
    network: dict[str, Any] | None = attrs.field(default=None, converter=_no_empty)


@attrs.frozen
class SampleConfig:
    """Settings of sampling: how many samples, in batches of what size."""

    num: int = 16
    batch_size: int = 256


@attrs.frozen
class Recipe:
    """Everything needed to build, train and sample a pipeline."""

    parts: dict[str, PartSpec]
    network: ComponentSpec
    sampler: ComponentSpec
    grid: ComponentSpec
    guidance: ComponentSpec | None = None
    dataset: ComponentSpec | None = None
    method: str | None = None
    seed: int = 0
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    # later training stages, in order: each starts from the weights (EMA) the stage before ends
    # with, with a fresh optimizer, and trains with these settings (see diffusekit.training.stages)
    finetune: list[TrainConfig] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        # a stage seed equal to the recipe's draws what none draws: one spelling, so that
        # recipes computing the same compare equal (and a stage can go back to the recipe's
        # seed in TOML, which has no null, by naming it)
        if any(cfg.seed == self.seed for cfg in self.train_stages):
            plain = [cfg if cfg.seed != self.seed else attrs.evolve(cfg, seed=None) for cfg in self.train_stages]
            object.__setattr__(self, "train", plain[0])
            object.__setattr__(self, "finetune", plain[1:])

    @property
    def train_stages(self) -> tuple[TrainConfig, ...]:
        """The settings of every training stage in order: ``train``, then each ``finetune``."""
        return (self.train, *self.finetune)

    def stage_network(self, cfg: TrainConfig) -> ComponentSpec:
        """The network a stage with settings ``cfg`` trains: ``network`` with the stage's parameters set."""
        if not cfg.network:
            return self.network
        return attrs.evolve(self.network, params={**self.network.params, **cfg.network})

    @property
    def final_network(self) -> ComponentSpec:
        """The network the last training stage trains: the one its weights fit, which sampling builds."""
        return self.stage_network(self.train_stages[-1])


# --- strict structuring: no silent int('10') or int(3.7) --------------------------------


def _strict(tp: type, ok, what: str | None = None) -> Any:
    def hook(value: Any, _: Any) -> Any:
        if not ok(value):
            raise TypeError(f"expected {what or tp.__name__}, got {value!r}")
        return tp(value)

    return hook


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(int, _strict(int, lambda v: isinstance(v, int) and not isinstance(v, bool)))
    conv.register_structure_hook(
        float,
        _strict(float, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v == v, "a number"),
    )  # v == v: NaN is never a setting (it passes every < and > check)
    conv.register_structure_hook(str, _strict(str, lambda v: isinstance(v, str)))
    conv.register_structure_hook(bool, _strict(bool, lambda v: isinstance(v, bool)))

    def structure_spec(value: Any, _: Any) -> ComponentSpec:
        if isinstance(value, str):
            return ComponentSpec(value)
        if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
            raise TypeError(f"expected a component name or a table with a 'name' key, got {value!r}")
        return ComponentSpec(value["name"], {k: v for k, v in value.items() if k != "name"})

    conv.register_structure_hook(ComponentSpec, structure_spec)
    conv.register_unstructure_hook(ComponentSpec, lambda s: {"name": s.name, **s.params})
    return conv


converter = _make_converter()


def _path(parts: list[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _first_error(exc: BaseException, path: list[Any]) -> ConfigError:
    """The first leaf of a cattrs exception group as a ConfigError with a dotted path."""
    if isinstance(exc, ForbiddenExtraKeysError):
        key = sorted(exc.extra_fields)[0]
        allowed = ", ".join(f.name for f in attrs.fields(exc.cl)) if attrs.has(exc.cl) else ""
        return ConfigError(_path(path + [key]), f"unknown key (expected one of: {allowed})")
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, _ = exc.group_exceptions()
        if with_notes:
            sub, note = with_notes[0]
            name = getattr(note, "name", getattr(note, "index", None))
            return _first_error(sub, path + [name])
        return _first_error(exc.exceptions[0], path)
    if isinstance(exc, KeyError):
        return ConfigError(_path(path), "missing required key")
    if isinstance(exc, ConfigError):  # a field validator's error: its path is relative to the table
        return ConfigError(_path(path + [exc.path]), exc.reason)
    message = str(exc)
    if isinstance(exc, TypeError) and "required" in message and "argument" in message:
        missing = message.split("'")[1] if "'" in message else ""
        return ConfigError(_path(path + ([missing] if missing else [])), "missing required key")
    return ConfigError(_path(path), message)


def structure(data: Any, cls: type, path: str = "") -> Any:
    """``data`` structured as ``cls``; errors become a :class:`ConfigError` naming the path."""
    try:
        return converter.structure(data, cls)
    except ConfigError:
        raise
    except Exception as exc:  # cattrs raises exception groups; report the first leaf
        err = _first_error(exc, [path] if path else [])
        raise err from None


def recipe_from_dict(data: Mapping[str, Any]) -> Recipe:
    if not isinstance(data, Mapping):
        raise ConfigError("", f"a recipe is a table, got {type(data).__name__}")
    return structure(_inherit_stages(dict(data)), Recipe)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Plain data; ``None`` entries are left out (TOML has no null), and each ``finetune``
    stage holds only the settings it changes from the stage before."""
    data = _drop_none(converter.unstructure(recipe))
    if data.get("finetune"):
        previous, changes = data["train"], []
        for stage in data["finetune"]:
            change = {k: v for k, v in stage.items() if previous.get(k) != v}
            if "objective" in previous and "objective" not in stage:  # back to the default: say so
                change["objective"] = converter.unstructure(DENOISING)
            if "seed" in previous and "seed" not in stage:  # back to the recipe's seed: name it
                change["seed"] = data.get("seed", 0)
            if "network" in previous and "network" not in stage:  # back to the recipe's network: an empty table
                change["network"] = {}
            changes.append(change)
            previous = stage
        data["finetune"] = changes
    else:
        data.pop("finetune", None)
    return data


def _inherit_stages(data: dict[str, Any]) -> dict[str, Any]:
    """A ``[[finetune]]`` table sets what its stage changes: the rest is the stage before's."""
    stages, previous = data.get("finetune"), data.get("train", {})
    if not isinstance(stages, list) or not isinstance(previous, Mapping):
        return data  # structuring reports what is malformed
    filled = []
    for stage in stages:
        if isinstance(stage, Mapping):
            stage = previous = {**previous, **stage}
        filled.append(stage)
    return {**data, "finetune": filled}


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value


def dumps_toml(recipe: Recipe) -> str:
    return tomli_w.dumps(recipe_to_dict(recipe))


def loads_toml(text: str) -> Recipe:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}") from None
    return recipe_from_dict(data)


def dumps_json(recipe: Recipe) -> str:
    return json.dumps(recipe_to_dict(recipe), sort_keys=True)


def loads_json(text: str) -> Recipe:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("", f"not valid JSON: {exc}") from None
    return recipe_from_dict(data)


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe from a ``.toml`` or ``.json`` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "no such recipe file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return loads_json(text)
    if path.suffix == ".toml":
        return loads_toml(text)
    raise ConfigError(str(path), "a recipe file ends in .toml or .json")


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    path = Path(path)
    path.write_text(dumps_json(recipe) if path.suffix == ".json" else dumps_toml(recipe), encoding="utf-8")


# --- overrides ---------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML value (``10``, ``0.5``, ``true``, ``[1, 2]``) or else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


_COMPONENT_KEYS = {"network", "sampler", "grid", "guidance", "dataset", "schedule", "parameterization", "objective"}


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any]) -> Recipe:
    """The recipe with dotted ``key = value`` overrides applied.

    Setting a component key itself (``sampler = "gaussian:ddim"``) replaces the
    component, dropping the old one's parameters.
    """
    data = recipe_to_dict(recipe)
    for key, value in overrides.items():
        keys = key.split(".")
        if not all(keys):
            raise ConfigError(key, "malformed key")
        node: Any = data
        for depth, k in enumerate(keys[:-1]):
            if isinstance(node, list):  # a list of tables (the finetune stages): the key is an index
                child = node[_index(node, k, ".".join(keys[:depth]))]
            else:
                child = node.get(k)
                if child is None:
                    child = node[k] = {}
            if not isinstance(child, (dict, list)):
                raise ConfigError(".".join(keys[: depth + 1]), f"is a value ({child!r}), not a table")
            node = child
        last = keys[-1]
        if last in _COMPONENT_KEYS and isinstance(value, str):
            value = {"name": value}
        if isinstance(node, list):
            node[_index(node, last, ".".join(keys[:-1]))] = value
        else:
            node[last] = value
    return recipe_from_dict(data)


def _index(items: list[Any], key: str, path: str) -> int:
    if not key.isdigit() or int(key) >= len(items):
        raise ConfigError(f"{path}.{key}", f"{path} has {len(items)} entries: index them 0 to {len(items) - 1}")
    return int(key)


# --- components ----------------------------------------------------------------------------


_resolved: set[type] = set()


def _fields(cls: type) -> dict[str, attrs.Attribute]:
    if cls not in _resolved:
        attrs.resolve_types(cls)
        _resolved.add(cls)
    return {f.name: f for f in attrs.fields(cls) if f.init}


def _refuse_infinity(value: Any, path: str) -> None:
    """A ConfigError if ``value`` (or a number in a list or table of it) is ±inf."""
    if isinstance(value, float) and math.isinf(value):
        raise ConfigError(path, f"must be a finite number, got {value!r}")
    items = (
        value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    )
    for key, item in items:
        _refuse_infinity(item, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}")


def instantiate(registry: Registry, kind: str, spec: ComponentSpec, path: str) -> Any:
    """Build the component ``spec`` of ``kind``; errors name ``path``."""
    try:
        entry = registry.resolve(kind, spec.name)
    except ComponentNotFound as exc:
        raise ConfigError(f"{path}.name", str(exc)) from None
    except DiffusekitError as exc:
        raise ConfigError(f"{path}.name", str(exc)) from None
    fields = _fields(entry.obj)
    for key in spec.params:
        if key not in fields:
            names = ", ".join(fields) or "none"
            raise ConfigError(f"{path}.{key}", f"unknown parameter of {entry.qualname} (parameters: {names})")
    kwargs = {}
    for key, value in spec.params.items():
        kwargs[key] = structure(value, fields[key].type, f"{path}.{key}")
        if not fields[key].metadata.get(ALLOW_INF):
            _refuse_infinity(kwargs[key], f"{path}.{key}")
    try:
        return entry.obj(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(path, f"invalid parameters for {entry.qualname}: {exc}") from None


def spec_of(registry: Registry, component: Any) -> ComponentSpec:
    """The spec that rebuilds ``component`` (its registered name and all its parameters)."""
    entry = registry.name_of(component)
    params = {f: converter.unstructure(getattr(component, f)) for f in _fields(type(component))}
    return ComponentSpec(entry.qualname, _drop_none(params))


def validate(recipe: Recipe, registry: Registry) -> None:
    """Resolve every component of the recipe, check its parameters and that the components fit
    together; raise a :class:`ConfigError` naming the path of the first error.

    Fitting together: each part's parameterization, the sampler, the grid and the guidance
    handle the part's schedule family (their ``supports``), and the network takes the
    parts (:meth:`~diffusekit.Network.check_parts`).
    """

    def check_integers(value: Any, path: list[Any]) -> None:  # torch sizes, seeds and counts are 64-bit
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise ConfigError(_path(path), f"{value} is out of range (integers must fit in 64 bits)")
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            check_integers(item, path + [key])

    check_integers(recipe_to_dict(recipe), [])
    if not recipe.parts:
        raise ConfigError("parts", "the recipe has no parts; name at least one (e.g. [parts.x])")
    schedules, parameterizations, components = {}, {}, {}
    for name, part in recipe.parts.items():
        schedules[name] = instantiate(registry, "schedule", part.schedule, f"parts.{name}.schedule")
        parameterizations[name] = instantiate(
            registry, "parameterization", part.parameterization, f"parts.{name}.parameterization"
        )
    for kind in ("network", "sampler", "grid", "guidance", "dataset"):
        spec = getattr(recipe, kind)
        if spec is not None:
            components[kind] = instantiate(registry, kind, spec, kind)
    if recipe.method is not None:
        try:
            registry.resolve("method", recipe.method)
        except DiffusekitError as exc:
            raise ConfigError("method", str(exc)) from None
    for index, cfg in enumerate(recipe.train_stages):
        path = "train" if index == 0 else f"finetune[{index - 1}]"
        _check_train(recipe, cfg, path, registry)
        if cfg.network:  # each stage's network must build and take the parts
            instantiate(registry, "network", recipe.stage_network(cfg), f"{path}.network").check_parts(
                recipe.parts, schedules
            )
    for key in ("num", "batch_size"):
        if getattr(recipe.sample, key) < 1:
            raise ConfigError(f"sample.{key}", "must be at least 1")
    for name, part in recipe.parts.items():
        if not 1 <= part.time_dims <= len(part.shape) + 1:
            raise ConfigError(f"parts.{name}.time_dims", f"must lie in [1, {len(part.shape) + 1}] (batch + data dims)")
        if any(n < 1 for n in part.shape):
            raise ConfigError(f"parts.{name}.shape", "sizes must be at least 1")
        if part.loss_weight < 0:
            raise ConfigError(f"parts.{name}.loss_weight", "must not be negative")
    for name, part in recipe.parts.items():
        family, own = schedules[name].kind, parameterizations[name].kind
        if own != family:
            raise ConfigError(
                f"parts.{name}.parameterization",
                f"{part.parameterization.name} is for {own} parts, but the schedule {part.schedule.name} is {family}",
            )
    families = {schedule.kind for schedule in schedules.values()}
    for kind in ("sampler", "grid", "guidance"):
        supports = getattr(components.get(kind), "supports", None)  # None: no such component in the recipe
        if supports is not None and not families <= supports:
            raise ConfigError(
                f"{kind}.name",
                f"{getattr(recipe, kind).name} handles {'/'.join(sorted(supports))} parts, "
                f"not {'/'.join(sorted(families - supports))} ones",
            )
    components["network"].check_parts(recipe.parts, schedules)


def _check_train(recipe: Recipe, cfg: TrainConfig, path: str, registry: Registry) -> None:
    """A ConfigError naming ``path.key`` for the first setting of one training stage out of range."""
    for key in ("steps", "batch_size", "log_every", "checkpoint_every"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{path}.{key}", "must be at least 1")
    if cfg.warmup_steps < 0:
        raise ConfigError(f"{path}.warmup_steps", "must not be negative")
    if cfg.micro_batch_size < 0:
        raise ConfigError(f"{path}.micro_batch_size", "must not be negative (0: a process's whole share at once)")
    if not cfg.grad_clip > 0:
        raise ConfigError(f"{path}.grad_clip", "must be positive (inf disables clipping)")
    if not 0.0 <= cfg.ema_decay <= 1.0:
        raise ConfigError(f"{path}.ema_decay", "must lie in [0, 1]")
    if not cfg.time_scale > 0:
        raise ConfigError(f"{path}.time_scale", "must be positive")
    if not 0.0 <= cfg.condition_dropout <= 1.0:
        raise ConfigError(f"{path}.condition_dropout", "must lie in [0, 1]")
    if not 0.0 <= cfg.lr_min <= cfg.lr:
        raise ConfigError(f"{path}.lr_min", f"must lie in [0, {path}.lr = {cfg.lr}], got {cfg.lr_min}")
    if not 0 < cfg.lr <= 3.4e38:  # the optimizer steps in the weights' dtype, float32 by default
        raise ConfigError(f"{path}.lr", f"must be a positive number up to 3.4e38 (float32), got {cfg.lr!r}")
    if cfg.objective is not None:
        objective = instantiate(registry, "objective", cfg.objective, f"{path}.objective")
        objective.check(attrs.evolve(recipe, train=cfg, finetune=[]))
