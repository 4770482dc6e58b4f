r"""A perceptual distance between views, from a small feature network trained on the plugin's scenes.

LPIPS (Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric") compares two images through the activations of a network trained for recognition:
at each layer :math:`l` the features :math:`\hat y^l_{hw}` are normalised to unit length over
channels at every position, and

.. math:: d(x, x_0) = \frac1L \sum_l \frac{1}{H_l W_l} \sum_{h,w} \lVert \hat y^l_{hw} - \hat y^l_{0,hw} \rVert_2^2 .

LPIPS's ImageNet network and its learned per-channel weights cannot be had here (no model hub),
so :class:`ViewFeatures` is the plugin's own: three stages of two 3×3 convolutions (16, 32 and
64 channels at 32², 16² and 8²), trained by :func:`train_view_features` to tell, from one view
of a training-split scene, the kind of its largest primitive, that primitive's colour and how
many primitives the scene has. Its layers then respond to shape, colour and layout rather than
to single pixels, which is what the distance should weigh; the channels are weighted equally
(LPIPS's "baseline" variant, without the learned linear layer). ``diffusekit
train-view-features`` trains it; the plugin ships the weights it made
(:func:`shipped_view_features`).

:func:`perceptual_distance` is 0 for equal images, symmetric, non-negative and at most 4
(unit vectors are at most 2 apart).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from diffusekit_multiview import primitives, scenes

WIDTHS = (16, 32, 64)
HEADS = {"kind": len(primitives.KINDS), "colour": len(scenes.PALETTE), "count": scenes.MAX_PRIMITIVES}
"""What the network learns to tell from one view, with the number of classes of each."""
_EPS = 1e-10


class ViewFeatures(nn.Module):
    """The feature network: images ``(..., 3, S, S)`` in [-1, 1] → one feature map per stage."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        self.widths = tuple(widths)
        stages, before = [], 3
        for width in self.widths:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(before, width, 3, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(width, width, 3, padding=1),
                    nn.ReLU(),
                )
            )
            before = width
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleDict({name: nn.Linear(before, count) for name, count in HEADS.items()})

    def features(self, images: Tensor) -> list[Tensor]:
        """Each stage's activations ``(..., C, S', S')`` for images ``(..., 3, S, S)``."""
        lead = images.shape[:-3]
        x = images.reshape(-1, *images.shape[-3:])
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(nn.functional.avg_pool2d(x, 2) if i else x)
            out.append(x.reshape(*lead, *x.shape[1:]))
        return out

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """The logits of every head (:data:`HEADS`) for images ``(N, 3, S, S)``."""
        pooled = self.features(images)[-1].mean((-2, -1))
        return {name: head(pooled) for name, head in self.heads.items()}


def perceptual_distance(a: Tensor, b: Tensor, net: ViewFeatures) -> Tensor:
    """The distance ``(...)`` between images ``a`` and ``b`` ``(..., 3, S, S)`` in [-1, 1] (see the module)."""
    if a.shape != b.shape or a.ndim < 3 or a.shape[-3] != 3:
        raise ValueError(
            f"expected two image batches (..., 3, S, S) of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    with torch.no_grad():
        total = torch.zeros(a.shape[:-3])
        for fa, fb in zip(net.features(a.float()), net.features(b.float()), strict=True):
            na = fa / (fa.square().sum(-3, keepdim=True) + _EPS).sqrt()
            nb = fb / (fb.square().sum(-3, keepdim=True) + _EPS).sqrt()
            total = total + (na - nb).square().sum(-3).mean((-2, -1))
    return total / len(net.stages)


def view_targets(batch: scenes.SceneBatch) -> dict[str, Tensor]:
    """What each scene of ``batch`` shows, for the heads: the kind and colour (index into
    :data:`~diffusekit_multiview.scenes.PALETTE`) of its largest primitive, and its number of
    primitives less one, each ``(N,)``."""
    found = batch.primitives
    largest = scenes.largest_primitive(found)[:, None]
    colour = found.colour.gather(1, largest[..., None].expand(-1, -1, 3))[:, 0]
    palette = torch.tensor(scenes.PALETTE, dtype=colour.dtype)
    return {
        "kind": batch.shape_class,
        "colour": torch.cdist(colour, palette).argmin(-1),
        "count": found.present.sum(-1) - 1,
    }


def accuracy(net: ViewFeatures, batch: scenes.SceneBatch) -> dict[str, float]:
    """The fraction of views of ``batch`` for which each head names the right class."""
    targets = view_targets(batch)
    views = batch.views * 2.0 - 1.0
    with torch.no_grad():
        logits = net(views.flatten(0, 1))
    per_view = {k: t[:, None].expand(views.shape[:2]).flatten() for k, t in targets.items()}
    return {k: float((logits[k].argmax(-1) == per_view[k]).float().mean()) for k in HEADS}


def train_view_features(
    *,
    scenes_count: int = 3000,
    views: int = 4,
    steps: int = 3000,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    log: Callable[[int, float], None] | None = None,
) -> ViewFeatures:
    """Train :class:`ViewFeatures` on single views of ``scenes_count`` training-split scenes drawn
    with ``seed`` (the sum of the heads' cross-entropies; Adam, cosine decay to 0)."""
    batch = scenes.Shapes(count=scenes_count, views=views, seed=seed).generate()
    images = (batch.views * 2.0 - 1.0).flatten(0, 1)
    targets = {k: t.repeat_interleave(views) for k, t in view_targets(batch).items()}
    torch.manual_seed(seed)
    net = ViewFeatures()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        rows = torch.randint(len(images), (batch_size,), generator=gen)
        logits = net(images[rows])
        loss = sum(nn.functional.cross_entropy(logits[k], targets[k][rows]) for k in HEADS)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step % 100 == 0 or step == steps):
            log(step, loss.item())
    return net.eval()


def save_view_features(net: ViewFeatures, path: Path, *, half: bool = True) -> None:
    """Safetensors (float16 unless ``half`` is false), written atomically, the widths in the metadata."""
    from diffusekit.checkpoint import atomic_write
    from safetensors.torch import save

    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in net.state_dict().items()}
    atomic_write(Path(path), save(tensors, metadata={"widths": ",".join(map(str, net.widths))}))


def load_view_features(path: Path) -> ViewFeatures:
    """The network saved at ``path`` by :func:`save_view_features`."""
    from diffusekit import CheckpointError
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
        net = ViewFeatures(tuple(int(w) for w in meta["widths"].split(",")))
        net.load_state_dict(tensors)
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: not a view feature network ({type(exc).__name__}: {exc})") from None
    return net.eval()


def shipped_view_features() -> ViewFeatures:
    """The feature network the plugin ships (``weights/features.safetensors``, made by
    ``diffusekit train-view-features``)."""
    from diffusekit import ConfigError, packaged_weights

    path = packaged_weights("diffusekit_multiview", "features")
    if path is None:
        raise ConfigError("features", "no view feature network ships; train one: diffusekit train-view-features")
    return load_view_features(path)


__all__ = [
    "HEADS",
    "ViewFeatures",
    "accuracy",
    "load_view_features",
    "perceptual_distance",
    "save_view_features",
    "shipped_view_features",
    "train_view_features",
    "view_targets",
]
