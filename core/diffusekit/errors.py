"""Errors meant for people: each carries a one-line message that says what to fix.

The CLI prints ``Error: <message>`` for any :class:`DiffusekitError` and exits
non-zero; it never shows a traceback for them.
"""

from __future__ import annotations


class DiffusekitError(Exception):
    """Base class of every error diffusekit raises on bad input."""


class ConfigError(DiffusekitError, ValueError):
    """A recipe or a component's parameters are malformed; the message names the path."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)


class ComponentNotFound(DiffusekitError, LookupError):
    """No registered component has the requested name."""


class AmbiguousComponent(DiffusekitError, LookupError):
    """A bare name matches components of several plugins."""


class DuplicateComponent(DiffusekitError):
    """Two registrations claim the same qualified name."""


class ShapeError(DiffusekitError, ValueError):
    """A tensor's shape does not fit (time against data, state parts, ...)."""


class CheckpointError(DiffusekitError):
    """A checkpoint is missing, not safetensors, or lacks diffusekit metadata."""


class InputError(DiffusekitError, ValueError):
    """A user's input file (a puzzle, an image to complete, a molecule) is malformed; the message
    names the file and what is wrong where."""


class TrainingDiverged(DiffusekitError, ArithmeticError):
    """Training produced a non-finite loss, gradient norm or weight; the message names the step.

    The checkpoint on disk is left as it was (the last one with finite tensors).
    """

    def __init__(self, message: str, step: int | None = None) -> None:
        self.step = step
        super().__init__(message)


class SamplingDiverged(DiffusekitError, ArithmeticError):
    """Sampling produced NaN or inf; the message names the step where it first appeared."""
