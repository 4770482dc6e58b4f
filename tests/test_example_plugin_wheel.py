"""The example third-party plugin (``contrib/example-plugin``) installs as a user installs it:
from a built wheel into a fresh environment holding only PyTorch and the core, where
``diffusekit plugins`` lists it, ``diffusekit check`` passes on it and its own tests pass."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "contrib" / "example-plugin"


def _run(*args, cwd=None, env=None):
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_example_plugin_installs_from_a_wheel_and_passes_its_tests(tmp_path):
    wheels = tmp_path / "wheels"
    for source in (ROOT, PLUGIN):  # wheels, not editable paths; the build needs no network
        _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, source)
    env_dir = tmp_path / "env"
    _run(sys.executable, "-m", "venv", env_dir)
    python = env_dir / "bin" / "python"
    _run(ROOT / "scripts" / "install-torch.sh", python)
    _run(python, "-m", "pip", "install", "-q", *sorted(wheels.glob("*.whl")), "pytest>=7.4")

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "DIFFUSEKIT"))}
    clean["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{clean.get('PATH', '')}"
    listed = _run(env_dir / "bin" / "diffusekit", "plugins", env=clean)
    assert "restart" in listed and "gaussian" not in listed  # the core and this plugin, nothing else
    _run(env_dir / "bin" / "diffusekit", "check", "restart", env=clean)
    # its tests run from a copy, as a user runs them after `pip download`: no repository around
    tests = tmp_path / "plugin-tests"
    shutil.copytree(PLUGIN / "tests", tests)
    _run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests, cwd=tmp_path, env=clean)
