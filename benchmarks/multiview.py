"""Multi-view benchmarks (the ``multiview`` plugin).

Usage (from ``benchmarks/``)::

    OMP_NUM_THREADS=1 ../.venv/bin/python multiview.py nvs --ablation CK   # 1: novel-view synthesis
    OMP_NUM_THREADS=1 ../.venv/bin/python multiview.py consistency        # 2: multi-view consistency
    OMP_NUM_THREADS=1 ../.venv/bin/python multiview.py sds                # 3: SDS vs its inversion variant
    OMP_NUM_THREADS=1 ../.venv/bin/python multiview.py refine             # 3: reconstruct, then refine

``nvs`` renders held-out scenes of the test split (seed ``TRUTH_SEED + SEED``, or ``--seed``, which neither
training nor the method's own outputs use) from cameras on the 20° orbit, gives the model the
first view and scores the three generated views against the true renders: PSNR, its gain over
copying the given view (paired per scene), SSIM (scikit-image; Wang et al., 2004) and the
perceptual distance of :mod:`diffusekit_multiview.perceptual` (LPIPS's recipe on the plugin's
own feature network; lower is closer). Standard errors are over scenes (a scene's views
averaged first). ``--grid-steps 1`` gives the model's one-step estimate from t = 1, its
estimate of the posterior mean, which minimises the expected squared error. Baselines: the
given view copied to every target camera (the nearest given view), the pixel-wise mean of 2,048 training views (which ignores the given view:
the floor for a posterior-mean estimate), and the same network trained without cross-view
attention (``--ablation``, a checkpoint of ``multiview:shapes`` with ``--set
network.cross_view=false``).
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
from common import parse_settings
from diffusekit import ConditionList
from diffusekit_multiview import methods, perceptual, primitives, scenes
from diffusekit_multiview.cameras import Cameras
from diffusekit_multiview.networks import PART

SEED = 7


def header(what: str) -> None:
    print(
        f"<!-- {platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}; {what} -->",
        flush=True,
    )


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image of ``(..., 3, S, S)`` images in [-1, 1] (scikit-image, 7×7 windows)."""
    from skimage.metrics import structural_similarity

    x = a.detach().float().flatten(0, -4).permute(0, 2, 3, 1).numpy()
    y = b.detach().float().flatten(0, -4).permute(0, 2, 3, 1).numpy()
    scores = [structural_similarity(p, q, channel_axis=-1, data_range=2.0) for p, q in zip(x, y, strict=True)]
    return torch.tensor(scores).reshape(a.shape[:-3])


def trained_steps(path: Path | None) -> int:
    """The training step of a checkpoint (default: the shipped weights)."""
    from diffusekit.checkpoint import load_checkpoint

    return load_checkpoint(path or methods.ShapesMethod().weights()).step


def load(path: Path | None, steps: int | None = None, **overrides) -> dk.Pipeline:
    """A checkpoint's pipeline (default: the shipped weights), with ``steps`` sampling steps if
    given and other recipe entries overridden (``{"sampler.eta": 1.0}``)."""
    path = path or methods.ShapesMethod().weights()
    if path is None:
        raise SystemExit("multiview:shapes ships no weights: give --checkpoint")
    return dk.load(path, **overrides, **({} if steps is None else {"grid.steps": steps}))


def novel_views(pipe: dk.Pipeline, truth, given: int, batch: int) -> torch.Tensor:
    """The views generated for ``truth`` (a SceneBatch) with its first ``given`` views known."""
    views = truth.views * 2.0 - 1.0
    num = len(views)
    known = torch.zeros(num, views.shape[1], dtype=torch.bool)
    known[:, :given] = True
    out = []
    for s in range(0, num, batch):
        sl = slice(s, s + batch)
        cond = scenes.scene_condition(truth.extrinsics[sl], torch.full((len(views[sl]),), -1))
        out.append(pipe.sample(given={PART: views[sl]}, known={PART: known[sl]}, condition=cond)[PART])
    return torch.cat(out)


