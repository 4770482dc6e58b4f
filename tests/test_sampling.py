"""Time plans as configurations: per-frame noise, conditioning parts, guidance, thread safety."""

import threading

import pytest
import torch
from diffusekit import ClassLabel, ShapeError, TimePlan, build
from diffusekit.builtins import UniformGrid
from diffusekit.testing.oracle import GaussianMixture, OracleDenoiser
from diffusekit.testing.reference import TrigonometricSchedule
from diffusekit_gaussian import DDIM, DDPM, ClassifierFreeGuidance, Heun, KarrasGrid, VPCosine

F64 = torch.float64


def _gaussian(shape, seed=0):
    """A single Gaussian: elements are independent, so each can be sampled on its own."""
    g = torch.Generator().manual_seed(seed)
    return GaussianMixture(
        torch.ones(1, dtype=F64),
        torch.randn(1, *shape, generator=g, dtype=F64),
        0.3 + torch.rand(1, *shape, generator=g, dtype=F64),
    )


def test_plan_from_grid_gives_each_part_its_own_schedule_times():
    schedules = {"a": VPCosine(), "b": TrigonometricSchedule()}
    plan = TimePlan.from_grid(KarrasGrid(steps=5), schedules)
    assert len(plan) == 6 and plan.steps == 5
    assert float(plan[0]["a"]) != float(plan[0]["b"])  # same noise level, different times
    for name, schedule in schedules.items():
        sigmas = [float(torch.exp(-0.5 * schedule.log_snr(entry[name]))) for entry in plan.entries[:-1]]
        assert sigmas[0] == pytest.approx(80.0, rel=1e-6)
    assert float(plan[-1]["a"]) == 0.0


def test_per_frame_plan_is_a_configuration_not_a_special_case():
    """Diffusion-forcing style: frames of one video at different noise levels, one sampler call."""
    frames, dim = 3, 2
    mixture = _gaussian((frames, dim))
    schedule = TrigonometricSchedule()
    oracle = OracleDenoiser.single(mixture, schedule)
    grid = torch.linspace(1.0, 0.0, 7, dtype=F64)
    # frame f starts lagging by f steps: a staircase scheduling matrix (B, F) per entry
    entries = []
    for i in range(len(grid) + frames - 1):
        entries.append(
            torch.stack([grid[min(max(i - f, 0), len(grid) - 1)] for f in range(frames)])[None].expand(4, frames)
        )
    plan = TimePlan.from_times(entries, ["x"])
    x1 = torch.randn(4, frames, dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    out = DDIM().sample(oracle, x1.clone(), plan)
    # frames are independent under this target: each frame equals a plain run on its own grid
    for f in range(frames):
        single = OracleDenoiser.single(
            GaussianMixture(mixture.weights, mixture.means[:, f], mixture.stds[:, f]), schedule
        )
        alone = DDIM().sample(single, x1[:, f].clone(), TimePlan.from_times(list(grid), ["x"]))
        assert torch.allclose(out[:, f], alone, rtol=1e-10, atol=1e-10)


def test_a_part_held_at_time_zero_is_a_condition():
    """Inpainting/UniDiffuser-style: the known part stays exactly as given; the other is sampled."""
    sched = TrigonometricSchedule()
    oracle = OracleDenoiser(
        {"image": _gaussian((2,), 1), "label": _gaussian((1,), 2)}, {"image": sched, "label": sched}
    )
    known = torch.full((5, 1), 0.25, dtype=F64)
    times = [{"image": t, "label": 0.0} for t in torch.linspace(1.0, 0.0, 9, dtype=F64)]
    plan = TimePlan.from_times(times, ["image", "label"])
    start = {"image": torch.randn(5, 2, dtype=F64), "label": known}
    for sampler in (DDIM(), DDPM(), Heun()):
        out = sampler.sample(oracle, dict(start), plan, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out["label"], known)
        assert not torch.equal(out["image"], start["image"])


def test_inpainting_is_a_plan_that_holds_known_elements():
    mixture = GaussianMixture.random((4,), 3, generator=torch.Generator().manual_seed(6))
    oracle = OracleDenoiser.single(mixture, TrigonometricSchedule())
    known = mixture.sample(8, torch.Generator().manual_seed(7)).to(F64)
    mask = torch.tensor([True, False, True, False]).expand(8, 4)
    plan = TimePlan.from_grid(UniformGrid(steps=30), oracle.schedules).hold("x", mask)
    assert torch.equal(plan[0]["x"], torch.where(mask, 0.0, 1.0).to(F64))
    start = torch.where(mask, known, torch.randn(8, 4, generator=torch.Generator().manual_seed(8), dtype=F64))
    for sampler in (DDIM(), Heun(), DDPM()):
        out = sampler.sample(oracle, start, plan, generator=torch.Generator().manual_seed(9))
        assert torch.equal(out[mask], known[mask]), type(sampler).__name__
        assert torch.isfinite(out).all()


def test_guidance_scale_one_is_conditional_and_zero_unconditional():
    mix = GaussianMixture.random((2,), 3, generator=torch.Generator().manual_seed(3))
    oracle = OracleDenoiser.single(mix, TrigonometricSchedule())
    labels = ClassLabel(torch.tensor([0, 1, 2, 0]), num_classes=3)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    grid = KarrasGrid(steps=10)
    run = lambda guidance, cond: Heun().sample(oracle, x, grid, condition=cond, guidance=guidance)  # noqa: E731
    assert torch.allclose(run(ClassifierFreeGuidance(1.0), labels), run(None, labels), atol=1e-12)
    assert torch.allclose(run(ClassifierFreeGuidance(0.0), labels), run(None, labels.null_like()), atol=1e-12)
    # w > 1 extrapolates: x0 = u + w (c - u) at every evaluation
    t = {"x": torch.tensor(0.5, dtype=F64)}
    c, u = oracle({"x": x}, t, labels)["x"].x0, oracle({"x": x}, t, labels.null_like())["x"].x0
    guided = ClassifierFreeGuidance(3.0).wrap(oracle)({"x": x}, t, labels)["x"].x0
    assert torch.allclose(guided, u + 3.0 * (c - u), atol=1e-12)


def test_a_state_missing_a_part_is_a_shape_error():
    sched = TrigonometricSchedule()
    oracle = OracleDenoiser({"a": _gaussian((2,)), "b": _gaussian((2,))}, {"a": sched, "b": sched})
    with pytest.raises(ShapeError, match="parts"):
        DDIM().sample(oracle, {"a": torch.randn(3, 2, dtype=F64)}, UniformGrid(steps=3))


def test_pipeline_sampling_from_8_threads_is_bitwise_sequential():
    recipe = build("gaussian:digits").recipe
    tiny = {"network.channels": 8, "network.channel_mult": [1, 2], "network.num_res_blocks": 1, "grid.steps": 4}
    from diffusekit.recipe import apply_overrides

    pipeline = build(apply_overrides(recipe, tiny))
    with torch.no_grad():  # random, non-zero weights so the network matters
        for p in pipeline.network.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    seeds = list(range(8))
    expected = [pipeline.sample(6, seed=s) for s in seeds]
    got = [None] * 8

    def work(i):
        got[i] = pipeline.sample(6, seed=seeds[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert not torch.equal(expected[0], expected[1])
