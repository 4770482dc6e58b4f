"""Installed-looking plugin distributions for subprocess tests, without pip.

:func:`write_distribution` writes a module and a ``NAME-VERSION.dist-info`` folder
(``METADATA`` and an ``entry_points.txt`` with a ``[diffusekit]`` group) into a
folder; a process started with that folder on ``PYTHONPATH`` finds the plugin
through ``importlib.metadata`` exactly as if it had been pip-installed.

The ready-made plugins below cover the cases the CLI must survive: a module that
raises on import, a ``register_*`` hook that raises, a working plugin, and extra
distributions that claim an entry-point name already taken. :func:`run_cli` and the
assertions below run the ``diffusekit`` console script and check its one-line errors.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

from diffusekit.testing.cli import assert_one_line_error, diffusekit_script  # noqa: F401 (re-exported)
from diffusekit.testing.cli import run_cli as _run_cli

# --- module sources ----------------------------------------------------------------------------

BROKEN_IMPORT_MESSAGE = "fake plugin exploded on import"
BROKEN_HOOK_MESSAGE = "fake plugin exploded in register_methods"

BROKEN_IMPORT_SOURCE = f'''
"""A diffusekit plugin whose import fails."""
raise RuntimeError("{BROKEN_IMPORT_MESSAGE}")
'''

# A grid that would register fine, then a later hook raises: the plugin must end up with
# no components at all (registration is all or nothing per plugin).
BROKEN_HOOK_SOURCE = f'''
"""A diffusekit plugin whose registration hook raises after registering a grid."""
import attrs
import torch

import diffusekit


@attrs.frozen
class StairGrid(diffusekit.TimeGrid):
    """Evenly spaced times (would be fine on its own)."""

    steps: int = 5

    def times(self, schedule):
        return torch.linspace(1.0, 0.0, self.steps + 1, dtype=torch.float64)


@diffusekit.hookimpl
def register_grids(register):
    register(StairGrid, name="stair")


@diffusekit.hookimpl
def register_methods(register):
    raise RuntimeError("{BROKEN_HOOK_MESSAGE}")
'''

WORKING_SOURCE = '''
"""A working diffusekit plugin registering one time grid."""
import attrs
import torch
from attrs import validators as v

import diffusekit


@attrs.frozen
class LinearGrid(diffusekit.TimeGrid):
    """Times evenly spaced from t_max down to 0 (a fake plugin's grid)."""

    steps: int = attrs.field(default=7, validator=v.ge(1))
    t_max: float = 1.0

    def times(self, schedule):
        return torch.linspace(self.t_max, 0.0, self.steps + 1, dtype=torch.float64)


@diffusekit.hookimpl
def register_grids(register):
    register(LinearGrid, name="linear")
'''

# A harmless module (no hooks): which of the claimants gets the name is up to the loader.
IMPOSTOR_SOURCE = '''
"""Claims the plugin name of an installed plugin; registers nothing."""
'''


# --- writing distributions ---------------------------------------------------------------------


def _normalized(dist: str) -> str:
    return re.sub(r"[-_.]+", "_", dist).lower()


def write_distribution(
    site: Path,
    *,
    dist: str,
    module: str,
    source: str,
    entry_points: dict[str, str] | None = None,
    version: str = "0.1.0",
) -> Path:
    """Write module ``module`` (with ``source``) and the dist-info of ``dist`` into ``site``.

    ``entry_points`` maps plugin names to ``module[:attr]`` targets in the
    ``diffusekit`` group (default: one entry point named after the module's last
    ``_``-separated word, pointing at the module). Returns the dist-info folder.
    """
    site = Path(site)
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    if entry_points is None:
        entry_points = {module.rsplit("_", 1)[-1]: module}
    info = site / f"{_normalized(dist)}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nSummary: A fake diffusekit plugin.\n",
        encoding="utf-8",
    )
    lines = ["[diffusekit]", *(f"{name} = {target}" for name, target in entry_points.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
    (info / "top_level.txt").write_text(module + "\n", encoding="utf-8")
    return info


def broken_import(site: Path) -> str:
    """A plugin ``broken`` (distribution ``fake-broken``) whose module raises on import."""
    write_distribution(
        site,
        dist="fake-broken",
        module="dkfake_broken",
        source=BROKEN_IMPORT_SOURCE,
        entry_points={"broken": "dkfake_broken"},
    )
    return "broken"


def broken_hook(site: Path) -> str:
    """A plugin ``hookfail`` (distribution ``fake-hookfail``) whose ``register_methods`` raises."""
    write_distribution(
        site,
        dist="fake-hookfail",
        module="dkfake_hookfail",
        source=BROKEN_HOOK_SOURCE,
        entry_points={"hookfail": "dkfake_hookfail"},
    )
    return "hookfail"


def working(site: Path) -> str:
    """A plugin ``works`` (distribution ``fake-works``) that registers the grid ``works:linear``."""
    write_distribution(
        site, dist="fake-works", module="dkfake_works", source=WORKING_SOURCE, entry_points={"works": "dkfake_works"}
    )
    return "works"


def impostors(site: Path, name: str = "gaussian") -> list[str]:
    """Two distributions that both declare an entry point called ``name``; returns their names."""
    dists = ["fake-impostor-one", "fake-impostor-two"]
    for index, dist in enumerate(dists):
        module = f"dkfake_impostor_{index}"
        write_distribution(site, dist=dist, module=module, source=IMPOSTOR_SOURCE, entry_points={name: module})
    return dists


def env_with(site: Path | None = None, **extra: str | None) -> dict[str, str]:
    """``os.environ`` with ``site`` first on ``PYTHONPATH`` and ``extra`` set (``None`` removes a variable).

    ``DIFFUSEKIT_PLUGINS`` and ``DIFFUSEKIT_DEBUG`` are removed unless given, so the
    environment of the test run does not leak into the subprocess.
    """
    env = dict(os.environ)
    env.pop("DIFFUSEKIT_PLUGINS", None)
    env.pop("DIFFUSEKIT_DEBUG", None)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def grid_plugin_source(
    grids: dict[str, tuple[float, float]], *, hook: str = "register_grids", decorated: bool = True
) -> str:
    """A plugin module registering one linear time grid per ``name: (t_first, t_last)`` through
    ``hook`` (misspell it, or leave the hook undecorated, to make a broken plugin)."""
    classes = "".join(
        f"""

@attrs.frozen
class Grid{i}(diffusekit.TimeGrid):
    \"\"\"Evenly spaced times from {first} to {last}.\"\"\"

    steps: int = 4

    def times(self, schedule):
        return torch.linspace({first}, {last}, self.steps + 1, dtype=torch.float64)
"""
        for i, (first, last) in enumerate(grids.values())
    )
    registrations = "".join(f'    register(Grid{i}, name="{name}")\n' for i, name in enumerate(grids))
    decorator = "@diffusekit.hookimpl\n" if decorated else ""
    return (
        f"import attrs\nimport torch\nimport diffusekit\n{classes}\n\n{decorator}def {hook}(register):\n{registrations}"
    )


# --- recipes ------------------------------------------------------------------------------------


def digits_recipe(*, method: bool = True, channels: int = 8, channel_mult: str = "[1]", **train: int) -> str:
    """A TOML recipe for the digits data with a tiny U-Net, DDIM and a 4-step grid: it trains in
    seconds. ``train`` entries go into ``[train]`` (default: 3 steps of batch 8)."""
    train = {"steps": 3, "batch_size": 8, **train}
    method_line = 'method = "gaussian:digits"\n' if method else ""
    train_lines = "".join(f"{key} = {value}\n" for key, value in train.items())
    return f"""\
seed = 0
{method_line}dataset = {{name = "gaussian:digits"}}

[parts.x]
shape = [1, 8, 8]
schedule = {{name = "gaussian:vp_cosine"}}
parameterization = {{name = "gaussian:eps"}}

[network]
name = "gaussian:unet"
in_channels = 1
channels = {channels}
channel_mult = {channel_mult}
num_res_blocks = 1
attention_levels = []
num_classes = 10

[sampler]
name = "gaussian:ddim"

[grid]
name = "gaussian:karras"
steps = 4

[train]
{train_lines}"""


# --- running the console script ----------------------------------------------------------------

TINY_RUN_ARGS = (
    "--train",
    "--steps",
    "2",
    "--no-progress",
    "--set",
    "network.channels=8",
    "--set",
    "network.num_res_blocks=1",
    "--set",
    "network.channel_mult=[1]",
    "--set",
    "network.attention_levels=[]",
)
"""Options that make ``diffusekit run gaussian:digits`` train a tiny U-Net for 2 steps (seconds, not hours)."""


def run_cli(
    *args: str | os.PathLike[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """:func:`diffusekit.testing.cli.run_cli`, in an environment without this run's plugin selection."""
    return _run_cli(*args, cwd=cwd, env=env if env is not None else env_with(), timeout=timeout)


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