def nearest_given(view: int, given: int) -> int:
    """The given view (``0 .. given-1``) closest in azimuth to ``view`` (views are evenly spaced)."""
    n = methods.VIEWS
    return min(range(given), key=lambda g: min(abs(view - g), n - abs(view - g)))


def bench_nvs(args) -> None:
    method = methods.NovelViewMethod()
    models = [(f"cross-view attention, step {trained_steps(path)}", path) for path in [args.checkpoint, *args.more]]
    if args.ablation is not None:
        models.append((f"without cross-view attention (ablation), step {trained_steps(args.ablation)}", args.ablation))
    pipes = {}  # with other sampling steps too (1: one step from t = 1, the posterior mean's estimate)
    for name, path in models:
        for steps in args.grid_steps or [None]:
            pipes[name if steps is None else f"{name}, {steps} steps"] = load(path, steps)
    for variant in args.variant:  # the first model sampled otherwise: "sampler.eta=1,grid.steps=100"
        overrides = parse_settings(variant.split(","))
        name, path = models[0]
        pipes[f"{name}, {', '.join(f'{k} = {v}' for k, v in overrides.items())}"] = load(path, **overrides)
    if args.history_guidance:
        from diffusekit_gaussian import HistoryGuidance

        name, path = models[0]
        for scale in args.history_guidance:
            pipes[f"{name}, guided by the given view (w = {scale:g})"] = attrs.evolve(
                load(path), guidance=HistoryGuidance(scale)
            )
    recipe = attrs.evolve(next(iter(pipes.values())).recipe, seed=args.seed)
    truth = method.held_out(args.num, recipe)
    views = truth.views * 2.0 - 1.0
    features = perceptual.shipped_view_features()
    # the pixel-wise mean of training views: the best constant guess in squared error, a floor
    # that any estimate of the posterior mean should beat by using the given view
    mean_view = (scenes.Shapes(count=512, views=methods.VIEWS, seed=0).generate().views * 2.0 - 1.0).mean((0, 1))
    header(f"nvs, {args.num} held-out scenes (seed {args.seed}), {methods.VIEWS} views on the 20° orbit")
    print(
        "| given views | model | PSNR (dB) | PSNR − copy's (dB) | SSIM | perceptual distance | s per scene |\n"
        "|---|---|---|---|---|---|---|"
    )
    spreads = []
    for given in args.given:
        target = views[:, given:]
        nearest = torch.stack([views[:, nearest_given(k, given)] for k in range(given, methods.VIEWS)], 1)
        rows = [
            ("copy the nearest given view", nearest, float("nan")),
            ("the mean training view (ignores the given view)", mean_view.expand_as(target), float("nan")),
        ]
        for name, pipe in pipes.items():
            pipe = attrs.evolve(pipe, recipe=attrs.evolve(pipe.recipe, seed=args.seed))
            start = time.perf_counter()
            out = novel_views(pipe, truth, given, args.batch)
            rows.append((name, out[:, given:], (time.perf_counter() - start) / args.num))
            if args.spread:  # a second draw of every scene, with other noise
                again = attrs.evolve(pipe, recipe=attrs.evolve(pipe.recipe, seed=args.seed + 1))
                spreads.append((given, name, out[:, given:], novel_views(again, truth, given, args.batch)[:, given:]))
        copied = methods.psnr(nearest, target)
        for name, got, seconds in rows:
            p = methods.psnr(got, target)
            s = ssim(got, target)
            d = perceptual.perceptual_distance(got, target, features)
            gain = "" if got is nearest else f"{mean_sem(p - copied, signed=True)}"
            spent = "" if np.isnan(seconds) else f"{seconds:.2f}"
            print(f"| {given} | {name} | {mean_sem(p)} | {gain} | {float(s.mean()):.3f} | {mean_sem(d, 3)} | {spent} |")
    if spreads:
        print_spreads(spreads, views)


