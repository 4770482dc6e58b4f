"""A denoiser that counts how often the network is called: what a sampler costs, measured."""

from __future__ import annotations

from typing import Any


class CountingDenoiser:
    """Wraps a denoiser (or an oracle) and counts its ``calls`` and the ``rows`` (samples) they
    evaluate; every other attribute is the wrapped one's, so samplers see the same denoiser.
    ``rows / batch`` is the network cost per sample of a sampler that batches candidates or skips
    finished samples."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls, self.rows = inner, 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.rows += int(next(iter(x.values())).shape[0]) if isinstance(x, dict) else int(x.shape[0])
        return self.inner(x, *args, **kwargs)
