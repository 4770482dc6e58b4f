r"""The core training loop.

For each part :math:`p` with schedule :math:`q_p` and parameterization :math:`P_p` the
loss is the denoising objective

.. math:: L = \sum_p w_p\, \mathbb E_{x_0, t_p, x_{t_p} \sim q_p}\, \ell_p\big(f_\theta(x_t, t), x_0\big),

with :math:`\ell_p` the parameterization's per-element loss (squared error to its
regression target for Gaussian parts) and per-part times drawn independently
(``time_dims`` leading dimensions each get their own time: per sample, per frame,
per token).

Every step draws its batch, times, noise, condition dropout and network dropout from
generators seeded by ``(seed, step)`` alone, with ``seed`` the stage's ``train.seed`` or else
the recipe's (:func:`draw_seed`), so a run resumed from a checkpoint continues exactly as the
uninterrupted run would have (same weights, bit for bit).

Training never loses or corrupts a checkpoint: an existing one is replaced only when
asked (``resume`` or ``overwrite``), a non-finite loss or gradient norm stops the run
(:class:`~diffusekit.errors.TrainingDiverged`) before the optimizer step, tensors are
checked finite before every write, and a resumed run first removes what a killed one
left behind (temporary files, metric rows past the checkpoint's step).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from diffusekit import distributed
from diffusekit.checkpoint import (
    PICKLE_SUFFIXES,
    atomic_write,
    load_checkpoint,
    remove_temporary_files,
    save_checkpoint,
)
from diffusekit.data import Data
from diffusekit.denoiser import Denoiser
from diffusekit.errors import CheckpointError, ConfigError, ShapeError, TrainingDiverged
from diffusekit.objective import Denoising, Objective, Progress
from diffusekit.pipeline import Pipeline
from diffusekit.plugins import get_registry
from diffusekit.recipe import Recipe, TrainConfig, instantiate
from diffusekit.schedule import Corrupted
from diffusekit.state import align_time

try:
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # pragma: no cover - a torch build without torch.distributed
    DTensor = ()  # isinstance(x, ()) is never true

T_MIN = 1e-4
"""Smallest training time: some targets (velocity under VP) are singular at t = 0."""


@attrs.frozen
class TrainResult:
    step: int
    loss: float
    checkpoint: Path | None


def draw_seed(recipe: Recipe) -> int:
    """The seed of a run's draws: its stage's ``train.seed``, or else the recipe's ``seed``."""
    return recipe.seed if recipe.train.seed is None else recipe.train.seed


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one training step, a function of (seed, step) only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