def print_spreads(spreads: list, views: torch.Tensor) -> None:
    """A sample's squared error split in two (``--spread``). For draws x̂ of the views given
    the given ones, m their mean and x the truth, E|x̂ − x|² = E|x̂ − m|² + |m − x|², and two
    independent draws differ by E|x̂₁ − x̂₂|² = 2 E|x̂ − m|²: so the error of the draws' mean
    (what the samples' spread costs) is a sample's error less half the two draws' squared
    difference. Mean squared errors over every scene and view, images scaled to [0, 1]."""
    print(
        "\n| given views | model | a sample's squared error (PSNR) | spread (half two draws' squared difference) | "
        "error of the draws' mean (PSNR) |\n|---|---|---|---|---|"
    )
    for given, name, first, second in spreads:
        target = views[:, given:]
        error = float(((first - target) / 2).square().mean())
        spread = float(((first - second) / 2).square().mean()) / 2
        mean_error = error - spread

        def db(mse: float) -> str:
            return f"{mse:.4f} ({-10 * np.log10(mse):.2f} dB)"

        print(f"| {given} | {name} | {db(error)} | {spread:.4f} | {db(mean_error)} |")


def mean_sem(x: torch.Tensor, digits: int = 2, signed: bool = False) -> str:
    """``mean ± standard error`` of the scenes' values ``(scenes, ...)`` (views averaged per scene:
    the views of one scene are not independent)."""
    per_scene = x.flatten(1).mean(1) if x.ndim > 1 else x
    sem = per_scene.std() / np.sqrt(per_scene.numel())
    return f"{float(per_scene.mean()):{'+' if signed else ''}.{digits}f} ± {float(sem):.{digits}f}"


def _fit_psnr(views: torch.Tensor, extrinsics: torch.Tensor, steps: int) -> torch.Tensor:
    """Per-view PSNR of a voxel grid fitted to views ``(V, 3, S, S)`` in [-1, 1] (re-rendering error)."""
    from diffusekit_multiview import volume

    field = volume.fit_views((views + 1.0) / 2.0, extrinsics, steps=steps)
    return volume.rerender_error(field, (views + 1.0) / 2.0, extrinsics)


def bench_consistency(args) -> None:
    """Fit one voxel grid to each object's 4 views and re-render them: views that show one object
    are reproduced well, inconsistent ones are not. Jointly generated views (cross-view attention)
    against views generated one at a time (each view alone, at its camera, same class) and the
    true renders of test scenes (consistent by construction)."""
    pipe = load(args.checkpoint)
    pipe = attrs.evolve(pipe, recipe=attrs.evolve(pipe.recipe, seed=SEED))
    method = methods.ShapesMethod()
    cond = method.condition(args.num)
    cams = cond.items[0].extrinsics()
    header(f"consistency, {args.num} objects x {methods.VIEWS} views, voxel fit {args.fit_steps} steps")
    joint = pipe.sample(args.num, condition=cond)[PART]
    single = []
    for k in range(methods.VIEWS):  # each view alone: a state of one view, its own camera
        one = attrs.evolve(pipe.recipe.parts[PART], shape=(1, *pipe.recipe.parts[PART].shape[1:]))
        view_pipe = dk.build(attrs.evolve(pipe.recipe, parts={PART: one}))
        view_pipe.network.load_state_dict(pipe.network.state_dict())
        c = ConditionList((Cameras.of(cams[:, k : k + 1]), cond.items[1]))
        single.append(view_pipe.sample(args.num, condition=c, seed=SEED + 1 + k)[PART][:, 0])
    single = torch.stack(single, 1)
    real = methods.NovelViewMethod().held_out(args.num, attrs.evolve(pipe.recipe, seed=SEED))
    rows = [
        ("true renders of test scenes (consistent by construction)", real.views * 2 - 1, real.extrinsics),
        ("generated jointly (cross-view attention)", joint, cams),
        ("generated one view at a time", single, cams),
    ]
    print("| views | re-render PSNR (dB), mean ± s.e. | worst view |\n|---|---|---|")
    for name, views, extrinsics in rows:
        scores = torch.stack([_fit_psnr(views[i], extrinsics[i], args.fit_steps) for i in range(args.num)])
        sem = scores.mean(1).std() / np.sqrt(args.num)
        print(f"| {name} | {float(scores.mean()):.2f} ± {float(sem):.2f} | {float(scores.min(1).values.mean()):.2f} |")


