"""``diffusekit new-plugin``: the scaffold is an installable plugin that passes its own contracts.

The package is pip-installed with ``--target`` into a temporary folder (the equivalent
of ``pip install ./demo`` without touching the shared environment) and used through
``PYTHONPATH`` by real ``diffusekit`` subprocesses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakeplugins import TINY_RUN_ARGS, assert_one_line_error, assert_png, env_with, run_cli  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    """``new-plugin demo`` in a fresh folder, pip-installed into ``site`` next to it."""
    root = tmp_path_factory.mktemp("scaffold")
    result = run_cli("new-plugin", "demo", "--dir", root, cwd=root)
    assert result.returncode == 0, result.stderr
    package = root / "demo"
    assert (package / "pyproject.toml").is_file()
    site = root / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(site),
            str(package),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return {"root": root, "package": package, "site": site}


def test_new_plugin_writes_a_package(demo):
    package = demo["package"]
    assert (package / "src" / "diffusekit_demo" / "plugin.py").is_file()
    assert (package / "tests").is_dir()
    text = (package / "pyproject.toml").read_text(encoding="utf-8")
    assert "[project.entry-points.diffusekit]" in text
    # no template placeholder is left in any generated file
    for path in package.rglob("*"):
        if path.is_file() and path.suffix in {".py", ".toml", ".md"} and "build" not in path.parts:
            assert "$" not in path.read_text(encoding="utf-8").replace("$$", ""), path
    assert not any(p.name.endswith(".tmpl") for p in package.rglob("*"))


def test_installed_plugin_passes_check(demo, tmp_path):
    result = run_cli("check", "demo", "-v", cwd=tmp_path, env=env_with(demo["site"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "demo:power" in result.stdout
    # "N/N contracts passed": every contract that ran passed, and at least one ran
    summary = [line for line in result.stdout.splitlines() if "contracts passed" in line]
    assert summary, result.stdout
    passed, total = summary[-1].split()[0].split("/")
    assert passed == total and int(total) > 0


def test_installed_plugin_is_listed(demo, tmp_path):
    result = run_cli("plugins", "--json", cwd=tmp_path, env=env_with(demo["site"]))
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["demo"]["error"] is None
    assert plugins["demo"]["distribution"] == "diffusekit-demo"
    assert plugins["demo"]["components"] == {"grid": ["demo:power"]}
    assert plugins["gaussian"]["error"] is None


def test_new_component_is_usable_by_name_in_a_recipe(demo, tmp_path):
    env = env_with(demo["site"])
    out = tmp_path / "out"
    result = run_cli(
        "run",
        "gaussian:digits",
        "--num",
        "10",
        "--out",
        out,
        *TINY_RUN_ARGS,
        "--set",
        "grid=demo:power",
        "--set",
        "grid.steps=3",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "samples.safetensors").is_file()
    assert_png(out / "grid.png")
    # the recipe really resolved demo:power: its parameters are checked against that class
    message = assert_one_line_error(
        run_cli(
            "run",
            "gaussian:digits",
            "--out",
            out,
            *TINY_RUN_ARGS,
            "--set",
            "grid=demo:power",
            "--set",
            "grid.nonsense=1",
            cwd=tmp_path,
            env=env,
        )
    )
    assert "grid.nonsense" in message and "demo:power" in message


def test_generated_tests_pass_under_pytest(demo):
    # run from the scaffold's folder so that this repository's pytest configuration does not apply
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(demo["package"] / "tests"),
            "-v",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
        ],
        cwd=demo["root"],
        env=env_with(demo["site"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # the diffusekit_contract fixture made one test per contract of demo's component
    passed = [line for line in result.stdout.splitlines() if "demo:power" in line and "PASSED" in line]
    assert passed, result.stdout
    assert "FAILED" not in result.stdout


def test_new_plugin_refuses_an_existing_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine", encoding="utf-8")
    message = assert_one_line_error(run_cli("new-plugin", "taken", "--dir", tmp_path, cwd=tmp_path))
    assert "taken" in message
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("name", ["My-Plugin", "2fast"])
def test_new_plugin_refuses_a_bad_name(tmp_path, name):
    message = assert_one_line_error(run_cli("new-plugin", name, "--dir", tmp_path, cwd=tmp_path))
    assert name in message
    assert list(tmp_path.iterdir()) == []