def sample_times(cfg: TrainConfig, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Training times of the given shape from ``cfg.time_distribution``."""
    if cfg.time_distribution == "logit_normal":
        # Esser et al. 2024 (SD3): t = sigmoid(loc + scale * n)
        n = torch.randn(shape, generator=generator, dtype=torch.float64)
        t = torch.sigmoid(cfg.time_loc + cfg.time_scale * n)
    else:
        t = torch.rand(shape, generator=generator, dtype=torch.float64)
    return t.clamp(T_MIN, 1.0)


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    r"""The learning rate of ``step`` (0-based) in a run of ``total`` steps.

    A linear warm-up over ``warmup_steps``, :math:`\eta\,\min(1, (k+1)/W)`, times the decay of
    ``lr_schedule`` over the steps after it, from ``lr`` down to ``lr_min`` at the last step:
    ``constant`` (none), ``linear``, or ``cosine`` (Loshchilov & Hutter, "SGDR", 2017),
    :math:`\eta_{min} + (\eta - \eta_{min})\tfrac12(1 + \cos\pi p)` with :math:`p` the fraction of
    the decay done.
    """
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "constant":
        return cfg.lr * warm
    span = max(1, total - 1 - cfg.warmup_steps)
    done = min(1.0, max(0.0, (step - cfg.warmup_steps) / span))
    shape = 1.0 - done if cfg.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * done))
    return (cfg.lr_min + (cfg.lr - cfg.lr_min) * shape) * warm


def load_data(pipeline: Pipeline) -> Data:
    recipe = pipeline.recipe
    if recipe.dataset is None:
        raise ConfigError("dataset", "the recipe names no dataset to train on (set [dataset])")
    return instantiate(get_registry(), "dataset", recipe.dataset, "dataset").load()


def check_data(recipe: Recipe, data: Data) -> None:
    """Raise a :class:`ConfigError` unless ``data`` has exactly the recipe's parts, each of its per-sample shape."""
    if set(data.parts) != set(recipe.parts):
        raise ConfigError(
            "parts", f"the recipe has parts {sorted(recipe.parts)} but the dataset has {sorted(data.parts)}"
        )
    for name, spec in recipe.parts.items():
        shape = tuple(data.parts[name].shape[1:])
        if shape != tuple(spec.shape):
            raise ConfigError(
                f"parts.{name}.shape",
                f"the recipe says {list(spec.shape)} but the dataset's samples of {name!r} have shape {list(shape)}",
            )
    if len(data) == 0:
        raise ConfigError("dataset", "has no examples to train on")


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the rows of ``path`` (JSONL metrics) up to ``step``; drop later rows and torn lines.

    A run killed after logging a step but before checkpointing it logs that step again
    when resumed; without this the file would hold it twice.
    """
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # the torn last line of a killed run
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept != lines:
        atomic_write(path, "".join(kept).encode("utf-8"))


def kept_checkpoints(out: Path) -> dict[int, Path]:
    """The earlier checkpoints kept beside ``out`` (``train.keep_checkpoints``), by step."""
    if not out.parent.is_dir():
        return {}
    pattern = re.compile(rf"{re.escape(out.stem)}\.step(\d+){re.escape(out.suffix)}")
    found = {}
    for p in out.parent.iterdir():
        match = pattern.fullmatch(p.name)
        if match:
            found[int(match.group(1))] = p
    return found


def _keep_copy(out: Path, step: int) -> None:
    """Keep the checkpoint now at ``out`` (of ``step``) as ``<stem>.step<step><suffix>``."""
    kept = out.with_name(f"{out.stem}.step{step}{out.suffix}")
    kept.unlink(missing_ok=True)  # a killed run may have kept this step already
    try:
        os.link(out, kept)  # the same bytes under a second name; replacing ``out`` leaves them alone
    except OSError:  # a file system without hard links
        atomic_write(kept, out.read_bytes())


@attrs.frozen
class Drawn:
    """The random draws of one training batch: condition dropout, times and corruptions."""

    condition: Any
    times: dict[str, Tensor]
    corrupted: dict[str, Corrupted]
    held: dict[str, Tensor] = attrs.field(factory=dict)  # per part with held elements: True where held at t = 0

    def to(self, device: torch.device) -> Drawn:
        if device.type == "cpu":
            return self
        return Drawn(
            None if self.condition is None else self.condition.to(device),
            {name: t.to(device) for name, t in self.times.items()},
            {
                name: Corrupted(c.x_t.to(device), None if c.noise is None else c.noise.to(device))
                for name, c in self.corrupted.items()
            },
            {name: h.to(device) for name, h in self.held.items()},
        )

    def take(self, rows: slice) -> Drawn:
        return Drawn(
            None if self.condition is None else self.condition.take(rows),
            {name: t[rows] for name, t in self.times.items()},
            {
                name: Corrupted(c.x_t[rows], None if c.noise is None else c.noise[rows])
                for name, c in self.corrupted.items()
            },
            {name: h[rows] for name, h in self.held.items()},
        )


def plan_times(
    cfg: TrainConfig, shape: tuple[int, ...], generator: torch.Generator, known: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Training times of shape ``shape`` (the part's ``time_dims`` leading dimensions) and the
    mask of elements held given at t = 0 (``None`` when none is).

    Each element's time comes from ``cfg.time_distribution`` (Diffusion Forcing: independent
    per frame or token; Chen et al., 2024). With probability ``cfg.shared_time`` a sample's
    elements share its first element's time instead (the probabilistic timestep sampling of
    FVDM; Liu et al., 2024, "Redefining Temporal Modeling in Video Diffusion"). With
    probability ``cfg.hold`` a sample holds a random subset of its elements at t = 0 (each
    element with a probability drawn uniformly per sample; one that draws all of them holds
    only its first, one with a single element holds none): the frames,
    views or tokens a sampler is later given, seen as it will see them. The other samples
    train with none given, so one model learns both the conditional and the unconditional task.

    ``known`` (``shape``, or fewer leading dimensions) marks elements the data gives in every
    example (:attr:`Data.known <diffusekit.data.Data.known>`): they are held too, and the random
    holding above counts only the others (the *free* elements).
    """
    t = sample_times(cfg, shape, generator)
    if known is not None:
        known = known.reshape(*known.shape, *([1] * (len(shape) - known.ndim))).expand(shape).cpu()
    if len(shape) < 2:
        return (t, None) if known is None else (t.masked_fill(known, 0.0), known)
    rows = (shape[0],) + (1,) * (len(shape) - 1)
    if cfg.shared_time > 0:
        shared = torch.rand(rows, generator=generator, dtype=torch.float64) < cfg.shared_time
        t = torch.where(shared, t.flatten(1)[:, :1].reshape(rows), t)
    if cfg.hold <= 0:
        return (t, None) if known is None else (t.masked_fill(known, 0.0), known)
    holding = torch.rand(rows, generator=generator, dtype=torch.float64) < cfg.hold
    rate = torch.rand(rows, generator=generator, dtype=torch.float64)
    held = (torch.rand(shape, generator=generator, dtype=torch.float64) < rate) & holding
    free = torch.ones(shape, dtype=torch.bool) if known is None else ~known
    held &= free
    everything = (held == free).flatten(1).all(1).reshape(rows)
    # a sample with every free element drawn holds only its first (image-to-video); a single one is never held
    first = free & (free.flatten(1).cumsum(1) == 1).reshape(shape)
    several = free.flatten(1).sum(1).reshape(rows) > 1
    held = torch.where(everything, first & several, held)
    if known is not None:
        held = held | known
    return t.masked_fill(held, 0.0), held


def size_buckets(data: Data, buckets: int) -> list[Tensor] | None:
    """The example indices of ``buckets`` buckets of equal count (within one), by ``data.sizes``
    (stable order); ``None`` without buckets or sizes."""
    if not buckets or data.sizes is None:
        return None
    order = torch.argsort(data.sizes, stable=True)
    return [chunk for chunk in torch.tensor_split(order, min(buckets, len(order))) if len(chunk)]


def draw_rows(n: int, batch: int, generator: torch.Generator, buckets: list[Tensor] | None = None) -> Tensor:
    """A training batch's example indices: uniform with replacement over the ``n`` examples, or,
    with ``buckets``, uniform over one bucket drawn with probability proportional to its count
    (so every example is still equally likely)."""
    if buckets is None:
        return torch.randint(n, (batch,), generator=generator)
    counts = torch.tensor([len(b) for b in buckets], dtype=torch.float64)
    chosen = buckets[int(torch.multinomial(counts, 1, generator=generator))]
    return chosen[torch.randint(len(chosen), (batch,), generator=generator)]


def draw_batch(pipeline: Pipeline, batch: Data, generator: torch.Generator) -> Drawn:
    """Condition dropout, times and corruptions for the whole ``batch``, in one fixed order from
    ``generator``: every process of a distributed run draws the same and takes its rows."""
    recipe, cfg = pipeline.recipe, pipeline.recipe.train
    condition = batch.condition
    if condition is not None and cfg.condition_dropout > 0:
        condition = condition.dropout(cfg.condition_dropout, generator)
    times, corrupted, held = {}, {}, {}
    for name, x0 in batch.parts.items():
        time_dims = recipe.parts[name].time_dims
        known = batch.known.get(name)
        if known is not None and known.ndim > time_dims:
            raise ShapeError(
                f"data: the known mask of part {name!r} has {known.ndim} dimensions; the part has one time "
                f"per {time_dims} leading dimension(s), so known elements can be held only at that granularity"
            )
        times[name], mask = plan_times(cfg, tuple(x0.shape[:time_dims]), generator, known)
        if mask is not None:
            held[name] = mask
    if cfg.shared_parts > 0 and len(times) > 1:
        n = len(batch)
        tied = torch.rand((n,), generator=generator, dtype=torch.float64) < cfg.shared_parts
        common = sample_times(cfg, (n,), generator)
        for name, t in times.items():
            keep = ~align_time(tied, t) if name not in held else ~align_time(tied, t) | held[name]
            times[name] = torch.where(keep, t, align_time(common, t))
    for name, x0 in batch.parts.items():
        corrupted[name] = pipeline.denoiser.schedules[name].corrupt(x0, times[name], generator)
        if name in held:
            kept = align_time(held[name], x0)  # exactly the data, whatever the schedule's rounding at t = 0
            corrupted[name] = Corrupted(torch.where(kept, x0, corrupted[name].x_t), corrupted[name].noise)
    return Drawn(condition, times, corrupted, held)


def batch_losses(
    denoiser: Denoiser, batch: Data, drawn: Drawn, weights: Mapping[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """The per-part mean losses of ``batch`` under its draws (before the per-part weights).
    Elements held given are left out: a sample's loss is the mean over its other elements (0 when
    it has none). ``weights`` (per part, shaped like its time) multiply each element's loss first."""
    prepared = denoiser.prepare({n: c.x_t for n, c in drawn.corrupted.items()}, drawn.times)
    raw = denoiser.run_network(prepared, drawn.condition)
    losses = {}
    for name, x0 in batch.parts.items():
        loss = denoiser.parameterizations[name].loss(raw[name], prepared[name], x0, drawn.corrupted[name])
        if weights is not None and name in weights:
            loss = loss * align_time(weights[name], loss).to(loss.dtype)
        if name not in drawn.held:
            losses[name] = loss.mean()
            continue
        free = (~align_time(drawn.held[name], loss)).expand_as(loss)
        count = free.flatten(1).sum(1)
        per_row = torch.where(free, loss, 0.0).flatten(1).sum(1) / count.clamp(min=1)
        # a sample with nothing free (all of it given by the data) adds 0: each sample keeps its share of
        # the batch, so micro-batches and processes still sum to the whole batch's loss
        losses[name] = per_row.mean()
    return losses


def loss_terms(pipeline: Pipeline, batch: Data, generator: torch.Generator) -> dict[str, Tensor]:
    """The per-part mean losses of one batch (before the per-part weights)."""
    return batch_losses(pipeline.denoiser, batch, draw_batch(pipeline, batch, generator))


def objective_of(recipe: Recipe) -> Objective:
    """The recipe's training objective (``train.objective``; default :class:`~diffusekit.objective.Denoising`)."""
    if recipe.train.objective is None:
        return Denoising()
    objective = instantiate(get_registry(), "objective", recipe.train.objective, "train.objective")
    objective.check(recipe)
    return objective


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], str]:
    """The optimizer's state as whole tensors by ``optim.<param index>.<name>`` (sharded ones gathered)."""
    state = optimizer.state_dict()
    tensors = {
        f"optim.{index}.{key}": _full(value) if isinstance(value, Tensor) else torch.tensor(value)
        for index, entry in state["state"].items()
        for key, value in entry.items()
    }
    return tensors, json.dumps(state["param_groups"])


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], groups: str) -> None:
    """The inverse of :func:`_optimizer_tensors`, each tensor laid out like its parameter."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Tensor]] = {}
    for key in sorted(tensors):  # one order on every process (a file's tensors come in any order): collectives
        value = tensors[key]
        index, name = key.split(".", 1)
        param = params[int(index)]
        sharded = value.shape == param.shape and value.ndim > 0  # moments; the step count is a scalar
        state.setdefault(int(index), {})[name] = _like(value, param) if sharded else value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(groups)})


BOOKKEEPING = ("steps", "checkpoint_every", "log_every", "keep_checkpoints", "micro_batch_size", "compile", "shard")
"""Training settings that change how long a run goes, what it writes or how it is spread over
processes and micro-batches, not what it computes (beyond the order of floating-point sums)."""


def training_difference(trained: Recipe, recipe: Recipe) -> str | None:
    """The first recipe entry that would make resuming ``trained`` with ``recipe`` compute
    something else (``None`` if none does). Sampling settings and :data:`BOOKKEEPING` may change."""
    for name in ("parts", "network", "dataset", "seed"):
        if getattr(trained, name) != getattr(recipe, name):
            return name
    for field in attrs.fields(TrainConfig):
        if field.name not in BOOKKEEPING and getattr(trained.train, field.name) != getattr(recipe.train, field.name):
            return f"train.{field.name}"
    return None


def _check_schedule_length(trained: Recipe, total: int, planned: int, out: Path) -> None:
    """A decaying learning rate spans the run's total steps: resuming it with another total would
    change the rates of the steps already taken, so it is refused."""
    if trained.train.lr_schedule != "constant" and total != planned:
        raise CheckpointError(
            f"{out}: the run decays its learning rate ({trained.train.lr_schedule}) over {planned} steps; "
            f"resuming it for {total} would change that schedule (train a fresh run, or keep {planned})"
        )


def _check_steps(total: Any, path: str) -> int:
    if isinstance(total, bool) or not isinstance(total, int):
        raise ConfigError(path, f"expected int, got {total!r}")
    if total < 1:
        raise ConfigError(path, f"must be at least 1, got {total}")
    return total


def widen_into(network: torch.nn.Module, weights: dict[str, Tensor], source: str) -> list[str]:
    """Load ``weights`` into ``network`` by name to start a fine-tuning run from them.

    A tensor whose last dimension (a linear layer's input features) is larger in
    ``network`` keeps the given columns and gets zeros for the new ones, so the widened
    network first computes exactly what the checkpoint's did, whatever the new inputs are
    (how Stable Diffusion's inpainting model was started from the text-to-image one:
    Rombach et al. 2022, extra input channels initialised to zero). Parameters the
    checkpoint lacks keep their fresh initialisation. Any other difference is an error.
    Returns one line per widened or new tensor, for the user.
    """
    own = network.state_dict()
    extra = sorted(set(weights) - set(own))
    if extra:
        raise CheckpointError(f"{source}: {extra[0]} is not a weight of this network ({len(extra)} such)")
    notes, merged = [], {}
    for name, mine in own.items():
        given = weights.get(name)
        if given is None:
            notes.append(f"{name}: new, freshly initialised")
            continue
        if given.shape == mine.shape:
            merged[name] = given
            continue
        if given.ndim != mine.ndim or given.shape[:-1] != mine.shape[:-1] or given.shape[-1] > mine.shape[-1]:
            raise CheckpointError(
                f"{source}: {name} is {tuple(given.shape)}, this network's is {tuple(mine.shape)}; "
                "only a layer's input features may grow"
            )
        wide = torch.zeros_like(mine)
        wide[..., : given.shape[-1]] = given
        merged[name] = wide
        notes.append(f"{name}: {given.shape[-1]} -> {mine.shape[-1]} input features, the new ones start at zero")
    network.load_state_dict(merged, strict=False)
    return notes


def _engine(
    network: torch.nn.Module, cfg: TrainConfig, world: distributed.World
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(trained, engine)``: the module whose parameters the optimizer steps, and what the
    training step calls.

    One process: both are the network. Several: the engine is the network under DDP (the
    same parameters), or with ``train.shard`` a copy of it fully sharded with FSDP
    (``torch.distributed.fsdp.fully_shard`` on every sub-module that holds parameters, then
    the root), whose parameters are DTensors; the network itself then only receives the final
    weights. ``train.compile`` compiles the engine.
    """
    trained = engine = network
    if world.size > 1 and cfg.shard:
        import copy

        from torch.distributed.fsdp import fully_shard

        def units(module: torch.nn.Module):  # the sub-modules that compute (a ModuleList only holds them)
            for child in module.children():
                if isinstance(child, (torch.nn.ModuleList, torch.nn.ModuleDict)):
                    yield from units(child)
                elif any(True for _ in child.parameters()):
                    yield child

        trained = copy.deepcopy(network)
        for unit in list(units(trained)):
            fully_shard(unit)
        engine = fully_shard(trained)
    elif world.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        engine = DistributedDataParallel(
            network, device_ids=[world.local_rank] if world.device.type == "cuda" else None
        )
    if cfg.compile:
        engine = torch.compile(engine)
    return trained, engine


def _full(value: Tensor) -> Tensor:
    """A sharded (DTensor) tensor gathered whole on every process; a plain tensor as it is."""
    return value.full_tensor() if isinstance(value, DTensor) else value


def _like(full: Tensor, param: Tensor) -> Tensor:
    """``full`` laid out like ``param``: this process's shard if ``param`` is sharded."""
    if isinstance(param, DTensor):
        return distribute_tensor(full.to(param.dtype), param.device_mesh, param.placements)
    return full


class _Ema:
    """The exponential moving average of a module's parameters and floating-point buffers
    (Polyak averaging: ``ema = decay * ema + (1 - decay) * weights``, started from the first
    weights), over plain or sharded tensors; ``count`` is how many updates it has seen."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.names = [name for name, _ in module.named_parameters()] + [name for name, _ in module.named_buffers()]
        self.tensors = [t.detach().clone() for t in self._live(module)]
        self.count = torch.zeros((), dtype=torch.long)

    @staticmethod
    def _live(module: torch.nn.Module) -> list[Tensor]:
        return [t.detach() for t in itertools.chain(module.parameters(), module.buffers())]

    def update(self, module: torch.nn.Module) -> None:
        live = self._live(module)
        if int(self.count) == 0:
            for mine, now in zip(self.tensors, live, strict=True):
                mine.copy_(now)
        else:
            for sharded in (False, True):  # one fused update per kind: sharded parameters, plain buffers
                pairs = [
                    (m, n)
                    for m, n in zip(self.tensors, live, strict=True)
                    if m.is_floating_point() and isinstance(m, DTensor) == sharded
                ]
                if pairs:
                    torch._foreach_lerp_([m for m, _ in pairs], [n for _, n in pairs], 1.0 - self.decay)
            for mine, now in zip(self.tensors, live, strict=True):
                if not mine.is_floating_point():
                    mine.copy_(now)
        self.count += 1

    def state(self, keys: set[str]) -> dict[str, Tensor]:
        """The average by name, whole, for the state-dict ``keys`` (non-persistent buffers are not saved)."""
        return {name: _full(t) for name, t in zip(self.names, self.tensors, strict=True) if name in keys}

    def load(self, state: dict[str, Tensor], count: Tensor) -> None:
        for i, name in enumerate(self.names):
            if name in state:
                self.tensors[i] = _like(state[name], self.tensors[i]).clone()
        self.count = count.clone().to(torch.long)


def _autocast(precision: str, device: torch.device) -> Any:
    """The forward pass's autocast context for ``train.precision`` (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _accumulate(
    objective: Objective,
    progress: Progress,
    trainer: Denoiser,
    engine: torch.nn.Module,
    batch: Data,
    drawn: Drawn,
    pieces: list[range],
    weights: dict[str, float],
    batch_size: int,
    world: distributed.World,
    autocast: Any,
    scaler: Any,
) -> dict[str, Tensor]:
    """Back-propagate this process's micro-batches of the step and return the global per-part losses.

    Each micro-batch's loss is weighted by its share of the global batch (times the number of
    processes, whose gradients are averaged), so the summed gradient is that of the mean loss
    over the whole batch: what one process computes in one go.
    """
    totals: dict[str, Tensor] = {}
    for k, rows in enumerate(pieces):
        share = len(rows) / batch_size
        index = torch.arange(rows.start, rows.stop)
        piece = batch.take(index).to(world.device)
        piece_drawn = drawn.take(slice(rows.start, rows.stop)).to(world.device)
        last = k == len(pieces) - 1
        with contextlib.nullcontext() if last else _no_sync(engine):
            with autocast():
                terms = objective.losses(trainer, piece, piece_drawn, progress)
            loss = sum(weights[name] * value for name, value in terms.items())
            scale = share * world.size
            if scale != 1.0:
                loss = loss * scale
            (loss if scaler is None else scaler.scale(loss)).backward()
        for name, value in terms.items():
            part = value.detach().float()
            totals[name] = totals.get(name, 0.0) + (part if share == 1.0 else part * share)
    names = list(totals)
    summed = distributed.all_sum(torch.stack([totals[n] for n in names]))
    return {name: summed[i] for i, name in enumerate(names)}


