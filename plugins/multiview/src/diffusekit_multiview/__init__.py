"""Multi-view diffusion for diffusekit, on scenes the plugin renders itself.

A scene of coloured primitives (:mod:`diffusekit_multiview.primitives`) is rendered by a
differentiable sphere tracer (:mod:`diffusekit_multiview.render`) from cameras on a sphere
around it (:mod:`diffusekit_multiview.cameras`); the ``shapes`` dataset
(:mod:`diffusekit_multiview.scenes`) gives the views of a scene as one part ``views`` of shape
``(N, V, 3, H, W)`` with the cameras as the condition.
"""

from diffusekit_multiview.primitives import Primitives
from diffusekit_multiview.render import Rendering, render_field
from diffusekit_multiview.scenes import SceneBatch, Shapes

__all__ = ["Primitives", "Rendering", "SceneBatch", "Shapes", "render_field"]
