"""diffusekit-joint: one model of several parts, each part at its own time (UniDiffuser).

* :mod:`diffusekit_joint.digits` — the digits image and its label as two parts (the dataset);
* :mod:`diffusekit_joint.world` — a point-mass world: a frame, an action, the next frame;
* :mod:`diffusekit_joint.networks` — ``joint:unet``, a U-Net that reads the label token and both
  times and predicts the image and the label's logits, and ``joint:world_unet`` for the world;
* :mod:`diffusekit_joint.methods` — ``joint:digits``: joint, conditional and marginal generation
  and classification, each a choice of which part is held at which time; ``joint:world``:
  policy, forward and inverse dynamics and video prediction from one model;
* :mod:`diffusekit_joint.classifier` — the diffusion classifier (per-class denoising losses).
"""

__version__ = "0.1.0"
