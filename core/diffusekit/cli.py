"""The ``diffusekit`` command line (click).

Every error a person can cause (a malformed recipe, an unknown component, a wrong
shape, a pickle file, a broken plugin) ends in one line ``Error: ...`` on stderr and a
non-zero exit; set ``DIFFUSEKIT_DEBUG=1`` to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from diffusekit.errors import DiffusekitError

if TYPE_CHECKING:
    from diffusekit.recipe import Recipe

KIND_NAMES = (
    "schedule",
    "parameterization",
    "network",
    "sampler",
    "grid",
    "condition",
    "guidance",
    "dataset",
    "method",
    "objective",
)


# class attributes ``show`` lists (a sampler's order, a schedule's family, what a method takes as input)
FACTS = (
    "supports stochastic expects order evaluations_per_step adaptive kind prediction family input_format prompt_format"
).split()


class Group(click.Group):
    """A click group that turns errors into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except DiffusekitError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except Exception as exc:
            if os.environ.get("DIFFUSEKIT_DEBUG", "") not in ("", "0"):
                raise
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise click.ClickException(f"{message} (set DIFFUSEKIT_DEBUG=1 for the traceback)") from None


def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    from diffusekit.recipe import parse_value

    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # a one-line error like every other (a BadParameter here would also print the usage)
            raise click.ClickException(f"--set: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def _method_options(overrides: dict[str, Any], method: str | None) -> dict[str, Any]:
    """Take from ``overrides`` the settings of the recipe's method (``--set task=i2v``): plain keys
    that are not recipe entries. The method applies them when it samples (:func:`_with_options`)."""
    import attrs

    from diffusekit.recipe import Recipe

    entries = {field.name for field in attrs.fields(Recipe)}
    options = {key: value for key, value in overrides.items() if "." not in key and key not in entries}
    if options and method is None:
        raise click.ClickException(
            f"--set {next(iter(options))}: not a recipe entry (entries: {', '.join(sorted(entries))})"
        )
    for key in options:
        del overrides[key]
    return options


def _with_options(pipeline: Any, options: dict[str, Any]) -> Any:
    """The pipeline whose method has ``options`` set; an unknown or invalid one is a one-line error."""
    import attrs

    if not options:
        return pipeline
    method = pipeline.method
    fields = {f.name for f in attrs.fields(type(method))} if attrs.has(type(method)) else set()
    unknown = sorted(set(options) - fields)
    if unknown:
        known = f"its settings: {', '.join(sorted(fields))}" if fields else "it has no settings"
        raise click.ClickException(
            f"--set {unknown[0]}: neither a recipe entry nor a setting of method {pipeline.recipe.method} ({known})"
        )
    try:
        return attrs.evolve(pipeline, method=attrs.evolve(method, **options))
    except (TypeError, ValueError) as exc:  # attrs validators put the message first, then the field
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        raise click.ClickException(f"--set: method {pipeline.recipe.method}: {message}") from None


def _recipe(target: str, sets: tuple[str, ...], seed: int | None, options: dict[str, Any] | None = None):
    """The recipe ``target`` with ``--set`` overrides; a method's own settings among them go to ``options``."""
    import attrs

    from diffusekit.pipeline import resolve_recipe
    from diffusekit.plugins import get_registry
    from diffusekit.recipe import apply_overrides, validate

    registry = get_registry()
    recipe = resolve_recipe(target, registry)
    overrides = _parse_sets(sets)
    if options is not None:
        options.update(_method_options(overrides, recipe.method))
    if overrides:
        recipe = apply_overrides(recipe, overrides)
    if seed is not None:
        recipe = attrs.evolve(recipe, seed=seed)
    validate(recipe, registry)
    return recipe


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="diffusekit")
def cli() -> None:
    """diffusekit: diffusion models from composable, plugin-provided components."""


