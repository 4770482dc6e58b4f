"""Benchmark 7: training on two processes, bf16 autocast and torch.compile on this CPU.

Every run is ``diffusekit train`` (the ``gaussian:digits`` recipe, batch 128, with ``--set``
overrides: no learning-rate warm-up, a metrics row every step, no checkpoint before the end)
in a fresh process, so start-up is excluded by timing only the steady state: throughput =
samples of steps ``warmup+1 .. steps`` / (``elapsed_s`` at the last step - at step ``warmup``),
read from the run's metrics file (the first process's, under torchrun).

1. Scale-out: the same recipe as one process with one thread, as two processes with one
   thread each (``torchrun --standalone --nproc_per_node 2``, DDP over gloo), as one process
   with two threads (the fair single-process use of two cores), and as two independent
   single-thread processes on half the batch each, started together (no communication: the
   most two processes can get out of this machine; their throughputs are added). The
   layouts run interleaved (1, 2, 1x2, 2 independent, 1, 2, ...) because the machine is
   shared and noisy; ratios are taken within a round, reported as median and range.
2. Where a step's time goes, in this process on one thread: forward + backward on the whole
   batch and on half of it (each process's share under two processes), and the work every
   process repeats whatever the number of processes (drawing the whole batch's data, times
   and noise; gradient clipping; the Adam step; the EMA update). With these, the speed-up
   two processes could reach without any communication or contention is
   (fb(B) + repeated) / (fb(B/2) + repeated).
3. Precision and compilation, one process, one thread: bf16 autocast against fp32 (a layout
   of every round) and ``train.compile = true`` (one round beside an eager run: compiling
   takes a minute; a fresh Inductor cache, so the compile is cold), compared with the fp32
   eager run of their round on throughput and on the loss of every step (the runs draw the
   same batches, times and noise). Compile time = first step of the compiled run - that of
   the eager run.

The rest of the machine must be idle: before every round the script waits until other
processes keep fewer than ``QUIET`` cores busy (from ``/proc/stat`` less this process and its
children), and a round during which they used more is measured again (``--patience`` times at
most). The comment line reports how busy the rest of the machine was.

Run: cd benchmarks && ../.venv/bin/python scale_out.py [--steps 50] [--repeats 5] [--set KEY=VALUE ...]
     [--scaling-only]  (``--set`` changes the recipe of every run, e.g. ``train.batch_size=256``)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from common import environment, parse_settings

BIN = Path(sys.executable).parent
RECIPE = "gaussian:digits"
TIMING = {"train.warmup_steps": 0, "train.log_every": 1, "train.checkpoint_every": 10**9}
"""Overrides of every run: they change what is logged and when the learning rate is full,
not what a step computes."""
QUIET = 0.15
"""The most cores other processes may keep busy during a kept round."""


@dataclass(frozen=True)
class Layout:
    """How a run is spread over the machine."""

    name: str
    processes: int = 1
    threads: int = 1
    independent: bool = False  # several single processes, each on 1/processes of the batch
    settings: tuple[tuple[str, object], ...] = ()  # recipe overrides of this layout


ONE = Layout("1 process × 1 thread")
DDP = Layout("2 processes × 1 thread (torchrun, DDP)", processes=2)
TWO_THREADS = Layout("1 process × 2 threads", threads=2)
INDEPENDENT = Layout("2 independent processes × 1 thread, half batch each", processes=2, independent=True)
BF16 = Layout("1 process × 1 thread, bf16", settings=(("train.precision", "bf16"),))
COMPILED = Layout("1 process × 1 thread, compiled", settings=(("train.compile", True),))

SCALING = (ONE, DDP, TWO_THREADS, INDEPENDENT)


# --- running training -------------------------------------------------------------------------


def train_command(layout: Layout, settings: dict[str, object], steps: int, out: Path) -> list[str]:
    cli = [str(BIN / "diffusekit")]
    if layout.processes > 1 and not layout.independent:
        cli = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={layout.processes}", *cli, "--"]
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    return [*cli, "train", RECIPE, "--steps", str(steps), *sets, "--out", str(out), "--no-progress"]


def run(layout: Layout, settings: dict[str, object], steps: int, workdir: Path) -> list[list[dict]]:
    """Train once in ``layout``; the metrics rows of every process that writes them."""
    settings = {**TIMING, **settings, **dict(layout.settings)}
    copies = 1
    if layout.independent:
        copies = layout.processes
        settings["train.batch_size"] = settings["train.batch_size"] // layout.processes
    # a cold torch.compile every time: no kernels cached by an earlier run
    env = {**os.environ, "OMP_NUM_THREADS": str(layout.threads), "TORCHINDUCTOR_CACHE_DIR": str(workdir / "inductor")}
    outs = [workdir / f"run{k}.safetensors" for k in range(copies)]
    procs = [
        subprocess.Popen(
            train_command(layout, settings, steps, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for out in outs
    ]
    for proc in procs:
        output = proc.communicate()[0].decode(errors="replace")
        if proc.returncode:
            raise SystemExit(f"{layout.name} failed:\n{output}")
    return [[json.loads(line) for line in out.with_suffix(".metrics.jsonl").read_text().splitlines()] for out in outs]


def steady_rate(rows: list[dict], batch_size: int, warmup: int) -> float:
    """Samples per second over the steps after ``warmup``."""
    first, last = rows[warmup - 1], rows[-1]
    return batch_size * (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy since boot (``/proc/stat``)."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and its finished children (the training runs)."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


@dataclass(frozen=True)
class Sample:
    """One run: its steady throughput, the loss of every step, the time to its first step,
    and how many cores other processes kept busy meanwhile."""

    rate: float
    losses: list[float]
    first_step_s: float
    others: float


class OthersMeter:
    """The cores that processes other than this one and its children keep busy, since ``start``."""

    def start(self) -> None:
        self.wall, self.busy, self.own = time.perf_counter(), busy_cpu_s(), own_cpu_s()

    def cores(self) -> float:
        others = busy_cpu_s() - self.busy - (own_cpu_s() - self.own)
        return max(0.0, others / (time.perf_counter() - self.wall))


def measure(layout: Layout, settings: dict[str, object], steps: int, warmup: int) -> Sample:
    meter = OthersMeter()
    meter.start()
    with tempfile.TemporaryDirectory() as tmp:
        runs = run(layout, settings, steps, Path(tmp))
    per_process = int(settings["train.batch_size"]) // len(runs)
    return Sample(
        rate=sum(steady_rate(rows, per_process, warmup) for rows in runs),
        losses=[row["loss"] for row in runs[0]],
        first_step_s=runs[0][0]["elapsed_s"],
        others=meter.cores(),
    )


def wait_for_quiet(limit_s: float = 300.0) -> None:
    """Wait (at most ``limit_s``) until other processes use less than :data:`QUIET` cores."""
    meter = OthersMeter()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        meter.start()
        time.sleep(3.0)
        if meter.cores() < QUIET:
            return


@dataclass
class Rounds:
    """The kept runs of each layout, one per round, and how many rounds were measured in all."""

    runs: dict[Layout, list[Sample]]
    measured: int = 0

    def ratios(self, layout: Layout, base: Layout) -> list[float]:
        return [a.rate / b.rate for a, b in zip(self.runs[layout], self.runs[base], strict=True)]

    def others(self) -> list[float]:
        return [sample.others for samples in self.runs.values() for sample in samples]


def interleave(
    layouts: tuple[Layout, ...], settings: dict[str, object], steps: int, warmup: int, repeats: int, patience: int
) -> Rounds:
    """``repeats`` rounds of one run of each layout in turn. A round during which other processes
    used more than :data:`QUIET` cores is measured again, up to ``patience`` times in all."""
    rounds = Rounds({layout: [] for layout in layouts})
    while len(rounds.runs[layouts[0]]) < repeats:
        wait_for_quiet()
        this = {layout: measure(layout, settings, steps, warmup) for layout in layouts}
        rounds.measured += 1
        noisy = max(sample.others for sample in this.values()) > QUIET
        rates = ", ".join(f"{sample.rate:.0f} ({sample.others:.2f})" for sample in this.values())
        print(f"round {rounds.measured}, samples/s (cores used by others): {rates}", file=sys.stderr)
        if noisy and rounds.measured - len(rounds.runs[layouts[0]]) <= patience:
            continue
        for layout, sample in this.items():
            rounds.runs[layout].append(sample)
    return rounds


# --- in-process cost of a step's parts --------------------------------------------------------


def timed(fn: Callable[[], object], calls: int = 5) -> float:
    """Seconds per call of ``fn``."""
    began = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - began) / calls


FB_WHOLE, FB_HALF = "forward + backward, whole batch", "forward + backward, half batch"
DRAW_WHOLE, DRAW_HALF = "data, times and noise, whole batch", "data, times and noise, half batch"


def step_parts(settings: dict[str, object], repeats: int) -> dict[str, float]:
    """Median milliseconds of each part of a training step, one thread, parts interleaved."""
    from diffusekit import build
    from diffusekit.recipe import apply_overrides
    from diffusekit.training import batch_losses, draw_batch, load_data, step_generator
    from diffusekit_gaussian.digits import DigitsMethod
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.set_num_threads(1)
    pipeline = build(apply_overrides(DigitsMethod().recipe(), settings))
    network, cfg = pipeline.network, pipeline.recipe.train
    data = load_data(pipeline)
    optimizer = torch.optim.Adam(network.parameters(), lr=cfg.lr)
    ema = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    generator = step_generator(pipeline.recipe.seed, 0)
    network.train()

    def draws(rows: int) -> Callable[[], object]:
        def draw():
            batch = data.take(torch.randint(len(data), (rows,), generator=generator))
            return batch, draw_batch(pipeline, batch, generator)

        return draw

    def forward_backward(rows: int) -> Callable[[], object]:
        batch, drawn = draws(rows)()
        return lambda: batch_losses(pipeline.denoiser, batch, drawn)["x"].backward()

    parts = {
        FB_WHOLE: forward_backward(cfg.batch_size),
        FB_HALF: forward_backward(cfg.batch_size // 2),
        DRAW_WHOLE: draws(cfg.batch_size),
        DRAW_HALF: draws(cfg.batch_size // 2),
        "gradient clipping": lambda: torch.nn.utils.clip_grad_norm_(network.parameters(), cfg.grad_clip),
        "Adam step": optimizer.step,
        "EMA update": lambda: ema.update_parameters(network),
    }
    for fn in parts.values():  # warm-up (and gradients for the optimizer to use)
        fn()
    samples: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):
        for name, fn in parts.items():
            samples[name].append(timed(fn) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


# --- tables ----------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def scaling_table(rounds: Rounds, batch: int) -> str:
    lines = [
        "| layout | samples/s (median) | ms/step | vs 1 process × 1 thread: median (range) | vs 1 process × 2 threads |",
        "|---|---:|---:|---:|---:|",
    ]
    for layout in (ONE, DDP, TWO_THREADS, INDEPENDENT):
        rate = statistics.median(sample.rate for sample in rounds.runs[layout])
        vs_one = "1" if layout is ONE else spread(rounds.ratios(layout, ONE))
        vs_two = "1" if layout is TWO_THREADS else spread(rounds.ratios(layout, TWO_THREADS))
        lines.append(f"| {layout.name} | {rate:.0f} | {batch / rate * 1e3:.1f} | {vs_one} | {vs_two} |")
    return "\n".join(lines)


def parts_table(parts: dict[str, float], batch: int) -> str:
    repeated = sum(value for name, value in parts.items() if name not in (FB_WHOLE, FB_HALF, DRAW_HALF))
    one = parts[FB_WHOLE] + repeated
    two = parts[FB_HALF] + repeated  # every process draws the whole batch's data, times and noise
    lines = [f"| part of a step (batch {batch}, 1 thread) | ms |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in parts.items()]
    lines += [
        f"| 1 process: forward + backward, whole batch's draws, clipping, Adam, EMA | {one:.1f} |",
        f"| each of 2 processes, without communication or contention | {two:.1f} |",
        f"| **speed-up bound of 2 processes** | **{one / two:.2f}** |",
        f"| lost to drawing the whole batch (not half) on every process | {parts[DRAW_WHOLE] - parts[DRAW_HALF]:.2f} |",
    ]
    return "\n".join(lines)


def max_relative_difference(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def variant_row(name: str, rounds: Rounds, layout: Layout, base: Layout) -> str:
    """``layout`` against the fp32 eager run of the same round: throughput, and the loss of every step."""
    runs, reference = rounds.runs[layout], rounds.runs[base][0]
    rate = statistics.median(sample.rate for sample in runs)
    first = statistics.median(sample.first_step_s for sample in runs)
    versus = "1" if layout is base else spread(rounds.ratios(layout, base))
    difference = "" if layout is base else f"{max_relative_difference(runs[0].losses, reference.losses):.2%}"
    return f"| {name} | {rate:.0f} | {versus} | {first:.2f} | {runs[0].losses[-1]:.4f} | {difference} |"


def variant_table(rounds: Rounds, compiled: Rounds | None) -> str:
    lines = [
        "| variant (1 process × 1 thread) | samples/s | vs fp32 eager: median (range) | first step (s) "
        "| final loss | max relative loss difference to fp32 eager |",
        "|---|---:|---:|---:|---:|---:|",
        variant_row("fp32, eager", rounds, ONE, ONE),
        variant_row("bf16 autocast", rounds, BF16, ONE),
    ]
    if compiled is not None:
        lines.append(variant_row("fp32, torch.compile (cold cache)", compiled, COMPILED, ONE))
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="steps of every run")
    parser.add_argument("--warmup", type=int, default=10, help="steps of a run left out of its timing")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--patience", type=int, default=5, help="noisy rounds to measure again, at most")
    parser.add_argument("--scaling-only", action="store_true", help="no bf16 and torch.compile runs")
    args = parser.parse_args()
    settings = {"train.batch_size": 128, **parse_settings(args.sets)}
    began = time.perf_counter()
    load_before = os.getloadavg()[0]

    layouts = SCALING if args.scaling_only else (*SCALING, BF16)
    rounds = interleave(layouts, settings, args.steps, args.warmup, args.repeats, args.patience)
    compiled = None
    if not args.scaling_only:  # once, beside an eager run: compiling takes a minute or more
        compiled = interleave((COMPILED, ONE), settings, args.steps, args.warmup, 1, args.patience)
    wait_for_quiet()
    parts = step_parts(settings, args.repeats)

    others = rounds.others() + (compiled.others() if compiled else [])
    measured = rounds.measured + (compiled.measured if compiled else 0)
    kept = args.repeats + (1 if compiled else 0)
    overrides = ", ".join(f"{k}={v}" for k, v in {**settings, **TIMING}.items())
    print(
        f"<!-- {environment()}; {RECIPE} with {overrides}; {args.steps} steps, timed after {args.warmup}; "
        f"{kept} of {measured} interleaved rounds kept; load average {load_before:.2f} before; other processes "
        f"used {statistics.median(others):.2f} cores during the median run, {max(others):.2f} at most; "
        f"{time.perf_counter() - began:.0f} s -->\n"
    )
    print(scaling_table(rounds, int(settings["train.batch_size"])) + "\n")
    print(parts_table(parts, int(settings["train.batch_size"])) + "\n")
    if not args.scaling_only:
        print(variant_table(rounds, compiled))


if __name__ == "__main__":
    main()
