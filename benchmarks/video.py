"""Video benchmarks (the ``video`` plugin): rollout cost with and without the KV cache, physics
fidelity of prediction and image-to-video against two baselines, long-rollout stability, and
one set of weights doing four tasks.

Usage (from ``benchmarks/``)::

    OMP_NUM_THREADS=1 ../.venv/bin/python video.py cost       # 1: the causal video:moving-digits model
    OMP_NUM_THREADS=1 ../.venv/bin/python video.py rollout --batch 1 --length 32  # 1: one whole rollout
    OMP_NUM_THREADS=1 ../.venv/bin/python video.py fidelity   # 2: video:bouncing
    OMP_NUM_THREADS=1 ../.venv/bin/python video.py stability  # 3: both, 256 frames
    OMP_NUM_THREADS=1 ../.venv/bin/python video.py tasks      # 4: video:bouncing

Each uses the method's shipped weights, or ``--bouncing``/``--digits CHECKPOINT``. Ground truth
comes from the plugin's simulator on seeds the training data never used.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import attrs
import diffusekit as dk
import numpy as np
import torch
from diffusekit_gaussian.history import HistoryGuidance
from diffusekit_video import scenes, tracking
from diffusekit_video.methods import TRUTH_SEED
from diffusekit_video.rollout import CachedFrames, rollout, with_frames

SEED = 7  # the benchmark's simulations: seed TRUTH_SEED + SEED, unlike the method's default outputs


def header(what: str) -> None:
    print(
        f"<!-- {platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}; {what} -->",
        flush=True,
    )


def pipeline(path: Path | None, method: str, scale: float = 2.0) -> dk.Pipeline:
    """The method's pipeline with history guidance of ``scale`` (the methods' default is 2), also
    for a checkpoint whose recipe has no guidance."""
    pipe = dk.pretrained(method) if path is None else dk.load(path)
    pipe.network.eval()
    return attrs.evolve(pipe, guidance=HistoryGuidance(scale))


# --- 1. rollout cost --------------------------------------------------------------------------


def frame_cost(pipe: dk.Pipeline, length: int, *, cached: bool, batch: int, repeats: int) -> float:
    """Seconds to generate frame ``length`` (all denoising steps) after ``length - 1`` finished
    frames: with the cache, the new frame alone attends to the cached keys and values; without,
    the network recomputes all ``length`` frames at every step."""
    module = pipe.network
    past = torch.randn(batch, length - 1, 1, 32, 32).clamp(-1, 1)
    best = float("inf")
    with torch.no_grad():
        cache = module.cache_frames(past) if cached else None  # built once per rollout; not per frame
        for r in range(repeats):
            start = time.perf_counter()
            if cached:
                with_frames(pipe, 1, CachedFrames(module, cache), batch=batch).sample(batch, seed=r)
            else:
                known = torch.zeros(batch, length, dtype=torch.bool)
                known[:, :-1] = True
                given = torch.cat([past, torch.zeros(batch, 1, 1, 32, 32)], 1)
                with_frames(pipe, length).sample(given=given, known=known, seed=r)
            best = min(best, time.perf_counter() - start)
    return best


def bench_cost(args) -> None:
    pipe = pipeline(args.digits, "video:moving-digits")
    spec = pipe.network.spec
    steps = pipe.grid.steps
    header(f"video:moving-digits, {steps} DDIM steps per frame, batch {args.batch}, best of {args.repeats}")
    print(
        "| rollout length L | cached s/frame | uncached s/frame | speed-up | cached attention GFLOP/frame | uncached attention GFLOP/frame |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    lengths = (16, 32, 64, 128)
    cached = {}
    frame_cost(pipe, 16, cached=True, batch=args.batch, repeats=1)  # warm-up: first-call allocations, not timed
    for length in lengths:
        c = frame_cost(pipe, length, cached=True, batch=args.batch, repeats=args.repeats)
        if args.cached_only:  # the flatness alone, without the minutes of uncached recompute
            cached[length] = c
            print(f"| {length} | {c:.3f} | - | - | - | - |", flush=True)
            continue
        u = frame_cost(pipe, length, cached=False, batch=args.batch, repeats=args.repeats)
        cached[length] = c
        window = min(length, spec.frames)
        flops_c = steps * args.batch * spec.attention_flops(1, window) / 1e9
        flops_u = steps * args.batch * spec.attention_flops(length, length) / 1e9
        print(f"| {length} | {c:.3f} | {u:.3f} | {u / c:.1f}x | {flops_c:.3f} | {flops_u:.3f} |", flush=True)
    spread = max(cached.values()) / min(cached.values()) - 1
    print(f"\ncached cost per frame varies by {100 * spread:.0f}% from 16 to 128 frames (max/min - 1)")


def bench_rollout(args) -> None:
    """A whole rollout: 4 given frames, extended to ``--length`` frames, cached vs recomputed."""
    pipe = pipeline(args.digits, "video:moving-digits")
    header(f"video:moving-digits, {pipe.grid.steps} DDIM steps per frame, batch {args.batch}")
    context = scenes.MovingDigits(count=args.batch, frames=4, seed=TRUTH_SEED + SEED, split="test").load().parts["x"]
    times = {}
    for cache in (True, False):
        start = time.perf_counter()
        rollout(pipe, args.length, context=context, cache=cache, seed=0)
        times[cache] = time.perf_counter() - start
    print(
        f"whole rollout to {args.length} frames from 4 given: cached {times[True]:.1f} s, recomputed "
        f"{times[False]:.1f} s ({times[False] / times[True]:.1f}x)"
    )


# --- 2. physics fidelity ----------------------------------------------------------------------


def truth(num: int, frames: int) -> scenes.BallClips:
    return scenes.BouncingBalls(count=num, frames=frames, seed=TRUTH_SEED + SEED).generate()


def error_by_horizon(frames: torch.Tensor, clips: scenes.BallClips, given: int) -> np.ndarray:
    """Mean tracking error (px) at each horizon 1 .. F - given, over clips."""
    errors = tracking.position_error(frames[:, given:], clips.positions[:, given:], value_range=(-1.0, 1.0))
    return errors.mean(0)


def baselines(clips: scenes.BallClips, given: int) -> dict[str, torch.Tensor]:
    """Copy the last given frame; extrapolate the tracked balls of the last two given frames at
    constant velocity (no walls, no collisions), rendered like the data."""
    frames = clips.frames * 2 - 1
    n, f = frames.shape[:2]
    copy = frames[:, given - 1 : given].expand(-1, f, -1, -1, -1).clone()
    out = {"copy last frame": torch.cat([frames[:, :given], copy[:, given:]], 1)}
    if given >= 2:
        k = clips.positions.shape[2]
        future = np.full((n, f - given, k, 2), np.nan)
        for i in range(n):
            last = tracking.find_blobs(clips.frames[i, given - 1, 0].numpy())
            before = tracking.find_blobs(clips.frames[i, given - 2, 0].numpy())
            velocity = np.zeros_like(last)
            if len(last) and len(before):
                pairs = tracking.match(last, before)
                velocity[pairs.found_index] = last[pairs.found_index] - before[pairs.truth_index]
            for h in range(1, f - given + 1):
                future[i, h - 1, : len(last)] = last + h * velocity
        rendered = scenes.render(future, clips.radius, 32) * 2 - 1
        out["constant velocity"] = torch.cat([frames[:, :given], rendered], 1)
    return out


def bouncing(args) -> tuple[dk.Pipeline, int, scenes.BallClips, torch.Tensor]:
    """The bouncing pipeline, its clip length, and ``--num`` simulator clips (with states, and as frames in [-1, 1])."""
    pipe = pipeline(args.bouncing, "video:bouncing")
    frames = pipe.recipe.parts["x"].shape[0]
    clips = truth(args.num, frames)
    return pipe, frames, clips, clips.frames * 2 - 1


def bench_fidelity(args) -> None:
    pipe, frames, clips, real = bouncing(args)
    header(f"video:bouncing, {args.num} clips of {frames} frames, simulator seed {TRUTH_SEED + SEED}")
    floor = tracking.position_error(real, clips.positions, value_range=(-1.0, 1.0)).mean()
    print(f"tracker error on the simulator's own frames: {floor:.2f} px\n")
    for task, given in (("prediction (4 given)", 4), ("image-to-video (1 given)", 1)):
        rows = {}
        for scale in (1.0, 2.0):
            guided = attrs.evolve(pipe, guidance=HistoryGuidance(scale))
            generated = rollout(guided, frames, context=real[:, :given], seed=0)
            rows[f"video:bouncing, history guidance w = {scale:g}"] = error_by_horizon(generated, clips, given)
        for name, video in baselines(clips, given).items():
            rows[name] = error_by_horizon(video, clips, given)
        horizons = list(range(1, frames - given + 1))
        shown = [h for h in horizons if h in (1, 2, 4, 8, 12) or h == horizons[-1]]
        print(f"**{task}**: mean tracking error (px) at horizon h\n")
        print("| | " + " | ".join(f"h={h}" for h in shown) + " | mean |")
        print("|---|" + "---:|" * (len(shown) + 1))
        for name, err in rows.items():
            print(f"| {name} | " + " | ".join(f"{err[h - 1]:.2f}" for h in shown) + f" | {err.mean():.2f} |")
        for name, model in rows.items():
            if name.startswith("video:"):
                beaten = all((model < err).all() for other, err in rows.items() if not other.startswith("video:"))
                print(f"\n{name}: below every baseline at every horizon: {beaten}", flush=True)
        print()


# --- 3. long-rollout stability ----------------------------------------------------------------


def summary(video: torch.Tensor, window: int) -> tuple[list[float], list[float]]:
    """Per window of frames: the mean object count and the mean brightness (in [0, 1])."""
    counts = tracking.count_objects(video, value_range=(-1.0, 1.0)).astype(float)  # (B, F)
    bright = ((video + 1) / 2).mean(dim=(2, 3, 4)).numpy()
    f = video.shape[1]
    return (
        [float(counts[:, s : s + window].mean()) for s in range(0, f, window)],
        [float(bright[:, s : s + window].mean()) for s in range(0, f, window)],
    )


def bench_stability(args) -> None:
    header(f"{args.num} videos of {args.length} frames per model")
    for method, path, data in (
        ("video:bouncing", args.bouncing, lambda n, f: scenes.BouncingBalls(count=n, frames=f, seed=TRUTH_SEED + SEED)),
        (
            "video:moving-digits",
            args.digits,
            lambda n, f: scenes.MovingDigits(count=n, frames=f, seed=TRUTH_SEED + SEED, split="test"),
        ),
    ):
        pipe = pipeline(path, method)
        start = time.perf_counter()
        video = rollout(pipe, args.length, num=args.num, seed=0).clamp(-1, 1)
        elapsed = time.perf_counter() - start
        real = data(args.num, args.length).load().parts["x"]
        counts, bright = summary(video, 32)
        real_counts, real_bright = summary(real, 32)
        print(f"\n**{method}** ({elapsed:.0f} s for {args.num} × {args.length} frames)\n")
        print("| frames | " + " | ".join(f"{32 * i}–{32 * i + 31}" for i in range(len(counts))) + " |")
        print("|---|" + "---:|" * len(counts))
        print("| objects found, generated | " + " | ".join(f"{c:.2f}" for c in counts) + " |")
        print("| objects found, simulator | " + " | ".join(f"{c:.2f}" for c in real_counts) + " |")
        print("| brightness, generated | " + " | ".join(f"{b:.3f}" for b in bright) + " |")
        print("| brightness, simulator | " + " | ".join(f"{b:.3f}" for b in real_bright) + " |", flush=True)
        drift_c = abs(counts[-1] - counts[0])
        drift_b = abs(bright[-1] - bright[0])
        print(
            f"\ndrift first→last window: objects {drift_c:.2f}, brightness {drift_b:.3f}; "
            f"simulator's spread across windows: objects {float(np.ptp(real_counts)):.2f}, "
            f"brightness {float(np.ptp(real_bright)):.3f}"
        )


# --- 4. one model, many tasks -----------------------------------------------------------------


def bench_tasks(args) -> None:
    pipe, frames, clips, real = bouncing(args)
    header(f"video:bouncing (one checkpoint), {args.num} clips per task")
    print("| task | given frames | metric | generated | reference |")
    print("|---|---|---|---:|---:|")
    unconditional = rollout(pipe, frames, num=args.num, seed=0).clamp(-1, 1)
    counts = tracking.count_objects(unconditional, value_range=(-1.0, 1.0))
    real_counts = tracking.count_objects(real, value_range=(-1.0, 1.0))
    steady = lambda c: float(((c == c[:, :1]).all(1) & (c[:, 0] >= 1) & (c[:, 0] <= 3)).mean())  # noqa: E731
    frames_ok = lambda c: float(((c >= 1) & (c <= 3)).mean())  # noqa: E731
    print(
        f"| unconditional | none | frames in which the tracker finds 1–3 balls | {frames_ok(counts):.2f} | "
        f"{frames_ok(real_counts):.2f} (simulator) |"
    )
    print(
        f"| unconditional | none | clips with one count of 1–3 balls in every frame | {steady(counts):.2f} | "
        f"{steady(real_counts):.2f} (simulator; touching balls merge) |"
    )
    for task, mask in (
        ("image-to-video", [0]),
        ("interpolation", [0, frames - 1]),
        ("prediction", [0, 1, 2, 3]),
    ):
        known = torch.zeros(args.num, frames, dtype=torch.bool)
        known[:, mask] = True
        out = with_frames(pipe, frames).sample(given=real, known=known, seed=0)
        free = ~known[0]
        err = tracking.position_error(out[:, free], clips.positions[:, free.numpy()], value_range=(-1.0, 1.0))
        nearest = [min(mask, key=lambda m, f=f: abs(m - f)) for f in range(frames)]
        copy = real[:, nearest]
        ref = tracking.position_error(copy[:, free], clips.positions[:, free.numpy()], value_range=(-1.0, 1.0))
        print(
            f"| {task} | {', '.join(map(str, mask))} | tracking error of the other frames (px) | {err.mean():.2f} | "
            f"{ref.mean():.2f} (nearest given frame copied) |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("cost", "rollout", "fidelity", "stability", "tasks"))
    parser.add_argument("--bouncing", type=Path, help="a video:bouncing checkpoint (default: the shipped weights)")
    parser.add_argument("--digits", type=Path, help="a video:moving-digits checkpoint (default: the shipped weights)")
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--cached-only", action="store_true", help="cost: time only the cached rollout")
    args = parser.parse_args()
    start = time.perf_counter()
    benches = {"cost": bench_cost, "rollout": bench_rollout, "fidelity": bench_fidelity}
    benches.update(stability=bench_stability, tasks=bench_tasks)
    benches[args.which](args)
    print(f"\n<!-- {time.perf_counter() - start:.0f} s -->")


if __name__ == "__main__":
    main()
