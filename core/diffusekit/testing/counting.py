"""A denoiser that counts how often the network is called: what a sampler costs, measured."""

from __future__ import annotations

from typing import Any


class CountingDenoiser:
    """Wraps a denoiser (or an oracle) and counts its ``calls`` and the ``rows`` (samples) they
    evaluate; every other attribute is the wrapped one's, so samplers see the same denoiser.
    ``rows / batch`` is the network cost per sample of a sampler that batches candidates or skips
    finished samples.

    No contract checks a sampler's ``evaluations_per_step``; this is how a test measures it::

        counting = CountingDenoiser(OracleDenoiser.single(mixture, TrigonometricSchedule()))
        Heun().sample(counting, (8, 2), UniformGrid(steps=10), dtype=torch.float64)
        assert counting.calls == 19  # 2 per step, 1 on the step onto the data
    """

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls, self.rows = inner, 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.rows += int(next(iter(x.values())).shape[0]) if isinstance(x, dict) else int(x.shape[0])
        return self.inner(x, *args, **kwargs)
