r"""The core training loop.

For each part :math:`p` with schedule :math:`q_p` and parameterization :math:`P_p` the
loss is the denoising objective

.. math:: L = \sum_p w_p\, \mathbb E_{x_0, t_p, x_{t_p} \sim q_p}\, \ell_p\big(f_\theta(x_t, t), x_0\big),

with :math:`\ell_p` the parameterization's per-element loss (squared error to its
regression target for Gaussian parts) and per-part times drawn independently
(``time_dims`` leading dimensions each get their own time: per sample, per frame,
per token).

Every step draws its batch, times, noise, condition dropout and network dropout from
generators seeded by ``(recipe.seed, step)`` alone, so a run resumed from a checkpoint
continues exactly as the uninterrupted run would have (same weights, bit for bit).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from diffusekit.checkpoint import load_checkpoint, save_checkpoint
from diffusekit.data import Data
from diffusekit.errors import CheckpointError
from diffusekit.pipeline import Pipeline
from diffusekit.plugins import get_registry
from diffusekit.recipe import TrainConfig, dumps_json, instantiate

T_MIN = 1e-4
"""Smallest training time: some targets (velocity under VP) are singular at t = 0."""


@attrs.frozen
class TrainResult:
    step: int
    loss: float
    checkpoint: Path | None


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


def load_data(pipeline: Pipeline) -> Data:
    recipe = pipeline.recipe
    if recipe.dataset is None:
        raise CheckpointError("the recipe names no dataset to train on (set [dataset])")
    return instantiate(get_registry(), "dataset", recipe.dataset, "dataset").load()


def loss_terms(pipeline: Pipeline, batch: Data, generator: torch.Generator) -> dict[str, Tensor]:
    """The per-part mean losses of one batch (before the per-part weights)."""
    recipe, denoiser = pipeline.recipe, pipeline.denoiser
    cfg = recipe.train
    condition = batch.condition
    if condition is not None and cfg.condition_dropout > 0:
        condition = condition.dropout(cfg.condition_dropout, generator)
    times, corrupted = {}, {}
    for name, x0 in batch.parts.items():
        spec = recipe.parts[name]
        times[name] = sample_times(cfg, tuple(x0.shape[: spec.time_dims]), generator)
        corrupted[name] = denoiser.schedules[name].corrupt(x0, times[name], generator)
    prepared = denoiser.prepare({n: c.x_t for n, c in corrupted.items()}, times)
    raw = denoiser.run_network(prepared, condition)
    return {
        name: denoiser.parameterizations[name]
        .loss(raw[name], prepared[name], batch.parts[name], corrupted[name])
        .mean()
        for name in batch.parts
    }


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], str]:
    state = optimizer.state_dict()
    tensors = {
        f"optim.{index}.{key}": value if isinstance(value, Tensor) else torch.tensor(value)
        for index, entry in state["state"].items()
        for key, value in entry.items()
    }
    return tensors, json.dumps(state["param_groups"])


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], groups: str) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(groups)})


def train(
    pipeline: Pipeline,
    data: Data | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    steps: int | None = None,
    progress: bool = True,
    metrics: str | Path | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``pipeline``'s network on ``data`` (default: the recipe's dataset).

    Writes a checkpoint to ``out`` every ``train.checkpoint_every`` steps and at the
    end; with ``resume`` it continues from the checkpoint at ``out``. ``steps``
    overrides ``train.steps`` (the total, counting resumed steps). JSONL metrics go to
    ``metrics`` (default: next to ``out``).
    """
    recipe = pipeline.recipe
    cfg = recipe.train
    total = cfg.steps if steps is None else steps
    network = pipeline.network
    data = load_data(pipeline) if data is None else data
    out = Path(out) if out is not None else None
    if metrics is None and out is not None:
        metrics = out.with_suffix(".metrics.jsonl")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    if metrics is not None:
        Path(metrics).parent.mkdir(parents=True, exist_ok=True)

    optimizer = torch.optim.Adam(network.parameters(), lr=cfg.lr)
    ema = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    start = 0
    if resume:
        if out is None or not out.is_file():
            raise CheckpointError(f"nothing to resume: no checkpoint at {out}")
        ckpt = load_checkpoint(out)
        if dumps_json(ckpt.recipe) != dumps_json(recipe):
            raise CheckpointError(f"{out}: the checkpoint was trained with a different recipe; cannot resume")
        network.load_state_dict(ckpt.group("model"))
        ema.module.load_state_dict(ckpt.group("ema"))
        ema.n_averaged.copy_(ckpt.tensors["ema_state.n_averaged"])
        _load_optimizer(optimizer, ckpt.group("optim"), ckpt.metadata["diffusekit.optimizer"])
        start = ckpt.step
        if start > total:
            raise CheckpointError(f"{out} is at step {start}, past the requested {total} steps")

    def save(step: int) -> None:
        if out is None:
            return
        opt_tensors, groups = _optimizer_tensors(optimizer)
        tensors = {f"model.{k}": v for k, v in network.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
        tensors["ema_state.n_averaged"] = ema.n_averaged
        tensors.update(opt_tensors)
        save_checkpoint(out, tensors, recipe, step=step, extra={"diffusekit.optimizer": groups})

    log = open(metrics, "a", encoding="utf-8") if metrics is not None else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
    network.train()
    loss_value = float("nan")
    began = time.perf_counter()
    try:
        for step in range(start, total):
            generator = step_generator(recipe.seed, step)
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = torch.randint(len(data), (cfg.batch_size,), generator=generator)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**62, (), generator=generator)))  # network dropout
                terms = loss_terms(pipeline, data.take(index), generator)
                loss = sum(recipe.parts[name].loss_weight * value for name, value in terms.items())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(network.parameters(), cfg.grad_clip)
            optimizer.step()
            ema.update_parameters(network)
            loss_value = loss.item()
            done = step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}")
            if done % cfg.log_every == 0 or done == total:
                record = {
                    "step": done,
                    "loss": loss_value,
                    "grad_norm": float(grad_norm),
                    "lr": lr,
                    "elapsed_s": round(time.perf_counter() - began, 3),
                }
                record.update({f"loss.{name}": v.item() for name, v in terms.items()})
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
    network.load_state_dict(ema.module.state_dict())
    return TrainResult(total, loss_value, out)
