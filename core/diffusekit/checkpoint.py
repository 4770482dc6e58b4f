"""Checkpoints: safetensors only, self-describing, written atomically.

A checkpoint holds tensors under prefixes (``model.``, ``ema.``, ``optim.``) and, in
the safetensors metadata, the recipe (JSON), the versions of diffusekit, torch and the
loaded plugins, and the training step — so ``diffusekit sample model.safetensors``
needs nothing else. Pickle is never loaded: ``.pt``/``.pkl`` files, and files whose
bytes are a pickle, are refused. Writes go to a temporary file in the same directory
that is fsynced and then renamed over the target, so a crash leaves either the old
checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from pathlib import Path

import attrs
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from diffusekit.errors import CheckpointError
from diffusekit.recipe import Recipe, dumps_json, loads_json

FORMAT = "diffusekit-checkpoint/1"
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar"})


@attrs.frozen(eq=False)
class Checkpoint:
    """A loaded checkpoint."""

    tensors: dict[str, Tensor]
    recipe: Recipe
    metadata: dict[str, str]

    @property
    def step(self) -> int:
        return int(self.metadata.get("diffusekit.step", "0"))

    @property
    def versions(self) -> dict[str, str]:
        return json.loads(self.metadata.get("diffusekit.versions", "{}"))

    def group(self, prefix: str) -> dict[str, Tensor]:
        """Tensors under ``prefix.`` with the prefix removed."""
        start = prefix + "."
        return {k[len(start) :]: v for k, v in self.tensors.items() if k.startswith(start)}

    def weights(self) -> dict[str, Tensor]:
        """The weights to sample with: the EMA weights when present, else the raw ones."""
        return self.group("ema") or self.group("model")


def package_versions() -> dict[str, str]:
    """Versions of torch, diffusekit and the distributions of the loaded plugins."""
    from diffusekit.plugins import loaded

    versions = {"torch": torch.__version__}
    for info in loaded().plugins.values():
        if info.distribution and info.version and info.error is None:
            versions[info.distribution] = info.version
    return versions


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing to load a pickle checkpoint ({path.suffix}); pickle can run arbitrary code, "
            "and diffusekit reads safetensors only"
        )
    with path.open("rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        raise CheckpointError(f"{path}: this file is a pickle (torch.save) archive; diffusekit reads safetensors only")
    if len(head) < 9 or head[8:9] != b"{" or struct.unpack("<Q", head[:8])[0] > path.stat().st_size:
        raise CheckpointError(f"{path}: not a safetensors file")


def save_checkpoint(
    path: str | Path,
    tensors: dict[str, Tensor],
    recipe: Recipe,
    *,
    step: int = 0,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``tensors`` and the recipe to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path}: checkpoints are safetensors files; use a .safetensors name")
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "pt",
        "diffusekit.format": FORMAT,
        "diffusekit.recipe": dumps_json(recipe),
        "diffusekit.versions": json.dumps(package_versions(), sort_keys=True),
        "diffusekit.step": str(int(step)),
        **(extra or {}),
    }
    payload = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    # a unique name in the same directory (so the rename is atomic); created with the umask's permissions
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(save(payload, metadata=metadata))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of ``path`` (without loading tensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    _refuse_pickle(path)
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: not a safetensors file (unreadable header)") from None
    return dict(header.get("__metadata__") or {})


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a diffusekit checkpoint; refuses pickle and files without a recipe."""
    path = Path(path)
    metadata = read_metadata(path)
    if metadata.get("diffusekit.format") != FORMAT or "diffusekit.recipe" not in metadata:
        raise CheckpointError(
            f"{path}: a safetensors file, but not a diffusekit checkpoint (no recipe in its metadata)"
        )
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read tensors: {exc}") from None
    return Checkpoint(tensors, loads_json(metadata["diffusekit.recipe"]), metadata)