# --- plugins and components --------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--all", "show_all", is_flag=True, help="Include the built-in 'core' plugin.")
def plugins(as_json: bool, show_all: bool) -> None:
    """List installed plugins: version, distribution, hooks, components, load errors."""
    from diffusekit.plugins import loaded

    infos = [i for i in loaded().plugins.values() if show_all or not i.builtin]
    if as_json:
        click.echo(json.dumps([i.as_json() for i in infos], indent=2))
        return
    if not infos:
        click.echo("No plugins installed.")
    for info in infos:
        count = sum(len(v) for v in info.components.values())
        head = f"{info.name} {info.version or ''} ({info.distribution or info.module})".replace("  ", " ")
        click.echo(f"{head}: {'ERROR ' + info.error if info.error else f'{count} components'}")
        for warning in info.warnings:
            click.echo(f"  WARNING {warning}")


@cli.command(name="list")
@click.argument("kind", required=False, type=click.Choice(KIND_NAMES))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_components(kind: str | None, as_json: bool) -> None:
    """List registered components, optionally of one KIND."""
    from diffusekit.plugins import get_registry

    registry = get_registry()
    entries = registry.entries(kind)
    for plugin, error in sorted(registry.failed.items()):  # their components are missing from the list
        click.echo(f"Warning: plugin {plugin!r} {error}; see 'diffusekit plugins'", err=True)

    def summary(e: Any) -> str:
        canonical = registry.canonical(e)
        return e.summary if canonical.qualname == e.qualname else f"alias of {canonical.qualname}"

    if as_json:
        click.echo(json.dumps([{"kind": e.kind, "name": e.qualname, "summary": summary(e)} for e in entries], indent=2))
        return
    current = None
    for e in entries:
        if e.kind != current:
            current = e.kind
            click.echo(f"{e.kind}s:")
        click.echo(f"  {e.qualname:32s} {summary(e)}")


def describe(entry: Any) -> dict[str, Any]:
    """Name, documentation and parameters (type, default) of a registered component."""
    import inspect

    import attrs

    attrs.resolve_types(entry.obj)
    params = []
    for f in attrs.fields(entry.obj):
        if not f.init:
            continue
        default = f.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = "<factory>"
        elif default is attrs.NOTHING:
            default = "<required>"
        type_name = getattr(f.type, "__name__", None) or str(f.type).replace("typing.", "")
        params.append({"name": f.name, "type": type_name, "default": default})
    try:  # properties (a sampler's order, whether it is stochastic) need an instance
        instance = entry.obj()
    except Exception:
        instance = None
    facts = {}
    for attr in FACTS:
        value = getattr(instance, attr, None) if instance is not None else inspect.getattr_static(entry.obj, attr, None)
        if value is not None and not isinstance(value, property) and not callable(value):
            facts[attr] = sorted(value) if isinstance(value, frozenset) else value
    return {
        "kind": entry.kind,
        "name": entry.qualname,
        "plugin": entry.plugin,
        "class": f"{entry.obj.__module__}.{entry.obj.__qualname__}",
        "doc": inspect.cleandoc(entry.obj.__doc__ or ""),
        "parameters": params,
        "facts": facts,
    }


