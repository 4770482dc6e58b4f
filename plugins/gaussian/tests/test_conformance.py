"""Every component of the gaussian plugin passes diffusekit's conformance contracts (via the pytest plugin)."""

import pytest

# a warning from the kit or a component fails the contract (nothing leaks into users' logs)
pytestmark = [pytest.mark.diffusekit_plugin("gaussian", "core"), pytest.mark.filterwarnings("error")]


def test_conformance(diffusekit_contract):
    diffusekit_contract.check()
