"""SIGKILL in the middle of training: the checkpoint on disk is always whole and finite, and resume cleans up.

A ``diffusekit train`` subprocess writes a checkpoint (and keeps two earlier ones) after
every step. Once a write's temporary file appears, the process is killed after a seeded
random delay of up to a few milliseconds, so the kill lands while the file is being
written, fsynced or renamed, or just after. After each kill the checkpoint must load
and hold finite tensors, and ``train --resume`` must finish and leave no temporary file
and no metric step twice. Each trial resumes the run the previous one left, so the
kills also hit resumed runs.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from diffusekit.checkpoint import load_checkpoint, read_metadata

sys.path.insert(0, str(Path(__file__).parent))

from fakeplugins import diffusekit_script, digits_recipe, env_with, run_cli  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

# A wider U-Net than the other tests' (about 11 MiB of checkpoint with optimizer state), so
# that each write takes a while.
KILL_RECIPE = digits_recipe(
    method=False,
    channels=32,
    channel_mult="[1, 2]",
    steps=100000,
    batch_size=2,
    checkpoint_every=1,
    log_every=1,
    keep_checkpoints=2,
)

TRIALS = 4
KILL_DELAYS = [random.Random(20240917).uniform(0.0, 0.01) for _ in range(TRIALS)]
"""Seconds from seeing a checkpoint's temporary file to the SIGKILL."""

HANG_GUARD_S = 1800
"""Seconds; only a guard against a hung subprocess, far beyond what a loaded machine takes."""


def _step(path: Path) -> int | None:
    """The step of the checkpoint at ``path`` (replaced atomically, so it is always whole), or None."""
    return int(read_metadata(path)["diffusekit.step"]) if path.is_file() else None


def _assert_whole_and_finite(path: Path) -> int:
    ckpt = load_checkpoint(path)
    assert any(k.startswith("optim.") for k in ckpt.tensors), f"{path}: no optimizer state"
    for key, value in ckpt.tensors.items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), f"{path}: {key} is not finite"
    return ckpt.step


def _writing(out: Path) -> bool:
    """Whether a temporary file of ``out`` exists: a write of it is under way (or was cut short)."""
    return any(n.startswith(f".{out.name}.") and n.endswith(".tmp") for n in os.listdir(out.parent))


def _kill_during_training(recipe: Path, out: Path, delay: float, log: Path) -> int:
    """Start (or resume) training to ``out`` and SIGKILL it ``delay`` s into a checkpoint write; the step on disk."""
    before = _step(out)
    args = [diffusekit_script(), "train", str(recipe), "--out", str(out), "--no-progress"]
    args += ["--resume"] if before is not None else []
    with log.open("w") as stderr:
        proc = subprocess.Popen(args, cwd=out.parent, env=env_with(), stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + HANG_GUARD_S
            # past the first new checkpoint (of the run, not the one resumed), then into a write
            while not (_writing(out) and (_step(out) or 0) > (before or 0)):
                if proc.poll() is not None:
                    pytest.fail(f"training exited early ({proc.returncode}): {log.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail("hang guard: no new checkpoint was written")
                time.sleep(0.0005)
            time.sleep(delay)
            proc.kill()  # SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -9, f"training ended on its own before the kill: {log.read_text()}"
    return _assert_whole_and_finite(out)


def test_sigkill_during_checkpoint_writes_never_loses_the_checkpoint(tmp_path):
    recipe = tmp_path / "kill.toml"
    recipe.write_text(KILL_RECIPE, encoding="utf-8")
    runs = tmp_path / "runs"
    runs.mkdir()
    out = runs / "m.safetensors"
    for trial, delay in enumerate(KILL_DELAYS):
        step = _kill_during_training(recipe, out, delay, tmp_path / f"kill{trial}.log")
        for kept in runs.glob("m.step*.safetensors"):  # the earlier checkpoints kept beside it are whole too
            assert _assert_whole_and_finite(kept) <= step  # equal: killed between keeping and replacing

        resume = ("train", recipe, "--out", out, "--resume", "--steps", str(step + 1), "--no-progress")
        result = run_cli(*resume, cwd=runs, timeout=HANG_GUARD_S)
        assert result.returncode == 0, f"trial {trial}: resume failed: {result.stderr}"
        assert _assert_whole_and_finite(out) == step + 1
        assert [p.name for p in runs.iterdir() if p.name.endswith(".tmp")] == [], f"trial {trial}: files left behind"
        rows = [json.loads(line) for line in (runs / "m.metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        assert [r["step"] for r in rows] == list(range(1, step + 2)), f"trial {trial}: metric steps repeated or lost"
        assert len(list(runs.glob("m.step*.safetensors"))) <= 2
