"""The conformance and property-testing kit: diffusekit's ``pytester``.

* :mod:`diffusekit.testing.strategies` — Hypothesis strategies (times, shapes, states,
  schedules, conditions, recipes);
* :mod:`diffusekit.testing.contracts` — the contracts every component of a kind must
  satisfy, runnable from pytest (``diffusekit_contract``) and ``diffusekit check``;
* :mod:`diffusekit.testing.oracle` — Gaussian mixtures with their exact denoiser and their exact
  consistency function (the ODE flow map), and a labelled mixture (data and its class as two
  parts) with its exact joint denoiser;
* :mod:`diffusekit.testing.categorical` — a reference absorbing schedule and the exact
  denoiser of a distribution over short token sequences (:class:`SequenceOracle`);
* :mod:`diffusekit.testing.reference` — :class:`TrigonometricSchedule`, the kit's own
  Gaussian schedule, so tests depend on no plugin;
* :mod:`diffusekit.testing.counting` — :class:`CountingDenoiser`, which counts a sampler's
  network calls and the rows they evaluate (no contract checks ``evaluations_per_step``);
* :mod:`diffusekit.testing.cli` — the ``diffusekit`` command run for real in a subprocess,
  and the check that an error is one line;
* :mod:`diffusekit.testing.pytest_plugin` — the ``diffusekit_contract`` fixture and the
  ``--diffusekit-plugin`` option.
"""

from diffusekit.testing.contracts import Contract, contracts_for, plugin_contracts
from diffusekit.testing.counting import CountingDenoiser
from diffusekit.testing.oracle import FlowMapOracle, GaussianMixture, LabelledMixture, OracleDenoiser
from diffusekit.testing.reference import TrigonometricSchedule

__all__ = [
    "Contract",
    "CountingDenoiser",
    "FlowMapOracle",
    "GaussianMixture",
    "LabelledMixture",
    "OracleDenoiser",
    "TrigonometricSchedule",
    "contracts_for",
    "plugin_contracts",
]
