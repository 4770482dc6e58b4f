r"""Sampling with part of the state given: inpainting, infilling, puzzles, given frames or views.

A *given* state carries data for some elements and a *known* mask says which: ``True``
where the value is given. A mask is aligned with the leading dimensions of its part,
like a time (``(B,)`` whole samples, ``(B, F)`` frames, ``(B, L)`` tokens, the full
shape for pixels); a part that is given without a mask is known entirely (the
observed modality of conditional generation).

Each part is completed in one of two ways:

* **held** — the plan keeps known elements at t = 0 (:meth:`TimePlan.hold`), so the
  sampler never moves them and the network sees them clean while the rest is noisy.
  This is exact, and it is what per-element time is for; it needs a network that reads
  a time at the mask's granularity: one that ignores time (masked-diffusion SUBS
  models), or a mask that varies only along the part's ``time_dims`` leading dimensions.
* **replaced** — otherwise (a network with one time per sample, a mask per pixel) every
  element starts from the prior and the denoiser's clean-data prediction is replaced by
  the given data where known. A deterministic Gaussian sampler then carries the known
  elements along :math:`x_t = \alpha_t x_0 + \sigma_t\hat\varepsilon` with the given
  :math:`x_0`, a forward sample of the known data at every level, so the network sees
  known and unknown elements at the same noise level — the replacement method of Song
  et al., "Score-Based Generative Modeling through SDEs" (2021, App. G) and Lugmayr et
  al., "RePaint" (2022), without resampling. Categorical parts get the given token as a
  certain prediction. The result equals the given data where known.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from diffusekit.denoiser import DenoiserLike
from diffusekit.errors import CheckpointError, InputError, ShapeError
from diffusekit.prediction import CategoricalPrediction, Prediction
from diffusekit.state import DEFAULT_PART, Parts, align_time, as_parts

Known = Tensor | Mapping[str, Tensor | None] | None
"""A known mask for a single-part state, or one per part (``None``: the whole part is known)."""


def known_masks(given: Parts, known: Known, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Tensor | None]:
    """Per given part, its boolean mask (``None``: known entirely), checked against the part's shape
    ``(B, *shapes[part])``; a one-line :class:`ShapeError` names what does not fit."""
    if known is None or isinstance(known, Tensor):
        if known is not None and list(given) != [DEFAULT_PART]:
            raise ShapeError(f"known: the state has parts {sorted(given)}; give one mask per part (a mapping)")
        known = {name: known for name in given}
    unknown = sorted(set(known) - set(given))
    if unknown:
        raise ShapeError(f"known: masks for parts {unknown} that are not given (given: {sorted(given)})")
    out: dict[str, Tensor | None] = {}
    for name, value in given.items():
        if name not in shapes:
            raise ShapeError(f"given: part {name!r} is not a part of this recipe (parts: {sorted(shapes)})")
        expected = (value.shape[0] if value.ndim else 1, *shapes[name])
        if tuple(value.shape) != expected:
            raise ShapeError(f"given: part {name!r} has shape {tuple(value.shape)}, expected {expected}")
        mask = known.get(name)
        if mask is not None:
            if mask.dtype != torch.bool:
                raise ShapeError(f"known: the mask of part {name!r} is {mask.dtype}, not torch.bool")
            if mask.ndim < 1 or tuple(mask.shape) != expected[: mask.ndim]:
                raise ShapeError(
                    f"known: the mask of part {name!r} has shape {tuple(mask.shape)}; it must match the "
                    f"leading dimensions of the part, {expected}"
                )
        out[name] = mask
    return out


def can_hold(mask: Tensor | None, time_dims: int, time_conditioned: bool) -> bool:
    """Whether known elements can be held at t = 0: the network then sees a time per element of
    the mask, which it must either ignore or read at that granularity."""
    return mask is None or not time_conditioned or mask.ndim <= time_dims


@attrs.frozen(eq=False)
class KeepKnown:
    r"""A denoiser whose clean-data prediction is the given data where it is known (the
    *replaced* parts of the module docstring); other parts and elements pass through.

    Replacement alone lets the unknown elements ignore the known ones at high noise, where
    the decision of what to draw is made. So for Gaussian parts the unknown elements'
    prediction is also corrected towards the conditional mean, as in pseudoinverse-guided
    diffusion (ΠGDM; Song, Vahdat, Mardani & Kautz, 2023) for a noiseless masking operator:
    with :math:`r_t^2 = \tilde\sigma_t^2/(1+\tilde\sigma_t^2)` standing for the posterior
    variance of the known elements, :math:`\mathrm{Cov}[x_0 \mid x_t] = (\sigma_t^2/\alpha_t)\,
    \partial\hat x_0/\partial x_t` (Tweedie) gives

    .. math:: \tilde x_0 = \hat x_0 - \frac{\alpha_t^2+\sigma_t^2}{2\alpha_t}\,\nabla_{x_t}
              \lVert m\odot(y - \hat x_0(x_t))\rVert^2,

    the Gaussian-approximate :math:`E[x_0 \mid x_t, y]` (reconstruction guidance of Ho et al.,
    "Video Diffusion Models", 2022, with the weight this approximation implies). It costs one
    backward pass through the network per evaluation; ``correct=False`` skips it.
    """

    inner: DenoiserLike
    given: Parts
    known: Mapping[str, Tensor]
    """Per replaced part, the mask aligned with (broadcastable to) the part."""
    correct: bool = True

    @property
    def schedules(self) -> Mapping[str, Any]:
        return self.inner.schedules

    @property
    def time_conditioned(self) -> bool:
        return bool(getattr(self.inner, "time_conditioned", True))

    def __call__(self, x: Parts, t: Any, condition: Any = None, coef: Mapping[str, Any] | None = None) -> Any:
        gaussian = [name for name in self.known if self.schedules[name].kind == "gaussian"]
        if not (self.correct and gaussian):
            return self._replace(self.inner(x, t, condition, coef), {})
        with torch.enable_grad():
            leaves = {name: value.detach().requires_grad_(value.is_floating_point()) for name, value in x.items()}
            out = self.inner(leaves, t, condition, coef)
            misfit = sum(((self.given[n] - out[n].x0) * self.known[n]).square().sum() for n in gaussian)
            wrt = [name for name, value in leaves.items() if value.requires_grad]
            grads = dict(zip(wrt, torch.autograd.grad(misfit, [leaves[n] for n in wrt]), strict=True))
        corrections = {}
        for name in gaussian:
            c = out[name].coef
            # (α² + σ²) / (2α); no correction where α = 0 (pure noise: the gradient vanishes there too)
            weight = torch.where(torch.as_tensor(c.alpha) > 0, (c.alpha**2 + c.sigma**2) / (2 * c.alpha), 0.0)
            corrections[name] = -weight.to(grads[name].dtype) * grads[name]
        return self._replace({name: pred for name, pred in out.items()}, corrections)

    def _replace(self, out: Any, corrections: Mapping[str, Tensor]) -> dict[str, Any]:
        parts = as_parts(out) if isinstance(out, Tensor) else dict(out)
        for name, mask in self.known.items():
            pred, given = parts[name], self.given[name]
            if isinstance(pred, Prediction):
                x0 = pred.x0.detach()
                if name in corrections:
                    x0 = x0 + corrections[name]
                parts[name] = Prediction("x0", torch.where(mask, given.to(x0.dtype), x0), pred.x.detach(), pred.coef)
            elif isinstance(pred, CategoricalPrediction):
                certain = torch.full_like(pred.value, -1e4).scatter(-1, given.unsqueeze(-1), 1e4)
                parts[name] = pred.with_value(torch.where(mask.unsqueeze(-1), certain, pred.value))
            else:
                raise ShapeError(f"part {name!r}: cannot replace a {type(pred).__name__} prediction by given data")
        for name, pred in parts.items():  # parts without given data: out of the autograd graph
            if name not in self.known and isinstance(pred, Prediction) and pred.value.requires_grad:
                parts[name] = Prediction(pred.kind, pred.value.detach(), pred.x.detach(), pred.coef)
        return parts


def complete(
    given: Parts, masks: Mapping[str, Tensor | None], time_dims: Mapping[str, int], time_conditioned: bool
) -> tuple[dict[str, Tensor | None], dict[str, Tensor]]:
    """Split the given parts into those held in the plan (``{part: mask}``) and those replaced
    in the prediction (``{part: mask aligned with the part}``)."""
    held: dict[str, Tensor | None] = {}
    replaced: dict[str, Tensor] = {}
    for name, mask in masks.items():
        if can_hold(mask, time_dims[name], time_conditioned):
            held[name] = mask
        else:
            assert mask is not None
            replaced[name] = align_time(mask, given[name])
    return held, replaced


KNOWN_SUFFIX = ".known"


def read_given(
    path: str | Path, parts: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, Tensor], dict[str, Tensor | None]]:
    """Given data from a safetensors file, the format every method and recipe can read: a tensor per
    given part named after it, ``(N, *shape)``, and optionally a boolean mask ``<part>.known`` aligned
    with its leading dimensions (without one the part is known entirely). ``parts`` are the
    recipe's per-sample shapes; a malformed file is a one-line :class:`InputError`.
    """
    from diffusekit.checkpoint import read_tensors

    try:
        tensors = read_tensors(path)
    except CheckpointError as exc:
        raise InputError(str(exc)) from None
    given = {name: value for name, value in tensors.items() if not name.endswith(KNOWN_SUFFIX)}
    masks = {name[: -len(KNOWN_SUFFIX)]: value for name, value in tensors.items() if name.endswith(KNOWN_SUFFIX)}
    if not given:
        raise InputError(
            f"{path}: no given part; name a tensor after a part of the recipe ({', '.join(sorted(parts))})"
        )
    strays = sorted(set(masks) - set(given))
    if strays:
        raise InputError(f"{path}: masks {[s + KNOWN_SUFFIX for s in strays]} have no given part beside them")
    rows = {name: value.shape[0] if value.ndim else 0 for name, value in given.items()}
    if len(set(rows.values())) != 1 or not next(iter(rows.values())):
        raise InputError(f"{path}: the given parts must hold the same positive number of samples, got {rows}")
    try:
        known = known_masks(given, dict(masks), parts)
    except ShapeError as exc:
        raise InputError(f"{path}: {exc}") from None
    return given, known
