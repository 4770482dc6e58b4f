"""Run diffusekit's conformance contracts on every component of the restart plugin."""

import pytest

pytestmark = pytest.mark.diffusekit_plugin("restart")


def test_conformance(diffusekit_contract):
    diffusekit_contract.check()
