"""pytest plugin (entry point ``pytest11``): run diffusekit contracts as pytest tests.

A test that takes a ``diffusekit_contract`` argument is run once per contract of the
plugins named by its ``@pytest.mark.diffusekit_plugin("name", ...)`` marker (or a
module-level ``pytestmark``) and by ``--diffusekit-plugin NAME`` on the command line::

    import pytest

    pytestmark = pytest.mark.diffusekit_plugin("demo")

    def test_conformance(diffusekit_contract):
        diffusekit_contract.check()
"""

from __future__ import annotations

from typing import Any


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("diffusekit")
    group.addoption(
        "--diffusekit-plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="run the diffusekit conformance contracts of plugin NAME (repeatable)",
    )


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "diffusekit_plugin(*names): run diffusekit contracts of these plugins")


def pytest_generate_tests(metafunc: Any) -> None:
    if "diffusekit_contract" not in metafunc.fixturenames:
        return
    import pytest

    from diffusekit.plugins import loaded
    from diffusekit.testing.contracts import plugin_contracts

    names = list(metafunc.config.getoption("diffusekit_plugin") or [])
    for marker in metafunc.definition.iter_markers("diffusekit_plugin"):
        names.extend(marker.args)
    # a problem with the plugin itself is one clear collection error (pytrace=False: no frames of ours)
    if not names:
        pytest.fail("diffusekit_contract needs @pytest.mark.diffusekit_plugin('name') or --diffusekit-plugin", False)
    state = loaded()
    contracts = []
    for name in dict.fromkeys(names):
        info = state.plugins.get(name)
        if info is None:
            pytest.fail(f"diffusekit plugin {name!r} is not installed (loaded: {', '.join(state.plugins)})", False)
        if info.error:
            pytest.fail(f"diffusekit plugin {name!r} {info.error}", False)
        if info.warnings:
            pytest.fail(f"diffusekit plugin {name!r}: {info.warnings[0]}", False)
        contracts.extend(plugin_contracts(name, state.registry))
    metafunc.parametrize("diffusekit_contract", contracts, ids=[c.id for c in contracts])