@contextlib.contextmanager
def _no_sync(engine: torch.nn.Module):
    """Gradients accumulate locally (a micro-batch before the last one): no all-reduce yet."""
    if hasattr(engine, "no_sync"):  # DDP
        with engine.no_sync():
            yield
    elif hasattr(engine, "set_requires_gradient_sync"):  # FSDP
        engine.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            engine.set_requires_gradient_sync(True)
    else:
        yield


def stages(recipe: Recipe) -> list[Recipe]:
    """The recipe's training stages, each as the recipe of a run of its own: the first trains
    with ``train``, each later one with its ``finetune`` entry (and no further stages).

    A later stage starts from the sampling (EMA) weights the stage before ends with, with a
    fresh optimizer and EMA, and draws its steps as a fresh run does: it computes exactly what
    ``diffusekit train --init <the stage before's checkpoint>`` with its settings computes. That
    is the usual pretrain-then-anneal recipe (a constant learning rate, then a cosine decay to a
    small one from the averaged weights), and how a fine-tuning objective follows pre-training.
    A stage that sets network parameters (``network`` in its table) has them in its recipe's
    ``network``: a stage may widen the network the stage before trained (:func:`widen_into`).
    """
    return [
        attrs.evolve(recipe, network=recipe.stage_network(cfg), train=attrs.evolve(cfg, network=None), finetune=[])
        for cfg in recipe.train_stages
    ]


