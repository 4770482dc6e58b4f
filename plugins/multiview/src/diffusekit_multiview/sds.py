r"""Score distillation: a 3-D object fitted to the multi-view model through the volume renderer.

**SDS** (Poole et al., 2023, "DreamFusion"; multi-view as in MVDream, Shi et al., 2023). At each
step the field :math:`\theta` (a :class:`~diffusekit_multiview.volume.VoxelField`) is rendered
from ``views`` cameras evenly spaced on the orbit, starting at a random azimuth:
:math:`x = g(\theta)`. A time :math:`t` and noise :math:`\varepsilon` are drawn,
:math:`x_t = \alpha_t x + \sigma_t \varepsilon`, and the model's guided prediction
:math:`\hat x_0(x_t, t, c)` is taken without gradient. SDS follows
:math:`w(t)\,(\hat\varepsilon - \varepsilon)\,\partial x / \partial\theta`; since
:math:`\hat\varepsilon - \varepsilon = \tfrac{\alpha_t}{\sigma_t}(x - \hat x_0)`, the weight
:math:`w(t) = \sigma_t / \alpha_t` makes it :math:`(x - \hat x_0)\,\partial x/\partial\theta`, the
gradient of :math:`\tfrac12\lVert x - \mathrm{sg}(\hat x_0)\rVert^2`, which is what is minimised.

**Inversion** (SDI: Lukoianov et al., 2024, "Score Distillation via Reparametrized DDIM"). SDS
draws a fresh :math:`\varepsilon` at every step, as if each step of a DDIM trajectory had its
noise re-sampled: the targets :math:`\hat x_0` of successive steps disagree and the gradient is
noisy. SDI takes :math:`x_t` instead from DDIM inversion of the render itself from
:math:`t_{\min}` up to :math:`t` (:func:`diffusekit.sampler.invert`, with the unguided model),
so the noise is the one the render would be decoded from, and the guided prediction pulls the
render toward the condition only. It costs ``inversion_steps`` more network calls per step.

**Reconstruct, then refine.** Started from a nearly empty grid (with DreamFusion's density blob),
distillation from a weak prior tends to empty the grid: "no object" on the white background is a
strong attractor. Given views (:func:`distill`'s ``start``: views the model generated, or
photographs), the grid is first fitted to them (:func:`~diffusekit_multiview.volume.fit_views`;
multi-view generation followed by reconstruction, as in Hunyuan3D-1.0, Yang et al., 2024) and then
distilled at lower noise levels with the photometric loss on the given views kept beside the
distillation loss (weight ``anchor_weight``; Magic123, Qian et al., 2024, keeps its reference view
the same way), so the prior shapes only what the given views leave open.

Times are drawn uniformly in :math:`[t_{\min}, t_{\max}]` with :math:`t_{\max}` annealed
linearly from ``t_max`` to ``t_max_final`` (coarse shape first, then detail; as in most SDS
follow-ups, e.g. ProlificDreamer's annealing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import attrs
import torch
from attrs import validators as v
from diffusekit import ConditionList
from diffusekit.sampler import TimePlan, invert
from torch import Tensor

from diffusekit_multiview import cameras, scenes
from diffusekit_multiview.networks import PART
from diffusekit_multiview.volume import VoxelField, fit_views, render_volume

VARIANTS = ("sds", "inversion")


@attrs.frozen
class DistillConfig:
    """Settings of :func:`distill` (see the module docstring)."""

    steps: int = attrs.field(default=400, validator=v.ge(1))
    views: int = attrs.field(default=4, validator=v.ge(1))
    resolution: int = attrs.field(default=32, validator=v.ge(4))
    lr: float = attrs.field(default=0.05, validator=v.gt(0.0))
    init_density: float = -4.0  # a nearly clear grid to start from (raw density; see VoxelField)
    blob: float = 6.0  # raw density added at the centre, falling to 0 at radius 0.5 (DreamFusion's density blob)
    guidance_scale: float | None = 7.5  # classifier-free guidance while distilling (None: the recipe's)
    t_min: float = attrs.field(default=0.02, validator=[v.gt(0.0), v.lt(1.0)])
    t_max: float = attrs.field(default=0.98, validator=[v.gt(0.0), v.le(1.0)])
    t_max_final: float = attrs.field(default=0.5, validator=[v.gt(0.0), v.le(1.0)])
    elevation_deg: float = 20.0
    variant: Literal["sds", "inversion"] = attrs.field(default="sds", validator=v.in_(VARIANTS))
    inversion_steps: int = attrs.field(default=4, validator=v.ge(1))
    fit_steps: int = attrs.field(default=300, validator=v.ge(0))  # fitting the grid to ``start``'s views
    anchor_weight: float = attrs.field(default=1.0, validator=v.ge(0.0))  # the given views' loss beside distillation
    seed: int = 0

    def refining(self) -> DistillConfig:
        """The settings for refining a grid fitted to given views: lower noise levels (the shape is
        there; the prior adjusts it), a smaller step and fewer steps."""
        return attrs.evolve(self, steps=150, lr=0.01, t_max=0.5, t_max_final=0.2)


def orbit_from(azimuth_deg: float, views: int, elevation_deg: float) -> Tensor:
    """``(views, 4, 4)`` cameras evenly spaced on the orbit from ``azimuth_deg``."""
    return cameras.orbit(views, scenes.CAMERA_RADIUS, elevation_deg, azimuth_deg)


def _condition(extrinsics: Tensor, label: int | None) -> ConditionList:
    labels = torch.tensor([-1 if label is None else label])
    return scenes.scene_condition(extrinsics[None], labels)


def target(
    pipeline,
    render: Tensor,
    extrinsics: Tensor,
    t: float,
    label: int | None,
    variant: str,
    config: DistillConfig,
    generator: torch.Generator,
) -> Tensor:
    """The guided :math:`\\hat x_0` ``(V, 3, S, S)`` in [-1, 1] that the render ``(V, 3, S, S)`` (in
    [-1, 1]) is pulled toward at time ``t`` (no gradient)."""
    x = render.detach()[None]
    schedule = pipeline.denoiser.schedules[PART]
    cond = _condition(extrinsics, label)
    with torch.no_grad():
        if variant == "sds":
            c = schedule.coefficients(torch.tensor(t))
            noise = torch.randn(x.shape, generator=generator)
            x_t = c.alpha * x + c.sigma * noise
        else:
            times = torch.linspace(t, config.t_min, config.inversion_steps + 1).tolist()
            plan = TimePlan.from_times([*times, 0.0], [PART])
            x_t = invert(pipeline.sampler, pipeline.denoiser, {PART: x}, plan, condition=cond)[PART]
        guided = pipeline.denoiser if pipeline.guidance is None else pipeline.guidance.wrap(pipeline.denoiser)
        pred = guided({PART: x_t}, {PART: torch.tensor(t)}, cond)[PART]
    return pred.x0[0].clamp(-1.0, 1.0)


def initial_field(config: DistillConfig) -> VoxelField:
    """A clear grid with a soft blob of density at the centre. Started from an empty grid, the
    guided estimate of a white render is a white image (objects cover a tenth of a view), and the
    grid stays empty; DreamFusion adds a density blob at the origin for the same reason."""
    field = VoxelField(config.resolution, init_density=config.init_density)
    with torch.no_grad():
        axis = torch.linspace(-field.bound, field.bound, config.resolution)
        r = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij")).norm(dim=0)
        field.density.add_(config.blob * (1.0 - r / 0.5).clamp_min(0.0))
    return field


def distill(
    pipeline,
    label: int | None = None,
    config: DistillConfig = DistillConfig(),
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    start: tuple[Tensor, Tensor] | None = None,
) -> VoxelField:
    """Fit a :class:`~diffusekit_multiview.volume.VoxelField` to ``pipeline``'s multi-view model
    (a ``multiview:shapes`` pipeline; its guidance scale applies) for the shape class ``label``
    (``None``: unconditional), by SDS or its inversion variant (``config.variant``).

    ``start``: given views ``(V, 3, S, S)`` in [-1, 1] and their cameras ``(V, 4, 4)``. The grid is
    first fitted to them (``config.fit_steps``), then distilled with their photometric loss kept
    (``config.anchor_weight``); see "Reconstruct, then refine" above. Without it the grid starts
    from :func:`initial_field`."""
    g = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # the field's initialisation
    if start is None:
        field = initial_field(config)
    else:
        views, seen_from = start
        field = fit_views(
            (views + 1.0) / 2.0, seen_from, steps=config.fit_steps, resolution=config.resolution, seed=config.seed
        )
    if config.guidance_scale is not None and hasattr(pipeline.guidance, "scale"):  # classifier-free guidance
        pipeline = attrs.evolve(pipeline, guidance=attrs.evolve(pipeline.guidance, scale=config.guidance_scale))
    optimizer = torch.optim.Adam(field.parameters(), lr=config.lr)
    size = pipeline.network.spec.size
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, desc=f"3-D by {config.variant}", unit="step", dynamic_ncols=True)
    try:
        for step in range(config.steps):
            frac = step / max(config.steps - 1, 1)
            t_max = config.t_max + (config.t_max_final - config.t_max) * frac
            t = config.t_min + (max(t_max, config.t_min) - config.t_min) * float(torch.rand((), generator=g))
            azimuth = 360.0 * float(torch.rand((), generator=g))
            extrinsics = orbit_from(azimuth, config.views, config.elevation_deg)
            rgb, _ = render_volume(field, extrinsics, size)
            x = rgb * 2.0 - 1.0
            goal = target(pipeline, x, extrinsics, t, label, config.variant, config, g)
            loss = 0.5 * (x - goal).square().sum() / len(x)
            if start is not None and config.anchor_weight > 0:
                seen = render_volume(field, start[1], size)[0] * 2.0 - 1.0
                loss = loss + config.anchor_weight * 0.5 * (seen - start[0]).square().sum() / len(seen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if callback is not None:
                callback({"step": step + 1, "t": t, "loss": loss.item()})
    finally:
        if bar is not None:
            bar.close()
    return field


def field_gradient(
    pipeline,
    field: VoxelField,
    label: int | None,
    t: float,
    azimuth: float,
    config: DistillConfig,
    generator: torch.Generator,
) -> Tensor:
    """One draw of the distillation gradient with respect to all of ``field``'s parameters, flattened."""
    extrinsics = orbit_from(azimuth, config.views, config.elevation_deg)
    rgb, _ = render_volume(field, extrinsics, pipeline.network.spec.size)
    x = rgb * 2.0 - 1.0
    goal = target(pipeline, x, extrinsics, t, label, config.variant, config, generator)
    grads = torch.autograd.grad(0.5 * (x - goal).square().sum() / len(x), list(field.parameters()))
    return torch.cat([g.flatten() for g in grads])


def gradient_spread(pipeline, field: VoxelField, label: int | None, config: DistillConfig, draws: int = 16) -> float:
    r"""The relative variance of the distillation gradient at ``field``,
    :math:`E\lVert g - \bar g\rVert^2 / \lVert\bar g\rVert^2` over ``draws`` draws of everything a
    step draws (time in :math:`[t_{\min}, t_{\max}]`, azimuth and, for SDS, the noise)."""
    g = torch.Generator().manual_seed(config.seed)
    draws_ = []
    for _ in range(draws):
        t = config.t_min + (config.t_max - config.t_min) * float(torch.rand((), generator=g))
        azimuth = 360.0 * float(torch.rand((), generator=g))
        draws_.append(field_gradient(pipeline, field, label, t, azimuth, config, g))
    stack = torch.stack(draws_)
    mean = stack.mean(0)
    return float((stack - mean).square().sum(1).mean() / mean.square().sum().clamp_min(1e-30))


__all__ = ["VARIANTS", "DistillConfig", "distill", "field_gradient", "gradient_spread", "orbit_from", "target"]
