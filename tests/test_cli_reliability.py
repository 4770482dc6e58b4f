"""The CLI under bad input, run for real in subprocesses.

A plugin that calls ``sys.exit`` or raises ``KeyboardInterrupt`` at import, in a
registration hook or in ``register_commands`` must not take down any command (not even
``--help`` or ``--version``); it is reported by name instead. Foreign files, non-finite
numbers and weights, impossible sample counts and paths that are not UTF-8 end in one
line ``Error: ...`` or work.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from fakeplugins import (  # noqa: E402
    assert_one_line_error,
    digits_recipe,
    env_with,
    grid_plugin_source,
    run_cli,
    write_distribution,
)
from test_cli import TINY_RECIPE  # noqa: E402

HOSTILE = {
    "exit_import": "import sys\nsys.exit(7)\n",
    "interrupt_import": "raise KeyboardInterrupt\n",
    "exit_hook": (
        "import sys\nimport diffusekit\n\n\n@diffusekit.hookimpl\ndef register_grids(register):\n    sys.exit(3)\n"
    ),
    "interrupt_hook": (
        "import diffusekit\n\n\n@diffusekit.hookimpl\ndef register_methods(register):\n    raise KeyboardInterrupt\n"
    ),
    "exit_commands": (
        "import sys\nimport diffusekit\n\n\n@diffusekit.hookimpl\ndef register_commands(cli):\n    sys.exit(0)\n"
    ),
    "interrupt_commands": (
        "import diffusekit\n\n\n@diffusekit.hookimpl\ndef register_commands(cli):\n    raise KeyboardInterrupt\n"
    ),
}


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("hostile")
    for name, source in HOSTILE.items():
        write_distribution(
            site, dist=f"fake-{name}", module=f"dkfake_{name}", source=source, entry_points={name: f"dkfake_{name}"}
        )
    return site


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["list", "grid"]], ids=" ".join)
def test_hostile_plugins_do_not_stop_any_command(tmp_path, hostile_site, args):
    result = run_cli(*args, cwd=tmp_path, env=env_with(hostile_site))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip(), "the command printed nothing"
    for name in ("exit_commands", "interrupt_commands"):
        assert f"Warning: plugin '{name}' failed to add commands" in result.stderr


def test_hostile_plugins_are_named_with_what_they_did(tmp_path, hostile_site):
    result = run_cli("plugins", "--json", cwd=tmp_path, env=env_with(hostile_site))
    assert result.returncode == 0, result.stderr
    errors = {p["name"]: p["error"] for p in json.loads(result.stdout)}
    assert errors["exit_import"].startswith("failed to load: called sys.exit(7) (")
    assert errors["interrupt_import"].startswith("failed to load: KeyboardInterrupt (")
    assert errors["exit_hook"].startswith("failed to register: called sys.exit(3) (")
    assert errors["interrupt_hook"].startswith("failed to register: KeyboardInterrupt (")
    assert "dkfake_exit_hook.py:7" in errors["exit_hook"]
    assert errors["gaussian"] is None and errors["exit_commands"] is None


def test_an_unknown_name_in_the_plugin_variable_is_reported(tmp_path):
    result = run_cli("list", "grid", cwd=tmp_path, env=env_with(DIFFUSEKIT_PLUGINS="gaussian,gausian"))
    assert result.returncode == 0, result.stderr
    assert "gaussian:karras" in result.stdout
    assert "Warning: DIFFUSEKIT_PLUGINS names 'gausian', but no installed plugin is called that" in result.stderr


@pytest.mark.parametrize("command", ["sample", "export"])
def test_a_foreign_safetensors_file_whose_first_byte_is_0x80_is_not_called_a_pickle(tmp_path, command):
    from safetensors.torch import save_file

    path = tmp_path / "f.safetensors"
    save_file({"weight": torch.randn(10, 10), "bias": torch.randn(10)}, str(path))
    assert path.read_bytes()[0] == 0x80  # a header length of 128 + 256k bytes
    extra = ["--out", str(tmp_path / "out.safetensors")] if command == "export" else ["--out", str(tmp_path / "s")]
    message = assert_one_line_error(run_cli(command, path, *extra, cwd=tmp_path))
    assert "not a diffusekit checkpoint" in message and "pickle" not in message


def test_the_users_ctrl_c_while_plugins_load_still_interrupts(tmp_path):
    import signal
    import subprocess
    import time

    from fakeplugins import diffusekit_script

    site = tmp_path / "site"
    marker = tmp_path / "loading"
    source = f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(120)\n"
    write_distribution(
        site, dist="fake-slow", module="dkfake_slow", source=source, entry_points={"slow": "dkfake_slow"}
    )
    process = subprocess.Popen(
        [diffusekit_script(), "list"], cwd=tmp_path, env=env_with(site), stderr=subprocess.PIPE, text=True
    )
    try:
        while not marker.exists() and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=100)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "Interrupted." and "Traceback" not in stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny digits checkpoint trained for 3 steps by the CLI."""
    folder = tmp_path_factory.mktemp("trained")
    (folder / "tiny.toml").write_text(TINY_RECIPE, encoding="utf-8")
    result = run_cli("train", "tiny.toml", "--out", "m.safetensors", "--no-progress", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "m.safetensors"


@pytest.mark.parametrize(
    ("setting", "path"),
    [("sampler.eta=nan", "sampler.eta"), ("sampler.eta=-inf", "sampler.eta"), ("grid.steps=nan", "grid.steps")],
)
def test_non_finite_settings_are_refused(tmp_path, trained, setting, path):
    message = assert_one_line_error(run_cli("sample", trained, "--set", setting, "--num", "1", cwd=tmp_path))
    assert message.startswith(path)


@pytest.mark.parametrize("num", ["0", "-1"])
def test_a_number_of_samples_below_one_is_refused(tmp_path, trained, num):
    message = assert_one_line_error(run_cli("sample", trained, "--num", num, "--out", "s", cwd=tmp_path))
    assert message == f"--num: must be at least 1, got {num}"
    assert not (tmp_path / "s").exists()


def test_a_huge_number_of_samples_is_refused_up_front(tmp_path, trained):
    message = assert_one_line_error(run_cli("sample", trained, "--num", str(10**12), cwd=tmp_path))
    assert message.startswith(f"--num: {10**12} samples need about") and "GiB for the outputs alone" in message


def test_many_samples_are_announced_with_their_cost(tmp_path, trained):
    result = run_cli("sample", trained, "--num", "300", "--out", "s", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sampling 300 samples in 2 batches of up to 256: about 8 network evaluations" in result.stderr


def test_a_checkpoint_with_a_nan_weight_is_refused_by_name(tmp_path, trained):
    from diffusekit.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(trained)
    tensors = dict(ckpt.tensors)
    key = next(k for k in tensors if k.startswith("ema.") and tensors[k].is_floating_point())
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    broken = tmp_path / "nan.safetensors"
    save_checkpoint(broken, tensors, ckpt.recipe, step=ckpt.step)
    message = assert_one_line_error(run_cli("sample", broken, "--out", "s", cwd=tmp_path))
    assert f"weight {key[len('ema.') :]} holds 1 non-finite values" in message
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_paths_that_are_not_utf8_work_end_to_end(tmp_path):
    import os

    (tmp_path / "tiny.toml").write_text(TINY_RECIPE, encoding="utf-8")
    import subprocess

    from fakeplugins import diffusekit_script

    def cli(*args: bytes) -> None:  # bytes in and out: the names are not text
        result = subprocess.run([diffusekit_script().encode(), *args], cwd=tmp_path, capture_output=True, timeout=300)
        assert result.returncode == 0, result.stderr

    cli(b"train", b"tiny.toml", b"--out", b"caf\xe9.safetensors", b"--no-progress")
    cli(b"sample", b"caf\xe9.safetensors", b"--num", b"2", b"--out", b"samples-\xe9", b"--no-progress")
    assert (tmp_path / os.fsdecode(b"samples-\xe9") / "samples.safetensors").is_file()


TYPO_HOOK = grid_plugin_source({"even": (1.0, 0.0)}, hook="register_grid")
UNDECORATED_HOOK = grid_plugin_source({"even": (1.0, 0.0)}, decorated=False)


def test_hook_mistakes_are_reported_and_fail_check(tmp_path):
    site = tmp_path / "site"
    write_distribution(
        site, dist="fake-typo", module="dkfake_typo", source=TYPO_HOOK, entry_points={"typo": "dkfake_typo"}
    )
    write_distribution(
        site, dist="fake-plain", module="dkfake_plain", source=UNDECORATED_HOOK, entry_points={"plain": "dkfake_plain"}
    )
    env = env_with(site)
    listed = run_cli("plugins", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "typo 0.1.0 (fake-typo): ERROR failed to register: register_grid is not a diffusekit hook" in listed.stdout
    assert "(did you mean register_grids?)" in listed.stdout
    assert "  WARNING register_grids is not decorated with @diffusekit.hookimpl, so it is never called" in listed.stdout
    typo = assert_one_line_error(run_cli("check", "typo", cwd=tmp_path, env=env))
    assert "register_grid is not a diffusekit hook" in typo
    plain = assert_one_line_error(run_cli("check", "plain", cwd=tmp_path, env=env))
    assert plain.startswith("plugin 'plain': register_grids is not decorated with @diffusekit.hookimpl")
    assert "dkfake_plain.py:" in plain


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory) -> Path:
    import fakeplugins

    site = tmp_path_factory.mktemp("broken")
    fakeplugins.broken_import(site)
    return site


def test_a_name_of_a_plugin_that_failed_to_load_says_so(tmp_path, broken_site):
    from fakeplugins import BROKEN_IMPORT_MESSAGE

    env = env_with(broken_site)
    why = f"plugin 'broken' failed to load: RuntimeError: {BROKEN_IMPORT_MESSAGE} ("
    ran = assert_one_line_error(
        run_cli("run", "gaussian:digits", "--set", "sampler=broken:ralston", cwd=tmp_path, env=env)
    )
    assert ran.startswith(f"sampler.name: sampler 'broken:ralston': {why}") and "dkfake_broken.py:" in ran
    shown = assert_one_line_error(run_cli("show", "broken:ralston", cwd=tmp_path, env=env))
    assert shown.startswith(f"'broken:ralston': {why}")
    listed = run_cli("list", "grid", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "gaussian:karras" in listed.stdout
    assert f"Warning: {why}" in listed.stderr
    debug = run_cli("list", "grid", cwd=tmp_path, env=env_with(broken_site, DIFFUSEKIT_DEBUG="1"))
    assert "Traceback (most recent call last)" in debug.stderr and BROKEN_IMPORT_MESSAGE in debug.stderr


def test_show_and_check_suggest_close_names(tmp_path):
    # the closest name comes first (other plugins may add more suggestions after it)
    assert "did you mean heun" in assert_one_line_error(run_cli("show", "heunn", cwd=tmp_path))
    assert "did you mean gaussian?" in assert_one_line_error(run_cli("check", "gausian", cwd=tmp_path))


def test_under_pytest_a_broken_plugin_is_one_clear_collection_error(tmp_path, broken_site):
    import subprocess

    from fakeplugins import BROKEN_IMPORT_MESSAGE

    (tmp_path / "test_conformance.py").write_text(
        "import pytest\n\npytestmark = pytest.mark.diffusekit_plugin('broken')\n\n\n"
        "def test_contracts(diffusekit_contract):\n    diffusekit_contract.check()\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_conformance.py"],
        cwd=tmp_path,
        env=env_with(broken_site),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert f"diffusekit plugin 'broken' failed to load: RuntimeError: {BROKEN_IMPORT_MESSAGE}" in result.stdout
    assert "pluggy" not in result.stdout and "Traceback" not in result.stdout, result.stdout
    assert "1 error" in result.stdout


def test_run_never_starts_training_on_its_own(tmp_path):
    changed = assert_one_line_error(
        run_cli("run", "gaussian:digits", "--set", "network.channels=16", "--out", "out", cwd=tmp_path)
    )
    assert (
        changed.startswith("network.channels differs from the weights gaussian:digits ships") and "--train" in changed
    )
    (tmp_path / "tiny.toml").write_text(TINY_RECIPE.replace('method = "gaussian:digits"\n', ""), encoding="utf-8")
    untrained = assert_one_line_error(run_cli("run", "tiny.toml", "--out", "out", cwd=tmp_path))
    assert untrained.startswith("a recipe has no weights; add --train to train 3 steps first")
    assert not (tmp_path / "out" / "model.safetensors").exists()


GRIDS = grid_plugin_source({"rising": (0.0, 1.0), "fine": (1.0, 0.0)})  # "rising" is broken


def test_check_selects_contracts_and_shows_tracebacks(tmp_path):
    site = tmp_path / "site"
    write_distribution(
        site, dist="fake-grids", module="dkfake_grids", source=GRIDS, entry_points={"grids": "dkfake_grids"}
    )
    env = env_with(site)
    fine = run_cli("check", "grids", "-k", "fine", "-v", cwd=tmp_path, env=env)
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert "grids:fine::" in fine.stdout and "grids:rising" not in fine.stdout
    failing = run_cli("check", "grids", "-k", "rising", cwd=tmp_path, env=env)
    assert failing.returncode != 0 and "FAIL grids:rising::" in failing.stdout
    assert "Traceback" not in failing.stdout and "--traceback shows the details" in failing.stderr
    detailed = run_cli("check", "grids", "-k", "rising", "--traceback", cwd=tmp_path, env=env)
    assert detailed.returncode != 0 and "Traceback (most recent call last)" in detailed.stdout
    assert assert_one_line_error(run_cli("check", "grids", "-k", "zzz", cwd=tmp_path, env=env)).startswith("-k 'zzz'")


def test_a_recipe_completes_given_data_from_safetensors(tmp_path):
    """Without a method, ``--input`` takes the core's format: a tensor per given part and
    ``<part>.known`` masks; the known elements come back exactly."""
    from diffusekit.checkpoint import write_tensors
    from safetensors.torch import load_file

    (tmp_path / "r.toml").write_text(digits_recipe(method=False), encoding="utf-8")
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    known = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    known[..., :, :3] = True
    write_tensors(tmp_path / "given.safetensors", {"x": x, "x.known": known})
    result = run_cli(
        "run",
        "r.toml",
        "--train",
        "--steps",
        "2",
        "--input",
        "given.safetensors",
        "--out",
        "o",
        "--no-progress",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = load_file(str(tmp_path / "o" / "samples.safetensors"))["x"]
    assert out.shape == x.shape and torch.equal(out[known], x[known]) and bool(torch.isfinite(out).all())


def test_a_malformed_input_stops_run_before_training(tmp_path):
    from diffusekit.checkpoint import write_tensors

    (tmp_path / "r.toml").write_text(digits_recipe(method=False), encoding="utf-8")
    write_tensors(tmp_path / "given.safetensors", {"x": torch.zeros(2, 1, 7, 8)})
    message = assert_one_line_error(
        run_cli("run", "r.toml", "--train", "--input", "given.safetensors", "--out", "o", cwd=tmp_path)
    )
    assert "given.safetensors" in message and "expected (2, 1, 8, 8)" in message
    assert not (tmp_path / "o").exists()
    missing = assert_one_line_error(run_cli("run", "r.toml", "--train", "--input", "nope.safetensors", cwd=tmp_path))
    assert missing == "--input: nope.safetensors: no such file"