def bench_sds(args) -> None:
    """SDS against its DDIM-inversion variant, one object per shape class: PSNR of the object's
    renders against views the model generates at the same cameras for the class, the relative
    variance of the gradient at the fitted object, CPU seconds."""
    from diffusekit_multiview import sds, volume

    pipe = load(args.checkpoint)
    header(f"sds, one object per class, {args.sds_steps} steps")
    cams = sds.orbit_from(0.0, methods.VIEWS, methods.ELEVATION_DEG)
    labels = torch.arange(len(primitives.KINDS))
    cond = scenes.scene_condition(cams.expand(len(labels), -1, -1, -1), labels)
    generated = attrs.evolve(pipe, recipe=attrs.evolve(pipe.recipe, seed=SEED)).sample(len(labels), condition=cond)[
        PART
    ]
    print("| variant | PSNR vs generated views (dB) | gradient relative variance | s per object |\n|---|---|---|---|")
    for variant in sds.VARIANTS:
        config = sds.DistillConfig(steps=args.sds_steps, variant=variant, seed=SEED)
        scores, spreads, seconds = [], [], 0.0
        for label in labels.tolist():
            start = time.perf_counter()
            field = sds.distill(pipe, label, attrs.evolve(config, seed=SEED + label))
            seconds += time.perf_counter() - start
            with torch.no_grad():
                rgb, _ = volume.render_volume(field, cams, methods.SIZE)
            scores.append(float(methods.psnr(rgb * 2 - 1, generated[label]).mean()))
            spreads.append(sds.gradient_spread(pipe, field, label, config, draws=args.draws))
        print(
            f"| {variant} | {np.mean(scores):.2f} ({', '.join(f'{s:.1f}' for s in scores)}) | "
            f"{np.mean(spreads):.3g} | {seconds / len(labels):.0f} |"
        )