def stage_file(out: Path, stage: int, count: int) -> Path:
    """Where stage ``stage`` (1-based) of ``count`` writes its checkpoint: the last at ``out``,
    each earlier one beside it as ``<stem>.stage<N><suffix>`` (kept: a finished stage's weights
    are what the next one starts from)."""
    return out if stage == count else out.with_name(f"{out.stem}.stage{stage}{out.suffix}")


def train(
    pipeline: Pipeline,
    data: Data | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    init: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
    metrics: str | Path | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``pipeline``'s network on ``data`` (default: the recipe's dataset).

    Writes a checkpoint to ``out`` every ``train.checkpoint_every`` steps and at the
    end; with ``resume`` it continues from the checkpoint at ``out``. An existing file
    at ``out`` is otherwise refused unless ``overwrite``. ``init`` starts a fresh run from
    another checkpoint's sampling weights (fine-tuning; see :func:`widen_into`). ``steps`` overrides
    ``train.steps`` (the total, counting resumed steps; at least 1). JSONL metrics go
    to ``metrics`` (default: next to ``out``); with ``out`` the file is cut back to the
    rows of the steps the run starts from (none for a fresh run).

    A recipe with ``finetune`` stages runs them in order (:func:`stages`), each with its own
    checkpoint (:func:`stage_file`) and metrics file, the last at ``out``; ``init`` then starts
    the first stage, ``steps`` sets every stage's length, and ``resume`` continues the latest
    stage that has a checkpoint. Metric rows of such a run carry their ``stage`` (1-based).

    Raises :class:`~diffusekit.errors.TrainingDiverged` at the first step whose loss or
    gradient norm is not finite, or when a checkpoint's tensors are not; the
    checkpoint at ``out`` then stays the last finite one.
    """
    runs = stages(pipeline.recipe)
    count = len(runs)
    out = Path(out) if out is not None else None
    metrics = Path(metrics) if metrics is not None else None
    if resume and overwrite:
        raise ConfigError("", "resume and overwrite exclude each other: continue the checkpoint or replace it")
    if resume and init is not None:
        raise ConfigError("", "resume and init exclude each other: a resumed run already has its weights")
    if resume and out is None:
        raise CheckpointError("nothing to resume: no checkpoint path given")
    if count == 1:
        start = None if init is None else _init_weights(init)
        pipeline = _stage_pipeline(pipeline, runs[0])
        return _train_stage(pipeline, data, out, resume, overwrite, start, steps, progress, metrics, callback, None)
    files = [stage_file(out, n, count) if out is not None else None for n in range(1, count + 1)]
    logs = [stage_file(metrics, n, count) if metrics is not None else None for n in range(1, count + 1)]
    if out is not None:
        _check_out(out)
    first = 0
    if resume:
        found = [i for i, f in enumerate(files) if f is not None and f.is_file()]
        if not found:
            raise CheckpointError(f"nothing to resume: no checkpoint at {out} or of its earlier stages ({files[0]})")
        first = found[-1]
        for i in found[:-1]:  # the stages the resumed one started from were trained as the recipe says
            differs = training_difference(load_checkpoint(files[i]).recipe, runs[i])
            if differs:
                raise CheckpointError(
                    f"{files[i]}: the checkpoint was trained with a different recipe ({differs} differs); cannot resume"
                )
    elif out is not None:
        for f, run in zip(files, runs, strict=True):
            if not overwrite:
                _refuse_existing(f, run.train)
        if distributed.world().main:
            for f in files[1:]:  # an earlier run's later stages: resuming must not take them for this run's
                f.unlink(missing_ok=True)
    data = load_data(pipeline) if data is None else data
    start = None if init is None else _init_weights(init)
    result, previous = None, pipeline
    for i in range(first, count):
        if i > first:
            start = _init_weights(files[i - 1]) if files[i - 1] is not None else _current_weights(previous, i)
        previous = _stage_pipeline(pipeline, runs[i])
        result = _train_stage(
            previous,
            data,
            files[i],
            resume and i == first,
            overwrite,
            start if not (resume and i == first) else None,
            steps,
            progress,
            logs[i],
            callback,
            (i + 1, count),
        )
    assert result is not None
    return result


def _stage_pipeline(pipeline: Pipeline, stage: Recipe) -> Pipeline:
    """``pipeline`` with one stage's recipe; with a network of its own, freshly built, where that
    stage's network differs from the one ``pipeline`` holds (its recipe's last stage's)."""
    if stage.network == pipeline.recipe.final_network:
        return attrs.evolve(pipeline, recipe=stage)
    from diffusekit.pipeline import build

    fresh = build(stage)
    denoiser = pipeline.denoiser
    if not isinstance(denoiser, Denoiser):
        raise ConfigError("network", "a stage that changes the network trains a recipe's own denoiser only")
    return attrs.evolve(pipeline, recipe=stage, denoiser=attrs.evolve(denoiser, network=fresh.network))


