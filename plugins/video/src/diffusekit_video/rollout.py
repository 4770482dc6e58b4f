"""Video of any length from a model trained on short clips: given frames held at t = 0, new
frames generated a chunk at a time.

Every new chunk is an ordinary :meth:`Pipeline.sample <diffusekit.Pipeline.sample>` call on a
pipeline whose part has the chunk's frame count — the recipe's sampler and grid, nothing
special-cased:

* **causal network, cached** (:class:`~diffusekit_video.networks.SpatioTemporalTransformer`
  with ``causal = true``): finished frames enter the KV cache once
  (:meth:`~diffusekit_video.networks.SpatioTemporalModule.cache_frames`); each denoising step
  of the next chunk runs the network on the chunk alone
  (:meth:`~diffusekit_video.networks.SpatioTemporalModule.forward_step`). Cost per frame is
  flat in the rollout length (Gao et al., 2024, "ViD-GPT"; Gao et al., 2024, "Ca2-VDM").
* **causal network, recomputed** (``cache=False``): every step runs the whole video so far,
  the finished frames held at t = 0 — the network computes the same for the new frames up to
  float rounding (property-tested), at a cost that grows with the length (the baseline the
  cache is measured against). The two draw their starting noise differently (the recompute
  draws it for the whole video), so from one seed they give different samples.
* **bidirectional network**: a sliding window of the network's ``frames``; the last
  ``frames - chunk`` frames are given (held at t = 0) and ``chunk`` new ones generated.
"""

from __future__ import annotations

import attrs
import torch
from diffusekit import Pipeline
from diffusekit_gaussian.history import HistoryGuidance, stand_in
from torch import Tensor, nn

from diffusekit_video.networks import Cache, SpatioTemporalModule


class CachedFrames(nn.Module):
    r"""The network seen by the sampler while new frames follow ``cache``: ``forward(x, noise)``
    is :meth:`SpatioTemporalModule.forward_step` on the new frames alone.

    With ``absent`` (the cache of the same frames replaced by noise at t = 1) and ``scale`` w,
    it is history guidance (:mod:`diffusekit_gaussian.history`) on the raw output, both caches
    in one batch: :math:`o_\varnothing + w\,(o - o_\varnothing)` — the guided prediction,
    since a prediction is affine in the raw output at fixed ``x`` and t.
    """

    def __init__(
        self, module: SpatioTemporalModule, cache: Cache | None, absent: Cache | None = None, scale: float = 1.0
    ) -> None:
        super().__init__()
        self.module, self.cache, self.absent, self.scale = module, cache, absent, scale
        # both caches in one batch, joined once for every denoising step of the new frames
        self.both = None if cache is None or absent is None or scale == 1.0 else cache.cat(absent)

    def forward(self, x: Tensor, noise: Tensor, condition=None) -> Tensor:
        if self.both is None:
            return self.module.forward_step(x, noise, self.cache, condition)
        both = self.both
        noise = torch.as_tensor(noise, device=x.device)
        twice = torch.cat([noise, noise]) if noise.ndim and noise.shape[0] == x.shape[0] else noise
        given, absent = self.module.forward_step(torch.cat([x, x]), twice, both, condition).chunk(2)
        return absent + self.scale * (given - absent)


def _absent(frames: Tensor, start: int) -> Tensor:
    """Frames ``start ..`` replaced by their stand-in noise (:func:`~diffusekit_gaussian.history.stand_in`)."""
    return stand_in(range(start, start + frames.shape[1]), frames).expand_as(frames)


def with_frames(
    pipeline: Pipeline, frames: int, network: nn.Module | None = None, batch: int | None = None
) -> Pipeline:
    """``pipeline`` for videos of ``frames`` frames (and, if given, another network module and
    sampling batch size: a network holding a cache of ``batch`` samples takes them all at once)."""
    part = pipeline.recipe.parts["x"]
    recipe = attrs.evolve(pipeline.recipe, parts={"x": attrs.evolve(part, shape=(frames, *part.shape[1:]))})
    if batch is not None:
        recipe = attrs.evolve(recipe, sample=attrs.evolve(recipe.sample, batch_size=batch))
    denoiser = pipeline.denoiser if network is None else attrs.evolve(pipeline.denoiser, network=network)
    return attrs.evolve(pipeline, recipe=recipe, denoiser=denoiser)


def rollout(
    pipeline: Pipeline,
    length: int,
    *,
    context: Tensor | None = None,
    num: int | None = None,
    chunk: int | None = None,
    cache: bool = True,
    seed: int | None = None,
) -> Tensor:
    """``length`` frames ``(B, length, C, H, W)``: ``context`` (``(B, k, C, H, W)``, its frames
    kept as given) followed by generated ones.

    ``chunk`` frames are generated per sampling pass by a causal network (default 1); a
    bidirectional one fills its window: it is given the last ``window - chunk`` frames (default
    half the window; fewer at the start) and generates the rest. Chunk ``j`` draws its noise from ``seed`` and its
    first frame's index, so a rollout is reproducible and its chunks independent.
    """
    module = pipeline.network
    spec = module.spec
    window = spec.frames
    if context is None:
        if num is None:
            raise ValueError("rollout needs the context frames or the number of videos")
        video = torch.empty(num, 0, *pipeline.recipe.parts["x"].shape[1:])
    else:
        video = context.to(torch.float32)
    if video.shape[1] > length:
        raise ValueError(f"{video.shape[1]} context frames, more than the {length} asked for")
    seed = pipeline.recipe.seed if seed is None else seed
    causal = spec.causal
    chunk = chunk or (1 if causal else max(1, window // 2))
    if not causal and chunk >= window:
        raise ValueError(f"a bidirectional window of {window} frames cannot generate chunks of {chunk}")
    kv: Cache | None = None
    absent: Cache | None = None  # the history as noise, for history guidance
    guidance = pipeline.guidance
    scale = guidance.scale if isinstance(guidance, HistoryGuidance) else 1.0
    if causal and cache and video.shape[1]:
        with torch.no_grad():
            kv = module.cache_frames(video)
            absent = module.cache_frames(_absent(video, 0), 1.0) if scale != 1.0 else None
    with torch.no_grad():
        while video.shape[1] < length:
            done = video.shape[1]
            keep = min(done, window - chunk)  # a bidirectional window: the frames it is given
            new = min(chunk if causal else window - keep, length - done)
            chunk_seed = (seed * 1_000_003 + done) % (2**62)
            if causal and cache:
                network = CachedFrames(module, kv, absent, scale)
                view = attrs.evolve(with_frames(pipeline, new, network, batch=video.shape[0]), guidance=None)
                frames = view.sample(video.shape[0], seed=chunk_seed)
                kv = module.cache_frames(frames, 0.0, kv)
                if scale != 1.0:
                    absent = module.cache_frames(_absent(frames, done), 1.0, absent)
            else:
                past = video if causal else video[:, done - keep :]
                view = with_frames(pipeline, past.shape[1] + new)
                given = torch.cat([past, torch.zeros(past.shape[0], new, *past.shape[2:])], dim=1)
                known = torch.zeros(given.shape[:2], dtype=torch.bool)
                known[:, : past.shape[1]] = True
                frames = view.sample(given=given, known=known, seed=chunk_seed)[:, past.shape[1] :]
            video = torch.cat([video, frames.to(video.dtype)], dim=1)
    return video
