"""Shared set-up of the benchmarks: the competitors, the exact oracle, NFE counting.

k-diffusion's package ``__init__`` imports its training stack (torchvision, clean-fid,
wandb, ...), and the torchvision wheel on PyPI does not load beside a CPU build of
torch. The samplers live in ``k_diffusion.sampling`` (plus ``k_diffusion.utils``), which
never touch torchvision, so only those two modules are imported, with torchvision
stubbed during the import.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
import types

import torch
from diffusekit.testing import CountingDenoiser

F64 = torch.float64


def import_k_diffusion_sampling() -> types.ModuleType:
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("k-diffusion is not installed: run `make bench-install`")
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    stubs = {
        name: types.ModuleType(name)
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    }
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules["k_diffusion"] = package
    sys.modules.update(stubs)
    try:
        import k_diffusion.sampling as sampling
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return sampling


Counting = CountingDenoiser  # network calls (and rows) of a sampler


def environment() -> str:
    import diffusekit

    versions = [
        f"python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"diffusekit {diffusekit.__version__}",
    ]
    for dist in ("diffusers", "k-diffusion"):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; " + ", ".join(
        versions
    )


import importlib.metadata  # noqa: E402  (used by environment())


def parse_settings(pairs: list[str] | None) -> dict[str, object]:
    """``KEY=VALUE`` options (``--set``) as recipe overrides, values parsed as the CLI parses them."""
    from diffusekit.recipe import parse_value

    out: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = parse_value(value.strip())
    return out
