"""Video diffusion for diffusekit: a frame's noise level is the core's per-element time.

A clip is one part ``x`` of shape ``(B, F, C, H, W)`` whose time has shape ``(B, F)``:
one noise level per frame. Scheduling matrices (:mod:`diffusekit_video.plans`) are
time grids whose plans give each frame its own path from noise to data; a given frame
(image-to-video, interpolation, prediction) is a frame held at t = 0.
"""

from diffusekit_video.plans import Autoregressive, FullSequence, Pyramid

__all__ = ["Autoregressive", "FullSequence", "Pyramid"]
