"""Every component of the gaussian plugin passes diffusekit's conformance contracts (via the pytest plugin)."""

import pytest

pytestmark = pytest.mark.diffusekit_plugin("gaussian", "core")


def test_conformance(diffusekit_contract):
    diffusekit_contract.check()
