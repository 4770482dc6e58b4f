"""Molecule diffusion for diffusekit: QM9 molecules as 3-D coordinates, atom types and charges."""
