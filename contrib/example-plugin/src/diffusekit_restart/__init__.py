"""diffusekit-restart: Restart sampling (Xu et al., NeurIPS 2023) as a diffusekit plugin."""

from diffusekit_restart.plugin import Restart

__all__ = ["Restart"]
