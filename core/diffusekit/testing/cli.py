"""Running the ``diffusekit`` command for real in tests: a plugin's CLI behaviour is tested
through the installed console script in a subprocess, as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def diffusekit_script() -> str:
    """The ``diffusekit`` console script of the running interpreter's environment."""
    found = shutil.which("diffusekit", path=os.path.dirname(sys.executable))
    if found is None:  # pragma: no cover - the package is installed with its script
        raise RuntimeError(f"no diffusekit script next to {sys.executable}")
    return found


def run_cli(
    *args: str | os.PathLike[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``diffusekit ARGS`` in a subprocess (text output captured; never raises on a non-zero exit)."""
    return subprocess.run(
        [diffusekit_script(), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert ``result`` failed with exactly one line ``Error: ...`` on stderr and no traceback; return the message."""
    assert result.returncode != 0, f"expected a failure, got exit 0:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0][len("Error: ") :]
