"""Every component of the masked plugin passes diffusekit's conformance contracts."""

import pytest

pytestmark = pytest.mark.diffusekit_plugin("masked")


def test_conformance(diffusekit_contract):
    diffusekit_contract.check()