@cli.command()
@click.argument("name")
@click.option("--kind", type=click.Choice(KIND_NAMES), help="Only components of this kind.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(name: str, kind: str | None, as_json: bool) -> None:
    """Show a component's documentation and parameters with their defaults."""
    from diffusekit.plugins import get_registry

    registry = get_registry()
    entries = [registry.resolve(kind, name)] if kind else registry.find(name)
    if not entries:
        raise registry.not_found(name)
    described = [describe(e) for e in entries]
    if as_json:
        click.echo(json.dumps(described, indent=2, default=str))
        return
    for d in described:
        click.echo(f"{d['name']} ({d['kind']}, {d['class']})\n")
        click.echo("\n".join("  " + line for line in d["doc"].splitlines()) or "  (undocumented)")
        if d["facts"]:
            click.echo("\nfacts: " + ", ".join(f"{k}={v}" for k, v in d["facts"].items()))
        click.echo("\nparameters:" if d["parameters"] else "\nparameters: none")
        for p in d["parameters"]:
            click.echo(f"  {p['name']}: {p['type']} = {p['default']!r}")
        click.echo("")


# --- the main job ------------------------------------------------------------------------------


def _write_samples(pipeline: Any, samples: Any, condition: Any, out: Path) -> list[Path]:
    from diffusekit.checkpoint import write_tensors
    from diffusekit.state import as_parts

    return [write_tensors(out / "samples.safetensors", as_parts(samples))]


def _at_least_one(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Counts (``--num``, ``--steps``) are checked while parsing, before anything (training) starts.
    (A ``ClickException`` here is one line; click's ``IntRange`` would also print the usage.)"""
    if value is not None and value < 1:
        raise click.ClickException(f"--{param.name}: must be at least 1, got {value}")
    return value


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def _estimate(pipeline: Any, num: int) -> None:
    """Say up front what a large sampling job costs, and refuse one whose output cannot fit in memory."""
    import math

    size = pipeline.recipe.sample.batch_size
    per_sample = sum(math.prod(part.shape) for part in pipeline.recipe.parts.values()) * 4  # float32
    total, memory = num * per_sample, _memory_bytes()
    if memory is not None and total > memory // 2:
        raise click.ClickException(
            f"--num: {num} samples need about {total / 2**30:.1f} GiB for the outputs alone, more than half "
            f"of this machine's {memory / 2**30:.1f} GiB; sample fewer at a time (with different --seed values)"
        )
    if num > size:
        batches = -(-num // size)
        evaluations = batches * pipeline.grid.steps * getattr(pipeline.sampler, "evaluations_per_step", 1)
        click.echo(
            f"sampling {num} samples in {batches} batches of up to {size}: about {evaluations} network "
            f"evaluations and {total / 2**20:.0f} MiB of output",
            err=True,
        )


def _read_input(pipeline: Any, path: Path | None, num: int | None, prompt: str | None = None) -> Any:
    """``(given, known)`` from ``--input`` or ``--prompt`` (before anything long starts), with a
    single given sample repeated ``--num`` times (several completions of one input); ``None``
    without either."""
    from diffusekit.known import read_given
    from diffusekit.state import DEFAULT_PART, as_parts

    if path is None and prompt is None:
        return None
    if path is not None and prompt is not None:
        raise click.ClickException("--input and --prompt: give one of them")
    method = pipeline.method
    if prompt is not None:
        if method is None or method.prompt_format is None:
            raise click.ClickException(f"--prompt: {pipeline.recipe.method or 'a recipe'} takes no prompt")
        given, known = method.read_prompt(prompt, pipeline.recipe)
        path = Path("--prompt")  # what the messages below call it
    else:
        if method is not None and method.input_format is None:
            raise click.ClickException(f"--input: method {pipeline.recipe.method} takes no input")
        if not path.is_file():
            raise click.ClickException(f"--input: {path}: no such file")
        if method is not None:
            given, known = method.read_input(path, pipeline.recipe)
        else:
            given, known = read_given(path, {name: part.shape for name, part in pipeline.recipe.parts.items()})
    parts = as_parts(given)
    masks = known if isinstance(known, dict) else {name: known for name in parts}
    rows = next(iter(parts.values())).shape[0]
    if num is not None and num != rows:
        if rows != 1:
            raise click.ClickException(f"--num {num}: {path} holds {rows} samples; leave out --num to complete all")
        parts = {name: value.expand(num, *value.shape[1:]) for name, value in parts.items()}
        masks = {name: None if m is None else m.expand(num, *m.shape[1:]) for name, m in masks.items()}
    if list(parts) == [DEFAULT_PART] and not isinstance(given, dict):
        return parts[DEFAULT_PART], masks[DEFAULT_PART]
    return parts, masks


class _ErrorsOnly:
    """A stream that passes on only ``Error: ...`` lines, naming the process (the others' stderr)."""

    def __init__(self, stream: Any, rank: int) -> None:
        self.stream, self.rank = stream, rank

    def write(self, text: str) -> int:
        if text.startswith("Error: "):
            self.stream.write(f"[process {self.rank}] {text}")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def _join_job() -> None:
    """Under ``torchrun``, join the job (:mod:`diffusekit.distributed`); every process but the
    first computes its share quietly (its errors still show): one process talks and writes files."""
    from diffusekit import distributed

    world = distributed.init_from_environment()
    if not world.main:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the process's life
        sys.stderr = _ErrorsOnly(sys.stderr, world.rank)


def _sample_and_write(pipeline: Any, num: int | None, out: Path, progress: bool, given: Any = None) -> None:
    import tempfile

    from diffusekit import distributed

    if not distributed.world().main:  # its share of the samples is gathered by the first process, which writes
        with tempfile.TemporaryDirectory() as scratch:
            return _write_outputs(pipeline, num, Path(scratch), False, given)
    return _write_outputs(pipeline, num, out, progress, given)


def _write_outputs(pipeline: Any, num: int | None, out: Path, progress: bool, given: Any = None) -> None:
    if given is not None:
        num = next(iter(given[0].values())).shape[0] if isinstance(given[0], dict) else given[0].shape[0]
    num = pipeline.recipe.sample.num if num is None else num
    _estimate(pipeline, num)
    if given is not None:
        out.mkdir(parents=True, exist_ok=True)
        if pipeline.method is not None:
            written = pipeline.method.complete(pipeline, *given, out, progress)
        else:
            samples = pipeline.sample(given=given[0], known=given[1], progress=progress)
            written = _write_samples(pipeline, samples, None, out)
    elif pipeline.method is not None:
        out.mkdir(parents=True, exist_ok=True)
        written = pipeline.method.generate(pipeline, num, out, progress)
    else:
        written = _write_samples(pipeline, pipeline.sample(num, progress=progress), None, out)
    for path in written:
        click.echo(f"wrote {path}")


def _model_differs(shipped: Any, recipe: Any) -> str | None:
    """The first entry of ``parts`` or ``network`` (a dotted path) where ``recipe`` no longer
    fits the shipped weights' recipe, or ``None``. A part's schedule may differ: the weights
    are then used under it, matched by log-SNR (:func:`diffusekit.pipeline.trained_under`)."""
    import attrs

    from diffusekit.recipe import recipe_to_dict

    recipe = attrs.evolve(
        recipe,
        network=recipe.final_network,
        parts={
            name: attrs.evolve(part, schedule=shipped.parts[name].schedule) if name in shipped.parts else part
            for name, part in recipe.parts.items()
        },
    )

    def first(a: Any, b: Any, path: str) -> str | None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                found = first(a.get(key), b.get(key), f"{path}.{key}")
                if found:
                    return found
            return None
        return None if a == b else path

    old, new = recipe_to_dict(shipped), recipe_to_dict(recipe)
    for name in ("parts", "network"):
        found = first(old.get(name), new.get(name), name)
        if found:
            return found
    return None


def _under_new_schedules(pipeline: Any, trained: Any) -> Any:
    """The pipeline with weights trained under ``trained``'s schedules used under the recipe's, saying so."""
    from diffusekit.errors import ConfigError
    from diffusekit.pipeline import trained_under

    try:
        adapted = trained_under(pipeline, trained)
    except ConfigError as exc:
        raise click.ClickException(f"{exc}; train a model under it with --train") from None
    for name in getattr(adapted.denoiser, "targets", {}):  # the parts of a ScheduleAdapter
        click.echo(
            f"part {name!r}: sampling under {pipeline.recipe.parts[name].schedule.name} with weights trained "
            f"under {trained.parts[name].schedule.name}, matched by log-SNR",
            err=True,
        )
    return adapted


@cli.command()
@click.argument("target")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe entry (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("outputs"), show_default=True)
@click.option("--seed", type=int, help="Override the recipe's seed.")
@click.option("--num", type=int, callback=_at_least_one, help="Number of samples (default: the recipe's sample.num).")
@click.option("--train", "force_train", is_flag=True, help="Train from scratch even if the method ships weights.")
@click.option("--steps", type=int, callback=_at_least_one, help="Training steps (default: the recipe's train.steps).")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Complete this input (a puzzle, an image with holes; 'diffusekit show METHOD' says what it takes).",
)
@click.option("--prompt", help="Complete this text (a method that takes a prompt; 'diffusekit show METHOD' says how).")
def run(
    target: str,
    sets: tuple[str, ...],
    out: Path,
    seed: int | None,
    num: int | None,
    force_train: bool,
    steps: int | None,
    progress: bool,
    input_path: Path | None,
    prompt: str | None,
) -> None:
    """Run METHOD or RECIPE.toml: load shipped weights (or train with --train), sample (or complete
    --input), write outputs to --out."""
    from diffusekit.checkpoint import load_checkpoint
    from diffusekit.pipeline import build
    from diffusekit.training import train as train_loop

    _join_job()
    options: dict[str, Any] = {}
    recipe = _recipe(target, sets, seed, options)
    pipeline = _with_options(build(recipe), options)
    given = _read_input(pipeline, input_path, num, prompt)  # a malformed input fails before any training
    shipped = None if force_train or pipeline.method is None else pipeline.method.weights()
    if shipped is not None:
        checkpoint = load_checkpoint(shipped)
        differs = _model_differs(checkpoint.recipe, recipe)
        if differs:  # nothing long starts unless asked for
            raise click.ClickException(
                f"{differs} differs from the weights {recipe.method} ships, so they do not fit; "
                "train a model with --train (or leave that entry as it is)"
            )
        pipeline = _under_new_schedules(pipeline, checkpoint.recipe)
        pipeline.load_weights(checkpoint.weights(), source=str(shipped))
        click.echo(
            f"loaded shipped weights {shipped.name} (trained {_shipped_length(pipeline.method, checkpoint)})", err=True
        )
    elif not force_train:
        what = f"method {recipe.method} ships no weights" if pipeline.method is not None else "a recipe has no weights"
        raise click.ClickException(
            f"{what}; add --train to train {_training_length(recipe, steps)} first, "
            "or sample a trained checkpoint with 'diffusekit sample'"
        )
    if shipped is None:
        click.echo(f"training {_training_length(recipe, steps)}", err=True)
        out.mkdir(parents=True, exist_ok=True)  # the training loop writes its metrics next to the checkpoint
        # run's outputs are replaced on every run, the checkpoint among them
        train_loop(pipeline, out=out / "model.safetensors", overwrite=True, steps=steps, progress=progress)
    _sample_and_write(pipeline, num, out, progress, given)


def _shipped_length(method: Any, checkpoint: Any) -> str:
    """How long shipped weights were trained: the checkpoint's steps, or, for weights from the
    last stage of the method's staged recipe, every stage's (the checkpoint counts its own only)."""
    recipe = method.recipe()
    if len(recipe.train_stages) > 1 and checkpoint.step == recipe.train_stages[-1].steps:
        return _training_length(recipe, None)
    return f"{checkpoint.step} steps"


def _training_length(recipe: Recipe, steps: int | None) -> str:
    """``"1000 steps"``, or for a recipe in stages ``"7000 + 4000 steps (2 stages)"``."""
    lengths = [steps if steps is not None else cfg.steps for cfg in recipe.train_stages]
    if len(lengths) == 1:
        return f"{lengths[0]} steps"
    return f"{' + '.join(map(str, lengths))} steps ({len(lengths)} stages)"


@cli.command()
@click.argument("target")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint (.safetensors)."
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe entry (repeatable).")
@click.option("--seed", type=int, help="Override the recipe's seed.")
@click.option(
    "--steps", type=int, callback=_at_least_one, help="Total training steps (default: the recipe's train.steps)."
)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint at --out.")
@click.option("--overwrite", is_flag=True, help="Replace an existing checkpoint at --out (and its metrics).")
@click.option(
    "--init",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from this checkpoint's weights (fine-tuning); new input features start at zero.",
)
@click.option("--progress/--no-progress", default=True)
def train(
    target: str,
    out: Path,
    sets: tuple[str, ...],
    seed: int | None,
    steps: int | None,
    resume: bool,
    overwrite: bool,
    init: Path | None,
    progress: bool,
) -> None:
    """Train RECIPE (a .toml/.json file or a method name) and write a checkpoint."""
    from diffusekit.pipeline import build
    from diffusekit.training import train as train_loop

    if resume and overwrite:
        raise click.ClickException("--resume and --overwrite exclude each other: continue the checkpoint or replace it")
    _join_job()
    recipe = _recipe(target, sets, seed)
    if out.suffix != ".safetensors":
        raise click.ClickException(f"--out: checkpoints are .safetensors files, got {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)  # the training loop writes its metrics next to the checkpoint
    if resume and init is not None:
        raise click.ClickException("--resume and --init exclude each other: a resumed run already has its weights")
    result = train_loop(
        build(recipe), out=out, resume=resume, overwrite=overwrite, init=init, steps=steps, progress=progress
    )
    click.echo(f"wrote {out} (step {result.step}, loss {result.loss:.4f})")


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--num", type=int, callback=_at_least_one, help="Number of samples (default: the recipe's sample.num).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("samples"), show_default=True)
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a sampling entry, e.g. sampler=gaussian:ddim."
)
@click.option("--seed", type=int, help="Override the recipe's seed.")
@click.option("--progress/--no-progress", default=True)
@click.option(
    "--input", "input_path", type=click.Path(dir_okay=False, path_type=Path), help="Complete this input (as for run)."
)
@click.option("--prompt", help="Complete this text (as for run).")
def sample(
    checkpoint: Path,
    num: int | None,
    out: Path,
    sets: tuple[str, ...],
    seed: int | None,
    progress: bool,
    input_path: Path | None,
    prompt: str | None,
) -> None:
    """Sample from a checkpoint; it carries its recipe, so nothing else is needed."""
    from diffusekit.pipeline import load

    _join_job()
    overrides = _parse_sets(sets)
    if seed is not None:
        overrides["seed"] = seed
    options = _method_options(overrides, _checkpoint_method(checkpoint)) if overrides else {}
    pipeline = _with_options(load(checkpoint, **overrides), options)
    _sample_and_write(pipeline, num, out, progress, _read_input(pipeline, input_path, num, prompt))


def _checkpoint_method(path: Path) -> str | None:
    from diffusekit.checkpoint import load_checkpoint

    return load_checkpoint(path).recipe.method


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--half", is_flag=True, help="Store weights as float16 (half the size).")
def export(checkpoint: Path, out: Path, half: bool) -> None:
    """Write a sampling-only checkpoint: the EMA weights and the recipe, no optimizer state."""
    from diffusekit.checkpoint import load_checkpoint, save_checkpoint

    # resolved paths (and same-file for hard links): exporting in place would drop the training state for good
    if out.resolve() == checkpoint.resolve() or (out.exists() and checkpoint.exists() and out.samefile(checkpoint)):
        raise click.ClickException(
            f"--out: {str(out)!r} is the checkpoint being exported; an export drops the optimizer state "
            "and raw weights, so write it to another file"
        )
    ckpt = load_checkpoint(checkpoint)
    weights = {f"ema.{k}": (v.half() if half and v.is_floating_point() else v) for k, v in ckpt.weights().items()}
    save_checkpoint(out, weights, ckpt.recipe, step=ckpt.step)
    size = out.stat().st_size / 2**20
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in weights.values() if v.is_floating_point()})
    click.echo(
        f"wrote {out} ({size:.2f} MiB, {sum(v.numel() for v in weights.values()) / 1e6:.2f}M parameters, "
        f"{'/'.join(dtypes)})"
    )


# --- plugin authors ----------------------------------------------------------------------------


def _failure_reasons(exc: BaseException) -> list[str]:
    """One line per distinct failure: a Hypothesis group of failures (an ``ExceptionGroup``,
    possibly nested) gives each of its failures' first lines, in order."""
    group = getattr(exc, "exceptions", None)
    if isinstance(group, tuple) and group:
        return [line for sub in group for line in _failure_reasons(sub)]
    return [(str(exc).strip().splitlines() or [type(exc).__name__])[0]]


def _failure_reason(exc: BaseException) -> str:
    """The first of :func:`_failure_reasons`: one line for a contract that stops a plugin's check."""
    return _failure_reasons(exc)[0]


def _cannot_check(state: Any, plugin: str) -> tuple[str, str] | None:
    """Why ``plugin`` cannot be checked at all, or ``None``: ``(error, reason)``, the one-line
    error of a single-plugin run and the reason of a ``FAIL PLUGIN: reason`` line."""
    info = state.plugins.get(plugin)
    if info is None:
        import difflib

        close = difflib.get_close_matches(plugin, list(state.plugins), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        reason = f"not installed{hint} (installed: {', '.join(state.plugins)})"
        return f"plugin {plugin!r} is {reason}", reason
    if info.error:  # "failed to load: ..." or "failed to register: ..." (a typo'd hook name)
        return f"plugin {plugin!r} {info.error}", info.error
    if info.warnings:  # e.g. a hook without @diffusekit.hookimpl: its components are silently missing
        return f"plugin {plugin!r}: {info.warnings[0]}", info.warnings[0]
    return None


@cli.command()
@click.argument("plugins", nargs=-1, metavar="[PLUGIN]...")
@click.option("--max-examples", type=int, help="Hypothesis examples per property (default 20).")
@click.option("-k", "pattern", metavar="PATTERN", help="Only contracts whose id contains PATTERN (e.g. -k heun).")
@click.option("--traceback", "show_traceback", is_flag=True, help="Print each failure's full traceback.")
@click.option("-v", "--verbose", is_flag=True, help="List every contract, not only failures.")
def check(
    plugins: tuple[str, ...], max_examples: int | None, pattern: str | None, show_traceback: bool, verbose: bool
) -> None:
    """Run the conformance contracts on every component each PLUGIN registers.

    Without PLUGIN, every installed plugin except the built-in 'core' is checked (name
    'core' to check it too). Checking several plugins in one process is faster than one
    run each. Every failing contract prints 'FAIL <component>::<contract>: <reason>'; with
    several plugins, one that is not installed, failed to load, has a hook warning or
    registers nothing prints 'FAIL <plugin>: <reason>' and the others are still checked.
    One summary line ends the run; the exit status is non-zero if anything failed.
    """
    import time
    import traceback

    from diffusekit.plugins import loaded
    from diffusekit.testing.contracts import plugin_contracts

    if max_examples is not None:
        os.environ["DIFFUSEKIT_MAX_EXAMPLES"] = str(max_examples)
    state = loaded()
    single = len(set(plugins)) == 1  # one named plugin: what stops its check is the one-line error
    names = list(dict.fromkeys(plugins)) or [name for name, info in state.plugins.items() if not info.builtin]
    if not names:
        raise click.ClickException("no plugins installed besides the built-in 'core' (check it with: check core)")
    began = time.perf_counter()
    failures, total, components, unusable, selected = 0, 0, 0, [], []
    for plugin in names:
        problem, contracts = _cannot_check(state, plugin), []
        if problem is None:
            try:
                contracts = plugin_contracts(plugin, state.registry)
            except Exception as exc:  # a component that breaks even listing its contracts
                reason = f"listing its contracts raised {type(exc).__name__}: {_failure_reason(exc)}"
                problem = (f"plugin {plugin!r}: {reason}", reason)
        if problem is None and not contracts:
            problem = (f"plugin {plugin!r} registers no components", "registers no components")
        if problem is not None:
            if single:
                raise click.ClickException(problem[0])
            unusable.append(plugin)
            click.echo(f"FAIL {plugin}: {problem[1]}")
            continue
        if pattern is not None:
            contracts = [c for c in contracts if pattern.lower() in c.id.lower()]
        selected.append(plugin)
        total += len(contracts)
        components += len({c.component for c in contracts})
        for contract in contracts:
            try:
                contract.check()
            except Exception as exc:  # report every failing contract, then exit non-zero
                failures += 1
                first, *others = _failure_reasons(exc)
                click.echo(f"FAIL {contract.id}: {first}")
                for other in others:  # each distinct failure Hypothesis found, one line each
                    click.echo(f"     and: {other}")
                if show_traceback:
                    click.echo("".join(traceback.format_exception(exc)))
            else:
                if verbose:
                    click.echo(f"ok   {contract.id}: {contract.doc}")
    if pattern is not None and selected and not total and not unusable:
        which = f"plugin {selected[0]!r}" if single else f"plugins {', '.join(selected)}"
        raise click.ClickException(f"-k {pattern!r}: no contract of {which} matches")
    summary = f"{total - failures}/{total} contracts passed on {components} components of " + (
        f"plugin {names[0]!r}" if single else f"{len(names)} plugins"
    )
    summary += f" in {time.perf_counter() - began:.1f}s"
    if unusable:
        summary += f"; {len(unusable)} could not be checked ({', '.join(unusable)})"
    if failures or unusable:
        hint = " (--traceback shows the details)" if failures and not show_traceback else ""
        raise click.ClickException(summary + hint)
    click.echo(summary)


@cli.command(name="new-plugin")
@click.argument("name")
@click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path), help="Parent folder (default: .)."
)
def new_plugin(name: str, directory: Path | None) -> None:
    """Scaffold an installable plugin package NAME (pyproject, hookimpl, component, conformance test)."""
    from diffusekit.scaffold import scaffold

    root = scaffold(name, directory or Path.cwd())
    click.echo(f"created {root}\nnext: diffusekit install -e {root} && diffusekit check {name}")


def _pip(*args: str) -> None:
    code = subprocess.call([sys.executable, "-m", "pip", *args])
    if code:
        raise click.ClickException(f"pip {args[0]} exited with status {code}")


@cli.command()
@click.argument("packages", nargs=-1, required=True)
@click.option("-U", "--upgrade", is_flag=True)
@click.option("-e", "--editable", is_flag=True, help="Install a local path in editable mode.")
def install(packages: tuple[str, ...], upgrade: bool, editable: bool) -> None:
    """pip-install plugin PACKAGES into diffusekit's own environment."""
    args = ["install", *(["--upgrade"] if upgrade else [])]
    for package in packages:
        args.extend(["-e", package] if editable else [package])
    _pip(*args)


@cli.command()
@click.argument("packages", nargs=-1, required=True)
def uninstall(packages: tuple[str, ...]) -> None:
    """pip-uninstall PACKAGES from diffusekit's environment."""
    _pip("uninstall", "-y", *packages)


def _plugin_commands() -> None:
    """Let plugins add commands (``register_commands``); a failing plugin is skipped with a warning.

    Plugin code runs isolated: an exception, ``sys.exit`` or a ``KeyboardInterrupt`` it
    raises itself is reported with the plugin's name and ends nothing.
    """
    from diffusekit.plugins import call_plugin, describe_failure, loaded

    state = loaded()
    for warning in state.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if os.environ.get("DIFFUSEKIT_DEBUG", "") not in ("", "0"):
        for info in state.plugins.values():
            if info.traceback:
                click.echo(f"plugin {info.name!r} {info.error}:\n{info.traceback}", err=True)
    for impl in state.manager.hook.register_commands.get_hookimpls():
        info = state.plugins.get(impl.plugin_name)
        if info is not None and info.error:
            continue  # a plugin that failed to register contributes nothing
        failure = call_plugin(impl.function, cli=cli)
        if failure is not None:
            click.echo(
                f"Warning: plugin {impl.plugin_name!r} failed to add commands: {describe_failure(failure)}", err=True
            )


def with_plugin_commands() -> click.Group:
    """The ``diffusekit`` command group with the installed plugins' commands added (what
    ``main`` runs; the documentation site renders its reference from it)."""
    _plugin_commands()
    return cli


def main() -> None:
    try:
        _plugin_commands()
    except KeyboardInterrupt:  # the user's own Ctrl-C while plugins load
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # never let plugin discovery stop the CLI
        click.echo(f"Warning: could not load plugin commands: {exc}", err=True)
    try:
        cli(prog_name="diffusekit")
    except SystemExit as done:
        distributed = sys.modules.get("diffusekit.distributed")
        if distributed is not None and not done.code:
            distributed.leave(wait=True)
        raise


if __name__ == "__main__":
    main()
