"""Every component of the distill plugin passes diffusekit's conformance contracts."""

import pytest

# a warning from the kit or a component fails the contract (nothing leaks into users' logs)
pytestmark = [pytest.mark.diffusekit_plugin("distill"), pytest.mark.filterwarnings("error")]


def test_conformance(diffusekit_contract):
    diffusekit_contract.check()