def _refuse_existing(out: Path, cfg: TrainConfig) -> None:
    """A CheckpointError if a run's checkpoint at ``out``, or one it kept, exists."""
    earlier = sorted(kept_checkpoints(out).values()) if cfg.keep_checkpoints else []
    existing = out if out.exists() or out.is_symlink() else (earlier[0] if earlier else None)
    if existing is not None:
        raise CheckpointError(f"{existing} already exists; continue it with --resume or replace it with --overwrite")


def _check_out(out: Path) -> None:
    if out.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{out}: checkpoints are safetensors files; use a .safetensors name")
    if out.is_dir():
        raise CheckpointError(f"{out} is a folder; name the checkpoint file")


def _init_weights(path: str | Path) -> tuple[str, dict[str, Tensor]]:
    """A checkpoint's sampling weights and how a run started from them names them."""
    source = load_checkpoint(path)
    return f"{Path(path).name} (step {source.step})", source.weights()


def _current_weights(pipeline: Pipeline, stage: int) -> tuple[str, dict[str, Tensor]]:
    state = {k: v.detach().clone() for k, v in pipeline.network.state_dict().items()}
    return f"stage {stage} (in memory)", state


def _train_stage(
    pipeline: Pipeline,
    data: Data | None,
    out: Path | None,
    resume: bool,
    overwrite: bool,
    init: tuple[str, dict[str, Tensor]] | None,
    steps: int | None,
    progress: bool,
    metrics: Path | None,
    callback: Callable[[dict[str, Any]], None] | None,
    stage: tuple[int, int] | None,
) -> TrainResult:
    """One run of :func:`train`: ``init`` is (a name, weights) to start from; ``stage`` is
    (this stage, the number of stages) when the recipe has several."""
    recipe = pipeline.recipe
    cfg = recipe.train
    total = _check_steps(cfg.steps, "train.steps") if steps is None else _check_steps(steps, "steps")
    recipe = attrs.evolve(recipe, train=attrs.evolve(cfg, steps=total))  # checkpoints record the run's own length
    if cfg.keep_checkpoints < 0:
        raise ConfigError("train.keep_checkpoints", f"must not be negative, got {cfg.keep_checkpoints}")
    if out is not None:
        _check_out(out)
        if resume and not out.is_file():
            raise CheckpointError(f"nothing to resume: no checkpoint at {out}")
        if not resume and not overwrite:
            _refuse_existing(out, cfg)
    if not isinstance(pipeline.denoiser, Denoiser):
        raise ConfigError("", "training needs the pipeline's own Denoiser (build the recipe, then train)")
    world = distributed.world()
    if world.size > cfg.batch_size:
        raise ConfigError("train.batch_size", f"{cfg.batch_size} is fewer than the {world.size} processes sharing it")
    device = world.device
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision", "fp16 needs a GPU (it trains with a gradient scaler); use bf16 on a CPU")
    objective = objective_of(recipe)
    network = pipeline.network.to(device)
    data = load_data(pipeline) if data is None else data
    check_data(recipe, data)
    if cfg.buckets and data.sizes is None:
        raise ConfigError("train.buckets", "draws batches by example size, but the data has no sizes (Data.sizes)")
    buckets = size_buckets(data, cfg.buckets)
    if metrics is None and out is not None:
        metrics = out.with_suffix(".metrics.jsonl")

    start = 0
    ckpt = None
    provenance: dict[str, str] = {}  # where the weights started, kept through resumes
    if init is not None:
        source, source_weights = init
        for note in widen_into(network, source_weights, source):
            if world.main:
                print(f"init: {note}", file=sys.stderr)
        provenance["diffusekit.init"] = source
    elif not resume:
        start_weights = objective.initial_weights(recipe)  # a student starts as its teacher
        if start_weights is not None:
            widen_into(network, start_weights, "the objective's initial weights")
    last_saved: int | None = None  # the step of the checkpoint at ``out`` written or resumed by this run
    if resume:
        assert out is not None
        ckpt = load_checkpoint(out)
        if not ckpt.group("model") or "diffusekit.optimizer" not in ckpt.metadata:
            raise CheckpointError(
                f"{out}: an exported checkpoint holds sampling weights only (no raw weights or optimizer state) "
                "and cannot be resumed; resume from the training checkpoint it was exported from"
            )
        differs = training_difference(ckpt.recipe, recipe)
        if differs:
            raise CheckpointError(
                f"{out}: the checkpoint was trained with a different recipe ({differs} differs); cannot resume"
            )
        start = ckpt.step
        planned = int(ckpt.metadata.get("diffusekit.total_steps", ckpt.recipe.train.steps))
        _check_schedule_length(recipe, total, planned, out)
        if start > total:
            raise CheckpointError(f"{out} is at step {start}, past the requested {total} steps")
        network.load_state_dict(ckpt.group("model"))
        last_saved = start
        if "diffusekit.init" in ckpt.metadata:
            provenance["diffusekit.init"] = ckpt.metadata["diffusekit.init"]
    trained, engine = _engine(network, cfg, world)
    optimizer = torch.optim.Adam(trained.parameters(), lr=cfg.lr)
    ema = _Ema(trained, cfg.ema_decay)
    if ckpt is not None:
        ema.load(ckpt.group("ema"), ckpt.tensors["ema_state.n_averaged"])
        _load_optimizer(optimizer, ckpt.group("optim"), ckpt.metadata["diffusekit.optimizer"])
    if out is not None and world.main:
        out.parent.mkdir(parents=True, exist_ok=True)
        # what a killed run left: partial writes, and metric rows of steps its checkpoint never reached
        remove_temporary_files(out)
        if metrics is not None:
            remove_temporary_files(metrics)
            truncate_metrics(metrics, start)
    if metrics is not None and world.main:
        metrics.parent.mkdir(parents=True, exist_ok=True)
    trainer = pipeline.denoiser if engine is network else attrs.evolve(pipeline.denoiser, network=engine)
    autocast = _autocast(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    # this process's rows of every batch, in micro-batches of at most train.micro_batch_size
    mine = distributed.share(cfg.batch_size, world)
    micro = cfg.micro_batch_size or len(mine)
    pieces = [range(a, min(a + micro, mine.stop)) for a in range(mine.start, mine.stop, micro)]
    weights = {name: part.loss_weight for name, part in recipe.parts.items()}

    def diverged(step: int, what: str) -> TrainingDiverged:
        if out is None:
            kept = ""
        elif last_saved is None:
            kept = f"; no checkpoint of this run was written to {out}"
        else:
            kept = f"; the last good checkpoint {out} (step {last_saved}) is kept"
        return TrainingDiverged(f"training diverged at step {step}: {what}{kept}; a lower train.lr often helps", step)

    def save(step: int) -> None:
        nonlocal last_saved
        if out is None:
            return
        # every process takes part: gathering sharded tensors is a collective
        opt_tensors, groups = _optimizer_tensors(optimizer)
        model = {k: _full(v) for k, v in trained.state_dict().items()}
        tensors = {f"model.{k}": v for k, v in model.items()}
        tensors.update({f"ema.{k}": v for k, v in ema.state(set(model)).items()})
        tensors["ema_state.n_averaged"] = ema.count
        tensors.update(opt_tensors)
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            more = f" and {len(bad) - 1} more tensors are" if len(bad) > 1 else " is"
            raise diverged(step, f"{bad[0]}{more} not finite")
        if not world.main:  # the processes hold the same weights: one writes them
            last_saved = step
            return
        if cfg.keep_checkpoints:
            if last_saved is None:
                # a fresh run (--overwrite) replaces the earlier run's kept checkpoints along with its latest one
                for path in kept_checkpoints(out).values():
                    path.unlink(missing_ok=True)
            elif last_saved != step and out.is_file():
                _keep_copy(out, last_saved)
        extra = {"diffusekit.optimizer": groups, "diffusekit.total_steps": str(total), **provenance}
        save_checkpoint(out, tensors, recipe, step=step, extra=extra)
        last_saved = step
        if cfg.keep_checkpoints:
            kept = kept_checkpoints(out)
            for old in sorted(kept)[: max(0, len(kept) - cfg.keep_checkpoints)]:
                kept[old].unlink(missing_ok=True)

    log = open(metrics, "a", encoding="utf-8") if metrics is not None and world.main else None
    bar = None
    if progress and world.main:
        from tqdm.auto import tqdm

        desc = "train" if stage is None else f"stage {stage[0]}/{stage[1]}"
        bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True)
    network.train()
    loss_value = float("nan")
    began = time.perf_counter()
    try:
        for step in range(start, total):
            generator = step_generator(draw_seed(recipe), step)
            lr = learning_rate(cfg, step, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = draw_rows(len(data), cfg.batch_size, generator, buckets)
            dropout_seed = int(torch.randint(2**62, (), generator=generator))
            batch = data.take(index)
            drawn = draw_batch(pipeline, batch, generator)  # the whole batch's draws, on every process
            optimizer.zero_grad(set_to_none=True)
            with torch.random.fork_rng(devices=[]):
                # network dropout: per process (process 0 draws what a single process would for its rows)
                torch.manual_seed(dropout_seed + world.rank)
                terms = _accumulate(
                    objective,
                    Progress(step, total),
                    trainer,
                    engine,
                    batch,
                    drawn,
                    pieces,
                    weights,
                    cfg.batch_size,
                    world,
                    autocast,
                    scaler,
                )
            loss = sum(recipe.parts[name].loss_weight * value for name, value in terms.items())
            if scaler is not None:
                scaler.unscale_(optimizer)
            grad_norm = _full(torch.nn.utils.clip_grad_norm_(trained.parameters(), cfg.grad_clip))
            done = step + 1
            # checked before the optimizer step, so the weights stay those of the last finite step
            loss_value, grad_value = loss.item(), float(grad_norm)
            if scaler is not None and math.isfinite(loss_value) and not math.isfinite(grad_value):
                scaler.update()  # an fp16 overflow: the scaler lowers its scale and the step is skipped
                continue
            if not (math.isfinite(loss_value) and math.isfinite(grad_value)):
                bad = (
                    f"the loss is {loss_value}"
                    if not math.isfinite(loss_value)
                    else f"the gradient norm is {grad_value}"
                )
                raise diverged(done, bad)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            ema.update(trained)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}")
            if done % cfg.log_every == 0 or done == total:
                record = {
                    "step": done,
                    "loss": loss_value,
                    "grad_norm": grad_value,
                    "lr": lr,
                    "elapsed_s": round(time.perf_counter() - began, 3),
                }
                record.update({f"loss.{name}": v.item() for name, v in terms.items()})
                if stage is not None:
                    record["stage"] = stage[0]
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if callback is not None:
                    callback(record)
            if done % cfg.checkpoint_every == 0 and done != total:
                save(done)
    finally:
        network.eval()
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    save(total)
    # Sample with the EMA weights from here on.
    network.load_state_dict(ema.state(set(network.state_dict())))
    return TrainResult(total, loss_value, out)
