r"""diffusers models as diffusekit denoisers.

A diffusers denoising model is called as ``model(sample, timestep, **conditioning)`` on the
variance-preserving state :math:`x_k = \sqrt{\bar\alpha_k}x_0 + \sqrt{1-\bar\alpha_k}\varepsilon`
and predicts, by its scheduler's ``prediction_type``, the noise :math:`\varepsilon`
(``"epsilon"``), :math:`v = \alpha\varepsilon - \sigma x_0` (``"v_prediction"``; Salimans & Ho,
2022) or :math:`x_0` (``"sample"``). :class:`DiffusersPrediction` says exactly that to
diffusekit: the state goes in unchanged (a :class:`~diffusekit_diffusers.DiffusersSchedule`
is variance-preserving), the time :math:`t` goes in as the diffusers timestep
:math:`k = tN - 1`, and the output is read as the configured kind. :class:`DiffusersNetwork`
adapts the call itself: conditions become keyword arguments and a learned variance
(the extra output channels of DiT and IF, Nichol & Dhariwal, 2021) is dropped, since
diffusekit's samplers set their own variances.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch
from attrs import validators as v
from diffusekit import (
    ClassLabel,
    Condition,
    ConditionList,
    Denoiser,
    Embedding,
    GaussianCoefficients,
    GaussianParameterization,
    Prediction,
    ShapeError,
)
from torch import Tensor, nn

from diffusekit_diffusers.schedule import DiffusersSchedule, config_reader

PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


def _clip(value: float | None) -> float | None:
    return None if value is None else float(value)


@attrs.frozen
class DiffusersPrediction(GaussianParameterization):
    r"""What a diffusers model predicts (``prediction_type``) and which timestep it is told.

    The network input is the state itself and its noise level the diffusers timestep
    :math:`k = tN - 1` (rounded where it is within 1e-6 of an integer, so a grid of training
    timesteps reaches the model exactly). With ``clip_sample`` (diffusers'
    ``clip_sample_range``) the predicted :math:`\hat x_0` is clamped to
    :math:`[-c, c]` and :math:`\hat\varepsilon` is derived from the clamped value
    (diffusers' ``use_clipped_model_output=True``).
    """

    prediction_type: str = attrs.field(default="epsilon", validator=v.in_(tuple(PREDICTIONS)))
    num_train_timesteps: int = attrs.field(default=1000, validator=v.ge(2))
    clip_sample: float | None = attrs.field(default=None, converter=_clip)

    @property
    def prediction(self) -> str:  # type: ignore[override]
        return PREDICTIONS[self.prediction_type]

    @classmethod
    def from_config(cls, config) -> DiffusersPrediction:
        """The parameterization a diffusers scheduler (or its config) implies."""
        get = config_reader(config)
        if get("thresholding", False):
            raise ValueError(
                "the scheduler uses dynamic thresholding (thresholding=True), which the diffusers bridge does not "
                "support; set thresholding=False"
            )
        return cls(
            prediction_type=str(get("prediction_type", "epsilon")),
            num_train_timesteps=int(get("num_train_timesteps", 1000)),
            clip_sample=float(get("clip_sample_range", 1.0)) if get("clip_sample", False) else None,
        )

    def noise_level(self, t: Tensor, c: GaussianCoefficients) -> Tensor:
        k = t.to(torch.float64) * self.num_train_timesteps - 1.0
        near = torch.round(k)
        return torch.where((k - near).abs() < 1e-6, near, k)

    def output(self, raw: Tensor, prepared) -> Prediction:
        pred = super().output(raw, prepared)
        if self.clip_sample is None:
            return pred
        return Prediction("x0", pred.x0.clamp(-self.clip_sample, self.clip_sample), prepared.x, prepared.context)


def model_kwargs(condition: Condition | None) -> dict[str, Tensor]:
    """The keyword arguments a diffusers model takes for a diffusekit condition.

    :class:`~diffusekit.ClassLabel` becomes ``class_labels`` (the null label maps to
    index ``num_classes``, DiT's unconditional class); :class:`~diffusekit.Embedding`
    becomes ``encoder_hidden_states`` (``(B, D)`` as a one-token sequence);
    :class:`~diffusekit.ConditionList` merges its items.
    """
    if condition is None:
        return {}
    if isinstance(condition, ClassLabel):
        return {"class_labels": condition.embedding_index()}
    if isinstance(condition, Embedding):
        states = condition.values
        return {"encoder_hidden_states": states[:, None] if states.ndim == 2 else states}
    if isinstance(condition, ConditionList):
        out: dict[str, Tensor] = {}
        for item in condition.items:
            out.update(model_kwargs(item))
        return out
    raise ShapeError(
        f"a diffusers model takes ClassLabel, Embedding or ConditionList conditions, not {type(condition).__name__}"
    )


class DiffusersNetwork(nn.Module):
    """A diffusers model called as a diffusekit network: ``network(x, timestep, condition)``.

    The timestep is one per sample (diffusers models have no per-pixel time): a scalar is
    broadcast over the batch and a time tensor must be ``(B,)`` (trailing singleton
    dimensions are dropped). When the model returns twice the input's channels the second
    half is a learned variance and is dropped.
    """

    time_conditioned: ClassVar[bool] = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, timestep: Tensor, condition: Condition | None = None) -> Tensor:
        batch = x.shape[0]
        ts = timestep
        while ts.ndim > 1 and ts.shape[-1] == 1:
            ts = ts.squeeze(-1)
        if ts.ndim > 1 or (ts.ndim == 1 and ts.shape[0] not in (1, batch)):
            raise ShapeError(
                f"a diffusers model takes one timestep per sample; got times of shape {tuple(timestep.shape)} "
                f"for a batch of {batch}"
            )
        ts = ts.to(device=x.device, dtype=torch.float32).reshape(-1).expand(batch)
        out = self.model(x, ts, **model_kwargs(condition), return_dict=False)[0]
        if out.shape[1] == 2 * x.shape[1]:  # a learned variance: not used by diffusekit's samplers
            out = out[:, : x.shape[1]]
        return out.to(x.dtype)


def denoiser(model: nn.Module, scheduler: Any) -> Denoiser:
    """A diffusers model with the schedule and prediction type of ``scheduler`` (a diffusers
    scheduler, its config or a dict) as a single-part diffusekit :class:`~diffusekit.Denoiser`.

    Any diffusekit sampler runs it: ``sampler.sample(den, (B, C, H, W), grid)``.
    """
    return Denoiser(
        DiffusersNetwork(model),
        {"x": DiffusersSchedule.from_config(scheduler)},
        {"x": DiffusersPrediction.from_config(scheduler)},
    )
