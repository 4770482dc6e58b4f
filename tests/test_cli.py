"""The ``diffusekit`` console script, run for real in subprocesses.

Plugins are discovered through entry points, so the broken and colliding plugins of
these tests are fake distributions (:mod:`fakeplugins`) put on ``PYTHONPATH``.
``install``/``uninstall`` are tested in-process with click's runner, with pip replaced.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import fakeplugins  # noqa: E402
from diffusekit.registry import HOOKS  # noqa: E402
from fakeplugins import (  # noqa: E402
    TINY_RUN_ARGS,
    assert_one_line_error,
    assert_png,
    digits_recipe,
    env_with,
    run_cli,
)

HOOK_NAMES = HOOKS  # kind -> the hook that registers it

TINY_RECIPE = digits_recipe()


def _json(result: subprocess.CompletedProcess[str]):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _by_name(infos: list[dict]) -> dict[str, dict]:
    return {i["name"]: i for i in infos}


@pytest.fixture(scope="module")
def fake_site(tmp_path_factory) -> Path:
    """A folder with three fake plugins: one broken on import, one broken in a hook, one working."""
    site = tmp_path_factory.mktemp("fake_site")
    fakeplugins.broken_import(site)
    fakeplugins.broken_hook(site)
    fakeplugins.working(site)
    return site


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory) -> list[dict]:
    """``diffusekit plugins --json`` with only the installed plugins (run once per module and worker)."""
    return _json(run_cli("plugins", "--json", cwd=tmp_path_factory.mktemp("plugins")))


@pytest.fixture(scope="module")
def fake_plugins(tmp_path_factory, fake_site) -> dict[str, dict]:
    """``diffusekit plugins --json`` with the fake plugins on PYTHONPATH, by plugin name."""
    return _by_name(
        _json(run_cli("plugins", "--json", cwd=tmp_path_factory.mktemp("plugins"), env=env_with(fake_site)))
    )


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    path.write_text(TINY_RECIPE, encoding="utf-8")
    return path


# --- plugins ---------------------------------------------------------------------------------------


def test_plugins_json_lists_gaussian_with_distribution_version_hooks_and_components(installed_plugins):
    plugins = _by_name(installed_plugins)
    assert "core" not in plugins, "the built-in plugin is listed only with --all"
    gaussian = plugins["gaussian"]
    assert gaussian["error"] is None
    assert gaussian["distribution"] == "diffusekit-gaussian"
    assert gaussian["version"] == md.version("diffusekit-gaussian")
    assert "gaussian:heun" in gaussian["components"]["sampler"]
    assert "gaussian:digits" in gaussian["components"]["method"]
    # every kind with components was registered by that kind's hook, and every hook is a register_* hook
    assert set(gaussian["hooks"]) <= set(HOOK_NAMES.values()) | {"register_commands"}
    assert "register_commands" in gaussian["hooks"]  # it adds optimize-grid
    assert {HOOK_NAMES[kind] for kind in gaussian["components"]} <= set(gaussian["hooks"])
    assert all(name.startswith("gaussian:") for names in gaussian["components"].values() for name in names)


def test_plugins_all_adds_core(tmp_path):
    plugins = _by_name(_json(run_cli("plugins", "--json", "--all", cwd=tmp_path)))
    assert {"core", "gaussian"} <= set(plugins)
    core = plugins["core"]
    assert core["builtin"] is True and core["error"] is None
    assert core["distribution"] == "diffusekit"
    assert all(name.startswith("core:") for names in core["components"].values() for name in names)
    assert plugins["gaussian"]["builtin"] is False


def test_plugins_text_output_names_each_plugin(tmp_path, fake_site):
    result = run_cli("plugins", cwd=tmp_path, env=env_with(fake_site))
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert {"gaussian", "broken", "hookfail", "works"} <= set(lines)
    assert fakeplugins.BROKEN_IMPORT_MESSAGE in lines["broken"]
    assert fakeplugins.BROKEN_IMPORT_MESSAGE not in lines["gaussian"]


def test_plugin_failing_on_import_is_reported_and_others_still_work(tmp_path, fake_site, fake_plugins):
    broken = fake_plugins["broken"]
    assert broken["error"] is not None and fakeplugins.BROKEN_IMPORT_MESSAGE in broken["error"]
    assert broken["distribution"] == "fake-broken"
    assert broken["components"] == {}
    assert fake_plugins["gaussian"]["error"] is None
    assert "gaussian:heun" in fake_plugins["gaussian"]["components"]["sampler"]

    listed = run_cli("list", "sampler", cwd=tmp_path, env=env_with(fake_site))
    assert listed.returncode == 0, listed.stderr
    assert "gaussian:heun" in listed.stdout


def test_plugin_whose_hook_raises_registers_nothing(tmp_path, fake_site, fake_plugins):
    hookfail = fake_plugins["hookfail"]
    assert hookfail["error"] is not None and fakeplugins.BROKEN_HOOK_MESSAGE in hookfail["error"]
    assert hookfail["components"] == {}
    assert fake_plugins["works"]["error"] is None
    assert fake_plugins["works"]["components"] == {"grid": ["works:linear"]}

    grids = _json(run_cli("list", "grid", "--json", cwd=tmp_path, env=env_with(fake_site)))
    names = {g["name"] for g in grids}
    assert "works:linear" in names and "gaussian:karras" in names
    assert not any(n.startswith("hookfail:") for n in names), "a plugin whose hook failed kept a component"


def test_env_var_empty_loads_no_third_party_plugin(tmp_path, fake_site):
    env = env_with(fake_site, DIFFUSEKIT_PLUGINS="")
    assert _json(run_cli("plugins", "--json", cwd=tmp_path, env=env)) == []
    assert [p["name"] for p in _json(run_cli("plugins", "--json", "--all", cwd=tmp_path, env=env))] == ["core"]
    entries = _json(run_cli("list", "--json", cwd=tmp_path, env=env))
    assert entries, "core's components are always registered"
    assert all(e["name"].startswith("core:") for e in entries)


def test_env_var_selects_plugins(tmp_path, fake_site):
    only = _json(run_cli("plugins", "--json", cwd=tmp_path, env=env_with(fake_site, DIFFUSEKIT_PLUGINS="gaussian")))
    assert [p["name"] for p in only] == ["gaussian"]
    assert only[0]["error"] is None
    two = _json(
        run_cli("plugins", "--json", cwd=tmp_path, env=env_with(fake_site, DIFFUSEKIT_PLUGINS=" works , gaussian"))
    )
    assert sorted(p["name"] for p in two) == ["gaussian", "works"]


def test_name_collision_loads_no_claimant_and_names_them_all(tmp_path):
    """Which claimant would win depends on sys.path and directory order, so none loads."""
    site = tmp_path / "site"
    impostors = fakeplugins.impostors(site, "gaussian")
    env = env_with(site)
    result = run_cli("plugins", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    claimants = [p for p in _json(result) if p["name"] == "gaussian"]
    everyone = sorted(["diffusekit-gaussian", *impostors])
    assert sorted(p["distribution"] for p in claimants) == everyone
    for claimant in claimants:
        assert claimant["error"] is not None and claimant["components"] == {}, claimant
        assert all(dist in claimant["error"] for dist in everyone), claimant["error"]
    # the CLI keeps working, without the contested components
    listed = run_cli("list", "grid", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "core:uniform" in listed.stdout and "gaussian:karras" not in listed.stdout


# --- list and show -------------------------------------------------------------------------------


def test_list_shows_components_of_every_plugin(tmp_path):
    result = run_cli("list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "gaussian:heun" in result.stdout and "core:uniform" in result.stdout
    assert "gaussian:karras" in result.stdout


def test_list_sampler_json_matches_plugins(tmp_path, installed_plugins):
    samplers = _json(run_cli("list", "sampler", "--json", cwd=tmp_path))
    assert samplers and all(s["kind"] == "sampler" for s in samplers)
    assert all(isinstance(s["summary"], str) for s in samplers)
    gaussian = _by_name(installed_plugins)["gaussian"]
    assert {s["name"] for s in samplers if s["name"].startswith("gaussian:")} == set(gaussian["components"]["sampler"])


def test_show_heun_prints_documentation_and_parameters(tmp_path):
    text = run_cli("show", "heun", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    [described] = _json(run_cli("show", "heun", "--json", cwd=tmp_path))
    assert described["name"] == "gaussian:heun" and described["kind"] == "sampler"
    assert described["doc"], "heun is documented"
    assert "gaussian:heun" in text.stdout
    assert described["doc"].splitlines()[0] in text.stdout
    assert "parameters" in text.stdout
    for param in described["parameters"]:
        assert param["name"] in text.stdout


def test_show_karras_json_has_parameters_with_defaults(tmp_path):
    [described] = _json(run_cli("show", "gaussian:karras", "--json", cwd=tmp_path))
    assert described["kind"] == "grid" and described["plugin"] == "gaussian"
    params = {p["name"]: p for p in described["parameters"]}
    assert params["steps"]["default"] == 18 and params["steps"]["type"] == "int"
    assert params["rho"]["default"] == 7.0 and params["rho"]["type"] == "float"
    text = run_cli("show", "gaussian:karras", cwd=tmp_path)
    assert text.returncode == 0
    for name in params:
        assert name in text.stdout


def test_show_unknown_component_is_a_one_line_error(tmp_path):
    message = assert_one_line_error(run_cli("show", "nonexistent", cwd=tmp_path))
    assert "nonexistent" in message


# --- one-line errors ------------------------------------------------------------------------------


def test_unknown_component_lists_candidates(tmp_path, recipe_file):
    message = assert_one_line_error(
        run_cli(
            "train", recipe_file, "--out", tmp_path / "c.safetensors", "--set", "sampler=gaussian:nope", cwd=tmp_path
        )
    )
    assert "sampler" in message and "gaussian:nope" in message
    assert "gaussian:heun" in message and "gaussian:ddim" in message
    assert not (tmp_path / "c.safetensors").exists()


def test_wrong_type_names_the_path(tmp_path, recipe_file):
    message = assert_one_line_error(
        run_cli("train", recipe_file, "--out", tmp_path / "c.safetensors", "--set", "grid.steps=ten", cwd=tmp_path)
    )
    assert "grid.steps" in message and "expected int" in message


def test_malformed_toml_recipe(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = \n[[parts", encoding="utf-8")
    message = assert_one_line_error(run_cli("train", bad, "--out", tmp_path / "c.safetensors", cwd=tmp_path))
    assert "TOML" in message


def test_recipe_with_unknown_key(tmp_path):
    recipe = tmp_path / "extra.toml"
    recipe.write_text('colour = "blue"\n' + TINY_RECIPE, encoding="utf-8")
    message = assert_one_line_error(run_cli("train", recipe, "--out", tmp_path / "c.safetensors", cwd=tmp_path))
    assert "colour" in message and "unknown key" in message


def test_missing_recipe_file(tmp_path):
    message = assert_one_line_error(run_cli("run", tmp_path / "absent.toml", "--out", tmp_path / "o", cwd=tmp_path))
    assert "absent.toml" in message


def test_train_refuses_a_non_safetensors_output(tmp_path, recipe_file):
    message = assert_one_line_error(run_cli("train", recipe_file, "--out", tmp_path / "model.pt", cwd=tmp_path))
    assert "--out" in message and "safetensors" in message
    assert not (tmp_path / "model.pt").exists()


def test_sample_refuses_a_pickle_file_by_name(tmp_path):
    import torch

    torch.save({"w": torch.zeros(3)}, tmp_path / "model.pt")
    message = assert_one_line_error(run_cli("sample", "model.pt", "--out", tmp_path / "s", cwd=tmp_path))
    assert "model.pt" in message and "pickle" in message
    assert not (tmp_path / "s").exists()


def test_sample_refuses_a_pickle_disguised_as_safetensors(tmp_path):
    import torch

    torch.save({"w": torch.zeros(3)}, tmp_path / "model.bin")
    (tmp_path / "model.bin").rename(tmp_path / "model.safetensors")
    message = assert_one_line_error(run_cli("sample", "model.safetensors", "--out", tmp_path / "s", cwd=tmp_path))
    assert "pickle" in message
    assert not (tmp_path / "s").exists()


def test_set_without_equals_sign(tmp_path, recipe_file):
    message = assert_one_line_error(
        run_cli("train", recipe_file, "--out", tmp_path / "c.safetensors", "--set", "grid.steps", cwd=tmp_path)
    )
    assert "--set" in message and "grid.steps" in message


# --- train, sample, run ---------------------------------------------------------------------------


def _samples(folder: Path):
    from safetensors.torch import load_file

    tensors = load_file(folder / "samples.safetensors")
    assert len(tensors) == 1
    return next(iter(tensors.values()))


def test_train_then_sample(tmp_path, recipe_file):
    """``train`` writes a self-describing checkpoint; ``sample`` needs nothing else, and takes overrides.

    One test, so that the checkpoint is trained once even when the tests are spread over workers.
    """
    from safetensors import safe_open

    checkpoint = tmp_path / "ckpts" / "tiny.safetensors"  # the folder does not exist yet
    result = run_cli("train", recipe_file, "--out", checkpoint, "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    with safe_open(str(checkpoint), "pt") as f:
        metadata = f.metadata()
        keys = list(f.keys())
    recipe = json.loads(metadata["diffusekit.recipe"])
    assert recipe["network"]["name"] == "gaussian:unet" and recipe["network"]["channels"] == 8
    assert recipe["grid"] == {"name": "gaussian:karras", "steps": 4}
    assert recipe["train"]["steps"] == 3
    assert int(metadata["diffusekit.step"]) == 3
    versions = json.loads(metadata["diffusekit.versions"])
    assert versions["diffusekit-gaussian"] == md.version("diffusekit-gaussian")
    assert versions["diffusekit"] == md.version("diffusekit")
    assert "torch" in versions
    assert any(k.startswith("ema.") for k in keys) and any(k.startswith("model.") for k in keys)

    out = tmp_path / "samples"
    result = run_cli("sample", checkpoint, "--num", "10", "--out", out, "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    samples = _samples(out)
    assert tuple(samples.shape) == (10, 1, 8, 8)
    assert samples.isfinite().all()
    for digit in range(10):
        assert_png(out / f"digit_{digit}.png")

    ddpm = tmp_path / "ddpm"
    result = run_cli(
        "sample",
        checkpoint,
        "--num",
        "10",
        "--out",
        ddpm,
        "--no-progress",
        "--set",
        "sampler=gaussian:ddpm",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    other = _samples(ddpm)
    assert other.shape == samples.shape and other.isfinite().all()
    assert not (other == samples).all(), "the --set sampler override made no difference"

    message = assert_one_line_error(
        run_cli("sample", checkpoint, "--set", "sampler=gaussian:nope", "--out", tmp_path / "s", cwd=tmp_path)
    )
    assert "sampler" in message and "gaussian:ddim" in message


def test_run_digits_writes_grid_and_digit_pngs(tmp_path):
    out = tmp_path / "run"  # does not exist yet
    result = run_cli(
        "run", "gaussian:digits", "--num", "20", "--out", out, *TINY_RUN_ARGS, "--set", "grid.steps=3", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert_png(out / "grid.png")
    for digit in range(10):
        assert_png(out / f"digit_{digit}.png")
    assert tuple(_samples(out).shape) == (20, 1, 8, 8)


# --- install / uninstall wrap pip -----------------------------------------------------------------


def test_install_help(tmp_path):
    result = run_cli("install", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "PACKAGES" in result.stdout and "--editable" in result.stdout


@pytest.fixture
def pip_calls(monkeypatch):
    """Replace ``subprocess.call`` in the CLI; returns the recorded commands (and a settable exit status)."""
    import diffusekit.cli

    calls: list[list[str]] = []
    status = {"code": 0}

    def fake_call(cmd, *args, **kwargs):
        calls.append(list(cmd))
        return status["code"]

    monkeypatch.setattr(diffusekit.cli.subprocess, "call", fake_call)
    return calls, status


def test_install_runs_pip_of_this_environment(pip_calls):
    from click.testing import CliRunner
    from diffusekit.cli import cli

    calls, _ = pip_calls
    runner = CliRunner()
    result = runner.invoke(cli, ["install", "diffusekit-foo", "diffusekit-bar"])
    assert result.exit_code == 0, result.output
    assert calls == [[sys.executable, "-m", "pip", "install", "diffusekit-foo", "diffusekit-bar"]]

    result = runner.invoke(cli, ["install", "-U", "-e", "./a", "./b"])
    assert result.exit_code == 0, result.output
    assert calls[1] == [sys.executable, "-m", "pip", "install", "--upgrade", "-e", "./a", "-e", "./b"]

    result = runner.invoke(cli, ["uninstall", "diffusekit-foo"])
    assert result.exit_code == 0, result.output
    assert calls[2][:4] == [sys.executable, "-m", "pip", "uninstall"] and calls[2][-1] == "diffusekit-foo"


@pytest.mark.parametrize("command", ["install", "uninstall"])
def test_pip_failure_is_a_one_line_error(pip_calls, command):
    from click.testing import CliRunner
    from diffusekit.cli import cli

    calls, status = pip_calls
    status["code"] = 37
    result = CliRunner().invoke(cli, [command, "diffusekit-nothing"])
    assert len(calls) == 1
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "37" in lines[0]


def test_check_runs_the_contracts_on_every_gaussian_component(tmp_path):
    from diffusekit import get_registry

    # every contract of 42 components: a hang guard, not a time limit (it timed out at 120 s on a loaded machine)
    result = run_cli("check", "gaussian", "-v", "--max-examples", "3", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    checked = {line.split()[1].split("::")[0] for line in result.stdout.splitlines() if line.startswith("ok ")}
    assert checked == {e.qualname for e in get_registry().entries(plugin="gaussian")}
    assert "FAIL" not in result.stdout


def test_check_shows_every_distinct_failure_hypothesis_found():
    """A Hypothesis group of failures (nested groups included) is one line per failure, in order,
    each the first line of its message; ``check`` prints the first on its FAIL line and the others after it."""
    import builtins

    from diffusekit.cli import _failure_reasons

    # Python 3.10 has no ExceptionGroup; Hypothesis raises the backport's there
    ExceptionGroup = getattr(builtins, "ExceptionGroup", None) or pytest.importorskip("exceptiongroup").ExceptionGroup
    group = ExceptionGroup(
        "Hypothesis found 3 distinct failures.",
        [ValueError("shape (2, 3) != (2, 4)\ndetails"), ExceptionGroup("inner", [TypeError("not a Step"), KeyError()])],
    )
    assert _failure_reasons(group) == ["shape (2, 3) != (2, 4)", "not a Step", "KeyError"]
    assert _failure_reasons(RuntimeError("")) == ["RuntimeError"]