def bench_refine(args) -> None:
    """Reconstruct, then refine (``multiview:sds``'s default), scored against ground truth: a voxel
    grid is fitted to four true views of a held-out test scene and refined by distillation with
    those views kept (the shape class given). PSNR against true renders at four cameras the fit
    never saw (45° round the orbit from the given ones), beside the fit alone and the fit given the
    same number of further photometric steps (what the refinement's step count buys without the
    prior). Then the method itself on generated views: one object per class, its PSNR against
    them and its mesh."""
    from diffusekit_multiview import sds, volume
    from diffusekit_multiview.render import render

    pipe = load(args.checkpoint)
    base = sds.DistillConfig(seed=SEED).refining()
    header(f"refine, {args.num} held-out scenes, fit {base.fit_steps} steps, refine {base.steps} steps")
    found = scenes.random_primitives(
        np.random.default_rng([methods.TRUTH_SEED + SEED, scenes.SPLITS.index("test")]), args.num
    )
    classes = scenes.shape_classes(found)
    given = sds.orbit_from(0.0, methods.VIEWS, methods.ELEVATION_DEG)
    unseen = sds.orbit_from(45.0, methods.VIEWS, methods.ELEVATION_DEG)
    truth = render(found, torch.cat([given, unseen]).expand(args.num, -1, -1, -1), methods.SIZE).rgb
    rows = {"fit to the 4 given views": [], f"fit, {base.steps} more steps": []}
    rows |= {f"fit, then refine by {v}": [] for v in sds.VARIANTS}
    seconds = dict.fromkeys(rows, 0.0)
    for i in range(args.num):
        views = truth[i, : methods.VIEWS]
        for name in rows:
            start = time.perf_counter()
            if name.startswith("fit, then"):
                config = attrs.evolve(base, variant=name.rsplit(" ", 1)[-1], seed=SEED + i)
                field = sds.distill(pipe, int(classes[i]), config, start=(views * 2 - 1, given))
            else:
                steps = base.fit_steps + (base.steps if "more" in name else 0)
                field = volume.fit_views(views, given, steps=steps, seed=SEED + i)
            seconds[name] += time.perf_counter() - start
            rows[name].append(
                (
                    float(volume.rerender_error(field, truth[i, methods.VIEWS :], unseen).mean()),
                    float(volume.rerender_error(field, views, given).mean()),
                )
            )
    print("| grid | PSNR at unseen cameras (dB) | PSNR at the given cameras (dB) | s per object |\n|---|---|---|---|")
    for name, scores in rows.items():
        a = np.array(scores)
        sem = a[:, 0].std(ddof=1) / np.sqrt(len(a))
        print(f"| {name} | {a[:, 0].mean():.2f} ± {sem:.2f} | {a[:, 1].mean():.2f} | {seconds[name] / args.num:.0f} |")
    # the method: generated views of each class, reconstructed and refined
    labels = torch.arange(len(primitives.KINDS))
    cond = scenes.scene_condition(given.expand(len(labels), -1, -1, -1), labels)
    generated = attrs.evolve(pipe, recipe=attrs.evolve(pipe.recipe, seed=SEED)).sample(len(labels), condition=cond)
    print("\n| class (generated views) | PSNR vs the generated views (dB) | mesh faces |\n|---|---|---|")
    for label in labels.tolist():
        views = generated[PART][label]
        field = sds.distill(pipe, label, attrs.evolve(base, seed=SEED + label), start=(views, given))
        score = float(methods.psnr(volume.render_volume(field, given, methods.SIZE)[0].detach() * 2 - 1, views).mean())
        try:
            faces = str(len(volume.to_mesh(field).faces))
        except ValueError:
            faces = "none"
        print(f"| {primitives.KINDS[label]} | {score:.2f} | {faces} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=("nvs", "consistency", "sds", "refine"))
    parser.add_argument("--checkpoint", type=Path, help="a multiview:shapes checkpoint (default: the shipped weights)")
    parser.add_argument("--ablation", type=Path, help="nvs: the same model trained with network.cross_view=false")
    parser.add_argument("--more", type=Path, nargs="*", default=[], help="nvs: further checkpoints to compare")
    parser.add_argument("--grid-steps", type=int, nargs="*", help="nvs: sampling steps (default: the recipe's)")
    parser.add_argument(
        "--history-guidance",
        type=float,
        nargs="*",
        default=[],
        help="nvs: also sample guided by the given views, scale w",
    )
    parser.add_argument(
        "--variant",
        nargs="*",
        default=[],
        help="nvs: also sample the first model with these recipe entries, KEY=VALUE[,KEY=VALUE]",
    )
    parser.add_argument(
        "--spread", action="store_true", help="nvs: draw twice and split a sample's error into spread and bias"
    )
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument(
        "--seed", type=int, default=SEED, help="nvs: which held-out scenes (another seed: a validation set) and draws"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--given", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--fit-steps", type=int, default=300, help="consistency: voxel fitting steps")
    parser.add_argument("--sds-steps", type=int, default=400)
    parser.add_argument("--draws", type=int, default=16, help="sds: gradient draws for the variance")
    args = parser.parse_args()
    benches = {"nvs": bench_nvs, "consistency": bench_consistency, "sds": bench_sds, "refine": bench_refine}
    benches[args.which](args)


if __name__ == "__main__":
    main()
