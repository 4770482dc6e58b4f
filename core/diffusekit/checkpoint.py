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
import re
import struct
import uuid
from pathlib import Path

import attrs
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor

from diffusekit.errors import CheckpointError, DiffusekitError
from diffusekit.recipe import Recipe, dumps_json, loads_json

FORMAT = "diffusekit-checkpoint/1"
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar"})
TMP_PREFIX, TMP_SUFFIX = ".", ".tmp"
"""Temporary files are ``.<name>.<uuid>.tmp`` next to their target (see :func:`temporary_files`)."""


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


def _looks_like_pickle(head: bytes) -> bool:
    """A zip archive (``torch.save``'s default) or a pickle stream (PROTO opcode, protocol 2-5)."""
    return head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def _header(path: Path) -> dict:
    """The JSON header of a safetensors file; refuses pickle and anything else by its bytes.

    A safetensors file starts with the header's length as 8 little-endian bytes, then the
    header, a JSON object. Pickle is recognised only when the bytes are *not* such a
    header: a length such as 128 + 256k starts with the byte 0x80, like a pickle.
    """
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing to load a pickle checkpoint ({path.suffix}); pickle can run arbitrary code, "
            "and diffusekit reads safetensors only"
        )
    try:
        with path.open("rb") as f:
            head = f.read(9)
            length = struct.unpack("<Q", head[:8])[0] if len(head) == 9 else 0
            is_header = head[8:9] == b"{" and 8 + length <= path.stat().st_size
            if is_header:
                f.seek(8)
                raw = f.read(length)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not is_header:
        if _looks_like_pickle(head):
            raise CheckpointError(
                f"{path}: this file is a pickle (torch.save) archive; diffusekit reads safetensors only"
            )
        raise CheckpointError(f"{path}: not a safetensors file")
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    return header


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name in the same directory (so the rename is atomic); created with the umask's permissions
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temporary_files(path: str | Path) -> list[Path]:
    """Remove the temporary files that writes of ``path`` left behind when their process was
    killed (only names of the exact form ``.<name>.<32 hex digits>.tmp``); return them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(TMP_PREFIX + path.name)}\.[0-9a-f]{{32}}{re.escape(TMP_SUFFIX)}")
    orphans = sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return orphans


def write_tensors(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` as a plain safetensors file, atomically (samples, exported arrays)."""
    path = Path(path)
    # cloned: safetensors refuses tensors that share storage (tied weights, views)
    payload = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, save(payload, metadata=metadata))
    return path


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
    metadata = {
        "format": "pt",
        "diffusekit.format": FORMAT,
        "diffusekit.recipe": dumps_json(recipe),
        "diffusekit.versions": json.dumps(package_versions(), sort_keys=True),
        "diffusekit.step": str(int(step)),
        **(extra or {}),
    }
    write_tensors(path, tensors, metadata)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of ``path`` (without loading tensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    metadata = _header(path).get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: malformed safetensors metadata (expected a table of strings)")
    return metadata


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a diffusekit checkpoint; refuses pickle and files without a recipe."""
    path = Path(path)
    metadata = read_metadata(path)
    if metadata.get("diffusekit.format") != FORMAT or "diffusekit.recipe" not in metadata:
        raise CheckpointError(
            f"{path}: a safetensors file, but not a diffusekit checkpoint (no recipe in its metadata)"
        )
    try:
        recipe = loads_json(metadata["diffusekit.recipe"])
        step = int(metadata.get("diffusekit.step", "0"))
    except (DiffusekitError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed diffusekit metadata: {exc}") from None
    return Checkpoint(read_tensors(path, checked=True), recipe, {**metadata, "diffusekit.step": str(step)})


def read_tensors(path: str | Path, *, checked: bool = False) -> dict[str, Tensor]:
    """The tensors of a safetensors file (any, not only checkpoints); refuses pickle by its bytes.
    (``checked``: the header was read already.)"""
    path = Path(path)
    if not checked:
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file")
        _header(path)
    try:
        # read through Python: the path may not be valid UTF-8, which safetensors' own reader refuses
        return load(path.read_bytes())
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read tensors: {exc}") from None
