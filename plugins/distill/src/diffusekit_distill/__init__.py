"""diffusekit-distill: few-step generation.

* :mod:`~diffusekit_distill.learned` — learned solvers (LD3): a grid and evaluation times fitted
  to a model and an NFE (``diffusekit fit-solver``), applied by ``distill:learned`` to any
  deterministic Gaussian solver;
* :mod:`~diffusekit_distill.consistency` — consistency distillation and training as objectives of
  the core training loop, multistep consistency sampling;
* :mod:`~diffusekit_distill.progressive` — progressive distillation and reflow objectives;
* ``distill:digits`` — 1–4 step digits distilled from ``gaussian:digits``.
"""

from diffusekit_distill.consistency import (
    ConsistencyDistillation,
    ConsistencyGrid,
    ConsistencySampler,
    ConsistencyTraining,
)
from diffusekit_distill.learned import LearnedSolver, fit
from diffusekit_distill.progressive import ProgressiveDistillation, Reflow

__all__ = [
    "ConsistencyDistillation",
    "ConsistencyGrid",
    "ConsistencySampler",
    "ConsistencyTraining",
    "LearnedSolver",
    "ProgressiveDistillation",
    "Reflow",
    "fit",
]
